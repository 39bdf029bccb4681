//! The callee's requests inside the dialog: answered at once, answers
//! repeated for retransmitted requests, and a 2xx to a re-INVITE repeated
//! until its ACK (RFC 3261 §13.3.1.4).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Destination, MediaSession};
use crate::sdp::MediaDescription;
use crate::sdp::{Crypto, Offer, answer, parse_offer};
use crate::sip::{Message, Method};

pub use crate::sip::endpoint::ALLOW;

/// Answers kept for retransmitted requests; a callee has few requests in flight.
const REMEMBERED: usize = 8;
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

struct Sent {
    call_id: String,
    cseq: u32,
    method: Method,
    response: Message,
}

struct Unacknowledged {
    cseq: u32,
    response: Message,
    to: SocketAddr,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// Responses to the callee's requests.
#[derive(Default)]
pub struct Replies {
    sent: VecDeque<Sent>,
    unacknowledged: Option<Unacknowledged>,
    outbox: VecDeque<(Message, Destination)>,
    reliable: bool,
}

impl Replies {
    /// Over TCP nothing is repeated.
    pub fn new(reliable: bool) -> Self {
        Self { reliable, ..Self::default() }
    }

    /// Sends `response` to `request`; `until_ack` repeats a 2xx until the ACK comes.
    pub fn reply(&mut self, now: Instant, request: &Message, response: Message, to: SocketAddr, until_ack: bool) {
        let (cseq, method) = request.cseq().unwrap_or((0, Method::Other(String::new())));
        if until_ack && !self.reliable && response.status().is_some_and(|s| (200..300).contains(&s)) {
            self.unacknowledged = Some(Unacknowledged {
                cseq,
                response: response.clone(),
                to,
                next: now + T1,
                interval: T1,
                give_up: now + T1 * 64,
            });
        }
        if self.sent.len() == REMEMBERED {
            self.sent.pop_front();
        }
        let call_id = request.call_id().unwrap_or_default().to_string();
        self.sent.push_back(Sent { call_id, cseq, method, response: response.clone() });
        self.outbox.push_back((response, Destination::Reply(to)));
    }

    /// Re-sends the answer when `request` repeats one already answered.
    pub fn retransmitted(&mut self, request: &Message, from: SocketAddr) -> bool {
        let Some((cseq, method)) = request.cseq() else { return false };
        let call_id = request.call_id().unwrap_or_default();
        let found = self.sent.iter().find(|s| s.cseq == cseq && s.method == method && s.call_id == call_id);
        match found {
            Some(sent) => {
                self.outbox.push_back((sent.response.clone(), Destination::Reply(from)));
                true
            }
            None => false,
        }
    }

    /// The ACK for a 2xx that was being repeated.
    pub fn acknowledged(&mut self, ack: &Message) {
        if self.unacknowledged.as_ref().is_some_and(|u| ack.cseq().is_some_and(|(n, _)| n == u.cseq)) {
            self.unacknowledged = None;
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(pending) = self.unacknowledged.as_mut() else { return };
        if now >= pending.give_up {
            self.unacknowledged = None;
        } else if now >= pending.next {
            self.outbox.push_back((pending.response.clone(), Destination::Reply(pending.to)));
            pending.interval = (pending.interval * 2).min(T2);
            pending.next = now + pending.interval;
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.unacknowledged.as_ref().map(|u| u.next.min(u.give_up))
    }

    pub fn poll_transmit(&mut self) -> Option<(Message, Destination)> {
        self.outbox.pop_front()
    }
}

/// The answer to a re-INVITE or UPDATE: hold, resume or a media move. An
/// offer is answered with the codec already in use, and under SRTP with
/// pound's key in use, for the offered line of its suite (an offer without
/// one would drop to plain RTP: refused with 488); no offer (a re-INVITE
/// asking for one) gets pound's current offer.
pub fn answer_in_dialog(
    request: &Message,
    offer: &mut Offer,
    media: Option<&MediaSession>,
) -> (Message, Option<MediaDescription>) {
    offer.session_version += 1;
    let body = request.body();
    if body.is_empty() {
        let mut response = Message::response_to(request, 200, None);
        response.set_body("application/sdp", offer.to_sdp().into_bytes());
        return (response, None);
    }
    let codecs: Vec<_> = match media {
        Some(media) => vec![media.description().codec],
        None => offer.codecs.clone(),
    };
    let in_use = media.and_then(|media| media.description().srtp.as_ref());
    let answered = std::str::from_utf8(body).ok().and_then(|sdp| parse_offer(sdp).ok()).and_then(|remote| {
        let srtp = match in_use {
            Some(keys) => {
                let line = remote.crypto.iter().find(|c| c.key.suite() == keys.local.suite())?;
                Some(Crypto { tag: line.tag, key: keys.local.clone() })
            }
            None => None,
        };
        answer(&remote, offer.address, offer.port, &codecs, offer.session_id, offer.session_version, srtp).ok()
    });
    match answered {
        Some((sdp, description)) => {
            let mut response = Message::response_to(request, 200, None);
            response.set_body("application/sdp", sdp.into_bytes());
            (response, Some(description))
        }
        None => (Message::response_to(request, 488, None), None),
    }
}

//! One verification call as a socket-free state machine: INVITE with an SDP
//! offer, ringing, CANCEL on the ring timeout, digest authentication, the
//! answer, the prompt over RTP, the key press by RFC 4733, SIP INFO or in-band
//! audio, the confirmation, BYE, and the [`CallReport`].
//!
//! Inputs: [`Call::handle_sip`], [`Call::handle_rtp`], [`Call::handle_timeout`],
//! each with the current time. Outputs: [`Call::poll_sip`], [`Call::poll_rtp`],
//! [`Call::poll_event`], and [`Call::poll_timeout`] for when to come back.
//!
//! Poll order, after every input: drain `poll_sip` (a retried INVITE must
//! leave before anything that depends on it), then `poll_rtp(now)`, then
//! `poll_event` (the `Finished` event is last: nothing more is sent after
//! it), then sleep until `poll_timeout`. Every machine of pound (phone, trunk
//! watch, transactions) follows the same contract.

mod digits;
mod info;
mod media;
mod origin;
mod outcome;
mod prompts;
mod server;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

pub use digits::{DigitCollector, Verdict};
pub use info::info_digit;
pub use media::{MediaKey, MediaSession, OFFERED_EVENT_TYPES, start_sender};
pub use outcome::CallReport;
pub use prompts::Prompts;

use crate::dialplan::Dialplan;
use crate::mask::mask_phone;
use crate::media::codec::Codec;
use crate::media::prompt::Prompt;
use crate::sdp::{Direction, Offer, parse_answer};
use crate::sip::Credentials;
use crate::sip::authenticator::Authenticator;
use crate::sip::dialog::{self, Dialog, new_call_id, new_tag};
use crate::sip::{ClientTransaction, Message, Method, Timers, TransactionEvent};
use crate::timer::TimerTable;
use crate::vocab::{DtmfSource, Outcome, Transport};
use origin::Origins;
use server::{Replies, answer_in_dialog};

/// Everything one call needs to know.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// The Request-URI: the callee, or the number at the trunk.
    pub target: String,
    /// Our SIP address as the peer reaches it (Via, Contact).
    pub local_sip: SocketAddr,
    pub transport: Transport,
    /// Our From URI (`sip:pound@host`) and display name.
    pub from_uri: String,
    pub from_display: Option<String>,
    /// P-Asserted-Identity, for trunks that take the caller ID from it.
    pub asserted_identity: Option<String>,
    pub credentials: Option<Credentials>,
    /// Our RTP address as the peer reaches it (SDP).
    pub local_rtp: SocketAddr,
    /// Codecs offered, in order of preference.
    pub codecs: Vec<Codec>,
    pub dialplan: Arc<Dialplan>,
    pub prompts: Arc<Prompts>,
    pub timers: Timers,
    /// Strict origins: where [`Destination::NextHop`] is (the trunk, or the
    /// callee's host). Only it and the dialog's remote target are listened to.
    pub next_hop: SocketAddr,
    /// Packets that must continue the callee's RTP stream from a new address
    /// before it is heard there (`rtp.learning_packets`).
    pub rtp_learning_packets: u16,
}

/// Where a SIP message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The configured next hop (the target's host, or the trunk).
    NextHop,
    /// Back to where a request came from (responses).
    Reply(SocketAddr),
}

/// What the call reports as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// The INVITE is on its way; the Call-ID names the attempt in records.
    Calling { call_id: String },
    /// A final response to the INVITE arrived (for statistics by class).
    Response { status: u16 },
    /// The callee's phone is ringing (180 or 183).
    Ringing,
    /// The callee answered.
    Answered,
    /// A key was accepted. `latency`: from the start of its tone to its
    /// detection (in-band, RFC 4733); `None` for SIP INFO, which has no tone.
    Digit { digit: char, source: DtmfSource, latency: Option<Duration> },
    /// The call's outcome is settled, at the moment it is: the key that
    /// verified, the silence that ran out, the refusal. Nothing the rest of
    /// the call does (a closing prompt, BYE) changes it, so whoever records
    /// outcomes need not wait for [`CallEvent::Finished`]. Comes once, before
    /// `Finished`, with the outcome `Finished`'s report carries. `key`: where
    /// the deciding key came from, when a key decided.
    Decided { outcome: Outcome, key: Option<DtmfSource> },
    /// The call is over; the machine does nothing more.
    Finished(CallReport),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE sent, no final response yet.
    Inviting,
    /// CANCEL sent (or wanted before any provisional): waiting for the INVITE to end.
    Canceling,
    /// Answered; the prompt plays and keys are awaited.
    Talking,
    /// The outcome is known; the closing prompt plays, then BYE.
    Closing,
    /// BYE sent.
    Ending,
    Done,
}

/// A UAC gives up on a canceled INVITE this long after the CANCEL (§9.1).
const CANCEL_GIVE_UP: u32 = 64;
/// The closing prompt gets this long before pound hangs up regardless.
const CLOSING_LIMIT: Duration = Duration::from_secs(30);

/// The call's own deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// No answer by the dialplan's ring timeout: CANCEL.
    Ring,
    /// No final response this long after CANCEL: give up (§9.1).
    CancelGiveUp,
    /// No key this long after the prompt or the last key.
    Input,
    /// The dialplan's maximum call duration.
    Talk,
    /// The closing prompt ran too long: hang up anyway.
    Closing,
}

impl Timer {
    const COUNT: usize = Timer::Closing as usize + 1;
}

impl From<Timer> for usize {
    fn from(timer: Timer) -> usize {
        timer as usize
    }
}

/// One verification call.
pub struct Call {
    config: CallConfig,
    started: Instant,
    phase: Phase,
    invite: Message,
    invite_tx: Option<ClientTransaction>,
    cancel_tx: Option<ClientTransaction>,
    bye_tx: Option<ClientTransaction>,
    /// The in-dialog OPTIONS that asks whether a silent callee is still there.
    liveness_tx: Option<ClientTransaction>,
    /// INVITE transactions replaced by an authenticated retry: they still
    /// acknowledge retransmissions of their challenge until they end.
    retired: Vec<ClientTransaction>,
    dialog: Option<Dialog>,
    ack: Option<Message>,
    media: Option<MediaSession>,
    offer: Offer,
    replies: Replies,
    digits: DigitCollector,
    provisional_seen: bool,
    cancel_sent_at: Option<Instant>,
    authenticator: Authenticator,
    /// Branches, tags, Call-ID, cnonces, SSRC: injected so that a simulated
    /// call is reproducible bit for bit.
    rng: StdRng,
    wrong_entries: u32,
    prompt_plays: u32,
    /// The call's own deadlines; transactions, media and replies keep theirs.
    timers: TimerTable<Timer, { Timer::COUNT }>,
    answered_at: Option<Instant>,
    outcome: Option<Outcome>,
    sip_status: Option<u16>,
    dtmf_source: Option<DtmfSource>,
    digit_at: Option<Instant>,
    detail: Option<String>,
    outbox: VecDeque<(Message, Destination)>,
    events: VecDeque<CallEvent>,
    origins: Origins,
    /// SIP messages from elsewhere than `origins`, not acted on.
    foreign_sip: u64,
    /// RTP datagrams before the answer's SDP was known, dropped.
    early_rtp: u64,
}

impl Call {
    /// Starts the call: the INVITE is the first message [`Call::poll_sip`]
    /// returns. Identifiers come from a CSPRNG seeded by the OS.
    pub fn new(config: CallConfig, now: Instant) -> Call {
        Call::with_rng(config, now, rand::make_rng())
    }

    /// [`Call::new`] with the caller's RNG (a fixed seed in simulation).
    pub fn with_rng(config: CallConfig, now: Instant, mut rng: StdRng) -> Call {
        let host = config.local_sip.ip().to_string();
        let offer = Offer {
            session_id: u64::from(rng.next_u32()),
            session_version: 1,
            address: config.local_rtp.ip(),
            port: config.local_rtp.port(),
            direction: Direction::SendRecv,
            codecs: config.codecs.clone(),
        };
        let from = match &config.from_display {
            Some(name) => {
                format!("\"{}\" <{}>;tag={}", name.replace(['"', '\\'], ""), config.from_uri, new_tag(&mut rng))
            }
            None => format!("<{}>;tag={}", config.from_uri, new_tag(&mut rng)),
        };
        let mut invite = Message::request(Method::Invite, config.target.clone())
            .with_header("Max-Forwards", "70")
            .with_header("From", from)
            .with_header("To", format!("<{}>", config.target))
            .with_header("Call-ID", new_call_id(&host, &mut rng))
            .with_header("CSeq", "1 INVITE")
            .with_header("Contact", contact(&config))
            .with_header("Allow", server::ALLOW)
            .with_header("User-Agent", concat!("pound/", env!("CARGO_PKG_VERSION")));
        if let Some(identity) = &config.asserted_identity {
            invite.add_header("P-Asserted-Identity", format!("<{identity}>"));
        }
        invite.set_body("application/sdp", offer.to_sdp().into_bytes());
        let digits = DigitCollector::new(&config.dialplan.expect, config.dialplan.fraud_code.as_deref());
        let mut timers = TimerTable::default();
        timers.set(Timer::Ring, now + config.dialplan.ring_timeout);
        let reliable = config.transport.is_reliable();
        let origins = Origins::new(config.next_hop);
        tracing::info!(target = %mask_phone(&config.target), call_id = invite.call_id().unwrap_or(""), "calling");
        let authenticator = Authenticator::new(config.credentials.clone());
        let mut call = Call {
            config,
            started: now,
            phase: Phase::Inviting,
            invite: Message::request(Method::Invite, ""),
            invite_tx: None,
            cancel_tx: None,
            bye_tx: None,
            liveness_tx: None,
            retired: Vec::new(),
            dialog: None,
            ack: None,
            media: None,
            offer,
            replies: Replies::new(reliable),
            digits,
            provisional_seen: false,
            cancel_sent_at: None,
            authenticator,
            rng,
            wrong_entries: 0,
            prompt_plays: 0,
            timers,
            answered_at: None,
            outcome: None,
            sip_status: None,
            dtmf_source: None,
            digit_at: None,
            detail: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            origins,
            foreign_sip: 0,
            early_rtp: 0,
        };
        call.send_invite(now, invite);
        let call_id = call.call_id().to_string();
        call.events.push_back(CallEvent::Calling { call_id });
        call.flush(now);
        call
    }

    /// The SIP Call-ID, for logs and records.
    pub fn call_id(&self) -> &str {
        self.invite.call_id().unwrap_or_default()
    }

    /// Whether the call is over.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
    }

    /// The requester withdrew the verification: end the call now, whatever its state.
    pub fn cancel(&mut self, now: Instant) {
        self.decide(Outcome::Canceled, None);
        match self.phase {
            Phase::Inviting => self.send_cancel(now),
            Phase::Talking | Phase::Closing => self.hang_up(now),
            Phase::Canceling | Phase::Ending | Phase::Done => {}
        }
        self.flush(now);
    }

    fn via(&mut self) -> String {
        dialog::via(self.config.transport, self.config.local_sip, &mut self.rng)
    }

    /// Every live transaction, retired ones first: the ACK for a challenge
    /// must leave before the INVITE that answers it.
    fn transactions(&mut self) -> impl Iterator<Item = &mut ClientTransaction> {
        self.retired.iter_mut().chain(
            [&mut self.invite_tx, &mut self.cancel_tx, &mut self.bye_tx, &mut self.liveness_tx].into_iter().flatten(),
        )
    }

    fn send_invite(&mut self, now: Instant, mut invite: Message) {
        if let Some(previous) = self.invite_tx.take() {
            self.retired.push(previous);
        }
        invite.set_header("Via", self.via());
        self.invite = invite.clone();
        self.invite_tx =
            Some(ClientTransaction::new(invite, self.config.transport.is_reliable(), self.config.timers, now));
    }

    /// A SIP message from the network; `from` is its source address.
    pub fn handle_sip(&mut self, now: Instant, from: SocketAddr, message: Message) {
        if self.phase == Phase::Done {
            return;
        }
        if !self.origins.allows(from) {
            self.on_foreign_sip(from, &message);
            return;
        }
        if message.is_request() {
            self.handle_request(now, from, message);
        } else {
            let response = message;
            for tx in self.transactions() {
                if tx.matches(&response) {
                    tx.handle_response(now, response);
                    break;
                }
            }
        }
        self.flush(now);
    }

    /// An RTP datagram from the network. Before the answer nobody is
    /// expected to send: whatever comes is dropped (and counted), so nothing
    /// received before the answer can count as a key.
    pub fn handle_rtp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        match self.media.as_mut() {
            Some(media) => {
                media.handle_datagram(now, from, datagram);
                self.flush(now);
            }
            None => self.early_rtp += 1,
        }
    }

    /// A SIP message from an address that does not speak for the callee:
    /// not acted on. A request is refused with 403, so that an honest peer
    /// on an unexpected path learns why; it is not remembered, so a flood
    /// cannot push the callee's own requests out of the retransmission table.
    fn on_foreign_sip(&mut self, from: SocketAddr, message: &Message) {
        self.foreign_sip += 1;
        let (call_id, method, status) = (self.call_id(), message.method().map(Method::as_str), message.status());
        // The first one is worth a warning; a flood is only counted.
        if self.foreign_sip == 1 {
            tracing::warn!(call_id, %from, method, status, "SIP message from a foreign address ignored");
        } else {
            tracing::debug!(call_id, %from, method, status, "SIP message from a foreign address ignored");
        }
        if message.is_request() && message.method() != Some(&Method::Ack) {
            self.outbox.push_back((Message::response_to(message, 403, None), Destination::Reply(from)));
        }
    }

    /// Time has passed: timers fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        for tx in self.transactions() {
            if tx.poll_timeout().is_some_and(|t| t <= now) {
                tx.handle_timeout(now);
            }
        }
        if let Some(media) = self.media.as_mut() {
            media.handle_timeout(now);
        }
        self.replies.handle_timeout(now);
        self.check_deadlines(now);
        self.flush(now);
    }

    /// The transport failed to deliver to the next hop.
    pub fn handle_transport_error(&mut self, now: Instant) {
        for tx in self.transactions() {
            tx.handle_transport_error();
        }
        self.flush(now);
    }

    /// When [`Call::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        let transactions = [&self.invite_tx, &self.cancel_tx, &self.bye_tx, &self.liveness_tx]
            .into_iter()
            .flatten()
            .chain(&self.retired)
            .filter_map(|tx| tx.poll_timeout());
        let media = self.media.as_ref().and_then(|m| m.poll_timeout());
        let media_silence = self.media_silence_deadline();
        transactions
            .chain([self.timers.next(), media, media_silence, self.replies.poll_timeout()].into_iter().flatten())
            .min()
    }

    /// The next SIP message to send.
    pub fn poll_sip(&mut self) -> Option<(Message, Destination)> {
        self.outbox.pop_front()
    }

    /// The next RTP packet due by `now`.
    pub fn poll_rtp(&mut self, now: Instant) -> Option<(&[u8], SocketAddr)> {
        if !matches!(self.phase, Phase::Talking | Phase::Closing) {
            return None;
        }
        self.media.as_mut()?.poll_transmit(now)
    }

    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// Moves everything the transactions and the media produced along.
    fn flush(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.invite_tx.as_mut().and_then(|tx| tx.poll_event()) {
                self.on_invite_event(now, event);
                progressed = true;
            }
            while let Some(event) = self.bye_tx.as_mut().and_then(|tx| tx.poll_event()) {
                self.on_bye_event(now, event);
                progressed = true;
            }
            while let Some(event) = self.liveness_tx.as_mut().and_then(|tx| tx.poll_event()) {
                self.on_liveness_event(now, event);
                progressed = true;
            }
            // CANCEL's own outcome changes nothing: the INVITE's final response
            // decides. A retired INVITE's events were decided on already.
            while self.cancel_tx.as_mut().and_then(|tx| tx.poll_event()).is_some() {}
            for tx in &mut self.retired {
                while tx.poll_event().is_some() {}
            }
            while let Some(key) = self.media.as_mut().and_then(|m| m.poll_digit()) {
                self.on_digit(now, key);
                progressed = true;
            }
            if self.media.as_mut().is_some_and(|m| m.take_prompt_finished()) {
                self.on_prompt_finished(now);
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        let mut transmits = Vec::new();
        for tx in self.transactions() {
            while let Some(message) = tx.poll_transmit() {
                transmits.push((message, Destination::NextHop));
            }
        }
        self.outbox.extend(transmits);
        self.retired.retain(|tx| !tx.is_terminated());
        while let Some(reply) = self.replies.poll_transmit() {
            self.outbox.push_back(reply);
        }
        if self.invite_tx.as_ref().is_some_and(|tx| tx.is_terminated()) {
            self.invite_tx = None;
        }
        if self.cancel_tx.as_ref().is_some_and(|tx| tx.is_terminated()) {
            self.cancel_tx = None;
        }
    }

    fn on_invite_event(&mut self, now: Instant, event: TransactionEvent) {
        match event {
            TransactionEvent::Provisional(response) => {
                let status = response.status().unwrap_or(100);
                if status > 100 && !self.provisional_seen {
                    self.provisional_seen = true;
                    if matches!(status, 180 | 183) {
                        self.events.push_back(CallEvent::Ringing);
                    }
                }
                if self.phase == Phase::Canceling && self.cancel_sent_at.is_none() && status > 100 {
                    self.send_cancel(now);
                }
            }
            TransactionEvent::Final(response) => {
                let status = response.status().unwrap_or(500);
                if self.ack.is_none() {
                    self.events.push_back(CallEvent::Response { status });
                }
                if (200..300).contains(&status) {
                    self.on_answer(now, &response);
                } else if matches!(status, 401 | 407) && self.retry_with_credentials(now, &response) {
                    self.sip_status = Some(status);
                } else {
                    self.sip_status = Some(status);
                    let outcome =
                        if self.phase == Phase::Canceling { Outcome::NoAnswer } else { Outcome::of_failure(status) };
                    if outcome == Outcome::Unreachable {
                        self.detail = response.reason().map(|r| format!("{status} {r}"));
                    }
                    self.decide(outcome, None);
                    self.finish(now);
                }
            }
            TransactionEvent::Timeout | TransactionEvent::TransportError => {
                if matches!(self.phase, Phase::Inviting | Phase::Canceling) {
                    let outcome = if self.phase == Phase::Canceling { Outcome::NoAnswer } else { Outcome::Unreachable };
                    self.detail.get_or_insert_with(|| "no final response to the INVITE".into());
                    self.decide(outcome, None);
                    self.finish(now);
                }
            }
        }
    }

    fn on_answer(&mut self, now: Instant, response: &Message) {
        if let Some(ack) = &self.ack {
            // A retransmitted 2xx: our ACK was lost.
            self.outbox.push_back((ack.clone(), Destination::NextHop));
            return;
        }
        self.sip_status = Some(response.status().unwrap_or(200));
        let dialog = match Dialog::as_caller(&self.invite, response) {
            Ok(dialog) => dialog,
            Err(e) => {
                // Without a usable dialog we cannot even send BYE; ACK to the
                // remote's Contact is impossible too, so report and stop.
                self.detail = Some(format!("unusable 2xx: {e}"));
                self.decide(Outcome::Failed, None);
                self.finish(now);
                return;
            }
        };
        let invite_cseq = self.invite.cseq().map_or(1, |(n, _)| n);
        let ack = dialog.ack(invite_cseq, &self.via());
        self.outbox.push_back((ack.clone(), Destination::NextHop));
        self.ack = Some(ack);
        self.origins.set_remote_target(&dialog.remote_target);
        self.dialog = Some(dialog);
        self.answered_at = Some(now);
        if self.phase == Phase::Canceling || self.outcome.is_some() {
            // The 200 crossed our CANCEL: the call exists, so end it properly.
            self.decide(Outcome::NoAnswer, None);
            self.hang_up(now);
            return;
        }
        self.events.push_back(CallEvent::Answered);
        let answer = std::str::from_utf8(response.body())
            .map_err(|e| e.to_string())
            .and_then(|sdp| parse_answer(sdp, &self.offer).map_err(|e| e.to_string()));
        let inband = self.config.dialplan.accepts(DtmfSource::Inband);
        let learning = self.config.rtp_learning_packets;
        match answer.map(|description| MediaSession::new(now, description, inband, learning, &mut self.rng)) {
            Ok(Ok(media)) => {
                tracing::info!(call_id = self.call_id(), codec = ?media.description().codec, "answered");
                self.media = Some(media);
                self.phase = Phase::Talking;
                self.timers.stop(Timer::Ring);
                self.timers.set(Timer::Talk, now + self.config.dialplan.max_duration);
                self.play_main_prompt();
            }
            Ok(Err(e)) => self.fail(now, format!("media: {e}")),
            Err(e) => self.fail(now, format!("SDP answer: {e}")),
        }
    }

    fn retry_with_credentials(&mut self, now: Instant, response: &Message) -> bool {
        let Some(answer) = self.authenticator.answer(response, &Method::Invite, &self.config.target, &mut self.rng)
        else {
            return false;
        };
        let mut invite = self.invite.clone();
        let cseq = self.invite.cseq().map_or(1, |(n, _)| n) + 1;
        invite.set_header("CSeq", format!("{cseq} INVITE"));
        invite.remove_header("Authorization");
        invite.remove_header("Proxy-Authorization");
        invite.add_header(answer.header, answer.value);
        tracing::info!(call_id = self.call_id(), realm = %answer.realm, "answering challenge");
        self.send_invite(now, invite);
        true
    }

    fn send_cancel(&mut self, now: Instant) {
        self.phase = Phase::Canceling;
        self.timers.stop(Timer::Ring);
        if !self.provisional_seen {
            // §9.1: no CANCEL before a provisional response; sent when one arrives.
            return;
        }
        let mut cancel = Message::request(Method::Cancel, self.invite.uri().unwrap_or_default().to_string());
        for name in ["Via", "From", "To", "Call-ID"] {
            if let Some(value) = self.invite.header(name) {
                cancel.add_header(name, value.to_string());
            }
        }
        for route in self.invite.header_values("Route") {
            cancel.add_header("Route", route.to_string());
        }
        let cseq = self.invite.cseq().map_or(1, |(n, _)| n);
        cancel.add_header("CSeq", format!("{cseq} CANCEL"));
        cancel.add_header("Max-Forwards", "70");
        self.cancel_sent_at = Some(now);
        self.timers.set(Timer::CancelGiveUp, now + self.config.timers.t1 * CANCEL_GIVE_UP);
        self.cancel_tx =
            Some(ClientTransaction::new(cancel, self.config.transport.is_reliable(), self.config.timers, now));
    }

    fn on_bye_event(&mut self, now: Instant, event: TransactionEvent) {
        if let TransactionEvent::Final(response) = &event
            && matches!(response.status(), Some(401 | 407))
            && self.retry_bye_with_credentials(now, response)
        {
            return;
        }
        if matches!(event, TransactionEvent::Final(_) | TransactionEvent::Timeout | TransactionEvent::TransportError) {
            self.finish(now);
        }
    }

    fn retry_bye_with_credentials(&mut self, now: Instant, response: &Message) -> bool {
        let Some(uri) = self.dialog.as_ref().map(|dialog| dialog.remote_target.clone()) else { return false };
        let Some(answer) = self.authenticator.answer(response, &Method::Bye, &uri, &mut self.rng) else {
            return false;
        };
        let via = self.via();
        let Some(dialog) = self.dialog.as_mut() else { return false };
        let mut bye = dialog.request(Method::Bye, &via);
        bye.add_header(answer.header, answer.value);
        self.bye_tx = Some(ClientTransaction::new(bye, self.config.transport.is_reliable(), self.config.timers, now));
        true
    }

    fn handle_request(&mut self, now: Instant, from: SocketAddr, request: Message) {
        let Some(method) = request.method().cloned() else { return };
        if method == Method::Ack {
            self.replies.acknowledged(&request);
            return;
        }
        if self.replies.retransmitted(&request, from) {
            return;
        }
        let in_dialog = self.dialog.as_ref().is_some_and(|d| d.matches(&request));
        if !in_dialog {
            self.replies.reply(now, &request, Message::response_to(&request, 481, None), from, false);
            return;
        }
        let dialog = self.dialog.as_mut().expect("matched above");
        if !dialog.accept_remote_cseq(request.cseq().map_or(0, |(n, _)| n)) {
            self.replies.reply(now, &request, Message::response_to(&request, 500, None), from, false);
            return;
        }
        match method {
            Method::Bye => {
                self.replies.reply(now, &request, Message::response_to(&request, 200, None), from, false);
                if self.outcome.is_none() {
                    self.decide(Outcome::CalleeHangup, None);
                }
                tracing::info!(call_id = self.call_id(), "callee hung up");
                self.finish(now);
            }
            Method::Info => {
                self.replies.reply(now, &request, Message::response_to(&request, 200, None), from, false);
                if let Some(digit) = info_digit(&request) {
                    self.on_digit(now, MediaKey { digit, source: DtmfSource::Info, latency: None });
                }
            }
            Method::Invite | Method::Update => {
                let reliable = method == Method::Update;
                let (response, description) = answer_in_dialog(&request, &mut self.offer, self.media.as_ref());
                if let Some(description) = description
                    && let Some(media) = self.media.as_mut()
                {
                    media.update_remote(description);
                }
                if response.status() == Some(200) {
                    dialog.refresh_target(&request);
                    self.origins.set_remote_target(&dialog.remote_target);
                }
                let response = response.with_header("Contact", contact(&self.config));
                self.replies.reply(now, &request, response, from, method == Method::Invite && !reliable);
            }
            Method::Options => {
                let response = Message::response_to(&request, 200, None).with_header("Allow", server::ALLOW);
                self.replies.reply(now, &request, response, from, false);
            }
            Method::Cancel => {
                // Every request is answered at once, so there is nothing left to cancel.
                self.replies.reply(now, &request, Message::response_to(&request, 200, None), from, false);
            }
            Method::Other(_) => {
                self.replies.reply(now, &request, Message::response_to(&request, 501, None), from, false);
            }
            _ => {
                let response = Message::response_to(&request, 405, None).with_header("Allow", server::ALLOW);
                self.replies.reply(now, &request, response, from, false);
            }
        }
    }

    fn on_digit(&mut self, now: Instant, key: MediaKey) {
        let MediaKey { digit, source, latency } = key;
        if self.phase != Phase::Talking || !self.config.dialplan.accepts(source) {
            return;
        }
        let Some(verdict) = self.digits.press(now, digit, source) else { return };
        tracing::info!(call_id = self.call_id(), digit = %digit, source = source.as_str(), "key");
        self.events.push_back(CallEvent::Digit { digit, source, latency });
        if let Some(media) = self.media.as_mut() {
            media.stop();
        }
        self.timers.stop(Timer::Input);
        match verdict {
            Verdict::Pending => self.timers.set(Timer::Input, now + self.config.dialplan.input_timeout),
            Verdict::Expected => {
                self.decide(Outcome::Verified, Some((source, now)));
                self.close(now, self.config.prompts.confirmation.clone());
            }
            Verdict::Fraud => {
                self.decide(Outcome::FraudReported, Some((source, now)));
                self.close(now, self.config.prompts.fraud.clone());
            }
            Verdict::Wrong => {
                self.wrong_entries += 1;
                if self.wrong_entries >= self.config.dialplan.max_attempts {
                    self.decide(Outcome::WrongInput, Some((source, now)));
                    self.hang_up(now);
                } else {
                    if let (Some(notice), Some(media)) = (self.config.prompts.wrong_key.clone(), self.media.as_mut()) {
                        media.play(notice);
                    }
                    self.prompt_plays = 0;
                    self.play_main_prompt();
                }
            }
        }
    }

    fn play_main_prompt(&mut self) {
        if let Some(media) = self.media.as_mut() {
            media.play(self.config.prompts.main.clone());
            self.prompt_plays += 1;
        }
    }

    fn on_prompt_finished(&mut self, now: Instant) {
        match self.phase {
            Phase::Talking => self.timers.set(Timer::Input, now + self.config.dialplan.input_timeout),
            Phase::Closing => self.hang_up(now),
            _ => {}
        }
    }

    fn check_deadlines(&mut self, now: Instant) {
        match self.phase {
            Phase::Inviting if self.timers.is_expired(Timer::Ring, now) => {
                tracing::info!(call_id = self.call_id(), "ring timeout");
                self.decide(Outcome::NoAnswer, None);
                self.send_cancel(now);
            }
            Phase::Canceling if self.timers.is_expired(Timer::CancelGiveUp, now) => {
                self.detail = Some("no final response after CANCEL".into());
                self.finish(now);
            }
            Phase::Talking | Phase::Closing => {
                if self.media_silence_deadline().is_some_and(|t| now >= t) {
                    self.probe_liveness(now);
                } else if self.timers.is_expired(Timer::Talk, now) {
                    self.decide(Outcome::NoInput, None);
                    self.detail.get_or_insert_with(|| "maximum call duration".into());
                    self.hang_up(now);
                } else if self.timers.is_expired(Timer::Closing, now) {
                    self.hang_up(now);
                } else if self.timers.is_expired(Timer::Input, now) {
                    self.timers.stop(Timer::Input);
                    self.digits.clear_entry();
                    if self.prompt_plays < self.config.dialplan.prompt_repeats {
                        self.play_main_prompt();
                    } else {
                        // A wrong key followed by silence is the callee's
                        // answer, not an absent one.
                        let outcome = if self.wrong_entries > 0 { Outcome::WrongInput } else { Outcome::NoInput };
                        self.decide(outcome, None);
                        self.hang_up(now);
                    }
                }
            }
            _ => {}
        }
    }

    /// Silence is what a listening callee with VAD or DTX sends, so it
    /// decides nothing by itself: only a dialog that no longer answers ends
    /// the call early. The deadline is off by default (dialplan
    /// `media_timeout_ms = 0`) and fires once per call.
    fn media_silence_deadline(&self) -> Option<Instant> {
        let timeout = self.config.dialplan.media_timeout?;
        if self.phase != Phase::Talking || self.liveness_tx.is_some() {
            return None;
        }
        let media = self.media.as_ref()?;
        if media.description().direction != Direction::SendRecv {
            // On hold the callee legitimately sends nothing.
            return None;
        }
        let last = media.last_packet_at().max(self.answered_at)?;
        Some(last + timeout)
    }

    /// Asks the callee's side, inside the dialog, whether the call still
    /// exists (RFC 3261 §11 OPTIONS; any final response but 481 or 408 means
    /// it does).
    fn probe_liveness(&mut self, now: Instant) {
        tracing::info!(call_id = self.call_id(), "no RTP from the callee: asking whether the dialog is alive");
        let via = self.via();
        let Some(dialog) = self.dialog.as_mut() else { return };
        let options = dialog.request(Method::Options, &via);
        self.liveness_tx =
            Some(ClientTransaction::new(options, self.config.transport.is_reliable(), self.config.timers, now));
    }

    fn on_liveness_event(&mut self, now: Instant, event: TransactionEvent) {
        let seconds = self.config.dialplan.media_timeout.map_or(0, |t| t.as_secs());
        let gone = match &event {
            TransactionEvent::Final(response) => match response.status() {
                Some(status @ (408 | 481)) => Some(format!("OPTIONS answered {status}")),
                _ => None,
            },
            TransactionEvent::Timeout => Some("OPTIONS unanswered".to_string()),
            TransactionEvent::TransportError => Some("OPTIONS undeliverable".to_string()),
            _ => return,
        };
        match gone {
            // The callee's side no longer knows the call: it ended without a
            // BYE reaching us, which is a hang-up as far as the requester is
            // concerned. A BYE would go unanswered too, so none is sent.
            Some(why) => {
                let detail = format!("no RTP from the callee for {seconds} s and the dialog is gone ({why})");
                tracing::info!(call_id = self.call_id(), %detail, "callee gone");
                self.detail.get_or_insert(detail);
                self.decide(Outcome::CalleeHangup, None);
                self.finish(now);
            }
            None => {
                self.detail.get_or_insert_with(|| format!("media timeout: no RTP from the callee for {seconds} s"));
                self.decide(Outcome::NoInput, None);
                self.hang_up(now);
            }
        }
    }

    fn decide(&mut self, outcome: Outcome, digit: Option<(DtmfSource, Instant)>) {
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
            if let Some((source, at)) = digit {
                self.dtmf_source = Some(source);
                self.digit_at = Some(at);
            }
            self.events.push_back(CallEvent::Decided { outcome, key: digit.map(|(source, _)| source) });
        }
    }

    fn close(&mut self, now: Instant, prompt: Option<Arc<Prompt>>) {
        match (prompt, self.media.as_mut()) {
            (Some(prompt), Some(media)) => {
                media.play(prompt);
                self.phase = Phase::Closing;
                self.timers.stop(Timer::Input);
                self.timers.set(Timer::Closing, now + CLOSING_LIMIT);
            }
            _ => self.hang_up(now),
        }
    }

    fn fail(&mut self, now: Instant, detail: String) {
        tracing::warn!(call_id = self.call_id(), %detail, "call failed");
        self.detail.get_or_insert(detail);
        self.decide(Outcome::Failed, None);
        self.hang_up(now);
    }

    fn hang_up(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Ending | Phase::Done) {
            return;
        }
        let via = self.via();
        let Some(dialog) = self.dialog.as_mut() else {
            self.finish(now);
            return;
        };
        if let Some(media) = self.media.as_mut() {
            media.stop();
        }
        // Only the BYE transaction's own timers matter from here on.
        self.timers.stop_all();
        let bye = dialog.request(Method::Bye, &via);
        self.bye_tx = Some(ClientTransaction::new(bye, self.config.transport.is_reliable(), self.config.timers, now));
        self.phase = Phase::Ending;
    }

    fn finish(&mut self, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        // Every path decides before it ends; one that did not is a failure,
        // announced like any other decision.
        self.decide(Outcome::Failed, None);
        self.phase = Phase::Done;
        let since_start = |t: Instant| t.saturating_duration_since(self.started).as_millis() as u64;
        let report = CallReport {
            outcome: self.outcome.unwrap_or(Outcome::Failed),
            sip_status: self.sip_status,
            dtmf_source: self.dtmf_source,
            digits: self.digits.digits().to_string(),
            duration_ms: since_start(now),
            call_id: self.call_id().to_string(),
            answered_ms: self.answered_at.map(since_start),
            digit_ms: self.digit_at.map(since_start),
            detail: self.detail.clone(),
            foreign_rtp_packets: self.early_rtp + self.media.as_ref().map_or(0, |m| m.rtp_stats().foreign),
            foreign_sip_messages: self.foreign_sip,
        };
        tracing::info!(call_id = self.call_id(), outcome = report.outcome.as_str(), "call finished");
        self.events.push_back(CallEvent::Finished(report));
    }
}

fn contact(config: &CallConfig) -> String {
    match config.transport {
        Transport::Udp => format!("<sip:pound@{}>", config.local_sip),
        Transport::Tcp => format!("<sip:pound@{};transport=tcp>", config.local_sip),
    }
}

//! One verification call as a socket-free state machine: INVITE with an SDP
//! offer, ringing, CANCEL on the ring timeout, digest authentication, the
//! answer, the prompt over RTP, the key press by RFC 4733, SIP INFO or in-band
//! audio, the confirmation, BYE, and the [`CallReport`].
//!
//! Inputs: [`Call::handle_sip`], [`Call::handle_transaction`], [`Call::handle_rtp`],
//! [`Call::handle_timeout`], each with the current time. Outputs: [`Call::poll_sip`],
//! [`Call::poll_rtp`], [`Call::poll_event`], and [`Call::poll_timeout`] for when to come back.
//!
//! The call is a transaction user (RFC 3261 §17): every request it sends but
//! an ACK runs as a client transaction of the SIP endpoint
//! ([`crate::sip::transactions`]), which retransmits it, absorbs what the
//! transaction absorbs and hands the call the transaction's events; the ACK
//! for a 2xx is the call's own, resent for each 2xx that comes again.
//!
//! Poll order, after every input: drain `poll_sip` (a retried INVITE must
//! leave before anything that depends on it), then `poll_rtp(now)`, then
//! `poll_event` (the `Finished` event is last: nothing more is sent after
//! it), then sleep until `poll_timeout`. Every machine of pound (phone, trunk
//! watch, transactions) follows the same contract.

mod conversation;
mod digits;
mod info;
mod listening;
mod media;
mod origin;
mod outcome;
mod prompts;
mod server;
mod signalling;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use rand::rngs::StdRng;

pub use digits::{DigitCollector, Verdict};
pub use info::info_digit;
pub use listening::Heard;
pub use media::{KeyDetail, KeyEnd, MediaKey, MediaSession, OFFERED_EVENT_TYPES, SrtpSession, start_sender};
pub use outcome::CallReport;
pub use prompts::Prompts;

use crate::code::Code;
use crate::dialplan::Dialplan;
use crate::evidence::KeyEvidence;
use crate::mask::mask_phone;
use crate::media::codec::Codec;
use crate::media::prompt::Prompt;
use crate::sdp::{Direction, Offer, offer_keys, parse_answer};
use crate::sip::Credentials;
use crate::sip::authenticator::Authenticator;
use crate::sip::dialog::{self, Dialog, new_call_id, new_tag};
use crate::sip::{Message, Method, Timers, TransactionEvent, TransactionKey};
use crate::stir::{CallSigner, Parties, Signer};
use crate::timer::TimerTable;
use crate::vocab::{DtmfSource, Outcome, SrtpPolicy, Transmit, Transport};
use origin::Origins;

/// Keys recorded with their evidence per attempt: more than any entry needs,
/// a bound on what a callee pressing keys for minutes can make the record hold.
pub const MAX_EVIDENCE: usize = 32;
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
    /// Strict origins: where requests go (the trunk, or the
    /// callee's host). Only it and the dialog's remote target are listened to.
    pub next_hop: SocketAddr,
    /// Packets that must continue the callee's RTP stream from a new address
    /// before it is heard there (`rtp.learning_packets`).
    pub rtp_learning_packets: u16,
    /// STIR/SHAKEN: every INVITE of the call carries an `Identity` signed with it.
    pub stir: Option<Arc<Signer>>,
    /// The wall clock at the `now` the call starts with: the PASSporT's `iat` counts from it.
    pub wall_clock: SystemTime,
    /// SRTP with SDES keys: the keys travel in the SDP, so anything but
    /// `Off` needs SIP over TLS (the configuration refuses it otherwise).
    pub srtp: SrtpPolicy,
    /// Number matching: the callee must key in this code, then `#`, instead
    /// of the dialplan's `expect`; the code prompts play instead of the key's.
    pub code: Option<Code>,
}

/// Where a SIP message goes, until [`Call::poll_sip`] names the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
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
    /// `evidence`: what its path measured, as far as known when it was
    /// accepted (its duration comes with the report).
    Digit { digit: char, source: DtmfSource, latency: Option<Duration>, evidence: Box<KeyEvidence> },
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
    /// The client transactions whose events the call acts on. An INVITE
    /// replaced by an authenticated retry is no longer among them: its
    /// transaction still acknowledges retransmissions of the challenge. Nor
    /// is the CANCEL: the INVITE's final response decides.
    invite_tx: Option<TransactionKey>,
    bye_tx: Option<TransactionKey>,
    /// The in-dialog OPTIONS that asks whether a silent callee is still
    /// there; asked once a call.
    liveness_tx: Option<TransactionKey>,
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
    /// The call's own deadlines; media and replies keep theirs, and its transactions' are the endpoint's.
    timers: TimerTable<Timer, { Timer::COUNT }>,
    answered_at: Option<Instant>,
    outcome: Option<Outcome>,
    sip_status: Option<u16>,
    dtmf_source: Option<DtmfSource>,
    digit_at: Option<Instant>,
    /// One entry per key accepted, at most [`MAX_EVIDENCE`].
    evidence: Vec<KeyEvidence>,
    detail: Option<String>,
    outbox: VecDeque<(Message, Destination)>,
    events: VecDeque<CallEvent>,
    origins: Origins,
    /// SIP messages from elsewhere than `origins`, not acted on.
    foreign_sip: u64,
    /// RTP datagrams before the answer's SDP was known, dropped.
    early_rtp: u64,
    /// Signs each INVITE transaction (`config.stir`).
    signing: Option<CallSigner>,
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
            srtp: config.srtp,
            // Fresh keys for every call, from the call's CSPRNG.
            crypto: if config.srtp == SrtpPolicy::Off { Vec::new() } else { offer_keys(&mut rng) },
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
        let signing = config.stir.clone().map(|signer| {
            let parties = Parties::new(config.asserted_identity.as_deref(), &config.from_uri, &config.target)?;
            let mut origid = [0; 16];
            rng.fill_bytes(&mut origid);
            Ok::<_, crate::stir::StirError>(CallSigner::new(signer, parties, origid))
        });
        let fraud = config.dialplan.fraud_code.as_deref();
        let digits = match &config.code {
            Some(code) => DigitCollector::with_code(code.clone(), fraud),
            None => DigitCollector::new(&config.dialplan.expect, fraud),
        };
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
            bye_tx: None,
            liveness_tx: None,
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
            evidence: Vec::new(),
            detail: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            origins,
            foreign_sip: 0,
            early_rtp: 0,
            signing: None,
        };
        if !call.config.srtp.allowed_over(call.config.transport) {
            // The configuration refuses this; should it get here, no key leaves in clear.
            call.invite = invite;
            call.detail = Some("SRTP needs SIP over TLS: SDES keys must not travel in clear".into());
            call.decide(Outcome::Failed, None);
            call.finish(now);
        } else {
            match signing.transpose() {
                Ok(signing) => {
                    call.signing = signing;
                    call.send_invite(now, invite);
                    let call_id = call.call_id().to_string();
                    call.events.push_back(CallEvent::Calling { call_id });
                }
                // Never dialled: a trunk that signs must not send an unsigned call.
                Err(e) => call.fail(now, e.to_string()),
            }
        }
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

    /// Sends `request` to the next hop as a client transaction; returns its key.
    fn send_request(&mut self, request: Message) -> Option<TransactionKey> {
        let key = TransactionKey::of_request(&request);
        self.outbox.push_back((request, Destination::NextHop));
        key
    }

    fn send_invite(&mut self, now: Instant, mut invite: Message) {
        invite.set_header("Via", self.via());
        // Each INVITE transaction (the first, and each answer to a challenge) is signed afresh
        // with the time it leaves: the verifier judges iat against the moment the request
        // reaches it (RFC 8224 §6.2.1, 60 s is the recommended freshness), and a challenge
        // round trip must not eat into that. The transaction's retransmissions repeat the
        // same bytes, as RFC 3261 §17.1.1 requires. The origid stays the call's.
        if let Some(signing) = &self.signing {
            invite.set_header("Identity", signing.identity(self.unix_seconds(now)));
        }
        self.invite = invite.clone();
        self.invite_tx = self.send_request(invite);
    }

    /// `now` on the wall clock, in Unix seconds.
    fn unix_seconds(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.started);
        let wall = self.config.wall_clock.checked_add(elapsed).unwrap_or(self.config.wall_clock);
        wall.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    /// A SIP message from the network; `from` is its source address. A
    /// request from the callee's side, or a response that the endpoint's
    /// transactions did not take because it came from elsewhere than its
    /// request went: foreign.
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
        }
        self.flush(now);
    }

    /// News of a client transaction the call started.
    pub fn handle_transaction(&mut self, now: Instant, key: &TransactionKey, event: TransactionEvent) {
        if self.phase == Phase::Done {
            return;
        }
        let key = Some(key);
        if self.invite_tx.as_ref() == key {
            self.on_invite_event(now, event);
        } else if self.bye_tx.as_ref() == key {
            self.on_bye_event(now, event);
        } else if self.liveness_tx.as_ref() == key {
            self.on_liveness_event(now, event);
        }
        // A replaced INVITE's events were decided on already.
        self.flush(now);
    }

    /// An RTP datagram from the network. Before the answer only early
    /// media that a 183 announced is listened to, for a SIT; whatever else
    /// comes is dropped (and counted). Nothing received before the answer
    /// counts as a key.
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
        if let Some(media) = self.media.as_mut() {
            media.handle_timeout(now);
        }
        self.replies.handle_timeout(now);
        self.check_deadlines(now);
        self.flush(now);
    }

    /// The transport failed to deliver to the next hop; `reason` (a refused
    /// connection, a certificate that does not verify) is the call's detail
    /// if it ends for it. The transaction that could not send tells the
    /// call so ([`TransactionEvent::TransportError`]).
    pub fn handle_transport_error(&mut self, reason: &str) {
        if self.phase != Phase::Done {
            self.detail.get_or_insert_with(|| format!("transport: {reason}"));
        }
    }

    /// When [`Call::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        let media = match self.phase {
            Phase::Talking | Phase::Closing => self.media.as_ref().and_then(|m| m.poll_timeout()),
            // Early media is only listened to, and after the BYE nothing is
            // sent: the sender's clock does not run (`poll_rtp` sends
            // nothing), so its next frame must not be a deadline: it would
            // stay due and wake the driver at once, again and again.
            Phase::Inviting | Phase::Canceling | Phase::Ending | Phase::Done => {
                self.media.as_ref().and_then(|m| m.receive_timeout())
            }
        };
        let media_silence = self.media_silence_deadline();
        [self.timers.next(), media, media_silence, self.replies.poll_timeout()].into_iter().flatten().min()
    }

    /// The next SIP message to send.
    pub fn poll_sip(&mut self) -> Option<Transmit<Message>> {
        let (contents, destination) = self.outbox.pop_front()?;
        let destination = match destination {
            Destination::NextHop => self.config.next_hop,
            Destination::Reply(to) => to,
        };
        Some(Transmit { destination, contents })
    }

    /// The next RTP packet due by `now`.
    pub fn poll_rtp(&mut self, now: Instant) -> Option<Transmit<&[u8]>> {
        if !matches!(self.phase, Phase::Talking | Phase::Closing) {
            return None;
        }
        self.media.as_mut()?.poll_transmit(now)
    }

    pub fn poll_event(&mut self) -> Option<CallEvent> {
        self.events.pop_front()
    }

    /// Moves along what the media and the replies to the callee produced.
    fn flush(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(key) = self.media.as_mut().and_then(|m| m.poll_digit()) {
                self.on_digit(now, key);
                progressed = true;
            }
            while let Some(end) = self.media.as_mut().and_then(|m| m.poll_key_end()) {
                self.on_key_end(end);
            }
            if let Some(heard) = self.media.as_mut().and_then(|m| m.poll_heard()) {
                self.on_heard(now, heard);
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
        while let Some(reply) = self.replies.poll_transmit() {
            self.outbox.push_back(reply);
        }
    }
}

fn contact(config: &CallConfig) -> String {
    dialog::contact("pound", config.local_sip, config.transport, config.target.starts_with("sips:"))
}

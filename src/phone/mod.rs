//! The simulated callee (a UAS) as a socket-free state machine: it answers
//! pound's INVITE (or rejects it, or only rings), sends audio, presses keys by
//! RFC 4733, in-band tones or SIP INFO, and hangs up when told to. It serves
//! any number of calls at once; the demo, the tests and the load benchmarks
//! drive it through `net`. The requests it sends (INFO, BYE) run as client
//! transactions of its endpoint, which tells it of their ends
//! ([`Phone::handle_transaction`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::StdRng;

use crate::call::{SrtpSession, start_sender};
use crate::dsp::tone::ToneGenerator;
use crate::media::codec::{Codec, Encoder, FRAME_SAMPLES};
use crate::rtp::{EventSender, PayloadType, RtpSender};
use crate::sdp::{Crypto, MediaDescription, answer, choose_crypto, parse_offer};
use crate::sip::dialog::{self, Dialog, new_tag};
use crate::sip::{Message, Method, Timers, TransactionEvent, TransactionKey};
use crate::srtp::{MasterKey, Suite};
use crate::vocab::{SrtpPolicy, Transmit, Transport};

/// How the simulated phone presses its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressVia {
    Rfc4733,
    Inband,
    Info,
}

/// What the simulated phone does with each call.
#[derive(Debug, Clone)]
pub struct PhoneConfig {
    /// Our SIP address as pound reaches it (Contact).
    pub local_sip: SocketAddr,
    pub transport: Transport,
    /// The one RTP address every call's media uses (calls are told apart by
    /// pound's media address).
    pub local_rtp: SocketAddr,
    /// Keys pressed after the answer (and after `play`), in order.
    pub press: String,
    /// Audio (8 kHz) sent from the answer on, before any key: a greeting,
    /// a voicemail box's beep, a network announcement.
    pub play: Option<Arc<[i16]>>,
    /// Audio (8 kHz) sent as early media: a 183 with SDP at once, then this
    /// audio while ringing; the answer (or `reject`) follows `answer_after`.
    pub early_media: Option<Arc<[i16]>>,
    pub via: PressVia,
    /// From the answer to the first key.
    pub press_after: Duration,
    /// From the INVITE to the answer (ringing meanwhile).
    pub answer_after: Duration,
    /// Answer every INVITE with this final status instead.
    pub reject: Option<u16>,
    /// Ring forever (never answer): pound must CANCEL.
    pub never_answer: bool,
    /// From the answer to the phone's own BYE.
    pub hangup_after: Option<Duration>,
    /// Silence suppression (VAD/DTX): no RTP at all while listening; only
    /// key presses (RFC 4733 events or in-band tones) are sent.
    pub silent: bool,
    /// Codecs accepted, in order of preference.
    pub codecs: Vec<Codec>,
    /// SRTP offers: `Mandatory` answers only those (a plain offer gets 488,
    /// as baresip's `mediaenc=srtp-mand` does), `Optional` takes the first
    /// usable key offered, `Off` refuses RTP/SAVP and ignores keys.
    pub srtp: SrtpPolicy,
    pub timers: Timers,
}

/// How long each key is held, and the pause between keys.
const PRESS: Duration = Duration::from_millis(160);
const BETWEEN_PRESSES: Duration = Duration::from_millis(300);
const FRAME: Duration = Duration::from_millis(20);
/// In-band key level per tone: a typical handset.
const INBAND_DBM0: f64 = -8.0;

/// What the phone reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneEvent {
    /// An INVITE for a new call arrived (retransmissions and re-INVITEs
    /// are not new calls).
    Invited { call_id: String },
    /// A key press began on the wire: its first RFC 4733 packet or tone
    /// frame was handed out by [`Phone::poll_rtp`], or its SIP INFO by
    /// [`Phone::poll_sip`]. What latency measurements start from.
    KeyPressed { call_id: String, key: char },
    /// A call ended (BYE either way, CANCEL, or a rejected INVITE
    /// acknowledged). `rtp_received` counts pound's packets, under SRTP only
    /// the authentic ones; `srtp`: the suite the media used.
    CallEnded { call_id: String, rtp_received: u64, srtp: Option<Suite> },
}

enum Stage {
    Ringing {
        answer_at: Option<Instant>,
    },
    /// Final response sent; waiting for the ACK (a rejection or the 200).
    Answering,
    Talking,
    /// Our BYE is out.
    Leaving,
}

struct Keys {
    queue: VecDeque<char>,
    next_at: Instant,
    tone: Option<(ToneGenerator, Instant)>,
    event: Option<EventSender>,
    event_timestamp: u32,
    /// A press that has begun, announced with its first packet.
    unannounced: Option<char>,
    /// Samples of `play` sent so far.
    played: usize,
}

struct PhoneMedia {
    remote: SocketAddr,
    description: MediaDescription,
    sender: RtpSender,
    encoder: Encoder,
    srtp: Option<SrtpSession>,
}

struct PhoneCall {
    invite: Message,
    from: SocketAddr,
    local_tag: String,
    stage: Stage,
    final_response: Option<Message>,
    resend: Option<(Instant, Duration, Instant)>,
    dialog: Option<Dialog>,
    media: Option<PhoneMedia>,
    keys: Option<Keys>,
    hangup_at: Option<Instant>,
    /// The BYE the phone sent, until it is answered or times out.
    bye: Option<TransactionKey>,
    rtp_received: u64,
    /// The SDP answer, once media is negotiated (early or at the answer).
    sdp: Option<String>,
    /// Samples of `early_media` sent so far.
    early_played: usize,
}

/// The simulated phone.
///
/// It carries a thousand calls at once in one task (`tests/thousand_calls.rs`), so nothing it
/// does per packet walks every call: received RTP finds its call by pound's media address,
/// and the next deadline over all calls is kept until a call's timing changes (receiving RTP
/// changes none), so that the driver's `poll_rtp` and `poll_timeout` after each packet cost
/// nothing. The calls are walked once per timer that fires.
pub struct Phone {
    config: PhoneConfig,
    calls: HashMap<String, PhoneCall>,
    /// The call whose media comes from each of pound's media addresses.
    by_media: HashMap<SocketAddr, String>,
    /// The earliest deadline over all calls, once computed; `None` when it must be computed
    /// again (a call's timing may have changed).
    deadline: Cell<Option<Option<Instant>>>,
    /// Calls whose next frame was due when last looked for, sent from in this order.
    sending: VecDeque<String>,
    outbox: VecDeque<(Message, SocketAddr)>,
    events: VecDeque<PhoneEvent>,
    packet: Vec<u8>,
    payload: Vec<u8>,
    /// Tags, branches, SDP session ids, SSRC: injected so that a simulated
    /// run is reproducible bit for bit.
    rng: StdRng,
}

impl Phone {
    /// A phone whose identifiers come from a CSPRNG seeded by the OS.
    pub fn new(config: PhoneConfig) -> Self {
        Phone::with_rng(config, rand::make_rng())
    }

    /// [`Phone::new`] with the caller's RNG (a fixed seed in simulation).
    pub fn with_rng(config: PhoneConfig, rng: StdRng) -> Self {
        Self {
            rng,
            config,
            calls: HashMap::new(),
            by_media: HashMap::new(),
            deadline: Cell::new(None),
            sending: VecDeque::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            packet: Vec::with_capacity(1500 + crate::srtp::MAX_TRAILER_LEN),
            payload: Vec::with_capacity(1500),
        }
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// A SIP message from `from`.
    pub fn handle_sip(&mut self, now: Instant, from: SocketAddr, message: Message) {
        self.deadline.set(None);
        // Responses are for the endpoint's transactions; one that comes here was not taken.
        if !message.is_request() {
            return;
        }
        let Some(method) = message.method().cloned() else { return };
        let call_id = message.call_id().unwrap_or_default().to_string();
        match method {
            Method::Invite => match self.calls.get(&call_id) {
                None => {
                    self.events.push_back(PhoneEvent::Invited { call_id });
                    self.on_invite(now, from, message);
                }
                Some(call) if call.invite.cseq() == message.cseq() => {
                    // A retransmitted INVITE: repeat where we are.
                    let response =
                        call.final_response.clone().unwrap_or_else(|| self.ringing(&call.invite, &call.local_tag));
                    self.outbox.push_back((response, from));
                }
                Some(_) if message.to_tag().is_none() => {
                    // The same call again with a new CSeq: the caller answered a
                    // challenge on the way. Start over with this INVITE.
                    self.calls.remove(&call_id);
                    self.on_invite(now, from, message);
                }
                Some(call) => {
                    // A re-INVITE: keep the media as it is.
                    let contact = self.contact(&call.invite);
                    let mut response = Message::response_to(&message, 200, None).with_header("Contact", contact);
                    if let Some(previous) = &call.final_response {
                        response.set_body("application/sdp", previous.body().to_vec());
                    }
                    self.outbox.push_back((response, from));
                }
            },
            Method::Ack => {
                let ended = match self.calls.get_mut(&call_id) {
                    Some(call) if matches!(call.stage, Stage::Answering) => {
                        call.resend = None;
                        if call.dialog.is_some() {
                            call.stage = Stage::Talking;
                            false
                        } else {
                            true
                        }
                    }
                    _ => false,
                };
                if ended {
                    self.end(&call_id);
                }
            }
            Method::Cancel => {
                let response =
                    Message::response_to(&message, if self.calls.contains_key(&call_id) { 200 } else { 481 }, None);
                self.outbox.push_back((response, from));
                if let Some(call) = self.calls.get_mut(&call_id)
                    && matches!(call.stage, Stage::Ringing { .. })
                {
                    let terminated = Message::response_to(&call.invite, 487, Some(&call.local_tag));
                    call.final_response = Some(terminated.clone());
                    call.resend = resend_schedule(now, &self.config);
                    call.stage = Stage::Answering;
                    self.outbox.push_back((terminated, call.from));
                }
            }
            Method::Bye => {
                let known = self.calls.contains_key(&call_id);
                self.outbox.push_back((Message::response_to(&message, if known { 200 } else { 481 }, None), from));
                if known {
                    self.end(&call_id);
                }
            }
            Method::Options | Method::Info | Method::Update => {
                self.outbox.push_back((Message::response_to(&message, 200, None), from));
            }
            _ => self.outbox.push_back((Message::response_to(&message, 405, None), from)),
        }
    }

    /// News of a request the phone sent: the call ends when its BYE is
    /// answered, times out or cannot be sent.
    pub fn handle_transaction(&mut self, _now: Instant, key: &TransactionKey, event: TransactionEvent) {
        self.deadline.set(None);
        if matches!(event, TransactionEvent::Provisional(_)) {
            return;
        }
        let ended = self.calls.iter().find(|(_, call)| call.bye.as_ref() == Some(key)).map(|(id, _)| id.clone());
        if let Some(id) = ended {
            self.end(&id);
        }
    }

    fn ringing(&self, invite: &Message, tag: &str) -> Message {
        Message::response_to(invite, 180, Some(tag)).with_header("Contact", self.contact(invite))
    }

    fn contact(&self, invite: &Message) -> String {
        let sips = invite.uri().is_some_and(|uri| uri.starts_with("sips:"));
        dialog::contact("phone", self.config.local_sip, self.config.transport, sips)
    }

    fn on_invite(&mut self, now: Instant, from: SocketAddr, invite: Message) {
        let local_tag = new_tag(&mut self.rng);
        self.outbox.push_back((Message::response_to(&invite, 100, None), from));
        let call_id = invite.call_id().unwrap_or_default().to_string();
        let mut call = PhoneCall {
            invite: invite.clone(),
            from,
            local_tag: local_tag.clone(),
            stage: Stage::Ringing { answer_at: None },
            final_response: None,
            resend: None,
            dialog: None,
            media: None,
            keys: None,
            hangup_at: None,
            bye: None,
            rtp_received: 0,
            sdp: None,
            early_played: 0,
        };
        if self.config.early_media.is_some() {
            // The final response (an answer or the rejection) waits for the announcement.
            let contact = self.contact(&invite);
            self.calls.insert(call_id.clone(), call);
            let Some(sdp) = self.negotiate(now, &call_id) else { return };
            let Some(call) = self.calls.get_mut(&call_id) else { return };
            let mut progress =
                Message::response_to(&call.invite, 183, Some(&call.local_tag)).with_header("Contact", contact);
            progress.set_body("application/sdp", sdp.into_bytes());
            self.outbox.push_back((progress, from));
            let answer_at = (!self.config.never_answer).then_some(now + self.config.answer_after);
            call.stage = Stage::Ringing { answer_at };
            return;
        }
        if let Some(status) = self.config.reject {
            let response = Message::response_to(&invite, status, Some(&local_tag));
            call.final_response = Some(response.clone());
            call.resend = resend_schedule(now, &self.config);
            call.stage = Stage::Answering;
            self.outbox.push_back((response, from));
        } else {
            self.outbox.push_back((self.ringing(&invite, &local_tag), from));
            let answer_at = (!self.config.never_answer).then_some(now + self.config.answer_after);
            call.stage = Stage::Ringing { answer_at };
        }
        self.calls.insert(call_id, call);
    }

    /// The SDP answer to the call's offer, with the call's media set up
    /// from it (once: early media and the answer share it); `None` when the
    /// offer cannot be answered.
    fn negotiate(&mut self, now: Instant, call_id: &str) -> Option<String> {
        let config = &self.config;
        let call = self.calls.get_mut(call_id)?;
        if let Some(sdp) = &call.sdp {
            return Some(sdp.clone());
        }
        let offer = std::str::from_utf8(call.invite.body()).ok().and_then(|sdp| parse_offer(sdp).ok());
        let answered = offer.and_then(|offer| {
            let chosen = choose_crypto(&offer, config.srtp).ok()?;
            let srtp = chosen.map(|c| Crypto { tag: c.tag, key: MasterKey::generate(c.key.suite(), &mut self.rng) });
            answer(
                &offer,
                config.local_rtp.ip(),
                config.local_rtp.port(),
                &config.codecs,
                u64::from(self.rng.next_u32()),
                1,
                srtp,
            )
            .ok()
        });
        let (sdp, description) = answered?;
        let encoder = Encoder::new(description.codec).ok()?;
        let sender = start_sender(&description, now, &mut self.rng);
        let remote = SocketAddr::new(description.address, description.port);
        self.by_media.insert(remote, call_id.to_string());
        call.media = Some(PhoneMedia {
            remote,
            srtp: description.srtp.as_ref().map(SrtpSession::new),
            description,
            sender,
            encoder,
        });
        call.sdp = Some(sdp.clone());
        Some(sdp)
    }

    fn answer(&mut self, now: Instant, call_id: &str) {
        let Some(contact) = self.calls.get(call_id).map(|call| self.contact(&call.invite)) else { return };
        let sdp = self.negotiate(now, call_id);
        let config = &self.config;
        let Some(call) = self.calls.get_mut(call_id) else { return };
        let status = match (config.reject, &sdp) {
            (Some(status), _) => Some(status),
            (None, None) => Some(488),
            (None, Some(_)) => None,
        };
        if let Some(status) = status {
            let response = Message::response_to(&call.invite, status, Some(&call.local_tag));
            call.final_response = Some(response.clone());
            call.resend = resend_schedule(now, config);
            call.stage = Stage::Answering;
            self.outbox.push_back((response, call.from));
            return;
        }
        let Some(sdp) = sdp else { return };
        let mut response =
            Message::response_to(&call.invite, 200, Some(&call.local_tag)).with_header("Contact", contact.clone());
        response.set_body("application/sdp", sdp.into_bytes());
        call.dialog = Dialog::as_callee(&call.invite, &call.local_tag, &contact, &mut self.rng).ok();
        let playing = config.play.as_ref().map_or(0, |audio| audio.len() as u64 * 1000 / 8000);
        call.keys = Some(Keys {
            queue: config.press.chars().collect(),
            next_at: now + Duration::from_millis(playing) + config.press_after,
            tone: None,
            event: None,
            event_timestamp: 0,
            unannounced: None,
            played: 0,
        });
        call.hangup_at = config.hangup_after.map(|d| now + d);
        call.final_response = Some(response.clone());
        call.resend = resend_schedule(now, config);
        call.stage = Stage::Answering;
        self.outbox.push_back((response, call.from));
    }

    /// An RTP datagram: counted for the call whose media it belongs to
    /// (under SRTP, if it is authentic and new).
    pub fn handle_rtp(&mut self, _now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(call) = self.by_media.get(&from).and_then(|id| self.calls.get_mut(id)) else { return };
        let authentic = match call.media.as_mut().and_then(|m| m.srtp.as_mut()) {
            Some(srtp) => srtp.unprotect(datagram).is_some(),
            None => true,
        };
        if authentic {
            call.rtp_received += 1;
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.deadline.set(None);
        let ids: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, call)| call.timer_due().is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let mut answer_now = false;
            let mut hang_up = false;
            let mut info_key = None;
            if let Some(call) = self.calls.get_mut(&id) {
                if let Stage::Ringing { answer_at: Some(at) } = call.stage
                    && now >= at
                {
                    answer_now = true;
                }
                if let Some((next, interval, give_up)) = call.resend
                    && now >= next
                {
                    if now >= give_up {
                        call.resend = None;
                    } else if let Some(response) = &call.final_response {
                        self.outbox.push_back((response.clone(), call.from));
                        let interval = (interval * 2).min(self.config.timers.t2);
                        call.resend = Some((now + interval, interval, give_up));
                    }
                }
                if matches!(call.stage, Stage::Talking | Stage::Answering) && call.dialog.is_some() {
                    if call.hangup_at.is_some_and(|t| now >= t) {
                        hang_up = true;
                    }
                    if let Some(keys) = call.keys.as_mut()
                        && keys.tone.is_none()
                        && keys.event.is_none()
                        && now >= keys.next_at
                        && let Some(key) = keys.queue.pop_front()
                    {
                        keys.next_at = now + PRESS + BETWEEN_PRESSES;
                        if self.config.via != PressVia::Info {
                            keys.unannounced = Some(key);
                        }
                        match self.config.via {
                            PressVia::Inband => {
                                keys.tone = ToneGenerator::dtmf(key, INBAND_DBM0).map(|t| (t, now + PRESS));
                            }
                            PressVia::Rfc4733 => {
                                let rate = call
                                    .media
                                    .as_ref()
                                    .map_or(8000, |m| m.description.telephone_event_rate.unwrap_or(8000));
                                keys.event = EventSender::new(key, 10, PRESS.as_millis() as u32, rate);
                                keys.event_timestamp = call.media.as_ref().map_or(0, |m| m.sender.timestamp());
                            }
                            PressVia::Info => info_key = Some(key),
                        }
                    }
                }
            }
            if answer_now {
                self.answer(now, &id);
            }
            if let Some(key) = info_key {
                self.send_info(&id, key);
            }
            if hang_up {
                self.send_bye(&id);
            }
        }
    }

    fn in_dialog_request(
        &mut self,
        call_id: &str,
        method: Method,
        body: Option<(&str, Vec<u8>)>,
    ) -> Option<&mut PhoneCall> {
        let config = &self.config;
        let call = self.calls.get_mut(call_id)?;
        let dialog = call.dialog.as_mut()?;
        let via = dialog::via(config.transport, config.local_sip, &mut self.rng);
        let method_is_bye = method == Method::Bye;
        let mut request = dialog.request(method, &via);
        if let Some((content_type, body)) = body {
            request.set_body(content_type, body);
        }
        if method_is_bye {
            call.bye = TransactionKey::of_request(&request);
        }
        self.outbox.push_back((request, call.from));
        Some(call)
    }

    fn send_info(&mut self, call_id: &str, key: char) {
        let body = format!("Signal={key}\r\nDuration=160\r\n").into_bytes();
        self.in_dialog_request(call_id, Method::Info, Some(("application/dtmf-relay", body)));
        announce(&mut self.events, call_id, Some(key));
    }

    fn send_bye(&mut self, call_id: &str) {
        if let Some(call) = self.in_dialog_request(call_id, Method::Bye, None) {
            call.stage = Stage::Leaving;
            call.hangup_at = None;
            call.keys = None;
        }
    }

    fn end(&mut self, call_id: &str) {
        if let Some(call) = self.calls.remove(call_id) {
            if let Some(media) = &call.media {
                self.by_media.remove(&media.remote);
            }
            let srtp = call.media.as_ref().and_then(|m| m.srtp.as_ref()).map(SrtpSession::suite);
            let call_id = call_id.to_string();
            self.events.push_back(PhoneEvent::CallEnded { call_id, rtp_received: call.rtp_received, srtp });
        }
    }

    /// The next RTP packet due by `now`, over all calls.
    pub fn poll_rtp(&mut self, now: Instant) -> Option<Transmit<&[u8]>> {
        if self.sending.is_empty() {
            if self.poll_timeout().is_none_or(|at| at > now) {
                return None;
            }
            let early = self.config.early_media.is_some();
            let due = self.calls.iter().filter(|(_, call)| call.media_due(early).is_some_and(|at| at <= now));
            self.sending.extend(due.map(|(id, _)| id.clone()));
        }
        // Each call sent from moves on to its next frame.
        self.deadline.set(None);
        let (packet, payload) = (&mut self.packet, &mut self.payload);
        while let Some(call_id) = self.sending.pop_front() {
            let Some(call) = self.calls.get_mut(&call_id) else { continue };
            let call_id = call_id.as_str();
            if let (Stage::Ringing { .. }, Some(media), Some(audio)) =
                (&call.stage, call.media.as_mut(), self.config.early_media.as_deref())
            {
                if media.sender.next_due().is_none_or(|due| due > now) {
                    continue;
                }
                let mut frame = [0i16; FRAME_SAMPLES];
                next_frame(audio, &mut call.early_played, &mut frame);
                if media.encoder.encode(&frame, payload).is_ok() {
                    media.sender.audio_frame(payload, packet);
                    if media.seal(packet) {
                        return Some(Transmit { destination: media.remote, contents: packet });
                    }
                    continue;
                }
                media.sender.skip_frame();
                continue;
            }
            if !matches!(call.stage, Stage::Talking | Stage::Answering) {
                continue;
            }
            let (Some(media), Some(keys)) = (call.media.as_mut(), call.keys.as_mut()) else { continue };
            if media.sender.next_due().is_none_or(|due| due > now) {
                continue;
            }
            if let Some(event) = keys.event.as_mut() {
                let event_pt = media.description.telephone_event.unwrap_or(101);
                match event.next_packet() {
                    Some((marker, data)) => {
                        media.sender.event_packet(PayloadType(event_pt), keys.event_timestamp, marker, &data, packet);
                        media.sender.skip_frame();
                        if !media.seal(packet) {
                            continue;
                        }
                        announce(&mut self.events, call_id, keys.unannounced.take());
                        return Some(Transmit { destination: media.remote, contents: packet });
                    }
                    None => {
                        keys.event = None;
                        media.sender.event_ended();
                    }
                }
            }
            let mut frame = [0i16; FRAME_SAMPLES];
            let n = next_frame(self.config.play.as_deref().unwrap_or_default(), &mut keys.played, &mut frame);
            if self.config.silent && keys.tone.is_none() && n == 0 {
                media.sender.skip_frame();
                continue;
            }
            let toning = keys.tone.is_some();
            if let Some((tone, until)) = keys.tone.as_mut() {
                tone.fill(&mut frame);
                if now + FRAME > *until {
                    keys.tone = None;
                }
            }
            if media.encoder.encode(&frame, payload).is_ok() {
                media.sender.audio_frame(payload, packet);
                if !media.seal(packet) {
                    continue;
                }
                if toning {
                    announce(&mut self.events, call_id, keys.unannounced.take());
                }
                return Some(Transmit { destination: media.remote, contents: packet });
            }
            media.sender.skip_frame();
        }
        None
    }

    /// The next SIP message and where it goes.
    pub fn poll_sip(&mut self) -> Option<Transmit<Message>> {
        let (contents, destination) = self.outbox.pop_front()?;
        Some(Transmit { destination, contents })
    }

    pub fn poll_event(&mut self) -> Option<PhoneEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(known) = self.deadline.get() {
            return known;
        }
        let early = self.config.early_media.is_some();
        let next = self.calls.values().flat_map(|call| [call.timer_due(), call.media_due(early)]).flatten().min();
        self.deadline.set(Some(next));
        next
    }
}

impl PhoneCall {
    /// When [`Phone::handle_timeout`] has something to do for this call: answer, resend the
    /// final response, press the next key, hang up.
    fn timer_due(&self) -> Option<Instant> {
        let answer = match self.stage {
            Stage::Ringing { answer_at } => answer_at,
            _ => None,
        };
        let keys = self.keys.as_ref().filter(|k| !k.queue.is_empty()).map(|k| k.next_at);
        [answer, self.resend.map(|r| r.0), keys, self.hangup_at].into_iter().flatten().min()
    }

    /// When [`Phone::poll_rtp`] sends this call's next frame: while ringing with early media
    /// (`early`), and from the answer until the phone's BYE. Never otherwise, so that a frame
    /// not sent is no deadline forever past.
    fn media_due(&self, early: bool) -> Option<Instant> {
        let sends = match self.stage {
            Stage::Ringing { .. } => early,
            Stage::Talking | Stage::Answering => self.keys.is_some(),
            Stage::Leaving => false,
        };
        self.media.as_ref().filter(|_| sends).and_then(|m| m.sender.next_due())
    }
}

impl PhoneMedia {
    /// Protects `packet` under SRTP; `false` if it must not leave.
    fn seal(&mut self, packet: &mut Vec<u8>) -> bool {
        self.srtp.as_mut().is_none_or(|srtp| srtp.protect(packet))
    }
}

/// Copies the next frame of `audio` from `played` on into `frame` (silence
/// past its end); returns the samples copied.
fn next_frame(audio: &[i16], played: &mut usize, frame: &mut [i16; FRAME_SAMPLES]) -> usize {
    let rest = audio.get(*played..).unwrap_or_default();
    let n = rest.len().min(FRAME_SAMPLES);
    frame[..n].copy_from_slice(&rest[..n]);
    *played += n;
    n
}

/// Reports a press that just began, if there is one.
fn announce(events: &mut VecDeque<PhoneEvent>, call_id: &str, key: Option<char>) {
    if let Some(key) = key {
        events.push_back(PhoneEvent::KeyPressed { call_id: call_id.to_string(), key });
    }
}

fn resend_schedule(now: Instant, config: &PhoneConfig) -> Option<(Instant, Duration, Instant)> {
    let t1 = config.timers.t1;
    (!config.transport.is_reliable()).then_some((now + t1, t1, now + t1 * 64))
}

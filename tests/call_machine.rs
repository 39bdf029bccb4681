//! The call machine against the simulated phone, both socket-free, in
//! simulated time: every outcome and every timer, in microseconds of real time.
//! Each side's requests run as client transactions of a socket-free table, as
//! behind the SIP endpoint: the machines are its transaction users.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;

use pound::call::{Call, CallConfig, CallEvent, CallReport, Prompts};
use pound::code::Code;
use pound::dialplan::Dialplan;
use pound::engine::LoadedDialplan;
use pound::locale::LOCALES;
use pound::media::codec::Codec;
use pound::phone::{Phone, PhoneConfig, PhoneEvent, PressVia};
use pound::rtp::{DEFAULT_LEARNING_PACKETS, EventSender, PayloadType, RtpPacket, Ssrc};
use pound::sip::endpoint::HandlerId;
use pound::sip::{ClientTransactions, Credentials, Hop, Matched, Message, Timers, auth};
use pound::srtp::Suite;
use pound::stir::{Attestation, Signer};
use pound::vocab::DtmfSource;
use pound::vocab::{Outcome, SrtpPolicy, Transmit, Transport};

#[path = "common/announce.rs"]
mod announce;

const CALLER_SIP: &str = "10.0.0.1:5060";
const CALLER_RTP: &str = "10.0.0.1:40000";
const PHONE_SIP: &str = "10.0.0.2:5070";
const PHONE_RTP: &str = "10.0.0.2:50000";
/// Where the callee's media comes from after its NAT rebinds.
const PHONE_RTP_REBOUND: &str = "10.0.0.2:61000";
/// A proxy between pound and the phone that does not record-route.
const PROXY_SIP: &str = "10.0.0.3:5060";
/// The wall clock when a simulated call starts, in Unix seconds (2025-11-30 00:00 UTC).
const WALL_CLOCK_S: u64 = 1_764_460_800;
/// Someone else on the network.
const STRANGER_SIP: &str = "10.0.0.66:5070";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn dialplan(extra: &str) -> Arc<Dialplan> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        "prompt = \"fixtures/prompts/en/press-pound.wav\"\nconfirmation_prompt = \"fixtures/prompts/en/confirmed.wav\"\n\
         fraud_prompt = \"fixtures/prompts/en/reported.wav\"\nwrong_key_prompt = \"fixtures/prompts/en/wrong-key.wav\"\n\
         fraud_code = \"0#\"\n{extra}"
    );
    Arc::new(Dialplan::parse("test", &text, root).unwrap())
}

fn phone_config() -> PhoneConfig {
    PhoneConfig {
        local_sip: addr(PHONE_SIP),
        transport: Transport::Udp,
        local_rtp: addr(PHONE_RTP),
        press: "#".into(),
        play: None,
        early_media: None,
        via: PressVia::Rfc4733,
        press_after: Duration::from_millis(800),
        answer_after: Duration::from_millis(2000),
        reject: None,
        never_answer: false,
        hangup_after: None,
        silent: false,
        codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::Opus],
        srtp: SrtpPolicy::Off,
        timers: Timers::default(),
    }
}

/// What the simulated network does to messages.
#[derive(Default, Clone, Copy)]
struct Network {
    /// The callee never hears anything (and so never answers).
    black_hole: bool,
    /// Drop this many INVITEs before delivering one.
    lose_invites: u32,
    /// Answer the first INVITE with this challenge (401 or 407).
    challenge: Option<u16>,
    /// The callee's RTP never arrives.
    lose_callee_media: bool,
    /// From this time on (since the INVITE), the callee's RTP arrives from
    /// another port, as when a NAT rebinds.
    callee_media_rebinds_at: Option<Duration>,
    /// ...and with this SSRC instead of its own: another stream.
    rebound_ssrc: Option<u32>,
    /// Signalling passes a proxy: pound sends to it and hears the phone from it.
    via_proxy: bool,
    /// From this time on (since the INVITE) the callee's side is gone without
    /// a BYE: requests to it are dropped, or answered with this status by the
    /// last proxy, and the phone's own messages are lost.
    callee_gone_at: Option<(Duration, Option<u16>)>,
    /// pound's SRTP setting for the call (its keys cross this network in the SDP).
    srtp: SrtpPolicy,
    /// Only the offer's `a=crypto` lines of this suite reach the callee, as
    /// if pound had offered only it.
    offer_only: Option<Suite>,
    /// Each of the callee's RTP packets arrives three times: first with one
    /// payload bit flipped, then as sent, then again (a replay).
    forge_and_replay_callee_media: bool,
}

struct Sim {
    start: Instant,
    now: Instant,
    call: Call,
    phone: Phone,
    network: Network,
    events: Vec<CallEvent>,
    challenged: Option<Message>,
    phone_rtp_received: u64,
    /// The payload of every RTP packet pound sent (SRTP: encrypted), in order.
    pound_rtp_payloads: Vec<Vec<u8>>,
    /// RTP datagrams the callee sent (whether or not they arrived).
    callee_rtp_sent: u64,
    /// What the phone said when the call ended: pound's packets it
    /// authenticated, and the SRTP suite.
    phone_heard: Option<(u64, Option<Suite>)>,
    /// Everything pound sent, in order.
    from_pound: Vec<Message>,
    /// Everything the phone sent, in order.
    from_phone: Vec<Message>,
    /// Every SIP message and RTP packet either side sent, as bytes, in order.
    wire: Vec<Vec<u8>>,
    /// pound's endpoint's client transactions, and the phone's.
    pound_transactions: ClientTransactions<()>,
    phone_transactions: ClientTransactions<()>,
    /// Whether each side's transport is reliable (no retransmissions).
    pound_reliable: bool,
    phone_reliable: bool,
}

/// The call, and the phone, as handlers behind their endpoints.
const HANDLER: HandlerId = HandlerId(1);

/// One end of the simulated call.
#[derive(Clone, Copy)]
enum Side {
    Pound,
    Phone,
}

/// SIP crosses the simulated network as bytes, so that writing and parsing
/// are inside the loop as on a real one.
fn over_the_wire(message: &Message, wire: &mut Vec<Vec<u8>>) -> Message {
    let bytes = message.to_bytes();
    let parsed = Message::parse(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    wire.push(bytes);
    parsed
}

impl Sim {
    fn new(plan: Arc<Dialplan>, phone: PhoneConfig, network: Network, codecs: Vec<Codec>) -> Sim {
        Sim::seeded(plan, phone, network, codecs, 1)
    }

    /// Both sides draw their identifiers from RNGs seeded with `seed`.
    fn seeded(plan: Arc<Dialplan>, phone: PhoneConfig, network: Network, codecs: Vec<Codec>, seed: u64) -> Sim {
        Sim::configured(plan, phone, network, codecs, seed, |_| {})
    }

    /// [`Sim::seeded`] with the call's configuration changed by `edit`.
    fn configured(
        plan: Arc<Dialplan>,
        phone: PhoneConfig,
        network: Network,
        codecs: Vec<Codec>,
        seed: u64,
        edit: impl FnOnce(&mut CallConfig),
    ) -> Sim {
        let now = Instant::now();
        let prompts = Arc::new(Prompts::load(&plan).unwrap());
        let config = CallConfig {
            target: "sip:+14155550100@10.0.0.2:5070;user=phone".into(),
            local_sip: addr(CALLER_SIP),
            // SRTP's keys travel in the SDP: the call machine sends them only over TLS.
            transport: if network.srtp == SrtpPolicy::Off { Transport::Udp } else { Transport::Tls },
            from_uri: "sip:pound@10.0.0.1".into(),
            from_display: Some("Contoso".into()),
            asserted_identity: None,
            credentials: Some(Credentials { user: "alice".into(), password: "s3cret".into() }),
            local_rtp: addr(CALLER_RTP),
            codecs,
            dialplan: plan,
            prompts,
            timers: Timers::default(),
            next_hop: addr(if network.via_proxy { PROXY_SIP } else { PHONE_SIP }),
            rtp_learning_packets: DEFAULT_LEARNING_PACKETS,
            stir: None,
            wall_clock: UNIX_EPOCH + Duration::from_secs(WALL_CLOCK_S),
            srtp: network.srtp,
            code: None,
        };
        let mut config = config;
        edit(&mut config);
        let (pound_reliable, phone_reliable) = (config.transport.is_reliable(), phone.transport.is_reliable());
        Sim {
            start: now,
            now,
            call: Call::with_rng(config, now, StdRng::seed_from_u64(seed)),
            phone: Phone::with_rng(phone, StdRng::seed_from_u64(seed.wrapping_add(1))),
            network,
            events: Vec::new(),
            challenged: None,
            phone_rtp_received: 0,
            pound_rtp_payloads: Vec::new(),
            callee_rtp_sent: 0,
            phone_heard: None,
            from_pound: Vec::new(),
            from_phone: Vec::new(),
            wire: Vec::new(),
            pound_transactions: ClientTransactions::default(),
            phone_transactions: ClientTransactions::default(),
            pound_reliable,
            phone_reliable,
        }
    }

    /// Runs until the call finishes (or `limit` of simulated time passes).
    /// Panics when the machines keep asking to be woken at a time already
    /// past without it moving on: a driver would spin on such a machine.
    fn run(&mut self, limit: Duration) -> Option<CallReport> {
        let end = self.now + limit;
        let mut wakeups_at_the_same_instant = 0;
        loop {
            if let Some(report) = self.exchange() {
                return Some(report);
            }
            let next = [
                self.call.poll_timeout(),
                self.phone.poll_timeout(),
                self.pound_transactions.poll_timeout(),
                self.phone_transactions.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min()?;
            if next > end {
                return None;
            }
            wakeups_at_the_same_instant = if next <= self.now { wakeups_at_the_same_instant + 1 } else { 0 };
            assert!(
                wakeups_at_the_same_instant < 1_000,
                "busy loop: woken again and again at {:.3} s, which has passed",
                self.elapsed()
            );
            self.now = self.now.max(next);
            self.pound_transactions.handle_timeout(self.now);
            self.phone_transactions.handle_timeout(self.now);
            self.call.handle_timeout(self.now);
            self.phone.handle_timeout(self.now);
        }
    }

    fn exchange(&mut self) -> Option<CallReport> {
        loop {
            let mut moved = self.pump(Side::Pound) | self.pump(Side::Phone);
            while let Some(Transmit { destination, contents: message }) = self.call.poll_sip() {
                moved = true;
                if message.is_request() {
                    self.start(Side::Pound, destination, message);
                } else {
                    self.pound_sends(message);
                }
            }
            while let Some(Transmit { destination, contents: message }) = self.phone.poll_sip() {
                moved = true;
                if message.is_request() {
                    self.start(Side::Phone, destination, message);
                } else {
                    self.phone_sends(message);
                }
            }
            while let Some(Transmit { destination: to, contents: packet }) = self.call.poll_rtp(self.now) {
                assert_eq!(to, addr(PHONE_RTP));
                let packet = packet.to_vec();
                self.wire.push(packet.clone());
                self.phone.handle_rtp(self.now, addr(CALLER_RTP), &packet);
                self.phone_rtp_received += 1;
                self.pound_rtp_payloads.push(RtpPacket::parse(&packet).map(|p| p.payload.to_vec()).unwrap_or_default());
                moved = true;
            }
            while let Some(Transmit { destination: to, contents: packet }) = self.phone.poll_rtp(self.now) {
                assert_eq!(to, addr(CALLER_RTP));
                self.callee_rtp_sent += 1;
                let mut packet = packet.to_vec();
                self.wire.push(packet.clone());
                let rebound = self.network.callee_media_rebinds_at.is_some_and(|at| self.now - self.start >= at);
                let from = if rebound {
                    if let Some(ssrc) = self.network.rebound_ssrc {
                        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
                    }
                    addr(PHONE_RTP_REBOUND)
                } else {
                    addr(PHONE_RTP)
                };
                if self.network.forge_and_replay_callee_media {
                    let mut forged = packet.clone();
                    forged[14] ^= 0x10;
                    self.call.handle_rtp(self.now, from, &forged);
                    self.call.handle_rtp(self.now, from, &packet);
                }
                if !self.network.lose_callee_media {
                    self.call.handle_rtp(self.now, from, &packet);
                }
                moved = true;
            }
            while let Some(event) = self.phone.poll_event() {
                if let PhoneEvent::CallEnded { rtp_received, srtp, .. } = event {
                    self.phone_heard = Some((rtp_received, srtp));
                }
            }
            while let Some(event) = self.call.poll_event() {
                if let CallEvent::Finished(report) = &event {
                    let report = report.clone();
                    self.events.push(event);
                    return Some(report);
                }
                self.events.push(event);
            }
            if !moved {
                return None;
            }
        }
    }

    fn transactions(&mut self, side: Side) -> &mut ClientTransactions<()> {
        match side {
            Side::Pound => &mut self.pound_transactions,
            Side::Phone => &mut self.phone_transactions,
        }
    }

    /// Sends what one side's transactions have to send, then tells its
    /// machine their news; whether anything happened.
    fn pump(&mut self, side: Side) -> bool {
        let mut moved = false;
        while let Some(out) = self.transactions(side).poll_transmit() {
            moved = true;
            match side {
                Side::Pound => self.pound_sends(out.transmit.contents),
                Side::Phone => self.phone_sends(out.transmit.contents),
            }
        }
        while let Some(event) = self.transactions(side).poll_event() {
            moved = true;
            match side {
                Side::Pound => self.call.handle_transaction(self.now, &event.key, event.event),
                Side::Phone => self.phone.handle_transaction(self.now, &event.key, event.event),
            }
        }
        moved
    }

    /// `side`'s machine sends a request to `destination`: it starts a transaction.
    fn start(&mut self, side: Side, destination: SocketAddr, request: Message) {
        let reliable = match side {
            Side::Pound => self.pound_reliable,
            Side::Phone => self.phone_reliable,
        };
        let hop = Hop { destination, path: (), reliable, timers: Timers::default() };
        let now = self.now;
        self.transactions(side).start(now, HANDLER, request, hop);
        self.pump(side);
    }

    fn pound_sends(&mut self, message: Message) {
        self.trace("pound ->", &message);
        let message = over_the_wire(&message, &mut self.wire);
        self.from_pound.push(message.clone());
        self.deliver_to_phone(message);
    }

    fn phone_sends(&mut self, message: Message) {
        self.trace("phone ->", &message);
        let message = over_the_wire(&message, &mut self.wire);
        self.from_phone.push(message.clone());
        self.reach_pound(self.phone_signalling(), message);
    }

    /// A message reaches pound's endpoint from `from`: a response goes to
    /// its transaction (or, from a foreign address, to the call), a request
    /// to the call.
    fn reach_pound(&mut self, from: SocketAddr, message: Message) {
        if !message.is_request() {
            match self.pound_transactions.handle_response(self.now, from, message.clone()) {
                Matched::Foreign(_) => self.call.handle_sip(self.now, from, message),
                Matched::Taken | Matched::Unknown => {}
            }
            self.pump(Side::Pound);
            return;
        }
        self.call.handle_sip(self.now, from, message);
    }

    /// `POUND_SIM_TRACE=1` prints the SIP exchange, for debugging a failing case.
    fn trace(&self, who: &str, message: &Message) {
        if std::env::var_os("POUND_SIM_TRACE").is_some() {
            let first = String::from_utf8_lossy(&message.to_bytes()).lines().next().unwrap_or_default().to_string();
            let cseq = message.header("CSeq").unwrap_or_default().to_string();
            eprintln!("{:>8.3} s {who} {first} [{cseq}]", self.elapsed());
        }
    }

    /// Where pound hears the phone's signalling from.
    fn phone_signalling(&self) -> SocketAddr {
        addr(if self.network.via_proxy { PROXY_SIP } else { PHONE_SIP })
    }

    fn elapsed(&self) -> f64 {
        (self.now - self.start).as_secs_f64()
    }

    fn deliver_to_phone(&mut self, message: Message) {
        if self.network.black_hole {
            return;
        }
        if let Some((at, answer)) = self.network.callee_gone_at
            && self.now - self.start >= at
        {
            if let Some(status) =
                answer.filter(|_| message.is_request() && message.method().is_none_or(|m| m.as_str() != "ACK"))
            {
                let response = Message::response_to(&message, status, None);
                self.reach_pound(self.phone_signalling(), response);
            }
            return;
        }
        let is_invite = message.method().is_some_and(|m| m.as_str() == "INVITE");
        if is_invite && self.network.lose_invites > 0 {
            self.network.lose_invites -= 1;
            return;
        }
        if is_invite && let Some(status) = self.network.challenge.take() {
            let header = if status == 401 { "WWW-Authenticate" } else { "Proxy-Authenticate" };
            let challenge = Message::response_to(&message, status, Some("proxytag"))
                .with_header(header, "Digest realm=\"example.com\", nonce=\"abc123\", qop=\"auth\", algorithm=SHA-256");
            self.challenged = Some(message);
            self.reach_pound(self.phone_signalling(), challenge);
            return;
        }
        if message.method().is_some_and(|m| m.as_str() == "ACK")
            && self.challenged.is_some()
            && message.to_tag().as_deref() == Some("proxytag")
        {
            return;
        }
        let message = match self.network.offer_only {
            Some(suite) if is_invite => keep_crypto_of(message, suite),
            _ => message,
        };
        if message.is_request() {
            self.phone.handle_sip(self.now, addr(CALLER_SIP), message);
        } else {
            self.phone_transactions.handle_response(self.now, addr(CALLER_SIP), message);
            self.pump(Side::Phone);
        }
    }
}

/// `invite` with only the `a=crypto` lines of `suite` left in its SDP.
fn keep_crypto_of(mut invite: Message, suite: Suite) -> Message {
    let sdp = String::from_utf8(invite.body().to_vec()).unwrap();
    let kept: String = sdp
        .split_inclusive("\r\n")
        .filter(|line| !line.starts_with("a=crypto:") || line.contains(&format!(" {} ", suite.name())))
        .collect();
    invite.set_body("application/sdp", kept.into_bytes());
    invite
}

/// A call straight to the phone's address, PCMU only, no credentials.
fn direct_call(target: &str, transport: Transport, srtp: SrtpPolicy) -> CallConfig {
    let plan = dialplan("");
    let prompts = Arc::new(Prompts::load(&plan).unwrap());
    CallConfig {
        target: target.into(),
        local_sip: addr(CALLER_SIP),
        transport,
        from_uri: "sip:pound@10.0.0.1".into(),
        from_display: None,
        asserted_identity: None,
        credentials: None,
        local_rtp: addr(CALLER_RTP),
        codecs: vec![Codec::Pcmu],
        dialplan: plan,
        prompts,
        timers: Timers::default(),
        next_hop: addr(PHONE_SIP),
        rtp_learning_packets: DEFAULT_LEARNING_PACKETS,
        stir: None,
        wall_clock: UNIX_EPOCH + Duration::from_secs(WALL_CLOCK_S),
        srtp,
        code: None,
    }
}

fn call(plan: Arc<Dialplan>, phone: PhoneConfig) -> (CallReport, Sim) {
    call_with(plan, phone, Network::default(), vec![Codec::Pcmu, Codec::Pcma, Codec::Opus])
}

fn call_with(plan: Arc<Dialplan>, phone: PhoneConfig, network: Network, codecs: Vec<Codec>) -> (CallReport, Sim) {
    let mut sim = Sim::new(plan, phone, network, codecs);
    let report = sim.run(Duration::from_secs(600)).expect("the call ends");
    (report, sim)
}

#[test]
fn each_dtmf_path_and_codec_verifies() {
    for via in [PressVia::Rfc4733, PressVia::Inband, PressVia::Info] {
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::Opus] {
            let phone = PhoneConfig { via, codecs: vec![codec], ..phone_config() };
            let (report, sim) = call(dialplan(""), phone);
            let source = match via {
                PressVia::Rfc4733 => DtmfSource::Rfc4733,
                PressVia::Inband => DtmfSource::Inband,
                PressVia::Info => DtmfSource::Info,
            };
            assert_eq!(report.outcome, Outcome::Verified, "{via:?} {codec:?}: {report:?}");
            assert_eq!(report.dtmf_source, Some(source), "{via:?} {codec:?}");
            assert_eq!(report.digits, "#");
            assert_eq!(report.sip_status, Some(200));
            // Answer after 2 s of ringing, key 0.8 s later, then the confirmation prompt and BYE.
            let answered = report.answered_ms.unwrap();
            assert!((2000..2100).contains(&answered), "{via:?} {codec:?}: answered after {answered} ms");
            let digit = report.digit_ms.unwrap() - answered;
            assert!((800..1100).contains(&digit), "{via:?} {codec:?}: key after {digit} ms");
            assert!(sim.phone_rtp_received > 50, "the prompt was sent");
            assert!(sim.events.contains(&CallEvent::Ringing) && sim.events.contains(&CallEvent::Answered));
        }
    }
}

#[test]
fn a_simulated_call_is_reproducible_bit_for_bit_from_its_seed() {
    let run = |seed| {
        let phone = PhoneConfig { via: PressVia::Inband, ..phone_config() };
        let mut sim = Sim::seeded(dialplan(""), phone, Network::default(), vec![Codec::Pcmu], seed);
        let report = sim.run(Duration::from_secs(600)).expect("the call ends");
        assert_eq!(report.outcome, Outcome::Verified);
        (report, sim.wire)
    };
    let (first, wire) = run(42);
    let (again, same) = run(42);
    assert_eq!(first, again);
    assert!(wire.len() > 100, "{} datagrams", wire.len());
    assert!(wire == same, "the same seed gave different bytes on the wire");
    let (_, other) = run(43);
    assert_ne!(wire[0], other[0], "the INVITE's identifiers come from the seed");
}

#[test]
fn the_fraud_code_is_reported() {
    let (report, _) = call(dialplan(""), PhoneConfig { press: "0#".into(), ..phone_config() });
    assert_eq!(report.outcome, Outcome::FraudReported);
    assert_eq!(report.digits, "0#");
}

#[test]
fn wrong_keys_until_attempts_run_out_are_wrong_input() {
    let (report, _) = call(dialplan("max_attempts = 2"), PhoneConfig { press: "57".into(), ..phone_config() });
    assert_eq!(report.outcome, Outcome::WrongInput);
    assert_eq!(report.digits, "57");
    let (report, _) = call(dialplan("max_attempts = 2"), PhoneConfig { press: "5#".into(), ..phone_config() });
    assert_eq!(report.outcome, Outcome::Verified, "a wrong key, then the right one");
}

/// A call whose verification has number matching with `code`; the phone presses `press`.
fn code_call(plan: Arc<Dialplan>, code: &str, press: &str) -> (CallReport, Sim) {
    let phone = PhoneConfig { press: press.into(), ..phone_config() };
    let code = Code::parse(code).unwrap();
    let mut sim = Sim::configured(plan, phone, Network::default(), vec![Codec::Pcmu], 1, |c| c.code = Some(code));
    let report = sim.run(Duration::from_secs(600)).expect("the call ends");
    (report, sim)
}

#[test]
fn number_matching_verifies_the_code_then_pound_and_nothing_else() {
    use Outcome::*;
    let plan = dialplan("input_timeout_ms = 3000");
    for (press, outcome, digits) in [
        ("47#", Verified, "xx#"),
        // `#` alone, the reflex the code is there to stop: asked again, then wrong_input.
        ("#", WrongInput, "#"),
        ("###", WrongInput, "###"),
        ("#47#", Verified, "#xx#"),
        ("74#", WrongInput, "xx#"),
        ("4#47#", Verified, "x#xx#"),
        ("470#", WrongInput, "xxx#"),
        ("0#", FraudReported, "x#"),
        ("123456789", WrongInput, "xxxxxxxxx"),
    ] {
        let (report, sim) = code_call(plan.clone(), "47", press);
        assert_eq!((report.outcome, report.digits.as_str()), (outcome, digits), "{press}: {report:?}");
        // Every event and the report show the keys hidden.
        let shown: String = sim
            .events
            .iter()
            .filter_map(|e| if let CallEvent::Digit { digit, .. } = e { Some(*digit) } else { None })
            .collect();
        assert_eq!(shown, digits, "{press}");
    }
    // A code that starts with 0 is still a code; `0#` is still fraud.
    let (report, _) = code_call(plan.clone(), "07", "07#");
    assert_eq!(report.outcome, Verified, "{report:?}");
    let (report, _) = code_call(plan.clone(), "07", "0#");
    assert_eq!(report.outcome, FraudReported, "{report:?}");
    // Without a code, `#` alone verifies as before.
    let (report, _) = call(plan, PhoneConfig { press: "#".into(), ..phone_config() });
    assert_eq!(report.outcome, Verified);
}

#[test]
fn number_matching_plays_the_code_prompt_and_a_wrong_code_is_told_so() {
    let plan = dialplan("prompt_repeats = 2\ninput_timeout_ms = 3000");
    let prompts = Prompts::load(&plan).unwrap();
    let (code, main) = (prompts.code.duration().as_millis() as u64, prompts.main.duration().as_millis() as u64);
    assert!(code > main + 300, "the prompts must differ in length for this test: {code} vs {main} ms");
    let (report, _) = code_call(plan.clone(), "47", "");
    assert_eq!(report.outcome, Outcome::NoInput);
    let talk = report.duration_ms - report.answered_ms.unwrap();
    // Two plays of the code prompt and two input timeouts, then BYE.
    assert!(talk + 100 >= 2 * code + 6000 && talk < 2 * code + 6500, "{talk} ms for a {code} ms prompt");
    // `#` at once: "not the number shown", the code prompt twice more, silence.
    let wrong = prompts.wrong_code.as_ref().unwrap().duration().as_millis() as u64;
    let (report, _) = code_call(plan, "47", "#");
    assert_eq!(report.outcome, Outcome::WrongInput);
    let after_key = report.duration_ms - report.answered_ms.unwrap() - 800;
    let expected = wrong + 2 * code + 6000;
    assert!(
        after_key + 100 >= expected && after_key < expected + 600,
        "{after_key} ms after the key, {expected} expected"
    );
}

#[test]
fn every_shipped_locale_plays_its_own_prompt_and_verifies() {
    let loaded = LoadedDialplan::load(Dialplan::find("press-pound", None).unwrap()).unwrap();
    // Half a second of the speech of each locale's first prompt as PCMU, past its
    // 0.2 s of leading silence and before the key 0.8 s after the answer stops it.
    // Loaded here from the locale's own files, not through the engine's choice under test.
    let speech = |locale: &'static str| -> Vec<u8> {
        let prompts = Prompts::load(&loaded.plan.with_locale(locale)).unwrap();
        prompts.main.encoded(Codec::Pcmu).unwrap()[10..35].concat()
    };
    for locale in LOCALES {
        let phone = PhoneConfig { codecs: vec![Codec::Pcmu], ..phone_config() };
        let plan = loaded.plan.clone();
        let mut sim = Sim::configured(plan, phone, Network::default(), vec![Codec::Pcmu], 1, |c| {
            c.prompts = loaded.prompts_in(Some(locale));
        });
        let report = sim.run(Duration::from_secs(600)).expect("the call ends");
        assert_eq!((report.outcome, report.digits.as_str()), (Outcome::Verified, "#"), "{locale}: {report:?}");
        // What the phone heard is this locale's prompt, and no other's.
        let heard = sim.pound_rtp_payloads.concat();
        let played = |l: &'static str| {
            let want = speech(l);
            heard.windows(want.len()).any(|w| w == want)
        };
        let matching: Vec<&str> = LOCALES.into_iter().filter(|l| played(l)).collect();
        assert_eq!(matching, [locale], "{locale}: the phone heard the prompts of {matching:?}");
    }
}

#[test]
fn no_key_after_every_repeat_is_no_input() {
    let plan = dialplan("prompt_repeats = 2\ninput_timeout_ms = 3000");
    let (report, _) = call(plan.clone(), PhoneConfig { press: String::new(), ..phone_config() });
    assert_eq!(report.outcome, Outcome::NoInput);
    let prompt = Prompts::load(&plan).unwrap().main.duration().as_millis() as u64;
    let talk = report.duration_ms - report.answered_ms.unwrap();
    // Two plays of the prompt and two input timeouts, then BYE.
    // The last frame of a prompt is sent 20 ms before the prompt's end.
    assert!(talk + 100 >= 2 * prompt + 6000 && talk < 2 * prompt + 6500, "{talk} ms for a {prompt} ms prompt");
}

#[test]
fn the_callee_hanging_up_first_is_callee_hangup() {
    let phone = PhoneConfig { press: String::new(), hangup_after: Some(Duration::from_millis(1500)), ..phone_config() };
    let (report, _) = call(dialplan(""), phone);
    assert_eq!(report.outcome, Outcome::CalleeHangup);
}

#[test]
fn rejections_map_to_their_outcomes() {
    for (status, outcome) in [
        (486, Outcome::Busy),
        (600, Outcome::Busy),
        (603, Outcome::Declined),
        (404, Outcome::InvalidNumber),
        (503, Outcome::Unreachable),
    ] {
        let (report, _) = call(dialplan(""), PhoneConfig { reject: Some(status), ..phone_config() });
        assert_eq!(report.outcome, outcome, "{status}");
        assert_eq!(report.sip_status, Some(status));
        assert!(report.answered_ms.is_none());
    }
}

#[test]
fn ringing_past_the_ring_timeout_is_canceled() {
    let (report, _) = call(dialplan("ring_timeout_ms = 30000"), PhoneConfig { never_answer: true, ..phone_config() });
    assert_eq!(report.outcome, Outcome::NoAnswer);
    assert_eq!(report.sip_status, Some(487));
    assert!((30_000..30_100).contains(&report.duration_ms), "{}", report.duration_ms);
}

#[test]
fn an_answer_crossing_the_cancel_is_acknowledged_and_hung_up() {
    // The phone answers exactly at the ring timeout: CANCEL and 200 cross.
    let phone = PhoneConfig { answer_after: Duration::from_millis(30_000), ..phone_config() };
    let (report, _) = call(dialplan("ring_timeout_ms = 30000"), phone);
    assert_eq!(report.outcome, Outcome::NoAnswer);
    assert_eq!(report.sip_status, Some(200));
    assert!(report.answered_ms.is_some());
}

#[test]
fn no_response_at_all_is_unreachable_after_timer_b() {
    let network = Network { black_hole: true, ..Network::default() };
    let (report, _) = call_with(dialplan(""), phone_config(), network, vec![Codec::Pcmu]);
    assert_eq!(report.outcome, Outcome::Unreachable);
    assert_eq!(report.sip_status, None);
    assert_eq!(report.duration_ms, 32_000, "timer B is 64·T1");
}

#[test]
fn lost_invites_are_retransmitted() {
    let network = Network { lose_invites: 2, ..Network::default() };
    let (report, _) = call_with(dialplan(""), phone_config(), network, vec![Codec::Pcmu]);
    assert_eq!(report.outcome, Outcome::Verified);
    // Timer A: resent after 0.5 s and 1 s more; the phone answers 2 s after the third.
    assert!((3500..3600).contains(&report.answered_ms.unwrap()), "{:?}", report.answered_ms);
}

#[test]
fn digest_challenges_are_answered_once() {
    for status in [401, 407] {
        let network = Network { challenge: Some(status), ..Network::default() };
        let mut sim = Sim::new(dialplan(""), phone_config(), network, vec![Codec::Pcmu]);
        let report = sim.run(Duration::from_secs(600)).unwrap();
        assert_eq!(report.outcome, Outcome::Verified, "{status}");
        let challenged = sim.challenged.expect("the first INVITE was challenged");
        assert!(challenged.header("Authorization").is_none() && challenged.header("Proxy-Authorization").is_none());
    }
}

/// A signing trunk's call, the caller's number in P-Asserted-Identity.
fn signed(network: Network, asserted_identity: &str) -> Sim {
    let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stir/pkcs8.key.pem");
    let signer = Arc::new(Signer::load(&key, "https://cert.example.org/pound.pem", Attestation::A).unwrap());
    let identity = asserted_identity.to_string();
    Sim::configured(dialplan(""), phone_config(), network, vec![Codec::Pcmu], 1, move |config| {
        config.stir = Some(signer);
        config.asserted_identity = Some(identity);
    })
}

/// The claims of an `Identity` header, unverified (the `stir` unit tests verify signatures).
fn passport_claims(identity: &str) -> serde_json::Value {
    use base64::Engine;
    let claims = identity.split(['.', ';']).nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

#[test]
fn every_invite_is_signed_retransmissions_repeat_it_and_a_challenge_answer_is_signed_afresh() {
    // The first two INVITEs are lost (resent at 0.5 s and 1.5 s); the third is challenged, and
    // the answer to the challenge leaves at 1.5 s, one wall-clock second after the first.
    let network = Network { lose_invites: 2, challenge: Some(407), ..Network::default() };
    let mut sim = signed(network, "sip:+1-415-555-0000@example.com");
    let report = sim.run(Duration::from_secs(600)).unwrap();
    assert_eq!(report.outcome, Outcome::Verified, "{report:?}");
    let invites: Vec<&Message> =
        sim.from_pound.iter().filter(|m| m.method().is_some_and(|m| m.as_str() == "INVITE")).collect();
    assert_eq!(invites.len(), 4, "three sends of the first INVITE and the authenticated one");
    let identities: Vec<&str> = invites.iter().map(|m| m.header("Identity").expect("every INVITE is signed")).collect();
    assert!(identities[..3].iter().all(|i| *i == identities[0]), "a retransmission repeats the bytes");
    assert!(identities[3] != identities[0] && invites[3].header("Proxy-Authorization").is_some());
    let (first, retry) = (passport_claims(identities[0]), passport_claims(identities[3]));
    assert_eq!((first["iat"].as_u64(), retry["iat"].as_u64()), (Some(WALL_CLOCK_S), Some(WALL_CLOCK_S + 1)));
    assert_eq!(first["origid"], retry["origid"], "one origid per call");
    assert_eq!(first["orig"], serde_json::json!({"tn": "14155550000"}), "the P-Asserted-Identity's number");
    assert_eq!(first["dest"], serde_json::json!({"tn": ["14155550100"]}), "the Request-URI's number");
    for identity in identities {
        assert!(identity.ends_with(";info=<https://cert.example.org/pound.pem>;alg=ES256;ppt=shaken"), "{identity}");
    }
    // Nothing else the call sends is signed.
    assert!(
        sim.from_pound
            .iter()
            .filter(|m| !invites.iter().any(|i| std::ptr::eq(*i, *m)))
            .all(|m| m.header("Identity").is_none())
    );
}

#[test]
fn a_signing_trunk_without_a_caller_number_sends_nothing() {
    let mut sim = signed(Network::default(), "sip:operator@example.com");
    let report = sim.run(Duration::from_secs(60)).unwrap();
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.detail.as_deref().is_some_and(|d| d.contains("STIR/SHAKEN") && d.contains("caller")), "{report:?}");
    assert!(sim.from_pound.is_empty(), "an unsigned INVITE left: {:?}", sim.from_pound.first());
}

#[test]
fn the_authorization_is_computed_from_the_challenge() {
    let challenge =
        auth::Challenge::parse("Digest realm=\"example.com\", nonce=\"abc123\", qop=\"auth\", algorithm=SHA-256")
            .unwrap();
    let credentials = Credentials { user: "alice".into(), password: "s3cret".into() };
    let value = auth::authorize(&challenge, &credentials, &pound::sip::Method::Invite, "sip:x@y", "c0ffee", 1);
    assert!(
        value.contains("username=\"alice\"") && value.contains("algorithm=SHA-256") && value.contains("nc=00000001")
    );
    assert!(!value.contains("s3cret"));
}

/// A callee with silence suppression (VAD/DTX): no RTP while listening.
fn silent_phone(press: &str, after: Duration) -> PhoneConfig {
    PhoneConfig { press: press.into(), press_after: after, silent: true, ..phone_config() }
}

#[test]
fn a_silent_callee_pressing_pound_by_rfc4733_after_15_s_is_verified() {
    // The compiled-in dialplan: what `pound serve` uses by default.
    let plan = Arc::new(Dialplan::find("press-pound", None).unwrap());
    let (report, sim) = call(plan, silent_phone("#", Duration::from_secs(15)));
    assert_eq!(report.outcome, Outcome::Verified, "{report:?}");
    assert_eq!(report.dtmf_source, Some(DtmfSource::Rfc4733));
    assert!(report.digit_ms.unwrap() - report.answered_ms.unwrap() >= 15_000, "{report:?}");
    // Only the key's events crossed: a 160 ms press is a handful of packets.
    assert!(sim.callee_rtp_sent > 0 && sim.callee_rtp_sent < 20, "{} packets", sim.callee_rtp_sent);
}

#[test]
fn a_wrong_key_then_silence_is_wrong_input() {
    let (report, _) = call(dialplan("input_timeout_ms = 3000"), silent_phone("5", Duration::from_secs(2)));
    assert_eq!(report.outcome, Outcome::WrongInput, "{report:?}");
    assert_eq!(report.digits, "5");
}

#[test]
fn silence_only_is_no_input_not_failed() {
    let (report, _) = call(dialplan("input_timeout_ms = 3000"), silent_phone("", Duration::ZERO));
    assert_eq!(report.outcome, Outcome::NoInput, "{report:?}");
    // Even with no packet arriving at all, not only none sent.
    let network = Network { lose_callee_media: true, ..Network::default() };
    let (report, _) = call_with(dialplan("input_timeout_ms = 3000"), phone_config(), network, vec![Codec::Pcmu]);
    assert_eq!(report.outcome, Outcome::NoInput, "{report:?}");
}

#[test]
fn media_timeouts_are_off_or_at_least_a_minute() {
    assert_eq!(dialplan("").media_timeout, None);
    assert_eq!(dialplan("media_timeout_ms = 0").media_timeout, None);
    assert_eq!(dialplan("media_timeout_ms = 60000").media_timeout, Some(Duration::from_secs(60)));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let error = Dialplan::parse("t", "prompt = \"p\"\nmedia_timeout_ms = 10000", root).unwrap_err().to_string();
    assert!(error.contains("media_timeout_ms"), "{error}");
}

/// Runs the call while the callee sends only comfort noise (RFC 3389,
/// payload type 13) every 200 ms, as a phone with VAD does while listening.
fn run_with_comfort_noise(mut sim: Sim) -> CallReport {
    let mut datagram = Vec::new();
    for sequence in 1u16.. {
        let next = sim.now + Duration::from_millis(200);
        if let Some(report) = sim.run(Duration::from_millis(200)) {
            return report;
        }
        // Nothing else was due before then.
        sim.now = sim.now.max(next);
        if sim.events.contains(&CallEvent::Answered) {
            // One byte: the noise level, -70 dBov.
            let noise = RtpPacket {
                payload_type: PayloadType(13),
                marker: false,
                sequence,
                timestamp: u32::from(sequence) * 1600,
                ssrc: Ssrc(0xc0ff_ee00),
                payload: &[70],
            };
            datagram.clear();
            noise.write(&mut datagram);
            sim.call.handle_rtp(sim.now, addr(PHONE_RTP), &datagram);
        }
        assert!(sim.elapsed() < 600.0, "the call never ended");
    }
    unreachable!("the call ends long before the sequence numbers run out")
}

#[test]
fn comfort_noise_is_silence_not_a_failure() {
    let key_by_info = PhoneConfig { via: PressVia::Info, ..silent_phone("#", Duration::from_secs(15)) };
    let sim = Sim::new(dialplan(""), key_by_info, Network::default(), vec![Codec::Pcmu]);
    let report = run_with_comfort_noise(sim);
    assert_eq!((report.outcome, report.dtmf_source), (Outcome::Verified, Some(DtmfSource::Info)), "{report:?}");
    let sim = Sim::new(
        dialplan("input_timeout_ms = 3000"),
        silent_phone("", Duration::ZERO),
        Network::default(),
        vec![Codec::Pcmu],
    );
    let report = run_with_comfort_noise(sim);
    assert_eq!(report.outcome, Outcome::NoInput, "{report:?}");
    assert_eq!(report.foreign_rtp_packets, 0, "comfort noise from the answer's address is the callee's");
}

/// Long input timeouts, so that the media timeout comes first.
const MEDIA_TIMEOUT_PLAN: &str = "media_timeout_ms = 60000\ninput_timeout_ms = 60000";

#[test]
fn the_media_timeout_with_a_live_dialog_is_no_input_with_a_detail() {
    let (report, sim) = call(dialplan(MEDIA_TIMEOUT_PLAN), silent_phone("", Duration::ZERO));
    assert_eq!(report.outcome, Outcome::NoInput, "{report:?}");
    assert!(report.detail.as_deref().unwrap_or_default().contains("media timeout"), "{report:?}");
    let asked = sim.from_pound.iter().filter(|m| m.method().is_some_and(|m| m.as_str() == "OPTIONS")).count();
    assert_eq!(asked, 1, "one in-dialog OPTIONS before deciding");
    assert!(sim.from_pound.last().unwrap().method().is_some_and(|m| m.as_str() == "BYE"));
}

#[test]
fn a_bye_never_answered_is_waited_for_without_spinning() {
    // The callee presses # and is gone before the closing prompt ends: pound's BYE is never
    // answered. The call waits out timer F; until then its deadlines must lie ahead (the media
    // sender stops with the BYE; its overdue frame once made every wake-up due at once).
    // The phone answers at 2 s and presses # at 2.8 s; the closing prompt plays past 4 s.
    let network = Network { callee_gone_at: Some((Duration::from_secs(4), None)), ..Network::default() };
    let (report, sim) = call_with(dialplan(""), phone_config(), network, vec![Codec::Pcmu]);
    assert_eq!(report.outcome, Outcome::Verified, "{report:?}");
    let byes = sim.from_pound.iter().filter(|m| m.method().is_some_and(|m| m.as_str() == "BYE")).count();
    assert!(byes > 1, "the BYE was retransmitted until timer F: {byes}");
}

#[test]
fn a_callee_whose_bye_goes_unanswered_waits_without_spinning() {
    // pound phone hangs up 1.5 s after answering (at 3.5 s); pound's 200 to its BYE is lost. The
    // phone waits for its BYE's transaction to end, its media stopped: no deadline already past.
    let network = Network { callee_gone_at: Some((Duration::from_millis(3_400), None)), ..Network::default() };
    let phone = PhoneConfig { press: String::new(), hangup_after: Some(Duration::from_millis(1500)), ..phone_config() };
    let mut sim = Sim::new(dialplan(""), phone, network, vec![Codec::Pcmu]);
    let report = sim.run(Duration::from_secs(600)).expect("the call ends");
    assert_eq!(report.outcome, Outcome::CalleeHangup);
    assert!(sim.run(Duration::from_secs(120)).is_none(), "the phone settles");
    let byes = sim.from_phone.iter().filter(|m| m.method().is_some_and(|m| m.as_str() == "BYE")).count();
    assert!(byes > 1, "the phone retransmitted its BYE: {byes}");
}

#[test]
fn the_media_timeout_with_a_dead_dialog_is_callee_hangup() {
    for answer in [None, Some(481), Some(408)] {
        let network = Network { callee_gone_at: Some((Duration::from_secs(10), answer)), ..Network::default() };
        let (report, sim) =
            call_with(dialplan(MEDIA_TIMEOUT_PLAN), silent_phone("", Duration::ZERO), network, vec![Codec::Pcmu]);
        assert_eq!(report.outcome, Outcome::CalleeHangup, "{answer:?}: {report:?}");
        let detail = report.detail.unwrap_or_default();
        assert!(detail.contains("dialog is gone"), "{answer:?}: {detail}");
        assert!(
            !sim.from_pound.iter().any(|m| m.method().is_some_and(|m| m.as_str() == "BYE")),
            "no BYE into a dead dialog"
        );
    }
}

#[test]
fn the_requester_can_cancel_while_it_rings() {
    let mut sim = Sim::new(
        dialplan(""),
        PhoneConfig { never_answer: true, ..phone_config() },
        Network::default(),
        vec![Codec::Pcmu],
    );
    assert!(sim.run(Duration::from_secs(1)).is_none());
    sim.call.cancel(sim.now);
    let report = sim.run(Duration::from_secs(60)).unwrap();
    assert_eq!(report.outcome, Outcome::Canceled);
}

/// A request from the callee inside the established dialog, as a real phone
/// would build it from the INVITE and its own 200.
fn callee_request(sim: &Sim, method: &str, cseq: u32, sdp: Option<&str>) -> Message {
    let invite = sim.from_pound.iter().find(|m| m.method().is_some_and(|m| m.as_str() == "INVITE")).unwrap();
    let ok = sim
        .from_phone
        .iter()
        .find(|m| m.status() == Some(200) && m.cseq().is_some_and(|c| c.1.as_str() == "INVITE"))
        .unwrap();
    let mut request = Message::request(pound::sip::Method::parse(method), "sip:pound@10.0.0.1:5060")
        .with_header("Via", format!("SIP/2.0/UDP {PHONE_SIP};branch=z9hG4bKtest{cseq}"))
        .with_header("From", ok.header("To").unwrap())
        .with_header("To", invite.header("From").unwrap())
        .with_header("Call-ID", invite.call_id().unwrap())
        .with_header("CSeq", format!("{cseq} {method}"))
        .with_header("Contact", format!("<sip:phone@{PHONE_SIP}>"));
    if let Some(sdp) = sdp {
        request.set_body("application/sdp", sdp.as_bytes().to_vec());
    }
    request
}

fn answer_to(sim: &Sim, cseq: u32, method: &str) -> Message {
    sim.from_pound
        .iter()
        .rev()
        .find(|m| m.status().is_some() && m.cseq().is_some_and(|(n, m)| n == cseq && m.as_str() == method))
        .cloned()
        .unwrap_or_else(|| panic!("pound answered {cseq} {method}"))
}

fn hold_sdp(direction: &str) -> String {
    format!(
        "v=0\r\no=phone 1 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
         m=audio 50000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    )
}

#[test]
fn hold_and_resume_by_reinvite_and_update_keep_the_call() {
    let phone = PhoneConfig { press_after: Duration::from_millis(3000), ..phone_config() };
    let mut sim = Sim::new(dialplan(""), phone, Network::default(), vec![Codec::Pcmu]);
    assert!(sim.run(Duration::from_millis(2500)).is_none(), "answered and talking");
    let now = sim.now;
    let hold = callee_request(&sim, "INVITE", 10, Some(&hold_sdp("sendonly")));
    sim.call.handle_sip(now, addr(PHONE_SIP), hold.clone());
    assert!(sim.exchange().is_none());
    let answer = answer_to(&sim, 10, "INVITE");
    assert_eq!(answer.status(), Some(200));
    let body = String::from_utf8_lossy(answer.body()).to_string();
    assert!(body.contains("a=recvonly"), "hold is answered recvonly: {body}");
    // The 200 is repeated until the ACK comes.
    assert!(sim.run(Duration::from_millis(600)).is_none());
    assert!(
        sim.from_pound.iter().filter(|m| m.status() == Some(200) && m.cseq().is_some_and(|c| c.0 == 10)).count() >= 2
    );
    let mut ack = callee_request(&sim, "ACK", 10, None);
    ack.set_header("Via", format!("SIP/2.0/UDP {PHONE_SIP};branch=z9hG4bKack10"));
    sim.call.handle_sip(sim.now, addr(PHONE_SIP), ack);
    let resume = callee_request(&sim, "UPDATE", 11, Some(&hold_sdp("sendrecv")));
    sim.call.handle_sip(sim.now, addr(PHONE_SIP), resume);
    assert!(sim.exchange().is_none());
    assert!(String::from_utf8_lossy(answer_to(&sim, 11, "UPDATE").body()).contains("a=sendrecv"));
    let report = sim.run(Duration::from_secs(60)).unwrap();
    assert_eq!(report.outcome, Outcome::Verified, "{report:?}");
}

#[test]
fn other_requests_get_the_right_answers() {
    let phone = PhoneConfig { press_after: Duration::from_millis(3000), ..phone_config() };
    let mut sim = Sim::new(dialplan(""), phone, Network::default(), vec![Codec::Pcmu]);
    assert!(sim.run(Duration::from_millis(2500)).is_none());
    let now = sim.now;
    let cases = [("OPTIONS", 20, 200), ("MESSAGE", 21, 405), ("FROBNICATE", 22, 501)];
    for (method, cseq, _) in cases {
        sim.call.handle_sip(now, addr(PHONE_SIP), callee_request(&sim, method, cseq, None));
    }
    let mut stranger = callee_request(&sim, "BYE", 23, None);
    stranger.set_header("Call-ID", "someone-else@10.0.0.9");
    sim.call.handle_sip(now, addr(PHONE_SIP), stranger);
    let mut stale = callee_request(&sim, "INFO", 5, None);
    stale.set_header("Via", format!("SIP/2.0/UDP {PHONE_SIP};branch=z9hG4bKstale"));
    sim.call.handle_sip(now, addr(PHONE_SIP), stale);
    assert!(sim.exchange().is_none());
    for (method, cseq, status) in cases {
        assert_eq!(answer_to(&sim, cseq, method).status(), Some(status), "{method}");
    }
    assert_eq!(answer_to(&sim, 23, "BYE").status(), Some(481), "a BYE for another call");
    assert_eq!(answer_to(&sim, 5, "INFO").status(), Some(500), "a CSeq going backwards");
    assert!(answer_to(&sim, 21, "MESSAGE").header("Allow").unwrap().contains("INFO"));
    let report = sim.run(Duration::from_secs(60)).unwrap();
    assert_eq!(report.outcome, Outcome::Verified);
}

#[test]
fn a_retransmitted_200_is_acknowledged_again() {
    let mut sim = Sim::new(dialplan(""), phone_config(), Network::default(), vec![Codec::Pcmu]);
    assert!(sim.run(Duration::from_millis(2500)).is_none());
    let ok = sim.from_phone.iter().find(|m| m.status() == Some(200)).unwrap().clone();
    let acks = |sim: &Sim| sim.from_pound.iter().filter(|m| m.method().is_some_and(|m| m.as_str() == "ACK")).count();
    assert_eq!(acks(&sim), 1);
    sim.reach_pound(addr(PHONE_SIP), ok);
    assert!(sim.exchange().is_none());
    assert_eq!(acks(&sim), 2);
}

#[test]
fn the_callees_stream_moving_port_with_its_ssrc_is_heard_after_the_learning_window() {
    // Answered at 2 s, the NAT rebinds at 2.3 s, the key comes at 2.8 s.
    let network = Network { callee_media_rebinds_at: Some(Duration::from_millis(2300)), ..Network::default() };
    for via in [PressVia::Rfc4733, PressVia::Inband] {
        let phone = PhoneConfig { via, ..phone_config() };
        let (report, _) = call_with(dialplan(""), phone, network, vec![Codec::Pcmu]);
        assert_eq!(report.outcome, Outcome::Verified, "{via:?}: {report:?}");
        assert_eq!(report.digits, "#");
        // Only the packets that proved the move were dropped.
        assert_eq!(report.foreign_rtp_packets, u64::from(DEFAULT_LEARNING_PACKETS) - 1, "{via:?}");
    }
}

#[test]
fn another_ssrc_from_a_new_port_is_not_heard() {
    let network = Network {
        callee_media_rebinds_at: Some(Duration::from_millis(2300)),
        rebound_ssrc: Some(0x0bad_cafe),
        ..Network::default()
    };
    for via in [PressVia::Rfc4733, PressVia::Inband] {
        let phone = PhoneConfig { via, ..phone_config() };
        let (report, _) = call_with(dialplan(""), phone, network, vec![Codec::Pcmu]);
        assert_eq!(report.outcome, Outcome::NoInput, "{via:?}: {report:?}");
        assert_eq!(report.digits, "", "{via:?}");
        assert!(report.foreign_rtp_packets > 100, "{via:?}: {report:?}");
    }
}

/// The callee's INFO carrying `key`, with the dialog's identifiers.
fn info_request(sim: &Sim, cseq: u32, key: char) -> Message {
    let mut info = callee_request(sim, "INFO", cseq, None);
    info.set_body("application/dtmf-relay", format!("Signal={key}\r\nDuration=160\r\n").into_bytes());
    info
}

#[test]
fn info_with_the_right_dialog_from_a_foreign_address_is_refused_and_not_counted() {
    for (from, honoured) in
        [(STRANGER_SIP, false), ("10.0.0.2:5071", false), ("[::ffff:10.0.0.2]:5070", true), (PHONE_SIP, true)]
    {
        let phone = PhoneConfig { press: String::new(), ..phone_config() };
        let mut sim = Sim::new(dialplan(""), phone, Network::default(), vec![Codec::Pcmu]);
        assert!(sim.run(Duration::from_millis(2500)).is_none(), "answered and talking");
        sim.call.handle_sip(sim.now, addr(from), info_request(&sim, 30, '#'));
        assert!(sim.exchange().is_none() || honoured);
        if honoured {
            let report = sim.run(Duration::from_secs(60)).unwrap();
            assert_eq!(report.outcome, Outcome::Verified, "{from}: {report:?}");
            assert_eq!(report.dtmf_source, Some(DtmfSource::Info));
            continue;
        }
        assert_eq!(answer_to(&sim, 30, "INFO").status(), Some(403), "{from}");
        let report = sim.run(Duration::from_secs(120)).unwrap();
        assert_eq!(report.outcome, Outcome::NoInput, "{from}: {report:?}");
        assert_eq!((report.digits.as_str(), report.foreign_sip_messages), ("", 1), "{from}");
    }
}

#[test]
fn behind_a_proxy_the_proxy_and_the_remote_target_speak_for_the_callee_and_nobody_else() {
    let network = Network { via_proxy: true, ..Network::default() };
    let phone = PhoneConfig { press: String::new(), ..phone_config() };
    let mut sim = Sim::new(dialplan(""), phone, network, vec![Codec::Pcmu]);
    // A forged answer from a stranger before the real one is not taken.
    assert!(sim.run(Duration::from_millis(1000)).is_none());
    let invite = sim.from_pound[0].clone();
    let mut forged = Message::response_to(&invite, 200, Some("forged")).with_header("Contact", "<sip:x@10.0.0.66>");
    forged.set_body("application/sdp", hold_sdp("sendrecv").replace("10.0.0.2", "10.0.0.66").into_bytes());
    sim.reach_pound(addr(STRANGER_SIP), forged);
    assert!(sim.exchange().is_none());
    assert!(!sim.events.contains(&CallEvent::Answered));
    assert!(sim.run(Duration::from_millis(2500)).is_none(), "answered by the phone, through the proxy");
    assert!(sim.events.contains(&CallEvent::Answered));
    // A stranger's BYE does not end the call, nor its INFO press a key.
    let mut bye = callee_request(&sim, "BYE", 30, None);
    sim.call.handle_sip(sim.now, addr(STRANGER_SIP), bye.clone());
    sim.call.handle_sip(sim.now, addr(STRANGER_SIP), info_request(&sim, 31, '#'));
    assert!(sim.exchange().is_none(), "the call goes on");
    assert_eq!(answer_to(&sim, 30, "BYE").status(), Some(403));
    assert_eq!(answer_to(&sim, 31, "INFO").status(), Some(403));
    // The phone itself (the remote target) reaches pound directly.
    sim.call.handle_sip(sim.now, addr(PHONE_SIP), info_request(&sim, 32, '#'));
    assert!(sim.exchange().is_none());
    assert_eq!(answer_to(&sim, 32, "INFO").status(), Some(200));
    // And the proxy may end the call.
    bye.set_header("CSeq", "33 BYE");
    bye.set_header("Via", format!("SIP/2.0/UDP {PROXY_SIP};branch=z9hG4bKproxy33"));
    sim.call.handle_sip(sim.now, addr(PROXY_SIP), bye);
    let report = sim.exchange().expect("the call ended");
    assert_eq!(report.outcome, Outcome::Verified, "{report:?}");
    assert_eq!(report.foreign_sip_messages, 3);
}

#[test]
fn keys_sent_before_the_answer_do_not_count_even_from_the_answers_address() {
    let phone = PhoneConfig { press: String::new(), ..phone_config() };
    let mut sim = Sim::new(dialplan("prompt_repeats = 1"), phone, Network::default(), vec![Codec::Pcmu]);
    assert!(sim.run(Duration::from_millis(1000)).is_none(), "ringing");
    let mut press = EventSender::new('#', 10, 100, 8000).unwrap();
    let mut datagram = Vec::new();
    let mut sent = 0;
    for sequence in 1.. {
        let Some((marker, payload)) = press.next_packet() else { break };
        let packet = RtpPacket {
            payload_type: PayloadType(101),
            marker,
            sequence,
            timestamp: 8000,
            ssrc: Ssrc(0x5eed),
            payload: &payload,
        };
        packet.write(&mut datagram);
        sim.call.handle_rtp(sim.now, addr(PHONE_RTP), &datagram);
        sent += 1;
    }
    let report = sim.run(Duration::from_secs(60)).unwrap();
    assert_eq!(report.outcome, Outcome::NoInput, "{report:?}");
    assert_eq!((report.digits.as_str(), report.foreign_rtp_packets), ("", sent));
}

/// SRTP between pound and the simulated phone, for each suite and each way of pressing a key
/// inside the media: the phone authenticates pound's packets, pound decrypts the phone's.
#[test]
fn srtp_calls_verify_under_every_suite_by_rfc4733_and_inband() {
    for suite in Suite::ALL {
        for (via, source) in [(PressVia::Rfc4733, DtmfSource::Rfc4733), (PressVia::Inband, DtmfSource::Inband)] {
            for policy in [SrtpPolicy::Mandatory, SrtpPolicy::Optional] {
                let phone = PhoneConfig { via, srtp: SrtpPolicy::Mandatory, ..phone_config() };
                let network = Network { srtp: policy, offer_only: Some(suite), ..Network::default() };
                let (report, sim) = call_with(dialplan(""), phone, network, vec![Codec::Pcmu]);
                let case = format!("{suite} {via:?} {policy:?}");
                assert_eq!(report.outcome, Outcome::Verified, "{case}: {report:?}");
                assert_eq!((report.dtmf_source, report.srtp), (Some(source), Some(suite)), "{case}");
                assert_eq!(report.srtp_rejected_packets, 0, "{case}");
                let (authentic, phone_suite) = sim.phone_heard.expect("the phone saw the call end");
                assert_eq!(phone_suite, Some(suite), "{case}");
                assert!(authentic > 50 && authentic == sim.phone_rtp_received, "{case}: {authentic} authentic");
                let invite = String::from_utf8_lossy(sim.from_pound[0].body()).to_string();
                let proto = if policy == SrtpPolicy::Mandatory { "RTP/SAVP" } else { "RTP/AVP" };
                assert!(invite.contains(&format!("m=audio 40000 {proto} ")), "{case}: {invite}");
            }
        }
    }
}

#[test]
fn srtp_policies_meet_a_plain_callee_as_the_issue_says() {
    let plain_phone = PhoneConfig { srtp: SrtpPolicy::Off, ..phone_config() };
    // Mandatory: RTP/SAVP, which a callee without SRTP refuses.
    let network = Network { srtp: SrtpPolicy::Mandatory, ..Network::default() };
    let (report, _) = call_with(dialplan(""), plain_phone.clone(), network, vec![Codec::Pcmu]);
    assert_eq!((report.outcome, report.sip_status), (Outcome::Unreachable, Some(488)), "{report:?}");
    // Optional: best effort, plain RTP when the callee takes no key.
    let network = Network { srtp: SrtpPolicy::Optional, ..Network::default() };
    let (report, sim) = call_with(dialplan(""), plain_phone, network, vec![Codec::Pcmu]);
    assert_eq!((report.outcome, report.srtp), (Outcome::Verified, None), "{report:?}");
    assert_eq!(sim.phone_heard.map(|(_, suite)| suite), Some(None));
    // A callee that insists on SRTP refuses pound's plain offer, as baresip's srtp-mand does.
    let secure_phone = PhoneConfig { srtp: SrtpPolicy::Mandatory, ..phone_config() };
    let (report, sim) = call_with(dialplan(""), secure_phone, Network::default(), vec![Codec::Pcmu]);
    assert_eq!((report.outcome, report.sip_status), (Outcome::Unreachable, Some(488)), "{report:?}");
    assert!(!String::from_utf8_lossy(sim.from_pound[0].body()).contains("a=crypto"), "SRTP off offers no keys");
}

#[test]
fn forged_and_replayed_srtp_packets_are_dropped_and_counted_never_heard() {
    for via in [PressVia::Inband, PressVia::Rfc4733] {
        let phone = PhoneConfig { via, press: "#".into(), srtp: SrtpPolicy::Mandatory, ..phone_config() };
        let network =
            Network { srtp: SrtpPolicy::Mandatory, forge_and_replay_callee_media: true, ..Network::default() };
        let (report, sim) = call_with(dialplan(""), phone, network, vec![Codec::Pcmu]);
        assert_eq!((report.outcome, report.digits.as_str()), (Outcome::Verified, "#"), "{via:?}: {report:?}");
        // Every packet the callee sent came once forged and once replayed: two drops each, and
        // the key was heard once, from the genuine packets.
        assert!(sim.callee_rtp_sent > 10, "{via:?}");
        assert_eq!(report.srtp_rejected_packets, 2 * sim.callee_rtp_sent, "{via:?}: {report:?}");
    }
}

/// Over TLS to a `sips:` URI (RFC 5630): Via says TLS, both Contacts are
/// `sips:`; to a `sip:` URI over TLS, the Contacts name the transport.
#[test]
fn tls_via_and_contacts() {
    for (target, caller_contact, callee_contact) in [
        ("sips:verify@10.0.0.2:5070", "sips:pound@10.0.0.1:5060", "sips:phone@10.0.0.2:5070"),
        (
            "sip:verify@10.0.0.2:5070;transport=tls",
            "sip:pound@10.0.0.1:5060;transport=tls",
            "sip:phone@10.0.0.2:5070;transport=tls",
        ),
    ] {
        let config = direct_call(target, Transport::Tls, SrtpPolicy::Off);
        let now = Instant::now();
        let mut call = Call::with_rng(config, now, StdRng::seed_from_u64(7));
        let invite = call.poll_sip().expect("the INVITE").contents;
        assert_eq!(invite.uri(), Some(target));
        assert!(invite.header("Via").unwrap().starts_with("SIP/2.0/TLS 10.0.0.1:5060;"), "{:?}", invite.header("Via"));
        assert_eq!(invite.contact().unwrap().uri, caller_contact);
        let mut phone =
            Phone::with_rng(PhoneConfig { transport: Transport::Tls, ..phone_config() }, StdRng::seed_from_u64(8));
        phone.handle_sip(now, addr(CALLER_SIP), invite);
        let ringing = std::iter::from_fn(|| phone.poll_sip()).map(|t| t.contents).find(|m| m.status() == Some(180));
        let ringing = ringing.expect("180");
        assert_eq!(ringing.contact().unwrap().uri, callee_contact);
    }
}

#[test]
fn srtp_over_signalling_in_clear_sends_nothing() {
    let config = direct_call("sip:+14155550100@10.0.0.2:5070", Transport::Udp, SrtpPolicy::Optional);
    let mut call = Call::with_rng(config, Instant::now(), StdRng::seed_from_u64(1));
    assert!(call.poll_sip().is_none(), "no INVITE, so no key, leaves in clear");
    let events: Vec<CallEvent> = std::iter::from_fn(|| call.poll_event()).collect();
    let Some(CallEvent::Finished(report)) = events.last() else { panic!("{events:?}") };
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.detail.as_deref().unwrap_or_default().contains("TLS"), "{report:?}");
}

/// How many of pound's messages on the wire were `method` requests.
fn sent_by_pound(sim: &Sim, method: &str) -> Vec<Vec<u8>> {
    sim.from_pound.iter().filter(|m| m.method().is_some_and(|m| m.as_str() == method)).map(Message::to_bytes).collect()
}

#[test]
fn each_request_leaves_once_and_is_retransmitted_by_one_layer_only() {
    let (report, sim) = call(dialplan(""), phone_config());
    assert_eq!(report.outcome, Outcome::Verified);
    for method in ["INVITE", "ACK", "BYE"] {
        assert_eq!(sent_by_pound(&sim, method).len(), 1, "{method}");
    }
    // Two INVITEs lost: timer A sends the very same bytes twice more, and only the endpoint's
    // transaction sends them.
    let network = Network { lose_invites: 2, ..Network::default() };
    let (report, sim) = call_with(dialplan(""), phone_config(), network, vec![Codec::Pcmu]);
    assert_eq!(report.outcome, Outcome::Verified);
    let invites = sent_by_pound(&sim, "INVITE");
    assert_eq!(invites.len(), 3);
    assert!(invites.iter().all(|bytes| *bytes == invites[0]));
}

#[test]
fn timer_b_reaches_the_call_after_the_transaction_sent_the_invite_seven_times() {
    let network = Network { black_hole: true, ..Network::default() };
    let (report, sim) = call_with(dialplan(""), phone_config(), network, vec![Codec::Pcmu]);
    assert_eq!(report.outcome, Outcome::Unreachable);
    assert_eq!(report.detail.as_deref(), Some("no final response to the INVITE"));
    // At 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s; timer B fires at 32 s.
    assert_eq!(sent_by_pound(&sim, "INVITE").len(), 7);
    assert!(sim.pound_transactions.is_empty());
}

#[test]
fn a_retransmitted_rejection_is_acknowledged_by_the_endpoint_and_reaches_the_call_once() {
    let phone = PhoneConfig { reject: Some(486), ..phone_config() };
    let (report, mut sim) = call(dialplan(""), phone);
    assert_eq!(report.outcome, Outcome::Busy);
    let busy = sim.from_phone.iter().find(|m| m.status() == Some(486)).unwrap().clone();
    assert_eq!(sent_by_pound(&sim, "ACK").len(), 1);
    sim.reach_pound(addr(PHONE_SIP), busy);
    assert!(sim.exchange().is_none());
    assert_eq!(sent_by_pound(&sim, "ACK").len(), 2, "timer D: the 486 came again, so did the ACK");
    let responses = sim.events.iter().filter(|e| matches!(e, CallEvent::Response { .. })).count();
    assert_eq!(responses, 1);
}

#[test]
fn a_retransmitted_ringing_is_passed_up_and_rings_once() {
    let mut sim = Sim::new(dialplan(""), phone_config(), Network::default(), vec![Codec::Pcmu]);
    assert!(sim.run(Duration::from_millis(500)).is_none());
    let ringing = sim.from_phone.iter().find(|m| m.status() == Some(180)).unwrap().clone();
    sim.reach_pound(addr(PHONE_SIP), ringing);
    assert!(sim.exchange().is_none());
    assert_eq!(sim.events.iter().filter(|e| **e == CallEvent::Ringing).count(), 1);
    assert_eq!(sim.run(Duration::from_secs(60)).unwrap().outcome, Outcome::Verified);
}

/// The phone answers with `audio`, then presses `press`.
fn playing(audio: Vec<i16>, press: &str) -> PhoneConfig {
    PhoneConfig { play: Some(audio.into()), press: press.into(), ..phone_config() }
}

#[test]
fn a_greeting_then_a_beep_is_voicemail_at_once_and_never_verified() {
    for beep_hz in [400.0, 1000.0, 2100.0] {
        let greeting = announce::babble(4000, beep_hz as u64);
        // The box would take a `#` after its beep: pound is gone by then.
        let (report, sim) = call(dialplan(""), playing(announce::voicemail(greeting, beep_hz), "#"));
        assert_eq!(report.outcome, Outcome::Voicemail, "{beep_hz} Hz: {report:?}");
        assert_eq!(report.digits, "", "nothing is pressed before pound hangs up");
        let detail = report.detail.as_deref().unwrap_or_default();
        assert!(detail.starts_with("voicemail: ") && detail.contains(" Hz beep"), "{detail}");
        // Greeting 4 s, pause 0.3 s, then at most the beep's 150 ms and a block or two.
        let after_answer = report.duration_ms - report.answered_ms.unwrap();
        assert!(after_answer < 4300 + 400, "hung up at the beep, not later: {after_answer} ms");
        assert!(sim.events.iter().any(|e| matches!(e, CallEvent::Decided { outcome: Outcome::Voicemail, key: None })));
    }
}

#[test]
fn a_human_hello_then_the_key_verifies_and_silence_stays_no_input() {
    let (report, _) = call(dialplan(""), playing(announce::babble(900, 4), "#"));
    assert_eq!((report.outcome, report.digits.as_str()), (Outcome::Verified, "#"), "{report:?}");
    // A long talker who then presses the key is no voicemail box either.
    let (report, _) = call(dialplan(""), playing(announce::babble(6000, 5), "#"));
    assert_eq!(report.outcome, Outcome::Verified, "{report:?}");
    let (report, _) = call(dialplan(""), playing(announce::silence(8000), ""));
    assert_eq!(report.outcome, Outcome::NoInput, "{report:?}");
}

#[test]
fn voicemail_thresholds_come_from_the_dialplan() {
    let greeting = || announce::voicemail(announce::babble(4000, 6), 1000.0);
    let (report, _) = call(dialplan("voicemail_beep_ms = 0"), playing(greeting(), ""));
    assert_eq!(report.outcome, Outcome::NoInput, "detection off: {report:?}");
    let (report, _) = call(dialplan("voicemail_greeting_ms = 6000"), playing(greeting(), ""));
    assert_eq!(report.outcome, Outcome::NoInput, "greeting shorter than asked: {report:?}");
    let (report, _) = call(dialplan("voicemail_beep_ms = 600"), playing(greeting(), ""));
    assert_eq!(report.outcome, Outcome::NoInput, "beep shorter than asked: {report:?}");
}

#[test]
fn a_sit_after_the_answer_names_its_class() {
    for (first, second, outcome, detail) in [
        ((985.2, 380), (1370.6, 274), Outcome::InvalidNumber, "SIT VC (vacant code)"),
        ((913.8, 274), (1370.6, 274), Outcome::InvalidNumber, "SIT IC (intercept)"),
        ((985.2, 380), (1428.5, 380), Outcome::Unreachable, "SIT NC (no circuit)"),
        ((913.8, 274), (1428.5, 380), Outcome::Unreachable, "SIT RO (reorder)"),
    ] {
        let (report, _) = call(dialplan(""), playing(announce::sit(first, second), "#"));
        assert_eq!((report.outcome, report.detail.as_deref()), (outcome, Some(detail)), "{report:?}");
        assert_eq!(report.digits, "");
    }
}

#[test]
fn a_sit_in_early_media_cancels_the_call_with_its_class() {
    let early = |audio: Vec<i16>, press: &str| PhoneConfig {
        early_media: Some(audio.into()),
        answer_after: Duration::from_secs(10),
        press: press.into(),
        ..phone_config()
    };
    let (report, sim) = call(dialplan(""), early(announce::sit((985.2, 380), (1370.6, 274)), "#"));
    assert_eq!((report.outcome, report.detail.as_deref()), (Outcome::InvalidNumber, Some("SIT VC (vacant code)")));
    assert_eq!(report.answered_ms, None, "cancelled before the answer: {report:?}");
    assert!(sim.from_pound.iter().any(|m| m.method() == Some(&pound::sip::Method::Cancel)));
    let (report, _) = call(dialplan(""), early(announce::sit((913.8, 274), (1428.5, 380)), ""));
    assert_eq!((report.outcome, report.detail.as_deref()), (Outcome::Unreachable, Some("SIT RO (reorder)")));
    // Ringback and a DTMF key as early media decide nothing: the answer, then `#`, verifies.
    let mut ringback = announce::tone(&[425.0], -15.0, 1000);
    ringback.extend(announce::tone(&[941.0, 1477.0], -8.0, 200));
    let (report, _) = call(dialplan(""), early(ringback, "#"));
    assert_eq!((report.outcome, report.digits.as_str()), (Outcome::Verified, "#"), "{report:?}");
}

//! Forged key presses over real sockets on loopback: an attacker who is not on
//! the signalling path sprays RTP at pound's RTP port range from before the
//! phone rings until after it answers, while the real callee presses `5`.
//! Media counts only from the address the SDP answer named, so no call may
//! end `verified`, and the callee's own key must still be heard.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pound::call::{CallReport, Prompts};
use pound::dialplan::Dialplan;
use pound::dsp::tone::ToneGenerator;
use pound::media::codec::{Codec, Encoder, FRAME_SAMPLES};
use pound::net::{CallSetup, Endpoint, PhoneSetup, run_call, run_phone};
use pound::phone::{PhoneConfig, PressVia};
use pound::rtp::{DEFAULT_LEARNING_PACKETS, EventSender, PayloadType, RtpPacket, Ssrc};
use pound::sip::Timers;
use pound::vocab::{Outcome, Transport};
use tokio::net::UdpSocket;

/// Calls per attack: the finding was 3 of 4 calls verified.
const CALLS: usize = 10;
/// Even ports in the RTP range pound picks from (more than calls, so that
/// binding rarely needs a second try).
const RANGE_SLOTS: u16 = 24;

/// What the attacker sprays.
#[derive(Clone, Copy, Debug)]
enum Spray {
    /// RFC 4733 `#` events on both offered telephone-event payload types.
    Rfc4733,
    /// PCMU audio carrying the `#` tone pair, 100 ms on, 100 ms off.
    Inband,
}

fn plan() -> (Arc<Dialplan>, Arc<Prompts>) {
    let plan = Dialplan::find("press-pound", None).unwrap();
    let prompts = Prompts::load(&plan).unwrap();
    (Arc::new(plan), Arc::new(prompts))
}

/// A random range of RTP ports for this run (even start), below the
/// kernel's ephemeral ports (32768 and up) so that the spray does not hit
/// the sockets of other programs on the machine.
fn rtp_range() -> RangeInclusive<u16> {
    let base = 21_000 + 2 * (rand::random::<u16>() % 5_000);
    base..=base + 2 * RANGE_SLOTS - 1
}

/// The spray datagrams for one 20 ms tick: one per payload type sprayed.
struct Forger {
    spray: Spray,
    ssrc: Ssrc,
    sequence: u16,
    timestamp: u32,
    event: Option<EventSender>,
    tone: ToneGenerator,
    tick: u32,
    encoder: Encoder,
}

impl Forger {
    fn new(spray: Spray) -> Self {
        Forger {
            spray,
            ssrc: Ssrc(rand::random()),
            sequence: rand::random(),
            timestamp: rand::random(),
            event: None,
            tone: ToneGenerator::dtmf('#', -8.0).unwrap(),
            tick: 0,
            encoder: Encoder::new(Codec::Pcmu).unwrap(),
        }
    }

    fn next(&mut self, out: &mut Vec<Vec<u8>>) {
        out.clear();
        self.tick += 1;
        match self.spray {
            Spray::Rfc4733 => {
                if self.event.is_none() {
                    // A fresh 100 ms press of `#` every time the last one ends.
                    self.event = EventSender::new('#', 10, 100, 8000);
                    self.timestamp = self.timestamp.wrapping_add(1600);
                }
                match self.event.as_mut().and_then(EventSender::next_packet) {
                    Some((marker, payload)) => {
                        for pt in [101, 110] {
                            out.push(self.packet(PayloadType(pt), marker, &payload));
                        }
                    }
                    None => self.event = None,
                }
            }
            Spray::Inband => {
                let mut frame = [0i16; FRAME_SAMPLES];
                if self.tick % 10 < 5 {
                    self.tone.fill(&mut frame);
                }
                let mut payload = Vec::new();
                self.encoder.encode(&frame, &mut payload).unwrap();
                self.timestamp = self.timestamp.wrapping_add(FRAME_SAMPLES as u32);
                out.push(self.packet(PayloadType(0), false, &payload));
            }
        }
    }

    fn packet(&mut self, payload_type: PayloadType, marker: bool, payload: &[u8]) -> Vec<u8> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut datagram = Vec::new();
        RtpPacket {
            payload_type,
            marker,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            payload,
        }
        .write(&mut datagram);
        datagram
    }
}

/// Sprays every even port of `ports` every 5 ms (four times the rate of a
/// real stream, to win the race for the latch) until `stop`; returns the
/// datagrams sent.
async fn spray(spray: Spray, ports: RangeInclusive<u16>, stop: Arc<AtomicBool>) -> u64 {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut forger = Forger::new(spray);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut batch = Vec::new();
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        forger.next(&mut batch);
        for port in ports.clone().step_by(2) {
            for datagram in &batch {
                if socket.send_to(datagram, SocketAddr::from(([127, 0, 0, 1], port))).await.is_ok() {
                    sent += 1;
                }
            }
        }
    }
    sent
}

/// `CALLS` verification calls to a phone that presses `5` and hangs up,
/// under `attack`; the reports and the number of datagrams sprayed.
async fn attacked_calls(attack: Spray, press_via: PressVia) -> (Vec<CallReport>, u64) {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let phone = PhoneSetup {
        listen: "127.0.0.1:0".parse().unwrap(),
        calls: Some(CALLS as u64),
        config: PhoneConfig {
            local_sip: "127.0.0.1:0".parse().unwrap(),
            transport: Transport::Udp,
            local_rtp: "127.0.0.1:0".parse().unwrap(),
            press: "5".into(),
            play: None,
            early_media: None,
            via: press_via,
            press_after: Duration::from_millis(600),
            answer_after: Duration::from_millis(400),
            reject: None,
            never_answer: false,
            hangup_after: Some(Duration::from_millis(1500)),
            silent: false,
            codecs: vec![Codec::Pcmu],
            srtp: pound::vocab::SrtpPolicy::Off,
            timers: Timers::default(),
        },
        tls: Default::default(),
    };
    let phone = tokio::spawn(run_phone(
        phone,
        |address| {
            let _ = ready_tx.send(address);
        },
        |_| {},
    ));
    let phone_sip = ready_rx.await.expect("the phone is ready");
    let ports = rtp_range();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = tokio::spawn(spray(attack, ports.clone(), stop.clone()));
    // The spray is on before the first INVITE leaves.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (dialplan, prompts) = plan();
    let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap(), false).await.unwrap();
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let setup = CallSetup {
            target: format!("sip:verify@{phone_sip}"),
            next_hop: phone_sip,
            peer_name: phone_sip.ip().to_string(),
            transport: Transport::Udp,
            from_user: "pound".into(),
            from_display: None,
            asserted_identity: None,
            credentials: None,
            codecs: vec![Codec::Pcmu],
            dialplan: dialplan.clone(),
            prompts: prompts.clone(),
            timers: Timers::default(),
            rtp_ports: Some(ports.clone()),
            cancel: None,
            rtp_learning_packets: DEFAULT_LEARNING_PACKETS,
            stir: None,
            seed: None,
            srtp: pound::vocab::SrtpPolicy::Off,
            code: None,
            capture: None,
        };
        let endpoint = endpoint.clone();
        calls.push(tokio::spawn(async move { run_call(&endpoint, setup, |_| {}).await }));
    }
    let mut reports = Vec::new();
    for call in calls {
        reports.push(call.await.unwrap().expect("the call runs"));
    }
    stop.store(true, Ordering::Relaxed);
    let sprayed = attacker.await.unwrap();
    phone.abort();
    (reports, sprayed)
}

fn verified(reports: &[CallReport]) -> usize {
    reports.iter().filter(|r| r.outcome == Outcome::Verified).count()
}

fn check(attack: Spray, reports: &[CallReport], sprayed: u64) {
    eprintln!(
        "{attack:?} spray: {} of {} calls verified, {sprayed} datagrams sprayed, {} dropped as foreign; outcomes {:?}",
        verified(reports),
        reports.len(),
        reports.iter().map(|r| r.foreign_rtp_packets).sum::<u64>(),
        reports.iter().map(|r| (r.outcome, r.digits.as_str())).collect::<Vec<_>>()
    );
    assert!(sprayed > 1000, "the attacker sprayed for the whole run");
    for report in reports {
        assert_ne!(report.outcome, Outcome::Verified, "{attack:?}: a forged `#` verified the call: {report:?}");
        assert!(report.foreign_rtp_packets > 0, "{attack:?}: the spray reached the call and was dropped: {report:?}");
        // The real callee was heard through the spray: its `5`, then its BYE.
        assert_eq!(report.digits, "5", "{attack:?}: {report:?}");
        assert_eq!(report.outcome, Outcome::CalleeHangup, "{attack:?}: {report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sprayed_rfc4733_events_never_verify() {
    let (reports, sprayed) = attacked_calls(Spray::Rfc4733, PressVia::Rfc4733).await;
    check(Spray::Rfc4733, &reports, sprayed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sprayed_inband_tones_never_verify() {
    let (reports, sprayed) = attacked_calls(Spray::Inband, PressVia::Inband).await;
    check(Spray::Inband, &reports, sprayed);
}

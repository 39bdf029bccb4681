//! Criterion benchmarks of the call's hot paths: SIP parse and serialise, and
//! one call's work per 20 ms media packet (receive: latch, reorder, decode,
//! in-band detector; send: prompt frame, encode, packetise).

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pound::call::MediaSession;
use pound::media::codec::{Codec, Encoder};
use pound::media::prompt::Prompt;
use pound::rtp::{PayloadType, RtpPacket, Ssrc};
use pound::sdp::{Direction, Offer, parse_answer};
use pound::sip::Message;

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect("fixture")
}

fn sip(c: &mut Criterion) {
    let mut group = c.benchmark_group("sip");
    for name in ["invite-sdp", "200-ok-record-route"] {
        let bytes = fixture(&format!("fixtures/sip/{name}.sip"));
        let message = Message::parse(&bytes).expect("a valid fixture");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("parse/{name}"), |b| b.iter(|| Message::parse(black_box(&bytes)).unwrap()));
        group.bench_function(format!("serialise/{name}"), |b| b.iter(|| black_box(&message).to_bytes()));
    }
    group.finish();
}

fn media(c: &mut Criterion) {
    let offer = Offer {
        session_id: 1,
        session_version: 1,
        address: "127.0.0.1".parse().unwrap(),
        port: 40000,
        direction: Direction::SendRecv,
        codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::Opus],
        srtp: pound::vocab::SrtpPolicy::Off,
        crypto: Vec::new(),
    };
    let mut group = c.benchmark_group("media_per_packet");
    for (codec, answer) in [(Codec::Pcmu, "answer-pcmu-te101"), (Codec::Opus, "answer-opus")] {
        let sdp = String::from_utf8(fixture(&format!("fixtures/sdp/{answer}.sdp"))).unwrap();
        let description = parse_answer(&sdp, &offer).expect("the fixture answers our offer");
        let peer = SocketAddr::new(description.address, description.port);
        let payload_type = description.payload_type;
        // A second of the prompt, encoded as the callee would send it.
        let prompt =
            Prompt::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/prompts/en/press-pound.wav")).unwrap();
        let mut encoder = Encoder::new(codec).unwrap();
        let mut payload = Vec::new();
        let datagrams: Vec<Vec<u8>> = prompt
            .frames()
            .iter()
            .take(50)
            .enumerate()
            .map(|(i, frame)| {
                encoder.encode(frame, &mut payload).unwrap();
                let mut datagram = Vec::new();
                RtpPacket {
                    payload_type: PayloadType(payload_type),
                    marker: i == 0,
                    sequence: i as u16,
                    timestamp: (i as u32) * codec.samples_per_frame(),
                    ssrc: Ssrc(7),
                    payload: &payload,
                }
                .write(&mut datagram);
                datagram
            })
            .collect();
        let start = Instant::now();
        let mut session =
            MediaSession::new(start, description, true, pound::rtp::DEFAULT_LEARNING_PACKETS, None, &mut rand::rng())
                .unwrap();
        session.play(std::sync::Arc::new(prompt));
        let mut datagrams = datagrams;
        let mut n = 0u64;
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("receive_and_send/{codec:?}"), |b| {
            b.iter(|| {
                let now = start + Duration::from_millis(20 * n);
                let slot = n as usize % datagrams.len();
                let datagram = &mut datagrams[slot];
                // One continuous stream: sequence and timestamp keep counting
                // while the payloads loop, so every packet is decoded.
                datagram[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                datagram[4..8].copy_from_slice(&((n as u32).wrapping_mul(codec.samples_per_frame())).to_be_bytes());
                session.handle_datagram(now, peer, black_box(datagram));
                while session.poll_digit().is_some() {}
                black_box(session.poll_transmit(now));
                if !session.is_playing() {
                    session.take_prompt_finished();
                }
                n += 1;
            })
        });
        let stats = session.rtp_stats();
        assert!(stats.received >= n && stats.lost == 0 && stats.duplicates == 0, "every packet was decoded: {stats:?}");
    }
    group.finish();
}

/// SRTP's cost per 20 ms PCMU packet, each way: what a call adds to its
/// media path when `trunk.srtp` is on.
fn srtp(c: &mut Criterion) {
    use pound::srtp::{MasterKey, SrtpContext, Suite};
    let mut group = c.benchmark_group("srtp_per_packet");
    group.throughput(Throughput::Elements(1));
    for suite in Suite::ALL {
        let key = MasterKey::from_bytes(suite, &[7; 30][..suite.master_len()]).unwrap();
        let (mut sender, mut receiver) = (SrtpContext::new(&key), SrtpContext::new(&key));
        let payload = [0xd5u8; 160];
        let mut packet = Vec::with_capacity(1500);
        let mut n = 0u16;
        group.bench_function(format!("protect_and_unprotect/{}", suite.name()), |b| {
            b.iter(|| {
                let rtp = RtpPacket {
                    payload_type: PayloadType(0),
                    marker: false,
                    sequence: n,
                    timestamp: u32::from(n) * 160,
                    ssrc: Ssrc(7),
                    payload: &payload,
                };
                rtp.write(&mut packet);
                sender.protect(black_box(&mut packet)).unwrap();
                black_box(receiver.unprotect(&mut packet).unwrap());
                n = n.wrapping_add(1);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sip, media, srtp);
criterion_main!(benches);

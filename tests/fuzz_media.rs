//! Property tests of everything that reads media-side input: SDP bodies and their SDES `a=crypto`
//! lines, RTP and SRTP datagrams (one packet, and a receiver fed a stream of them from several
//! sources), RFC 4733 telephone-events and WAV files. Inputs are the fixtures in `fixtures/sdp/` and `fixtures/audio/` and packets built here,
//! mutated; see `tests/fuzz_support` for the harness and its knobs.

mod fuzz_support;

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use fuzz_support::{CountingAllocator, Rng, Target, files, mutate_once, mutated};
use pound::call::MediaSession;
use pound::media::codec::Codec;
use pound::media::wav::{Encoding, WavReader, write};
use pound::rtp::{DEFAULT_LEARNING_PACKETS, EventReceiver, PayloadType, RtpPacket, RtpReceiver, Ssrc};
use pound::sdp::crypto::parse_crypto;
use pound::sdp::{
    Crypto, Direction, MediaDescription, Offer, answer, choose_crypto, offer_keys, parse_answer, parse_offer,
};
use pound::srtp::{MasterKey, SrtpContext, SrtpError, Suite};
use pound::vocab::SrtpPolicy;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const ALL_CODECS: [Codec; 3] = [Codec::Pcmu, Codec::Pcma, Codec::Opus];

fn our_offer(codecs: Vec<Codec>) -> Offer {
    Offer {
        session_id: 7,
        session_version: 1,
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        port: 40_000,
        direction: Direction::SendRecv,
        codecs,
        srtp: SrtpPolicy::Off,
        crypto: Vec::new(),
    }
}

/// pound's offer with SRTP keys under `policy` (fixed keys: a run reproduces).
fn our_secure_offer(policy: SrtpPolicy) -> Offer {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(11);
    Offer { srtp: policy, crypto: offer_keys(&mut rng), ..our_offer(ALL_CODECS.to_vec()) }
}

fn sdp_seeds() -> Vec<Vec<u8>> {
    let mut seeds = files("fixtures/sdp", ".sdp");
    seeds.push(our_offer(ALL_CODECS.to_vec()).to_sdp().into_bytes());
    seeds.push(our_secure_offer(SrtpPolicy::Mandatory).to_sdp().into_bytes());
    seeds.push(our_secure_offer(SrtpPolicy::Optional).to_sdp().into_bytes());
    seeds
}

/// What every SRTP agreement must hold: pound's key is one it offered, under the suite agreed.
fn check_agreed(media: &MediaDescription, offer: &Offer) {
    let Some(keys) = &media.srtp else { return };
    assert_eq!(keys.local.suite(), keys.remote.suite(), "{media:?}");
    assert!(offer.crypto.iter().any(|c| c.key == keys.local), "{media:?}");
    assert_eq!(keys.remote.as_bytes().len(), keys.remote.suite().master_len());
}

#[test]
fn sdp_bodies_never_panic_and_our_answers_read_back() {
    let offer = our_offer(ALL_CODECS.to_vec());
    // Bodies past MAX_SDP_LEN are refused before they are split, which bounds what any body costs.
    let bounded = |len: usize| (1 << 16) + len.min(pound::sdp::MAX_SDP_LEN) * 64;
    let summary = Target::new("sdp", sdp_seeds()).max_heap(bounded).run(|bytes| {
        // Bodies reach the SDP reader as text; the SIP layer refuses what is not UTF-8.
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        if let Ok(media) = parse_answer(text, &offer) {
            assert!(offer.codecs.contains(&media.codec), "{media:?}");
            assert!(media.payload_type <= 127 && media.telephone_event.is_none_or(|pt| pt <= 127), "{media:?}");
            assert_eq!(media.telephone_event.is_some(), media.telephone_event_rate.is_some());
            assert_eq!(media.srtp, None, "no keys without SRTP offered");
        }
        for secure in [our_secure_offer(SrtpPolicy::Mandatory), our_secure_offer(SrtpPolicy::Optional)] {
            match parse_answer(text, &secure) {
                Ok(media) => {
                    check_agreed(&media, &secure);
                    assert!(media.srtp.is_some() || secure.srtp == SrtpPolicy::Optional, "{media:?}");
                }
                Err(_) => continue,
            }
        }
        let Ok(remote) = parse_offer(text) else { return };
        let mut keys = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(12);
        for (accept, policy) in [
            (&ALL_CODECS[..], SrtpPolicy::Off),
            (&[Codec::Pcmu], SrtpPolicy::Optional),
            (&[Codec::Pcma], SrtpPolicy::Mandatory),
            (&[Codec::Opus], SrtpPolicy::Off),
        ] {
            let address = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10));
            let Ok(chosen) = choose_crypto(&remote, policy) else { continue };
            let srtp = chosen.map(|c| Crypto { tag: c.tag, key: MasterKey::generate(c.key.suite(), &mut keys) });
            let Ok((sdp, media)) = answer(&remote, address, 5004, accept, 9, 2, srtp.clone()) else { continue };
            assert!(accept.contains(&media.codec));
            assert_eq!(media.srtp.as_ref().map(|k| &k.local), srtp.as_ref().map(|c| &c.key));
            // The answer pound sends is SDP pound itself reads back the same way, as an answer to
            // an offer of exactly those codecs (and that key) and as an offer.
            let ours = match &srtp {
                Some(line) => Offer {
                    srtp: SrtpPolicy::Mandatory,
                    crypto: vec![Crypto { tag: line.tag, key: MasterKey::generate(line.key.suite(), &mut keys) }],
                    ..our_offer(accept.to_vec())
                },
                None => our_offer(accept.to_vec()),
            };
            let back = parse_answer(&sdp, &ours).unwrap_or_else(|err| panic!("{err}: our answer {sdp:?}"));
            assert_eq!(back.srtp.map(|k| k.remote), srtp.map(|c| c.key), "{sdp:?}");
            assert_eq!((back.address, back.port), (address, 5004));
            assert_eq!((back.codec, back.payload_type), (media.codec, media.payload_type), "{sdp:?}");
            assert_eq!(back.telephone_event, media.telephone_event, "{sdp:?}");
            assert_eq!(back.direction, remote.direction.reversed(), "{sdp:?}");
            let as_offer = parse_offer(&sdp).unwrap_or_else(|err| panic!("{err}: our answer {sdp:?}"));
            assert_eq!(as_offer.other_media.len(), remote.other_media.len(), "{sdp:?}");
        }
    });
    summary.assert_ran(100);
}

#[test]
fn every_offer_pound_can_build_reads_back() {
    let mut rng = Rng::new(fuzz_support::seed("sdp_offer"));
    let directions = [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive];
    for _ in 0..2_000 {
        let codecs: Vec<Codec> = (0..1 + rng.below(4)).map(|_| *rng.pick(&ALL_CODECS)).collect();
        let address = if rng.one_in(2) {
            IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32 | 1))
        } else {
            IpAddr::V6(Ipv6Addr::from(u128::from(rng.next_u64()) << 64 | 1))
        };
        let offer = Offer {
            session_id: rng.next_u64(),
            session_version: rng.next_u64(),
            address,
            port: 1 + rng.below(65_535) as u16,
            direction: *rng.pick(&directions),
            codecs,
            srtp: *rng.pick(&[SrtpPolicy::Off, SrtpPolicy::Optional, SrtpPolicy::Mandatory]),
            crypto: offer_keys(&mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(rng.next_u64())),
        };
        let sdp = offer.to_sdp();
        let read = parse_offer(&sdp).unwrap_or_else(|err| panic!("{err}: {sdp:?}"));
        assert_eq!(
            (read.address, read.port, read.direction, read.session_id),
            (address, offer.port, offer.direction, offer.session_id)
        );
        let codecs: Vec<Codec> = read.formats.iter().filter_map(|(_, codec)| *codec).collect();
        assert_eq!(codecs[0], offer.codecs[0], "{sdp:?}");
        assert_eq!(read.secure, offer.srtp == SrtpPolicy::Mandatory, "{sdp:?}");
        let offered = if offer.srtp == SrtpPolicy::Off { &[][..] } else { &offer.crypto[..] };
        assert_eq!(read.crypto, offered, "{sdp:?}");
        assert!(offer.codecs.iter().all(|codec| codecs.contains(codec)), "{sdp:?}");
    }
}

/// A datagram from header fields and a payload.
fn packet(pt: u8, marker: bool, sequence: u16, timestamp: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    RtpPacket { payload_type: PayloadType(pt), marker, sequence, timestamp, ssrc: Ssrc(ssrc), payload }.write(&mut out);
    out
}

fn rtp_seeds() -> Vec<Vec<u8>> {
    // CSRCs, a header extension and padding, which `write` never produces.
    let mut full = vec![0xb2, 0x60, 0x00, 0x07, 0x00, 0x00, 0x01, 0x00, 0xaa, 0xbb, 0xcc, 0xdd];
    full.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0xbe, 0xde, 0x00, 0x01, 0x10, 0x20, 0x30, 0x40]);
    full.extend_from_slice(b"hello\0\0\x03");
    vec![
        packet(0, true, 0xfffe, 0xdead_beef, 0x1234_5678, &[0xd5; 160]),
        packet(101, true, 9, 16_000, 0x1234_5678, &[11, 0x0a, 0x00, 0xa0]),
        packet(101, false, 12, 16_000, 0x1234_5678, &[11, 0x8a, 0x03, 0x20]),
        packet(111, false, 1, 960, 1, &[0xfc, 0xff, 0xfe]),
        full,
    ]
}

#[test]
fn rtp_packets_never_panic_and_write_back_the_same() {
    let summary = Target::new("rtp_packet", rtp_seeds()).max_heap(|len| 256 + len * 4).run(|bytes| {
        let Ok(packet) = RtpPacket::parse(bytes) else { return };
        assert!(packet.payload.len() + 12 <= bytes.len());
        let mut written = Vec::new();
        packet.write(&mut written);
        let back = RtpPacket::parse(&written).expect("a packet we wrote");
        assert_eq!(
            (back.payload_type, back.marker, back.sequence, back.timestamp, back.ssrc, back.payload),
            (packet.payload_type, packet.marker, packet.sequence, packet.timestamp, packet.ssrc, packet.payload)
        );
    });
    summary.assert_ran(1000);
}

/// Where the SDP answer says the peer's media comes from.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 4000);

/// Sources a datagram may come from: the peer, the peer's IP on another port, its IPv4-mapped
/// IPv6 form, and strangers.
fn source(index: u8) -> SocketAddr {
    match index % 5 {
        0 => PEER,
        1 => SocketAddr::new(PEER.ip(), 4002),
        2 => SocketAddr::new(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped()), 4000),
        3 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 4000),
        _ => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 4000),
    }
}

/// A receive script: datagrams, each `[source][advance ms][length: u16 BE][bytes]`. A script is
/// plain bytes, so a failing one is saved and replayed like any other input.
fn script(steps: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (from, advance, datagram) in steps {
        out.extend_from_slice(&[*from, *advance]);
        out.extend_from_slice(&(datagram.len().min(usize::from(u16::MAX)) as u16).to_be_bytes());
        out.extend_from_slice(&datagram[..datagram.len().min(usize::from(u16::MAX))]);
    }
    out
}

/// Calls `step` with each datagram of a receive script, without collecting them, so that the heap
/// a case takes is the receiver's rather than the script's.
fn for_each_step(bytes: &[u8], mut step: impl FnMut(SocketAddr, Duration, &[u8])) {
    let mut rest = bytes;
    while let [from, advance, high, low, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        step(source(*from), Duration::from_millis(u64::from(*advance)), &tail[..len]);
        rest = &tail[len..];
    }
}

/// A stream of audio and event packets from the peer, with reordering, duplicates, SSRC changes,
/// sequence jumps and moves to other addresses, interleaved with strangers' packets; every
/// datagram possibly mutated.
fn receive_script(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(4) {
        return mutated(rng, seeds);
    }
    let packets = rtp_seeds();
    let mut steps = Vec::new();
    let mut sender = 0u8;
    let (mut sequence, mut timestamp, mut ssrc) = (rng.next_u64() as u16, rng.next_u64() as u32, 0x1234_5678u32);
    for _ in 0..1 + rng.below(40) {
        match rng.below(10) {
            0 => ssrc = rng.next_u64() as u32,
            1 => sequence = sequence.wrapping_add(rng.below(70_000) as u16),
            2 => timestamp = rng.next_u64() as u32,
            _ => {}
        }
        let event = rng.one_in(3);
        let audio_type = *rng.pick(&[0u8, 0, 8, 111]);
        let payload: Vec<u8> = if event {
            vec![*rng.pick(&[5u8, 11, 16]), rng.next_u64() as u8, 0, 160]
        } else if audio_type == 111 {
            let len = rng.below(200);
            rng.bytes(len)
        } else {
            vec![0xd5; rng.below(200)]
        };
        let pt = if event { 101 } else { audio_type };
        let mut datagram = packet(pt, rng.one_in(8), sequence, timestamp, ssrc, &payload);
        if rng.one_in(4) {
            mutate_once(rng, &mut datagram, &packets);
        }
        // The stream now and then moves to another address (a NAT rebinding, or a stranger
        // taking over), and single packets come from anywhere.
        if rng.one_in(10) {
            sender = rng.below(5) as u8;
        }
        let from = if rng.one_in(8) { rng.below(5) as u8 } else { sender };
        let advance = if rng.one_in(5) { rng.next_u64() as u8 } else { 20 };
        steps.push((from, advance, datagram.clone()));
        if rng.one_in(6) {
            steps.push((from, 0, datagram));
        }
        if rng.one_in(5) {
            let i = rng.below(steps.len());
            let j = rng.below(steps.len());
            steps.swap(i, j);
        }
        sequence = sequence.wrapping_add(1);
        timestamp = timestamp.wrapping_add(160);
    }
    script(&steps)
}

#[test]
fn the_rtp_receiver_takes_any_stream_of_datagrams() {
    let seeds = vec![script(&[(0, 20, rtp_seeds()[0].clone()), (3, 20, rtp_seeds()[1].clone())])];
    let summary = Target::new("rtp_receiver", seeds.clone())
        // The receiver's fixed slots, and the test's own copy of every payload sent.
        .max_heap(|len| (1 << 16) + len * 16)
        .run_with(receive_script, |bytes| {
            let t0 = Instant::now();
            let mut now = t0;
            // 1 to 4 packets of probation before a move (0 means 1).
            let learning = (bytes.len() % 5) as u16;
            let mut receiver = RtpReceiver::new(Some(PEER), learning);
            // Where the receiver has taken media from: the SDP's address, and any it moved to.
            let mut accepted = vec![PEER];
            let mut sent: Vec<(SocketAddr, Ssrc, u32, u16, Vec<u8>)> = Vec::new();
            let mut delivered = 0u64;
            for_each_step(bytes, |from, advance, datagram| {
                now += advance;
                if let Ok(p) = RtpPacket::parse(datagram) {
                    let canonical = SocketAddr::new(from.ip().to_canonical(), from.port());
                    sent.push((canonical, p.ssrc, p.timestamp, p.sequence, p.payload.to_vec()));
                }
                receiver.handle_datagram(now, from, datagram);
                if let Some(source) = receiver.source().filter(|source| !accepted.contains(source)) {
                    accepted.push(source);
                }
                if let Some(deadline) = receiver.poll_timeout() {
                    assert!(deadline >= t0);
                    if deadline <= now {
                        receiver.handle_timeout(now);
                    }
                }
                let mut drained = 0;
                while let Some(packet) = receiver.poll_packet() {
                    drained += 1;
                    assert!(drained <= 8, "poll_packet does not run dry");
                    // Every delivered packet is one that was sent, whole (no slot mix-ups), by an
                    // address the receiver took media from (strict media).
                    let key = (packet.ssrc, packet.timestamp, packet.sequence.0 as u16);
                    assert!(
                        sent.iter().any(|(from, s, t, q, p)| accepted.contains(from)
                            && (*s, *t, *q) == key
                            && p == packet.payload),
                        "delivered {packet:?}, never sent from {accepted:?}"
                    );
                    delivered += 1;
                }
            });
            let stats = receiver.stats();
            assert!(delivered <= stats.received, "{delivered} delivered, {stats:?}");
        });
    summary.assert_ran(100);
}

/// The whole receive path of a call (receiver, RFC 4733, G.711 and Opus decoding, the in-band
/// detector), with the codec picked by the length of the script.
#[test]
fn a_call_media_session_takes_any_stream_of_datagrams() {
    let seeds = vec![script(&[(0, 20, rtp_seeds()[0].clone()), (0, 20, rtp_seeds()[3].clone())])];
    let summary = Target::new("media_session", seeds)
        // The Opus decoder and the detector's buffers are allocated per case.
        .max_heap(|len| (1 << 20) + len * 16)
        .run_with(receive_script, |bytes| {
            let mut now = Instant::now();
            let codec = ALL_CODECS[bytes.len() % 3];
            let description = MediaDescription {
                address: PEER.ip(),
                port: PEER.port(),
                codec,
                payload_type: codec.static_payload_type().unwrap_or(111),
                telephone_event: Some(101),
                telephone_event_rate: Some(8000),
                direction: Direction::SendRecv,
                srtp: None,
            };
            let mut session =
                MediaSession::new(now, description, true, DEFAULT_LEARNING_PACKETS, None, &mut rand::rng()).unwrap();
            for_each_step(bytes, |from, advance, datagram| {
                now += advance;
                session.handle_datagram(now, from, datagram);
                if let Some(deadline) = session.poll_timeout().filter(|deadline| *deadline <= now) {
                    session.handle_timeout(deadline);
                }
                while let Some(pound::call::MediaKey { digit, .. }) = session.poll_digit() {
                    assert!("0123456789*#ABCD".contains(digit), "{digit:?}");
                }
            });
        });
    summary.assert_ran(100);
}

/// An event script: packets, each `[advance ms][marker][timestamp: u32 BE][payload length][payload]`.
fn event_script(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let mut timestamp = rng.next_u64() as u32;
    for _ in 0..1 + rng.below(30) {
        if rng.one_in(4) {
            timestamp = timestamp.wrapping_add(rng.below(2_000) as u32);
        }
        let event = if rng.one_in(5) { rng.next_u64() as u8 } else { *rng.pick(&[0u8, 5, 11, 15, 16]) };
        let flags = if rng.one_in(3) { 0x80 } else { 0 } | (rng.next_u64() as u8 & 0x7f);
        let len = if rng.one_in(8) { rng.below(8) } else { 4 };
        let payload: Vec<u8> = [event, flags, rng.next_u64() as u8, rng.next_u64() as u8, 0, 0, 0, 0][..len].to_vec();
        let advance = if rng.one_in(4) { rng.next_u64() as u8 } else { 20 };
        out.extend_from_slice(&[advance, rng.one_in(4) as u8]);
        out.extend_from_slice(&timestamp.to_be_bytes());
        out.push(len as u8);
        out.extend_from_slice(&payload);
        if rng.one_in(4) {
            // The same packet again at once: a retransmission.
            let start = out.len() - (7 + len);
            let copy = out[start..].to_vec();
            out.extend_from_slice(&copy);
            out[start + 7 + len] = 0;
        }
    }
    out
}

/// Calls `packet` with each packet of an event script.
fn for_each_event(bytes: &[u8], mut packet: impl FnMut(u8, bool, u32, &[u8])) {
    let mut rest = bytes;
    while let [advance, marker, t0, t1, t2, t3, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        packet(*advance, *marker & 1 == 1, u32::from_be_bytes([*t0, *t1, *t2, *t3]), &tail[..len]);
        rest = &tail[len..];
    }
}

#[test]
fn telephone_events_never_panic_and_one_packet_is_never_two_presses() {
    let mut rng = Rng::new(1);
    let seeds = vec![event_script(&mut rng)];
    let summary = Target::new("telephone_event", seeds).max_heap(|_| 1 << 16).run_with(
        |rng, seeds| if rng.one_in(4) { mutated(rng, seeds) } else { event_script(rng) },
        |bytes| {
            let mut now = Instant::now();
            let mut receiver = EventReceiver::new();
            // The (timestamp, event) of the last packet if it was, or repeated, a reported press.
            let mut last_press: Option<(u32, u8)> = None;
            for_each_event(bytes, |advance, marker, timestamp, payload| {
                now += Duration::from_millis(u64::from(advance));
                let press = receiver.handle(now, timestamp, marker, payload);
                let this = payload.first().map(|&event| (timestamp, event));
                let retransmitted = advance == 0 && this.is_some() && this == last_press;
                if let Some(press) = press {
                    assert!(payload.len() >= 4 && payload[0] < 16, "a press from {payload:?}");
                    assert_eq!(Some(press.digit), "0123456789*#ABCD".chars().nth(usize::from(payload[0])));
                    assert_eq!(press.timestamp, timestamp);
                    assert!(!retransmitted, "one press reported twice for a retransmitted packet");
                }
                last_press = if press.is_some() || retransmitted { this } else { None };
                if let Some(deadline) = receiver.poll_timeout() {
                    receiver.handle_timeout(deadline);
                }
            });
        },
    );
    summary.assert_ran(100);
}

fn wav(samples: &[i16], encoding: Encoding) -> Vec<u8> {
    let mut bytes = Vec::new();
    write(&mut bytes, samples, encoding).unwrap();
    bytes
}

fn wav_seeds() -> Vec<Vec<u8>> {
    let tone: Vec<i16> = (0..400).map(|i| ((i * 37) % 20_000 - 10_000) as i16).collect();
    let mut stereo = wav(&[], Encoding::Pcm16);
    stereo[22] = 2;
    stereo.truncate(36);
    stereo.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00data\x08\x00\x00\x00\x64\x00\x2c\x01\xce\xff\x6a\xff");
    // WAVE_FORMAT_EXTENSIBLE whose sub-format is µ-law.
    let mut extensible =
        b"RIFF\0\0\0\0WAVEfmt \x28\0\0\0\xfe\xff\x01\0\x40\x1f\0\0\x40\x1f\0\0\x01\0\x08\0\x16\0\x08\0\0\0\0\0"
            .to_vec();
    extensible.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xaa, 0, 0x38, 0x9b, 0x71]);
    extensible.extend_from_slice(b"data\x04\0\0\0\xff\x7f\x00\x80");
    let fixture = &files("fixtures/audio", "press-pound.wav")[0];
    vec![
        wav(&tone, Encoding::Pcm16),
        wav(&tone, Encoding::Ulaw),
        wav(&tone, Encoding::Alaw),
        stereo,
        extensible,
        fixture[..fixture.len().min(2048)].to_vec(),
    ]
}

#[test]
fn wav_files_never_panic_and_never_yield_more_than_they_hold() {
    let seeds = wav_seeds();
    let summary = Target::new("wav", seeds.clone())
        // The samples (at most one i16 per byte), the reader's chunk buffers (8192 samples).
        .max_heap(|len| (1 << 16) + len * 8)
        .run(|bytes| {
            let Ok(mut reader) = WavReader::new(Cursor::new(bytes), bytes.len() as u64) else { return };
            let announced = reader.remaining_samples();
            assert!(announced <= bytes.len() as u64, "{announced} samples announced in {} bytes", bytes.len());
            if let Ok(samples) = reader.read_to_end() {
                assert!(samples.len() as u64 <= announced, "{} samples read, {announced} announced", samples.len());
            }
        });
    summary.assert_ran(100);
    let decoded = |bytes: &[u8]| WavReader::new(Cursor::new(bytes), bytes.len() as u64).unwrap().read_to_end().unwrap();
    assert_eq!(decoded(&seeds[3]), [200, -100]);
    assert_eq!(decoded(&seeds[4]).len(), 4);
}

#[test]
fn every_wav_pound_writes_reads_back() {
    let mut rng = Rng::new(fuzz_support::seed("wav_write"));
    for _ in 0..300 {
        let samples: Vec<i16> = (0..rng.below(3000)).map(|_| rng.next_u64() as i16).collect();
        let encoding = *rng.pick(&[Encoding::Pcm16, Encoding::Ulaw, Encoding::Alaw]);
        let bytes = wav(&samples, encoding);
        let mut reader = WavReader::new(Cursor::new(&bytes), bytes.len() as u64).unwrap();
        assert_eq!(reader.encoding(), encoding);
        let back = reader.read_to_end().unwrap();
        assert_eq!(back.len(), samples.len());
        if encoding == Encoding::Pcm16 {
            assert_eq!(back, samples);
        } else {
            // G.711 is lossy once: what it decoded comes back unchanged through it again.
            let again = wav(&back, encoding);
            assert_eq!(WavReader::new(Cursor::new(&again), again.len() as u64).unwrap().read_to_end().unwrap(), back);
        }
    }
}

/// `a=crypto` values: the RFC 4568 examples and pound's own lines, mutated.
#[test]
fn sdes_crypto_lines_never_panic_and_what_reads_writes_back() {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let mut seeds: Vec<Vec<u8>> = offer_keys(&mut rng).iter().map(|c| c.to_attribute().into_bytes()).collect();
    for line in [
        "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4",
        "crypto:1 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj|2^20 WSH=64",
        "crypto:2 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^31",
    ] {
        seeds.push(line.as_bytes().to_vec());
    }
    let summary = Target::new("sdes_crypto", seeds).max_heap(|len| 1024 + len * 8).run(|bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        let Some(crypto) = parse_crypto(text) else { return };
        assert_eq!(crypto.key.as_bytes().len(), crypto.key.suite().master_len());
        assert!(crypto.tag <= 999_999_999);
        assert_eq!(parse_crypto(&crypto.to_attribute()).as_ref(), Some(&crypto), "{text:?}");
    });
    summary.assert_ran(1000);
}

/// SRTP packets, protected under a fixed key, then mutated: a fresh context authenticates exactly
/// the packets that were sent, and no mutation of one.
#[test]
fn srtp_datagrams_never_panic_and_no_altered_packet_authenticates() {
    let key = |suite| MasterKey::from_bytes(suite, &[0x5a; 30][..suite.master_len()]).expect("the suite's length");
    let mut seeds = Vec::new();
    for suite in Suite::ALL {
        let mut context = SrtpContext::new(&key(suite));
        for mut packet in rtp_seeds() {
            if context.protect(&mut packet).is_ok() {
                seeds.push(packet);
            }
        }
    }
    let sent = seeds.clone();
    let summary = Target::new("srtp_packet", seeds).max_heap(|len| 4096 + len * 4).run(|bytes| {
        for suite in Suite::ALL {
            let mut packet = bytes.to_vec();
            match SrtpContext::new(&key(suite)).unprotect(&mut packet) {
                Ok(len) => {
                    assert!(sent.iter().any(|s| s == bytes), "{suite}: an altered packet authenticated");
                    assert_eq!(len + suite.tag_len(), bytes.len());
                }
                Err(SrtpError::Malformed | SrtpError::Unauthenticated | SrtpError::Replayed) => {}
            }
        }
    });
    summary.assert_ran(1000);
}

//! RFC 4733 telephone-events: key presses carried as RTP packets.
//!
//! An event payload is four bytes: the event code, the E (end) bit, a
//! reserved bit and 6 bits of volume, then a 16-bit duration in timestamp
//! units. One key press is many packets sharing one RTP timestamp: a start
//! packet with the marker bit, updates with growing durations, and an end
//! packet sent three times. Any of them can be lost, and real senders bend
//! the rules, so [`EventReceiver`] recognises a press by a few tolerant rules
//! rather than by trusting the marker bit.

use std::time::{Duration, Instant};

/// How long an event without an end counts as still held: longer than any
/// sane gap between packets of one press (they come every 20–50 ms), shorter
/// than a human takes to release and press a key again.
const HOLD: Duration = Duration::from_millis(200);

/// How many recent presses are remembered by (event, timestamp), so that
/// retransmitted or late end packets are recognised even after another key.
const HISTORY: usize = 8;

/// RFC 4733 end-of-event bit, in the second payload byte.
const END_BIT: u8 = 0x80;

/// Volume is 6 bits (0 to -63 dBm0).
const MAX_VOLUME: u8 = 0x3f;

/// The end packet is sent three times (RFC 4733 §2.5.1.4) so that one loss
/// does not leave the press hanging.
const END_REPEATS: u32 = 3;

/// One event packet per 20 ms audio frame slot.
const FRAME_MS: u32 = 20;

/// 1 s / 20 ms.
const FRAMES_PER_SECOND: u64 = 50;

/// One key press found in telephone-events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigitPress {
    /// The key: `0`–`9`, `*`, `#`, `A`–`D`.
    pub digit: char,
    /// The RTP timestamp of the packet that revealed the press (the event's
    /// start time in the sender's media clock).
    pub timestamp: u32,
    /// That packet's duration field: how long, in timestamp units, the key
    /// had already sounded when the sender sent it (the detection latency
    /// of the sender's own detector or keypad, plus lost packets).
    pub duration: u16,
    /// The event's volume field: the level the sender claims, in -dBm0.
    pub volume: u8,
}

/// The end of a press reported earlier: its first end packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PressEnd {
    pub digit: char,
    /// The end packet's duration field: the whole press, in timestamp units.
    pub duration: u16,
}

/// The key for a DTMF event code (RFC 4733 §3.2), or `None` for the other
/// events (flash, tones) that pound does not act on.
fn digit_for(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The event code for a key; `A`–`D` in either case.
fn event_for(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// The press whose end has not been seen yet.
#[derive(Clone, Copy, Debug)]
struct Current {
    event: u8,
    /// Latest timestamp seen for it (a few senders change it mid-press).
    timestamp: u32,
    last_at: Instant,
}

/// Turns a stream of telephone-event payloads into key presses, each
/// reported once.
#[derive(Debug, Default)]
pub struct EventReceiver {
    current: Option<Current>,
    /// (event, timestamp) of recent presses, a ring; every timestamp a press
    /// used is recorded, so stray packets of it are recognised later.
    recent: [Option<(u8, u32)>; HISTORY],
    recent_next: usize,
    /// The end of the latest press, once its first end packet arrived.
    ended: Option<PressEnd>,
}

impl EventReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// One telephone-event packet (the caller has checked its payload type).
    /// Returns the press at the first packet of a new event, whichever packet
    /// that is (start, continuation when the start was lost, or an end when
    /// everything else was lost), and `None` for every other packet.
    ///
    /// A packet belongs to a press already reported when it has the same event
    /// code and RTP timestamp as a recent press, or the same event code as the
    /// press still held (no end seen, last packet less than 200 ms ago). The
    /// second rule absorbs senders that change the timestamp within one press
    /// or mark more than one packet; the marker bit is therefore only used for
    /// diagnostics. Events other than keys (flash, tones) and payloads shorter
    /// than 4 bytes are ignored.
    pub fn handle(&mut self, now: Instant, timestamp: u32, marker: bool, payload: &[u8]) -> Option<DigitPress> {
        // Only the first four bytes are the event; anything after is ignored.
        let [event, flags, high, low, ..] = *payload else { return None };
        let digit = digit_for(event)?;
        let end = flags & END_BIT != 0;
        self.handle_timeout(now);

        if self.is_recent(event, timestamp) {
            // A packet of a press already reported: refresh it if it is the
            // one still held, otherwise it is a late straggler.
            if let Some(current) = &mut self.current
                && current.event == event
                && current.timestamp == timestamp
            {
                current.last_at = now;
                if end {
                    self.current = None;
                    self.ended = Some(PressEnd { digit, duration: u16::from_be_bytes([high, low]) });
                }
            }
            return None;
        }

        if let Some(current) = &mut self.current
            && current.event == event
        {
            tracing::debug!(
                event,
                from = current.timestamp,
                to = timestamp,
                marker,
                "telephone-event timestamp changed within a press"
            );
            current.timestamp = timestamp;
            current.last_at = now;
            if end {
                self.current = None;
                self.ended = Some(PressEnd { digit, duration: u16::from_be_bytes([high, low]) });
            }
            self.remember(event, timestamp);
            return None;
        }

        if !marker {
            tracing::debug!(event, timestamp, end, "telephone-event press found without its start packet");
        }
        self.remember(event, timestamp);
        self.current = (!end).then_some(Current { event, timestamp, last_at: now });
        let duration = u16::from_be_bytes([high, low]);
        self.ended = end.then_some(PressEnd { digit, duration });
        Some(DigitPress { digit, timestamp, duration, volume: flags & MAX_VOLUME })
    }

    /// The end of the latest press, once, when its first end packet has
    /// arrived (a press found only from its end packet ends at once).
    pub fn take_end(&mut self) -> Option<PressEnd> {
        self.ended.take()
    }

    /// Lets a press whose end never arrived stop being held 200 ms after its
    /// last packet, so the same key pressed again counts again.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(current) = self.current
            && now.saturating_duration_since(current.last_at) >= HOLD
        {
            self.current = None;
        }
    }

    /// When a held press will be let go, if one is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.and_then(|c| c.last_at.checked_add(HOLD))
    }

    fn is_recent(&self, event: u8, timestamp: u32) -> bool {
        self.recent.contains(&Some((event, timestamp)))
    }

    fn remember(&mut self, event: u8, timestamp: u32) {
        self.recent[self.recent_next] = Some((event, timestamp));
        self.recent_next = (self.recent_next + 1) % HISTORY;
    }
}

/// Produces the packets of one key press for the simulated phone, one per
/// 20 ms frame slot. The caller sends each with
/// [`RtpSender::event_packet`](super::RtpSender::event_packet) on the
/// telephone-event payload type at the timestamp the press started, and
/// calls [`RtpSender::skip_frame`](super::RtpSender::skip_frame) for the slot.
#[derive(Debug)]
pub struct EventSender {
    event: u8,
    volume: u8,
    clock_rate: u32,
    /// Frame slots the tone lasts (at least one).
    frames: u32,
    /// Packets produced so far.
    sent: u32,
}

impl EventSender {
    /// A press of `digit` (`0`–`9`, `*`, `#`, `A`–`D` in either case; `None`
    /// for anything else) lasting `duration_ms` rounded up to whole 20 ms
    /// frames, at `volume` (-dBm0, clamped to 63) on a `clock_rate` Hz clock.
    pub fn new(digit: char, volume: u8, duration_ms: u32, clock_rate: u32) -> Option<Self> {
        let event = event_for(digit)?;
        let frames = duration_ms.div_ceil(FRAME_MS).max(1);
        Some(Self { event, volume: volume.min(MAX_VOLUME), clock_rate, frames, sent: 0 })
    }

    /// The next packet of the press as (marker, payload): first the start
    /// packet (marker, duration of one frame), then one update per frame with
    /// the duration so far, then the end packet (E bit, final duration) three
    /// times; `None` when the press is over. Durations beyond what 16 bits
    /// hold are clamped (an 8 s press at 8 kHz).
    pub fn next_packet(&mut self) -> Option<(bool, [u8; 4])> {
        let index = self.sent;
        if index >= self.frames + END_REPEATS {
            return None;
        }
        self.sent += 1;
        let end = index >= self.frames;
        let frames_so_far = if end { self.frames } else { index + 1 };
        let samples = u64::from(frames_so_far) * u64::from(self.clock_rate) / FRAMES_PER_SECOND;
        let duration = u16::try_from(samples).unwrap_or(u16::MAX).to_be_bytes();
        let flags = if end { END_BIT | self.volume } else { self.volume };
        Some((index == 0, [self.event, flags, duration[0], duration[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::{DEFAULT_LEARNING_PACKETS, RtpPacket, RtpReceiver};
    use std::net::SocketAddr;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn payload(event: u8, end: bool, duration: u16) -> [u8; 4] {
        let d = duration.to_be_bytes();
        [event, if end { 0x8a } else { 0x0a }, d[0], d[1]]
    }

    /// Feeds (offset ms, timestamp, marker, payload) and collects the presses.
    fn run(rx: &mut EventReceiver, t0: Instant, packets: &[(u64, u32, bool, [u8; 4])]) -> Vec<DigitPress> {
        packets.iter().filter_map(|&(at, ts, m, p)| rx.handle(t0 + ms(at), ts, m, &p)).collect()
    }

    #[test]
    fn the_end_of_a_press_is_reported_once_with_its_whole_duration() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        rx.handle(t0, 1000, true, &payload(11, false, 160));
        assert_eq!(rx.take_end(), None, "still held");
        rx.handle(t0 + ms(20), 1000, false, &payload(11, false, 320));
        rx.handle(t0 + ms(40), 1000, false, &payload(11, true, 480));
        rx.handle(t0 + ms(40), 1000, false, &payload(11, true, 480));
        assert_eq!(rx.take_end(), Some(PressEnd { digit: '#', duration: 480 }));
        rx.handle(t0 + ms(60), 1000, false, &payload(11, true, 480));
        assert_eq!(rx.take_end(), None, "a retransmitted end is not a second end");
        // A press found only from its end packet ends at once.
        let only_end = rx.handle(t0 + ms(500), 9000, false, &payload(5, true, 800));
        assert_eq!(only_end.map(|p| p.volume), Some(10));
        assert_eq!(rx.take_end(), Some(PressEnd { digit: '5', duration: 800 }));
    }

    #[test]
    fn start_continuation_end_and_retransmitted_ends_make_one_press() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        let presses = run(
            &mut rx,
            t0,
            &[
                (0, 1000, true, payload(5, false, 160)),
                (20, 1000, false, payload(5, false, 320)),
                (40, 1000, false, payload(5, false, 480)),
                (60, 1000, false, payload(5, true, 640)),
                (60, 1000, false, payload(5, true, 640)),
                (80, 1000, false, payload(5, true, 640)),
                // A retransmitted end much later still belongs to the same press.
                (900, 1000, false, payload(5, true, 640)),
            ],
        );
        assert_eq!(presses, [DigitPress { digit: '5', timestamp: 1000, duration: 160, volume: 10 }]);
        assert_eq!(rx.poll_timeout(), None, "an ended press is not held");
    }

    #[test]
    fn every_key_maps_and_other_events_are_ignored() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        let mut keys = String::new();
        for event in 0..=20u8 {
            if let Some(p) = rx.handle(t0, u32::from(event) * 1000, true, &payload(event, true, 160)) {
                keys.push(p.digit);
            }
        }
        assert_eq!(keys, "0123456789*#ABCD");
    }

    #[test]
    fn short_payloads_are_ignored() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        for n in 0..4 {
            assert_eq!(rx.handle(t0, 0, true, &[11, 0, 0][..n.min(3)]), None);
        }
        // A longer payload (e.g. redundancy appended) still carries the event.
        assert!(rx.handle(t0, 0, true, &[11, 0, 0, 160, 0]).is_some());
    }

    #[test]
    fn timestamp_change_within_a_press_is_one_press() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        let presses = run(
            &mut rx,
            t0,
            &[
                (0, 1000, true, payload(11, false, 160)),
                (20, 1160, true, payload(11, false, 320)),
                (40, 1320, false, payload(11, false, 480)),
                (60, 1480, false, payload(11, true, 640)),
                (60, 1480, false, payload(11, true, 640)),
                // Late stragglers with timestamps the press used.
                (70, 1160, false, payload(11, false, 320)),
                (300, 1480, false, payload(11, true, 640)),
            ],
        );
        assert_eq!(presses, [DigitPress { digit: '#', timestamp: 1000, duration: 160, volume: 10 }]);
    }

    #[test]
    fn missing_marker_and_lost_start_still_report_once() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        let presses = run(
            &mut rx,
            t0,
            &[
                (40, 500, false, payload(3, false, 480)),
                (60, 500, false, payload(3, false, 640)),
                (80, 500, false, payload(3, true, 800)),
            ],
        );
        assert_eq!(presses, [DigitPress { digit: '3', timestamp: 500, duration: 480, volume: 10 }]);
    }

    #[test]
    fn an_end_packet_alone_is_a_press() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        let presses =
            run(&mut rx, t0, &[(0, 700, false, payload(0, true, 800)), (20, 700, false, payload(0, true, 800))]);
        assert_eq!(presses, [DigitPress { digit: '0', timestamp: 700, duration: 800, volume: 10 }]);
    }

    #[test]
    fn never_ending_event_then_same_key_again_is_two_presses() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        assert!(rx.handle(t0, 1000, true, &payload(11, false, 160)).is_some());
        assert!(rx.handle(t0 + ms(20), 1000, false, &payload(11, false, 320)).is_none());
        assert_eq!(rx.poll_timeout(), Some(t0 + ms(220)));
        rx.handle_timeout(t0 + ms(219));
        assert_eq!(rx.poll_timeout(), Some(t0 + ms(220)), "still held just before the deadline");
        rx.handle_timeout(t0 + ms(220));
        assert_eq!(rx.poll_timeout(), None);
        let again = rx.handle(t0 + ms(600), 5000, true, &payload(11, false, 160));
        assert_eq!(again, Some(DigitPress { digit: '#', timestamp: 5000, duration: 160, volume: 10 }));
    }

    #[test]
    fn hold_expires_without_handle_timeout_too() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        assert!(rx.handle(t0, 1000, true, &payload(4, false, 160)).is_some());
        // No marker, new timestamp, 250 ms later: a new press even though
        // the driver never called handle_timeout.
        assert!(rx.handle(t0 + ms(250), 3000, false, &payload(4, false, 160)).is_some());
    }

    #[test]
    fn two_quick_presses_of_the_same_key_are_two() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        let presses = run(
            &mut rx,
            t0,
            &[
                (0, 1000, true, payload(7, false, 160)),
                (20, 1000, false, payload(7, true, 320)),
                (20, 1000, false, payload(7, true, 320)),
                (40, 1160, true, payload(7, false, 160)),
                (40, 1000, false, payload(7, true, 320)),
                (60, 1160, false, payload(7, true, 320)),
            ],
        );
        assert_eq!(
            presses,
            [
                DigitPress { digit: '7', timestamp: 1000, duration: 160, volume: 10 },
                DigitPress { digit: '7', timestamp: 1160, duration: 160, volume: 10 }
            ]
        );
    }

    #[test]
    fn different_keys_back_to_back_are_each_reported() {
        let t0 = Instant::now();
        let mut rx = EventReceiver::new();
        let presses = run(
            &mut rx,
            t0,
            &[
                (0, 1000, true, payload(0, false, 160)),
                // The end of '0' was lost; '#' follows at once.
                (20, 1160, true, payload(11, false, 160)),
                (40, 1160, false, payload(11, true, 320)),
                // Late end of '0' must not report it again.
                (45, 1000, false, payload(0, true, 160)),
            ],
        );
        let digits: String = presses.iter().map(|p| p.digit).collect();
        assert_eq!(digits, "0#");
    }

    #[test]
    fn event_sender_produces_the_rfc4733_shape() {
        assert!(EventSender::new('x', 10, 100, 8000).is_none());
        let mut tx = EventSender::new('#', 10, 100, 8000).unwrap();
        let mut packets = Vec::new();
        while let Some(p) = tx.next_packet() {
            packets.push(p);
        }
        assert_eq!(
            packets,
            [
                (true, [11, 10, 0, 160]),
                (false, [11, 10, 1, 64]),
                (false, [11, 10, 1, 224]),
                (false, [11, 10, 2, 128]),
                (false, [11, 10, 3, 32]),
                (false, [11, 0x8a, 3, 32]),
                (false, [11, 0x8a, 3, 32]),
                (false, [11, 0x8a, 3, 32]),
            ]
        );
        assert_eq!(tx.next_packet(), None);
        // Volume clamps, lower-case letters are keys, a zero duration is one frame.
        let mut d = EventSender::new('d', 200, 0, 48_000).unwrap();
        assert_eq!(d.next_packet(), Some((true, [15, 63, 3, 192])));
        assert_eq!(d.next_packet(), Some((false, [15, 0x80 | 63, 3, 192])));
        // Eight seconds at 8 kHz overflow 16 bits: clamped.
        let mut long = EventSender::new('1', 0, 9000, 8000).unwrap();
        let last_update =
            std::iter::from_fn(|| long.next_packet()).filter(|(_, p)| p[1] & END_BIT == 0).last().unwrap();
        assert_eq!(last_update.1, [1, 0, 0xff, 0xff]);
    }

    #[test]
    fn event_sender_round_trips_through_rtp_sender_and_receivers() {
        use crate::rtp::{PayloadType, RtpSender, Ssrc};
        let t0 = Instant::now();
        let from: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut tx = RtpSender::new(Ssrc(5), PayloadType(0), 8000, 1, 1);
        let mut rtp_rx = RtpReceiver::new(Some(from), DEFAULT_LEARNING_PACKETS);
        let mut rx = EventReceiver::new();
        let mut out = Vec::new();
        let mut presses = Vec::new();
        let mut now = t0;
        for digit in ['0', '#', '#'] {
            let mut press = EventSender::new(digit, 10, 60, 8000).unwrap();
            let ts = tx.timestamp();
            while let Some((marker, p)) = press.next_packet() {
                tx.event_packet(PayloadType(101), ts, marker, &p, &mut out);
                tx.skip_frame();
                rtp_rx.handle_datagram(now, from, &out);
                while let Some(packet) = rtp_rx.poll_packet() {
                    presses.extend(rx.handle(now, packet.timestamp, packet.marker, packet.payload));
                }
                now += ms(20);
            }
            tx.event_ended();
            tx.audio_frame(&[0xff; 160], &mut out);
            rtp_rx.handle_datagram(now, from, &out);
            while rtp_rx.poll_packet().is_some() {}
            now += ms(20);
        }
        let digits: String = presses.iter().map(|p| p.digit).collect();
        assert_eq!(digits, "0##");
    }

    /// UDP payloads and capture times from a classic pcap with Ethernet/IPv4
    /// framing; only what the sipp pcaps need.
    fn read_pcap(bytes: &[u8]) -> Vec<(Duration, Vec<u8>)> {
        let u32_at = |b: &[u8], at: usize, le: bool| {
            let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
            if le { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) }
        };
        let le = match bytes[..4] {
            [0xd4, 0xc3, 0xb2, 0xa1] => true,
            [0xa1, 0xb2, 0xc3, 0xd4] => false,
            _ => panic!("not a microsecond pcap"),
        };
        assert_eq!(u32_at(bytes, 20, le), 1, "Ethernet link type");
        let mut at = 24;
        let mut out = Vec::new();
        while at + 16 <= bytes.len() {
            let time = Duration::new(u64::from(u32_at(bytes, at, le)), u32_at(bytes, at + 4, le) * 1000);
            let len = u32_at(bytes, at + 8, le) as usize;
            let frame = &bytes[at + 16..at + 16 + len];
            at += 16 + len;
            if frame[12..14] != [0x08, 0x00] {
                continue;
            }
            let ip = &frame[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[9] != 17 {
                continue;
            }
            let udp = &ip[ihl..];
            let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            out.push((time, udp[8..udp_len].to_vec()));
        }
        out
    }

    #[test]
    fn sipp_pound_pcap_is_one_press() {
        let path = "/usr/share/sip-tester/dtmf_2833_pound.pcap";
        let Ok(bytes) = std::fs::read(path) else {
            println!("note: {path} not found (install sip-tester); skipping");
            return;
        };
        let packets = read_pcap(&bytes);
        assert_eq!(packets.len(), 10, "seven updates and three ends");
        let first = packets[0].0;
        let t0 = Instant::now();
        let from: SocketAddr = "192.168.0.3:49176".parse().unwrap();
        let mut rtp_rx = RtpReceiver::new(Some(from), DEFAULT_LEARNING_PACKETS);
        let (mut via_receiver, mut direct) = (EventReceiver::new(), EventReceiver::new());
        let (mut presses_via, mut presses_direct) = (Vec::new(), Vec::new());
        for (time, datagram) in &packets {
            let now = t0 + time.saturating_sub(first);
            let p = RtpPacket::parse(datagram).unwrap();
            assert_eq!(p.payload_type.0, 101);
            presses_direct.extend(direct.handle(now, p.timestamp, p.marker, p.payload));
            rtp_rx.handle_datagram(now, from, datagram);
            while let Some(r) = rtp_rx.poll_packet() {
                presses_via.extend(via_receiver.handle(now, r.timestamp, r.marker, r.payload));
            }
        }
        assert_eq!(presses_direct.len(), 1);
        assert_eq!(presses_direct[0].digit, '#');
        assert_eq!(presses_via, presses_direct);
        let stats = rtp_rx.stats();
        assert_eq!((stats.received, stats.duplicates, stats.lost), (8, 2, 0));
    }
}

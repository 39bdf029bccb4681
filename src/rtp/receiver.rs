//! The receiving side of one RTP session: which source to listen to, and
//! packets back in sequence order with loss, duplicates and reordering
//! counted.
//!
//! Media is strict (the answer to Asterisk's "RTP bleed", CVE-2017-14099):
//! nothing is accepted until the SDP has named the peer's address, and then
//! only from that address and port. Anyone who can reach the port could
//! otherwise inject key presses. The one exception is symmetric RTP behind
//! a NAT that rebinds: the stream already heard may move to a new address
//! when a few packets from there continue it exactly (same SSRC, consecutive
//! sequence numbers), which an attacker off the media path cannot guess.
//!
//! Every accepted payload is copied once into one of four fixed slots (the
//! datagram buffer belongs to the caller and is gone after
//! [`RtpReceiver::handle_datagram`]), and [`RtpReceiver::poll_packet`] lends
//! it out from there; nothing is allocated per packet.
//!
//! Sequence numbers are extended to 64 bits per stream as in RFC 3550
//! appendix A.1, including its defence against a sender that restarts its
//! numbering: a jump of more than 3000 ahead or 100 behind is believed only
//! when the next packet continues from it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::packet::{PayloadType, RtpPacket, SeqNo, Ssrc};

/// Packets held while waiting for a missing one. Four frames (80 ms of
/// audio) cover the reordering seen on real paths without delaying the
/// DTMF decision noticeably.
const WINDOW: usize = 4;

/// Payload bytes one slot holds: an Ethernet MTU, more than any audio frame
/// or telephone-event packet.
const SLOT_BYTES: usize = 1500;

/// How long a packet waits for the ones before it before they are declared
/// lost: three frame times, beyond which late audio is useless anyway.
const GAP_WAIT: Duration = Duration::from_millis(60);

/// RFC 3550 A.1: the largest forward jump taken as loss rather than a restart.
const MAX_DROPOUT: u16 = 3000;

/// RFC 3550 A.1: the largest backward step taken as reordering rather than a restart.
const MAX_MISORDER: u16 = 100;

/// Consecutive packets a new address must send, continuing the stream,
/// before the receiver moves there: 80 ms of audio, the probation of
/// Asterisk's `strictrtp`. The default of `rtp.learning_packets`.
pub const DEFAULT_LEARNING_PACKETS: u16 = 4;

/// How far ahead of the stream the first packet from a new address may be:
/// the packets lost while a NAT rebinds, at most a second of 20 ms frames.
const MOVE_MAX_GAP: u16 = 50;

/// Counters for one receiver. After all held packets have been delivered,
/// `received + lost` is the number of sequence numbers the streams spanned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtpStats {
    /// Distinct packets accepted for delivery.
    pub received: u64,
    /// Sequence numbers skipped at delivery because their packet never came
    /// in time.
    pub lost: u64,
    /// Copies of a packet already received, dropped.
    pub duplicates: u64,
    /// Packets that arrived after a later one of their stream: delivered in
    /// order if still in time, otherwise dropped (their number is already in
    /// `lost`). Also counts stray packets of a replaced stream and unconfirmed
    /// sequence jumps, both dropped.
    pub reordered: u64,
    /// Datagrams from addresses other than the source the SDP named (or the
    /// one the stream moved to), or before the SDP was known, dropped. Packets
    /// of a move still being learnt are counted here too.
    pub foreign: u64,
    /// Datagrams from the source that are not usable RTP media: unparseable,
    /// RTCP multiplexed on the port (RFC 5761), or a payload larger than a
    /// 1500-byte slot. Dropped.
    pub malformed: u64,
}

/// A packet delivered in sequence order, borrowing the receiver's slot.
#[derive(Clone, Copy, Debug)]
pub struct ReceivedPacket<'a> {
    /// Payload type.
    pub payload_type: PayloadType,
    /// Marker bit.
    pub marker: bool,
    /// Extended sequence number within its stream.
    pub sequence: SeqNo,
    /// Media timestamp.
    pub timestamp: u32,
    /// Stream identifier.
    pub ssrc: Ssrc,
    /// The payload (no header, CSRCs, extension or padding).
    pub payload: &'a [u8],
}

/// Delivery order: streams in the order they started (`epoch`), then
/// extended sequence number. Field order makes the derived `Ord` do that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    epoch: u64,
    seq: u64,
}

/// A held packet's header; its payload is in the matching `payloads` entry.
#[derive(Clone, Copy, Debug)]
struct Slot {
    key: Key,
    payload_type: PayloadType,
    marker: bool,
    timestamp: u32,
    ssrc: Ssrc,
    len: usize,
    arrived: Instant,
}

/// Sequence tracking for the current SSRC.
#[derive(Clone, Copy, Debug)]
struct Stream {
    ssrc: Ssrc,
    epoch: u64,
    /// Highest extended sequence number accepted.
    highest: u64,
    /// Extended sequence number the next delivery should carry.
    next: u64,
    /// Bit i set: `next - 1 - i` was delivered (tells a duplicate from a
    /// packet that came too late, for up to 128 numbers back).
    delivered: u128,
}

/// A move of the stream to a new address, being learnt.
#[derive(Clone, Copy, Debug)]
struct Move {
    to: SocketAddr,
    /// The sequence number that continues it.
    next: u16,
    /// Consecutive packets seen from `to`.
    seen: u16,
}

/// Strict source checks, reordering and accounting for one RTP session.
pub struct RtpReceiver {
    /// The only address media is taken from; `None` until the SDP is known.
    source: Option<SocketAddr>,
    learning_packets: u16,
    moving: Option<Move>,
    stream: Option<Stream>,
    /// The SSRC before the current one: its late packets must not flip the
    /// stream back.
    previous_ssrc: Option<Ssrc>,
    /// A restart (sequence jump, or return of the previous SSRC) seen once:
    /// the SSRC and sequence number that would confirm it.
    candidate: Option<(Ssrc, u16)>,
    next_epoch: u64,
    slots: [Option<Slot>; WINDOW],
    payloads: Box<[[u8; SLOT_BYTES]; WINDOW]>,
    /// Held packets up to this key have waited long enough: the gaps before
    /// them are given up.
    release_upto: Option<Key>,
    stats: RtpStats,
    last_packet_at: Option<Instant>,
}

impl RtpReceiver {
    /// A receiver that takes media only from `remote` (the address and port
    /// the SDP named; `None` while it is not known: nothing is taken), or
    /// from an address the stream moved to after `learning_packets`
    /// consecutive packets (at least 1) continued it from there.
    pub fn new(remote: Option<SocketAddr>, learning_packets: u16) -> Self {
        Self {
            source: remote.map(canonical),
            learning_packets: learning_packets.max(1),
            moving: None,
            stream: None,
            previous_ssrc: None,
            candidate: None,
            next_epoch: 0,
            slots: [None; WINDOW],
            payloads: Box::new([[0; SLOT_BYTES]; WINDOW]),
            release_upto: None,
            stats: RtpStats::default(),
            last_packet_at: None,
        }
    }

    /// The SDP (a re-INVITE or UPDATE) named a new address: media is taken
    /// from there from now on, and a move being learnt is forgotten.
    pub fn set_remote(&mut self, remote: SocketAddr) {
        let remote = canonical(remote);
        if self.source != Some(remote) {
            tracing::debug!(%remote, "RTP source set by SDP");
            self.source = Some(remote);
            self.moving = None;
        }
    }

    /// Takes a datagram from the source; anything else is dropped and
    /// counted as `foreign`, except the packets that complete a move (see
    /// [`RtpReceiver::new`]). A new SSRC from the source is accepted
    /// (re-INVITE, media server change) and resets the sequence tracking.
    ///
    /// Drain [`poll_packet`](Self::poll_packet) after each call: a packet
    /// that finds all four slots still occupied is dropped (and its number
    /// later counted as lost).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.handle_timeout(now);
        let from = canonical(from);
        let from_source = self.source == Some(from);
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) if !is_rtcp(&p) && p.payload.len() <= SLOT_BYTES => p,
            _ if from_source => {
                self.stats.malformed += 1;
                return;
            }
            _ => {
                self.stats.foreign += 1;
                return;
            }
        };
        if !from_source && !self.learn_move(from, &packet) {
            self.stats.foreign += 1;
            return;
        }
        self.last_packet_at = Some(now);
        let Some(index) = self.slots.iter().position(Option::is_none) else {
            tracing::debug!(sequence = packet.sequence, "RTP reorder window full (not drained): packet dropped");
            return;
        };
        let Some(key) = self.classify(&packet) else { return };
        self.payloads[index][..packet.payload.len()].copy_from_slice(packet.payload);
        self.slots[index] = Some(Slot {
            key,
            payload_type: packet.payload_type,
            marker: packet.marker,
            timestamp: packet.timestamp,
            ssrc: packet.ssrc,
            len: packet.payload.len(),
            arrived: now,
        });
    }

    /// Packets in sequence order. A small reorder window holds early
    /// packets; a gap is declared lost (counted) once the window is full or
    /// after 60 ms, and delivery moves on. Duplicates and packets older than
    /// what was delivered are dropped (counted).
    pub fn poll_packet(&mut self) -> Option<ReceivedPacket<'_>> {
        let full = self.slots.iter().all(Option::is_some);
        let (index, slot) =
            self.slots.iter().enumerate().filter_map(|(i, s)| s.map(|s| (i, s))).min_by_key(|(_, s)| s.key)?;
        // A slot exists only after a packet started a stream.
        let stream = self.stream.as_mut()?;
        if slot.key.epoch == stream.epoch {
            let gap = slot.key.seq.saturating_sub(stream.next);
            if gap > 0 {
                if !full && self.release_upto.is_none_or(|upto| slot.key > upto) {
                    return None;
                }
                self.stats.lost += gap;
            }
            // The packet was `gap` numbers ahead of `next`: shift the history
            // past the skipped numbers and record this one.
            stream.delivered =
                u32::try_from(gap + 1).ok().and_then(|shift| stream.delivered.checked_shl(shift)).unwrap_or(0) | 1;
            stream.next = slot.key.seq + 1;
        }
        // Packets of an earlier stream go out at once: their gaps were
        // counted when the stream was replaced.
        self.slots[index] = None;
        Some(ReceivedPacket {
            payload_type: slot.payload_type,
            marker: slot.marker,
            sequence: SeqNo(slot.key.seq),
            timestamp: slot.timestamp,
            ssrc: slot.ssrc,
            payload: &self.payloads[index][..slot.len],
        })
    }

    /// Gives up waiting for the packets before any held packet that arrived
    /// 60 ms or more before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in self.slots.iter().flatten() {
            if now.saturating_duration_since(slot.arrived) >= GAP_WAIT && self.release_upto.is_none_or(|u| slot.key > u)
            {
                self.release_upto = Some(slot.key);
            }
        }
    }

    /// When a held packet will stop waiting for a gap, if any is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter(|s| self.release_upto.is_none_or(|u| s.key > u))
            // An unrepresentable deadline (far future) means "now" rather than never.
            .map(|s| s.arrived.checked_add(GAP_WAIT).unwrap_or(s.arrived))
            .min()
    }

    /// Arrival time of the last valid RTP packet from the source (duplicates
    /// included: they still prove the peer is sending).
    pub fn last_packet_at(&self) -> Option<Instant> {
        self.last_packet_at
    }

    /// The counters so far.
    pub fn stats(&self) -> RtpStats {
        self.stats
    }

    /// The address media is taken from: the SDP's, or where the stream moved.
    pub fn source(&self) -> Option<SocketAddr> {
        self.source
    }

    /// Whether `packet` from `from` (not the source) completes a move of the
    /// stream there. Only the stream already heard from the source may move,
    /// so nothing moves before the SDP is known: its SSRC and sequence
    /// numbers are what an attacker off the media path cannot guess. The
    /// first packet continues the stream at most a second ahead, the
    /// following ones are consecutive; a packet that neither continues the
    /// move nor could start one leaves it as it was, so that injected packets
    /// cannot hold a real move back.
    fn learn_move(&mut self, from: SocketAddr, packet: &RtpPacket<'_>) -> bool {
        let Some(stream) = self.stream.filter(|s| s.ssrc == packet.ssrc) else { return false };
        let seen = match self.moving {
            Some(m) if m.to == from && m.next == packet.sequence => m.seen + 1,
            _ => {
                // Truncation to the low 16 bits is the point: distance on the wire.
                let ahead = packet.sequence.wrapping_sub(stream.highest as u16);
                if !(1..=MOVE_MAX_GAP).contains(&ahead) {
                    return false;
                }
                1
            }
        };
        if seen < self.learning_packets {
            self.moving = Some(Move { to: from, next: packet.sequence.wrapping_add(1), seen });
            return false;
        }
        tracing::info!(from = ?self.source, to = %from, ssrc = packet.ssrc.0, "RTP stream moved (symmetric RTP)");
        self.source = Some(from);
        self.moving = None;
        true
    }

    /// Places a packet from the source in its stream: the key to hold it
    /// under, or `None` (counted) when it is dropped.
    fn classify(&mut self, packet: &RtpPacket<'_>) -> Option<Key> {
        let Some(stream) = self.stream else { return Some(self.restart(packet)) };
        if packet.ssrc != stream.ssrc {
            if Some(packet.ssrc) == self.previous_ssrc && !self.confirm(packet) {
                self.stats.reordered += 1;
                return None;
            }
            return Some(self.restart(packet));
        }
        // Truncation to the low 16 bits is the point: distance on the wire.
        let ahead = packet.sequence.wrapping_sub(stream.highest as u16);
        let seq = if ahead < MAX_DROPOUT {
            stream.highest + u64::from(ahead)
        } else if ahead > u16::MAX - MAX_MISORDER {
            let behind = u64::from(ahead.wrapping_neg());
            let Some(seq) = stream.highest.checked_sub(behind) else {
                // Before the first packet of the stream: too late by definition.
                self.stats.reordered += 1;
                return None;
            };
            seq
        } else if self.confirm(packet) {
            tracing::debug!(ssrc = packet.ssrc.0, sequence = packet.sequence, "RTP sequence restarted");
            return Some(self.restart(packet));
        } else {
            self.stats.reordered += 1;
            return None;
        };

        let key = Key { epoch: stream.epoch, seq };
        if seq < stream.next {
            let back = stream.next - 1 - seq;
            if back < 128 && stream.delivered & (1 << back) != 0 {
                self.stats.duplicates += 1;
            } else {
                self.stats.reordered += 1;
            }
            return None;
        }
        if self.slots.iter().flatten().any(|s| s.key == key) {
            self.stats.duplicates += 1;
            return None;
        }
        if seq < stream.highest {
            self.stats.reordered += 1;
        }
        if let Some(s) = &mut self.stream {
            s.highest = s.highest.max(seq);
        }
        self.stats.received += 1;
        Some(key)
    }

    /// Whether `packet` confirms the restart seen one packet earlier; if not,
    /// it becomes the candidate that the next packet may confirm.
    fn confirm(&mut self, packet: &RtpPacket<'_>) -> bool {
        if self.candidate == Some((packet.ssrc, packet.sequence)) {
            return true;
        }
        self.candidate = Some((packet.ssrc, packet.sequence.wrapping_add(1)));
        false
    }

    /// Starts tracking a new stream at `packet`, closing the current one:
    /// the holes before its held packets can no longer be filled, so they are
    /// counted lost now and the held packets are delivered first.
    fn restart(&mut self, packet: &RtpPacket<'_>) -> Key {
        if let Some(old) = self.stream {
            let (held, last) = self
                .slots
                .iter()
                .flatten()
                .filter(|s| s.key.epoch == old.epoch)
                .fold((0u64, None), |(n, last), s| (n + 1, last.max(Some(s.key.seq))));
            if let Some(last) = last {
                self.stats.lost += (last + 1).saturating_sub(old.next).saturating_sub(held);
            }
            if old.ssrc != packet.ssrc {
                self.previous_ssrc = Some(old.ssrc);
            }
        }
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let seq = u64::from(packet.sequence);
        self.stream = Some(Stream { ssrc: packet.ssrc, epoch, highest: seq, next: seq, delivered: 0 });
        self.candidate = None;
        self.stats.received += 1;
        Key { epoch, seq }
    }
}

// By hand: the derived form would print 6000 payload bytes.
impl std::fmt::Debug for RtpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpReceiver")
            .field("source", &self.source)
            .field("stream", &self.stream)
            .field("held", &self.slots.iter().flatten().count())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; SDP names them
/// as a.b.c.d.
fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// RTCP multiplexed on the RTP port (RFC 5761 §4): its packet types 192–223
/// read as the marker bit plus payload types 64–95, which RTP never uses.
fn is_rtcp(packet: &RtpPacket<'_>) -> bool {
    packet.marker && (64..=95).contains(&packet.payload_type.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: Ssrc = Ssrc(0x0102_0304);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A datagram with `seq` in the payload too, so deliveries can be checked.
    fn datagram(ssrc: Ssrc, seq: u16, out: &mut Vec<u8>) {
        let payload = seq.to_be_bytes();
        RtpPacket {
            payload_type: PayloadType(0),
            marker: false,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc,
            payload: &payload,
        }
        .write(out);
    }

    struct Harness {
        rx: RtpReceiver,
        from: SocketAddr,
        t0: Instant,
        buf: Vec<u8>,
    }

    impl Harness {
        fn new() -> Self {
            let from = addr("192.0.2.7:5004");
            Self {
                rx: RtpReceiver::new(Some(from), DEFAULT_LEARNING_PACKETS),
                from,
                t0: Instant::now(),
                buf: Vec::new(),
            }
        }

        /// Delivers `seq` of `ssrc` from `from` at `at` ms and drains.
        fn send_from(&mut self, from: &str, at: u64, ssrc: Ssrc, seq: u16) -> Vec<u64> {
            datagram(ssrc, seq, &mut self.buf);
            self.rx.handle_datagram(self.t0 + ms(at), addr(from), &self.buf);
            self.drain().into_iter().map(|(_, s)| s).collect()
        }

        /// Delivers `seq` of `ssrc` at `at` ms and drains: the (ssrc, SeqNo) delivered.
        fn send(&mut self, at: u64, ssrc: Ssrc, seq: u16) -> Vec<(Ssrc, u64)> {
            datagram(ssrc, seq, &mut self.buf);
            self.rx.handle_datagram(self.t0 + ms(at), self.from, &self.buf);
            self.drain()
        }

        fn seqs(&mut self, at: u64, seq: u16) -> Vec<u64> {
            self.send(at, SSRC, seq).into_iter().map(|(_, s)| s).collect()
        }

        fn drain(&mut self) -> Vec<(Ssrc, u64)> {
            let mut out = Vec::new();
            while let Some(p) = self.rx.poll_packet() {
                // The payload is the wire sequence number: check it came with its header.
                assert_eq!(p.payload, (p.sequence.0 as u16).to_be_bytes());
                assert_eq!(p.timestamp, u32::from(p.sequence.0 as u16) * 160);
                out.push((p.ssrc, p.sequence.0));
            }
            out
        }

        fn timeout(&mut self, at: u64) -> Vec<u64> {
            self.rx.handle_timeout(self.t0 + ms(at));
            self.drain().into_iter().map(|(_, s)| s).collect()
        }
    }

    #[test]
    fn in_order_packets_are_delivered_at_once() {
        let mut h = Harness::new();
        for (i, seq) in (10..20u16).enumerate() {
            assert_eq!(h.seqs(i as u64 * 20, seq), [u64::from(seq)]);
        }
        assert_eq!(h.rx.stats(), RtpStats { received: 10, ..RtpStats::default() });
        assert_eq!(h.rx.poll_timeout(), None);
        assert_eq!(h.rx.last_packet_at(), Some(h.t0 + ms(180)));
    }

    #[test]
    fn nothing_is_taken_before_the_sdp_names_the_source() {
        let source = addr("192.0.2.1:4000");
        let mut rx = RtpReceiver::new(None, DEFAULT_LEARNING_PACKETS);
        let t0 = Instant::now();
        let mut buf = Vec::new();
        // Media arriving while the phone rings, even from the address the
        // answer will name, and garbage: all foreign, nothing remembered.
        for seq in 1..=10 {
            datagram(SSRC, seq, &mut buf);
            rx.handle_datagram(t0 + ms(u64::from(seq)), source, &buf);
        }
        rx.handle_datagram(t0, source, b"not rtp at all");
        assert!(rx.poll_packet().is_none());
        assert_eq!(rx.source(), None);
        assert_eq!(rx.last_packet_at(), None);
        assert_eq!(rx.stats(), RtpStats { foreign: 11, ..RtpStats::default() });
        // The answer is known: its address is heard, from its next packet on.
        rx.set_remote(source);
        datagram(SSRC, 11, &mut buf);
        rx.handle_datagram(t0 + ms(20), source, &buf);
        assert_eq!(rx.poll_packet().map(|p| p.sequence), Some(SeqNo(11)));
        assert_eq!(rx.source(), Some(source));
        assert_eq!(rx.stats().received, 1);
    }

    #[test]
    fn only_the_sdp_address_and_port_is_taken() {
        let mut h = Harness::new();
        // The same IP on another port, another IP on the same port: foreign,
        // before and after the source has sent anything.
        assert!(h.send_from("192.0.2.7:5006", 0, SSRC, 1).is_empty());
        assert!(h.send_from("198.51.100.7:5004", 0, SSRC, 1).is_empty());
        assert_eq!(h.seqs(0, 1), [1]);
        assert!(h.send_from("192.0.2.7:5006", 1, Ssrc(7), 2).is_empty());
        // Garbage from elsewhere is foreign; from the source, malformed.
        h.rx.handle_datagram(h.t0, addr("203.0.113.5:9"), b"junk");
        h.rx.handle_datagram(h.t0, h.from, b"junk");
        // Dual-stack sockets report the same peer as an IPv4-mapped address.
        assert_eq!(h.send_from("[::ffff:192.0.2.7]:5004", 20, SSRC, 2), [2]);
        let stats = h.rx.stats();
        assert_eq!((stats.received, stats.foreign, stats.malformed), (2, 4, 1));
        assert_eq!(h.rx.source(), Some(h.from));
    }

    #[test]
    fn the_stream_moves_after_the_learning_window_with_its_ssrc_and_next_numbers() {
        let nat = "192.0.2.7:61000";
        let mut h = Harness::new();
        for seq in 1..=10 {
            assert_eq!(h.seqs(u64::from(seq) * 20, seq), [u64::from(seq)]);
        }
        // The NAT rebinds: the stream goes on from a new port. Three packets
        // are learnt (dropped), the fourth moves the source.
        for seq in 11..=13 {
            assert!(h.send_from(nat, u64::from(seq) * 20, SSRC, seq).is_empty());
            assert_eq!(h.rx.source(), Some(h.from));
        }
        assert!(h.send_from(nat, 280, SSRC, 14).is_empty(), "14 waits for the three learnt");
        assert_eq!(h.rx.source(), Some(addr(nat)));
        assert_eq!(h.send_from(nat, 300, SSRC, 15), [] as [u64; 0]);
        assert_eq!(h.timeout(340), [14, 15]);
        assert_eq!(h.send_from(nat, 360, SSRC, 16), [16]);
        // The old port is foreign now.
        assert!(h.seqs(380, 17).is_empty());
        let stats = h.rx.stats();
        assert_eq!((stats.received, stats.lost, stats.foreign), (13, 3, 4));
    }

    #[test]
    fn another_ssrc_or_numbers_that_do_not_continue_never_move_the_stream() {
        let new = "192.0.2.7:61000";
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 100), [100]);
        let mut at = 20;
        let mut offer = |h: &mut Harness, ssrc: Ssrc, seq: u16| {
            at += 20;
            assert!(h.send_from(new, at, ssrc, seq).is_empty());
        };
        // Another SSRC, however consecutive.
        for seq in 101..=120 {
            offer(&mut h, Ssrc(0xbad), seq);
        }
        // The right SSRC, but too far ahead, behind, or a repeat.
        for seq in [151, 1000, 30_000, 100, 99, 50] {
            for _ in 0..DEFAULT_LEARNING_PACKETS {
                offer(&mut h, SSRC, seq);
            }
        }
        assert_eq!(h.rx.source(), Some(h.from));
        assert_eq!(h.rx.stats().foreign, 20 + 6 * u64::from(DEFAULT_LEARNING_PACKETS));
        assert_eq!(h.seqs(1000, 101), [101], "the stream goes on from its source");
    }

    #[test]
    fn a_move_needs_consecutive_numbers_and_ignores_what_is_injected_meanwhile() {
        let nat = "192.0.2.7:61000";
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 10), [10]);
        assert!(h.send_from(nat, 20, SSRC, 11).is_empty());
        assert!(h.send_from(nat, 40, SSRC, 12).is_empty());
        // A hole: learning starts over from 14.
        assert!(h.send_from(nat, 60, SSRC, 14).is_empty());
        assert!(h.send_from(nat, 80, SSRC, 15).is_empty());
        // Injected packets from elsewhere neither move nor reset the move.
        assert!(h.send_from("203.0.113.9:4000", 90, Ssrc(1), 16).is_empty());
        assert!(h.send_from("203.0.113.9:4000", 90, SSRC, 9).is_empty());
        assert!(h.send_from(nat, 100, SSRC, 16).is_empty());
        assert_eq!(h.rx.source(), Some(h.from));
        assert!(h.send_from(nat, 120, SSRC, 17).is_empty());
        assert_eq!(h.rx.source(), Some(addr(nat)));
    }

    #[test]
    fn one_learning_packet_moves_at_the_first_that_continues() {
        let from = addr("192.0.2.7:5004");
        let mut rx = RtpReceiver::new(Some(from), 0);
        let t0 = Instant::now();
        let mut buf = Vec::new();
        datagram(SSRC, 1, &mut buf);
        rx.handle_datagram(t0, from, &buf);
        datagram(SSRC, 2, &mut buf);
        rx.handle_datagram(t0 + ms(20), addr("192.0.2.7:5010"), &buf);
        assert_eq!(rx.source(), Some(addr("192.0.2.7:5010")), "0 is taken as 1");
        let delivered: Vec<_> = std::iter::from_fn(|| rx.poll_packet().map(|p| p.sequence.0)).collect();
        assert_eq!(delivered, [1, 2]);
    }

    #[test]
    fn a_new_sdp_address_is_taken_at_once_and_forgets_a_move() {
        let nat = "192.0.2.7:61000";
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 1), [1]);
        assert!(h.send_from(nat, 20, SSRC, 2).is_empty());
        h.rx.set_remote(addr("[::ffff:198.51.100.3]:7000"));
        assert_eq!(h.rx.source(), Some(addr("198.51.100.3:7000")));
        for seq in 3..=5 {
            assert!(h.send_from(nat, u64::from(seq) * 20, SSRC, seq).is_empty());
        }
        assert_eq!(h.rx.source(), Some(addr("198.51.100.3:7000")), "the move started over");
        assert_eq!(h.send_from("198.51.100.3:7000", 120, Ssrc(2), 500), [500]);
    }

    #[test]
    fn rtcp_and_oversized_payloads_are_malformed() {
        let mut h = Harness::new();
        // A receiver report (PT 201) muxed on the port.
        let rr = [0x81, 201, 0, 7, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0];
        h.rx.handle_datagram(h.t0, h.from, &rr);
        let big = vec![0u8; 12 + SLOT_BYTES + 1];
        let mut big = big;
        big[0] = 0x80;
        h.rx.handle_datagram(h.t0, h.from, &big);
        assert_eq!(h.rx.stats().malformed, 2);
        assert_eq!(h.rx.last_packet_at(), None);
        assert_eq!(h.seqs(0, 1), [1]);
    }

    #[test]
    fn reordered_packets_are_delivered_in_order() {
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 1), [1]);
        assert_eq!(h.seqs(20, 3), [] as [u64; 0]);
        assert_eq!(h.rx.poll_timeout(), Some(h.t0 + ms(80)));
        assert_eq!(h.seqs(25, 2), [2, 3]);
        assert_eq!(h.seqs(40, 4), [4]);
        assert_eq!(h.rx.stats(), RtpStats { received: 4, reordered: 1, ..RtpStats::default() });
    }

    #[test]
    fn a_full_window_gives_up_the_gap() {
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 1), [1]);
        for seq in 3..=5 {
            assert!(h.seqs(u64::from(seq), seq).is_empty());
        }
        assert_eq!(h.seqs(6, 6), [3, 4, 5, 6]);
        // Too late now: dropped, and still lost.
        assert!(h.seqs(7, 2).is_empty());
        assert_eq!(h.rx.stats(), RtpStats { received: 5, lost: 1, reordered: 1, ..RtpStats::default() });
    }

    #[test]
    fn a_gap_is_given_up_after_60_ms() {
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 1), [1]);
        assert!(h.seqs(20, 4).is_empty());
        assert!(h.seqs(40, 5).is_empty());
        assert_eq!(h.rx.poll_timeout(), Some(h.t0 + ms(80)));
        assert!(h.timeout(79).is_empty());
        // 5 waited only 40 ms, but once 4 goes nothing is missing before it.
        assert_eq!(h.timeout(80), [4, 5]);
        assert_eq!(h.rx.stats().lost, 2);
        assert_eq!(h.rx.poll_timeout(), None);
        assert_eq!(h.seqs(90, 6), [6]);
    }

    #[test]
    fn a_later_arrival_releases_a_gap_that_timed_out() {
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 1), [1]);
        assert!(h.seqs(20, 3).is_empty());
        // No handle_timeout call: the next datagram's time is enough.
        assert_eq!(h.seqs(100, 4), [3, 4]);
        assert_eq!(h.rx.stats().lost, 1);
    }

    #[test]
    fn duplicates_are_dropped_and_counted() {
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 1), [1]);
        assert!(h.seqs(1, 1).is_empty());
        assert!(h.seqs(2, 3).is_empty());
        assert!(h.seqs(3, 3).is_empty());
        assert_eq!(h.seqs(4, 2), [2, 3]);
        assert!(h.seqs(5, 2).is_empty());
        assert!(h.seqs(6, 1).is_empty());
        assert_eq!(h.rx.stats(), RtpStats { received: 3, duplicates: 4, reordered: 1, ..RtpStats::default() });
    }

    #[test]
    fn sequence_rollover_extends_seqno() {
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 65534), [65534]);
        assert_eq!(h.seqs(20, 65535), [65535]);
        assert_eq!(h.seqs(40, 0), [65536]);
        // Reordered across the wrap in the second cycle too.
        assert!(h.seqs(60, 2).is_empty());
        assert_eq!(h.seqs(61, 1), [65537, 65538]);
        // A packet from before the wrap, late: dropped as a duplicate, not
        // mistaken for the next cycle.
        assert!(h.seqs(62, 65535).is_empty());
        assert_eq!(h.rx.stats().duplicates, 1);
    }

    #[test]
    fn a_packet_before_the_first_is_too_late() {
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 5), [5]);
        assert!(h.seqs(1, 65533).is_empty());
        assert_eq!(h.rx.stats().reordered, 1);
        assert_eq!(h.seqs(2, 6), [6]);
    }

    #[test]
    fn a_new_ssrc_resets_sequence_tracking() {
        let other = Ssrc(99);
        let mut h = Harness::new();
        assert_eq!(h.send(0, SSRC, 40_000), [(SSRC, 40_000)]);
        assert!(h.send(20, SSRC, 40_002).is_empty());
        // The new stream starts at its own numbers; the held packet of the old
        // stream goes first and its gap is counted.
        assert_eq!(h.send(40, other, 7), [(SSRC, 40_002), (other, 7)]);
        assert_eq!(h.send(60, other, 8), [(other, 8)]);
        assert_eq!(h.rx.stats().lost, 1);
        // A late packet of the old stream does not flip back.
        assert!(h.send(61, SSRC, 40_001).is_empty());
        assert_eq!(h.send(80, other, 9), [(other, 9)]);
        // But the old SSRC returning for real (two in a row) is followed.
        assert!(h.send(100, SSRC, 50_000).is_empty());
        assert_eq!(h.send(120, SSRC, 50_001), [(SSRC, 50_001)]);
        assert_eq!(h.rx.stats(), RtpStats { received: 6, lost: 1, reordered: 2, ..RtpStats::default() });
        assert_eq!(h.rx.source(), Some(h.from));
    }

    #[test]
    fn a_third_ssrc_is_taken_at_once() {
        let mut h = Harness::new();
        assert_eq!(h.send(0, Ssrc(1), 1), [(Ssrc(1), 1)]);
        assert_eq!(h.send(20, Ssrc(2), 100), [(Ssrc(2), 100)]);
        assert_eq!(h.send(40, Ssrc(3), 200), [(Ssrc(3), 200)]);
    }

    #[test]
    fn sequence_jumps_need_confirmation() {
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 10), [10]);
        // One stray far-off packet is ignored...
        assert!(h.seqs(20, 30_000).is_empty());
        assert_eq!(h.seqs(40, 11), [11]);
        // ...a restart (two consecutive) is followed, from the second packet.
        assert!(h.seqs(60, 20_000).is_empty());
        assert_eq!(h.seqs(80, 20_001), [20_001]);
        assert_eq!(h.seqs(100, 20_002), [20_002]);
        // A big step back (sipp replaying its pcap) likewise.
        assert!(h.seqs(120, 5).is_empty());
        assert_eq!(h.seqs(140, 6), [6]);
        assert_eq!(h.rx.stats(), RtpStats { received: 5, reordered: 3, ..RtpStats::default() });
    }

    #[test]
    fn a_large_forward_gap_within_dropout_is_loss() {
        let mut h = Harness::new();
        assert_eq!(h.seqs(0, 1), [1]);
        assert!(h.seqs(20, 1001).is_empty());
        assert_eq!(h.timeout(80), [1001]);
        assert_eq!(h.rx.stats().lost, 999);
    }

    /// A long stream through random loss, duplication and local reordering:
    /// deliveries strictly increase, nothing panics, and after the last
    /// timeout every sequence number is either received or lost.
    #[test]
    fn random_network_keeps_the_books_balanced() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut h = Harness::new();
        let first = 65_000u16;
        let count = 20_000u64;
        let mut in_flight: Vec<(u64, u16)> = Vec::new();
        let mut delivered = Vec::new();
        for i in 0..count {
            let seq = first.wrapping_add(i as u16);
            let at = i * 20 + next() % 50; // jitter up to 50 ms
            match next() % 20 {
                0 => {}                                            // lost
                1 => in_flight.extend([(at, seq), (at + 3, seq)]), // duplicated
                _ => in_flight.push((at, seq)),
            }
        }
        in_flight.sort();
        for (at, seq) in in_flight {
            delivered.extend(h.seqs(at, seq));
        }
        delivered.extend(h.timeout(count * 20 + 1000));
        assert!(delivered.windows(2).all(|w| w[0] < w[1]), "delivery order");
        let stats = h.rx.stats();
        assert_eq!(stats.received, delivered.len() as u64);
        let span = delivered.last().unwrap() - delivered.first().unwrap() + 1;
        assert_eq!(stats.received + stats.lost, span);
        assert_eq!(*delivered.first().unwrap(), u64::from(first));
        assert!(stats.duplicates > 0 && stats.reordered > 0 && stats.lost > count / 25);
        assert_eq!((stats.foreign, stats.malformed), (0, 0));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut h = Harness::new();
        let mut buf = [0u8; 64];
        let mut delivered = 0u64;
        for i in 0..100_000u64 {
            let len = (next() % 65) as usize;
            for b in &mut buf[..len] {
                *b = next() as u8;
            }
            if len > 1 {
                // Mostly version 2, few SSRCs, so streams do form.
                buf[0] = 0x80 | (buf[0] & 0x3f);
                if len >= 12 {
                    buf[8..12].copy_from_slice(&[0, 0, 0, (next() % 3) as u8]);
                }
            }
            h.rx.handle_datagram(h.t0 + ms(i), h.from, &buf[..len]);
            if next() % 5 == 0 {
                h.rx.handle_timeout(h.t0 + ms(i));
            }
            while h.rx.poll_packet().is_some() {
                delivered += 1;
            }
        }
        h.rx.handle_timeout(h.t0 + ms(200_000));
        while h.rx.poll_packet().is_some() {
            delivered += 1;
        }
        assert_eq!(h.rx.stats().received, delivered);
        assert!(delivered > 1000);
    }

    #[test]
    fn an_undrained_full_window_drops_instead_of_overwriting() {
        let mut h = Harness::new();
        let mut buf = Vec::new();
        for seq in 1..=5 {
            datagram(SSRC, seq, &mut buf);
            h.rx.handle_datagram(h.t0, h.from, &buf);
        }
        let got: Vec<u64> = h.drain().into_iter().map(|(_, s)| s).collect();
        assert_eq!(got, [1, 2, 3, 4]);
        // 5 never made it in: 6 waits for it, then the gap is given up.
        assert!(h.seqs(1, 6).is_empty());
        assert_eq!(h.timeout(61), [6]);
        assert_eq!(h.rx.stats().lost, 1);
    }
}

//! The sending side of one RTP stream: sequence numbers, timestamps, the
//! marker bit and 20 ms pacing.
//!
//! Pacing and timestamps are both computed from the number of frame slots
//! since the start rather than by adding 20 ms (or `clock_rate / 50` samples)
//! to the previous value, so neither can drift: slot n is due at exactly
//! `start + n · 20 ms` and carries exactly `first + n · clock_rate / 50`,
//! even for clock rates that are not a multiple of 50.

use std::time::{Duration, Instant};

use super::packet::{PayloadType, RtpPacket, Ssrc};

/// One audio frame lasts 20 ms: the packetisation every SIP peer accepts.
const FRAME_MS: u64 = 20;
/// 1 s / 20 ms.
const FRAMES_PER_SECOND: u128 = 50;

/// Numbers and paces the packets of one outgoing RTP stream.
#[derive(Debug)]
pub struct RtpSender {
    ssrc: Ssrc,
    payload_type: PayloadType,
    clock_rate: u32,
    /// Sequence number of the next packet, audio or event.
    sequence: u16,
    /// Timestamp of slot 0.
    first_timestamp: u32,
    /// Frame slots passed so far, with or without an audio packet.
    slots: u64,
    /// When pacing started, and the slot that was due then.
    start: Option<(Instant, u64)>,
    /// The next audio frame begins a talkspurt and carries the marker.
    marker: bool,
}

impl RtpSender {
    /// A stream that has sent nothing yet. The caller draws `ssrc`,
    /// `first_sequence` and `first_timestamp` from a CSPRNG (RFC 3550 §5.1:
    /// random initial values make known-plaintext attacks on SRTP harder and
    /// keep restarted calls from colliding).
    pub fn new(
        ssrc: Ssrc,
        payload_type: PayloadType,
        clock_rate: u32,
        first_sequence: u16,
        first_timestamp: u32,
    ) -> Self {
        Self {
            ssrc,
            payload_type,
            clock_rate,
            sequence: first_sequence,
            first_timestamp,
            slots: 0,
            start: None,
            marker: true,
        }
    }

    /// Starts (or re-anchors) pacing: the next frame slot is due at `now`.
    pub fn start(&mut self, now: Instant) {
        self.start = Some((now, self.slots));
    }

    /// When the next frame slot is due: `start + n · 20 ms` for the n-th slot
    /// since [`start`](Self::start); `None` before start.
    pub fn next_due(&self) -> Option<Instant> {
        let (at, first_slot) = self.start?;
        let frames = self.slots.saturating_sub(first_slot);
        // 20 ms · frames overflows only after 10^10 years; saturate rather than panic.
        let millis = frames.saturating_mul(FRAME_MS);
        at.checked_add(Duration::from_millis(millis))
    }

    /// Writes one 20 ms audio frame into `out` (cleared first) and moves to
    /// the next slot: sequence + 1, timestamp + `clock_rate / 50`. The first
    /// frame of a talkspurt (the very first, and the first after
    /// [`event_ended`](Self::event_ended)) carries the marker bit.
    pub fn audio_frame(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let packet = RtpPacket {
            payload_type: self.payload_type,
            marker: self.marker,
            sequence: self.sequence,
            timestamp: self.timestamp(),
            ssrc: self.ssrc,
            payload,
        };
        packet.write(out);
        self.marker = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.slots = self.slots.saturating_add(1);
    }

    /// Writes one RFC 4733 event packet into `out` (cleared first): its own
    /// payload type, the event's fixed timestamp and the caller's marker,
    /// sequence + 1. The frame clock does not move; the caller accounts for
    /// the slot with [`skip_frame`](Self::skip_frame).
    pub fn event_packet(
        &mut self,
        payload_type: PayloadType,
        event_timestamp: u32,
        marker: bool,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        let packet = RtpPacket {
            payload_type,
            marker,
            sequence: self.sequence,
            timestamp: event_timestamp,
            ssrc: self.ssrc,
            payload,
        };
        packet.write(out);
        self.sequence = self.sequence.wrapping_add(1);
    }

    /// The timestamp the next audio frame will carry; an event starting now
    /// uses it for all its packets (RFC 4733 §2.5.1.2).
    pub fn timestamp(&self) -> u32 {
        let samples = u128::from(self.slots) * u128::from(self.clock_rate) / FRAMES_PER_SECOND;
        // RTP timestamps are modulo 2^32: truncation is the wrap-around.
        self.first_timestamp.wrapping_add(samples as u32)
    }

    /// A frame slot passed without an audio packet (an event was being sent
    /// instead): the timestamp and the pacing move on, the sequence does not.
    pub fn skip_frame(&mut self) {
        self.slots = self.slots.saturating_add(1);
    }

    /// An event is over: the next audio frame starts a new talkspurt and
    /// carries the marker (RFC 4733 §2.6 leaves audio after an event to the
    /// usual RFC 3551 rule).
    pub fn event_ended(&mut self) {
        self.marker = true;
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(out: &[u8]) -> RtpPacket<'_> {
        RtpPacket::parse(out).unwrap()
    }

    #[test]
    fn audio_frames_number_and_mark_correctly() {
        let mut s = RtpSender::new(Ssrc(7), PayloadType(0), 8000, 65534, u32::MAX - 100);
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..3 {
            assert_eq!(s.timestamp(), (u32::MAX - 100).wrapping_add(160 * seen.len() as u32));
            s.audio_frame(&[0xff; 160], &mut out);
            let p = parse(&out);
            assert_eq!(p.ssrc, Ssrc(7));
            assert_eq!(p.payload_type, PayloadType(0));
            assert_eq!(p.payload.len(), 160);
            seen.push((p.sequence, p.timestamp, p.marker));
        }
        assert_eq!(seen, [(65534, u32::MAX - 100, true), (65535, 59, false), (0, 219, false)]);
        assert_eq!(s.ssrc(), Ssrc(7));
    }

    #[test]
    fn timestamps_follow_the_clock_rate() {
        let mut opus = RtpSender::new(Ssrc(1), PayloadType(111), 48_000, 0, 0);
        let mut out = Vec::new();
        opus.audio_frame(&[], &mut out);
        assert_eq!(opus.timestamp(), 960);
        // 11 025 Hz is 220.5 samples per frame: the fraction must not be lost.
        let mut odd = RtpSender::new(Ssrc(1), PayloadType(96), 11_025, 0, 0);
        for _ in 0..50 {
            odd.audio_frame(&[], &mut out);
        }
        assert_eq!(odd.timestamp(), 11_025);
    }

    #[test]
    fn pacing_is_exact_after_ten_thousand_frames() {
        let t0 = Instant::now();
        let mut s = RtpSender::new(Ssrc(1), PayloadType(0), 8000, 0, 0);
        assert_eq!(s.next_due(), None);
        s.start(t0);
        assert_eq!(s.next_due(), Some(t0));
        let mut out = Vec::new();
        for i in 0..10_000u32 {
            if i % 7 == 3 {
                s.skip_frame();
            } else {
                s.audio_frame(&[0; 160], &mut out);
            }
        }
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(200)));
        assert_eq!(s.timestamp(), 10_000 * 160);
    }

    #[test]
    fn start_anchors_pacing_at_the_current_slot() {
        let t0 = Instant::now();
        let mut s = RtpSender::new(Ssrc(1), PayloadType(0), 8000, 0, 0);
        let mut out = Vec::new();
        s.audio_frame(&[0; 160], &mut out);
        s.start(t0);
        assert_eq!(s.next_due(), Some(t0));
        s.audio_frame(&[0; 160], &mut out);
        assert_eq!(s.next_due(), Some(t0 + Duration::from_millis(FRAME_MS)));
    }

    #[test]
    fn events_keep_their_timestamp_and_audio_resumes_marked() {
        let mut s = RtpSender::new(Ssrc(9), PayloadType(0), 8000, 100, 1000);
        let mut out = Vec::new();
        s.audio_frame(&[0; 160], &mut out);
        s.audio_frame(&[0; 160], &mut out);
        let event_ts = s.timestamp();
        assert_eq!(event_ts, 1320);
        for i in 0..5u8 {
            s.event_packet(PayloadType(101), event_ts, i == 0, &[11, 10, 0, i], &mut out);
            let p = parse(&out);
            assert_eq!(
                (p.payload_type, p.timestamp, p.marker, p.sequence),
                (PayloadType(101), 1320, i == 0, 102 + u16::from(i))
            );
            assert_eq!(p.ssrc, Ssrc(9));
            s.skip_frame();
        }
        // Five slots passed under the event: audio resumes 5 frames later, marked.
        s.event_ended();
        s.audio_frame(&[0; 160], &mut out);
        let p = parse(&out);
        assert_eq!((p.payload_type, p.timestamp, p.marker, p.sequence), (PayloadType(0), 1320 + 5 * 160, true, 107));
        s.audio_frame(&[0; 160], &mut out);
        assert!(!parse(&out).marker);
    }

    #[test]
    fn event_packets_alone_do_not_advance_the_frame_clock() {
        let t0 = Instant::now();
        let mut s = RtpSender::new(Ssrc(9), PayloadType(0), 8000, 0, 0);
        s.start(t0);
        let mut out = Vec::new();
        s.event_packet(PayloadType(101), 0, true, &[11, 10, 0, 160], &mut out);
        assert_eq!(s.timestamp(), 0);
        assert_eq!(s.next_due(), Some(t0));
    }
}

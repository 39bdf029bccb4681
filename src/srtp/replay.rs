//! Where a packet falls in its stream: the rollover counter guess of RFC 3711
//! §3.3.1 and the replay window of §3.3.2.

/// Packets the replay window remembers behind the newest (RFC 3711 asks for
/// at least 64).
const WINDOW: u64 = 64;

/// What one SSRC's stream has shown so far, in authenticated packets only:
/// the newest 48-bit packet index (ROC · 2^16 + SEQ) and which of the 64
/// before it arrived.
#[derive(Debug, Clone, Copy)]
pub(super) struct StreamIndex {
    newest: u64,
    /// Bit n set: index `newest - n` was received.
    seen: u64,
}

impl StreamIndex {
    /// A stream whose first authenticated packet had `index`.
    pub fn new(index: u64) -> StreamIndex {
        StreamIndex { newest: index, seen: 1 }
    }

    /// The index of a packet with sequence number `seq`: the one of the
    /// three rollover counters (ROC - 1, ROC, ROC + 1) that puts it nearest
    /// the newest index (RFC 3711 §3.3.1, appendix A). `None` when that is
    /// ROC - 1 at ROC 0: a packet from before the stream began, too old.
    pub fn estimate(&self, seq: u16) -> Option<u64> {
        let roc = self.newest >> 16;
        let s_l = self.newest & 0xffff;
        let seq = u64::from(seq);
        let v = if s_l < 0x8000 {
            if seq > s_l + 0x8000 { roc.checked_sub(1)? } else { roc }
        } else if seq + 0x8000 < s_l {
            roc + 1
        } else {
            roc
        };
        Some(v << 16 | seq)
    }

    /// Whether `index` may be accepted: newer than the newest, or inside the
    /// window and not seen.
    pub fn is_fresh(&self, index: u64) -> bool {
        if index > self.newest {
            return true;
        }
        let behind = self.newest - index;
        behind < WINDOW && self.seen & (1 << behind) == 0
    }

    /// Records an authenticated packet.
    pub fn accept(&mut self, index: u64) {
        if index > self.newest {
            let ahead = index - self.newest;
            self.seen = if ahead >= WINDOW { 1 } else { self.seen << ahead | 1 };
            self.newest = index;
        } else {
            self.seen |= 1 << (self.newest - index);
        }
    }

    /// The rollover counter of `index`.
    pub fn roc(index: u64) -> u32 {
        (index >> 16) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollover_counter_follows_wraps_both_ways() {
        let stream = StreamIndex::new(0xfff0);
        assert_eq!(stream.estimate(0xfff1), Some(0xfff1));
        assert_eq!(stream.estimate(0x0002), Some(0x1_0002), "the sequence number wrapped");
        let wrapped = StreamIndex::new(0x1_0003);
        assert_eq!(wrapped.estimate(0xfffe), Some(0xfffe), "a late packet from before the wrap");
        assert_eq!(wrapped.estimate(0x0004), Some(0x1_0004));
        let high = StreamIndex::new(0x5_9000);
        assert_eq!(high.estimate(0x9001), Some(0x5_9001));
        assert_eq!(high.estimate(0x0500), Some(0x6_0500));
    }

    #[test]
    fn the_window_refuses_repeats_and_old_packets() {
        let mut stream = StreamIndex::new(1000);
        assert!(!stream.is_fresh(1000), "the same packet again");
        assert!(stream.is_fresh(1001));
        stream.accept(1003);
        assert!(stream.is_fresh(1001) && stream.is_fresh(1002), "late but inside the window");
        stream.accept(1001);
        assert!(!stream.is_fresh(1001));
        assert!(!stream.is_fresh(1003) && !stream.is_fresh(1000));
        stream.accept(1003 + 64);
        assert!(!stream.is_fresh(1003), "64 behind the newest is outside the window");
        assert!(stream.is_fresh(1004));
        stream.accept(1_000_000);
        assert!(stream.is_fresh(999_999) && !stream.is_fresh(1_000_000));
        assert!(!stream.is_fresh(1004));
    }

    #[test]
    fn a_packet_from_before_the_stream_began_is_too_old() {
        assert_eq!(StreamIndex::new(5).estimate(0xfff0), None);
        assert_eq!(StreamIndex::new(0x1_0005).estimate(0xfff0), Some(0xfff0));
    }
}

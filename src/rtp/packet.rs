//! One RTP packet (RFC 3550 §5.1), and the newtypes that keep RTP's numbers apart.
//!
//! Parsing and building are delegated to `rtp-rs`, which validates every
//! length before touching a byte; this wrapper maps its errors onto
//! [`RtpError`] and exposes only what pound uses.

use rtp_rs::{RtpPacketBuilder, RtpReader, RtpReaderError, Seq};

use super::RtpError;

/// Synchronisation source identifier: names one RTP stream (RFC 3550 §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ssrc(pub u32);

/// RTP payload type, 0–127; its meaning comes from the SDP (`a=rtpmap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PayloadType(pub u8);

/// Extended sequence number: the 16-bit wire sequence number plus 65 536 for
/// every rollover seen, counted per stream as in RFC 3550 appendix A.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqNo(pub u64);

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Clone, Copy, Debug)]
pub struct RtpPacket<'a> {
    /// Payload type (7 bits on the wire).
    pub payload_type: PayloadType,
    /// Marker bit: start of a talkspurt for audio, start of an event for RFC 4733.
    pub marker: bool,
    /// Wire sequence number (16 bits, wraps).
    pub sequence: u16,
    /// Media timestamp in the payload type's clock rate (wraps).
    pub timestamp: u32,
    /// Stream identifier.
    pub ssrc: Ssrc,
    /// The payload, without CSRCs, header extension or padding.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses an RTP version 2 packet. CSRCs, a header extension and padding
    /// are skipped (the payload excludes them); a datagram whose header or
    /// padding runs past its end is rejected. Never panics.
    ///
    /// # Errors
    ///
    /// [`RtpError`] says which part of the header is wrong.
    pub fn parse(datagram: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let reader = RtpReader::new(datagram).map_err(|e| match e {
            RtpReaderError::BufferTooShort(len) => RtpError::TooShort { len },
            RtpReaderError::UnsupportedVersion(version) => RtpError::UnsupportedVersion { version },
            RtpReaderError::HeadersTruncated { header_len, .. } => {
                RtpError::Truncated { header_len, len: datagram.len() }
            }
            RtpReaderError::PaddingLengthInvalid(padding) => RtpError::InvalidPadding { padding },
        })?;
        Ok(RtpPacket {
            payload_type: PayloadType(reader.payload_type()),
            marker: reader.mark(),
            sequence: reader.sequence_number().into(),
            timestamp: reader.timestamp(),
            ssrc: Ssrc(reader.ssrc()),
            payload: reader.payload(),
        })
    }

    /// Clears `out` and writes the 12-byte header and the payload (no CSRC,
    /// extension or padding). A payload type above 127 is cut to its low 7 bits
    /// rather than spilling into the marker bit. Reuses `out`'s capacity, so a
    /// caller that keeps one buffer does not allocate per packet.
    pub fn write(&self, out: &mut Vec<u8>) {
        let builder = RtpPacketBuilder::new()
            .payload_type(self.payload_type.0 & 0x7f)
            .marked(self.marker)
            .sequence(Seq::from(self.sequence))
            .timestamp(self.timestamp)
            .ssrc(self.ssrc.0)
            .payload(self.payload);
        out.clear();
        out.resize(builder.target_length(), 0);
        // The buffer is exactly `target_length()` long and the payload type is
        // masked to 7 bits, which is everything `build_into` would check.
        let len = builder.build_into_unchecked(out);
        out.truncate(len);
    }
}

/// Length of a datagram's RTP header: the fixed 12 bytes, the CSRCs and the
/// header extension, checked against the datagram's length. What SRTP leaves
/// in clear; the rest (payload and padding) it encrypts, so unlike
/// [`RtpPacket::parse`] this reads nothing past the header.
pub fn header_len(datagram: &[u8]) -> Result<usize, RtpError> {
    let [first, ..] = *datagram else { return Err(RtpError::TooShort { len: 0 }) };
    if datagram.len() < 12 {
        return Err(RtpError::TooShort { len: datagram.len() });
    }
    if first >> 6 != 2 {
        return Err(RtpError::UnsupportedVersion { version: first >> 6 });
    }
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words =
            datagram.get(len + 2..len + 4).ok_or(RtpError::Truncated { header_len: len + 4, len: datagram.len() })?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    if len > datagram.len() {
        return Err(RtpError::Truncated { header_len: len, len: datagram.len() });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload: &[u8]) -> RtpPacket<'_> {
        RtpPacket {
            payload_type: PayloadType(0),
            marker: true,
            sequence: 0xfffe,
            timestamp: 0xdead_beef,
            ssrc: Ssrc(0x1234_5678),
            payload,
        }
    }

    #[test]
    fn write_then_parse_round_trips() {
        let payload = [0xd5u8; 160];
        let mut out = Vec::new();
        sample(&payload).write(&mut out);
        assert_eq!(out.len(), 12 + 160);
        assert_eq!(&out[..12], &[0x80, 0x80, 0xff, 0xfe, 0xde, 0xad, 0xbe, 0xef, 0x12, 0x34, 0x56, 0x78]);
        let parsed = RtpPacket::parse(&out).unwrap();
        assert_eq!(parsed.payload_type, PayloadType(0));
        assert!(parsed.marker);
        assert_eq!(parsed.sequence, 0xfffe);
        assert_eq!(parsed.timestamp, 0xdead_beef);
        assert_eq!(parsed.ssrc, Ssrc(0x1234_5678));
        assert_eq!(parsed.payload, &payload[..]);
    }

    #[test]
    fn write_clears_and_reuses_the_buffer() {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[1; 50]);
        let capacity = out.capacity();
        let packet = RtpPacket { marker: false, payload_type: PayloadType(101), ..sample(&[1, 2, 3, 4]) };
        packet.write(&mut out);
        assert_eq!(out.len(), 16);
        assert_eq!(out.capacity(), capacity);
        assert_eq!(out[1], 101);
        assert_eq!(&out[12..], &[1, 2, 3, 4]);
    }

    #[test]
    fn payload_type_above_127_does_not_set_the_marker() {
        let mut out = Vec::new();
        RtpPacket { marker: false, payload_type: PayloadType(0xff), ..sample(&[]) }.write(&mut out);
        let parsed = RtpPacket::parse(&out).unwrap();
        assert!(!parsed.marker);
        assert_eq!(parsed.payload_type, PayloadType(0x7f));
    }

    #[test]
    fn csrcs_extension_and_padding_are_excluded_from_the_payload() {
        let mut d = vec![
            0xb2, // V=2, P=1, X=1, CC=2
            0x60, // M=0, PT=96
            0x00, 0x07, // seq 7
            0x00, 0x00, 0x01, 0x00, // ts 256
            0xaa, 0xbb, 0xcc, 0xdd, // ssrc
            0, 0, 0, 1, // csrc 1
            0, 0, 0, 2, // csrc 2
            0xbe, 0xde, 0x00, 0x01, // extension profile, length 1 word
            0x10, 0x20, 0x30, 0x40, // extension data
        ];
        d.extend_from_slice(b"hello");
        d.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding, count last
        let p = RtpPacket::parse(&d).unwrap();
        assert_eq!(p.payload, b"hello");
        assert_eq!(p.sequence, 7);
        assert_eq!(p.timestamp, 256);
        assert_eq!(p.ssrc, Ssrc(0xaabb_ccdd));
        assert_eq!(p.payload_type, PayloadType(96));
        assert!(!p.marker);
    }

    #[test]
    fn header_len_counts_csrcs_and_the_extension_and_checks_the_length() {
        assert_eq!(header_len(&[0x80; 12]), Ok(12));
        let mut d = vec![0x92, 0x60, 0, 7, 0, 0, 1, 0, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 1, 0, 0, 0, 2];
        d.extend_from_slice(&[0xbe, 0xde, 0x00, 0x01, 0x10, 0x20, 0x30, 0x40]);
        assert_eq!(header_len(&d), Ok(28));
        assert!(matches!(header_len(&d[..27]), Err(RtpError::Truncated { header_len: 28, .. })));
        assert!(matches!(header_len(&d[..22]), Err(RtpError::Truncated { .. })));
        assert!(matches!(header_len(&[0x40; 12]), Err(RtpError::UnsupportedVersion { version: 1 })));
        assert!(matches!(header_len(&[0x80; 5]), Err(RtpError::TooShort { len: 5 })));
        assert!(matches!(header_len(&[]), Err(RtpError::TooShort { len: 0 })));
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert_eq!(RtpPacket::parse(&[0x80; 11]).unwrap_err(), RtpError::TooShort { len: 11 });
        let mut v1 = [0u8; 12];
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1).unwrap_err(), RtpError::UnsupportedVersion { version: 1 });
        // Two CSRCs announced, none present.
        let mut cc = [0u8; 12];
        cc[0] = 0x82;
        assert_eq!(RtpPacket::parse(&cc).unwrap_err(), RtpError::Truncated { header_len: 20, len: 12 });
        // An extension of 2 words announced, 1 present.
        let mut ext = vec![0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0, 2];
        ext.extend_from_slice(&[0; 4]);
        assert!(matches!(RtpPacket::parse(&ext), Err(RtpError::Truncated { .. })));
        // Padding count larger than the packet body, and padding count zero.
        let mut pad = vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 9];
        assert_eq!(RtpPacket::parse(&pad).unwrap_err(), RtpError::InvalidPadding { padding: 9 });
        *pad.last_mut().unwrap() = 0;
        assert_eq!(RtpPacket::parse(&pad).unwrap_err(), RtpError::InvalidPadding { padding: 0 });
        // Padding flag with no byte after the header to hold the count.
        let mut pad_empty = [0u8; 12];
        pad_empty[0] = 0xa0;
        assert!(matches!(RtpPacket::parse(&pad_empty), Err(RtpError::Truncated { .. })));
    }

    /// Every truncation of valid packets, and a few hundred thousand random
    /// datagrams biased towards version 2 with all flags, must parse or fail
    /// cleanly; a panic fails the test.
    #[test]
    fn truncated_and_random_datagrams_never_panic() {
        let mut valid = vec![0xbf, 0xe5, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        valid.extend_from_slice(&[0; 60]); // 15 CSRCs
        valid.extend_from_slice(&[0, 0, 0, 1, 9, 9, 9, 9, 7, 7, 2]);
        assert!(RtpPacket::parse(&valid).is_ok());
        for n in 0..valid.len() {
            let _ = RtpPacket::parse(&valid[..n]);
        }

        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            // xorshift64*: deterministic and good enough to spray bytes.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut buf = [0u8; 96];
        let mut parsed = 0;
        for _ in 0..200_000 {
            let len = (next() % 97) as usize;
            for b in &mut buf[..len] {
                *b = next() as u8;
            }
            if len > 0 && next() % 4 != 0 {
                buf[0] = 0x80 | (buf[0] & 0x3f);
            }
            if let Ok(p) = RtpPacket::parse(&buf[..len]) {
                parsed += 1;
                assert!(p.payload.len() + 12 <= len);
            }
        }
        assert!(parsed > 1000, "the generator should produce some valid packets, got {parsed}");
    }
}

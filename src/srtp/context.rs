//! One direction of SRTP under one master key: protect on send, or
//! authenticate, check for replay and decrypt on receive.

use aes::Aes128;
use aes::cipher::{InnerIvInit, StreamCipher};
use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes128Gcm, Nonce, Tag};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use super::kdf::SessionKeys;
use super::replay::StreamIndex;
use super::{MasterKey, SrtpError, Suite};
use crate::rtp::packet::header_len;

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// Streams (SSRCs) one context follows at once. A callee's stream keeps one
/// SSRC, and changes it at most on a re-INVITE or a transfer; only
/// authenticated packets make an entry, so strangers cannot fill the table.
const MAX_STREAMS: usize = 4;

enum Transform {
    /// AES-CM with HMAC-SHA1 (RFC 3711 §4.1.1, §4.2.1).
    Cm { cipher: Aes128, salt: [u8; 14], auth: Hmac<Sha1> },
    /// AES-GCM (RFC 7714 §8).
    Gcm { aead: Aes128Gcm, salt: [u8; 12] },
}

/// The SRTP state of one direction of a call: the session keys and, per
/// SSRC, the newest packet index and the replay window.
pub struct SrtpContext {
    suite: Suite,
    transform: Transform,
    /// Per SSRC, in order of first arrival; tiny, so searched in full.
    streams: Vec<(u32, StreamIndex)>,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpContext({}, {} streams)", self.suite, self.streams.len())
    }
}

impl SrtpContext {
    /// A context for `master`'s suite, its session keys derived now.
    pub fn new(master: &MasterKey) -> SrtpContext {
        SrtpContext::with_session_keys(master.suite(), &SessionKeys::derive(master))
    }

    fn with_session_keys(suite: Suite, keys: &SessionKeys) -> SrtpContext {
        let transform = match suite {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => Transform::Cm {
                cipher: keys.cipher.clone(),
                salt: keys.salt,
                auth: <Hmac<Sha1> as KeyInit>::new_from_slice(&keys.auth).expect("HMAC takes any key length"),
            },
            Suite::AeadAes128Gcm => {
                let mut salt = [0u8; 12];
                salt.copy_from_slice(&keys.salt[..12]);
                Transform::Gcm { aead: Aes128Gcm::from(keys.cipher.clone()), salt }
            }
        };
        SrtpContext { suite, transform, streams: Vec::with_capacity(MAX_STREAMS) }
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Turns the RTP packet in `packet` into SRTP: the payload encrypted in
    /// place and the tag appended. `packet` keeps its capacity: a caller
    /// that reserves [`super::MAX_TRAILER_LEN`] bytes beyond its largest
    /// packet never sees an allocation.
    pub fn protect(&mut self, packet: &mut Vec<u8>) -> Result<(), SrtpError> {
        let header = header_len(packet).map_err(|_| SrtpError::Malformed)?;
        let (ssrc, seq) = ids(packet);
        let slot = self.stream(ssrc);
        // A sender's own stream only moves forward; a guess that fails is a
        // wrapped index, which RFC 3711 forbids reaching under one key.
        let index = match slot {
            Some(i) => self.streams[i].1.estimate(seq).ok_or(SrtpError::Replayed)?,
            None => u64::from(seq),
        };
        match &self.transform {
            Transform::Cm { cipher, salt, auth } => {
                cm_keystream(cipher, salt, ssrc, index).apply_keystream(&mut packet[header..]);
                let tag = cm_tag(auth, packet, index);
                packet.extend_from_slice(&tag[..self.suite.tag_len()]);
            }
            Transform::Gcm { aead, salt } => {
                let (head, body) = packet.split_at_mut(header);
                let tag = aead
                    .encrypt_inout_detached(&gcm_nonce(salt, ssrc, index), head, body.into())
                    .map_err(|_| SrtpError::Malformed)?;
                packet.extend_from_slice(&tag);
            }
        }
        self.record(slot, ssrc, index);
        Ok(())
    }

    /// Checks and decrypts the SRTP packet in `packet` in place; returns the
    /// length of the RTP packet now at its start. A packet that fails
    /// authentication or repeats an index changes nothing, not even the
    /// stream's state.
    pub fn unprotect(&mut self, packet: &mut [u8]) -> Result<usize, SrtpError> {
        let header = header_len(packet).map_err(|_| SrtpError::Malformed)?;
        let tag_len = self.suite.tag_len();
        let body_end = packet.len().checked_sub(tag_len).filter(|end| *end >= header).ok_or(SrtpError::Malformed)?;
        let (ssrc, seq) = ids(packet);
        let slot = self.stream(ssrc);
        let index = match slot {
            Some(i) => {
                let stream = &self.streams[i].1;
                stream.estimate(seq).filter(|index| stream.is_fresh(*index)).ok_or(SrtpError::Replayed)?
            }
            None => u64::from(seq),
        };
        match &self.transform {
            Transform::Cm { cipher, salt, auth } => {
                let (signed, tag) = packet.split_at_mut(body_end);
                let mut mac = auth.clone();
                mac.update(signed);
                mac.update(&StreamIndex::roc(index).to_be_bytes());
                mac.verify_truncated_left(tag).map_err(|_| SrtpError::Unauthenticated)?;
                cm_keystream(cipher, salt, ssrc, index).apply_keystream(&mut signed[header..]);
            }
            Transform::Gcm { aead, salt } => {
                let (head, rest) = packet.split_at_mut(header);
                let (body, tag) = rest.split_at_mut(body_end - header);
                let tag = Tag::try_from(&*tag).map_err(|_| SrtpError::Malformed)?;
                aead.decrypt_inout_detached(&gcm_nonce(salt, ssrc, index), head, body.into(), &tag)
                    .map_err(|_| SrtpError::Unauthenticated)?;
            }
        }
        self.record(slot, ssrc, index);
        Ok(body_end)
    }

    fn stream(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|(s, _)| *s == ssrc)
    }

    fn record(&mut self, slot: Option<usize>, ssrc: u32, index: u64) {
        match slot {
            Some(i) => self.streams[i].1.accept(index),
            None => {
                if self.streams.len() == MAX_STREAMS {
                    // The stream heard of longest ago, as far as order of arrival goes.
                    self.streams.remove(0);
                }
                self.streams.push((ssrc, StreamIndex::new(index)));
            }
        }
    }
}

/// The SSRC and sequence number of a packet whose header length was checked.
fn ids(packet: &[u8]) -> (u32, u16) {
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    (ssrc, u16::from_be_bytes([packet[2], packet[3]]))
}

/// AES-CM's keystream for one packet: the counter starts at
/// (salt · 2^16) XOR (SSRC · 2^64) XOR (index · 2^16) (RFC 3711 §4.1.1).
fn cm_keystream(cipher: &Aes128, salt: &[u8; 14], ssrc: u32, index: u64) -> Aes128Ctr {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (byte, id) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *byte ^= id;
    }
    for (byte, id) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *byte ^= id;
    }
    Aes128Ctr::from_core(ctr::CtrCore::inner_iv_init(cipher.clone(), &iv.into()))
}

/// HMAC-SHA1 over the header, the encrypted payload and the rollover counter.
fn cm_tag(auth: &Hmac<Sha1>, signed: &[u8], index: u64) -> [u8; 20] {
    let mut mac = auth.clone();
    mac.update(signed);
    mac.update(&StreamIndex::roc(index).to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// AES-GCM's nonce: the salt XOR (0x0000 ‖ SSRC ‖ ROC ‖ SEQ) (RFC 7714 §8.1).
fn gcm_nonce(salt: &[u8; 12], ssrc: u32, index: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut iv = *salt;
    for (byte, id) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
        *byte ^= id;
    }
    for (byte, id) in iv[6..12].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *byte ^= id;
    }
    iv.into()
}

#[cfg(test)]
mod tests {
    use crate::srtp::unhex as hex;
    use aes::cipher::{KeyInit, StreamCipherSeek};

    use super::*;
    use crate::rtp::{PayloadType, RtpPacket, Ssrc};

    /// RFC 3711 appendix B.2: the AES-CM keystream of session key
    /// 2B7E…4F3C, salt F0F1…FCFD, SSRC 0 and index 0, at blocks 0, 1, 2,
    /// 0xFEFF, 0xFF00 and 0xFF01.
    #[test]
    fn the_keystream_matches_rfc_3711_b2() {
        let cipher = Aes128::new(&<[u8; 16]>::try_from(hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap().into());
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let mut start = [0u8; 48];
        cm_keystream(&cipher, &salt, 0, 0).apply_keystream(&mut start);
        let expected =
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB 41E95B3BB0A2E8DD477901E4FCA894C0";
        assert_eq!(start.to_vec(), hex(expected));
        let mut tail = [0u8; 48];
        let mut stream = cm_keystream(&cipher, &salt, 0, 0);
        stream.seek(0xFEFFu64 * 16);
        stream.apply_keystream(&mut tail);
        let expected =
            "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE 6A2CC3787889374FBEB4C81B17BA6C44";
        assert_eq!(tail.to_vec(), hex(expected));
    }

    /// RFC 7714 §16.1: AEAD_AES_128_GCM with the session key and salt given.
    #[test]
    fn gcm_matches_rfc_7714_16_1() {
        let key: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let mut salt = [0u8; 14];
        salt[..12].copy_from_slice(&hex("517569642070726f2071756f"));
        let keys = SessionKeys { cipher: Aes128::new(&key.into()), salt, auth: [0; 20] };
        let mut context = SrtpContext::with_session_keys(Suite::AeadAes128Gcm, &keys);
        let plain =
            hex("8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976 69736120 696e2070 61727465 \
             73207472 6573");
        let protected =
            hex("8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5 0d294e6f 42a5f47a 51c7d19b \
             36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce");
        let mut packet = plain.clone();
        context.protect(&mut packet).unwrap();
        assert_eq!(packet, protected);
        let mut receiver = SrtpContext::with_session_keys(Suite::AeadAes128Gcm, &keys);
        let len = receiver.unprotect(&mut packet).unwrap();
        assert_eq!(&packet[..len], &plain[..]);
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1500);
        RtpPacket {
            payload_type: PayloadType(0),
            marker: false,
            sequence: seq,
            timestamp: 160 * u32::from(seq),
            ssrc: Ssrc(0x1234_5678),
            payload,
        }
        .write(&mut out);
        out
    }

    fn pair(suite: Suite) -> (SrtpContext, SrtpContext) {
        let master = MasterKey::generate(suite, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9));
        (SrtpContext::new(&master), SrtpContext::new(&master))
    }

    #[test]
    fn every_suite_round_trips_across_a_sequence_wrap() {
        for suite in Suite::ALL {
            let (mut sender, mut receiver) = pair(suite);
            for n in 0..200u16 {
                let seq = 0xff9c_u16.wrapping_add(n);
                let plain = rtp(seq, &[n as u8; 160]);
                let mut packet = Vec::with_capacity(1500);
                packet.extend_from_slice(&plain);
                let capacity = packet.capacity();
                sender.protect(&mut packet).unwrap();
                assert_eq!(packet.capacity(), capacity, "protect must not reallocate");
                assert_eq!(packet.len(), plain.len() + suite.tag_len());
                assert_ne!(packet[12..plain.len()], plain[12..], "{suite}: the payload is encrypted");
                let len = receiver.unprotect(&mut packet).unwrap_or_else(|e| panic!("{suite} seq {seq}: {e}"));
                assert_eq!(&packet[..len], &plain[..], "{suite} seq {seq}");
            }
        }
    }

    #[test]
    fn replayed_and_tampered_packets_are_refused_and_leave_no_trace() {
        for suite in Suite::ALL {
            let (mut sender, mut receiver) = pair(suite);
            let mut packets: Vec<Vec<u8>> = (1..=5)
                .map(|seq| {
                    let mut packet = rtp(seq, b"secret audio");
                    sender.protect(&mut packet).unwrap();
                    packet
                })
                .collect();
            let first = packets[0].clone();
            assert!(receiver.unprotect(&mut packets[0].clone()).is_ok());
            assert_eq!(receiver.unprotect(&mut first.clone()), Err(SrtpError::Replayed), "{suite}");
            // One bit anywhere, header, payload or tag, breaks the tag.
            for position in [1, 3, 8, 14, packets[1].len() - 1] {
                let mut tampered = packets[1].clone();
                tampered[position] ^= 0x01;
                assert_eq!(receiver.unprotect(&mut tampered), Err(SrtpError::Unauthenticated), "{suite} @{position}");
            }
            // Under another key nothing authenticates, not even a new stream's first packet.
            let other = MasterKey::generate(suite, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(10));
            let mut stranger = SrtpContext::new(&other);
            let mut forged = rtp(2, b"forged");
            stranger.protect(&mut forged).unwrap();
            assert_eq!(receiver.unprotect(&mut forged), Err(SrtpError::Unauthenticated));
            // The refused packets changed nothing: the genuine ones still pass, in any order.
            for i in [2, 1, 4, 3] {
                assert!(receiver.unprotect(&mut packets[i]).is_ok(), "{suite} packet {i}");
            }
            let mut short = vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
            assert_eq!(receiver.unprotect(&mut short), Err(SrtpError::Malformed), "a header without a tag");
        }
    }

    #[test]
    fn random_datagrams_never_authenticate_or_panic() {
        let (_, mut receiver) = pair(Suite::AesCm128HmacSha1_32);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut buf = [0u8; 80];
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 81) as usize;
            for (i, b) in buf[..len].iter_mut().enumerate() {
                *b = (state >> (i % 8 * 8)) as u8 ^ i as u8;
            }
            if len > 0 {
                buf[0] = 0x80 | (buf[0] & 0x3f);
            }
            assert!(receiver.unprotect(&mut buf[..len]).is_err());
        }
    }
}

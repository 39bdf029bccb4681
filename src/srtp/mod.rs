//! SRTP (RFC 3711, and AES-GCM from RFC 7714) for one call's audio, socket-free.
//!
//! - [`Suite`]: the three SDES crypto-suites pound speaks.
//! - [`MasterKey`]: a suite's master key and salt, as SDES carries them; a
//!   secret, so its `Debug` shows nothing of it.
//! - [`SrtpContext`]: one direction of one call: [`SrtpContext::protect`] on
//!   send, [`SrtpContext::unprotect`] on receive, both in place in the
//!   caller's buffer (no allocation per packet), with the rollover counter,
//!   the replay window and the key derivation of RFC 3711 §3.3 and §4.3.
//!
//! The ciphers are RustCrypto's (`aes`, `ctr`, `hmac`/`sha1`, `aes-gcm`);
//! this module only arranges their inputs as the RFCs say. SRTCP is not
//! spoken: pound sends no RTCP and reads none.

mod context;
mod kdf;
mod replay;

pub use context::SrtpContext;

use std::fmt;

use rand::Rng;

/// Length of every master key pound speaks (AES-128).
pub const MASTER_KEY_LEN: usize = 16;
/// Longest master salt (the AES-CM suites'; AES-GCM's is 12).
const MAX_SALT_LEN: usize = 14;
/// The most SRTP adds to a packet: AES-GCM's 16-byte tag.
pub const MAX_TRAILER_LEN: usize = 16;

/// An SDES crypto-suite (RFC 4568 §6.2, RFC 7714 §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-128 in counter mode, HMAC-SHA1 tag cut to 80 bits.
    AesCm128HmacSha1_80,
    /// The same with a 32-bit tag.
    AesCm128HmacSha1_32,
    /// AES-128-GCM: encryption and a 128-bit tag in one (RFC 7714).
    AeadAes128Gcm,
}

impl Suite {
    /// Every suite, in pound's order of preference.
    pub const ALL: [Suite; 3] = [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32, Suite::AeadAes128Gcm];

    /// The suite's name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    /// The suite of an `a=crypto` name (names are case-sensitive, RFC 4568 §9.2).
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL.into_iter().find(|suite| suite.name() == name)
    }

    /// Length of the master salt: 112 bits, or 96 for AES-GCM (RFC 7714 §12).
    pub fn salt_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => 14,
            Suite::AeadAes128Gcm => 12,
        }
    }

    /// Bytes SRTP appends to every packet (the authentication tag).
    pub fn tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
            Suite::AeadAes128Gcm => 16,
        }
    }

    /// Length of the key and salt together, as SDES's `inline:` carries them.
    pub fn master_len(self) -> usize {
        MASTER_KEY_LEN + self.salt_len()
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Suite {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A master key and salt for one suite. A secret: `Debug` prints only the
/// suite, and the bytes are wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    suite: Suite,
    /// Key then salt; only the first `suite.master_len()` bytes are used.
    bytes: [u8; MASTER_KEY_LEN + MAX_SALT_LEN],
}

impl MasterKey {
    /// Key and salt from `bytes` (key first), if the length is the suite's.
    pub fn from_bytes(suite: Suite, bytes: &[u8]) -> Option<MasterKey> {
        if bytes.len() != suite.master_len() {
            return None;
        }
        let mut key = MasterKey { suite, bytes: [0; MASTER_KEY_LEN + MAX_SALT_LEN] };
        key.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(key)
    }

    /// A fresh key from the caller's CSPRNG (every call gets its own keys).
    pub fn generate(suite: Suite, rng: &mut impl Rng) -> MasterKey {
        let mut key = MasterKey { suite, bytes: [0; MASTER_KEY_LEN + MAX_SALT_LEN] };
        rng.fill_bytes(&mut key.bytes[..suite.master_len()]);
        key
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Key then salt, as SDES's `inline:` carries them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.suite.master_len()]
    }

    fn key(&self) -> &[u8; MASTER_KEY_LEN] {
        self.bytes[..MASTER_KEY_LEN].try_into().expect("the array is longer than a key")
    }

    fn salt(&self) -> &[u8] {
        &self.bytes[MASTER_KEY_LEN..self.suite.master_len()]
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({}, <secret>)", self.suite)
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.bytes);
    }
}

/// Why a packet was not protected or not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Not an RTP packet: too short for its header and tag, or not version 2.
    #[error("not an SRTP packet")]
    Malformed,
    /// The authentication tag does not match: forged, corrupted, or under another key.
    #[error("SRTP authentication failed")]
    Unauthenticated,
    /// A packet index already received, or older than the replay window.
    #[error("SRTP packet replayed or too old")]
    Replayed,
}

/// The RFCs' test vectors, hex with spaces.
#[cfg(test)]
fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text.replace(' ', "")).expect("hex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_never_shows_in_debug_output() {
        let key = MasterKey::from_bytes(Suite::AesCm128HmacSha1_80, &[0xab; 30]).unwrap();
        let shown = format!("{key:?} {:?}", Some(&key));
        // Neither as hex nor as the decimal bytes of a derived Debug.
        assert!(!shown.to_lowercase().contains("ab") && !shown.contains("171"), "{shown}");
        assert!(shown.contains("AES_CM_128_HMAC_SHA1_80"), "{shown}");
    }

    #[test]
    fn key_lengths_follow_the_suite() {
        assert!(MasterKey::from_bytes(Suite::AeadAes128Gcm, &[1; 28]).is_some());
        assert!(MasterKey::from_bytes(Suite::AeadAes128Gcm, &[1; 30]).is_none());
        assert!(MasterKey::from_bytes(Suite::AesCm128HmacSha1_32, &[1; 28]).is_none());
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
        for suite in Suite::ALL {
            let key = MasterKey::generate(suite, &mut rng);
            assert_eq!(key.as_bytes().len(), suite.master_len());
            assert_eq!(Suite::from_name(suite.name()), Some(suite));
        }
        assert_ne!(
            MasterKey::generate(Suite::AeadAes128Gcm, &mut rng),
            MasterKey::generate(Suite::AeadAes128Gcm, &mut rng)
        );
        assert_eq!(Suite::from_name("aes_cm_128_hmac_sha1_80"), None);
    }
}

//! The SRTP key derivation (RFC 3711 §4.3) with the AES-CM PRF, for a key
//! derivation rate of 0: the session keys are derived once per master key.

use aes::Aes128;
use aes::cipher::{KeyInit, KeyIvInit, StreamCipher};

use super::{MASTER_KEY_LEN, MAX_SALT_LEN, MasterKey};

type Aes128Ctr = ctr::Ctr128BE<Aes128>;

/// What a session key is for (RFC 3711 §4.3.1; the SRTCP labels are unused).
#[derive(Debug, Clone, Copy)]
pub(super) enum Label {
    Encryption = 0x00,
    Authentication = 0x01,
    Salt = 0x02,
}

/// Fills `out` with the session key for `label`: the AES-CM keystream under
/// the master key, from the master salt with the label XORed in at the key
/// id's place (`index DIV kdr` is 0). AES-GCM's 96-bit master salt is
/// taken times 2^16, i.e. followed by two zero bytes (RFC 7714 erratum 4938).
pub(super) fn derive(master: &MasterKey, label: Label, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    let salt = master.salt();
    iv[..salt.len()].copy_from_slice(salt);
    iv[7] ^= label as u8;
    let key: &[u8; MASTER_KEY_LEN] = master.key();
    let mut prf = Aes128Ctr::new(&(*key).into(), &iv.into());
    out.fill(0);
    prf.apply_keystream(out);
}

/// The session keys of one master key.
pub(super) struct SessionKeys {
    pub cipher: Aes128,
    /// Only the first `suite.salt_len()` bytes are used.
    pub salt: [u8; MAX_SALT_LEN],
    /// HMAC-SHA1 key (AES-CM suites only).
    pub auth: [u8; 20],
}

impl SessionKeys {
    pub fn derive(master: &MasterKey) -> SessionKeys {
        let mut key = [0u8; MASTER_KEY_LEN];
        derive(master, Label::Encryption, &mut key);
        let mut salt = [0u8; MAX_SALT_LEN];
        derive(master, Label::Salt, &mut salt[..master.suite().salt_len()]);
        let mut auth = [0u8; 20];
        derive(master, Label::Authentication, &mut auth);
        let cipher = Aes128::new(&key.into());
        zeroize::Zeroize::zeroize(&mut key);
        SessionKeys { cipher, salt, auth }
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.salt);
        zeroize::Zeroize::zeroize(&mut self.auth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::Suite;
    use crate::srtp::unhex as hex;

    /// RFC 3711 appendix B.3.
    #[test]
    fn session_keys_match_rfc_3711_b3() {
        let master = [hex("E1F97A0D3E018BE0D64FA32C06DE4139"), hex("0EC675AD498AFEEBB6960B3AABE6")].concat();
        let master = MasterKey::from_bytes(Suite::AesCm128HmacSha1_80, &master).unwrap();
        let mut key = [0u8; 16];
        derive(&master, Label::Encryption, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        derive(&master, Label::Salt, &mut salt);
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        derive(&master, Label::Authentication, &mut auth);
        let expected = "CEBE321F6FF7716B6FD4AB49AF256A15 6D38BAA48F0A0ACF3C34E2359E6CDBCE \
                        E049646C43D9327AD175578EF7227098 6371C10C9A369AC2F94A8C5FBCDDDC25 \
                        6D6E919A48B610EF17C2041E47403576 6B68642C59BBFC2F34DB60DBDFB2";
        assert_eq!(auth.to_vec(), hex(expected));
        let keys = SessionKeys::derive(&master);
        assert_eq!(keys.auth.to_vec(), hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
        assert_eq!(keys.salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    }
}

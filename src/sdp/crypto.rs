//! SDES (RFC 4568): reading and writing `a=crypto` lines, and the keys pound
//! offers. A line pound cannot use (an unknown suite, several keys or an
//! MKI, a session parameter it does not implement, a key lifetime shorter
//! than a call) is skipped, not an error: the offer/answer then goes on as
//! if the line were not there, which RFC 4568 §6.1 asks of an answerer.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use rand::Rng;

use crate::srtp::{MasterKey, Suite};

/// Standard base64; padding as the sender likes it (RFC 4568 asks for it,
/// not every implementation writes it).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_encode_padding(true).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Fewest packets a key must be good for: 2^16 packets are 21 minutes of
/// 20 ms audio, longer than any verification call, and pound does not rekey.
const MIN_LIFETIME: u64 = 1 << 16;

/// One usable `a=crypto` line: its tag and its key (the suite is the key's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crypto {
    /// The line's tag (1 to 9 digits), which the answer repeats.
    pub tag: u32,
    pub key: MasterKey,
}

impl Crypto {
    /// The attribute's value, without `a=` (`crypto:1 AES_CM_… inline:…`).
    pub fn to_attribute(&self) -> String {
        let mut value = String::with_capacity(80);
        // Writing to a String cannot fail.
        let _ = write!(value, "crypto:{} {} inline:", self.tag, self.key.suite());
        BASE64.encode_string(self.key.as_bytes(), &mut value);
        value
    }
}

/// Fresh keys for an offer, one line per suite in pound's order of
/// preference, tags 1, 2, 3.
pub fn offer_keys(rng: &mut impl Rng) -> Vec<Crypto> {
    (1..).zip(Suite::ALL).map(|(tag, suite)| Crypto { tag, key: MasterKey::generate(suite, rng) }).collect()
}

/// Reads `crypto:<tag> <suite> <key-params> [<session-params>]`; `None` for
/// a line that breaks the grammar or that pound cannot use.
pub fn parse_crypto(value: &str) -> Option<Crypto> {
    let value = value.strip_prefix("crypto:")?;
    let mut fields = value.split_ascii_whitespace();
    let (tag, suite, key_params) = (fields.next()?, fields.next()?, fields.next()?);
    if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tag = tag.parse().ok()?;
    let suite = Suite::from_name(suite)?;
    // Window-size hints change nothing; every other session parameter
    // (KDR, UNENCRYPTED_SRTP, FEC_ORDER, …) asks for what pound does not do.
    if !fields.all(|param| param.starts_with("WSH=")) {
        return None;
    }
    // Several keys come with MKIs to tell them apart: not implemented.
    if key_params.contains(';') {
        return None;
    }
    let mut parts = key_params.strip_prefix("inline:")?.split('|');
    let bytes = BASE64.decode(parts.next()?).ok()?;
    let key = MasterKey::from_bytes(suite, &bytes)?;
    match (parts.next(), parts.next()) {
        (None, _) => {}
        // A lifetime, and nothing after it.
        (Some(lifetime), None) if !lifetime.contains(':') && lifetime_ok(lifetime) => {}
        // An MKI, with or without a lifetime before it.
        _ => return None,
    }
    Some(Crypto { tag, key })
}

/// A lifetime (`2^31` or a count) at least [`MIN_LIFETIME`] packets long.
fn lifetime_ok(lifetime: &str) -> bool {
    let packets = match lifetime.strip_prefix("2^") {
        Some(power) => power.parse::<u32>().ok().map(|p| if p >= 64 { u64::MAX } else { 1 << p }),
        None => lifetime.parse::<u64>().ok(),
    };
    packets.is_some_and(|n| n >= MIN_LIFETIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_30: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn rfc_4568_example_lines_read() {
        let crypto = parse_crypto(&format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}|2^20")).unwrap();
        assert_eq!(crypto.tag, 1);
        assert_eq!(crypto.key.suite(), Suite::AesCm128HmacSha1_80);
        assert_eq!(crypto.key.as_bytes(), BASE64.decode(KEY_30).unwrap());
        let gcm = Crypto { tag: 7, key: MasterKey::from_bytes(Suite::AeadAes128Gcm, &[5; 28]).unwrap() };
        assert_eq!(parse_crypto(&gcm.to_attribute()), Some(gcm.clone()));
        // Without padding, with a window-size hint.
        let unpadded = gcm.to_attribute().trim_end_matches('=').to_string() + " WSH=64";
        assert_eq!(parse_crypto(&unpadded), Some(gcm));
    }

    #[test]
    fn lines_pound_cannot_use_are_skipped() {
        for line in [
            format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}|2^20|1:4"),
            format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}|1:4"),
            format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}|2^10"),
            format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30};inline:{KEY_30}"),
            format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30} UNENCRYPTED_SRTP"),
            format!("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30} KDR=10"),
            format!("crypto:1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_30}"),
            format!("crypto:1 F8_128_HMAC_SHA1_80 inline:{KEY_30}"),
            format!("crypto:1 AEAD_AES_128_GCM inline:{KEY_30}"),
            format!("crypto:1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}"),
            format!("crypto:-1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_30}"),
            format!("crypto:1 AES_CM_128_HMAC_SHA1_80 key:{KEY_30}"),
            "crypto:1 AES_CM_128_HMAC_SHA1_80 inline:!!!!".to_string(),
            "crypto:1 AES_CM_128_HMAC_SHA1_80".to_string(),
            "crypto:".to_string(),
            "rtpmap:0 PCMU/8000".to_string(),
        ] {
            assert_eq!(parse_crypto(&line), None, "{line}");
        }
    }

    #[test]
    fn offered_keys_are_fresh_and_read_back() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(4);
        let keys = offer_keys(&mut rng);
        assert_eq!(
            keys.iter().map(|c| (c.tag, c.key.suite())).collect::<Vec<_>>(),
            vec![(1, Suite::AesCm128HmacSha1_80), (2, Suite::AesCm128HmacSha1_32), (3, Suite::AeadAes128Gcm)]
        );
        for crypto in &keys {
            assert_eq!(parse_crypto(&crypto.to_attribute()).as_ref(), Some(crypto));
        }
        assert_ne!(offer_keys(&mut rng), keys);
    }
}

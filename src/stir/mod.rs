//! STIR/SHAKEN signing (RFC 8224, 8225, 8588; ATIS-1000074): the `Identity` header every INVITE
//! carries when a trunk is configured with a key, so that terminating carriers can show the call
//! as verified instead of "Spam likely".
//!
//! Socket-free and clock-free: the caller passes the signing time (`iat`) and the randomness of
//! the call's `origid`. The key never leaves [`Signer`]: its `Debug` does not show it and no error
//! quotes it.

mod passport;

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use serde::Deserialize;

use passport::Passport;
pub use passport::Tn;

use crate::mask::mask_phone;

/// The longest `x5u` accepted: it travels twice in every INVITE (header parameter and PASSporT).
const MAX_X5U_BYTES: usize = 512;

/// Why STIR/SHAKEN signing cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum StirError {
    /// The key file could not be read.
    #[error("STIR/SHAKEN key {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
    /// The key is not a P-256 private key in PEM. The text never quotes the key.
    #[error(
        "STIR/SHAKEN key{0}: not a P-256 (prime256v1) private key in PEM, PKCS#8 (\"PRIVATE KEY\") or SEC1 (\"EC PRIVATE KEY\")"
    )]
    Key(String),
    /// The certificate URL is not an https URL that can travel in a SIP header.
    #[error(
        "STIR/SHAKEN x5u must be an https URL (https://host/path, at most {MAX_X5U_BYTES} bytes, URI characters but , and ;), not {0:?}"
    )]
    X5u(String),
    /// The attestation level is not one of ATIS-1000074's.
    #[error("STIR/SHAKEN attestation must be A, B or C, not {0:?}")]
    Attest(String),
    /// A party of the call has no telephone number to sign (the text is masked).
    #[error("STIR/SHAKEN signs telephone numbers: the {role} {shown} is not one (1 to 15 digits, optional +)")]
    NotATelephoneNumber { role: &'static str, shown: String },
}

/// How much the signer vouches for the caller's right to the number (ATIS-1000074 §5.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Attestation {
    /// Full: the customer is known and may use the number.
    A,
    /// Partial: the customer is known, the number not verified.
    B,
    /// Gateway: the call's origin is known, nothing more.
    C,
}

impl Attestation {
    /// The `attest` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Attestation::A => "A",
            Attestation::B => "B",
            Attestation::C => "C",
        }
    }
}

impl FromStr for Attestation {
    type Err = StirError;

    fn from_str(text: &str) -> Result<Self, StirError> {
        match text {
            "A" => Ok(Attestation::A),
            "B" => Ok(Attestation::B),
            "C" => Ok(Attestation::C),
            _ => Err(StirError::Attest(text.to_string())),
        }
    }
}

/// A trunk's signing identity: the private key, where verifiers find its certificate, and the
/// attestation level.
pub struct Signer {
    key: SigningKey,
    x5u: String,
    attest: Attestation,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key", &"<secret>")
            .field("x5u", &self.x5u)
            .field("attest", &self.attest)
            .finish()
    }
}

impl Signer {
    /// A signer from a PEM key (PKCS#8, as `openssl genpkey` writes, or SEC1, as `openssl
    /// ecparam -genkey` writes).
    pub fn new(key_pem: &str, x5u: &str, attest: Attestation) -> Result<Signer, StirError> {
        Self::from_pem(key_pem, x5u, attest, "")
    }

    /// A signer whose key is in the file `key`.
    pub fn load(key: &Path, x5u: &str, attest: Attestation) -> Result<Signer, StirError> {
        let path = key.display().to_string();
        let pem = std::fs::read_to_string(key).map_err(|source| StirError::KeyFile { path: path.clone(), source })?;
        Self::from_pem(&pem, x5u, attest, &format!(" {path}"))
    }

    fn from_pem(key_pem: &str, x5u: &str, attest: Attestation, shown: &str) -> Result<Signer, StirError> {
        check_x5u(x5u)?;
        let key = SigningKey::from_pkcs8_pem(key_pem)
            .or_else(|_| p256::SecretKey::from_sec1_pem(key_pem).map(SigningKey::from))
            .map_err(|_| StirError::Key(shown.to_string()))?;
        Ok(Signer { key, x5u: x5u.to_string(), attest })
    }

    /// The value of the `Identity` header (RFC 8224 §4.1) for `passport`'s claims: the compact
    /// JWS, then `info=<x5u>;alg=ES256;ppt=shaken`. ES256 is deterministic (RFC 6979): the same
    /// claims give the same header.
    fn identity(&self, parties: &Parties, iat: u64, origid: &str) -> String {
        let passport = Passport {
            x5u: &self.x5u,
            attest: self.attest.as_str(),
            orig: &parties.orig,
            dest: &parties.dest,
            iat,
            origid,
        };
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(passport.header_json()),
            URL_SAFE_NO_PAD.encode(passport.claims_json())
        );
        let signature: Signature = self.key.sign(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        format!("{signing_input}.{signature};info=<{}>;alg=ES256;ppt=shaken", self.x5u)
    }
}

/// `x5u` is an `https` URL whose every byte is a URI character (RFC 3986 §2): nothing that
/// could end the `<…>` of `info`, a JSON string or a SIP header line. `,` and `;` are URI
/// characters too, but refused: peers that split header values on them (a list of Identity
/// headers, the header's parameters) without honouring `<…>` would cut the URL.
fn check_x5u(x5u: &str) -> Result<(), StirError> {
    let uri_byte = |b: u8| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+=%".contains(&b);
    let authority = x5u.strip_prefix("https://").map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    let host = authority.map(|a| a.rsplit_once('@').map_or(a, |(_, host)| host));
    let ok = x5u.len() <= MAX_X5U_BYTES
        && x5u.bytes().all(uri_byte)
        && host.is_some_and(|host| !host.is_empty() && !host.starts_with(':'));
    if ok { Ok(()) } else { Err(StirError::X5u(x5u.to_string())) }
}

/// The two numbers a PASSporT vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties {
    pub orig: Tn,
    pub dest: Tn,
}

impl Parties {
    /// The caller is the P-Asserted-Identity when the trunk sets one, the From (URI or user)
    /// otherwise; the callee is the Request-URI or the number.
    pub fn new(asserted_identity: Option<&str>, from: &str, callee: &str) -> Result<Parties, StirError> {
        Ok(Parties { orig: caller_number(asserted_identity, from)?, dest: number("callee", callee)? })
    }
}

/// The number a PASSporT's `orig` carries: the P-Asserted-Identity's when there is one, the
/// From's otherwise (ATIS-1000074 §5.3.1).
pub fn caller_number(asserted_identity: Option<&str>, from: &str) -> Result<Tn, StirError> {
    number("caller", asserted_identity.unwrap_or(from))
}

fn number(role: &'static str, text: &str) -> Result<Tn, StirError> {
    Tn::canonical(text).ok_or_else(|| StirError::NotATelephoneNumber { role, shown: mask_phone(text) })
}

/// One call's signing: the same parties and `origid` on every INVITE of the call.
#[derive(Debug, Clone)]
pub struct CallSigner {
    signer: Arc<Signer>,
    parties: Parties,
    origid: String,
}

impl CallSigner {
    /// `random`: 16 bytes from the call's RNG, the `origid` UUID (version 4).
    pub fn new(signer: Arc<Signer>, parties: Parties, random: [u8; 16]) -> CallSigner {
        let origid = uuid::Builder::from_random_bytes(random).into_uuid().hyphenated().to_string();
        CallSigner { signer, parties, origid }
    }

    /// The `Identity` header value signed at `iat` (Unix seconds).
    pub fn identity(&self, iat: u64) -> String {
        self.signer.identity(&self.parties, iat, &self.origid)
    }

    /// The call's `origid`.
    pub fn origid(&self) -> &str {
        &self.origid
    }
}

#[cfg(test)]
mod tests;

//! Bearer API keys: the keys in the config file, and the keys in the store.
//!
//! Keys are compared by their SHA-256, so neither the config keys nor the
//! store hold anything a timing difference could leak bit by bit.

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::store::Store;

/// Who is calling: set by the auth middleware on every `/v1` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `cfg_` + 12 hex digits of the hash for config keys, the store's id otherwise.
    pub api_key_id: String,
    /// SHA-256 of the key; scopes values derived per key (idempotent ids).
    pub key_hash: [u8; 32],
}

/// The config file's keys, hashed once at startup.
#[derive(Debug, Clone)]
pub struct KeyRing {
    config: Vec<[u8; 32]>,
}

impl KeyRing {
    /// Hashes the config keys; empty ones are ignored (they would match a
    /// header with an empty token).
    pub fn new(keys: &[String]) -> KeyRing {
        KeyRing { config: keys.iter().filter(|k| !k.is_empty()).map(|k| sha256(k.as_bytes())).collect() }
    }

    /// Checks `Authorization: Bearer <key>` against the config keys, then the store.
    pub async fn authenticate(&self, headers: &HeaderMap, store: &dyn Store) -> Result<Caller, ApiError> {
        let token = bearer_token(headers)?;
        let key_hash = sha256(token.as_bytes());
        // Every config key is compared, without stopping at a match.
        let matched = self.config.iter().fold(false, |found, candidate| found | ct_eq(candidate, &key_hash));
        if matched {
            let hex_hash = hex::encode(key_hash);
            return Ok(Caller { api_key_id: format!("cfg_{}", &hex_hash[..12]), key_hash });
        }
        match store.api_key_by_hash(&hex::encode(key_hash)).await? {
            Some(key) => Ok(Caller { api_key_id: key.id, key_hash }),
            None => Err(invalid_key()),
        }
    }
}

fn invalid_key() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "the API key is not valid")
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 7235 §2.1).
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing_api_key", "send the API key as Authorization: Bearer <key>")
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| invalid_key())?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid_key());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(missing());
    }
    Ok(token)
}

/// SHA-256 of `data`.
fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Equality whose time does not depend on where the inputs differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        assert_eq!(bearer_token(&HeaderMap::new()).unwrap_err().code, "missing_api_key");
        assert_eq!(bearer_token(&headers("Bearer ")).unwrap_err().code, "missing_api_key");
        assert_eq!(bearer_token(&headers("Basic YTpi")).unwrap_err().code, "invalid_api_key");
        assert_eq!(bearer_token(&headers("Bearerabc")).unwrap_err().code, "invalid_api_key");
        assert_eq!(bearer_token(&headers("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&headers("bearer  abc ")).unwrap(), "abc");
    }

    #[test]
    fn constant_time_equality_is_equality() {
        let a = sha256(b"a");
        let mut b = a;
        assert!(ct_eq(&a, &b));
        b[31] ^= 1;
        assert!(!ct_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!ct_eq(&a, &b));
    }

    #[test]
    fn empty_config_keys_are_ignored() {
        assert_eq!(KeyRing::new(&["".into(), "k".into()]).config, vec![sha256(b"k")]);
    }
}

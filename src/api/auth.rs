//! Bearer API keys: the keys in the config file, and the keys in the store,
//! with what each grants: its tenant, the admin role, its webhook secret.
//!
//! Keys are compared by their SHA-256, so neither the config keys nor the
//! store hold anything a timing difference could leak bit by bit.

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use super::ApiKeyConfig;
use super::error::ApiError;
use crate::store::{ApiKey, LAST_USED_EVERY_MS, Scope, Store, StoreError};

/// Who is calling: set by the auth middleware on every `/v1` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `cfg_` + 12 hex digits of the hash for config keys, the store's id otherwise.
    pub api_key_id: String,
    /// SHA-256 of the key; scopes values derived per key (idempotent ids).
    pub key_hash: [u8; 32],
    /// Whose verifications this key creates and sees.
    pub tenant: String,
    /// Operators: every tenant's verifications.
    pub admin: bool,
    /// The key has a webhook secret, so its callbacks can be signed.
    pub can_sign: bool,
}

impl Caller {
    /// What this caller may see.
    pub fn scope(&self) -> Scope {
        if self.admin { Scope::All } else { Scope::Tenant(self.tenant.clone()) }
    }
}

/// A config-file key, hashed.
#[derive(Clone)]
struct ConfigKey {
    hash: [u8; 32],
    id: String,
    tenant: Option<String>,
    admin: bool,
    webhook_secret: Option<String>,
}

impl ConfigKey {
    fn caller(&self) -> Caller {
        Caller {
            api_key_id: self.id.clone(),
            key_hash: self.hash,
            tenant: self.tenant.clone().unwrap_or_else(|| self.id.clone()),
            admin: self.admin,
            can_sign: self.webhook_secret.is_some(),
        }
    }
}

/// The config file's keys, hashed once at startup; also answers which
/// secret signs a key's webhooks.
#[derive(Clone)]
pub struct KeyRing {
    config: Vec<ConfigKey>,
}

impl KeyRing {
    /// Hashes the config keys; empty ones are ignored (they would match a
    /// header with an empty token).
    pub fn new(keys: &[ApiKeyConfig]) -> KeyRing {
        let config = keys
            .iter()
            .filter(|k| !k.key.is_empty())
            .map(|k| {
                let hash = sha256(k.key.as_bytes());
                ConfigKey {
                    id: format!("cfg_{}", &hex::encode(hash)[..12]),
                    hash,
                    tenant: k.tenant.clone(),
                    admin: k.admin,
                    webhook_secret: k.webhook_secret.clone(),
                }
            })
            .collect();
        KeyRing { config }
    }

    /// Checks `Authorization: Bearer <key>` against the config keys, then the
    /// store, at `now` (Unix ms).
    ///
    /// Stored keys are looked up on every request, never cached, so a key
    /// revoked on any node is refused by every node from its next request.
    pub async fn authenticate(&self, headers: &HeaderMap, store: &dyn Store, now: i64) -> Result<Caller, ApiError> {
        let token = bearer_token(headers)?;
        let key_hash = sha256(token.as_bytes());
        // Every config key is compared, without stopping at a match.
        let matched = self.config.iter().fold(None, |found, candidate| {
            let equal = ct_eq(&candidate.hash, &key_hash);
            found.or(equal.then_some(candidate))
        });
        if let Some(key) = matched {
            return Ok(key.caller());
        }
        match store.api_key_by_hash(&hex::encode(key_hash)).await? {
            // The same answer as an unknown key: a revoked one is worth no more.
            Some(key) if key.revoked_at.is_some() => Err(invalid_key()),
            Some(key) => {
                record_use(store, &key, now).await;
                Ok(Caller {
                    tenant: key.effective_tenant().to_string(),
                    admin: key.admin,
                    can_sign: key.webhook_secret.is_some(),
                    api_key_id: key.id,
                    key_hash,
                })
            }
            None => Err(invalid_key()),
        }
    }

    /// The secrets that sign webhooks of verifications created by
    /// `api_key_id` at `now` (Unix ms): a config key's, or a stored key's
    /// (with its previous one during a rotation's overlap); none if it has
    /// none (or the key is gone).
    pub async fn webhook_secrets(
        &self,
        store: &dyn Store,
        api_key_id: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        if let Some(key) = self.config.iter().find(|key| key.id == api_key_id) {
            return Ok(key.webhook_secret.iter().cloned().collect());
        }
        Ok(store.api_key_by_id(api_key_id).await?.map(|key| key.signing_secrets(now)).unwrap_or_default())
    }
}

/// Updates the key's `last_used_at` when the row just read shows it is a
/// minute old, so a busy key costs one write a minute, not one per request.
/// A failed write only loses that record: the request goes on.
async fn record_use(store: &dyn Store, key: &ApiKey, now: i64) {
    if !needs_touch(key.last_used_at, now) {
        return;
    }
    if let Err(error) = store.touch_api_key(&key.id, now).await {
        tracing::warn!(%error, api_key_id = %key.id, "could not record the API key's last use");
    }
}

fn needs_touch(last_used_at: Option<i64>, now: i64) -> bool {
    last_used_at.is_none_or(|last| now.saturating_sub(last) >= LAST_USED_EVERY_MS)
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
    fn last_use_is_recorded_once_a_minute() {
        assert!(needs_touch(None, 0));
        assert!(!needs_touch(Some(1_000), 1_000));
        assert!(!needs_touch(Some(1_000), 1_000 + LAST_USED_EVERY_MS - 1));
        assert!(needs_touch(Some(1_000), 1_000 + LAST_USED_EVERY_MS));
        assert!(!needs_touch(Some(i64::MAX), i64::MIN), "a clock step back writes nothing");
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
        let ring = KeyRing::new(&["".into(), "k".into()]);
        assert_eq!(ring.config.iter().map(|key| key.hash).collect::<Vec<_>>(), vec![sha256(b"k")]);
    }

    #[test]
    fn config_keys_are_their_own_tenant_unless_they_name_one() {
        let mut shared = ApiKeyConfig::from("b");
        shared.tenant = Some("contoso".into());
        shared.admin = true;
        shared.webhook_secret = Some("s".into());
        let ring = KeyRing::new(&["a".into(), shared]);
        let own = ring.config[0].caller();
        assert_eq!(own.tenant, own.api_key_id);
        assert!(own.api_key_id.starts_with("cfg_") && own.api_key_id.len() == 16);
        assert_eq!((own.admin, own.can_sign, own.scope()), (false, false, Scope::Tenant(own.api_key_id.clone())));
        let named = ring.config[1].caller();
        assert_eq!((named.tenant.as_str(), named.admin, named.can_sign), ("contoso", true, true));
        assert_eq!(named.scope(), Scope::All);
    }
}

//! `pound keys create` and `pound keys rotate-secret`: API keys, stored
//! hashed, and their webhook secrets; each shown once.

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::engine::unix_ms;
use crate::store::{ApiKey, StoreError};

/// What `keys create` grants the new key.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    /// To recognise the key by (`rotate-secret NAME`).
    pub name: String,
    /// Keys naming the same tenant share their verifications; `None`: its own.
    pub tenant: Option<String>,
    /// Operators: every tenant's verifications.
    pub admin: bool,
}

/// The key as printed: the only time the key and its secret are visible.
#[derive(Debug, serde::Serialize)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    pub key: String,
    /// Verifies the `Pound-Signature` of this key's webhooks.
    pub webhook_secret: String,
    pub tenant: String,
    pub admin: bool,
}

/// A new webhook secret, as printed once.
#[derive(Debug, serde::Serialize)]
pub struct RotatedSecret {
    pub id: String,
    pub name: String,
    pub webhook_secret: String,
    /// Until then (Unix ms) the previous secret signs too.
    pub previous_signs_until: i64,
}

/// How long the previous secret keeps signing after a rotation by default:
/// a day for receivers to switch over.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// Why a key command failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// No key has this id or name.
    #[error("no API key with id or name {0:?}")]
    NotFound(String),
    /// Several keys have this name: the id says which.
    #[error("several API keys are named {name:?} ({ids}); give the id")]
    Ambiguous { name: String, ids: String },
    /// An option's value is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Creates a key in the store at `url`, with a webhook secret of its own.
pub async fn create(url: &str, new: &NewKey) -> Result<CreatedKey, KeysError> {
    if new.tenant.as_ref().is_some_and(String::is_empty) {
        return Err(KeysError::Invalid("--tenant must not be empty".into()));
    }
    let store = crate::store::open(url).await?;
    let key = format!("pk_{}", hex::encode(rand::random::<[u8; 16]>()));
    let webhook_secret = new_secret();
    let stored = ApiKey {
        id: format!("k_{:016x}", rand::random::<u64>()),
        name: new.name.clone(),
        hash: hex::encode(Sha256::digest(key.as_bytes())),
        created_at: unix_ms(),
        tenant: new.tenant.clone(),
        admin: new.admin,
        webhook_secret: Some(webhook_secret.clone()),
        previous_webhook_secret: None,
        previous_secret_until: None,
        revoked_at: None,
        last_used_at: None,
    };
    store.insert_api_key(&stored).await?;
    Ok(CreatedKey {
        tenant: stored.effective_tenant().to_string(),
        id: stored.id,
        name: stored.name,
        key,
        webhook_secret,
        admin: stored.admin,
    })
}

/// Gives the key with this id or name a new webhook secret: webhooks sent
/// from now on, queued ones included, are signed with it, and for `overlap`
/// with the previous one as well (a second `v1=`).
pub async fn rotate_secret(url: &str, id_or_name: &str, overlap: Duration) -> Result<RotatedSecret, KeysError> {
    let store = crate::store::open(url).await?;
    let mut keys = store.api_keys_named(id_or_name).await?;
    // An id is unique and wins over a name that happens to equal it.
    let key = match keys.iter().position(|key| key.id == id_or_name) {
        Some(exact) => keys.swap_remove(exact),
        None if keys.len() == 1 => keys.swap_remove(0),
        None if keys.is_empty() => return Err(KeysError::NotFound(id_or_name.to_string())),
        None => {
            let ids = keys.iter().map(|key| key.id.as_str()).collect::<Vec<_>>().join(", ");
            return Err(KeysError::Ambiguous { name: id_or_name.to_string(), ids });
        }
    };
    let webhook_secret = new_secret();
    let previous_signs_until = unix_ms().saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX));
    if !store.set_webhook_secret(&key.id, &webhook_secret, previous_signs_until).await? {
        return Err(KeysError::NotFound(id_or_name.to_string()));
    }
    Ok(RotatedSecret { id: key.id, name: key.name, webhook_secret, previous_signs_until })
}

/// 256 random bits: as strong as the HMAC-SHA256 it keys.
fn new_secret() -> String {
    format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()))
}

//! `pound keys create|list|revoke|rotate-secret`: API keys, stored hashed,
//! and their webhook secrets; each shown once.
//!
//! Every command names its store: `--store URL`, or the `store.url` of
//! `--config FILE`. Neither is an error, never a `./pound.db` made silently
//! wherever the operator happened to stand.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::unix_ms;
use crate::config::Config;
use crate::store::{ApiKey, Store, StoreError};

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
    /// Neither `--store` nor `--config` says which store.
    #[error(
        "no store given: pass --store sqlite://FILE or --store postgres://… (or set POUND_STORE), \
         or --config FILE (or POUND_CONFIG) to use its store.url"
    )]
    NoStore,
    /// The SQLite file to read does not exist (a typo would otherwise make an empty one).
    #[error("the store {0} does not exist; create a key first (pound keys create)")]
    NoSuchStore(String),
}

/// The store a key command works on: `--store`, else `--config`'s `store.url`.
pub fn store_url(store: Option<String>, config: Option<&Path>) -> Result<String, KeysError> {
    match (store, config) {
        (Some(url), _) => Ok(url),
        (None, Some(path)) => {
            Config::load(path).map(|config| config.store.url).map_err(|e| KeysError::Invalid(e.to_string()))
        }
        (None, None) => Err(KeysError::NoStore),
    }
}

/// Opens a store that must already exist: listing or changing keys in a
/// SQLite file just created by the typo in its path would report nothing
/// wrong.
async fn open_existing(url: &str) -> Result<Arc<dyn Store>, KeysError> {
    if is_missing_sqlite_file(url)? {
        return Err(KeysError::NoSuchStore(url.to_string()));
    }
    Ok(crate::store::open(url).await?)
}

/// Whether `url` names a SQLite file that does not exist (opening it would
/// create it).
pub fn is_missing_sqlite_file(url: &str) -> Result<bool, StoreError> {
    if !url.starts_with("sqlite:") {
        return Ok(false);
    }
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)?;
    let file = options.get_filename();
    Ok(file != Path::new(":memory:") && !file.exists())
}

/// A key as `keys list` shows it: everything but the key's hash and its
/// webhook secrets.
#[derive(Debug, serde::Serialize)]
pub struct ListedKey {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub admin: bool,
    /// Unix ms, like every time pound shows.
    pub created_at: i64,
    /// To the minute; `null` when never used.
    pub last_used_at: Option<i64>,
    /// `null` while the key works.
    pub revoked_at: Option<i64>,
}

impl From<ApiKey> for ListedKey {
    fn from(key: ApiKey) -> ListedKey {
        ListedKey {
            tenant: key.effective_tenant().to_string(),
            id: key.id,
            name: key.name,
            admin: key.admin,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// Every key in the store at `url`, oldest first, revoked ones included.
pub async fn list(url: &str) -> Result<Vec<ListedKey>, KeysError> {
    let store = open_existing(url).await?;
    Ok(store.list_api_keys().await?.into_iter().map(ListedKey::from).collect())
}

/// Revokes the key with this id, or the one working key with this name:
/// every node refuses it from its next request. The row stays, so the
/// webhooks it queued are still signed with its secret.
pub async fn revoke(url: &str, id_or_name: &str) -> Result<ListedKey, KeysError> {
    let store = open_existing(url).await?;
    let mut keys = store.api_keys_named(id_or_name).await?;
    // By name, a key revoked before does not make the name ambiguous.
    if !keys.iter().any(|key| key.id == id_or_name) {
        keys.retain(|key| key.revoked_at.is_none());
    }
    let key = one_key(keys, id_or_name)?;
    if !store.revoke_api_key(&key.id, unix_ms()).await? {
        return Err(KeysError::NotFound(id_or_name.to_string()));
    }
    let revoked = store.api_key_by_id(&key.id).await?.ok_or_else(|| KeysError::NotFound(id_or_name.to_string()))?;
    Ok(ListedKey::from(revoked))
}

/// The key named by `id_or_name` among `keys` (those whose id or name it
/// is): an id is unique and wins over a name that happens to equal it; a
/// name must be unambiguous.
fn one_key(mut keys: Vec<ApiKey>, id_or_name: &str) -> Result<ApiKey, KeysError> {
    match keys.iter().position(|key| key.id == id_or_name) {
        Some(exact) => Ok(keys.swap_remove(exact)),
        None if keys.len() == 1 => Ok(keys.swap_remove(0)),
        None if keys.is_empty() => Err(KeysError::NotFound(id_or_name.to_string())),
        None => {
            let ids = keys.iter().map(|key| key.id.as_str()).collect::<Vec<_>>().join(", ");
            Err(KeysError::Ambiguous { name: id_or_name.to_string(), ids })
        }
    }
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
    let store = open_existing(url).await?;
    let key = one_key(store.api_keys_named(id_or_name).await?, id_or_name)?;
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

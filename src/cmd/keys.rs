//! `pound keys create`: a new API key, stored hashed, shown once.

use sha2::{Digest, Sha256};

use crate::engine::unix_ms;
use crate::store::{ApiKey, StoreError};

/// The key as printed: the only time it is ever visible.
#[derive(Debug, serde::Serialize)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    pub key: String,
}

/// Creates a key named `name` in the store at `url`.
pub async fn create(url: &str, name: &str) -> Result<CreatedKey, StoreError> {
    let store = crate::store::open(url).await?;
    let key = format!("pk_{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let id = format!("k_{:016x}", rand::random::<u64>());
    store.insert_api_key(&ApiKey { id: id.clone(), name: name.to_string(), hash, created_at: unix_ms() }).await?;
    Ok(CreatedKey { id, name: name.to_string(), key })
}

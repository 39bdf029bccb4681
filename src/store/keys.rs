//! API keys: stored by hash, granted to tenants, their webhook secrets
//! rotated, revoked and marked as used.

use super::common::{ApiKeyRow, read_error};
use super::db::Pool;
use super::queries::fetch_api_key;
use super::{ApiKey, LAST_USED_EVERY_MS, StoreError};

pub(super) async fn insert(pool: &Pool, key: &ApiKey) -> Result<(), StoreError> {
    pool.write(
        "INSERT INTO api_keys (id, name, hash, created_at, tenant, admin, webhook_secret, \
         previous_webhook_secret, previous_secret_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            (&key.id).into(),
            (&key.name).into(),
            (&key.hash).into(),
            key.created_at.into(),
            (&key.tenant).into(),
            key.admin.into(),
            (&key.webhook_secret).into(),
            (&key.previous_webhook_secret).into(),
            key.previous_secret_until.into(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn by_hash(pool: &Pool, hash: &str) -> Result<Option<ApiKey>, StoreError> {
    fetch_api_key(&mut pool.acquire().await?.exec(), "SELECT * FROM api_keys WHERE hash = $1", hash).await
}

pub(super) async fn by_id(pool: &Pool, id: &str) -> Result<Option<ApiKey>, StoreError> {
    fetch_api_key(&mut pool.acquire().await?.exec(), "SELECT * FROM api_keys WHERE id = $1", id).await
}

pub(super) async fn named(pool: &Pool, id_or_name: &str) -> Result<Vec<ApiKey>, StoreError> {
    let rows: Vec<ApiKeyRow> = pool
        .acquire()
        .await?
        .exec()
        .fetch_all("SELECT * FROM api_keys WHERE id = $1 OR name = $1 ORDER BY created_at, id", &[id_or_name.into()])
        .await
        .map_err(read_error)?;
    Ok(rows.into_iter().map(ApiKey::from).collect())
}

pub(super) async fn list(pool: &Pool) -> Result<Vec<ApiKey>, StoreError> {
    let rows: Vec<ApiKeyRow> = pool
        .acquire()
        .await?
        .exec()
        .fetch_all("SELECT * FROM api_keys ORDER BY created_at, id", &[])
        .await
        .map_err(read_error)?;
    Ok(rows.into_iter().map(ApiKey::from).collect())
}

pub(super) async fn set_webhook_secret(
    pool: &Pool,
    id: &str,
    secret: &str,
    previous_until: i64,
) -> Result<bool, StoreError> {
    // One statement: the right-hand sides read the row as it was.
    let changed = pool
        .write(
            "UPDATE api_keys SET previous_webhook_secret = webhook_secret, previous_secret_until = $3, \
             webhook_secret = $2 WHERE id = $1",
            &[id.into(), secret.into(), previous_until.into()],
        )
        .await?;
    Ok(changed > 0)
}

pub(super) async fn revoke(pool: &Pool, id: &str, now: i64) -> Result<bool, StoreError> {
    let changed = pool
        .write("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1", &[id.into(), now.into()])
        .await?;
    Ok(changed > 0)
}

pub(super) async fn touch(pool: &Pool, id: &str, now: i64) -> Result<(), StoreError> {
    // The condition makes nodes that race at the minute's end write once.
    pool.write(
        "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)",
        &[id.into(), now.into(), now.saturating_sub(LAST_USED_EVERY_MS).into()],
    )
    .await?;
    Ok(())
}

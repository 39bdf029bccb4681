//! The webhook outbox: deliveries leased to a sender, then marked delivered,
//! retried later or given up.

use super::common::{WebhookRow, convert_all, read_error};
use super::db::Pool;
use super::{StoreError, WebhookDelivery};

pub(super) async fn due(pool: &Pool, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let until = now.saturating_add(lease_ms);
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let select = format!(
        "SELECT * FROM webhooks WHERE next_attempt_at <= $1 AND delivered_at IS NULL AND gave_up = FALSE \
         ORDER BY next_attempt_at, id LIMIT $2{}",
        db.dialect().lock_due()
    );
    let rows: Vec<WebhookRow> =
        db.fetch_all(&select, &[now.into(), i64::from(limit).into()]).await.map_err(read_error)?;
    let mut due = Vec::with_capacity(rows.len());
    for row in rows {
        db.execute("UPDATE webhooks SET next_attempt_at = $2 WHERE id = $1", &[row.id().into(), until.into()]).await?;
        match WebhookDelivery::try_from(row) {
            Ok(delivery) => due.push(WebhookDelivery { next_attempt_at: Some(until), ..delivery }),
            // Leased like the others, so it is reported once per lease rather
            // than on every scan, without holding up the rest.
            Err(error) => tracing::error!(%error, "corrupt webhook in the outbox; skipping it"),
        }
    }
    tx.commit().await?;
    Ok(due)
}

pub(super) async fn delivered(pool: &Pool, id: &str, now: i64) -> Result<(), StoreError> {
    // Delivery is at least once: a second report of the same success is a no-op.
    pool.write(
        "UPDATE webhooks SET delivered_at = $2, next_attempt_at = NULL, attempts = attempts + 1 \
         WHERE id = $1 AND delivered_at IS NULL",
        &[id.into(), now.into()],
    )
    .await?;
    Ok(())
}

pub(super) async fn failed(pool: &Pool, id: &str, error: &str, next_attempt_at: Option<i64>) -> Result<(), StoreError> {
    pool.write(
        "UPDATE webhooks SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3, gave_up = $4 \
         WHERE id = $1 AND delivered_at IS NULL AND gave_up = FALSE",
        &[id.into(), error.into(), next_attempt_at.into(), next_attempt_at.is_none().into()],
    )
    .await?;
    Ok(())
}

pub(super) async fn of_verification(pool: &Pool, verification_id: &str) -> Result<Vec<WebhookDelivery>, StoreError> {
    let rows: Vec<WebhookRow> = pool
        .acquire()
        .await?
        .exec()
        .fetch_all(
            "SELECT * FROM webhooks WHERE verification_id = $1 ORDER BY created_at, id",
            &[verification_id.into()],
        )
        .await
        .map_err(read_error)?;
    convert_all(rows)
}

//! The webhook outbox: deliveries leased to a sender, then marked delivered,
//! retried later or given up.

use super::audit::{self, AuditKind};
use super::common::{WebhookRow, convert_all, read_error};
use super::db::{Param, Pool};
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
    let sql = "UPDATE webhooks SET delivered_at = $2, next_attempt_at = NULL, attempts = attempts + 1 \
               WHERE id = $1 AND delivered_at IS NULL";
    record_change(pool, sql, &[id.into(), now.into()], id, "delivered", now).await
}

/// `now` only dates the audit entry of the failure.
pub(super) async fn failed(
    pool: &Pool,
    id: &str,
    error: &str,
    next_attempt_at: Option<i64>,
    now: i64,
) -> Result<(), StoreError> {
    let sql = "UPDATE webhooks SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3, gave_up = $4 \
               WHERE id = $1 AND delivered_at IS NULL AND gave_up = FALSE";
    let state = if next_attempt_at.is_some() { "retrying" } else { "gave_up" };
    let params: [Param<'_>; 4] = [id.into(), error.into(), next_attempt_at.into(), next_attempt_at.is_none().into()];
    record_change(pool, sql, &params, id, state, now).await
}

/// Runs `update` (of webhook `id`, without `RETURNING`) and, when it changed
/// the row, appends the webhook's new state to its verification's audit
/// chain in the same transaction.
async fn record_change(
    pool: &Pool,
    update: &str,
    params: &[Param<'_>],
    id: &str,
    state: &str,
    at: i64,
) -> Result<(), StoreError> {
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let sql = format!(
        "{update} RETURNING verification_id, (SELECT tenant FROM verifications WHERE verifications.id = webhooks.verification_id)"
    );
    let changed: Option<(String, String)> = db.fetch_optional(&sql, params).await.map_err(read_error)?;
    if let Some((verification_id, tenant)) = changed {
        audit::append_one(&mut db, &tenant, &verification_id, at, AuditKind::Webhook, audit::webhook(id, state))
            .await?;
    }
    tx.commit().await?;
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

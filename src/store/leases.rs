//! Work handed out under leases: claiming due verifications, renewing the
//! lease while a call runs, recording attempts, and ending a verification
//! (completed, requeued or expired). See the module docs of `store` for the
//! lease model and of `store::verifications` for why writes that read rows
//! back run in a transaction.

use std::collections::HashMap;

use super::audit::{self, AuditBatch, AuditKind};
use super::common::{VerificationRow, attempt_number, lease_not_held, read_error};
use super::db::{Exec, Param, Pool};
use super::queries::{close_open_attempt, notify_work, queue_completion_webhook};
use super::{AttemptResult, Backlog, Claimed, LeaseState, Status, StoreError, Verification};
use crate::evidence::KeyEvidence;
use crate::vocab::Outcome;

/// The condition on `verifications` of work not yet final.
const ACTIVE: &str = "status IN ('queued', 'dialing', 'ringing', 'answered')";

pub(super) async fn claim(
    pool: &Pool,
    node: &str,
    now: i64,
    lease_ms: i64,
    limit: u32,
) -> Result<Vec<Claimed>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let select = format!(
        "SELECT id, lease_owner FROM verifications \
         WHERE {ACTIVE} AND next_attempt_at <= $1 AND (lease_owner IS NULL OR lease_until < $1) \
         ORDER BY next_attempt_at, id LIMIT $2{}",
        db.dialect().lock_due()
    );
    let due: Vec<(String, Option<String>)> = db.fetch_all(&select, &[now.into(), i64::from(limit).into()]).await?;
    let mut claimed = Vec::with_capacity(due.len());
    // Leases are not audited (who runs a call is no fact of the
    // verification); an attempt a dead node left open is.
    let mut audit = AuditBatch::default();
    for (id, old_owner) in due {
        let interrupted_attempt = match &old_owner {
            Some(old_owner) => close_open_attempt(&mut db, &id, old_owner, now, &mut audit).await?,
            None => None,
        };
        let row = db
            .fetch_one::<VerificationRow>(
                "UPDATE verifications SET lease_owner = $2, lease_until = $3, updated_at = $4 WHERE id = $1 \
                 RETURNING *",
                &[(&id).into(), node.into(), now.saturating_add(lease_ms).into(), now.into()],
            )
            .await
            .map_err(read_error);
        match row.and_then(Verification::try_from) {
            Ok(verification) => claimed.push(Claimed { verification, interrupted_attempt }),
            // One unreadable row must not stall the whole queue: it stays
            // leased (so it is not retried at once) and is reported.
            Err(StoreError::Corrupt(error)) => {
                tracing::error!(verification_id = %id, %error, "claimed a corrupt verification; skipping it");
            }
            Err(error) => return Err(error),
        }
    }
    audit.write(&mut db).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// How many leases one renewal statement names. A shorter list is padded
/// with its last id (a repeat in `IN` changes nothing), so that every
/// renewal is the same statement text, prepared once per connection.
const RENEWAL_CHUNK: usize = 128;

/// Extends each of `ids` that `node` still holds to `until`: one transaction
/// (one commit) for them all, a statement per [`RENEWAL_CHUNK`] of them.
pub(super) async fn renew(pool: &Pool, ids: &[String], node: &str, until: i64) -> Result<Vec<LeaseState>, StoreError> {
    let Some(last) = ids.last() else { return Ok(Vec::new()) };
    let list = (3..3 + RENEWAL_CHUNK).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "UPDATE verifications SET lease_until = $2 WHERE lease_owner = $1 AND {ACTIVE} AND id IN ({list}) \
         RETURNING id, cancel_requested"
    );
    // A transaction because of RETURNING, and so that the chunks share one commit.
    let mut tx = pool.begin_write().await?;
    let mut renewed: HashMap<String, bool> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(RENEWAL_CHUNK) {
        let mut params: Vec<Param<'_>> = vec![node.into(), until.into()];
        params.extend(chunk.iter().chain(std::iter::repeat(last)).take(RENEWAL_CHUNK).map(Param::from));
        let rows: Vec<(String, bool)> = tx.exec().fetch_all(&sql, &params).await.map_err(read_error)?;
        renewed.extend(rows);
    }
    tx.commit().await?;
    Ok(ids
        .iter()
        .map(|id| match renewed.get(id) {
            None => LeaseState::Lost,
            Some(true) => LeaseState::CancelRequested,
            Some(false) => LeaseState::Held,
        })
        .collect())
}

pub(super) async fn set_status(pool: &Pool, id: &str, node: &str, status: Status, now: i64) -> Result<(), StoreError> {
    if status.is_final() {
        // Final statuses carry an outcome and side effects: only `complete` sets them.
        tracing::warn!(verification_id = id, status = status.as_str(), "set_status ignored a final status");
        return Ok(());
    }
    // A transaction (rather than one statement): its audit entry goes with it.
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let tenant: Option<(String,)> = db
        .fetch_optional(
            &format!(
                "UPDATE verifications SET status = $3, updated_at = $4 WHERE id = $1 AND lease_owner = $2 AND {ACTIVE} \
                 RETURNING tenant"
            ),
            &[id.into(), node.into(), status.as_str().into(), now.into()],
        )
        .await
        .map_err(read_error)?;
    let Some((tenant,)) = tenant else {
        tracing::warn!(verification_id = id, node, "set_status without the lease; nothing changed");
        return Ok(());
    };
    audit::append_one(&mut db, &tenant, id, now, AuditKind::Status, audit::status(status)).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn start_attempt(
    pool: &Pool,
    id: &str,
    node: &str,
    call_id: &str,
    now: i64,
) -> Result<u32, StoreError> {
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let count: Option<(i64, String)> = db
        .fetch_optional(
            &format!(
                "UPDATE verifications SET attempt_count = attempt_count + 1, status = 'dialing', updated_at = $3 \
                 WHERE id = $1 AND lease_owner = $2 AND {ACTIVE} RETURNING attempt_count, tenant"
            ),
            &[id.into(), node.into(), now.into()],
        )
        .await
        .map_err(read_error)?;
    let (number, tenant) = count.ok_or_else(|| lease_not_held(id, node))?;
    db.execute(
        "INSERT INTO attempts (verification_id, number, node, call_id, started_at, digits) \
         VALUES ($1, $2, $3, $4, $5, '')",
        &[id.into(), number.into(), node.into(), call_id.into(), now.into()],
    )
    .await?;
    let number = attempt_number(id, number)?;
    let facts = audit::AuditFacts { status: Some(Status::Dialing), ..audit::attempt(number, None, None, None) };
    audit::append_one(&mut db, &tenant, id, now, AuditKind::Attempt, facts).await?;
    tx.commit().await?;
    Ok(number)
}

/// Writes `result` on the open attempt `number` of `id`: what decided it,
/// and with `closing` its end too (`ended_at`, `detail`), recorded in
/// `audit` at `at`. An attempt that has ended is left alone. Returns whether
/// it was open.
async fn write_open_attempt(
    db: &mut Exec<'_>,
    id: &str,
    number: u32,
    result: &AttemptResult,
    closing: bool,
    at: i64,
    audit: &mut AuditBatch,
) -> Result<bool, StoreError> {
    let evidence = evidence_json(&result.evidence);
    let mut params: Vec<Param<'_>> = vec![
        id.into(),
        i64::from(number).into(),
        result.answered_at.into(),
        result.digit_at.into(),
        result.sip_status.map(i64::from).into(),
        result.dtmf_source.map(|source| source.as_str()).into(),
        (&result.digits).into(),
        result.outcome.as_str().into(),
        (&evidence).into(),
    ];
    let ending = if closing {
        params.extend::<[Param<'_>; 2]>([result.ended_at.into(), (&result.detail).into()]);
        ", ended_at = $10, detail = $11"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE attempts SET answered_at = $3, digit_at = $4, sip_status = $5, dtmf_source = $6, \
         digits = $7, outcome = $8, evidence = $9{ending} WHERE verification_id = $1 AND number = $2 \
         AND ended_at IS NULL \
         RETURNING (SELECT tenant FROM verifications WHERE id = $1)"
    );
    let tenant: Option<(String,)> = db.fetch_optional(&sql, &params).await.map_err(read_error)?;
    let Some((tenant,)) = tenant else { return Ok(false) };
    let facts = audit::attempt(number, Some(result.outcome.as_str()), result.sip_status, result.dtmf_source);
    audit.record(&tenant, id, at, AuditKind::Attempt, facts);
    Ok(true)
}

/// The attempt's evidence as stored: NULL when no key was accepted.
fn evidence_json(evidence: &[KeyEvidence]) -> Option<String> {
    // Plain strings, integers and finite floats: serialising cannot fail.
    (!evidence.is_empty()).then(|| serde_json::to_string(evidence).unwrap_or_default())
}

pub(super) async fn finish_attempt(
    pool: &Pool,
    id: &str,
    number: u32,
    result: &AttemptResult,
) -> Result<(), StoreError> {
    // An attempt ends once: if a claimer already closed it as interrupted
    // (its node was presumed dead), the late report does not rewrite it.
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let mut audit = AuditBatch::default();
    let open = write_open_attempt(&mut db, id, number, result, true, result.ended_at, &mut audit).await?;
    audit.write(&mut db).await?;
    tx.commit().await?;
    if !open {
        tracing::warn!(verification_id = id, attempt = number, "finish_attempt found no open attempt");
    }
    Ok(())
}

/// Completes the verification; with `decided`, the open attempt's decision
/// is written first in the same transaction (see `Store::complete_decided`).
pub(super) async fn complete(
    pool: &Pool,
    id: &str,
    node: &str,
    outcome: Outcome,
    now: i64,
    decided: Option<(u32, &AttemptResult)>,
) -> Result<Verification, StoreError> {
    let status = if outcome == Outcome::Canceled { Status::Canceled } else { Status::Completed };
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let mut audit = AuditBatch::default();
    if let Some((number, result)) = decided {
        write_open_attempt(&mut db, id, number, result, false, now, &mut audit).await?;
    }
    let row: Option<VerificationRow> = db
        .fetch_optional(
            &format!(
                "UPDATE verifications SET status = $3, outcome = $4, completed_at = $5, updated_at = $5, \
                 lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2 AND {ACTIVE} RETURNING *"
            ),
            &[id.into(), node.into(), status.as_str().into(), outcome.as_str().into(), now.into()],
        )
        .await
        .map_err(read_error)?;
    let verification = Verification::try_from(row.ok_or_else(|| lease_not_held(id, node))?)?;
    if outcome == Outcome::Verified {
        db.execute(
            "INSERT INTO registrations (user_name, phone, method, verified_at, verification_id, tenant) \
             VALUES ($1, $2, 'voice', $3, $4, $5) \
             ON CONFLICT (tenant, user_name, phone) DO UPDATE SET method = excluded.method, \
             verified_at = excluded.verified_at, verification_id = excluded.verification_id",
            &[
                (&verification.user).into(),
                (&verification.phone).into(),
                now.into(),
                id.into(),
                (&verification.tenant).into(),
            ],
        )
        .await?;
    }
    audit.record(&verification.tenant, id, now, AuditKind::Decision, audit::decision(status, Some(outcome)));
    queue_completion_webhook(&mut db, &verification, now, &mut audit).await?;
    audit.write(&mut db).await?;
    tx.commit().await?;
    Ok(verification)
}

pub(super) async fn requeue(
    pool: &Pool,
    id: &str,
    node: &str,
    next_attempt_at: i64,
    now: i64,
) -> Result<(), StoreError> {
    // Back to `queued`: no call runs until the next attempt is claimed. A
    // transaction, so that the wake-up for work due now goes out with it.
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let tenant: Option<(String,)> = db
        .fetch_optional(
            &format!(
                "UPDATE verifications SET status = 'queued', next_attempt_at = $3, updated_at = $4, \
                 lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2 AND {ACTIVE} \
                 RETURNING tenant"
            ),
            &[id.into(), node.into(), next_attempt_at.into(), now.into()],
        )
        .await
        .map_err(read_error)?;
    match tenant {
        None => tracing::warn!(verification_id = id, node, "requeue without the lease; nothing changed"),
        Some((tenant,)) => {
            audit::append_one(&mut db, &tenant, id, now, AuditKind::Status, audit::status(Status::Queued)).await?;
            if next_attempt_at <= now {
                notify_work(&mut db).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn expire_overdue(
    pool: &Pool,
    created_before: i64,
    now: i64,
    limit: u32,
) -> Result<Vec<Verification>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // The engine sweeps before every claim, and usually nothing is overdue: a
    // plain read says so without taking the write lock (SQLite's one writer,
    // PostgreSQL row locks) on every wake-up.
    let overdue = format!(
        "SELECT id, lease_owner FROM verifications \
         WHERE {ACTIVE} AND created_at <= $1 AND (lease_owner IS NULL OR lease_until < $2)"
    );
    let any: Option<(String, Option<String>)> = pool
        .acquire()
        .await?
        .exec()
        .fetch_optional(&format!("{overdue} LIMIT 1"), &[created_before.into(), now.into()])
        .await?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let select = format!("{overdue} ORDER BY created_at, id LIMIT $3{}", db.dialect().lock_due());
    let overdue: Vec<(String, Option<String>)> =
        db.fetch_all(&select, &[created_before.into(), now.into(), i64::from(limit).into()]).await?;
    let mut expired = Vec::with_capacity(overdue.len());
    let mut audit = AuditBatch::default();
    for (id, old_owner) in overdue {
        // The guard is checked again by the write itself: a sweep that read
        // the row before another one expired it (or a node claimed it)
        // changes nothing.
        let row: Option<VerificationRow> = db
            .fetch_optional(
                &format!(
                    "UPDATE verifications SET status = 'expired', completed_at = $2, updated_at = $2, \
                     lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND {ACTIVE} AND (lease_owner IS NULL OR lease_until < $2) RETURNING *"
                ),
                &[(&id).into(), now.into()],
            )
            .await
            .map_err(read_error)?;
        let Some(row) = row else { continue };
        if let Some(old_owner) = &old_owner {
            close_open_attempt(&mut db, &id, old_owner, now, &mut audit).await?;
        }
        let verification = Verification::try_from(row)?;
        audit.record(&verification.tenant, &id, now, AuditKind::Decision, audit::decision(Status::Expired, None));
        queue_completion_webhook(&mut db, &verification, now, &mut audit).await?;
        expired.push(verification);
    }
    audit.write(&mut db).await?;
    tx.commit().await?;
    Ok(expired)
}

/// What waits at `now` (issue 11's operations metrics).
pub(super) async fn backlog(pool: &Pool, now: i64) -> Result<Backlog, StoreError> {
    // The same conditions as `claim` and `due_webhooks`, on the same indexes
    // (`verifications_due`, `webhooks_due`).
    let (queue_depth, webhooks_pending): (i64, i64) = pool
        .acquire()
        .await?
        .exec()
        .fetch_one(
            &format!(
                "SELECT \
                 (SELECT COUNT(*) FROM verifications \
                  WHERE {ACTIVE} AND next_attempt_at <= $1 AND (lease_owner IS NULL OR lease_until < $1)), \
                 (SELECT COUNT(*) FROM webhooks \
                  WHERE next_attempt_at IS NOT NULL AND delivered_at IS NULL AND gave_up = FALSE)"
            ),
            &[now.into()],
        )
        .await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Backlog { queue_depth: count(queue_depth), webhooks_pending: count(webhooks_pending) })
}

//! Creating, reading, listing and canceling verifications, and the
//! registrations they leave.
//!
//! A write whose rows are read back (`RETURNING`) runs in a transaction with
//! an explicit commit, never as a lone statement on the pool. On SQLite a
//! lone statement commits when it is stepped to its end or reset, but sqlx
//! stops stepping once it has the row it fetched and ignores the error of
//! the reset: a commit that fails there (a full disk) would be reported as
//! success with a row that was never stored. The same holds in `leases`.

use super::admission;
use super::audit::{self, AuditBatch, AuditEntry, AuditFacts, AuditKind};
use super::common::{RegistrationRow, VerificationRow, convert_all, listing_sql, read_error};
use super::db::Pool;
use super::queries::{
    close_open_attempt, fetch_attempts, fetch_verification, insert_verification, notify_work, queue_completion_webhook,
};
use super::velocity::{Admission, VelocityCheck, Verdict};
use super::{
    Attempt, CancelResult, NewVerification, Registration, Scope, Status, StoreError, Verification, VerificationQuery,
};
use crate::vocab::Outcome;

pub(super) async fn create(pool: &Pool, new: &NewVerification) -> Result<(Verification, bool), StoreError> {
    // In a transaction of its own because of RETURNING (see the module
    // docs): the caller answers 202 only after the commit said the row is
    // stored.
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    let mut audit = AuditBatch::default();
    let (verification, created) = insert_verification(&mut db, new, &mut audit).await?;
    if created {
        notify_work(&mut db).await?;
    }
    tx.commit_audited(audit).await?;
    Ok((verification, created))
}

pub(super) async fn admit(pool: &Pool, new: &NewVerification, check: &VelocityCheck) -> Result<Admission, StoreError> {
    let mut tx = pool.begin_admission().await?;
    let mut db = tx.exec();
    let mut audit = AuditBatch::default();
    let (verdict, open_breakers) = admission::admit(&mut db, new, check, &pool.velocity_pruned_at, &mut audit).await?;
    if matches!(verdict, Verdict::Admitted { created: true, .. }) {
        notify_work(&mut db).await?;
    }
    // A refusal leaves nothing behind but the breaker it tripped.
    if matches!(verdict, Verdict::Admitted { .. } | Verdict::Paused { tripped: true, .. }) {
        tx.commit_audited(audit).await?;
    }
    Ok(Admission { verdict, open_breakers })
}

pub(super) async fn get(pool: &Pool, id: &str) -> Result<Option<Verification>, StoreError> {
    fetch_verification(&mut pool.acquire().await?.exec(), id).await
}

pub(super) async fn attempts(pool: &Pool, verification_id: &str) -> Result<Vec<Attempt>, StoreError> {
    fetch_attempts(&mut pool.acquire().await?.exec(), verification_id).await
}

pub(super) async fn cancel(pool: &Pool, id: &str, now: i64) -> Result<Option<CancelResult>, StoreError> {
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    // Locked until commit (a row lock on PostgreSQL, the write lock on
    // SQLite): a claim or a completion of this row waits for the decision
    // instead of racing it.
    let select = format!("SELECT * FROM verifications WHERE id = $1{}", db.dialect().lock_row());
    let current: Option<VerificationRow> = db.fetch_optional(&select, &[id.into()]).await.map_err(read_error)?;
    let Some(current) = current.map(Verification::try_from).transpose()? else {
        return Ok(None);
    };
    if current.status.is_final() {
        return Ok(Some(CancelResult::AlreadyFinal(current)));
    }
    if current.lease_until.is_some_and(|until| until >= now) {
        // A live node runs the call; it sees the flag when it renews.
        let row: VerificationRow = db
            .fetch_one(
                "UPDATE verifications SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1 RETURNING *",
                &[id.into(), now.into()],
            )
            .await
            .map_err(read_error)?;
        let requested = Verification::try_from(row)?;
        audit::append_one(&mut db, &requested.tenant, id, now, AuditKind::CancelRequested, AuditFacts::default())
            .await?;
        tx.commit().await?;
        return Ok(Some(CancelResult::Requested(requested)));
    }
    // Nobody runs it: queued, or its node died. A dead node's open attempt is
    // closed so that the final record has no attempt still running.
    let mut audit = AuditBatch::default();
    if let Some(old_owner) = &current.lease_owner {
        close_open_attempt(&mut db, id, old_owner, now, &mut audit).await?;
    }
    let row: VerificationRow = db
        .fetch_one(
            "UPDATE verifications SET status = 'canceled', outcome = 'canceled', completed_at = $2, \
             updated_at = $2, lease_owner = NULL, lease_until = NULL WHERE id = $1 RETURNING *",
            &[id.into(), now.into()],
        )
        .await
        .map_err(read_error)?;
    let canceled = Verification::try_from(row)?;
    let decided = audit::decision(Status::Canceled, Some(Outcome::Canceled));
    audit.record(&canceled.tenant, id, now, AuditKind::Decision, decided);
    queue_completion_webhook(&mut db, &canceled, now, &mut audit).await?;
    audit.write(&mut db).await?;
    tx.commit().await?;
    Ok(Some(CancelResult::Canceled(canceled)))
}

pub(super) async fn audit_entries(pool: &Pool, tenant: &str, id: &str) -> Result<Vec<AuditEntry>, StoreError> {
    audit::entries_of(&mut pool.acquire().await?.exec(), tenant, id).await
}

pub(super) async fn list(pool: &Pool, query: &VerificationQuery) -> Result<Vec<Verification>, StoreError> {
    let (sql, params) = listing_sql(query);
    let rows: Vec<VerificationRow> = pool.acquire().await?.exec().fetch_all(&sql, &params).await.map_err(read_error)?;
    convert_all(rows)
}

pub(super) async fn registrations(pool: &Pool, user: &str, scope: &Scope) -> Result<Vec<Registration>, StoreError> {
    let rows: Vec<RegistrationRow> = pool
        .acquire()
        .await?
        .exec()
        .fetch_all(
            "SELECT * FROM registrations WHERE user_name = $1 AND ($2 IS NULL OR tenant = $2) \
             ORDER BY verified_at DESC, phone, tenant",
            &[user.into(), scope.tenant().into()],
        )
        .await
        .map_err(read_error)?;
    Ok(rows.into_iter().map(Registration::from).collect())
}

pub(super) async fn count_created_since(pool: &Pool, api_key_id: &str, since: i64) -> Result<u64, StoreError> {
    let (count,): (i64,) = pool
        .acquire()
        .await?
        .exec()
        .fetch_one(
            "SELECT COUNT(*) FROM verifications WHERE api_key_id = $1 AND created_at >= $2",
            &[api_key_id.into(), since.into()],
        )
        .await?;
    // COUNT(*) is never negative.
    Ok(count.unsigned_abs())
}

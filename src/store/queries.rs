//! The statements that several store operations run on one connection,
//! usually inside their transaction.

use super::audit::{self, AuditBatch, AuditFacts, AuditKind};
use super::common::{
    ApiKeyRow, AttemptRow, INTERRUPTED, VerificationRow, attempt_number, completion_webhook, convert_all,
    interrupted_detail, read_error,
};
use super::db::{Exec, WORK_CHANNEL};
use super::{ApiKey, Attempt, NewVerification, Status, StoreError, Verification};
use crate::code::Code;
use crate::vocab::DtmfSource;

/// The verification `id`, if there is one.
pub(super) async fn fetch_verification(db: &mut Exec<'_>, id: &str) -> Result<Option<Verification>, StoreError> {
    let row: Option<VerificationRow> =
        db.fetch_optional("SELECT * FROM verifications WHERE id = $1", &[id.into()]).await.map_err(read_error)?;
    row.map(Verification::try_from).transpose()
}

/// The API key `sql` selects by a unique column bound to `$1`.
pub(super) async fn fetch_api_key(
    db: &mut Exec<'_>,
    sql: &'static str,
    value: &str,
) -> Result<Option<ApiKey>, StoreError> {
    let row: Option<ApiKeyRow> = db.fetch_optional(sql, &[value.into()]).await.map_err(read_error)?;
    Ok(row.map(ApiKey::from))
}

/// Every attempt of verification `id`, first first.
pub(super) async fn fetch_attempts(db: &mut Exec<'_>, id: &str) -> Result<Vec<Attempt>, StoreError> {
    let rows: Vec<AttemptRow> = db
        .fetch_all("SELECT * FROM attempts WHERE verification_id = $1 ORDER BY number", &[id.into()])
        .await
        .map_err(read_error)?;
    convert_all(rows)
}

/// Creates a verification, recording its entry in `audit`, or with an
/// idempotency key already used by the same API key returns the first
/// record and `false` ([`StoreError::IdempotencyConflict`] if the request
/// differs).
pub(super) async fn insert_verification(
    db: &mut Exec<'_>,
    new: &NewVerification,
    audit: &mut AuditBatch,
) -> Result<(Verification, bool), StoreError> {
    // The unique constraint decides between concurrent creates with one key:
    // exactly one inserts, the others insert nothing and read the winner's
    // row below.
    let inserted: Option<VerificationRow> = db
        .fetch_optional(
            "INSERT INTO verifications (id, api_key_id, phone, user_name, dialplan, callback_url, status, \
             attempt_count, max_attempts, next_attempt_at, cancel_requested, idempotency_key, request_hash, \
             created_at, updated_at, tenant, code, locale) \
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', 0, $7, $8, FALSE, $9, $10, $8, $8, $11, $12, $13) \
             ON CONFLICT (api_key_id, idempotency_key) DO NOTHING RETURNING *",
            &[
                (&new.id).into(),
                (&new.api_key_id).into(),
                (&new.phone).into(),
                (&new.user).into(),
                (&new.dialplan).into(),
                (&new.callback_url).into(),
                i64::from(new.max_attempts).into(),
                new.created_at.into(),
                (&new.idempotency_key).into(),
                (&new.request_hash).into(),
                (&new.tenant).into(),
                new.code.as_ref().map(Code::digits).into(),
                (&new.locale).into(),
            ],
        )
        .await
        .map_err(read_error)?;
    if let Some(row) = inserted {
        let created = Verification::try_from(row)?;
        let facts = AuditFacts {
            status: Some(Status::Queued),
            phone: Some(created.phone.clone()),
            user: Some(created.user.clone()),
            ..AuditFacts::default()
        };
        audit.record(&created.tenant, &created.id, created.created_at, AuditKind::Created, facts);
        return Ok((created, true));
    }
    // Verifications are never deleted, so the row that conflicted is there.
    let existing = first_request(db, new).await?.ok_or_else(|| {
        StoreError::Corrupt(format!("idempotency key {:?} conflicted but no row holds it", new.idempotency_key))
    })?;
    Ok((existing, false))
}

/// The verification created earlier with `new`'s API key and idempotency
/// key, if any; [`StoreError::IdempotencyConflict`] if that request had
/// another body.
pub(super) async fn first_request(
    db: &mut Exec<'_>,
    new: &NewVerification,
) -> Result<Option<Verification>, StoreError> {
    if new.idempotency_key.is_none() {
        return Ok(None);
    }
    let existing: Option<VerificationRow> = db
        .fetch_optional(
            "SELECT * FROM verifications WHERE api_key_id = $1 AND idempotency_key = $2",
            &[(&new.api_key_id).into(), (&new.idempotency_key).into()],
        )
        .await
        .map_err(read_error)?;
    match existing {
        Some(row) if !row.same_request(&new.request_hash) => Err(StoreError::IdempotencyConflict),
        Some(row) => Ok(Some(row.try_into()?)),
        None => Ok(None),
    }
}

/// Closes the attempt a node left open when its lease ran out, recording it
/// in `audit`; returns its number.
pub(super) async fn close_open_attempt(
    db: &mut Exec<'_>,
    id: &str,
    old_owner: &str,
    now: i64,
    audit: &mut AuditBatch,
) -> Result<Option<u32>, StoreError> {
    let detail = interrupted_detail(old_owner);
    let closed: Vec<(i64, Option<i64>, Option<String>, String)> = db
        .fetch_all(
            "UPDATE attempts SET ended_at = $2, outcome = $3, detail = $4 \
             WHERE verification_id = $1 AND ended_at IS NULL \
             RETURNING number, sip_status, dtmf_source, (SELECT tenant FROM verifications WHERE id = $1)",
            &[id.into(), now.into(), INTERRUPTED.into(), detail.as_str().into()],
        )
        .await
        .map_err(read_error)?;
    let mut latest = None;
    for (number, sip_status, dtmf_source, tenant) in closed {
        let number = attempt_number(id, number)?;
        let facts = attempt_facts(id, number, Some(INTERRUPTED), sip_status, dtmf_source.as_deref())?;
        audit.record(&tenant, id, now, AuditKind::Attempt, facts);
        // At most one attempt is open at a time; the latest is the one to report.
        latest = latest.max(Some(number));
    }
    Ok(latest)
}

/// The audit facts of attempt `number` of `id` from its columns.
pub(super) fn attempt_facts(
    id: &str,
    number: u32,
    outcome: Option<&str>,
    sip_status: Option<i64>,
    dtmf_source: Option<&str>,
) -> Result<AuditFacts, StoreError> {
    let owner = format!("attempt {number} of verification {id}");
    let sip_status = sip_status
        .map(|status| u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("{owner}: sip_status {status}"))))
        .transpose()?;
    let dtmf_source = dtmf_source
        .map(|name| {
            DtmfSource::parse(name).ok_or_else(|| StoreError::Corrupt(format!("{owner}: DTMF source {name:?}")))
        })
        .transpose()?;
    Ok(audit::attempt(number, outcome, sip_status, dtmf_source))
}

/// Puts the `verification.completed` webhook of a final verification in the
/// outbox, recorded in `audit`.
pub(super) async fn queue_completion_webhook(
    db: &mut Exec<'_>,
    verification: &Verification,
    now: i64,
    audit: &mut AuditBatch,
) -> Result<(), StoreError> {
    if verification.callback_url.is_none() {
        return Ok(());
    }
    let attempts = fetch_attempts(db, &verification.id).await?;
    let Some(hook) = completion_webhook(verification, attempts)? else {
        return Ok(());
    };
    db.execute(
        "INSERT INTO webhooks (id, verification_id, url, payload, attempts, next_attempt_at, gave_up, created_at) \
         VALUES ($1, $2, $3, $4, 0, $5, FALSE, $5)",
        &[(&hook.id).into(), (&verification.id).into(), (&hook.url).into(), (&hook.payload).into(), now.into()],
    )
    .await?;
    audit.record(&verification.tenant, &verification.id, now, AuditKind::Webhook, audit::webhook(&hook.id, "queued"));
    Ok(())
}

/// Wakes the nodes waiting for work ([`Store::work_signals`](super::Store::work_signals))
/// when the transaction `db` is in commits: a verification became due now.
/// PostgreSQL delivers a notification only on commit, and once however
/// often one transaction sends it. SQLite serves one node, which its own
/// API wakes.
pub(super) async fn notify_work(db: &mut Exec<'_>) -> Result<(), StoreError> {
    if let Some(sql) = db.dialect().notify_work() {
        db.execute(sql, &[WORK_CHANNEL.into()]).await?;
    }
    Ok(())
}

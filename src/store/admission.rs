//! The SQL of [`Store::admit_verification`](super::Store::admit_verification):
//! the velocity limits, the prefix breaker and the insert, on one connection
//! inside one write transaction (see `store::velocity` for the model).
//!
//! Each check reads its scope's totals (`velocity_scopes`, kept by triggers)
//! and takes off what lies between the horizon and its own window, so its
//! cost does not grow with the traffic it counts: every window that is the
//! longest (the hourly limits) has nothing to take off, and the breaker's
//! numbers are pruned at its own window.
//!
//! Atomic across nodes: the transaction first locks the single
//! `velocity_lock` row (`FOR UPDATE` on PostgreSQL; on SQLite `BEGIN
//! IMMEDIATE` already holds the database's write lock), so the counts it
//! reads cannot change before its own insert commits. Without that, two
//! nodes counting at once under READ COMMITTED each see room for one more.

use super::db::Exec;
use super::queries::{first_request, insert_verification};
use super::velocity::{PrefixBreaker, VelocityCheck, VelocityLimit, Verdict};
use super::{NewVerification, StoreError, Verification};

/// Decides on `new` under `check`. The caller commits when the verdict is
/// `Admitted` or a trip, and rolls back otherwise.
pub(super) async fn admit(
    db: &mut Exec<'_>,
    new: &NewVerification,
    check: &VelocityCheck,
) -> Result<(Verdict, u64), StoreError> {
    let lock = format!("SELECT id FROM velocity_lock WHERE id = 1{}", db.dialect().lock_row());
    db.execute(&lock, &[]).await?;
    db.execute("DELETE FROM velocity_events WHERE at <= $1", &[check.horizon().into()]).await?;
    db.execute("DELETE FROM velocity_numbers WHERE last_at <= $1", &[numbers_horizon(check).into()]).await?;
    let verdict = decide(db, new, check).await?;
    let (open,): (i64,) =
        db.fetch_one("SELECT COUNT(*) FROM velocity_breakers WHERE open_until > $1", &[check.now.into()]).await?;
    // COUNT(*) is never negative.
    Ok((verdict, open.unsigned_abs()))
}

async fn decide(db: &mut Exec<'_>, new: &NewVerification, check: &VelocityCheck) -> Result<Verdict, StoreError> {
    // A retry is answered before the limits, which the first request itself
    // may have filled.
    if let Some(verification) = first_request(db, new).await? {
        return Ok(Verdict::Admitted { verification: Box::new(verification), created: false });
    }
    if let Some(breaker) = &check.breaker {
        let open_until: Option<(i64,)> = db
            .fetch_optional("SELECT open_until FROM velocity_breakers WHERE scope = $1", &[(&breaker.scope).into()])
            .await?;
        if let Some((until,)) = open_until.filter(|(until,)| *until > check.now) {
            return Ok(Verdict::Paused { scope: breaker.scope.clone(), until, tripped: false });
        }
    }
    for limit in &check.limits {
        if let Some(retry_at) = full(db, limit, check.now).await? {
            return Ok(Verdict::Limited { kind: limit.kind, max: limit.max, retry_at });
        }
    }
    if let Some(breaker) = &check.breaker
        && let Some(until) = trip(db, breaker, &new.phone, check.now).await?
    {
        return Ok(Verdict::Paused { scope: breaker.scope.clone(), until, tripped: true });
    }
    let (verification, created) = insert_verification(db, new).await?;
    if created {
        record(db, &verification, check).await?;
    }
    Ok(Verdict::Admitted { verification: Box::new(verification), created })
}

/// `None` while the limit has room; when it is full, `Some` of when its
/// oldest counted event leaves the window (`None` inside when `max` is 0: no
/// time brings room).
async fn full(db: &mut Exec<'_>, limit: &VelocityLimit, now: i64) -> Result<Option<Option<i64>>, StoreError> {
    let since = now.saturating_sub(limit.window_ms);
    let (count,): (i64,) = db
        .fetch_one(
            "SELECT COALESCE((SELECT events FROM velocity_scopes WHERE scope = $1), 0) \
             - (SELECT COUNT(*) FROM velocity_events WHERE scope = $1 AND at <= $2)",
            &[(&limit.scope).into(), since.into()],
        )
        .await?;
    let max = i64::from(limit.max);
    if count < max {
        return Ok(None);
    }
    if max == 0 {
        return Ok(Some(None));
    }
    // Room comes back when all but max - 1 of the counted events have left:
    // the (count - max + 1)-th oldest is the one to wait for.
    let oldest: Option<(i64,)> = db
        .fetch_optional(
            "SELECT at FROM velocity_events WHERE scope = $1 AND at > $2 ORDER BY at LIMIT 1 OFFSET $3",
            &[(&limit.scope).into(), since.into(), (count - max).into()],
        )
        .await?;
    Ok(Some(oldest.map(|(at,)| at.saturating_add(limit.window_ms))))
}

/// Trips the breaker when `phone` would be one distinct number too many in
/// its scope; returns until when it is open.
async fn trip(db: &mut Exec<'_>, breaker: &PrefixBreaker, phone: &str, now: i64) -> Result<Option<i64>, StoreError> {
    // The scope's numbers, less those last admitted before the window and
    // `phone` itself.
    let (others,): (i64,) = db
        .fetch_one(
            "SELECT COALESCE((SELECT numbers FROM velocity_scopes WHERE scope = $1), 0) \
             - (SELECT COUNT(*) FROM velocity_numbers WHERE scope = $1 AND last_at <= $2) \
             - (SELECT COUNT(*) FROM velocity_numbers WHERE scope = $1 AND phone = $3 AND last_at > $2)",
            &[(&breaker.scope).into(), now.saturating_sub(breaker.window_ms).into(), phone.into()],
        )
        .await?;
    if others < i64::from(breaker.max_numbers) {
        return Ok(None);
    }
    let until = now.saturating_add(breaker.pause_ms);
    db.execute(
        "INSERT INTO velocity_breakers (scope, tripped_at, open_until) VALUES ($1, $2, $3) \
         ON CONFLICT (scope) DO UPDATE SET tripped_at = excluded.tripped_at, open_until = excluded.open_until",
        &[(&breaker.scope).into(), now.into(), until.into()],
    )
    .await?;
    Ok(Some(until))
}

/// Numbers last admitted at or before this count in no breaker's window and
/// can be deleted. Without a breaker, the events' horizon: numbers recorded
/// under another check then still leave.
fn numbers_horizon(check: &VelocityCheck) -> i64 {
    check.breaker.as_ref().map_or_else(|| check.horizon(), |b| check.now.saturating_sub(b.window_ms))
}

/// Counts an admitted verification in every scope of `check`, and its
/// number in the breaker's scope.
async fn record(db: &mut Exec<'_>, verification: &Verification, check: &VelocityCheck) -> Result<(), StoreError> {
    for scope in check.scopes() {
        db.execute(
            "INSERT INTO velocity_events (scope, at, phone, verification_id) VALUES ($1, $2, $3, $4)",
            &[scope.into(), check.now.into(), (&verification.phone).into(), (&verification.id).into()],
        )
        .await?;
    }
    if let Some(breaker) = &check.breaker {
        // The latest time stays: requests of several nodes need not come in
        // the order of their clocks.
        db.execute(
            "INSERT INTO velocity_numbers (scope, phone, last_at) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, phone) DO UPDATE SET last_at = excluded.last_at \
             WHERE excluded.last_at > velocity_numbers.last_at",
            &[(&breaker.scope).into(), (&verification.phone).into(), check.now.into()],
        )
        .await?;
    }
    Ok(())
}

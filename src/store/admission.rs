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
//! Atomic across nodes: on PostgreSQL the transaction first locks the
//! single `velocity_lock` row ([`POSTGRES_BEGIN`]: the node's admission
//! writer opens every batch of admissions with it; on SQLite `BEGIN
//! IMMEDIATE` already holds the database's write lock), so the counts it
//! reads cannot change before its own insert commits. Without that, two
//! nodes counting at once under READ COMMITTED each see room for one more.
//! Admissions that share a batch each run in a savepoint and read what the
//! ones before them wrote, as they would after their commit.

use std::sync::atomic::{AtomicI64, Ordering};

use super::audit::AuditBatch;
use super::db::{Exec, Param};
use super::queries::{first_request, insert_verification};
use super::velocity::{VelocityCheck, VelocityLimit, Verdict};
use super::{NewVerification, StoreError, Verification};

/// How often, at most, an admission deletes what no window counts any more.
const PRUNE_EVERY_MS: u64 = 1_000;

/// How PostgreSQL's admission transactions open: the lock is taken outside
/// any admission's savepoint, so a refused admission's rollback does not
/// release it.
pub(super) const POSTGRES_BEGIN: &str = "BEGIN; SELECT id FROM velocity_lock WHERE id = 1 FOR UPDATE";

/// Decides on `new` under `check`, in a transaction opened with
/// [`POSTGRES_BEGIN`] on PostgreSQL; the verification's audit entry goes to
/// `audit`. The caller commits when the verdict is `Admitted` or a trip,
/// and rolls back otherwise.
pub(super) async fn admit(
    db: &mut Exec<'_>,
    new: &NewVerification,
    check: &VelocityCheck,
    pruned_at: &AtomicI64,
    audit: &mut AuditBatch,
) -> Result<(Verdict, u64), StoreError> {
    // What no window counts any more is deleted at most once a second (or
    // when the clock moved back), not by every admission: the counts below
    // take off whatever lies before each window, so they are exact however
    // much the pruning lags, and these two statements were a fifth of what
    // an admission sent to the database, every one waiting in line on the
    // admission lock (SQLite's writer, PostgreSQL's velocity_lock).
    if check.now.abs_diff(pruned_at.load(Ordering::Relaxed)) >= PRUNE_EVERY_MS {
        db.execute("DELETE FROM velocity_events WHERE at <= $1", &[check.horizon().into()]).await?;
        db.execute("DELETE FROM velocity_numbers WHERE last_at <= $1", &[numbers_horizon(check).into()]).await?;
        pruned_at.store(check.now, Ordering::Relaxed);
    }
    let counts = Counts::read(db, new, check).await?;
    let verdict = decide(db, new, check, &counts, audit).await?;
    // The breaker this request tripped is open from now on, unless paused for no time.
    let tripped = matches!(verdict, Verdict::Paused { tripped: true, until, .. } if until > check.now);
    Ok((verdict, counts.open_breakers + u64::from(tripped)))
}

/// Everything the checks read, in one statement: at rate each statement's
/// round trip to the database costs more than what it counts.
struct Counts {
    /// Breakers of every scope open now.
    open_breakers: u64,
    /// Until when the breaker's scope is paused, if it ever was.
    paused_until: Option<i64>,
    /// Other numbers in the breaker's window.
    other_numbers: i64,
    /// Each limit's events in its window, in `check.limits`' order.
    events: Vec<i64>,
}

impl Counts {
    async fn read(db: &mut Exec<'_>, new: &NewVerification, check: &VelocityCheck) -> Result<Counts, StoreError> {
        // One row per value, numbered, as the checks vary in number.
        let mut params: Vec<Param<'_>> = vec![check.now.into()];
        let mut sql = String::from("SELECT CAST(0 AS BIGINT), COUNT(*) FROM velocity_breakers WHERE open_until > $1");
        if let Some(breaker) = &check.breaker {
            params.extend::<[Param<'_>; _]>([
                (&breaker.scope).into(),
                check.now.saturating_sub(breaker.window_ms).into(),
                (&new.phone).into(),
            ]);
            // The scope's numbers, less those last admitted before the
            // window and this one.
            sql.push_str(
                " UNION ALL SELECT CAST(1 AS BIGINT), (SELECT open_until FROM velocity_breakers WHERE scope = $2) \
                 UNION ALL SELECT CAST(2 AS BIGINT), \
                 COALESCE((SELECT numbers FROM velocity_scopes WHERE scope = $2), 0) \
                 - (SELECT COUNT(*) FROM velocity_numbers WHERE scope = $2 AND last_at <= $3) \
                 - (SELECT COUNT(*) FROM velocity_numbers WHERE scope = $2 AND phone = $4 AND last_at > $3)",
            );
        }
        for (i, limit) in check.limits.iter().enumerate() {
            let (scope, since) = (params.len() + 1, params.len() + 2);
            params.extend::<[Param<'_>; _]>([(&limit.scope).into(), check.now.saturating_sub(limit.window_ms).into()]);
            // The scope's events, less those the horizon left before the window.
            sql.push_str(&format!(
                " UNION ALL SELECT CAST({} AS BIGINT), \
                 COALESCE((SELECT events FROM velocity_scopes WHERE scope = ${scope}), 0) \
                 - (SELECT COUNT(*) FROM velocity_events WHERE scope = ${scope} AND at <= ${since})",
                i + 3
            ));
        }
        let rows: Vec<(i64, Option<i64>)> = db.fetch_all(&sql, &params).await?;
        let mut counts =
            Counts { open_breakers: 0, paused_until: None, other_numbers: 0, events: vec![0; check.limits.len()] };
        for (row, value) in rows {
            match row {
                // COUNT(*) is never negative.
                0 => counts.open_breakers = value.unwrap_or(0).unsigned_abs(),
                // NULL when the scope never tripped.
                1 => counts.paused_until = value,
                2 => counts.other_numbers = value.unwrap_or(0),
                limit => {
                    if let Some(count) = usize::try_from(limit - 3).ok().and_then(|i| counts.events.get_mut(i)) {
                        *count = value.unwrap_or(0);
                    }
                }
            }
        }
        Ok(counts)
    }
}

async fn decide(
    db: &mut Exec<'_>,
    new: &NewVerification,
    check: &VelocityCheck,
    counts: &Counts,
    audit: &mut AuditBatch,
) -> Result<Verdict, StoreError> {
    // A retry is answered before the limits, which the first request itself
    // may have filled.
    if let Some(verification) = first_request(db, new).await? {
        return Ok(Verdict::Admitted { verification: Box::new(verification), created: false });
    }
    if let Some(breaker) = &check.breaker
        && let Some(until) = counts.paused_until.filter(|until| *until > check.now)
    {
        return Ok(Verdict::Paused { scope: breaker.scope.clone(), until, tripped: false });
    }
    for (limit, count) in check.limits.iter().zip(&counts.events) {
        if let Some(retry_at) = full(db, limit, *count, check.now).await? {
            return Ok(Verdict::Limited { kind: limit.kind, max: limit.max, retry_at });
        }
    }
    // Trips when `new`'s number would be one distinct number too many.
    if let Some(breaker) = &check.breaker
        && counts.other_numbers >= i64::from(breaker.max_numbers)
    {
        let until = check.now.saturating_add(breaker.pause_ms);
        db.execute(
            "INSERT INTO velocity_breakers (scope, tripped_at, open_until) VALUES ($1, $2, $3) \
             ON CONFLICT (scope) DO UPDATE SET tripped_at = excluded.tripped_at, open_until = excluded.open_until",
            &[(&breaker.scope).into(), check.now.into(), until.into()],
        )
        .await?;
        return Ok(Verdict::Paused { scope: breaker.scope.clone(), until, tripped: true });
    }
    let (verification, created) = insert_verification(db, new, audit).await?;
    if created {
        record(db, &verification, check).await?;
    }
    Ok(Verdict::Admitted { verification: Box::new(verification), created })
}

/// `None` while the limit, holding `count` events in its window, has room;
/// when it is full, `Some` of when its oldest counted event leaves the window
/// (`None` inside when `max` is 0: no time brings room).
async fn full(
    db: &mut Exec<'_>,
    limit: &VelocityLimit,
    count: i64,
    now: i64,
) -> Result<Option<Option<i64>>, StoreError> {
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
            &[(&limit.scope).into(), now.saturating_sub(limit.window_ms).into(), (count - max).into()],
        )
        .await?;
    Ok(Some(oldest.map(|(at,)| at.saturating_add(limit.window_ms))))
}

/// Numbers last admitted at or before this count in no breaker's window and
/// can be deleted. Without a breaker, the events' horizon: numbers recorded
/// under another check then still leave.
fn numbers_horizon(check: &VelocityCheck) -> i64 {
    check.breaker.as_ref().map_or_else(|| check.horizon(), |b| check.now.saturating_sub(b.window_ms))
}

/// Counts an admitted verification in every scope of `check` (one statement
/// for all), and its number in the breaker's scope.
async fn record(db: &mut Exec<'_>, verification: &Verification, check: &VelocityCheck) -> Result<(), StoreError> {
    let scopes = check.scopes();
    if !scopes.is_empty() {
        let mut params: Vec<Param<'_>> =
            vec![check.now.into(), (&verification.phone).into(), (&verification.id).into()];
        let rows: Vec<String> = scopes
            .into_iter()
            .map(|scope| {
                params.push(scope.into());
                format!("(${}, $1, $2, $3)", params.len())
            })
            .collect();
        let sql = format!("INSERT INTO velocity_events (scope, at, phone, verification_id) VALUES {}", rows.join(", "));
        db.execute(&sql, &params).await?;
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

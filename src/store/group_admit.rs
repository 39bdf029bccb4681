//! Admissions on PostgreSQL with group commit (issue 10, "intake at rate").
//!
//! Every admission locks the one `velocity_lock` row (see `admission`), so
//! admissions run one at a time across all nodes, and each held the lock
//! through its own commit: a WAL flush of 3–8 ms on the machine measured,
//! which capped a node at about 80 creates per second whatever else it did
//! (`pound bench burst`: 1,000 requests took 12 to 14 s).
//!
//! Here a node's admissions queue for one task, which takes every admission
//! waiting (up to [`MAX_BATCH`]) into one transaction: the lock and the
//! pruning once, each admission in a savepoint of its own (a refusal or a
//! failed statement is undone alone, as its own transaction was before),
//! one notification, one commit. Each admission is answered only once that
//! commit has returned, so a `202` still means the row is durable; if the
//! commit fails, every admission in it fails. An admission whose requester
//! has gone before its batch starts is not made.

use tokio::sync::{mpsc, oneshot};

use super::admission::{admit_prepared, numbers_horizon, prepare};
use super::db::Pool;
use super::queries::notify_work;
use super::velocity::{Admission, VelocityCheck, Verdict};
use super::{NewVerification, StoreError};

/// Admissions in one transaction at most: it bounds what one admission
/// waits for the others in its batch, and how many one failed commit fails.
const MAX_BATCH: usize = 64;

/// The queue of this node's admissions.
pub(super) struct GroupAdmit {
    queue: mpsc::UnboundedSender<Job>,
}

/// One admission waiting for its batch.
struct Job {
    new: NewVerification,
    check: VelocityCheck,
    answer: oneshot::Sender<Result<Admission, StoreError>>,
}

impl GroupAdmit {
    /// Starts the task that admits for `pool`; it ends when this is dropped.
    pub(super) fn start(pool: Pool) -> GroupAdmit {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, jobs));
        GroupAdmit { queue }
    }

    /// Decides on `new` under `check` in the next batch, once it committed.
    pub(super) async fn admit(&self, new: &NewVerification, check: &VelocityCheck) -> Result<Admission, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job = Job { new: new.clone(), check: check.clone(), answer };
        self.queue.send(job).map_err(|_| failed("the admission task has stopped"))?;
        answered.await.map_err(|_| failed("the admission task dropped the admission"))?
    }
}

/// An error for an admission that did not reach or survive its commit.
fn failed(why: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(why.to_string())))
}

async fn run(pool: Pool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        batch.retain(|job: &Job| !job.answer.is_closed());
        if batch.is_empty() {
            continue;
        }
        match admit_batch(&pool, &batch).await {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
                    let _ = job.answer.send(result);
                }
            }
            Err(error) => {
                let why = format!("the admissions' transaction failed: {error}");
                for job in batch.drain(..) {
                    let _ = job.answer.send(Err(failed(&why)));
                }
            }
        }
    }
}

/// The batch's admissions in one transaction; each one's own result, or the
/// error that failed them all.
async fn admit_batch(pool: &Pool, batch: &[Job]) -> Result<Vec<Result<Admission, StoreError>>, StoreError> {
    let mut tx = pool.begin_write().await?;
    let mut db = tx.exec();
    // The oldest horizons of the batch: each admission counts only what lies
    // in its windows, so what an older horizon leaves behind counts nowhere.
    let horizon = batch.iter().map(|job| job.check.horizon()).min().unwrap_or(i64::MIN);
    let numbers = batch.iter().map(|job| numbers_horizon(&job.check)).min().unwrap_or(i64::MIN);
    prepare(&mut db, horizon, numbers).await?;
    let mut results = Vec::with_capacity(batch.len());
    let mut created = false;
    for job in batch {
        db.execute("SAVEPOINT pound_admit", &[]).await?;
        let result = admit_prepared(&mut db, &job.new, &job.check).await;
        // A refusal leaves nothing behind but the breaker it tripped.
        let keep = matches!(&result, Ok((Verdict::Admitted { .. } | Verdict::Paused { tripped: true, .. }, _)));
        if !keep {
            db.execute("ROLLBACK TO SAVEPOINT pound_admit", &[]).await?;
        }
        db.execute("RELEASE SAVEPOINT pound_admit", &[]).await?;
        created |= matches!(&result, Ok((Verdict::Admitted { created: true, .. }, _)));
        results.push(result.map(|(verdict, open_breakers)| Admission { verdict, open_breakers }));
    }
    if created {
        notify_work(&mut db).await?;
    }
    tx.commit().await?;
    Ok(results)
}

//! The PostgreSQL backend: several nodes share one database.
//!
//! Nodes coordinate through row locks only. `claim` and `due_webhooks` pick
//! rows with `SELECT … FOR UPDATE SKIP LOCKED` inside a transaction, so two
//! nodes scanning at once each take different rows instead of waiting on or
//! duplicating each other. `cancel` locks its row (`FOR UPDATE`) before
//! deciding, and every write a lease guards is one `UPDATE … WHERE id = $1
//! AND lease_owner = $2`, which re-checks the owner on the row's newest
//! version under READ COMMITTED. Multi-statement writes (`complete`,
//! `start_attempt`, `cancel`, `claim`) are one transaction each.
//!
//! Admissions (`Store::admit_verification`) are the exception: they all
//! serialize on the `velocity_lock` row (see `store::admission`), so each
//! node runs its own on one connection of its own through a [`Writer`]:
//! those that queue up share one transaction, which takes `velocity_lock`
//! once when it opens, and one commit (see `store::batch`).
//!
//! Nodes wake each other through `LISTEN/NOTIFY`: a transaction that makes
//! a verification due now notifies the work channel, and every node's
//! [`relay_work_signals`] listens on it, so another node's engine claims at
//! once instead of at its next poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions};
use tokio::sync::Notify;

use super::batch::{BoxFuture, Writer};
use super::db::WORK_CHANNEL;
use super::{StoreError, admission};

/// How long a request waits for a connection: while the server is down,
/// sqlx retries refused connections until the acquire timeout (30 s by
/// default), and every API request would hang that long before its 503.
/// Five seconds covers a busy pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the database at `url` (`postgres://…`) and migrates it: the
/// pool, and the node's admission [`Writer`] on a connection of its own.
/// Nodes starting together are safe: the migrator holds an advisory lock.
pub(super) async fn open(url: &str) -> Result<(PgPool, Writer<PgConnection>), StoreError> {
    let pool = PgPoolOptions::new().acquire_timeout(CONNECT_TIMEOUT).connect(url).await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    let options = pool.connect_options().as_ref().clone().application_name(ADMISSION_APPLICATION);
    let connect = Arc::new(move || -> BoxFuture<'static, _> {
        let options = options.clone();
        Box::pin(async move {
            tokio::time::timeout(CONNECT_TIMEOUT, options.connect())
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut))
        })
    });
    let conn = connect().await?;
    Ok((pool, Writer::new(conn, admission::POSTGRES_BEGIN, connect)))
}

/// The `application_name` of the connection that admits this node's
/// verifications (`Store::admit_verification`), in `pg_stat_activity`.
pub const ADMISSION_APPLICATION: &str = "pound-admissions";

/// The `application_name` of the connection that listens for work, which
/// tells it apart in `pg_stat_activity`.
pub const LISTENER_APPLICATION: &str = "pound-work-listener";

/// The first wait before listening again after the connection failed; it
/// doubles up to [`RELISTEN_MAX`] while the database stays unreachable.
const RELISTEN_MIN: Duration = Duration::from_millis(100);
const RELISTEN_MAX: Duration = Duration::from_secs(5);

/// Listens on the work channel of `store`'s database for as long as it runs,
/// and notifies `wake` for each notification. Listens again whenever the
/// connection drops (an outage, a restart, a terminated backend), and wakes
/// once each time it does: what was notified while nobody listened is lost,
/// and the engine's poll is only the slow fallback.
pub(super) async fn relay_work_signals(store: PgPool, wake: Arc<Notify>) {
    // A connection of its own, so the listener never holds one of the
    // store's while it waits.
    let options = store.connect_options().as_ref().clone().application_name(LISTENER_APPLICATION);
    let pool = PgPoolOptions::new().max_connections(1).connect_lazy_with(options);
    let mut wait = RELISTEN_MIN;
    loop {
        match listen(&pool).await {
            Ok(mut listener) => {
                wake.notify_one();
                let listened = Instant::now();
                let error = relay(&mut listener, &wake).await;
                tracing::warn!(%error, "listening for new work failed; listening again");
                // Only a connection that held up restarts the backoff: one
                // that fails as soon as it listens must not spin.
                if listened.elapsed() >= RELISTEN_MAX {
                    wait = RELISTEN_MIN;
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = wait.as_millis(), "cannot listen for new work; polling meanwhile");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RELISTEN_MAX);
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(WORK_CHANNEL).await?;
    Ok(listener)
}

/// Wakes `wake` for every notification until the listener fails.
async fn relay(listener: &mut PgListener, wake: &Notify) -> sqlx::Error {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => wake.notify_one(),
            // The connection dropped and sqlx listens again on a new one;
            // whatever was notified in between is lost.
            Ok(None) => wake.notify_one(),
            Err(error) => return error,
        }
    }
}

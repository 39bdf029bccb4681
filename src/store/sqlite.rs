//! The SQLite backend: the embedded default, one process and one file.
//!
//! Atomicity: every write that takes more than one statement (claiming,
//! canceling, starting an attempt, completing, leasing webhooks) runs in a
//! transaction that holds SQLite's single write lock from its first
//! statement (`BEGIN IMMEDIATE`), so the rows it decides on cannot change
//! under it and two claimers never hand out the same verification. WAL lets
//! reads proceed while a write holds the lock.
//!
//! Every write of this process goes through one [`Writer`]: one connection,
//! one write at a time in arrival order, writes that queue up committed
//! together (see `store::batch`). Other processes sharing the file (`pound
//! keys`) meet the lock through the busy timeout (5 s).
//!
//! Why one connection: pooled connections racing for the write lock with
//! `BEGIN IMMEDIATE` lose with `SQLITE_BUSY`, and SQLite's busy handler then
//! sleeps (1, 2, 5, 10 … 100 ms) before it tries again, long after the lock
//! came free. Queued on an in-process FIFO instead, the next write starts
//! the moment the previous one is done. With `synchronous = FULL` each
//! commit waits for an fsync of the WAL, which group commit shares.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::StoreError;
use super::batch::{BoxFuture, Writer};
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if missing) and migrates the database at `url`
/// (`sqlite://path/to/file.db`): a pool for reads and the [`Writer`].
pub(super) async fn open(url: &str) -> Result<(SqlitePool, Writer<SqliteConnection>), StoreError> {
    open_with_busy_timeout(url, BUSY_TIMEOUT).await
}

/// [`open`] with another busy timeout (the tests use none, so that any wait
/// for the write lock within the process shows as `SQLITE_BUSY`).
pub(super) async fn open_with_busy_timeout(
    url: &str,
    busy: Duration,
) -> Result<(SqlitePool, Writer<SqliteConnection>), StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // Every commit is on disk before it returns (FULL syncs the WAL at
        // each commit; NORMAL would not): a 202 or a stored decision must
        // survive a power loss. Group commit is how writes share the cost.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new().connect_with(options.clone()).await?;
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    let conn = options.connect().await?;
    let connect = Arc::new(move || -> BoxFuture<'static, _> {
        let options = options.clone();
        Box::pin(async move { options.connect().await })
    });
    // IMMEDIATE: the write lock before the first read, so what a write
    // decides on cannot change under it.
    Ok((pool, Writer::new(conn, "BEGIN IMMEDIATE", connect)))
}

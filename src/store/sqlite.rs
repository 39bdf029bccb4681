//! The SQLite backend: the embedded default, one process and one file.
//!
//! Atomicity: every write that takes more than one statement (claiming,
//! canceling, starting an attempt, completing, leasing webhooks) runs in a
//! `BEGIN IMMEDIATE` transaction. It takes SQLite's single write lock before
//! the first read, so the rows a transaction decides on cannot change under
//! it, and two claimers queue on the lock (busy timeout 5 s) instead of
//! handing out the same verification. This holds across pools and processes
//! sharing the file, not only within one pool, and it avoids the deadlock of
//! two deferred transactions that both try to upgrade from reading to
//! writing. Single-statement writes are atomic on their own. WAL lets reads
//! proceed while a write holds the lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::StoreError;

/// Opens (creating if missing) and migrates the database at `url`
/// (`sqlite://path/to/file.db`).
pub(super) async fn open(url: &str) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        // A transaction whose COMMIT or statement failed with SQLITE_FULL or
        // SQLITE_IOERR may already have been rolled back by SQLite itself;
        // the ROLLBACK sqlx then queues fails, and sqlx's own count of open
        // transactions stays at one. Such a connection refuses every later
        // `begin_with` ("non-zero transaction depth"), so it is closed
        // instead of handed out again: the engine and the outbox recover
        // once the disk has room.
        .before_acquire(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
        .connect_with(options)
        .await?;
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    Ok(pool)
}

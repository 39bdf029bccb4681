//! SQLite's [`Writer`](crate::store::batch::Writer): writes of one process
//! queue in the process instead of on SQLite's lock, and writes that queue
//! together share one commit, each answered only once it is on disk.
//!
//! The store here has no busy timeout: a write that met SQLite's write lock
//! held by another connection of the process would fail at once with
//! `SQLITE_BUSY` ("database is locked") instead of sleeping in SQLite's busy
//! handler, which is what the writer exists to avoid.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use super::request;
use crate::clock::Clock;
use crate::store::db::{Backend, Pool};
use crate::store::sql::SqlStore;
use crate::store::{NewVerification, Store, StoreError, sqlite};

/// How many writes each case sends at once.
const WRITES: usize = 24;

struct Sqlite {
    store: Arc<dyn Store>,
    url: String,
    wal: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn sqlite_without_busy_timeout() -> Sqlite {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("pound.db");
    let url = format!("sqlite://{}", file.display());
    let (pool, writer) = sqlite::open_with_busy_timeout(&url, Duration::ZERO).await.expect("open SQLite store");
    let store = Arc::new(SqlStore::new(Pool::new(Backend::Sqlite { pool, writer }, Clock::System)));
    Sqlite { store, url, wal: dir.path().join("pound.db-wal"), _dir: dir }
}

/// The commits in a WAL file: its frames that end a transaction (a non-zero
/// "database size after commit") and belong to the file's current run (their
/// salts are the header's).
fn commits_in_wal(wal: &Path) -> usize {
    let bytes = std::fs::read(wal).expect("read the WAL");
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
    let page_size = word(8) as usize;
    let salts = (word(16), word(20));
    (32..bytes.len())
        .step_by(24 + page_size)
        .take_while(|frame| frame + 24 <= bytes.len())
        .filter(|&frame| word(frame + 4) != 0 && (word(frame + 8), word(frame + 12)) == salts)
        .count()
}

/// Runs `WRITES` creates at once, each on a task of its own.
async fn create_at_once(store: &Arc<dyn Store>, requests: Vec<NewVerification>) -> Vec<Result<bool, StoreError>> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|new| {
            let store = store.clone();
            tokio::spawn(async move { store.create_verification(&new).await.map(|(_, created)| created) })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("the write task"));
    }
    results
}

fn requests(prefix: &str) -> Vec<NewVerification> {
    (0..WRITES).map(|i| request(&format!("{prefix}{i:02}"), 1_000 + i as i64)).collect()
}

/// The ids stored, as a connection of another process reads them.
async fn stored_ids(url: &str) -> Vec<String> {
    let mut conn = SqliteConnection::connect(url).await.expect("connect");
    sqlx::query_scalar("SELECT id FROM verifications ORDER BY id").fetch_all(&mut conn).await.expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_at_once_from_many_tasks_never_meet_the_write_lock() {
    let db = sqlite_without_busy_timeout().await;
    let mut writes = Vec::new();
    for (i, new) in requests("v").into_iter().enumerate() {
        let store = db.store.clone();
        // Several kinds of writes, each kind racing the others for the lock.
        writes.push(tokio::spawn(async move {
            store.create_verification(&new).await?;
            store.check_writable(1_000 + i as i64).await?;
            store.claim("node-a", 2_000, 30_000, 1).await?;
            store.touch_api_key("no-such-key", 3_000).await
        }));
    }
    for write in writes {
        write.await.expect("the write task").expect("a write failed (SQLITE_BUSY means it met the lock)");
    }
    assert_eq!(stored_ids(&db.url).await.len(), WRITES);
}

#[tokio::test]
async fn writes_that_queue_together_share_a_commit_and_are_answered_once_it_is_on_disk() {
    let db = sqlite_without_busy_timeout().await;
    let before = commits_in_wal(&db.wal);
    let results = create_at_once(&db.store, requests("v")).await;
    assert!(results.iter().all(|created| matches!(created, Ok(true))), "{results:?}");
    let commits = commits_in_wal(&db.wal) - before;
    assert!((1..WRITES / 2).contains(&commits), "{WRITES} writes took {commits} commits");
    // Every answered write is committed: another connection reads it.
    let expected: Vec<String> = (0..WRITES).map(|i| format!("v{i:02}")).collect();
    assert_eq!(stored_ids(&db.url).await, expected);
}

#[tokio::test]
async fn a_write_that_fails_in_a_shared_commit_is_undone_alone() {
    let db = sqlite_without_busy_timeout().await;
    let mut first = request("first", 1_000);
    first.idempotency_key = Some("k".into());
    db.store.create_verification(&first).await.unwrap();
    // The same idempotency key with another body fails inside the shared
    // transaction, after its insert was tried, among writes that succeed.
    let mut requests = requests("v");
    let conflict = WRITES / 2;
    requests[conflict].idempotency_key = Some("k".into());
    let results = create_at_once(&db.store, requests).await;
    for (i, result) in results.iter().enumerate() {
        if i == conflict {
            assert!(matches!(result, Err(StoreError::IdempotencyConflict)), "{result:?}");
        } else {
            assert!(matches!(result, Ok(true)), "write {i}: {result:?}");
        }
    }
    let stored = stored_ids(&db.url).await;
    assert_eq!(stored.len(), WRITES, "{stored:?}");
    assert!(!stored.contains(&format!("v{conflict:02}")), "{stored:?}");
}

#[tokio::test]
async fn a_write_dropped_halfway_leaves_the_writer_working() {
    let db = sqlite_without_busy_timeout().await;
    // Given up by its caller at each point a write can wait at: for its
    // turn, for its statements, for its commit.
    let mut dropped = Vec::new();
    for polls in 1..=6 {
        let new = request(&format!("dropped{polls}"), 500);
        let store = db.store.clone();
        dropped.push(tokio::spawn(async move {
            let mut write = std::pin::pin!(store.create_verification(&new));
            for _ in 0..polls {
                let ready = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx).is_ready())).await;
                if ready {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let results = create_at_once(&db.store, requests("v")).await;
    for task in dropped {
        task.await.expect("the dropping task");
    }
    assert!(results.iter().all(|created| matches!(created, Ok(true))), "{results:?}");
    // And later writes still go through.
    let after = db.store.create_verification(&request("after", 2_000)).await.unwrap();
    assert!(after.1);
    let stored = stored_ids(&db.url).await;
    for i in 0..WRITES {
        assert!(stored.contains(&format!("v{i:02}")), "v{i:02} missing: {stored:?}");
    }
}

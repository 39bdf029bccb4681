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
//! together. Other processes sharing the file (`pound keys`) meet the lock
//! through the busy timeout (5 s).

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::StoreError;

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A shared transaction commits once it holds this many writes, even while
/// more queue: under a steady stream of writes the queue never empties, and
/// the first write of a batch must not wait for the stream to pause. It
/// bounds what group commit adds to a write's latency (the writes after it
/// in the batch, each a few statements) and how many writes one failed
/// commit takes down.
const MAX_BATCH_WRITES: usize = 64;

/// Opens (creating if missing) and migrates the database at `url`
/// (`sqlite://path/to/file.db`): a pool for reads and the [`Writer`].
pub(super) async fn open(url: &str) -> Result<(SqlitePool, Writer), StoreError> {
    open_with_busy_timeout(url, BUSY_TIMEOUT).await
}

/// [`open`] with another busy timeout (the tests use none, so that any wait
/// for the write lock within the process shows as `SQLITE_BUSY`).
pub(super) async fn open_with_busy_timeout(url: &str, busy: Duration) -> Result<(SqlitePool, Writer), StoreError> {
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
    let writer = Writer::new(options.connect().await?);
    Ok((pool, writer))
}

/// The one connection this process writes through.
///
/// Why one: pooled connections racing for the write lock with `BEGIN
/// IMMEDIATE` lose with `SQLITE_BUSY`, and SQLite's busy handler then
/// sleeps (1, 2, 5, 10 … 100 ms) before it tries again, long after the lock
/// came free. Queued on an in-process FIFO instead, the next write starts
/// the moment the previous one is done.
///
/// Group commit: with `synchronous = FULL` each commit waits for an fsync of
/// the WAL, the cost a write cannot shed without giving up durability. A
/// write that finds others queued behind it does not commit: it releases its
/// savepoint and hands the still open transaction to the next write; the
/// last of the queue (or the first to find the transaction
/// [`MAX_BATCH_WRITES`] full) commits for all. Each write is answered only
/// once the commit that holds it has returned, so an acknowledged write is as
/// durable as before; if that commit fails, every write in it fails. Each
/// write runs in a savepoint of its own, so one that fails, or is dropped
/// unfinished, is undone alone. Writes read what the writes before them in
/// the batch wrote, as they would after a commit; if the commit fails, the
/// writes that read it fail with it.
#[derive(Clone)]
pub(super) struct Writer {
    turn: Arc<Mutex<Turn>>,
    /// Writes waiting for their turn.
    queued: Arc<AtomicUsize>,
}

/// What a write holds while it is its turn.
struct Turn {
    conn: SqliteConnection,
    /// The transaction open on `conn`, if any.
    batch: Option<Batch>,
}

/// The open transaction that writes share until it commits.
struct Batch {
    /// Writes released into it, each waiting for its commit.
    writes: usize,
    /// Its commit's result, once there is one (an error as text: it goes to every write).
    committed: watch::Sender<Option<Result<(), String>>>,
}

impl Batch {
    fn new() -> Batch {
        Batch { writes: 0, committed: watch::Sender::new(None) }
    }

    fn end(self, result: Result<(), String>) {
        self.committed.send_replace(Some(result));
    }
}

impl Writer {
    fn new(conn: SqliteConnection) -> Writer {
        Writer { turn: Arc::new(Mutex::new(Turn { conn, batch: None })), queued: Arc::new(AtomicUsize::new(0)) }
    }

    /// Waits for this write's turn and opens its savepoint.
    pub(super) async fn begin(&self) -> Result<Write, StoreError> {
        let waiting = Waiting::new(self);
        let turn = self.turn.clone().lock_owned().await;
        waiting.served();
        let mut write = Write { turn: Some(turn), writer: self.clone(), savepoint: false };
        write.open().await?;
        Ok(write)
    }

    /// Ends a write's turn: commits the shared transaction unless another
    /// write waits to carry it on. Runs as a task of its own, never
    /// canceled halfway, since other writes wait for what it decides.
    async fn end_turn(self, mut turn: OwnedMutexGuard<Turn>) {
        let Some(batch) = &turn.batch else { return };
        let more = self.queued.load(Ordering::SeqCst) > 0;
        if more && batch.writes < MAX_BATCH_WRITES {
            return;
        }
        let committed = run(&mut turn.conn, "COMMIT").await;
        if committed.is_err() {
            // SQLite may have rolled back already (a full disk); if not, this does.
            let _ = run(&mut turn.conn, "ROLLBACK").await;
        }
        if let Some(batch) = turn.batch.take() {
            batch.end(committed.map_err(|error| error.to_string()));
        }
    }

    /// Ends the turn of a write that did not commit: undoes its savepoint,
    /// or, when its state is unknown, the whole shared transaction.
    async fn abandon(self, mut turn: OwnedMutexGuard<Turn>, savepoint: bool) {
        let undone = savepoint && run(&mut turn.conn, "ROLLBACK TO pound_write; RELEASE pound_write").await.is_ok();
        if !undone {
            // The write was dropped while its savepoint opened, or SQLite
            // rolled the whole transaction back itself (a full disk, an I/O
            // error): what the transaction still holds is unknown, so none
            // of it is kept and the writes waiting on it fail.
            let _ = run(&mut turn.conn, "ROLLBACK").await;
            if let Some(batch) = turn.batch.take() {
                batch.end(Err("the transaction was rolled back with a failed write".into()));
            }
        }
        self.end_turn(turn).await;
    }
}

/// Counts a write in [`Writer::queued`] while it waits for its turn. One
/// dropped while waiting (its caller gave up) may have been the write the
/// previous one left the transaction open for: a task takes its turn then,
/// so that the transaction still commits.
struct Waiting {
    writer: Option<Writer>,
}

impl Waiting {
    fn new(writer: &Writer) -> Waiting {
        writer.queued.fetch_add(1, Ordering::SeqCst);
        Waiting { writer: Some(writer.clone()) }
    }

    fn served(mut self) {
        if let Some(writer) = self.writer.take() {
            writer.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else { return };
        writer.queued.fetch_sub(1, Ordering::SeqCst);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let turn = writer.turn.clone().lock_owned().await;
                writer.end_turn(turn).await;
            });
        }
    }
}

/// Runs one fixed statement of the writer's own. A boxed future of a
/// concrete connection type: `sqlx::raw_sql`'s generic executor makes the
/// futures that hold it fail the `Send` check of `tokio::spawn`.
fn run<'c>(
    conn: &'c mut SqliteConnection,
    sql: &'static str,
) -> Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>> {
    Box::pin(async move { sqlx::Executor::execute(conn, sql).await.map(drop) })
}

/// One write's turn on the [`Writer`], inside a savepoint of the shared
/// transaction; undone if dropped without [`Write::commit`].
pub(super) struct Write {
    turn: Option<OwnedMutexGuard<Turn>>,
    writer: Writer,
    /// The savepoint is known to be open.
    savepoint: bool,
}

impl Write {
    async fn open(&mut self) -> Result<(), StoreError> {
        let turn = self.turn_mut();
        if turn.batch.is_none() {
            run(&mut turn.conn, "BEGIN IMMEDIATE").await?;
            turn.batch = Some(Batch::new());
        }
        run(&mut turn.conn, "SAVEPOINT pound_write").await?;
        self.savepoint = true;
        Ok(())
    }

    fn turn_mut(&mut self) -> &mut Turn {
        self.turn.as_mut().expect("a write holds its turn until it commits or drops")
    }

    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.turn_mut().conn
    }

    /// Keeps the write, hands the turn on, and returns once the commit that
    /// holds the write has.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        run(self.conn(), "RELEASE pound_write").await?;
        self.savepoint = false;
        let turn = self.turn_mut();
        let batch = turn.batch.as_mut().expect("a write's savepoint is inside the shared transaction");
        batch.writes += 1;
        let mut committed = batch.committed.subscribe();
        if let Some(turn) = self.turn.take() {
            tokio::spawn(self.writer.clone().end_turn(turn));
        }
        let result = match committed.wait_for(Option::is_some).await {
            Ok(result) => result.clone().unwrap_or(Err("no commit".into())),
            Err(_) => Err("the commit was abandoned".into()),
        };
        result.map_err(|error| StoreError::Database(sqlx::Error::Io(std::io::Error::other(error))))
    }
}

impl Drop for Write {
    fn drop(&mut self) {
        let Some(turn) = self.turn.take() else { return };
        let (writer, savepoint) = (self.writer.clone(), self.savepoint);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(writer.abandon(turn, savepoint));
        }
    }
}

//! Group commit on one connection: the [`Writer`] behind every SQLite
//! write of a process and behind PostgreSQL's admissions of a node.
//!
//! One connection, one write at a time in arrival order. A write that finds
//! others queued behind it does not commit: it releases its savepoint and
//! hands the still open transaction to the next write; the last of the
//! queue (or the first to find the transaction [`MAX_BATCH_WRITES`] full)
//! commits for all. The commit is the cost a write cannot shed without
//! giving up durability (an fsync of SQLite's WAL, a flush of PostgreSQL's
//! WAL), and whatever the transaction locks when it opens (SQLite's write
//! lock, PostgreSQL's `velocity_lock` row) is taken once for the batch.
//!
//! The audit entries of the writes released into a batch are appended when
//! it commits ([`Write::commit`]), so each tenant's audit head is locked
//! once per batch and only from then until the commit returns (see
//! `store::audit`): a batch that held it from its first write on would
//! keep every other writer of the tenant waiting for the whole batch.
//!
//! Each write is answered only once the commit that holds it has returned,
//! so an acknowledged write is as durable as one committed alone; if that
//! commit fails, every write in it fails. Each write runs in a savepoint of
//! its own, so one that fails, is refused, or is dropped unfinished is
//! undone alone. Writes read what the writes before them in the batch
//! wrote, as they would after a commit; if the commit fails, the writes
//! that read it fail with it (a refusal that read it was already answered:
//! it refused on rows that then never existed, which errs on the side of
//! refusing).
//!
//! A connection whose state is unknown (a `ROLLBACK` failed: it broke, or
//! the database rolled back on its own) is dropped, and the next batch
//! opens a new one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::StoreError;
use super::audit::AuditBatch;
use super::db::Exec;

/// A shared transaction commits once it holds this many writes, even while
/// more queue: under a steady stream of writes the queue never empties, and
/// the first write of a batch must not wait for the stream to pause. It
/// bounds what group commit adds to a write's latency (the writes after it
/// in the batch, each a few statements), how long the batch holds what it
/// locks, and how many writes one failed commit takes down.
const MAX_BATCH_WRITES: usize = 64;

/// A boxed future of a concrete connection type: `sqlx`'s generic executor
/// makes the futures that hold it fail the `Send` check of `tokio::spawn`.
pub(super) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection the [`Writer`] runs its own fixed statements on.
pub(super) trait BatchConn: Send + 'static {
    fn run<'c>(&'c mut self, sql: &'static str) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    fn exec(&mut self) -> Exec<'_>;
}

macro_rules! batch_conn {
    ($($conn:ty => $exec:ident),*) => {$(
        impl BatchConn for $conn {
            fn run<'c>(&'c mut self, sql: &'static str) -> BoxFuture<'c, Result<(), sqlx::Error>> {
                Box::pin(async move { sqlx::Executor::execute(self, sql).await.map(drop) })
            }

            fn exec(&mut self) -> Exec<'_> {
                Exec::$exec(self)
            }
        }
    )*};
}

batch_conn!(SqliteConnection => Sqlite, PgConnection => Postgres);

/// Opens a new connection for the writer.
pub(super) type Connect<C> = Arc<dyn Fn() -> BoxFuture<'static, Result<C, sqlx::Error>> + Send + Sync>;

/// See the module docs.
pub(super) struct Writer<C> {
    turn: Arc<Mutex<Turn<C>>>,
    /// Writes waiting for their turn.
    queued: Arc<AtomicUsize>,
    /// Opens the shared transaction (and takes what it locks for the batch).
    begin: &'static str,
    connect: Connect<C>,
}

impl<C> Clone for Writer<C> {
    fn clone(&self) -> Self {
        Writer {
            turn: self.turn.clone(),
            queued: self.queued.clone(),
            begin: self.begin,
            connect: self.connect.clone(),
        }
    }
}

/// What a write holds while it is its turn.
struct Turn<C> {
    /// `None` once dropped as unknown, until the next batch connects.
    conn: Option<C>,
    /// The transaction open on `conn`, if any.
    batch: Option<Batch>,
}

/// The open transaction that writes share until it commits.
struct Batch {
    /// Writes released into it, each waiting for its commit.
    writes: usize,
    /// Their audit entries, appended just before the commit.
    audit: AuditBatch,
    /// Its commit's result, once there is one (an error as text: it goes to every write).
    committed: watch::Sender<Option<Result<(), String>>>,
}

impl Batch {
    fn new() -> Batch {
        Batch { writes: 0, audit: AuditBatch::default(), committed: watch::Sender::new(None) }
    }

    fn end(self, result: Result<(), String>) {
        self.committed.send_replace(Some(result));
    }
}

impl<C: BatchConn> Turn<C> {
    /// Appends the audit entries and commits the open transaction for
    /// every write released into it.
    async fn commit(&mut self) {
        let Some(mut batch) = self.batch.take() else { return };
        let audit = std::mem::take(&mut batch.audit);
        let committed = match self.conn.as_mut() {
            Some(conn) => match audit.write(&mut conn.exec()).await {
                Ok(()) => conn.run("COMMIT").await.map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            },
            None => Err("the connection was dropped".to_string()),
        };
        if committed.is_err() {
            // The database may have rolled back already (a full disk, a
            // broken connection); if not, this does.
            self.roll_back().await;
        }
        batch.end(committed);
    }

    /// Rolls the whole transaction back; drops the connection if that fails.
    async fn roll_back(&mut self) {
        if let Some(conn) = self.conn.as_mut()
            && conn.run("ROLLBACK").await.is_err()
        {
            self.conn = None;
        }
    }
}

impl<C: BatchConn> Writer<C> {
    /// A writer on `conn` whose transactions open with `begin`; `connect`
    /// replaces the connection once it was dropped.
    pub(super) fn new(conn: C, begin: &'static str, connect: Connect<C>) -> Writer<C> {
        Writer {
            turn: Arc::new(Mutex::new(Turn { conn: Some(conn), batch: None })),
            queued: Arc::new(AtomicUsize::new(0)),
            begin,
            connect,
        }
    }

    /// Waits for this write's turn and opens its savepoint.
    pub(super) async fn begin(&self) -> Result<Write<C>, StoreError> {
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
    async fn end_turn(self, mut turn: OwnedMutexGuard<Turn<C>>) {
        let Some(batch) = &turn.batch else { return };
        let more = self.queued.load(Ordering::SeqCst) > 0;
        if more && batch.writes < MAX_BATCH_WRITES {
            return;
        }
        turn.commit().await;
    }

    /// Ends the turn of a write that did not commit: undoes its savepoint,
    /// or, when its state is unknown, the whole shared transaction.
    async fn abandon(self, mut turn: OwnedMutexGuard<Turn<C>>, savepoint: bool) {
        let undone = match turn.conn.as_mut() {
            Some(conn) if savepoint => conn.run("ROLLBACK TO pound_write; RELEASE pound_write").await.is_ok(),
            _ => false,
        };
        if !undone {
            // The write was dropped while its savepoint opened, or the
            // database rolled the whole transaction back itself (a full
            // disk, an I/O error, a broken connection): what the
            // transaction still holds is unknown, so none of it is kept and
            // the writes waiting on it fail.
            turn.roll_back().await;
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
struct Waiting<C: BatchConn> {
    writer: Option<Writer<C>>,
}

impl<C: BatchConn> Waiting<C> {
    fn new(writer: &Writer<C>) -> Waiting<C> {
        writer.queued.fetch_add(1, Ordering::SeqCst);
        Waiting { writer: Some(writer.clone()) }
    }

    fn served(mut self) {
        if let Some(writer) = self.writer.take() {
            writer.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl<C: BatchConn> Drop for Waiting<C> {
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

/// One write's turn on the [`Writer`], inside a savepoint of the shared
/// transaction; undone if dropped without [`Write::commit`].
pub(super) struct Write<C: BatchConn> {
    turn: Option<OwnedMutexGuard<Turn<C>>>,
    writer: Writer<C>,
    /// The savepoint is known to be open.
    savepoint: bool,
}

impl<C: BatchConn> Write<C> {
    async fn open(&mut self) -> Result<(), StoreError> {
        let (begin, connect) = (self.writer.begin, self.writer.connect.clone());
        let turn = self.turn_mut();
        if turn.batch.is_none() {
            open_transaction(turn, begin, &connect).await?;
            turn.batch = Some(Batch::new());
        }
        let conn = turn.conn.as_mut().expect("an open transaction has its connection");
        conn.run("SAVEPOINT pound_write").await?;
        self.savepoint = true;
        Ok(())
    }

    fn turn_mut(&mut self) -> &mut Turn<C> {
        self.turn.as_mut().expect("a write holds its turn until it commits or drops")
    }

    pub(super) fn conn(&mut self) -> &mut C {
        self.turn_mut().conn.as_mut().expect("a write's savepoint is open on the writer's connection")
    }

    /// Keeps the write and its `audit` entries (appended when the batch
    /// commits), hands the turn on, and returns once the commit that holds
    /// the write has.
    pub(super) async fn commit(mut self, audit: AuditBatch) -> Result<(), StoreError> {
        self.conn().run("RELEASE pound_write").await?;
        self.savepoint = false;
        let turn = self.turn_mut();
        let batch = turn.batch.as_mut().expect("a write's savepoint is inside the shared transaction");
        batch.writes += 1;
        batch.audit.extend(audit);
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

/// Opens the shared transaction on the turn's connection, or on a new one
/// when there is none or it fails to (it may have broken since the last
/// batch); a connection that failed to is dropped.
async fn open_transaction<C: BatchConn>(
    turn: &mut Turn<C>,
    begin: &'static str,
    connect: &Connect<C>,
) -> Result<(), sqlx::Error> {
    if let Some(conn) = turn.conn.as_mut() {
        if conn.run(begin).await.is_ok() {
            return Ok(());
        }
        turn.conn = None;
    }
    let mut conn = connect().await?;
    conn.run(begin).await?;
    turn.conn = Some(conn);
    Ok(())
}

impl<C: BatchConn> Drop for Write<C> {
    fn drop(&mut self) {
        let Some(turn) = self.turn.take() else { return };
        let (writer, savepoint) = (self.writer.clone(), self.savepoint);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(writer.abandon(turn, savepoint));
        }
    }
}

//! The two databases behind one small interface, so that the store's SQL is
//! written once as plain functions: a [`Pool`] that starts write
//! transactions, an [`Exec`] (a connection, pooled or inside a transaction)
//! that runs a statement with [`Param`]s and reads rows back, and the
//! [`Dialect`] fragments where the SQL differs.
//!
//! Why not `sqlx::Any`: it converts every row into its own value types and
//! back, where a SQLite `BOOLEAN` or a PostgreSQL `BIGINT` count would each
//! need checking; here each backend decodes its own rows natively (the row
//! types derive `FromRow` for both). Why not functions generic over
//! `sqlx::Database`: each would need an `Encode`/`Decode`/`Executor` bound
//! for every type it binds or reads, since Rust does not imply such bounds;
//! the only generic function here is [`arguments`].
//!
//! All the store's SQL uses PostgreSQL's `$N` placeholders, on SQLite too.
//! SQLite itself reads `$1` as a *named* parameter and numbers named
//! parameters in order of first appearance, but sqlx-sqlite does not bind by
//! that order: it reads the number back from the name and binds `$N` to the
//! N-th parameter, as for `?N` (`SqliteArguments::bind`, sqlx-sqlite 0.8). So
//! a statement may use its placeholders out of order and repeat them. The
//! shared test suite runs every statement on SQLite and checks what it wrote,
//! so a sqlx release that bound by position instead would fail it.

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Arguments, Database, Encode, FromRow, Postgres, Sqlite, Transaction, Type};

use super::StoreError;
use super::audit::AuditBatch;
use super::batch::{Write, Writer};
use crate::clock::{Clock, Hold};

/// Where the SQL of the two backends differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Appended to a `SELECT` of the row a write transaction decides on, to
    /// lock that row until commit. SQLite has no row locks (nor the syntax):
    /// [`Pool::begin_write`] already holds the database's write lock.
    pub(super) fn lock_row(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Appended to a `SELECT` that picks due rows to take (claims, webhooks,
    /// expiry), to lock them without waiting for rows another node is taking.
    pub(super) fn lock_due(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// The statement that tells every node listening on [`WORK_CHANNEL`]
    /// (its `$1`) that work became due, when its transaction commits; none
    /// on SQLite.
    pub(super) fn notify_work(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            // The function rather than `NOTIFY`: the channel is a parameter
            // (`$1`, bound to `WORK_CHANNEL`), not spliced-in text.
            Dialect::Postgres => Some("SELECT pg_notify($1, '')"),
        }
    }
}

/// The PostgreSQL channel on which nodes learn of new due work.
pub(super) const WORK_CHANNEL: &str = "pound_work";

/// A value bound to a `$N` placeholder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Param<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(text: &'a str) -> Self {
        Param::Text(Some(text))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(text: &'a String) -> Self {
        Param::Text(Some(text))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Param::Text(text)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(text: &'a Option<String>) -> Self {
        Param::Text(text.as_deref())
    }
}

impl From<i64> for Param<'_> {
    fn from(int: i64) -> Self {
        Param::Int(Some(int))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(int: Option<i64>) -> Self {
        Param::Int(int)
    }
}

impl From<bool> for Param<'_> {
    fn from(boolean: bool) -> Self {
        Param::Bool(boolean)
    }
}

/// A row type both backends decode (every `#[derive(sqlx::FromRow)]` row and
/// tuples of plain values).
pub(super) trait Row: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin {}

impl<T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin> Row for T {}

/// The connections of one database.
#[derive(Clone)]
pub(super) enum Backend {
    /// Reads from the pool; every write through the one [`Writer`].
    Sqlite { pool: SqlitePool, writer: Writer<SqliteConnection> },
    /// Admissions through the node's own [`Writer`], the rest on the pool.
    Postgres { pool: PgPool, admissions: Writer<PgConnection> },
}

/// A database and the clock it runs under: in simulated time, the clock is
/// held while a connection is out, so that waiting for the database's own
/// threads is no idle time (see [`Clock::hold`]).
#[derive(Clone)]
pub(super) struct Pool {
    pub(super) backend: Backend,
    pub(super) clock: Clock,
    /// When this process last deleted the velocity events and numbers that
    /// no window counts any more (Unix ms, the admissions' clock); shared by
    /// the pool's clones.
    pub(super) velocity_pruned_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Pool {
    pub(super) fn new(backend: Backend, clock: Clock) -> Pool {
        Pool { backend, clock, velocity_pruned_at: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)) }
    }

    /// Starts a transaction for writes that read first. SQLite: a turn on
    /// the [`Writer`], which holds the write lock before the first read, so
    /// what the transaction decides on cannot change under it; its commit
    /// may be shared with the writes queued behind it. PostgreSQL: READ
    /// COMMITTED; the [`Dialect`] row locks do the rest.
    pub(super) async fn begin_write(&self) -> Result<Tx, StoreError> {
        let hold = self.clock.hold();
        let tx = match &self.backend {
            Backend::Sqlite { writer, .. } => TxKind::Sqlite(writer.begin().await?),
            Backend::Postgres { pool, .. } => TxKind::Postgres(pool.begin().await?),
        };
        Ok(Tx { tx, _hold: hold })
    }

    /// Starts the transaction of one admission: on PostgreSQL a turn on the
    /// node's admission [`Writer`], whose batch holds `velocity_lock`; on
    /// SQLite as [`Pool::begin_write`].
    pub(super) async fn begin_admission(&self) -> Result<Tx, StoreError> {
        match &self.backend {
            Backend::Sqlite { .. } => self.begin_write().await,
            Backend::Postgres { admissions, .. } => {
                let hold = self.clock.hold();
                Ok(Tx { tx: TxKind::Batched(admissions.begin().await?), _hold: hold })
            }
        }
    }

    /// Runs one writing statement on its own and returns how many rows it
    /// changed, once they are committed. On SQLite through the [`Writer`]
    /// like every write (a statement on a pooled connection would race it
    /// for the lock); PostgreSQL commits the lone statement by itself.
    pub(super) async fn write(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite { .. } => {
                let mut tx = self.begin_write().await?;
                let changed = tx.exec().execute(sql, params).await?;
                tx.commit().await?;
                Ok(changed)
            }
            Backend::Postgres { .. } => Ok(self.acquire().await?.exec().execute(sql, params).await?),
        }
    }

    /// A connection for statements that need no transaction (on SQLite,
    /// reads: writes go through [`Pool::begin_write`] or [`Pool::write`]).
    pub(super) async fn acquire(&self) -> Result<Conn, StoreError> {
        let hold = self.clock.hold();
        let conn = match &self.backend {
            Backend::Sqlite { pool, .. } => ConnKind::Sqlite(pool.acquire().await?),
            Backend::Postgres { pool, .. } => ConnKind::Postgres(pool.acquire().await?),
        };
        Ok(Conn { conn, _hold: hold })
    }
}

/// A pooled connection.
pub(super) struct Conn {
    conn: ConnKind,
    _hold: Option<Hold>,
}

enum ConnKind {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Conn {
    pub(super) fn exec(&mut self) -> Exec<'_> {
        match &mut self.conn {
            ConnKind::Sqlite(conn) => Exec::Sqlite(conn),
            ConnKind::Postgres(conn) => Exec::Postgres(conn),
        }
    }
}

/// A write transaction from [`Pool::begin_write`]; rolled back when dropped
/// without [`Tx::commit`].
pub(super) struct Tx {
    tx: TxKind,
    _hold: Option<Hold>,
}

enum TxKind {
    Sqlite(Write<SqliteConnection>),
    Postgres(Transaction<'static, Postgres>),
    /// A PostgreSQL admission, in a batch on the node's admission writer.
    Batched(Write<PgConnection>),
}

impl Tx {
    pub(super) fn exec(&mut self) -> Exec<'_> {
        match &mut self.tx {
            TxKind::Sqlite(write) => Exec::Sqlite(write.conn()),
            TxKind::Postgres(tx) => Exec::Postgres(tx),
            TxKind::Batched(write) => Exec::Postgres(write.conn()),
        }
    }

    pub(super) async fn commit(self) -> Result<(), StoreError> {
        self.commit_audited(AuditBatch::default()).await
    }

    /// Appends `audit`'s entries and commits: a shared transaction appends
    /// them with its batch's, once, when it commits.
    pub(super) async fn commit_audited(self, audit: AuditBatch) -> Result<(), StoreError> {
        match self.tx {
            TxKind::Sqlite(write) => write.commit(audit).await?,
            TxKind::Batched(write) => write.commit(audit).await?,
            TxKind::Postgres(mut tx) => {
                audit.write(&mut Exec::Postgres(&mut tx)).await?;
                tx.commit().await?
            }
        }
        Ok(())
    }
}

/// Where statements run: a connection, pooled or inside a transaction.
pub(super) enum Exec<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Exec<'_> {
    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Exec::Sqlite(_) => Dialect::Sqlite,
            Exec::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub(super) async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Exec::Sqlite(conn) => {
                sqlx::query_with(sql, arguments::<Sqlite>(params)?).execute(&mut **conn).await?.rows_affected()
            }
            Exec::Postgres(conn) => {
                sqlx::query_with(sql, arguments::<Postgres>(params)?).execute(&mut **conn).await?.rows_affected()
            }
        })
    }

    /// Every row a statement returns.
    pub(super) async fn fetch_all<T: Row>(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<T>, sqlx::Error> {
        match self {
            Exec::Sqlite(conn) => sqlx::query_as_with(sql, arguments::<Sqlite>(params)?).fetch_all(&mut **conn).await,
            Exec::Postgres(conn) => {
                sqlx::query_as_with(sql, arguments::<Postgres>(params)?).fetch_all(&mut **conn).await
            }
        }
    }

    /// The first row a statement returns, if any.
    pub(super) async fn fetch_optional<T: Row>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Option<T>, sqlx::Error> {
        match self {
            Exec::Sqlite(conn) => {
                sqlx::query_as_with(sql, arguments::<Sqlite>(params)?).fetch_optional(&mut **conn).await
            }
            Exec::Postgres(conn) => {
                sqlx::query_as_with(sql, arguments::<Postgres>(params)?).fetch_optional(&mut **conn).await
            }
        }
    }

    /// The first row a statement returns; [`sqlx::Error::RowNotFound`] without one.
    pub(super) async fn fetch_one<T: Row>(&mut self, sql: &str, params: &[Param<'_>]) -> Result<T, sqlx::Error> {
        self.fetch_optional(sql, params).await?.ok_or(sqlx::Error::RowNotFound)
    }
}

/// `params` as `DB`'s arguments; an error only if a value does not encode.
fn arguments<'q, DB>(params: &[Param<'q>]) -> Result<DB::Arguments<'q>, sqlx::Error>
where
    DB: Database,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
{
    let mut arguments = DB::Arguments::default();
    for param in params {
        match *param {
            Param::Text(text) => arguments.add(text),
            Param::Int(int) => arguments.add(int),
            Param::Bool(boolean) => arguments.add(boolean),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}

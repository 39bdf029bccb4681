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

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::StoreError;

/// The registration store in a PostgreSQL database shared by every node.
pub struct PostgresStore {
    pub(super) pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…`) and migrates it.
    /// Nodes starting together are safe: the migrator holds an advisory lock.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        // While the server is down, sqlx retries refused connections until
        // the acquire timeout (30 s by default): every API request would hang
        // that long before its 503. Five seconds covers a busy pool.
        let pool = PgPoolOptions::new().acquire_timeout(Duration::from_secs(5)).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }

    /// Starts a write transaction: READ COMMITTED, the row locks below do the rest.
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }
}

/// [`Store`](super::Store) for [`PostgresStore`], the same code as for SQLite.
mod store_impl {
    crate::store::shared::impl_store! {
        store: super::PostgresStore,
        connection: sqlx::postgres::PgConnection,
        lock_row: " FOR UPDATE",
        lock_due: " FOR UPDATE SKIP LOCKED",
    }
}

//! One behaviour, two backends: every case runs against SQLite (a temporary
//! file) and, when `POUND_TEST_DATABASE_URL` names a PostgreSQL server,
//! against PostgreSQL in a fresh database of its own (created for the test
//! and dropped after it, so the cases run in parallel). The cases are
//! grouped by job: the audit log (`audit`), verifications and their leases (`claims`), what is read
//! back and swept (`records`), API keys (`keys`), waking other nodes
//! (`signals`, PostgreSQL only), the velocity limits' counts (`velocity`)
//! and SQLite's one writer (`writer`, SQLite only).

mod audit;
mod claims;
mod keys;
mod records;
mod signals;
mod velocity;
mod writer;

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde_json::Value;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;

use super::{
    ApiKey, AttemptResult, CancelResult, LeaseState, NewVerification, Scope, Status, Store, StoreError,
    VerificationQuery, WebhookBody, open,
};
use crate::vocab::DtmfSource;
use crate::vocab::Outcome;

/// The database under test.
enum Db {
    Sqlite { url: String, _dir: tempfile::TempDir },
    Postgres { url: String, admin_url: String, name: String },
}

/// A store on a database of its own, and raw access to that database.
struct Harness {
    db: Db,
    store: Arc<dyn Store>,
}

impl Harness {
    async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        // A file that does not exist yet: `open` must create it.
        let url = format!("sqlite://{}", dir.path().join("pound.db").display());
        let store = open(&url).await.expect("open SQLite store");
        Harness { db: Db::Sqlite { url, _dir: dir }, store }
    }

    async fn postgres(admin_url: String) -> Harness {
        let name = format!("pound_test_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&admin_url).await.expect("connect to POUND_TEST_DATABASE_URL");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
        let url = with_database(&admin_url, &name);
        let store = open(&url).await.expect("open PostgreSQL store");
        Harness { db: Db::Postgres { url, admin_url, name }, store }
    }

    fn url(&self) -> &str {
        match &self.db {
            Db::Sqlite { url, .. } | Db::Postgres { url, .. } => url,
        }
    }

    /// Another handle on the same database, as a second node would open it.
    async fn another_store(&self) -> Arc<dyn Store> {
        open(self.url()).await.expect("open a second handle")
    }

    /// Runs SQL behind the store's back, as a manual edit would.
    async fn execute(&self, sql: &str) {
        match &self.db {
            Db::Sqlite { url, .. } => {
                let mut conn = SqliteConnection::connect(url).await.expect("connect");
                sqlx::raw_sql(sql).execute(&mut conn).await.expect("raw SQL");
            }
            Db::Postgres { url, .. } => {
                let mut conn = PgConnection::connect(url).await.expect("connect");
                sqlx::raw_sql(sql).execute(&mut conn).await.expect("raw SQL");
            }
        }
    }

    /// The number `sql` selects, read behind the store's back.
    async fn count(&self, sql: &str) -> i64 {
        match &self.db {
            Db::Sqlite { url, .. } => {
                let mut conn = SqliteConnection::connect(url).await.expect("connect");
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("count")
            }
            Db::Postgres { url, .. } => {
                let mut conn = PgConnection::connect(url).await.expect("connect");
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("count")
            }
        }
    }

    /// Drops a PostgreSQL test database (the SQLite file goes with its directory).
    async fn clean_up(&self) {
        if let Db::Postgres { admin_url, name, .. } = &self.db {
            let mut admin = PgConnection::connect(admin_url).await.expect("connect to POUND_TEST_DATABASE_URL");
            // FORCE: the store's pool may still hold connections.
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .expect("drop test database");
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..authority_end])
}

/// Runs `case` on SQLite, then on PostgreSQL when `POUND_TEST_DATABASE_URL`
/// names a server.
async fn on_each_backend<F, Fut>(case: F)
where
    F: Fn(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    run("SQLite", Harness::sqlite().await, &case).await;
    match postgres_admin_url() {
        Some(admin_url) => run("PostgreSQL", Harness::postgres(admin_url).await, &case).await,
        None => eprintln!("POUND_TEST_DATABASE_URL is not set: skipping the PostgreSQL run"),
    }
}

/// Runs `case` on PostgreSQL when `POUND_TEST_DATABASE_URL` names a server
/// (for what SQLite has no counterpart to).
async fn on_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    match postgres_admin_url() {
        Some(admin_url) => run("PostgreSQL", Harness::postgres(admin_url).await, case).await,
        None => eprintln!("POUND_TEST_DATABASE_URL is not set: skipping the PostgreSQL run"),
    }
}

/// The server the PostgreSQL runs create their databases on, if any.
fn postgres_admin_url() -> Option<String> {
    std::env::var("POUND_TEST_DATABASE_URL").ok()
}

/// Runs a case to the end, cleans up even when it panicked, then reports the
/// panic with the backend it happened on.
async fn run<F, Fut>(backend: &str, harness: Harness, case: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    let harness = Arc::new(harness);
    let result = CatchUnwind(Box::pin(case(harness.clone()))).await;
    harness.clean_up().await;
    if let Err(panic) = result {
        eprintln!("the case failed on {backend}");
        std::panic::resume_unwind(panic);
    }
}

/// Polls a future and turns a panic inside it into an `Err`, like
/// `tokio::spawn` does, but without asking the case's future to be `Send`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

const HOOK: &str = "https://example.test/hook";

fn request(id: &str, created_at: i64) -> NewVerification {
    NewVerification {
        id: id.to_string(),
        api_key_id: "key-1".to_string(),
        tenant: "tenant-1".to_string(),
        phone: "+14155550100".to_string(),
        user: "alice@contoso.com".to_string(),
        dialplan: "press-pound".to_string(),
        callback_url: Some(HOOK.to_string()),
        idempotency_key: None,
        request_hash: format!("hash-{id}"),
        max_attempts: 3,
        created_at,
        code: None,
        locale: None,
    }
}

async fn create(store: &Arc<dyn Store>, new: NewVerification) {
    let (_, created) = store.create_verification(&new).await.unwrap();
    assert!(created, "{} should be new", new.id);
}

fn ended(at: i64, outcome: Outcome) -> AttemptResult {
    AttemptResult {
        ended_at: at,
        answered_at: None,
        digit_at: None,
        sip_status: None,
        dtmf_source: None,
        digits: String::new(),
        outcome,
        detail: None,
        evidence: Vec::new(),
    }
}

fn ids(claimed: &[super::Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.verification.id.as_str()).collect()
}

fn tenant(name: &str) -> Scope {
    Scope::Tenant(name.to_string())
}

fn everything(scope: Scope) -> VerificationQuery {
    VerificationQuery { scope, user: None, phone: None, status: None, before: None, limit: 100 }
}

async fn listed(store: &Arc<dyn Store>, query: &VerificationQuery) -> Vec<String> {
    store.list_verifications(query).await.unwrap().into_iter().map(|v| v.id).collect()
}

/// Creates 40 due verifications, lets 8 workers on two handles of the store
/// (as two nodes) take batches with `take(store, worker)` until one comes
/// back empty, and checks that each verification was taken exactly once.
/// Returns their ids.
async fn forty_taken_once_by_eight_workers<F, Fut>(h: &Harness, take: F) -> Vec<String>
where
    F: Fn(Arc<dyn Store>, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Vec<String>> + Send,
{
    const COUNT: usize = 40;
    for i in 0..COUNT {
        create(&h.store, request(&format!("v{i:02}"), 1_000 + i as i64)).await;
    }
    let stores = [h.store.clone(), h.another_store().await];
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let (store, take) = (stores[n % 2].clone(), take.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let taken = take(store.clone(), n).await;
                    if taken.is_empty() {
                        return mine;
                    }
                    mine.extend(taken);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a verification was taken twice: {all:?}");
    assert_eq!(all.len(), COUNT);
    all
}

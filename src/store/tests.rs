//! One behaviour, two backends: every case below runs against SQLite (a
//! temporary file) and, when `POUND_TEST_DATABASE_URL` names a PostgreSQL
//! server, against PostgreSQL in a fresh database of its own (created for the
//! test and dropped after it, so the cases run in parallel).

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

/// Runs a case to the end, cleans up even when it panicked, then reports the panic.
async fn run<F, Fut>(harness: Harness, case: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    let harness = Arc::new(harness);
    let result = CatchUnwind(Box::pin(case(harness.clone()))).await;
    harness.clean_up().await;
    if let Err(panic) = result {
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

async fn run_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    run(Harness::sqlite().await, case).await;
}

async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Ok(admin_url) = std::env::var("POUND_TEST_DATABASE_URL") else {
        eprintln!("POUND_TEST_DATABASE_URL is not set: skipping the PostgreSQL run");
        return;
    };
    run(Harness::postgres(admin_url).await, case).await;
}

/// Declares every case once per backend: `store::tests::sqlite::<case>` and
/// `store::tests::postgres::<case>`.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::run_sqlite(super::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::run_postgres(super::$case).await;
                }
            )*
        }
    };
}

cases!(
    create_and_idempotent_retry,
    concurrent_creates_with_one_key_make_one_row,
    claim_takes_due_work_oldest_first,
    concurrent_claimers_never_share,
    expired_lease_is_reclaimed_and_attempt_interrupted,
    renew_lease_reports_held_cancel_and_lost,
    cancel_in_each_state,
    verified_call_registers_phone_and_queues_webhook,
    a_decided_attempt_shows_its_decision_until_the_call_ends,
    requeue_schedules_and_releases,
    webhook_outbox_lifecycle,
    rate_limit_and_cooldown_queries,
    api_keys_by_hash,
    corrupt_rows_are_errors,
    listing_is_scoped_filtered_and_paged,
    registrations_are_per_tenant,
    api_key_grants_and_secret_rotation,
    backlog_counts_claimable_work_and_pending_webhooks,
    // Key lifecycle (issue 11).
    api_keys_are_listed_revoked_and_touched,
    // Expiry (issue 11).
    overdue_open_unleased_verifications_expire_once_with_their_webhook,
    concurrent_sweeps_expire_each_verification_once,
);

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
    }
}

fn ids(claimed: &[super::Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.verification.id.as_str()).collect()
}

async fn create_and_idempotent_retry(h: Arc<Harness>) {
    let store = &h.store;
    let first = NewVerification { idempotency_key: Some("idem-1".to_string()), ..request("v1", 1_000) };
    let (created, is_new) = store.create_verification(&first).await.unwrap();
    assert!(is_new);
    assert_eq!(created.id, "v1");
    assert_eq!(created.api_key_id, "key-1");
    assert_eq!(created.user, "alice@contoso.com");
    assert_eq!(created.callback_url.as_deref(), Some(HOOK));
    assert_eq!(created.status, Status::Queued);
    assert_eq!(created.outcome, None);
    assert_eq!((created.attempt_count, created.max_attempts), (0, 3));
    assert_eq!((created.next_attempt_at, created.created_at, created.updated_at), (1_000, 1_000, 1_000));
    assert_eq!((created.lease_owner.as_deref(), created.lease_until, created.completed_at), (None, None, None));
    assert!(!created.cancel_requested);
    assert_eq!(store.verification("v1").await.unwrap(), Some(created.clone()));
    assert_eq!(store.verification("missing").await.unwrap(), None);

    // A retry of the same request under a fresh id returns the first record.
    let retry = NewVerification { id: "v1-retry".to_string(), created_at: 2_000, ..first.clone() };
    assert_eq!(store.create_verification(&retry).await.unwrap(), (created.clone(), false));
    assert_eq!(store.verification("v1-retry").await.unwrap(), None);

    // The same key with another body is a conflict.
    let other = NewVerification { id: "v1-other".to_string(), request_hash: "other".to_string(), ..first.clone() };
    assert!(matches!(store.create_verification(&other).await, Err(StoreError::IdempotencyConflict)));

    // Keys are per API key, and requests without a key never collide.
    let elsewhere = NewVerification { id: "v2".to_string(), api_key_id: "key-2".to_string(), ..first.clone() };
    assert!(store.create_verification(&elsewhere).await.unwrap().1);
    create(store, request("v3", 1_000)).await;
    create(store, request("v4", 1_000)).await;
    assert_eq!(store.count_created_since("key-1", 0).await.unwrap(), 3);
}

async fn concurrent_creates_with_one_key_make_one_row(h: Arc<Harness>) {
    let stores = [h.store.clone(), h.another_store().await];
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = stores[i % 2].clone();
            let new = NewVerification {
                id: format!("v{i}"),
                idempotency_key: Some("same".to_string()),
                request_hash: "same-body".to_string(),
                ..request("unused", 1_000)
            };
            tokio::spawn(async move { store.create_verification(&new).await.unwrap() })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(_, is_new)| *is_new).count(), 1);
    let winner = &results.iter().find(|(_, is_new)| *is_new).unwrap().0;
    assert!(results.iter().all(|(v, _)| v == winner));
    assert_eq!(h.store.count_created_since("key-1", 0).await.unwrap(), 1);
}

async fn claim_takes_due_work_oldest_first(h: Arc<Harness>) {
    let store = &h.store;
    for (id, created_at) in [("late", 300), ("early", 100), ("middle", 200), ("future", 10_000)] {
        create(store, request(id, created_at)).await;
    }
    assert!(store.claim("a", 1_000, 500, 0).await.unwrap().is_empty());

    let first = store.claim("a", 1_000, 500, 2).await.unwrap();
    assert_eq!(ids(&first), ["early", "middle"]);
    for claimed in &first {
        assert_eq!(claimed.interrupted_attempt, None);
        assert_eq!(claimed.verification.lease_owner.as_deref(), Some("a"));
        assert_eq!(claimed.verification.lease_until, Some(1_500));
        assert_eq!(claimed.verification.updated_at, 1_000);
        assert_eq!(claimed.verification.status, Status::Queued);
    }
    assert_eq!(store.verification("early").await.unwrap().unwrap().lease_owner.as_deref(), Some("a"));

    // Leased ones are not handed out again while the lease lives; the not-yet-due one waits.
    assert_eq!(ids(&store.claim("b", 1_000, 500, 10).await.unwrap()), ["late"]);
    assert!(store.claim("b", 1_400, 500, 10).await.unwrap().is_empty());

    // Finished work is never claimed, even once its time has come.
    store.complete("early", "a", Outcome::Busy, 1_100).await.unwrap();
    // Expired leases are due again, in their turn.
    assert_eq!(ids(&store.claim("c", 10_000, 500, 10).await.unwrap()), ["middle", "late", "future"]);
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

async fn concurrent_claimers_never_share(h: Arc<Harness>) {
    forty_taken_once_by_eight_workers(&h, |store, n| async move {
        let node = format!("node-{n}");
        let claimed = store.claim(&node, 5_000, 60_000, 3).await.unwrap();
        for c in &claimed {
            assert_eq!(c.verification.lease_owner.as_deref(), Some(node.as_str()));
        }
        claimed.into_iter().map(|c| c.verification.id).collect()
    })
    .await;
}

async fn expired_lease_is_reclaimed_and_attempt_interrupted(h: Arc<Harness>) {
    let store = &h.store;
    create(store, request("v1", 500)).await;
    assert_eq!(store.claim("node-a", 1_000, 100, 1).await.unwrap().len(), 1);
    store.set_status("v1", "node-a", Status::Dialing, 1_005).await.unwrap();
    assert_eq!(store.start_attempt("v1", "node-a", "call-1", 1_010).await.unwrap(), 1);

    // The lease runs to 1100 inclusive.
    assert!(store.claim("node-b", 1_100, 100, 1).await.unwrap().is_empty());
    let claimed = store.claim("node-b", 1_101, 100, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].interrupted_attempt, Some(1));
    let v = &claimed[0].verification;
    assert_eq!((v.lease_owner.as_deref(), v.lease_until), (Some("node-b"), Some(1_201)));
    assert_eq!((v.status, v.attempt_count), (Status::Dialing, 1));
    let attempts = store.attempts("v1").await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].node.as_str(), attempts[0].call_id.as_str()), ("node-a", "call-1"));
    assert_eq!((attempts[0].started_at, attempts[0].ended_at), (1_010, Some(1_101)));
    assert_eq!(attempts[0].outcome.as_deref(), Some("interrupted"));
    assert_eq!(attempts[0].detail.as_deref(), Some("node node-a stopped renewing its lease"));

    // The old node, back from the dead, can no longer change anything.
    assert_eq!(store.renew_lease("v1", "node-a", 2_000).await.unwrap(), LeaseState::Lost);
    store.set_status("v1", "node-a", Status::Ringing, 1_110).await.unwrap();
    store.requeue("v1", "node-a", 9_000, 1_110).await.unwrap();
    let result = AttemptResult { digits: "#".to_string(), ..ended(1_120, Outcome::Verified) };
    store.finish_attempt("v1", 1, &result).await.unwrap();
    assert!(store.start_attempt("v1", "node-a", "call-x", 1_120).await.is_err());
    assert!(store.complete("v1", "node-a", Outcome::Verified, 1_130).await.is_err());
    let v = store.verification("v1").await.unwrap().unwrap();
    assert_eq!(
        (v.status, v.lease_owner.as_deref(), v.next_attempt_at, v.outcome),
        (Status::Dialing, Some("node-b"), 500, None)
    );
    assert_eq!(store.attempts("v1").await.unwrap(), attempts);
    assert!(store.registrations("alice@contoso.com", &Scope::All).await.unwrap().is_empty());

    // The new owner carries on with the next attempt.
    assert_eq!(store.start_attempt("v1", "node-b", "call-2", 1_140).await.unwrap(), 2);
    assert_eq!(store.verification("v1").await.unwrap().unwrap().attempt_count, 2);
}

async fn renew_lease_reports_held_cancel_and_lost(h: Arc<Harness>) {
    let store = &h.store;
    create(store, request("v1", 0)).await;
    assert_eq!(store.renew_lease("v1", "a", 500).await.unwrap(), LeaseState::Lost, "never claimed");
    assert_eq!(store.renew_lease("missing", "a", 500).await.unwrap(), LeaseState::Lost);
    store.claim("a", 100, 100, 1).await.unwrap();

    assert_eq!(store.renew_lease("v1", "a", 1_000).await.unwrap(), LeaseState::Held);
    assert_eq!(store.verification("v1").await.unwrap().unwrap().lease_until, Some(1_000));
    assert_eq!(store.renew_lease("v1", "b", 1_000).await.unwrap(), LeaseState::Lost);

    assert!(matches!(store.cancel("v1", 500).await.unwrap(), Some(CancelResult::Requested(_))));
    assert_eq!(store.renew_lease("v1", "a", 1_500).await.unwrap(), LeaseState::CancelRequested);

    let done = store.complete("v1", "a", Outcome::Canceled, 600).await.unwrap();
    assert_eq!((done.status, done.outcome), (Status::Canceled, Some(Outcome::Canceled)));
    assert_eq!(store.renew_lease("v1", "a", 2_000).await.unwrap(), LeaseState::Lost, "final");
}

async fn cancel_in_each_state(h: Arc<Harness>) {
    let store = &h.store;
    assert_eq!(store.cancel("missing", 0).await.unwrap(), None);

    // Queued: canceled at once, the webhook queued.
    create(store, request("queued", 0)).await;
    let Some(CancelResult::Canceled(v)) = store.cancel("queued", 50).await.unwrap() else { panic!("not canceled") };
    assert_eq!(
        (v.status, v.outcome, v.completed_at, v.updated_at),
        (Status::Canceled, Some(Outcome::Canceled), Some(50), 50)
    );
    let hooks = store.webhooks_for("queued").await.unwrap();
    assert_eq!(hooks.len(), 1);
    let body: WebhookBody = serde_json::from_str(&hooks[0].payload).unwrap();
    assert_eq!(body.verification.verification.status, Status::Canceled);
    assert!(matches!(store.cancel("queued", 60).await.unwrap(), Some(CancelResult::AlreadyFinal(_))));
    assert_eq!(store.webhooks_for("queued").await.unwrap().len(), 1, "no second webhook");
    assert!(store.claim("a", 1_000, 100, 10).await.unwrap().is_empty());

    // Running on a live node: only requested, the node keeps its lease.
    create(store, request("running", 2_000)).await;
    store.claim("a", 2_000, 1_000, 1).await.unwrap();
    store.set_status("running", "a", Status::Ringing, 2_010).await.unwrap();
    let Some(CancelResult::Requested(v)) = store.cancel("running", 3_000).await.unwrap() else {
        panic!("not requested")
    };
    assert_eq!((v.status, v.cancel_requested, v.lease_owner.as_deref()), (Status::Ringing, true, Some("a")));
    assert!(matches!(store.cancel("running", 3_000).await.unwrap(), Some(CancelResult::Requested(_))));
    assert!(store.webhooks_for("running").await.unwrap().is_empty());

    // Its node died: canceled, the open attempt closed as interrupted.
    store.start_attempt("running", "a", "call-1", 2_020).await.unwrap();
    let Some(CancelResult::Canceled(v)) = store.cancel("running", 3_001).await.unwrap() else { panic!("not canceled") };
    assert_eq!((v.status, v.lease_owner, v.lease_until), (Status::Canceled, None, None));
    let attempts = store.attempts("running").await.unwrap();
    assert_eq!((attempts[0].ended_at, attempts[0].outcome.as_deref()), (Some(3_001), Some("interrupted")));
    let payload: Value = serde_json::from_str(&store.webhooks_for("running").await.unwrap()[0].payload).unwrap();
    assert_eq!(payload["verification"]["attempts"][0]["outcome"], "interrupted");

    // Completed: nothing changes.
    create(store, request("done", 4_000)).await;
    store.claim("a", 4_000, 1_000, 1).await.unwrap();
    store.complete("done", "a", Outcome::NoAnswer, 4_100).await.unwrap();
    let Some(CancelResult::AlreadyFinal(v)) = store.cancel("done", 4_200).await.unwrap() else { panic!("not final") };
    assert_eq!((v.status, v.outcome, v.completed_at), (Status::Completed, Some(Outcome::NoAnswer), Some(4_100)));

    // Without a callback URL nothing is queued.
    create(store, NewVerification { callback_url: None, ..request("quiet", 5_000) }).await;
    assert!(matches!(store.cancel("quiet", 5_000).await.unwrap(), Some(CancelResult::Canceled(_))));
    assert!(store.webhooks_for("quiet").await.unwrap().is_empty());
}

async fn verified_call_registers_phone_and_queues_webhook(h: Arc<Harness>) {
    let store = &h.store;
    create(store, request("v1", 1_000)).await;
    store.claim("a", 1_000, 30_000, 1).await.unwrap();
    store.set_status("v1", "a", Status::Dialing, 1_001).await.unwrap();
    assert_eq!(store.start_attempt("v1", "a", "call-1@pound", 1_002).await.unwrap(), 1);
    store.set_status("v1", "a", Status::Ringing, 1_500).await.unwrap();
    store.set_status("v1", "a", Status::Answered, 3_000).await.unwrap();
    // Final statuses only come from complete.
    store.set_status("v1", "a", Status::Completed, 3_001).await.unwrap();
    assert_eq!(store.verification("v1").await.unwrap().unwrap().status, Status::Answered);

    let result = AttemptResult {
        answered_at: Some(3_000),
        digit_at: Some(4_000),
        sip_status: Some(200),
        dtmf_source: Some(DtmfSource::Rfc4733),
        digits: "#".to_string(),
        detail: Some("pressed".to_string()),
        ..ended(4_500, Outcome::Verified)
    };
    store.finish_attempt("v1", 1, &result).await.unwrap();
    let done = store.complete("v1", "a", Outcome::Verified, 4_600).await.unwrap();
    assert_eq!((done.status, done.outcome), (Status::Completed, Some(Outcome::Verified)));
    assert_eq!(
        (done.completed_at, done.updated_at, done.lease_owner.as_deref(), done.lease_until),
        (Some(4_600), 4_600, None, None)
    );
    assert_eq!(store.verification("v1").await.unwrap(), Some(done.clone()));

    let attempts = store.attempts("v1").await.unwrap();
    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    assert_eq!((attempt.number, attempt.node.as_str(), attempt.call_id.as_str()), (1, "a", "call-1@pound"));
    assert_eq!(
        (attempt.started_at, attempt.answered_at, attempt.digit_at, attempt.ended_at),
        (1_002, Some(3_000), Some(4_000), Some(4_500))
    );
    assert_eq!(
        (attempt.sip_status, attempt.dtmf_source, attempt.digits.as_str()),
        (Some(200), Some(DtmfSource::Rfc4733), "#")
    );
    assert_eq!((attempt.outcome.as_deref(), attempt.detail.as_deref()), (Some("verified"), Some("pressed")));

    let registrations = store.registrations("alice@contoso.com", &Scope::All).await.unwrap();
    assert_eq!(registrations.len(), 1);
    assert_eq!(
        (registrations[0].phone.as_str(), registrations[0].method.as_str(), registrations[0].verified_at),
        ("+14155550100", "voice", 4_600)
    );
    assert_eq!(registrations[0].verification_id, "v1");

    let hooks = store.webhooks_for("v1").await.unwrap();
    assert_eq!(hooks.len(), 1);
    let hook = &hooks[0];
    assert!(hook.id.starts_with("w_") && hook.id.len() == 18 && hook.id[2..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        (hook.url.as_str(), hook.attempts, hook.next_attempt_at, hook.created_at),
        (HOOK, 0, Some(4_600), 4_600)
    );
    assert_eq!((hook.delivered_at, hook.last_error.as_deref(), hook.gave_up), (None, None, false));

    let body: WebhookBody = serde_json::from_str(&hook.payload).unwrap();
    assert_eq!(body.event, "verification.completed");
    assert_eq!(body.verification.attempts, attempts);
    let json: Value = serde_json::from_str(&hook.payload).unwrap();
    let record = &json["verification"];
    assert_eq!(record["id"], "v1");
    assert_eq!(record["status"], "completed");
    assert_eq!(record["outcome"], "verified");
    assert_eq!(record["phone"], "+14155550100");
    assert_eq!(record["callback_url"], HOOK);
    assert_eq!(record["completed_at"], 4_600);
    assert_eq!(record["attempts"][0]["dtmf_source"], "rfc4733");
    assert_eq!(record["attempts"][0]["sip_status"], 200);
    for internal in ["api_key_id", "lease_owner", "lease_until", "next_attempt_at", "cancel_requested"] {
        assert!(record.get(internal).is_none(), "{internal} leaked into the webhook");
    }

    // Re-verifying the same phone moves verified_at; another phone is listed newest first.
    for (id, phone, at) in [("v2", "+14155550100", 9_000), ("v3", "+14155550199", 7_000)] {
        create(store, NewVerification { phone: phone.to_string(), callback_url: None, ..request(id, at) }).await;
        store.claim("a", at, 1_000, 1).await.unwrap();
        store.complete(id, "a", Outcome::Verified, at + 10).await.unwrap();
    }
    let registrations = store.registrations("alice@contoso.com", &Scope::All).await.unwrap();
    let summary: Vec<_> =
        registrations.iter().map(|r| (r.phone.as_str(), r.verified_at, r.verification_id.as_str())).collect();
    assert_eq!(summary, [("+14155550100", 9_010, "v2"), ("+14155550199", 7_010, "v3")]);
    assert!(store.registrations("bob@contoso.com", &Scope::All).await.unwrap().is_empty());
    assert!(store.webhooks_for("v2").await.unwrap().is_empty(), "no callback URL, no webhook");
}

async fn a_decided_attempt_shows_its_decision_until_the_call_ends(h: Arc<Harness>) {
    let store = &h.store;
    create(store, request("v1", 1_000)).await;
    store.claim("a", 1_000, 60_000, 1).await.unwrap();
    assert_eq!(store.start_attempt("v1", "a", "call-1@pound", 1_002).await.unwrap(), 1);
    let decided = AttemptResult {
        answered_at: Some(3_000),
        digit_at: Some(4_000),
        sip_status: Some(200),
        dtmf_source: Some(DtmfSource::Rfc4733),
        digits: "#".to_string(),
        detail: Some("not written yet".to_string()),
        ..ended(4_000, Outcome::Verified)
    };
    store.decide_attempt("v1", 1, &decided).await.unwrap();
    store.complete("v1", "a", Outcome::Verified, 4_010).await.unwrap();
    let attempt = store.attempts("v1").await.unwrap().remove(0);
    assert_eq!(
        (attempt.answered_at, attempt.digit_at, attempt.sip_status, attempt.dtmf_source),
        (Some(3_000), Some(4_000), Some(200), Some(DtmfSource::Rfc4733))
    );
    assert_eq!((attempt.digits.as_str(), attempt.outcome.as_deref()), ("#", Some("verified")));
    assert_eq!((attempt.ended_at, attempt.detail), (None, None), "the call still runs");
    // The webhook queued by the completion carries the decided attempt.
    let hooks = store.webhooks_for("v1").await.unwrap();
    let body: Value = serde_json::from_str(&hooks[0].payload).unwrap();
    assert_eq!(body["verification"]["attempts"][0]["outcome"], "verified", "{body}");

    // The call's end closes it, on the completed verification.
    let result = AttemptResult { detail: Some("confirmed".to_string()), ..decided.clone() };
    store.finish_attempt("v1", 1, &AttemptResult { ended_at: 9_000, ..result }).await.unwrap();
    let attempt = store.attempts("v1").await.unwrap().remove(0);
    assert_eq!((attempt.ended_at, attempt.detail.as_deref()), (Some(9_000), Some("confirmed")));
    // A closed attempt is not decided again.
    store.decide_attempt("v1", 1, &AttemptResult { digits: "1#".to_string(), ..decided }).await.unwrap();
    assert_eq!(store.attempts("v1").await.unwrap()[0].digits, "#");
}

async fn requeue_schedules_and_releases(h: Arc<Harness>) {
    let store = &h.store;
    create(store, request("v1", 1_000)).await;
    store.claim("a", 1_000, 10_000, 1).await.unwrap();
    store.set_status("v1", "a", Status::Ringing, 1_100).await.unwrap();
    assert_eq!(store.start_attempt("v1", "a", "call-1", 1_100).await.unwrap(), 1);
    store.finish_attempt("v1", 1, &ended(1_900, Outcome::NoAnswer)).await.unwrap();

    store.requeue("v1", "intruder", 2_500, 1_950).await.unwrap();
    assert_eq!(store.verification("v1").await.unwrap().unwrap().lease_owner.as_deref(), Some("a"));

    store.requeue("v1", "a", 5_000, 2_000).await.unwrap();
    let v = store.verification("v1").await.unwrap().unwrap();
    assert_eq!((v.status, v.next_attempt_at, v.updated_at), (Status::Queued, 5_000, 2_000));
    assert_eq!((v.lease_owner, v.lease_until, v.attempt_count), (None, None, 1));

    assert!(store.claim("b", 4_999, 1_000, 1).await.unwrap().is_empty());
    let claimed = store.claim("b", 5_000, 1_000, 1).await.unwrap();
    assert_eq!(ids(&claimed), ["v1"]);
    assert_eq!(claimed[0].interrupted_attempt, None, "a released lease interrupts nothing");
    assert_eq!(store.start_attempt("v1", "b", "call-2", 5_010).await.unwrap(), 2);
    let numbers: Vec<u32> = store.attempts("v1").await.unwrap().iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2]);
}

async fn webhook_outbox_lifecycle(h: Arc<Harness>) {
    let store = &h.store;
    for (id, at) in [("v2", 200), ("v1", 100), ("v3", 300)] {
        create(store, request(id, at)).await;
        store.cancel(id, at).await.unwrap();
    }
    let hook_of = |id: &str| {
        let store = store.clone();
        let id = id.to_string();
        async move { store.webhooks_for(&id).await.unwrap().remove(0) }
    };
    assert!(store.due_webhooks(99, 1_000, 10).await.unwrap().is_empty());
    assert!(store.due_webhooks(1_000, 1_000, 0).await.unwrap().is_empty());

    let due = store.due_webhooks(250, 1_000, 10).await.unwrap();
    let order: Vec<&str> = due.iter().map(|w| w.verification_id.as_str()).collect();
    assert_eq!(order, ["v1", "v2"]);
    assert!(due.iter().all(|w| w.next_attempt_at == Some(1_250) && w.attempts == 0));
    assert!(!due[0].payload.is_empty());
    // Soft-leased: not handed out again until the lease runs out.
    assert_eq!(
        store
            .due_webhooks(300, 1_000, 10)
            .await
            .unwrap()
            .iter()
            .map(|w| w.verification_id.as_str())
            .collect::<Vec<_>>(),
        ["v3"]
    );
    assert_eq!(store.due_webhooks(1_250, 1_000, 1).await.unwrap().len(), 1, "limit");

    store.webhook_delivered(&due[0].id, 1_300).await.unwrap();
    let delivered = hook_of("v1").await;
    assert_eq!((delivered.delivered_at, delivered.next_attempt_at, delivered.attempts), (Some(1_300), None, 1));
    store.webhook_delivered(&due[0].id, 1_400).await.unwrap();
    assert_eq!(hook_of("v1").await, delivered, "a repeated success changes nothing");

    store.webhook_failed(&due[1].id, "HTTP 503", Some(5_000)).await.unwrap();
    let failed = hook_of("v2").await;
    assert_eq!(
        (failed.attempts, failed.last_error.as_deref(), failed.next_attempt_at),
        (1, Some("HTTP 503"), Some(5_000))
    );
    assert!(!failed.gave_up);
    let due_later: Vec<String> =
        store.due_webhooks(4_999, 10, 10).await.unwrap().into_iter().map(|w| w.verification_id).collect();
    assert_eq!(due_later, ["v3"]);
    let retry = store.due_webhooks(5_000, 10, 10).await.unwrap();
    assert_eq!((retry.len(), retry[0].verification_id.as_str()), (1, "v2"));

    store.webhook_failed(&retry[0].id, "connection refused", None).await.unwrap();
    let given_up = hook_of("v2").await;
    assert_eq!((given_up.attempts, given_up.next_attempt_at, given_up.gave_up), (2, None, true));
    assert_eq!(given_up.last_error.as_deref(), Some("connection refused"));
    assert_eq!(
        store.due_webhooks(1_000_000, 10, 10).await.unwrap().into_iter().map(|w| w.verification_id).collect::<Vec<_>>(),
        ["v3"]
    );
}

async fn rate_limit_and_cooldown_queries(h: Arc<Harness>) {
    let store = &h.store;
    create(store, request("a1", 1_000)).await;
    create(store, NewVerification { phone: "+14155550199".to_string(), ..request("a2", 2_000) }).await;
    create(store, request("a3", 3_000)).await;
    create(store, NewVerification { api_key_id: "key-2".to_string(), ..request("b1", 4_000) }).await;

    assert_eq!(store.count_created_since("key-1", 0).await.unwrap(), 3);
    assert_eq!(store.count_created_since("key-1", 2_000).await.unwrap(), 2, "inclusive");
    assert_eq!(store.count_created_since("key-1", 3_001).await.unwrap(), 0);
    assert_eq!(store.count_created_since("key-2", 0).await.unwrap(), 1);
    assert_eq!(store.count_created_since("key-3", 0).await.unwrap(), 0);
}

async fn api_keys_by_hash(h: Arc<Harness>) {
    let store = &h.store;
    let key = ApiKey {
        id: "k1".to_string(),
        name: "registration service".to_string(),
        hash: "ab12".to_string(),
        created_at: 42,
        tenant: None,
        admin: false,
        webhook_secret: None,
        previous_webhook_secret: None,
        previous_secret_until: None,
        revoked_at: None,
        last_used_at: None,
    };
    store.insert_api_key(&key).await.unwrap();
    assert_eq!(store.api_key_by_hash("ab12").await.unwrap(), Some(key.clone()));
    assert_eq!(store.api_key_by_hash("cd34").await.unwrap(), None);
    let same_hash = ApiKey { id: "k2".to_string(), ..key };
    assert!(matches!(store.insert_api_key(&same_hash).await, Err(StoreError::Database(_))));
}

async fn corrupt_rows_are_errors(h: Arc<Harness>) {
    let store = &h.store;
    for id in ["status", "outcome", "count", "fine"] {
        create(store, request(id, 100)).await;
    }
    h.execute("UPDATE verifications SET status = 'bogus' WHERE id = 'status'").await;
    h.execute("UPDATE verifications SET outcome = 'maybe' WHERE id = 'outcome'").await;
    h.execute("UPDATE verifications SET attempt_count = -1 WHERE id = 'count'").await;
    for id in ["status", "outcome", "count"] {
        assert!(matches!(store.verification(id).await, Err(StoreError::Corrupt(_))), "{id}");
        assert!(matches!(store.cancel(id, 200).await, Err(StoreError::Corrupt(_))), "{id}");
    }
    // A corrupt row does not stall the queue: the readable one is still handed out.
    assert_eq!(ids(&store.claim("a", 1_000, 100, 10).await.unwrap()), ["fine"]);

    assert_eq!(store.start_attempt("fine", "a", "call-1", 1_000).await.unwrap(), 1);
    h.execute("UPDATE attempts SET dtmf_source = 'smoke signals' WHERE verification_id = 'fine'").await;
    assert!(matches!(store.attempts("fine").await, Err(StoreError::Corrupt(_))));
    h.execute("UPDATE attempts SET dtmf_source = NULL, sip_status = 70000 WHERE verification_id = 'fine'").await;
    assert!(matches!(store.attempts("fine").await, Err(StoreError::Corrupt(_))));
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

async fn listing_is_scoped_filtered_and_paged(h: Arc<Harness>) {
    let store = &h.store;
    // Two share a creation time: the id breaks the tie, so paging never skips or repeats one.
    for (id, at, tenant_name, user, phone) in [
        ("a1", 1_000, "t1", "alice", "+14155550100"),
        ("a2", 2_000, "t1", "bob", "+14155550101"),
        ("a3", 2_000, "t1", "alice", "+14155550102"),
        ("b1", 3_000, "t2", "alice", "+14155550100"),
        ("a4", 4_000, "t1", "alice", "+14155550100"),
    ] {
        let new = NewVerification {
            tenant: tenant_name.to_string(),
            user: user.to_string(),
            phone: phone.to_string(),
            ..request(id, at)
        };
        create(store, new).await;
    }
    assert_eq!(listed(store, &everything(tenant("t1"))).await, ["a4", "a3", "a2", "a1"]);
    assert_eq!(listed(store, &everything(tenant("t2"))).await, ["b1"]);
    assert!(listed(store, &everything(tenant("t3"))).await.is_empty());
    assert_eq!(listed(store, &everything(Scope::All)).await, ["a4", "b1", "a3", "a2", "a1"]);

    let alice = VerificationQuery { user: Some("alice".into()), ..everything(tenant("t1")) };
    assert_eq!(listed(store, &alice).await, ["a4", "a3", "a1"]);
    let phone = VerificationQuery { phone: Some("+14155550100".into()), ..everything(Scope::All) };
    assert_eq!(listed(store, &phone).await, ["a4", "b1", "a1"]);
    store.claim("n", 10_000, 1_000, 10).await.unwrap();
    store.complete("a2", "n", Outcome::Verified, 10_000).await.unwrap();
    let completed = VerificationQuery { status: Some(Status::Completed), ..everything(tenant("t1")) };
    assert_eq!(listed(store, &completed).await, ["a2"]);

    // Pages of two, each continuing after the last item of the one before.
    let mut pages = Vec::new();
    let mut query = VerificationQuery { limit: 2, ..everything(tenant("t1")) };
    loop {
        let page = store.list_verifications(&query).await.unwrap();
        let Some(last) = page.last() else { break };
        query.before = Some((last.created_at, last.id.clone()));
        pages.push(page.iter().map(|v| v.id.clone()).collect::<Vec<_>>());
    }
    assert_eq!(pages, [vec!["a4", "a3"], vec!["a2", "a1"]]);
}

async fn registrations_are_per_tenant(h: Arc<Harness>) {
    let store = &h.store;
    // The same user name and phone, verified through two tenants.
    for (id, tenant_name, at) in [("t1-v", "t1", 1_000), ("t2-v", "t2", 2_000)] {
        create(store, NewVerification { tenant: tenant_name.to_string(), callback_url: None, ..request(id, at) }).await;
        store.claim("n", at, 100, 1).await.unwrap();
        store.complete(id, "n", Outcome::Verified, at + 10).await.unwrap();
    }
    let seen = |scope: Scope| async move {
        let registrations = store.registrations("alice@contoso.com", &scope).await.unwrap();
        registrations.into_iter().map(|r| (r.tenant, r.verification_id)).collect::<Vec<_>>()
    };
    assert_eq!(seen(tenant("t1")).await, [("t1".to_string(), "t1-v".to_string())]);
    assert_eq!(seen(tenant("t2")).await, [("t2".to_string(), "t2-v".to_string())]);
    assert!(seen(tenant("t3")).await.is_empty());
    assert_eq!(seen(Scope::All).await.len(), 2, "one row per tenant, neither overwrote the other");
}

async fn api_key_grants_and_secret_rotation(h: Arc<Harness>) {
    let store = &h.store;
    let admin = ApiKey {
        id: "k_admin".to_string(),
        name: "ops".to_string(),
        hash: "11".to_string(),
        created_at: 1,
        tenant: Some("operators".to_string()),
        admin: true,
        webhook_secret: Some("whsec_one".to_string()),
        previous_webhook_secret: None,
        previous_secret_until: None,
        revoked_at: None,
        last_used_at: None,
    };
    let plain =
        ApiKey { id: "k_plain".to_string(), hash: "22".to_string(), tenant: None, admin: false, ..admin.clone() };
    store.insert_api_key(&admin).await.unwrap();
    store.insert_api_key(&plain).await.unwrap();
    assert_eq!(store.api_key_by_hash("11").await.unwrap(), Some(admin.clone()));
    assert_eq!(store.api_key_by_id("k_plain").await.unwrap(), Some(plain.clone()));
    assert_eq!(store.api_key_by_id("nope").await.unwrap(), None);
    assert_eq!(admin.effective_tenant(), "operators");
    assert_eq!(plain.effective_tenant(), "k_plain", "a key without a tenant is its own");
    assert!(!format!("{admin:?}").contains("whsec_one"), "Debug hides the secret");

    let by_name: Vec<String> = store.api_keys_named("ops").await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(by_name, ["k_admin", "k_plain"]);
    assert_eq!(store.api_keys_named("k_plain").await.unwrap(), std::slice::from_ref(&plain));
    assert!(store.api_keys_named("nobody").await.unwrap().is_empty());

    assert_eq!(plain.signing_secrets(0), ["whsec_one"]);
    assert!(store.set_webhook_secret("k_plain", "whsec_two", 5_000).await.unwrap());
    let rotated = store.api_key_by_id("k_plain").await.unwrap().unwrap();
    assert_eq!(rotated.webhook_secret.as_deref(), Some("whsec_two"));
    assert_eq!(
        (rotated.previous_webhook_secret.as_deref(), rotated.previous_secret_until),
        (Some("whsec_one"), Some(5_000)),
        "the secret it replaced is kept for the overlap"
    );
    assert_eq!(rotated.signing_secrets(4_999), ["whsec_two", "whsec_one"], "both sign, the new one first");
    assert_eq!(rotated.signing_secrets(5_000), ["whsec_two"], "the overlap is over");
    assert!(!format!("{rotated:?}").contains("whsec_"), "Debug hides both secrets");
    assert!(store.set_webhook_secret("k_plain", "whsec_three", 6_000).await.unwrap());
    let again = store.api_key_by_id("k_plain").await.unwrap().unwrap();
    assert_eq!(again.signing_secrets(0), ["whsec_three", "whsec_two"], "only one previous secret is kept");
    assert_eq!(store.api_key_by_id("k_admin").await.unwrap().unwrap().webhook_secret.as_deref(), Some("whsec_one"));
    assert!(!store.set_webhook_secret("nope", "x", 0).await.unwrap());
}

// Key lifecycle (issue 11).

async fn api_keys_are_listed_revoked_and_touched(h: Arc<Harness>) {
    let store = &h.store;
    let first = ApiKey {
        id: "k_b".to_string(),
        name: "ci".to_string(),
        hash: "aa".to_string(),
        created_at: 10,
        tenant: None,
        admin: false,
        webhook_secret: Some("whsec_ci".to_string()),
        previous_webhook_secret: None,
        previous_secret_until: None,
        revoked_at: None,
        last_used_at: None,
    };
    let second = ApiKey { id: "k_a".to_string(), hash: "bb".to_string(), created_at: 20, ..first.clone() };
    store.insert_api_key(&second).await.unwrap();
    store.insert_api_key(&first).await.unwrap();
    let listed: Vec<String> = store.list_api_keys().await.unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(listed, ["k_b", "k_a"], "oldest first");

    assert!(store.revoke_api_key("k_b", 1_000).await.unwrap());
    assert!(store.revoke_api_key("k_b", 2_000).await.unwrap(), "revoking again is no error");
    let revoked = store.api_key_by_hash("aa").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(1_000), "the first revocation's time is kept");
    let signer = store.api_key_by_id("k_b").await.unwrap().unwrap();
    assert_eq!(signer.signing_secrets(0), ["whsec_ci"], "its queued webhooks are still signed");
    assert_eq!(store.api_key_by_hash("bb").await.unwrap().unwrap().revoked_at, None);
    assert!(!store.revoke_api_key("nope", 1_000).await.unwrap());

    let last_used = |id: &'static str| async move { store.api_key_by_id(id).await.unwrap().unwrap().last_used_at };
    store.touch_api_key("k_a", 100_000).await.unwrap();
    assert_eq!(last_used("k_a").await, Some(100_000));
    store.touch_api_key("k_a", 100_000 + super::LAST_USED_EVERY_MS - 1).await.unwrap();
    assert_eq!(last_used("k_a").await, Some(100_000), "not rewritten within a minute");
    store.touch_api_key("k_a", 100_000 + super::LAST_USED_EVERY_MS).await.unwrap();
    assert_eq!(last_used("k_a").await, Some(100_000 + super::LAST_USED_EVERY_MS));
    assert_eq!(last_used("k_b").await, None);
}

/// Rows written before migration 0002 stay with the key that created them.
async fn upgrade_keeps_old_rows_with_their_key(url: &str) {
    let old_rows = "INSERT INTO api_keys (id, name, hash, created_at) VALUES ('k_old', 'old', 'ff', 1); \
        INSERT INTO verifications (id, api_key_id, phone, user_name, dialplan, status, max_attempts, \
        next_attempt_at, request_hash, created_at, updated_at) \
        VALUES ('old1', 'k_old', '+14155550100', 'alice', 'press-pound', 'completed', 3, 1, 'h', 1, 1); \
        INSERT INTO registrations (user_name, phone, method, verified_at, verification_id) \
        VALUES ('alice', '+14155550100', 'voice', 2, 'old1');";
    // Only 0001, as a store from before tenancy was migrated.
    let first_only = |mut migrator: sqlx::migrate::Migrator| {
        migrator.migrations = migrator.migrations.iter().filter(|m| m.version == 1).cloned().collect();
        migrator
    };
    if url.starts_with("sqlite:") {
        let options = url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        first_only(sqlx::migrate!("./migrations/sqlite")).run(&pool).await.unwrap();
        sqlx::raw_sql(old_rows).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        first_only(sqlx::migrate!("./migrations/postgres")).run(&pool).await.unwrap();
        sqlx::raw_sql(old_rows).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let store = open(url).await.expect("0002 applies over 0001 with rows in it");
    assert_eq!(store.verification("old1").await.unwrap().unwrap().tenant, "k_old");
    assert_eq!(store.registrations("alice", &tenant("k_old")).await.unwrap().len(), 1);
    assert!(store.registrations("alice", &tenant("k_new")).await.unwrap().is_empty());
    assert_eq!(listed(&store, &everything(tenant("k_old"))).await, ["old1"]);
    let key = store.api_key_by_id("k_old").await.unwrap().unwrap();
    assert_eq!((key.effective_tenant(), key.admin, key.signing_secrets(0)), ("k_old", false, vec![]));
}

#[tokio::test]
async fn sqlite_upgrade_keeps_old_rows_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    upgrade_keeps_old_rows_with_their_key(&format!("sqlite://{}", dir.path().join("old.db").display())).await;
}

#[tokio::test]
async fn postgres_upgrade_keeps_old_rows_with_their_key() {
    let Ok(admin_url) = std::env::var("POUND_TEST_DATABASE_URL") else {
        eprintln!("POUND_TEST_DATABASE_URL is not set: skipping the PostgreSQL run");
        return;
    };
    let name = format!("pound_test_{:016x}", rand::random::<u64>());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let url = with_database(&admin_url, &name);
    let result = CatchUnwind(Box::pin(upgrade_keeps_old_rows_with_their_key(&url))).await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

// Operations metrics (issue 11).

async fn backlog_counts_claimable_work_and_pending_webhooks(h: Arc<Harness>) {
    let store = &h.store;
    let backlog = |now: i64| {
        let store = store.clone();
        async move {
            let b = store.backlog(now).await.unwrap();
            (b.queue_depth, b.webhooks_pending)
        }
    };
    assert_eq!(backlog(0).await, (0, 0));
    for (id, at) in [("v1", 100), ("v2", 200), ("v3", 300)] {
        create(store, request(id, at)).await;
    }
    assert_eq!(backlog(250).await, (2, 0), "v3 is not due yet");
    assert_eq!(ids(&store.claim("node-a", 250, 1_000, 1).await.unwrap()), ["v1"]);
    assert_eq!(backlog(260).await, (1, 0), "a leased verification is not waiting");
    store.complete("v1", "node-a", Outcome::Verified, 300).await.unwrap();
    assert_eq!(backlog(300).await, (2, 1), "its webhook waits in the outbox");
    assert_eq!(ids(&store.claim("node-a", 400, 10, 1).await.unwrap()), ["v2"]);
    assert_eq!(backlog(405).await, (1, 1));
    assert_eq!(backlog(411).await, (2, 1), "an expired lease is claimable again");
    let due = store.due_webhooks(500, 1_000, 10).await.unwrap();
    assert_eq!(backlog(501).await, (2, 1), "a webhook being sent is still pending");
    store.webhook_delivered(&due[0].id, 600).await.unwrap();
    assert_eq!(backlog(601).await, (2, 0));
    store.cancel("v3", 700).await.unwrap();
    let due = store.due_webhooks(800, 1_000, 10).await.unwrap();
    store.webhook_failed(&due[0].id, "HTTP 5xx", None).await.unwrap();
    assert_eq!(backlog(900).await, (1, 0), "canceled and given up are not waiting");
}

// Expiry (issue 11).

async fn overdue_open_unleased_verifications_expire_once_with_their_webhook(h: Arc<Harness>) {
    let store = &h.store;
    for (id, at) in [("queued", 1_000), ("fresh", 5_000), ("in-call", 1_000), ("dead-node", 1_000), ("done", 1_000)] {
        create(store, request(id, at)).await;
    }
    let claim = |node: &'static str, lease: i64| {
        let store = store.clone();
        async move { store.claim(node, 1_500, lease, 1).await.unwrap().remove(0).verification.id }
    };
    // Claims of rows due at once go by id.
    assert_eq!(claim("gone", 100).await, "dead-node");
    assert_eq!(store.start_attempt("dead-node", "gone", "call-1", 1_510).await.unwrap(), 1);
    assert_eq!(claim("n", 100).await, "done");
    store.complete("done", "n", Outcome::NoAnswer, 1_520).await.unwrap();
    assert_eq!(claim("live", 1_000_000).await, "in-call");

    let mut expired: Vec<String> =
        store.expire_overdue(2_000, 3_000, 10).await.unwrap().into_iter().map(|v| v.id).collect();
    expired.sort();
    assert_eq!(expired, ["dead-node", "queued"], "not the fresh one, the one in a live call, or the completed one");
    for id in ["queued", "dead-node"] {
        let v = store.verification(id).await.unwrap().unwrap();
        assert_eq!((v.status, v.outcome, v.completed_at, v.lease_owner), (Status::Expired, None, Some(3_000), None));
        let hooks = store.webhooks_for(id).await.unwrap();
        assert_eq!(hooks.len(), 1, "{id}");
        let body: WebhookBody = serde_json::from_str(&hooks[0].payload).unwrap();
        assert_eq!(
            (body.event.as_str(), body.verification.verification.status),
            ("verification.completed", Status::Expired)
        );
    }
    let attempts = store.attempts("dead-node").await.unwrap();
    assert_eq!((attempts[0].outcome.as_deref(), attempts[0].ended_at), (Some("interrupted"), Some(3_000)));

    assert!(store.expire_overdue(2_000, 4_000, 10).await.unwrap().is_empty(), "expired once");
    assert!(store.expire_overdue(2_000, 4_000, 0).await.unwrap().is_empty());
    // Never dialled again, even when due.
    assert!(store.claim("n", 10_000, 100, 10).await.unwrap().iter().all(|c| c.verification.id == "fresh"));
    // The live call's own node finishes it as usual.
    assert_eq!(store.complete("in-call", "live", Outcome::Verified, 4_000).await.unwrap().status, Status::Completed);
}

async fn concurrent_sweeps_expire_each_verification_once(h: Arc<Harness>) {
    let expired = forty_taken_once_by_eight_workers(&h, |store, _| async move {
        store.expire_overdue(10_000, 20_000, 3).await.unwrap().into_iter().map(|v| v.id).collect()
    })
    .await;
    for id in &expired {
        assert_eq!(h.store.webhooks_for(id).await.unwrap().len(), 1, "one webhook for {id}");
    }
}

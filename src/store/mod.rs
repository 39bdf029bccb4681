//! The registration store: verification requests, call attempts, outcomes,
//! the phones registered per user, API keys and the webhook outbox.
//!
//! [`Store`] is the contract; SQLite (`sqlite`) is the embedded default (one
//! process), PostgreSQL ([`postgres`]) is how several nodes share work. One
//! implementation serves both (`sql`): plain functions per job
//! (`verifications`, `leases`, `keys`, `outbox`) over a small database
//! interface (`db`) whose dialect holds the few fragments that differ. Times
//! are Unix milliseconds everywhere, so both backends store plain integers.
//!
//! Work is handed out with leases: [`Store::claim`] gives a node the
//! verifications that are due and not leased by a live node, the node renews
//! its lease while the call runs, and a lease that expires (the node died)
//! makes the verification claimable again, its open attempt recorded as
//! `interrupted`. A verification is never dialled by two nodes at once and
//! never lost.

mod admission;
mod audit;
mod audit_verify;
mod batch;
mod common;
mod db;
mod keys;
mod leases;
mod outbox;
pub mod postgres;
mod queries;
mod sql;
mod sqlite;
#[cfg(test)]
mod tests;
pub mod velocity;
mod verifications;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::audit::{AttemptFacts, AuditEntry, AuditFacts, WebhookFacts};
pub use self::audit_verify::{AuditProblem, AuditReport};
use crate::clock::Clock;
use crate::code::Code;
use crate::evidence::KeyEvidence;
use crate::vocab::DtmfSource;
use crate::vocab::Outcome;

/// Where a verification is in its lifecycle (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Dialing,
    Ringing,
    Answered,
    Completed,
    Canceled,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Dialing => "dialing",
            Status::Ringing => "ringing",
            Status::Answered => "answered",
            Status::Completed => "completed",
            Status::Canceled => "canceled",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Queued,
            Status::Dialing,
            Status::Ringing,
            Status::Answered,
            Status::Completed,
            Status::Canceled,
            Status::Expired,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
    }

    /// Whether nothing more will happen to the verification.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Canceled | Status::Expired)
    }
}

/// A verification request as the API accepted it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVerification {
    /// Chosen by the caller of the store (random, URL-safe).
    pub id: String,
    pub api_key_id: String,
    /// Who may see it: the tenant of the API key that created it.
    pub tenant: String,
    /// E.164, validated.
    pub phone: String,
    pub user: String,
    pub dialplan: String,
    pub callback_url: Option<String>,
    /// With `api_key_id`, makes retries of the same request return the first record.
    pub idempotency_key: Option<String>,
    /// A hash of the request body: the same idempotency key with another body is a conflict.
    pub request_hash: String,
    /// Call attempts allowed before giving up.
    pub max_attempts: u32,
    pub created_at: i64,
    /// Number matching: the code the callee must key in before `#`.
    pub code: Option<Code>,
    /// The prompt set (one of `locale::LOCALES`); `None`: the dialplan's.
    pub locale: Option<String>,
}

/// A verification as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub id: String,
    #[serde(skip)]
    pub api_key_id: String,
    /// Who may see it: the tenant of the API key that created it.
    #[serde(skip)]
    pub tenant: String,
    pub phone: String,
    pub user: String,
    pub dialplan: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    pub status: Status,
    pub outcome: Option<Outcome>,
    /// Call attempts started so far.
    pub attempt_count: u32,
    pub max_attempts: u32,
    /// When the next attempt may start (for retries), Unix ms.
    #[serde(skip)]
    pub next_attempt_at: i64,
    /// The node holding the lease, while one does.
    #[serde(skip)]
    pub lease_owner: Option<String>,
    #[serde(skip)]
    pub lease_until: Option<i64>,
    /// The requester asked to cancel while a call was running.
    #[serde(skip)]
    pub cancel_requested: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    /// Number matching: the code the callee must key in before `#`. Stored
    /// so that any node can run the call; shown only to the tenant that
    /// created the verification ([`Verification::as_seen_by`]), never in
    /// webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Code>,
    /// The prompt set the request asked for (one of `locale::LOCALES`);
    /// `null`: none was asked for and the dialplan's `locale` plays.
    #[serde(default)]
    pub locale: Option<String>,
}

impl Verification {
    /// The record as `tenant` may see it: the code only for the tenant that
    /// created the verification (not an admin key of another tenant).
    pub fn as_seen_by(mut self, tenant: &str) -> Verification {
        if self.tenant != tenant {
            self.code = None;
        }
        self
    }
}

/// One call attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub verification_id: String,
    /// 1 for the first attempt.
    pub number: u32,
    pub node: String,
    /// The SIP Call-ID.
    pub call_id: String,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub digit_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub sip_status: Option<u16>,
    pub dtmf_source: Option<DtmfSource>,
    pub digits: String,
    /// A call outcome's name, or `interrupted` when the node running it died.
    pub outcome: Option<String>,
    pub detail: Option<String>,
    /// One entry per key accepted, with what its path measured.
    #[serde(default)]
    pub evidence: Vec<KeyEvidence>,
}

/// How an attempt ended, as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub ended_at: i64,
    pub answered_at: Option<i64>,
    pub digit_at: Option<i64>,
    pub sip_status: Option<u16>,
    pub dtmf_source: Option<DtmfSource>,
    pub digits: String,
    pub outcome: Outcome,
    pub detail: Option<String>,
    /// One entry per key accepted; stored as the attempt's `evidence`.
    pub evidence: Vec<KeyEvidence>,
}

/// A phone number registered for a user ("security info").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Registrations are per tenant: the same user name in two tenants is two users.
    #[serde(skip)]
    pub tenant: String,
    pub user: String,
    pub phone: String,
    /// How it was verified: `voice`.
    pub method: String,
    pub verified_at: i64,
    /// The verification that proved it.
    pub verification_id: String,
}

/// An API key; the key itself is never stored, only its SHA-256.
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub hash: String,
    pub created_at: i64,
    /// Keys of one tenant see each other's verifications; `None`: the key is
    /// a tenant of its own (its id).
    pub tenant: Option<String>,
    /// Operators: sees and cancels every tenant's verifications.
    pub admin: bool,
    /// Signs this key's webhooks; recoverable, unlike the key. Without one
    /// the key cannot register a callback.
    pub webhook_secret: Option<String>,
    /// The secret before the last rotation, which also signs until
    /// `previous_secret_until` (Unix ms) so receivers can switch over.
    pub previous_webhook_secret: Option<String>,
    pub previous_secret_until: Option<i64>,
    // Key lifecycle (issue 11).
    /// When `pound keys revoke` revoked it (Unix ms): refused from then on,
    /// but kept, so the webhooks it queued are still signed.
    pub revoked_at: Option<i64>,
    /// The last authenticated request, to the minute ([`LAST_USED_EVERY_MS`]).
    pub last_used_at: Option<i64>,
}

/// `last_used_at` is written at most this often per key, so authenticating
/// is not a write per request.
pub const LAST_USED_EVERY_MS: i64 = 60_000;

impl ApiKey {
    /// The tenant whose verifications this key sees.
    pub fn effective_tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(&self.id)
    }

    /// The secrets that sign this key's webhooks at `now` (Unix ms): the
    /// current one, then the previous one while its overlap lasts.
    pub fn signing_secrets(&self, now: i64) -> Vec<String> {
        let previous =
            self.previous_webhook_secret.iter().filter(|_| self.previous_secret_until.is_some_and(|until| now < until));
        self.webhook_secret.iter().chain(previous).cloned().collect()
    }
}

// By hand so that the webhook secret never reaches a log through `{:?}`.
impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .field("tenant", &self.tenant)
            .field("admin", &self.admin)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<redacted>"))
            .field("previous_secret_until", &self.previous_secret_until)
            .field("revoked_at", &self.revoked_at)
            .field("last_used_at", &self.last_used_at)
            .finish_non_exhaustive()
    }
}

/// Whose verifications and registrations a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's (admin keys).
    All,
    /// One tenant's.
    Tenant(String),
}

impl Scope {
    /// The tenant to filter on, or `None` for all.
    fn tenant(&self) -> Option<&str> {
        match self {
            Scope::All => None,
            Scope::Tenant(tenant) => Some(tenant),
        }
    }

    /// Whether `verification` is visible in this scope.
    pub fn sees(&self, verification: &Verification) -> bool {
        self.tenant().is_none_or(|tenant| tenant == verification.tenant)
    }
}

/// What `GET /v1/verifications` asks for: newest first, after a cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationQuery {
    pub scope: Scope,
    pub user: Option<String>,
    pub phone: Option<String>,
    pub status: Option<Status>,
    /// Only verifications older than this one, in listing order: its
    /// `created_at` and, to break ties, its `id`.
    pub before: Option<(i64, String)>,
    pub limit: u32,
}

/// One webhook in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub id: String,
    pub verification_id: String,
    pub url: String,
    /// The exact JSON body to sign and send.
    #[serde(skip)]
    pub payload: String,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
    /// No more tries: the failure stays visible through the API.
    pub gave_up: bool,
    pub created_at: i64,
}

/// What a node learns when it renews a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Still ours; carry on.
    Held,
    /// Still ours, but the requester canceled: end the call.
    CancelRequested,
    /// No longer ours (it expired and another node took it): stop touching it.
    Lost,
}

/// A verification handed to a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub verification: Verification,
    /// The attempt a dead node left open, now recorded as `interrupted`.
    pub interrupted_attempt: Option<u32>,
}

/// What the requester's cancel did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelResult {
    /// Not yet dialled: canceled now (the webhook is queued).
    Canceled(Verification),
    /// A call is running: the node running it will end it.
    Requested(Verification),
    /// Already final; nothing changed.
    AlreadyFinal(Verification),
}

/// The JSON body of a `verification.completed` webhook (and of GET
/// `/v1/verifications/{id}`): the record with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerificationRecord {
    #[serde(flatten)]
    pub verification: Verification,
    pub attempts: Vec<Attempt>,
}

/// The body of the webhook queued by [`Store::complete`] and [`Store::cancel`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WebhookBody {
    /// Always `verification.completed`.
    pub event: String,
    pub verification: VerificationRecord,
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The same idempotency key was used with a different request.
    #[error("the idempotency key was already used with a different request")]
    IdempotencyConflict,
    /// A write that needs the lease came from a node that no longer holds it.
    #[error("verification {id} is not leased to node {node}")]
    LeaseLost { id: String, node: String },
    /// A stored value could not be read back (a bug or manual editing).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The store URL is neither `sqlite://…` nor `postgres://…`.
    #[error("unsupported store URL {0:?}: use sqlite://FILE or postgres://…")]
    UnsupportedUrl(String),
}

/// The registration store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates a verification (status `queued`, due now). With an idempotency
    /// key already used by the same API key, returns the first record and
    /// `false`, or [`StoreError::IdempotencyConflict`] if the request differs.
    async fn create_verification(&self, new: &NewVerification) -> Result<(Verification, bool), StoreError>;

    /// The toll-fraud guard's create (issue 7): a retry (see
    /// [`Store::create_verification`]) returns the first record at once;
    /// otherwise checks `check`'s velocity limits and breaker and, when they
    /// pass, creates the verification and counts it, all in one transaction
    /// that nodes sharing the database serialize on (a node's admissions
    /// that queue up share one, each in a savepoint of its own). A refusal
    /// stores nothing, except the breaker it trips.
    async fn admit_verification(
        &self,
        new: &NewVerification,
        check: &velocity::VelocityCheck,
    ) -> Result<velocity::Admission, StoreError>;

    async fn verification(&self, id: &str) -> Result<Option<Verification>, StoreError>;

    /// Every attempt of a verification, first first.
    async fn attempts(&self, verification_id: &str) -> Result<Vec<Attempt>, StoreError>;

    /// The requester's cancel.
    async fn cancel(&self, id: &str, now: i64) -> Result<Option<CancelResult>, StoreError>;

    /// Leases up to `limit` due verifications to `node` until `now + lease_ms`:
    /// queued ones whose `next_attempt_at` has come, and ones whose lease
    /// expired (their open attempt is closed as `interrupted`). On PostgreSQL
    /// `FOR UPDATE SKIP LOCKED` keeps two nodes from claiming the same one.
    async fn claim(&self, node: &str, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<Claimed>, StoreError>;

    /// Extends to `until` each of `ids` whose lease `node` still holds, all
    /// in one transaction; returns what became of each, in the same order.
    /// A node renews all its leases at once, rather than each call its own:
    /// one commit per renewal period for the node, not one per call.
    async fn renew_leases(&self, ids: &[String], node: &str, until: i64) -> Result<Vec<LeaseState>, StoreError>;

    /// Moves the status along (dialing, ringing, answered) while `node` holds the lease.
    async fn set_status(&self, id: &str, node: &str, status: Status, now: i64) -> Result<(), StoreError>;

    /// Records a new attempt, moves the status to `dialing` and returns the
    /// attempt's number: one write as the INVITE goes out, rather than a
    /// status change before it and the attempt after.
    async fn start_attempt(&self, id: &str, node: &str, call_id: &str, now: i64) -> Result<u32, StoreError>;

    async fn finish_attempt(&self, id: &str, number: u32, result: &AttemptResult) -> Result<(), StoreError>;

    /// Ends the verification in one transaction: status `completed` (or
    /// `canceled` for [`Outcome::Canceled`]), the outcome, the registration
    /// when verified, the webhook in the outbox when there is a callback URL,
    /// and the lease released. Returns the final record.
    async fn complete(&self, id: &str, node: &str, outcome: Outcome, now: i64) -> Result<Verification, StoreError>;

    /// [`Store::complete`] for a decision made while its call still runs:
    /// what decided the open attempt `number` (everything in `decided` but
    /// `ended_at` and `detail`) is written first in the same transaction, so
    /// that the completed record and its webhook show it, with one commit.
    /// [`Store::finish_attempt`] closes the attempt when the call is over; an
    /// attempt already closed is left alone.
    async fn complete_decided(
        &self,
        id: &str,
        node: &str,
        outcome: Outcome,
        now: i64,
        number: u32,
        decided: &AttemptResult,
    ) -> Result<Verification, StoreError>;

    /// Releases the lease and schedules another attempt at `next_attempt_at`.
    async fn requeue(&self, id: &str, node: &str, next_attempt_at: i64, now: i64) -> Result<(), StoreError>;

    /// The phones registered for `user`, in the tenants `scope` covers.
    async fn registrations(&self, user: &str, scope: &Scope) -> Result<Vec<Registration>, StoreError>;

    /// Verifications created by an API key since `since` (rate limit).
    async fn count_created_since(&self, api_key_id: &str, since: i64) -> Result<u64, StoreError>;

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;

    /// Leases up to `limit` webhooks that are due to `node` for `lease_ms`.
    async fn due_webhooks(&self, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError>;

    async fn webhook_delivered(&self, id: &str, now: i64) -> Result<(), StoreError>;

    /// A failed try; `next_attempt_at` `None` gives up for good.
    async fn webhook_failed(&self, id: &str, error: &str, next_attempt_at: Option<i64>) -> Result<(), StoreError>;

    /// Every webhook of a verification.
    async fn webhooks_for(&self, verification_id: &str) -> Result<Vec<WebhookDelivery>, StoreError>;

    // --- Faults (issue 7) ---

    /// Writes one small row and commits it: `Ok` only if the store accepts
    /// writes right now (`/readyz`).
    async fn check_writable(&self, now: i64) -> Result<(), StoreError>;
    // Tenancy and per-key webhook secrets (issue 7).

    /// Up to `query.limit` verifications, newest first (`created_at`, then `id`, descending).
    async fn list_verifications(&self, query: &VerificationQuery) -> Result<Vec<Verification>, StoreError>;

    async fn api_key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;

    /// The keys whose id or name is `id_or_name` (names need not be unique).
    async fn api_keys_named(&self, id_or_name: &str) -> Result<Vec<ApiKey>, StoreError>;

    /// Replaces the webhook secret of key `id`; the one it replaces keeps
    /// signing until `previous_until` (Unix ms). `false` when there is no such key.
    async fn set_webhook_secret(&self, id: &str, secret: &str, previous_until: i64) -> Result<bool, StoreError>;

    // Expiry (issue 11).

    /// Ends with status `expired` (no outcome: no call decided it) up to
    /// `limit` verifications created at or before `created_before` that are
    /// not final and that no live node leases at `now`: a running call is
    /// never cut off; its verification expires once the call is over, if it
    /// is not completed by then. A dead node's open attempt is closed as
    /// `interrupted`. The completion webhook is queued in the same
    /// transaction. Each verification is expired once however many nodes
    /// sweep at the same time; returns the ones this call expired.
    async fn expire_overdue(&self, created_before: i64, now: i64, limit: u32) -> Result<Vec<Verification>, StoreError>;

    // --- Key lifecycle (issue 11) ---

    /// Every stored key, revoked ones included, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes key `id` at `now` (Unix ms); revoking again keeps the first
    /// time. `false` when there is no such key.
    async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError>;

    /// Records that key `id` was used at `now`, unless it already was within
    /// [`LAST_USED_EVERY_MS`] (by any node).
    async fn touch_api_key(&self, id: &str, now: i64) -> Result<(), StoreError>;

    // Operations metrics (issue 11).

    /// What waits at `now`: verifications the next claim would take (due,
    /// active, unleased or with an expired lease) and webhooks neither
    /// delivered nor given up.
    async fn backlog(&self, now: i64) -> Result<Backlog, StoreError>;

    // Tamper-evident audit log (issue 12).

    /// The audit entries of verification `verification_id` in `tenant`'s
    /// chain, oldest first.
    async fn audit_entries(&self, tenant: &str, verification_id: &str) -> Result<Vec<AuditEntry>, StoreError>;

    /// Recomputes every tenant's chain and compares each verification's
    /// latest audited facts with its rows (`pound audit verify`); the
    /// report names the first difference.
    async fn verify_audit(&self) -> Result<AuditReport, StoreError>;

    // Waking other nodes (issue 9).

    /// A task that notifies `wake` whenever any node sharing the store makes
    /// a verification due now (creates one, or requeues one for now), for
    /// the caller to spawn and stop; it runs until stopped, riding out
    /// database outages. `None` when the store is not shared (SQLite: the
    /// node's own API wakes its engine). Claims must still poll, less
    /// often: a wake-up can be lost (during an outage), and nothing signals
    /// a lease that runs out or a retry whose time comes.
    fn work_signals(&self, wake: Arc<tokio::sync::Notify>) -> Option<WorkSignals>;
}

/// What [`Store::work_signals`] returns: a future to spawn.
pub type WorkSignals = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The work waiting in the store, for `/metrics` (issue 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub queue_depth: u64,
    pub webhooks_pending: u64,
}

/// Opens the store a URL names, creating and migrating it as needed:
/// `sqlite://FILE` (the file is created) or `postgres://…`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with_clock(url, Clock::System).await
}

/// [`open`] for a store running under `clock`: in simulated time the clock
/// stands still while the database works, as if it took no time.
pub async fn open_with_clock(url: &str, clock: Clock) -> Result<Arc<dyn Store>, StoreError> {
    let _opening = clock.hold();
    let backend = if url.starts_with("sqlite:") {
        let (pool, writer) = sqlite::open(url).await?;
        db::Backend::Sqlite { pool, writer }
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let (pool, admissions) = postgres::open(url).await?;
        db::Backend::Postgres { pool, admissions }
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    };
    Ok(Arc::new(sql::SqlStore::new(db::Pool::new(backend, clock))))
}

//! The HTTP API (DESIGN.md §2): verifications, registrations, metrics,
//! health, and webhook delivery from the outbox ([`webhooks`]).
//!
//! Every `/v1` route needs `Authorization: Bearer <key>`; every error is
//! `{"error":{"code":"…","message":"…"}}`. A verification belongs to the
//! tenant of the key that created it: other tenants' keys get the 404 of a
//! missing one, admin keys reach every tenant's. A request refused by policy
//! (validation, country, number type or prefix, rate limit, cooldown, a
//! paused prefix) stores nothing, so it is never dialled.

mod admission;
mod auth;
mod backlog;
mod error;
mod http_metrics;
mod key_config;
pub mod limits;
mod listing;
pub mod queue;
mod ready;
mod request;
pub mod server;
pub mod ssrf;
pub mod webhooks;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rand::RngExt;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

pub use auth::KeyRing;
pub use error::ApiError;
pub use key_config::ApiKeyConfig;
pub use ready::NodeHealth;

use auth::Caller;

use crate::clock::Clock;
use crate::mask::mask_phone;
use crate::metrics::Metrics;
use crate::policy::{NumberRules, VelocityLimits};
use crate::store::{
    CancelResult, NewVerification, Registration, Scope, Store, Verification, VerificationRecord, WebhookDelivery,
};
use crate::vocab::Outcome;

/// The OpenAPI 3.1 description of this API, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// `Retry-After` of a `429 queue_full`: the queue is a burst's, which the
/// store works off within a second or so at the default limit.
const QUEUE_FULL_RETRY_AFTER_S: u64 = 1;

/// Call attempts per verification can be configured up to this (Twilio's
/// limit for the same kind of verification).
pub const MAX_ATTEMPTS_LIMIT: u32 = 5;

/// Everything the routes need.
pub struct ApiState {
    /// Where verifications, registrations, API keys and webhooks live.
    pub store: Arc<dyn Store>,
    /// Keys, policy, dialplans and limits.
    pub config: ApiConfig,
    /// Served at `/metrics`; cancels of queued verifications are counted here.
    pub metrics: Arc<Metrics>,
    /// The engine and the store are up: `/readyz` answers 503 until then.
    pub ready: Arc<AtomicBool>,
    /// Woken when a verification is stored, so the local engine claims it
    /// at once instead of at its next poll.
    pub new_work: Arc<tokio::sync::Notify>,
    /// Woken when a webhook is queued here (a verification canceled before
    /// any node claimed it), so the outbox sends it at once.
    pub webhook_queued: Arc<tokio::sync::Notify>,
    /// The wall clock records and API keys are judged by.
    pub clock: Clock,
}

/// The API's part of the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// Keys from the config file, with their grants; compared by SHA-256 in constant time.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Who may be called, and how often.
    pub policy: Policy,
    /// Dialplan names accepted in requests.
    pub dialplans: Vec<String>,
    /// The dialplan of requests that name none.
    pub default_dialplan: String,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Callback URLs naming a destination this refuses get 400 (webhooks.allow_*).
    pub webhook_targets: ssrf::TargetPolicy,
    /// Timeouts, connection and failed-authentication limits.
    pub limits: limits::HttpLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            api_keys: Vec::new(),
            policy: Policy::default(),
            dialplans: vec!["press-pound".to_string()],
            default_dialplan: "press-pound".to_string(),
            max_body_bytes: 16 * 1024,
            webhook_targets: ssrf::TargetPolicy::default(),
            limits: limits::HttpLimits::default(),
        }
    }
}

/// Who may be called, and how often: toll fraud and harassment are the
/// abuse a calling API invites.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Country calling codes that may be called (1, 44, …); empty = all.
    pub allowed_country_codes: Vec<u16>,
    /// The least time between two verifications of one phone number.
    pub cooldown: Duration,
    /// Call attempts per verification, 1 to [`MAX_ATTEMPTS_LIMIT`] (larger
    /// values are capped, 0 counts as 1).
    pub max_attempts: u32,
    /// Verifications one API key may create per sliding hour; 0 refuses all.
    pub max_per_key_per_hour: u32,
    /// The toll-fraud guard (issue 7): which numbers may be called at all…
    pub numbers: NumberRules,
    /// …and the other sliding-window limits and the prefix breaker.
    pub velocity: VelocityLimits,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_country_codes: Vec::new(),
            cooldown: Duration::from_secs(60),
            max_attempts: 3,
            max_per_key_per_hour: 100,
            numbers: NumberRules::default(),
            velocity: VelocityLimits::default(),
        }
    }
}

/// The state behind every route: [`ApiState`] and what SIGHUP replaces.
struct Shared {
    state: ApiState,
    live: std::sync::RwLock<Arc<Live>>,
    /// `/readyz` asks the store whether it can write (issue 7, faults).
    write_probe: ready::WriteProbe,
    /// `/metrics` reads the store's backlog (issue 11, metrics).
    backlog: backlog::BacklogProbe,
    /// Creates waiting for the store, up to `api.queue_limit` (issue 10).
    queue: queue::StoreQueue,
}

type AppState = Arc<Shared>;

/// What a reload replaces: the keys, policy and dialplan names. Requests
/// take one snapshot, so each sees one configuration throughout.
struct Live {
    config: Arc<ApiConfig>,
    keys: KeyRing,
}

impl Live {
    fn new(config: ApiConfig) -> Arc<Live> {
        Arc::new(Live { keys: KeyRing::new(&config.api_keys), config: Arc::new(config) })
    }
}

impl Shared {
    fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Replaces the running API's keys, policy and dialplan names (SIGHUP).
/// The limits and the body size of the first configuration stay: the
/// server was built with them.
#[derive(Clone)]
pub struct ApiReloader(Arc<Shared>);

impl ApiReloader {
    pub fn reload(&self, config: ApiConfig) {
        *self.0.live.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Live::new(config);
    }
}

/// The API's routes, ready for `axum::serve`.
pub fn router(state: ApiState) -> Router {
    router_with_reload(state).0
}

/// [`router`], and the handle that reloads its configuration.
pub fn router_with_reload(state: ApiState) -> (Router, ApiReloader) {
    let max_body_bytes = state.config.max_body_bytes;
    let auth_guard = limits::AuthGuard {
        failures: Arc::new(limits::AuthFailures::new(state.config.limits.auth_failures_per_minute)),
        metrics: state.metrics.clone(),
    };
    let deadline =
        limits::RequestDeadline { timeout: state.config.limits.request_timeout, metrics: state.metrics.clone() };
    let request_metrics = state.metrics.clone();
    let shared = Arc::new(Shared {
        live: std::sync::RwLock::new(Live::new(state.config.clone())),
        write_probe: ready::WriteProbe::default(),
        backlog: backlog::BacklogProbe::default(),
        queue: queue::StoreQueue::new(state.config.limits.queue_limit),
        state,
    });
    let v1 = Router::new()
        .route("/v1/verifications", post(create_verification).get(list_verifications))
        .route("/v1/verifications/{id}", get(get_verification))
        .route("/v1/verifications/{id}/cancel", post(cancel_verification))
        .route("/v1/verifications/{id}/audit", get(get_audit))
        .route("/v1/registrations/{user}", get(get_registrations))
        // A route layer runs only for matched routes, so an unknown path is
        // a 404 rather than a 401.
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_api_key))
        // Outside the key check, so a throttled client's key is not even looked at.
        .route_layer(middleware::from_fn_with_state(auth_guard, limits::limit_auth_failures));
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(deadline, limits::limit_request_time))
        // Outermost: timeouts and body limits are counted too (issue 11, metrics).
        .layer(middleware::from_fn_with_state(request_metrics, http_metrics::record))
        .with_state(shared.clone());
    (router, ApiReloader(shared))
}

/// Whole seconds until `until_ms`, at least 1 (for `Retry-After`).
fn seconds_until(until_ms: i64, now: i64) -> u64 {
    u64::try_from(until_ms.saturating_sub(now)).unwrap_or(0).div_ceil(1000).max(1)
}

async fn require_api_key(State(shared): State<AppState>, mut request: Request, next: Next) -> Response {
    match shared
        .live()
        .keys
        .authenticate(request.headers(), shared.state.store.as_ref(), shared.state.clock.unix_ms())
        .await
    {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

/// A verification with its attempts and webhooks: the body of every
/// verification response.
#[derive(Debug, Serialize)]
struct RecordBody {
    #[serde(flatten)]
    record: VerificationRecord,
    webhooks: Vec<WebhookDelivery>,
}

/// The record as `caller` sees it (the code only for its own tenant).
async fn record(store: &dyn Store, verification: Verification, caller: &Caller) -> Result<RecordBody, ApiError> {
    let attempts = store.attempts(&verification.id).await?;
    let webhooks = store.webhooks_for(&verification.id).await?;
    let verification = verification.as_seen_by(&caller.tenant);
    Ok(RecordBody { record: VerificationRecord { verification, attempts }, webhooks })
}

fn record_response(status: StatusCode, body: RecordBody) -> Response {
    let location = format!("/v1/verifications/{}", body.record.verification.id);
    let mut response = (status, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A fresh verification id: `v_` + 24 random hex digits.
fn random_id() -> String {
    let bytes: [u8; 12] = rand::rng().random();
    format!("v_{}", hex::encode(bytes))
}

/// The id of a request made with an `Idempotency-Key`: derived from the API
/// key's hash and the idempotency key, so every retry names the same record.
/// Unguessable without the API key, like a random id.
fn idempotent_id(key_hash: &[u8; 32], idempotency_key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"pound idempotent id\0");
    hash.update(key_hash);
    hash.update(idempotency_key.as_bytes());
    let digest = hash.finalize();
    format!("v_{}", hex::encode(&digest[..12]))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

async fn create_verification(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let ApiState { store, metrics, .. } = &shared.state;
    let live = shared.live();
    let config = live.config.as_ref();
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {} bytes", config.max_body_bytes),
            )
        } else {
            ApiError::invalid_request(format!("the body could not be read: {rejection}"))
        }
    })?;
    // Taken before the body is checked, and held until the answer is built,
    // whatever ends the request. Checking a number is the costliest step
    // before the store (the metadata's patterns, several times over: a
    // fifth of the node's CPU in a burst of 1,000), and a request the queue
    // would refuse anyway need not pay for it: under a burst most are
    // refused, and their checks took the CPU the queued ones needed.
    let _queued = shared.queue.enter().ok_or_else(|| {
        metrics.policy_refused("queue_full");
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "queue_full",
            "too many requests are waiting for the store; retry after the time in Retry-After",
        )
        .retry_after(QUEUE_FULL_RETRY_AFTER_S)
    })?;
    let idempotency_key = request::idempotency_key(&headers)?;
    let req = request::parse_create(&body, config)?;
    if req.callback_url.is_some() && !caller.can_sign {
        // Refused rather than sent unsigned: a receiver could not tell our
        // webhook from anyone's.
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "webhook_secret_required",
            "this API key has no webhook secret, so its callbacks could not be signed; give it one \
             (stored keys: pound keys rotate-secret; config keys: webhook_secret in api.keys, or webhooks.secret) \
             or leave out callback_url",
        ));
    }
    let country = admission::check_number(&config.policy, metrics, &req.phone)?;
    let now = shared.state.clock.unix_ms();
    let id = match &idempotency_key {
        Some(key) => idempotent_id(&caller.key_hash, key),
        None => random_id(),
    };
    let new = NewVerification {
        id,
        api_key_id: caller.api_key_id.clone(),
        tenant: caller.tenant.clone(),
        phone: req.phone.clone(),
        user: req.user.clone(),
        dialplan: req.dialplan.clone(),
        callback_url: req.callback_url.clone(),
        idempotency_key,
        request_hash: req.hash(),
        max_attempts: config.policy.max_attempts.clamp(1, MAX_ATTEMPTS_LIMIT),
        created_at: now,
        // Drawn here, once: a retry with the same Idempotency-Key gets the
        // first record's code from the store, not this one.
        code: req.code.clone().map(request::CodeChoice::into_code),
        locale: req.locale.map(str::to_string),
    };
    // The store answers a retry with the first record before the limits,
    // which the first request may have filled, and compares the request
    // hash (409 on a different body).
    let (verification, created) = admission::admit(store.as_ref(), &config.policy, metrics, &new, &country).await?;
    if created {
        shared.state.new_work.notify_one();
        tracing::info!(
            verification_id = %verification.id,
            api_key_id = %caller.api_key_id,
            phone = %mask_phone(&verification.phone),
            dialplan = %verification.dialplan,
            "verification queued"
        );
    }
    if created {
        // The record as created: a verification stored just now has no
        // attempt and no webhook yet (an engine that claims it meanwhile
        // shows in the next GET), so none is read back from the store.
        let verification = verification.as_seen_by(&caller.tenant);
        let body =
            RecordBody { record: VerificationRecord { verification, attempts: Vec::new() }, webhooks: Vec::new() };
        return Ok(record_response(StatusCode::ACCEPTED, body));
    }
    Ok(record_response(StatusCode::OK, record(store.as_ref(), verification, &caller).await?))
}

/// A path segment, or a 400 when it is not valid percent-encoded UTF-8.
fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(value)| value).map_err(|rejection| ApiError::invalid_request(format!("bad path: {rejection}")))
}

/// The verification `id` if `scope` may see it. Another tenant's is the same
/// 404 as a missing one, so ids cannot be probed.
async fn find(store: &dyn Store, id: &str, scope: &Scope) -> Result<Verification, ApiError> {
    store
        .verification(id)
        .await?
        .filter(|verification| scope.sees(verification))
        .ok_or_else(|| ApiError::not_found(format!("no verification {id:?}")))
}

/// The verification a `/v1/verifications/{id}…` path names, if `caller` may see it.
async fn visible(
    store: &dyn Store,
    caller: &Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Verification, ApiError> {
    find(store, &path_param(path)?, &caller.scope()).await
}

async fn get_verification(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let store = shared.state.store.as_ref();
    let verification = visible(store, &caller, path).await?;
    Ok((StatusCode::OK, Json(record(store, verification, &caller).await?)).into_response())
}

/// `GET /v1/verifications/{id}/audit`: its entries in its tenant's audit
/// chain, seen by whoever may see the verification.
async fn get_audit(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let store = shared.state.store.as_ref();
    let verification = visible(store, &caller, path).await?;
    let items = store.audit_entries(&verification.tenant, &verification.id).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

async fn cancel_verification(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path_param(path)?;
    let store = shared.state.store.as_ref();
    // A verification never changes tenant, so checking before canceling
    // leaves no window in which it could become another's.
    find(store, &id, &caller.scope()).await?;
    let verification = match store.cancel(&id, shared.state.clock.unix_ms()).await? {
        None => return Err(ApiError::not_found(format!("no verification {id:?}"))),
        Some(CancelResult::AlreadyFinal(v)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_final",
                format!("verification {} is already {}", v.id, v.status.as_str()),
            ));
        }
        Some(CancelResult::Canceled(v)) => {
            // Never claimed, so no engine will report it.
            shared.state.metrics.verification_finished(Outcome::Canceled);
            shared.state.webhook_queued.notify_one();
            tracing::info!(verification_id = %v.id, "verification canceled");
            v
        }
        Some(CancelResult::Requested(v)) => {
            tracing::info!(verification_id = %v.id, "cancel requested; the running call will end");
            v
        }
    };
    Ok((StatusCode::ACCEPTED, Json(record(store, verification, &caller).await?)).into_response())
}

/// One phone of `GET /v1/registrations/{user}`.
#[derive(Debug, Serialize)]
struct RegisteredPhone {
    phone: String,
    method: String,
    verified_at: i64,
    verification_id: String,
}

async fn get_registrations(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let user = path_param(path)?;
    let phones: Vec<RegisteredPhone> = shared
        .state
        .store
        .registrations(&user, &caller.scope())
        .await?
        .into_iter()
        .map(|Registration { phone, method, verified_at, verification_id, .. }| RegisteredPhone {
            phone,
            method,
            verified_at,
            verification_id,
        })
        .collect();
    Ok(Json(json!({ "user": user, "phones": phones })).into_response())
}

/// `GET /v1/verifications`: the caller's verifications, newest first.
async fn list_verifications(
    State(shared): State<AppState>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|rejection| ApiError::invalid_request(format!("bad query: {rejection}")))?;
    let mut query = listing::parse_list(&params, caller.scope())?;
    let page_size = query.limit;
    // One more than asked for tells whether another page follows.
    query.limit = page_size.saturating_add(1);
    let mut items = shared.state.store.list_verifications(&query).await?;
    let more = items.len() > page_size as usize;
    items.truncate(page_size as usize);
    let next_cursor = items.last().filter(|_| more).map(listing::encode_cursor);
    let items: Vec<Verification> = items.into_iter().map(|item| item.as_seen_by(&caller.tenant)).collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

async fn metrics(State(shared): State<AppState>) -> Response {
    shared.backlog.refresh(shared.state.store.as_ref(), &shared.state.metrics, shared.state.clock.unix_ms()).await;
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], shared.state.metrics.encode()).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(shared): State<AppState>, node: Option<Extension<Arc<NodeHealth>>>) -> Response {
    if !shared.state.ready.load(Ordering::Acquire) {
        return ready::not_ready(&[ready::Reason::new("not_ready", "the engine or the store is not up yet")]);
    }
    let mut reasons = Vec::new();
    if !shared.write_probe.writable(shared.state.store.as_ref(), shared.state.clock.unix_ms()).await {
        reasons.push(ready::Reason::new("store_unavailable", "the store does not accept writes"));
    }
    if let Some(Extension(node)) = node {
        reasons.extend(node.reasons());
    }
    if !reasons.is_empty() {
        return ready::not_ready(&reasons);
    }
    Json(json!({ "status": "ready" })).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape() {
        for id in [random_id(), idempotent_id(&[7; 32], "k")] {
            assert_eq!(id.len(), 26, "{id}");
            assert!(id.starts_with("v_") && id[2..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        assert_ne!(random_id(), random_id());
    }

    #[test]
    fn idempotent_ids_are_per_api_key_and_per_idempotency_key() {
        let id = idempotent_id(&[1; 32], "order-1");
        assert_eq!(id, idempotent_id(&[1; 32], "order-1"));
        assert_ne!(id, idempotent_id(&[2; 32], "order-1"));
        assert_ne!(id, idempotent_id(&[1; 32], "order-2"));
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(seconds_until(10_000, 9_999), 1);
        assert_eq!(seconds_until(10_000, 10_000), 1);
        assert_eq!(seconds_until(10_001, 0), 11);
        assert_eq!(seconds_until(0, 5_000), 1);
    }

    #[test]
    fn content_type_must_be_json() {
        let mut headers = HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/jsonx", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&headers), ok, "{value}");
        }
    }

    #[test]
    fn the_openapi_document_is_json() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
    }
}

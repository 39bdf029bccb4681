//! `/readyz`: whether this node should get work. Not while the store
//! refuses writes, the trunk does not answer or we are not registered with
//! it, or the node is draining after SIGTERM; every reason is named.
//!
//! The store: whether it accepts writes right now.
//!
//! A node that cannot write answers every create with 503, loses call
//! results and delivers no webhooks, so a load balancer should send work
//! elsewhere. Asking the store is a real write ([`Store::check_writable`]);
//! probes are unauthenticated, so one result serves every probe for a second
//! and a hanging database answers "not ready" instead of hanging the probe.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::error::STORE_RETRY_AFTER_S;
use crate::sip::trunk::TrunkHealth;
use crate::store::Store;

/// How long one probe's answer is reused.
const REUSE: Duration = Duration::from_secs(1);

/// A probe that takes longer than this counts as a failure.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The latest write probe and when it ran.
#[derive(Default)]
pub(super) struct WriteProbe {
    last: Mutex<Option<(Instant, bool)>>,
}

impl WriteProbe {
    /// Whether the store took a write within the last [`REUSE`]; probes it
    /// again when that answer is older. Concurrent callers wait for one probe.
    pub(super) async fn writable(&self, store: &dyn Store, now_ms: i64) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, writable)) = *last
            && at.elapsed() < REUSE
        {
            return writable;
        }
        let writable = match tokio::time::timeout(TIMEOUT, store.check_writable(now_ms)).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "the store refuses writes: not ready");
                false
            }
            Err(_) => {
                tracing::warn!("the store did not answer a write within {TIMEOUT:?}: not ready");
                false
            }
        };
        *last = Some((Instant::now(), writable));
        writable
    }
}

/// What else makes a running node unfit for work: its trunk, and the drain
/// after SIGTERM. The service attaches it to the router as an extension;
/// a router without one (tests of the API alone) checks only the store.
#[derive(Debug)]
pub struct NodeHealth {
    /// The trunk as its watch last saw it.
    pub trunk: Arc<TrunkHealth>,
    /// Named in the reasons, so an operator sees which trunk is meant.
    pub trunk_uri: String,
    draining: AtomicBool,
}

impl NodeHealth {
    pub fn new(trunk: Arc<TrunkHealth>, trunk_uri: String) -> NodeHealth {
        NodeHealth { trunk, trunk_uri, draining: AtomicBool::new(false) }
    }

    /// From now on `/readyz` says `draining`: SIGTERM was received.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The reasons besides the store's, most pressing first.
    pub(super) fn reasons(&self) -> Vec<Reason> {
        let mut reasons = Vec::new();
        if self.draining.load(Ordering::Acquire) {
            reasons.push(Reason::new("draining", "the node is stopping: running calls finish, no new ones start"));
        }
        if !self.trunk.is_up() {
            reasons.push(Reason::new(
                "trunk_down",
                format!("the trunk {} does not answer OPTIONS: dialling is paused", self.trunk_uri),
            ));
        }
        if self.trunk.is_registered() == Some(false) {
            reasons.push(Reason::new(
                "trunk_unregistered",
                format!("not registered with the trunk {}: dialling is paused", self.trunk_uri),
            ));
        }
        reasons
    }
}

/// One reason `/readyz` is 503: a stable `code` and a message for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Reason {
    pub code: &'static str,
    pub message: String,
}

impl Reason {
    pub(super) fn new(code: &'static str, message: impl Into<String>) -> Reason {
        Reason { code, message: message.into() }
    }
}

/// The 503 body: the error shape every route uses (its code is the first
/// reason's, so clients reading `error.code` see `store_unavailable` as
/// before), plus `status` and every reason.
pub(super) fn not_ready(reasons: &[Reason]) -> Response {
    let first = reasons.first().cloned().unwrap_or_else(|| Reason::new("not_ready", "not ready"));
    let retry_after = if first.code == "store_unavailable" { STORE_RETRY_AFTER_S } else { 1 };
    let body = json!({
        "error": { "code": first.code, "message": first.message },
        "status": "not_ready",
        "reasons": reasons,
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

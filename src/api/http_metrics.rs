//! Counts every API request by its route template (`/v1/verifications/{id}`,
//! never the raw path, so ids do not become series) and status class, and
//! times it until the response head.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::{Metrics, UNMATCHED_ROUTE};

/// Middleware for `Router::layer`, which runs after routing, so the matched
/// route is known; unknown paths share [`UNMATCHED_ROUTE`].
pub(super) async fn record(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.http_request(route.as_deref().unwrap_or(UNMATCHED_ROUTE), response.status().as_u16(), started.elapsed());
    response
}

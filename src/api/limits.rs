//! What one HTTP client may cost: how long it may take, how many
//! connections it may hold, and how many wrong API keys it may try.
//!
//! Clients are told apart by [`ClientKey`]: an IPv4 address, or an IPv6
//! /64 (one subscriber usually holds a whole /64, so counting single IPv6
//! addresses would let one host take 2^64 identities).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

use super::error::ApiError;
use crate::metrics::Metrics;

/// The HTTP server's limits (`[api]` in the config file).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLimits {
    /// A request's header must arrive within this, counted from when the
    /// server starts waiting for it (also after a keep-alive response).
    pub header_timeout: Duration,
    /// From the end of the header to the end of the body; 408 after it.
    pub request_timeout: Duration,
    /// A connection that moves no byte either way for this long is closed
    /// (a client that stops reading its response, a stalled body).
    pub idle_timeout: Duration,
    /// Open connections at once; beyond it new ones wait in the kernel's
    /// backlog, so sockets for calls, the store and webhooks stay available.
    pub max_connections: usize,
    /// Open connections from one client; beyond it new ones are closed at
    /// once. 0: no per-client limit (behind a reverse proxy).
    pub max_connections_per_client: usize,
    /// Requests answered 401 that one client may cause per minute; beyond
    /// it every `/v1` request from it is 429 until the rate drops. 0: off.
    pub auth_failures_per_minute: u32,
    /// `POST /v1/verifications` waiting for the store at once; past it one
    /// is answered `429 queue_full` with `Retry-After` at once. 0: no limit.
    pub queue_limit: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 512,
            max_connections_per_client: 64,
            auth_failures_per_minute: 20,
            queue_limit: DEFAULT_QUEUE_LIMIT,
        }
    }
}

/// The default of [`HttpLimits::queue_limit`]: a queue SQLite works off in
/// about 0.2 s on a 2-core machine (`pound bench burst`, README), far
/// within any client's timeout.
pub const DEFAULT_QUEUE_LIMIT: usize = 100;

/// One client, as far as limits are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(_) => ClientKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey(IpAddr::V4(v4)),
                None => ClientKey(IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into())),
            },
        }
    }
}

/// Open connections per client.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    open: Mutex<HashMap<ClientKey, usize>>,
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    counts: Arc<ConnectionCounts>,
    key: ClientKey,
}

impl ConnectionCounts {
    /// A slot for a connection from `ip`, unless it already holds `limit`
    /// (0: no limit). The map only holds clients with open connections, so
    /// it is bounded by the connection limit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ClientSlot> {
        let key = ClientKey::of(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot { counts: self.clone(), key })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Clients tracked at most by [`AuthFailures`]; past it (after dropping the
/// ones whose failures have aged out) new clients are not tracked, so an
/// attacker with many addresses cannot grow memory without bound.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Failed authentications per client, as a sliding rate (GCRA, the
/// "virtual scheduling" form of a leaky bucket): each failure pushes the
/// client's theoretical arrival time one interval (a minute / the limit)
/// further; a client is blocked while that time is more than a minute
/// minus one interval ahead, so `limit` failures in a burst are allowed
/// and then one more per interval. One `Instant` per client.
#[derive(Debug)]
pub struct AuthFailures {
    interval: Duration,
    window: Duration,
    clients: Mutex<HashMap<ClientKey, Instant>>,
}

impl AuthFailures {
    /// `per_minute` failures per client (0 disables the limiter).
    pub fn new(per_minute: u32) -> AuthFailures {
        let window = Duration::from_secs(60);
        AuthFailures {
            interval: window.checked_div(per_minute).unwrap_or(Duration::ZERO),
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }

    /// How long `client` must wait before it may try again, if it must.
    pub fn blocked(&self, client: ClientKey, now: Instant) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let ahead = clients.get(&client)?.saturating_duration_since(now);
        let allowed = self.window.saturating_sub(self.interval);
        (ahead > allowed).then(|| ahead - allowed)
    }

    /// Counts one failed authentication by `client`.
    pub fn failed(&self, client: ClientKey, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if clients.len() >= MAX_TRACKED_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, until| *until > now);
            if clients.len() >= MAX_TRACKED_CLIENTS {
                tracing::warn!("too many clients failing authentication to track; not tracking a new one");
                return;
            }
        }
        let until = clients.entry(client).or_insert(now);
        *until = (*until).max(now) + self.interval;
    }
}

/// The state of [`limit_auth_failures`].
#[derive(Debug, Clone)]
pub struct AuthGuard {
    pub failures: Arc<AuthFailures>,
    pub metrics: Arc<Metrics>,
}

/// Middleware in front of the API-key check: a client over its
/// failed-authentication rate gets 429 with `Retry-After` without its key
/// being looked at (so guessing gains nothing), and every 401 is counted.
/// Requests without a peer address (a router served by something else than
/// [`super::server::serve`]) are not limited.
pub async fn limit_auth_failures(State(guard): State<AuthGuard>, request: Request, next: Next) -> Response {
    let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(request).await;
    };
    let client = ClientKey::of(peer.ip());
    if let Some(wait) = guard.failures.blocked(client, Instant::now()) {
        guard.metrics.http_auth_throttled();
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests with a missing or wrong API key from this address",
        )
        .retry_after(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        .into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        guard.failures.failed(client, Instant::now());
    }
    response
}

/// The state of [`limit_request_time`].
#[derive(Debug, Clone)]
pub struct RequestDeadline {
    pub timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// Middleware bounding how long a request's body may take to arrive,
/// counted from the end of its header: a body trickled in byte by byte
/// (never idle, never done) cannot hold a connection beyond it. Only the
/// body is timed, never the handler: a request is either refused before
/// anything happens (408) or handled to the end, so a timeout never leaves
/// a half-made verification behind.
pub async fn limit_request_time(State(deadline): State<RequestDeadline>, request: Request, next: Next) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(deadline.timeout)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    deadline.metrics.http_timeout("request");
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!("the request body did not arrive within {} ms", deadline.timeout.as_millis()),
    )
    .into_response()
}

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        ready!(this.deadline.as_mut().poll(cx));
        this.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> ClientKey {
        ClientKey::of(ip.parse().unwrap())
    }

    #[test]
    fn ipv6_clients_are_told_apart_by_their_64() {
        assert_eq!(client("2001:db8:1:2::1"), client("2001:db8:1:2:ffff::9"));
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_eq!(client("::ffff:192.0.2.1"), client("192.0.2.1"));
        assert_ne!(client("192.0.2.1"), client("192.0.2.2"));
    }

    #[test]
    fn failures_are_limited_per_client_as_a_sliding_rate() {
        let limiter = AuthFailures::new(6); // one failure per 10 s, bursts of 6
        let start = Instant::now();
        let (a, b) = (client("192.0.2.1"), client("192.0.2.2"));
        for _ in 0..6 {
            assert_eq!(limiter.blocked(a, start), None);
            limiter.failed(a, start);
        }
        let wait = limiter.blocked(a, start).expect("the seventh is refused");
        assert_eq!(wait, Duration::from_secs(10));
        assert_eq!(limiter.blocked(b, start), None, "other clients are not affected");
        // A failure frees up after one interval, not at a clock boundary.
        assert!(limiter.blocked(a, start + Duration::from_secs(9)).is_some());
        assert_eq!(limiter.blocked(a, start + Duration::from_secs(10)), None);
        limiter.failed(a, start + Duration::from_secs(10));
        assert!(limiter.blocked(a, start + Duration::from_secs(10)).is_some(), "one per interval after the burst");
        // After a quiet minute the whole burst is available again.
        let later = start + Duration::from_secs(80);
        for _ in 0..6 {
            assert_eq!(limiter.blocked(a, later), None);
            limiter.failed(a, later);
        }
        assert!(limiter.blocked(a, later).is_some());
    }

    #[test]
    fn zero_disables_the_failure_limit() {
        let limiter = AuthFailures::new(0);
        let now = Instant::now();
        for _ in 0..1000 {
            limiter.failed(client("192.0.2.1"), now);
        }
        assert_eq!(limiter.blocked(client("192.0.2.1"), now), None);
        assert!(limiter.clients.lock().unwrap().is_empty());
    }

    #[test]
    fn connection_slots_are_per_client_and_given_back() {
        let counts = Arc::new(ConnectionCounts::default());
        let ip = "192.0.2.1".parse().unwrap();
        let first = counts.admit(ip, 2).unwrap();
        let _second = counts.admit(ip, 2).unwrap();
        assert!(counts.admit(ip, 2).is_none());
        assert!(counts.admit("192.0.2.9".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(counts.admit(ip, 2).is_some());
        let held: Vec<_> = (0..100).map(|_| counts.admit(ip, 0)).collect();
        assert!(held.iter().all(Option::is_some), "0: unlimited");
    }
}

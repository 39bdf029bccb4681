//! The HTTP server around the API's router, in place of `axum::serve`,
//! which has no header, idle or connection limits: there, a connection that
//! sent half a header stayed open for ever, and 20,000 of them exhausted the
//! process's descriptors until `/healthz` stopped answering and calls could
//! not open their sockets.
//!
//! Here every connection holds one of `max_connections` slots (at the limit
//! new connections wait in the kernel's backlog and cost pound no
//! descriptor, but the one accepted while the last slot was taken), a
//! client holds at most
//! `max_connections_per_client` of them, hyper closes a connection whose
//! request header is not complete within `header_timeout`, and
//! [`IdleTimeout`] closes one that moves no byte for `idle_timeout`.
//!
//! A connection waiting for a slot must not wait for a kept-alive one's
//! idle timeout: a burst of more connections than slots (issue 10) left the
//! connections past the limit in the backlog for seconds, while the
//! kept-alive connections that held every slot went back to the client's
//! pool. So when a connection is accepted and no slot is free, every open
//! connection answers its next response with `Connection: close` and hyper
//! ends it after that response, so a slot comes free with every answer; a
//! client then reconnects and queues in the backlog like the others. A
//! connection idle between requests is not closed early: a client may be
//! sending its next request on it that moment, and would get no answer
//! (the idle timeout closes it as before).
//! HTTP/1.1 only: the API needs nothing more, and every extra protocol is
//! more state an abusive client can hold.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use super::limits::{ClientSlot, ConnectionCounts, HttpLimits};
use crate::metrics::Metrics;

/// A connection's read buffer: a request header larger than this is
/// answered 431, so one connection holds tens of kilobytes, not hyper's
/// default of 400 KB (times `max_connections`).
const MAX_BUFFER: usize = 64 * 1024;

/// Serves `app` on `listener` under `limits` until `shutdown` resolves,
/// then lets open connections finish their request in flight.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let counts = Arc::new(ConnectionCounts::default());
    let (closing, closing_seen) = watch::channel(false);
    // Bumped whenever an accepted connection finds every slot taken: each
    // open connection then ends after its request in flight.
    let (crowded, _) = watch::channel(0u64);
    let limits = Arc::new(limits);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let free = slots.clone().try_acquire_owned().ok();
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors (EMFILE) or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    tracing::warn!(%err, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Every slot taken: this connection is the one held beyond the
        // limit (the others wait in the backlog) until the open ones make room.
        let permit = match free.or_else(|| slots.clone().try_acquire_owned().ok()) {
            Some(permit) => permit,
            None => {
                crowded.send_modify(|generation| *generation += 1);
                tokio::select! {
                    permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let Some(client) = counts.admit(peer.ip(), limits.max_connections_per_client) else {
            metrics.http_connection_refused();
            tracing::debug!(%peer, "closing a connection: the client holds its connection limit");
            continue;
        };
        let connection =
            Connection { peer, limits: limits.clone(), metrics: metrics.clone(), _slot: permit, _client: client };
        connections.spawn(connection.run(stream, app.clone(), closing_seen.clone(), crowded.subscribe()));
    }
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
}

/// One accepted connection and the places it holds.
struct Connection {
    peer: SocketAddr,
    limits: Arc<HttpLimits>,
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
    _client: ClientSlot,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        app: Router,
        mut closing: watch::Receiver<bool>,
        crowded: watch::Receiver<u64>,
    ) {
        self.metrics.http_connection_opened();
        let peer = self.peer;
        let service = TowerToHyperService::new(app);
        let requests = Arc::new(InFlight::default());
        let handling = requests.clone();
        // The crowding this connection was accepted in (if any) is not its
        // to make room for; any later one is.
        let accepted_in = *crowded.borrow();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let busy = handling.start();
            let response = hyper::service::Service::call(&service, request);
            let crowding = crowded.clone();
            async move {
                let mut response = response.await;
                drop(busy);
                // hyper ends the connection after a response that says so.
                if let Ok(response) = &mut response
                    && *crowding.borrow() != accepted_in
                {
                    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        });
        let io = TokioIo::new(IdleTimeout::new(stream, self.limits.idle_timeout, requests.clone()));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.limits.header_timeout).max_buf_size(MAX_BUFFER);
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let mut draining = false;
        let result = loop {
            tokio::select! {
                result = connection.as_mut() => break result,
                _ = closing.wait_for(|closing| *closing), if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(err) = result {
            let kind = if err.is_timeout() {
                Some("header")
            } else if is_idle_timeout(&err) {
                Some("idle")
            } else {
                None
            };
            match kind {
                Some(kind) => self.metrics.http_timeout(kind),
                None => tracing::debug!(%peer, %err, "API connection ended with an error"),
            }
        }
        self.metrics.http_connection_closed();
    }
}

fn is_idle_timeout(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(current) = source {
        if current.is::<IdleTimedOut>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// No byte moved either way for the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the connection was idle too long")]
struct IdleTimedOut;

/// Requests of one connection being handled, and when the last one ended.
#[derive(Default)]
struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    last_ended: std::sync::Mutex<Option<Instant>>,
}

impl InFlight {
    fn start(self: &Arc<Self>) -> Handling {
        self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Handling(self.clone())
    }

    fn busy(&self) -> bool {
        self.count.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    fn last_ended(&self) -> Option<Instant> {
        *self.last_ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One request being handled; its end restarts the connection's idle clock.
struct Handling(Arc<InFlight>);

impl Drop for Handling {
    fn drop(&mut self) {
        *self.0.last_ended.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        self.0.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A stream that fails with [`IdleTimedOut`] once it has moved no byte
/// for `timeout` while no request was being handled. A handler slower
/// than the timeout (a store under load, a cold start) is not idleness:
/// hyper keeps reading the connection meanwhile, and before the handler
/// counted, that read ended the connection and the client got no response
/// to a request that had been carried out.
struct IdleTimeout {
    inner: TcpStream,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    requests: Arc<InFlight>,
}

impl IdleTimeout {
    fn new(inner: TcpStream, timeout: Duration, requests: Arc<InFlight>) -> IdleTimeout {
        IdleTimeout { inner, timeout, deadline: Box::pin(tokio::time::sleep(timeout)), requests }
    }

    fn moved(&mut self) {
        let next = Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// Called when the stream has nothing: an error once the deadline passed
    /// with no request handled in the last `timeout`.
    fn poll_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        loop {
            let quiet_until = if self.requests.busy() {
                Some(Instant::now() + self.timeout)
            } else {
                self.requests.last_ended().map(|ended| ended + self.timeout)
            };
            if let Some(until) = quiet_until.filter(|&until| until > self.deadline.deadline()) {
                self.deadline.as_mut().reset(until);
            }
            ready!(self.deadline.as_mut().poll(cx));
            // Woken at the deadline: idle only if no request ran meanwhile.
            if !self.requests.busy()
                && self.requests.last_ended().is_none_or(|ended| ended + self.timeout <= Instant::now())
            {
                return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, IdleTimedOut)));
            }
        }
    }
}

impl AsyncRead for IdleTimeout {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx),
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                if result.as_ref().is_ok_and(|&n| n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending => self.poll_idle(cx),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.poll_idle(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.poll_idle(cx),
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn pair(timeout: Duration) -> (IdleTimeout, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (IdleTimeout::new(server, timeout, Arc::new(InFlight::default())), client)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out_and_each_byte_restarts_the_clock() {
        let (mut server, mut client) = pair(Duration::from_secs(5)).await;
        let mut byte = [0u8; 1];
        client.write_all(b"a").await.unwrap();
        server.read_exact(&mut byte).await.unwrap();
        let error = server.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(error.get_ref().is_some_and(|inner| inner.is::<IdleTimedOut>()));
    }

    /// A handler slower than the idle timeout keeps its connection, and the
    /// clock restarts when it ends.
    #[tokio::test(start_paused = true)]
    async fn a_connection_whose_request_is_being_handled_is_not_idle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let requests = Arc::new(InFlight::default());
        let mut server = IdleTimeout::new(stream, Duration::from_secs(5), requests.clone());
        let handling = requests.start();
        let started = Instant::now();
        let finish = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(12)).await;
            drop(handling);
        });
        let mut byte = [0u8; 1];
        let error = server.read(&mut byte).await.unwrap_err();
        assert!(error.get_ref().is_some_and(|inner| inner.is::<IdleTimedOut>()));
        assert_eq!(Instant::now() - started, Duration::from_secs(17), "5 s after the 12 s request ended");
        finish.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_peer_is_not_idle() {
        let (mut server, mut client) = pair(Duration::from_secs(5)).await;
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let mut received = [0u8; 4];
        server.read_exact(&mut received).await.expect("3 s gaps are under the 5 s idle timeout");
        assert_eq!(&received, b"xxxx");
        drop(writer.await.unwrap());
    }
}

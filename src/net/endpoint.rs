//! A node's one SIP endpoint (after quinn's `Endpoint`): one UDP socket, and
//! with TCP (or TLS) one listener and one connection per peer, on one address.
//! Calls, the trunk watch and `pound phone` each hold a [`SipHandle`]: they
//! send through the endpoint, and receive what its routing table
//! ([`Router`]) says is theirs. One task receives for everybody, into one
//! reused buffer, and answers strays itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use super::NetError;
use super::tls::Tls;
use super::transport::{Connections, Incoming, parse};
use crate::sip::dialog::new_tag;
use crate::sip::endpoint::{HandlerId, Route, Router};
use crate::sip::{MAX_MESSAGE_BYTES, Message};
use crate::vocab::Transport;

/// Messages waiting for one handler. A handler reads between every other
/// input, so a full inbox means a stuck handler or a flood: what does not
/// fit is dropped, and UDP senders retransmit.
const INBOX: usize = 64;

/// Messages from all TCP and TLS connections waiting for the receive task.
const TCP_QUEUE: usize = 256;

/// The routing table and where each handler's messages go.
#[derive(Default)]
struct Table {
    router: Router,
    inboxes: HashMap<HandlerId, mpsc::Sender<Incoming>>,
}

struct Shared {
    local: SocketAddr,
    udp: UdpSocket,
    tcp: Option<Arc<Connections>>,
    tls: Option<Arc<Connections>>,
    table: Mutex<Table>,
    next_id: AtomicU64,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Every change to the table is complete before its lock is let go.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connections that carry `transport`, if this endpoint has them.
    fn streams(&self, transport: Transport) -> Option<&Arc<Connections>> {
        match transport {
            Transport::Udp => None,
            Transport::Tcp => self.tcp.as_ref(),
            Transport::Tls => self.tls.as_ref(),
        }
    }

    /// Sends `bytes` to `to`. Over TCP and TLS only a request opens a
    /// connection (over TLS only with `peer_name`, the name the peer's
    /// certificate must carry): a response goes back on the one its request
    /// came by, or nowhere.
    async fn send(
        &self,
        transport: Transport,
        message: &Message,
        to: SocketAddr,
        peer_name: Option<&str>,
    ) -> std::io::Result<()> {
        let bytes = message.to_bytes();
        if transport == Transport::Udp {
            return self.udp.send_to(&bytes, to).await.map(|_| ());
        }
        let Some(streams) = self.streams(transport) else {
            let unsupported = format!("this endpoint does not do {}", transport.via_name());
            return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, unsupported));
        };
        // Plain TCP checks no name: the address names the connection well enough.
        let address = to.ip().to_string();
        let name = peer_name.or((transport == Transport::Tcp).then_some(address.as_str()));
        streams.send(bytes, to, name.filter(|_| message.is_request())).await
    }

    /// Hands `incoming` to its handler, or answers it.
    async fn dispatch(&self, incoming: Incoming) {
        // One look at the table: the route and, for a delivery, its inbox.
        let (route, inbox) = {
            let table = self.table();
            let route = table.router.route(&incoming.message, || new_tag(&mut rand::rng()));
            let inbox = match &route {
                Route::Deliver(handler) => table.inboxes.get(handler).cloned(),
                _ => None,
            };
            (route, inbox)
        };
        match route {
            Route::Deliver(_) => {
                // Never waits: a stuck handler must not hold up everybody else's messages.
                if let Some(inbox) = inbox
                    && let Err(mpsc::error::TrySendError::Full(dropped)) = inbox.try_send(incoming)
                {
                    tracing::debug!(from = %dropped.from, "a SIP handler's inbox is full; message dropped");
                }
            }
            Route::Reply(response) => {
                let (transport, to) = (incoming.transport, incoming.from);
                tracing::debug!(%to, status = response.status(), method = ?incoming.message.method(), "stray SIP request answered");
                if let Err(e) = self.send(transport, &response, to, None).await {
                    tracing::debug!(%to, error = %e, "answering a stray SIP request failed");
                }
            }
            Route::Drop => {
                tracing::debug!(from = %incoming.from, status = incoming.message.status(), "SIP message for nobody dropped");
            }
        }
    }
}

/// The node's SIP endpoint. Clones share it; the receive task stops when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local", &self.shared.local)
            .field("tcp", &self.shared.tcp.is_some())
            .field("tls", &self.shared.tls.is_some())
            .finish()
    }
}

/// The endpoint's own tasks, ended with it.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Endpoint {
    /// Binds UDP on `bind`, and with `tcp` a TCP listener on the same port.
    pub async fn bind(bind: SocketAddr, tcp: bool) -> Result<Endpoint, NetError> {
        Endpoint::bind_with_tls(bind, tcp, None).await
    }

    /// [`Endpoint::bind`], and with `tls` SIP over TLS: connections opened
    /// to peers, and, when `tls` can accept (it has a certificate), a TLS
    /// listener on the port UDP got (instead of the TCP one).
    pub async fn bind_with_tls(bind: SocketAddr, tcp: bool, tls: Option<Arc<Tls>>) -> Result<Endpoint, NetError> {
        let io = |source| NetError::Io { context: format!("SIP on {bind}"), source };
        let udp = UdpSocket::bind(bind).await.map_err(io)?;
        let local = udp.local_addr().map_err(io)?;
        let tls_listens = tls.as_ref().is_some_and(|tls| tls.acceptor.is_some());
        if tcp && tls_listens {
            return Err(NetError::Tls(format!("{local}: one port cannot listen for both TCP and TLS")));
        }
        let mut tasks = Vec::new();
        let (sender, stream_incoming) = mpsc::channel(TCP_QUEUE);
        // On the port UDP got, so that one port means both (RFC 3261 §18).
        let mut listen = |connections: &Arc<Connections>| -> Result<(), NetError> {
            let listener = std::net::TcpListener::bind(local).and_then(|listener| {
                listener.set_nonblocking(true)?;
                TcpListener::from_std(listener)
            });
            tasks.push(tokio::spawn(connections.clone().accept(listener.map_err(io)?)));
            Ok(())
        };
        let tcp_connections = tcp.then(|| Connections::new(sender.clone(), None));
        if let Some(connections) = &tcp_connections {
            listen(connections)?;
        }
        let tls_connections = tls.map(|tls| Connections::new(sender.clone(), Some(tls)));
        if let Some(connections) = tls_connections.as_ref().filter(|_| tls_listens) {
            listen(connections)?;
        }
        let streams = (tcp || tls_connections.is_some()).then_some(stream_incoming);
        let shared = Arc::new(Shared {
            local,
            udp,
            tcp: tcp_connections,
            tls: tls_connections,
            table: Mutex::default(),
            next_id: AtomicU64::new(1),
        });
        tasks.push(tokio::spawn(receive(shared.clone(), streams)));
        tracing::info!(%local, tcp, tls = shared.tls.is_some(), tls_listens, "SIP endpoint listening");
        Ok(Endpoint { shared, _tasks: Arc::new(Tasks(tasks)) })
    }

    /// The bound address (UDP, and TCP when it listens).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// A handle for one call or the trunk watch, sending over `transport`
    /// to a peer whose TLS certificate must name `peer_name` (the host of
    /// the URI the requests go to).
    pub fn handle(&self, transport: Transport, peer_name: Option<String>) -> Result<SipHandle, NetError> {
        self.register(transport, false, peer_name)
    }

    /// A handle that also receives every request no other handler's dialog
    /// claims: a UAS, such as `pound phone`. It opens no TLS connection.
    pub fn catch_all(&self, transport: Transport) -> Result<SipHandle, NetError> {
        self.register(transport, true, None)
    }

    fn register(
        &self,
        transport: Transport,
        catch_all: bool,
        peer_name: Option<String>,
    ) -> Result<SipHandle, NetError> {
        if transport != Transport::Udp && self.shared.streams(transport).is_none() {
            let name = transport.via_name();
            let source =
                std::io::Error::new(std::io::ErrorKind::Unsupported, format!("the endpoint was bound without {name}"));
            return Err(NetError::Io { context: format!("SIP over {name} on {}", self.shared.local), source });
        }
        let id = HandlerId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let (sender, inbox) = mpsc::channel(INBOX);
        let mut table = self.shared.table();
        if catch_all {
            table.router.add_catch_all(id);
        } else {
            table.router.add(id);
        }
        table.inboxes.insert(id, sender);
        Ok(SipHandle { id, shared: self.shared.clone(), inbox, transport, peer_name })
    }
}

/// One handler's view of the endpoint. Dropping it forgets its routes: a
/// call that ended receives nothing more, and its strays are answered 481.
pub struct SipHandle {
    id: HandlerId,
    shared: Arc<Shared>,
    inbox: mpsc::Receiver<Incoming>,
    transport: Transport,
    peer_name: Option<String>,
}

impl SipHandle {
    /// The endpoint's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Sends `message` to `to`; a request teaches the endpoint to route its
    /// responses (and an INVITE its dialog's requests) to this handle.
    pub async fn send(&self, message: &Message, to: SocketAddr) -> std::io::Result<()> {
        if message.is_request() {
            self.shared.table().router.sent(self.id, message);
        }
        self.shared.send(self.transport, message, to, self.peer_name.as_deref()).await
    }

    /// The next message for this handle; `None` once the endpoint is gone.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.inbox.recv().await
    }
}

impl Drop for SipHandle {
    fn drop(&mut self) {
        let mut table = self.shared.table();
        table.router.remove(self.id);
        table.inboxes.remove(&self.id);
    }
}

/// Receives on every socket of the endpoint, for ever. The UDP buffer is
/// allocated once: `recv_from` is cancel-safe, and whatever a cancelled
/// receive left in it is overwritten by the next.
async fn receive(shared: Arc<Shared>, mut streams: Option<mpsc::Receiver<Incoming>>) {
    let mut buffer = vec![0u8; MAX_MESSAGE_BYTES + 1].into_boxed_slice();
    loop {
        let incoming = tokio::select! {
            received = shared.udp.recv_from(&mut buffer) => match received {
                Ok((n, from)) => match parse(&buffer[..n]) {
                    Some(message) => Incoming { message, from, transport: Transport::Udp },
                    None => continue,
                },
                // ICMP errors surface here on some systems; the socket is still good.
                Err(e) => {
                    tracing::debug!(error = %e, "SIP receive failed");
                    continue;
                }
            },
            Some(incoming) = recv_streams(&mut streams) => incoming,
        };
        shared.dispatch(incoming).await;
    }
}

/// The next message from the TCP and TLS connections; never without them.
async fn recv_streams(streams: &mut Option<mpsc::Receiver<Incoming>>) -> Option<Incoming> {
    match streams {
        Some(streams) => streams.recv().await,
        None => std::future::pending().await,
    }
}

//! A node's one SIP endpoint (after quinn's `Endpoint`): one UDP socket, and
//! with TCP (or TLS) one listener and one connection per peer, on one address.
//! Calls, the trunk watch and `pound phone` each hold a [`SipHandle`]: they
//! send through the endpoint, and receive what its routing table
//! ([`Router`]) says is theirs. One task receives for everybody, into one
//! reused buffer, and answers strays itself.
//!
//! The endpoint owns every client transaction ([`ClientTransactions`]): a
//! request a handle sends starts one, a second task retransmits and times
//! them out, and a handle receives their events rather than the responses
//! themselves (RFC 3261's transaction user).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

use super::NetError;
use super::driver::sleep_until;
use super::socket::{Network, Socket};
use super::tls::Tls;
use super::transport::{Connections, Incoming, parse};
use crate::clock;
use crate::sip::dialog::new_tag;
use crate::sip::endpoint::{HandlerId, Route, Router};
use crate::sip::{ClientEvent, ClientTransactions, Hop, MAX_MESSAGE_BYTES, Matched, Message, Outgoing, Timers};
use crate::sip::{TransactionEvent, TransactionKey};
use crate::vocab::Transport;

/// Messages waiting for one handler. A handler reads between every other
/// input, so a full inbox means a stuck handler or a flood: what does not
/// fit is dropped, and UDP senders retransmit.
const INBOX: usize = 64;

/// Messages from all TCP and TLS connections waiting for the receive task.
const TCP_QUEUE: usize = 256;

/// How a transaction's messages go besides their address: the transport,
/// and over TLS the name the peer's certificate must carry.
#[derive(Debug, Clone)]
struct Path {
    transport: Transport,
    peer_name: Option<String>,
}

/// Where one handler's input goes. Transaction events are never dropped:
/// each is the one answer to a request the handler sent, and there are only
/// as many as its own requests and their responses.
struct Inbox {
    messages: mpsc::Sender<Incoming>,
    events: mpsc::UnboundedSender<ClientEvent>,
}

/// The routing table, the client transactions, and where each handler's input goes.
#[derive(Default)]
struct Table {
    router: Router,
    transactions: ClientTransactions<Path>,
    inboxes: HashMap<HandlerId, Inbox>,
}

/// What the transactions have to send and to say, taken after a change to them.
type Work = (Vec<Outgoing<Path>>, Vec<ClientEvent>);

impl Table {
    fn take(&mut self) -> Work {
        let transactions = &mut self.transactions;
        (
            std::iter::from_fn(|| transactions.poll_transmit()).collect(),
            std::iter::from_fn(|| transactions.poll_event()).collect(),
        )
    }
}

struct Shared {
    local: SocketAddr,
    network: Network,
    udp: Socket,
    tcp: Option<Arc<Connections>>,
    tls: Option<Arc<Connections>>,
    table: Mutex<Table>,
    next_id: AtomicU64,
    /// Wakes the transaction timer task: a transaction started, which may be due sooner.
    started: Notify,
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
            return self.udp.send_to(&bytes, to).await;
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

    /// Sends what the transactions produced, then hands their events out; a
    /// send that fails is its transaction's transport error, whose event
    /// follows. Returns the sends that failed.
    async fn pump(&self, (mut outgoing, mut events): Work) -> Vec<(TransactionKey, std::io::Error)> {
        let mut failed = Vec::new();
        loop {
            let first_new = failed.len();
            for Outgoing { key, path, transmit } in outgoing.drain(..) {
                let (to, message) = (transmit.destination, &transmit.contents);
                if let Err(e) = self.send(path.transport, message, to, path.peer_name.as_deref()).await {
                    failed.push((key, e));
                }
            }
            let mut table = self.table();
            for event in events.drain(..) {
                if let Some(inbox) = table.inboxes.get(&event.handler) {
                    // A handler that is gone has no receiver left: nothing to tell.
                    let _ = inbox.events.send(event);
                }
            }
            if failed.len() == first_new {
                return failed;
            }
            for (key, _) in &failed[first_new..] {
                table.transactions.handle_transport_error(key);
            }
            (outgoing, events) = table.take();
        }
    }

    /// Hands `incoming` to its handler, or answers it. A response goes to
    /// the client transactions.
    async fn dispatch(&self, incoming: Incoming) {
        if !incoming.message.is_request() {
            return self.dispatch_response(incoming).await;
        }
        // One look at the table: the route and, for a delivery, its inbox.
        let (route, inbox) = {
            let mut table = self.table();
            let route = table.router.route_at(clock::now(), &incoming.message, || new_tag(&mut rand::rng()));
            let inbox = match &route {
                Route::Deliver(handler) => table.inboxes.get(handler).map(|inbox| inbox.messages.clone()),
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

    /// A response: its transaction takes it, or, from elsewhere than its
    /// request went, its handler hears of it (and counts it foreign).
    async fn dispatch_response(&self, incoming: Incoming) {
        let (matched, work, inbox) = {
            let mut table = self.table();
            let matched = table.transactions.handle_response(clock::now(), incoming.from, incoming.message.clone());
            let inbox = match matched {
                Matched::Foreign(handler) => table.inboxes.get(&handler).map(|inbox| inbox.messages.clone()),
                _ => None,
            };
            (matched, table.take(), inbox)
        };
        match matched {
            Matched::Taken => {
                self.pump(work).await;
            }
            Matched::Foreign(_) => {
                if let Some(inbox) = inbox {
                    let _ = inbox.try_send(incoming);
                }
            }
            Matched::Unknown => {
                tracing::debug!(from = %incoming.from, status = incoming.message.status(), "SIP response for no transaction dropped");
            }
        }
    }
}

/// How many ephemeral UDP ports are tried before giving up on finding one
/// whose TCP twin is free too.
const EPHEMERAL_PAIR_TRIES: usize = 32;

/// Receive buffer asked for the endpoint's UDP socket, which carries the
/// signalling of every call of the node. The kernel's default (208 KiB,
/// about 90 SIP datagrams at their 2.3 KiB of accounting each) overflowed
/// in 300/s bench runs under load, when the 100, 180 and 200 of many calls
/// came back together: the node lost answers and retransmitted INVITEs
/// (issue 10). As much as sipp takes in the benchmark.
const SIP_RECEIVE_BUFFER: usize = 4 << 20;

/// UDP on `bind` and, with `listen`, a TCP listener on the port UDP got, so
/// that one port means both (RFC 3261 §18). The kernel picks ephemeral UDP
/// and TCP ports independently, so the TCP twin of a fresh UDP port may be
/// another process's: with port 0, such a pair is dropped and another port
/// tried; a fixed port that is taken is the caller's error at once.
async fn bind_udp_and_listener(
    network: &Network,
    bind: SocketAddr,
    listen: bool,
) -> std::io::Result<(Socket, Option<TcpListener>)> {
    let mut tries = 0;
    loop {
        let udp = network.bind(bind).await?;
        if !listen {
            return Ok((udp, None));
        }
        let local = udp.local_addr()?;
        let listener = std::net::TcpListener::bind(local).and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        });
        match listener {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(e) if bind.port() == 0 && e.kind() == std::io::ErrorKind::AddrInUse && tries < EPHEMERAL_PAIR_TRIES => {
                tries += 1;
                tracing::debug!(%local, "TCP twin of an ephemeral SIP port is taken; trying another");
            }
            Err(e) => return Err(e),
        }
    }
}

/// The node's SIP endpoint. Clones share it; its tasks stop when the last
/// clone and the last [`SipHandle`] are dropped.
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
        Endpoint::bind_in(&Network::System, bind, tcp).await
    }

    /// [`Endpoint::bind`] on `network`; its calls' RTP sockets are opened
    /// there too. TCP and TLS only on the system's network.
    pub async fn bind_in(network: &Network, bind: SocketAddr, tcp: bool) -> Result<Endpoint, NetError> {
        Endpoint::bind_on(network, bind, tcp, None).await
    }

    /// [`Endpoint::bind`], and with `tls` SIP over TLS: connections opened
    /// to peers, and, when `tls` can accept (it has a certificate), a TLS
    /// listener on the port UDP got (instead of the TCP one).
    pub async fn bind_with_tls(bind: SocketAddr, tcp: bool, tls: Option<Arc<Tls>>) -> Result<Endpoint, NetError> {
        Endpoint::bind_on(&Network::System, bind, tcp, tls).await
    }

    /// [`Endpoint::bind_with_tls`] on `network`.
    pub(super) async fn bind_on(
        network: &Network,
        bind: SocketAddr,
        tcp: bool,
        tls: Option<Arc<Tls>>,
    ) -> Result<Endpoint, NetError> {
        let io = |source| NetError::Io { context: format!("SIP on {bind}"), source };
        if (tcp || tls.is_some()) && matches!(network, Network::Memory(_)) {
            return Err(io(std::io::Error::new(std::io::ErrorKind::Unsupported, "TCP on an in-memory network")));
        }
        let tls_listens = tls.as_ref().is_some_and(|tls| tls.acceptor.is_some());
        if tcp && tls_listens {
            return Err(NetError::Tls(format!("{bind}: one port cannot listen for both TCP and TLS")));
        }
        let (udp, listener) = bind_udp_and_listener(network, bind, tcp || tls_listens).await.map_err(io)?;
        let local = udp.local_addr().map_err(io)?;
        if let Err(e) = udp.grow_receive_buffer(SIP_RECEIVE_BUFFER) {
            // The default buffer still works; only a burst may lose datagrams.
            tracing::warn!(%local, error = %e, "could not enlarge the SIP receive buffer");
        }
        let mut tasks = Vec::new();
        let (sender, stream_incoming) = mpsc::channel(TCP_QUEUE);
        let tcp_connections = tcp.then(|| Connections::new(sender.clone(), None));
        let tls_connections = tls.map(|tls| Connections::new(sender.clone(), Some(tls)));
        let listening = tcp_connections.as_ref().or(tls_connections.as_ref().filter(|_| tls_listens));
        if let (Some(connections), Some(listener)) = (listening, listener) {
            tasks.push(tokio::spawn(connections.clone().accept(listener)));
        }
        let streams = (tcp || tls_connections.is_some()).then_some(stream_incoming);
        let shared = Arc::new(Shared {
            local,
            network: network.clone(),
            udp,
            tcp: tcp_connections,
            tls: tls_connections,
            table: Mutex::default(),
            next_id: AtomicU64::new(1),
            started: Notify::new(),
        });
        tasks.push(tokio::spawn(receive(shared.clone(), streams)));
        tasks.push(tokio::spawn(run_transaction_timers(shared.clone())));
        tracing::info!(%local, tcp, tls = shared.tls.is_some(), tls_listens, "SIP endpoint listening");
        Ok(Endpoint { shared, _tasks: Arc::new(Tasks(tasks)) })
    }

    /// The bound address (UDP, and TCP when it listens).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The network the endpoint's sockets are on.
    pub(super) fn network(&self) -> &Network {
        &self.shared.network
    }

    /// A handle for one call or the trunk watch, sending over `transport`
    /// to a peer whose TLS certificate must name `peer_name` (the host of
    /// the URI the requests go to); its client transactions run on `timers`.
    pub fn handle(
        &self,
        transport: Transport,
        peer_name: Option<String>,
        timers: Timers,
    ) -> Result<SipHandle, NetError> {
        self.register(Path { transport, peer_name }, false, timers)
    }

    /// A handle that also receives every request no other handler's dialog
    /// claims: a UAS, such as `pound phone`. It opens no TLS connection.
    pub fn catch_all(&self, transport: Transport, timers: Timers) -> Result<SipHandle, NetError> {
        self.register(Path { transport, peer_name: None }, true, timers)
    }

    fn register(&self, path: Path, catch_all: bool, timers: Timers) -> Result<SipHandle, NetError> {
        let transport = path.transport;
        if transport != Transport::Udp && self.shared.streams(transport).is_none() {
            let name = transport.via_name();
            let source =
                std::io::Error::new(std::io::ErrorKind::Unsupported, format!("the endpoint was bound without {name}"));
            return Err(NetError::Io { context: format!("SIP over {name} on {}", self.shared.local), source });
        }
        let id = HandlerId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let (messages, inbox) = mpsc::channel(INBOX);
        let (events, transaction_events) = mpsc::unbounded_channel();
        let mut table = self.shared.table();
        if catch_all {
            table.router.add_catch_all(id);
        } else {
            table.router.add(id);
        }
        table.inboxes.insert(id, Inbox { messages, events });
        let tasks = self._tasks.clone();
        Ok(SipHandle {
            id,
            shared: self.shared.clone(),
            _tasks: tasks,
            inbox,
            events: transaction_events,
            path,
            timers,
        })
    }
}

/// What a handle receives.
#[derive(Debug)]
pub enum Delivery {
    /// A request for its dialog or (catch-all) a new one, or a response to
    /// one of its transactions from an address its request did not go to.
    Message(Incoming),
    /// One of its client transactions has news.
    Transaction(TransactionKey, TransactionEvent),
}

/// One handler's view of the endpoint. Dropping it forgets its routes: a
/// call that ended receives nothing more, and its strays are answered 481.
pub struct SipHandle {
    id: HandlerId,
    shared: Arc<Shared>,
    /// A handle keeps the endpoint's tasks: its transactions need the timer task.
    _tasks: Arc<Tasks>,
    inbox: mpsc::Receiver<Incoming>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    path: Path,
    timers: Timers,
}

impl SipHandle {
    /// The endpoint's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Sends `message` to `to`. A request but an ACK starts a client
    /// transaction, whose events come to this handle (an INVITE also
    /// teaches the endpoint its dialog's requests); a final response answers
    /// its request's retransmissions from now on. The error is that of the
    /// first transmission.
    pub async fn send(&self, message: &Message, to: SocketAddr) -> std::io::Result<()> {
        if !message.is_request() {
            self.shared.table().router.responded(clock::now(), message);
            return self.shared.send(self.path.transport, message, to, self.path.peer_name.as_deref()).await;
        }
        let work = {
            let mut table = self.shared.table();
            table.router.sent(self.id, message);
            let reliable = self.path.transport.is_reliable();
            let hop = Hop { destination: to, path: self.path.clone(), reliable, timers: self.timers };
            table.transactions.start(clock::now(), self.id, message.clone(), hop);
            table.take()
        };
        self.shared.started.notify_one();
        match self.shared.pump(work).await.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(()),
        }
    }

    /// The next input for this handle, its transactions' events first;
    /// `None` once the endpoint is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`SipHandle::recv`] for a caller that polls.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        // Closed, the events channel has nothing more to say: the inbox decides.
        if let Poll::Ready(Some(event)) = self.events.poll_recv(cx) {
            return Poll::Ready(Some(Delivery::Transaction(event.key, event.event)));
        }
        self.inbox.poll_recv(cx).map(|incoming| incoming.map(Delivery::Message))
    }
}

impl Drop for SipHandle {
    fn drop(&mut self) {
        let mut table = self.shared.table();
        table.router.remove(self.id);
        table.transactions.forget(self.id);
        table.inboxes.remove(&self.id);
    }
}

/// Retransmits and times out the client transactions, for ever: sleeps until
/// the next is due, or a new one starts.
async fn run_transaction_timers(shared: Arc<Shared>) {
    loop {
        let deadline = shared.table().transactions.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            _ = sleep_until(deadline) => {}
            _ = shared.started.notified() => continue,
        }
        let work = {
            let mut table = shared.table();
            table.transactions.handle_timeout(clock::now());
            table.take()
        };
        shared.pump(work).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sip_socket_asks_for_a_receive_buffer_for_bursts() {
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap(), false).await.unwrap();
        let Socket::Udp(udp) = &endpoint.shared.udp else { panic!("a system socket") };
        let granted = socket2::SockRef::from(udp).recv_buffer_size().unwrap();
        // Linux caps a request at net.core.rmem_max (and reports double what it grants).
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|max| max.trim().parse::<usize>().ok())
            .unwrap_or(SIP_RECEIVE_BUFFER);
        assert!(granted >= SIP_RECEIVE_BUFFER.min(cap), "{granted} bytes (rmem_max {cap})");
    }
}

//! Datagram sockets on a [`Network`]: the system's UDP, or an in-memory
//! network inside the process, where a whole node (endpoint, calls, a
//! simulated phone) exchanges bytes with no socket and in simulated time.
//! Everything above sends and receives datagrams the same way on both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Sees every datagram an in-memory network carries: `(from, to, bytes)`.
pub type Observer = Arc<dyn Fn(SocketAddr, SocketAddr, &[u8]) + Send + Sync>;

/// Where sockets are opened.
#[derive(Clone, Default)]
pub enum Network {
    /// The system's UDP sockets.
    #[default]
    System,
    /// An in-memory network (UDP only).
    Memory(MemoryNetwork),
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Network::System => "System",
            Network::Memory(_) => "Memory",
        })
    }
}

impl Network {
    /// A datagram socket bound to `bind` (port 0: any free port).
    pub(super) async fn bind(&self, bind: SocketAddr) -> std::io::Result<Socket> {
        match self {
            Network::System => Ok(Socket::Udp(UdpSocket::bind(bind).await?)),
            Network::Memory(network) => network.bind(bind).map(Socket::Memory),
        }
    }
}

/// A datagram in flight on an in-memory network.
type Datagram = (Vec<u8>, SocketAddr);

/// An in-memory network: datagrams go to whichever socket is bound to
/// their destination, at once and in order, or are lost when none is (as
/// UDP to a closed port). Free ports are handed out from 40000 up, so that
/// a run binds the same addresses every time.
#[derive(Clone, Default)]
pub struct MemoryNetwork(Arc<Mutex<Sockets>>);

#[derive(Default)]
struct Sockets {
    bound: HashMap<SocketAddr, mpsc::UnboundedSender<Datagram>>,
    next_port: u16,
    observer: Option<Observer>,
}

/// The first port handed out for a bind to port 0.
const FIRST_FREE_PORT: u16 = 40_000;

impl MemoryNetwork {
    /// A network whose every datagram `observer` sees first.
    pub fn observed(observer: Observer) -> MemoryNetwork {
        let network = MemoryNetwork::default();
        network.sockets().observer = Some(observer);
        network
    }

    fn sockets(&self) -> std::sync::MutexGuard<'_, Sockets> {
        // Every change to the map is complete before its lock is let go.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bind(&self, bind: SocketAddr) -> std::io::Result<MemorySocket> {
        let mut sockets = self.sockets();
        let local = if bind.port() == 0 {
            let free = (sockets.next_port..=u16::MAX)
                .map(|port| SocketAddr::new(bind.ip(), FIRST_FREE_PORT.max(port)))
                .find(|address| !sockets.bound.contains_key(address))
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrInUse))?;
            sockets.next_port = free.port().saturating_add(1);
            free
        } else if sockets.bound.contains_key(&bind) {
            return Err(std::io::Error::from(std::io::ErrorKind::AddrInUse));
        } else {
            bind
        };
        let (sender, inbox) = mpsc::unbounded_channel();
        sockets.bound.insert(local, sender);
        Ok(MemorySocket { network: self.clone(), local, inbox: Mutex::new(inbox) })
    }

    fn send(&self, from: SocketAddr, bytes: &[u8], to: SocketAddr) {
        let sockets = self.sockets();
        if let Some(observer) = &sockets.observer {
            observer(from, to, bytes);
        }
        if let Some(socket) = sockets.bound.get(&to) {
            let _ = socket.send((bytes.to_vec(), from));
        }
    }
}

/// A socket on a [`MemoryNetwork`]; dropping it frees its address.
pub(super) struct MemorySocket {
    network: MemoryNetwork,
    local: SocketAddr,
    /// Behind a lock only because receiving takes `&mut`: one task receives.
    inbox: Mutex<mpsc::UnboundedReceiver<Datagram>>,
}

impl Drop for MemorySocket {
    fn drop(&mut self) {
        self.network.sockets().bound.remove(&self.local);
    }
}

/// A datagram socket of either kind.
pub(super) enum Socket {
    Udp(UdpSocket),
    Memory(MemorySocket),
}

impl Socket {
    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Socket::Udp(socket) => socket.local_addr(),
            Socket::Memory(socket) => Ok(socket.local),
        }
    }

    /// Asks the kernel for at least `bytes` of receive buffer (it caps the
    /// request at `net.core.rmem_max`). An in-memory socket queues without
    /// limit and needs none.
    pub(super) fn grow_receive_buffer(&self, bytes: usize) -> std::io::Result<()> {
        match self {
            Socket::Udp(socket) => {
                let socket = socket2::SockRef::from(socket);
                if socket.recv_buffer_size()? < bytes {
                    socket.set_recv_buffer_size(bytes)?;
                }
                Ok(())
            }
            Socket::Memory(_) => Ok(()),
        }
    }

    pub(super) async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            Socket::Udp(socket) => socket.send_to(bytes, to).await.map(|_| ()),
            // Never full: nothing to wait for.
            Socket::Memory(_) => self.try_send_to(bytes, to),
        }
    }

    /// Sends at once or not at all: a full send buffer drops the datagram
    /// (`WouldBlock`) instead of waiting for room. For media, where a late
    /// packet is worth no more than a lost one, and where awaiting the
    /// socket's write readiness per packet cost more than the send itself
    /// at 1,000 calls (issue 10's profile).
    pub(super) fn try_send_to(&self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            Socket::Udp(socket) => socket.try_send_to(bytes, to).map(|_| ()),
            Socket::Memory(socket) => {
                socket.network.send(socket.local, bytes, to);
                Ok(())
            }
        }
    }

    /// Cancel-safe, like `UdpSocket::recv_from`: a datagram is taken only
    /// when it is returned. A longer datagram is cut to `buffer`.
    pub(super) async fn recv_from(&self, buffer: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_recv_from(cx, buffer)).await
    }

    /// [`Socket::recv_from`] for a caller that polls; one task at a time
    /// receives (a second one's waker would replace the first's).
    pub(super) fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut [u8],
    ) -> Poll<std::io::Result<(usize, SocketAddr)>> {
        match self {
            Socket::Udp(socket) => {
                let mut filled = ReadBuf::new(buffer);
                socket.poll_recv_from(cx, &mut filled).map_ok(|from| (filled.filled().len(), from))
            }
            Socket::Memory(socket) => {
                // Held only for the poll, which does not wait.
                let mut inbox = socket.inbox.lock().unwrap_or_else(PoisonError::into_inner);
                inbox.poll_recv(cx).map(|datagram| {
                    let (bytes, from) =
                        datagram.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
                    let n = bytes.len().min(buffer.len());
                    buffer[..n].copy_from_slice(&bytes[..n]);
                    Ok((n, from))
                })
            }
        }
    }
}

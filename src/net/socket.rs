//! Datagram sockets on a [`Network`]: the system's UDP, or an in-memory
//! network inside the process, where a whole node (endpoint, calls, a
//! simulated phone) exchanges bytes with no socket and in simulated time.
//! Everything above sends and receives datagrams the same way on both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, ReadBuf};
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

    /// A socket for media, bound to `bind`: it sends only with
    /// [`Socket::try_send_to`] and is watched for reading only.
    ///
    /// Why not for writing too: the kernel tells every watcher of a socket
    /// when a datagram it sent has left its buffer. A socket watched for
    /// writing (as tokio's `UdpSocket` always is) put itself on epoll's ready
    /// list at each packet sent and woke the I/O driver to hear that it
    /// could write, 50 times a second per call, though media never waits to
    /// write (issue 10's profile of 1,000 held calls).
    pub(super) fn bind_media(&self, bind: SocketAddr) -> std::io::Result<Socket> {
        match self {
            Network::System => {
                let socket = std::net::UdpSocket::bind(bind)?;
                socket.set_nonblocking(true)?;
                // SAFETY: `register_with_interest` asks that the descriptor
                // stay open and the same for the `AsyncFd`'s whole life. The
                // `std::net::UdpSocket` owns it and closes it only when
                // dropped, which happens when the `AsyncFd` (its only owner)
                // is, and nothing here takes the socket back out
                // (`into_inner`) or calls for a different descriptor.
                let registered = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) };
                Ok(Socket::Media(registered.map_err(std::io::Error::from)?))
            }
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

/// A datagram socket of any kind.
pub(super) enum Socket {
    Udp(UdpSocket),
    /// A system socket for media ([`Network::bind_media`]).
    Media(AsyncFd<std::net::UdpSocket>),
    Memory(MemorySocket),
}

impl Socket {
    pub(super) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Socket::Udp(socket) => socket.local_addr(),
            Socket::Media(socket) => socket.get_ref().local_addr(),
            Socket::Memory(socket) => Ok(socket.local),
        }
    }

    /// Asks the kernel for at least `bytes` of receive buffer (it caps the
    /// request at `net.core.rmem_max`). An in-memory socket queues without
    /// limit and needs none.
    pub(super) fn grow_receive_buffer(&self, bytes: usize) -> std::io::Result<()> {
        match self {
            Socket::Udp(socket) => grow_receive_buffer(socket2::SockRef::from(socket), bytes),
            Socket::Media(socket) => grow_receive_buffer(socket2::SockRef::from(socket.get_ref()), bytes),
            Socket::Memory(_) => Ok(()),
        }
    }

    pub(super) async fn send_to(&self, bytes: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            Socket::Udp(socket) => socket.send_to(bytes, to).await.map(|_| ()),
            // Never full, or never waits: nothing to wait for.
            Socket::Media(_) | Socket::Memory(_) => self.try_send_to(bytes, to),
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
            Socket::Media(socket) => socket.get_ref().send_to(bytes, to).map(|_| ()),
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
            Socket::Media(socket) => loop {
                let mut ready = std::task::ready!(socket.poll_read_ready(cx))?;
                // Nothing to read clears the readiness and polls it again,
                // which then waits with `cx`.
                if let Ok(received) = ready.try_io(|socket| socket.get_ref().recv_from(buffer)) {
                    return Poll::Ready(received);
                }
            },
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

fn grow_receive_buffer(socket: socket2::SockRef<'_>, bytes: usize) -> std::io::Result<()> {
    if socket.recv_buffer_size()? < bytes {
        socket.set_recv_buffer_size(bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// The epoll event masks that `fd` is registered with, read from every
    /// epoll instance of this process (`/proc/self/fdinfo`: a line `tfd: N
    /// events: MASK` per watched descriptor). An instance open on two
    /// descriptors (mio duplicates its own) shows the same line twice.
    fn epoll_masks_of(fd: i32) -> Vec<u32> {
        let mut masks = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").flatten() {
            let is_epoll =
                std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy().contains("eventpoll"));
            let Some(info) = is_epoll
                .then(|| std::fs::read_to_string(format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy())))
            else {
                continue;
            };
            for line in info.unwrap_or_default().lines() {
                let mut words = line.split_whitespace();
                if words.next() == Some("tfd:")
                    && words.next().and_then(|n| n.parse::<i32>().ok()) == Some(fd)
                    && words.next() == Some("events:")
                    && let Some(mask) = words.next().and_then(|m| u32::from_str_radix(m, 16).ok())
                {
                    masks.insert((line.to_string(), mask));
                }
            }
        }
        masks.into_iter().map(|(_, mask)| mask).collect()
    }

    #[tokio::test]
    async fn a_media_socket_is_watched_for_reading_only_and_still_hears_and_sends() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let media = Network::System.bind_media(loopback).expect("media socket");
        let Socket::Media(registered) = &media else { panic!("a system media socket") };
        let masks = epoll_masks_of(registered.as_raw_fd());
        assert_eq!(masks.len(), 1, "registered once: {masks:x?}");
        assert_eq!(masks[0] & libc::EPOLLIN as u32, libc::EPOLLIN as u32, "watched for reading");
        assert_eq!(masks[0] & libc::EPOLLOUT as u32, 0, "not watched for writing");

        // A SIP socket, which waits for room to send, is watched for both.
        let sip = Network::System.bind(loopback).await.expect("SIP socket");
        let Socket::Udp(udp) = &sip else { panic!("a system socket") };
        assert!(epoll_masks_of(udp.as_raw_fd()).iter().all(|m| m & libc::EPOLLOUT as u32 != 0));

        let (media_at, sip_at) = (media.local_addr().unwrap(), sip.local_addr().unwrap());
        let mut buffer = [0u8; 64];
        for round in 0..3u8 {
            sip.send_to(&[round; 12], media_at).await.expect("to the media socket");
            let (n, from) = media.recv_from(&mut buffer).await.expect("heard");
            assert_eq!((&buffer[..n], from), (&[round; 12][..], sip_at));
            media.try_send_to(&[round; 20], sip_at).expect("sent at once");
            let (n, from) = sip.recv_from(&mut buffer).await.expect("answered");
            assert_eq!((&buffer[..n], from), (&[round; 20][..], media_at));
        }
    }
}

//! SIP over UDP and TCP for the tokio drivers: datagrams or framed streams in,
//! parsed messages with their source address out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::sip::frame::frame_len;
use crate::sip::{MAX_MESSAGE_BYTES, Message};

/// A message that arrived, and from where.
pub struct Incoming {
    pub message: Message,
    pub from: SocketAddr,
}

/// Writers of the open TCP connections, by peer address. Only signalling
/// touches it, never the media path.
type Writers = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// One SIP socket: a UDP socket, or a set of TCP connections.
pub enum SipSocket {
    /// The buffer is the socket's own and reused by every receive: drivers
    /// re-create the `recv` future on every wake-up of their `select!` (each
    /// 20 ms media tick), and a fresh zeroed 64 KiB buffer each time was a
    /// third of a node's CPU under load (issue 10's profile).
    Udp {
        socket: UdpSocket,
        buffer: Box<[u8]>,
    },
    Tcp {
        local: SocketAddr,
        incoming: mpsc::Receiver<Incoming>,
        writers: Writers,
    },
}

/// Messages waiting per connection before the reader stops reading.
const QUEUE: usize = 64;

impl SipSocket {
    /// A UDP socket bound to `bind`.
    pub async fn udp(bind: SocketAddr) -> std::io::Result<SipSocket> {
        let buffer = vec![0u8; MAX_MESSAGE_BYTES + 1].into_boxed_slice();
        Ok(SipSocket::Udp { socket: UdpSocket::bind(bind).await?, buffer })
    }

    /// A TCP connection to `peer` (the caller's side).
    pub async fn tcp_connect(bind: SocketAddr, peer: SocketAddr) -> std::io::Result<SipSocket> {
        let socket = if peer.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        if bind.port() != 0 || !bind.ip().is_unspecified() {
            socket.bind(bind)?;
        }
        let stream = socket.connect(peer).await?;
        let local = stream.local_addr()?;
        let (sender, incoming) = mpsc::channel(QUEUE);
        let writers: Writers = Arc::default();
        spawn_connection(stream, peer, sender, writers.clone());
        Ok(SipSocket::Tcp { local, incoming, writers })
    }

    /// A TCP listener on `bind` (the callee's side).
    pub async fn tcp_listen(bind: SocketAddr) -> std::io::Result<SipSocket> {
        let listener = TcpListener::bind(bind).await?;
        let local = listener.local_addr()?;
        let (sender, incoming) = mpsc::channel(QUEUE);
        let writers: Writers = Arc::default();
        let accepted = writers.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                spawn_connection(stream, peer, sender.clone(), accepted.clone());
            }
        });
        Ok(SipSocket::Tcp { local, incoming, writers })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            SipSocket::Udp { socket, .. } => socket.local_addr(),
            SipSocket::Tcp { local, .. } => Ok(*local),
        }
    }

    /// The next message that parses; malformed ones are logged and dropped.
    /// `None` when a TCP transport has no connection left.
    pub async fn recv(&mut self) -> Option<Incoming> {
        match self {
            // `recv_from` is cancel-safe, and whatever a cancelled receive
            // left in the buffer is overwritten by the next one.
            SipSocket::Udp { socket, buffer } => loop {
                let Ok((n, from)) = socket.recv_from(buffer).await else { continue };
                match parse(&buffer[..n]) {
                    Some(message) => return Some(Incoming { message, from }),
                    None => tracing::debug!(%from, bytes = n, "dropped an unparseable SIP datagram"),
                }
            },
            SipSocket::Tcp { incoming, .. } => incoming.recv().await,
        }
    }

    /// Sends `message` to `to` (over TCP: on the connection with that peer).
    pub async fn send(&self, message: &Message, to: SocketAddr) -> std::io::Result<()> {
        let bytes = message.to_bytes();
        match self {
            SipSocket::Udp { socket, .. } => socket.send_to(&bytes, to).await.map(|_| ()),
            SipSocket::Tcp { writers, .. } => {
                let writer =
                    writers.lock().map_err(|_| std::io::Error::other("writer table poisoned"))?.get(&to).cloned();
                match writer {
                    Some(writer) => writer.send(bytes).await.map_err(|_| std::io::Error::other("connection closed")),
                    None => {
                        Err(std::io::Error::new(std::io::ErrorKind::NotConnected, format!("no TCP connection to {to}")))
                    }
                }
            }
        }
    }
}

fn parse(bytes: &[u8]) -> Option<Message> {
    // Keep-alives (CRLF) are not messages.
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Message::parse(bytes).map_err(|e| tracing::debug!(error = %e, "unparseable SIP message")).ok()
}

fn spawn_connection(stream: TcpStream, peer: SocketAddr, incoming: mpsc::Sender<Incoming>, writers: Writers) {
    let (mut reader, mut writer) = stream.into_split();
    let (sender, mut outgoing) = mpsc::channel::<Vec<u8>>(QUEUE);
    if let Ok(mut table) = writers.lock() {
        table.insert(peer, sender);
    }
    tokio::spawn(async move {
        while let Some(bytes) = outgoing.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut buffer = Vec::with_capacity(8192);
        let mut chunk = [0u8; 8192];
        'read: loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buffer.extend_from_slice(&chunk[..n]);
            loop {
                match frame_len(&buffer) {
                    Ok(Some(len)) => {
                        let frame: Vec<u8> = buffer.drain(..len).collect();
                        if let Some(message) = parse(&frame)
                            && incoming.send(Incoming { message, from: peer }).await.is_err()
                        {
                            break 'read;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A stream that cannot be framed cannot be resynchronised.
                        tracing::warn!(%peer, error = %e, "closing a TCP connection with a broken SIP stream");
                        break 'read;
                    }
                }
            }
        }
        if let Ok(mut table) = writers.lock() {
            table.remove(&peer);
        }
    });
}

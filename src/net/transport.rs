//! SIP bytes on the wire: datagrams parsed, and the stream side of an
//! endpoint: framed streams over TCP or TLS, one connection per peer,
//! whoever opened it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::tls::{Tls, server_name};
use crate::sip::Message;
use crate::sip::frame::frame_len;
use crate::vocab::Transport;

/// A message that arrived, from where and how.
#[derive(Debug)]
pub struct Incoming {
    pub message: Message,
    pub from: SocketAddr,
    pub transport: Transport,
}

/// Messages waiting per connection before the writer or reader waits.
const QUEUE: usize = 64;

/// A connection, TLS handshake included, must be up within this: a peer
/// that takes the TCP connection and then says nothing must not hold a
/// call (or an accepted socket) for ever.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// The message in `bytes`; keep-alives and malformed ones are logged and give none.
pub(super) fn parse(bytes: &[u8]) -> Option<Message> {
    // Keep-alives (CRLF) are not messages.
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Message::parse(bytes).map_err(|e| tracing::debug!(error = %e, "unparseable SIP message")).ok()
}

/// One open connection's writer.
struct Writer {
    sender: mpsc::Sender<Vec<u8>>,
    /// The name the peer's certificate was verified for, on a TLS
    /// connection this endpoint opened; none on one it accepted.
    verified: Option<String>,
}

/// Writers of the open connections, by peer address. Only signalling
/// touches it, never the media path.
type Writers = Mutex<HashMap<SocketAddr, Writer>>;

/// The TCP or TLS connections of one endpoint: accepted or opened, each
/// reused for everything to and from its peer; what they carry goes to
/// `incoming`.
pub(super) struct Connections {
    writers: Writers,
    incoming: mpsc::Sender<Incoming>,
    /// Held while a connection is opened, so that two calls to one peer
    /// starting together share one connection rather than open two.
    connecting: tokio::sync::Mutex<()>,
    /// TLS over every connection; none: plain TCP.
    tls: Option<Arc<Tls>>,
}

impl Connections {
    pub fn new(incoming: mpsc::Sender<Incoming>, tls: Option<Arc<Tls>>) -> Arc<Connections> {
        Arc::new(Connections { writers: Mutex::default(), incoming, connecting: tokio::sync::Mutex::new(()), tls })
    }

    fn transport(&self) -> Transport {
        if self.tls.is_some() { Transport::Tls } else { Transport::Tcp }
    }

    /// Accepts connections until the listener fails or the task is aborted.
    pub async fn accept(self: Arc<Self>, listener: TcpListener) {
        while let Ok((stream, peer)) = listener.accept().await {
            match self.tls.as_ref().and_then(|tls| tls.acceptor.clone()) {
                None => {
                    self.spawn_connection(stream, peer, None);
                }
                // The handshake runs apart, so a slow client holds up no other.
                Some(acceptor) => {
                    let connections = self.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(CONNECT_LIMIT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                connections.spawn_connection(stream, peer, None);
                            }
                            Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake with a client failed"),
                            Err(_) => tracing::info!(%peer, "TLS client did not finish its handshake in time"),
                        }
                    });
                }
            }
        }
    }

    /// Sends `bytes` on the connection with `to`. With `open`, the name of
    /// the peer (for TLS, the name its certificate must carry), a
    /// connection is opened if there is none; over TLS only one verified
    /// for that name is reused. Without it, only an open connection will do.
    pub async fn send(self: &Arc<Self>, bytes: Vec<u8>, to: SocketAddr, open: Option<&str>) -> std::io::Result<()> {
        let writer = match (self.writer(to, open), open) {
            (Some(writer), _) => writer,
            (None, None) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!("no {} connection to {to}", self.transport().via_name()),
                ));
            }
            (None, Some(name)) => {
                let _opening = self.connecting.lock().await;
                match self.writer(to, open) {
                    Some(writer) => writer,
                    None => self.open(to, name).await?,
                }
            }
        };
        writer.send(bytes).await.map_err(|_| {
            std::io::Error::other(format!("the {} connection to {to} closed", self.transport().via_name()))
        })
    }

    /// Opens a connection to `to`; over TLS nothing is written to it
    /// before the peer proved it is `name`.
    async fn open(self: &Arc<Self>, to: SocketAddr, name: &str) -> std::io::Result<mpsc::Sender<Vec<u8>>> {
        let transport = self.transport().via_name();
        let connecting = async {
            let stream = TcpStream::connect(to).await?;
            let connected: std::io::Result<mpsc::Sender<Vec<u8>>> = match &self.tls {
                None => Ok(self.spawn_connection(stream, to, None)),
                Some(tls) => {
                    let stream = tls.connector.connect(server_name(name)?, stream).await?;
                    Ok(self.spawn_connection(stream, to, Some(name.to_string())))
                }
            };
            connected
        };
        match tokio::time::timeout(CONNECT_LIMIT, connecting).await {
            Ok(Ok(writer)) => Ok(writer),
            Ok(Err(e)) => Err(std::io::Error::new(e.kind(), format!("{transport} to {to} ({name}): {e}"))),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{transport} to {to} ({name}): not connected within {} s", CONNECT_LIMIT.as_secs()),
            )),
        }
    }

    fn writer(&self, peer: SocketAddr, name: Option<&str>) -> Option<mpsc::Sender<Vec<u8>>> {
        let writers = self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let writer = writers.get(&peer).filter(|writer| !writer.sender.is_closed())?;
        // A TLS connection proves one name: a request for another needs its own.
        let proven = self.tls.is_none() || name.is_none() || writer.verified.as_deref() == name;
        proven.then(|| writer.sender.clone())
    }

    fn spawn_connection<S>(
        self: &Arc<Self>,
        stream: S,
        peer: SocketAddr,
        verified: Option<String>,
    ) -> mpsc::Sender<Vec<u8>>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (sender, mut outgoing) = mpsc::channel::<Vec<u8>>(QUEUE);
        let entry = Writer { sender: sender.clone(), verified };
        self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(peer, entry);
        tokio::spawn(async move {
            while let Some(bytes) = outgoing.recv().await {
                // TLS buffers a record until flushed; plain TCP flushes as a no-op.
                if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        });
        let connections = self.clone();
        let registered = sender.clone();
        tokio::spawn(async move {
            connections.read(&mut reader, peer).await;
            let mut writers = connections.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A newer connection with the same peer may have replaced this one.
            if writers.get(&peer).is_some_and(|current| current.sender.same_channel(&registered)) {
                writers.remove(&peer);
            }
        });
        sender
    }

    /// Reads framed messages until the stream ends or breaks.
    async fn read(&self, reader: &mut (impl AsyncRead + Unpin), peer: SocketAddr) {
        let transport = self.transport();
        let mut buffer = Vec::with_capacity(8192);
        let mut chunk = [0u8; 8192];
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buffer.extend_from_slice(&chunk[..n]);
            loop {
                match frame_len(&buffer) {
                    Ok(Some(len)) => {
                        let frame: Vec<u8> = buffer.drain(..len).collect();
                        let Some(message) = parse(&frame) else { continue };
                        let incoming = Incoming { message, from: peer, transport };
                        if self.incoming.send(incoming).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A stream that cannot be framed cannot be resynchronised.
                        tracing::warn!(%peer, transport = transport.via_name(), error = %e, "closing a connection with a broken SIP stream");
                        return;
                    }
                }
            }
        }
    }
}

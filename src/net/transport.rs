//! SIP bytes on the wire: datagrams parsed, and the TCP side of an endpoint
//! (framed streams, one connection per peer, whoever opened it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

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

/// The message in `bytes`; keep-alives and malformed ones are logged and give none.
pub(super) fn parse(bytes: &[u8]) -> Option<Message> {
    // Keep-alives (CRLF) are not messages.
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Message::parse(bytes).map_err(|e| tracing::debug!(error = %e, "unparseable SIP message")).ok()
}

/// Writers of the open TCP connections, by peer address. Only signalling
/// touches it, never the media path.
type Writers = Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>;

/// The TCP connections of one endpoint: accepted or opened, each reused for
/// everything to and from its peer; what they carry goes to `incoming`.
pub(super) struct Connections {
    writers: Writers,
    incoming: mpsc::Sender<Incoming>,
    /// Held while a connection is opened, so that two calls to one peer
    /// starting together share one connection rather than open two.
    connecting: tokio::sync::Mutex<()>,
}

impl Connections {
    pub fn new(incoming: mpsc::Sender<Incoming>) -> Arc<Connections> {
        Arc::new(Connections { writers: Mutex::default(), incoming, connecting: tokio::sync::Mutex::new(()) })
    }

    /// Accepts connections until the listener fails or the task is aborted.
    pub async fn accept(self: Arc<Self>, listener: TcpListener) {
        while let Ok((stream, peer)) = listener.accept().await {
            self.spawn_connection(stream, peer);
        }
    }

    /// Sends `bytes` on the connection with `to`, opening one if there is
    /// none and `connect` allows it.
    pub async fn send(self: &Arc<Self>, bytes: Vec<u8>, to: SocketAddr, connect: bool) -> std::io::Result<()> {
        let writer = match self.writer(to) {
            Some(writer) => writer,
            None if !connect => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!("no TCP connection to {to}"),
                ));
            }
            None => {
                let _opening = self.connecting.lock().await;
                match self.writer(to) {
                    Some(writer) => writer,
                    None => {
                        let stream = TcpStream::connect(to).await?;
                        self.spawn_connection(stream, to)
                    }
                }
            }
        };
        writer.send(bytes).await.map_err(|_| std::io::Error::other(format!("the TCP connection to {to} closed")))
    }

    fn writer(&self, peer: SocketAddr) -> Option<mpsc::Sender<Vec<u8>>> {
        let writers = self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writers.get(&peer).filter(|writer| !writer.is_closed()).cloned()
    }

    fn spawn_connection(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) -> mpsc::Sender<Vec<u8>> {
        let (mut reader, mut writer) = stream.into_split();
        let (sender, mut outgoing) = mpsc::channel::<Vec<u8>>(QUEUE);
        self.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(peer, sender.clone());
        tokio::spawn(async move {
            while let Some(bytes) = outgoing.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let connections = self.clone();
        let registered = sender.clone();
        tokio::spawn(async move {
            connections.read(&mut reader, peer).await;
            let mut writers = connections.writers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // A newer connection with the same peer may have replaced this one.
            if writers.get(&peer).is_some_and(|current| current.same_channel(&registered)) {
                writers.remove(&peer);
            }
        });
        sender
    }

    /// Reads framed messages until the stream ends or breaks.
    async fn read(&self, reader: &mut tokio::net::tcp::OwnedReadHalf, peer: SocketAddr) {
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
                        let incoming = Incoming { message, from: peer, transport: Transport::Tcp };
                        if self.incoming.send(incoming).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A stream that cannot be framed cannot be resynchronised.
                        tracing::warn!(%peer, error = %e, "closing a TCP connection with a broken SIP stream");
                        return;
                    }
                }
            }
        }
    }
}

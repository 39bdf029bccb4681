//! Runs one [`Call`] on real sockets until it finishes.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::local_ip_towards;
use super::transport::SipSocket;
use crate::call::{Call, CallConfig, CallEvent, CallReport, Destination, Prompts};
use crate::dialplan::Dialplan;
use crate::media::codec::Codec;
use crate::sip::{Credentials, Timers};
use crate::vocab::Transport;

/// What running a call needs besides the call itself.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// The Request-URI.
    pub target: String,
    /// Where SIP goes: the target's host, or the trunk.
    pub next_hop: SocketAddr,
    /// Local SIP address; an unspecified IP means "the one that reaches the next hop".
    pub bind: SocketAddr,
    pub transport: Transport,
    pub from_user: String,
    pub from_display: Option<String>,
    pub asserted_identity: Option<String>,
    pub credentials: Option<Credentials>,
    pub codecs: Vec<Codec>,
    pub dialplan: Arc<Dialplan>,
    pub prompts: Arc<Prompts>,
    pub timers: Timers,
    /// RTP ports to use; `None` takes any free port.
    pub rtp_ports: Option<RangeInclusive<u16>>,
    /// Turns true when the requester cancels or the node stops: the call ends.
    pub cancel: Option<watch::Receiver<bool>>,
    /// Packets that must continue the callee's RTP stream from a new address
    /// before it is heard there (`rtp.learning_packets`).
    pub rtp_learning_packets: u16,
}

/// Failures of the network layer itself (not of the call).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A socket could not be opened or used.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// A host name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let context = context.into();
    move |source| NetError::Io { context, source }
}

/// Resolves `host:port` (a name, IPv4, or bracketed IPv6) to an address.
pub async fn resolve(host_port: &str) -> Result<SocketAddr, NetError> {
    tokio::net::lookup_host(host_port)
        .await
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| NetError::Resolve(host_port.to_string()))
}

/// Places the call and drives it to its end; progress goes to `on_event`.
pub async fn run_call(setup: CallSetup, mut on_event: impl FnMut(&CallEvent)) -> Result<CallReport, NetError> {
    let local_ip: IpAddr = if setup.bind.ip().is_unspecified() {
        local_ip_towards(setup.next_hop).map_err(io("finding the local address"))?
    } else {
        setup.bind.ip()
    };
    let bind = SocketAddr::new(local_ip, setup.bind.port());
    let mut sip = match setup.transport {
        Transport::Udp => SipSocket::udp(bind).await,
        Transport::Tcp => SipSocket::tcp_connect(bind, setup.next_hop).await,
    }
    .map_err(io(format!("SIP socket on {bind}")))?;
    let local_sip = sip.local_addr().map_err(io("SIP socket"))?;
    let rtp = bind_rtp(local_ip, setup.rtp_ports.clone()).await.map_err(io("RTP socket"))?;
    let local_rtp = rtp.local_addr().map_err(io("RTP socket"))?;
    let config = CallConfig {
        target: setup.target.clone(),
        local_sip,
        transport: setup.transport,
        from_uri: format!("sip:{}@{}", setup.from_user, host_of(local_sip)),
        from_display: setup.from_display.clone(),
        asserted_identity: setup.asserted_identity.clone(),
        credentials: setup.credentials.clone(),
        local_rtp,
        codecs: setup.codecs.clone(),
        dialplan: setup.dialplan.clone(),
        prompts: setup.prompts.clone(),
        timers: setup.timers,
        next_hop: setup.next_hop,
        rtp_learning_packets: setup.rtp_learning_packets,
    };
    let mut call = Call::new(config, Instant::now());
    let mut datagram = vec![0u8; 2048];
    let mut cancel = setup.cancel.clone();
    loop {
        let now = Instant::now();
        while let Some((message, destination)) = call.poll_sip() {
            let to = match destination {
                Destination::NextHop => setup.next_hop,
                Destination::Reply(address) => address,
            };
            if let Err(e) = sip.send(&message, to).await {
                tracing::warn!(%to, error = %e, "SIP send failed");
                if destination == Destination::NextHop {
                    call.handle_transport_error(Instant::now());
                }
            }
        }
        while let Some((packet, to)) = call.poll_rtp(now) {
            // Media is best effort: a lost packet is a lost 20 ms, nothing more.
            let _ = rtp.send_to(packet, to).await;
        }
        while let Some(event) = call.poll_event() {
            on_event(&event);
            if let CallEvent::Finished(report) = event {
                return Ok(report);
            }
        }
        let deadline = call.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            incoming = sip.recv() => match incoming {
                Some(incoming) => call.handle_sip(Instant::now(), incoming.from, incoming.message),
                None => call.handle_transport_error(Instant::now()),
            },
            received = rtp.recv_from(&mut datagram) => {
                if let Ok((n, from)) = received {
                    call.handle_rtp(Instant::now(), from, &datagram[..n]);
                }
            }
            _ = sleep_until(deadline) => call.handle_timeout(Instant::now()),
            _ = canceled(&mut cancel) => {
                cancel = None;
                call.cancel(Instant::now());
            }
        }
    }
}

/// Resolves when the cancel signal turns true; never without a signal.
async fn canceled(signal: &mut Option<watch::Receiver<bool>>) {
    match signal {
        Some(receiver) => {
            if receiver.wait_for(|canceled| *canceled).await.is_err() {
                // The sender is gone without canceling: nothing will cancel now.
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// An RTP socket on `ip`, on an even port in `ports` when given (RTP on even
/// ports, RTCP on the odd one above, RFC 3550 §11).
async fn bind_rtp(ip: IpAddr, ports: Option<RangeInclusive<u16>>) -> std::io::Result<UdpSocket> {
    let Some(ports) = ports else { return UdpSocket::bind(SocketAddr::new(ip, 0)).await };
    let (low, high) = (*ports.start() as u32, *ports.end() as u32);
    let even_slots = ((high.saturating_sub(low)) / 2 + 1).max(1);
    let mut last_error = std::io::Error::new(std::io::ErrorKind::AddrInUse, "the RTP port range is exhausted");
    for _ in 0..64 {
        let port = (low + 2 * (rand::random::<u32>() % even_slots)).min(high) as u16;
        match UdpSocket::bind(SocketAddr::new(ip, port)).await {
            Ok(socket) => return Ok(socket),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `host` or `[v6]` without the port, for URIs.
fn host_of(address: SocketAddr) -> String {
    match address.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

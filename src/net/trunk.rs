//! Runs the [`TrunkWatch`] on its own SIP socket and publishes the trunk's
//! state in a [`TrunkHealth`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::call::NetError;
use super::local_ip_towards;
use super::transport::SipSocket;
use crate::sip::trunk::{TrunkHealth, TrunkWatch, TrunkWatchConfig};
use crate::vocab::Transport;

/// Watches the trunk at `next_hop` until `shutdown`, keeping `health` current.
pub async fn run_trunk_watch(
    mut config: TrunkWatchConfig,
    next_hop: SocketAddr,
    bind: SocketAddr,
    health: Arc<TrunkHealth>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let io = |context: &str| {
        let context = context.to_string();
        move |source| NetError::Io { context, source }
    };
    let ip: IpAddr =
        if bind.ip().is_unspecified() { local_ip_towards(next_hop).map_err(io("local address"))? } else { bind.ip() };
    let bind = SocketAddr::new(ip, bind.port());
    let mut socket = match config.transport {
        Transport::Udp => SipSocket::udp(bind).await,
        Transport::Tcp => SipSocket::tcp_connect(bind, next_hop).await,
    }
    .map_err(io("trunk watch socket"))?;
    config.local_sip = socket.local_addr().map_err(io("trunk watch socket"))?;
    let mut watch = TrunkWatch::new(config, Instant::now());
    loop {
        while let Some(request) = watch.poll_transmit() {
            if let Err(e) = socket.send(&request, next_hop).await {
                tracing::debug!(error = %e, "trunk watch: send failed");
            }
        }
        health.update(&watch);
        let deadline = watch.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            incoming = socket.recv() => {
                if let Some(incoming) = incoming && !incoming.message.is_request() {
                    watch.handle_response(Instant::now(), incoming.message);
                }
            }
            _ = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => watch.handle_timeout(Instant::now()),
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
    }
}

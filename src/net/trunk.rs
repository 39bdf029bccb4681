//! Runs the [`TrunkWatch`] through the node's endpoint and publishes the
//! trunk's state in a [`TrunkHealth`].

use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::driver::{Machine, drive};
use super::endpoint::Endpoint;
use super::{NetError, io, local_ip_towards};
use crate::sip::trunk::{TrunkHealth, TrunkWatch, TrunkWatchConfig};
use crate::sip::{Message, TransactionEvent, TransactionKey};
use crate::vocab::Transmit;

/// Watches the trunk (at `config.next_hop`) until `shutdown`, keeping `health` current.
pub async fn run_trunk_watch(
    endpoint: &Endpoint,
    mut config: TrunkWatchConfig,
    peer_name: String,
    health: Arc<TrunkHealth>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let ip: IpAddr = match endpoint.local_addr().ip() {
        ip if ip.is_unspecified() => local_ip_towards(config.next_hop).map_err(io("local address"))?,
        ip => ip,
    };
    let mut sip = endpoint.handle(config.transport, Some(peer_name), config.timers)?;
    config.local_sip = SocketAddr::new(ip, endpoint.local_addr().port());
    let watch = TrunkWatch::new(config, crate::clock::now());
    health.update(&watch);
    let mut machine = WatchMachine { watch, health, stopped: false };
    drive(&mut machine, &mut sip, None, Some(shutdown), |()| ControlFlow::Break(())).await;
    Ok(())
}

/// A [`TrunkWatch`] for the driver: it publishes the trunk's state after
/// every input, and its one event is "stopped".
struct WatchMachine {
    watch: TrunkWatch,
    health: Arc<TrunkHealth>,
    stopped: bool,
}

impl Machine for WatchMachine {
    type Event = ();

    /// The watch opens no dialog: what comes here is a response from
    /// elsewhere than the trunk, which it does not act on.
    fn handle_sip(&mut self, _now: Instant, from: SocketAddr, _message: Message) {
        tracing::debug!(%from, "SIP response to the trunk watch from elsewhere than the trunk ignored");
    }

    fn handle_transaction(&mut self, now: Instant, key: TransactionKey, event: TransactionEvent) {
        self.watch.handle_transaction(now, &key, event);
        self.health.update(&self.watch);
    }

    fn handle_rtp(&mut self, _now: Instant, _from: SocketAddr, _datagram: &[u8]) {}

    fn handle_timeout(&mut self, now: Instant) {
        self.watch.handle_timeout(now);
        self.health.update(&self.watch);
    }

    /// A lost request is a transaction timeout, which the watch reads as an unreachable trunk.
    fn handle_transport_error(&mut self, _now: Instant, _to: Option<SocketAddr>, _reason: &str) {}

    fn handle_stop(&mut self, _now: Instant) {
        self.stopped = true;
    }

    fn poll_sip(&mut self) -> Option<Transmit<Message>> {
        self.watch.poll_transmit()
    }

    fn poll_rtp(&mut self, _now: Instant) -> Option<Transmit<&[u8]>> {
        None
    }

    fn poll_event(&mut self) -> Option<()> {
        std::mem::take(&mut self.stopped).then_some(())
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.watch.poll_timeout()
    }
}

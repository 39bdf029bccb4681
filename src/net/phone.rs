//! Runs the simulated [`Phone`] on real sockets: an endpoint of its own
//! that hands it every new request.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::driver::{Machine, drive};
use super::endpoint::Endpoint;
use super::socket::Network;
use super::tls::{Tls, TlsFiles};
use super::{NetError, io};
use crate::phone::{Phone, PhoneConfig, PhoneEvent};
use crate::sip::{Message, TransactionEvent, TransactionKey};
use crate::vocab::{Transmit, Transport};

/// Where the phone listens and how many calls it takes.
#[derive(Debug, Clone)]
pub struct PhoneSetup {
    pub listen: SocketAddr,
    /// Stop after this many calls have ended; `None` serves until killed.
    pub calls: Option<u64>,
    /// Everything but the addresses, which are filled in once bound.
    pub config: PhoneConfig,
    /// With TLS: the certificate and key the phone presents.
    pub tls: TlsFiles,
}

/// Binds the sockets, reports the SIP address through `on_ready`, and serves.
pub async fn run_phone(
    setup: PhoneSetup,
    on_ready: impl FnOnce(SocketAddr),
    on_event: impl FnMut(&PhoneEvent),
) -> Result<(), NetError> {
    run_phone_in(&Network::System, None, setup, on_ready, on_event).await
}

/// [`run_phone`] on `network`, its RNG seeded with `seed` if given (a simulation).
pub async fn run_phone_in(
    network: &Network,
    seed: Option<u64>,
    setup: PhoneSetup,
    on_ready: impl FnOnce(SocketAddr),
    mut on_event: impl FnMut(&PhoneEvent),
) -> Result<(), NetError> {
    let transport = setup.config.transport;
    let tls = if transport == Transport::Tls { Some(Tls::server(&setup.tls)?) } else { None };
    let endpoint = Endpoint::bind_on(network, setup.listen, transport == Transport::Tcp, tls).await?;
    let mut sip = endpoint.catch_all(setup.config.transport, setup.config.timers)?;
    let local_sip = endpoint.local_addr();
    let rtp = network.bind_media(SocketAddr::new(local_sip.ip(), 0)).map_err(io("RTP socket"))?;
    let local_rtp = rtp.local_addr().map_err(io("RTP socket"))?;
    let config = PhoneConfig { local_sip, local_rtp, ..setup.config };
    let phone = match seed {
        Some(seed) => Phone::with_rng(config, StdRng::seed_from_u64(seed)),
        None => Phone::new(config),
    };
    let mut machine = PhoneMachine { phone, limit: setup.calls, ended: 0 };
    on_ready(local_sip);
    drive(&mut machine, &mut sip, Some(&rtp), None, |turn| match turn {
        Turn::Event(event) => {
            on_event(&event);
            ControlFlow::Continue(())
        }
        Turn::Done => ControlFlow::Break(()),
    })
    .await;
    Ok(())
}

/// What the phone's driver hears from it.
enum Turn {
    Event(PhoneEvent),
    /// The calls asked for have ended and none is in progress.
    Done,
}

/// A [`Phone`] for the driver, counting its calls towards the limit.
struct PhoneMachine {
    phone: Phone,
    limit: Option<u64>,
    ended: u64,
}

impl Machine for PhoneMachine {
    type Event = Turn;

    fn handle_sip(&mut self, now: Instant, from: SocketAddr, message: Message) {
        self.phone.handle_sip(now, from, message);
    }

    fn handle_transaction(&mut self, now: Instant, key: TransactionKey, event: TransactionEvent) {
        self.phone.handle_transaction(now, &key, event);
    }

    fn handle_rtp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.phone.handle_rtp(now, from, datagram);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.phone.handle_timeout(now);
    }

    /// The phone only answers: an answer that cannot go out is the caller's loss.
    fn handle_transport_error(&mut self, _now: Instant, _to: Option<SocketAddr>, _reason: &str) {}

    /// Nothing stops the phone but its call limit.
    fn handle_stop(&mut self, _now: Instant) {}

    fn poll_sip(&mut self) -> Option<Transmit<Message>> {
        self.phone.poll_sip()
    }

    fn poll_rtp(&mut self, now: Instant) -> Option<Transmit<&[u8]>> {
        self.phone.poll_rtp(now)
    }

    fn poll_event(&mut self) -> Option<Turn> {
        if let Some(event) = self.phone.poll_event() {
            if let PhoneEvent::CallEnded { .. } = event {
                self.ended += 1;
            }
            return Some(Turn::Event(event));
        }
        let done = self.limit.is_some_and(|limit| self.ended >= limit) && self.phone.active_calls() == 0;
        done.then_some(Turn::Done)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.phone.poll_timeout()
    }
}

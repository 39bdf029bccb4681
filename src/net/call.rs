//! Runs one [`Call`] on real sockets until it finishes.

use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::driver::{Machine, drive};
use super::endpoint::Endpoint;
use super::socket::{Network, Socket};
use super::{NetError, io, local_ip_towards};
use crate::call::{Call, CallConfig, CallEvent, CallReport, Prompts};
use crate::capture::{CallSnapshot, CaptureFile, Control, Recorder, TransactionEnd};
use crate::code::Code;
use crate::dialplan::Dialplan;
use crate::media::codec::Codec;
use crate::sip::{Credentials, Message, Timers, TransactionEvent, TransactionKey};
use crate::stir::Signer;
use crate::vocab::{SrtpPolicy, Transmit, Transport};

/// What running a call needs besides the call itself.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// The Request-URI.
    pub target: String,
    /// Where SIP goes: the target's host, or the trunk.
    pub next_hop: SocketAddr,
    /// The next hop's host: over TLS, the name its certificate must carry.
    pub peer_name: String,
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
    /// STIR/SHAKEN: signs every INVITE of the call.
    pub stir: Option<Arc<Signer>>,
    /// Seeds the call's RNG (a simulation); `None` draws from the OS.
    pub seed: Option<u64>,
    /// SRTP for the call's media; anything but `Off` needs `transport` TLS.
    pub srtp: SrtpPolicy,
    /// Number matching: the code the callee must key in before `#`.
    pub code: Option<Code>,
    /// Where the call's capture goes (`--capture`, `[capture]`); `None`: not captured.
    pub capture: Option<CaptureFile>,
}

/// Places the call through `endpoint` and drives it to its end; progress goes to `on_event`.
pub async fn run_call(
    endpoint: &Endpoint,
    setup: CallSetup,
    mut on_event: impl FnMut(&CallEvent),
) -> Result<CallReport, NetError> {
    let local_ip: IpAddr = match endpoint.local_addr().ip() {
        ip if ip.is_unspecified() => local_ip_towards(setup.next_hop).map_err(io("finding the local address"))?,
        ip => ip,
    };
    let mut sip = endpoint.handle(setup.transport, Some(setup.peer_name.clone()), setup.timers)?;
    let local_sip = SocketAddr::new(local_ip, endpoint.local_addr().port());
    let rtp = bind_rtp(endpoint.network(), local_ip, setup.rtp_ports.clone()).map_err(io("RTP socket"))?;
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
        stir: setup.stir.clone(),
        wall_clock: SystemTime::now(),
        srtp: setup.srtp,
        code: setup.code.clone(),
    };
    let now = crate::clock::now();
    let seed = seed_bytes(setup.seed);
    let capture = setup.capture.as_ref().and_then(|file| {
        Recorder::create(file, now, &seed, CallSnapshot::of(&config))
            .inspect_err(|e| tracing::warn!(path = %file.path.display(), error = %e, "the call is not captured"))
            .ok()
    });
    let call = Call::with_rng(config, now, StdRng::from_seed(seed));
    let mut call = CallMachine { call, next_hop: setup.next_hop, capture };
    let report = drive(&mut call, &mut sip, Some(&rtp), setup.cancel.clone(), |event| {
        on_event(&event);
        match event {
            CallEvent::Finished(report) => ControlFlow::Break(report),
            _ => ControlFlow::Continue(()),
        }
    })
    .await;
    if let Some(capture) = call.capture.take() {
        capture.finish();
    }
    Ok(report)
}

/// The call's RNG seed: from `seed` (a simulation), or else the OS's. Kept
/// as bytes so that a capture can record it and a replay draw the same.
fn seed_bytes(seed: Option<u64>) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed).fill_bytes(&mut bytes),
        None => rand::rng().fill_bytes(&mut bytes),
    }
    bytes
}

/// A [`Call`] for the driver: its messages addressed, a failure to reach
/// the next hop reported to it, and each of its inputs and outputs captured
/// when asked.
struct CallMachine {
    call: Call,
    next_hop: SocketAddr,
    capture: Option<Recorder>,
}

impl Machine for CallMachine {
    type Event = CallEvent;

    fn handle_sip(&mut self, now: Instant, from: SocketAddr, message: Message) {
        if let Some(capture) = &mut self.capture {
            if !message.is_request() {
                capture.control(now, &Control::StrayResponse);
            }
            capture.sip_in(now, from, &message);
        }
        self.call.handle_sip(now, from, message);
    }

    fn handle_transaction(&mut self, now: Instant, key: TransactionKey, event: TransactionEvent) {
        if let Some(capture) = &mut self.capture {
            match &event {
                // The endpoint matched it to the transaction wherever it came
                // from; the next hop is where a response normally does.
                TransactionEvent::Provisional(response) | TransactionEvent::Final(response) => {
                    capture.sip_in(now, self.next_hop, response);
                }
                TransactionEvent::Timeout => capture.transaction_end(now, &key, TransactionEnd::Timeout),
                TransactionEvent::TransportError => capture.transaction_end(now, &key, TransactionEnd::TransportError),
            }
        }
        self.call.handle_transaction(now, &key, event);
    }

    fn handle_rtp(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if let Some(capture) = &mut self.capture {
            capture.rtp_in(now, from, datagram);
        }
        self.call.handle_rtp(now, from, datagram);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(capture) = &mut self.capture {
            capture.control(now, &Control::Timeout);
        }
        self.call.handle_timeout(now);
    }

    fn handle_transport_error(&mut self, now: Instant, to: Option<SocketAddr>, reason: &str) {
        // A response that could not go back to a request's source is that peer's loss, not the call's.
        if to.is_none_or(|to| to == self.next_hop) {
            if let Some(capture) = &mut self.capture {
                capture.control(now, &Control::TransportError { reason: reason.to_string() });
            }
            self.call.handle_transport_error(reason);
        }
    }

    fn handle_stop(&mut self, now: Instant) {
        if let Some(capture) = &mut self.capture {
            capture.control(now, &Control::Stop);
        }
        self.call.cancel(now);
    }

    fn poll_sip(&mut self) -> Option<Transmit<Message>> {
        let transmit = self.call.poll_sip()?;
        if let Some(capture) = &mut self.capture {
            capture.sip_out(crate::clock::now(), transmit.destination, &transmit.contents);
        }
        Some(transmit)
    }

    fn poll_rtp(&mut self, now: Instant) -> Option<Transmit<&[u8]>> {
        let transmit = self.call.poll_rtp(now)?;
        if let Some(capture) = &mut self.capture {
            capture.rtp_out(now, transmit.destination, transmit.contents);
        }
        Some(transmit)
    }

    fn poll_event(&mut self) -> Option<CallEvent> {
        self.call.poll_event()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.call.poll_timeout()
    }
}

/// An RTP socket on `ip`, on an even port in `ports` when given (RTP on even
/// ports, RTCP on the odd one above, RFC 3550 §11).
fn bind_rtp(network: &Network, ip: IpAddr, ports: Option<RangeInclusive<u16>>) -> std::io::Result<Socket> {
    let Some(ports) = ports else { return network.bind_media(SocketAddr::new(ip, 0)) };
    let (low, high) = (*ports.start() as u32, *ports.end() as u32);
    let even_slots = ((high.saturating_sub(low)) / 2 + 1).max(1);
    let mut last_error = std::io::Error::new(std::io::ErrorKind::AddrInUse, "the RTP port range is exhausted");
    for _ in 0..64 {
        let port = (low + 2 * (rand::random::<u32>() % even_slots)).min(high) as u16;
        match network.bind_media(SocketAddr::new(ip, port)) {
            Ok(socket) => return Ok(socket),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// `host` or `[v6]` without the port, for URIs.
fn host_of(address: SocketAddr) -> String {
    match address.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

//! Watching the trunk, socket-free: REGISTER (with digest authentication,
//! refreshed before it expires) where the carrier wants it, and OPTIONS
//! pings. While the trunk does not answer, the engine does not dial: calls
//! into a dead trunk would only burn attempts.
//!
//! The watch is a transaction user: each request it sends runs as a client
//! transaction of the endpoint ([`super::transactions`]), which retransmits
//! it and tells the watch what became of it ([`TrunkWatch::handle_transaction`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;

use crate::sip::Credentials;
use crate::sip::authenticator::Authenticator;
use crate::sip::dialog::{self, new_call_id, new_tag};
use crate::sip::{Message, Method, Timers, TransactionEvent, TransactionKey};
use crate::timer::TimerTable;
use crate::vocab::{Transmit, Transport};

/// What to do towards the trunk.
#[derive(Debug, Clone)]
pub struct TrunkWatchConfig {
    /// The trunk's URI (`sip:host[:port]`): the REGISTER Request-URI and OPTIONS target.
    pub trunk_uri: String,
    /// Our address of record (`sip:user@domain`) when registering.
    pub register_as: Option<String>,
    pub credentials: Option<Credentials>,
    /// Registration lifetime asked for.
    pub expires: Duration,
    /// Time between OPTIONS pings; `None` sends none.
    pub options_interval: Option<Duration>,
    pub local_sip: SocketAddr,
    /// Where its requests go: the trunk's address.
    pub next_hop: SocketAddr,
    pub transport: Transport,
    /// The timers of the watch's client transactions.
    pub timers: Timers,
}

/// A failed registration is tried again after this.
const RETRY: Duration = Duration::from_secs(30);

/// The longest wait the watch schedules. Waits come from the config and from
/// the registrar's `Expires`, and `Instant + Duration` panics on overflow.
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// `now + wait`, the wait cut to [`MAX_WAIT`].
fn deadline(now: Instant, wait: Duration) -> Instant {
    now + wait.min(MAX_WAIT)
}

/// The watch's own deadlines; its transactions' are the endpoint's.
#[derive(Debug, Clone, Copy)]
enum Timer {
    /// Register (again): first, refresh, or retry after a failure.
    Register,
    /// The next OPTIONS ping.
    Options,
}

impl Timer {
    const COUNT: usize = Timer::Options as usize + 1;
}

impl From<Timer> for usize {
    fn from(timer: Timer) -> usize {
        timer as usize
    }
}

/// The trunk watch machine.
pub struct TrunkWatch {
    config: TrunkWatchConfig,
    call_id: String,
    tag: String,
    cseq: u32,
    /// The REGISTER and the OPTIONS waiting for their final responses.
    register: Option<TransactionKey>,
    options: Option<TransactionKey>,
    outbox: VecDeque<Message>,
    timers: TimerTable<Timer, { Timer::COUNT }>,
    registered: bool,
    reachable: bool,
    authenticator: Authenticator,
    /// Call-ID, tag, branches, cnonces: injected so that a simulated run is
    /// reproducible bit for bit.
    rng: StdRng,
}

impl TrunkWatch {
    /// Starts watching: the first REGISTER and OPTIONS go out at once.
    /// Identifiers come from a CSPRNG seeded by the OS.
    pub fn new(config: TrunkWatchConfig, now: Instant) -> Self {
        TrunkWatch::with_rng(config, now, rand::make_rng())
    }

    /// [`TrunkWatch::new`] with the caller's RNG (a fixed seed in simulation).
    pub fn with_rng(config: TrunkWatchConfig, now: Instant, mut rng: StdRng) -> Self {
        let host = config.local_sip.ip().to_string();
        let mut timers = TimerTable::default();
        if config.register_as.is_some() {
            timers.set(Timer::Register, now);
        }
        if config.options_interval.is_some() {
            timers.set(Timer::Options, now);
        }
        let mut watch = TrunkWatch {
            call_id: new_call_id(&host, &mut rng),
            tag: new_tag(&mut rng),
            cseq: 0,
            register: None,
            options: None,
            outbox: VecDeque::new(),
            timers,
            registered: config.register_as.is_none(),
            // A pinged trunk is down until it first answers: a node that
            // never heard from its trunk must not claim to be ready. One
            // that is not pinged is assumed up.
            reachable: config.options_interval.is_none(),
            authenticator: Authenticator::new(config.credentials.clone()),
            rng,
            config,
        };
        watch.handle_timeout(now);
        watch
    }

    /// Whether calls may go out: registered (if registering) and answering OPTIONS.
    pub fn is_up(&self) -> bool {
        self.registered && self.reachable
    }

    /// Whether the trunk answers OPTIONS (always, when it is not pinged).
    pub fn is_reachable(&self) -> bool {
        self.reachable
    }

    /// Whether the registration holds; `None` when not registering.
    pub fn is_registered(&self) -> Option<bool> {
        self.config.register_as.as_ref().map(|_| self.registered)
    }

    fn via(&mut self) -> String {
        dialog::via(self.config.transport, self.config.local_sip, &mut self.rng)
    }

    fn request(&mut self, method: Method, to: &str) -> Message {
        self.cseq += 1;
        let sips = self.config.trunk_uri.starts_with("sips:");
        let contact = dialog::contact("pound", self.config.local_sip, self.config.transport, sips);
        Message::request(method.clone(), self.config.trunk_uri.clone())
            .with_header("Via", self.via())
            .with_header("Max-Forwards", "70")
            .with_header("From", format!("<{to}>;tag={}", self.tag))
            .with_header("To", format!("<{to}>"))
            .with_header("Call-ID", self.call_id.clone())
            .with_header("CSeq", format!("{} {}", self.cseq, method.as_str()))
            .with_header("Contact", contact)
    }

    fn send_register(&mut self, authorization: Option<(&'static str, String)>) {
        let Some(aor) = self.config.register_as.clone() else { return };
        let mut register = self.request(Method::Register, &aor);
        register.add_header("Expires", self.config.expires.as_secs().to_string());
        if let Some((name, value)) = authorization {
            register.add_header(name, value);
        }
        self.register = TransactionKey::of_request(&register);
        self.outbox.push_back(register);
        self.timers.stop(Timer::Register);
    }

    fn send_options(&mut self) {
        let target = self.config.trunk_uri.clone();
        let options = self.request(Method::Options, &target);
        self.options = TransactionKey::of_request(&options);
        self.outbox.push_back(options);
        self.timers.stop(Timer::Options);
    }

    /// News of one of the watch's transactions. A transaction is the
    /// watch's until its final response (or timeout): what it absorbs
    /// afterwards is the endpoint's business.
    pub fn handle_transaction(&mut self, now: Instant, key: &TransactionKey, event: TransactionEvent) {
        let provisional = matches!(event, TransactionEvent::Provisional(_));
        if self.register.as_ref() == Some(key) {
            if !provisional {
                self.register = None;
            }
            if let TransactionEvent::Final(response) = &event
                && matches!(response.status(), Some(401 | 407))
                && self.answer_challenge(response)
            {
                return;
            }
            self.on_register(now, event);
        } else if self.options.as_ref() == Some(key) && !provisional {
            self.options = None;
            if let TransactionEvent::Final(_) = event {
                // Any final answer, even 404 or 405, proves the trunk is alive.
                self.reachable = true;
            } else {
                if self.reachable {
                    tracing::warn!(trunk = %self.config.trunk_uri, "the trunk stopped answering OPTIONS: dialling paused");
                }
                self.reachable = false;
            }
            if let Some(interval) = self.config.options_interval {
                self.timers.set(Timer::Options, deadline(now, interval));
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.register.is_none() && self.timers.is_expired(Timer::Register, now) {
            self.send_register(None);
        }
        if self.options.is_none() && self.timers.is_expired(Timer::Options, now) {
            self.send_options();
        }
    }

    fn answer_challenge(&mut self, response: &Message) -> bool {
        let uri = self.config.trunk_uri.clone();
        let Some(answer) = self.authenticator.answer(response, &Method::Register, &uri, &mut self.rng) else {
            return false;
        };
        self.send_register(Some((answer.header, answer.value)));
        true
    }

    fn on_register(&mut self, now: Instant, event: TransactionEvent) {
        match event {
            TransactionEvent::Provisional(_) => {}
            TransactionEvent::Final(response) if response.status().is_some_and(|s| (200..300).contains(&s)) => {
                // A registrar may shorten the lifetime we asked for, not
                // lengthen it (RFC 3261 §10.3): a larger value is hostile or
                // broken, and trusting it would let the registration lapse.
                let granted = granted_expiry(&response).map_or(self.config.expires, |g| g.min(self.config.expires));
                // Refresh well before expiry, as RFC 3261 §10.2.4 advises.
                let refresh = (granted / 5 * 4).max(Duration::from_secs(1));
                if !self.registered {
                    tracing::info!(trunk = %self.config.trunk_uri, seconds = granted.as_secs(), "registered");
                }
                self.registered = true;
                self.authenticator.start_over();
                self.timers.set(Timer::Register, deadline(now, refresh));
            }
            _ => {
                if self.registered {
                    tracing::warn!(trunk = %self.config.trunk_uri, "registration failed: dialling paused");
                }
                self.registered = false;
                self.authenticator.start_over();
                self.timers.set(Timer::Register, deadline(now, RETRY));
            }
        }
    }

    /// The next request to send to the trunk, each the start of a client transaction.
    pub fn poll_transmit(&mut self) -> Option<Transmit<Message>> {
        let contents = self.outbox.pop_front()?;
        Some(Transmit { destination: self.config.next_hop, contents })
    }

    /// When [`TrunkWatch::handle_timeout`] is next due: the next REGISTER or
    /// OPTIONS that waits for no transaction.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let register = self.timers.get(Timer::Register).filter(|_| self.register.is_none());
        let options = self.timers.get(Timer::Options).filter(|_| self.options.is_none());
        register.into_iter().chain(options).min()
    }
}

/// The trunk's state as the rest of the node sees it (`/readyz`, the
/// engine's dialling, metrics), published by the watch's driver.
#[derive(Debug)]
pub struct TrunkHealth {
    up: AtomicBool,
    /// [`REGISTRATION_OFF`], [`UNREGISTERED`] or [`REGISTERED`].
    registration: AtomicU8,
}

const REGISTRATION_OFF: u8 = 0;
const UNREGISTERED: u8 = 1;
const REGISTERED: u8 = 2;

impl TrunkHealth {
    /// The state before the watch has heard from the trunk: down when it is
    /// pinged, unregistered when registering (as [`TrunkWatch::new`] starts).
    pub fn new(pinged: bool, registering: bool) -> TrunkHealth {
        TrunkHealth {
            up: AtomicBool::new(!pinged),
            registration: AtomicU8::new(if registering { UNREGISTERED } else { REGISTRATION_OFF }),
        }
    }

    /// Whether the trunk answers OPTIONS (true when it is not pinged).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Whether our registration holds; `None` when `trunk.register_as` is unset.
    pub fn is_registered(&self) -> Option<bool> {
        match self.registration.load(Ordering::Acquire) {
            REGISTRATION_OFF => None,
            state => Some(state == REGISTERED),
        }
    }

    /// Whether calls may go out now.
    pub fn may_dial(&self) -> bool {
        self.is_up() && self.is_registered() != Some(false)
    }

    /// Takes the watch's current view.
    pub fn update(&self, watch: &TrunkWatch) {
        self.up.store(watch.is_reachable(), Ordering::Release);
        let registration = match watch.is_registered() {
            None => REGISTRATION_OFF,
            Some(false) => UNREGISTERED,
            Some(true) => REGISTERED,
        };
        self.registration.store(registration, Ordering::Release);
    }
}

impl Default for TrunkHealth {
    /// A trunk that is neither pinged nor registered with: up.
    fn default() -> Self {
        TrunkHealth::new(false, false)
    }
}

/// The lifetime the registrar granted: the Contact's `expires`, else the Expires header.
fn granted_expiry(response: &Message) -> Option<Duration> {
    let from_contact = response.contact().and_then(|c| c.param("expires").and_then(|v| v.parse().ok()));
    let seconds: u64 = from_contact.or_else(|| response.header("Expires").and_then(|v| v.trim().parse().ok()))?;
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::endpoint::HandlerId;
    use crate::sip::{ClientTransactions, Hop};

    const WATCH: HandlerId = HandlerId(1);

    /// The watch behind the endpoint's client transactions, as it runs.
    struct Trunk {
        watch: TrunkWatch,
        transactions: ClientTransactions<()>,
        now: Instant,
    }

    impl std::ops::Deref for Trunk {
        type Target = TrunkWatch;
        fn deref(&self) -> &TrunkWatch {
            &self.watch
        }
    }

    impl Trunk {
        fn new(config: TrunkWatchConfig, now: Instant) -> Trunk {
            let mut trunk =
                Trunk { watch: TrunkWatch::new(config, now), transactions: ClientTransactions::default(), now };
            trunk.pump();
            trunk
        }

        fn handle_response(&mut self, now: Instant, response: Message) {
            self.now = now;
            let trunk = self.watch.config.next_hop;
            assert_eq!(self.transactions.handle_response(now, trunk, response), crate::sip::Matched::Taken);
            self.tell(now);
        }

        fn handle_timeout(&mut self, now: Instant) {
            self.now = now;
            self.transactions.handle_timeout(now);
            self.tell(now);
            self.watch.handle_timeout(now);
            self.pump();
        }

        fn poll_timeout(&self) -> Option<Instant> {
            self.watch.poll_timeout().into_iter().chain(self.transactions.poll_timeout()).min()
        }

        /// Hands the watch's transactions' events to it, and its requests to the transactions.
        fn tell(&mut self, now: Instant) {
            while let Some(event) = self.transactions.poll_event() {
                self.watch.handle_transaction(now, &event.key, event.event);
            }
            self.pump();
        }

        fn pump(&mut self) {
            while let Some(Transmit { destination, contents }) = self.watch.poll_transmit() {
                let hop = Hop { destination, path: (), reliable: false, timers: self.watch.config.timers };
                self.transactions.start(self.now, WATCH, contents, hop);
            }
        }
    }

    /// The next message the watch's transactions send.
    fn sent(trunk: &mut Trunk) -> Option<Message> {
        trunk.transactions.poll_transmit().map(|out| out.transmit.contents)
    }

    fn config(register: bool, options: bool) -> TrunkWatchConfig {
        TrunkWatchConfig {
            trunk_uri: "sip:trunk.example.com:5060".into(),
            register_as: register.then(|| "sip:pound@trunk.example.com".to_string()),
            credentials: Some(Credentials { user: "pound".into(), password: "pw".into() }),
            expires: Duration::from_secs(600),
            options_interval: options.then(|| Duration::from_secs(30)),
            local_sip: "10.0.0.1:5060".parse().unwrap(),
            next_hop: "10.0.0.2:5060".parse().unwrap(),
            transport: Transport::Udp,
            timers: Timers::default(),
        }
    }

    fn reply(request: &Message, status: u16) -> Message {
        Message::response_to(request, status, Some("trunktag"))
    }

    #[test]
    fn registers_through_a_challenge_and_refreshes_before_expiry() {
        let t0 = Instant::now();
        let mut watch = Trunk::new(config(true, false), t0);
        assert!(!watch.is_up(), "not registered yet");
        let health = TrunkHealth::new(false, true);
        assert_eq!((health.is_up(), health.is_registered(), health.may_dial()), (true, Some(false), false));
        let register = sent(&mut watch).unwrap();
        assert_eq!(register.method(), Some(&Method::Register));
        assert_eq!(register.header("Expires"), Some("600"));
        let challenge =
            reply(&register, 401).with_header("WWW-Authenticate", "Digest realm=\"t\", nonce=\"n1\", qop=\"auth\"");
        watch.handle_response(t0, challenge);
        let ack_or_register = std::iter::from_fn(|| sent(&mut watch)).collect::<Vec<_>>();
        let authorized =
            ack_or_register.iter().find(|m| m.header("Authorization").is_some()).expect("an authorized REGISTER");
        assert_eq!(authorized.cseq().unwrap().0, 2);
        watch.handle_response(
            t0,
            reply(authorized, 200).with_header("Contact", "<sip:pound@10.0.0.1:5060>;expires=300"),
        );
        assert!(watch.is_up());
        health.update(&watch);
        assert_eq!((health.is_registered(), health.may_dial()), (Some(true), true));
        // Refreshed at 80 % of the 300 s granted.
        assert_eq!(watch.timers.get(Timer::Register), Some(t0 + Duration::from_secs(240)));
        watch.handle_timeout(t0 + Duration::from_secs(240));
        assert_eq!(sent(&mut watch).unwrap().method(), Some(&Method::Register));
    }

    #[test]
    fn an_oversize_expires_from_the_registrar_does_not_stop_the_watch() {
        for granted in [
            ("Expires", "18446744073709551615".to_string()),
            ("Expires", (u64::MAX / 1000).to_string()),
            ("Contact", format!("<sip:pound@10.0.0.1:5060>;expires={}", u64::MAX)),
        ] {
            let t0 = Instant::now();
            let mut watch = Trunk::new(TrunkWatchConfig { credentials: None, ..config(true, false) }, t0);
            let register = sent(&mut watch).unwrap();
            watch.handle_response(t0, reply(&register, 200).with_header(granted.0, granted.1.clone()));
            assert!(watch.is_up(), "{granted:?}");
            // A registrar may shorten the lifetime asked for, never lengthen it:
            // the refresh goes out within the 600 s requested.
            let mut refreshed = false;
            while let Some(at) = watch.poll_timeout().filter(|at| *at <= t0 + Duration::from_secs(600)) {
                watch.handle_timeout(at);
                if std::iter::from_fn(|| sent(&mut watch)).any(|m| m.method() == Some(&Method::Register)) {
                    refreshed = true;
                    break;
                }
            }
            assert!(refreshed, "the watch keeps refreshing after {granted:?}");
        }
    }

    #[test]
    fn wrong_credentials_are_not_retried_in_a_loop() {
        let t0 = Instant::now();
        let mut watch = Trunk::new(config(true, false), t0);
        let register = sent(&mut watch).unwrap();
        let challenge =
            |r: &Message| reply(r, 401).with_header("WWW-Authenticate", "Digest realm=\"t\", nonce=\"same\"");
        watch.handle_response(t0, challenge(&register));
        let retry = std::iter::from_fn(|| sent(&mut watch)).find(|m| m.method() == Some(&Method::Register)).unwrap();
        watch.handle_response(t0, challenge(&retry));
        assert!(std::iter::from_fn(|| sent(&mut watch)).all(|m| m.method() != Some(&Method::Register)));
        assert!(!watch.is_up());
        assert_eq!(watch.timers.get(Timer::Register), Some(t0 + RETRY));
    }

    #[test]
    fn health_reports_reachability_and_registration_apart() {
        let t0 = Instant::now();
        let health = TrunkHealth::new(false, true);
        let mut watch = Trunk::new(TrunkWatchConfig { credentials: None, ..config(true, false) }, t0);
        health.update(&watch);
        assert_eq!((health.is_up(), health.is_registered(), health.may_dial()), (true, Some(false), false));
        let register = sent(&mut watch).unwrap();
        watch.handle_response(t0, reply(&register, 200));
        health.update(&watch);
        assert_eq!((health.is_up(), health.is_registered(), health.may_dial()), (true, Some(true), true));
        // A pinged trunk is down until it first answers; registration is not asked.
        let pinged = TrunkHealth::new(true, false);
        pinged.update(&TrunkWatch::new(config(false, true), t0));
        assert_eq!((pinged.is_up(), pinged.is_registered(), pinged.may_dial()), (false, None, false));
    }

    #[test]
    fn a_trunk_that_stops_answering_options_pauses_dialling_until_it_answers() {
        let t0 = Instant::now();
        let mut watch = Trunk::new(config(false, true), t0);
        let health = TrunkHealth::new(true, false);
        health.update(&watch);
        assert!(!watch.is_up() && !health.is_up(), "down until the trunk first answers");
        let options = sent(&mut watch).unwrap();
        assert_eq!(options.method(), Some(&Method::Options));
        watch.handle_response(t0, reply(&options, 405));
        assert!(watch.is_up(), "any final response means alive");
        health.update(&watch);
        assert!(health.is_up() && health.may_dial());
        assert_eq!(health.is_registered(), None, "not registering");
        // The next ping goes unanswered: timer F (32 s) later the trunk is down.
        let mut now = t0 + Duration::from_secs(30);
        watch.handle_timeout(now);
        while let Some(deadline) = watch.poll_timeout() {
            if !watch.is_up() {
                break;
            }
            now = deadline;
            watch.handle_timeout(now);
            while sent(&mut watch).is_some() {}
        }
        assert!(!watch.is_up());
        health.update(&watch);
        assert!(!health.is_up() && !health.may_dial());
        now = watch.poll_timeout().unwrap();
        watch.handle_timeout(now);
        let ping = std::iter::from_fn(|| sent(&mut watch)).find(|m| m.method() == Some(&Method::Options)).unwrap();
        watch.handle_response(now, reply(&ping, 200));
        assert!(watch.is_up());
    }
}

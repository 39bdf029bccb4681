//! A whole node in simulated time, with no socket, for the tests that run verifications end
//! to end (`tests/simulation.rs`, `tests/thousand_calls.rs`): the API router in process, the
//! engine calling through the node's SIP endpoint over an in-memory network, SQLite, and the
//! webhook outbox POSTing to an in-process receiver that checks each signature. Run it on a
//! current-thread runtime whose clock is paused.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use pound::api::webhooks::{SIGNATURE_HEADER, WebhookConfig, deliver_webhooks, verify};
use pound::api::{ApiConfig, ApiKeyConfig, ApiState, Policy, router};
use pound::clock::Clock;
use pound::dialplan::Dialplan;
use pound::engine::{DialplanSet, EngineConfig, LoadedDialplan, TrunkConfig, run_engine};
use pound::media::codec::Codec;
use pound::metrics::Metrics;
use pound::net::{Endpoint, MemoryNetwork, Network};
use pound::phone::{PhoneConfig, PressVia};
use pound::policy::NumberRules;
use pound::sip::Timers;
use pound::store::StoreError;
use pound::vocab::{SrtpPolicy, Transport};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;

pub const KEY: &str = "sim-key";
pub const SECRET: &str = "whsec_sim";
/// 2026-01-01T00:00:00Z: where the simulated wall clock starts.
pub const EPOCH_MS: i64 = 1_767_225_600_000;
pub const NODE_SIP: &str = "10.0.0.1:5060";
/// The trunk: where every call goes, and where the simulated phone listens.
pub const PHONE_SIP: &str = "10.0.0.2:5060";

/// What differs between the simulations' nodes.
pub struct NodeOptions {
    /// Seeds the calls' RNGs.
    pub seed: u64,
    pub lease: Duration,
    pub max_concurrent_calls: usize,
    /// The trunk's pace.
    pub calls_per_second: f64,
    /// The API's admission policy.
    pub policy: Policy,
}

/// A running node; [`Node::stop`] ends it.
pub struct Node {
    pub app: axum::Router,
    /// Every webhook body the receiver accepted (signature checked), in delivery order.
    pub delivered: mpsc::UnboundedReceiver<Value>,
    stop: watch::Sender<bool>,
    engine: JoinHandle<Result<(), StoreError>>,
    outbox: JoinHandle<()>,
}

impl Node {
    /// Opens a SQLite store in `dir` and starts the engine (its SIP endpoint on `network` at
    /// [`NODE_SIP`], its trunk [`PHONE_SIP`]) and the webhook outbox.
    pub async fn start(network: &MemoryNetwork, dir: &Path, options: NodeOptions) -> Node {
        let clock = Clock::simulated(EPOCH_MS);
        let store =
            pound::store::open_with_clock(&format!("sqlite://{}", dir.join("sim.db").display()), clock).await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let (new_work, webhook_queued) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        let app = router(ApiState {
            store: store.clone(),
            config: ApiConfig {
                api_keys: vec![ApiKeyConfig { webhook_secret: Some(SECRET.into()), ..KEY.into() }],
                policy: options.policy,
                webhook_targets: pound::api::ssrf::TargetPolicy { allow_private: true, allow_cidrs: Vec::new() },
                // The simulations submit all their work at once and expect it taken: no
                // queue limit here (`tests/burst.rs` tests the limit against a real node).
                limits: pound::api::limits::HttpLimits { queue_limit: 0, ..Default::default() },
                ..ApiConfig::default()
            },
            metrics: metrics.clone(),
            ready: Arc::new(AtomicBool::new(true)),
            new_work: new_work.clone(),
            webhook_queued: webhook_queued.clone(),
            clock,
        });
        let plan = Dialplan::builtin("press-pound").unwrap().unwrap();
        let loaded = LoadedDialplan::load(plan).unwrap();
        let endpoint =
            Endpoint::bind_in(&Network::Memory(network.clone()), NODE_SIP.parse().unwrap(), false).await.unwrap();
        let engine = EngineConfig {
            node_id: "sim-node".into(),
            trunk: TrunkConfig {
                uri: format!("sip:{PHONE_SIP}"),
                credentials: None,
                from_user: "pound".into(),
                from_display: None,
                asserted_identity: None,
                transport: Transport::Udp,
                calls_per_second: options.calls_per_second,
                register_as: None,
                register_expires: Duration::from_secs(3600),
                options_interval: None,
                stir: None,
                srtp: SrtpPolicy::Off,
            },
            endpoint,
            rtp_ports: None,
            codecs: vec![Codec::Pcmu],
            dialplans: Arc::new(DialplanSet::from(std::collections::HashMap::from([("press-pound".into(), loaded)]))),
            lease: options.lease,
            max_concurrent_calls: options.max_concurrent_calls,
            poll_interval: Duration::from_millis(250),
            new_work,
            shutdown_grace: Duration::from_secs(5),
            rtp_learning_packets: pound::rtp::DEFAULT_LEARNING_PACKETS,
            numbers: NumberRules::default(),
            expire_after: Duration::from_secs(600),
            trunk_health: Default::default(),
            webhook_queued: webhook_queued.clone(),
            clock,
            seed: Some(options.seed),
            capture: None,
        };
        let (stop, stopping) = watch::channel(false);
        let engine = tokio::spawn(run_engine(store.clone(), metrics.clone(), engine, stopping.clone()));
        let (bodies, delivered) = mpsc::unbounded_channel();
        let webhooks = WebhookConfig {
            queued: webhook_queued,
            clock,
            in_process: Some(receiver(clock, bodies)),
            targets: pound::api::ssrf::TargetPolicy { allow_private: true, allow_cidrs: Vec::new() },
            ..WebhookConfig::default()
        };
        let outbox = tokio::spawn(deliver_webhooks(store, metrics, SECRET.as_bytes().to_vec(), webhooks, stopping));
        Node { app, delivered, stop, engine, outbox }
    }

    /// Stops the engine and the outbox and waits for both; the API router stays usable.
    pub async fn stop(&mut self) {
        self.stop.send(true).unwrap();
        (&mut self.engine).await.unwrap().unwrap();
        (&mut self.outbox).await.unwrap();
    }

    /// A request to the API with the node's key.
    pub async fn call_api(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        call_api(&self.app, method, path, body).await
    }
}

/// A request to `app` with the simulation's API key; the answer's status and JSON body.
pub async fn call_api(app: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// The requester's webhook endpoint: checks the signature against the simulated clock and
/// passes the body on.
fn receiver(clock: Clock, bodies: mpsc::UnboundedSender<Value>) -> axum::Router {
    let receive = move |State(bodies): State<mpsc::UnboundedSender<Value>>, headers: HeaderMap, body: String| async move {
        let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if !verify(SECRET.as_bytes(), signature, &body, clock.unix_ms() / 1000, 300) {
            return StatusCode::UNAUTHORIZED;
        }
        let _ = bodies.send(serde_json::from_str(&body).unwrap());
        StatusCode::NO_CONTENT
    };
    axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(bodies)
}

/// A phone that answers after `answer_after` and presses `#` `press_after` later, by `via`;
/// its addresses are filled in when it binds.
pub fn phone(via: PressVia, answer_after: Duration, press_after: Duration) -> PhoneConfig {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    PhoneConfig {
        local_sip: any,
        transport: Transport::Udp,
        local_rtp: any,
        press: "#".into(),
        play: None,
        early_media: None,
        via,
        press_after,
        answer_after,
        reject: None,
        never_answer: false,
        hangup_after: None,
        silent: false,
        codecs: vec![Codec::Pcmu],
        timers: Timers::default(),
        srtp: SrtpPolicy::Off,
    }
}

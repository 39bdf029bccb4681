//! A whole verification in simulated time, with no socket: the API router in process, the
//! engine claiming the work and calling through the node's SIP endpoint over an in-memory
//! network to a simulated phone, the decision stored in SQLite, and the signed webhook POSTed to
//! an in-process receiver. tokio's clock is paused, so the minutes the scenario spans pass as
//! fast as the machines run, and every identifier comes from the seed: the same seed gives the
//! same bytes on the wire and the same events, another seed other bytes.
//!
//! The scenario: the first call rings until the dialplan's ring timeout (45 s) and ends
//! `no_answer`; the engine calls again after the dialplan's retry delay (60 s); the second call
//! is answered after 2 s and `#` is pressed 8 s later. The lease is 6 s throughout, so the
//! verification stays claimed only because the engine renews it in simulated time.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use pound::api::webhooks::{SIGNATURE_HEADER, WebhookConfig, deliver_webhooks, verify};
use pound::api::{ApiConfig, ApiKeyConfig, ApiState, router};
use pound::clock::Clock;
use pound::dialplan::Dialplan;
use pound::engine::{DialplanSet, EngineConfig, LoadedDialplan, TrunkConfig, run_engine};
use pound::media::codec::Codec;
use pound::metrics::Metrics;
use pound::net::{Endpoint, MemoryNetwork, Network, PhoneSetup, run_phone_in};
use pound::phone::{PhoneConfig, PressVia};
use pound::policy::NumberRules;
use pound::sip::Timers;
use pound::vocab::{SrtpPolicy, Transport};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tower::ServiceExt;

const KEY: &str = "sim-key";
const SECRET: &str = "whsec_sim";
/// 2026-01-01T00:00:00Z: where the simulated wall clock starts.
const EPOCH_MS: i64 = 1_767_225_600_000;
const NODE_SIP: &str = "10.0.0.1:5060";
const PHONE_SIP: &str = "10.0.0.2:5060";

/// What one run saw, in order: each line starts with the simulated milliseconds.
type Trace = Arc<Mutex<Vec<String>>>;

fn note(trace: &Trace, start: Instant, line: String) {
    let at = start.elapsed().as_millis();
    trace.lock().unwrap().push(format!("{at:>7} {line}"));
}

fn phone(answer: bool) -> PhoneConfig {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    PhoneConfig {
        local_sip: any,
        transport: Transport::Udp,
        local_rtp: any,
        press: "#".into(),
        play: None,
        early_media: None,
        via: PressVia::Rfc4733,
        press_after: Duration::from_secs(8),
        answer_after: Duration::from_secs(2),
        reject: None,
        never_answer: !answer,
        hangup_after: None,
        silent: false,
        codecs: vec![Codec::Pcmu],
        timers: Timers::default(),
        srtp: SrtpPolicy::Off,
    }
}

/// The callee's line: a phone that rings and is never picked up for the first call, then
/// one that answers and presses `#`, on the same address.
async fn callee(network: MemoryNetwork, seed: u64, trace: Trace, start: Instant) {
    for (n, answers) in [false, true].into_iter().enumerate() {
        let setup = PhoneSetup {
            listen: PHONE_SIP.parse().unwrap(),
            calls: Some(1),
            config: phone(answers),
            tls: Default::default(),
        };
        let trace = trace.clone();
        let on_event = move |event: &pound::phone::PhoneEvent| note(&trace, start, format!("phone {event:?}"));
        let network = Network::Memory(network.clone());
        run_phone_in(&network, Some(seed + 1000 + n as u64), setup, |_| {}, on_event).await.unwrap();
        // The phone's endpoint lets go of its address once its receive task is torn down.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
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

async fn call_api(app: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
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

/// Runs the scenario with `seed` on a fresh paused runtime; returns its trace.
fn simulate(seed: u64) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace: Trace = Arc::default();
    runtime.block_on(async {
        let start = Instant::now();
        let clock = Clock::simulated(EPOCH_MS);
        let sip_trace = trace.clone();
        let network = MemoryNetwork::observed(Arc::new(move |from: SocketAddr, to: SocketAddr, bytes: &[u8]| {
            // SIP only: the RTP in between is thousands of packets.
            if from.port() == 5060 && to.port() == 5060 {
                note(&sip_trace, start, format!("{from} > {to}\n{}", String::from_utf8_lossy(bytes)));
            }
        }));
        let store = pound::store::open_with_clock(&format!("sqlite://{}", dir.path().join("sim.db").display()), clock)
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let (new_work, webhook_queued) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        let app = router(ApiState {
            store: store.clone(),
            config: ApiConfig {
                api_keys: vec![ApiKeyConfig { webhook_secret: Some(SECRET.into()), ..KEY.into() }],
                webhook_targets: pound::api::ssrf::TargetPolicy { allow_private: true, allow_cidrs: Vec::new() },
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
                calls_per_second: 10.0,
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
            lease: Duration::from_secs(6),
            max_concurrent_calls: 4,
            poll_interval: Duration::from_millis(250),
            new_work,
            shutdown_grace: Duration::from_secs(5),
            rtp_learning_packets: pound::rtp::DEFAULT_LEARNING_PACKETS,
            numbers: NumberRules::default(),
            expire_after: Duration::from_secs(600),
            trunk_health: Default::default(),
            webhook_queued: webhook_queued.clone(),
            clock,
            seed: Some(seed),
            capture: None,
        };
        let (stop, stopping) = watch::channel(false);
        let engine = tokio::spawn(run_engine(store.clone(), metrics.clone(), engine, stopping.clone()));
        let (bodies, mut delivered) = mpsc::unbounded_channel();
        let webhooks = WebhookConfig {
            queued: webhook_queued,
            clock,
            in_process: Some(receiver(clock, bodies)),
            targets: pound::api::ssrf::TargetPolicy { allow_private: true, allow_cidrs: Vec::new() },
            ..WebhookConfig::default()
        };
        let outbox =
            tokio::spawn(deliver_webhooks(store.clone(), metrics, SECRET.as_bytes().to_vec(), webhooks, stopping));
        let line = tokio::spawn(callee(network, seed, trace.clone(), start));

        let request =
            json!({"phone": "+14155550100", "user": "alice@contoso.com", "callback_url": "http://10.9.9.9/hook"});
        let (status, created) = call_api(&app, "POST", "/v1/verifications", Some(request)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{created}");
        assert_eq!(created["status"], "queued", "{created}");
        let id = created["id"].as_str().unwrap().to_string();

        let webhook =
            tokio::time::timeout(Duration::from_secs(300), delivered.recv()).await.expect("a webhook").unwrap();
        note(&trace, start, format!("webhook {}", webhook.to_string().replace(&id, "<id>")));
        assert_eq!(webhook["event"], "verification.completed", "{webhook}");
        assert_eq!(webhook["verification"]["id"], id.as_str(), "{webhook}");
        assert_eq!(webhook["verification"]["outcome"], "verified", "{webhook}");
        // Ring timeout, retry delay, answer and key: the verification spanned minutes of
        // simulated time, its 6 s lease renewed all along (a lost lease would have ended the call).
        assert!(start.elapsed() >= Duration::from_secs(45 + 60 + 10), "{:?}", start.elapsed());

        // The second call plays its confirmation and hangs up; then everything stops, and the
        // record is read once nothing writes to it any more (before, the outbox recording its
        // delivery and this read happen at the same simulated instant, in no fixed order).
        line.await.unwrap();
        stop.send(true).unwrap();
        engine.await.unwrap().unwrap();
        outbox.await.unwrap();
        let (status, record) = call_api(&app, "GET", &format!("/v1/verifications/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(record["status"], "completed", "{record}");
        assert_eq!(record["outcome"], "verified", "{record}");
        let attempts = record["attempts"].as_array().unwrap();
        let outcomes: Vec<&str> = attempts.iter().map(|a| a["outcome"].as_str().unwrap_or("?")).collect();
        assert_eq!(outcomes, ["no_answer", "verified"], "{record}");
        assert!(record["webhooks"][0]["delivered_at"].is_i64(), "{record}");
        // Verification and webhook ids are the OS's randomness (unguessable handles), not the seed's.
        let webhook_id = record["webhooks"][0]["id"].as_str().unwrap_or("none").to_string();
        let record_line = record.to_string().replace(&id, "<id>").replace(&webhook_id, "<webhook>");
        note(&trace, start, format!("stopped; record {record_line}"));
    });
    Arc::try_unwrap(trace).unwrap().into_inner().unwrap()
}

#[test]
fn a_whole_verification_runs_in_simulated_time_and_replays_from_its_seed() {
    let wall = std::time::Instant::now();
    let first = simulate(7);
    let elapsed = wall.elapsed();
    let simulated = first.last().and_then(|line| line.split_whitespace().next()).unwrap_or("?").to_string();
    println!("one run: {simulated} ms simulated in {elapsed:?} of wall time");
    println!("{}", first.join("\n"));
    let sip = |trace: &[String]| trace.iter().filter(|line| line.contains(" > ")).cloned().collect::<Vec<_>>();
    assert!(sip(&first).iter().any(|line| line.contains("CANCEL sip:")), "the unanswered call was canceled");
    assert!(sip(&first).iter().filter(|line| line.contains("\nINVITE sip:")).count() >= 2, "called twice");

    let again = simulate(7);
    assert_eq!(first.len(), again.len(), "the same seed gave a different number of steps");
    for (a, b) in first.iter().zip(&again) {
        let same = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let from = a.floor_char_boundary(same.saturating_sub(80));
        assert!(a == b, "the same seed gave a different trace, from {:?}\nvs {:?}", &a[from..], &b[from..]);
    }

    let other = simulate(8);
    assert_ne!(sip(&first), sip(&other), "another seed gives other identifiers on the wire");
}

//! The toll-fraud (IRSF) guard, attacked through the HTTP API: number classes
//! no verification needs, velocity limits shared by nodes on one PostgreSQL
//! database, and the per-prefix breaker.
//!
//! The PostgreSQL tests run when `POUND_TEST_DATABASE_URL` names a server
//! (`.ci/run` sets it); each uses a fresh database on it.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use pound::api::{ApiConfig, ApiState, Policy, router};
use pound::engine::{EngineConfig, TrunkConfig, run_engine};
use pound::media::codec::Codec;
use pound::metrics::Metrics;
use pound::net::Endpoint;
use pound::policy::velocity::Request;
use pound::policy::{NumberRules, VelocityLimits};
use pound::service::load_dialplans;
use pound::store::velocity::{LimitKind, Verdict};
use pound::store::{NewVerification, Store};
use pound::vocab::{Outcome, Transport};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KEY: &str = "toll-fraud-key";

/// The premium-rate and high-risk numbers of issue 7's finding, one or more
/// per class, each valid for its country (so only the guard can refuse it).
const REFUSED: [(&str, &str); 22] = [
    ("+8821612345678", "+882 international network"),
    ("+8823512345678", "+882 international network"),
    ("+881612345678", "+881 satellite"),
    ("+979312345678", "+979 international premium rate"),
    ("+19002345678", "+1 900 premium rate"),
    ("+449012345678", "+44 90 premium rate"),
    ("+449112345678", "+44 91 premium rate"),
    ("+448712345678", "+44 87 premium/shared cost"),
    ("+447012345678", "+44 70 personal number"),
    ("+447623456789", "+44 76 pager"),
    ("+5351234567", "+53 Cuba"),
    ("+252612345678", "+252 Somalia"),
    ("+870773123456", "+870 Inmarsat"),
    ("+67570123456", "+675 Papua New Guinea"),
    ("+18092345678", "+1 809 Dominican Republic"),
    ("+18762345678", "+1 876 Jamaica"),
    ("+37190123456", "+371 90 Latvian premium rate"),
    ("+80012345678", "+800 international freephone"),
    ("+80812345678", "+808 international shared cost"),
    ("+883510001234567", "+883 international network"),
    ("+15005550100", "+1 500 personal number"),
    ("+441234567890", "UK fixed line, control: must pass"),
];

/// Area codes in the United States (not the Caribbean parts of +1).
const US_AREA_CODES: [u16; 40] = [
    201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 218, 219, 224, 225, 228, 229, 231, 234,
    239, 240, 248, 251, 252, 253, 254, 256, 260, 262, 267, 269, 270, 272, 276, 281, 301,
];

struct Node {
    base: String,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

async fn serve(store: Arc<dyn Store>, config: ApiConfig) -> Node {
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(true));
    let app = router(ApiState {
        store: store.clone(),
        config,
        metrics: metrics.clone(),
        ready,
        new_work: Default::default(),
        webhook_queued: Default::default(),
        clock: pound::clock::Clock::System,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Node { base, store, metrics }
}

fn config(policy: Policy) -> ApiConfig {
    ApiConfig { api_keys: vec![KEY.into()], policy, ..ApiConfig::default() }
}

async fn post(client: &reqwest::Client, node: &Node, phone: &str) -> reqwest::Response {
    client
        .post(format!("{}/v1/verifications", node.base))
        .bearer_auth(KEY)
        .json(&json!({"phone": phone, "user": "mallory"}))
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn the_default_policy_refuses_every_high_risk_number_class() {
    let dir = tempfile::tempdir().unwrap();
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    let node = serve(store, config(Policy::default())).await;
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    for (phone, class) in REFUSED {
        let response = post(&client, &node, phone).await;
        if response.status() == StatusCode::ACCEPTED {
            accepted.push(class);
            continue;
        }
        let (status, code) = error_code(response).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{class}: {code}");
        assert!(
            ["country_not_allowed", "number_type_not_allowed", "prefix_denied"].contains(&code.as_str()),
            "{class}: {code}"
        );
    }
    assert_eq!(accepted, ["UK fixed line, control: must pass"], "accepted by the default policy");
    // Nothing refused was stored, so no engine can dial it.
    let stored = node.store.count_created_since(&format!("cfg_{}", &sha256_hex(KEY)[..12]), 0).await.unwrap();
    assert_eq!(stored, 1);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A fresh database on the test server, and its name (to drop it).
async fn fresh_postgres() -> Option<(String, String, String)> {
    let Ok(admin_url) = std::env::var("POUND_TEST_DATABASE_URL") else {
        eprintln!("POUND_TEST_DATABASE_URL is not set: the PostgreSQL test did not run");
        return None;
    };
    let (name, url) = common::postgres::fresh_database(&admin_url, "pound_toll").await;
    Some((url, name, admin_url))
}

/// Two API nodes on one database, each with its own connection pool like
/// two `pound serve`, sent `phones` all at once, alternating between them.
async fn hammer_two_nodes(url: &str, policy: Policy, phones: Vec<String>) -> (Vec<StatusCode>, [Node; 2]) {
    let a = serve(pound::store::open(url).await.unwrap(), config(policy.clone())).await;
    let b = serve(pound::store::open(url).await.unwrap(), config(policy)).await;
    let nodes = Arc::new([a, b]);
    let client = reqwest::Client::new();
    let mut requests = tokio::task::JoinSet::new();
    for (i, phone) in phones.into_iter().enumerate() {
        let (client, nodes) = (client.clone(), nodes.clone());
        requests.spawn(async move { post(&client, &nodes[i % 2], &phone).await.status() });
    }
    let statuses = requests.join_all().await;
    (statuses, Arc::into_inner(nodes).expect("every request finished"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_admit_exactly_the_key_limit() {
    let Some((url, name, admin_url)) = fresh_postgres().await else { return };
    const LIMIT: u32 = 20;
    let policy = Policy { max_per_key_per_hour: LIMIT, cooldown: Duration::ZERO, ..Policy::default() };
    // Numbers spread over many prefixes, so only the key limit binds.
    let phones = (0..80).map(|i| format!("+1{}555{:04}", US_AREA_CODES[i % US_AREA_CODES.len()], 100 + i)).collect();
    let (statuses, nodes) = hammer_two_nodes(&url, policy, phones).await;
    let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    eprintln!("two nodes, limit {LIMIT}: {accepted} accepted, {limited} limited");
    assert_eq!((accepted, limited), (LIMIT as usize, 80 - LIMIT as usize), "{statuses:?}");
    drop(nodes);
    common::postgres::drop_database(&admin_url, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_trip_one_breaker_and_admit_exactly_its_threshold() {
    let Some((url, name, admin_url)) = fresh_postgres().await else { return };
    let velocity = VelocityLimits { breaker_numbers: 5, ..VelocityLimits::default() };
    let policy = Policy { velocity, ..Policy::default() };
    // 40 different numbers in one range (+121255…), half through each node.
    let phones = (0..40).map(|i| format!("+1212555{:04}", 100 + i)).collect();
    let (statuses, nodes) = hammer_two_nodes(&url, policy, phones).await;
    let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
    eprintln!("two nodes, breaker after 5 numbers: {accepted} of 40 accepted");
    assert_eq!(accepted, 5, "{statuses:?}");
    let trips: f64 =
        nodes.iter().map(|n| metric(&n.metrics.encode(), "pound_prefix_breaker_trips_total").unwrap()).sum();
    assert_eq!(trips, 1.0, "one trip between the two nodes");
    drop(nodes);
    common::postgres::drop_database(&admin_url, &name).await;
}

/// 2026-11-30 00:59:50 UTC, ten seconds before a clock hour ends.
const BEFORE_THE_HOUR: i64 = 1_796_000_390_000;

/// Only the per-key limit of 100 binds: the other limits are out of reach.
fn key_limit_only() -> VelocityLimits {
    VelocityLimits {
        max_per_country_per_hour: 10_000,
        max_per_prefix_per_hour: 10_000,
        max_global_per_hour: 10_000,
        breaker_numbers: 10_000,
        ..VelocityLimits::default()
    }
}

fn new_verification(i: usize, now: i64) -> NewVerification {
    NewVerification {
        id: format!("v_{i:024x}"),
        api_key_id: "key-1".into(),
        tenant: "key-1".into(),
        phone: format!("+1{}555{:04}", US_AREA_CODES[i % US_AREA_CODES.len()], 100 + i),
        user: format!("user{i}"),
        dialplan: "press-pound".into(),
        callback_url: None,
        idempotency_key: None,
        request_hash: String::new(),
        max_attempts: 3,
        created_at: now,
        code: None,
        locale: None,
    }
}

/// Admits verification `i` at `now` under a per-key limit of 100.
async fn admit(store: &dyn Store, i: usize, now: i64) -> Verdict {
    let new = new_verification(i, now);
    let request = Request {
        api_key_id: &new.api_key_id,
        phone: &new.phone,
        country: "US",
        max_per_key_per_hour: 100,
        cooldown: Duration::ZERO,
    };
    store.admit_verification(&new, &key_limit_only().check(request, now)).await.unwrap().verdict
}

async fn the_window_slides_across_the_hour_boundary(store: &dyn Store) {
    for i in 0..100 {
        assert!(matches!(admit(store, i, BEFORE_THE_HOUR).await, Verdict::Admitted { created: true, .. }));
    }
    // A clock-hour window would start afresh at 01:00:00; this one still
    // holds the 100 of 00:59:50 until 01:59:50, and says so exactly.
    let hour = 3_600_000;
    for (i, now) in [(100, BEFORE_THE_HOUR + 20_000), (101, BEFORE_THE_HOUR + hour - 1)] {
        match admit(store, i, now).await {
            Verdict::Limited { kind: LimitKind::Key, max: 100, retry_at } => {
                assert_eq!(retry_at, Some(BEFORE_THE_HOUR + hour), "at {now}")
            }
            other => panic!("at {now}: {other:?}"),
        }
    }
    assert_eq!(store.count_created_since("key-1", 0).await.unwrap(), 100, "refusals store nothing");
    assert!(matches!(admit(store, 102, BEFORE_THE_HOUR + hour).await, Verdict::Admitted { created: true, .. }));
}

#[tokio::test]
async fn the_sliding_window_holds_across_the_hour_boundary_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    the_window_slides_across_the_hour_boundary(store.as_ref()).await;
}

#[tokio::test]
async fn the_sliding_window_holds_across_the_hour_boundary_on_postgres() {
    let Some((url, name, admin_url)) = fresh_postgres().await else { return };
    let store = pound::store::open(&url).await.unwrap();
    the_window_slides_across_the_hour_boundary(store.as_ref()).await;
    drop(store);
    common::postgres::drop_database(&admin_url, &name).await;
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_burst_of_distinct_numbers_in_one_prefix_pauses_it_and_shows_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    let velocity = VelocityLimits { breaker_numbers: 5, ..VelocityLimits::default() };
    let node = serve(store, config(Policy { velocity, ..Policy::default() })).await;
    let client = reqwest::Client::new();
    // Sequential numbers in one range: how an IRSF run walks a premium block.
    for i in 0..5 {
        assert_eq!(post(&client, &node, &format!("+1415555010{i}")).await.status(), StatusCode::ACCEPTED);
    }
    let response = post(&client, &node, "+14155550105").await;
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(retry_after, 3600, "paused for breaker_pause_s");
    assert_eq!(error_code(response).await, (StatusCode::TOO_MANY_REQUESTS, "prefix_paused".to_string()));
    // While it is open, even a number seen before is refused; other ranges are not.
    let response = post(&client, &node, "+14155550106").await;
    assert_eq!(error_code(response).await.1, "prefix_paused");
    assert_eq!(post(&client, &node, "+12125550100").await.status(), StatusCode::ACCEPTED);
    let text = client.get(format!("{}/metrics", node.base)).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, "pound_prefix_breaker_trips_total"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "pound_prefix_breakers_open"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "pound_policy_refusals_total{reason=\"prefix_paused\"}"), Some(2.0), "{text}");
    let stored = node.store.count_created_since(&format!("cfg_{}", &sha256_hex(KEY)[..12]), 0).await.unwrap();
    assert_eq!(stored, 6, "five in the paused range and one elsewhere");
}

/// Rows an older node (or an older configuration) stored for numbers the
/// rules now refuse end `blocked` without a call; an allowed row, the
/// control, is dialled through the same trunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_blocks_a_refused_number_it_finds_queued_without_dialling() {
    let dir = tempfile::tempdir().unwrap();
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    let trunk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let refused = ["+19002345678", "+18762345678", "+8821612345678"];
    for (i, phone) in refused.iter().enumerate() {
        // Straight into the store, past the API's check.
        // Created now: rows as old as the epoch would expire (issue 11) before the engine saw them.
        let new = NewVerification { phone: phone.to_string(), ..new_verification(i, pound::clock::unix_ms()) };
        store.create_verification(&new).await.unwrap();
    }
    let metrics = Arc::new(Metrics::new());
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let engine = tokio::spawn(run_engine(store.clone(), metrics.clone(), engine_config(&trunk).await, stopping));
    for i in 0..refused.len() {
        let id = new_verification(i, 0).id;
        let verification = loop {
            let verification = store.verification(&id).await.unwrap().unwrap();
            if verification.status.is_final() {
                break verification;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(verification.outcome, Some(Outcome::Blocked), "{}", verification.phone);
        assert!(store.attempts(&id).await.unwrap().is_empty(), "{}: no call attempt", verification.phone);
    }
    let mut packet = [0u8; 4096];
    assert!(trunk.try_recv(&mut packet).is_err(), "nothing reached the trunk");
    // The control: an allowed number queued the same way is dialled.
    store.create_verification(&new_verification(10, pound::clock::unix_ms())).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(10), trunk.recv(&mut packet)).await.unwrap().unwrap();
    let invite = String::from_utf8_lossy(&packet[..len]).into_owned();
    assert!(invite.starts_with(&format!("INVITE sip:{}@", new_verification(10, 0).phone)), "{invite}");
    let text = metrics.encode();
    // +1 900 by the deny-list; Jamaica and +882 (region 001) by the country list.
    assert_eq!(metric(&text, "pound_policy_refusals_total{reason=\"prefix_denied\"}"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "pound_policy_refusals_total{reason=\"country_not_allowed\"}"), Some(2.0), "{text}");
    // The control call rings a trunk that never answers: end it with the test.
    engine.abort();
}

async fn engine_config(trunk: &tokio::net::UdpSocket) -> EngineConfig {
    EngineConfig {
        node_id: "node-1".into(),
        trunk: TrunkConfig {
            uri: format!("sip:{}", trunk.local_addr().unwrap()),
            credentials: None,
            from_user: "pound".into(),
            from_display: None,
            asserted_identity: None,
            transport: Transport::Udp,
            calls_per_second: 100.0,
            register_as: None,
            register_expires: Duration::from_secs(3600),
            options_interval: None,
            stir: None,
            srtp: pound::vocab::SrtpPolicy::Off,
        },
        endpoint: Endpoint::bind("127.0.0.1:0".parse().unwrap(), false).await.unwrap(),
        rtp_ports: None,
        codecs: vec![Codec::Pcmu],
        dialplans: Arc::new(load_dialplans(None).unwrap().into()),
        lease: Duration::from_secs(30),
        max_concurrent_calls: 4,
        poll_interval: Duration::from_millis(20),
        new_work: Default::default(),
        shutdown_grace: Duration::ZERO,
        numbers: NumberRules::default(),
        rtp_learning_packets: pound::rtp::DEFAULT_LEARNING_PACKETS,
        expire_after: Duration::from_secs(600),
        trunk_health: Default::default(),
        webhook_queued: Default::default(),
        clock: pound::clock::Clock::System,
        seed: None,
        capture: None,
    }
}

/// Parallel retries of one request race the first into the store: each gets
/// the first record, none a limit the first request filled (the cooldown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_retries_get_the_first_record_not_its_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    let node = Arc::new(serve(store, config(Policy::default())).await);
    let client = reqwest::Client::new();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let request = client
            .post(format!("{}/v1/verifications", node.base))
            .bearer_auth(KEY)
            .header("idempotency-key", "order-7")
            .json(&json!({"phone": "+14155550100", "user": "alice"}));
        requests.spawn(async move { request.send().await.unwrap().status() });
    }
    let statuses = requests.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 5, "{statuses:?}");
}

/// `pound call` to a refused number reports `blocked`, and the trunk it
/// would have used hears nothing.
#[test]
fn pound_call_does_not_dial_a_refused_number() {
    let trunk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    trunk.set_nonblocking(true).unwrap();
    let trunk_uri = format!("sip:{}", trunk.local_addr().unwrap());
    for target in ["+19002345678".to_string(), format!("sip:+8821612345678@{}", trunk.local_addr().unwrap())] {
        let output =
            common::process::pound().args(["call", &target, "--trunk", &trunk_uri, "--timeout", "2"]).output().unwrap();
        let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
        assert_eq!(report["outcome"], "blocked", "{target}: {report}");
        assert_eq!(output.status.code(), Some(1), "{target}");
    }
    let mut packet = [0u8; 2048];
    assert!(trunk.recv(&mut packet).is_err(), "nothing reached the trunk");
}

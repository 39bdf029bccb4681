//! `/metrics` of a real `pound serve` after a verified call (issue 11): build
//! and process metrics, the trunk's state, the store's backlog, HTTP requests
//! by route template, and the two DTMF timing histograms.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use common::http::{get_json, wait_for};
use common::process::{Running, phone, serve_with_config};

const KEY: &str = "metrics-test-key";

/// `pound serve` with a config whose webhooks may go to loopback, plus `extra` TOML.
fn serve(dir: &Path, trunk: &str, extra: &str) -> (Running, String) {
    serve_with_config(dir, trunk, &format!("[webhooks]\nsecret = \"s\"\nallow_private = true\n{extra}"), KEY)
}

/// A webhook receiver on loopback that answers 204; its URL.
async fn receiver() -> String {
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", socket.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(socket, app).await.unwrap() });
    url
}

async fn scrape(client: &reqwest::Client, api: &str) -> String {
    let response = client.get(format!("{api}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the series written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn require(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("{series} missing from\n{text}"))
}

#[tokio::test]
async fn metrics_after_a_verified_call() {
    let dir = tempfile::tempdir().unwrap();
    let (_phone, trunk) = phone(&["--via", "inband", "--after", "1500"]);
    let (_serve, api) = serve(dir.path(), &trunk, "");
    let hook = receiver().await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{api}/v1/verifications"))
        .bearer_auth(KEY)
        .json(&json!({"phone": "+14155550131", "user": "bob@example.com", "callback_url": hook}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let record = wait_for(&client, &api, KEY, &id, "completed").await;
    assert_eq!(record["outcome"], "verified", "{record}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&client, &format!("{api}/v1/verifications/{id}"), KEY).await["webhooks"][0]["delivered_at"].is_null()
    {
        assert!(Instant::now() < deadline, "the webhook was never delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The outcome is stored at the key; the call's own figures (answer to
    // key) once it has hung up after the confirmation prompt.
    while get_json(&client, &format!("{api}/v1/verifications/{id}"), KEY).await["attempts"][0]["ended_at"].is_null() {
        assert!(Instant::now() < deadline, "the call never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.get(format!("{api}/no/such/{id}")).send().await.unwrap().status(), 404);
    // The backlog is read at most once a second: let any earlier reading age.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let text = scrape(&client, &api).await;

    let build = text.lines().find(|l| l.starts_with("pound_build_info{")).unwrap_or_else(|| panic!("{text}"));
    assert!(build.contains(&format!("commit=\"{}\"", pound::COMMIT)) && build.ends_with(" 1"), "{build}");
    assert!(build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{build}");

    assert!(require(&text, "process_open_fds") > 0.0);
    assert!(require(&text, "process_resident_memory_bytes") > 1e6);
    assert!(require(&text, "process_cpu_seconds_total") > 0.0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let started = require(&text, "process_start_time_seconds");
    assert!(started <= now && started > now - 600.0, "started {started}, now {now}");

    assert_eq!(require(&text, "pound_trunk_up"), 1.0, "the phone answers OPTIONS");
    assert!(!text.contains("pound_trunk_registered"), "no trunk.register_as, no registration gauge:\n{text}");
    assert_eq!(require(&text, "pound_queue_depth"), 0.0);
    assert_eq!(require(&text, "pound_webhooks_pending"), 0.0);

    let requests = |route: &str, status: &str| {
        value(&text, &format!("pound_http_requests_total{{route=\"{route}\",status=\"{status}\"}}")).unwrap_or(0.0)
    };
    assert_eq!(requests("/v1/verifications", "2xx"), 1.0, "{text}");
    assert!(requests("/v1/verifications/{id}", "2xx") >= 2.0, "{text}");
    assert_eq!(requests("unmatched", "4xx"), 1.0, "{text}");
    assert!(!text.contains(&id), "a raw path became a label:\n{text}");
    assert!(require(&text, "pound_http_request_duration_seconds_count{route=\"/v1/verifications/{id}\"}") >= 2.0);

    // One key, in-band: tone start to decision is tens of milliseconds, while
    // the answer to the key is the 1.5 s the phone waited plus the network.
    assert_eq!(require(&text, "pound_dtmf_detection_latency_seconds_count{source=\"inband\"}"), 1.0);
    let detection = require(&text, "pound_dtmf_detection_latency_seconds_sum{source=\"inband\"}");
    assert!((0.02..0.06).contains(&detection), "detection latency {detection} s");
    assert_eq!(require(&text, "pound_answer_to_key_seconds_count"), 1.0);
    let answer_to_key = require(&text, "pound_answer_to_key_seconds_sum");
    assert!(answer_to_key >= 1.5, "answer to key {answer_to_key} s");
}

#[tokio::test]
async fn trunk_gauges_report_a_failed_registration_apart_from_reachability() {
    let dir = tempfile::tempdir().unwrap();
    // The phone answers OPTIONS with 200 and REGISTER with 405.
    let (_phone, trunk) = phone(&[]);
    let (_serve, api) = serve(dir.path(), &trunk, "[trunk]\nregister_as = \"sip:pound@127.0.0.1\"\n");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(&client, &api).await;
        if value(&text, "pound_trunk_registered") == Some(0.0) && value(&text, "pound_trunk_up") == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

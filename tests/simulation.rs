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

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::sim::{Node, NodeOptions, PHONE_SIP};
use pound::api::Policy;
use pound::net::{MemoryNetwork, Network, PhoneSetup, run_phone_in};
use pound::phone::PressVia;
use serde_json::json;
use tokio::time::Instant;

/// What one run saw, in order: each line starts with the simulated milliseconds.
type Trace = Arc<Mutex<Vec<String>>>;

fn note(trace: &Trace, start: Instant, line: String) {
    let at = start.elapsed().as_millis();
    trace.lock().unwrap().push(format!("{at:>7} {line}"));
}

/// The callee's line: a phone that rings and is never picked up for the first call, then
/// one that answers and presses `#`, on the same address.
async fn callee(network: MemoryNetwork, seed: u64, trace: Trace, start: Instant) {
    for (n, answers) in [false, true].into_iter().enumerate() {
        let setup = PhoneSetup {
            listen: PHONE_SIP.parse().unwrap(),
            calls: Some(1),
            config: pound::phone::PhoneConfig {
                never_answer: !answers,
                ..common::sim::phone(PressVia::Rfc4733, Duration::from_secs(2), Duration::from_secs(8))
            },
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

/// Runs the scenario with `seed` on a fresh paused runtime; returns its trace.
fn simulate(seed: u64) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace: Trace = Arc::default();
    runtime.block_on(async {
        let start = Instant::now();
        let sip_trace = trace.clone();
        let network = MemoryNetwork::observed(Arc::new(move |from: SocketAddr, to: SocketAddr, bytes: &[u8]| {
            // SIP only: the RTP in between is thousands of packets.
            if from.port() == 5060 && to.port() == 5060 {
                note(&sip_trace, start, format!("{from} > {to}\n{}", String::from_utf8_lossy(bytes)));
            }
        }));
        let options = NodeOptions {
            seed,
            lease: Duration::from_secs(6),
            max_concurrent_calls: 4,
            calls_per_second: 10.0,
            policy: Policy::default(),
        };
        let mut node = Node::start(&network, dir.path(), options).await;
        let line = tokio::spawn(callee(network, seed, trace.clone(), start));

        let request =
            json!({"phone": "+14155550100", "user": "alice@contoso.com", "callback_url": "http://10.9.9.9/hook"});
        let (status, created) = node.call_api("POST", "/v1/verifications", Some(request)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{created}");
        assert_eq!(created["status"], "queued", "{created}");
        let id = created["id"].as_str().unwrap().to_string();

        let webhook =
            tokio::time::timeout(Duration::from_secs(300), node.delivered.recv()).await.expect("a webhook").unwrap();
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
        node.stop().await;
        let (status, record) = node.call_api("GET", &format!("/v1/verifications/{id}"), None).await;
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

//! Issue 10: a thousand concurrent calls through `pound phone` all end verified. Not timed: it
//! runs in simulated time with no socket (see `tests/common/sim.rs`), so what it checks is that
//! nothing is lost, stalled or done twice when a node carries a thousand calls at once.
//!
//! A thousand verifications are submitted through the API router at once; the engine may run a
//! thousand calls, the trunk takes a thousand calls a second, and the phone answers each call
//! after 1 s and presses `#` 4 s later. The calls are placed within about a second, so all of
//! them are up when the first one decides; the first hangs up only after its 4.3 s confirmation
//! prompt. Each verification must end `verified` with one attempt, its number dialled once (one
//! Call-ID), and its webhook delivered once. The same again with 100 calls whose `#` is in-band
//! tones, which the node must hear in the audio among the other calls' silence.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::sim::{NODE_SIP, Node, NodeOptions, PHONE_SIP};
use pound::api::Policy;
use pound::net::{MemoryNetwork, Network, PhoneSetup, run_phone_in};
use pound::phone::{PhoneEvent, PressVia};
use pound::policy::VelocityLimits;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// From the phone's answer to its `#`: longer than placing all the calls takes, so that they
/// overlap, and after the 3.7 s prompt, inside the input timeout that follows it.
const PRESS_AFTER: Duration = Duration::from_secs(4);
const ANSWER_AFTER: Duration = Duration::from_secs(1);
/// The simulated time every call must be over in: the calls take seconds each, and a call left
/// waiting for a key it missed would wait for the dialplan's timeouts (minutes).
const DEADLINE: Duration = Duration::from_secs(120);

/// What the phone reported, counted as it happened.
#[derive(Default)]
struct PhoneTally {
    invited: HashSet<String>,
    invites: usize,
    /// Calls that have pressed their key and not ended: answered calls, up now.
    pressed: HashSet<String>,
    /// The most calls up at once.
    peak_up: usize,
    ended: usize,
}

impl PhoneTally {
    fn on(&mut self, event: &PhoneEvent) {
        match event {
            PhoneEvent::Invited { call_id } => {
                self.invites += 1;
                self.invited.insert(call_id.clone());
            }
            PhoneEvent::KeyPressed { call_id, .. } => {
                self.pressed.insert(call_id.clone());
                self.peak_up = self.peak_up.max(self.pressed.len());
            }
            PhoneEvent::CallEnded { call_id, .. } => {
                self.pressed.remove(call_id);
                self.ended += 1;
            }
        }
    }
}

/// The Call-IDs of the INVITEs the node sent, by the number in their Request-URI
/// (retransmissions share their Call-ID).
type Dialled = Arc<Mutex<HashMap<String, HashSet<String>>>>;

fn note_invite(dialled: &Dialled, bytes: &[u8]) {
    let Some(text) = bytes.strip_prefix(b"INVITE sip:").and_then(|rest| std::str::from_utf8(rest).ok()) else {
        return;
    };
    let number = text.split('@').next().unwrap_or_default().to_string();
    let call_id = text
        .lines()
        .find_map(|line| line.strip_prefix("Call-ID:").or_else(|| line.strip_prefix("i:")))
        .map(|id| id.trim().to_string())
        .expect("an INVITE has a Call-ID");
    dialled.lock().unwrap().entry(number).or_default().insert(call_id);
}

/// Everything the API lets a single load generator do: no cooldown, no hourly budget, no
/// prefix breaker in the way of a thousand numbers in one prefix.
fn open_policy() -> Policy {
    let plenty = 1_000_000;
    Policy {
        cooldown: Duration::ZERO,
        max_per_key_per_hour: plenty,
        velocity: VelocityLimits {
            max_per_country_per_hour: plenty,
            max_per_prefix_per_hour: plenty,
            max_global_per_hour: plenty,
            breaker_numbers: plenty,
            ..VelocityLimits::default()
        },
        ..Policy::default()
    }
}

fn number(n: usize) -> String {
    format!("+1415555{n:04}")
}

/// Runs `calls` verifications at once, the phone pressing `#` by `via`, and checks every one.
fn run(calls: usize, via: PressVia, seed: u64) {
    let wall = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let start = Instant::now();
        let dialled: Dialled = Arc::default();
        let seen = dialled.clone();
        let (node_sip, phone_sip): (SocketAddr, SocketAddr) = (NODE_SIP.parse().unwrap(), PHONE_SIP.parse().unwrap());
        let network = MemoryNetwork::observed(Arc::new(move |from: SocketAddr, to: SocketAddr, bytes: &[u8]| {
            if from == node_sip && to == phone_sip {
                note_invite(&seen, bytes);
            }
        }));
        let options =
            NodeOptions { seed, lease: Duration::from_secs(30), max_concurrent_calls: calls, calls_per_second: 1000.0, policy: open_policy() };
        let mut node = Node::start(&network, dir.path(), options).await;

        let tally = Arc::new(Mutex::new(PhoneTally::default()));
        let phone = {
            let tally = tally.clone();
            let setup = PhoneSetup {
                listen: PHONE_SIP.parse().unwrap(),
                calls: Some(calls as u64),
                config: common::sim::phone(via, ANSWER_AFTER, PRESS_AFTER),
                tls: Default::default(),
            };
            let network = Network::Memory(network.clone());
            tokio::spawn(async move {
                let on_event = move |event: &PhoneEvent| tally.lock().unwrap().on(event);
                run_phone_in(&network, Some(seed + 1), setup, |_| {}, on_event).await.unwrap();
            })
        };

        let mut submitting = JoinSet::new();
        for n in 0..calls {
            let app = node.app.clone();
            submitting.spawn(async move {
                let request = json!({"phone": number(n), "user": format!("user{n}@contoso.com"), "callback_url": "http://10.9.9.9/hook"});
                let (status, created) = common::sim::call_api(&app, "POST", "/v1/verifications", Some(request)).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{created}");
                (created["id"].as_str().unwrap().to_string(), number(n))
            });
        }
        let ids: HashMap<String, String> = submitting.join_all().await.into_iter().collect();
        assert_eq!(ids.len(), calls, "every verification has its own id");

        let mut webhooks: HashMap<String, Vec<Value>> = HashMap::new();
        while webhooks.values().map(Vec::len).sum::<usize>() < calls {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let Ok(Some(webhook)) = tokio::time::timeout(left, node.delivered.recv()).await else {
                panic!("{} of {calls} webhooks by {:?} of simulated time", webhooks.len(), start.elapsed());
            };
            let id = webhook["verification"]["id"].as_str().unwrap_or_default().to_string();
            webhooks.entry(id).or_default().push(webhook);
        }
        let left = DEADLINE.saturating_sub(start.elapsed());
        tokio::time::timeout(left, phone).await.expect("every call over in time").unwrap();
        node.stop().await;
        let simulated = start.elapsed();

        for (id, phone) in &ids {
            let (status, record) = node.call_api("GET", &format!("/v1/verifications/{id}"), None).await;
            assert_eq!(status, StatusCode::OK, "{record}");
            assert_eq!((&record["status"], &record["outcome"]), (&json!("completed"), &json!("verified")), "{record}");
            let attempts = record["attempts"].as_array().unwrap();
            assert_eq!(attempts.len(), 1, "{record}");
            assert_eq!(attempts[0]["outcome"], "verified", "{record}");
            let source = match via {
                PressVia::Rfc4733 => "rfc4733",
                PressVia::Inband => "inband",
                PressVia::Info => "info",
            };
            assert_eq!(attempts[0]["dtmf_source"], source, "{record}");
            let call_ids = dialled.lock().unwrap().get(phone).cloned().unwrap_or_default();
            assert_eq!(call_ids, HashSet::from([attempts[0]["call_id"].as_str().unwrap().to_string()]), "{record}");
            let delivered = webhooks.get(id).map_or(&[][..], Vec::as_slice);
            assert_eq!(delivered.len(), 1, "webhooks for {id}: {delivered:?}");
            assert_eq!(delivered[0]["verification"]["outcome"], "verified", "{:?}", delivered[0]);
            assert!(record["webhooks"][0]["delivered_at"].is_i64(), "{record}");
        }
        assert_eq!(webhooks.len(), calls, "webhooks for other verifications");
        assert_eq!(dialled.lock().unwrap().len(), calls, "numbers dialled");
        let tally = tally.lock().unwrap();
        assert_eq!((tally.invites, tally.invited.len(), tally.ended), (calls, calls, calls), "INVITEs, calls, ends");
        assert_eq!(tally.peak_up, calls, "calls up at once");
        println!(
            "{calls} calls by {via:?}: all verified, {} up at once; {simulated:?} simulated in {:?} of wall time",
            tally.peak_up,
            wall.elapsed()
        );
    });
}

#[test]
fn a_thousand_concurrent_calls_all_end_verified() {
    run(1000, PressVia::Rfc4733, 10);
}

#[test]
fn a_hundred_concurrent_inband_calls_all_end_verified() {
    run(100, PressVia::Inband, 20);
}

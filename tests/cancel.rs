//! A requester's cancel ends the call it asked about, and only that one:
//! the node learns of it when it renews its leases, all of them at once
//! (`engine::leases`), and tells the one call concerned.
//!
//! Runs `pound serve` (a 3 s lease, renewed every second) and `pound phone`
//! as child processes on loopback; the phone answers every call and presses
//! `#` after [`KEY_AFTER`].

mod common;

use std::time::{Duration, Instant};

use common::http::{submit, wait_for};
use common::process::{PhoneLog, phone, serve_with_config};
use serde_json::json;

const KEY: &str = "cancel-test-key";
const KEY_AFTER: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ends_its_call_in_progress_and_leaves_the_others_running() {
    let dir = tempfile::tempdir().unwrap();
    let after = KEY_AFTER.as_millis().to_string();
    let (mut phone, trunk) = phone(&["--answer-after", "100", "--after", &after]);
    let log = PhoneLog::follow(&mut phone);
    let config = "[engine]\nlease_s = 3\n[policy]\ncooldown_s = 0\n";
    let (_serve, api) = serve_with_config(dir.path(), &trunk, config, KEY);
    let client = reqwest::Client::new();
    let canceled = submit(&client, &api, KEY, "+14155550160").await;
    let kept = submit(&client, &api, KEY, "+14155550161").await;
    wait_for(&client, &api, KEY, &canceled, "answered").await;
    wait_for(&client, &api, KEY, &kept, "answered").await;

    let asked = Instant::now();
    let response = client
        .post(format!("{api}/v1/verifications/{canceled}/cancel"))
        .bearer_auth(KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let record = wait_for(&client, &api, KEY, &canceled, "canceled").await;
    assert_eq!(record["outcome"], "canceled", "{record}");
    // One renewal period (a third of the lease) and a BYE, well before the key.
    let ended = log.wait_for("call_ended", Duration::from_secs(4)).await.expect("the canceled call got its BYE");
    assert!(ended.duration_since(asked) < Duration::from_secs(3), "ended {:?} after the cancel", ended - asked);
    assert_eq!(log.count("call_ended"), 1, "the other call ended too");

    // The other call was renewed all along and goes on to its key.
    let record = wait_for(&client, &api, KEY, &kept, "completed").await;
    assert_eq!(record["outcome"], "verified", "{record}");
    assert_eq!(log.count("invite"), 2);
}

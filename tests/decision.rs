//! The verdict does not wait for the goodbye (issue 9): a call's decision is
//! stored the moment the key is pressed, while the callee still hears the
//! confirmation prompt, so that nothing that happens to the node afterwards
//! can call the person again.
//!
//! Runs `pound serve` and `pound phone` as child processes on loopback, with
//! a dialplan whose confirmation prompt lasts [`CONFIRMATION`].

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::http::{get_json, submit};
use common::process::{PhoneLog, phone, serve_with_config};
use serde_json::Value;

const KEY: &str = "decision-test-key";
const CONFIRMATION: Duration = Duration::from_secs(8);

/// A `press-pound` dialplan in `dir/dialplans` (replacing the compiled-in
/// one) whose confirmation prompt is [`CONFIRMATION`] of a quiet tone;
/// returns the node's configuration file text.
fn long_confirmation(dir: &Path) -> String {
    let folder = dir.join("dialplans");
    std::fs::create_dir_all(&folder).unwrap();
    let prompt = folder.join("long-confirmation.wav");
    let samples: Vec<i16> = (0..CONFIRMATION.as_millis() as usize * 8)
        .map(|n| ((n as f64 * 400.0 / 8000.0 * std::f64::consts::TAU).sin() * 1000.0) as i16)
        .collect();
    pound::media::wav::write_file(&prompt, &samples, pound::media::wav::Encoding::Pcm16).unwrap();
    let builtin = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans/press-pound.toml"))
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("confirmation_prompt"))
        .collect::<Vec<_>>()
        .join("\n");
    let plan = format!("{builtin}\nconfirmation_prompt = {:?}\n", prompt.display().to_string());
    std::fs::write(folder.join("press-pound.toml"), plan).unwrap();
    format!("dialplans = {:?}\n[engine]\nlease_s = 3\n[policy]\ncooldown_s = 0\n", folder.display().to_string())
}

fn record_url(api: &str, id: &str) -> String {
    format!("{api}/v1/verifications/{id}")
}

/// Polls the record until `done` holds, for up to `within`.
async fn wait_until(api: &str, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        let record = get_json(&client, &record_url(api, id), KEY).await;
        if done(&record) {
            return record;
        }
        assert!(Instant::now() < deadline, "{id}: gave up waiting: {record}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_is_stored_while_the_confirmation_prompt_still_plays() {
    let dir = tempfile::tempdir().unwrap();
    let config = long_confirmation(dir.path());
    let (mut phone, trunk) = phone(&["--answer-after", "100", "--after", "500"]);
    let log = PhoneLog::follow(&mut phone);
    let (_serve, api) = serve_with_config(dir.path(), &trunk, &config, KEY);
    let id = submit(&reqwest::Client::new(), &api, KEY, "+14155550150").await;

    let pressed = log.wait_for("key", Duration::from_secs(20)).await.expect("the phone pressed #");
    let record = wait_until(&api, &id, Duration::from_secs(5), |r| r["status"] == "completed").await;
    let stored_after = pressed.elapsed();
    assert_eq!(record["outcome"], "verified", "{record}");
    assert_eq!(log.count("call_ended"), 0, "the call ended before the decision was visible: {record}");
    assert!(stored_after < CONFIRMATION, "stored {stored_after:?} after the key: after the prompt");
    // The attempt shows what decided it, and that its call still runs.
    let attempt = &record["attempts"][0];
    assert_eq!((&attempt["outcome"], &attempt["digits"]), (&Value::from("verified"), &Value::from("#")), "{record}");
    assert_eq!(attempt["dtmf_source"], "rfc4733", "{record}");
    assert!(attempt["digit_at"].is_i64() && attempt["ended_at"].is_null(), "{record}");
    let registrations =
        get_json(&reqwest::Client::new(), &format!("{api}/v1/registrations/bob@example.com"), KEY).await;
    assert_eq!(registrations["phones"][0]["phone"], "+14155550150", "{registrations}");

    // The rest of the call is recorded on the attempt once it is over.
    assert!(log.wait_for("call_ended", CONFIRMATION + Duration::from_secs(10)).await.is_some(), "no BYE");
    let record = wait_until(&api, &id, Duration::from_secs(5), |r| !r["attempts"][0]["ended_at"].is_null()).await;
    let attempt = &record["attempts"][0];
    assert_eq!(attempt["outcome"], "verified", "{record}");
    assert_eq!(attempt["digits"], "#", "{record}");
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(log.count("invite"), 1, "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_right_after_the_decision_calls_nobody_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = long_confirmation(dir.path());
    let (mut phone, trunk) = phone(&["--answer-after", "100", "--after", "500"]);
    let log = PhoneLog::follow(&mut phone);
    let (mut first, api) = serve_with_config(dir.path(), &trunk, &config, KEY);
    let id = submit(&reqwest::Client::new(), &api, KEY, "+14155550151").await;

    log.wait_for("key", Duration::from_secs(20)).await.expect("the phone pressed #");
    // Well past the decision (stored within 100 ms), well before the
    // confirmation prompt and BYE: the node dies holding a live call.
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    // A node on the same store, after the dead node's 3 s lease ran out:
    // an undecided verification would be claimed and dialled by now.
    let (_second, api) = serve_with_config(dir.path(), &trunk, &config, KEY);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let record = get_json(&reqwest::Client::new(), &record_url(&api, &id), KEY).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["outcome"], "verified", "{record}");
    assert_eq!(record["attempts"].as_array().unwrap().len(), 1, "{record}");
    assert_eq!(log.count("invite"), 1, "the person was called again: {record}");
}

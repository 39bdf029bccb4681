//! `pound serve` on SQLite with `pound phone` as the trunk: retries by
//! dialplan, and a graceful SIGTERM that lets a running call finish.

mod common;

use std::path::Path;
use std::process::Command;

use common::http::{submit, wait_for};
use common::process::{Running, phone, pound, start};

const KEY: &str = "serve-test-key";

/// A dialplan folder whose plan retries busy after one second.
fn dialplans(dir: &Path) -> std::path::PathBuf {
    let folder = dir.join("dialplans");
    std::fs::create_dir_all(&folder).unwrap();
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/prompts/en");
    std::fs::write(
        folder.join("press-pound.toml"),
        format!(
            "prompt = {:?}\nconfirmation_prompt = {:?}\nretry_outcomes = [\"busy\"]\nretry_after_ms = 1000\n",
            prompts.join("press-pound.wav"),
            prompts.join("confirmed.wav")
        ),
    )
    .unwrap();
    folder
}

fn serve(dir: &Path, trunk: &str) -> (Running, String) {
    let mut command = pound();
    command
        .args(["serve", "--store", &format!("sqlite://{}", dir.join("pound.db").display())])
        .args(["--trunk", trunk, "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0", "--api-key", KEY])
        .arg("--dialplans")
        .arg(dialplans(dir));
    let (child, ready) = start(command);
    (child, format!("http://{}", ready["api"].as_str().unwrap()))
}

#[tokio::test]
async fn busy_is_retried_by_the_dialplan_until_attempts_run_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_phone, trunk) = phone(&["--reject", "486"]);
    let (_serve, api) = serve(dir.path(), &trunk);
    let client = reqwest::Client::new();
    let id = submit(&client, &api, KEY, "+14155550111").await;
    let record = wait_for(&client, &api, KEY, &id, "completed").await;
    assert_eq!(record["outcome"], "busy", "{record}");
    let attempts = record["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "policy.max_attempts defaults to 3: {record}");
    for pair in attempts.windows(2) {
        let gap = pair[1]["started_at"].as_i64().unwrap() - pair[0]["ended_at"].as_i64().unwrap();
        assert!(gap >= 1000, "retried after retry_after_ms, not at once: {gap} ms");
    }
    assert!(attempts.iter().all(|a| a["sip_status"] == 486 && a["outcome"] == "busy"));
}

#[tokio::test]
async fn sigterm_lets_the_running_call_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (_phone, trunk) = phone(&["--after", "2000"]);
    let (mut serve, api) = serve(dir.path(), &trunk);
    let client = reqwest::Client::new();
    let id = submit(&client, &api, KEY, "+14155550112").await;
    wait_for(&client, &api, KEY, &id, "answered").await;
    let pid = serve.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = serve.0.wait().unwrap();
    assert!(stopped.success(), "a clean exit after SIGTERM: {stopped}");
    // The node is gone; the store says how the call ended.
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("pound.db").display())).await.unwrap();
    let verification = store.verification(&id).await.unwrap().unwrap();
    assert_eq!(verification.outcome, Some(pound::vocab::Outcome::Verified), "{verification:?}");
}

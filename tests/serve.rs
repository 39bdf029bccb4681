//! `pound serve` on SQLite with `pound phone` as the trunk: retries by
//! dialplan, a graceful SIGTERM that lets a running call finish, and each
//! attempt captured for `pound replay` when `[capture]` says so.

mod common;

use std::path::Path;
use std::process::Command;

use common::http::{submit, wait_for};
use common::process::{Running, phone, pound, serve_with_config, start};

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

#[tokio::test]
async fn with_captures_on_every_attempt_is_captured_and_replays_to_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let captures = dir.path().join("captures");
    let (_phone, trunk) = phone(&["--after", "300"]);
    let config = format!("[capture]\ndir = {:?}\nmax_bytes = 10000000\nmax_call_bytes = 1000000\n", captures);
    let (_serve, api) = serve_with_config(dir.path(), &trunk, &config, KEY);
    let client = reqwest::Client::new();
    let id = submit(&client, &api, KEY, "+14155550113").await;
    let record = wait_for(&client, &api, KEY, &id, "completed").await;
    assert_eq!(record["outcome"], "verified", "{record}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&captures).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the folder of captures is the node's alone");
    }
    let capture = captures.join(format!("{id}-1.pcap"));
    // The node writes the file's end when the call is over, just after the outcome is stored.
    let mut replayed = None;
    for _ in 0..50 {
        let output = pound().arg("replay").arg(&capture).output().unwrap();
        if output.status.code() == Some(0) {
            replayed = Some(output);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let replayed = replayed.unwrap_or_else(|| panic!("{} does not replay to verified", capture.display()));
    let report: serde_json::Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(report["outcome"], "verified");
    // The attempt as stored once the call is over (at the decision its key's end was not known yet).
    let mut attempt = record["attempts"][0].clone();
    for _ in 0..100 {
        if attempt["evidence"] == report["evidence"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        attempt = wait_for(&client, &api, KEY, &id, "completed").await["attempts"][0].clone();
    }
    assert_eq!(report["call_id"], attempt["call_id"], "the capture is of this attempt: {attempt}");
    assert_eq!(report["evidence"], attempt["evidence"], "and its key's evidence is the record's");
    assert!(String::from_utf8_lossy(&replayed.stderr).contains("all as captured"));
}

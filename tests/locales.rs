//! Every language (issue 12) end to end: `pound serve` on SQLite calls
//! `pound phone` for a verification with `"locale":"de-AT"`; the phone keys
//! `#` during the German prompt and counts the RTP packets it got from pound:
//! one every 20 ms until the key, then the frames of the German confirmation,
//! whose length no other language's confirmation has.

mod common;

use std::path::Path;
use std::time::Duration;

use common::http::{get_json, wait_for};
use common::process::{PhoneLog, phone, pound, serve_with_config};
use pound::call::Prompts;
use pound::dialplan::Dialplan;
use pound::locale::LOCALES;
use serde_json::json;

const KEY: &str = "locales-key";
/// Packets more or fewer than counted: the key and the BYE land within a
/// frame or two of when they were meant to.
const SLACK: u64 = 2;
/// The phone keys `#` this long after the answer, during the first prompt.
const AFTER_MS: u64 = 2_000;

/// The packets pound sends in a call in `locale` that is verified `AFTER_MS`
/// after the answer: prompt (or silence) every 20 ms until the key, then the
/// confirmation's 20 ms frames.
fn packets_in(plan: &Dialplan, locale: &'static str) -> u64 {
    let prompts = Prompts::load(&plan.with_locale(locale)).unwrap();
    AFTER_MS / 20 + prompts.confirmation.as_ref().expect("a confirmation").frames().len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_german_verification_plays_the_german_prompts_and_verifies() {
    let shipped_plan = Dialplan::find("press-pound", None).unwrap();
    let counts: Vec<u64> = LOCALES.iter().map(|l| packets_in(&shipped_plan, l)).collect();
    let german = packets_in(&shipped_plan, "de");
    assert_eq!(
        counts.iter().filter(|&&c| c.abs_diff(german) <= SLACK).count(),
        1,
        "the counts tell languages apart: {counts:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("dialplans");
    std::fs::create_dir_all(&folder).unwrap();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans/press-pound.toml")).unwrap();
    let mut plan: Vec<&str> = shipped.lines().filter(|line| !line.starts_with("input_timeout_ms")).collect();
    plan.push("input_timeout_ms = 5000");
    std::fs::write(folder.join("press-pound.toml"), plan.join("\n")).unwrap();
    let config = format!("dialplans = {:?}\n[trunk]\noptions_interval_s = 0\n", folder.display().to_string());

    let (mut phone, trunk) = phone(&["--press", "#", "--after", &AFTER_MS.to_string(), "--calls", "1"]);
    let log = PhoneLog::follow(&mut phone);
    let (_serve, api) = serve_with_config(dir.path(), &trunk, &config, KEY);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{api}/v1/verifications"))
        .bearer_auth(KEY)
        .json(&json!({"phone": "+14155550170", "user": "anna@example.de", "locale": "de-AT"}))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status(), 202);
    let created: serde_json::Value = response.json().await.unwrap();
    assert_eq!(created["locale"], "de", "{created}");
    let id = created["id"].as_str().unwrap();

    let record = wait_for(&client, &api, KEY, id, "completed").await;
    assert_eq!(record["outcome"], "verified", "{record}");
    assert_eq!(record["locale"], "de", "{record}");
    log.wait_for("call_ended", Duration::from_secs(20)).await.expect("the call ended");
    let heard = log.last("call_ended").unwrap()["rtp_received"].as_u64().unwrap();
    assert!(heard.abs_diff(german) <= SLACK, "the phone got {heard} packets; German is {german}, all are {counts:?}");
    let registered = get_json(&client, &format!("{api}/v1/registrations/anna%40example.de"), KEY).await;
    assert_eq!(registered["phones"][0]["phone"], "+14155550170", "{registered}");
}

#[test]
fn pound_call_plays_the_locale_it_is_given() {
    let refused = pound().args(["call", "sip:verify@127.0.0.1:9", "--locale", "sv"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--locale \"sv\""), "{refused:?}");

    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("ja.pcap");
    let (_phone, address) = phone(&["--press", "#", "--after", "300", "--calls", "1"]);
    let output = pound()
        .args(["call", &address.replace("sip:", "sip:verify@"), "--bind", "127.0.0.1:0", "--locale", "ja-JP"])
        .arg("--capture")
        .arg(&capture)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["outcome"], "verified", "{report}");
    // The capture's header says which prompt set played.
    let records = pound::capture::pcap::read(&std::fs::read(&capture).unwrap()).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&records[0].payload).unwrap();
    assert_eq!(header["call"]["locale"], "ja", "{header}");
}

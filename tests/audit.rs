//! The tamper-evident audit log end to end (issue 12): a verification run
//! by `pound serve` against `pound phone`, its entries through `GET
//! /v1/verifications/{id}/audit` (and only for its own tenant), then `pound
//! audit verify` on the store before and after its outcome is edited by hand.

mod common;

use std::process::Output;

use common::http::{get_json, submit, wait_for};
use common::process::{phone, pound, start};
use serde_json::Value;
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

const KEY: &str = "pk_audit_owner";
const OTHER_KEY: &str = "pk_audit_other_tenant";

fn audit_verify(store: &str) -> (Output, Value) {
    let output =
        pound().args(["audit", "verify", "--store", store]).env_remove("POUND_CONFIG").output().expect("pound runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no output; stderr: {}", stderr(&output)));
    (output, serde_json::from_str(line).expect("one JSON line"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_hand_edited_outcome_is_detected_by_pound_audit_verify() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("pound.db").display());
    let (_phone, trunk) = phone(&[]);
    let mut command = pound();
    command.args(["serve", "--store", &store, "--trunk", &trunk, "--api-bind", "127.0.0.1:0"]).args([
        "--sip-bind",
        "127.0.0.1:0",
        "--api-key",
        KEY,
        "--api-key",
        OTHER_KEY,
    ]);
    let (serve, ready) = start(command);
    let api = format!("http://{}", ready["api"].as_str().unwrap());
    let client = reqwest::Client::new();
    let id = submit(&client, &api, KEY, "+14155550100").await;
    let record = wait_for(&client, &api, KEY, &id, "completed").await;
    assert_eq!(record["outcome"], "verified", "{record}");
    // The decision is stored while the call still runs: wait for its end too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while get_json(&client, &format!("{api}/v1/verifications/{id}"), KEY).await["attempts"][0]["ended_at"].is_null() {
        assert!(std::time::Instant::now() < deadline, "the call never ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let audit_url = format!("{api}/v1/verifications/{id}/audit");
    let audit = get_json(&client, &audit_url, KEY).await;
    let items = audit["items"].as_array().unwrap_or_else(|| panic!("{audit}"));
    let kinds: Vec<&str> = items.iter().map(|item| item["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"created"), "{audit}");
    assert!(kinds.contains(&"attempt") && kinds.contains(&"decision"), "{kinds:?}");
    assert_eq!(items[0]["status"], "queued");
    assert_eq!(items[0]["phone"], "+14155550100");
    let decision = items.iter().find(|item| item["kind"] == "decision").unwrap();
    assert_eq!((&decision["status"], &decision["outcome"]), (&Value::from("completed"), &Value::from("verified")));
    // One chain: each entry names the hash of the one before it.
    assert_eq!(items[0]["prev_hash"], "0".repeat(64));
    for pair in items.windows(2) {
        assert_eq!(pair[1]["seq"].as_u64(), pair[0]["seq"].as_u64().map(|seq| seq + 1), "{audit}");
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "{audit}");
    }
    // Another tenant's key sees no more of it than of a verification that does not exist.
    let hidden = client.get(&audit_url).bearer_auth(OTHER_KEY).send().await.unwrap();
    assert_eq!(hidden.status(), 404);
    let missing = client.get(format!("{api}/v1/verifications/v_nothing/audit")).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    drop(serve);

    let (output, intact) = audit_verify(&store);
    assert!(output.status.success(), "{intact} {}", stderr(&output));
    assert_eq!(intact["intact"], true, "{intact}");
    assert_eq!((intact["verifications"].as_u64(), intact["tenants"].as_u64()), (Some(1), Some(1)), "{intact}");
    assert_eq!(intact["entries"].as_u64(), Some(items.len() as u64), "{intact}");

    let mut db = SqliteConnection::connect(&store).await.unwrap();
    sqlx::query("UPDATE verifications SET outcome = 'no_answer' WHERE id = ?")
        .bind(&id)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let (output, tampered) = audit_verify(&store);
    assert_eq!(output.status.code(), Some(1), "{tampered}");
    assert_eq!(tampered["intact"], false);
    assert_eq!(tampered["problem"]["verification"], id.as_str(), "{tampered}");
    let detail = tampered["problem"]["detail"].as_str().unwrap();
    assert!(detail.starts_with("outcome") && detail.contains("no_answer") && detail.contains("verified"), "{detail}");
    let message = stderr(&output);
    assert!(message.contains(&id) && message.contains("outcome"), "{message}");
    assert!(!message.contains("+14155550100") && !tampered.to_string().contains("+14155550100"), "phone in clear");
}

#[test]
fn a_store_that_cannot_be_opened_is_an_error_not_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let typo = format!("sqlite://{}", dir.path().join("typo.db").display());
    for store in ["mysql://nowhere", typo.as_str()] {
        let output = pound()
            .args(["audit", "verify", "--store", store])
            .env_remove("POUND_CONFIG")
            .output()
            .expect("pound runs");
        assert_eq!(output.status.code(), Some(2), "{store}: {}", stderr(&output));
        assert!(output.stdout.is_empty(), "{store}: no verdict");
    }
    assert!(!dir.path().join("typo.db").exists(), "no empty store was made and called intact");
}

//! `pound keys list` and `pound keys revoke` as an operator runs them against
//! a running `pound serve`, and the store every key command must be told.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::process::{phone, pound, start};
use reqwest::StatusCode;
use serde_json::Value;

/// Runs `pound keys ARGS` in `dir` with neither POUND_STORE nor POUND_CONFIG set.
fn keys_in(dir: &Path, args: &[&str]) -> Output {
    let mut command = pound();
    command.current_dir(dir).env_remove("POUND_STORE").env_remove("POUND_CONFIG");
    command.arg("keys").args(args).output().expect("pound runs")
}

/// The JSON lines of a successful key command.
fn lines(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).expect("JSON")).collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn without_a_store_or_a_config_key_commands_refuse_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["create"][..], &["list"], &["revoke", "default"], &["rotate-secret", "default"]] {
        let output = keys_in(dir.path(), args);
        assert!(!output.status.success(), "{args:?}");
        let message = stderr(&output);
        assert!(message.contains("no store given") && message.contains("--store"), "{args:?}: {message}");
        assert!(message.contains("--config"), "{args:?}: {message}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no ./pound.db or anything else was made");

    // A store that does not exist yet is not listed as empty: a typo would look like "no keys".
    let output = keys_in(dir.path(), &["list", "--store", "sqlite://typo.db"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("typo.db"), "{}", stderr(&output));
    assert!(!dir.path().join("typo.db").exists());
}

#[test]
fn the_config_file_names_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pound.toml");
    let db = dir.path().join("keys.db");
    std::fs::write(&config, format!("[store]\nurl = \"sqlite://{}\"\n", db.display())).unwrap();
    let config = config.to_str().unwrap();
    let created = lines(&keys_in(dir.path(), &["create", "--name", "ops", "--config", config]));
    assert!(db.exists(), "the key went where store.url says");
    let listed = lines(&keys_in(dir.path(), &["list", "--config", config]));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], created[0]["id"]);
    // --store wins over the config file, as in pound serve.
    let other = format!("sqlite://{}", dir.path().join("other.db").display());
    lines(&keys_in(dir.path(), &["create", "--config", config, "--store", &other]));
    assert_eq!(lines(&keys_in(dir.path(), &["list", "--config", config])).len(), 1);

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[store]\nurl = 7\n").unwrap();
    let output = keys_in(dir.path(), &["list", "--config", broken.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("store.url"), "{}", stderr(&output));
}

#[tokio::test]
async fn list_shows_no_secret_and_a_revoked_key_is_refused_by_a_running_server_within_5_s() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("pound.db").display());
    let keys = |args: &[&str]| keys_in(dir.path(), &[args, &["--store", &store]].concat());

    let ci = lines(&keys(&["create", "--name", "ci"])).remove(0);
    let ops = lines(&keys(&["create", "--name", "ops", "--admin", "--tenant", "operators"])).remove(0);
    let ci_again = lines(&keys(&["create", "--name", "ci"])).remove(0);

    let (_phone, trunk) = phone(&[]);
    let mut command = pound();
    command.args(["serve", "--store", &store, "--trunk", &trunk]).args([
        "--api-bind",
        "127.0.0.1:0",
        "--sip-bind",
        "127.0.0.1:0",
    ]);
    let (_serve, ready) = start(command);
    let api = format!("http://{}/v1/verifications", ready["api"].as_str().unwrap());
    let client = reqwest::Client::new();
    let status = |key: Value| {
        let request = client.get(&api).bearer_auth(key.as_str().unwrap().to_string());
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(status(ops["key"].clone()).await, StatusCode::OK);
    assert_eq!(status(ci["key"].clone()).await, StatusCode::OK);

    let listed = lines(&keys(&["list"]));
    let ids: Vec<&Value> = listed.iter().map(|key| &key["id"]).collect();
    assert_eq!(ids, [&ci["id"], &ops["id"], &ci_again["id"]], "oldest first");
    let text = String::from_utf8_lossy(&keys(&["list"]).stdout).into_owned();
    for secret in [&ci, &ops, &ci_again].into_iter().flat_map(|key| [&key["key"], &key["webhook_secret"]]) {
        assert!(!text.contains(secret.as_str().unwrap()), "a secret in the listing: {text}");
    }
    assert!(!text.contains("pk_") && !text.contains("whsec_") && !text.contains("hash"), "{text}");
    let fields: Vec<&str> = listed[1].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields.len(), 7, "{fields:?}");
    assert_eq!((listed[1]["name"].as_str(), listed[1]["tenant"].as_str()), (Some("ops"), Some("operators")));
    assert_eq!(listed[1]["admin"], true);
    assert!(listed[1]["created_at"].as_i64().unwrap() > 0);
    assert!(listed[1]["last_used_at"].as_i64().is_some(), "used once above: {}", listed[1]);
    assert_eq!(listed[2]["last_used_at"], Value::Null, "never used");
    assert!(listed.iter().all(|key| key["revoked_at"].is_null()));

    // Two keys are named ci: the name alone is refused, naming both ids.
    let output = keys(&["revoke", "ci"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    for id in [&ci["id"], &ci_again["id"]] {
        assert!(message.contains(id.as_str().unwrap()), "{message}");
    }
    assert_eq!(status(ci["key"].clone()).await, StatusCode::OK, "nothing was revoked");

    let revoked = lines(&keys(&["revoke", ci["id"].as_str().unwrap()])).remove(0);
    let revoked_at = Instant::now();
    assert_eq!(revoked["id"], ci["id"]);
    assert!(revoked["revoked_at"].as_i64().is_some(), "{revoked}");
    loop {
        if status(ci["key"].clone()).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(5), "the revoked key still works after 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unauthorized = client.get(&api).bearer_auth(ci["key"].as_str().unwrap()).send().await.unwrap();
    let body: Value = unauthorized.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(status(ci_again["key"].clone()).await, StatusCode::OK, "only that key");

    // Now one working key is named ci: the name is enough.
    let by_name = lines(&keys(&["revoke", "ci"])).remove(0);
    assert_eq!(by_name["id"], ci_again["id"]);
    let listed = lines(&keys(&["list"]));
    assert_eq!(listed.iter().filter(|key| key["revoked_at"].is_i64()).count(), 2);
    assert_eq!(listed[0]["revoked_at"], revoked["revoked_at"], "revoking again would keep the first time");
    let output = keys(&["revoke", "nobody"]);
    assert!(!output.status.success() && stderr(&output).contains("nobody"), "{}", stderr(&output));
}

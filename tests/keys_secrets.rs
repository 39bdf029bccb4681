//! `pound keys create --admin --tenant` and `pound keys rotate-secret` as an
//! operator runs them: one JSON line on stdout, errors on stderr.

mod common;

use common::process::pound;
use serde_json::Value;

/// Runs `pound keys ARGS --store URL`; its exit success, stdout as JSON (if any) and stderr.
fn keys(store: &str, args: &[&str]) -> (bool, Value, String) {
    let output = pound().arg("keys").args(args).args(["--store", store]).output().expect("pound runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (output.status.success(), json, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn keys_are_created_with_grants_and_a_secret_that_can_be_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("pound.db").display());

    let (ok, created, stderr) = keys(&store, &["create", "--name", "ops", "--admin", "--tenant", "operators"]);
    assert!(ok, "{stderr}");
    assert_eq!((created["name"].as_str(), created["admin"].as_bool()), (Some("ops"), Some(true)));
    assert_eq!(created["tenant"], "operators");
    let secret = created["webhook_secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_") && secret.len() == 70, "{secret}");
    assert!(created["key"].as_str().unwrap().starts_with("pk_"));

    let (ok, plain, _) = keys(&store, &["create", "--name", "registration"]);
    assert!(ok);
    assert_eq!((plain["admin"].as_bool(), plain["tenant"].as_str()), (Some(false), plain["id"].as_str()));
    assert_ne!(plain["webhook_secret"], created["webhook_secret"], "every key has its own secret");

    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let (ok, rotated, stderr) = keys(&store, &["rotate-secret", "ops"]);
    assert!(ok, "{stderr}");
    assert_eq!(rotated["id"], created["id"]);
    assert_ne!(rotated["webhook_secret"], created["webhook_secret"]);
    let overlap = rotated["previous_signs_until"].as_i64().unwrap() - now_ms;
    assert!((86_400_000..86_460_000).contains(&overlap), "a day by default: {overlap} ms");
    let (ok, by_id, _) = keys(&store, &["rotate-secret", created["id"].as_str().unwrap(), "--overlap-s", "0"]);
    assert!(ok);
    assert_ne!(by_id["webhook_secret"], rotated["webhook_secret"]);
    assert!(by_id["previous_signs_until"].as_i64().unwrap() - now_ms < 60_000, "{by_id}");

    let (ok, _, stderr) = keys(&store, &["rotate-secret", "nobody"]);
    assert!(!ok);
    assert!(stderr.contains("no API key") && stderr.contains("nobody"), "{stderr}");
    let (ok, _, stderr) = keys(&store, &["create", "--tenant", ""]);
    assert!(!ok);
    assert!(stderr.contains("--tenant"), "{stderr}");
}

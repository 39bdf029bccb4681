//! Two `pound serve` nodes on one PostgreSQL database; one is killed with
//! SIGKILL in the middle of calls. Every verification must still complete,
//! exactly once, with the dead node's calls recorded as interrupted. And a
//! node dials work another node stored without waiting for its poll, also
//! after its listening connection was cut.
//!
//! Runs when `POUND_TEST_DATABASE_URL` names a PostgreSQL server (`.ci/run`
//! sets it); each run uses a fresh database on it.

mod common;

use std::time::{Duration, Instant};

use common::http::get_json;
use common::postgres::{drop_database, fresh_database};
use common::process::{Running, pound, start};
use pound::clock::unix_ms;
use pound::store::postgres::LISTENER_APPLICATION;
use pound::store::{NewVerification, Store};

use serde_json::{Value, json};
use sqlx::Connection;

const KEY: &str = "cluster-test-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_call_loses_no_verification() {
    let Ok(admin_url) = std::env::var("POUND_TEST_DATABASE_URL") else {
        eprintln!("POUND_TEST_DATABASE_URL is not set: the two-node PostgreSQL test did not run");
        return;
    };
    let (database, url) = fresh_database(&admin_url, "pound_cluster").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pound.toml");
    std::fs::write(
        &config,
        "[engine]\nlease_s = 3\nshutdown_grace_s = 2\nmax_concurrent_calls = 4\n[policy]\ncooldown_s = 0\nmax_per_key_per_hour = 1000\n\
         [trunk]\ncalls_per_second = 50.0\n[webhooks]\nsecret = \"s\"\n",
    )
    .unwrap();
    let mut phone = pound();
    phone.args(["phone", "--listen", "127.0.0.1:0", "--answer-after", "300", "--after", "2500"]);
    let (phone, ready) = start(phone);
    let _phone = phone;
    let trunk = format!("sip:{}", ready["sip"].as_str().unwrap());
    let node = |id: &str| {
        let mut command = pound();
        command
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--store", &url, "--trunk", &trunk, "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0"])
            .args(["--api-key", KEY, "--node-id", id]);
        start(command)
    };
    let (a, a_ready) = node("node-a");
    let _a = a;
    let (mut b, b_ready) = node("node-b");
    let client = reqwest::Client::new();
    let api = format!("http://{}", a_ready["api"].as_str().unwrap());
    let mut ids = Vec::new();
    for i in 0..8 {
        // Alternate the API too: both nodes serve it from the same store.
        let base = if i % 2 == 0 { api.clone() } else { format!("http://{}", b_ready["api"].as_str().unwrap()) };
        let body = json!({"phone": format!("+1415555010{i}"), "user": format!("user{i}@example.com")});
        let response =
            client.post(format!("{base}/v1/verifications")).bearer_auth(KEY).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 202);
        ids.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    // Let both nodes get calls going, then kill B without warning.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    b.0.kill().unwrap();
    b.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut records = Vec::new();
    for id in &ids {
        loop {
            let record = get_json(&client, &format!("{api}/v1/verifications/{id}"), KEY).await;
            if record["status"] == "completed" {
                records.push(record);
                break;
            }
            assert!(Instant::now() < deadline, "{id} never completed: {record}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let mut interrupted = 0;
    for record in &records {
        assert_eq!(record["outcome"], "verified", "{record}");
        let attempts = record["attempts"].as_array().unwrap();
        // Exactly one attempt decided it; any before it were cut short by node B's death.
        let verified: Vec<_> = attempts.iter().filter(|a| a["outcome"] == "verified").collect();
        assert_eq!(verified.len(), 1, "{record}");
        assert_eq!(attempts.last().unwrap()["outcome"], "verified");
        for pair in attempts.windows(2) {
            assert_eq!(pair[0]["outcome"], "interrupted", "{record}");
            assert_eq!(pair[0]["node"], "node-b");
            // Never dialled by two nodes at once.
            assert!(pair[0]["ended_at"].as_i64().unwrap() <= pair[1]["started_at"].as_i64().unwrap(), "{record}");
        }
        interrupted += attempts.len() - 1;
    }
    assert!(interrupted > 0, "node B was killed before it held any call; the test proved nothing");
    for i in 0..8 {
        let user = format!("user{i}@example.com");
        let registrations = get_json(&client, &format!("{api}/v1/registrations/{user}"), KEY).await;
        assert_eq!(registrations["phones"].as_array().map(Vec::len), Some(1), "{registrations}");
    }
    drop(_a);
    drop_database(&admin_url, &database).await;
}

/// `pound serve` as `node-b` on the store at `url`, polling only every 10 s.
fn slow_polling_node(url: &str, trunk: &str, dir: &std::path::Path) -> Running {
    let config = dir.join("pound.toml");
    std::fs::write(&config, "[engine]\npoll_interval_ms = 10000\n").unwrap();
    let mut command = pound();
    command
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--store", url, "--trunk", trunk, "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0"])
        .args(["--api-key", KEY, "--node-id", "node-b"]);
    start(command).0
}

/// Stores a verification as node A's API would, and returns how long node B
/// took to start calling it (ms).
async fn dial_delay(node_a: &dyn Store, id: &str) -> i64 {
    let created_at = unix_ms();
    let new = NewVerification {
        id: id.to_string(),
        api_key_id: "node-a-key".into(),
        tenant: "node-a-key".into(),
        phone: "+14155550123".into(),
        user: format!("{id}@example.com"),
        dialplan: "press-pound".into(),
        callback_url: None,
        idempotency_key: None,
        request_hash: id.to_string(),
        max_attempts: 1,
        created_at,
        code: None,
        locale: None,
    };
    assert!(node_a.create_verification(&new).await.unwrap().1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(attempt) = node_a.attempts(id).await.unwrap().first() {
            assert_eq!(attempt.node, "node-b");
            return attempt.started_at - created_at;
        }
        assert!(Instant::now() < deadline, "node B never dialled {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The PIDs of the connections listening for new work in `database`.
async fn listener_pids(admin: &mut sqlx::PgConnection, database: &str) -> Vec<i32> {
    sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = $2")
        .bind(LISTENER_APPLICATION)
        .bind(database)
        .fetch_all(admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stored_by_another_node_is_dialled_before_the_poll() {
    let Ok(admin_url) = std::env::var("POUND_TEST_DATABASE_URL") else {
        eprintln!("POUND_TEST_DATABASE_URL is not set: the two-node PostgreSQL test did not run");
        return;
    };
    let (database, url) = fresh_database(&admin_url, "pound_cluster").await;
    let dir = tempfile::tempdir().unwrap();
    let (_phone, ready) = start({
        let mut phone = pound();
        phone.args(["phone", "--listen", "127.0.0.1:0", "--after", "200"]);
        phone
    });
    let trunk = format!("sip:{}", ready["sip"].as_str().unwrap());
    let _node_b = slow_polling_node(&url, &trunk, dir.path());
    // Node A is this test's own handle on the store: it stores work and runs no engine.
    let node_a = pound::store::open(&url).await.unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while listener_pids(&mut admin, &database).await.is_empty() {
        assert!(Instant::now() < deadline, "node B never listened for new work");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each step below starts right after something woke node B's engine
    // (listening, a call ending, listening again), so its next poll is 10 s
    // away: a dial within 5 s was woken by the notification. (The first
    // call's dial takes longer than the second's, ~1 s against ~30 ms in a
    // debug build, for one-time set-up on the node, not for the wake-up.)
    let delay = dial_delay(node_a.as_ref(), "v_first").await;
    assert!(delay < 5_000, "node B dialled {delay} ms after the work was stored: it waited for its poll");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node_a.verification("v_first").await.unwrap().unwrap().status.is_final() {
        assert!(Instant::now() < deadline, "the first call never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Cut node B's listening connection, as a database failover would.
    let cut: Vec<i32> = listener_pids(&mut admin, &database).await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(&cut)
        .execute(&mut admin)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = listener_pids(&mut admin, &database).await;
        if !now.is_empty() && now.iter().all(|pid| !cut.contains(pid)) {
            break;
        }
        assert!(Instant::now() < deadline, "node B never listened again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delay = dial_delay(node_a.as_ref(), "v_second").await;
    assert!(delay < 5_000, "after the cut, node B dialled {delay} ms after the work was stored");
    drop(_node_b);
    drop_database(&admin_url, &database).await;
}

//! Faults in the middle of work under a running `pound serve`:
//!
//! - the store's disk fills up: nothing is acknowledged that is not stored,
//!   `/readyz` says so while it lasts, and the node recovers by itself when
//!   space comes back. The disk is a small tmpfs the test mounts (root, as
//!   here and in CI); where mounting is not allowed the test says why and
//!   does not run.
//! - the store fails just as a call decides (the disk is full): the call
//!   plays out and ends with BYE, and its decision is stored once the disk
//!   has room again.
//! - another node takes a running call's verification over (its lease was
//!   lost): the call is ended with BYE, not dropped without one.
//! - PostgreSQL goes away while calls are running (a TCP proxy the test
//!   controls stands between the node and the server): every call still
//!   ends properly, its result is stored when the database is back, and
//!   nobody is called twice. Runs when `POUND_TEST_DATABASE_URL` names a
//!   PostgreSQL server (`.ci/run` sets it); each run uses a fresh database.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use common::http::get_json;
use common::process::{PhoneLog, Running, phone, pound, start};
use serde_json::{Value, json};

const KEY: &str = "faults-test-key";

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }

    /// Writes a file until the disk is full; removing it frees the space.
    fn fill(&self) -> PathBuf {
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        // The last partial block: fill to the last byte.
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn serve(dir: &Path, store: &str, trunk: &str) -> (Running, String) {
    let config = dir.join("pound.toml");
    std::fs::write(
        &config,
        "[engine]\nlease_s = 3\n[policy]\ncooldown_s = 0\nmax_per_key_per_hour = 1000\n[webhooks]\nsecret = \"s\"\nallow_private = true\n",
    )
    .unwrap();
    let mut command = pound();
    command
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--store", store, "--trunk", trunk, "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0"])
        .args(["--api-key", KEY]);
    let (child, ready) = start(command);
    (child, format!("http://{}", ready["api"].as_str().unwrap()))
}

/// POSTs a verification; the response as it came.
async fn create(client: &reqwest::Client, api: &str, phone: &str) -> reqwest::Response {
    // Port 9 (discard) on loopback: nothing listens, so each delivery try
    // fails and is recorded, which is what shows the outbox at work.
    let body =
        json!({"phone": phone, "user": format!("{phone}@example.com"), "callback_url": "http://127.0.0.1:9/hook"});
    client.post(format!("{api}/v1/verifications")).bearer_auth(KEY).json(&body).send().await.unwrap()
}

async fn created(client: &reqwest::Client, api: &str, phone: &str) -> String {
    let response = create(client, api, phone).await;
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
}

/// Polls the record until `done` holds, for up to `within`.
async fn wait_until(
    client: &reqwest::Client,
    api: &str,
    id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let record = get_json(client, &format!("{api}/v1/verifications/{id}"), KEY).await;
        if done(&record) {
            return record;
        }
        assert!(Instant::now() < deadline, "{id}: gave up waiting: {record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/readyz` until it answers `status`, for up to `within`.
async fn readyz_becomes(client: &reqwest::Client, api: &str, status: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if client.get(format!("{api}/readyz")).send().await.unwrap().status() == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_with_503_and_the_node_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let disk = match Tmpfs::mount(&dir.path().join("disk"), "8m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("cannot mount a tmpfs ({why}): the disk-full test did not run");
            return;
        }
    };
    let (_phone, trunk) = phone(&["--answer-after", "100", "--after", "1500"]);
    let store = format!("sqlite://{}", disk.0.join("pound.db").display());
    let (_serve, api) = serve(dir.path(), &store, &trunk);
    let client = reqwest::Client::new();
    assert!(readyz_becomes(&client, &api, 200, Duration::from_secs(5)).await, "ready before the fault");

    // A call is running when the disk fills: its decision comes while nothing can be written.
    let in_call = created(&client, &api, "+14155550130").await;
    wait_until(&client, &api, &in_call, Duration::from_secs(20), |r| r["status"] == "answered").await;
    let filler = disk.fill();

    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        let response = create(&client, &api, &format!("+141555502{i:02}")).await;
        match response.status().as_u16() {
            202 => accepted.push(response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()),
            503 => {
                assert!(response.headers().get("retry-after").is_some(), "503 without Retry-After");
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
                refused += 1;
            }
            other => panic!("request {i} during the fault: HTTP {other}"),
        }
    }
    assert!(refused > 0, "the full disk refused nothing; the test proved nothing");
    assert!(readyz_becomes(&client, &api, 503, Duration::from_secs(5)).await, "/readyz stayed 200 on a full disk");
    // The running call ends (the phone presses # after 1.5 s) while the disk is still full.
    tokio::time::sleep(Duration::from_secs(3)).await;

    std::fs::remove_file(filler).unwrap();
    assert!(readyz_becomes(&client, &api, 200, Duration::from_secs(10)).await, "/readyz never recovered");
    for id in &accepted {
        let response = client.get(format!("{api}/v1/verifications/{id}")).bearer_auth(KEY).send().await.unwrap();
        assert_eq!(response.status(), 200, "{id} was answered 202 during the fault but is not stored");
    }
    // The decision made during the fault is stored, and that person was called once.
    let record = wait_until(&client, &api, &in_call, Duration::from_secs(30), |r| r["status"] == "completed").await;
    assert_eq!(record["outcome"], "verified", "{record}");
    assert_eq!(record["attempts"].as_array().unwrap().len(), 1, "called again: {record}");

    // The engine claims and the outbox delivers again, without a restart.
    let after = created(&client, &api, "+14155550131").await;
    let record = wait_until(&client, &api, &after, Duration::from_secs(30), |r| {
        r["status"] == "completed" && r["webhooks"][0]["attempts"].as_u64().is_some_and(|n| n > 0)
    })
    .await;
    assert_eq!(record["outcome"], "verified", "{record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_error_at_the_decision_still_ends_the_call_with_bye() {
    let dir = tempfile::tempdir().unwrap();
    let disk = match Tmpfs::mount(&dir.path().join("disk"), "8m") {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("cannot mount a tmpfs ({why}): the store-error test did not run");
            return;
        }
    };
    let (mut phone, trunk) = phone(&["--answer-after", "100", "--after", "1500"]);
    let log = PhoneLog::follow(&mut phone);
    let store = format!("sqlite://{}", disk.0.join("pound.db").display());
    let (_serve, api) = serve(dir.path(), &store, &trunk);
    let client = reqwest::Client::new();
    let id = created(&client, &api, "+14155550132").await;
    wait_until(&client, &api, &id, Duration::from_secs(20), |r| r["status"] == "answered").await;
    let filler = disk.fill();

    // The key decides while nothing can be written: the call still plays
    // its confirmation and hangs up properly.
    assert!(log.wait_for("key", Duration::from_secs(10)).await.is_some(), "the phone never pressed #");
    assert!(log.wait_for("call_ended", Duration::from_secs(15)).await.is_some(), "the callee never got a BYE");

    std::fs::remove_file(filler).unwrap();
    let record = wait_until(&client, &api, &id, Duration::from_secs(30), |r| r["status"] == "completed").await;
    assert_eq!(record["outcome"], "verified", "{record}");
    let attempts = record["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{record}");
    assert_eq!(attempts[0]["outcome"], "verified", "{record}");
    assert_eq!(log.count("invite"), 1, "called again: {record}");
}

/// The store fails as the call begins, so the attempt cannot be opened,
/// and is back when the key decides: the decision is stored with its
/// attempt, not as a verified record without one. A trigger makes opening
/// an attempt fail until the call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_error_as_the_call_begins_still_leaves_the_decision_its_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut phone, trunk) = phone(&["--answer-after", "300", "--after", "1500"]);
    let log = PhoneLog::follow(&mut phone);
    let store = format!("sqlite://{}", dir.path().join("pound.db").display());
    let (_serve, api) = serve(dir.path(), &store, &trunk);
    let mut db = sqlx::SqliteConnection::connect(&store).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER attempt_start_fails BEFORE UPDATE OF attempt_count ON verifications \
         WHEN OLD.status <> 'answered' BEGIN SELECT RAISE(ABORT, 'injected: the store fails as the call begins'); END",
    )
    .execute(&mut db)
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let id = created(&client, &api, "+14155550133").await;

    let record = wait_until(&client, &api, &id, Duration::from_secs(30), |r| r["status"] == "completed").await;
    assert_eq!(record["outcome"], "verified", "{record}");
    let attempts = record["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "the decision without its attempt: {record}");
    assert_eq!(attempts[0]["outcome"], "verified", "{record}");
    assert!(!attempts[0]["evidence"].as_array().unwrap().is_empty(), "no evidence: {record}");
    assert!(log.wait_for("call_ended", Duration::from_secs(15)).await.is_some(), "the callee never got a BYE");
    assert_eq!(log.count("invite"), 1, "called again: {record}");
}

/// Every call `phone` took, counted from its `call_ended` lines: a call
/// ends there only when it was hung up properly (BYE, CANCEL).
fn count_calls(phone: &mut Running) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let stdout = phone.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"call_ended\"") {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_lease_is_lost_is_ended_with_bye() {
    let dir = tempfile::tempdir().unwrap();
    // Never presses: the call would run for the whole dialplan (three prompts
    // and the input timeout, over ten seconds) if nothing ended it.
    let (mut phone, trunk) = phone(&["--answer-after", "100", "--after", "60000"]);
    let calls = count_calls(&mut phone);
    let store = format!("sqlite://{}", dir.path().join("pound.db").display());
    let (_serve, api) = serve(dir.path(), &store, &trunk);
    let client = reqwest::Client::new();
    let id = created(&client, &api, "+14155550140").await;
    wait_until(&client, &api, &id, Duration::from_secs(20), |r| r["status"] == "answered").await;
    // Another node has it now, as after a lease that lapsed and was claimed.
    let mut db = sqlx::SqliteConnection::connect(&store).await.unwrap();
    sqlx::query("UPDATE verifications SET lease_owner = 'another-node' WHERE id = $1")
        .bind(&id)
        .execute(&mut db)
        .await
        .unwrap();
    // The node learns of it at its next renewal (every second with 3 s leases).
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the callee never got a BYE");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy to `upstream` that can be cut (every connection dropped, new
/// ones closed at once) and restored.
async fn proxy(upstream: SocketAddr) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (cut, _) = watch::channel(false);
    let cuts = cut.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else { continue };
            if *cuts.borrow() {
                continue;
            }
            let mut cut = cuts.subscribe();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.wait_for(|cut| *cut) => {}
                }
            });
        }
    });
    (address, cut)
}

/// A fresh database on the server `admin_url` names: its name and its URL
/// with the host and port replaced by `via`.
async fn fresh_database(admin_url: &str, via: SocketAddr) -> (String, String) {
    let (name, _) = common::postgres::fresh_database(admin_url, "pound_faults").await;
    (name.clone(), format!("postgres://postgres@{via}/{name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_call_loses_no_result_and_calls_nobody_twice() {
    let Ok(admin_url) = std::env::var("POUND_TEST_DATABASE_URL") else {
        eprintln!("POUND_TEST_DATABASE_URL is not set: the PostgreSQL outage test did not run");
        return;
    };
    let server: SocketAddr = {
        let options: sqlx::postgres::PgConnectOptions = admin_url.parse().unwrap();
        tokio::net::lookup_host((options.get_host(), options.get_port())).await.unwrap().next().unwrap()
    };
    let (via, cut) = proxy(server).await;
    let (database, url) = fresh_database(&admin_url, via).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut phone, trunk) = phone(&["--answer-after", "200", "--after", "2500"]);
    let calls = count_calls(&mut phone);
    let (_serve, api) = serve(dir.path(), &url, &trunk);
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(created(&client, &api, &format!("+141555503{i:02}")).await);
    }
    for id in &ids {
        wait_until(&client, &api, id, Duration::from_secs(20), |r| r["status"] == "answered").await;
    }
    // The database goes away while every call is in progress, and stays away
    // until well after they ended and their 3 s leases ran out.
    cut.send_replace(true);
    let deadline = Instant::now() + Duration::from_secs(20);
    while calls.load(Ordering::SeqCst) < ids.len() {
        assert!(Instant::now() < deadline, "the calls did not end during the outage");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    cut.send_replace(false);

    for id in &ids {
        let record = wait_until(&client, &api, id, Duration::from_secs(60), |r| r["status"] == "completed").await;
        assert_eq!(record["outcome"], "verified", "{record}");
        let attempts = record["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{record}");
        assert_eq!(attempts[0]["outcome"], "verified", "{record}");
        assert_eq!(attempts[0]["digits"], "#", "{record}");
    }
    // Long enough for a re-claimed verification to be dialled and answered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(calls.load(Ordering::SeqCst), ids.len(), "someone was called twice");
    drop(_serve);
    common::postgres::drop_database(&admin_url, &database).await;
}

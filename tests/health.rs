//! Truthful health (issue 11) on real `pound serve` processes: `/readyz` is
//! 503 with its reasons while the trunk is silent and while the node drains
//! after SIGTERM, and start-up errors name the value at fault.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::http::{submit, wait_for};
use common::process::{Running, phone, pound, serve_with_config};
use pound::sip::Message;

const KEY: &str = "health-test-key";

/// `pound serve` on a fresh SQLite store with `config` as its file.
fn serve(dir: &Path, trunk: &str, config: &str) -> (Running, String) {
    serve_with_config(dir, trunk, config, KEY)
}

/// `/readyz`: its status and body.
async fn readyz(client: &reqwest::Client, api: &str) -> (u16, Value) {
    let response = client.get(format!("{api}/readyz")).send().await.expect("the API answers /readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Polls `/readyz` until it answers `status`; its last body, or None after `within`.
async fn readyz_becomes(client: &reqwest::Client, api: &str, status: u16, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let (now, body) = readyz(client, api).await;
        if now == status {
            return Some(body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn reason_codes(body: &Value) -> Vec<&str> {
    body["reasons"].as_array().into_iter().flatten().filter_map(|r| r["code"].as_str()).collect()
}

/// A trunk on a UDP socket that swallows every request until `answer` is
/// set, then answers OPTIONS with 200.
async fn trunk(answer: Arc<AtomicBool>) -> String {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("sip:{}", socket.local_addr().unwrap());
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
            let Ok(request) = Message::parse(&buffer[..len]) else { continue };
            if answer.load(Ordering::Acquire) && request.is_request() {
                let _ = socket.send_to(&Message::response_to(&request, 200, None).to_bytes(), from).await;
            }
        }
    });
    uri
}

#[tokio::test]
async fn readyz_is_503_naming_the_trunk_while_it_does_not_answer_options() {
    let dir = tempfile::tempdir().unwrap();
    let answer = Arc::new(AtomicBool::new(false));
    let trunk = trunk(answer.clone()).await;
    let (_serve, api) = serve(dir.path(), &trunk, "[trunk]\noptions_interval_s = 1\n");
    let client = reqwest::Client::new();
    // Two seconds of silence: retransmissions unanswered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = readyz(&client, &api).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert_eq!(reason_codes(&body), ["trunk_down"], "{body}");
    assert_eq!(body["error"]["code"], "trunk_down", "the shared error shape: {body}");
    assert!(body["reasons"][0]["message"].as_str().unwrap().contains(&trunk), "names the trunk: {body}");
    // Liveness is another question: the process is fine.
    assert_eq!(client.get(format!("{api}/healthz")).send().await.unwrap().status(), 200);

    answer.store(true, Ordering::Release);
    let ready = readyz_becomes(&client, &api, 200, Duration::from_secs(10)).await;
    assert_eq!(ready.expect("ready once the trunk answers")["status"], "ready");
}

#[tokio::test]
async fn sigterm_answers_503_draining_while_the_running_call_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (_phone, trunk) = phone(&["--after", "3000"]);
    let (mut serve, api) = serve(dir.path(), &trunk, "");
    let client = reqwest::Client::new();
    assert!(readyz_becomes(&client, &api, 200, Duration::from_secs(5)).await.is_some(), "ready before SIGTERM");
    let id = submit(&client, &api, KEY, "+14155550113").await;
    wait_for(&client, &api, KEY, &id, "answered").await;
    let pid = serve.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());

    let body = readyz_becomes(&client, &api, 503, Duration::from_secs(2)).await.expect("503 during the drain");
    assert!(reason_codes(&body).contains(&"draining"), "{body}");
    assert_eq!(body["error"]["code"], "draining", "{body}");
    // The API still answers while the call runs: the record is not final yet.
    let record = common::http::get_json(&client, &format!("{api}/v1/verifications/{id}"), KEY).await;
    assert_eq!(record["status"], "answered", "{record}");
    // New work is accepted into the store during the drain (another node, or
    // this one after its restart, dials it).
    submit(&client, &api, KEY, "+14155550114").await;

    let stopped = serve.0.wait().unwrap();
    assert!(stopped.success(), "a clean exit after the drain: {stopped}");
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("pound.db").display())).await.unwrap();
    let verification = store.verification(&id).await.unwrap().unwrap();
    assert_eq!(verification.outcome, Some(pound::vocab::Outcome::Verified), "{verification:?}");
}

/// `pound serve` on `store` with `args` that must not start: its exit
/// status, stderr, and how long it took.
fn refused(store: &str, args: &[&str]) -> (std::process::ExitStatus, String, Duration) {
    let started = Instant::now();
    let output = pound()
        .args(["serve", "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0", "--store", store])
        .args(args)
        .output()
        .unwrap();
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned(), started.elapsed())
}

#[test]
fn a_malformed_trunk_uri_stops_the_start_naming_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("pound.db").display());
    let (status, stderr, _) = refused(&store, &["--trunk", "http://x"]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("trunk.uri") && stderr.contains("\"http://x\""), "{stderr}");
}

#[test]
fn an_unreachable_store_stops_the_start_naming_host_and_port() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://postgres:secret@127.0.0.1:{port}/pound");
    let (status, stderr, took) = refused(&url, &[]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "names host:port: {stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "names the cause: {stderr}");
    assert!(!stderr.contains("secret"), "never the password: {stderr}");
    assert!(took < Duration::from_secs(10), "within seconds, not 30: {took:?}");
}

/// `GET /v1/verifications` with `key`: its status.
async fn list_status(client: &reqwest::Client, api: &str, key: &str) -> u16 {
    client.get(format!("{api}/v1/verifications")).bearer_auth(key).send().await.unwrap().status().as_u16()
}

fn hangup(serve: &Running) {
    assert!(Command::new("kill").args(["-HUP", &serve.0.id().to_string()]).status().unwrap().success());
}

#[tokio::test]
async fn sighup_reloads_the_keys_and_keeps_the_old_config_when_the_new_one_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let (_phone, trunk) = phone(&[]);
    let file = dir.path().join("pound.toml");
    std::fs::write(&file, "[api]\nkeys = [\"old-key\"]\n").unwrap();
    let (mut serve, api, log) = serve_with_file(dir.path(), &file, &trunk);
    let client = reqwest::Client::new();
    assert_eq!(list_status(&client, &api, "old-key").await, 200);
    assert_eq!(list_status(&client, &api, "new-key").await, 401);

    std::fs::write(&file, "[api]\nkeys = [\"new-key\"]\n[trunk]\noptions_interval_s = 7\n").unwrap();
    hangup(&serve);
    let deadline = Instant::now() + Duration::from_secs(10);
    while list_status(&client, &api, "new-key").await != 200 {
        assert!(Instant::now() < deadline, "the added key never worked");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(list_status(&client, &api, "old-key").await, 401, "the removed key is refused");
    assert!(serve.0.try_wait().unwrap().is_none(), "SIGHUP does not end the service");

    std::fs::write(&file, "[api]\nkeys = 7\n").unwrap();
    hangup(&serve);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap().contains("keeping the running one") {
        assert!(Instant::now() < deadline, "no log line for the broken file");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(list_status(&client, &api, "new-key").await, 200, "the running configuration is kept");
    assert!(serve.0.try_wait().unwrap().is_none(), "a broken file does not end the service");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("api.keys"), "the log says why: {text}");
    assert!(text.contains("trunk") && text.contains("needs_restart"), "names what needs a restart: {text}");
    assert!(!text.contains("new-key"), "keys never reach the log: {text}");
    let _ = serve.0.kill();
}

/// [`start`], with stderr left as `command` set it.
/// `pound serve --config FILE` in `dir` with its stderr kept in a file, for
/// reload tests: the node, its API address and the path of its log.
fn serve_with_file(dir: &Path, file: &Path, trunk: &str) -> (Running, String, std::path::PathBuf) {
    let log = dir.join("stderr.log");
    let mut command = pound();
    command
        .args(["serve", "--config"])
        .arg(file)
        .args(["--store", &format!("sqlite://{}", dir.join("pound.db").display())])
        .args(["--trunk", trunk, "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0"])
        .stderr(std::fs::File::create(&log).unwrap());
    let (serve, ready) = start_keeping_stderr(command);
    (serve, format!("http://{}", ready["api"].as_str().unwrap()), log)
}

fn start_keeping_stderr(mut command: Command) -> (Running, Value) {
    use std::io::{BufRead, BufReader};
    let mut child = command.stdout(std::process::Stdio::piped()).spawn().expect("pound starts");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line);
    (Running(child), serde_json::from_str(&line).unwrap_or_else(|_| panic!("no ready line: {line:?}")))
}

/// Status of a create that names `dialplan`, for a number no other create uses.
async fn create_status(client: &reqwest::Client, api: &str, dialplan: &str, phone: &str) -> u16 {
    let body = serde_json::json!({"phone": phone, "user": "reload@example.com", "dialplan": dialplan});
    let response =
        client.post(format!("{api}/v1/verifications")).bearer_auth("reload-key").json(&body).send().await.unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn sighup_reloads_the_dialplans_and_keeps_them_when_one_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let (_phone, trunk) = phone(&[]);
    let plans = dir.path().join("dialplans");
    std::fs::create_dir(&plans).unwrap();
    let file = dir.path().join("pound.toml");
    std::fs::write(&file, format!("dialplans = {plans:?}\n[api]\nkeys = [\"reload-key\"]\n")).unwrap();
    let (serve, api, log) = serve_with_file(dir.path(), &file, &trunk);
    let client = reqwest::Client::new();
    assert_eq!(create_status(&client, &api, "spanish", "+14155550131").await, 400, "not there yet");

    // A new plan in the folder: the compiled-in prompt, another key.
    std::fs::write(plans.join("spanish.toml"), "prompt = \"builtin:en/press-pound.wav\"\nexpect = \"1\"\n").unwrap();
    hangup(&serve);
    let deadline = Instant::now() + Duration::from_secs(10);
    while create_status(&client, &api, "spanish", "+14155550132").await != 202 {
        assert!(Instant::now() < deadline, "the added dialplan was never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A plan that does not load: nothing changes, and the log says which file.
    std::fs::write(plans.join("broken.toml"), "prompt = \"builtin:en/nope.wav\"\n").unwrap();
    hangup(&serve);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap().contains("keeping the running one") {
        assert!(Instant::now() < deadline, "no log line for the broken dialplan");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(std::fs::read_to_string(&log).unwrap().contains("broken.toml"), "the file is named");
    assert_eq!(create_status(&client, &api, "spanish", "+14155550133").await, 202, "the loaded plans are kept");
    assert_eq!(create_status(&client, &api, "broken", "+14155550134").await, 400);
}

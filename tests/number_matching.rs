//! Number matching (issue 12) end to end: `pound serve` on SQLite calls
//! `pound phone`, which keys in what a person would; the outcome is read
//! through the API, and the node's log (at debug level) is searched for the code.
//!
//! The dialplan is the compiled-in one with one prompt play and a short
//! input timeout, so that a re-prompt ends the call within seconds.

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::http::{get_json, wait_for};
use common::process::{Running, phone, pound};
use serde_json::{Value, json};

const KEY: &str = "number-matching-key";
/// The phone keys in this long after the answer (during the prompt: barge-in).
const AFTER_MS: &str = "300";

/// A node on a fresh SQLite store in its own folder, with its log in a file.
struct Node {
    _serve: Running,
    api: String,
    dir: tempfile::TempDir,
}

impl Node {
    fn start(trunk: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("dialplans");
        std::fs::create_dir_all(&folder).unwrap();
        let shipped =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dialplans/press-pound.toml")).unwrap();
        let mut plan: Vec<&str> = shipped
            .lines()
            .filter(|line| !line.starts_with("prompt_repeats") && !line.starts_with("input_timeout_ms"))
            .collect();
        plan.extend(["prompt_repeats = 1", "input_timeout_ms = 1000"]);
        std::fs::write(folder.join("press-pound.toml"), plan.join("\n")).unwrap();
        let config = dir.path().join("pound.toml");
        std::fs::write(
            &config,
            format!(
                "dialplans = {:?}\n[policy]\ncooldown_s = 0\n[trunk]\noptions_interval_s = 0\n",
                folder.display().to_string()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut child = pound()
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--store", &format!("sqlite://{}", dir.path().join("pound.db").display())])
            .args(["--trunk", trunk, "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0", "--api-key", KEY])
            .env("POUND_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("pound serve starts");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line);
        let serve = Running(child);
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("no ready line: {line:?}"));
        let api = format!("http://{}", ready["api"].as_str().expect("an API address"));
        Node { _serve: serve, api, dir }
    }

    /// `POST /v1/verifications` with `extra` fields; asserts 202, returns the record.
    async fn submit(&self, phone: &str, extra: Value) -> Value {
        let mut body = json!({"phone": phone, "user": "alice@contoso.com"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let response = reqwest::Client::new()
            .post(format!("{}/v1/verifications", self.api))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("the API answers");
        assert_eq!(response.status(), 202);
        response.json().await.expect("a JSON record")
    }

    /// The record once completed and its call over: the decision is stored
    /// when made, the attempt's end when the call has hung up after it.
    async fn completed(&self, record: &Value) -> Value {
        let id = record["id"].as_str().expect("an id");
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let record = wait_for(&client, &self.api, KEY, id, "completed").await;
            let ended = record["attempts"].as_array().and_then(|a| a.last()).is_some_and(|a| !a["ended_at"].is_null());
            if ended || std::time::Instant::now() > deadline {
                return record;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The phones registered for alice@contoso.com.
    async fn registered(&self) -> Value {
        let url = format!("{}/v1/registrations/alice%40contoso.com", self.api);
        let registrations = get_json(&reqwest::Client::new(), &url, KEY).await;
        registrations["phones"].as_array().expect("phones").iter().map(|phone| phone["phone"].clone()).collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap()
    }
}

/// `pound phone` as the node's trunk, keying in `press`; the node.
fn phone_and_node(press: &str) -> (Running, Node) {
    let (phone, trunk) = phone(&["--press", press, "--after", AFTER_MS]);
    (phone, Node::start(&trunk))
}

/// The one attempt's outcome and digits.
fn attempt(record: &Value) -> (&str, &str) {
    let attempt = &record["attempts"][0];
    (attempt["outcome"].as_str().unwrap_or_default(), attempt["digits"].as_str().unwrap_or_default())
}

/// A verification of `number` with `code`, to which the phone keys in
/// `press`: asserts the outcome and the attempt's digits; the node and the record.
async fn entered(press: &str, number: &str, code: &str, outcome: &str, digits: &str) -> (Node, Value) {
    let (_phone, node) = phone_and_node(press);
    let created = node.submit(number, json!({"code": code})).await;
    assert_eq!(created["code"], code, "the creator gets the code back: {created}");
    let record = node.completed(&created).await;
    assert_eq!(record["outcome"], outcome, "{record}");
    assert_eq!(attempt(&record), (outcome, digits), "{record}");
    let evidence = record["attempts"][0]["evidence"].as_array().cloned().unwrap_or_default();
    let shown: String = evidence.iter().filter_map(|key| key["digit"].as_str()).collect();
    assert_eq!(shown, digits, "one evidence entry per key, the code's digits hidden: {record}");
    (node, record)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_shown_then_pound_verifies_and_the_code_never_reaches_the_log() {
    let code = "86420975";
    let (node, record) = entered(&format!("{code}#"), "+14155550161", code, "verified", "xxxxxxxx#").await;
    assert_eq!(record["code"], code);
    assert_eq!(node.registered().await, json!(["+14155550161"]));

    let log = node.log();
    assert!(log.contains("verification completed"), "the log was captured: {log}");
    assert_eq!(log.matches("digit=x").count(), 8, "every digit is logged, hidden: {log}");
    assert!(!log.contains(code), "the code is in the log:\n{log}");
    for digit in code.chars() {
        assert!(!log.contains(&format!("digit={digit}")), "a digit of the code is in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pound_alone_is_asked_again_then_wrong_input() {
    let (_, record) = entered("#", "+14155550162", "47", "wrong_input", "#").await;
    // Asked again: "not the number shown" and the code prompt (7 s together),
    // then the input timeout, before the call gave up.
    let at = |field: &str| record["attempts"][0][field].as_i64().unwrap();
    let talk = at("ended_at") - at("answered_at");
    assert!(talk > 7_000, "{talk} ms from the answer to the end: no re-prompt? {record}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_is_wrong_input() {
    let (node, _) = entered("12#", "+14155550163", "47", "wrong_input", "xx#").await;
    assert_eq!(node.registered().await, json!([]), "nothing registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_pound_is_fraud_even_when_the_code_starts_with_zero() {
    entered("0#", "+14155550164", "07", "fraud_reported", "x#").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drawn_code_is_returned_and_keying_it_in_verifies() {
    // The trunk's port is held by a socket that answers nothing, so the
    // node's INVITE is retransmitted until the phone, which can only be
    // told what to press once the code is known, takes the port over.
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let node = Node::start(&format!("sip:127.0.0.1:{port}"));
    let created = node.submit("+14155550165", json!({"code_length": 6})).await;
    let code = created["code"].as_str().expect("the drawn code is in the 202").to_string();
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{created}");
    drop(holder);
    let listen = format!("127.0.0.1:{port}");
    let _phone = common::process::start({
        let mut command = pound();
        command.args(["phone", "--listen", &listen, "--press", &format!("{code}#"), "--after", AFTER_MS]);
        command
    });
    let record = node.completed(&created).await;
    assert_eq!(record["outcome"], "verified", "{record}");
    assert_eq!(attempt(&record), ("verified", "xxxxxx#"), "{record}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!node.log().contains(&code), "the drawn code is in the log");
}

#[test]
fn pound_call_with_a_code_needs_no_store() {
    let (_phone, target) = phone(&["--press", "47#", "--after", AFTER_MS]);
    let (report, log) = common::process::call(&target, &["--code", "47"]);
    assert_eq!((report["outcome"].as_str(), report["digits"].as_str()), (Some("verified"), Some("xx#")), "{log}");
    assert!(log.contains("digit=x") && !log.contains("digit=4"), "{log}");
    let refused = pound().args(["call", &target, "--code", "4x"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "a bad code is refused before calling");
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("2 to 8 digits"), "{error}");
}

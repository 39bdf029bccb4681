//! Expiry under a running `pound serve` whose trunk answers nothing (down):
//! the verification ends `expired` once its age passes
//! `policy.expire_after_s`, its webhook carries that status, and nobody is
//! called, before or after.

mod common;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::http::{get_json, wait_for};
use common::process::{pound, start};

const KEY: &str = "expiry-test-key";

/// Datagrams the trunk received, each with when it came.
type Received = Arc<Mutex<Vec<(Instant, String)>>>;

/// A trunk that answers nothing: every datagram is kept.
fn swallowing_trunk() -> (String, Received) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let uri = format!("sip:{}", socket.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = socket.recv(&mut buf) {
            log.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    });
    (uri, seen)
}

/// An HTTP receiver on loopback that answers 200 and keeps each request
/// (head and body).
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as much body as Content-Length says.
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_string))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                log.lock().unwrap().push(String::from_utf8_lossy(&request).into_owned());
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    (url, received)
}

fn invites(seen: &Mutex<Vec<(Instant, String)>>) -> Vec<(Instant, String)> {
    let seen = seen.lock().unwrap();
    seen.iter().filter(|(_, text)| text.starts_with("INVITE ")).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undialable_verification_expires_with_its_webhook_and_is_not_called_again() {
    let (trunk, seen) = swallowing_trunk();
    let (hook, received) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pound.toml");
    std::fs::write(
        &config,
        "[policy]\nexpire_after_s = 2\ncooldown_s = 0\n[webhooks]\nsecret = \"s\"\nallow_private = true\n",
    )
    .unwrap();
    let store = format!("sqlite://{}", dir.path().join("pound.db").display());
    let mut command = pound();
    command
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--store", &store, "--trunk", &trunk, "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0"])
        .args(["--api-key", KEY]);
    let (_serve, ready) = start(command);
    let api = format!("http://{}", ready["api"].as_str().unwrap());
    let client = reqwest::Client::new();

    let body = json!({"phone": "+14155550100", "user": "bob@example.com", "callback_url": hook});
    let response = client.post(format!("{api}/v1/verifications")).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();

    // The trunk never answers its OPTIONS pings, so it is down and nothing is
    // dialled (the "trunk down" case): the verification expires
    // instead of staying queued. (A call already running is never cut off:
    // the store tests cover leased rows.)
    let record = wait_for(&client, &api, KEY, &id, "expired").await;
    let expired_at = Instant::now();
    assert_eq!(record["outcome"], Value::Null, "{record}");
    assert!(record["completed_at"].is_i64(), "{record}");
    assert!(invites(&seen).is_empty(), "a trunk that is down is not dialled");
    let pinged = seen.lock().unwrap().iter().any(|(_, text)| text.starts_with("OPTIONS "));
    assert!(pinged, "the trunk was watched");

    let deadline = Instant::now() + Duration::from_secs(20);
    let hook_request = loop {
        if let Some(request) = received.lock().unwrap().first().cloned() {
            break request;
        }
        assert!(Instant::now() < deadline, "no webhook");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(hook_request.to_ascii_lowercase().contains("pound-signature: t="), "signed: {hook_request}");
    let payload: Value = serde_json::from_str(&hook_request[hook_request.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(payload["event"], "verification.completed");
    assert_eq!(
        (payload["verification"]["id"].as_str(), &payload["verification"]["status"]),
        (Some(id.as_str()), &json!("expired"))
    );

    // Nobody is called after the expiry: no new INVITE, not even a retry.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: Vec<_> = invites(&seen).into_iter().filter(|(at, _)| *at > expired_at).collect();
    assert!(after.is_empty(), "{} INVITEs after the expiry", after.len());
    let record = get_json(&client, &format!("{api}/v1/verifications/{id}"), KEY).await;
    assert_eq!(record["status"], "expired");
    assert_eq!(received.lock().unwrap().len(), 1, "one webhook");
}

//! STIR/SHAKEN (issue 13) through the binary: `pound serve` with `[trunk.stir]` signs the calls
//! of the API's verifications; with `pound call --stir-*`, an unusable key, certificate URL,
//! attestation or caller number stops the command before anything is sent, with an error that
//! names the problem and never quotes the key.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

fn stir(name: &str) -> PathBuf {
    common::stir::fixtures().join(name)
}

/// `pound call` towards a socket that records whether anything arrived.
fn call(args: &[&str]) -> (Output, bool) {
    let trunk = UdpSocket::bind("127.0.0.1:0").unwrap();
    trunk.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pound"))
        .args(["call", &format!("sip:+14155550100@{}", trunk.local_addr().unwrap()), "--timeout", "1"])
        .args(args)
        .output()
        .unwrap();
    let sent = trunk.recv(&mut [0; 2048]).is_ok();
    (output, sent)
}

#[test]
fn unusable_signing_settings_stop_pound_call_before_it_dials() {
    let key = stir("sec1.key.pem");
    let secret_line = std::fs::read_to_string(&key).unwrap().lines().nth(1).unwrap().to_string();
    let key = key.to_str().unwrap();
    let public = stir("public.pem");
    let cases: [(&[&str], &str); 5] = [
        (
            &[
                "--from",
                "+14155550000",
                "--stir-key",
                public.to_str().unwrap(),
                "--stir-x5u",
                "https://c.example/c.pem",
                "--stir-attest",
                "A",
            ],
            "P-256",
        ),
        (
            &[
                "--from",
                "+14155550000",
                "--stir-key",
                "/nonexistent/k.pem",
                "--stir-x5u",
                "https://c.example/c.pem",
                "--stir-attest",
                "A",
            ],
            "/nonexistent/k.pem",
        ),
        (
            &[
                "--from",
                "+14155550000",
                "--stir-key",
                key,
                "--stir-x5u",
                "http://c.example/c.pem",
                "--stir-attest",
                "A",
            ],
            "https URL",
        ),
        (
            &[
                "--from",
                "+14155550000",
                "--stir-key",
                key,
                "--stir-x5u",
                "https://c.example/c.pem",
                "--stir-attest",
                "D",
            ],
            "A, B or C",
        ),
        (
            &["--from", "pound", "--stir-key", key, "--stir-x5u", "https://c.example/c.pem", "--stir-attest", "A"],
            "caller",
        ),
    ];
    for (args, expected) in cases {
        let (output, sent) = call(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains(&secret_line), "{args:?}: the key is quoted");
        assert!(!sent, "{args:?}: something was sent");
    }
    // The three flags go together.
    let (output, _) = call(&["--stir-key", key]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--stir-x5u"));
}

/// A verification submitted to `pound serve` reaches the trunk (a bare socket here) as an
/// INVITE whose PASSporT verifies, for the number submitted and the configured caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pound_serve_signs_the_invites_of_verifications() {
    let dir = tempfile::tempdir().unwrap();
    let trunk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let x5u = "https://cert.example.org/shaken/pound.pem";
    let key = common::stir::fixtures().join("pkcs8.key.pem");
    let config = format!(
        "[trunk]\noptions_interval_s = 0\nasserted_identity = \"sip:+14155550000@pound.example\"\n\
         [trunk.stir]\nkey = {:?}\nx5u = {x5u:?}\nattest = \"A\"\n",
        key.display().to_string()
    );
    let trunk_uri = format!("sip:{}", trunk.local_addr().unwrap());
    let (_serve, api) = common::process::serve_with_config(dir.path(), &trunk_uri, &config, "k1");
    let before = common::stir::unix_now();
    common::http::submit(&reqwest::Client::new(), &api, "k1", "+14155550100").await;
    let mut packet = vec![0; 8192];
    let len = tokio::time::timeout(Duration::from_secs(20), trunk.recv(&mut packet)).await.unwrap().unwrap();
    let invite = pound::sip::Message::parse(&packet[..len]).unwrap();
    assert_eq!(invite.method(), Some(&pound::sip::Method::Invite));
    let identity = invite.header("Identity").expect("the INVITE is signed");
    let (_, claims) = common::stir::verify(identity, x5u);
    assert_eq!(claims["orig"], serde_json::json!({"tn": "14155550000"}), "the P-Asserted-Identity's number");
    assert_eq!(claims["dest"], serde_json::json!({"tn": ["14155550100"]}));
    assert!((before..=common::stir::unix_now()).contains(&claims["iat"].as_u64().unwrap()), "{claims}");
}

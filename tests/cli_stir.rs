//! `pound call --stir-*` (issue 13): an unusable key, certificate URL, attestation or caller
//! number stops the command before anything is sent, with an error that names the problem and
//! never quotes the key.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn stir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stir").join(name)
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

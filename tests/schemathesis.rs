//! A schema-driven fuzzer that nobody here wrote, schemathesis, against a
//! running `pound serve`: requests generated from `openapi.json` (valid ones
//! and edge cases of every pattern and limit) must never get a 500, and every
//! response must match the document (status code, content type, headers,
//! body schema). Skipped, saying so, when `st` is not installed (`.ci/run`
//! installs it).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{phone, pound, start};
use serde_json::Value;

const KEY: &str = "schemathesis-key";

/// Bounds the run (the brief: at most two minutes); it takes seconds.
const DEADLINE: Duration = Duration::from_secs(120);

fn schemathesis_installed() -> bool {
    Command::new("st").arg("--version").output().is_ok_and(|output| output.status.success())
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    if !schemathesis_installed() {
        eprintln!("SKIPPED: schemathesis (`st`) is not installed; pip install schemathesis (see .ci/run)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_phone, trunk) = phone(&[]);
    let mut serve = pound();
    serve
        .args(["serve", "--store", &format!("sqlite://{}", dir.path().join("pound.db").display())])
        .args(["--trunk", &trunk, "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0", "--api-key", KEY])
        // So that generated callback URLs are accepted rather than all refused as unsignable.
        .args(["--webhook-secret", "whsec_schemathesis"]);
    let (_serve, ready) = start(serve);
    let base = format!("http://{}", ready["api"].as_str().unwrap());

    let mut fuzz = Command::new("st")
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", &base, "--header", &format!("Authorization: Bearer {KEY}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "50", "--seed", "1", "--workers", "1", "--no-color"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("st starts");
    let began = Instant::now();
    let status = loop {
        if let Some(status) = fuzz.try_wait().unwrap() {
            break status;
        }
        if began.elapsed() > DEADLINE {
            let _ = fuzz.kill();
            let _ = fuzz.wait();
            panic!("schemathesis did not finish within {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut report = String::new();
    fuzz.stdout.take().unwrap().read_to_string(&mut report).unwrap();
    fuzz.stderr.take().unwrap().read_to_string(&mut report).unwrap();
    assert!(status.success(), "schemathesis found failures:\n{report}");
    assert!(report.contains("passed"), "no test cases ran:\n{report}");

    // The document leads a fuzzer to requests the API accepts, not only to refusals.
    let listed: Value = reqwest::Client::new()
        .get(format!("{base}/v1/verifications"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let accepted = listed["items"].as_array().unwrap().len();
    assert!(accepted >= 1, "no generated request was accepted:\n{report}");
}

//! A callee with silence suppression (VAD/DTX) over real sockets: `pound
//! phone --vad` sends no RTP while it listens, only its key presses. Silence
//! is not a failure: a late `#` verifies, a wrong key then silence is
//! `wrong_input`, and silence alone is `no_input`.

mod common;

use std::process::Output;

use serde_json::Value;

use common::process::{phone, pound};

/// `pound call` to a fresh `pound phone --vad` with `phone_args`; the report.
fn call(phone_args: &[&str], call_args: &[&str]) -> Value {
    let mut args = vec!["--vad", "--calls", "1"];
    args.extend_from_slice(phone_args);
    let (_phone, uri) = phone(&args);
    let target = uri.replacen("sip:", "sip:verify@", 1);
    let Output { stdout, stderr, .. } =
        pound().args(["call", &target, "--bind", "127.0.0.1:0"]).args(call_args).output().expect("pound call runs");
    serde_json::from_slice(&stdout)
        .unwrap_or_else(|_| panic!("no report; stderr: {}", String::from_utf8_lossy(&stderr)))
}

#[test]
fn a_silent_callee_is_heard_when_it_finally_presses_and_is_never_failed() {
    // The compiled-in dialplan, whose input timeouts allow a late key; 12 s of
    // silence is past the old 10 s media timeout.
    let runs = [
        std::thread::spawn(|| call(&["--press", "#", "--after", "12000"], &[])),
        std::thread::spawn(|| call(&["--press", "5", "--after", "1000"], &[])),
        std::thread::spawn(|| call(&["--press", "", "--after", "0"], &[])),
    ]
    .map(|run| run.join().expect("the call thread"));
    let [late, wrong, silent] = runs;
    assert_eq!(late["outcome"], "verified", "{late}");
    assert_eq!(late["dtmf_source"], "rfc4733", "{late}");
    assert_eq!(wrong["outcome"], "wrong_input", "{wrong}");
    assert_eq!(wrong["digits"], "5", "{wrong}");
    assert_eq!(silent["outcome"], "no_input", "{silent}");
}

//! `pound call` against `pound phone` over real sockets on loopback: every
//! DTMF path with every codec, over UDP and TCP, IPv4 and IPv6.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use pound::media::wav::{Encoding, write_file};
use serde_json::Value;

#[path = "common/announce.rs"]
mod announce;

fn pound() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pound"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// A phone serving one call; returns it with its SIP address.
fn phone(listen: &str, args: &[&str]) -> Option<(Child, String)> {
    let mut child = pound()
        .args(["phone", "--listen", listen, "--calls", "1"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pound phone starts");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line);
    let address = serde_json::from_str::<Value>(&line).ok().and_then(|ready| ready["sip"].as_str().map(String::from));
    if address.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Some((child, address?))
}

/// One call from pound to a fresh phone; pound's report and the phone's call record.
fn call(listen: &str, phone_args: &[&str], call_args: &[&str]) -> (Value, Value) {
    let (mut phone, address) = phone(listen, phone_args).expect("the phone is ready");
    let output = pound()
        .args(["call", &format!("sip:verify@{address}"), "--bind", listen])
        .args(call_args)
        .output()
        .expect("pound call runs");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!("no report; stderr: {}", String::from_utf8_lossy(&output.stderr));
    });
    assert_eq!(output.status.code(), Some(if report["outcome"] == "verified" { 0 } else { 1 }));
    // The phone's lines after "ready": the INVITE, the keys, the call's end.
    let ended = BufReader::new(phone.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .find(|line| line["event"] == "call_ended")
        .unwrap_or(Value::Null);
    assert!(phone.wait().unwrap().success(), "the phone exits after its call");
    (report, ended)
}

#[test]
fn every_dtmf_path_with_every_codec_verifies() {
    let mut runs = Vec::new();
    for via in ["rfc4733", "inband", "info"] {
        for codec in ["pcmu", "pcma", "opus"] {
            runs.push(std::thread::spawn(move || {
                let (report, phone) = call("127.0.0.1:0", &["--via", via, "--codecs", codec, "--after", "500"], &[]);
                (via, codec, report, phone)
            }));
        }
    }
    for run in runs {
        let (via, codec, report, phone) = run.join().unwrap();
        assert_eq!(report["outcome"], "verified", "{via} {codec}: {report}");
        assert_eq!(report["dtmf_source"], via, "{via} {codec}");
        assert_eq!(report["digits"], "#");
        // The prompt reached the phone as RTP before the key cut it short.
        assert!(phone["rtp_received"].as_u64().unwrap() >= 20, "{via} {codec}: {phone}");
    }
}

/// Each path's evidence for the key it carried, in the report of a real call.
#[test]
fn each_path_records_the_evidence_of_its_key() {
    let runs: Vec<_> = ["inband", "rfc4733", "info"]
        .into_iter()
        .map(|via| {
            std::thread::spawn(move || {
                let (report, _) = call("127.0.0.1:0", &["--via", via, "--codecs", "pcma", "--after", "500"], &[]);
                (via, report)
            })
        })
        .collect();
    for run in runs {
        let (via, report) = run.join().unwrap();
        assert_eq!(report["outcome"], "verified", "{via}: {report}");
        let evidence = report["evidence"].as_array().unwrap_or_else(|| panic!("{via}: {report}"));
        assert_eq!(evidence.len(), 1, "{via}: {report}");
        let key = &evidence[0];
        assert_eq!((key["digit"].as_str(), key["source"].as_str()), (Some("#"), Some(via)), "{key}");
        let at_ms = key["at_ms"].as_u64().unwrap();
        // The phone counts its 500 ms from sending its 200, pound from receiving it.
        assert!((450..1500).contains(&at_ms), "{via}: pressed 500 ms after the answer: {key}");
        let number = |name: &str| key[name].as_f64().unwrap_or_else(|| panic!("{via}: no {name}: {key}"));
        match via {
            "inband" => {
                // pound phone sends each tone at -8 dBm0, through A-law.
                for level in ["level_low_dbm0", "level_high_dbm0"] {
                    assert!((-9.0..=-7.0).contains(&number(level)), "{level}: {key}");
                }
                assert!((-6.0..=-4.0).contains(&number("level_dbm0")), "{key}");
                assert!(number("twist_db").abs() <= 1.0, "{key}");
                for error in ["freq_error_low_pct", "freq_error_high_pct"] {
                    assert!(number(error).abs() <= 0.5, "{error}: {key}");
                }
                assert!(number("tone_share") >= 0.9 && number("margin_db") >= 5.0, "{key}");
                assert!(key.get("payload_type").is_none(), "{key}");
            }
            "rfc4733" => {
                assert_eq!(key["payload_type"], 101, "{key}");
                assert!(key["volume"].as_u64().is_some_and(|v| v <= 63), "{key}");
                assert_eq!(key["end_received"], true, "the phone sends the end: {key}");
                assert!(key.get("level_dbm0").is_none(), "{key}");
            }
            _ => assert_eq!(key["content_type"], "application/dtmf-relay", "{key}"),
        }
        if via != "info" {
            let duration = key["duration_ms"].as_u64().unwrap_or_else(|| panic!("{via}: no duration: {key}"));
            // The phone holds each key 160 ms.
            assert!((140..=240).contains(&duration), "{via}: {key}");
        }
    }
}

#[test]
fn tcp_carries_the_signalling() {
    let (report, _) = call("127.0.0.1:0", &["--transport", "tcp"], &["--transport", "tcp"]);
    assert_eq!(report["outcome"], "verified", "{report}");
}

#[test]
fn ipv6_works_where_the_host_has_it() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let (report, _) = call("[::1]:0", &[], &[]);
    assert_eq!(report["outcome"], "verified", "{report}");
}

#[test]
fn the_fraud_code_and_a_rejection_come_back_as_outcomes() {
    let (report, _) = call("127.0.0.1:0", &["--press", "0#", "--after", "300"], &[]);
    assert_eq!(report["outcome"], "fraud_reported", "{report}");
    assert_eq!(report["digits"], "0#");
    let (report, _) = call("127.0.0.1:0", &["--reject", "603"], &[]);
    assert_eq!(report["outcome"], "declined", "{report}");
    assert_eq!(report["sip_status"], 603);
}

#[test]
fn bad_targets_are_clear_errors() {
    let output = pound().args(["call", "+14155550100"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--trunk"));
    let output = pound().args(["call", "sip:x@127.0.0.1:5999", "--dialplan", "no-such-plan"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-plan"));
}

/// `audio` as a µ-law WAV in `dir`: G.711 as a phone line carries it.
fn wav(dir: &tempfile::TempDir, name: &str, audio: &[i16]) -> String {
    let path = dir.path().join(name);
    write_file(&path, audio, Encoding::Ulaw).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn a_voicemail_box_is_recognised_and_left_without_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut greetings = vec![("synthetic", announce::babble(4000, 1))];
    let spoken = "Hello, you have reached the voicemail of Alice. I cannot take your call right now. \
                  Please leave a message after the tone.";
    greetings.extend(announce::espeak(spoken, dir.path()).map(|speech| ("espeak-ng", speech)));
    for (kind, greeting) in greetings {
        let greeting = wav(&dir, &format!("{kind}.wav"), &announce::voicemail(greeting, 1000.0));
        // The box would take a `#` after its beep; pound has hung up by then.
        let (report, _) = call("127.0.0.1:0", &["--play", &greeting, "--after", "1000"], &[]);
        assert_eq!(report["outcome"], "voicemail", "{kind}: {report}");
        assert_eq!(report["digits"], "", "{kind}");
        assert!(report["detail"].as_str().unwrap().contains("1000 Hz beep"), "{kind}: {report}");
    }
}

#[test]
fn a_spoken_hello_then_the_key_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let Some(hello) = announce::espeak("Hello?", dir.path()) else { return };
    let hello = wav(&dir, "hello.wav", &hello);
    let (report, _) = call("127.0.0.1:0", &["--play", &hello, "--after", "300", "--via", "inband"], &[]);
    assert_eq!(report["outcome"], "verified", "{report}");
}

#[test]
fn a_sit_and_announcement_after_the_answer_is_an_invalid_number() {
    let dir = tempfile::tempdir().unwrap();
    let announcement = wav(&dir, "vacant.wav", &announce::sit((985.2, 380), (1370.6, 274)));
    let (report, _) = call("127.0.0.1:0", &["--play", &announcement], &[]);
    assert_eq!(report["outcome"], "invalid_number", "{report}");
    assert_eq!(report["detail"], "SIT VC (vacant code)");
}

#[test]
fn a_sit_in_early_media_is_an_invalid_number_before_any_answer() {
    let dir = tempfile::tempdir().unwrap();
    let announcement = wav(&dir, "intercept.wav", &announce::sit((913.8, 274), (1370.6, 274)));
    let (report, _) = call("127.0.0.1:0", &["--early-media", &announcement, "--answer-after", "20000"], &[]);
    assert_eq!(report["outcome"], "invalid_number", "{report}");
    assert_eq!(report["detail"], "SIT IC (intercept)");
    assert_eq!(report["answered_ms"], Value::Null, "{report}");
}

//! Captured calls replayed (issue 12): `pound call --capture` against `pound phone` over real
//! sockets, then `pound replay` of the file prints the same report, byte for byte, and says the
//! replayed machine sent what the captured one did; the committed captures in
//! `fixtures/captures/` (taken from sipp and from `pound phone` by `fixtures/captures/make.sh`)
//! replay to the reports the calls gave. The sipp case of a fresh capture is in `interop_sipp.rs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pound::capture::pcap::{self, Datagram};
use serde_json::Value;

fn pound() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pound"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// What `pound call` printed and exited with.
struct Called {
    report: String,
    status: Option<i32>,
}

/// One call from pound, captured to `capture`, to a fresh `pound phone` run with `phone_args`.
fn captured_call(capture: &Path, phone_args: &[&str], call_args: &[&str]) -> Called {
    let mut phone = pound()
        .args(["phone", "--listen", "127.0.0.1:0", "--calls", "1"])
        .args(phone_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pound phone starts");
    let mut ready = String::new();
    BufReader::new(phone.stdout.as_mut().unwrap()).read_line(&mut ready).unwrap();
    let address = serde_json::from_str::<Value>(&ready).unwrap()["sip"].as_str().unwrap().to_string();
    let output = pound()
        .args(["call", &format!("sip:verify@{address}"), "--bind", "127.0.0.1:0", "--capture"])
        .arg(capture)
        .args(call_args)
        .output()
        .expect("pound call runs");
    let _ = phone.kill();
    let _ = phone.wait();
    let report = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(report.starts_with('{'), "no report; stderr: {}", String::from_utf8_lossy(&output.stderr));
    Called { report, status: output.status.code() }
}

/// What `pound replay` printed and exited with.
struct Replayed {
    report: String,
    summary: String,
    status: Option<i32>,
}

fn replay(capture: &Path) -> Replayed {
    let output = pound().arg("replay").arg(capture).output().expect("pound replay runs");
    Replayed {
        report: String::from_utf8(output.stdout).unwrap().trim().to_string(),
        summary: String::from_utf8(output.stderr).unwrap(),
        status: output.status.code(),
    }
}

/// The call's report, its replay's, and a second replay's are one and the same.
fn assert_replays_the_same(capture: &Path, called: &Called) {
    let replayed = replay(capture);
    assert_eq!(replayed.report, called.report, "replay of {}: {}", capture.display(), replayed.summary);
    assert!(replayed.summary.contains("all as captured"), "{}", replayed.summary);
    assert_eq!(replayed.status, called.status, "the same exit status");
    let again = replay(capture);
    assert_eq!((again.report, again.summary), (replayed.report, replayed.summary), "replays are deterministic");
}

#[test]
fn calls_ended_by_each_kind_of_input_replay_to_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    // What ends each call: a telephone-event, in-band tones (measured evidence), SIP INFO, a wrong
    // code then the right one (number matching), the callee's BYE, a ring timeout (the call's own
    // timer), a refusal, and a call over TCP.
    let cases: [(&str, &[&str], &[&str], &str); 8] = [
        ("rfc4733", &["--via", "rfc4733", "--after", "300"], &[], "verified"),
        ("inband", &["--via", "inband", "--codecs", "pcma", "--after", "300"], &[], "verified"),
        ("info", &["--via", "info", "--after", "300"], &[], "verified"),
        ("code", &["--press", "12#47#", "--after", "300"], &["--code", "47"], "verified"),
        ("hangup", &["--hangup-after", "400"], &[], "callee_hangup"),
        ("no-answer", &["--no-answer"], &["--timeout", "1.5"], "no_answer"),
        ("busy", &["--reject", "486"], &[], "busy"),
        ("tcp", &["--transport", "tcp", "--after", "300"], &["--transport", "tcp"], "verified"),
    ];
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(name, phone_args, call_args, outcome)| {
            let capture = dir.path().join(format!("{name}.pcap"));
            std::thread::spawn(move || {
                let called = captured_call(&capture, phone_args, call_args);
                (name, outcome, capture, called)
            })
        })
        .collect();
    for run in runs {
        let (name, outcome, capture, called) = run.join().unwrap();
        let report: Value = serde_json::from_str(&called.report).unwrap();
        assert_eq!(report["outcome"], outcome, "{name}: {report}");
        assert_replays_the_same(&capture, &called);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&capture).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}: a capture holds the call's secrets");
        }
    }
}

#[test]
fn tcpdump_reads_a_capture_as_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("call.pcap");
    captured_call(&capture, &["--via", "rfc4733", "--after", "300"], &[]);
    let records = datagrams(&capture).len();
    let output = Command::new("tcpdump")
        .args(["-n", "-vv", "-A", "-r"])
        .arg(&capture)
        .output()
        .expect("tcpdump runs (apt-get install tcpdump; .ci/run does)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("link-type RAW"));
    let text = String::from_utf8_lossy(&output.stdout);
    // -vv: one header line per datagram (checksums verified), -A: each payload below it.
    let datagrams = text.lines().filter(|line| line.contains(" IP ") && line.contains("proto UDP")).count();
    assert_eq!(datagrams, records, "every record is one UDP datagram to tcpdump");
    assert!(!text.contains("bad cksum") && !text.contains("bad udp cksum"), "{text}");
    assert!(text.contains("INVITE sip:verify@"), "the SIP is there as sent");
}

#[test]
fn a_capture_whose_peer_said_something_else_replays_to_what_it_says() {
    // The same capture with the callee's `#` (RFC 4733 event 11) turned into `5` (event 5): the
    // replayed call hears `5`, so the file, not a record of the result, decides the report.
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("call.pcap");
    let called = captured_call(&capture, &["--via", "rfc4733", "--after", "300"], &[]);
    assert!(called.report.contains("\"verified\""), "{}", called.report);
    let mut records = datagrams(&capture);
    let pound_keys = records.iter_mut().filter(|r| is_telephone_event(&r.payload) && r.payload[12] == 11);
    let changed = pound_keys.map(|r| r.payload[12] = 5).count();
    assert!(changed > 0, "the capture carries the # as telephone-events");
    let forged = dir.path().join("forged.pcap");
    std::fs::write(&forged, pcap::file(&records)).unwrap();
    let replayed = replay(&forged);
    let report: Value = serde_json::from_str(&replayed.report).unwrap();
    assert_ne!(report["outcome"], "verified", "{report}");
    assert!(report["digits"].as_str().unwrap().contains('5'), "{report}");
    assert_eq!(replayed.status, Some(3), "the replay sent other than the capture: {}", replayed.summary);
    assert!(replayed.summary.contains("diverged"), "{}", replayed.summary);
}

#[test]
fn a_capture_cut_short_replays_the_rest_on_the_calls_own_timers() {
    // As a capture cut at its size limit, or by the node stopping: everything after the callee's
    // key is gone, the closing prompt, the BYE and its answer among it.
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("call.pcap");
    let called = captured_call(&capture, &["--via", "rfc4733", "--after", "300"], &[]);
    let records = datagrams(&capture);
    let last_event = records.iter().rposition(|r| is_telephone_event(&r.payload)).unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, pcap::file(&records[..=last_event])).unwrap();
    let replayed = replay(&cut);
    let (live, again): (Value, Value) =
        (serde_json::from_str(&called.report).unwrap(), serde_json::from_str(&replayed.report).unwrap());
    assert_eq!(again["outcome"], "verified", "{again}");
    assert_eq!((&again["digit_ms"], &again["evidence"]), (&live["digit_ms"], &live["evidence"]));
    // The BYE went unanswered: the call ended when its transaction timed out (timer F, 32 s).
    assert!(again["duration_ms"].as_u64().unwrap() > 32_000, "{again}");
    assert!(replayed.summary.contains("the capture ended first"), "{}", replayed.summary);
    assert_eq!(replayed.status, Some(0));
}

#[test]
fn damaged_and_foreign_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("call.pcap");
    captured_call(&capture, &["--after", "300"], &[]);
    let bytes = std::fs::read(&capture).unwrap();
    for (name, contents, needle) in [
        ("empty", Vec::new(), "not a pcap file"),
        ("cut", bytes[..bytes.len() - 7].to_vec(), "cut short"),
        ("text", b"INVITE sip:x SIP/2.0\r\n\r\n".to_vec(), "not a pcap file"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        let replayed = replay(&path);
        assert_eq!(replayed.status, Some(2), "{name}");
        assert!(replayed.summary.contains(needle), "{name}: {}", replayed.summary);
    }
    let missing = replay(&dir.path().join("absent.pcap"));
    assert_eq!(missing.status, Some(2));
}

#[test]
fn committed_captures_from_sipp_and_pound_phone_replay_to_their_calls_reports() {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/captures");
    let mut replayed_any = 0;
    for entry in std::fs::read_dir(&folder).unwrap() {
        let capture = entry.unwrap().path();
        if capture.extension().is_none_or(|e| e != "pcap") {
            continue;
        }
        let expected = std::fs::read_to_string(capture.with_extension("json")).expect("each capture has its report");
        let replayed = replay(&capture);
        assert_eq!(replayed.report, expected.trim(), "{}: {}", capture.display(), replayed.summary);
        assert!(replayed.summary.contains("all as captured"), "{}: {}", capture.display(), replayed.summary);
        replayed_any += 1;
    }
    assert!(replayed_any >= 2, "fixtures/captures holds the sipp and pound phone captures");
}

/// The records of the capture at `path`, read by pound's own pcap reader.
fn datagrams(path: &Path) -> Vec<Datagram> {
    pcap::read(&std::fs::read(path).unwrap()).unwrap()
}

/// An RFC 4733 event as `pound phone` sends it: RTP version 2, a dynamic payload type, a 4-byte
/// event payload after the 12-byte header.
fn is_telephone_event(payload: &[u8]) -> bool {
    payload.len() == 16 && payload[0] >> 6 == 2 && (96..128).contains(&(payload[1] & 0x7f))
}

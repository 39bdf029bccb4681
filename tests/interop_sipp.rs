//! `pound call` against sipp (Debian package `sip-tester`) playing the callee
//! with the scenarios in `tests/sipp/`. Each test asserts pound's outcome and
//! that sipp counted its one call as successful.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::{Press, Signal, pcap::write_pcmu_capture};
use serde_json::Value;

/// sipp replays captures through raw sockets and binds fixed control ports;
/// one at a time keeps the tests independent.
static SIPP: Mutex<()> = Mutex::new(());

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A dialplan with short timeouts, so the no-input and wrong-key paths end quickly.
fn quick_dialplan(dir: &Path) -> PathBuf {
    let prompts = root().join("fixtures/prompts/en");
    let path = dir.join("quick.toml");
    let text = format!(
        "prompt = {:?}\nprompt_repeats = 1\nexpect = \"#\"\nfraud_code = \"0#\"\nmax_attempts = 1\n\
         confirmation_prompt = {:?}\ninput_timeout_ms = 1000\nmedia_timeout_ms = 60000\n",
        prompts.join("press-pound.wav"),
        prompts.join("confirmed.wav"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

struct Run {
    report: Value,
    pound_status: i32,
    sipp_status: i32,
    sipp_screen: String,
    /// What the scenario's `<log>` actions wrote.
    sipp_log: String,
}

fn run(scenario: &str, pound_args: &[&str], prepare: impl FnOnce(&Path, String) -> String) -> Run {
    run_to("verify", scenario, pound_args, prepare)
}

/// [`run`], calling `sip:USER@` sipp.
fn run_to(user: &str, scenario: &str, pound_args: &[&str], prepare: impl FnOnce(&Path, String) -> String) -> Run {
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "sipp is not installed: apt-get install -y sip-tester (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let xml = std::fs::read_to_string(root().join("tests/sipp").join(format!("{scenario}.xml"))).unwrap();
    let scenario_path = dir.path().join(format!("{scenario}.xml"));
    std::fs::write(&scenario_path, prepare(dir.path(), xml)).unwrap();
    let (port, media, control) = (free_port(), pound::cmd::bench::sipp_media_port().unwrap(), free_port());
    let screen = dir.path().join("screen.log");
    let log = dir.path().join("actions.log");
    let sipp = Command::new("sipp")
        .args(["-sf"])
        .arg(&scenario_path)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-mp", &media.to_string()])
        .args([
            "-cp",
            &control.to_string(),
            "-ci",
            "127.0.0.1",
            "-m",
            "1",
            "-timeout",
            "40",
            "-timeout_error",
            "-nostdin",
        ])
        .args(["-trace_screen", "-screen_file"])
        .arg(&screen)
        .args(["-trace_logs", "-log_file"])
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp starts");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let target = format!("sip:{user}@127.0.0.1:{port}");
    let pound = Command::new(env!("CARGO_BIN_EXE_pound"))
        .args(["call", &target, "--bind", "127.0.0.1:0", "--dialplans"])
        .arg(root().join("dialplans"))
        .args(pound_args)
        .env("POUND_LOG", "info")
        .output()
        .expect("pound runs");
    let sipp_output = sipp.wait_with_output().expect("sipp ends");
    let stdout = String::from_utf8_lossy(&pound.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null);
    let sipp_screen = std::fs::read_to_string(&screen).unwrap_or_default();
    if report.is_null() || sipp_output.status.code() != Some(0) {
        eprintln!("pound stderr:\n{}", String::from_utf8_lossy(&pound.stderr));
        eprintln!("sipp stderr:\n{}\nsipp screen:\n{sipp_screen}", String::from_utf8_lossy(&sipp_output.stderr));
    }
    Run {
        report,
        pound_status: pound.status.code().unwrap_or(-1),
        sipp_status: sipp_output.status.code().unwrap_or(-1),
        sipp_screen,
        sipp_log: std::fs::read_to_string(&log).unwrap_or_default(),
    }
}

fn assert_outcome(run: &Run, outcome: &str) {
    assert_eq!(run.report["outcome"], outcome, "report: {}", run.report);
    assert_eq!(run.sipp_status, 0, "sipp failed; screen:\n{}", run.sipp_screen);
    let successful = run
        .sipp_screen
        .lines()
        .filter(|l| l.contains("Successful call"))
        .filter_map(|l| l.split('|').nth(2).and_then(|c| c.trim().parse::<u64>().ok()))
        .next_back();
    assert_eq!(successful, Some(1), "sipp did not count one successful call:\n{}", run.sipp_screen);
    assert_eq!(run.pound_status, if outcome == "verified" { 0 } else { 1 });
}

fn unchanged(_: &Path, xml: String) -> String {
    xml
}

/// A call to sipp captured, then replayed: the same report, and every message and packet
/// pound sent as it sent it (issue 12).
#[test]
fn a_captured_call_to_sipp_replays_to_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("sipp.pcap");
    let run = run("inband-pound", &["--codecs", "pcmu", "--capture", capture.to_str().unwrap()], with_inband_pound);
    assert_outcome(&run, "verified");
    let replayed = Command::new(env!("CARGO_BIN_EXE_pound")).arg("replay").arg(&capture).output().unwrap();
    let replayed_report: Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert_eq!(replayed_report, run.report);
    assert_eq!(replayed.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&replayed.stderr).contains("all as captured"));
}

#[test]
fn pound_key_by_rfc4733_is_verified() {
    let run = run("rfc4733-pound", &[], unchanged);
    assert_outcome(&run, "verified");
    assert_eq!(run.report["dtmf_source"], "rfc4733");
    assert_eq!(run.report["digits"], "#");
    assert_eq!(run.report["sip_status"], 200);
}

/// The in-band scenario with the audio it plays: a # at -12 dBm0 after 400 ms of silence.
fn with_inband_pound(dir: &Path, xml: String) -> String {
    let pcap = dir.join("inband-pound.pcap");
    let signal = Signal::silence(400.0).press(Press::new('#').level(-12.0).duration(200.0)).gap(600.0);
    write_pcmu_capture(&pcap, &signal.quantise(common::Codec::Linear)).unwrap();
    xml.replace("\"PCAP\"", &format!("{:?}", pcap.display().to_string()))
}

#[test]
fn pound_key_in_band_is_verified() {
    let run = run("inband-pound", &["--codecs", "pcmu"], with_inband_pound);
    assert_outcome(&run, "verified");
    assert_eq!(run.report["dtmf_source"], "inband");
}

#[test]
fn pound_key_by_sip_info_is_verified() {
    let run = run("info-pound", &[], unchanged);
    assert_outcome(&run, "verified");
    assert_eq!(run.report["dtmf_source"], "info");
}

#[test]
fn a_wrong_key_is_wrong_input() {
    let dir = tempfile::tempdir().unwrap();
    let plan = quick_dialplan(dir.path());
    let run = run("wrong-key", &["--dialplan", plan.to_str().unwrap()], unchanged);
    assert_outcome(&run, "wrong_input");
    assert_eq!(run.report["digits"], "1");
}

#[test]
fn silence_is_no_input() {
    let dir = tempfile::tempdir().unwrap();
    let plan = quick_dialplan(dir.path());
    let run = run("silence", &["--dialplan", plan.to_str().unwrap()], unchanged);
    assert_outcome(&run, "no_input");
    assert_eq!(run.report["digits"], "");
}

#[test]
fn busy_is_busy() {
    let run = run("busy", &[], unchanged);
    assert_outcome(&run, "busy");
    assert_eq!(run.report["sip_status"], 486);
}

#[test]
fn ringing_without_answer_is_canceled_and_no_answer() {
    let run = run("ring-no-answer", &["--timeout", "2"], unchanged);
    assert_outcome(&run, "no_answer");
    assert_eq!(run.report["sip_status"], 487);
}

#[test]
fn a_401_challenge_is_answered() {
    let run = run("auth-401", &["--auth-user", "alice", "--auth-pass", "s3cret"], unchanged);
    assert_outcome(&run, "verified");
}

#[test]
fn a_407_challenge_is_answered() {
    let run = run("auth-407", &["--auth-user", "alice", "--auth-pass", "s3cret"], unchanged);
    assert_outcome(&run, "verified");
}

#[test]
fn the_callee_hanging_up_is_callee_hangup() {
    let run = run("callee-hangup", &[], unchanged);
    assert_outcome(&run, "callee_hangup");
}

#[test]
fn session_progress_then_603_is_declined() {
    let run = run("progress-decline", &[], unchanged);
    assert_outcome(&run, "declined");
    assert_eq!(run.report["sip_status"], 603);
}

#[test]
fn a_pcma_only_answer_is_used() {
    let run = run("pcma-only", &[], unchanged);
    assert_outcome(&run, "verified");
}

#[test]
fn telephone_events_on_payload_type_96_count() {
    let run = run("te-pt96", &[], unchanged);
    assert_outcome(&run, "verified");
    assert_eq!(run.report["dtmf_source"], "rfc4733");
}

/// STIR/SHAKEN (issue 13): sipp, as the callee, logs the INVITE's `Identity` header (and fails
/// the call without one); an independent JWS implementation verifies it (`common::stir`).
#[test]
fn the_invite_carries_a_passport_that_an_independent_implementation_verifies() {
    let key = common::stir::fixtures().join("sec1.key.pem");
    let x5u = "https://cert.example.org/shaken/pound.pem";
    let before = common::stir::unix_now();
    let args =
        ["--from", "+1-415-555-0000", "--stir-key", key.to_str().unwrap(), "--stir-x5u", x5u, "--stir-attest", "B"];
    let run = run_to("+14155550100", "rfc4733-pound", &args, |_, xml| {
        let capture = r#"<recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".+" search_in="hdr" header="Identity:" check_it="true" assign_to="identity"/>
      <log message="IDENTITY [$identity]"/>
    </action>
  </recv>"#;
        xml.replacen(r#"<recv request="INVITE" crlf="true"/>"#, capture, 1)
    });
    let after = common::stir::unix_now();
    assert_outcome(&run, "verified");
    let identity = run
        .sipp_log
        .lines()
        .find_map(|line| line.split_once("IDENTITY ").map(|(_, value)| value.trim()))
        .unwrap_or_else(|| panic!("sipp logged no Identity header:\n{}", run.sipp_log));
    let (header, claims) = common::stir::verify(identity, x5u);
    assert_eq!((header.typ.as_deref(), header.x5u.as_deref()), (Some("passport"), Some(x5u)));
    assert_eq!(claims["attest"], "B");
    assert_eq!(claims["orig"], serde_json::json!({"tn": "14155550000"}));
    assert_eq!(claims["dest"], serde_json::json!({"tn": ["14155550100"]}));
    let iat = claims["iat"].as_u64().unwrap();
    assert!((before..=after).contains(&iat), "iat {iat} is the signing time, between {before} and {after}");
    let origid = claims["origid"].as_str().unwrap();
    assert!(origid.len() == 36 && origid.as_bytes()[14] == b'4', "a version 4 UUID: {origid}");
}

/// When a retransmission of the INVITE reaches the callee of `pound bench`.
#[derive(Debug, Clone, Copy)]
enum Retransmission {
    BeforeTheAck,
    AfterTheAck,
}

/// Issue 10's `no_input` under load: a node that has not yet read the 200
/// retransmits its INVITE (timer A), and the retransmission reaches sipp
/// after its answer. The bench's callee scenario must answer it and still
/// press `#`: sipp took it for an unexpected message and dropped the call
/// without a BYE, so the node waited out every prompt. Here a plain UDP
/// socket plays the node and sends the retransmission on purpose.
fn bench_callee_after_a_retransmitted_invite(when: Retransmission) {
    use std::time::{Duration, Instant};
    let _one_at_a_time = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let xml = std::fs::read_to_string(root().join("src/cmd/bench/sipp-callee.xml")).unwrap();
    let scenario = dir.path().join("bench-callee.xml");
    std::fs::write(&scenario, xml.replace("HOLD_MS", "100")).unwrap();
    let screen = dir.path().join("screen.log");
    let (port, media, control) = (free_port(), pound::cmd::bench::sipp_media_port().unwrap(), free_port());
    let mut sipp = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-mp", &media.to_string(), "-cp", &control.to_string()])
        .args(["-m", "1", "-timeout", "20", "-timeout_error", "-nostdin", "-trace_screen", "-screen_file"])
        .arg(&screen)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp starts (apt-get install -y sip-tester)");
    std::thread::sleep(Duration::from_millis(300));

    let sip = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (sip_port, rtp_port) = (sip.local_addr().unwrap().port(), rtp.local_addr().unwrap().port());
    let sipp_at = format!("127.0.0.1:{port}");
    let sdp = format!(
        "v=0\r\no=node 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    let dialog = format!("From: <sip:node@127.0.0.1>;tag=node1\r\nCall-ID: retransmitted-{sip_port}@127.0.0.1\r\n");
    let invite = format!(
        "INVITE sip:bench@{sipp_at} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bKinvite{sip_port}\r\n\
         Max-Forwards: 70\r\n{dialog}To: <sip:bench@{sipp_at}>\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:node@127.0.0.1:{sip_port}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sip.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sip.send_to(invite.as_bytes(), &sipp_at).unwrap();
    let mut buffer = [0u8; 4096];
    let to = loop {
        let n = sip.recv(&mut buffer).expect("sipp answers the INVITE");
        let response = String::from_utf8_lossy(&buffer[..n]).into_owned();
        if response.starts_with("SIP/2.0 200") {
            break response.lines().find(|l| l.starts_with("To:")).expect("a To header").to_string();
        }
    };
    let request = |method: &str, cseq: u32| {
        format!(
            "{method} sip:sipp@{sipp_at} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{sip_port};branch=z9hG4bK{method}{sip_port}\r\n\
             Max-Forwards: 70\r\n{dialog}{to}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    if let Retransmission::BeforeTheAck = when {
        sip.send_to(invite.as_bytes(), &sipp_at).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    sip.send_to(request("ACK", 1).as_bytes(), &sipp_at).unwrap();
    if let Retransmission::AfterTheAck = when {
        std::thread::sleep(Duration::from_millis(50));
        sip.send_to(invite.as_bytes(), &sipp_at).unwrap();
    }

    // RFC 4733 `#`: payload type 101 (marker bit aside), event 11.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut pressed = false;
    while !pressed && Instant::now() < deadline {
        rtp.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        match rtp.recv(&mut buffer) {
            Ok(n) => pressed = n >= 16 && buffer[1] & 0x7f == 101 && buffer[12] == 11,
            Err(_) => break,
        }
    }
    sip.send_to(request("BYE", 2).as_bytes(), &sipp_at).unwrap();
    let status = sipp.wait().expect("sipp ends");
    let screen = std::fs::read_to_string(&screen).unwrap_or_default();
    assert!(pressed, "{when:?}: the callee pressed no # by RFC 4733; sipp screen:\n{screen}");
    assert!(status.success(), "{when:?}: sipp failed the call; screen:\n{screen}");
}

#[test]
fn the_bench_callee_presses_after_an_invite_retransmitted_before_the_ack() {
    bench_callee_after_a_retransmitted_invite(Retransmission::BeforeTheAck);
}

#[test]
fn the_bench_callee_presses_after_an_invite_retransmitted_after_the_ack() {
    bench_callee_after_a_retransmitted_invite(Retransmission::AfterTheAck);
}

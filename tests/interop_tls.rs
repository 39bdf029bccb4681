//! SIP over TLS (issue 13) against peers nobody here wrote: baresip as a
//! TLS callee, sipp playing the callee behind socat's OpenSSL server
//! (Debian's sipp is built without TLS, so `sipp -t l1` cannot run here;
//! socat terminates TLS and hands sipp the same SIP over TCP), and
//! `pound phone` listening on TLS. Certificates are made per test with
//! rcgen. Each test says so and passes when baresip, sipp or socat is
//! missing (`.ci/run` installs them).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::baresip::Baresip;
use common::http::{submit, wait_for};
use common::process::{call as pound_call, phone, serve_with_config};
use common::tls::Pki;
use pound::call::{CallReport, Prompts};
use pound::dialplan::Dialplan;
use pound::media::codec::Codec;
use pound::net::{CallSetup, Endpoint, Tls, TlsFiles, run_call};
use pound::rtp::DEFAULT_LEARNING_PACKETS;
use pound::sip::Timers;
use pound::vocab::{Outcome, Transport};
use serde_json::Value;

/// sipp replays captures through raw sockets; one at a time keeps the tests apart.
static SIPP: Mutex<()> = Mutex::new(());

fn free_port() -> u16 {
    // A port free for both UDP and TCP: sipp and socat take TCP, media UDP.
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `tool` runs; if not, the test says it is skipped.
fn have(tool: &str, test: &str) -> bool {
    let present = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !present {
        eprintln!("SKIPPED {test}: {tool} is not installed (apt-get install -y sip-tester socat; .ci/run does)");
    }
    present
}

/// socat's OpenSSL server on `port`, presenting `cert`, handing each
/// connection's SIP to `backend` over TCP; with `client_ca`, it demands a
/// client certificate signed by it. socat forks a child per connection:
/// dropping the front kills its process group, connections included.
struct TlsFront {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl TlsFront {
    fn start(port: u16, cert: &Path, key: &Path, backend: u16, client_ca: Option<&Path>) -> TlsFront {
        let verify = match client_ca {
            Some(ca) => format!("verify=1,cafile={}", ca.display()),
            None => "verify=0".into(),
        };
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},{verify}",
            cert.display(),
            key.display()
        );
        let mut child = Command::new("socat")
            .args(["-d", "-d", &listen, &format!("TCP:127.0.0.1:{backend}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("socat starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let front = TlsFront { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !front.log().contains("listening on") {
            assert!(Instant::now() < deadline, "socat did not listen:\n{}", front.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        front
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// TCP connections socat accepted (each is one TLS connection from pound).
    fn accepts(&self) -> usize {
        self.log().matches("accepting connection from").count()
    }
}

/// sipp as the callee over TCP on `port`, for `calls` calls of `scenario`.
fn sipp_tcp(dir: &Path, scenario: &str, port: u16, calls: u32) -> (Child, PathBuf) {
    let screen = dir.join("screen.log");
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(root().join("tests/sipp").join(format!("{scenario}.xml")))
        .args([
            "-t",
            "t1",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mp",
            &pound::cmd::bench::sipp_media_port().unwrap().to_string(),
        ])
        .args(["-cp", &free_port().to_string(), "-ci", "127.0.0.1", "-m", &calls.to_string()])
        .args(["-timeout", "40", "-timeout_error", "-nostdin", "-trace_screen", "-screen_file"])
        .arg(&screen)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp starts");
    std::thread::sleep(Duration::from_millis(300));
    (child, screen)
}

/// sipp's count of successful calls once it ended.
fn sipp_successes(sipp: Child, screen: &Path) -> u64 {
    let output = sipp.wait_with_output().expect("sipp ends");
    let screen = std::fs::read_to_string(screen).unwrap_or_default();
    let successes = screen
        .lines()
        .filter(|l| l.contains("Successful call"))
        .filter_map(|l| l.split('|').nth(2).and_then(|c| c.trim().parse::<u64>().ok()))
        .next_back()
        .unwrap_or(0);
    if output.status.code() != Some(0) {
        eprintln!("sipp stderr:\n{}\nscreen:\n{screen}", String::from_utf8_lossy(&output.stderr));
    }
    successes
}

/// `pound call TARGET ARGS…`: its JSON report and its stderr.
fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn rfc4733_over_tls_to_sipp_is_verified() {
    if !have("sipp", "rfc4733_over_tls_to_sipp_is_verified") || !have("socat", "rfc4733_over_tls_to_sipp_is_verified") {
        return;
    }
    let _one = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "trunk");
    let server = pki.issue("server", &["sip.example.com", "127.0.0.1"]);
    let (sip_port, tls_port) = (free_port(), free_port());
    let (sipp, screen) = sipp_tcp(dir.path(), "rfc4733-pound", sip_port, 1);
    let front = TlsFront::start(tls_port, &server.cert, &server.key, sip_port, None);
    let (report, stderr) = pound_call(&format!("sips:verify@127.0.0.1:{tls_port}"), &["--tls-ca", arg(&pki.ca_file)]);
    assert_eq!(report["outcome"], "verified", "report: {report}\npound stderr:\n{stderr}");
    assert_eq!((report["dtmf_source"].as_str(), report["digits"].as_str()), (Some("rfc4733"), Some("#")));
    assert_eq!(sipp_successes(sipp, &screen), 1, "sipp did not count the call");
    assert_eq!(front.accepts(), 1, "one TLS connection:\n{}", front.log());
}

#[test]
fn a_certificate_from_another_ca_ends_unreachable_before_any_sip() {
    if !have("socat", "a_certificate_from_another_ca_ends_unreachable_before_any_sip") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (theirs, ours) = (Pki::new(dir.path(), "theirs"), Pki::new(dir.path(), "ours"));
    let server = theirs.issue("server", &["127.0.0.1"]);
    // Whatever socat would pass on lands here: it must stay empty.
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    backend.set_nonblocking(true).unwrap();
    let tls_port = free_port();
    let front = TlsFront::start(tls_port, &server.cert, &server.key, backend.local_addr().unwrap().port(), None);
    let (report, stderr) = pound_call(&format!("sips:verify@127.0.0.1:{tls_port}"), &["--tls-ca", arg(&ours.ca_file)]);
    assert_eq!(report["outcome"], "unreachable", "report: {report}\npound stderr:\n{stderr}");
    assert_eq!(report["sip_status"], Value::Null);
    let detail = report["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("invalid peer certificate") && detail.contains("UnknownIssuer"), "detail: {detail}");
    assert!(backend.accept().is_err(), "socat passed something on after a failed handshake");
    assert_eq!(front.accepts(), 1);
}

#[test]
fn a_certificate_for_another_host_ends_unreachable() {
    if !have("socat", "a_certificate_for_another_host_ends_unreachable") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "trunk");
    let server = pki.issue("server", &["sip.example.com"]);
    let tls_port = free_port();
    let _front = TlsFront::start(tls_port, &server.cert, &server.key, free_port(), None);
    let (report, stderr) = pound_call(&format!("sips:verify@127.0.0.1:{tls_port}"), &["--tls-ca", arg(&pki.ca_file)]);
    assert_eq!(report["outcome"], "unreachable", "report: {report}\npound stderr:\n{stderr}");
    let detail = report["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("certificate not valid for name"), "detail: {detail}");
    assert!(detail.contains("127.0.0.1"), "the name checked is in the detail: {detail}");
}

#[test]
fn nothing_leaves_in_clear_to_a_peer_that_does_not_speak_tls() {
    // A plain TCP listener where a TLS trunk should be: it records what
    // arrives and closes, as a SIP-over-TCP server would on garbage.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let recorder = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut received = vec![0u8; 65536];
        let n = stream.read(&mut received).unwrap_or(0);
        received.truncate(n);
        received
    });
    let target = format!("sip:verify@127.0.0.1:{port};transport=tls");
    let (report, stderr) = pound_call(&target, &["--transport", "udp"]);
    let received = recorder.join().unwrap();
    assert_eq!(report["outcome"], "unreachable", "report: {report}\npound stderr:\n{stderr}");
    assert!(report["detail"].as_str().unwrap_or_default().contains("TLS to 127.0.0.1"), "report: {report}");
    // A TLS record of type handshake (22), version 3.x, then the ClientHello (1).
    assert!(received.len() > 5, "nothing arrived");
    assert_eq!((received[0], received[1], received[5]), (22, 3, 1), "not a ClientHello: {:?}", &received[..8]);
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("INVITE") && !text.contains("SIP/2.0"), "SIP in clear: {text}");
}

#[test]
fn pound_call_verifies_through_pound_phone_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "phone");
    let cert = pki.issue("phone", &["127.0.0.1"]);
    let (_phone, uri) =
        phone(&["--transport", "tls", "--tls-cert", arg(&cert.cert), "--tls-key", arg(&cert.key), "--calls", "1"]);
    let target = uri.replacen("sip:", "sips:alice@", 1);
    let (report, stderr) = pound_call(&target, &["--tls-ca", arg(&pki.ca_file)]);
    assert_eq!(report["outcome"], "verified", "report: {report}\npound stderr:\n{stderr}");
    assert_eq!(report["dtmf_source"], "rfc4733");
    // The same phone refuses a caller that does not trust its certificate.
    let stranger = Pki::new(dir.path(), "stranger");
    let (_phone, uri) =
        phone(&["--transport", "tls", "--tls-cert", arg(&cert.cert), "--tls-key", arg(&cert.key), "--calls", "1"]);
    let (report, _) = pound_call(&uri.replacen("sip:", "sips:alice@", 1), &["--tls-ca", arg(&stranger.ca_file)]);
    assert_eq!(report["outcome"], "unreachable", "report: {report}");
}

fn setup(target: SocketAddr, name: &str) -> CallSetup {
    let plan = Dialplan::find("press-pound", None).unwrap();
    let prompts = Prompts::load(&plan).unwrap();
    CallSetup {
        target: format!("sips:verify@{target}"),
        next_hop: target,
        peer_name: name.into(),
        transport: Transport::Tls,
        from_user: "pound".into(),
        from_display: None,
        asserted_identity: None,
        credentials: None,
        codecs: vec![Codec::Pcmu],
        dialplan: Arc::new(plan),
        prompts: Arc::new(prompts),
        timers: Timers::default(),
        rtp_ports: None,
        cancel: None,
        rtp_learning_packets: DEFAULT_LEARNING_PACKETS,
        stir: None,
        seed: None,
        srtp: pound::vocab::SrtpPolicy::Off,
        code: None,
        capture: None,
    }
}

async fn calls(endpoint: &Endpoint, target: SocketAddr, n: usize) -> Vec<CallReport> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let (endpoint, setup) = (endpoint.clone(), setup(target, "sip.example.com"));
            tokio::spawn(async move { run_call(&endpoint, setup, |_| {}).await.expect("the call runs") })
        })
        .collect();
    let mut reports = Vec::new();
    for call in calls {
        reports.push(call.await.unwrap());
    }
    reports
}

#[test]
fn calls_share_one_tls_connection_and_reconnect_after_a_loss() {
    if !have("sipp", "calls_share_one_tls_connection_and_reconnect_after_a_loss")
        || !have("socat", "calls_share_one_tls_connection_and_reconnect_after_a_loss")
    {
        return;
    }
    let _one = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "trunk");
    let server = pki.issue("server", &["sip.example.com"]);
    let (sip_port, tls_port) = (free_port(), free_port());
    let (sipp, screen) = sipp_tcp(dir.path(), "rfc4733-pound", sip_port, 3);
    let front = TlsFront::start(tls_port, &server.cert, &server.key, sip_port, None);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let tls = Tls::client(&TlsFiles { ca: Some(pki.ca_file.clone()), ..TlsFiles::default() }).unwrap();
    let bind = Endpoint::bind_with_tls("127.0.0.1:0".parse().unwrap(), false, Some(tls));
    let endpoint = runtime.block_on(bind).unwrap();
    let target: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    // Two calls at once, one connection.
    let reports = runtime.block_on(calls(&endpoint, target, 2));
    assert!(reports.iter().all(|r| r.outcome == Outcome::Verified), "{reports:?}");
    assert_eq!(front.accepts(), 1, "two calls, one TLS connection:\n{}", front.log());
    // The connection is lost (the TLS server restarts); the next call opens a new one.
    drop(front);
    let front = TlsFront::start(tls_port, &server.cert, &server.key, sip_port, None);
    let reports = runtime.block_on(calls(&endpoint, target, 1));
    assert_eq!(reports[0].outcome, Outcome::Verified, "{reports:?}");
    assert_eq!(front.accepts(), 1, "a new connection after the loss:\n{}", front.log());
    assert_eq!(sipp_successes(sipp, &screen), 3);
}

#[test]
fn a_trunk_that_requires_a_client_certificate_gets_one() {
    if !have("sipp", "a_trunk_that_requires_a_client_certificate_gets_one")
        || !have("socat", "a_trunk_that_requires_a_client_certificate_gets_one")
    {
        return;
    }
    let _one = SIPP.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (trunk, clients) = (Pki::new(dir.path(), "trunk"), Pki::new(dir.path(), "clients"));
    let server = trunk.issue("server", &["127.0.0.1"]);
    let client = clients.issue("pound", &["pound.example.com"]);
    let (sip_port, tls_port) = (free_port(), free_port());
    let (sipp, screen) = sipp_tcp(dir.path(), "rfc4733-pound", sip_port, 1);
    let front = TlsFront::start(tls_port, &server.cert, &server.key, sip_port, Some(&clients.ca_file));
    let target = format!("sips:verify@127.0.0.1:{tls_port}");
    let (report, stderr) = pound_call(
        &target,
        &["--tls-ca", arg(&trunk.ca_file), "--tls-cert", arg(&client.cert), "--tls-key", arg(&client.key)],
    );
    assert_eq!(report["outcome"], "verified", "report: {report}\npound stderr:\n{stderr}");
    assert_eq!(sipp_successes(sipp, &screen), 1);
    assert!(front.log().contains("accepting connection"), "{}", front.log());
}

#[test]
fn baresip_answers_over_tls_and_its_pound_key_verifies() {
    if !Baresip::available("baresip_answers_over_tls_and_its_pound_key_verifies") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "callee");
    let certificate = pki.issue("baresip", &["127.0.0.1"]);
    let baresip = Baresip::start_tls_callee(dir.path(), &certificate.combined, &pki.ca_file, "");
    let target = baresip.sips_uri("callee");
    let caller = std::thread::spawn(move || pound_call(&target, &["--tls-ca", arg(&pki.ca_file)]));
    assert!(baresip.wait_for("Call established", Duration::from_secs(20)), "no call:\n{}", baresip.log());
    baresip.press("#");
    let (report, stderr) = caller.join().unwrap();
    assert_eq!(report["outcome"], "verified", "report: {report}\npound stderr:\n{stderr}\nbaresip:\n{}", baresip.log());
    assert_eq!((report["dtmf_source"].as_str(), report["sip_status"].as_u64()), (Some("rfc4733"), Some(200)));
}

/// `pound serve` with `sip.transport = "tls"` and `sip.tls_ca`: the
/// verification's call goes over TLS to a `pound phone` listening on TLS.
#[tokio::test]
async fn pound_serve_verifies_through_a_tls_trunk() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "trunk");
    let cert = pki.issue("trunk", &["127.0.0.1"]);
    let (_phone, uri) = phone(&["--transport", "tls", "--tls-cert", arg(&cert.cert), "--tls-key", arg(&cert.key)]);
    let config = format!("[sip]\ntransport = \"tls\"\ntls_ca = {:?}\n", arg(&pki.ca_file));
    let key = "tls-serve-key";
    let (_serve, api) = serve_with_config(dir.path(), &uri.replacen("sip:", "sips:", 1), &config, key);
    let client = reqwest::Client::new();
    let id = submit(&client, &api, key, "+14155550123").await;
    let record = wait_for(&client, &api, key, &id, "completed").await;
    assert_eq!(record["outcome"], "verified", "{record}");
    assert_eq!(record["attempts"][0]["sip_status"], 200, "{record}");
}

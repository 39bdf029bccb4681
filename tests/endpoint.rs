//! One SIP endpoint per node (issue 9): every call, the trunk watch and the
//! endpoint's own answers share one socket; each message reaches the call it
//! belongs to and no other; strays are answered 481 and a trunk's OPTIONS 200.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::http::{get_json, submit, wait_for};
use common::process::{pound, start};
use pound::net::{Delivery, Endpoint, SipHandle};
use pound::sip::frame::frame_len;
use pound::sip::{Message, Method, Timers, TransactionEvent};
use pound::vocab::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const KEY: &str = "endpoint-test-key";
const CALLS: usize = 20;

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A request as a peer writes it; `to_tag` puts it inside a dialog.
fn request(method: Method, call_id: &str, branch: &str, from_tag: &str, to_tag: Option<&str>) -> Message {
    let to = match to_tag {
        Some(tag) => format!("<sip:pound@127.0.0.1>;tag={tag}"),
        None => "<sip:pound@127.0.0.1>".to_string(),
    };
    Message::request(method.clone(), "sip:pound@127.0.0.1")
        .with_header("Via", format!("SIP/2.0/UDP 127.0.0.1:9;branch={branch};rport"))
        .with_header("Max-Forwards", "70")
        .with_header("From", format!("<sip:peer@127.0.0.1>;tag={from_tag}"))
        .with_header("To", to)
        .with_header("Call-ID", call_id)
        .with_header("CSeq", format!("1 {}", method.as_str()))
}

/// The next SIP message on `socket`, if one comes within `wait`.
async fn receive(socket: &UdpSocket, wait: Duration) -> Option<(Message, SocketAddr)> {
    let mut buffer = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(wait, socket.recv_from(&mut buffer)).await.ok()?.ok()?;
    Some((Message::parse(&buffer[..n]).expect("pound sends well-formed SIP"), from))
}

/// Sends `message` from `socket` to `to` and returns the answer's status.
async fn ask(socket: &UdpSocket, to: SocketAddr, message: &Message) -> Option<u16> {
    socket.send_to(&message.to_bytes(), to).await.unwrap();
    receive(socket, Duration::from_secs(2)).await.and_then(|(answer, _)| answer.status())
}

/// The next message for `handle`, if one comes within 300 ms: a request, or
/// a response its transaction passed up.
async fn delivered(handle: &mut SipHandle) -> Option<Message> {
    match tokio::time::timeout(Duration::from_millis(300), handle.recv()).await.ok().flatten()? {
        Delivery::Message(incoming) => Some(incoming.message),
        Delivery::Transaction(_, TransactionEvent::Provisional(response) | TransactionEvent::Final(response)) => {
            Some(response)
        }
        Delivery::Transaction(key, event) => panic!("{key:?}: {event:?}"),
    }
}

fn options_ping(n: usize) -> Message {
    request(Method::Options, &format!("ping-{n}@trunk"), &format!("z9hG4bKping{n}"), "trunk", None)
}

/// A config for 20 calls at once from one node; the trunk watch is off
/// because sipp takes its OPTIONS for calls (tests/PEERS.md).
fn config(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("pound.toml");
    std::fs::write(
        &file,
        "[trunk]\ncalls_per_second = 50.0\noptions_interval_s = 0\n\n[engine]\nmax_concurrent_calls = 32\n\n\
         [policy]\nbreaker_numbers = 100\nmax_per_prefix_per_hour = 100\n",
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_verifications_share_one_fixed_sip_port_and_the_trunks_options_are_answered() {
    assert!(Command::new("sipp").arg("-v").output().is_ok(), "sipp is not installed: apt-get install -y sip-tester");
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (trunk_port, media, control, sip_port) =
        (free_port(), pound::cmd::bench::sipp_media_port().unwrap(), free_port(), free_port());
    let messages = dir.path().join("messages.log");
    let mut sipp = Command::new("sipp")
        .arg("-sf")
        .arg(root.join("tests/sipp/rfc4733-pound.xml"))
        .args(["-i", "127.0.0.1", "-p", &trunk_port.to_string(), "-mp", &media.to_string()])
        .args(["-cp", &control.to_string(), "-ci", "127.0.0.1", "-m", &CALLS.to_string(), "-l", "40"])
        .args(["-timeout", "90", "-timeout_error", "-nostdin", "-trace_msg", "-message_file"])
        .arg(&messages)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp starts");
    let pound_sip = SocketAddr::from(([127, 0, 0, 1], sip_port));
    let mut command = pound();
    command
        .args(["serve", "--config"])
        .arg(config(dir.path()))
        .args(["--store", &format!("sqlite://{}", dir.path().join("pound.db").display())])
        .args(["--trunk", &format!("sip:127.0.0.1:{trunk_port}"), "--api-bind", "127.0.0.1:0"])
        .args(["--sip-bind", &pound_sip.to_string(), "--api-key", KEY]);
    let (_serve, ready) = start(command);
    assert_eq!(ready["sip"], pound_sip.to_string(), "{ready}");
    let api = format!("http://{}", ready["api"].as_str().unwrap());
    let trunk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Before any call: the port listens, and answers the trunk's keep-alive.
    assert_eq!(ask(&trunk, pound_sip, &options_ping(0)).await, Some(200));
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..CALLS {
        ids.push(submit(&client, &api, KEY, &format!("+1415555{:04}", 100 + n)).await);
    }
    // The first call answered: it is decided at once (sipp presses # on the
    // ACK) but goes on through the confirmation prompt and BYE.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while get_json(&client, &format!("{api}/v1/verifications/{}", ids[0]), KEY).await["attempts"][0]["answered_at"]
        .is_null()
    {
        assert!(std::time::Instant::now() < deadline, "the first call was never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While calls run: keep-alives answered, strays refused.
    assert_eq!(ask(&trunk, pound_sip, &options_ping(1)).await, Some(200));
    let stray_bye = request(Method::Bye, "no-such-call@trunk", "z9hG4bKstray", "trunk", Some("pound-tag"));
    assert_eq!(ask(&trunk, pound_sip, &stray_bye).await, Some(481));
    let mut outcomes = Vec::new();
    for id in &ids {
        let record = wait_for(&client, &api, KEY, id, "completed").await;
        outcomes.push(record["outcome"].as_str().unwrap_or_default().to_string());
    }
    // After the calls: still listening, still answering.
    assert_eq!(ask(&trunk, pound_sip, &options_ping(2)).await, Some(200));
    let sipp = tokio::task::spawn_blocking(move || {
        let status = sipp.wait().unwrap();
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(sipp.stderr.as_mut().unwrap(), &mut stderr);
        (status, stderr)
    })
    .await
    .unwrap();
    assert_eq!(outcomes, vec!["verified"; CALLS], "every call verified");
    assert!(sipp.0.success(), "sipp counted a failure: {}", sipp.1);
    // Every INVITE came from the one fixed port.
    let log = std::fs::read_to_string(&messages).unwrap();
    let sent_by = format!("Via: SIP/2.0/UDP {pound_sip};branch=");
    let invites: Vec<&str> = log.split("INVITE sip:").skip(1).collect();
    assert_eq!(invites.len(), CALLS, "one INVITE per call reached sipp");
    assert!(invites.iter().all(|invite| invite.contains(&sent_by)), "an INVITE not from {pound_sip}");
}

#[tokio::test]
async fn strays_are_answered_481_and_nothing_leaks_between_calls() {
    let endpoint = Endpoint::bind(addr("127.0.0.1:0"), false).await.unwrap();
    let pound_sip = endpoint.local_addr();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_address = peer.local_addr().unwrap();
    let (mut a, mut b) = (
        endpoint.handle(Transport::Udp, None, Timers::default()).unwrap(),
        endpoint.handle(Transport::Udp, None, Timers::default()).unwrap(),
    );
    let invite_a = request(Method::Invite, "call-a", "z9hG4bKa", "tag-a", None);
    let invite_b = request(Method::Invite, "call-b", "z9hG4bKb", "tag-b", None);
    a.send(&invite_a, peer_address).await.unwrap();
    b.send(&invite_b, peer_address).await.unwrap();
    for _ in 0..2 {
        let (_, from) = receive(&peer, Duration::from_secs(2)).await.expect("both INVITEs arrive");
        assert_eq!(from, pound_sip, "both calls send from the one endpoint");
    }
    // Each call gets the answer to its own INVITE, and only that.
    for invite in [&invite_b, &invite_a] {
        peer.send_to(&Message::response_to(invite, 200, Some("callee")).to_bytes(), pound_sip).await.unwrap();
    }
    assert_eq!(delivered(&mut a).await.and_then(|m| m.call_id().map(String::from)).as_deref(), Some("call-a"));
    assert_eq!(delivered(&mut b).await.and_then(|m| m.call_id().map(String::from)).as_deref(), Some("call-b"));
    assert!(delivered(&mut a).await.is_none() && delivered(&mut b).await.is_none(), "one answer each");
    // The callee's BYE in dialog A reaches A only.
    let bye_a = request(Method::Bye, "call-a", "z9hG4bKbye", "callee", Some("tag-a"));
    peer.send_to(&bye_a.to_bytes(), pound_sip).await.unwrap();
    assert_eq!(delivered(&mut a).await.and_then(|m| m.method().cloned()), Some(Method::Bye));
    assert!(delivered(&mut b).await.is_none(), "B heard A's BYE");
    // A response with a branch nobody sent reaches nobody and is not answered.
    let unknown = Message::response_to(&request(Method::Invite, "call-a", "z9hG4bKx", "tag-a", None), 200, None);
    peer.send_to(&unknown.to_bytes(), pound_sip).await.unwrap();
    assert!(delivered(&mut a).await.is_none() && delivered(&mut b).await.is_none());
    assert!(receive(&peer, Duration::from_millis(300)).await.is_none(), "a stray response was answered");
    // Requests for no call are refused.
    for method in [Method::Bye, Method::Info] {
        let stray = request(method.clone(), "call-unknown", "z9hG4bKs", "x", Some("y"));
        assert_eq!(ask(&peer, pound_sip, &stray).await, Some(481), "{method:?}");
    }
    // A call that ended hears nothing more: its dialog's requests are strays now.
    drop(a);
    assert_eq!(ask(&peer, pound_sip, &bye_a).await, Some(481));
    let bye_b = request(Method::Bye, "call-b", "z9hG4bKbyeb", "callee", Some("tag-b"));
    peer.send_to(&bye_b.to_bytes(), pound_sip).await.unwrap();
    assert_eq!(delivered(&mut b).await.and_then(|m| m.method().cloned()), Some(Method::Bye));
}

/// Reads whole SIP messages from a TCP stream.
struct Framed {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Framed {
    async fn next(&mut self) -> Message {
        loop {
            if let Some(len) = frame_len(&self.buffer).unwrap() {
                let frame: Vec<u8> = self.buffer.drain(..len).collect();
                return Message::parse(&frame).unwrap();
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(2), self.stream.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "the connection closed");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

#[tokio::test]
async fn calls_over_tcp_share_one_listener_and_one_connection_per_peer() {
    let endpoint = Endpoint::bind(addr("127.0.0.1:0"), true).await.unwrap();
    let trunk = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trunk_address = trunk.local_addr().unwrap();
    let mut handles: Vec<SipHandle> =
        (0..3).map(|_| endpoint.handle(Transport::Tcp, None, Timers::default()).unwrap()).collect();
    let invites: Vec<Message> = (0..3)
        .map(|n| request(Method::Invite, &format!("tcp-{n}"), &format!("z9hG4bKt{n}"), &format!("t{n}"), None))
        .collect();
    // At once: the second and third must wait for the first's connection, not open their own.
    let sent = tokio::join!(
        handles[0].send(&invites[0], trunk_address),
        handles[1].send(&invites[1], trunk_address),
        handles[2].send(&invites[2], trunk_address),
    );
    for result in [sent.0, sent.1, sent.2] {
        result.unwrap();
    }
    let (stream, _) = trunk.accept().await.unwrap();
    let mut connection = Framed { stream, buffer: Vec::new() };
    let mut call_ids: Vec<String> = Vec::new();
    for _ in 0..3 {
        call_ids.push(connection.next().await.call_id().unwrap().to_string());
    }
    call_ids.sort();
    assert_eq!(call_ids, ["tcp-0", "tcp-1", "tcp-2"], "every INVITE on the one connection");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), trunk.accept()).await.is_err(),
        "a second connection was opened to the same peer"
    );
    // Answers come back on that connection, each to its own call.
    for invite in invites.iter().rev() {
        connection.stream.write_all(&Message::response_to(invite, 200, Some("c")).to_bytes()).await.unwrap();
    }
    for (n, handle) in handles.iter_mut().enumerate() {
        let answer = delivered(handle).await.expect("the answer is delivered");
        assert_eq!(answer.call_id(), Some(format!("tcp-{n}").as_str()));
    }
    // The same port listens for TCP: a trunk's OPTIONS over TCP is answered on its connection.
    let stream = TcpStream::connect(endpoint.local_addr()).await.unwrap();
    let mut inbound = Framed { stream, buffer: Vec::new() };
    inbound.stream.write_all(&options_ping(7).to_bytes()).await.unwrap();
    assert_eq!(inbound.next().await.status(), Some(200));
}

/// The peer's next message, which must come.
async fn next_from_pound(peer: &UdpSocket) -> Message {
    receive(peer, Duration::from_secs(2)).await.expect("pound answers").0
}

#[tokio::test]
async fn a_retransmitted_bye_gets_the_cached_200_after_the_call_is_gone() {
    let endpoint = Endpoint::bind(addr("127.0.0.1:0"), false).await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut call = endpoint.handle(Transport::Udp, None, Timers::default()).unwrap();
    call.send(&request(Method::Invite, "call-1", "z9hG4bKinv", "ours", None), peer_addr).await.unwrap();
    let invite = next_from_pound(&peer).await;
    // Ringing: the INVITE is not retransmitted any more.
    peer.send_to(&Message::response_to(&invite, 180, Some("theirs")).to_bytes(), endpoint.local_addr()).await.unwrap();
    assert_eq!(delivered(&mut call).await.and_then(|m| m.status()), Some(180));
    // The callee hangs up; the call answers 200 and is over.
    let bye = request(Method::Bye, "call-1", "z9hG4bKbye", "theirs", Some("ours"));
    peer.send_to(&bye.to_bytes(), endpoint.local_addr()).await.unwrap();
    let received = delivered(&mut call).await.expect("the BYE reaches its call");
    call.send(&Message::response_to(&received, 200, None), peer_addr).await.unwrap();
    let first = next_from_pound(&peer).await;
    assert_eq!(first.status(), Some(200));
    drop(call);
    // The 200 was lost: the callee retransmits, and gets the same 200, not a 481.
    peer.send_to(&bye.to_bytes(), endpoint.local_addr()).await.unwrap();
    assert_eq!(next_from_pound(&peer).await.to_bytes(), first.to_bytes());
    // A new request in the dialog that is gone is still stray.
    let info = request(Method::Info, "call-1", "z9hG4bKinfo", "theirs", Some("ours"));
    assert_eq!(ask(&peer, endpoint.local_addr(), &info).await, Some(481));
}

#[tokio::test]
async fn a_cancel_is_matched_to_its_invite_and_answered_200_once_the_invite_has_its_answer() {
    let endpoint = Endpoint::bind(addr("127.0.0.1:0"), false).await.unwrap();
    let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut uas = endpoint.catch_all(Transport::Udp, Timers::default()).unwrap();
    let invite = request(Method::Invite, "in-1", "z9hG4bKin1", "caller", None);
    caller.send_to(&invite.to_bytes(), endpoint.local_addr()).await.unwrap();
    let received = delivered(&mut uas).await.expect("the INVITE reaches the UAS");
    uas.send(&Message::response_to(&received, 486, Some("uas")), caller.local_addr().unwrap()).await.unwrap();
    let busy = next_from_pound(&caller).await;
    assert_eq!(busy.status(), Some(486));
    // The INVITE retransmitted and a late CANCEL: the endpoint answers both itself.
    caller.send_to(&invite.to_bytes(), endpoint.local_addr()).await.unwrap();
    assert_eq!(next_from_pound(&caller).await.to_bytes(), busy.to_bytes());
    let cancel = request(Method::Cancel, "in-1", "z9hG4bKin1", "caller", None);
    caller.send_to(&cancel.to_bytes(), endpoint.local_addr()).await.unwrap();
    let answer = next_from_pound(&caller).await;
    assert_eq!((answer.status(), answer.to_tag().as_deref()), (Some(200), Some("uas")));
    assert!(delivered(&mut uas).await.is_none(), "the UAS hears neither");
    // A CANCEL of an INVITE nobody got: 481.
    let unknown = request(Method::Cancel, "in-2", "z9hG4bKnever", "caller", None);
    assert_eq!(ask(&caller, endpoint.local_addr(), &unknown).await, Some(481));
}

/// Timers short enough for a test on real sockets: T1 = 100 ms, so a
/// request goes out at 0, 0.1, 0.3, 0.7 s…
fn quick() -> Timers {
    Timers { t1: Duration::from_millis(100), t2: Duration::from_millis(800), t4: Duration::from_millis(500) }
}

/// Every message `peer` receives within `wait`.
async fn all_received(peer: &UdpSocket, wait: Duration) -> Vec<Message> {
    let until = tokio::time::Instant::now() + wait;
    let mut received = Vec::new();
    while let Some((message, _)) = receive(peer, until.saturating_duration_since(tokio::time::Instant::now())).await {
        received.push(message);
    }
    received
}

/// A handle on a fresh endpoint that has sent `request` to a fresh peer, on [`quick`] timers.
async fn sent_to_a_peer(request: &Message) -> (Endpoint, SipHandle, UdpSocket) {
    let endpoint = Endpoint::bind(addr("127.0.0.1:0"), false).await.unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let handle = endpoint.handle(Transport::Udp, None, quick()).unwrap();
    handle.send(request, peer.local_addr().unwrap()).await.unwrap();
    (endpoint, handle, peer)
}

#[tokio::test]
async fn the_endpoint_retransmits_a_request_until_its_answer_and_the_handle_hears_the_answer_once() {
    let options = request(Method::Options, "live-1", "z9hG4bKlive", "ours", None);
    let (endpoint, mut call, peer) = sent_to_a_peer(&options).await;
    // Timer E: at 0, 100 and 300 ms, the same bytes each time, and nobody else sends them.
    let received = all_received(&peer, Duration::from_millis(500)).await;
    assert_eq!(received.len(), 3, "{received:?}");
    assert!(received.iter().all(|m| m.to_bytes() == options.to_bytes()));
    let ok = Message::response_to(&options, 200, Some("theirs"));
    for _ in 0..2 {
        peer.send_to(&ok.to_bytes(), endpoint.local_addr()).await.unwrap();
    }
    assert_eq!(delivered(&mut call).await.and_then(|m| m.status()), Some(200));
    assert!(delivered(&mut call).await.is_none(), "the retransmitted 200 is absorbed");
    assert!(all_received(&peer, Duration::from_millis(1000)).await.is_empty(), "answered: nothing more goes out");
}

#[tokio::test]
async fn a_dropped_calls_bye_is_retransmitted_by_the_endpoint_until_answered() {
    let bye = request(Method::Bye, "gone-1", "z9hG4bKbye1", "ours", Some("theirs"));
    let (endpoint, call, peer) = sent_to_a_peer(&bye).await;
    drop(call);
    let received = all_received(&peer, Duration::from_millis(500)).await;
    assert_eq!(received.len(), 3, "the BYE at 0, 100 and 300 ms: {received:?}");
    peer.send_to(&Message::response_to(&bye, 200, None).to_bytes(), endpoint.local_addr()).await.unwrap();
    assert!(all_received(&peer, Duration::from_millis(1000)).await.is_empty(), "answered: nothing more goes out");
}

#[tokio::test]
async fn timer_b_reaches_the_handle_as_an_event() {
    let invite = request(Method::Invite, "lost-1", "z9hG4bKlost1", "ours", None);
    let (_endpoint, mut call, peer) = sent_to_a_peer(&invite).await;
    // 64·T1 = 6.4 s.
    let event = tokio::time::timeout(Duration::from_secs(10), call.recv()).await.expect("timer B fires");
    let Some(Delivery::Transaction(key, TransactionEvent::Timeout)) = event else { panic!("{event:?}") };
    assert_eq!((key.branch.as_str(), key.method), ("z9hG4bKlost1", Method::Invite));
    // At 0, 0.1, 0.3, 0.7, 1.5, 3.1 and 6.3 s; on a busy machine the timer task
    // may wake for the last only at 6.4 s, when timer B has the say.
    let sent = all_received(&peer, Duration::from_millis(100)).await.len();
    assert!((6..=7).contains(&sent), "{sent} INVITEs");
}

/// The kernel hands out ephemeral UDP and TCP ports independently, so the
/// TCP twin of the UDP port an endpoint got may belong to someone else (CI
/// once failed `pound call --transport tcp` with "Address already in use").
/// With a few hundred TCP ports held, nearly every run of the old code hit
/// one among these binds; each must still come up listening on both.
#[tokio::test]
async fn an_ephemeral_port_whose_tcp_twin_is_taken_is_traded_for_another() {
    let held: Vec<std::net::TcpListener> =
        (0..800).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let held_ports: std::collections::HashSet<u16> = held.iter().map(|l| l.local_addr().unwrap().port()).collect();
    for _ in 0..300 {
        let endpoint = Endpoint::bind(addr("127.0.0.1:0"), true).await.expect("an ephemeral pair is always found");
        let local = endpoint.local_addr();
        assert!(!held_ports.contains(&local.port()), "{local} is a held TCP port");
        TcpStream::connect(local).await.expect("the endpoint listens for TCP on its UDP port");
    }
}

#[tokio::test]
async fn a_fixed_port_whose_tcp_twin_is_taken_is_an_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let error = Endpoint::bind(SocketAddr::from(([127, 0, 0, 1], port)), true).await.unwrap_err();
    assert!(error.to_string().contains("in use"), "{error}");
}

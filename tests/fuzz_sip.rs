//! Property tests of everything that reads SIP from the network: whole messages (UDP datagrams and
//! TCP frames), TCP framing, digest challenges, and what pound reads out of a parsed message
//! (headers, INFO digits, the SDP body). Inputs are the fixtures in `fixtures/sip/` and a few
//! messages below, mutated; see `tests/fuzz_support` for the harness and its knobs.

mod fuzz_support;

use fuzz_support::{CountingAllocator, Rng, Target, files, mutate_once};
use pound::call::info_digit;
use pound::sip::auth::{authorize, challenges};
use pound::sip::frame::frame_len;
use pound::sip::{Challenge, Credentials, MAX_MESSAGE_BYTES, Message, Method, NameAddr};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Messages the fixtures lack: compact forms, an INFO digit, a REGISTER answer, an extension method.
const EXTRA_SEEDS: &[&str] = &[
    "INFO sip:pound@192.0.2.10:5060 SIP/2.0\r\nv: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKinfo\r\n\
     f: <sip:+14155550100@trunk.example.net>;tag=a6c85cf\r\nt: <sip:verify@pound.example.com>;tag=1928301774\r\n\
     i: a84b4c76e66710@192.0.2.10\r\nCSeq: 2 INFO\r\nc: application/dtmf-relay\r\nl: 24\r\n\r\nSignal=#\r\nDuration=160\r\n",
    "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKreg;rport=5061;received=2001:db8::9\r\n\
     From: <sip:pound@trunk.example.net>;tag=r1\r\nTo: <sip:pound@trunk.example.net>;tag=r2\r\nCall-ID: reg-1\r\n\
     CSeq: 7 REGISTER\r\nContact: <sip:pound@192.0.2.10:5060>;expires=3600\r\nExpires: 3600\r\n\
     Retry-After: 120\r\nSession-Expires: 1800;refresher=uac\r\nContent-Length: 0\r\n\r\n",
    "FROBNICATE sip:gw@198.51.100.7 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bKx\r\nFrom: \"A \\\"B\\\"\" <sip:a@b>;tag=1\r\n\
     To: c <sip:c@d>\r\nCall-ID: ext\r\nCSeq: 9 FROBNICATE\r\nRecord-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
     Content-Length: 0\r\n\r\n",
];

/// Headers pound reads; each must read the same after a message is written back.
const READ_HEADERS: [&str; 14] = [
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Contact",
    "Record-Route",
    "Content-Type",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Expires",
    "Retry-After",
    "Session-Expires",
    "Allow",
];

fn sip_seeds() -> Vec<Vec<u8>> {
    let mut seeds = files("fixtures/sip", ".sip");
    seeds.extend(EXTRA_SEEDS.iter().map(|seed| seed.as_bytes().to_vec()));
    seeds
}

/// What identifies a message (method, URI, status, Call-ID, CSeq), for comparing two readings.
fn summary(message: &Message) -> String {
    format!("{:?}", (message.method(), message.uri(), message.status(), message.call_id(), message.cseq()))
}

/// Pieces of header values where two readers of the grammar are likeliest to part ways: quoting,
/// escapes, brackets, parameters, list commas, IPv6 references, folds.
const VALUE_PIECES: &[&str] = &[
    "<sip:a@b>",
    "<sip:+14155550100;npdi@[2001:db8::1]:5060;transport=tcp>",
    "sip:c@d",
    "\"A \\\"q\\\" <x>\" ",
    "Bob ",
    ";tag=t1",
    ";lr",
    ";p=\"a;b,c\"",
    ";+sip.instance=\"<urn:uuid:1>\"",
    ", ",
    ",",
    " ",
    "\t",
    "\r\n ",
    "\r\n\t",
    "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport",
    "SIP / 2.0 / TCP [::1]",
    "1 INVITE",
    "4294967296 BYE",
    "0",
    "*",
    "\"",
    "<",
    ">",
    "=",
    "%00",
    "é",
];

/// Header names, long and compact, in odd case and spacing.
const NAMES: &[&str] = &[
    "Via",
    "v",
    "From",
    "f",
    "To",
    "t",
    "Call-ID",
    "i",
    "CSeq",
    "Contact",
    "m",
    "Record-Route",
    "Content-Length",
    "l",
    "content-length ",
    "Content-Type",
    "c",
    "WWW-Authenticate",
    "Expires",
    "X-Odd",
    "Allow",
];

/// A message built from the SIP grammar's pieces: a start line, 5 to 15 headers (the mandatory ones
/// usually there), a Content-Length that may or may not match, a body.
fn grammar_message(rng: &mut Rng) -> Vec<u8> {
    let start = *rng.pick(&[
        "INVITE sip:+14155550100@trunk.example.net SIP/2.0",
        "BYE sip:a@[2001:db8::1]:5070;transport=tcp SIP/2.0",
        "FROBNICATE sip:x@y SIP/2.0",
        "SIP/2.0 200 OK",
        "SIP/2.0 401 Unauthorized",
        "SIP/2.0 183",
    ]);
    let mut out = format!("{start}\r\n");
    let mandatory = [
        ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKg"),
        ("From", "<sip:a@b>;tag=1"),
        ("To", "<sip:c@d>"),
        ("Call-ID", "g1"),
        ("CSeq", "1 INVITE"),
    ];
    for (name, value) in mandatory {
        if !rng.one_in(8) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for _ in 0..rng.below(10) {
        let name = rng.pick(NAMES);
        let value: String = (0..rng.below(6)).map(|_| *rng.pick(VALUE_PIECES)).collect();
        out.push_str(&format!("{name}:{value}\r\n"));
    }
    let body = rng.pick(&["", "v=0\r\n", "Signal=#\r\nDuration=160\r\n"]);
    match rng.below(3) {
        0 => out.push_str(&format!("Content-Length: {}\r\n", body.len())),
        1 => out.push_str(&format!("l: {}\r\n", rng.below(40))),
        _ => {}
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

#[test]
fn sip_messages_never_panic_and_what_parses_writes_back_the_same() {
    let summary_of_run = Target::new("sip_message", sip_seeds()).run_with(
        |rng, seeds| if rng.one_in(3) { grammar_message(rng) } else { fuzz_support::mutated(rng, seeds) },
        |bytes| {
            let Ok(message) = Message::parse(bytes) else { return };
            // The parse contract: what is accepted has every header a transaction and a dialog
            // need, readable.
            assert!(message.top_via().is_some() && message.from().is_some() && message.to().is_some());
            assert!(message.cseq().is_some() && message.call_id().is_some_and(|id| !id.trim().is_empty()));
            // Everything pound reads from a message it accepted.
            let _ = (message.from_tag(), message.to_tag(), message.top_via());
            let _ = (message.record_route(), message.header_values("Allow"));
            // A name-addr pound read and writes again (To with its tag, Contact as a target) reads
            // back the same.
            for name_addr in [message.from(), message.to(), message.contact()].into_iter().flatten() {
                let written = name_addr.to_string_value();
                let back =
                    NameAddr::parse(&written).unwrap_or_else(|err| panic!("{err}: {written:?} from {name_addr:?}"));
                assert_eq!(back, name_addr, "{written:?}");
            }
            let _ = (challenges(&message), info_digit(&message));
            if let Ok(body) = std::str::from_utf8(message.body()) {
                let _ = pound::sdp::parse_offer(body);
            }

            let written = message.to_bytes();
            // Long names and a computed Content-Length can take a message that was just under the
            // limit over it; then it must be refused as too large, not misread.
            if written.len() > MAX_MESSAGE_BYTES {
                assert!(matches!(Message::parse(&written), Err(pound::sip::SipError::TooLarge)));
                return;
            }
            let reread = Message::parse(&written)
                .unwrap_or_else(|err| panic!("{err} on rereading {}", String::from_utf8_lossy(&written)));
            assert_eq!(reread.to_bytes(), written, "writing is not a fixed point");
            assert_eq!(summary(&reread), summary(&message));
            assert_eq!(reread.body(), message.body());
            for name in READ_HEADERS {
                assert_eq!(reread.header_values(name), message.header_values(name), "{name}");
            }
            // What we write is one TCP frame, exactly.
            assert_eq!(frame_len(&written).unwrap(), Some(written.len()));

            // The same bytes over TCP frame into the same message: the datagram and the stream
            // readings never disagree on where the body ends (no smuggling between them).
            if message.header("Content-Length").is_some() {
                let framed = match frame_len(bytes) {
                    Ok(Some(len)) => &bytes[..len],
                    other => panic!("accepted as a datagram, framed over TCP as {other:?}"),
                };
                let over_tcp = Message::parse(framed).unwrap_or_else(|err| panic!("{err} on the TCP frame"));
                assert_eq!(over_tcp.to_bytes(), written);
            }

            // pound can always answer a request it accepted (481, 405…), and the answer is readable.
            if message.is_request() {
                let response = Message::response_to(&message, 481, Some("fz1"));
                let bytes = response.to_bytes();
                let back = Message::parse(&bytes)
                    .unwrap_or_else(|err| panic!("{err} on our answer {}", String::from_utf8_lossy(&bytes)));
                assert_eq!(back.status(), Some(481));
                assert_eq!(back.call_id(), message.call_id());
            }
        },
    );
    summary_of_run.assert_ran(100);
}

/// Cuts `stream` into frames the way the TCP reader does, as the bytes arrive in `chunks`; returns
/// the message frames (keep-alives dropped: they may be cut differently) and whether framing ended
/// in an error.
fn frames(stream: &[u8], chunks: &[usize]) -> (Vec<Vec<u8>>, bool) {
    let mut buffer = Vec::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().copied().chain(std::iter::repeat(usize::MAX));
    while fed < stream.len() {
        let take = sizes.next().unwrap().clamp(1, stream.len() - fed);
        buffer.extend_from_slice(&stream[fed..fed + take]);
        fed += take;
        loop {
            match frame_len(&buffer) {
                Ok(None) => break,
                Ok(Some(len)) => {
                    assert!(len > 0 && len <= buffer.len(), "frame of {len} from a buffer of {}", buffer.len());
                    let frame: Vec<u8> = buffer.drain(..len).collect();
                    assert!(frame.len() <= MAX_MESSAGE_BYTES);
                    if !frame.iter().all(|&b| b == b'\r' || b == b'\n') {
                        out.push(frame);
                    }
                }
                Err(_) => return (out, true),
            }
        }
        // The reader never holds more than one message's worth waiting for its end.
        assert!(buffer.len() < MAX_MESSAGE_BYTES, "{} bytes buffered", buffer.len());
    }
    (out, false)
}

#[test]
fn tcp_framing_cuts_the_same_frames_however_the_bytes_arrive() {
    let seeds = sip_seeds();
    let summary = Target::new("sip_frame", seeds.clone()).run_with(
        |rng, seeds| {
            // A stream of one to four messages and keep-alives, some mutated.
            let mut stream = Vec::new();
            for _ in 0..1 + rng.below(4) {
                if rng.one_in(3) {
                    stream.extend_from_slice(if rng.one_in(2) { b"\r\n" } else { b"\r\n\r\n" });
                }
                let mut message = rng.pick(seeds).clone();
                for _ in 0..rng.below(3) {
                    mutate_once(rng, &mut message, seeds);
                }
                stream.extend_from_slice(&message);
            }
            stream
        },
        |stream| {
            let whole = frames(stream, &[]);
            // Chunk sizes derived from the input, so that a saved input replays the same way.
            let mut rng = Rng::new(stream.len() as u64);
            let chunks: Vec<usize> = (0..64).map(|_| 1 + rng.below(700)).collect();
            let piecewise = frames(stream, &chunks);
            assert_eq!(whole, piecewise, "framing depends on how the bytes arrive");
            for frame in &whole.0 {
                let _ = Message::parse(frame);
            }
        },
    );
    summary.assert_ran(100);
    // The unmutated fixtures, back to back, come apart exactly.
    let stream: Vec<u8> = seeds.iter().flat_map(|seed| [b"\r\n".to_vec(), seed.clone()]).flatten().collect();
    assert_eq!(frames(&stream, &[3, 50, 1, 700]), (seeds, false));
}

/// Challenge header values from the fixtures (unfolded) and the RFCs.
fn challenge_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = files("fixtures/sip", ".sip")
        .iter()
        .flat_map(|bytes| {
            let text = String::from_utf8_lossy(bytes).replace("\r\n ", " ");
            text.lines()
                .filter_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    ["WWW-Authenticate", "Proxy-Authenticate"].contains(&name).then(|| value.trim().as_bytes().to_vec())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    seeds.push(
        br#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#
            .to_vec(),
    );
    seeds.push(br#"digest NONCE=abc123 , Realm="a \"quoted\" realm",stale=TRUE,Algorithm=sha-256-SESS"#.to_vec());
    seeds
}

#[test]
fn digest_challenges_never_panic_and_our_answer_reads_back_as_the_challenge() {
    let seeds = challenge_seeds();
    assert!(seeds.len() >= 5, "{} seeds", seeds.len());
    let credentials = Credentials { user: "pound\"\\".into(), password: "secret".into() };
    let summary = Target::new("sip_auth", seeds).run(|bytes| {
        let text = String::from_utf8_lossy(bytes);
        let Ok(challenge) = Challenge::parse(&text) else { return };
        let answer =
            authorize(&challenge, &credentials, &Method::Invite, "sip:+14155550100@trunk.example.net", "c1", 1);
        assert!(!answer.contains(['\r', '\n']), "a line break in {answer:?}");
        // Line breaks are sent as spaces (the value is hashed unchanged), so only values without
        // them come back unchanged.
        let fields = [Some(&challenge.realm), Some(&challenge.nonce), challenge.opaque.as_ref()];
        if fields.into_iter().flatten().any(|value| value.contains(['\r', '\n'])) {
            return;
        }
        let back = Challenge::parse(&answer).unwrap_or_else(|err| panic!("{err}: our answer {answer:?}"));
        assert_eq!(
            (back.realm, back.nonce, back.opaque, back.algorithm, back.qop_auth),
            (challenge.realm, challenge.nonce, challenge.opaque, challenge.algorithm, challenge.qop_auth)
        );
    });
    summary.assert_ran(100);
}

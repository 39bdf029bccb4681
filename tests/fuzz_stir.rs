//! Property test of STIR/SHAKEN signing (issue 13): whatever certificate URL and numbers are
//! configured or dialled, the signer either refuses them with an error or produces an `Identity`
//! header that survives a SIP message's writing and parsing unchanged and has exactly the
//! grammar of RFC 8224 §4.1 (three base64url segments, then `info=<x5u>;alg=ES256;ppt=shaken`),
//! with the canonical numbers and the URL inside. Inputs: `x5u`, caller and callee, one a line,
//! mutated; see `tests/fuzz_support` for the harness and its knobs.

mod fuzz_support;

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fuzz_support::{CountingAllocator, Target};
use pound::sip::{Message, Method};
use pound::stir::{Attestation, CallSigner, Parties, Signer, Tn};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const SEEDS: &[&str] = &[
    "https://cert.example.org/shaken/pound.pem\n+1-415-555-0000\nsip:+14155550100@trunk.example.net;user=phone",
    "https://[2001:db8::1]:8443/c.pem?v=2&k=%41\nsip:+44.20.7946.0958@pai.example\ntel:+1(215)555-0123;ext=9",
    "https://cr.example.com/a'b(c)*!$~\n12155550100\n<sips:+4930123456;npdi@[::1]:5061>",
    "https://x\n+\n+1",
    "http://cert.example.org/c.pem\npound\nsip:verify@127.0.0.1:5070",
];

fn b64(segment: &str) -> serde_json::Value {
    let bytes = URL_SAFE_NO_PAD.decode(segment).unwrap_or_else(|e| panic!("{e}: {segment:?}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

#[test]
fn any_accepted_url_and_numbers_make_a_well_formed_identity_header() {
    let key = std::fs::read_to_string(fuzz_support::root().join("fixtures/stir/pkcs8.key.pem")).unwrap();
    let seeds = SEEDS.iter().map(|seed| seed.as_bytes().to_vec()).collect();
    // The signer's key schedule, the header and the parsed message: a few kilobytes per case.
    let summary = Target::new("stir_identity", seeds).max_heap(|len| (64 << 10) + len * 16).run(|bytes| {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.split('\n');
        let (x5u, caller, callee) =
            (lines.next().unwrap_or(""), lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        let Ok(signer) = Signer::new(&key, x5u, Attestation::A) else { return };
        let Ok(parties) = Parties::new(None, caller, callee) else {
            assert!(Tn::canonical(caller).is_none() || Tn::canonical(callee).is_none());
            return;
        };
        let identity = CallSigner::new(Arc::new(signer), parties.clone(), [9; 16]).identity(1_764_460_800);
        assert!(identity.bytes().all(|b| b.is_ascii_graphic()), "not one token of printable ASCII: {identity:?}");

        let invite = Message::request(Method::Invite, "sip:+14155550100@192.0.2.1")
            .with_header("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKstir")
            .with_header("From", "<sip:+14155550000@192.0.2.10>;tag=1")
            .with_header("To", "<sip:+14155550100@192.0.2.1>")
            .with_header("Call-ID", "c")
            .with_header("CSeq", "1 INVITE")
            .with_header("Identity", identity.clone());
        let parsed = Message::parse(&invite.to_bytes()).unwrap_or_else(|e| panic!("{e}: {identity}"));
        assert_eq!(parsed.header_values("Identity"), [identity.as_str()]);

        let (token, params) = identity.split_once(';').unwrap();
        assert_eq!(params, format!("info=<{x5u}>;alg=ES256;ppt=shaken"));
        let segments: Vec<&str> = token.split('.').collect();
        assert_eq!(segments.len(), 3, "{token}");
        assert!(
            segments
                .iter()
                .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)))
        );
        assert_eq!(b64(segments[0])["x5u"], x5u);
        let claims = b64(segments[1]);
        assert_eq!(claims["orig"]["tn"], parties.orig.as_str());
        assert_eq!(claims["dest"]["tn"][0], parties.dest.as_str());
        assert!(parties.orig.as_str().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(URL_SAFE_NO_PAD.decode(segments[2]).unwrap().len(), 64);
    });
    summary.assert_ran(100);
}

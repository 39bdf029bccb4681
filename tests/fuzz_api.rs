//! Property tests of what operators and API clients hand pound: dialplan files, and HTTP requests
//! to the API (arbitrary JSON bodies, headers and path segments) through the real router and a
//! SQLite store. See `tests/fuzz_support` for the harness and its knobs.

mod fuzz_support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use fuzz_support::{CountingAllocator, Rng, Target, files, mutated};
use pound::api::{ApiConfig, ApiState, router};
use pound::dialplan::Dialplan;
use pound::metrics::Metrics;
use serde_json::{Value, json};
use tower::ServiceExt;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn dialplan_seeds() -> Vec<Vec<u8>> {
    let mut seeds = files("dialplans", ".toml");
    seeds.push(b"prompt = \"p.wav\"\n".to_vec());
    seeds.push(
        b"prompt = 'p.wav'\nexpect = \"*1a\"\nfraud_code = \"0#\"\nretry_outcomes = []\n\
          dtmf_sources = [\"info\"]\n[unused]\nx = [[1, 2], {a = 1}]\n"
            .to_vec(),
    );
    seeds
}

#[test]
fn dialplans_never_panic_and_what_loads_is_in_range() {
    // The TOML parser holds up to ~160 bytes per byte of a file of small inline tables (within the
    // default bound); dialplans are capped at 64 KiB before they are parsed.
    let summary = Target::new("dialplan", dialplan_seeds()).run(|bytes| {
        // Dialplans are read with `read_to_string`: only UTF-8 reaches the parser.
        let Ok(text) = std::str::from_utf8(bytes) else { return };
        let Ok(plan) = Dialplan::parse("fuzz", text, Path::new("/nonexistent")) else { return };
        let keys = |code: &str| (1..=16).contains(&code.len()) && code.chars().all(|c| "0123456789*#ABCD".contains(c));
        assert!(keys(&plan.expect), "{plan:?}");
        assert!(plan.fraud_code.as_deref().is_none_or(|code| keys(code) && code != plan.expect), "{plan:?}");
        assert!((1..=10).contains(&plan.prompt_repeats) && (1..=10).contains(&plan.max_attempts), "{plan:?}");
        assert!(!plan.dtmf_sources.is_empty());
        for (timeout, most) in
            [(plan.input_timeout, 60), (plan.ring_timeout, 300), (plan.max_duration, 3_600), (plan.retry_after, 86_400)]
        {
            assert!(timeout >= Duration::from_millis(500) && timeout <= Duration::from_secs(most), "{plan:?}");
        }
        // The media timeout is off or at least a minute: silence alone is no failure.
        assert!(
            plan.media_timeout.is_none_or(|t| t >= Duration::from_secs(60) && t <= Duration::from_secs(3_600)),
            "{plan:?}"
        );
    });
    summary.assert_ran(100);
}

const KEY: &str = "fuzz-key";

/// Strings that have broken parsers of phone numbers, users and URLs.
const NASTY: &[&str] = &[
    "",
    "+14155550100",
    "+1 (415) 555-0100",
    "+441632960961",
    "+4915112345678",
    "+0",
    "+",
    "+1",
    "+999999999999999999999999",
    "+14155550100\u{0}",
    "+\u{661}\u{662}\u{663}\u{664}\u{665}\u{666}\u{667}\u{668}",
    "+1415555010\u{ff10}",
    "+882123456789",
    "alice@contoso.com",
    "\u{202e}moc.osotnoc@ecila",
    "a\u{7}b",
    "press-pound",
    "../../etc/passwd",
    "https://hooks.example.com/pound?x=1",
    "http://[::1]:8080/",
    "https://user:pw@example.com",
    "https:///x",
    "http://\u{1f600}.example/",
    "javascript:alert(1)",
    "%00",
    "\u{d7ff}\u{e000}\u{fffd}",
];

/// A create body: mostly the four fields with odd values, sometimes odd JSON around them.
fn create_body(rng: &mut Rng) -> Vec<u8> {
    let mut fields = serde_json::Map::new();
    for name in ["phone", "user", "dialplan", "callback_url", "extra"] {
        let include = match name {
            "phone" | "user" => !rng.one_in(10),
            "extra" => rng.one_in(8),
            _ => !rng.one_in(3),
        };
        if !include {
            continue;
        }
        let value = match rng.below(10) {
            _ if name == "phone" && rng.one_in(3) => {
                // Distinct valid numbers, so that creates get past the per-number cooldown.
                let area = [212, 312, 415, 604, 416][rng.below(5)];
                json!(format!("+1 {area} {} {:04}", 200 + rng.below(800), rng.below(10_000)))
            }
            // Any digits at all reach the phone number library, which has panicked on some.
            _ if name == "phone" && rng.one_in(2) => {
                let digits: String = (0..1 + rng.below(17)).map(|_| char::from(b'0' + rng.below(10) as u8)).collect();
                json!(format!("+{digits}"))
            }
            _ if name == "user" && rng.one_in(2) => json!("alice@contoso.com"),
            0 => Value::Null,
            1 => json!(rng.next_u64()),
            2 => json!([NASTY[rng.below(NASTY.len())]]),
            3 => json!({ "nested": { "deeper": true } }),
            4 => json!(NASTY[rng.below(NASTY.len())].repeat(1 + rng.below(300))),
            _ => json!(NASTY[rng.below(NASTY.len())]),
        };
        fields.insert(name.to_string(), value);
    }
    let mut body = serde_json::to_vec(&fields).unwrap();
    if rng.one_in(6) {
        // Deep nesting, a duplicate key, a lone surrogate escape, trailing data.
        let extra: &[u8] = match rng.below(4) {
            0 => b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            1 => b"{\"phone\":\"+14155550100\",\"phone\":\"+14155550101\",\"user\":\"u\"}",
            2 => b"{\"phone\":\"+14155550100\",\"user\":\"\\ud800\"}",
            _ => b" {}",
        };
        if rng.one_in(2) {
            body = extra.to_vec();
        } else {
            body.extend_from_slice(extra);
        }
    }
    body
}

/// A request script: `[flags][path segment length][segment][body]`. The flags pick the
/// Authorization header, the Content-Type and the route; the segment goes into the path and, when
/// it is a valid header value, into `Idempotency-Key` (and for one choice of flags into the key).
fn request_script(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let flags = if rng.one_in(2) { 0 } else { rng.next_u64() as u8 };
    let random_len = rng.below(40);
    let segment = if rng.one_in(2) { rng.pick(NASTY).as_bytes().to_vec() } else { rng.bytes(random_len) };
    let body = if rng.one_in(3) { mutated(rng, seeds) } else { create_body(rng) };
    let mut out = vec![flags, segment.len().min(255) as u8];
    out.extend_from_slice(&segment[..segment.len().min(255)]);
    out.extend_from_slice(&body);
    out
}

fn request(script: &[u8]) -> Request<Body> {
    let (flags, rest) = script.split_first().unwrap_or((&0, &[]));
    let (len, rest) = rest.split_first().unwrap_or((&0, &[]));
    let (segment, body) = rest.split_at(usize::from(*len).min(rest.len()));
    let escaped: String = segment.iter().map(|b| format!("%{b:02X}")).collect();
    let (method, path) = match (flags >> 4) & 3 {
        0 | 1 => (Method::POST, "/v1/verifications".to_string()),
        2 => (Method::GET, format!("/v1/verifications/{escaped}")),
        _ if flags & 0x40 != 0 => (Method::POST, format!("/v1/verifications/{escaped}/cancel")),
        _ => (Method::GET, format!("/v1/registrations/{escaped}")),
    };
    let mut builder = Request::builder().method(method).uri(path);
    builder = match flags & 3 {
        0 => builder.header("authorization", format!("Bearer {KEY}")),
        1 => match HeaderValue::from_bytes(&[b"Bearer ", segment].concat()) {
            // Arbitrary bytes as the key, where they can be a header value at all.
            Ok(value) => builder.header("authorization", value),
            Err(_) => builder.header("authorization", format!("Bearer {KEY}")),
        },
        2 => builder.header("authorization", "Bearer wrong-key"),
        _ => builder,
    };
    builder = match (flags >> 2) & 3 {
        0 | 1 => builder.header("content-type", "application/json"),
        2 => builder.header("content-type", "text/plain; charset=\u{ff}"),
        _ => builder,
    };
    if let Ok(value) = HeaderValue::from_bytes(segment) {
        builder = builder.header("idempotency-key", value);
    }
    builder.body(Body::from(body.to_vec())).unwrap()
}

#[test]
fn api_requests_never_panic_and_every_answer_is_well_formed() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store =
        runtime.block_on(pound::store::open(&format!("sqlite://{}", dir.path().join("fuzz.db").display()))).unwrap();
    let config = ApiConfig { api_keys: vec![KEY.into()], ..ApiConfig::default() };
    let app = router(ApiState {
        store,
        config,
        metrics: Arc::new(Metrics::new()),
        ready: Arc::new(AtomicBool::new(true)),
        new_work: Default::default(),
        webhook_queued: Default::default(),
        clock: pound::clock::Clock::System,
    });
    let seeds: Vec<Vec<u8>> = [
        json!({"phone": "+14155550100", "user": "alice@contoso.com"}),
        json!({"phone": "+44 1632 960961", "user": "bob", "dialplan": "press-pound", "callback_url": "https://hooks.example.com/p"}),
    ]
    .iter()
    .map(|body| {
        let mut script = vec![0, 4];
        script.extend_from_slice(b"k-01");
        script.extend_from_slice(&serde_json::to_vec(body).unwrap());
        script
    })
    .collect();
    // The first number parsed loads the phone number metadata (seconds in a debug build): not
    // part of the budget.
    let _ = runtime.block_on(app.clone().oneshot(request(&seeds[0])));
    let summary = Target::new("api", seeds)
        // The router, hyper's buffers and one SQLite round trip on this thread.
        .max_heap(|len| (8 << 20) + len * 64)
        .run_with(request_script, |script| {
            let response = runtime.block_on(app.clone().oneshot(request(script))).unwrap();
            let status = response.status();
            let body = runtime.block_on(axum::body::to_bytes(response.into_body(), 1 << 20)).unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(!status.is_server_error(), "{status} {text}");
            let value: Value = serde_json::from_slice(&body).unwrap_or_else(|err| panic!("{err}: {status} {text}"));
            if status.is_success() {
                if let Some(phone) = value.get("phone").and_then(Value::as_str) {
                    let digits = phone.strip_prefix('+').unwrap_or_else(|| panic!("{phone:?} is not E.164"));
                    assert!((2..=15).contains(&digits.len()), "{phone:?}");
                    assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{phone:?}");
                }
            } else {
                let error = &value["error"];
                assert!(error["code"].as_str().is_some_and(|code| !code.is_empty()), "{status} {text}");
                assert!(error["message"].is_string(), "{status} {text}");
            }
            if status == StatusCode::ACCEPTED {
                assert!(value["id"].is_string(), "{text}");
            }
        });
    summary.assert_ran(50);
    // The API still answers after everything above.
    let health = Request::builder().uri("/healthz").body(Body::empty()).unwrap();
    assert_eq!(runtime.block_on(app.oneshot(health)).unwrap().status(), StatusCode::OK);
}

//! The HTTP API over real sockets: `router` served by axum on 127.0.0.1:0,
//! a reqwest client, and the SQLite store in a temporary folder.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pound::api::ApiKeyConfig;
use pound::api::ssrf::TargetPolicy;
use pound::api::webhooks::{SIGNATURE_HEADER, WebhookConfig, deliver_webhooks, verify};
use pound::api::{ApiConfig, ApiState, Policy, router};
use pound::metrics::Metrics;
use pound::store::{ApiKey, Store};
use pound::vocab::Outcome;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const KEY: &str = "test-key-1";
const OTHER_KEY: &str = "test-key-2";
const PHONE: &str = "+14155550100";

struct Server {
    base: String,
    client: reqwest::Client,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

/// Signs the webhooks of `KEY`'s verifications; `OTHER_KEY` has no secret.
const KEY_SECRET: &str = "whsec_key_one";

fn config() -> ApiConfig {
    let key = ApiKeyConfig { webhook_secret: Some(KEY_SECRET.into()), ..KEY.into() };
    ApiConfig {
        api_keys: vec![key, OTHER_KEY.into()],
        dialplans: vec!["press-pound".into(), "fraud-check".into()],
        default_dialplan: "press-pound".into(),
        // The webhook receivers here listen on loopback: opted in, which
        // also shows that the default refuses them (tests/ssrf.rs).
        webhook_targets: loopback_allowed(),
        ..ApiConfig::default()
    }
}

fn loopback_allowed() -> TargetPolicy {
    TargetPolicy { allow_private: true, allow_cidrs: Vec::new() }
}

async fn start(config: ApiConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let app = router(ApiState {
        store: store.clone(),
        config,
        metrics: metrics.clone(),
        ready: ready.clone(),
        new_work: Default::default(),
        webhook_queued: Default::default(),
        clock: pound::clock::Clock::System,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { base, client: reqwest::Client::new(), store, metrics, ready, _dir: dir }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The api_key_id the API gives a config key.
fn config_key_id(key: &str) -> String {
    format!("cfg_{}", &hex::encode(Sha256::digest(key.as_bytes()))[..12])
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(KEY).json(body).send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(KEY).send().await.unwrap()
    }

    async fn create(&self, body: &Value) -> Value {
        let response = self.post("/v1/verifications", body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json().await.unwrap()
    }

    /// Verifications the test key created (to prove refusals store nothing).
    async fn stored(&self) -> u64 {
        self.store.count_created_since(&config_key_id(KEY), 0).await.unwrap()
    }
}

/// Asserts the documented error shape and returns the message.
async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    assert_eq!(response.status(), status, "expected {code}");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "errors are JSON");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().expect("a message").to_string();
    assert!(!message.is_empty());
    assert_eq!(body.as_object().unwrap().len(), 1, "only `error`: {body}");
    assert_eq!(body["error"].as_object().unwrap().len(), 2, "only code and message: {body}");
    message
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn api_keys_are_required_on_v1_routes() {
    let server = start(config()).await;
    let body = json!({"phone": PHONE, "user": "alice@contoso.com"});
    let response = server.client.post(server.url("/v1/verifications")).json(&body).send().await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_api_key").await;
    let response =
        server.client.post(server.url("/v1/verifications")).bearer_auth("wrong").json(&body).send().await.unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
    let response = server
        .client
        .get(server.url("/v1/registrations/alice"))
        .header("authorization", format!("Basic {KEY}"))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
    let response = server.client.get(server.url("/v1/verifications/v_000")).send().await.unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_api_key").await;
    assert_eq!(server.stored().await, 0);

    // A key from the store works as well as a config key, under its own id.
    let store_key = "stored-key";
    server
        .store
        .insert_api_key(&ApiKey {
            id: "key_registration_svc".into(),
            name: "registration service".into(),
            hash: hex::encode(Sha256::digest(store_key.as_bytes())),
            created_at: now_ms(),
            tenant: None,
            admin: false,
            webhook_secret: None,
            previous_webhook_secret: None,
            previous_secret_until: None,
            revoked_at: None,
            last_used_at: None,
        })
        .await
        .unwrap();
    let response =
        server.client.post(server.url("/v1/verifications")).bearer_auth(store_key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(server.store.count_created_since("key_registration_svc", 0).await.unwrap(), 1);
    assert_eq!(server.stored().await, 0);
}

#[tokio::test]
async fn malformed_requests_are_clear_4xx_and_store_nothing() {
    let server = start(config()).await;
    let post_raw = |body: Vec<u8>, content_type: &'static str| {
        server
            .client
            .post(server.url("/v1/verifications"))
            .bearer_auth(KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let response = post_raw(b"{\"phone\":".to_vec(), "application/json").await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
    let response = post_raw(br#"{"phone":"+14155550100","user":7}"#.to_vec(), "application/json").await.unwrap();
    let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(message.contains("user"), "{message}");
    let response = post_raw(br#"{"user":"a"}"#.to_vec(), "application/json").await.unwrap();
    let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(message.contains("phone"), "{message}");
    let response = post_raw(br#"["+14155550100"]"#.to_vec(), "application/json").await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = post_raw(br#"{"phone":"+14155550100","user":"a"}"#.to_vec(), "text/plain").await.unwrap();
    expect_error(response, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;

    let big = json!({"phone": PHONE, "user": "a".repeat(20 * 1024)}).to_string().into_bytes();
    let response = post_raw(big, "application/json").await.unwrap();
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;

    let response = server.post("/v1/verifications", &json!({"phone": PHONE, "user": "a", "dialplan": "x"})).await;
    expect_error(response, StatusCode::BAD_REQUEST, "unknown_dialplan").await;
    let response = server
        .post("/v1/verifications", &json!({"phone": PHONE, "user": "a", "callback_url": "ftp://x.example/"}))
        .await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_callback_url").await;
    let long = format!("https://x.example/{}", "a".repeat(2048));
    let response = server.post("/v1/verifications", &json!({"phone": PHONE, "user": "a", "callback_url": long})).await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_callback_url").await;
    let response = server
        .client
        .post(server.url("/v1/verifications"))
        .bearer_auth(KEY)
        .header("idempotency-key", "")
        .json(&json!({"phone": PHONE, "user": "a"}))
        .send()
        .await
        .unwrap();
    let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(message.contains("Idempotency-Key"), "{message}");

    let response = server.get("/v1/nothing-here").await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = server.client.delete(server.url("/v1/verifications")).bearer_auth(KEY).send().await.unwrap();
    expect_error(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    assert_eq!(server.stored().await, 0);
}

#[tokio::test]
async fn numbers_must_be_valid_e164_in_an_allowed_country() {
    let server =
        start(ApiConfig { policy: Policy { allowed_country_codes: vec![1, 44], ..Policy::default() }, ..config() })
            .await;
    for phone in ["+1415555", "4155550100", "+1 415 555 01OO", "+99912345678", "+141555501001234567"] {
        let response = server.post("/v1/verifications", &json!({"phone": phone, "user": "a"})).await;
        expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_number").await;
    }
    let response = server.post("/v1/verifications", &json!({"phone": "+33 1 23 45 67 89", "user": "a"})).await;
    let message = expect_error(response, StatusCode::FORBIDDEN, "country_not_allowed").await;
    assert!(message.contains("+33"), "{message}");
    assert_eq!(server.stored().await, 0);

    let record = server.create(&json!({"phone": "+1 (415) 555-0100", "user": "alice@contoso.com"})).await;
    assert_eq!(record["phone"], PHONE, "stored formatted E.164");
    assert_eq!(record["status"], "queued");
    assert_eq!(record["dialplan"], "press-pound");
    assert_eq!(record["max_attempts"], 3);
    assert_eq!(record["outcome"], Value::Null);
    assert_eq!(record["attempts"], json!([]));
    assert_eq!(record["webhooks"], json!([]));
    let id = record["id"].as_str().unwrap();
    assert!(id.len() == 26 && id.starts_with("v_") && id[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let record = server.create(&json!({"phone": "+44 20 7123 4567", "user": "bob", "dialplan": "fraud-check"})).await;
    assert_eq!((record["phone"].as_str(), record["dialplan"].as_str()), (Some("+442071234567"), Some("fraud-check")));
}

#[tokio::test]
async fn each_key_has_an_hourly_limit() {
    // A sliding hour: Retry-After is when the oldest request leaves it.
    let server = start(ApiConfig {
        policy: Policy { max_per_key_per_hour: 2, cooldown: Duration::ZERO, ..Policy::default() },
        ..config()
    })
    .await;
    server.create(&json!({"phone": PHONE, "user": "a"})).await;
    server.create(&json!({"phone": "+14155550101", "user": "b"})).await;
    let response = server.post("/v1/verifications", &json!({"phone": "+14155550102", "user": "c"})).await;
    let wait = retry_after(&response);
    assert!((1..=3600).contains(&wait), "Retry-After {wait}");
    expect_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(server.stored().await, 2);
    // The limit is per key: another key still gets through.
    let response = server
        .client
        .post(server.url("/v1/verifications"))
        .bearer_auth(OTHER_KEY)
        .json(&json!({"phone": "+14155550102", "user": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_phone_cools_down_between_verifications() {
    let server = start(config()).await;
    server.create(&json!({"phone": PHONE, "user": "a"})).await;
    // Spelt differently, still the same phone; and another key is no way around it.
    let response = server
        .client
        .post(server.url("/v1/verifications"))
        .bearer_auth(OTHER_KEY)
        .json(&json!({"phone": "+1 415 555 0100", "user": "b"}))
        .send()
        .await
        .unwrap();
    let wait = retry_after(&response);
    assert!((59..=60).contains(&wait), "Retry-After {wait}");
    expect_error(response, StatusCode::TOO_MANY_REQUESTS, "cooldown").await;
    assert_eq!(server.store.count_created_since(&config_key_id(OTHER_KEY), 0).await.unwrap(), 0);
    server.create(&json!({"phone": "+14155550199", "user": "a"})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_requests_for_one_phone_pass_the_cooldown_once() {
    let server = start(config()).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let request = server
            .client
            .post(server.url("/v1/verifications"))
            .bearer_auth(KEY)
            .json(&json!({"phone": PHONE, "user": "a"}));
        requests.spawn(async move { request.send().await.unwrap().status() });
    }
    let statuses = requests.join_all().await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 5, "{statuses:?}");
    assert_eq!(server.stored().await, 1);
}

#[tokio::test]
async fn idempotent_retries_return_the_first_record() {
    let server = start(config()).await;
    let send = |key: &'static str, body: Value| {
        server
            .client
            .post(server.url("/v1/verifications"))
            .bearer_auth(KEY)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    let first = send("order-42", json!({"phone": PHONE, "user": "alice"})).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    // The same request spelt differently, after the phone's cooldown started:
    // still the retry, not a 429.
    let retry = send("order-42", json!({"user": "alice", "phone": "+1 415-555-0100", "dialplan": "press-pound"}))
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["location"], format!("/v1/verifications/{}", first["id"].as_str().unwrap()));
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["id"], first["id"]);
    let conflict = send("order-42", json!({"phone": PHONE, "user": "mallory"})).await.unwrap();
    expect_error(conflict, StatusCode::CONFLICT, "idempotency_conflict").await;
    assert_eq!(server.stored().await, 1);
    // The idempotency key is scoped to the API key.
    let other = server
        .client
        .post(server.url("/v1/verifications"))
        .bearer_auth(OTHER_KEY)
        .header("idempotency-key", "order-42")
        .json(&json!({"phone": "+14155550123", "user": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::ACCEPTED);
    let other: Value = other.json().await.unwrap();
    assert_ne!(other["id"], first["id"]);
}

#[tokio::test]
async fn get_cancel_and_registrations() {
    let server = start(config()).await;
    let response = server.get("/v1/verifications/v_000000000000000000000000").await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = server.post("/v1/verifications/v_000000000000000000000000/cancel", &json!({})).await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;

    let created = server.create(&json!({"phone": PHONE, "user": "alice@contoso.com"})).await;
    let id = created["id"].as_str().unwrap();
    let fetched: Value = server.get(&format!("/v1/verifications/{id}")).await.json().await.unwrap();
    assert_eq!(fetched, created);

    let response = server.post(&format!("/v1/verifications/{id}/cancel"), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let canceled: Value = response.json().await.unwrap();
    assert_eq!((canceled["status"].as_str(), canceled["outcome"].as_str()), (Some("canceled"), Some("canceled")));
    assert!(canceled["completed_at"].is_i64());
    let response = server.post(&format!("/v1/verifications/{id}/cancel"), &json!({})).await;
    expect_error(response, StatusCode::CONFLICT, "already_final").await;
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pound_verifications_total{outcome=\"canceled\"} 1"), "{metrics}");

    // While a node holds the lease, cancel is a request to that node.
    let running = server.create(&json!({"phone": "+14155550111", "user": "carol"})).await;
    let running_id = running["id"].as_str().unwrap();
    assert_eq!(server.store.claim("node-1", now_ms(), 30_000, 10).await.unwrap().len(), 1);
    for _ in 0..2 {
        let response = server.post(&format!("/v1/verifications/{running_id}/cancel"), &json!({})).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let record: Value = response.json().await.unwrap();
        assert_eq!(record["status"], "queued", "the node ends the call, then the status changes");
    }
    assert_eq!(
        server.store.renew_leases(&[running_id.to_string()], "node-1", now_ms() + 30_000).await.unwrap(),
        [pound::store::LeaseState::CancelRequested]
    );
    server.store.complete(running_id, "node-1", Outcome::Canceled, now_ms()).await.unwrap();

    let empty: Value = server.get("/v1/registrations/nobody%40contoso.com").await.json().await.unwrap();
    assert_eq!(empty, json!({"user": "nobody@contoso.com", "phones": []}));

    // Let the store play the engine: claim it and complete it as verified.
    let created = server.create(&json!({"phone": "+442071234567", "user": "bob@contoso.com"})).await;
    let id = created["id"].as_str().unwrap();
    let claimed = server.store.claim("node-1", now_ms(), 30_000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    server.store.complete(id, "node-1", Outcome::Verified, now_ms()).await.unwrap();
    let response = server.get("/v1/registrations/bob%40contoso.com").await;
    assert_eq!(response.status(), StatusCode::OK);
    let registered: Value = response.json().await.unwrap();
    assert_eq!(registered["user"], "bob@contoso.com");
    let phones = registered["phones"].as_array().unwrap();
    assert_eq!(phones.len(), 1);
    assert_eq!(phones[0]["phone"], "+442071234567");
    assert_eq!(phones[0]["verification_id"], id);
    assert_eq!(phones[0]["method"], "voice");
    assert!(phones[0]["verified_at"].is_i64());
    assert_eq!(phones[0].as_object().unwrap().len(), 4, "{registered}");
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_need_no_key() {
    let server = start(config()).await;
    let health = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));

    let response = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The error shape, extended with every reason (issue 11).
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    assert_eq!((&body["status"], &body["reasons"][0]["code"]), (&json!("not_ready"), &json!("not_ready")), "{body}");
    server.ready.store(true, Ordering::Release);
    let response = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    server.metrics.call_started();
    let response = server.client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    for name in [
        "pound_verifications_total",
        "pound_calls_in_progress 1",
        "pound_sip_responses_total",
        "pound_dtmf_digits_total",
        "pound_dtmf_detection_latency_seconds",
        "pound_call_setup_seconds",
        "pound_webhook_deliveries_total",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }

    let response = server.client.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    let routes = [
        ("post", "/v1/verifications"),
        ("get", "/v1/verifications"),
        ("get", "/v1/verifications/{id}"),
        ("post", "/v1/verifications/{id}/cancel"),
        ("get", "/v1/verifications/{id}/audit"),
        ("get", "/v1/registrations/{user}"),
        ("get", "/metrics"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/openapi.json"),
    ];
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |method| (method.clone(), path.clone())))
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = routes.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Every documented route is served: none falls through to the 404 fallback.
    for (method, path) in routes {
        let path = path.replace("{id}", "v_000000000000000000000000").replace("{user}", "nobody");
        let request = match method {
            "get" => server.client.get(server.url(&path)),
            _ => server.client.post(server.url(&path)).json(&json!({})),
        };
        let response = request.bearer_auth(KEY).send().await.unwrap();
        if response.status() == StatusCode::NOT_FOUND {
            let body: Value = response.json().await.unwrap();
            assert_ne!(body["error"]["message"], "no such route", "{method} {path}");
        }
    }
    // Every $ref resolves.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/").skip(1).map(|rest| &rest[..rest.find('"').unwrap()]) {
        let target = reference.split('/').fold(&doc, |node, part| &node[part]);
        assert!(!target.is_null(), "dangling $ref #/{reference}");
    }
}

/// A webhook receiver that checks signatures and fails the first `fail_first` POSTs.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<(String, bool)>>>,
}

async fn receiver(secret: &'static [u8], fail_first: u32) -> Receiver {
    use axum::http::HeaderMap;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(AtomicU32::new(0));
    let (log, count) = (bodies.clone(), seen.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (log, count) = (log.clone(), count.clone());
            async move {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
                let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                let valid = verify(secret, signature, &body, now, 300)
                    && headers.get("content-type").is_some_and(|v| v == "application/json");
                log.lock().unwrap().push((body, valid));
                if count.fetch_add(1, Ordering::SeqCst) < fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, bodies }
}

fn fast_webhooks(max_attempts: u32) -> WebhookConfig {
    WebhookConfig {
        max_attempts,
        first_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(80),
        timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(10),
        batch: 8,
        targets: loopback_allowed(),
        queued: Default::default(),
        ..WebhookConfig::default()
    }
}

/// Creates a verification with a callback and cancels it while queued, which
/// queues its webhook; returns its id.
async fn queue_webhook(server: &Server, callback_url: &str) -> String {
    let created = server.create(&json!({"phone": PHONE, "user": "alice", "callback_url": callback_url})).await;
    assert_eq!(created["callback_url"], callback_url);
    let id = created["id"].as_str().unwrap().to_string();
    let response = server.post(&format!("/v1/verifications/{id}/cancel"), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    id
}

/// Polls the record until `done` holds for its first webhook (10 s at most).
async fn wait_for_webhook(server: &Server, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..1000 {
        let record: Value = server.get(&format!("/v1/verifications/{id}")).await.json().await.unwrap();
        if record["webhooks"].get(0).is_some_and(&done) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the webhook of {id} never got there");
}

#[tokio::test]
async fn webhooks_are_signed_and_retried_until_delivered() {
    const SECRET: &[u8] = b"whsec_test";
    let server = start(config()).await;
    let receiver = receiver(SECRET, 2).await;
    let id = queue_webhook(&server, &receiver.url).await;
    let queued: Value = server.get(&format!("/v1/verifications/{id}")).await.json().await.unwrap();
    assert_eq!(queued["webhooks"][0]["attempts"], 0);

    let (stop, stopping) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(deliver_webhooks(
        server.store.clone(),
        server.metrics.clone(),
        SECRET.to_vec(),
        fast_webhooks(8),
        stopping,
    ));
    let record = wait_for_webhook(&server, &id, |hook| !hook["delivered_at"].is_null()).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops on shutdown").unwrap();

    let hook = &record["webhooks"][0];
    assert_eq!(hook["attempts"], 3, "{record}");
    assert_eq!(hook["url"], receiver.url.as_str());
    assert_eq!(hook["gave_up"], false);
    assert_eq!(hook["next_attempt_at"], Value::Null);
    assert_eq!(hook["last_error"], "HTTP 5xx", "the status class, not the receiver's answer: {hook}");
    assert!(hook.get("payload").is_none(), "the payload is not echoed");

    let bodies = receiver.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3, "two failures, then the delivery");
    assert!(bodies.iter().all(|(_, valid)| *valid), "every try is validly signed");
    assert!(bodies.iter().all(|(body, _)| *body == bodies[0].0), "the same body every time");
    let payload: Value = serde_json::from_str(&bodies[0].0).unwrap();
    assert_eq!(payload["event"], "verification.completed");
    assert_eq!(payload["verification"]["id"], id.as_str());
    assert_eq!(payload["verification"]["outcome"], "canceled");

    let metrics = server.metrics.encode();
    assert!(metrics.contains("pound_webhook_deliveries_total{result=\"failed\"} 2"), "{metrics}");
    assert!(metrics.contains("pound_webhook_deliveries_total{result=\"delivered\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_gives_up_visibly() {
    let server = start(config()).await;
    let receiver = receiver(b"s", u32::MAX).await;
    let id = queue_webhook(&server, &receiver.url).await;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(deliver_webhooks(
        server.store.clone(),
        server.metrics.clone(),
        b"s".to_vec(),
        fast_webhooks(2),
        stopping,
    ));
    let record = wait_for_webhook(&server, &id, |hook| hook["gave_up"] == true).await;
    // Give a wrongly-continuing loop the chance to try again before looking.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops on shutdown").unwrap();

    let hook = &record["webhooks"][0];
    assert_eq!(hook["attempts"], 2, "{record}");
    assert_eq!(hook["delivered_at"], Value::Null);
    assert_eq!(hook["next_attempt_at"], Value::Null);
    assert_eq!(hook["last_error"], "HTTP 5xx", "the status class, not the receiver's answer: {hook}");
    assert_eq!(receiver.bodies.lock().unwrap().len(), 2, "no try after giving up");
    let metrics = server.metrics.encode();
    assert!(metrics.contains("pound_webhook_deliveries_total{result=\"failed\"} 1"), "{metrics}");
    assert!(metrics.contains("pound_webhook_deliveries_total{result=\"gave_up\"} 1"), "{metrics}");
}

#[tokio::test]
async fn an_unreachable_receiver_is_a_recorded_failure() {
    let server = start(config()).await;
    // A port that was just free: nothing listens there.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let id = queue_webhook(&server, &format!("http://{closed}/hook?token=secret")).await;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(deliver_webhooks(
        server.store.clone(),
        server.metrics.clone(),
        b"s".to_vec(),
        fast_webhooks(1),
        stopping,
    ));
    let record = wait_for_webhook(&server, &id, |hook| hook["gave_up"] == true).await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops on shutdown").unwrap();
    let error = record["webhooks"][0]["last_error"].as_str().unwrap();
    assert_eq!(error, "connection refused", "what pound did, and never the URL with its token");
}

// Tenancy, the admin role, listing and per-key webhook secrets (issue 7).

/// An operator key (config `admin = true`).
const ADMIN_KEY: &str = "test-admin-key";
/// Two keys of one tenant.
const TEAM_KEY_A: &str = "team-key-a";
const TEAM_KEY_B: &str = "team-key-b";

fn tenancy_config() -> ApiConfig {
    let mut config = config();
    config.policy.cooldown = Duration::ZERO;
    config.api_keys.push(ApiKeyConfig { admin: true, ..ADMIN_KEY.into() });
    for key in [TEAM_KEY_A, TEAM_KEY_B] {
        config.api_keys.push(ApiKeyConfig { tenant: Some("contoso".into()), ..key.into() });
    }
    config
}

impl Server {
    async fn get_as(&self, key: &str, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(key).send().await.unwrap()
    }

    async fn post_as(&self, key: &str, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(key).json(body).send().await.unwrap()
    }

    async fn create_as(&self, key: &str, body: &Value) -> String {
        let response = self.post_as(key, "/v1/verifications", body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
    }

    /// The ids `key` lists with `query`, and the next cursor.
    async fn list_as(&self, key: &str, query: &str) -> (Vec<String>, Value) {
        let response = self.get_as(key, &format!("/v1/verifications{query}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{query}");
        let page: Value = response.json().await.unwrap();
        assert_eq!(page.as_object().unwrap().len(), 2, "items and next_cursor: {page}");
        let ids = page["items"].as_array().unwrap().iter().map(|item| item["id"].as_str().unwrap().to_string());
        (ids.collect(), page["next_cursor"].clone())
    }

    fn store_url(&self) -> String {
        format!("sqlite://{}", self._dir.path().join("t.db").display())
    }
}

#[tokio::test]
async fn another_tenant_gets_404_reading_canceling_and_listing_and_sees_no_registrations() {
    let server = start(tenancy_config()).await;
    // Callback URLs carry the requester's own credentials (userinfo is refused,
    // a token in the query is not): another tenant must never read them.
    let callback = "https://hooks.contoso.example/pound?token=s3cret";
    let body = json!({"phone": PHONE, "user": "alice@contoso.com", "callback_url": callback});
    let verified = server.create_as(KEY, &json!({"phone": "+14155550102", "user": "alice@contoso.com"})).await;
    // The oldest due one, `verified`, is claimed; `id` stays queued.
    server.store.claim("node-1", now_ms(), 30_000, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let id = server.create_as(KEY, &body).await;
    server.store.complete(&verified, "node-1", Outcome::Verified, now_ms()).await.unwrap();

    // The other key: exactly what a missing id gets, and nothing changes.
    let missing = "v_000000000000000000000000";
    for probe in [id.as_str(), missing] {
        let response = server.get_as(OTHER_KEY, &format!("/v1/verifications/{probe}")).await;
        let message = expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
        assert_eq!(message, format!("no verification {probe:?}"));
        let response = server.post_as(OTHER_KEY, &format!("/v1/verifications/{probe}/cancel"), &json!({})).await;
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let record: Value = server.get(&format!("/v1/verifications/{id}")).await.json().await.unwrap();
    assert_eq!(record["status"], "queued", "the other key's cancel changed nothing");
    assert_eq!(record["callback_url"], callback, "the owner still reads its own record");
    assert_eq!(server.list_as(OTHER_KEY, "").await, (vec![], Value::Null));
    assert_eq!(server.list_as(OTHER_KEY, "?user=alice%40contoso.com").await.0, Vec::<String>::new());
    let registrations: Value =
        server.get_as(OTHER_KEY, "/v1/registrations/alice%40contoso.com").await.json().await.unwrap();
    assert_eq!(registrations, json!({"user": "alice@contoso.com", "phones": []}));

    // The owner sees both, and its registration.
    assert_eq!(server.list_as(KEY, "").await.0, [id.as_str(), verified.as_str()]);
    let registrations: Value = server.get("/v1/registrations/alice%40contoso.com").await.json().await.unwrap();
    assert_eq!(registrations["phones"][0]["verification_id"], verified.as_str());

    // The admin sees and cancels every tenant's.
    let response = server.get_as(ADMIN_KEY, &format!("/v1/verifications/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let registrations: Value =
        server.get_as(ADMIN_KEY, "/v1/registrations/alice%40contoso.com").await.json().await.unwrap();
    assert_eq!(registrations["phones"].as_array().unwrap().len(), 1);
    let other = server.create_as(OTHER_KEY, &json!({"phone": "+14155550103", "user": "bob"})).await;
    assert_eq!(server.list_as(ADMIN_KEY, "").await.0, [other.as_str(), id.as_str(), verified.as_str()]);
    let response = server.post_as(ADMIN_KEY, &format!("/v1/verifications/{id}/cancel"), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "canceled");
    // The admin's own requests are its own tenant's, like any key's.
    assert_eq!(server.list_as(OTHER_KEY, "").await.0, [other]);
}

#[tokio::test]
async fn keys_of_one_tenant_share_their_verifications() {
    let server = start(tenancy_config()).await;
    let id = server.create_as(TEAM_KEY_A, &json!({"phone": PHONE, "user": "carol"})).await;
    let response = server.get_as(TEAM_KEY_B, &format!("/v1/verifications/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.list_as(TEAM_KEY_B, "").await.0, [id.as_str()]);
    let response = server.get_as(KEY, &format!("/v1/verifications/{id}")).await;
    expect_error(response, StatusCode::NOT_FOUND, "not_found").await;

    // A stored key joins a tenant with `pound keys create --tenant`.
    let new = pound::cmd::keys::NewKey { name: "contoso-2".into(), tenant: Some("contoso".into()), admin: false };
    let created = pound::cmd::keys::create(&server.store_url(), &new).await.unwrap();
    assert_eq!((created.tenant.as_str(), created.admin), ("contoso", false));
    let response = server.get_as(&created.key, &format!("/v1/verifications/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    // And `--admin` makes an operator key.
    let new = pound::cmd::keys::NewKey { name: "ops".into(), tenant: None, admin: true };
    let admin = pound::cmd::keys::create(&server.store_url(), &new).await.unwrap();
    assert_eq!(admin.tenant, admin.id, "a key without --tenant is its own tenant");
    let response = server.post_as(&admin.key, &format!("/v1/verifications/{id}/cancel"), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn listing_pages_newest_first_with_filters_and_refuses_bad_parameters() {
    let server = start(tenancy_config()).await;
    let mut ids = Vec::new();
    for (n, user) in ["alice", "bob", "alice", "alice", "bob"].into_iter().enumerate() {
        ids.push(server.create_as(KEY, &json!({"phone": format!("+1415555011{n}"), "user": user})).await);
        // Distinct creation times, so "newest first" is observable.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    ids.reverse();
    let (first, cursor) = server.list_as(KEY, "?limit=2").await;
    assert_eq!(first, ids[..2]);
    let cursor = cursor.as_str().expect("more pages").to_string();
    let (second, cursor) = server.list_as(KEY, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(second, ids[2..4]);
    let (third, cursor) = server.list_as(KEY, &format!("?limit=2&cursor={}", cursor.as_str().unwrap())).await;
    assert_eq!((third.as_slice(), cursor), (&ids[4..], Value::Null), "the last page says so");
    assert_eq!(server.list_as(KEY, "").await.0, ids, "default limit covers all five");

    let (alices, _) = server.list_as(KEY, "?user=alice%40contoso.com").await;
    assert!(alices.is_empty());
    let (alices, _) = server.list_as(KEY, "?user=alice&limit=10").await;
    assert_eq!(alices, [ids[1].as_str(), ids[2].as_str(), ids[4].as_str()]);
    let (by_phone, _) = server.list_as(KEY, "?phone=%2B1%20415%20555%200110").await;
    assert_eq!(by_phone, [ids[4].as_str()], "the phone is normalised like on create");
    server.post(&format!("/v1/verifications/{}/cancel", ids[0]), &json!({})).await;
    assert_eq!(server.list_as(KEY, "?status=canceled").await.0, [ids[0].as_str()]);
    assert_eq!(server.list_as(KEY, "?status=queued&user=bob").await.0, [ids[3].as_str()]);

    // A page item is the record without its attempts and webhooks, and
    // nothing internal.
    let page: Value = server.get("/v1/verifications?limit=1").await.json().await.unwrap();
    let item = &page["items"][0];
    assert_eq!(item["id"], ids[0].as_str());
    for internal in ["api_key_id", "tenant", "lease_owner", "lease_until", "next_attempt_at", "cancel_requested"] {
        assert!(item.get(internal).is_none(), "{internal} leaked: {item}");
    }

    for query in [
        "?limit=0",
        "?limit=101",
        "?limit=x",
        "?status=done",
        "?phone=12345",
        "?cursor=not-a-cursor",
        "?cursor=31",
        "?sort=asc",
        "?user=a&user=b",
    ] {
        let response = server.get(&format!("/v1/verifications{query}")).await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let response = server.client.get(server.url("/v1/verifications")).send().await.unwrap();
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_api_key").await;
}

#[tokio::test]
async fn a_key_without_a_webhook_secret_cannot_register_a_callback() {
    let server = start(config()).await;
    let body = json!({"phone": PHONE, "user": "a", "callback_url": "https://hooks.example/pound"});
    let response = server.post_as(OTHER_KEY, "/v1/verifications", &body).await;
    let message = expect_error(response, StatusCode::FORBIDDEN, "webhook_secret_required").await;
    assert!(message.contains("webhook secret"), "{message}");
    assert_eq!(server.store.count_created_since(&config_key_id(OTHER_KEY), 0).await.unwrap(), 0);
    // Without a callback the same key is fine.
    server.create_as(OTHER_KEY, &json!({"phone": PHONE, "user": "a"})).await;
}

/// The webhook outbox running with per-key signing until stopped.
struct Outbox {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Outbox {
    fn start(server: &Server, keys: pound::api::KeyRing, max_attempts: u32) -> Outbox {
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let delivery =
            deliver_webhooks(server.store.clone(), server.metrics.clone(), keys, fast_webhooks(max_attempts), stopping);
        Outbox { stop, task: tokio::spawn(delivery) }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("stops on shutdown").unwrap();
    }
}

/// A receiver that records each webhook's signature header and body, and answers 204.
async fn recording_receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    use axum::http::HeaderMap;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let signature = headers.get(SIGNATURE_HEADER).map(|v| v.to_str().unwrap().to_string());
                log.lock().unwrap().push((signature.unwrap_or_default(), body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The `v1=` signatures of `header` (`t=<unix>,v1=…[,v1=…]`) that are
/// hex hmac-sha256(secret, "<t>.<body>") for one of `secrets`, computed here
/// independently of pound's own signing code: one entry per `v1=`, the
/// secret it matched or `None`.
fn signers<'a>(secrets: &[&'a str], header: &str, body: &str) -> Vec<Option<&'a str>> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut parts = header.split(',');
    let t = parts.next().and_then(|t| t.strip_prefix("t=")).expect("t= first");
    let hmac = |secret: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    parts
        .map(|part| {
            let v1 = part.strip_prefix("v1=").expect("only v1= after t=");
            secrets.iter().copied().find(|secret| hmac(secret) == v1)
        })
        .collect()
}

/// Creates a verification with `key` and a callback, cancels it (which queues
/// the webhook) and waits until the receiver has it; returns (signature, body).
async fn webhook_of(server: &Server, key: &str, url: &str, seen: &Mutex<Vec<(String, String)>>) -> (String, String) {
    let before = seen.lock().unwrap().len();
    let id = server.create_as(key, &json!({"phone": PHONE, "user": "a", "callback_url": url})).await;
    let response = server.post_as(key, &format!("/v1/verifications/{id}/cancel"), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    for _ in 0..1000 {
        if let Some(hook) = seen.lock().unwrap().get(before) {
            assert!(hook.1.contains(&id), "{}", hook.1);
            return hook.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the webhook of {id} never came");
}

#[tokio::test]
async fn webhooks_are_signed_with_the_creating_keys_own_secret_and_a_rotated_one_after() {
    let server = start(tenancy_config()).await;
    let new = pound::cmd::keys::NewKey { name: "registration".into(), tenant: None, admin: false };
    let stored = pound::cmd::keys::create(&server.store_url(), &new).await.unwrap();
    assert!(stored.webhook_secret.starts_with("whsec_") && stored.webhook_secret.len() == 70);
    let (url, seen) = recording_receiver().await;
    let outbox = Outbox::start(&server, pound::api::KeyRing::new(&tenancy_config().api_keys), 3);

    let secrets = [stored.webhook_secret.as_str(), KEY_SECRET];
    let (signature, body) = webhook_of(&server, &stored.key, &url, &seen).await;
    assert_eq!(signers(&secrets, &signature, &body), [Some(secrets[0])], "{signature}");
    let (signature, body) = webhook_of(&server, KEY, &url, &seen).await;
    assert_eq!(signers(&secrets, &signature, &body), [Some(KEY_SECRET)], "a config key signs with its own secret");

    // Rotation by name: the new secret signs, and the old one too while the
    // receiver switches over; after a rotation without overlap, only the newest.
    let url_store = server.store_url();
    let rotated = pound::cmd::keys::rotate_secret(&url_store, "registration", Duration::from_secs(60)).await.unwrap();
    assert_eq!(rotated.id, stored.id);
    assert!((now_ms() + 55_000..=now_ms() + 60_000).contains(&rotated.previous_signs_until));
    let secrets = [rotated.webhook_secret.as_str(), stored.webhook_secret.as_str()];
    let (signature, body) = webhook_of(&server, &stored.key, &url, &seen).await;
    assert_eq!(signers(&secrets, &signature, &body), [Some(secrets[0]), Some(secrets[1])], "{signature}");
    let last = pound::cmd::keys::rotate_secret(&url_store, &stored.id, Duration::ZERO).await.unwrap();
    let secrets = [last.webhook_secret.as_str(), rotated.webhook_secret.as_str(), stored.webhook_secret.as_str()];
    let (signature, body) = webhook_of(&server, &stored.key, &url, &seen).await;
    assert_eq!(signers(&secrets, &signature, &body), [Some(secrets[0])], "{signature}");
    outbox.stop().await;

    // A name two keys share is refused; an unknown one too.
    pound::cmd::keys::create(&url_store, &new).await.unwrap();
    let err = pound::cmd::keys::rotate_secret(&url_store, "registration", Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains(&stored.id), "{err}");
    assert!(pound::cmd::keys::rotate_secret(&url_store, "nobody", Duration::ZERO).await.is_err());
}

#[tokio::test]
async fn a_webhook_whose_key_lost_its_secret_is_never_sent_unsigned() {
    let server = start(config()).await;
    let (url, seen) = recording_receiver().await;
    let id = queue_webhook(&server, &url).await;
    // The operator removed the key's secret (or the key) after the request.
    let outbox = Outbox::start(&server, pound::api::KeyRing::new(&[KEY.into()]), 2);
    let record = wait_for_webhook(&server, &id, |hook| hook["gave_up"] == true).await;
    outbox.stop().await;
    assert!(seen.lock().unwrap().is_empty(), "nothing reached the receiver");
    let error = record["webhooks"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("no webhook secret"), "{error}");
}

// Key lifecycle (issue 11).

#[tokio::test]
async fn a_revoked_key_is_refused_but_its_queued_webhook_is_still_delivered_signed() {
    let server = start(tenancy_config()).await;
    let new = pound::cmd::keys::NewKey { name: "leaving".into(), tenant: None, admin: false };
    let stored = pound::cmd::keys::create(&server.store_url(), &new).await.unwrap();
    let (url, seen) = recording_receiver().await;
    let id = server.create_as(&stored.key, &json!({"phone": PHONE, "user": "a", "callback_url": url})).await;
    let response = server.post_as(&stored.key, &format!("/v1/verifications/{id}/cancel"), &json!({})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED, "the cancel queues the webhook");

    let revoked = pound::cmd::keys::revoke(&server.store_url(), "leaving").await.unwrap();
    assert_eq!(revoked.id, stored.id);
    let response = server.get_as(&stored.key, &format!("/v1/verifications/{id}")).await;
    expect_error(response, StatusCode::UNAUTHORIZED, "invalid_api_key").await;

    let outbox = Outbox::start(&server, pound::api::KeyRing::new(&tenancy_config().api_keys), 3);
    for _ in 0..1000 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    outbox.stop().await;
    let (signature, body) = seen.lock().unwrap().first().cloned().expect("the queued webhook was delivered");
    assert!(body.contains(&id), "{body}");
    let secrets = [stored.webhook_secret.as_str()];
    assert_eq!(signers(&secrets, &signature, &body), [Some(secrets[0])], "signed with the revoked key's secret");
}

#[tokio::test]
async fn number_matching_codes_are_validated_returned_to_their_tenant_only_and_kept_on_retries() {
    let server = start(tenancy_config()).await;
    let with = |extra: Value| {
        let mut body = json!({"phone": PHONE, "user": "alice"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    for bad in [
        json!({"code": "4"}),
        json!({"code": "123456789"}),
        json!({"code": "4a"}),
        json!({"code": "４７"}),
        json!({"code": ""}),
        json!({"code": 47}),
        json!({"code_length": 1}),
        json!({"code_length": 9}),
        json!({"code_length": "4"}),
        json!({"code_length": 4.5}),
        json!({"code_length": -4}),
        json!({"code": "47", "code_length": 2}),
    ] {
        let response = server.post("/v1/verifications", &with(bad.clone())).await;
        let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_code").await;
        assert!(!message.contains("123456789") && !message.contains("4a"), "the value is not echoed: {message}");
    }
    assert_eq!(server.stored().await, 0, "nothing stored for a refused code");

    // A given code comes back as given, leading zero and all, to its creator.
    let record = server.create(&with(json!({"code": "0815"}))).await;
    assert_eq!(record["code"], "0815", "{record}");
    let id = record["id"].as_str().unwrap();
    let read: Value = server.get(&format!("/v1/verifications/{id}")).await.json().await.unwrap();
    assert_eq!(read["code"], "0815");
    let listed: Value = server.get("/v1/verifications").await.json().await.unwrap();
    assert_eq!(listed["items"][0]["code"], "0815");
    // An admin key of another tenant reaches the record, not the code.
    let read: Value = server.get_as(ADMIN_KEY, &format!("/v1/verifications/{id}")).await.json().await.unwrap();
    assert_eq!((read["id"].as_str(), read.get("code")), (Some(id), None), "{read}");
    let listed: Value = server.get_as(ADMIN_KEY, "/v1/verifications").await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().iter().all(|item| item.get("code").is_none()), "{listed}");
    // Without a code there is no `code` field.
    let plain = server.create(&json!({"phone": "+14155550101", "user": "alice", "code": null})).await;
    assert!(plain.get("code").is_none(), "{plain}");

    // A drawn code has the length asked for, and a retry gets the same one.
    let send = |body: Value| {
        server
            .client
            .post(server.url("/v1/verifications"))
            .bearer_auth(KEY)
            .header("idempotency-key", "drawn")
            .json(&body)
            .send()
    };
    let body = json!({"phone": "+14155550102", "user": "alice", "code_length": 6});
    let first: Value = send(body.clone()).await.unwrap().json().await.unwrap();
    let code = first["code"].as_str().expect("a drawn code");
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{first}");
    let retry = send(body).await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.json::<Value>().await.unwrap()["code"], code, "the retry returns the first code");
    let other_length = send(json!({"phone": "+14155550102", "user": "alice", "code_length": 4})).await.unwrap();
    expect_error(other_length, StatusCode::CONFLICT, "idempotency_conflict").await;
}

#[tokio::test]
async fn locales_pick_a_shipped_prompt_set_by_language_and_others_are_refused() {
    let server = start(tenancy_config()).await;
    for bad in ["sv", "xx-DE", "de_AT", "de-", "", "klingon-tlh"] {
        let response = server.post("/v1/verifications", &json!({"phone": PHONE, "user": "alice", "locale": bad})).await;
        let message = expect_error(response, StatusCode::BAD_REQUEST, "unsupported_locale").await;
        assert!(message.contains("en, de, fr, es, pt, it, nl, pl, ja, zh"), "the message names the choices: {message}");
    }
    let response = server.post("/v1/verifications", &json!({"phone": PHONE, "user": "alice", "locale": 49})).await;
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert_eq!(server.stored().await, 0, "nothing stored for a refused locale");

    // Stored as the primary language subtag, and read back as such.
    for (n, (tag, want)) in
        [("de-AT", "de"), ("ZH-Hans-CN", "zh"), ("ja", "ja"), ("pt-BR", "pt")].into_iter().enumerate()
    {
        let phone = format!("+1415555011{n}");
        let record = server.create(&json!({"phone": phone, "user": "alice", "locale": tag})).await;
        assert_eq!(record["locale"], want, "{record}");
        let id = record["id"].as_str().unwrap();
        let read: Value = server.get(&format!("/v1/verifications/{id}")).await.json().await.unwrap();
        assert_eq!(read["locale"], want, "{read}");
    }
    // None asked for: null, the dialplan's locale plays.
    let plain = server.create(&json!({"phone": "+14155550120", "user": "alice"})).await;
    assert_eq!(plain["locale"], Value::Null, "{plain}");
}

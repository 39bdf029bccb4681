//! The toll-fraud (IRSF) guard, attacked through the HTTP API: number classes
//! no verification needs, velocity limits shared by nodes on one PostgreSQL
//! database, and the per-prefix breaker.
//!
//! The PostgreSQL tests run when `POUND_TEST_DATABASE_URL` names a server
//! (`.ci/run` sets it); each uses a fresh database on it.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use pound::api::{ApiConfig, ApiState, Policy, router};
use pound::metrics::Metrics;
use pound::store::Store;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

const KEY: &str = "toll-fraud-key";

/// The premium-rate and high-risk numbers of issue 7's finding, one or more
/// per class, each valid for its country (so only the guard can refuse it).
const REFUSED: [(&str, &str); 22] = [
    ("+8821612345678", "+882 international network"),
    ("+8823512345678", "+882 international network"),
    ("+881612345678", "+881 satellite"),
    ("+979312345678", "+979 international premium rate"),
    ("+19002345678", "+1 900 premium rate"),
    ("+449012345678", "+44 90 premium rate"),
    ("+449112345678", "+44 91 premium rate"),
    ("+448712345678", "+44 87 premium/shared cost"),
    ("+447012345678", "+44 70 personal number"),
    ("+447623456789", "+44 76 pager"),
    ("+5351234567", "+53 Cuba"),
    ("+252612345678", "+252 Somalia"),
    ("+870773123456", "+870 Inmarsat"),
    ("+67570123456", "+675 Papua New Guinea"),
    ("+18092345678", "+1 809 Dominican Republic"),
    ("+18762345678", "+1 876 Jamaica"),
    ("+37190123456", "+371 90 Latvian premium rate"),
    ("+80012345678", "+800 international freephone"),
    ("+80812345678", "+808 international shared cost"),
    ("+883510001234567", "+883 international network"),
    ("+15005550100", "+1 500 personal number"),
    ("+441234567890", "UK fixed line, control: must pass"),
];

/// Area codes in the United States (not the Caribbean parts of +1).
const US_AREA_CODES: [u16; 40] = [
    201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216, 217, 218, 219, 224, 225, 228, 229, 231, 234,
    239, 240, 248, 251, 252, 253, 254, 256, 260, 262, 267, 269, 270, 272, 276, 281, 301,
];

struct Node {
    base: String,
    store: Arc<dyn Store>,
}

async fn serve(store: Arc<dyn Store>, config: ApiConfig) -> Node {
    let metrics = Arc::new(Metrics::new());
    let app = router(ApiState { store: store.clone(), config, metrics, ready: Arc::new(AtomicBool::new(true)) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Node { base, store }
}

fn config(policy: Policy) -> ApiConfig {
    ApiConfig { api_keys: vec![KEY.into()], policy, ..ApiConfig::default() }
}

async fn post(client: &reqwest::Client, node: &Node, phone: &str) -> reqwest::Response {
    client
        .post(format!("{}/v1/verifications", node.base))
        .bearer_auth(KEY)
        .json(&json!({"phone": phone, "user": "mallory"}))
        .send()
        .await
        .unwrap()
}

async fn error_code(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn the_default_policy_refuses_every_high_risk_number_class() {
    let dir = tempfile::tempdir().unwrap();
    let store = pound::store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
    let node = serve(store, config(Policy::default())).await;
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    for (phone, class) in REFUSED {
        let response = post(&client, &node, phone).await;
        if response.status() == StatusCode::ACCEPTED {
            accepted.push(class);
            continue;
        }
        let (status, code) = error_code(response).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{class}: {code}");
        assert!(
            ["country_not_allowed", "number_type_not_allowed", "prefix_denied"].contains(&code.as_str()),
            "{class}: {code}"
        );
    }
    assert_eq!(accepted, ["UK fixed line, control: must pass"], "accepted by the default policy");
    // Nothing refused was stored, so no engine can dial it.
    let stored = node.store.count_created_since(&format!("cfg_{}", &sha256_hex(KEY)[..12]), 0).await.unwrap();
    assert_eq!(stored, 1);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A fresh database on the test server, and its name (to drop it).
async fn fresh_postgres() -> Option<(String, String, String)> {
    let Ok(admin_url) = std::env::var("POUND_TEST_DATABASE_URL") else {
        eprintln!("POUND_TEST_DATABASE_URL is not set: the PostgreSQL test did not run");
        return None;
    };
    let name = format!("pound_toll_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("PostgreSQL answers");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base).to_string();
    Some((format!("{base}/{name}"), name, admin_url))
}

async fn drop_postgres(admin_url: &str, name: &str) {
    let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_admit_exactly_the_key_limit() {
    let Some((url, name, admin_url)) = fresh_postgres().await else { return };
    const LIMIT: u32 = 20;
    let policy = Policy { max_per_key_per_hour: LIMIT, cooldown: Duration::ZERO, ..Policy::default() };
    // Two API nodes, each with its own connection pool, like two `pound serve`.
    let a = serve(pound::store::open(&url).await.unwrap(), config(policy.clone())).await;
    let b = serve(pound::store::open(&url).await.unwrap(), config(policy)).await;
    let nodes = Arc::new([a, b]);
    let client = reqwest::Client::new();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..80u32 {
        let (client, nodes) = (client.clone(), nodes.clone());
        // Numbers spread over many prefixes, so only the key limit binds.
        let phone = format!("+1{}555{:04}", US_AREA_CODES[i as usize % US_AREA_CODES.len()], 100 + i);
        requests.spawn(async move { post(&client, &nodes[(i % 2) as usize], &phone).await.status() });
    }
    let statuses = requests.join_all().await;
    let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    eprintln!("two nodes, limit {LIMIT}: {accepted} accepted, {limited} limited");
    assert_eq!((accepted, limited), (LIMIT as usize, 80 - LIMIT as usize), "{statuses:?}");
    drop(nodes);
    drop_postgres(&admin_url, &name).await;
}

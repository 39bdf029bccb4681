//! `pound demo`: the whole job on embedded defaults, on loopback. A
//! temporary SQLite store, the API, the engine and a simulated phone; one
//! verification submitted through the HTTP API like a registration service
//! would, its progress shown as it goes, the final record and the user's
//! registration printed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Config;
use crate::media::codec::Codec;
use crate::net::{PhoneSetup, run_phone};
use crate::phone::{PhoneConfig, PressVia};
use crate::service::{Service, ServiceError};
use crate::sip::Timers;
use crate::vocab::Transport;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The service did not start.
    #[error("{0}")]
    Service(#[from] ServiceError),
    /// The temporary folder could not be made.
    #[error("temporary folder: {0}")]
    Io(#[from] std::io::Error),
    /// The simulated phone did not start.
    #[error("simulated phone: {0}")]
    Phone(String),
    /// The API did not answer as expected.
    #[error("API: {0}")]
    Api(String),
}

/// The number the demo verifies: in the NANP range reserved for fiction (555-0100 to 0199).
const DEMO_PHONE: &str = "+14155550100";
const DEMO_USER: &str = "alice@contoso.com";

/// Runs the demo; `Ok(true)` when the verification ended `verified`.
pub async fn run(via: PressVia) -> Result<bool, DemoError> {
    let folder = std::env::temp_dir().join(format!("pound-demo-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&folder)?;
    let result = demo(&folder, via).await;
    let _ = std::fs::remove_dir_all(&folder);
    result
}

async fn demo(folder: &std::path::Path, via: PressVia) -> Result<bool, DemoError> {
    let (ready, phone_address) = tokio::sync::oneshot::channel();
    let phone = PhoneSetup {
        listen: "127.0.0.1:0".parse().expect("literal"),
        calls: None,
        config: PhoneConfig {
            local_sip: "127.0.0.1:0".parse().expect("literal"),
            transport: Transport::Udp,
            local_rtp: "127.0.0.1:0".parse().expect("literal"),
            press: "#".into(),
            play: None,
            early_media: None,
            via,
            press_after: Duration::from_millis(1500),
            answer_after: Duration::from_millis(1000),
            reject: None,
            never_answer: false,
            hangup_after: None,
            silent: false,
            codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::Opus],
            srtp: crate::vocab::SrtpPolicy::Off,
            timers: Timers::default(),
        },
        tls: Default::default(),
    };
    let phone_task = tokio::spawn(async move {
        let _ = run_phone(
            phone,
            move |address| {
                let _ = ready.send(address);
            },
            |_| {},
        )
        .await;
    });
    let phone_address = phone_address.await.map_err(|_| DemoError::Phone("did not start".into()))?;
    let key = format!("demo_{:016x}", rand::random::<u64>());
    let mut config = Config::default();
    config.store.url = format!("sqlite://{}", folder.join("pound.db").display());
    config.api.bind = "127.0.0.1:0".parse().expect("literal");
    config.api.keys = vec![key.clone().into()];
    config.trunk.uri = format!("sip:{phone_address}");
    config.sip.bind = "127.0.0.1:0".parse().expect("literal");
    config.webhooks.secret = "demo".into();
    config.engine.shutdown_grace_s = 5;
    let service = Service::start(config).await?;
    println!(
        "pound demo: store {}, API http://{}, simulated phone sip:{phone_address} (presses # by {})",
        folder.join("pound.db").display(),
        service.api,
        via_name(via)
    );
    let outcome = submit_and_follow(&format!("http://{}", service.api), &key, via).await;
    service.stop().await;
    phone_task.abort();
    outcome
}

async fn submit_and_follow(base: &str, key: &str, via: PressVia) -> Result<bool, DemoError> {
    let client = reqwest::Client::new();
    let api = |e: reqwest::Error| DemoError::Api(e.to_string());
    let body = json!({"phone": DEMO_PHONE, "user": DEMO_USER, "dialplan": "press-pound"});
    println!("POST /v1/verifications {body}");
    let response =
        client.post(format!("{base}/v1/verifications")).bearer_auth(key).json(&body).send().await.map_err(api)?;
    let status = response.status();
    let created: Value = response.json().await.map_err(api)?;
    if !status.is_success() {
        return Err(DemoError::Api(format!("{status}: {created}")));
    }
    let id = created["id"].as_str().ok_or_else(|| DemoError::Api(format!("no id in {created}")))?.to_string();
    println!("  {status} id {id}, status {}", created["status"]);
    // The progress starts from the record as created: the engine is woken at
    // once and may have moved on before the first poll.
    let mut last = created["status"].as_str().unwrap_or("?").to_string();
    println!("  status: {last}");
    let record = loop {
        let record = get(&client, &format!("{base}/v1/verifications/{id}"), key).await?;
        let status = record["status"].as_str().unwrap_or("?").to_string();
        if status != last {
            println!("  status: {status}");
            last = status.clone();
        }
        if matches!(status.as_str(), "completed" | "canceled" | "expired") {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("final record:\n{}", serde_json::to_string_pretty(&record).unwrap_or_default());
    let registrations = get(&client, &format!("{base}/v1/registrations/{DEMO_USER}"), key).await?;
    println!("registration of {DEMO_USER}:\n{}", serde_json::to_string_pretty(&registrations).unwrap_or_default());
    let verified = record["outcome"] == "verified";
    println!(
        "{}",
        if verified {
            format!("verified: # arrived by {}", via_name(via))
        } else {
            format!("not verified: {}", record["outcome"])
        }
    );
    Ok(verified)
}

async fn get(client: &reqwest::Client, url: &str, key: &str) -> Result<Value, DemoError> {
    let api = |e: reqwest::Error| DemoError::Api(e.to_string());
    client.get(url).bearer_auth(key).send().await.map_err(api)?.json().await.map_err(api)
}

fn via_name(via: PressVia) -> &'static str {
    match via {
        PressVia::Rfc4733 => "rfc4733",
        PressVia::Inband => "inband",
        PressVia::Info => "info",
    }
}

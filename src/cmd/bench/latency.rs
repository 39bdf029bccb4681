//! `pound bench latency`: the two latencies a requester feels (issue 9),
//! measured over `calls` verifications with `concurrency` requesters:
//!
//! - `post_to_invite_ms`: the API answered the POST → the INVITE reached
//!   the simulated phone (the trunk);
//! - `key_to_outcome_ms`: the phone began pressing `#` → a GET of the
//!   record shows it completed (polled every 2 ms, `OUTCOME_POLL`);
//! - `key_to_webhook_ms`: the same press → the `verification.completed`
//!   webhook reached the receiver.
//!
//! Each requester submits a verification, waits for its outcome and its
//! webhook, and submits the next; the calls' confirmation prompts and BYEs
//! overlap the following verifications. One unmeasured verification warms
//! the store and the connections up first.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use super::{Arrivals, BenchError, summary};
use crate::config::Config;
use crate::media::codec::Codec;
use crate::net::{PhoneSetup, run_phone};
use crate::phone::{PhoneConfig, PhoneEvent, PressVia};
use crate::service::Service;
use crate::sip::Timers;
use crate::vocab::Transport;

/// How many verifications, by how many requesters at once.
#[derive(Debug, Clone, Copy)]
pub struct LatencyArgs {
    pub calls: usize,
    pub concurrency: usize,
}

/// How often a requester reads the record while it waits for the outcome.
const OUTCOME_POLL: Duration = Duration::from_millis(2);
/// How long any one step may take before the verification counts as stuck.
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// What the phone and the webhook receiver saw, as it happened.
#[derive(Default)]
struct Observed {
    /// INVITEs of new calls, by Call-ID.
    invites: Arrivals,
    /// The first key press of each call, by Call-ID.
    keys: Arrivals,
    /// Webhooks, by verification id.
    webhooks: Arrivals,
}

/// One measured verification.
struct Sample {
    outcome: String,
    post_to_invite: Option<Duration>,
    key_to_outcome: Option<Duration>,
    key_to_webhook: Option<Duration>,
}

/// Runs the benchmark; its result as the JSON line to print.
pub async fn run(args: LatencyArgs) -> Result<Value, BenchError> {
    let folder = std::env::temp_dir().join(format!("pound-bench-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&folder)?;
    let result = bench(&folder, args).await;
    let _ = std::fs::remove_dir_all(&folder);
    result
}

async fn bench(folder: &std::path::Path, args: LatencyArgs) -> Result<Value, BenchError> {
    let observed = Arc::new(Observed::default());
    let (phone_address, phone_task) = start_phone(observed.clone()).await?;
    let (hook_url, receiver_task) = start_receiver(observed.clone()).await?;
    let key = format!("bench_{:016x}", rand::random::<u64>());
    let service = Service::start(config(folder, &key, phone_address, args)).await?;
    let requester =
        Requester { client: reqwest::Client::new(), api: format!("http://{}", service.api), key, hook_url, observed };
    let measured = measure(Arc::new(requester), args).await;
    service.stop().await;
    phone_task.abort();
    receiver_task.abort();
    let samples = measured?;
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for sample in &samples {
        *outcomes.entry(sample.outcome.clone()).or_default() += 1;
    }
    let series = |pick: fn(&Sample) -> Option<Duration>| summary(&samples.iter().filter_map(pick).collect::<Vec<_>>());
    Ok(json!({
        "bench": "latency",
        "calls": samples.len(),
        "concurrency": args.concurrency,
        "post_to_invite_ms": series(|s| s.post_to_invite),
        "key_to_outcome_ms": series(|s| s.key_to_outcome),
        "key_to_webhook_ms": series(|s| s.key_to_webhook),
        "outcomes": outcomes,
    }))
}

/// `pound serve`'s defaults, on loopback, with the limits that would
/// refuse a benchmark's traffic (cooldowns, hourly budgets, the prefix
/// breaker, the trunk's pacing) out of the way.
fn config(folder: &std::path::Path, key: &str, phone: SocketAddr, args: LatencyArgs) -> Config {
    let mut config = Config::default();
    config.store.url = format!("sqlite://{}", folder.join("pound.db").display());
    config.api.bind = "127.0.0.1:0".parse().expect("literal");
    config.api.keys = vec![key.to_string().into()];
    config.trunk.uri = format!("sip:{phone}");
    config.trunk.calls_per_second = 10_000.0;
    config.sip.bind = "127.0.0.1:0".parse().expect("literal");
    config.webhooks.secret = "bench".into();
    config.webhooks.allow_private = true;
    config.engine.max_concurrent_calls = config.engine.max_concurrent_calls.max(args.concurrency * 8);
    config.engine.shutdown_grace_s = 10;
    let policy = &mut config.policy;
    policy.cooldown_s = 0;
    let plenty = u32::try_from(args.calls.saturating_mul(4)).unwrap_or(u32::MAX).max(1000);
    policy.max_per_key_per_hour = plenty;
    policy.max_per_country_per_hour = plenty;
    policy.max_per_prefix_per_hour = plenty;
    policy.max_global_per_hour = plenty;
    policy.breaker_numbers = plenty;
    config
}

/// The simulated phone, recording when each INVITE and key press happens.
async fn start_phone(observed: Arc<Observed>) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), BenchError> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal");
    let setup = PhoneSetup {
        listen: loopback,
        calls: None,
        config: PhoneConfig {
            local_sip: loopback,
            transport: Transport::Udp,
            local_rtp: loopback,
            press: "#".into(),
            play: None,
            early_media: None,
            via: PressVia::Rfc4733,
            press_after: Duration::from_millis(500),
            answer_after: Duration::from_millis(100),
            reject: None,
            never_answer: false,
            hangup_after: None,
            silent: false,
            codecs: vec![Codec::Pcmu],
            srtp: crate::vocab::SrtpPolicy::Off,
            timers: Timers::default(),
        },
        tls: Default::default(),
    };
    let (ready, address) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let on_ready = move |address| {
            let _ = ready.send(address);
        };
        let on_event = move |event: &PhoneEvent| match event {
            PhoneEvent::Invited { call_id } => observed.invites.record(call_id),
            PhoneEvent::KeyPressed { call_id, .. } => observed.keys.record(call_id),
            PhoneEvent::CallEnded { .. } => {}
        };
        if let Err(error) = run_phone(setup, on_ready, on_event).await {
            tracing::error!(%error, "the simulated phone stopped");
        }
    });
    let address = address.await.map_err(|_| BenchError::Phone)?;
    Ok((address, task))
}

/// The webhook receiver: records each webhook's arrival by verification id.
async fn start_receiver(observed: Arc<Observed>) -> Result<(String, tokio::task::JoinHandle<()>), BenchError> {
    async fn receive(State(observed): State<Arc<Observed>>, body: axum::body::Bytes) {
        if let Ok(body) = serde_json::from_slice::<Value>(&body)
            && let Some(id) = body["verification"]["id"].as_str()
        {
            observed.webhooks.record(id);
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new().route("/hook", post(receive)).with_state(observed);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "the webhook receiver stopped");
        }
    });
    Ok((url, task))
}

/// One warm-up verification, then `args.calls` by `args.concurrency` requesters.
async fn measure(requester: Arc<Requester>, args: LatencyArgs) -> Result<Vec<Sample>, BenchError> {
    requester.verify(0).await?;
    let next = Arc::new(AtomicUsize::new(1));
    let mut requesters = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (requester, next) = (requester.clone(), next.clone());
        requesters.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n > args.calls {
                    return Ok::<_, BenchError>(samples);
                }
                samples.push(requester.verify(n).await?);
            }
        });
    }
    let mut samples = Vec::with_capacity(args.calls);
    while let Some(joined) = requesters.join_next().await {
        samples.extend(joined.map_err(|e| BenchError::Api(format!("a requester failed: {e}")))??);
    }
    Ok(samples)
}

/// What a registration service does, timed.
struct Requester {
    client: reqwest::Client,
    api: String,
    key: String,
    hook_url: String,
    observed: Arc<Observed>,
}

impl Requester {
    /// Submits verification `n` and follows it to its webhook.
    async fn verify(&self, n: usize) -> Result<Sample, BenchError> {
        // The NANP range reserved for fiction: 555-0100 to 0199.
        let phone = format!("+1415555{:04}", 100 + n % 100);
        let body = json!({"phone": phone, "user": format!("bench-{n}@example.com"), "callback_url": self.hook_url});
        let response = self
            .client
            .post(format!("{}/v1/verifications", self.api))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await?;
        let accepted = Instant::now();
        let status = response.status();
        let created: Value = response.json().await?;
        if status.as_u16() != 202 {
            return Err(BenchError::Api(format!("POST answered {status}: {created}")));
        }
        let id = created["id"].as_str().ok_or_else(|| BenchError::Api(format!("no id in {created}")))?.to_string();
        let deadline = accepted + STEP_LIMIT;
        let call_id = self.call_id(&id, deadline).await?;
        let invite = self.observed.invites.wait(&call_id, deadline).await;
        let key = self.observed.keys.wait(&call_id, deadline).await;
        let (outcome, visible) = self.outcome(&id, deadline).await?;
        let webhook = self.observed.webhooks.wait(&id, Instant::now() + STEP_LIMIT).await;
        let since = |from: Option<Instant>, to: Option<Instant>| Some(to?.saturating_duration_since(from?));
        Ok(Sample {
            outcome,
            post_to_invite: since(Some(accepted), invite),
            key_to_outcome: since(key, Some(visible)),
            key_to_webhook: since(key, webhook),
        })
    }

    async fn record(&self, id: &str) -> Result<Value, BenchError> {
        let url = format!("{}/v1/verifications/{id}", self.api);
        Ok(self.client.get(url).bearer_auth(&self.key).send().await?.json().await?)
    }

    /// The Call-ID of the verification's first call, once it is placed: how
    /// the phone's observations are matched to the verification.
    async fn call_id(&self, id: &str, deadline: Instant) -> Result<String, BenchError> {
        loop {
            let record = self.record(id).await?;
            if let Some(call_id) = record["attempts"][0]["call_id"].as_str() {
                return Ok(call_id.to_string());
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Api(format!("{id} was never dialled: {record}")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The outcome once the API shows one, and when it first did.
    async fn outcome(&self, id: &str, deadline: Instant) -> Result<(String, Instant), BenchError> {
        loop {
            let record = self.record(id).await?;
            if let Some(outcome) = record["outcome"].as_str() {
                return Ok((outcome.to_string(), Instant::now()));
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Api(format!("{id} never completed: {record}")));
            }
            tokio::time::sleep(OUTCOME_POLL).await;
        }
    }
}

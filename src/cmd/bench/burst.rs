//! `pound bench burst`: N `POST /v1/verifications` sent at once (issue 10,
//! "intake at rate"), at most C in flight, each on its own connection while
//! C allow; the latency of every answer, what was accepted, what was told to
//! come back later (`429` with `Retry-After`), and what got no answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::BenchError;
use super::harness::{Callee, CalleeKind, Node, machine, number, post, round, status_counts, store_name};
use super::summary;
use crate::phone::PressVia;

/// What `pound bench burst` was asked to do.
#[derive(Debug, Clone)]
pub struct BurstArgs {
    pub requests: usize,
    /// Requests in flight at once (each its own connection while this many are open).
    pub concurrency: usize,
    pub callee: CalleeKind,
    pub store: Option<String>,
    /// The node's `api.queue_limit`; its default when not given.
    pub queue_limit: Option<usize>,
    /// Another pound binary to run as the node (A/B against a build of another commit).
    pub node: Option<std::path::PathBuf>,
}

/// A request unanswered after this counts as timed out: far past any
/// latency the contract allows, so only a request left waiting reaches it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls the node starts per second while the burst is answered: the
/// accepted verifications are dialled meanwhile, as on a working node, so
/// the engine's claims share the store with the API as they would.
const TRUNK_CPS: f64 = 100.0;

/// Calls the node holds at once.
const MAX_CALLS: usize = 200;

/// Requests sent one by one before the burst, unmeasured: the first
/// request of a fresh node prepares its statements and fills its caches.
const WARM_UP: usize = 5;

/// One answer (or none) to one POST.
struct Answer {
    status: Option<u16>,
    /// Why there was none: the innermost cause (a reset, a refused connect).
    error: Option<String>,
    timed_out: bool,
    /// A 429 that says when to come back.
    retry_after: bool,
    latency: Duration,
}

/// Runs the benchmark; the JSON line to print.
pub async fn burst(args: BurstArgs) -> Result<Value, BenchError> {
    if args.requests == 0 || args.concurrency == 0 {
        return Err(BenchError::Measure("--requests and --concurrency must be positive".into()));
    }
    let callee = Callee::start(args.callee, PressVia::Rfc4733, Duration::from_secs(1))?;
    let node = Node::start(
        &callee.uri,
        TRUNK_CPS,
        MAX_CALLS,
        Duration::from_secs(1),
        args.store.as_deref(),
        args.node.as_deref(),
        &args.queue_limit.map_or_else(String::new, |limit| format!("queue_limit = {limit}\n")),
    )?;
    let client = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).pool_max_idle_per_host(args.concurrency).build()?;
    // The burst's numbers follow the warm-up's, so none repeats.
    for i in 0..WARM_UP {
        let (answer, _) = post(&client, &node.api, &number(i)).await;
        let status = answer?.status();
        if status.as_u16() != 202 {
            return Err(BenchError::Api(format!("the warm-up request was answered {status}")));
        }
    }

    let in_flight = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in WARM_UP..WARM_UP + args.requests {
        let (client, api, in_flight) = (client.clone(), node.api.clone(), in_flight.clone());
        requests.spawn(async move {
            let _sending = in_flight.acquire_owned().await.expect("never closed");
            let (answer, latency) = post(&client, &api, &number(i)).await;
            match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key(reqwest::header::RETRY_AFTER);
                    // Read to the end, so the connection is free for the next request.
                    let _ = response.bytes().await;
                    Answer { status: Some(status), error: None, timed_out: false, retry_after, latency }
                }
                Err(error) => Answer {
                    status: None,
                    error: Some(innermost(&error)),
                    timed_out: error.is_timeout(),
                    retry_after: false,
                    latency,
                },
            }
        });
    }
    let mut answers = Vec::with_capacity(args.requests);
    while let Some(joined) = requests.join_next().await {
        answers.push(joined.map_err(|e| BenchError::Measure(e.to_string()))?);
    }
    let wall = started.elapsed();

    let mut statuses = BTreeMap::<u16, u64>::new();
    for answer in &answers {
        *statuses.entry(answer.status.unwrap_or(0)).or_default() += 1;
    }
    let latencies = |keep: fn(&Answer) -> bool| -> Vec<Duration> {
        answers.iter().filter(|a| keep(a)).map(|a| a.latency).collect()
    };
    let mut errors = BTreeMap::<&str, u64>::new();
    for error in answers.iter().filter_map(|a| a.error.as_deref()) {
        *errors.entry(error).or_default() += 1;
    }
    let accepted = statuses.get(&202).copied().unwrap_or(0);
    Ok(json!({
        "bench": "burst",
        "store": store_name(args.store.as_deref()),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "queue_limit": args.queue_limit.map_or(Value::from("default"), Value::from),
        "statuses": status_counts(statuses),
        "accepted": accepted,
        "timeouts": answers.iter().filter(|a| a.timed_out).count(),
        "no_answer": answers.iter().filter(|a| a.status.is_none()).count(),
        "no_answer_causes": errors,
        "429_without_retry_after": answers.iter().filter(|a| a.status == Some(429) && !a.retry_after).count(),
        // Every answer, whatever its status; then the accepted ones alone.
        "ms": summary(&latencies(|a| a.status.is_some())),
        "accepted_ms": summary(&latencies(|a| a.status == Some(202))),
        "wall_ms": round(wall.as_secs_f64() * 1000.0),
        "accepted_per_s": round(accepted as f64 / wall.as_secs_f64()),
        "machine": machine(),
    }))
}

/// The innermost cause of a failed request: reqwest's own message only
/// names the URL.
fn innermost(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

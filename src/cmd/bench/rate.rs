//! `pound bench rate`: verifications offered through the API at a fixed
//! rate (open loop: a slow answer does not slow the offer), what was
//! accepted, the POST latency, and how every accepted one ended.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::BenchError;
use super::harness::{Callee, CalleeKind, Node, machine, metrics, number, outcomes, round, submit};
use super::load::via_name;
use super::summary;
use crate::phone::PressVia;

/// What `pound bench rate` was asked to do.
#[derive(Debug, Clone)]
pub struct RateArgs {
    /// Verifications offered per second.
    pub cps: f64,
    pub seconds: f64,
    pub via: PressVia,
    pub callee: CalleeKind,
    /// From the answer to the key press.
    pub hold: Duration,
    pub store: Option<String>,
    /// Another pound binary to run as the node (A/B against a build of another commit).
    pub node: Option<std::path::PathBuf>,
}

/// Runs the benchmark; the JSON line to print.
pub async fn rate(args: RateArgs) -> Result<Value, BenchError> {
    if args.cps.is_nan() || args.seconds.is_nan() || args.cps <= 0.0 || args.seconds <= 0.0 {
        return Err(BenchError::Measure("--cps and --seconds must be positive".into()));
    }
    let offered = (args.cps * args.seconds).round() as usize;
    // Calls last the hold, the confirmation prompt and the goodbye: room for
    // every call that can be up at once at this rate, so the node's own
    // concurrency limit is not what is measured.
    let concurrent = ((args.cps * (args.hold.as_secs_f64() + 10.0)).ceil() as usize).max(16);
    let callee = Callee::start(args.callee, args.via, args.hold)?;
    let node =
        Node::start(&callee.uri, args.cps, concurrent, args.hold, args.store.as_deref(), args.node.as_deref(), "")?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = node.usage()?;

    let started = Instant::now();
    let mut submissions = tokio::task::JoinSet::new();
    for i in 0..offered {
        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / args.cps)).into()).await;
        let (client, api) = (client.clone(), node.api.clone());
        submissions.spawn(async move { submit(&client, &api, &number(i)).await });
    }
    let mut accepted_latencies = Vec::with_capacity(offered);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    while let Some(joined) = submissions.join_next().await {
        let (status, latency) = joined.map_err(|e| BenchError::Measure(e.to_string()))?;
        *statuses.entry(status).or_default() += 1;
        if status == 202 {
            accepted_latencies.push(latency);
        }
    }
    let offer_s = started.elapsed().as_secs_f64();
    let accepted = accepted_latencies.len();

    let drained_by = Instant::now() + args.hold + Duration::from_secs(180);
    let outcome_counts = loop {
        let outcomes = outcomes(&metrics(&client, &node).await?);
        let done: u64 = outcomes.values().filter_map(Value::as_u64).sum();
        if done as usize >= accepted || Instant::now() > drained_by {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let drained_s = started.elapsed().as_secs_f64();
    let after = node.usage()?;
    Ok(json!({
        "bench": "rate",
        "via": via_name(args.via),
        "callee": callee.name,
        "store": if args.store.is_some() { "postgres" } else { "sqlite" },
        "offered_per_s": args.cps,
        "seconds": args.seconds,
        "offered": offered,
        "accepted": accepted,
        "accepted_percent": round(100.0 * accepted as f64 / offered.max(1) as f64),
        "accepted_per_s": round(accepted as f64 / offer_s),
        "post_status": super::harness::status_counts(statuses),
        "post_ms": summary(&accepted_latencies),
        "outcomes": outcome_counts,
        "drained_s": round(drained_s),
        "cpu_ms_per_call": round((after.cpu_s - before.cpu_s) * 1000.0 / accepted.max(1) as f64),
        "rss_kb": after.rss_kb,
        "machine": machine(),
    }))
}

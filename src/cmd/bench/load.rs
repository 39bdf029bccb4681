//! `pound bench load`: N calls held at once; the node's own CPU time per
//! concurrent call and resident memory per call while all of them are up.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::BenchError;
use super::harness::{Callee, CalleeKind, Node, machine, metric, metrics, number, outcomes, round, submit};
use super::summary;
use crate::phone::PressVia;

/// What `pound bench load` was asked to do.
#[derive(Debug, Clone)]
pub struct LoadArgs {
    pub calls: usize,
    /// From the answer to the key press: how long every call is held.
    pub hold: Duration,
    pub via: PressVia,
    pub callee: CalleeKind,
    /// Verifications submitted per second (and calls started per second).
    pub submit_rate: f64,
    /// `postgres://…`; a fresh SQLite file otherwise.
    pub store: Option<String>,
    /// Another pound binary to run as the node (A/B against a build of another commit).
    pub node: Option<std::path::PathBuf>,
}

/// The measuring window ends this long before the first call may end.
const MARGIN: Duration = Duration::from_secs(2);

/// Runs the benchmark; the JSON line to print.
pub async fn load(args: LoadArgs) -> Result<Value, BenchError> {
    if args.calls == 0 || args.submit_rate.is_nan() || args.submit_rate <= 0.0 {
        return Err(BenchError::Measure("--calls and --submit-rate must be positive".into()));
    }
    let callee = Callee::start(args.callee, args.via, args.hold)?;
    let node = Node::start(
        &callee.uri,
        args.submit_rate,
        args.calls,
        args.hold,
        args.store.as_deref(),
        args.node.as_deref(),
        "",
    )?;
    let client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = node.usage()?;

    let started = Instant::now();
    let mut latencies = Vec::with_capacity(args.calls);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    let mut submissions = tokio::task::JoinSet::new();
    for i in 0..args.calls {
        let due = started + Duration::from_secs_f64(i as f64 / args.submit_rate);
        tokio::time::sleep_until(due.into()).await;
        let (client, api) = (client.clone(), node.api.clone());
        submissions.spawn(async move { submit(&client, &api, &number(i)).await });
    }
    while let Some(joined) = submissions.join_next().await {
        let (status, latency) = joined.map_err(|e| BenchError::Measure(e.to_string()))?;
        latencies.push(latency);
        *statuses.entry(status).or_default() += 1;
    }
    let submitted_in = started.elapsed();
    let accepted = statuses.get(&202).copied().unwrap_or(0) as usize;
    if accepted == 0 {
        return Err(BenchError::Measure(format!("the node accepted no verification: POST statuses {statuses:?}")));
    }

    // Every call up: the calls in progress reach N (the callee answers at once).
    let deadline = started + args.hold;
    let all_up = loop {
        let in_progress = metric(&metrics(&client, &node).await?, "pound_calls_in_progress") as usize;
        if in_progress >= accepted {
            break Instant::now();
        }
        if Instant::now() + MARGIN >= deadline {
            return Err(BenchError::Measure(format!(
                "only {in_progress} of {} calls were up before the first could end: raise --hold or --submit-rate",
                args.calls
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The first call was answered no earlier than `started`, so it holds
    // at least until `deadline`; measure from settled to just before it.
    let settle = all_up + Duration::from_millis(500);
    let window_end = deadline
        .checked_sub(MARGIN)
        .filter(|end| *end > settle + Duration::from_secs(1))
        .ok_or_else(|| BenchError::Measure("the hold leaves under a second with every call up: raise --hold".into()))?;
    tokio::time::sleep_until(settle.into()).await;
    let (from, at_from) = (node.usage()?, Instant::now());
    tokio::time::sleep_until(window_end.into()).await;
    let (to, at_to) = (node.usage()?, Instant::now());
    let held = metric(&metrics(&client, &node).await?, "pound_calls_in_progress") as usize;
    if held < accepted {
        return Err(BenchError::Measure(format!(
            "{} of {accepted} calls ended before the window did: the measurement would not be per held call",
            accepted - held
        )));
    }

    let finished_by = Instant::now() + args.hold + Duration::from_secs(120);
    let outcome_counts = loop {
        let now = metrics(&client, &node).await?;
        let outcomes = outcomes(&now);
        let done: u64 = outcomes.values().filter_map(Value::as_u64).sum();
        if done as usize >= accepted || Instant::now() > finished_by {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let window = (at_to - at_from).as_secs_f64();
    let cpu_share = (to.cpu_s - from.cpu_s) / window;
    let calls = held.max(1) as f64;
    Ok(json!({
        "bench": "load",
        "via": via_name(args.via),
        "callee": callee.name,
        "store": if args.store.is_some() { "postgres" } else { "sqlite" },
        "calls": args.calls,
        "calls_held_in_window": held,
        "hold_s": args.hold.as_secs_f64(),
        "window_s": round(window),
        "cpu_percent_of_a_core": round(cpu_share * 100.0),
        "cpu_percent_per_call": round(cpu_share * 100.0 / calls),
        "rss_kb_idle": idle.rss_kb,
        "rss_kb_loaded": to.rss_kb,
        "rss_kb_per_call": round(to.rss_kb.saturating_sub(idle.rss_kb) as f64 / calls),
        "submitted_in_s": round(submitted_in.as_secs_f64()),
        "post_status": super::harness::status_counts(statuses),
        "post_ms": summary(&latencies),
        "outcomes": outcome_counts,
        "machine": machine(),
    }))
}

pub(super) fn via_name(via: PressVia) -> &'static str {
    match via {
        PressVia::Rfc4733 => "rfc4733",
        PressVia::Inband => "inband",
        PressVia::Info => "info",
    }
}

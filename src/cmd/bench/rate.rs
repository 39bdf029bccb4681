//! `pound bench rate`: verifications offered through the API at a fixed
//! rate (open loop: a slow answer does not slow the offer), what was
//! accepted, the POST latency, and how every accepted one ended. With
//! `--nodes N` (PostgreSQL) N nodes share the store and the offer, and every
//! accepted verification's record is read back to show that none was
//! dialled twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::BenchError;
use super::harness::{Callee, CalleeKind, Node, machine, metrics, number, outcomes, post, round, status_counts};
use super::load::via_name;
use super::summary;
use crate::phone::PressVia;

/// What `pound bench rate` was asked to do.
#[derive(Debug, Clone)]
pub struct RateArgs {
    /// Verifications offered per second (in all, across the nodes).
    pub cps: f64,
    pub seconds: f64,
    pub via: PressVia,
    pub callee: CalleeKind,
    /// From the answer to the key press.
    pub hold: Duration,
    pub store: Option<String>,
    /// Another pound binary to run as the node (A/B against a build of another commit).
    pub node: Option<std::path::PathBuf>,
    /// Nodes sharing the store (more than one needs PostgreSQL); the offer
    /// goes to them in turn.
    pub nodes: usize,
}

/// Runs the benchmark; the JSON line to print.
pub async fn rate(args: RateArgs) -> Result<Value, BenchError> {
    if args.cps.is_nan() || args.seconds.is_nan() || args.cps <= 0.0 || args.seconds <= 0.0 {
        return Err(BenchError::Measure("--cps and --seconds must be positive".into()));
    }
    if args.nodes == 0 {
        return Err(BenchError::Measure("--nodes must be at least 1".into()));
    }
    if args.nodes > 1 && !args.store.as_deref().is_some_and(|url| url.starts_with("postgres")) {
        return Err(BenchError::Measure("--nodes above 1 needs a shared store: --store postgres://…".into()));
    }
    let offered = (args.cps * args.seconds).round() as usize;
    let per_node_cps = args.cps / args.nodes as f64;
    // Calls last the hold, the confirmation prompt and the goodbye: room for
    // every call that can be up at once at this rate, so the node's own
    // concurrency limit is not what is measured.
    let concurrent = ((per_node_cps * (args.hold.as_secs_f64() + 10.0)).ceil() as usize).max(16);
    let callee = Callee::start(args.callee, args.via, args.hold)?;
    let nodes = (0..args.nodes)
        .map(|_| {
            Node::start(
                &callee.uri,
                per_node_cps,
                concurrent,
                args.hold,
                args.store.as_deref(),
                args.node.as_deref(),
                "",
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = nodes.iter().map(Node::usage).collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    let mut submissions = tokio::task::JoinSet::new();
    for i in 0..offered {
        tokio::time::sleep_until((started + Duration::from_secs_f64(i as f64 / args.cps)).into()).await;
        let (client, api) = (client.clone(), nodes[i % nodes.len()].api.clone());
        submissions.spawn(async move { submit_for_id(&client, &api, &number(i)).await });
    }
    let mut accepted_latencies = Vec::with_capacity(offered);
    let mut accepted_ids = Vec::with_capacity(offered);
    let mut statuses = BTreeMap::<u16, u64>::new();
    while let Some(joined) = submissions.join_next().await {
        let (status, latency, id) = joined.map_err(|e| BenchError::Measure(e.to_string()))?;
        *statuses.entry(status).or_default() += 1;
        if status == 202 {
            accepted_latencies.push(latency);
            accepted_ids.extend(id);
        }
    }
    let offer_s = started.elapsed().as_secs_f64();
    let accepted = accepted_latencies.len();

    let drained_by = Instant::now() + args.hold + Duration::from_secs(180);
    let outcome_counts = loop {
        let outcomes = all_outcomes(&client, &nodes).await?;
        let done: u64 = outcomes.values().filter_map(Value::as_u64).sum();
        if done as usize >= accepted || Instant::now() > drained_by {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let drained_s = started.elapsed().as_secs_f64();
    let after = nodes.iter().map(Node::usage).collect::<Result<Vec<_>, _>>()?;
    let node_cpu_s: Vec<f64> = before.iter().zip(&after).map(|(b, a)| a.cpu_s - b.cpu_s).collect();
    let cpu_s: f64 = node_cpu_s.iter().sum();
    let verified = outcome_counts.get("verified").and_then(Value::as_u64).unwrap_or(0);
    let mut line = json!({
        "bench": "rate",
        "via": via_name(args.via),
        "callee": callee.name,
        "store": if args.store.is_some() { "postgres" } else { "sqlite" },
        "nodes": args.nodes,
        "offered_per_s": args.cps,
        "seconds": args.seconds,
        "offered": offered,
        "accepted": accepted,
        "accepted_percent": round(100.0 * accepted as f64 / offered.max(1) as f64),
        "accepted_per_s": round(accepted as f64 / offer_s),
        "post_status": status_counts(statuses),
        "post_ms": summary(&accepted_latencies),
        "outcomes": outcome_counts,
        "drained_s": round(drained_s),
        "cpu_ms_per_call": round(cpu_s * 1000.0 / accepted.max(1) as f64),
        "verified_per_node_cpu_s": round(verified as f64 / cpu_s.max(f64::MIN_POSITIVE)),
        "node_cpu_s": node_cpu_s.iter().copied().map(round).collect::<Vec<_>>(),
        "rss_kb": after.iter().map(|usage| usage.rss_kb).max(),
        "machine": machine(),
    });
    if args.nodes > 1 {
        line["dialled"] = dialled(&client, &nodes[0].api, &accepted_ids).await?;
    }
    Ok(line)
}

/// `POST /v1/verifications`: the status, the latency to the response header,
/// and the new verification's id when accepted.
async fn submit_for_id(client: &reqwest::Client, api: &str, phone: &str) -> (u16, Duration, Option<String>) {
    let (answer, latency) = post(client, api, phone).await;
    let Ok(response) = answer else { return (0, latency, None) };
    let status = response.status().as_u16();
    let id = match status {
        202 => response.json::<Value>().await.ok().and_then(|body| body["id"].as_str().map(str::to_string)),
        _ => None,
    };
    (status, latency, id)
}

/// Completed verifications by outcome, summed over the nodes.
async fn all_outcomes(client: &reqwest::Client, nodes: &[Node]) -> Result<serde_json::Map<String, Value>, BenchError> {
    let mut sum = BTreeMap::<String, u64>::new();
    for node in nodes {
        for (outcome, n) in outcomes(&metrics(client, node).await?) {
            *sum.entry(outcome).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    Ok(sum.into_iter().map(|(outcome, n)| (outcome, Value::from(n))).collect())
}

/// Every accepted verification's record, read back through the API: how
/// many had how many attempts (a verification dialled by two nodes has two),
/// how many distinct Call-IDs were placed, and the attempts each node ran.
async fn dialled(client: &reqwest::Client, api: &str, ids: &[String]) -> Result<Value, BenchError> {
    let mut by_attempts = BTreeMap::<usize, u64>::new();
    let mut by_node = BTreeMap::<String, u64>::new();
    let mut call_ids = std::collections::HashSet::new();
    let mut unread = 0u64;
    for id in ids {
        let response =
            client.get(format!("{api}/v1/verifications/{id}")).bearer_auth(super::harness::KEY).send().await?;
        let Ok(record) = response.error_for_status()?.json::<Value>().await else {
            unread += 1;
            continue;
        };
        let attempts = record["attempts"].as_array().map(Vec::as_slice).unwrap_or_default();
        *by_attempts.entry(attempts.len()).or_default() += 1;
        for attempt in attempts {
            *by_node.entry(attempt["node"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            call_ids.insert(attempt["call_id"].as_str().unwrap_or_default().to_string());
        }
    }
    Ok(json!({
        "verifications_by_attempts": by_attempts.into_iter().map(|(n, count)| (n.to_string(), Value::from(count))).collect::<serde_json::Map<_, _>>(),
        "distinct_call_ids": call_ids.len(),
        "attempts_by_node": by_node.into_values().collect::<Vec<_>>(),
        "unreadable_records": unread,
    }))
}

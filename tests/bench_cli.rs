//! `pound bench load` and `pound bench rate` end to end with `pound phone`
//! as the callee (sipp is not needed): each prints one JSON line whose
//! figures come from a node that really held and verified the calls. The
//! figures themselves are not asserted (timing claims live in the README).

mod common;

use common::postgres::{drop_database, fresh_database};
use common::process::pound;
use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let output = pound().arg("bench").args(args).output().expect("pound bench runs");
    assert!(output.status.success(), "pound bench {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn load_holds_every_call_and_reports_the_nodes_own_cost() {
    // A debug build beside the other tests of this file needs seconds to bring
    // all eight calls up; the hold must outlast that with room for a window.
    let line = bench(&["load", "--calls", "8", "--hold", "10", "--submit-rate", "20", "--callee", "phone"]);
    assert_eq!(line["bench"], "load", "{line}");
    assert_eq!(line["callee"], "pound phone", "{line}");
    assert_eq!(line["calls_held_in_window"], 8, "every call was up while measured: {line}");
    assert_eq!(line["outcomes"]["verified"], 8, "{line}");
    assert!(line["cpu_percent_per_call"].as_f64().unwrap() > 0.0, "{line}");
    assert!(line["rss_kb_loaded"].as_u64().unwrap() >= line["rss_kb_idle"].as_u64().unwrap(), "{line}");
    assert!(line["post_ms"]["p99"].as_f64().is_some(), "{line}");
}

#[test]
fn rate_offers_open_loop_and_counts_what_was_accepted_and_how_it_ended() {
    let line = bench(&["rate", "--cps", "10", "--seconds", "2", "--hold", "0.5", "--callee", "phone"]);
    assert_eq!((line["bench"].as_str(), line["offered"].as_u64()), (Some("rate"), Some(20)), "{line}");
    let accepted = line["accepted"].as_u64().unwrap();
    assert_eq!(accepted, 20, "{line}");
    assert_eq!(line["outcomes"]["verified"].as_u64(), Some(accepted), "{line}");
}

/// `pound bench ARGS` refused before measuring: exit 2; its stderr.
fn refused(args: &[&str]) -> String {
    let output = pound().arg("bench").args(args).output().expect("pound bench runs");
    assert_eq!(output.status.code(), Some(2), "pound bench {args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_hold_too_short_for_the_calls_is_refused_not_misreported() {
    let stderr = refused(&["load", "--calls", "40", "--hold", "1", "--submit-rate", "10", "--callee", "phone"]);
    assert!(stderr.contains("--hold"), "{stderr}");
}

#[tokio::test]
async fn rate_over_two_nodes_on_postgres_dials_every_verification_once() {
    let Ok(admin_url) = std::env::var("POUND_TEST_DATABASE_URL") else {
        eprintln!("POUND_TEST_DATABASE_URL is not set: the two-node bench did not run");
        return;
    };
    let (database, url) = fresh_database(&admin_url, "pound_bench").await;
    let line = bench(&[
        "rate",
        "--cps",
        "10",
        "--seconds",
        "3",
        "--hold",
        "0.5",
        "--callee",
        "phone",
        "--nodes",
        "2",
        "--store",
        &url,
    ]);
    assert_eq!((line["nodes"].as_u64(), line["accepted"].as_u64()), (Some(2), Some(30)), "{line}");
    assert_eq!(line["outcomes"]["verified"].as_u64(), Some(30), "each verified once across the nodes: {line}");
    let dialled = &line["dialled"];
    assert_eq!(dialled["verifications_by_attempts"], serde_json::json!({"1": 30}), "{line}");
    assert_eq!(dialled["distinct_call_ids"].as_u64(), Some(30), "{line}");
    let by_node: Vec<u64> =
        dialled["attempts_by_node"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert_eq!(by_node.len(), 2, "both nodes placed calls: {line}");
    assert_eq!(line["node_cpu_s"].as_array().map(Vec::len), Some(2), "{line}");
    assert!(line["verified_per_node_cpu_s"].as_f64().unwrap() > 0.0, "{line}");
    drop_database(&admin_url, &database).await;
}

#[test]
fn rate_over_several_nodes_without_a_shared_store_is_refused() {
    let stderr = refused(&["rate", "--cps", "10", "--seconds", "1", "--nodes", "2", "--callee", "phone"]);
    assert!(stderr.contains("--store postgres"), "{stderr}");
}

//! A burst of `POST /v1/verifications` sent at once to a real `pound serve`
//! (issue 10, "intake at rate"), with reqwest as the client: past
//! `api.queue_limit` requests waiting for the store, a request is answered
//! `429 queue_full` with `Retry-After` at once; the others wait and are
//! accepted; none hangs, none fails with a 5xx, and every 202 is in the
//! store while the refused ones left nothing there.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::process::{phone, serve_with_config};
use serde_json::{Value, json};

const KEY: &str = "burst-test-key";

/// Far past anything a queued request should wait: a request still
/// unanswered then was left hanging.
const HANG: Duration = Duration::from_secs(60);

/// `pound serve` admitting the test's numbers as fast as they come (the
/// cooldown, hourly limits and the prefix breaker are what other tests
/// cover), every connection from loopback allowed, with `queue_limit`.
fn config(queue_limit: usize) -> String {
    format!(
        "[api]\nqueue_limit = {queue_limit}\nmax_connections_per_client = 0\n\
         [trunk]\ncalls_per_second = 5\n\
         [policy]\ncooldown_s = 0\nallow_prefixes = [\"+1415\"]\nallowed_countries = []\n\
         max_per_key_per_hour = 100000\nmax_per_country_per_hour = 100000\nmax_per_prefix_per_hour = 100000\n\
         max_global_per_hour = 100000\nbreaker_numbers = 100000\n"
    )
}

/// One answer: status, the `error.code` of a refusal, `Retry-After`, the id of an acceptance.
struct Answer {
    status: u16,
    code: Option<String>,
    retry_after: Option<u64>,
    id: Option<String>,
}

/// `requests` POSTs at once, each on its own connection.
async fn burst(api: &str, requests: usize) -> Vec<Answer> {
    let client = reqwest::Client::builder().timeout(HANG).build().unwrap();
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..requests {
        let (client, url) = (client.clone(), format!("{api}/v1/verifications"));
        sent.spawn(async move {
            let phone = format!("+1415555{:04}", 1000 + i);
            let response = client
                .post(url)
                .bearer_auth(KEY)
                .json(&json!({"phone": phone, "user": format!("burst-{i}@example.com")}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("request {i} got no answer within {HANG:?}: {e}"));
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok()?.parse().ok());
            let body: Value = response.json().await.expect("a JSON body");
            Answer {
                status,
                code: body["error"]["code"].as_str().map(str::to_string),
                retry_after,
                id: body["id"].as_str().map(str::to_string),
            }
        });
    }
    let mut answers = Vec::with_capacity(requests);
    while let Some(answer) = sent.join_next().await {
        answers.push(answer.expect("no request task panicked"));
    }
    answers
}

/// The ids of every verification in the store, through the list endpoint.
async fn stored_ids(api: &str) -> HashSet<String> {
    let client = reqwest::Client::new();
    let mut ids = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{api}/v1/verifications?limit=100");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client.get(url).bearer_auth(KEY).send().await.unwrap().json().await.unwrap();
        for item in page["items"].as_array().expect("items") {
            ids.insert(item["id"].as_str().expect("an id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return ids,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_past_the_queue_limit_is_accepted_or_told_when_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (_phone, trunk) = phone(&["--answer-after", "0"]);
    let (_node, api) = serve_with_config(dir.path(), &trunk, &config(4), KEY);

    let answers = burst(&api, 300).await;

    let mut accepted = HashSet::new();
    let mut refused = 0;
    for answer in &answers {
        match answer.status {
            202 => {
                accepted.insert(answer.id.clone().expect("a 202 carries the record's id"));
            }
            429 => {
                assert_eq!(answer.code.as_deref(), Some("queue_full"));
                assert!(answer.retry_after.is_some_and(|s| s >= 1), "a 429 says when to come back");
                refused += 1;
            }
            status => panic!("a burst request was answered {status} ({:?})", answer.code),
        }
    }
    assert_eq!(accepted.len() + refused, 300);
    assert!(refused > 0, "300 requests at once never had more than 4 waiting for the store");
    assert!(!accepted.is_empty(), "requests within the limit wait and are accepted");
    // Every 202 is durable, and no refused request left a row.
    assert_eq!(stored_ids(&api).await, accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_within_the_queue_limit_is_accepted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (_phone, trunk) = phone(&["--answer-after", "0"]);
    let (_node, api) = serve_with_config(dir.path(), &trunk, &config(200), KEY);

    let answers = burst(&api, 200).await;

    let statuses: Vec<u16> = answers.iter().map(|a| a.status).filter(|&s| s != 202).collect();
    assert!(statuses.is_empty(), "every request of a burst within the limit is accepted, not {statuses:?}");
    let accepted: HashSet<String> = answers.into_iter().filter_map(|a| a.id).collect();
    assert_eq!(accepted.len(), 200);
    assert_eq!(stored_ids(&api).await, accepted);
}

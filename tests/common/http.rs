//! Reading pound's HTTP API from tests.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// GET `url` with the bearer `key` and parse the JSON body.
pub async fn get_json(client: &reqwest::Client, url: &str, key: &str) -> Value {
    client.get(url).bearer_auth(key).send().await.expect("the API answers").json().await.expect("a JSON body")
}

/// `POST {api}/v1/verifications` for `phone` (user bob@example.com) with
/// the bearer `key`; asserts 202 and returns the id.
pub async fn submit(client: &reqwest::Client, api: &str, key: &str, phone: &str) -> String {
    let response = client
        .post(format!("{api}/v1/verifications"))
        .bearer_auth(key)
        .json(&json!({"phone": phone, "user": "bob@example.com"}))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.expect("a JSON body")["id"].as_str().expect("an id").to_string()
}

/// Polls `GET {api}/v1/verifications/{id}` until its status is `status`
/// (60 s at most) and returns the record.
pub async fn wait_for(client: &reqwest::Client, api: &str, key: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = get_json(client, &format!("{api}/v1/verifications/{id}"), key).await;
        if record["status"] == status {
            return record;
        }
        assert!(Instant::now() < deadline, "never {status}: {record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

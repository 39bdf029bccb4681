//! Reading pound's HTTP API from tests.

use serde_json::Value;

/// GET `url` with the bearer `key` and parse the JSON body.
pub async fn get_json(client: &reqwest::Client, url: &str, key: &str) -> Value {
    client.get(url).bearer_auth(key).send().await.expect("the API answers").json().await.expect("a JSON body")
}

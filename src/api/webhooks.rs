//! Webhooks: signing, verifying, and delivery from the store's outbox.
//!
//! The store queues a webhook in the same transaction that finishes a
//! verification, so none is lost; [`deliver_webhooks`] leases due ones,
//! POSTs them and records each try. Delivery is at least once: a node that
//! dies between the POST and recording it lets the lease expire and the
//! webhook is sent again, so receivers deduplicate on the verification id.
//!
//! Signature (DESIGN.md §2): `Pound-Signature: t=<unix seconds>,v1=<hex
//! hmac-sha256(secret, "<t>.<body>")>`, the secret being that of the API key
//! that created the verification ([`Signer`]). The timestamp is signed with the
//! body so a captured request cannot be replayed later than the receiver's
//! tolerance; each try is signed afresh.
//!
//! Destinations are guarded against server-side request forgery
//! ([`super::ssrf`]): only addresses the [`TargetPolicy`] allows are
//! connected to, no proxy and no redirect is followed, and `last_error`
//! records what pound did in a fixed vocabulary ("refused: private
//! address", "timeout", "connection refused", "HTTP 5xx"), never what the
//! receiver said, so a webhook is not a port scanner or a status oracle.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::KeyRing;
use super::ssrf::{GuardedResolver, Refused, TargetPolicy, Unresolved};
use crate::clock::Clock;
use crate::metrics::{Metrics, WebhookResult};
use crate::store::{Store, StoreError, WebhookDelivery};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Pound-Signature";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &str) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed): the hmac crate
    // always returns Ok here and relies on that itself in `KeyInit::new`.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac
}

/// The `Pound-Signature` header value for `body` sent at `timestamp` (Unix
/// seconds): `t=<timestamp>,v1=<hex hmac-sha256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &str) -> String {
    sign_all(&[secret], timestamp, body)
}

/// [`sign`] with one `v1=` per secret, in order: during a rotation the new
/// secret and the previous one both sign, so a receiver holding either accepts.
pub fn sign_all<S: AsRef<[u8]>>(secrets: &[S], timestamp: i64, body: &str) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac(secret.as_ref(), timestamp, body).finalize().into_bytes()));
    }
    header
}

/// Checks a `Pound-Signature` header as a receiver should: one `t=` within
/// `tolerance_s` seconds of `now_unix`, and a `v1=` that is the HMAC of
/// `"<t>.<body>"` (compared in constant time). Several `v1=` are allowed, so
/// a sender rotating its secret can sign with both; any match is enough.
pub fn verify(secret: &[u8], header: &str, body: &str, now_unix: i64, tolerance_s: i64) -> bool {
    let mut timestamp = None;
    let mut timestamps = 0;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamps += 1;
                timestamp = t.parse::<i64>().ok();
            }
            Some(("v1", hex_sig)) => signatures.push(hex_sig),
            // Other schemes (a future v2) are skipped, not errors.
            _ => {}
        }
    }
    // Exactly one timestamp: with two, which one was signed is ambiguous.
    let (1, Some(timestamp)) = (timestamps, timestamp) else {
        return false;
    };
    if now_unix.abs_diff(timestamp) > tolerance_s.max(0).unsigned_abs() {
        return false;
    }
    signatures
        .into_iter()
        .filter_map(|sig| hex::decode(sig).ok())
        .any(|sig| mac(secret, timestamp, body).verify_slice(&sig).is_ok())
}

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Tries before giving up for good (the last failure stays visible).
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub first_retry: Duration,
    /// The longest wait between tries.
    pub max_retry: Duration,
    /// One POST, connection included.
    pub timeout: Duration,
    /// How often the outbox is checked when it was empty.
    pub poll_interval: Duration,
    /// Webhooks leased and sent (concurrently) per round.
    pub batch: u32,
    /// Which addresses webhooks may be sent to.
    pub targets: TargetPolicy,
    /// Notified by whoever queues a webhook on this node (the engine, as a
    /// call decides): the outbox is read at once, not at the next poll.
    /// Other nodes' webhooks are found by polling.
    pub queued: Arc<Notify>,
    /// Signatures, retries and the outbox's leases are timed by this.
    pub clock: Clock,
    /// Every webhook is POSTed to this HTTP service in the process instead
    /// of over the network (a simulation's receiver); `None` in a node.
    pub in_process: Option<axum::Router>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_attempts: 8,
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            batch: 32,
            targets: TargetPolicy::default(),
            queued: Arc::default(),
            clock: Clock::System,
            in_process: None,
        }
    }
}

impl WebhookConfig {
    /// The wait after the `failures`-th failed try (1 for the first):
    /// `first_retry * 2^(failures-1)`, capped at `max_retry`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_retry.saturating_mul(factor).min(self.max_retry)
    }

    /// How long a leased batch stays ours: every POST in it runs
    /// concurrently and is bounded by `timeout`, so twice that plus a second
    /// for recording the results is ample; a lease shorter than a try would
    /// let another node send the same webhook while ours is in flight.
    fn lease(&self) -> Duration {
        self.timeout.saturating_mul(2).saturating_add(Duration::from_secs(1))
    }
}

// Which secret signs a webhook (issue 7: a secret per API key).

/// Which secret signs a webhook.
#[derive(Clone)]
pub enum Signer {
    /// One secret for every webhook, whoever created the verification.
    Fixed(Arc<[u8]>),
    /// The secret of the API key that created the verification: a config
    /// key's from the ring, a stored key's from the store. Read at every try,
    /// so a rotated secret signs the webhooks still queued.
    PerKey(KeyRing),
}

impl From<Vec<u8>> for Signer {
    fn from(secret: Vec<u8>) -> Signer {
        Signer::Fixed(secret.into())
    }
}

impl From<KeyRing> for Signer {
    fn from(keys: KeyRing) -> Signer {
        Signer::PerKey(keys)
    }
}

impl Signer {
    /// The secrets that sign `delivery` now; none when its key has none.
    async fn secrets_for(
        &self,
        store: &dyn Store,
        delivery: &WebhookDelivery,
        now_ms: i64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys = match self {
            Signer::Fixed(secret) => return Ok(vec![secret.to_vec()]),
            Signer::PerKey(keys) => keys,
        };
        let Some(verification) = store.verification(&delivery.verification_id).await? else {
            return Ok(Vec::new());
        };
        let secrets = keys.webhook_secrets(store, &verification.api_key_id, now_ms).await?;
        Ok(secrets.into_iter().map(String::into_bytes).collect())
    }
}

/// `last_error` of a webhook whose key has no secret: never sent unsigned.
const NO_SECRET: &str = "refused: the API key that created the verification has no webhook secret";

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Delivers webhooks from the outbox until `shutdown` turns true (or its
/// sender is dropped). A round in flight is finished first, so no try is
/// left unrecorded. Store errors are logged and retried on the next poll.
pub async fn deliver_webhooks(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    signer: impl Into<Signer>,
    config: WebhookConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    // Redirects are not followed: a webhook is a POST to the URL the
    // requester gave, and following one would re-send the signed body to
    // wherever the receiver points (a private address included). No proxy
    // either: through one, the resolver would check the proxy's address
    // rather than the receiver's.
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver::new(config.targets.clone())))
        .user_agent(concat!("pound/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%err, "cannot build the webhook HTTP client; webhooks will not be delivered");
            return;
        }
    };
    let signer = Arc::new(signer.into());
    let config = Arc::new(config);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let sent = match store.due_webhooks(config.clock.unix_ms(), millis(config.lease()), config.batch.max(1)).await {
            Ok(due) => {
                let count = due.len();
                let mut round = JoinSet::new();
                for delivery in due {
                    round.spawn(deliver_one(
                        client.clone(),
                        store.clone(),
                        metrics.clone(),
                        signer.clone(),
                        config.clone(),
                        delivery,
                    ));
                }
                while let Some(joined) = round.join_next().await {
                    if let Err(err) = joined {
                        tracing::error!(%err, "a webhook delivery task failed");
                    }
                }
                count
            }
            Err(err) => {
                tracing::warn!(%err, "reading the webhook outbox failed");
                0
            }
        };
        // A full batch means more may be waiting: go again at once.
        if sent >= config.batch.max(1) as usize {
            continue;
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(config.poll_interval) => {}
            () = config.queued.notified() => {}
        }
    }
}

/// Sends one webhook and records the result.
async fn deliver_one(
    client: reqwest::Client,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    signer: Arc<Signer>,
    config: Arc<WebhookConfig>,
    delivery: WebhookDelivery,
) {
    let error = match signer.secrets_for(store.as_ref(), &delivery, config.clock.unix_ms()).await {
        Ok(secrets) if secrets.is_empty() => Some(NO_SECRET.to_string()),
        Ok(secrets) => match post(&client, &config, &secrets, &delivery).await {
            Ok(()) => None,
            Err(failure) => {
                // The details are for the operator's log; the record gets the class.
                tracing::warn!(webhook = %delivery.id, detail = %failure.detail, "webhook try failed");
                Some(failure.class)
            }
        },
        Err(err) => {
            // Not a try: the lease expires and the webhook is tried again.
            tracing::warn!(webhook = %delivery.id, %err, "reading the webhook's signing secret failed");
            return;
        }
    };
    let recorded = match error {
        None => {
            metrics.webhook(WebhookResult::Delivered);
            tracing::info!(webhook = %delivery.id, verification_id = %delivery.verification_id, "webhook delivered");
            store.webhook_delivered(&delivery.id, config.clock.unix_ms()).await
        }
        Some(error) => {
            // `attempts` counts the tries recorded before this one.
            let failures = delivery.attempts.saturating_add(1);
            let next = (failures < config.max_attempts)
                .then(|| config.clock.unix_ms().saturating_add(millis(config.backoff(failures))));
            metrics.webhook(if next.is_some() { WebhookResult::Failed } else { WebhookResult::GaveUp });
            tracing::warn!(
                webhook = %delivery.id,
                verification_id = %delivery.verification_id,
                attempt = failures,
                gave_up = next.is_none(),
                %error,
                "webhook delivery failed"
            );
            store.webhook_failed(&delivery.id, &error, next).await
        }
    };
    if let Err(err) = recorded {
        // The lease expires and the webhook is tried again: at least once.
        tracing::warn!(webhook = %delivery.id, %err, "recording a webhook try failed");
    }
}

/// A failed try: what the record says, and what the log says.
struct Failure {
    /// One of a fixed set of phrases about what pound did.
    class: String,
    /// The underlying error, without the URL (it may carry credentials).
    detail: String,
}

/// One POST signed with every secret in `secrets`, with the destination
/// checked first.
async fn post(
    client: &reqwest::Client,
    config: &WebhookConfig,
    secrets: &[Vec<u8>],
    delivery: &WebhookDelivery,
) -> Result<(), Failure> {
    let url = reqwest::Url::parse(&delivery.url)
        .map_err(|err| Failure { class: "invalid URL".into(), detail: err.to_string() })?;
    let signature = sign_all(secrets, config.clock.unix_ms().div_euclid(1000), &delivery.payload);
    let status = match &config.in_process {
        Some(receiver) => post_in_process(receiver.clone(), &url, signature, delivery).await?,
        None => {
            // A literal address is connected to without any resolver: judge it here.
            config
                .targets
                .check_host(&url)
                .map_err(|class| Failure { class: Refused(class).to_string(), detail: class.to_string() })?;
            client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .body(delivery.payload.clone())
                .send()
                .await
                .map_err(|err| Failure { class: error_class(&err), detail: err.without_url().to_string() })?
                .status()
        }
    };
    if status.is_success() {
        return Ok(());
    }
    // The status class only: the exact code would tell the requester what
    // kind of service answered.
    Err(Failure { class: format!("HTTP {}xx", status.as_u16() / 100), detail: status.to_string() })
}

/// The same POST handed to an HTTP service in the process.
async fn post_in_process(
    receiver: axum::Router,
    url: &reqwest::Url,
    signature: String,
    delivery: &WebhookDelivery,
) -> Result<reqwest::StatusCode, Failure> {
    use tower::ServiceExt;
    let failed = |detail: String| Failure { class: "request failed".into(), detail };
    let request = axum::http::Request::post(url.path())
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .body(axum::body::Body::from(delivery.payload.clone()))
        .map_err(|err| failed(err.to_string()))?;
    let response = receiver.oneshot(request).await.map_err(|err| failed(err.to_string()))?;
    Ok(response.status())
}

/// What a failed request means, in the fixed vocabulary of `last_error`.
fn error_class(err: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        if current.is::<Unresolved>() {
            return "DNS failure".into();
        }
        if current.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return "connection refused".into();
        }
        source = current.source();
    }
    if err.is_timeout() {
        "timeout".into()
    } else if err.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_documented() {
        // Expected value from an independent implementation:
        // printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign(b"secret", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }

    #[test]
    fn every_secret_signs_during_a_rotation() {
        let body = r#"{"a":1}"#;
        let both = sign_all(&[b"new".as_slice(), b"old".as_slice()], 1000, body);
        assert!(both.starts_with(&sign(b"new", 1000, body)), "{both}");
        assert!(verify(b"new", &both, body, 1000, 300) && verify(b"old", &both, body, 1000, 300));
        assert!(!verify(b"other", &both, body, 1000, 300));
    }

    #[test]
    fn verify_accepts_only_fresh_matching_signatures() {
        let body = r#"{"event":"verification.completed"}"#;
        let header = sign(b"s3cret", 1000, body);
        assert!(verify(b"s3cret", &header, body, 1000, 300));
        assert!(verify(b"s3cret", &header, body, 1300, 300));
        assert!(verify(b"s3cret", &header, body, 700, 300));
        assert!(!verify(b"s3cret", &header, body, 1301, 300), "too old");
        assert!(!verify(b"s3cret", &header, body, 699, 300), "from the future");
        assert!(!verify(b"other", &header, body, 1000, 300), "wrong secret");
        assert!(!verify(b"s3cret", &header, &format!("{body} "), 1000, 300), "body changed");
        let moved = header.replace("t=1000", "t=1001");
        assert!(!verify(b"s3cret", &moved, body, 1000, 300), "timestamp changed");
        assert!(!verify(b"s3cret", "", body, 1000, 300));
        assert!(!verify(b"s3cret", "t=1000", body, 1000, 300));
        assert!(!verify(b"s3cret", "v1=00", body, 1000, 300));
        assert!(!verify(b"s3cret", &format!("t=999,{header}"), body, 1000, 300), "two timestamps");
        assert!(!verify(b"s3cret", &format!("t=x,{header}"), body, 1000, 300), "two timestamps, one unreadable");
        let v1 = header.split_once(",v1=").unwrap().1;
        let rotated = format!("t=1000,v1={},v1={v1},v2=zz", "ab".repeat(32));
        assert!(verify(b"s3cret", &rotated, body, 1000, 300), "any v1 may match");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = WebhookConfig::default();
        assert_eq!(config.backoff(1), Duration::from_secs(5));
        assert_eq!(config.backoff(2), Duration::from_secs(10));
        assert_eq!(config.backoff(4), Duration::from_secs(40));
        assert_eq!(config.backoff(11), Duration::from_secs(3600));
        assert_eq!(config.backoff(40), Duration::from_secs(3600), "no overflow");
        assert_eq!(config.backoff(0), Duration::from_secs(5));
        assert!(config.lease() > config.timeout);
    }
}

//! Webhooks and server-side request forgery: callback URLs aimed at the
//! node itself, its private network or the cloud metadata address are
//! refused at delivery time (whatever the API let through), nothing reaches
//! a listener there, and `last_error` says what pound did, not what the
//! target answered. Operators opt in with `allow_private` / `allow_cidrs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pound::api::ssrf::TargetPolicy;
use pound::api::webhooks::{WebhookConfig, deliver_webhooks};
use pound::metrics::Metrics;
use pound::store::{NewVerification, Store, WebhookDelivery};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Counts every TCP connection made to it, HTTP or not.
struct Listener {
    port: u16,
    connections: Arc<AtomicU32>,
}

async fn listener(bind: &str) -> Listener {
    let socket = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let connections = Arc::new(AtomicU32::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    Listener { port, connections }
}

/// An HTTP receiver on `bind` answering `POST /hook` with `respond()`; its
/// URL and the count of POSTs it got.
async fn receiver<R>(bind: &str, respond: impl Fn() -> R + Clone + Send + Sync + 'static) -> (String, Arc<AtomicU32>)
where
    R: axum::response::IntoResponse + Send + 'static,
{
    let posts = Arc::new(AtomicU32::new(0));
    let counted = posts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let response = respond();
            async move { response }
        }),
    );
    let socket = tokio::net::TcpListener::bind(bind).await.unwrap();
    let url = format!("http://{}/hook", socket.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(socket, app).await.unwrap() });
    (url, posts)
}

/// A verification with `url` as its callback, canceled while queued, which
/// puts its webhook in the outbox; returns the verification id.
async fn queue_webhook(store: &Arc<dyn Store>, n: usize, url: &str) -> String {
    let id = format!("v_ssrf{n:020}");
    store
        .create_verification(&NewVerification {
            id: id.clone(),
            api_key_id: "k".into(),
            tenant: "k".into(),
            phone: "+14155550100".into(),
            user: "mallory".into(),
            dialplan: "press-pound".into(),
            callback_url: Some(url.to_string()),
            idempotency_key: None,
            request_hash: String::new(),
            max_attempts: 1,
            created_at: now_ms(),
            code: None,
            locale: None,
        })
        .await
        .unwrap();
    store.cancel(&id, now_ms()).await.unwrap().expect("canceled");
    id
}

async fn open_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    pound::store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap()
}

/// Runs the outbox with `targets` until every webhook of `ids` is delivered
/// or given up (one try each), and returns them.
async fn deliver(store: &Arc<dyn Store>, targets: TargetPolicy, ids: &[String]) -> Vec<WebhookDelivery> {
    let config = WebhookConfig {
        max_attempts: 1,
        timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(10),
        targets,
        ..WebhookConfig::default()
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(deliver_webhooks(store.clone(), Arc::new(Metrics::new()), b"s".to_vec(), config, stopping));
    let mut done = Vec::new();
    for id in ids {
        for round in 0.. {
            let hooks = store.webhooks_for(id).await.unwrap();
            if hooks[0].gave_up || hooks[0].delivered_at.is_some() {
                done.push(hooks[0].clone());
                break;
            }
            assert!(round < 1000, "the webhook of {id} was never tried");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    done
}

#[tokio::test]
async fn every_forbidden_address_form_is_refused_and_reaches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    // Dual-stack: connections to 127.0.0.1 and to ::1 both land here.
    let target = listener("[::]:0").await;
    let port = target.port;
    let mut forms: Vec<String> = [
        "127.0.0.1",
        "[::1]",
        "localhost",
        "2130706433",
        "0x7f000001",
        "0177.0.0.01",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "0.0.0.0",
        "0",
        "[::]",
    ]
    .iter()
    .map(|host| format!("http://{host}:{port}/hook"))
    .collect();
    forms.push("http://169.254.169.254/latest/meta-data/".into());
    forms.push("http://10.0.0.1:9/hook".into());
    // The node's own name, when it resolves to loopback: refused by the
    // resolver rather than by its spelling.
    let own_name = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_string();
    let own_name_is_loopback = !own_name.is_empty()
        && tokio::net::lookup_host((own_name.as_str(), 0))
            .await
            .is_ok_and(|mut addresses| addresses.all(|a: SocketAddr| a.ip().is_loopback()));
    if own_name_is_loopback {
        forms.push(format!("http://{own_name}:{port}/hook"));
    }
    let mut ids = Vec::new();
    for (n, url) in forms.iter().enumerate() {
        ids.push(queue_webhook(&store, n, url).await);
    }
    let hooks = deliver(&store, TargetPolicy::default(), &ids).await;
    for (url, hook) in forms.iter().zip(&hooks) {
        let error = hook.last_error.as_deref().unwrap_or("");
        assert!(hook.gave_up && hook.delivered_at.is_none(), "{url}: {hook:?}");
        assert!(error.starts_with("refused: ") && error.ends_with(" address"), "{url}: {error:?}");
    }
    let error_of = |fragment: &str| {
        let n = forms.iter().position(|url| url.contains(fragment)).unwrap();
        hooks[n].last_error.clone().unwrap()
    };
    assert_eq!(error_of("2130706433"), "refused: loopback address");
    assert_eq!(error_of("169.254.169.254"), "refused: link-local address");
    assert_eq!(error_of("10.0.0.1"), "refused: private address");
    assert_eq!(target.connections.load(Ordering::SeqCst), 0, "nothing reached the local listener");
}

#[tokio::test]
async fn redirects_to_a_forbidden_address_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let forbidden = listener("127.0.0.1:0").await;
    let location = format!("http://127.0.0.1:{}/metadata", forbidden.port);
    // The allowed receiver lives on 127.0.0.2, opted in by address block.
    let (receiver, posts) = receiver("127.0.0.2:0", move || axum::response::Redirect::temporary(&location)).await;

    let ids = vec![queue_webhook(&store, 0, &receiver).await];
    let targets = TargetPolicy { allow_private: false, allow_cidrs: vec!["127.0.0.2/32".parse().unwrap()] };
    let hooks = deliver(&store, targets, &ids).await;
    assert_eq!(posts.load(Ordering::SeqCst), 1, "allow_cidrs let the receiver on 127.0.0.2 through");
    assert_eq!(hooks[0].last_error.as_deref(), Some("HTTP 3xx"), "{:?}", hooks[0]);
    assert_eq!(forbidden.connections.load(Ordering::SeqCst), 0, "the redirect was not followed");
}

#[tokio::test]
async fn allow_private_lets_a_loopback_receiver_through_and_the_default_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let (receiver, posts) = receiver("127.0.0.1:0", || axum::http::StatusCode::NO_CONTENT).await;
    let receiver = receiver.replace("127.0.0.1", "localhost");

    let refused = deliver(&store, TargetPolicy::default(), &[queue_webhook(&store, 0, &receiver).await]).await;
    assert_eq!(refused[0].last_error.as_deref(), Some("refused: loopback address"));
    assert_eq!(posts.load(Ordering::SeqCst), 0);

    let open = TargetPolicy { allow_private: true, allow_cidrs: Vec::new() };
    let delivered = deliver(&store, open, &[queue_webhook(&store, 1, &receiver).await]).await;
    assert!(delivered[0].delivered_at.is_some(), "{:?}", delivered[0]);
    assert_eq!(posts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn last_error_names_what_pound_did_not_what_the_target_said() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir).await;
    let (answering, _) = receiver("127.0.0.1:0", || {
        (axum::http::StatusCode::IM_A_TEAPOT, "Server: internal-admin-panel 2.3 on db-7.corp")
    })
    .await;
    // Accepts the connection and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}/hook", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let urls = [answering, silent_url, format!("http://{closed}/hook")];
    let mut ids = Vec::new();
    for (n, url) in urls.iter().enumerate() {
        ids.push(queue_webhook(&store, n, url).await);
    }
    let open = TargetPolicy { allow_private: true, allow_cidrs: Vec::new() };
    let errors: Vec<String> =
        deliver(&store, open, &ids).await.into_iter().map(|hook| hook.last_error.unwrap()).collect();
    assert_eq!(errors, ["HTTP 4xx", "timeout", "connection refused"]);
}

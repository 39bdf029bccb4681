//! The service: the store, the HTTP API, the engine and the webhook outbox,
//! started together from a [`Config`] and stopped together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::webhooks::{WebhookConfig, deliver_webhooks};
use crate::api::{ApiConfig, ApiReloader, ApiState, KeyRing, NodeHealth, Policy, router_with_reload};
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::dialplan::{self, Dialplan, DialplanError};
use crate::engine::{DialplanSet, EngineConfig, LoadedDialplan, TrunkConfig, run_engine};
use crate::media::prompt::PromptError;
use crate::metrics::Metrics;
use crate::net::{Endpoint, NetError, Tls};
use crate::sip::Credentials;
use crate::sip::trunk::TrunkHealth;
use crate::store::{Store, StoreError};
use crate::vocab::Transport;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The store could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The store's server did not take a connection at start.
    #[error("store: cannot connect to {server}: {cause}")]
    StoreUnreachable { server: String, cause: String },
    /// A dialplan or one of its prompts is unusable.
    #[error("dialplan: {0}")]
    Dialplan(#[from] DialplanLoadError),
    /// The signal handlers could not be installed.
    #[error("signals: {0}")]
    Signals(std::io::Error),
    /// The API address could not be bound.
    #[error("API on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The SIP endpoint could not be bound (`sip.bind`).
    #[error("{0}")]
    SipBind(NetError),
}

/// Why the dialplans could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DialplanLoadError {
    /// A dialplan is malformed or invalid.
    #[error(transparent)]
    Plan(#[from] DialplanError),
    /// A prompt a dialplan names is unusable; `origin` names the dialplan.
    #[error("{origin}: {source}")]
    Prompt { origin: String, source: PromptError },
    /// The dialplan folder that was named cannot be read.
    #[error("{path}: {source}")]
    Folder { path: String, source: std::io::Error },
}

/// A running service.
pub struct Service {
    /// Where the API listens (useful with port 0).
    pub api: SocketAddr,
    /// Where the SIP endpoint listens (useful with port 0).
    pub sip: SocketAddr,
    pub node_id: String,
    pub store: Arc<dyn Store>,
    /// `/readyz`'s view of the trunk and of the drain.
    pub health: Arc<NodeHealth>,
    /// Stops the engine claiming work; running calls finish.
    stop_engine: watch::Sender<bool>,
    engine: JoinHandle<()>,
    /// Stops the API and the outbox, once the engine is done.
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    running: Running,
}

/// What [`Service::reload`] compares with and replaces.
struct Running {
    config: Config,
    /// The engine's dialplans; SIGHUP loads them again and replaces them.
    dialplans: Arc<DialplanSet>,
    reloader: ApiReloader,
}

/// What a reload changed, and what it could not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub reloaded: Vec<&'static str>,
    /// Sections that differ from the running configuration but are only read at start.
    pub needs_restart: Vec<&'static str>,
}

impl Service {
    /// Opens the store, loads the dialplans, binds the API and starts the
    /// engine and the webhook outbox.
    pub async fn start(config: Config) -> Result<Service, ServiceError> {
        config.validate()?;
        let store = open_store(&config.store.url).await?;
        let dialplans = Arc::new(DialplanSet::from(load_dialplans(config.dialplans.as_deref())?));
        let node_id = config.node_id.clone().unwrap_or_else(default_node_id);
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(AtomicBool::new(false));
        let (shutdown, stopping) = watch::channel(false);
        let (stop_engine, engine_stopping) = watch::channel(false);
        let trunk_health =
            Arc::new(TrunkHealth::new(config.trunk.options_interval_s > 0, config.trunk.register_as.is_some()));
        let health = Arc::new(NodeHealth::new(trunk_health.clone(), config.trunk.uri.clone()));
        let listener = tokio::net::TcpListener::bind(config.api.bind)
            .await
            .map_err(|source| ServiceError::Bind { addr: config.api.bind, source })?;
        let api = listener.local_addr().map_err(|source| ServiceError::Bind { addr: config.api.bind, source })?;
        let sip_transport: Transport = config.sip.transport.into();
        // A sips: or transport=tls trunk needs TLS whatever sip.transport says.
        let tls = if sip_transport == Transport::Tls || crate::sip::route::wants_tls(&config.trunk.uri) {
            Some(Tls::client(&config.sip.tls_files()).map_err(ServiceError::SipBind)?)
        } else {
            None
        };
        let endpoint = Endpoint::bind_with_tls(config.sip.bind, sip_transport == Transport::Tcp, tls)
            .await
            .map_err(ServiceError::SipBind)?;
        let sip = endpoint.local_addr();
        let new_work = Arc::new(tokio::sync::Notify::new());
        let webhook_queued = Arc::new(tokio::sync::Notify::new());
        let api_state = ApiState {
            new_work: new_work.clone(),
            webhook_queued: webhook_queued.clone(),
            clock: Clock::System,
            store: store.clone(),
            config: api_config(&config, dialplan_names(&dialplans.current())),
            metrics: metrics.clone(),
            ready: ready.clone(),
        };
        let mut tasks = Vec::new();
        // Other nodes' new work wakes this engine too (PostgreSQL).
        if let Some(signals) = store.work_signals(new_work.clone()) {
            let mut stop = stopping.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    () = signals => {}
                    _ = stop.wait_for(|stop| *stop) => {}
                }
            }));
        }
        let mut api_stop = stopping.clone();
        let limits = api_state.config.limits.clone();
        let api_metrics = metrics.clone();
        let (app, reloader) = router_with_reload(api_state);
        let app = app.layer(axum::Extension(health.clone()));
        tasks.push(tokio::spawn(async move {
            crate::api::server::serve(listener, app, limits, api_metrics, async move {
                let _ = api_stop.wait_for(|stop| *stop).await;
            })
            .await;
        }));
        let engine = EngineConfig {
            node_id: node_id.clone(),
            trunk: TrunkConfig {
                uri: config.trunk.uri.clone(),
                credentials: config
                    .trunk
                    .auth_user
                    .clone()
                    .map(|user| Credentials { user, password: config.trunk.auth_password.clone().unwrap_or_default() }),
                from_user: config.trunk.from_user.clone(),
                from_display: config.trunk.from_name.clone(),
                asserted_identity: config.trunk.asserted_identity.clone(),
                transport: sip_transport,
                calls_per_second: config.trunk.calls_per_second,
                register_as: config.trunk.register_as.clone(),
                register_expires: Duration::from_secs(config.trunk.register_expires_s),
                options_interval: (config.trunk.options_interval_s > 0)
                    .then(|| Duration::from_secs(config.trunk.options_interval_s)),
                stir: config.trunk.stir.as_ref().map(|stir| stir.signer().map(Arc::new)).transpose()?,
                srtp: config.trunk.srtp,
            },
            endpoint,
            rtp_ports: config.rtp_ports()?,
            codecs: config.sip.codecs.iter().map(|&c| c.into()).collect(),
            dialplans: dialplans.clone(),
            lease: Duration::from_secs(config.engine.lease_s),
            max_concurrent_calls: config.engine.max_concurrent_calls,
            poll_interval: Duration::from_millis(config.engine.poll_interval_ms),
            new_work,
            shutdown_grace: Duration::from_secs(config.engine.shutdown_grace_s),
            rtp_learning_packets: config.rtp.learning_packets,
            numbers: config.policy.number_rules(),
            expire_after: Duration::from_secs(config.policy.expire_after_s),
            trunk_health,
            webhook_queued: webhook_queued.clone(),
            clock: Clock::System,
            seed: None,
            capture: capture_files(&config.capture)?,
        };
        let (engine_store, engine_metrics) = (store.clone(), metrics.clone());
        let engine = tokio::spawn(async move {
            if let Err(e) = run_engine(engine_store, engine_metrics, engine, engine_stopping).await {
                tracing::error!(error = %e, "the engine stopped");
            }
        });
        let webhooks = WebhookConfig {
            max_attempts: config.webhooks.max_attempts,
            targets: config.webhooks.targets(),
            queued: webhook_queued,
            ..WebhookConfig::default()
        };
        // Each webhook is signed with the secret of the key that created it.
        let signer = KeyRing::new(&config.api_keys());
        tasks.push(tokio::spawn(deliver_webhooks(store.clone(), metrics.clone(), signer, webhooks, stopping.clone())));
        ready.store(true, Ordering::Release);
        let running = Running { config, dialplans, reloader };
        Ok(Service { api, sip, node_id, store, health, stop_engine, engine, shutdown, tasks, running })
    }

    /// Applies what can change at run time from `new` (SIGHUP): the API keys
    /// of the config file, the policy and the dialplans (the compiled-in ones
    /// and the `dialplans` folder, read again: calls already running keep
    /// theirs). Everything else that differs from the running configuration
    /// is named in the answer as needing a restart. An invalid `new`, or a
    /// dialplan or prompt that does not load, changes nothing.
    pub fn reload(&mut self, new: Config) -> Result<Reloaded, ServiceError> {
        new.validate()?;
        let dialplans = load_dialplans(new.dialplans.as_deref())?;
        let old = &self.running.config;
        let mut needs_restart = Vec::new();
        let mut differs = |key: &'static str, a: String, b: String| {
            if a != b {
                needs_restart.push(key);
            }
        };
        let without_keys = |c: &Config| crate::config::ApiSection { keys: Vec::new(), ..c.api.clone() };
        differs("api (bind, limits)", format!("{:?}", without_keys(old)), format!("{:?}", without_keys(&new)));
        differs("store", format!("{:?}", old.store), format!("{:?}", new.store));
        differs("sip", format!("{:?}", old.sip), format!("{:?}", new.sip));
        differs("trunk", format!("{:?}", old.trunk), format!("{:?}", new.trunk));
        differs("rtp", format!("{:?}", old.rtp), format!("{:?}", new.rtp));
        differs("engine", format!("{:?}", old.engine), format!("{:?}", new.engine));
        differs("node_id", format!("{:?}", old.node_id), format!("{:?}", new.node_id));
        differs("log", format!("{:?}", old.log), format!("{:?}", new.log));
        // The outbox signs with the secrets it started with.
        differs("webhooks", format!("{:?}", old.webhooks), format!("{:?}", new.webhooks));
        // Compared, never shown: the outbox knows only the secrets it started
        // with, so until a restart it refuses (never sends unsigned) the
        // webhooks of a key whose secret is new.
        let secrets = |c: &Config| c.api_keys().into_iter().map(|k| (k.key, k.webhook_secret)).collect::<Vec<_>>();
        if secrets(old)
            .into_iter()
            .filter(|(_, s)| s.is_some())
            .ne(secrets(&new).into_iter().filter(|(_, s)| s.is_some()))
        {
            needs_restart.push("api.keys webhook secrets");
        }
        let names = dialplan_names(&dialplans);
        self.running.dialplans.replace(dialplans);
        self.running.reloader.reload(api_config(&new, names));
        self.running.config = new;
        Ok(Reloaded { reloaded: vec!["api.keys", "policy", "dialplans"], needs_restart })
    }

    /// Stops claiming work and lets running calls finish (up to the grace
    /// period) while the API keeps answering, `/readyz` with 503 `draining`
    /// so load balancers move on; then stops the API and the outbox.
    pub async fn stop(self) {
        self.health.start_draining();
        let _ = self.stop_engine.send(true);
        let _ = self.engine.await;
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The names of `dialplans`, sorted: what the API accepts in requests.
fn dialplan_names(dialplans: &HashMap<String, LoadedDialplan>) -> Vec<String> {
    let mut names: Vec<String> = dialplans.keys().cloned().collect();
    names.sort();
    names
}

/// The API's configuration from the file's, accepting the dialplans `names`.
fn api_config(config: &Config, names: Vec<String>) -> ApiConfig {
    ApiConfig {
        api_keys: config.api_keys(),
        policy: Policy {
            allowed_country_codes: config.policy.allowed_country_codes.clone(),
            cooldown: Duration::from_secs(config.policy.cooldown_s),
            max_attempts: config.policy.max_attempts,
            max_per_key_per_hour: config.policy.max_per_key_per_hour,
            numbers: config.policy.number_rules(),
            velocity: config.policy.velocity_limits(),
        },
        default_dialplan: if names.iter().any(|n| n == "press-pound") {
            "press-pound".into()
        } else {
            names.first().cloned().unwrap_or_default()
        },
        dialplans: names,
        max_body_bytes: config.api.max_body_bytes,
        webhook_targets: config.webhooks.targets(),
        limits: config.api.limits(),
    }
}

/// The compiled-in dialplans, then every `*.toml` in `folder` (which adds
/// plans or replaces compiled-in ones of the same name), with their prompts,
/// by name. A folder that was named but cannot be read is an error.
pub fn load_dialplans(folder: Option<&Path>) -> Result<HashMap<String, LoadedDialplan>, DialplanLoadError> {
    let mut plans = HashMap::new();
    let mut add = |plan: Dialplan, origin: &str| -> Result<(), DialplanLoadError> {
        let name = plan.name.clone();
        let loaded = LoadedDialplan::load(plan)
            .map_err(|source| DialplanLoadError::Prompt { origin: origin.to_string(), source })?;
        plans.insert(name, loaded);
        Ok(())
    };
    for name in dialplan::builtin::dialplan_names() {
        if let Some(plan) = Dialplan::builtin(name) {
            add(plan?, &format!("builtin:{name}"))?;
        }
    }
    let Some(folder) = folder else { return Ok(plans) };
    let entries = std::fs::read_dir(folder)
        .map_err(|source| DialplanLoadError::Folder { path: folder.display().to_string(), source })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let plan = Dialplan::load(&path)?;
        add(plan, &path.display().to_string())?;
    }
    Ok(plans)
}

/// Opens the store. A PostgreSQL server is first asked for one connection,
/// within [`STORE_CONNECT_TIMEOUT`], so that an unreachable one is an error
/// naming its host, port and the cause rather than the pool's "timed out".
async fn open_store(url: &str) -> Result<Arc<dyn Store>, ServiceError> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        use sqlx::Connection;
        use std::str::FromStr;
        let options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(StoreError::from)?;
        let server = format!("{}:{}", options.get_host(), options.get_port());
        let unreachable = |cause: String| ServiceError::StoreUnreachable { server: server.clone(), cause };
        match tokio::time::timeout(STORE_CONNECT_TIMEOUT, sqlx::PgConnection::connect_with(&options)).await {
            Err(_) => return Err(unreachable(format!("no answer within {STORE_CONNECT_TIMEOUT:?}"))),
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
            }
        }
    }
    Ok(crate::store::open(url).await?)
}

/// How long the first connection to the store's server may take at start.
const STORE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The capture folder when `[capture]` names one, created owner-only (captures hold the calls' secrets).
fn capture_files(
    section: &crate::config::CaptureSection,
) -> Result<Option<Arc<crate::capture::CaptureFiles>>, ServiceError> {
    let Some(folder) = section.folder() else { return Ok(None) };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(&folder.dir)
        .map_err(|e| ConfigError::Invalid(format!("capture.dir {}: {e}", folder.dir.display())))?;
    Ok(Some(Arc::new(crate::capture::CaptureFiles::new(folder))))
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "pound".to_string() } else { host };
    format!("{host}-{}", std::process::id())
}

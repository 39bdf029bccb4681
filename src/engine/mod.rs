//! The worker: claims due verifications from the store, places their calls
//! under a calls-per-second limit, keeps their leases alive, moves their
//! status along, records every attempt, retries by dialplan, and completes
//! them (registration and webhook included, in the store's transaction).
//!
//! A verification is completed the moment its call decides
//! ([`CallEvent::Decided`](crate::call::CallEvent::Decided)), not when the
//! call hangs up: the person who pressed `#` is registered, the webhook goes
//! out, and a node that dies during the confirmation prompt leaves nothing to
//! call again. The rest of the call is recorded on its attempt when it ends.
//! Outcomes the dialplan retries are not final, and wait for the call's end
//! like before (`verification`).
//!
//! Each call runs as a tokio task (no thread per call), never aborted (see
//! `placed`). On shutdown the engine stops claiming, lets running calls
//! finish until a deadline, then ends the rest and releases their
//! verifications for another node.

mod expiry;
mod leases;
mod ledger;
mod pacing;
mod placed;
mod verification;

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

pub use pacing::Pacer;

use crate::call::Prompts;
use crate::clock::Clock;
use crate::dialplan::Dialplan;
use crate::locale::LOCALES;
use crate::media::codec::Codec;
use crate::media::prompt::PromptError;
use crate::metrics::Metrics;
use crate::net::{Endpoint, resolve, run_trunk_watch};
use crate::policy::NumberRules;
use crate::sip::trunk::{TrunkHealth, TrunkWatchConfig};
use crate::sip::{Credentials, Timers};
use crate::store::{Store, StoreError};
use crate::vocab::{SrtpPolicy, Transport};
use leases::Leases;
use ledger::Ledger;
use verification::Verification;

/// A dialplan with its prompts loaded, in every locale it speaks.
#[derive(Debug, Clone)]
pub struct LoadedDialplan {
    pub plan: Arc<Dialplan>,
    /// In the dialplan's own locale.
    pub prompts: Arc<Prompts>,
    /// By locale, when the prompt paths name `{locale}`; empty when they do not.
    pub localized: Arc<HashMap<&'static str, Arc<Prompts>>>,
}

impl LoadedDialplan {
    /// Loads the prompts of `plan` in every shipped locale it speaks, so a
    /// missing file is an error when dialplans load, not in a call.
    pub fn load(plan: Dialplan) -> Result<LoadedDialplan, PromptError> {
        let mut localized = HashMap::new();
        if plan.is_localized() {
            for locale in LOCALES {
                localized.insert(locale, Arc::new(Prompts::load(&plan.with_locale(locale))?));
            }
        }
        let prompts = Arc::new(Prompts::load(&plan)?);
        Ok(LoadedDialplan { plan: Arc::new(plan), prompts, localized: Arc::new(localized) })
    }

    /// The prompts of a verification in `locale`; `None` is the dialplan's own.
    pub fn prompts_in(&self, locale: Option<&str>) -> Arc<Prompts> {
        locale.and_then(|l| self.localized.get(l)).unwrap_or(&self.prompts).clone()
    }
}

/// The dialplans new calls use, by name. SIGHUP replaces the whole set at
/// once; a call keeps the plan it started with.
#[derive(Debug, Default)]
pub struct DialplanSet(std::sync::RwLock<Arc<HashMap<String, LoadedDialplan>>>);

impl DialplanSet {
    /// The dialplan `name` as it is now.
    pub fn get(&self, name: &str) -> Option<LoadedDialplan> {
        self.current().get(name).cloned()
    }

    /// Every dialplan as it is now.
    pub fn current(&self) -> Arc<HashMap<String, LoadedDialplan>> {
        // A poisoned lock still holds a whole set: swaps never leave it half done.
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the set for calls that start from now on.
    pub fn replace(&self, dialplans: HashMap<String, LoadedDialplan>) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(dialplans);
    }
}

impl From<HashMap<String, LoadedDialplan>> for DialplanSet {
    fn from(dialplans: HashMap<String, LoadedDialplan>) -> Self {
        DialplanSet(std::sync::RwLock::new(Arc::new(dialplans)))
    }
}

/// Where and how calls go out.
#[derive(Debug, Clone)]
pub struct TrunkConfig {
    /// `sip:host[:port]` every call is sent to.
    pub uri: String,
    pub credentials: Option<Credentials>,
    pub from_user: String,
    pub from_display: Option<String>,
    pub asserted_identity: Option<String>,
    pub transport: Transport,
    /// Calls per second the carrier accepts.
    pub calls_per_second: f64,
    /// Register with the trunk as this address of record (`sip:user@domain`).
    pub register_as: Option<String>,
    pub register_expires: Duration,
    /// Ping the trunk with OPTIONS this often; dialling pauses while it is silent.
    pub options_interval: Option<Duration>,
    /// STIR/SHAKEN: signs every INVITE.
    pub stir: Option<Arc<crate::stir::Signer>>,
    /// SRTP for the trunk's calls (`trunk.srtp`).
    pub srtp: SrtpPolicy,
}

/// Everything the engine needs besides the store.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Names this node in leases and attempt records.
    pub node_id: String,
    pub trunk: TrunkConfig,
    /// The node's SIP endpoint: every call, REGISTER and OPTIONS goes through it.
    pub endpoint: Endpoint,
    pub rtp_ports: Option<RangeInclusive<u16>>,
    pub codecs: Vec<Codec>,
    /// Shared with the service, which replaces them on SIGHUP.
    pub dialplans: Arc<DialplanSet>,
    /// A claim lasts this long unless renewed; renewed every third of it.
    pub lease: Duration,
    pub max_concurrent_calls: usize,
    /// How often the store is asked for due work.
    pub poll_interval: Duration,
    /// Notified when new work is stored (by this node's API, and through the
    /// store's work signals by other nodes'): claims at once rather than at
    /// the next poll.
    pub new_work: Arc<tokio::sync::Notify>,
    /// On shutdown, running calls get this long to finish.
    pub shutdown_grace: Duration,
    /// Strict media: packets that must continue the callee's RTP stream from
    /// a new address before it is heard there (`rtp.learning_packets`).
    pub rtp_learning_packets: u16,
    /// Re-checked before every call (issue 7's toll-fraud guard): a number
    /// stored by an older node or under older rules ends `blocked`.
    pub numbers: NumberRules,
    /// A verification not completed this long after its creation expires
    /// (`policy.expire_after_s`; issue 11).
    pub expire_after: Duration,
    /// Written by the trunk watch, read before claiming work (and by `/readyz`).
    pub trunk_health: Arc<TrunkHealth>,
    /// Notified when a completion (and so perhaps a webhook) is stored: the
    /// webhook outbox sends it at once rather than at its next poll.
    pub webhook_queued: Arc<tokio::sync::Notify>,
    /// The wall clock leases, expiry and records are written with.
    pub clock: Clock,
    /// Seeds the calls' RNGs (the n-th call placed gets `seed + n`), so that
    /// a simulated run is reproducible; `None` draws from the OS.
    pub seed: Option<u64>,
    /// Where each call's capture goes (`[capture]`); `None`: calls are not captured.
    pub capture: Option<Arc<crate::capture::CaptureFiles>>,
}

/// Runs until `shutdown` turns true, then drains as described above.
pub async fn run_engine(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    config: EngineConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let config = Arc::new(config);
    let pacer = Arc::new(Pacer::new(config.trunk.calls_per_second));
    metrics.watch_trunk(config.trunk_health.clone());
    if config.trunk.register_as.is_some() || config.trunk.options_interval.is_some() {
        spawn_trunk_watch(&config, config.trunk_health.clone(), shutdown.clone()).await;
    }
    let (stop_calls, calls_stopped) = watch::channel(false);
    let (calls_alive, mut all_calls_over) = mpsc::channel::<()>(1);
    let ledger = Arc::new(Ledger::new(config.webhook_queued.clone()));
    let leases =
        Arc::new(Leases::new(store.clone(), config.node_id.clone(), config.lease, config.clock, ledger.clone()));
    // Kept until the last call is over, drain included.
    let (stop_keeping, keeping_stopped) = watch::channel(false);
    let keeper = tokio::spawn(leases.clone().keep(keeping_stopped));
    let lease_ms = millis(config.lease);
    let mut running = JoinSet::new();
    let calls_placed = Arc::new(AtomicU64::new(0));
    loop {
        while running.try_join_next().is_some() {}
        let free = config.max_concurrent_calls.saturating_sub(ledger.in_use().max(running.len()));
        let caught_up = ledger.catch_up(store.as_ref(), &config.node_id, config.clock.unix_ms(), lease_ms).await;
        // Whether or not the trunk is up: what cannot be dialled expires too.
        // Before the claim, with the same clock, so that nothing overdue is dialled.
        let now = config.clock.unix_ms();
        if expiry::sweep(store.as_ref(), config.expire_after, now).await > 0 {
            config.webhook_queued.notify_one();
        }
        if caught_up && free > 0 && config.trunk_health.may_dial() {
            match store.claim(&config.node_id, now, lease_ms, u32::try_from(free).unwrap_or(u32::MAX)).await {
                Ok(claimed) => {
                    for work in claimed {
                        let task = Verification {
                            store: store.clone(),
                            metrics: metrics.clone(),
                            config: config.clone(),
                            pacer: pacer.clone(),
                            stop: calls_stopped.clone(),
                            ledger: ledger.clone(),
                            leases: leases.clone(),
                            calls_alive: calls_alive.clone(),
                            calls_placed: calls_placed.clone(),
                        };
                        let span = tracing::info_span!("verification", id = %work.verification.id);
                        running.spawn(task.run(work).instrument(span));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming work failed; retrying"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.poll_interval) => {}
            () = config.new_work.notified() => {}
            // A call ended: its slot can take the next verification now.
            Some(_) = running.join_next(), if !running.is_empty() => {}
            _ = stopped(&mut shutdown) => break,
        }
    }
    tracing::info!(calls = running.len(), "shutting down: no new work, letting calls finish");
    let drained =
        tokio::time::timeout(config.shutdown_grace, async { while running.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(calls = running.len(), "grace period over: ending the remaining calls");
        let _ = stop_calls.send(true);
        while running.join_next().await.is_some() {}
    }
    // A verification task that failed left its call to end by itself (see
    // `placed`): every call is over on the wire before the engine is.
    drop(calls_alive);
    let _ = all_calls_over.recv().await;
    let _ = stop_keeping.send(true);
    let _ = keeper.await;
    if !ledger.catch_up(store.as_ref(), &config.node_id, config.clock.unix_ms(), lease_ms).await {
        tracing::error!(
            results = ledger.unrecorded(),
            "stopping with call results the store never took; their leases will expire and they will be called again"
        );
    }
    Ok(())
}

async fn spawn_trunk_watch(config: &EngineConfig, health: Arc<TrunkHealth>, shutdown: watch::Receiver<bool>) {
    let trunk = &config.trunk;
    let routed = match crate::sip::route::route(&trunk.uri, None, trunk.transport) {
        Ok(routed) => routed,
        Err(e) => {
            tracing::warn!(error = %e, "trunk watch: bad trunk URI; not watching");
            return;
        }
    };
    let Ok(next_hop) = resolve(&routed.hop).await else {
        tracing::warn!(hop = %routed.hop, "trunk watch: cannot resolve the trunk; not watching");
        return;
    };
    let watch_config = TrunkWatchConfig {
        trunk_uri: trunk.uri.clone(),
        register_as: trunk.register_as.clone(),
        credentials: trunk.credentials.clone(),
        expires: trunk.register_expires,
        options_interval: trunk.options_interval,
        // Set by the watch from the endpoint and the route to the trunk.
        local_sip: config.endpoint.local_addr(),
        next_hop,
        transport: routed.transport,
        timers: Timers::default(),
    };
    let endpoint = config.endpoint.clone();
    tokio::spawn(async move {
        if let Err(e) = run_trunk_watch(&endpoint, watch_config, routed.host, health, shutdown).await {
            tracing::warn!(error = %e, "trunk watch stopped");
        }
    });
}

/// Resolves once the signal is true (or its sender is gone: nobody can stop us
/// then, so it never resolves).
async fn stopped(signal: &mut watch::Receiver<bool>) {
    if signal.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A duration in whole milliseconds, as the store's times are; saturating.
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

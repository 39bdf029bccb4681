//! `pound serve`: the service until SIGTERM or SIGINT.

use serde_json::json;

use crate::config::Config;
use crate::service::{Service, ServiceError};

/// Runs the service; prints one JSON line once it is ready. On SIGHUP,
/// `load` reads the configuration again (file and flags) and the service
/// takes what it can of it; a configuration that does not load is logged
/// and the running one kept.
pub async fn run(config: Config, load: impl Fn() -> Result<Config, String>) -> Result<(), ServiceError> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = || -> std::io::Result<_> {
        Ok((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?, signal(SignalKind::hangup())?))
    };
    // Listening before the ready line: a SIGHUP sent after it must not
    // meet the default action, which ends the process.
    let (mut term, mut int, mut hup) = signals().map_err(ServiceError::Signals)?;
    let mut service = Service::start(config).await?;
    println!(
        "{}",
        json!({
            "event": "ready",
            "api": service.api.to_string(),
            "sip": service.sip.to_string(),
            "node": service.node_id
        })
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&mut service, load()),
        }
    }
    tracing::info!("stopping: finishing running calls first");
    service.stop().await;
    Ok(())
}

fn reload(service: &mut Service, config: Result<Config, String>) {
    match config.map_err(|e| e.to_string()).and_then(|c| service.reload(c).map_err(|e| e.to_string())) {
        Ok(done) if done.needs_restart.is_empty() => {
            tracing::info!(reloaded = ?done.reloaded, "SIGHUP: configuration reloaded")
        }
        // Warned, as the default log level shows: the operator expected a change.
        Ok(done) => tracing::warn!(
            reloaded = ?done.reloaded,
            needs_restart = ?done.needs_restart,
            "SIGHUP: configuration reloaded; the sections in needs_restart changed and take a restart"
        ),
        Err(error) => tracing::error!(%error, "SIGHUP: the configuration is invalid; keeping the running one"),
    }
}

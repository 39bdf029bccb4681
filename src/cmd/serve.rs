//! `pound serve`: the service until SIGTERM or SIGINT.

use serde_json::json;

use crate::config::Config;
use crate::service::{Service, ServiceError};

/// Runs the service; prints one JSON line once it is ready.
pub async fn run(config: Config) -> Result<(), ServiceError> {
    let service = Service::start(config).await?;
    println!("{}", json!({"event": "ready", "api": service.api.to_string(), "node": service.node_id}));
    wait_for_signal().await;
    tracing::info!("stopping: finishing running calls first");
    service.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

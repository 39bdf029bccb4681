//! The store's backlog for `/metrics` (queue depth, webhooks pending), read
//! at scrape time but at most once a second, so frequent or concurrent
//! scrapes cost the database one count query each second at most.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::metrics::Metrics;
use crate::store::Store;

/// How long one reading is reused.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// A scrape waits this long for the store; a slow one keeps the last values.
const TIMEOUT: Duration = Duration::from_secs(2);

/// When the backlog was last read.
#[derive(Debug, Default)]
pub(super) struct BacklogProbe {
    read_at: Mutex<Option<Instant>>,
}

impl BacklogProbe {
    /// Updates the backlog gauges unless they were read within [`FRESH_FOR`].
    /// A store that fails leaves the last values (`/readyz` reports the
    /// store; `pound_queue_depth` is not the place to).
    pub(super) async fn refresh(&self, store: &dyn Store, metrics: &Metrics, now_ms: i64) {
        let mut read_at = self.read_at.lock().await;
        if read_at.is_some_and(|at| at.elapsed() < FRESH_FOR) {
            return;
        }
        match tokio::time::timeout(TIMEOUT, store.backlog(now_ms)).await {
            Ok(Ok(backlog)) => metrics.backlog(backlog.queue_depth, backlog.webhooks_pending),
            Ok(Err(error)) => tracing::debug!(%error, "reading the backlog for /metrics failed"),
            Err(_) => tracing::debug!("the store did not count the backlog within {TIMEOUT:?}"),
        }
        *read_at = Some(Instant::now());
    }
}

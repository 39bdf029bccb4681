//! `/readyz`'s view of the store: whether it accepts writes right now.
//!
//! A node that cannot write answers every create with 503, loses call
//! results and delivers no webhooks, so a load balancer should send work
//! elsewhere. Asking the store is a real write ([`Store::check_writable`]);
//! probes are unauthenticated, so one result serves every probe for a second
//! and a hanging database answers "not ready" instead of hanging the probe.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::store::Store;

/// How long one probe's answer is reused.
const REUSE: Duration = Duration::from_secs(1);

/// A probe that takes longer than this counts as a failure.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The latest write probe and when it ran.
#[derive(Default)]
pub(super) struct WriteProbe {
    last: Mutex<Option<(Instant, bool)>>,
}

impl WriteProbe {
    /// Whether the store took a write within the last [`REUSE`]; probes it
    /// again when that answer is older. Concurrent callers wait for one probe.
    pub(super) async fn writable(&self, store: &dyn Store, now_ms: i64) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, writable)) = *last
            && at.elapsed() < REUSE
        {
            return writable;
        }
        let writable = match tokio::time::timeout(TIMEOUT, store.check_writable(now_ms)).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "the store refuses writes: not ready");
                false
            }
            Err(_) => {
                tracing::warn!("the store did not answer a write within {TIMEOUT:?}: not ready");
                false
            }
        };
        *last = Some((Instant::now(), writable));
        writable
    }
}

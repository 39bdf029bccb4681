//! `pound bench`: the whole service measured on loopback, each benchmark a
//! subcommand that prints one JSON line. `latency` runs everything in this
//! process (a temporary SQLite store, the service as `pound serve` runs it,
//! the simulated phone as the trunk and a webhook receiver); `load` and
//! `rate` run the node and the callee as child processes so that the node's
//! own CPU and memory can be read from `/proc`: `load` holds many calls at
//! once, `rate` offers verifications at a fixed rate through the API,
//! `burst` sends many at once.

mod burst;
mod harness;
pub mod latency;
mod load;
mod rate;

pub use burst::{BurstArgs, burst};
pub use harness::{CalleeKind, sipp_media_port};
pub use load::{LoadArgs, load};
pub use rate::{RateArgs, rate};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::service::ServiceError;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The service did not start.
    #[error("{0}")]
    Service(#[from] ServiceError),
    /// The temporary folder or a loopback socket could not be made.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The simulated phone did not start.
    #[error("simulated phone did not start")]
    Phone,
    /// An HTTP request to the service failed.
    #[error("API: {0}")]
    Http(#[from] reqwest::Error),
    /// The service answered, but not as a working one does.
    #[error("API: {0}")]
    Api(String),
    /// A child node or callee did not start.
    #[error("start: {0}")]
    Start(String),
    /// The run cannot measure what was asked (e.g. the hold is too short).
    #[error("{0}")]
    Measure(String),
}

/// When each named thing first happened (an INVITE by Call-ID, a webhook by
/// verification id), for tasks that wait for it.
#[derive(Default)]
struct Arrivals {
    times: Mutex<HashMap<String, Instant>>,
    changed: Notify,
}

impl Arrivals {
    /// `key` happened now (only its first time counts).
    fn record(&self, key: &str) {
        let now = Instant::now();
        lock(&self.times).entry(key.to_string()).or_insert(now);
        self.changed.notify_waiters();
    }

    fn get(&self, key: &str) -> Option<Instant> {
        lock(&self.times).get(key).copied()
    }

    /// When `key` happened, waiting for it until `deadline`.
    async fn wait(&self, key: &str, deadline: Instant) -> Option<Instant> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a record in between still wakes us.
            notified.as_mut().enable();
            if let Some(at) = self.get(key) {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return self.get(key);
            }
        }
    }
}

/// A poisoned lock still holds whole entries (each critical section is one
/// insert or read).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// p50, p99 and the maximum of `samples` in milliseconds (nearest rank), and
/// how many there were.
fn summary(samples: &[Duration]) -> Value {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| -> Option<f64> {
        let index = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len().max(1)) - 1;
        ms.get(index).map(|v| (v * 10.0).round() / 10.0)
    };
    json!({"n": ms.len(), "p50": rank(0.50), "p99": rank(0.99), "max": rank(1.0)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(summary(&samples), json!({"n": 100, "p50": 50.0, "p99": 99.0, "max": 100.0}));
        let one = [Duration::from_micros(2500)];
        assert_eq!(summary(&one), json!({"n": 1, "p50": 2.5, "p99": 2.5, "max": 2.5}));
        assert_eq!(summary(&[]), json!({"n": 0, "p50": null, "p99": null, "max": null}));
    }
}

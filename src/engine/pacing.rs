//! Calls per second: carriers reject (or bill as abuse) calls that arrive
//! faster than agreed, so call starts are spaced evenly.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Hands out call-start slots at most `calls_per_second` apart.
#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer for `calls_per_second` (at least 0.01).
    pub fn new(calls_per_second: f64) -> Self {
        Self { interval: Duration::from_secs_f64(1.0 / calls_per_second.max(0.01)), next: Mutex::new(None) }
    }

    /// Waits for the next free slot.
    pub async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_call_starts_evenly() {
        let pacer = std::sync::Arc::new(Pacer::new(10.0));
        let start = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..5 {
            pacer.wait().await;
            starts.push(start.elapsed());
        }
        assert_eq!(starts, (0..5).map(|i| Duration::from_millis(100 * i)).collect::<Vec<_>>());
        // After a quiet spell the next call goes at once.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = Instant::now();
        pacer.wait().await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }
}

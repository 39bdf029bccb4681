//! Time, from one source. Machines take a monotonic `now` from their
//! driver ([`now`]: tokio's clock); the store, the API, the engine and
//! webhooks read the wall clock through an injected [`Clock`], so that
//! records written by different layers compare and a whole verification can
//! run in simulated time.
//!
//! In simulation (`Clock::simulated` under a paused tokio runtime) both
//! move together: the wall clock is a fixed epoch plus tokio's elapsed time,
//! and tokio jumps from one deadline to the next whenever nothing is ready.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Now as Unix milliseconds (0 before 1970, saturated far in the future).
pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| millis(d.as_millis()))
}

/// The monotonic now every driver hands its machine. tokio's clock rather
/// than `Instant::now()`: the same outside tests, and the simulated time
/// when a test pauses tokio's clock, so machines and sleeps agree.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn millis(ms: u128) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// Where the wall clock is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// `epoch_ms` at `start`, advancing with tokio's (paused) clock.
    Simulated { epoch_ms: i64, start: tokio::time::Instant },
}

impl Clock {
    /// A clock reading `epoch_ms` now and following tokio's clock from here.
    /// Only meaningful inside a runtime whose time is paused.
    pub fn simulated(epoch_ms: i64) -> Clock {
        Clock::Simulated { epoch_ms, start: tokio::time::Instant::now() }
    }

    /// Now as Unix milliseconds.
    pub fn unix_ms(&self) -> i64 {
        match self {
            Clock::System => unix_ms(),
            Clock::Simulated { epoch_ms, start } => epoch_ms.saturating_add(millis(start.elapsed().as_millis())),
        }
    }

    /// Keeps simulated time still until the returned value is dropped; for
    /// waits on work outside the runtime (a database's own thread), which
    /// tokio would otherwise take for idleness and skip time over. Nothing
    /// on the system clock.
    pub fn hold(&self) -> Option<Hold> {
        match self {
            Clock::System => None,
            Clock::Simulated { .. } => {
                // tokio does not advance paused time while a blocking task
                // runs (test-util); this one runs until the hold is dropped.
                let (release, released) = std::sync::mpsc::channel::<()>();
                tokio::task::spawn_blocking(move || {
                    let _ = released.recv();
                });
                Some(Hold(release))
            }
        }
    }
}

/// See [`Clock::hold`].
#[derive(Debug)]
pub struct Hold(#[allow(dead_code, reason = "dropping the sender ends the hold")] std::sync::mpsc::Sender<()>);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn simulated_wall_time_follows_tokios_paused_clock() {
        let clock = Clock::simulated(1_000_000);
        let before = now();
        assert_eq!(clock.unix_ms(), 1_000_000);
        tokio::time::sleep(Duration::from_secs(45)).await;
        assert_eq!(clock.unix_ms(), 1_045_000);
        assert_eq!(now() - before, Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_simulated_time_still_while_work_runs_elsewhere() {
        let clock = Clock::simulated(0);
        let hold = clock.hold();
        let (done, finished) = tokio::sync::oneshot::channel();
        // Work on a thread of its own, as a database's: while it runs, a
        // timer due in a second must not fire, though nothing in the runtime is ready.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let _ = done.send(());
        });
        tokio::select! {
            _ = finished => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => panic!("time moved while held"),
        }
        assert_eq!(clock.unix_ms(), 0);
        drop(hold);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(clock.unix_ms(), 1000);
    }
}

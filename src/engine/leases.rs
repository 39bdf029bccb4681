//! The leases of a node's running calls, renewed together: every third of
//! a lease, one transaction renews them all ([`Store::renew_leases`]) and
//! each call hears only what concerns it (a cancel, a lease lost).
//!
//! Why not each call its own: with a renewal per call every third of a
//! lease, a node holding 1,000 calls wrote 100 transactions a second to
//! keep them, each through the store's one writer (issue 10's profile of
//! held calls put 6.9 % of the node's CPU in SQLite's thread), and every node of a
//! cluster as many to PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::ledger::Ledger;
use crate::clock::Clock;
use crate::store::{LeaseState, Store};

/// The leases this node keeps for its running calls.
pub(super) struct Leases {
    store: Arc<dyn Store>,
    node: String,
    lease: Duration,
    clock: Clock,
    ledger: Arc<Ledger>,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// Per verification: the hold's number (see [`LeaseHold`]'s drop) and where its news goes.
    calls: HashMap<String, (u64, watch::Sender<LeaseState>)>,
    next: u64,
}

/// A call's claim on the keeper's renewals; dropping it stops them.
pub(super) struct LeaseHold {
    leases: Arc<Leases>,
    id: String,
    number: u64,
    /// Changes when the lease is no longer simply held.
    pub(super) news: watch::Receiver<LeaseState>,
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        let mut held = self.leases.lock();
        // A hold taken since for the same verification (claimed again by
        // this node after this call lost it) is not this one's to end.
        if held.calls.get(&self.id).is_some_and(|(number, _)| *number == self.number) {
            held.calls.remove(&self.id);
        }
    }
}

impl Leases {
    pub(super) fn new(
        store: Arc<dyn Store>,
        node: String,
        lease: Duration,
        clock: Clock,
        ledger: Arc<Ledger>,
    ) -> Leases {
        Leases { store, node, lease, clock, ledger, held: Mutex::new(Held::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // Every change to the map is complete before its lock is let go.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Renews `id`'s lease with the others until the hold is dropped.
    pub(super) fn hold(self: &Arc<Self>, id: &str) -> LeaseHold {
        let (sender, news) = watch::channel(LeaseState::Held);
        let mut held = self.lock();
        held.next += 1;
        let number = held.next;
        held.calls.insert(id.to_string(), (number, sender));
        LeaseHold { leases: self.clone(), id: id.to_string(), number, news }
    }

    /// Renews every held lease once; tells each call whose lease is no
    /// longer simply held. A store failure is the ledger's to know (it
    /// renews what it can before the node claims again), and the calls go on.
    pub(super) async fn renew(&self) {
        let ids: Vec<String> = self.lock().calls.keys().cloned().collect();
        if ids.is_empty() {
            return;
        }
        let until = self.clock.unix_ms().saturating_add(super::millis(self.lease));
        let states = match self.store.renew_leases(&ids, &self.node, until).await {
            Ok(states) => states,
            Err(error) => {
                tracing::warn!(calls = ids.len(), %error, "the store failed renewing the leases; the calls go on");
                self.ledger.store_failed();
                return;
            }
        };
        let held = self.lock();
        for (id, state) in ids.iter().zip(states) {
            if let Some((_, news)) = held.calls.get(id) {
                news.send_if_modified(|known| std::mem::replace(known, state) != state);
            }
        }
    }

    /// Renews every third of a lease until `stop` turns true or its sender is gone.
    pub(super) async fn keep(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.lease / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once, and a call just claimed holds a whole lease.
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => self.renew().await,
                () = stop_or_gone(&mut stop) => return,
            }
        }
    }
}

/// Resolves once `stop` turns true or its sender is gone.
async fn stop_or_gone(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across the caller's awaits.
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use tokio::sync::Notify;

    use super::*;

    async fn keeper(dir: &std::path::Path) -> Arc<Leases> {
        let store = crate::store::open(&format!("sqlite://{}", dir.join("leases.db").display())).await.unwrap();
        let ledger = Arc::new(Ledger::new(Arc::new(Notify::new())));
        Arc::new(Leases::new(store, "node".into(), Duration::from_secs(3), Clock::default(), ledger))
    }

    /// A call that lost its verification and one that claimed it again on
    /// this node overlap: the older hold's end must not end the newer's renewals.
    #[tokio::test]
    async fn the_older_of_two_holds_of_one_verification_does_not_end_the_newer() {
        let dir = tempfile::tempdir().unwrap();
        let leases = keeper(dir.path()).await;
        let older = leases.hold("v1");
        let mut newer = leases.hold("v1");
        let mut other = leases.hold("v2");
        drop(older);
        // Neither is in the store: each is told its lease is lost.
        leases.renew().await;
        assert!(newer.news.has_changed().unwrap() && *newer.news.borrow_and_update() == LeaseState::Lost);
        assert!(other.news.has_changed().unwrap() && *other.news.borrow_and_update() == LeaseState::Lost);
        // Told once, not at every renewal.
        leases.renew().await;
        assert!(!newer.news.has_changed().unwrap());
        drop(newer);
        drop(other);
        assert!(leases.lock().calls.is_empty());
    }
}

//! What this node owes the store: the verifications it is running, and the
//! results of calls that ended while the store could not take them.
//!
//! A call's decision is made on the wire; the person has answered and pressed
//! a key. If the store fails at that moment the result is kept here and
//! written on the next success, and until it is written, the node claims no
//! new work: a claim could hand this node (or its lease, expired during the
//! outage) the same verification again and call the person a second time.
//! That also bounds what is kept: no claims while anything is unrecorded, so
//! running calls plus unrecorded results never exceed the concurrent-call
//! limit.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::store::{AttemptResult, Store, StoreError};
use crate::vocab::Outcome;

/// What the verification needs once its attempt is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    /// Final: `Store::complete` with this outcome.
    Complete(Outcome),
    /// Another attempt later (a retry, or our own shutdown ended the call).
    Requeue { next_attempt_at: i64 },
    /// The verification was completed when the call decided; only the
    /// attempt (the rest of the call) is left to record.
    AttemptOnly,
}

/// A finished call, not yet (entirely) in the store.
#[derive(Debug, Clone)]
pub(super) struct Unrecorded {
    pub verification_id: String,
    pub call_id: String,
    pub started_at: i64,
    /// The attempt's number, once the store has recorded its start.
    pub attempt: Option<u32>,
    pub result: AttemptResult,
    pub then: Then,
}

impl Unrecorded {
    /// Writes what is still missing, step by step, remembering the attempt
    /// number so that a retry after a partial failure does not start a
    /// second attempt row. `finish_attempt` is idempotent (it only closes an
    /// open attempt); `complete` and `requeue` are guarded by the lease.
    /// Returns whether a completion (and so perhaps a webhook) was written.
    async fn write(&mut self, store: &dyn Store, node: &str, now: i64) -> Result<bool, StoreError> {
        let id = self.verification_id.as_str();
        let number = match self.attempt {
            Some(number) => number,
            None => {
                let number = store.start_attempt(id, node, &self.call_id, self.started_at).await?;
                self.attempt = Some(number);
                number
            }
        };
        store.finish_attempt(id, number, &self.result).await?;
        match self.then {
            Then::Complete(outcome) => store.complete(id, node, outcome, now).await.map(|_| true),
            Then::Requeue { next_attempt_at } => store.requeue(id, node, next_attempt_at, now).await.map(|()| false),
            Then::AttemptOnly => Ok(false),
        }
    }
}

/// The node's running verifications and unrecorded results.
pub(super) struct Ledger {
    running: Mutex<HashSet<String>>,
    unrecorded: Mutex<Vec<Unrecorded>>,
    /// A store call failed since the leases were last confirmed: a lease may
    /// have run out, and the next claim could return our own running work.
    leases_doubtful: AtomicBool,
    /// Woken when a completion is written: its webhook is in the outbox.
    webhook_queued: Arc<Notify>,
}

impl Ledger {
    pub(super) fn new(webhook_queued: Arc<Notify>) -> Ledger {
        Ledger {
            running: Mutex::default(),
            unrecorded: Mutex::default(),
            leases_doubtful: AtomicBool::new(false),
            webhook_queued,
        }
    }

    pub(super) fn started(&self, id: &str) {
        lock(&self.running).insert(id.to_string());
    }

    pub(super) fn ended(&self, id: &str) {
        lock(&self.running).remove(id);
    }

    /// Calls running plus results waiting: the concurrent-call budget they use.
    pub(super) fn in_use(&self) -> usize {
        lock(&self.running).len() + lock(&self.unrecorded).len()
    }

    /// A store call failed; logged by the caller.
    pub(super) fn store_failed(&self) {
        self.leases_doubtful.store(true, Ordering::Release);
    }

    /// Records a finished call now, or keeps it for [`Ledger::catch_up`].
    pub(super) async fn record(&self, store: &dyn Store, node: &str, now: i64, mut call: Unrecorded) {
        match call.write(store, node, now).await {
            Ok(completed) => self.written(completed),
            Err(error) => self.keep(error, call),
        }
    }

    fn written(&self, completed: bool) {
        if completed {
            self.webhook_queued.notify_one();
        }
    }

    fn keep(&self, error: StoreError, call: Unrecorded) {
        let id = call.verification_id.as_str();
        if !matches!(error, StoreError::Database(_)) {
            // Not the store being down: another node took the verification
            // over (its record wins), or the row is unreadable. Retrying
            // would never succeed and would keep this node from claiming.
            tracing::error!(verification = id, %error, "a finished call's result cannot be recorded; dropping it");
            return;
        }
        tracing::warn!(verification = id, %error, "the store failed: keeping the call's result until it can be written");
        self.store_failed();
        lock(&self.unrecorded).push(call);
    }

    /// Gets the store back in line with this node: first renews the leases
    /// of running calls if a store call failed (so none lapses into a claim),
    /// then writes the kept results. Returns whether claiming is safe now.
    pub(super) async fn catch_up(&self, store: &dyn Store, node: &str, now: i64, lease_ms: i64) -> bool {
        if self.leases_doubtful.swap(false, Ordering::AcqRel) {
            let mut ids: Vec<String> = lock(&self.running).iter().cloned().collect();
            ids.extend(lock(&self.unrecorded).iter().map(|u| u.verification_id.clone()));
            // A lost lease is the call task's to notice; only errors stop us.
            if let Err(error) = store.renew_leases(&ids, node, now.saturating_add(lease_ms)).await {
                tracing::warn!(%error, "the store still fails: not claiming");
                self.store_failed();
                return false;
            }
        }
        let waiting = std::mem::take(&mut *lock(&self.unrecorded));
        if waiting.is_empty() {
            return true;
        }
        let count = waiting.len();
        for mut call in waiting {
            match call.write(store, node, now).await {
                Ok(completed) => {
                    self.written(completed);
                    tracing::info!(verification = %call.verification_id, "a kept call result was recorded");
                }
                Err(error) => self.keep(error, call),
            }
        }
        let left = lock(&self.unrecorded).len();
        if left > 0 {
            tracing::warn!(kept = count, left, "call results still waiting for the store: not claiming");
        }
        left == 0
    }

    /// Results that could never be written (at shutdown).
    pub(super) fn unrecorded(&self) -> usize {
        lock(&self.unrecorded).len()
    }
}

/// The data behind these mutexes stays consistent even if a holder panicked
/// (each critical section is one insert, remove or swap), so a poisoned lock
/// is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

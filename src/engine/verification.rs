//! One claimed verification carried through its call: the checks before
//! dialling, the call placed and watched (lease renewals, cancels, the
//! node stopping), its decision stored the moment it is made, and the rest
//! of the call recorded when it ends, or kept by the ledger while the store
//! is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::leases::Leases;
use super::ledger::{Ledger, Then, Unrecorded};
use super::placed::PlacedCall;
use super::{EngineConfig, LoadedDialplan, Pacer, millis, stopped};
use crate::call::{CallEvent, CallReport, MAX_EVIDENCE};
use crate::dialplan::Dialplan;
use crate::evidence::KeyEvidence;
use crate::mask::mask_phone;
use crate::metrics::Metrics;
use crate::net::{CallSetup, NetError, resolve};
use crate::sip::Timers;
use crate::sip::route::RouteError;
use crate::store::{AttemptResult, Claimed, LeaseState, Status, Store, StoreError, Verification as StoredVerification};
use crate::vocab::Outcome;

/// Why a claimed verification's call could not even be set up: it ends
/// `failed`, with nobody called.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    /// The number and the trunk make no Request-URI.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The trunk's host does not resolve.
    #[error(transparent)]
    Net(#[from] NetError),
}

/// One claimed verification, carried to its next state.
pub(super) struct Verification {
    pub(super) store: Arc<dyn Store>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) config: Arc<EngineConfig>,
    pub(super) pacer: Arc<Pacer>,
    /// The node is stopping: end the call and release the verification.
    pub(super) stop: watch::Receiver<bool>,
    /// Running work and call results the store has not taken yet.
    pub(super) ledger: Arc<Ledger>,
    /// Renews the lease while the call runs.
    pub(super) leases: Arc<Leases>,
    /// Held by every call task, so that the engine can wait for them all.
    pub(super) calls_alive: mpsc::Sender<()>,
    /// Calls this engine set up so far: with a seed, each call's RNG is
    /// seeded with the seed plus this count.
    pub(super) calls_placed: Arc<AtomicU64>,
}

impl Verification {
    pub(super) async fn run(self, claimed: Claimed) {
        let id = claimed.verification.id.clone();
        let ledger = self.ledger.clone();
        ledger.started(&id);
        if let Err(e) = self.attempt(claimed).await {
            // Only before a call is placed: nobody was called, so the lease
            // expiring and another claim carrying on is safe.
            tracing::warn!(verification = %id, error = %e, "store failed before the call; it will be claimed again");
            ledger.store_failed();
        }
        ledger.ended(&id);
    }

    /// A store write during the call: a failure is logged and remembered,
    /// never allowed to end the call (the callee would get no BYE or CANCEL),
    /// since the call's result is recorded afterwards anyway.
    fn tolerate<T>(&self, id: &str, what: &str, written: Result<T, StoreError>) -> Option<T> {
        written
            .inspect_err(|error| {
                tracing::warn!(verification = id, %error, "the store failed during the call ({what}); the call goes on");
                self.ledger.store_failed();
            })
            .ok()
    }

    async fn attempt(self, claimed: Claimed) -> Result<(), StoreError> {
        let verification = claimed.verification;
        let node = self.config.node_id.as_str();
        let id = verification.id.as_str();
        if let Some(number) = claimed.interrupted_attempt {
            tracing::info!(verification = id, attempt = number, "took over a verification whose node stopped");
        }
        if verification.cancel_requested {
            return self.finish(id, Outcome::Canceled).await;
        }
        if verification.attempt_count >= verification.max_attempts {
            // The last allowed attempt was interrupted by a dying node.
            return self.finish(id, Outcome::Failed).await;
        }
        if let Err(refusal) = self.config.numbers.check(&verification.phone) {
            self.metrics.policy_refused(refusal.code());
            tracing::warn!(
                verification = id,
                phone = %mask_phone(&verification.phone),
                reason = refusal.code(),
                "the number is refused by policy; not dialling"
            );
            return self.finish(id, Outcome::Blocked).await;
        }
        let Some(dialplan) = self.config.dialplans.get(&verification.dialplan) else {
            tracing::warn!(verification = id, dialplan = %verification.dialplan, "dialplan no longer configured");
            return self.finish(id, Outcome::Failed).await;
        };
        self.pacer.wait().await;
        let setup = match self.setup(&verification, &dialplan).await {
            Ok(setup) => setup,
            Err(error) => {
                tracing::warn!(verification = id, %error, "cannot place the call");
                return self.finish(id, Outcome::Failed).await;
            }
        };
        // The prompt set played, what a dispute over the language is settled
        // with: a dialplan without `{locale}` plays its own whatever was asked.
        let asked = verification.locale.as_deref().filter(|_| dialplan.plan.is_localized());
        let locale = asked.unwrap_or(dialplan.plan.locale);
        tracing::info!(verification = id, phone = %mask_phone(&verification.phone), locale, "dialing");
        let (mut call, mut progress) = PlacedCall::place(self.config.endpoint.clone(), setup, self.calls_alive.clone());
        let mut lease = self.leases.hold(id);
        // A decision the store did not take is tried again this often.
        let mut retry = tokio::time::interval(self.config.lease / 3);
        retry.tick().await;
        let mut stop = self.stop.clone();
        // Stopping is signalled once: the arm would fire on every turn after.
        let mut told_to_stop = false;
        let started = crate::clock::now();
        self.metrics.call_started();
        let mut state = Progress {
            attempt: None,
            call_id: String::new(),
            started_at: self.config.clock.unix_ms(),
            started,
            may_retry: verification.attempt_count + 1 < verification.max_attempts,
            plan: dialplan.plan.clone(),
            completion: Completion::NotYet,
            lease_lost: false,
            answered_at: None,
            sip_status: None,
            digits: String::new(),
            evidence: Vec::new(),
            decided: None,
        };
        let report = loop {
            tokio::select! {
                Some(event) = progress.recv() => self.on_event(id, &mut state, event).await,
                joined = call.finished() => break joined,
                // Once completed, the verification is no longer leased: the
                // call only plays out.
                _ = retry.tick(), if state.holds_lease() => self.store_decision(id, &mut state).await,
                Ok(()) = lease.news.changed(), if state.holds_lease() => {
                    let news = *lease.news.borrow_and_update();
                    match news {
                        LeaseState::Held => {}
                        LeaseState::CancelRequested => call.end(),
                        LeaseState::Lost => {
                            // The call is ended properly (CANCEL or BYE) before
                            // the task lets go of it.
                            tracing::warn!(verification = id, "lost the lease: ending the call, leaving the record alone");
                            state.lease_lost = true;
                            call.end();
                        }
                    }
                }
                _ = stopped(&mut stop), if !told_to_stop => {
                    told_to_stop = true;
                    call.end();
                }
            }
        };
        // Events the call sent just before it ended. A decision not taken
        // yet is recorded below with the whole report, attempt first, so the
        // webhook's record carries the finished attempt.
        while let Ok(event) = progress.try_recv() {
            if !matches!(event, CallEvent::Decided { .. }) {
                self.on_event(id, &mut state, event).await;
            }
        }
        self.metrics.call_ended();
        if state.lease_lost {
            return Ok(());
        }
        let report = match report {
            Ok(Ok(report)) => report,
            Ok(Err(err)) if out_of_resources(&err) => {
                // Nothing was sent: the person was not called, and no
                // attempt was used. Not our caller's fault, not a failure.
                tracing::warn!(verification = id, error = %err, "no sockets for the call; will try again");
                let now = self.config.clock.unix_ms();
                return self.store.requeue(id, node, now.saturating_add(millis(RESOURCE_RETRY)), now).await;
            }
            Ok(Err(err)) => {
                tracing::warn!(verification = id, error = %err, "the call could not be placed");
                return self.finish(id, Outcome::Failed).await;
            }
            Err(err) => {
                tracing::error!(verification = id, error = %err, "the call task failed");
                return match state.completion {
                    Completion::Stored => Ok(()),
                    Completion::Unstored(outcome) => self.finish(id, outcome).await,
                    Completion::NotYet => self.finish(id, Outcome::Failed).await,
                };
            }
        };
        self.metrics.foreign_traffic(report.foreign_rtp_packets, report.foreign_sip_messages);
        // The call machine's own clock: the answer and the deciding key.
        if let (Some(answered), Some(key)) = (report.answered_ms, report.digit_ms) {
            self.metrics.answer_to_key(key.saturating_sub(answered) as f64 / 1000.0);
        }
        let then = match state.completion {
            Completion::Stored => Then::AttemptOnly,
            Completion::Unstored(outcome) => Then::Complete(outcome),
            Completion::NotYet => self.then(report.outcome, &state),
        };
        if let Then::Requeue { .. } = then {
            tracing::info!(verification = id, outcome = report.outcome.as_str(), "will call again");
        }
        let unrecorded = Unrecorded {
            verification_id: id.to_string(),
            call_id: state.call_id,
            started_at: state.started_at,
            attempt: state.attempt,
            result: attempt_result(&report, self.config.clock.unix_ms()),
            then,
        };
        self.ledger.record(self.store.as_ref(), node, self.config.clock.unix_ms(), unrecorded).await;
        if let Then::Complete(outcome) = then {
            self.completed(id, outcome);
        }
        Ok(())
    }

    /// What the call's outcome means for the verification: the engine's
    /// retry policy. A dialplan's retry outcomes call again while attempts
    /// remain, and a call our own shutdown canceled is released for another
    /// node; anything else is final.
    fn then(&self, outcome: Outcome, state: &Progress) -> Then {
        if outcome == Outcome::Canceled && *self.stop.borrow() {
            Then::Requeue { next_attempt_at: self.config.clock.unix_ms() }
        } else if state.may_retry && state.plan.retry_outcomes.contains(&outcome) {
            Then::Requeue {
                next_attempt_at: self.config.clock.unix_ms().saturating_add(millis(state.plan.retry_after)),
            }
        } else {
            Then::Complete(outcome)
        }
    }

    /// Stores a final decision the store has not taken yet: the outcome,
    /// the registration and the webhook in one transaction, while the call
    /// still plays its closing prompt. A store that is down keeps the call
    /// going; the decision is tried again at the next lease renewal and, if
    /// need be, kept by the ledger when the call ends.
    async fn store_decision(&self, id: &str, state: &mut Progress) {
        let Completion::Unstored(outcome) = state.completion else { return };
        match self.write_decision(id, outcome, state).await {
            Ok(()) => {
                state.completion = Completion::Stored;
                self.completed(id, outcome);
            }
            Err(StoreError::Database(error)) => {
                tracing::warn!(verification = id, %error, "the store failed at the decision; the call goes on");
                self.ledger.store_failed();
            }
            Err(error) => {
                // Another node took the verification over (our lease ran out
                // while the store was away): its record wins.
                tracing::error!(verification = id, %error, "the decision cannot be stored; leaving the record alone");
                state.lease_lost = true;
            }
        }
    }

    /// The attempt's decision and the completion in one transaction, so that
    /// the completed record (and its webhook) shows what decided it; it may
    /// be repeated.
    async fn write_decision(&self, id: &str, outcome: Outcome, state: &mut Progress) -> Result<(), StoreError> {
        let node = &self.config.node_id;
        if state.attempt.is_none() {
            // The store failed as the call began and the attempt was never
            // opened. Opened now, before the decision: a completed record
            // cannot be given an attempt afterwards (only an active one can),
            // and a decision must not stand without the attempt and the
            // evidence that made it.
            state.attempt = Some(self.store.start_attempt(id, node, &state.call_id, state.started_at).await?);
        }
        match (state.attempt, &state.decided) {
            (Some(number), Some(decided)) => {
                self.store.complete_decided(id, node, outcome, self.config.clock.unix_ms(), number, decided).await?
            }
            _ => self.store.complete(id, node, outcome, self.config.clock.unix_ms()).await?,
        };
        Ok(())
    }

    async fn on_event(&self, id: &str, state: &mut Progress, event: CallEvent) {
        let node = self.config.node_id.as_str();
        match event {
            CallEvent::Calling { call_id } => {
                state.started_at = self.config.clock.unix_ms();
                let started = self.store.start_attempt(id, node, &call_id, state.started_at).await;
                state.attempt = self.tolerate(id, "attempt start", started);
                state.call_id = call_id;
            }
            CallEvent::Response { status } => {
                self.metrics.sip_response(status);
                state.sip_status = Some(status);
            }
            CallEvent::Ringing => {
                let written = self.store.set_status(id, node, Status::Ringing, self.config.clock.unix_ms()).await;
                self.tolerate(id, "status", written);
            }
            CallEvent::Answered => {
                state.answered_at = Some(self.config.clock.unix_ms());
                self.metrics.call_setup(crate::clock::now().saturating_duration_since(state.started).as_secs_f64());
                let written = self.store.set_status(id, node, Status::Answered, self.config.clock.unix_ms()).await;
                self.tolerate(id, "status", written);
            }
            CallEvent::Digit { digit, source, latency, evidence } => {
                state.digits.push(digit);
                if state.evidence.len() < MAX_EVIDENCE {
                    state.evidence.push(*evidence);
                }
                self.metrics.digit(source);
                if let Some(latency) = latency {
                    self.metrics.dtmf_detection_latency(source, latency);
                }
            }
            CallEvent::Decided { outcome, key } => {
                if state.lease_lost {
                    return;
                }
                let now = self.config.clock.unix_ms();
                state.decided = Some(AttemptResult {
                    ended_at: now,
                    answered_at: state.answered_at,
                    digit_at: key.map(|_| now),
                    sip_status: state.sip_status,
                    dtmf_source: key,
                    digits: state.digits.clone(),
                    outcome,
                    detail: None,
                    evidence: state.evidence.clone(),
                });
                // A decision the retry policy turns into another attempt is
                // recorded when the call is over: the lease is kept until then.
                if let Then::Complete(outcome) = self.then(outcome, state) {
                    state.completion = Completion::Unstored(outcome);
                    self.store_decision(id, state).await;
                }
            }
            CallEvent::Finished(_) => {}
        }
    }

    async fn finish(&self, id: &str, outcome: Outcome) -> Result<(), StoreError> {
        self.store.complete(id, &self.config.node_id, outcome, self.config.clock.unix_ms()).await?;
        self.completed(id, outcome);
        Ok(())
    }

    /// A completion was written: its webhook (if any) goes out now.
    fn completed(&self, id: &str, outcome: Outcome) {
        self.config.webhook_queued.notify_one();
        self.metrics.verification_finished(outcome);
        tracing::info!(verification = id, outcome = outcome.as_str(), "verification completed");
    }

    async fn setup(
        &self,
        verification: &StoredVerification,
        dialplan: &LoadedDialplan,
    ) -> Result<CallSetup, SetupError> {
        let trunk = &self.config.trunk;
        let routed = crate::sip::route::route(&verification.phone, Some(&trunk.uri), trunk.transport)?;
        let next_hop = resolve(&routed.hop).await?;
        Ok(CallSetup {
            target: routed.uri,
            next_hop,
            peer_name: routed.host,
            transport: routed.transport,
            from_user: trunk.from_user.clone(),
            from_display: trunk.from_display.clone(),
            asserted_identity: trunk.asserted_identity.clone(),
            credentials: trunk.credentials.clone(),
            codecs: self.config.codecs.clone(),
            dialplan: dialplan.plan.clone(),
            prompts: dialplan.prompts_in(verification.locale.as_deref()),
            timers: Timers::default(),
            rtp_ports: self.config.rtp_ports.clone(),
            // Set by `PlacedCall::place`.
            cancel: None,
            rtp_learning_packets: self.config.rtp_learning_packets,
            stir: trunk.stir.clone(),
            seed: self.config.seed.map(|seed| seed.wrapping_add(self.calls_placed.fetch_add(1, Ordering::Relaxed))),
            srtp: trunk.srtp,
            code: verification.code.clone(),
            capture: self
                .config
                .capture
                .as_ref()
                .map(|folder| folder.file_for(&format!("{}-{}", verification.id, verification.attempt_count + 1))),
        })
    }
}

/// How long a verification waits when its call could not get sockets.
const RESOURCE_RETRY: Duration = Duration::from_secs(2);

/// Whether the call could not start for want of local resources that come
/// back by themselves: descriptors (EMFILE, ENFILE; e.g. while the API is
/// flooded), buffers or memory, or every port of the RTP range in use.
/// Such a verification is queued again rather than failed.
fn out_of_resources(err: &NetError) -> bool {
    let NetError::Io { source, .. } = err else { return false };
    matches!(source.kind(), std::io::ErrorKind::OutOfMemory | std::io::ErrorKind::AddrInUse)
        || matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// What the engine has learnt about the running call.
struct Progress {
    /// The attempt's number, if the store recorded its start.
    attempt: Option<u32>,
    call_id: String,
    /// When the INVITE went out, Unix ms.
    started_at: i64,
    started: std::time::Instant,
    /// Attempts remain after this one (for the retry policy).
    may_retry: bool,
    plan: Arc<Dialplan>,
    completion: Completion,
    /// Another node has the verification: nothing more is written to it.
    lease_lost: bool,
    // What the call's events said so far, Unix ms for times.
    answered_at: Option<i64>,
    sip_status: Option<u16>,
    digits: String,
    evidence: Vec<KeyEvidence>,
    /// The attempt as the call decided it, from its events (the call's own
    /// report replaces it when the call ends).
    decided: Option<AttemptResult>,
}

impl Progress {
    /// Whether the verification is still leased to this node: not completed
    /// yet, nor taken over by another node.
    fn holds_lease(&self) -> bool {
        !self.lease_lost && !matches!(self.completion, Completion::Stored)
    }
}

/// Where the verification's completion stands while its call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Completion {
    /// No final decision yet (none made, or one the retry policy calls again after).
    NotYet,
    /// A final decision the store has not taken yet.
    Unstored(Outcome),
    /// Stored: the verification is completed and its webhook queued.
    Stored,
}

fn attempt_result(report: &CallReport, now: i64) -> AttemptResult {
    let ms = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX);
    let started = now.saturating_sub(ms(report.duration_ms));
    let at = |offset: Option<u64>| offset.map(|offset| started.saturating_add(ms(offset)));
    AttemptResult {
        ended_at: now,
        answered_at: at(report.answered_ms),
        digit_at: at(report.digit_ms),
        sip_status: report.sip_status,
        dtmf_source: report.dtmf_source,
        digits: report.digits.clone(),
        outcome: report.outcome,
        detail: report.detail.clone(),
        evidence: report.evidence.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::*;

    fn io(source: Error) -> NetError {
        NetError::Io { context: "SIP socket".into(), source }
    }

    #[test]
    fn running_out_of_sockets_is_retried_and_other_errors_are_not() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM, libc::EADDRINUSE] {
            assert!(out_of_resources(&io(Error::from_raw_os_error(errno))), "errno {errno}");
        }
        for errno in [libc::EACCES, libc::EADDRNOTAVAIL, libc::EINVAL, libc::ENETUNREACH] {
            assert!(!out_of_resources(&io(Error::from_raw_os_error(errno))), "errno {errno}");
        }
        assert!(!out_of_resources(&io(Error::from(ErrorKind::PermissionDenied))));
        assert!(!out_of_resources(&NetError::Resolve("trunk.example:5060".into())));
    }
}

//! The vocabulary of [`Store::admit_verification`](super::Store::admit_verification):
//! sliding-window limits and the per-prefix breaker, checked and recorded in
//! the transaction that inserts the verification.
//!
//! Every admitted verification leaves one event per scope it counts in
//! (`velocity_events`: scope, time, phone). A limit refuses while its scope
//! holds `max` events younger than its window; the window slides with each
//! request, so there is no boundary to straddle, and the refusal says exactly
//! when the oldest counted event leaves it. The breaker's scope also keeps
//! each number's latest admission (`velocity_numbers`), which it counts, and
//! which leave once older than its window as events leave once older than
//! every window.

use super::Verification;

/// What a limit counts, which the API turns into its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Verifications one API key created.
    Key,
    /// Verifications to one destination country.
    Country,
    /// Verifications to numbers sharing their first digits.
    Prefix,
    /// Every verification of every node sharing the store.
    Global,
    /// Verifications of one phone number (the cooldown: at most one per window).
    Cooldown,
}

/// At most `max` events in `scope` within the last `window_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VelocityLimit {
    pub kind: LimitKind,
    /// `key:…`, `country:…`, `prefix:…`, `global`, `phone:…`.
    pub scope: String,
    /// 0 refuses everything.
    pub max: u32,
    pub window_ms: i64,
}

/// Trips when more than `max_numbers` distinct numbers were admitted in
/// `scope` within `window_ms`, and then refuses the scope for `pause_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixBreaker {
    pub scope: String,
    pub max_numbers: u32,
    pub window_ms: i64,
    pub pause_ms: i64,
}

/// Everything a create is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VelocityCheck {
    /// The request's time (Unix ms): the clock is the caller's, so tests can
    /// stand at either side of any boundary.
    pub now: i64,
    pub limits: Vec<VelocityLimit>,
    pub breaker: Option<PrefixBreaker>,
}

impl VelocityCheck {
    /// Events older than this count in no window and can be deleted.
    pub fn horizon(&self) -> i64 {
        let longest = self.limits.iter().map(|l| l.window_ms).chain(self.breaker.iter().map(|b| b.window_ms)).max();
        self.now.saturating_sub(longest.unwrap_or(0))
    }

    /// The scopes an admitted verification is recorded in, each once.
    pub fn scopes(&self) -> Vec<&str> {
        let mut scopes: Vec<&str> = self.limits.iter().map(|l| l.scope.as_str()).collect();
        scopes.extend(self.breaker.iter().map(|b| b.scope.as_str()));
        scopes.sort_unstable();
        scopes.dedup();
        scopes
    }
}

/// What the store decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Stored; or, for a retry with an idempotency key already used by the
    /// same API key, the first request's record with `created == false`
    /// (whatever the limits say now).
    Admitted { verification: Box<Verification>, created: bool },
    /// A limit is full. `retry_at` is when its oldest counted event leaves
    /// the window (none when `max` is 0).
    Limited { kind: LimitKind, max: u32, retry_at: Option<i64> },
    /// The prefix's breaker is open until `until`; `tripped` when this very
    /// request tripped it.
    Paused { scope: String, until: i64, tripped: bool },
}

/// The verdict and the breakers open across all nodes at that moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub verdict: Verdict,
    pub open_breakers: u64,
}

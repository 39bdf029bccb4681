//! Expiry (issue 11): a verification that is not completed
//! `policy.expire_after_s` after its creation ends `expired`, its webhook
//! queued, and is never dialled again. Every node sweeps; the store expires
//! each verification once. A verification whose call is running is left to
//! that call: if the call does not complete it (a retry was due), the next
//! sweep expires it.

use std::time::Duration;

use crate::mask::mask_phone;
use crate::store::Store;

/// Verifications expired per store transaction: short transactions, so that
/// claims on other nodes do not wait behind a long backlog.
const BATCH: u32 = 100;

/// Expires everything overdue at `now` (Unix ms) and returns how many
/// verifications it expired. A store failure is logged and left for the next
/// sweep: expiry is late then, never lost.
pub(super) async fn sweep(store: &dyn Store, expire_after: Duration, now: i64) -> usize {
    let age = super::millis(expire_after);
    let created_before = now.saturating_sub(age);
    let mut count = 0;
    loop {
        match store.expire_overdue(created_before, now, BATCH).await {
            Ok(expired) => {
                count += expired.len();
                for verification in &expired {
                    tracing::info!(
                        verification = %verification.id,
                        phone = %mask_phone(&verification.phone),
                        attempts = verification.attempt_count,
                        "verification expired"
                    );
                }
                if expired.len() < BATCH as usize {
                    return count;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "expiring overdue verifications failed; retrying at the next sweep");
                return count;
            }
        }
    }
}

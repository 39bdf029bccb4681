//! The create path's toll-fraud guard (issue 7): the number rules, then the
//! velocity limits and the prefix breaker, which the store checks and
//! records atomically with the insert. Refusals become API errors with an
//! exact `Retry-After` where time will lift them.

use axum::http::StatusCode;

use super::{ApiError, Policy, seconds_until};
use crate::mask::mask_phone;
use crate::metrics::Metrics;
use crate::policy::NumberRefusal;
use crate::policy::velocity::Request;
use crate::store::velocity::{LimitKind, Verdict};
use crate::store::{NewVerification, Store, Verification};

/// Whether `phone` may be called at all; its destination country if so.
pub(super) fn check_number(policy: &Policy, metrics: &Metrics, phone: &str) -> Result<String, ApiError> {
    policy.numbers.check(phone).map_err(|refusal| {
        metrics.policy_refused(refusal.code());
        tracing::info!(phone = %mask_phone(phone), reason = refusal.code(), "verification refused: number");
        let status =
            if refusal == NumberRefusal::Invalid { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::FORBIDDEN };
        ApiError::new(status, refusal.code(), refusal.to_string())
    })
}

/// Creates `new` if the velocity limits and the breaker allow it; returns
/// the record and whether it was created (see `Store::admit_verification`).
pub(super) async fn admit(
    store: &dyn Store,
    policy: &Policy,
    metrics: &Metrics,
    new: &NewVerification,
    country: &str,
) -> Result<(Verification, bool), ApiError> {
    let request = Request {
        api_key_id: &new.api_key_id,
        phone: &new.phone,
        country,
        max_per_key_per_hour: policy.max_per_key_per_hour,
        cooldown: policy.cooldown,
    };
    let now = new.created_at;
    let admission = store.admit_verification(new, &policy.velocity.check(request, now)).await?;
    metrics.breakers_open(admission.open_breakers);
    let error = match admission.verdict {
        Verdict::Admitted { verification, created } => return Ok((*verification, created)),
        Verdict::Limited { kind, max, retry_at } => {
            let (code, message) = limited(kind, max, policy);
            tracing::info!(phone = %mask_phone(&new.phone), reason = code, "verification refused: rate limit");
            let error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message);
            match retry_at {
                Some(at) => error.retry_after(seconds_until(at, now)),
                None => error,
            }
        }
        Verdict::Paused { scope, until, tripped } => {
            if tripped {
                metrics.breaker_tripped();
                tracing::warn!(
                    %scope,
                    paused_s = seconds_until(until, now),
                    "prefix breaker tripped: a burst of distinct numbers in one prefix; pausing it"
                );
            }
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "prefix_paused",
                "too many different numbers in this number range were requested; the range is paused",
            )
            .retry_after(seconds_until(until, now))
        }
    };
    metrics.policy_refused(error.code);
    Err(error)
}

/// The error code and message of a full limit.
fn limited(kind: LimitKind, max: u32, policy: &Policy) -> (&'static str, String) {
    match kind {
        LimitKind::Key => ("rate_limited", format!("this API key may create {max} verifications per hour")),
        LimitKind::Country => {
            ("country_rate_limited", format!("at most {max} verifications per hour may call this country"))
        }
        LimitKind::Prefix => {
            ("prefix_rate_limited", format!("at most {max} verifications per hour may call this number range"))
        }
        LimitKind::Global => {
            ("global_rate_limited", format!("this service creates at most {max} verifications per hour"))
        }
        LimitKind::Cooldown => (
            "cooldown",
            format!("this phone was called recently; wait {} s between verifications", policy.cooldown.as_secs()),
        ),
    }
}

//! How fast verifications may be created: sliding one-hour windows per API
//! key, destination country, number prefix and for all nodes together, the
//! per-number cooldown, and a breaker that pauses a prefix when many
//! distinct numbers in it are requested in a burst (the shape of an IRSF
//! run through a premium range).
//!
//! This module only builds the [`VelocityCheck`]; the store counts and
//! records it atomically (`Store::admit_verification`).

use std::time::Duration;

use crate::store::velocity::{LimitKind, PrefixBreaker, VelocityCheck, VelocityLimit};

/// The window of every `*_per_hour` limit.
const HOUR_MS: i64 = 3_600_000;

/// The limits besides the per-key one and the cooldown (which predate them).
#[derive(Debug, Clone, PartialEq)]
pub struct VelocityLimits {
    /// Verifications per destination country (region) per sliding hour.
    pub max_per_country_per_hour: u32,
    /// Verifications per number prefix per sliding hour.
    pub max_per_prefix_per_hour: u32,
    /// Verifications per sliding hour for every node sharing the store.
    pub max_global_per_hour: u32,
    /// How many digits of the E.164 number (country code included) make a prefix.
    pub prefix_digits: usize,
    /// The breaker trips on more distinct numbers than this in one prefix…
    pub breaker_numbers: u32,
    /// …within this window…
    pub breaker_window: Duration,
    /// …and refuses the prefix for this long.
    pub breaker_pause: Duration,
}

impl Default for VelocityLimits {
    fn default() -> Self {
        VelocityLimits {
            max_per_country_per_hour: 500,
            max_per_prefix_per_hour: 30,
            max_global_per_hour: 1000,
            prefix_digits: 6,
            breaker_numbers: 10,
            breaker_window: Duration::from_secs(600),
            breaker_pause: Duration::from_secs(3600),
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The first `digits` digits of an E.164 number, with its `+`.
pub fn prefix_of(e164: &str, digits: usize) -> &str {
    // E.164 is `+` and ASCII digits, so byte offsets are character offsets.
    e164.get(..digits.saturating_add(1)).unwrap_or(e164)
}

/// Who asks, for whom, and the per-key limit and cooldown of the API policy.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub api_key_id: &'a str,
    pub phone: &'a str,
    /// The destination region, as `NumberRules::check` returned it.
    pub country: &'a str,
    pub max_per_key_per_hour: u32,
    pub cooldown: Duration,
}

impl VelocityLimits {
    /// The check one create request must pass at `now`.
    pub fn check(&self, request: Request<'_>, now: i64) -> VelocityCheck {
        let prefix = format!("prefix:{}", prefix_of(request.phone, self.prefix_digits));
        let hourly = |kind, scope: String, max| VelocityLimit { kind, scope, max, window_ms: HOUR_MS };
        let mut limits = vec![
            hourly(LimitKind::Key, format!("key:{}", request.api_key_id), request.max_per_key_per_hour),
            hourly(LimitKind::Country, format!("country:{}", request.country), self.max_per_country_per_hour),
            hourly(LimitKind::Prefix, prefix.clone(), self.max_per_prefix_per_hour),
            hourly(LimitKind::Global, "global".to_string(), self.max_global_per_hour),
        ];
        if !request.cooldown.is_zero() {
            limits.push(VelocityLimit {
                kind: LimitKind::Cooldown,
                scope: format!("phone:{}", request.phone),
                max: 1,
                window_ms: millis(request.cooldown),
            });
        }
        let breaker = PrefixBreaker {
            scope: prefix,
            max_numbers: self.breaker_numbers,
            window_ms: millis(self.breaker_window),
            pause_ms: millis(self.breaker_pause),
        };
        VelocityCheck { now, limits, breaker: Some(breaker) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_the_first_digits_with_the_plus() {
        assert_eq!(prefix_of("+14155550100", 6), "+141555");
        assert_eq!(prefix_of("+4420", 6), "+4420");
        assert_eq!(prefix_of("+4420", usize::MAX), "+4420");
    }

    #[test]
    fn a_request_counts_in_every_scope_and_the_cooldown_only_when_set() {
        let limits = VelocityLimits::default();
        let request = Request {
            api_key_id: "k1",
            phone: "+14155550100",
            country: "US",
            max_per_key_per_hour: 100,
            cooldown: Duration::from_secs(60),
        };
        let check = limits.check(request, 7_200_000);
        let scopes = check.scopes();
        assert_eq!(scopes, ["country:US", "global", "key:k1", "phone:+14155550100", "prefix:+141555"]);
        assert_eq!(check.horizon(), 3_600_000, "the longest window is the hour");
        let cooldown = check.limits.iter().find(|l| l.kind == LimitKind::Cooldown).unwrap();
        assert_eq!((cooldown.max, cooldown.window_ms), (1, 60_000));
        let check = limits.check(Request { cooldown: Duration::ZERO, ..request }, 0);
        assert!(check.limits.iter().all(|l| l.kind != LimitKind::Cooldown));
    }
}

//! The wall clock the store, the API and webhooks share: one definition of
//! "now" in Unix milliseconds, so that records written by different layers
//! compare.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now as Unix milliseconds (0 before 1970, saturated far in the future).
pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

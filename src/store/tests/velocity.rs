//! The velocity limits and the breaker as the store counts them: exactly
//! the events (and distinct numbers) inside each window, whatever the order
//! the requests' clocks put them in and whatever the horizon has deleted.

use std::sync::Arc;

use super::{Store, on_each_backend, request};
use crate::store::NewVerification;
use crate::store::velocity::{LimitKind, PrefixBreaker, VelocityCheck, VelocityLimit, Verdict};

/// The scope of the breaker's last case.
const PREFIX: &str = "prefix:+1415";

fn limit(kind: LimitKind, scope: &str, max: u32, window_ms: i64) -> VelocityLimit {
    VelocityLimit { kind, scope: scope.to_string(), max, window_ms }
}

/// A per-key limit of 3 in 1 s beside a global one of plenty in 5 s, so the
/// horizon leaves events older than the key's window in its scope.
fn key_check(now: i64) -> VelocityCheck {
    let limits = vec![limit(LimitKind::Key, "key:k", 3, 1_000), limit(LimitKind::Global, "global", 1_000, 5_000)];
    VelocityCheck { now, limits, breaker: None }
}

/// A breaker tripping on 2 other numbers within 1 s in `scope`, beside a
/// global limit of plenty in 5 s (the longer horizon).
fn breaker_check(scope: &str, now: i64) -> VelocityCheck {
    let breaker = PrefixBreaker { scope: scope.to_string(), max_numbers: 2, window_ms: 1_000, pause_ms: 5_000 };
    VelocityCheck { now, limits: vec![limit(LimitKind::Global, "global", 1_000, 5_000)], breaker: Some(breaker) }
}

async fn admit(store: &Arc<dyn Store>, id: &str, phone: &str, check: VelocityCheck) -> Verdict {
    let new = NewVerification { phone: phone.to_string(), ..request(id, check.now) };
    store.admit_verification(&new, &check).await.expect("admission").verdict
}

fn admitted(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Admitted { created: true, .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_counts_its_window_exactly_out_of_order_and_after_the_horizon() {
    on_each_backend(|h| async move {
        let store = &h.store;
        // The second request's clock is behind the first's.
        for (id, now) in [("k1", 10_000), ("k2", 9_500), ("k3", 10_400)] {
            assert!(admitted(&admit(store, id, "+14155550100", key_check(now)).await), "{id}");
        }
        // At 10_500 the window holds 10_000 and 10_400 (9_500 is at its edge, out).
        assert!(admitted(&admit(store, "k4", "+14155550100", key_check(10_500)).await));
        let full = admit(store, "k5", "+14155550100", key_check(10_600)).await;
        assert_eq!(full, Verdict::Limited { kind: LimitKind::Key, max: 3, retry_at: Some(11_000) });
        // 10_000 has left at 11_000 exactly.
        assert!(admitted(&admit(store, "k6", "+14155550100", key_check(11_000)).await));
        let full = admit(store, "k7", "+14155550100", key_check(11_100)).await;
        assert_eq!(full, Verdict::Limited { kind: LimitKind::Key, max: 3, retry_at: Some(11_400) });
        // The horizon (5 s) deletes them all; the counts start again from none.
        for (i, now) in [20_000, 20_001, 20_002].into_iter().enumerate() {
            assert!(admitted(&admit(store, &format!("later{i}"), "+14155550100", key_check(now)).await));
        }
        let full = admit(store, "later3", "+14155550100", key_check(20_003)).await;
        assert_eq!(full, Verdict::Limited { kind: LimitKind::Key, max: 3, retry_at: Some(21_000) });
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_breaker_counts_distinct_numbers_in_its_window_only() {
    on_each_backend(|h| async move {
        let store = &h.store;
        let paused = |verdict: &Verdict| matches!(verdict, Verdict::Paused { tripped: true, .. });
        // A number repeated is one number, and a number is not one of its own others.
        for (id, phone, now) in [("d1", "+14155550001", 1_000), ("d2", "+14155550001", 1_010)] {
            assert!(admitted(&admit(store, id, phone, breaker_check("prefix:+1416", now)).await), "{id}");
        }
        for (id, phone, now) in [("e1", "+14155550002", 1_020), ("d3", "+14155550001", 1_025)] {
            assert!(admitted(&admit(store, id, phone, breaker_check("prefix:+1416", now)).await), "{id}");
        }
        assert!(paused(&admit(store, "f1", "+14155550003", breaker_check("prefix:+1416", 1_030)).await));

        // A number's latest admission counts, although a slower clock
        // admitted it again afterwards: at 1_950 A (1_000, 900) is in the window.
        for (id, phone, now) in [("g1", "+14155550010", 1_000), ("g2", "+14155550010", 900)] {
            assert!(admitted(&admit(store, id, phone, breaker_check("prefix:+1417", now)).await), "{id}");
        }
        assert!(admitted(&admit(store, "h1", "+14155550011", breaker_check("prefix:+1417", 1_100)).await));
        assert!(paused(&admit(store, "i1", "+14155550012", breaker_check("prefix:+1417", 1_950)).await));

        // A number leaves the window: at 2_050 A (1_000) is out, B the only other.
        for (id, phone, now) in [("a1", "+14155550020", 1_000), ("b1", "+14155550021", 1_100)] {
            assert!(admitted(&admit(store, id, phone, breaker_check(PREFIX, now)).await), "{id}");
        }
        assert!(admitted(&admit(store, "c1", "+14155550022", breaker_check(PREFIX, 2_050)).await));
        let tripped = admit(store, "a2", "+14155550020", breaker_check(PREFIX, 2_060)).await;
        assert_eq!(tripped, Verdict::Paused { scope: PREFIX.to_string(), until: 7_060, tripped: true });
    })
    .await;
}

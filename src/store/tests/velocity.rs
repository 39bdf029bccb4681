//! The velocity limits and the breaker as the store counts them: exactly
//! the events (and distinct numbers) inside each window, whatever the order
//! the requests' clocks put them in and whatever the horizon has deleted,
//! and however many admissions of two nodes run at once or share a batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};

use super::{Scope, Store, everything, on_each_backend, on_postgres, request};
use crate::store::NewVerification;
use crate::store::db::WORK_CHANNEL;
use crate::store::postgres::ADMISSION_APPLICATION;
use crate::store::velocity::{LimitKind, PrefixBreaker, VelocityCheck, VelocityLimit, Verdict};

/// How long a notification that should not come is waited for.
const QUIET: Duration = Duration::from_millis(500);

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
async fn what_no_window_counts_is_deleted_at_most_once_a_second_and_the_counts_stay_exact() {
    on_each_backend(|h| async move {
        let store = &h.store;
        let events = || h.count("SELECT COUNT(*) FROM velocity_events");
        // Each admission leaves two events (the key's and the global scope);
        // the longest window is 5 s.
        for (id, now) in [("p1", 25_000), ("p2", 25_900)] {
            assert!(admitted(&admit(store, id, "+14155550100", key_check(now)).await), "{id}");
        }
        assert_eq!(events().await, 4, "within a second of the last deletion, nothing is deleted");
        assert!(admitted(&admit(store, "p3", "+14155550100", key_check(30_600)).await));
        assert_eq!(events().await, 4, "25_000's events are past the horizon (25_600) and deleted");
        // 400 ms later the horizon has passed 25_900, but the last deletion
        // was less than a second ago: the events stay, and do not count.
        assert!(admitted(&admit(store, "p4", "+14155550100", key_check(31_000)).await));
        assert_eq!(events().await, 6);
        assert!(admitted(&admit(store, "p5", "+14155550100", key_check(31_100)).await));
        let full = admit(store, "p6", "+14155550100", key_check(31_200)).await;
        assert_eq!(full, Verdict::Limited { kind: LimitKind::Key, max: 3, retry_at: Some(31_600) });
        assert!(admitted(&admit(store, "p7", "+14155550100", key_check(31_700)).await));
        assert_eq!(events().await, 8, "25_900's deleted, 30_600 to 31_700 kept");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_admitting_at_once_never_over_admit() {
    on_each_backend(|h| async move {
        let nodes = [h.store.clone(), h.another_store().await];
        // 80 requests at once, half of them on each node, half of them in
        // each of two prefixes: at most 7 per prefix, 10 in all.
        let tasks: Vec<_> = (0..80)
            .map(|i| {
                let store = nodes[i % 2].clone();
                let (prefix, phone) = match i % 4 {
                    0 | 1 => ("prefix:+1415", format!("+14155550{i:03}")),
                    _ => ("prefix:+1212", format!("+12125550{i:03}")),
                };
                let limits =
                    vec![limit(LimitKind::Prefix, prefix, 7, 60_000), limit(LimitKind::Global, "global", 10, 60_000)];
                let check = VelocityCheck { now: 1_000 + i as i64, limits, breaker: None };
                tokio::spawn(async move { (prefix, admit(&store, &format!("n{i:02}"), &phone, check).await) })
            })
            .collect();
        let mut per_prefix: HashMap<&str, usize> = HashMap::new();
        for task in tasks {
            let (prefix, verdict) = task.await.expect("admission task");
            match verdict {
                verdict if admitted(&verdict) => *per_prefix.entry(prefix).or_default() += 1,
                Verdict::Limited { kind: LimitKind::Global | LimitKind::Prefix, .. } => {}
                other => panic!("unexpected verdict {other:?}"),
            }
        }
        assert_eq!(per_prefix.values().sum::<usize>(), 10, "{per_prefix:?}");
        assert!(per_prefix.values().all(|&n| n <= 7), "{per_prefix:?}");
        assert_eq!(h.store.list_verifications(&everything(Scope::All)).await.unwrap().len(), 10);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_admission_in_a_batch_leaves_the_others_of_its_batch_stored() {
    on_postgres(|h| async move {
        // Another node holds the admission lock, so that this node's
        // admissions queue up behind the first and share its batch.
        let mut other_node = PgConnection::connect(h.url()).await.expect("connect");
        sqlx::raw_sql("BEGIN; SELECT id FROM velocity_lock WHERE id = 1 FOR UPDATE")
            .execute(&mut other_node)
            .await
            .expect("lock");
        let mut work = PgListener::connect(h.url()).await.expect("connect");
        work.listen(WORK_CHANNEL).await.expect("listen");
        // Each number twice: the cooldown refuses the second of each pair.
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let store = h.store.clone();
                let phone = format!("+1415555{:04}", i / 2);
                let cooldown = limit(LimitKind::Cooldown, &format!("phone:{phone}"), 1, 60_000);
                let check = VelocityCheck { now: 1_000, limits: vec![cooldown], breaker: None };
                tokio::spawn(async move {
                    let id = format!("b{i:02}");
                    let verdict = admit(&store, &id, &phone, check).await;
                    (id, verdict)
                })
            })
            .collect();
        let waiting = format!(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = '{ADMISSION_APPLICATION}' \
             AND wait_event_type = 'Lock'"
        );
        while sqlx::query_scalar::<_, i64>(&waiting).fetch_one(&mut other_node).await.expect("activity") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The other 29 reach the queue in far less.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::raw_sql("COMMIT").execute(&mut other_node).await.expect("unlock");

        let mut stored = 0;
        for task in tasks {
            let (id, verdict) = task.await.expect("admission task");
            match verdict {
                verdict if admitted(&verdict) => {
                    assert!(h.store.verification(&id).await.unwrap().is_some(), "{id} was answered but not stored");
                    stored += 1;
                }
                Verdict::Limited { kind: LimitKind::Cooldown, .. } => {
                    assert_eq!(h.store.verification(&id).await.unwrap(), None, "refused {id} was stored");
                }
                other => panic!("unexpected verdict {other:?}"),
            }
        }
        assert_eq!(stored, 15);
        // PostgreSQL delivers one notification per transaction that sent
        // it (however often it did): one per commit that admitted any.
        let mut commits = 0;
        while let Ok(notification) = tokio::time::timeout(QUIET, work.recv()).await {
            notification.expect("listen");
            commits += 1;
        }
        assert_eq!(commits, 1, "the admissions did not share one commit");
        assert_eq!(h.store.verify_audit().await.unwrap().problem, None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admissions_go_on_after_their_connection_is_cut() {
    on_postgres(|h| async move {
        let store = &h.store;
        assert!(admitted(&admit(store, "before", "+14155550100", key_check(1_000)).await));
        let mut admin = PgConnection::connect(h.url()).await.expect("connect");
        let cut: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
        )
        .bind(ADMISSION_APPLICATION)
        .fetch_all(&mut admin)
        .await
        .expect("terminate");
        assert_eq!(cut, [(true,)], "one admission connection to cut");
        // The next admission finds the connection broken and opens another.
        assert!(admitted(&admit(store, "after", "+14155550101", key_check(1_100)).await));
        assert!(store.verification("after").await.unwrap().is_some());
    })
    .await;
}

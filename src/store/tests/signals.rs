//! Waking other nodes: on PostgreSQL a verification made due now (created,
//! or requeued for now) reaches every node's work signals through
//! `LISTEN/NOTIFY`, also after the listening connection was cut; SQLite has
//! no other node to wake.

use std::time::Duration;

use tokio::sync::Notify;

use super::*;
use crate::store::postgres::LISTENER_APPLICATION;

/// Long enough for a notification on loopback, even on a loaded machine.
const DELIVERED: Duration = Duration::from_secs(5);
/// How long a wake-up that should not come is waited for.
const QUIET: Duration = Duration::from_millis(300);

async fn woken(wake: &Notify, within: Duration) -> bool {
    tokio::time::timeout(within, wake.notified()).await.is_ok()
}

/// Node B's work signals, and B listening: the relay wakes once when it has
/// started listening (for whatever was notified before).
async fn listening_node(h: &Harness) -> (Arc<Notify>, tokio::task::JoinHandle<()>) {
    let node_b = h.another_store().await;
    let wake = Arc::new(Notify::new());
    let signals = node_b.work_signals(wake.clone()).expect("PostgreSQL signals new work");
    let relay = tokio::spawn(signals);
    assert!(woken(&wake, DELIVERED).await, "the relay wakes once it listens");
    (wake, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_made_due_now_wakes_the_other_nodes() {
    on_postgres(|h| async move {
        let (wake, relay) = listening_node(&h).await;
        let node_a = &h.store;
        assert!(!woken(&wake, QUIET).await, "nothing happened yet");

        let first = NewVerification { idempotency_key: Some("idem".into()), ..request("v1", 1_000) };
        create(node_a, first.clone()).await;
        assert!(woken(&wake, DELIVERED).await, "a created verification wakes node B");
        // A retry stores nothing new.
        assert!(!node_a.create_verification(&first).await.unwrap().1);
        assert!(!woken(&wake, QUIET).await, "an idempotent retry wakes nobody");

        node_a.claim("a", 2_000, 60_000, 1).await.unwrap();
        node_a.requeue("v1", "a", 50_000, 2_000).await.unwrap();
        assert!(!woken(&wake, QUIET).await, "a retry scheduled for later is the poll's");
        node_a.claim("a", 50_000, 60_000, 1).await.unwrap();
        node_a.requeue("v1", "a", 50_000, 50_000).await.unwrap();
        assert!(woken(&wake, DELIVERED).await, "a verification requeued for now wakes node B");
        relay.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_listener_listens_again_after_its_connection_is_cut() {
    on_postgres(|h| async move {
        let (wake, relay) = listening_node(&h).await;
        let mut admin = PgConnection::connect(h.url()).await.unwrap();
        let listeners = "FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()";
        let cut: Vec<(i32, bool)> = sqlx::query_as(&format!("SELECT pid, pg_terminate_backend(pid) {listeners}"))
            .bind(LISTENER_APPLICATION)
            .fetch_all(&mut admin)
            .await
            .unwrap();
        assert!(matches!(cut[..], [(_, true)]), "one listening connection to cut: {cut:?}");
        // Listening again wakes once: what was notified meanwhile is lost.
        assert!(woken(&wake, DELIVERED).await, "the relay listens again");
        let now: Vec<(i32,)> = sqlx::query_as(&format!("SELECT pid {listeners}"))
            .bind(LISTENER_APPLICATION)
            .fetch_all(&mut admin)
            .await
            .unwrap();
        assert!(matches!(now[..], [(pid,)] if pid != cut[0].0), "listening on a new connection: {now:?}");

        create(&h.store, request("v1", 1_000)).await;
        assert!(woken(&wake, DELIVERED).await, "new work still wakes node B");
        relay.abort();
    })
    .await;
}

#[tokio::test]
async fn a_sqlite_store_has_no_other_node_to_wake() {
    let h = Harness::sqlite().await;
    assert!(h.store.work_signals(Arc::new(Notify::new())).is_none());
}

//! The tamper-evident audit log (issue 12): what each change appends, that
//! concurrent appends keep one chain per tenant, and that `verify_audit`
//! finds rows and entries edited or removed behind the store's back.

use super::*;
use crate::store::AuditReport;

/// A verification through its whole life (two attempts, a decision, its
/// webhook delivered), one canceled, and one in another tenant.
async fn history(store: &Arc<dyn Store>) {
    create(store, request("v1", 1_000)).await;
    store.claim("n1", 1_001, 30_000, 10).await.unwrap();
    let first = store.start_attempt("v1", "n1", "call-1", 1_002).await.unwrap();
    let busy = AttemptResult { sip_status: Some(486), ..ended(1_003, Outcome::Busy) };
    store.finish_attempt("v1", first, &busy).await.unwrap();
    store.requeue("v1", "n1", 1_004, 1_003).await.unwrap();
    store.claim("n1", 1_005, 30_000, 10).await.unwrap();
    let second = store.start_attempt("v1", "n1", "call-2", 1_006).await.unwrap();
    store.set_status("v1", "n1", Status::Ringing, 1_007).await.unwrap();
    store.set_status("v1", "n1", Status::Answered, 1_008).await.unwrap();
    let pressed = AttemptResult {
        sip_status: Some(200),
        dtmf_source: Some(DtmfSource::Rfc4733),
        digits: "#".into(),
        ..ended(1_010, Outcome::Verified)
    };
    store.complete_decided("v1", "n1", Outcome::Verified, 1_009, second, &pressed).await.unwrap();
    store.finish_attempt("v1", second, &pressed).await.unwrap();
    let hook = store.due_webhooks(1_011, 1_000, 10).await.unwrap().remove(0);
    store.webhook_delivered(&hook.id, 1_012).await.unwrap();

    create(store, request("v2", 2_000)).await;
    store.cancel("v2", 2_001).await.unwrap();
    create(store, NewVerification { tenant: "tenant-2".into(), ..request("v3", 3_000) }).await;
}

async fn verified(store: &Arc<dyn Store>) -> AuditReport {
    store.verify_audit().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_is_an_entry_of_its_tenants_chain() {
    on_each_backend(|h| async move {
        let store = &h.store;
        history(store).await;
        let entries = store.audit_entries("tenant-1", "v1").await.unwrap();
        let kinds: Vec<&str> = entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "created", "attempt", "attempt", "status", "attempt", "status", "status", "attempt", "decision",
                "webhook", "attempt", "webhook"
            ]
        );
        assert_eq!(entries[0].facts.phone.as_deref(), Some("+14155550100"));
        assert_eq!(entries[0].facts.status, Some(Status::Queued));
        let busy = entries[2].facts.attempt.as_ref().unwrap();
        assert_eq!((busy.number, busy.outcome.as_deref(), busy.sip_status), (1, Some("busy"), Some(486)));
        assert_eq!(entries[3].facts.status, Some(Status::Queued), "requeued");
        assert_eq!(
            (entries[8].facts.status, entries[8].facts.outcome),
            (Some(Status::Completed), Some(Outcome::Verified))
        );
        let pressed = entries[7].facts.attempt.as_ref().unwrap();
        assert_eq!((pressed.number, pressed.dtmf_source), (2, Some(DtmfSource::Rfc4733)));
        assert_eq!(entries[11].facts.webhook.as_ref().map(|w| w.state.as_str()), Some("delivered"));
        assert_eq!(entries[0].at, 1_000);
        // The canceled one follows v1 in tenant-1's chain: one sequence, linked.
        let canceled = store.audit_entries("tenant-1", "v2").await.unwrap();
        let seqs: Vec<u64> = entries.iter().chain(&canceled).map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        assert_eq!(entries[0].prev_hash, "0".repeat(64));
        for pair in entries.iter().chain(&canceled).collect::<Vec<_>>().windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
        let canceled_kinds: Vec<&str> = canceled.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(canceled_kinds, ["created", "decision", "webhook"]);
        // tenant-2 has a chain of its own, and sees nothing of tenant-1's.
        let other = store.audit_entries("tenant-2", "v3").await.unwrap();
        assert_eq!((other.len(), other[0].seq, other[0].prev_hash.as_str()), (1, 1, "0".repeat(64).as_str()));
        assert!(store.audit_entries("tenant-2", "v1").await.unwrap().is_empty());

        let report = verified(store).await;
        assert_eq!(report.problem, None);
        let total = (entries.len() + canceled.len() + other.len()) as u64;
        assert_eq!((report.tenants, report.entries, report.verifications, report.unaudited), (2, total, 3, 0));
    })
    .await;
}

/// Edits behind the store's back, each with what `verify_audit` must say:
/// the verification it names and a word of its detail.
const TAMPERING: &[(&str, &str, Option<&str>, &str)] = &[
    ("an outcome edited", "UPDATE verifications SET outcome = 'no_answer' WHERE id = 'v1'", Some("v1"), "outcome"),
    ("a status edited", "UPDATE verifications SET status = 'queued' WHERE id = 'v2'", Some("v2"), "status"),
    ("a phone edited", "UPDATE verifications SET phone = '+14155550199' WHERE id = 'v2'", Some("v2"), "phone"),
    ("a user edited", "UPDATE verifications SET user_name = 'mallory' WHERE id = 'v3'", Some("v3"), "user"),
    (
        "an attempt edited",
        "UPDATE attempts SET outcome = 'verified' WHERE verification_id = 'v1' AND number = 1",
        Some("v1"),
        "attempt 1",
    ),
    (
        "a DTMF source edited",
        "UPDATE attempts SET dtmf_source = 'inband' WHERE verification_id = 'v1' AND number = 2",
        Some("v1"),
        "attempt 2",
    ),
    (
        "an attempt added",
        "INSERT INTO attempts (verification_id, number, node, call_id, started_at, digits, outcome) VALUES ('v2', 1, 'n', 'c', 1, '#', 'verified')",
        Some("v2"),
        "attempt 1",
    ),
    (
        "a verification added",
        "INSERT INTO verifications (id, api_key_id, tenant, phone, user_name, dialplan, status, outcome, attempt_count, max_attempts, next_attempt_at, cancel_requested, request_hash, created_at, updated_at) VALUES ('v9', 'k', 'tenant-1', '+1', 'u', 'd', 'completed', 'verified', 1, 1, 0, FALSE, 'h', 99999999999999, 0)",
        Some("v9"),
        "no entries",
    ),
    (
        "a verification moved to another tenant",
        "UPDATE verifications SET tenant = 'tenant-2' WHERE id = 'v2'",
        Some("v2"),
        "tenant",
    ),
    (
        "a webhook marked delivered",
        "UPDATE webhooks SET delivered_at = 5 WHERE verification_id = 'v2'",
        Some("v2"),
        "webhook",
    ),
    (
        "an entry edited",
        "UPDATE audit_entries SET facts = '{\"status\":\"completed\",\"outcome\":\"no_answer\"}' WHERE tenant = 'tenant-1' AND seq = 9",
        Some("v1"),
        "edited",
    ),
    ("an entry removed", "DELETE FROM audit_entries WHERE tenant = 'tenant-1' AND seq = 5", Some("v1"), "missing"),
    ("the last entry removed", "DELETE FROM audit_entries WHERE tenant = 'tenant-2'", None, "missing"),
    (
        "an entry relinked",
        "UPDATE audit_entries SET prev_hash = (SELECT hash FROM audit_entries WHERE tenant = 'tenant-1' AND seq = 1) WHERE tenant = 'tenant-1' AND seq = 3",
        Some("v1"),
        "link",
    ),
    ("a head moved back", "UPDATE audit_heads SET seq = seq - 1 WHERE tenant = 'tenant-1'", None, "head"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verify_names_the_first_verification_whose_rows_or_entries_were_tampered_with() {
    for &(what, sql, verification, detail) in TAMPERING {
        on_each_backend(|h| async move {
            history(&h.store).await;
            assert_eq!(verified(&h.store).await.problem, None, "{what}: intact before");
            h.execute(sql).await;
            let problem = verified(&h.store).await.problem.unwrap_or_else(|| panic!("{what}: not detected"));
            assert_eq!(problem.verification.as_deref(), verification, "{what}: {problem:?}");
            assert!(problem.detail.contains(detail), "{what}: {problem:?}");
            assert!(!problem.detail.contains("+1415"), "{what}: a phone number in clear: {problem:?}");
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_changes_on_two_nodes_keep_one_chain_per_tenant() {
    on_each_backend(|h| async move {
        let stores = [h.store.clone(), h.another_store().await];
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let store = stores[n % 2].clone();
                tokio::spawn(async move {
                    for i in 0..5 {
                        let id = format!("c{n}-{i}");
                        let tenant = if i % 2 == 0 { "tenant-1" } else { "tenant-2" };
                        create(&store, NewVerification { tenant: tenant.into(), ..request(&id, 1_000) }).await;
                        store.cancel(&id, 1_001).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let report = verified(&h.store).await;
        assert_eq!(report.problem, None);
        // created, decision and webhook for each of the 40.
        assert_eq!((report.tenants, report.entries, report.verifications), (2, 120, 40));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verifications_from_before_the_log_are_counted_not_failed() {
    on_each_backend(|h| async move {
        create(&h.store, request("old", 1_000)).await;
        // As if "old" predated migration 0009: created before the log began, no entries.
        h.execute("DELETE FROM audit_entries; DELETE FROM audit_heads").await;
        create(&h.store, request("new", 1_000)).await;
        let report = verified(&h.store).await;
        assert_eq!(report.problem, None, "{report:?}");
        assert_eq!((report.verifications, report.unaudited), (1, 1));
        // Its later changes are audited and checked like any other's.
        h.store.cancel("old", 1_001).await.unwrap();
        assert_eq!(verified(&h.store).await.problem, None);
        h.execute("UPDATE verifications SET outcome = 'verified' WHERE id = 'old'").await;
        assert_eq!(verified(&h.store).await.problem.and_then(|p| p.verification).as_deref(), Some("old"));
    })
    .await;
}

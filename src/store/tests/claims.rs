//! Creating verifications, handing them out under leases, and ending them.

use super::*;
use crate::evidence::{KeyEvidence, Rfc4733Evidence};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_and_idempotent_retry() {
    on_each_backend(|h| async move {
        let store = &h.store;
        let first = NewVerification { idempotency_key: Some("idem-1".to_string()), ..request("v1", 1_000) };
        let (created, is_new) = store.create_verification(&first).await.unwrap();
        assert!(is_new);
        assert_eq!(created.id, "v1");
        assert_eq!(created.api_key_id, "key-1");
        assert_eq!(created.user, "alice@contoso.com");
        assert_eq!(created.callback_url.as_deref(), Some(HOOK));
        assert_eq!(created.status, Status::Queued);
        assert_eq!(created.outcome, None);
        assert_eq!((created.attempt_count, created.max_attempts), (0, 3));
        assert_eq!((created.next_attempt_at, created.created_at, created.updated_at), (1_000, 1_000, 1_000));
        assert_eq!((created.lease_owner.as_deref(), created.lease_until, created.completed_at), (None, None, None));
        assert!(!created.cancel_requested);
        assert_eq!(store.verification("v1").await.unwrap(), Some(created.clone()));
        assert_eq!(store.verification("missing").await.unwrap(), None);

        // A retry of the same request under a fresh id returns the first record.
        let retry = NewVerification { id: "v1-retry".to_string(), created_at: 2_000, ..first.clone() };
        assert_eq!(store.create_verification(&retry).await.unwrap(), (created.clone(), false));
        assert_eq!(store.verification("v1-retry").await.unwrap(), None);

        // The same key with another body is a conflict.
        let other = NewVerification { id: "v1-other".to_string(), request_hash: "other".to_string(), ..first.clone() };
        assert!(matches!(store.create_verification(&other).await, Err(StoreError::IdempotencyConflict)));

        // Keys are per API key, and requests without a key never collide.
        let elsewhere = NewVerification { id: "v2".to_string(), api_key_id: "key-2".to_string(), ..first.clone() };
        assert!(store.create_verification(&elsewhere).await.unwrap().1);
        create(store, request("v3", 1_000)).await;
        create(store, request("v4", 1_000)).await;
        assert_eq!(store.count_created_since("key-1", 0).await.unwrap(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_one_key_make_one_row() {
    on_each_backend(|h| async move {
        let stores = [h.store.clone(), h.another_store().await];
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = stores[i % 2].clone();
                let new = NewVerification {
                    id: format!("v{i}"),
                    idempotency_key: Some("same".to_string()),
                    request_hash: "same-body".to_string(),
                    ..request("unused", 1_000)
                };
                tokio::spawn(async move { store.create_verification(&new).await.unwrap() })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(results.iter().filter(|(_, is_new)| *is_new).count(), 1);
        let winner = &results.iter().find(|(_, is_new)| *is_new).unwrap().0;
        assert!(results.iter().all(|(v, _)| v == winner));
        assert_eq!(h.store.count_created_since("key-1", 0).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claim_takes_due_work_oldest_first() {
    on_each_backend(|h| async move {
        let store = &h.store;
        for (id, created_at) in [("late", 300), ("early", 100), ("middle", 200), ("future", 10_000)] {
            create(store, request(id, created_at)).await;
        }
        assert!(store.claim("a", 1_000, 500, 0).await.unwrap().is_empty());

        let first = store.claim("a", 1_000, 500, 2).await.unwrap();
        assert_eq!(ids(&first), ["early", "middle"]);
        for claimed in &first {
            assert_eq!(claimed.interrupted_attempt, None);
            assert_eq!(claimed.verification.lease_owner.as_deref(), Some("a"));
            assert_eq!(claimed.verification.lease_until, Some(1_500));
            assert_eq!(claimed.verification.updated_at, 1_000);
            assert_eq!(claimed.verification.status, Status::Queued);
        }
        assert_eq!(store.verification("early").await.unwrap().unwrap().lease_owner.as_deref(), Some("a"));

        // Leased ones are not handed out again while the lease lives; the not-yet-due one waits.
        assert_eq!(ids(&store.claim("b", 1_000, 500, 10).await.unwrap()), ["late"]);
        assert!(store.claim("b", 1_400, 500, 10).await.unwrap().is_empty());

        // Finished work is never claimed, even once its time has come.
        store.complete("early", "a", Outcome::Busy, 1_100).await.unwrap();
        // Expired leases are due again, in their turn.
        assert_eq!(ids(&store.claim("c", 10_000, 500, 10).await.unwrap()), ["middle", "late", "future"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_share() {
    on_each_backend(|h| async move {
        forty_taken_once_by_eight_workers(&h, |store, n| async move {
            let node = format!("node-{n}");
            let claimed = store.claim(&node, 5_000, 60_000, 3).await.unwrap();
            for c in &claimed {
                assert_eq!(c.verification.lease_owner.as_deref(), Some(node.as_str()));
            }
            claimed.into_iter().map(|c| c.verification.id).collect()
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lease_is_reclaimed_and_attempt_interrupted() {
    on_each_backend(|h| async move {
        let store = &h.store;
        create(store, request("v1", 500)).await;
        assert_eq!(store.claim("node-a", 1_000, 100, 1).await.unwrap().len(), 1);
        store.set_status("v1", "node-a", Status::Dialing, 1_005).await.unwrap();
        assert_eq!(store.start_attempt("v1", "node-a", "call-1", 1_010).await.unwrap(), 1);

        // The lease runs to 1100 inclusive.
        assert!(store.claim("node-b", 1_100, 100, 1).await.unwrap().is_empty());
        let claimed = store.claim("node-b", 1_101, 100, 1).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].interrupted_attempt, Some(1));
        let v = &claimed[0].verification;
        assert_eq!((v.lease_owner.as_deref(), v.lease_until), (Some("node-b"), Some(1_201)));
        assert_eq!((v.status, v.attempt_count), (Status::Dialing, 1));
        let attempts = store.attempts("v1").await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!((attempts[0].node.as_str(), attempts[0].call_id.as_str()), ("node-a", "call-1"));
        assert_eq!((attempts[0].started_at, attempts[0].ended_at), (1_010, Some(1_101)));
        assert_eq!(attempts[0].outcome.as_deref(), Some("interrupted"));
        assert_eq!(attempts[0].detail.as_deref(), Some("node node-a stopped renewing its lease"));

        // The old node, back from the dead, can no longer change anything.
        assert_eq!(renew(store.as_ref(), &["v1"], "node-a", 2_000).await, [LeaseState::Lost]);
        store.set_status("v1", "node-a", Status::Ringing, 1_110).await.unwrap();
        store.requeue("v1", "node-a", 9_000, 1_110).await.unwrap();
        let result = AttemptResult { digits: "#".to_string(), ..ended(1_120, Outcome::Verified) };
        store.finish_attempt("v1", 1, &result).await.unwrap();
        assert!(store.start_attempt("v1", "node-a", "call-x", 1_120).await.is_err());
        assert!(store.complete("v1", "node-a", Outcome::Verified, 1_130).await.is_err());
        let v = store.verification("v1").await.unwrap().unwrap();
        assert_eq!(
            (v.status, v.lease_owner.as_deref(), v.next_attempt_at, v.outcome),
            (Status::Dialing, Some("node-b"), 500, None)
        );
        assert_eq!(store.attempts("v1").await.unwrap(), attempts);
        assert!(store.registrations("alice@contoso.com", &Scope::All).await.unwrap().is_empty());

        // The new owner carries on with the next attempt.
        assert_eq!(store.start_attempt("v1", "node-b", "call-2", 1_140).await.unwrap(), 2);
        assert_eq!(store.verification("v1").await.unwrap().unwrap().attempt_count, 2);
    })
    .await;
}

/// Renews `ids` for `node` until `until`; what became of each.
async fn renew(store: &dyn Store, ids: &[&str], node: &str, until: i64) -> Vec<LeaseState> {
    let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    store.renew_leases(&ids, node, until).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renew_lease_reports_held_cancel_and_lost() {
    on_each_backend(|h| async move {
        let store = &h.store;
        create(store, request("v1", 0)).await;
        assert_eq!(renew(store.as_ref(), &["v1"], "a", 500).await, [LeaseState::Lost], "never claimed");
        assert_eq!(renew(store.as_ref(), &["missing"], "a", 500).await, [LeaseState::Lost]);
        assert!(renew(store.as_ref(), &[], "a", 500).await.is_empty());
        store.claim("a", 100, 100, 1).await.unwrap();

        assert_eq!(renew(store.as_ref(), &["v1"], "a", 1_000).await, [LeaseState::Held]);
        assert_eq!(store.verification("v1").await.unwrap().unwrap().lease_until, Some(1_000));
        assert_eq!(renew(store.as_ref(), &["v1"], "b", 1_000).await, [LeaseState::Lost]);

        assert!(matches!(store.cancel("v1", 500).await.unwrap(), Some(CancelResult::Requested(_))));
        assert_eq!(renew(store.as_ref(), &["v1"], "a", 1_500).await, [LeaseState::CancelRequested]);

        let done = store.complete("v1", "a", Outcome::Canceled, 600).await.unwrap();
        assert_eq!((done.status, done.outcome), (Status::Canceled, Some(Outcome::Canceled)));
        assert_eq!(renew(store.as_ref(), &["v1"], "a", 2_000).await, [LeaseState::Lost], "final");
    })
    .await;
}

/// A node renews all its leases in one call: more than one statement's
/// worth, in any order, with others' and finished ones among them, each
/// answered in its place and only its own extended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewing_many_leases_at_once_answers_each_in_its_place() {
    on_each_backend(|h| async move {
        let store = &h.store;
        let count = 300;
        for n in 0..count {
            create(store, request(&format!("v{n:03}"), 0)).await;
        }
        assert_eq!(store.claim("a", 100, 100, 200).await.unwrap().len(), 200);
        assert_eq!(store.claim("b", 100, 100, 200).await.unwrap().len(), 100);
        let owner = |n: usize| async move {
            store.verification(&format!("v{n:03}")).await.unwrap().unwrap().lease_owner.unwrap()
        };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for n in 0..count {
            if owner(n).await == "a" { ours.push(n) } else { theirs.push(n) }
        }
        let canceled = ours[7];
        let finished = ours[150];
        assert!(matches!(
            store.cancel(&format!("v{canceled:03}"), 150).await.unwrap(),
            Some(CancelResult::Requested(_))
        ));
        store.complete(&format!("v{finished:03}"), "a", Outcome::Verified, 150).await.unwrap();

        // Ours backwards, one of theirs after every tenth, and one unknown.
        let mut asked: Vec<String> = Vec::new();
        for (i, n) in ours.iter().rev().enumerate() {
            asked.push(format!("v{n:03}"));
            if i % 10 == 0 {
                asked.push(format!("v{:03}", theirs[i / 10]));
            }
        }
        asked.push("missing".to_string());
        let states = store.renew_leases(&asked, "a", 5_000).await.unwrap();
        assert_eq!(states.len(), asked.len());
        for (id, state) in asked.iter().zip(&states) {
            let n: Option<usize> = id.strip_prefix('v').and_then(|n| n.parse().ok());
            let expected = match n {
                Some(n) if n == canceled => LeaseState::CancelRequested,
                Some(n) if n == finished => LeaseState::Lost,
                Some(n) if ours.contains(&n) => LeaseState::Held,
                _ => LeaseState::Lost,
            };
            assert_eq!(*state, expected, "{id}");
            if n.is_some() {
                let until = store.verification(id).await.unwrap().unwrap().lease_until;
                let extended = matches!(expected, LeaseState::Held | LeaseState::CancelRequested);
                assert_eq!(until == Some(5_000), extended, "{id}: {until:?}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_in_each_state() {
    on_each_backend(|h| async move {
        let store = &h.store;
        assert_eq!(store.cancel("missing", 0).await.unwrap(), None);

        // Queued: canceled at once, the webhook queued.
        create(store, request("queued", 0)).await;
        let Some(CancelResult::Canceled(v)) = store.cancel("queued", 50).await.unwrap() else { panic!("not canceled") };
        assert_eq!(
            (v.status, v.outcome, v.completed_at, v.updated_at),
            (Status::Canceled, Some(Outcome::Canceled), Some(50), 50)
        );
        let hooks = store.webhooks_for("queued").await.unwrap();
        assert_eq!(hooks.len(), 1);
        let body: WebhookBody = serde_json::from_str(&hooks[0].payload).unwrap();
        assert_eq!(body.verification.verification.status, Status::Canceled);
        assert!(matches!(store.cancel("queued", 60).await.unwrap(), Some(CancelResult::AlreadyFinal(_))));
        assert_eq!(store.webhooks_for("queued").await.unwrap().len(), 1, "no second webhook");
        assert!(store.claim("a", 1_000, 100, 10).await.unwrap().is_empty());

        // Running on a live node: only requested, the node keeps its lease.
        create(store, request("running", 2_000)).await;
        store.claim("a", 2_000, 1_000, 1).await.unwrap();
        store.set_status("running", "a", Status::Ringing, 2_010).await.unwrap();
        let Some(CancelResult::Requested(v)) = store.cancel("running", 3_000).await.unwrap() else {
            panic!("not requested")
        };
        assert_eq!((v.status, v.cancel_requested, v.lease_owner.as_deref()), (Status::Ringing, true, Some("a")));
        assert!(matches!(store.cancel("running", 3_000).await.unwrap(), Some(CancelResult::Requested(_))));
        assert!(store.webhooks_for("running").await.unwrap().is_empty());

        // Its node died: canceled, the open attempt closed as interrupted.
        store.start_attempt("running", "a", "call-1", 2_020).await.unwrap();
        let Some(CancelResult::Canceled(v)) = store.cancel("running", 3_001).await.unwrap() else {
            panic!("not canceled")
        };
        assert_eq!((v.status, v.lease_owner, v.lease_until), (Status::Canceled, None, None));
        let attempts = store.attempts("running").await.unwrap();
        assert_eq!((attempts[0].ended_at, attempts[0].outcome.as_deref()), (Some(3_001), Some("interrupted")));
        let payload: Value = serde_json::from_str(&store.webhooks_for("running").await.unwrap()[0].payload).unwrap();
        assert_eq!(payload["verification"]["attempts"][0]["outcome"], "interrupted");

        // Completed: nothing changes.
        create(store, request("done", 4_000)).await;
        store.claim("a", 4_000, 1_000, 1).await.unwrap();
        store.complete("done", "a", Outcome::NoAnswer, 4_100).await.unwrap();
        let Some(CancelResult::AlreadyFinal(v)) = store.cancel("done", 4_200).await.unwrap() else {
            panic!("not final")
        };
        assert_eq!((v.status, v.outcome, v.completed_at), (Status::Completed, Some(Outcome::NoAnswer), Some(4_100)));

        // Without a callback URL nothing is queued.
        create(store, NewVerification { callback_url: None, ..request("quiet", 5_000) }).await;
        assert!(matches!(store.cancel("quiet", 5_000).await.unwrap(), Some(CancelResult::Canceled(_))));
        assert!(store.webhooks_for("quiet").await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verified_call_registers_phone_and_queues_webhook() {
    on_each_backend(|h| async move {
        let store = &h.store;
        create(store, request("v1", 1_000)).await;
        store.claim("a", 1_000, 30_000, 1).await.unwrap();
        store.set_status("v1", "a", Status::Dialing, 1_001).await.unwrap();
        assert_eq!(store.start_attempt("v1", "a", "call-1@pound", 1_002).await.unwrap(), 1);
        store.set_status("v1", "a", Status::Ringing, 1_500).await.unwrap();
        store.set_status("v1", "a", Status::Answered, 3_000).await.unwrap();
        // Final statuses only come from complete.
        store.set_status("v1", "a", Status::Completed, 3_001).await.unwrap();
        assert_eq!(store.verification("v1").await.unwrap().unwrap().status, Status::Answered);

        let result = AttemptResult {
            answered_at: Some(3_000),
            digit_at: Some(4_000),
            sip_status: Some(200),
            dtmf_source: Some(DtmfSource::Rfc4733),
            digits: "#".to_string(),
            detail: Some("pressed".to_string()),
            evidence: vec![KeyEvidence {
                digit: "#".into(),
                source: DtmfSource::Rfc4733,
                at_ms: 1_000,
                duration_ms: Some(160),
                inband: None,
                rfc4733: Some(Rfc4733Evidence { payload_type: 101, volume: 10, end_received: true }),
                content_type: None,
            }],
            ..ended(4_500, Outcome::Verified)
        };
        store.finish_attempt("v1", 1, &result).await.unwrap();
        let done = store.complete("v1", "a", Outcome::Verified, 4_600).await.unwrap();
        assert_eq!((done.status, done.outcome), (Status::Completed, Some(Outcome::Verified)));
        assert_eq!(
            (done.completed_at, done.updated_at, done.lease_owner.as_deref(), done.lease_until),
            (Some(4_600), 4_600, None, None)
        );
        assert_eq!(store.verification("v1").await.unwrap(), Some(done.clone()));

        let attempts = store.attempts("v1").await.unwrap();
        assert_eq!(attempts.len(), 1);
        let attempt = &attempts[0];
        assert_eq!((attempt.number, attempt.node.as_str(), attempt.call_id.as_str()), (1, "a", "call-1@pound"));
        assert_eq!(
            (attempt.started_at, attempt.answered_at, attempt.digit_at, attempt.ended_at),
            (1_002, Some(3_000), Some(4_000), Some(4_500))
        );
        assert_eq!(
            (attempt.sip_status, attempt.dtmf_source, attempt.digits.as_str()),
            (Some(200), Some(DtmfSource::Rfc4733), "#")
        );
        assert_eq!((attempt.outcome.as_deref(), attempt.detail.as_deref()), (Some("verified"), Some("pressed")));
        assert_eq!(attempt.evidence, result.evidence, "the evidence reads back as written");

        let registrations = store.registrations("alice@contoso.com", &Scope::All).await.unwrap();
        assert_eq!(registrations.len(), 1);
        assert_eq!(
            (registrations[0].phone.as_str(), registrations[0].method.as_str(), registrations[0].verified_at),
            ("+14155550100", "voice", 4_600)
        );
        assert_eq!(registrations[0].verification_id, "v1");

        let hooks = store.webhooks_for("v1").await.unwrap();
        assert_eq!(hooks.len(), 1);
        let hook = &hooks[0];
        assert!(
            hook.id.starts_with("w_") && hook.id.len() == 18 && hook.id[2..].chars().all(|c| c.is_ascii_hexdigit())
        );
        assert_eq!(
            (hook.url.as_str(), hook.attempts, hook.next_attempt_at, hook.created_at),
            (HOOK, 0, Some(4_600), 4_600)
        );
        assert_eq!((hook.delivered_at, hook.last_error.as_deref(), hook.gave_up), (None, None, false));

        let body: WebhookBody = serde_json::from_str(&hook.payload).unwrap();
        assert_eq!(body.event, "verification.completed");
        assert_eq!(body.verification.attempts, attempts);
        let json: Value = serde_json::from_str(&hook.payload).unwrap();
        let record = &json["verification"];
        assert_eq!(record["id"], "v1");
        assert_eq!(record["status"], "completed");
        assert_eq!(record["outcome"], "verified");
        assert_eq!(record["phone"], "+14155550100");
        assert_eq!(record["callback_url"], HOOK);
        assert_eq!(record["completed_at"], 4_600);
        assert_eq!(record["attempts"][0]["dtmf_source"], "rfc4733");
        assert_eq!(record["attempts"][0]["sip_status"], 200);
        for internal in ["api_key_id", "lease_owner", "lease_until", "next_attempt_at", "cancel_requested"] {
            assert!(record.get(internal).is_none(), "{internal} leaked into the webhook");
        }

        // Re-verifying the same phone moves verified_at; another phone is listed newest first.
        for (id, phone, at) in [("v2", "+14155550100", 9_000), ("v3", "+14155550199", 7_000)] {
            create(store, NewVerification { phone: phone.to_string(), callback_url: None, ..request(id, at) }).await;
            store.claim("a", at, 1_000, 1).await.unwrap();
            store.complete(id, "a", Outcome::Verified, at + 10).await.unwrap();
        }
        let registrations = store.registrations("alice@contoso.com", &Scope::All).await.unwrap();
        let summary: Vec<_> =
            registrations.iter().map(|r| (r.phone.as_str(), r.verified_at, r.verification_id.as_str())).collect();
        assert_eq!(summary, [("+14155550100", 9_010, "v2"), ("+14155550199", 7_010, "v3")]);
        assert!(store.registrations("bob@contoso.com", &Scope::All).await.unwrap().is_empty());
        assert!(store.webhooks_for("v2").await.unwrap().is_empty(), "no callback URL, no webhook");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decided_attempt_shows_its_decision_until_the_call_ends() {
    on_each_backend(|h| async move {
        let store = &h.store;
        create(store, request("v1", 1_000)).await;
        store.claim("a", 1_000, 60_000, 1).await.unwrap();
        assert_eq!(store.start_attempt("v1", "a", "call-1@pound", 1_002).await.unwrap(), 1);
        let decided = AttemptResult {
            answered_at: Some(3_000),
            digit_at: Some(4_000),
            sip_status: Some(200),
            dtmf_source: Some(DtmfSource::Rfc4733),
            digits: "#".to_string(),
            detail: Some("not written yet".to_string()),
            ..ended(4_000, Outcome::Verified)
        };
        // Not this node's lease: nothing is written, the attempt included.
        assert!(store.complete_decided("v1", "b", Outcome::Verified, 4_010, 1, &decided).await.is_err());
        assert_eq!(store.attempts("v1").await.unwrap()[0].outcome, None, "rolled back with the completion");
        store.complete_decided("v1", "a", Outcome::Verified, 4_010, 1, &decided).await.unwrap();
        let attempt = store.attempts("v1").await.unwrap().remove(0);
        assert_eq!(
            (attempt.answered_at, attempt.digit_at, attempt.sip_status, attempt.dtmf_source),
            (Some(3_000), Some(4_000), Some(200), Some(DtmfSource::Rfc4733))
        );
        assert_eq!((attempt.digits.as_str(), attempt.outcome.as_deref()), ("#", Some("verified")));
        assert_eq!((attempt.ended_at, attempt.detail), (None, None), "the call still runs");
        // The webhook queued by the completion carries the decided attempt.
        let hooks = store.webhooks_for("v1").await.unwrap();
        let body: Value = serde_json::from_str(&hooks[0].payload).unwrap();
        assert_eq!(body["verification"]["attempts"][0]["outcome"], "verified", "{body}");

        // The call's end closes it, on the completed verification.
        let result = AttemptResult { detail: Some("confirmed".to_string()), ..decided.clone() };
        store.finish_attempt("v1", 1, &AttemptResult { ended_at: 9_000, ..result }).await.unwrap();
        let attempt = store.attempts("v1").await.unwrap().remove(0);
        assert_eq!((attempt.ended_at, attempt.detail.as_deref()), (Some(9_000), Some("confirmed")));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requeue_schedules_and_releases() {
    on_each_backend(|h| async move {
        let store = &h.store;
        create(store, request("v1", 1_000)).await;
        store.claim("a", 1_000, 10_000, 1).await.unwrap();
        store.set_status("v1", "a", Status::Ringing, 1_100).await.unwrap();
        assert_eq!(store.start_attempt("v1", "a", "call-1", 1_100).await.unwrap(), 1);
        store.finish_attempt("v1", 1, &ended(1_900, Outcome::NoAnswer)).await.unwrap();

        store.requeue("v1", "intruder", 2_500, 1_950).await.unwrap();
        assert_eq!(store.verification("v1").await.unwrap().unwrap().lease_owner.as_deref(), Some("a"));

        store.requeue("v1", "a", 5_000, 2_000).await.unwrap();
        let v = store.verification("v1").await.unwrap().unwrap();
        assert_eq!((v.status, v.next_attempt_at, v.updated_at), (Status::Queued, 5_000, 2_000));
        assert_eq!((v.lease_owner, v.lease_until, v.attempt_count), (None, None, 1));

        assert!(store.claim("b", 4_999, 1_000, 1).await.unwrap().is_empty());
        let claimed = store.claim("b", 5_000, 1_000, 1).await.unwrap();
        assert_eq!(ids(&claimed), ["v1"]);
        assert_eq!(claimed[0].interrupted_attempt, None, "a released lease interrupts nothing");
        assert_eq!(store.start_attempt("v1", "b", "call-2", 5_010).await.unwrap(), 2);
        let numbers: Vec<u32> = store.attempts("v1").await.unwrap().iter().map(|a| a.number).collect();
        assert_eq!(numbers, [1, 2]);
    })
    .await;
}

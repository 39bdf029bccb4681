//! What is read back (the outbox, listings, registrations, corrupt rows, old
//! rows after an upgrade, the backlog) and what the expiry sweep ends.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_outbox_lifecycle() {
    on_each_backend(|h| async move {
        let store = &h.store;
        for (id, at) in [("v2", 200), ("v1", 100), ("v3", 300)] {
            create(store, request(id, at)).await;
            store.cancel(id, at).await.unwrap();
        }
        let hook_of = |id: &str| {
            let store = store.clone();
            let id = id.to_string();
            async move { store.webhooks_for(&id).await.unwrap().remove(0) }
        };
        assert!(store.due_webhooks(99, 1_000, 10).await.unwrap().is_empty());
        assert!(store.due_webhooks(1_000, 1_000, 0).await.unwrap().is_empty());

        let due = store.due_webhooks(250, 1_000, 10).await.unwrap();
        let order: Vec<&str> = due.iter().map(|w| w.verification_id.as_str()).collect();
        assert_eq!(order, ["v1", "v2"]);
        assert!(due.iter().all(|w| w.next_attempt_at == Some(1_250) && w.attempts == 0));
        assert!(!due[0].payload.is_empty());
        // Soft-leased: not handed out again until the lease runs out.
        assert_eq!(
            store
                .due_webhooks(300, 1_000, 10)
                .await
                .unwrap()
                .iter()
                .map(|w| w.verification_id.as_str())
                .collect::<Vec<_>>(),
            ["v3"]
        );
        assert_eq!(store.due_webhooks(1_250, 1_000, 1).await.unwrap().len(), 1, "limit");

        store.webhook_delivered(&due[0].id, 1_300).await.unwrap();
        let delivered = hook_of("v1").await;
        assert_eq!((delivered.delivered_at, delivered.next_attempt_at, delivered.attempts), (Some(1_300), None, 1));
        store.webhook_delivered(&due[0].id, 1_400).await.unwrap();
        assert_eq!(hook_of("v1").await, delivered, "a repeated success changes nothing");

        store.webhook_failed(&due[1].id, "HTTP 503", Some(5_000)).await.unwrap();
        let failed = hook_of("v2").await;
        assert_eq!(
            (failed.attempts, failed.last_error.as_deref(), failed.next_attempt_at),
            (1, Some("HTTP 503"), Some(5_000))
        );
        assert!(!failed.gave_up);
        let due_later: Vec<String> =
            store.due_webhooks(4_999, 10, 10).await.unwrap().into_iter().map(|w| w.verification_id).collect();
        assert_eq!(due_later, ["v3"]);
        let retry = store.due_webhooks(5_000, 10, 10).await.unwrap();
        assert_eq!((retry.len(), retry[0].verification_id.as_str()), (1, "v2"));

        store.webhook_failed(&retry[0].id, "connection refused", None).await.unwrap();
        let given_up = hook_of("v2").await;
        assert_eq!((given_up.attempts, given_up.next_attempt_at, given_up.gave_up), (2, None, true));
        assert_eq!(given_up.last_error.as_deref(), Some("connection refused"));
        assert_eq!(
            store
                .due_webhooks(1_000_000, 10, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|w| w.verification_id)
                .collect::<Vec<_>>(),
            ["v3"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_and_cooldown_queries() {
    on_each_backend(|h| async move {
        let store = &h.store;
        create(store, request("a1", 1_000)).await;
        create(store, NewVerification { phone: "+14155550199".to_string(), ..request("a2", 2_000) }).await;
        create(store, request("a3", 3_000)).await;
        create(store, NewVerification { api_key_id: "key-2".to_string(), ..request("b1", 4_000) }).await;

        assert_eq!(store.count_created_since("key-1", 0).await.unwrap(), 3);
        assert_eq!(store.count_created_since("key-1", 2_000).await.unwrap(), 2, "inclusive");
        assert_eq!(store.count_created_since("key-1", 3_001).await.unwrap(), 0);
        assert_eq!(store.count_created_since("key-2", 0).await.unwrap(), 1);
        assert_eq!(store.count_created_since("key-3", 0).await.unwrap(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_rows_are_errors() {
    on_each_backend(|h| async move {
        let store = &h.store;
        for id in ["status", "outcome", "count", "fine"] {
            create(store, request(id, 100)).await;
        }
        h.execute("UPDATE verifications SET status = 'bogus' WHERE id = 'status'").await;
        h.execute("UPDATE verifications SET outcome = 'maybe' WHERE id = 'outcome'").await;
        h.execute("UPDATE verifications SET attempt_count = -1 WHERE id = 'count'").await;
        for id in ["status", "outcome", "count"] {
            assert!(matches!(store.verification(id).await, Err(StoreError::Corrupt(_))), "{id}");
            assert!(matches!(store.cancel(id, 200).await, Err(StoreError::Corrupt(_))), "{id}");
        }
        // A corrupt row does not stall the queue: the readable one is still handed out.
        assert_eq!(ids(&store.claim("a", 1_000, 100, 10).await.unwrap()), ["fine"]);

        assert_eq!(store.start_attempt("fine", "a", "call-1", 1_000).await.unwrap(), 1);
        h.execute("UPDATE attempts SET dtmf_source = 'smoke signals' WHERE verification_id = 'fine'").await;
        assert!(matches!(store.attempts("fine").await, Err(StoreError::Corrupt(_))));
        h.execute("UPDATE attempts SET dtmf_source = NULL, sip_status = 70000 WHERE verification_id = 'fine'").await;
        assert!(matches!(store.attempts("fine").await, Err(StoreError::Corrupt(_))));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listing_is_scoped_filtered_and_paged() {
    on_each_backend(|h| async move {
        let store = &h.store;
        // Two share a creation time: the id breaks the tie, so paging never skips or repeats one.
        for (id, at, tenant_name, user, phone) in [
            ("a1", 1_000, "t1", "alice", "+14155550100"),
            ("a2", 2_000, "t1", "bob", "+14155550101"),
            ("a3", 2_000, "t1", "alice", "+14155550102"),
            ("b1", 3_000, "t2", "alice", "+14155550100"),
            ("a4", 4_000, "t1", "alice", "+14155550100"),
        ] {
            let new = NewVerification {
                tenant: tenant_name.to_string(),
                user: user.to_string(),
                phone: phone.to_string(),
                ..request(id, at)
            };
            create(store, new).await;
        }
        assert_eq!(listed(store, &everything(tenant("t1"))).await, ["a4", "a3", "a2", "a1"]);
        assert_eq!(listed(store, &everything(tenant("t2"))).await, ["b1"]);
        assert!(listed(store, &everything(tenant("t3"))).await.is_empty());
        assert_eq!(listed(store, &everything(Scope::All)).await, ["a4", "b1", "a3", "a2", "a1"]);

        let alice = VerificationQuery { user: Some("alice".into()), ..everything(tenant("t1")) };
        assert_eq!(listed(store, &alice).await, ["a4", "a3", "a1"]);
        let phone = VerificationQuery { phone: Some("+14155550100".into()), ..everything(Scope::All) };
        assert_eq!(listed(store, &phone).await, ["a4", "b1", "a1"]);
        store.claim("n", 10_000, 1_000, 10).await.unwrap();
        store.complete("a2", "n", Outcome::Verified, 10_000).await.unwrap();
        let completed = VerificationQuery { status: Some(Status::Completed), ..everything(tenant("t1")) };
        assert_eq!(listed(store, &completed).await, ["a2"]);

        // Pages of two, each continuing after the last item of the one before.
        let mut pages = Vec::new();
        let mut query = VerificationQuery { limit: 2, ..everything(tenant("t1")) };
        loop {
            let page = store.list_verifications(&query).await.unwrap();
            let Some(last) = page.last() else { break };
            query.before = Some((last.created_at, last.id.clone()));
            pages.push(page.iter().map(|v| v.id.clone()).collect::<Vec<_>>());
        }
        assert_eq!(pages, [vec!["a4", "a3"], vec!["a2", "a1"]]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registrations_are_per_tenant() {
    on_each_backend(|h| async move {
        let store = &h.store;
        // The same user name and phone, verified through two tenants.
        for (id, tenant_name, at) in [("t1-v", "t1", 1_000), ("t2-v", "t2", 2_000)] {
            create(store, NewVerification { tenant: tenant_name.to_string(), callback_url: None, ..request(id, at) })
                .await;
            store.claim("n", at, 100, 1).await.unwrap();
            store.complete(id, "n", Outcome::Verified, at + 10).await.unwrap();
        }
        let seen = |scope: Scope| async move {
            let registrations = store.registrations("alice@contoso.com", &scope).await.unwrap();
            registrations.into_iter().map(|r| (r.tenant, r.verification_id)).collect::<Vec<_>>()
        };
        assert_eq!(seen(tenant("t1")).await, [("t1".to_string(), "t1-v".to_string())]);
        assert_eq!(seen(tenant("t2")).await, [("t2".to_string(), "t2-v".to_string())]);
        assert!(seen(tenant("t3")).await.is_empty());
        assert_eq!(seen(Scope::All).await.len(), 2, "one row per tenant, neither overwrote the other");
    })
    .await;
}

/// Rows written before migration 0002 stay with the key that created them.
async fn upgrade_keeps_old_rows_with_their_key(url: &str) {
    let old_rows = "INSERT INTO api_keys (id, name, hash, created_at) VALUES ('k_old', 'old', 'ff', 1); \
        INSERT INTO verifications (id, api_key_id, phone, user_name, dialplan, status, max_attempts, \
        next_attempt_at, request_hash, created_at, updated_at) \
        VALUES ('old1', 'k_old', '+14155550100', 'alice', 'press-pound', 'completed', 3, 1, 'h', 1, 1); \
        INSERT INTO registrations (user_name, phone, method, verified_at, verification_id) \
        VALUES ('alice', '+14155550100', 'voice', 2, 'old1');";
    // Only 0001, as a store from before tenancy was migrated.
    let first_only = |mut migrator: sqlx::migrate::Migrator| {
        migrator.migrations = migrator.migrations.iter().filter(|m| m.version == 1).cloned().collect();
        migrator
    };
    if url.starts_with("sqlite:") {
        let options = url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        first_only(sqlx::migrate!("./migrations/sqlite")).run(&pool).await.unwrap();
        sqlx::raw_sql(old_rows).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        first_only(sqlx::migrate!("./migrations/postgres")).run(&pool).await.unwrap();
        sqlx::raw_sql(old_rows).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let store = open(url).await.expect("0002 applies over 0001 with rows in it");
    assert_eq!(store.verification("old1").await.unwrap().unwrap().tenant, "k_old");
    assert_eq!(store.registrations("alice", &tenant("k_old")).await.unwrap().len(), 1);
    assert!(store.registrations("alice", &tenant("k_new")).await.unwrap().is_empty());
    assert_eq!(listed(&store, &everything(tenant("k_old"))).await, ["old1"]);
    let key = store.api_key_by_id("k_old").await.unwrap().unwrap();
    assert_eq!((key.effective_tenant(), key.admin, key.signing_secrets(0)), ("k_old", false, vec![]));
}

#[tokio::test]
async fn sqlite_upgrade_keeps_old_rows_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    upgrade_keeps_old_rows_with_their_key(&format!("sqlite://{}", dir.path().join("old.db").display())).await;
}

#[tokio::test]
async fn postgres_upgrade_keeps_old_rows_with_their_key() {
    let Ok(admin_url) = std::env::var("POUND_TEST_DATABASE_URL") else {
        eprintln!("POUND_TEST_DATABASE_URL is not set: skipping the PostgreSQL run");
        return;
    };
    let name = format!("pound_test_{:016x}", rand::random::<u64>());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    let url = with_database(&admin_url, &name);
    let result = CatchUnwind(Box::pin(upgrade_keeps_old_rows_with_their_key(&url))).await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backlog_counts_claimable_work_and_pending_webhooks() {
    on_each_backend(|h| async move {
        let store = &h.store;
        let backlog = |now: i64| {
            let store = store.clone();
            async move {
                let b = store.backlog(now).await.unwrap();
                (b.queue_depth, b.webhooks_pending)
            }
        };
        assert_eq!(backlog(0).await, (0, 0));
        for (id, at) in [("v1", 100), ("v2", 200), ("v3", 300)] {
            create(store, request(id, at)).await;
        }
        assert_eq!(backlog(250).await, (2, 0), "v3 is not due yet");
        assert_eq!(ids(&store.claim("node-a", 250, 1_000, 1).await.unwrap()), ["v1"]);
        assert_eq!(backlog(260).await, (1, 0), "a leased verification is not waiting");
        store.complete("v1", "node-a", Outcome::Verified, 300).await.unwrap();
        assert_eq!(backlog(300).await, (2, 1), "its webhook waits in the outbox");
        assert_eq!(ids(&store.claim("node-a", 400, 10, 1).await.unwrap()), ["v2"]);
        assert_eq!(backlog(405).await, (1, 1));
        assert_eq!(backlog(411).await, (2, 1), "an expired lease is claimable again");
        let due = store.due_webhooks(500, 1_000, 10).await.unwrap();
        assert_eq!(backlog(501).await, (2, 1), "a webhook being sent is still pending");
        store.webhook_delivered(&due[0].id, 600).await.unwrap();
        assert_eq!(backlog(601).await, (2, 0));
        store.cancel("v3", 700).await.unwrap();
        let due = store.due_webhooks(800, 1_000, 10).await.unwrap();
        store.webhook_failed(&due[0].id, "HTTP 5xx", None).await.unwrap();
        assert_eq!(backlog(900).await, (1, 0), "canceled and given up are not waiting");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overdue_open_unleased_verifications_expire_once_with_their_webhook() {
    on_each_backend(|h| async move {
        let store = &h.store;
        for (id, at) in [("queued", 1_000), ("fresh", 5_000), ("in-call", 1_000), ("dead-node", 1_000), ("done", 1_000)]
        {
            create(store, request(id, at)).await;
        }
        let claim = |node: &'static str, lease: i64| {
            let store = store.clone();
            async move { store.claim(node, 1_500, lease, 1).await.unwrap().remove(0).verification.id }
        };
        // Claims of rows due at once go by id.
        assert_eq!(claim("gone", 100).await, "dead-node");
        assert_eq!(store.start_attempt("dead-node", "gone", "call-1", 1_510).await.unwrap(), 1);
        assert_eq!(claim("n", 100).await, "done");
        store.complete("done", "n", Outcome::NoAnswer, 1_520).await.unwrap();
        assert_eq!(claim("live", 1_000_000).await, "in-call");

        let mut expired: Vec<String> =
            store.expire_overdue(2_000, 3_000, 10).await.unwrap().into_iter().map(|v| v.id).collect();
        expired.sort();
        assert_eq!(expired, ["dead-node", "queued"], "not the fresh one, the one in a live call, or the completed one");
        for id in ["queued", "dead-node"] {
            let v = store.verification(id).await.unwrap().unwrap();
            assert_eq!(
                (v.status, v.outcome, v.completed_at, v.lease_owner),
                (Status::Expired, None, Some(3_000), None)
            );
            let hooks = store.webhooks_for(id).await.unwrap();
            assert_eq!(hooks.len(), 1, "{id}");
            let body: WebhookBody = serde_json::from_str(&hooks[0].payload).unwrap();
            assert_eq!(
                (body.event.as_str(), body.verification.verification.status),
                ("verification.completed", Status::Expired)
            );
        }
        let attempts = store.attempts("dead-node").await.unwrap();
        assert_eq!((attempts[0].outcome.as_deref(), attempts[0].ended_at), (Some("interrupted"), Some(3_000)));

        assert!(store.expire_overdue(2_000, 4_000, 10).await.unwrap().is_empty(), "expired once");
        assert!(store.expire_overdue(2_000, 4_000, 0).await.unwrap().is_empty());
        // Never dialled again, even when due.
        assert!(store.claim("n", 10_000, 100, 10).await.unwrap().iter().all(|c| c.verification.id == "fresh"));
        // The live call's own node finishes it as usual.
        assert_eq!(
            store.complete("in-call", "live", Outcome::Verified, 4_000).await.unwrap().status,
            Status::Completed
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sweeps_expire_each_verification_once() {
    on_each_backend(|h| async move {
        let expired = forty_taken_once_by_eight_workers(&h, |store, _| async move {
            store.expire_overdue(10_000, 20_000, 3).await.unwrap().into_iter().map(|v| v.id).collect()
        })
        .await;
        for id in &expired {
            assert_eq!(h.store.webhooks_for(id).await.unwrap().len(), 1, "one webhook for {id}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_is_stored_for_whichever_node_claims_it_and_kept_out_of_webhooks() {
    on_each_backend(|h| async move {
        let store = &h.store;
        let code = crate::code::Code::parse("0815").unwrap();
        create(store, NewVerification { code: Some(code.clone()), ..request("coded", 1_000) }).await;
        create(store, request("plain", 1_000)).await;
        assert_eq!(store.verification("coded").await.unwrap().unwrap().code.as_ref(), Some(&code));
        assert_eq!(store.verification("plain").await.unwrap().unwrap().code, None);
        // The node that claims it, any node, compares the entry with it.
        let claimed = store.claim("node-b", 1_000, 500, 10).await.unwrap();
        let coded = claimed.iter().find(|c| c.verification.id == "coded").expect("claimed");
        assert_eq!(coded.verification.code.as_ref(), Some(&code), "leading zero kept");
        // The webhook, which leaves pound, carries the record without it.
        store.complete("coded", "node-b", Outcome::Verified, 1_200).await.unwrap();
        let hook = store.webhooks_for("coded").await.unwrap().remove(0);
        assert!(hook.payload.contains("\"verified\"") && !hook.payload.contains("0815"), "{}", hook.payload);
        assert!(!hook.payload.contains("\"code\""), "{}", hook.payload);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locale_is_stored_for_whichever_node_claims_it() {
    on_each_backend(|h| async move {
        let store = &h.store;
        create(store, NewVerification { locale: Some("de".into()), ..request("german", 1_000) }).await;
        create(store, request("default", 1_000)).await;
        assert_eq!(store.verification("german").await.unwrap().unwrap().locale.as_deref(), Some("de"));
        assert_eq!(store.verification("default").await.unwrap().unwrap().locale, None);
        let claimed = store.claim("node-b", 1_000, 500, 10).await.unwrap();
        let german = claimed.iter().find(|c| c.verification.id == "german").expect("claimed");
        assert_eq!(german.verification.locale.as_deref(), Some("de"), "the claiming node plays German");
        store.complete("german", "node-b", Outcome::Verified, 1_200).await.unwrap();
        let hook = store.webhooks_for("german").await.unwrap().remove(0);
        assert!(hook.payload.contains("\"locale\":\"de\""), "{}", hook.payload);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voicemail_outcome_and_a_sit_detail_are_stored_and_read_back() {
    on_each_backend(|h| async move {
        let store = &h.store;
        for (id, outcome, detail) in [
            ("vm", Outcome::Voicemail, "voicemail: 4.1 s of greeting, then a 1000 Hz beep"),
            ("sit", Outcome::InvalidNumber, "SIT VC (vacant code)"),
        ] {
            create(store, request(id, 0)).await;
            store.claim("a", 100, 10_000, 1).await.unwrap();
            let number = store.start_attempt(id, "a", &format!("call-{id}"), 110).await.unwrap();
            let result = AttemptResult { detail: Some(detail.to_string()), ..ended(1_000, outcome) };
            store.finish_attempt(id, number, &result).await.unwrap();
            let done = store.complete(id, "a", outcome, 1_001).await.unwrap();
            assert_eq!((done.status, done.outcome), (Status::Completed, Some(outcome)));
            assert_eq!(store.verification(id).await.unwrap().unwrap().outcome, Some(outcome));
            let attempts = store.attempts(id).await.unwrap();
            assert_eq!(attempts[0].outcome.as_deref(), Some(outcome.as_str()));
            assert_eq!(attempts[0].detail.as_deref(), Some(detail));
        }
    })
    .await;
}

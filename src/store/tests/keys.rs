//! API keys: lookup, tenant grants, webhook secret rotation and lifecycle.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_by_hash() {
    on_each_backend(|h| async move {
        let store = &h.store;
        let key = ApiKey {
            id: "k1".to_string(),
            name: "registration service".to_string(),
            hash: "ab12".to_string(),
            created_at: 42,
            tenant: None,
            admin: false,
            webhook_secret: None,
            previous_webhook_secret: None,
            previous_secret_until: None,
            revoked_at: None,
            last_used_at: None,
        };
        store.insert_api_key(&key).await.unwrap();
        assert_eq!(store.api_key_by_hash("ab12").await.unwrap(), Some(key.clone()));
        assert_eq!(store.api_key_by_hash("cd34").await.unwrap(), None);
        let same_hash = ApiKey { id: "k2".to_string(), ..key };
        assert!(matches!(store.insert_api_key(&same_hash).await, Err(StoreError::Database(_))));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_key_grants_and_secret_rotation() {
    on_each_backend(|h| async move {
        let store = &h.store;
        let admin = ApiKey {
            id: "k_admin".to_string(),
            name: "ops".to_string(),
            hash: "11".to_string(),
            created_at: 1,
            tenant: Some("operators".to_string()),
            admin: true,
            webhook_secret: Some("whsec_one".to_string()),
            previous_webhook_secret: None,
            previous_secret_until: None,
            revoked_at: None,
            last_used_at: None,
        };
        let plain =
            ApiKey { id: "k_plain".to_string(), hash: "22".to_string(), tenant: None, admin: false, ..admin.clone() };
        store.insert_api_key(&admin).await.unwrap();
        store.insert_api_key(&plain).await.unwrap();
        assert_eq!(store.api_key_by_hash("11").await.unwrap(), Some(admin.clone()));
        assert_eq!(store.api_key_by_id("k_plain").await.unwrap(), Some(plain.clone()));
        assert_eq!(store.api_key_by_id("nope").await.unwrap(), None);
        assert_eq!(admin.effective_tenant(), "operators");
        assert_eq!(plain.effective_tenant(), "k_plain", "a key without a tenant is its own");
        assert!(!format!("{admin:?}").contains("whsec_one"), "Debug hides the secret");

        let by_name: Vec<String> = store.api_keys_named("ops").await.unwrap().into_iter().map(|k| k.id).collect();
        assert_eq!(by_name, ["k_admin", "k_plain"]);
        assert_eq!(store.api_keys_named("k_plain").await.unwrap(), std::slice::from_ref(&plain));
        assert!(store.api_keys_named("nobody").await.unwrap().is_empty());

        assert_eq!(plain.signing_secrets(0), ["whsec_one"]);
        assert!(store.set_webhook_secret("k_plain", "whsec_two", 5_000).await.unwrap());
        let rotated = store.api_key_by_id("k_plain").await.unwrap().unwrap();
        assert_eq!(rotated.webhook_secret.as_deref(), Some("whsec_two"));
        assert_eq!(
            (rotated.previous_webhook_secret.as_deref(), rotated.previous_secret_until),
            (Some("whsec_one"), Some(5_000)),
            "the secret it replaced is kept for the overlap"
        );
        assert_eq!(rotated.signing_secrets(4_999), ["whsec_two", "whsec_one"], "both sign, the new one first");
        assert_eq!(rotated.signing_secrets(5_000), ["whsec_two"], "the overlap is over");
        assert!(!format!("{rotated:?}").contains("whsec_"), "Debug hides both secrets");
        assert!(store.set_webhook_secret("k_plain", "whsec_three", 6_000).await.unwrap());
        let again = store.api_key_by_id("k_plain").await.unwrap().unwrap();
        assert_eq!(again.signing_secrets(0), ["whsec_three", "whsec_two"], "only one previous secret is kept");
        assert_eq!(store.api_key_by_id("k_admin").await.unwrap().unwrap().webhook_secret.as_deref(), Some("whsec_one"));
        assert!(!store.set_webhook_secret("nope", "x", 0).await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_are_listed_revoked_and_touched() {
    on_each_backend(|h| async move {
        let store = &h.store;
        let first = ApiKey {
            id: "k_b".to_string(),
            name: "ci".to_string(),
            hash: "aa".to_string(),
            created_at: 10,
            tenant: None,
            admin: false,
            webhook_secret: Some("whsec_ci".to_string()),
            previous_webhook_secret: None,
            previous_secret_until: None,
            revoked_at: None,
            last_used_at: None,
        };
        let second = ApiKey { id: "k_a".to_string(), hash: "bb".to_string(), created_at: 20, ..first.clone() };
        store.insert_api_key(&second).await.unwrap();
        store.insert_api_key(&first).await.unwrap();
        let listed: Vec<String> = store.list_api_keys().await.unwrap().into_iter().map(|k| k.id).collect();
        assert_eq!(listed, ["k_b", "k_a"], "oldest first");

        assert!(store.revoke_api_key("k_b", 1_000).await.unwrap());
        assert!(store.revoke_api_key("k_b", 2_000).await.unwrap(), "revoking again is no error");
        let revoked = store.api_key_by_hash("aa").await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at, Some(1_000), "the first revocation's time is kept");
        let signer = store.api_key_by_id("k_b").await.unwrap().unwrap();
        assert_eq!(signer.signing_secrets(0), ["whsec_ci"], "its queued webhooks are still signed");
        assert_eq!(store.api_key_by_hash("bb").await.unwrap().unwrap().revoked_at, None);
        assert!(!store.revoke_api_key("nope", 1_000).await.unwrap());

        let last_used = |id: &'static str| async move { store.api_key_by_id(id).await.unwrap().unwrap().last_used_at };
        store.touch_api_key("k_a", 100_000).await.unwrap();
        assert_eq!(last_used("k_a").await, Some(100_000));
        store.touch_api_key("k_a", 100_000 + crate::store::LAST_USED_EVERY_MS - 1).await.unwrap();
        assert_eq!(last_used("k_a").await, Some(100_000), "not rewritten within a minute");
        store.touch_api_key("k_a", 100_000 + crate::store::LAST_USED_EVERY_MS).await.unwrap();
        assert_eq!(last_used("k_a").await, Some(100_000 + crate::store::LAST_USED_EVERY_MS));
        assert_eq!(last_used("k_b").await, None);
    })
    .await;
}

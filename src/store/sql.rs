//! The one [`Store`] implementation, for both databases: each method hands
//! its work to the plain function of the module whose job it is
//! (`verifications`, `leases`, `keys`, `outbox`), over a [`Pool`] whose
//! [`Dialect`](super::db::Dialect) says where the SQL differs.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::audit::AuditEntry;
use super::audit_verify::{self, AuditReport};
use super::db::{Backend, Pool};
use super::velocity::{Admission, VelocityCheck};
use super::{
    ApiKey, Attempt, AttemptResult, Backlog, CancelResult, Claimed, LeaseState, NewVerification, Registration, Scope,
    Status, Store, StoreError, Verification, VerificationQuery, WebhookDelivery, WorkSignals, keys, leases, outbox,
    postgres, verifications,
};
use crate::vocab::Outcome;

/// A store in a SQLite or PostgreSQL database.
pub(super) struct SqlStore {
    pool: Pool,
}

impl SqlStore {
    pub(super) fn new(pool: Pool) -> SqlStore {
        SqlStore { pool }
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn create_verification(&self, new: &NewVerification) -> Result<(Verification, bool), StoreError> {
        verifications::create(&self.pool, new).await
    }

    async fn admit_verification(&self, new: &NewVerification, check: &VelocityCheck) -> Result<Admission, StoreError> {
        verifications::admit(&self.pool, new, check).await
    }

    async fn verification(&self, id: &str) -> Result<Option<Verification>, StoreError> {
        verifications::get(&self.pool, id).await
    }

    async fn attempts(&self, verification_id: &str) -> Result<Vec<Attempt>, StoreError> {
        verifications::attempts(&self.pool, verification_id).await
    }

    async fn cancel(&self, id: &str, now: i64) -> Result<Option<CancelResult>, StoreError> {
        verifications::cancel(&self.pool, id, now).await
    }

    async fn claim(&self, node: &str, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<Claimed>, StoreError> {
        leases::claim(&self.pool, node, now, lease_ms, limit).await
    }

    async fn renew_leases(&self, ids: &[String], node: &str, until: i64) -> Result<Vec<LeaseState>, StoreError> {
        leases::renew(&self.pool, ids, node, until).await
    }

    async fn set_status(&self, id: &str, node: &str, status: Status, now: i64) -> Result<(), StoreError> {
        leases::set_status(&self.pool, id, node, status, now).await
    }

    async fn start_attempt(&self, id: &str, node: &str, call_id: &str, now: i64) -> Result<u32, StoreError> {
        leases::start_attempt(&self.pool, id, node, call_id, now).await
    }

    async fn finish_attempt(&self, id: &str, number: u32, result: &AttemptResult) -> Result<(), StoreError> {
        leases::finish_attempt(&self.pool, id, number, result).await
    }

    async fn complete(&self, id: &str, node: &str, outcome: Outcome, now: i64) -> Result<Verification, StoreError> {
        leases::complete(&self.pool, id, node, outcome, now, None).await
    }

    async fn complete_decided(
        &self,
        id: &str,
        node: &str,
        outcome: Outcome,
        now: i64,
        number: u32,
        decided: &AttemptResult,
    ) -> Result<Verification, StoreError> {
        leases::complete(&self.pool, id, node, outcome, now, Some((number, decided))).await
    }

    async fn requeue(&self, id: &str, node: &str, next_attempt_at: i64, now: i64) -> Result<(), StoreError> {
        leases::requeue(&self.pool, id, node, next_attempt_at, now).await
    }

    async fn registrations(&self, user: &str, scope: &Scope) -> Result<Vec<Registration>, StoreError> {
        verifications::registrations(&self.pool, user, scope).await
    }

    async fn count_created_since(&self, api_key_id: &str, since: i64) -> Result<u64, StoreError> {
        verifications::count_created_since(&self.pool, api_key_id, since).await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        keys::insert(&self.pool, key).await
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        keys::by_hash(&self.pool, hash).await
    }

    async fn due_webhooks(&self, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<WebhookDelivery>, StoreError> {
        outbox::due(&self.pool, now, lease_ms, limit).await
    }

    async fn webhook_delivered(&self, id: &str, now: i64) -> Result<(), StoreError> {
        outbox::delivered(&self.pool, id, now).await
    }

    async fn webhook_failed(&self, id: &str, error: &str, next_attempt_at: Option<i64>) -> Result<(), StoreError> {
        // The trait's callers do not pass the time; the store's clock dates the entry.
        outbox::failed(&self.pool, id, error, next_attempt_at, self.pool.clock.unix_ms()).await
    }

    async fn webhooks_for(&self, verification_id: &str) -> Result<Vec<WebhookDelivery>, StoreError> {
        outbox::of_verification(&self.pool, verification_id).await
    }

    async fn check_writable(&self, now: i64) -> Result<(), StoreError> {
        // A real write: reading, or a transaction that writes nothing,
        // succeeds on a full disk.
        self.pool
            .write(
                "INSERT INTO store_probe (id, written_at) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
                &[now.into()],
            )
            .await?;
        Ok(())
    }

    async fn list_verifications(&self, query: &VerificationQuery) -> Result<Vec<Verification>, StoreError> {
        verifications::list(&self.pool, query).await
    }

    async fn api_key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        keys::by_id(&self.pool, id).await
    }

    async fn api_keys_named(&self, id_or_name: &str) -> Result<Vec<ApiKey>, StoreError> {
        keys::named(&self.pool, id_or_name).await
    }

    async fn set_webhook_secret(&self, id: &str, secret: &str, previous_until: i64) -> Result<bool, StoreError> {
        keys::set_webhook_secret(&self.pool, id, secret, previous_until).await
    }

    async fn expire_overdue(&self, created_before: i64, now: i64, limit: u32) -> Result<Vec<Verification>, StoreError> {
        leases::expire_overdue(&self.pool, created_before, now, limit).await
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        keys::list(&self.pool).await
    }

    async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        keys::revoke(&self.pool, id, now).await
    }

    async fn touch_api_key(&self, id: &str, now: i64) -> Result<(), StoreError> {
        keys::touch(&self.pool, id, now).await
    }

    async fn backlog(&self, now: i64) -> Result<Backlog, StoreError> {
        leases::backlog(&self.pool, now).await
    }

    async fn audit_entries(&self, tenant: &str, verification_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        verifications::audit_entries(&self.pool, tenant, verification_id).await
    }

    async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        audit_verify::verify(&self.pool).await
    }

    fn work_signals(&self, wake: Arc<Notify>) -> Option<WorkSignals> {
        match &self.pool.backend {
            // One node: its own API wakes its engine.
            Backend::Sqlite { .. } => None,
            Backend::Postgres { pool, .. } => Some(Box::pin(postgres::relay_work_signals(pool.clone(), wake))),
        }
    }
}

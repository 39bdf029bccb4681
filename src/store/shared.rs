//! The [`Store`](super::Store) implementation both backends share, written
//! once as a macro that each backend instantiates with its own types.
//!
//! A macro rather than functions generic over `sqlx::Database`: those would
//! need an `Encode`, `Decode` or `FromRow` bound for every type bound or read,
//! on every function; the instantiated code is type-checked per backend.
//!
//! The SQL uses `$N` placeholders, which both backends accept; see
//! `store::queries` for why that is safe on SQLite. What stays in each
//! backend: connecting, `begin_write` (how a write transaction starts) and
//! the row locks passed in here, which is where the dialects differ.
//!
//! A write whose rows are read back (`RETURNING`) runs in a transaction with
//! an explicit commit, never as a lone statement on the pool. On SQLite a
//! lone statement commits when it is stepped to its end or reset, but sqlx
//! stops stepping once `fetch_optional`/`fetch_one` has its row and ignores
//! the error of the reset: a commit that fails there (a full disk) would be
//! reported as success with a row that was never stored.

/// Implements [`Store`](super::Store) for a backend. Invoke it in a module of
/// its own, as it brings the names it needs into scope.
///
/// - `store`: the backend's store type, with a `pool` field and a
///   `begin_write(&self)` method that starts a write transaction.
/// - `connection`: its connection type (`sqlx::sqlite::SqliteConnection`).
/// - `lock_row`: appended to the `SELECT` with which `cancel` reads the row
///   it decides on, to lock that row until commit.
/// - `lock_due`: appended to the `SELECT`s with which `claim` and
///   `due_webhooks` pick due rows, to lock them without waiting for rows
///   another node is picking.
macro_rules! impl_store {
    (
        store: $store:ty,
        connection: $connection:ty,
        lock_row: $lock_row:literal,
        lock_due: $lock_due:literal $(,)?
    ) => {
        use async_trait::async_trait;

        use $crate::vocab::Outcome;
        use $crate::store::common::{
            ApiKeyRow, RegistrationRow, SqlParam, VerificationRow, WebhookRow, attempt_number, convert_all,
            lease_not_held, listing_sql, read_error,
        };
        use $crate::store::{
            ApiKey, Attempt, AttemptResult, CancelResult, Claimed, LeaseState, NewVerification, Registration, Scope,
            Status, Store, StoreError, Verification, VerificationQuery, WebhookDelivery,
        };
        use queries::{
            close_open_attempt, fetch_api_key, fetch_attempts, fetch_verification, insert_verification,
            queue_completion_webhook,
        };

        $crate::store::queries::connection_queries!($connection);
        // The toll-fraud guard's admission (issue 7).
        $crate::store::admission::admission_queries!($connection, $lock_row);

        #[async_trait]
        impl Store for $store {
            async fn create_verification(&self, new: &NewVerification) -> Result<(Verification, bool), StoreError> {
                // In a transaction of its own because of RETURNING (see the
                // module docs): the caller answers 202 only after the commit
                // said the row is stored.
                let mut tx = self.begin_write().await?;
                let created = insert_verification(&mut tx, new).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn admit_verification(
                &self,
                new: &NewVerification,
                check: &$crate::store::velocity::VelocityCheck,
            ) -> Result<$crate::store::velocity::Admission, StoreError> {
                use $crate::store::velocity::{Admission, Verdict};
                let mut tx = self.begin_write().await?;
                let (verdict, open_breakers) = admission::admit(&mut tx, new, check).await?;
                // A refusal leaves nothing behind but the breaker it tripped.
                if matches!(verdict, Verdict::Admitted { .. } | Verdict::Paused { tripped: true, .. }) {
                    tx.commit().await?;
                }
                Ok(Admission { verdict, open_breakers })
            }

            async fn verification(&self, id: &str) -> Result<Option<Verification>, StoreError> {
                fetch_verification(&mut *self.pool.acquire().await?, id).await
            }

            async fn attempts(&self, verification_id: &str) -> Result<Vec<Attempt>, StoreError> {
                fetch_attempts(&mut *self.pool.acquire().await?, verification_id).await
            }

            async fn cancel(&self, id: &str, now: i64) -> Result<Option<CancelResult>, StoreError> {
                let mut tx = self.begin_write().await?;
                // Locked until commit (`lock_row` on PostgreSQL, the write lock on
                // SQLite): a claim or a completion of this row waits for the
                // decision instead of racing it.
                let current: Option<VerificationRow> =
                    sqlx::query_as(concat!("SELECT * FROM verifications WHERE id = $1", $lock_row))
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(read_error)?;
                let Some(current) = current.map(Verification::try_from).transpose()? else {
                    return Ok(None);
                };
                if current.status.is_final() {
                    return Ok(Some(CancelResult::AlreadyFinal(current)));
                }
                if current.lease_until.is_some_and(|until| until >= now) {
                    // A live node runs the call; it sees the flag when it renews.
                    let row: VerificationRow = sqlx::query_as(
                        "UPDATE verifications SET cancel_requested = TRUE, updated_at = $2 WHERE id = $1 RETURNING *",
                    )
                    .bind(id)
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(read_error)?;
                    tx.commit().await?;
                    return Ok(Some(CancelResult::Requested(row.try_into()?)));
                }
                // Nobody runs it: queued, or its node died. A dead node's open attempt
                // is closed so that the final record has no attempt still running.
                if let Some(old_owner) = &current.lease_owner {
                    close_open_attempt(&mut tx, id, old_owner, now).await?;
                }
                let row: VerificationRow = sqlx::query_as(
                    "UPDATE verifications SET status = 'canceled', outcome = 'canceled', completed_at = $2, \
                     updated_at = $2, lease_owner = NULL, lease_until = NULL WHERE id = $1 RETURNING *",
                )
                .bind(id)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(read_error)?;
                let canceled = Verification::try_from(row)?;
                queue_completion_webhook(&mut tx, &canceled, now).await?;
                tx.commit().await?;
                Ok(Some(CancelResult::Canceled(canceled)))
            }

            async fn claim(&self, node: &str, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<Claimed>, StoreError> {
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin_write().await?;
                let due: Vec<(String, Option<String>)> = sqlx::query_as(concat!(
                    "SELECT id, lease_owner FROM verifications \
                     WHERE status IN ('queued', 'dialing', 'ringing', 'answered') AND next_attempt_at <= $1 \
                     AND (lease_owner IS NULL OR lease_until < $1) \
                     ORDER BY next_attempt_at, id LIMIT $2",
                    $lock_due
                ))
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                let mut claimed = Vec::with_capacity(due.len());
                for (id, old_owner) in due {
                    let interrupted_attempt = match &old_owner {
                        Some(old_owner) => close_open_attempt(&mut tx, &id, old_owner, now).await?,
                        None => None,
                    };
                    let row = sqlx::query_as::<_, VerificationRow>(
                        "UPDATE verifications SET lease_owner = $2, lease_until = $3, updated_at = $4 WHERE id = $1 \
                         RETURNING *",
                    )
                    .bind(&id)
                    .bind(node)
                    .bind(now.saturating_add(lease_ms))
                    .bind(now)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(read_error);
                    match row.and_then(Verification::try_from) {
                        Ok(verification) => claimed.push(Claimed { verification, interrupted_attempt }),
                        // One unreadable row must not stall the whole queue: it stays
                        // leased (so it is not retried at once) and is reported.
                        Err(StoreError::Corrupt(error)) => {
                            tracing::error!(
                                verification_id = %id,
                                %error,
                                "claimed a corrupt verification; skipping it"
                            );
                        }
                        Err(error) => return Err(error),
                    }
                }
                tx.commit().await?;
                Ok(claimed)
            }

            async fn renew_lease(&self, id: &str, node: &str, until: i64) -> Result<LeaseState, StoreError> {
                // A transaction because of RETURNING (see the module docs).
                let mut tx = self.begin_write().await?;
                let cancel_requested: Option<bool> = sqlx::query_scalar(
                    "UPDATE verifications SET lease_until = $3 \
                     WHERE id = $1 AND lease_owner = $2 AND status IN ('queued', 'dialing', 'ringing', 'answered') \
                     RETURNING cancel_requested",
                )
                .bind(id)
                .bind(node)
                .bind(until)
                .fetch_optional(&mut *tx)
                .await
                .map_err(read_error)?;
                tx.commit().await?;
                Ok(match cancel_requested {
                    None => LeaseState::Lost,
                    Some(true) => LeaseState::CancelRequested,
                    Some(false) => LeaseState::Held,
                })
            }

            async fn set_status(&self, id: &str, node: &str, status: Status, now: i64) -> Result<(), StoreError> {
                if status.is_final() {
                    // Final statuses carry an outcome and side effects: only `complete` sets them.
                    tracing::warn!(verification_id = id, status = status.as_str(), "set_status ignored a final status");
                    return Ok(());
                }
                let done = sqlx::query(
                    "UPDATE verifications SET status = $3, updated_at = $4 \
                     WHERE id = $1 AND lease_owner = $2 AND status IN ('queued', 'dialing', 'ringing', 'answered')",
                )
                .bind(id)
                .bind(node)
                .bind(status.as_str())
                .bind(now)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    tracing::warn!(verification_id = id, node, "set_status without the lease; nothing changed");
                }
                Ok(())
            }

            async fn start_attempt(&self, id: &str, node: &str, call_id: &str, now: i64) -> Result<u32, StoreError> {
                let mut tx = self.begin_write().await?;
                let count: Option<i64> = sqlx::query_scalar(
                    "UPDATE verifications SET attempt_count = attempt_count + 1, updated_at = $3 \
                     WHERE id = $1 AND lease_owner = $2 AND status IN ('queued', 'dialing', 'ringing', 'answered') \
                     RETURNING attempt_count",
                )
                .bind(id)
                .bind(node)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(read_error)?;
                let number = count.ok_or_else(|| lease_not_held(id, node))?;
                sqlx::query(
                    "INSERT INTO attempts (verification_id, number, node, call_id, started_at, digits) \
                     VALUES ($1, $2, $3, $4, $5, '')",
                )
                .bind(id)
                .bind(number)
                .bind(node)
                .bind(call_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                attempt_number(id, number)
            }

            async fn finish_attempt(&self, id: &str, number: u32, result: &AttemptResult) -> Result<(), StoreError> {
                // An attempt ends once: if a claimer already closed it as interrupted
                // (its node was presumed dead), the late report does not rewrite it.
                let done = sqlx::query(
                    "UPDATE attempts SET ended_at = $3, answered_at = $4, digit_at = $5, sip_status = $6, \
                     dtmf_source = $7, digits = $8, outcome = $9, detail = $10 \
                     WHERE verification_id = $1 AND number = $2 AND ended_at IS NULL",
                )
                .bind(id)
                .bind(i64::from(number))
                .bind(result.ended_at)
                .bind(result.answered_at)
                .bind(result.digit_at)
                .bind(result.sip_status.map(i64::from))
                .bind(result.dtmf_source.map(|source| source.as_str()))
                .bind(&result.digits)
                .bind(result.outcome.as_str())
                .bind(&result.detail)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    tracing::warn!(verification_id = id, attempt = number, "finish_attempt found no open attempt");
                }
                Ok(())
            }

            async fn decide_attempt(&self, id: &str, number: u32, result: &AttemptResult) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE attempts SET answered_at = $3, digit_at = $4, sip_status = $5, dtmf_source = $6, \
                     digits = $7, outcome = $8 \
                     WHERE verification_id = $1 AND number = $2 AND ended_at IS NULL",
                )
                .bind(id)
                .bind(i64::from(number))
                .bind(result.answered_at)
                .bind(result.digit_at)
                .bind(result.sip_status.map(i64::from))
                .bind(result.dtmf_source.map(|source| source.as_str()))
                .bind(&result.digits)
                .bind(result.outcome.as_str())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn complete(
                &self,
                id: &str,
                node: &str,
                outcome: Outcome,
                now: i64,
            ) -> Result<Verification, StoreError> {
                let status = if outcome == Outcome::Canceled { Status::Canceled } else { Status::Completed };
                let mut tx = self.begin_write().await?;
                let row: Option<VerificationRow> = sqlx::query_as(
                    "UPDATE verifications SET status = $3, outcome = $4, completed_at = $5, updated_at = $5, \
                     lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND status IN ('queued', 'dialing', 'ringing', 'answered') \
                     RETURNING *",
                )
                .bind(id)
                .bind(node)
                .bind(status.as_str())
                .bind(outcome.as_str())
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(read_error)?;
                let verification = Verification::try_from(row.ok_or_else(|| lease_not_held(id, node))?)?;
                if outcome == Outcome::Verified {
                    sqlx::query(
                        "INSERT INTO registrations (user_name, phone, method, verified_at, verification_id, tenant) \
                         VALUES ($1, $2, 'voice', $3, $4, $5) \
                         ON CONFLICT (tenant, user_name, phone) DO UPDATE SET method = excluded.method, \
                         verified_at = excluded.verified_at, verification_id = excluded.verification_id",
                    )
                    .bind(&verification.user)
                    .bind(&verification.phone)
                    .bind(now)
                    .bind(id)
                    .bind(&verification.tenant)
                    .execute(&mut *tx)
                    .await?;
                }
                queue_completion_webhook(&mut tx, &verification, now).await?;
                tx.commit().await?;
                Ok(verification)
            }

            async fn requeue(&self, id: &str, node: &str, next_attempt_at: i64, now: i64) -> Result<(), StoreError> {
                // Back to `queued`: no call runs until the next attempt is claimed.
                let done = sqlx::query(
                    "UPDATE verifications SET status = 'queued', next_attempt_at = $3, updated_at = $4, \
                     lease_owner = NULL, lease_until = NULL \
                     WHERE id = $1 AND lease_owner = $2 AND status IN ('queued', 'dialing', 'ringing', 'answered')",
                )
                .bind(id)
                .bind(node)
                .bind(next_attempt_at)
                .bind(now)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    tracing::warn!(verification_id = id, node, "requeue without the lease; nothing changed");
                }
                Ok(())
            }

            async fn registrations(&self, user: &str, scope: &Scope) -> Result<Vec<Registration>, StoreError> {
                let rows: Vec<RegistrationRow> = sqlx::query_as(
                    "SELECT * FROM registrations WHERE user_name = $1 AND ($2 IS NULL OR tenant = $2) \
                     ORDER BY verified_at DESC, phone, tenant",
                )
                .bind(user)
                .bind(scope.tenant())
                .fetch_all(&self.pool)
                .await
                .map_err(read_error)?;
                Ok(rows.into_iter().map(Registration::from).collect())
            }

            async fn count_created_since(&self, api_key_id: &str, since: i64) -> Result<u64, StoreError> {
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM verifications WHERE api_key_id = $1 AND created_at >= $2")
                        .bind(api_key_id)
                        .bind(since)
                        .fetch_one(&self.pool)
                        .await?;
                // COUNT(*) is never negative.
                Ok(count.unsigned_abs())
            }

            async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO api_keys (id, name, hash, created_at, tenant, admin, webhook_secret, \
                     previous_webhook_secret, previous_secret_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&key.id)
                .bind(&key.name)
                .bind(&key.hash)
                .bind(key.created_at)
                .bind(&key.tenant)
                .bind(key.admin)
                .bind(&key.webhook_secret)
                .bind(&key.previous_webhook_secret)
                .bind(key.previous_secret_until)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
                fetch_api_key(&mut *self.pool.acquire().await?, "SELECT * FROM api_keys WHERE hash = $1", hash).await
            }

            async fn due_webhooks(
                &self,
                now: i64,
                lease_ms: i64,
                limit: u32,
            ) -> Result<Vec<WebhookDelivery>, StoreError> {
                if limit == 0 {
                    return Ok(Vec::new());
                }
                let until = now.saturating_add(lease_ms);
                let mut tx = self.begin_write().await?;
                let rows: Vec<WebhookRow> = sqlx::query_as(concat!(
                    "SELECT * FROM webhooks \
                     WHERE next_attempt_at <= $1 AND delivered_at IS NULL AND gave_up = FALSE \
                     ORDER BY next_attempt_at, id LIMIT $2",
                    $lock_due
                ))
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await
                .map_err(read_error)?;
                let mut due = Vec::with_capacity(rows.len());
                for row in rows {
                    sqlx::query("UPDATE webhooks SET next_attempt_at = $2 WHERE id = $1")
                        .bind(row.id())
                        .bind(until)
                        .execute(&mut *tx)
                        .await?;
                    match WebhookDelivery::try_from(row) {
                        Ok(delivery) => due.push(WebhookDelivery { next_attempt_at: Some(until), ..delivery }),
                        // Leased like the others, so it is reported once per lease
                        // rather than on every scan, without holding up the rest.
                        Err(error) => tracing::error!(%error, "corrupt webhook in the outbox; skipping it"),
                    }
                }
                tx.commit().await?;
                Ok(due)
            }

            async fn webhook_delivered(&self, id: &str, now: i64) -> Result<(), StoreError> {
                // Delivery is at least once: a second report of the same success is a no-op.
                sqlx::query(
                    "UPDATE webhooks SET delivered_at = $2, next_attempt_at = NULL, attempts = attempts + 1 \
                     WHERE id = $1 AND delivered_at IS NULL",
                )
                .bind(id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn webhook_failed(
                &self,
                id: &str,
                error: &str,
                next_attempt_at: Option<i64>,
            ) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE webhooks SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3, gave_up = $4 \
                     WHERE id = $1 AND delivered_at IS NULL AND gave_up = FALSE",
                )
                .bind(id)
                .bind(error)
                .bind(next_attempt_at)
                .bind(next_attempt_at.is_none())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn webhooks_for(&self, verification_id: &str) -> Result<Vec<WebhookDelivery>, StoreError> {
                let rows: Vec<WebhookRow> =
                    sqlx::query_as("SELECT * FROM webhooks WHERE verification_id = $1 ORDER BY created_at, id")
                        .bind(verification_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_error)?;
                convert_all(rows)
            }

            async fn check_writable(&self, now: i64) -> Result<(), StoreError> {
                // A real write: reading, or a transaction that writes nothing,
                // succeeds on a full disk.
                sqlx::query(
                    "INSERT INTO store_probe (id, written_at) VALUES (1, $1) \
                     ON CONFLICT (id) DO UPDATE SET written_at = excluded.written_at",
                )
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            // Tenancy and per-key webhook secrets (issue 7).

            async fn list_verifications(&self, query: &VerificationQuery) -> Result<Vec<Verification>, StoreError> {
                let (sql, params) = listing_sql(query);
                let mut select = sqlx::query_as::<_, VerificationRow>(&sql);
                for param in params {
                    select = match param {
                        SqlParam::Text(text) => select.bind(text),
                        SqlParam::Int(int) => select.bind(int),
                    };
                }
                convert_all(select.fetch_all(&self.pool).await.map_err(read_error)?)
            }

            async fn api_key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
                fetch_api_key(&mut *self.pool.acquire().await?, "SELECT * FROM api_keys WHERE id = $1", id).await
            }

            async fn api_keys_named(&self, id_or_name: &str) -> Result<Vec<ApiKey>, StoreError> {
                let rows: Vec<ApiKeyRow> =
                    sqlx::query_as("SELECT * FROM api_keys WHERE id = $1 OR name = $1 ORDER BY created_at, id")
                        .bind(id_or_name)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(read_error)?;
                Ok(rows.into_iter().map(ApiKey::from).collect())
            }

            async fn set_webhook_secret(
                &self,
                id: &str,
                secret: &str,
                previous_until: i64,
            ) -> Result<bool, StoreError> {
                // One statement: the right-hand sides read the row as it was.
                let done = sqlx::query(
                    "UPDATE api_keys SET previous_webhook_secret = webhook_secret, previous_secret_until = $3, \
                     webhook_secret = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(secret)
                .bind(previous_until)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            // Operations metrics (issue 11).

            async fn backlog(&self, now: i64) -> Result<$crate::store::Backlog, StoreError> {
                // The same conditions as `claim` and `due_webhooks`, on the
                // same indexes (`verifications_due`, `webhooks_due`).
                let (queue_depth, webhooks_pending): (i64, i64) = sqlx::query_as(
                    "SELECT \
                     (SELECT COUNT(*) FROM verifications \
                      WHERE status IN ('queued', 'dialing', 'ringing', 'answered') AND next_attempt_at <= $1 \
                      AND (lease_owner IS NULL OR lease_until < $1)), \
                     (SELECT COUNT(*) FROM webhooks \
                      WHERE next_attempt_at IS NOT NULL AND delivered_at IS NULL AND gave_up = FALSE)",
                )
                .bind(now)
                .fetch_one(&self.pool)
                .await?;
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                Ok($crate::store::Backlog { queue_depth: count(queue_depth), webhooks_pending: count(webhooks_pending) })
            }

            // Key lifecycle (issue 11).

            async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
                let rows: Vec<ApiKeyRow> = sqlx::query_as("SELECT * FROM api_keys ORDER BY created_at, id")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(read_error)?;
                Ok(rows.into_iter().map(ApiKey::from).collect())
            }

            async fn revoke_api_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_api_key(&self, id: &str, now: i64) -> Result<(), StoreError> {
                // The condition makes nodes that race at the minute's end write once.
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $2 \
                     WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)",
                )
                .bind(id)
                .bind(now)
                .bind(now.saturating_sub($crate::store::LAST_USED_EVERY_MS))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            // Expiry (issue 11).

            async fn expire_overdue(
                &self,
                created_before: i64,
                now: i64,
                limit: u32,
            ) -> Result<Vec<Verification>, StoreError> {
                if limit == 0 {
                    return Ok(Vec::new());
                }
                // The engine sweeps before every claim, and usually nothing is
                // overdue: a plain read says so without taking the write lock
                // (SQLite's one writer, PostgreSQL row locks) on every wake-up.
                let any: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM verifications \
                     WHERE status IN ('queued', 'dialing', 'ringing', 'answered') AND created_at <= $1 \
                     AND (lease_owner IS NULL OR lease_until < $2) LIMIT 1",
                )
                .bind(created_before)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                if any.is_none() {
                    return Ok(Vec::new());
                }
                let mut tx = self.begin_write().await?;
                let overdue: Vec<(String, Option<String>)> = sqlx::query_as(concat!(
                    "SELECT id, lease_owner FROM verifications \
                     WHERE status IN ('queued', 'dialing', 'ringing', 'answered') AND created_at <= $1 \
                     AND (lease_owner IS NULL OR lease_until < $2) \
                     ORDER BY created_at, id LIMIT $3",
                    $lock_due
                ))
                .bind(created_before)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                let mut expired = Vec::with_capacity(overdue.len());
                for (id, old_owner) in overdue {
                    // The guard is checked again by the write itself: a sweep
                    // that read the row before another one expired it (or a
                    // node claimed it) changes nothing.
                    let row: Option<VerificationRow> = sqlx::query_as(
                        "UPDATE verifications SET status = 'expired', completed_at = $2, updated_at = $2, \
                         lease_owner = NULL, lease_until = NULL \
                         WHERE id = $1 AND status IN ('queued', 'dialing', 'ringing', 'answered') \
                         AND (lease_owner IS NULL OR lease_until < $2) RETURNING *",
                    )
                    .bind(&id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(read_error)?;
                    let Some(row) = row else { continue };
                    if let Some(old_owner) = &old_owner {
                        close_open_attempt(&mut tx, &id, old_owner, now).await?;
                    }
                    let verification = Verification::try_from(row)?;
                    queue_completion_webhook(&mut tx, &verification, now).await?;
                    expired.push(verification);
                }
                tx.commit().await?;
                Ok(expired)
            }
        }
    };
}

pub(super) use impl_store;

//! What the store's SQL functions share besides the statements: rows as
//! the database returns them, their checked conversion into the store's
//! types, the webhook payload and the listing's statement.
//!
//! The shared test suite (`store::tests`) holds the two backends to the same
//! behaviour.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::db::Param;
use super::{
    ApiKey, Attempt, Registration, Status, StoreError, Verification, VerificationQuery, VerificationRecord,
    WebhookBody, WebhookDelivery,
};
use crate::code::Code;
use crate::vocab::DtmfSource;

/// The `outcome` of an attempt whose node stopped renewing its lease.
pub(super) const INTERRUPTED: &str = "interrupted";

/// The `detail` of an attempt whose node stopped renewing its lease.
pub(super) fn interrupted_detail(owner: &str) -> String {
    format!("node {owner} stopped renewing its lease")
}

/// The error for a write that needs a lease `node` does not hold. The engine
/// learns of lost leases from `renew_lease`, so this only reaches a caller
/// that kept going after losing one.
pub(super) fn lease_not_held(id: &str, node: &str) -> StoreError {
    StoreError::LeaseLost { id: id.to_string(), node: node.to_string() }
}

/// An attempt number read back from the database.
pub(super) fn attempt_number(id: &str, number: i64) -> Result<u32, StoreError> {
    fit("attempt number", &format!("verification {id}"), number)
}

/// Maps a failed read to [`StoreError`]: a value that does not decode is a
/// corrupt row, not an unreachable database.
pub(super) fn read_error(error: sqlx::Error) -> StoreError {
    match error {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            StoreError::Corrupt(error.to_string())
        }
        other => StoreError::Database(other),
    }
}

/// A webhook to put in the outbox.
pub(super) struct NewWebhook {
    pub id: String,
    pub url: String,
    pub payload: String,
}

/// The `verification.completed` webhook for a final verification, or `None`
/// when the requester gave no callback URL.
pub(super) fn completion_webhook(
    verification: &Verification,
    attempts: Vec<Attempt>,
) -> Result<Option<NewWebhook>, StoreError> {
    let Some(url) = verification.callback_url.clone() else {
        return Ok(None);
    };
    // A webhook goes to a URL, through proxies and receivers' logs: the code
    // stays out of it (the requester has it already).
    let verification = Verification { code: None, ..verification.clone() };
    let body = WebhookBody {
        event: "verification.completed".to_string(),
        verification: VerificationRecord { verification, attempts },
    };
    // Serializing plain structs cannot fail; should it ever, the record is
    // unusable rather than the database down.
    let payload = serde_json::to_string(&body).map_err(|e| StoreError::Corrupt(format!("webhook payload: {e}")))?;
    Ok(Some(NewWebhook { id: format!("w_{:016x}", rand::random::<u64>()), url, payload }))
}

/// Reads one of our snake_case enums (outcome, DTMF source) by its serde name.
fn parse_name<T: DeserializeOwned>(what: &str, owner: &str, name: &str) -> Result<T, StoreError> {
    serde_json::from_value(Value::String(name.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("{owner}: unknown {what} {name:?}")))
}

/// Reads a count or number that must fit the field it goes to.
fn fit<T: TryFrom<i64>>(what: &str, owner: &str, value: i64) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| StoreError::Corrupt(format!("{owner}: {what} {value} out of range")))
}

/// A `verifications` row.
#[derive(sqlx::FromRow)]
pub(super) struct VerificationRow {
    id: String,
    api_key_id: String,
    tenant: String,
    phone: String,
    user_name: String,
    dialplan: String,
    callback_url: Option<String>,
    status: String,
    outcome: Option<String>,
    attempt_count: i64,
    max_attempts: i64,
    next_attempt_at: i64,
    lease_owner: Option<String>,
    lease_until: Option<i64>,
    cancel_requested: bool,
    request_hash: String,
    created_at: i64,
    updated_at: i64,
    completed_at: Option<i64>,
    code: Option<String>,
    locale: Option<String>,
}

impl VerificationRow {
    /// Whether a retry with this body hash is the same request as this row's.
    pub(super) fn same_request(&self, request_hash: &str) -> bool {
        self.request_hash == request_hash
    }
}

impl TryFrom<VerificationRow> for Verification {
    type Error = StoreError;

    fn try_from(row: VerificationRow) -> Result<Verification, StoreError> {
        let owner = format!("verification {}", row.id);
        let status = Status::parse(&row.status)
            .ok_or_else(|| StoreError::Corrupt(format!("{owner}: unknown status {:?}", row.status)))?;
        let outcome = row.outcome.as_deref().map(|name| parse_name("outcome", &owner, name)).transpose()?;
        // The error names the row, never the stored value: it is a secret.
        let code = row
            .code
            .as_deref()
            .map(Code::parse)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("{owner}: {e}")))?;
        Ok(Verification {
            attempt_count: fit("attempt_count", &owner, row.attempt_count)?,
            max_attempts: fit("max_attempts", &owner, row.max_attempts)?,
            id: row.id,
            api_key_id: row.api_key_id,
            tenant: row.tenant,
            phone: row.phone,
            user: row.user_name,
            dialplan: row.dialplan,
            callback_url: row.callback_url,
            status,
            outcome,
            next_attempt_at: row.next_attempt_at,
            lease_owner: row.lease_owner,
            lease_until: row.lease_until,
            cancel_requested: row.cancel_requested,
            created_at: row.created_at,
            updated_at: row.updated_at,
            completed_at: row.completed_at,
            code,
            locale: row.locale,
        })
    }
}

/// An `attempts` row.
#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    verification_id: String,
    number: i64,
    node: String,
    call_id: String,
    started_at: i64,
    answered_at: Option<i64>,
    digit_at: Option<i64>,
    ended_at: Option<i64>,
    sip_status: Option<i64>,
    dtmf_source: Option<String>,
    digits: String,
    outcome: Option<String>,
    detail: Option<String>,
    evidence: Option<String>,
}

impl TryFrom<AttemptRow> for Attempt {
    type Error = StoreError;

    fn try_from(row: AttemptRow) -> Result<Attempt, StoreError> {
        let owner = format!("attempt {} of verification {}", row.number, row.verification_id);
        let dtmf_source: Option<DtmfSource> =
            row.dtmf_source.as_deref().map(|name| parse_name("DTMF source", &owner, name)).transpose()?;
        Ok(Attempt {
            number: fit("number", &owner, row.number)?,
            sip_status: row.sip_status.map(|status| fit("sip_status", &owner, status)).transpose()?,
            verification_id: row.verification_id,
            node: row.node,
            call_id: row.call_id,
            started_at: row.started_at,
            answered_at: row.answered_at,
            digit_at: row.digit_at,
            ended_at: row.ended_at,
            dtmf_source,
            digits: row.digits,
            // Free text by design: a call outcome's name or `interrupted`.
            outcome: row.outcome,
            detail: row.detail,
            evidence: row
                .evidence
                .as_deref()
                .map(|json| {
                    serde_json::from_str(json)
                        .map_err(|e| StoreError::Corrupt(format!("{owner}: unreadable evidence: {e}")))
                })
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// A `registrations` row.
#[derive(sqlx::FromRow)]
pub(super) struct RegistrationRow {
    tenant: String,
    user_name: String,
    phone: String,
    method: String,
    verified_at: i64,
    verification_id: String,
}

impl From<RegistrationRow> for Registration {
    fn from(row: RegistrationRow) -> Registration {
        Registration {
            tenant: row.tenant,
            user: row.user_name,
            phone: row.phone,
            method: row.method,
            verified_at: row.verified_at,
            verification_id: row.verification_id,
        }
    }
}

/// An `api_keys` row.
#[derive(sqlx::FromRow)]
pub(super) struct ApiKeyRow {
    id: String,
    name: String,
    hash: String,
    created_at: i64,
    tenant: Option<String>,
    admin: bool,
    webhook_secret: Option<String>,
    previous_webhook_secret: Option<String>,
    previous_secret_until: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(row: ApiKeyRow) -> ApiKey {
        ApiKey {
            id: row.id,
            name: row.name,
            hash: row.hash,
            created_at: row.created_at,
            tenant: row.tenant,
            admin: row.admin,
            webhook_secret: row.webhook_secret,
            previous_webhook_secret: row.previous_webhook_secret,
            previous_secret_until: row.previous_secret_until,
            revoked_at: row.revoked_at,
            last_used_at: row.last_used_at,
        }
    }
}

/// A `webhooks` row.
#[derive(sqlx::FromRow)]
pub(super) struct WebhookRow {
    id: String,
    verification_id: String,
    url: String,
    payload: String,
    attempts: i64,
    next_attempt_at: Option<i64>,
    delivered_at: Option<i64>,
    last_error: Option<String>,
    gave_up: bool,
    created_at: i64,
}

impl WebhookRow {
    /// The webhook's id, readable even when the rest of the row is not.
    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

impl TryFrom<WebhookRow> for WebhookDelivery {
    type Error = StoreError;

    fn try_from(row: WebhookRow) -> Result<WebhookDelivery, StoreError> {
        let owner = format!("webhook {}", row.id);
        Ok(WebhookDelivery {
            attempts: fit("attempts", &owner, row.attempts)?,
            id: row.id,
            verification_id: row.verification_id,
            url: row.url,
            payload: row.payload,
            next_attempt_at: row.next_attempt_at,
            delivered_at: row.delivered_at,
            last_error: row.last_error,
            gave_up: row.gave_up,
            created_at: row.created_at,
        })
    }
}

/// Converts every row, failing on the first corrupt one.
pub(super) fn convert_all<R, T: TryFrom<R, Error = StoreError>>(rows: Vec<R>) -> Result<Vec<T>, StoreError> {
    rows.into_iter().map(T::try_from).collect()
}

/// Adds a parameter and returns its placeholder.
fn param<'q>(value: Param<'q>, params: &mut Vec<Param<'q>>) -> String {
    params.push(value);
    format!("${}", params.len())
}

/// The listing's statement and its parameters, in `$N` order. Only the
/// filters the query uses are in the SQL: `($1 IS NULL OR tenant = $1)`
/// would keep both databases from walking the `(tenant, created_at, id)`
/// index in order. Every value is a parameter; only fixed text is spliced.
pub(super) fn listing_sql(query: &VerificationQuery) -> (String, Vec<Param<'_>>) {
    let mut sql = String::from("SELECT * FROM verifications WHERE TRUE");
    let mut params = Vec::new();
    let text_filters = [
        ("tenant", query.scope.tenant()),
        ("user_name", query.user.as_deref()),
        ("phone", query.phone.as_deref()),
        ("status", query.status.map(Status::as_str)),
    ];
    for (column, value) in text_filters {
        if let Some(value) = value {
            let placeholder = param(value.into(), &mut params);
            sql.push_str(&format!(" AND {column} = {placeholder}"));
        }
    }
    if let Some((created_at, id)) = &query.before {
        let at = param((*created_at).into(), &mut params);
        let id = param(id.into(), &mut params);
        sql.push_str(&format!(" AND (created_at < {at} OR (created_at = {at} AND id < {id}))"));
    }
    let limit = param(i64::from(query.limit).into(), &mut params);
    sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {limit}"));
    (sql, params)
}

#[cfg(test)]
mod listing_tests {
    use super::*;
    use crate::store::Scope;

    #[test]
    fn only_the_filters_given_are_in_the_sql_and_every_value_is_a_parameter() {
        let all =
            VerificationQuery { scope: Scope::All, user: None, phone: None, status: None, before: None, limit: 5 };
        assert_eq!(
            listing_sql(&all),
            (
                "SELECT * FROM verifications WHERE TRUE ORDER BY created_at DESC, id DESC LIMIT $1".to_string(),
                vec![Param::Int(Some(5))]
            )
        );
        let hostile = "x' OR '1'='1";
        let every = VerificationQuery {
            scope: Scope::Tenant(hostile.into()),
            user: Some("alice".into()),
            phone: None,
            status: Some(Status::Queued),
            before: Some((7, "v_1".into())),
            limit: 2,
        };
        let (sql, params) = listing_sql(&every);
        assert_eq!(
            sql,
            "SELECT * FROM verifications WHERE TRUE AND tenant = $1 AND user_name = $2 AND status = $3 \
             AND (created_at < $4 OR (created_at = $4 AND id < $5)) ORDER BY created_at DESC, id DESC LIMIT $6"
        );
        assert_eq!(
            params,
            [
                Param::Text(Some(hostile)),
                Param::Text(Some("alice")),
                Param::Text(Some("queued")),
                Param::Int(Some(7)),
                Param::Text(Some("v_1")),
                Param::Int(Some(2)),
            ]
        );
    }
}

//! The tamper-evident audit log (issue 12): every state change of a
//! verification (created, status, attempt, cancel request, decision,
//! webhook) is appended as an entry in the same transaction as the change,
//! chained per tenant: `hash = SHA-256(prev_hash || canonical entry bytes)`.
//!
//! Appending takes the tenant's head row (`audit_heads`) with an upsert that
//! returns it: on PostgreSQL the upsert locks the row until commit, so two
//! nodes appending for one tenant take turns instead of forking the chain;
//! on SQLite every write already goes through the one writer. A trigger
//! moves the head along as entries are inserted, so a transaction's entries
//! cost two statements per tenant however many there are ([`AuditBatch`]).
//! The head is taken last, just before commit, so that the lock is held as
//! briefly as the transaction allows. `audit_verify` recomputes the chains.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::db::{Exec, Param};
use super::{Status, StoreError};
use crate::vocab::{DtmfSource, Outcome};

/// The `prev_hash` of a tenant's first entry.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What kind of change an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AuditKind {
    /// The verification was accepted (status `queued`, phone, user).
    Created,
    /// Its status moved (dialing, ringing, answered, back to queued).
    Status,
    /// An attempt started, was decided, ended or was interrupted.
    Attempt,
    /// The requester asked to cancel while a call ran.
    CancelRequested,
    /// It became final: completed, canceled or expired, with its outcome.
    Decision,
    /// Its webhook was queued, delivered, is to be retried or was given up.
    Webhook,
}

impl AuditKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            AuditKind::Created => "created",
            AuditKind::Status => "status",
            AuditKind::Attempt => "attempt",
            AuditKind::CancelRequested => "cancel_requested",
            AuditKind::Decision => "decision",
            AuditKind::Webhook => "webhook",
        }
    }
}

/// The facts an entry records: only what the change set, absent fields
/// left out of the canonical JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<AttemptFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookFacts>,
}

/// An attempt as a change left it: every field, so that one set back to
/// none is recorded too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptFacts {
    pub number: u32,
    /// A call outcome's name, or `interrupted`.
    pub outcome: Option<String>,
    pub sip_status: Option<u16>,
    pub dtmf_source: Option<DtmfSource>,
}

/// A webhook's delivery state as a change left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFacts {
    pub id: String,
    /// `queued`, `delivered`, `retrying` or `gave_up`.
    pub state: String,
}

/// One entry as `GET /v1/verifications/{id}/audit` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its place in the tenant's chain, from 1.
    pub seq: u64,
    /// When the change was made, Unix ms.
    pub at: i64,
    pub kind: String,
    #[serde(flatten)]
    pub facts: AuditFacts,
    /// Hex SHA-256 of the tenant's previous entry (64 zeros for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of `prev_hash`'s 32 bytes and this entry's canonical bytes.
    pub hash: String,
}

/// An `audit_entries` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct AuditRow {
    pub(super) tenant: String,
    pub(super) seq: i64,
    pub(super) verification_id: String,
    pub(super) at: i64,
    pub(super) kind: String,
    pub(super) facts: String,
    pub(super) prev_hash: String,
    pub(super) hash: String,
}

impl AuditRow {
    /// The hash this row's columns call for after `prev_hash` (as stored),
    /// or `None` when `prev_hash` is not 32 bytes of hex.
    pub(super) fn expected_hash(&self) -> Option<String> {
        entry_hash(&self.prev_hash, &self.tenant, self.seq, &self.verification_id, self.at, &self.kind, &self.facts)
    }
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;

    fn try_from(row: AuditRow) -> Result<AuditEntry, StoreError> {
        let owner = format!("audit entry {} of tenant {:?}", row.seq, row.tenant);
        let facts = serde_json::from_str(&row.facts)
            .map_err(|error| StoreError::Corrupt(format!("{owner}: unreadable facts: {error}")))?;
        let seq = u64::try_from(row.seq).map_err(|_| StoreError::Corrupt(format!("{owner}: negative seq")))?;
        Ok(AuditEntry { seq, at: row.at, kind: row.kind, facts, prev_hash: row.prev_hash, hash: row.hash })
    }
}

/// `SHA-256(prev || canonical)`, hex. The canonical bytes are the JSON
/// array `[tenant, seq, verification_id, at, kind, facts]` with the facts
/// as the exact text stored, so any column edited changes the hash.
fn entry_hash(
    prev_hash: &str,
    tenant: &str,
    seq: i64,
    verification_id: &str,
    at: i64,
    kind: &str,
    facts: &str,
) -> Option<String> {
    let prev: [u8; 32] = hex::decode(prev_hash).ok()?.try_into().ok()?;
    // Serializing strings and integers cannot fail.
    let canonical = serde_json::to_vec(&(tenant, seq, verification_id, at, kind, facts)).ok()?;
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(&canonical);
    Some(hex::encode(hasher.finalize()))
}

/// One change waiting to be appended.
struct Pending {
    verification_id: String,
    at: i64,
    kind: AuditKind,
    facts: AuditFacts,
}

/// The entries of one transaction, appended by [`AuditBatch::write`] just
/// before it commits.
#[derive(Default)]
pub(super) struct AuditBatch {
    /// Per tenant, in the order the changes were made; tenants in name
    /// order, the order in which their heads are locked (two transactions
    /// locking two tenants' heads in opposite orders could deadlock).
    by_tenant: BTreeMap<String, Vec<Pending>>,
}

impl AuditBatch {
    pub(super) fn record(&mut self, tenant: &str, verification_id: &str, at: i64, kind: AuditKind, facts: AuditFacts) {
        self.by_tenant.entry(tenant.to_string()).or_default().push(Pending {
            verification_id: verification_id.to_string(),
            at,
            kind,
            facts,
        });
    }

    /// Adds `later`'s entries after this batch's.
    pub(super) fn extend(&mut self, later: AuditBatch) {
        for (tenant, pending) in later.by_tenant {
            self.by_tenant.entry(tenant).or_default().extend(pending);
        }
    }

    /// Appends the entries to their tenants' chains on `db`, inside the
    /// transaction of the changes they record.
    pub(super) async fn write(self, db: &mut Exec<'_>) -> Result<(), StoreError> {
        for (tenant, pending) in self.by_tenant {
            append(db, &tenant, pending).await?;
        }
        Ok(())
    }
}

/// Records one change and appends it at once (for a transaction that makes
/// just that one).
pub(super) async fn append_one(
    db: &mut Exec<'_>,
    tenant: &str,
    verification_id: &str,
    at: i64,
    kind: AuditKind,
    facts: AuditFacts,
) -> Result<(), StoreError> {
    let mut batch = AuditBatch::default();
    batch.record(tenant, verification_id, at, kind, facts);
    batch.write(db).await
}

async fn append(db: &mut Exec<'_>, tenant: &str, pending: Vec<Pending>) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    // The no-op update makes the upsert lock an existing head on PostgreSQL
    // (DO NOTHING would neither lock it nor return it).
    let (mut seq, mut prev): (i64, String) = db
        .fetch_one(
            "INSERT INTO audit_heads (tenant, seq, hash) VALUES ($1, 0, $2) \
             ON CONFLICT (tenant) DO UPDATE SET seq = audit_heads.seq RETURNING seq, hash",
            &[tenant.into(), GENESIS.into()],
        )
        .await?;
    let mut rows = Vec::with_capacity(pending.len());
    for change in pending {
        seq += 1;
        let facts = serde_json::to_string(&change.facts)
            .map_err(|error| StoreError::Corrupt(format!("audit facts: {error}")))?;
        let kind = change.kind.as_str();
        let hash = entry_hash(&prev, tenant, seq, &change.verification_id, change.at, kind, &facts)
            .ok_or_else(|| StoreError::Corrupt(format!("audit head of tenant {tenant:?} is not a SHA-256")))?;
        rows.push((
            seq,
            change.verification_id,
            change.at,
            kind,
            facts,
            std::mem::replace(&mut prev, hash.clone()),
            hash,
        ));
    }
    let mut params: Vec<Param<'_>> = Vec::with_capacity(rows.len() * 7 + 1);
    params.push(tenant.into());
    let mut values = Vec::with_capacity(rows.len());
    for (seq, verification_id, at, kind, facts, prev_hash, hash) in &rows {
        let n = params.len();
        values.push(format!(
            "($1, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            n + 1,
            n + 2,
            n + 3,
            n + 4,
            n + 5,
            n + 6,
            n + 7
        ));
        params.extend::<[Param<'_>; 7]>([
            (*seq).into(),
            verification_id.into(),
            (*at).into(),
            (*kind).into(),
            facts.into(),
            prev_hash.into(),
            hash.into(),
        ]);
    }
    let sql = format!(
        "INSERT INTO audit_entries (tenant, seq, verification_id, at, kind, facts, prev_hash, hash) VALUES {}",
        values.join(", ")
    );
    db.execute(&sql, &params).await?;
    Ok(())
}

/// The entries of verification `id` in `tenant`'s chain, oldest first.
pub(super) async fn entries_of(db: &mut Exec<'_>, tenant: &str, id: &str) -> Result<Vec<AuditEntry>, StoreError> {
    let rows: Vec<AuditRow> = db
        .fetch_all(
            "SELECT * FROM audit_entries WHERE verification_id = $1 AND tenant = $2 ORDER BY seq",
            &[id.into(), tenant.into()],
        )
        .await?;
    rows.into_iter().map(AuditEntry::try_from).collect()
}

/// The facts of a status change.
pub(super) fn status(status: Status) -> AuditFacts {
    AuditFacts { status: Some(status), ..AuditFacts::default() }
}

/// The facts of a decision.
pub(super) fn decision(status: Status, outcome: Option<Outcome>) -> AuditFacts {
    AuditFacts { status: Some(status), outcome, ..AuditFacts::default() }
}

/// The facts of an attempt's change.
pub(super) fn attempt(
    number: u32,
    outcome: Option<&str>,
    sip_status: Option<u16>,
    dtmf: Option<DtmfSource>,
) -> AuditFacts {
    let attempt = AttemptFacts { number, outcome: outcome.map(str::to_string), sip_status, dtmf_source: dtmf };
    AuditFacts { attempt: Some(attempt), ..AuditFacts::default() }
}

/// The facts of a webhook's change.
pub(super) fn webhook(id: &str, state: &str) -> AuditFacts {
    AuditFacts { webhook: Some(WebhookFacts { id: id.to_string(), state: state.to_string() }), ..AuditFacts::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_every_column_and_the_previous_hash() {
        let base = entry_hash(GENESIS, "t", 1, "v", 5, "created", "{}").unwrap();
        assert_eq!(base.len(), 64);
        let variants = [
            entry_hash(&base, "t", 1, "v", 5, "created", "{}"),
            entry_hash(GENESIS, "u", 1, "v", 5, "created", "{}"),
            entry_hash(GENESIS, "t", 2, "v", 5, "created", "{}"),
            entry_hash(GENESIS, "t", 1, "w", 5, "created", "{}"),
            entry_hash(GENESIS, "t", 1, "v", 6, "created", "{}"),
            entry_hash(GENESIS, "t", 1, "v", 5, "status", "{}"),
            entry_hash(GENESIS, "t", 1, "v", 5, "created", "{ }"),
        ];
        for variant in variants {
            assert_ne!(variant.unwrap(), base);
        }
        // Column boundaries are part of the bytes: moving text across them changes the hash.
        assert_ne!(entry_hash(GENESIS, "ab", 1, "c", 5, "k", "{}"), entry_hash(GENESIS, "a", 1, "bc", 5, "k", "{}"));
        assert_eq!(entry_hash("not hex", "t", 1, "v", 5, "created", "{}"), None);
        assert_eq!(entry_hash("00", "t", 1, "v", 5, "created", "{}"), None);
    }

    #[test]
    fn facts_serialize_only_what_the_change_set() {
        assert_eq!(serde_json::to_string(&status(Status::Ringing)).unwrap(), r#"{"status":"ringing"}"#);
        assert_eq!(
            serde_json::to_string(&attempt(2, Some("busy"), Some(486), None)).unwrap(),
            r#"{"attempt":{"number":2,"outcome":"busy","sip_status":486,"dtmf_source":null}}"#
        );
    }
}

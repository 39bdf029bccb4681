//! `pound audit verify`: recomputes every tenant's chain (sequence, links,
//! hashes, head), folds each verification's entries into the facts they
//! record last, and compares those with the verification's current rows.
//! The first difference is the answer: a row edited by hand, an entry
//! edited or removed.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::audit::{AuditFacts, AuditRow, GENESIS};
use super::db::{Exec, Pool};
use super::{Status, StoreError};

/// Entries read per statement: the log is walked in pages, not at once.
const PAGE: i64 = 10_000;

/// What `pound audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Tenants with a chain.
    pub tenants: u64,
    pub entries: u64,
    /// Verifications compared with their entries.
    pub verifications: u64,
    /// Verifications created before the log began, without a `created`
    /// entry: only what changed since is compared.
    pub unaudited: u64,
    /// The first difference, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<AuditProblem>,
}

/// The first thing that does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    /// The verification concerned (for a missing entry, the one of the entry
    /// found in its place), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    pub tenant: String,
    /// What differs; never a phone number or user in clear.
    pub detail: String,
}

/// An attempt's audited columns: outcome, `sip_status`, `dtmf_source`.
type AttemptState = (Option<String>, Option<i64>, Option<String>);

/// A verification as its entries describe it.
#[derive(Default)]
struct Audited {
    tenant: String,
    created: bool,
    status: Option<String>,
    outcome: Option<String>,
    phone: Option<String>,
    user: Option<String>,
    /// Number → (outcome, sip_status, dtmf_source).
    attempts: BTreeMap<i64, AttemptState>,
    /// Webhook id → state.
    webhooks: BTreeMap<String, String>,
}

impl Audited {
    fn apply(&mut self, kind: &str, facts: AuditFacts) {
        if kind == "created" {
            self.created = true;
        }
        if let Some(status) = facts.status {
            self.status = Some(status.as_str().to_string());
        }
        if let Some(outcome) = facts.outcome {
            self.outcome = Some(outcome.as_str().to_string());
        }
        if facts.phone.is_some() {
            self.phone = facts.phone;
        }
        if facts.user.is_some() {
            self.user = facts.user;
        }
        if let Some(a) = facts.attempt {
            let source = a.dtmf_source.map(|s| s.as_str().to_string());
            self.attempts.insert(i64::from(a.number), (a.outcome, a.sip_status.map(i64::from), source));
        }
        if let Some(w) = facts.webhook {
            self.webhooks.insert(w.id, w.state);
        }
    }
}

/// An attempt's audited columns as stored.
#[derive(sqlx::FromRow)]
struct AttemptRow {
    verification_id: String,
    number: i64,
    outcome: Option<String>,
    sip_status: Option<i64>,
    dtmf_source: Option<String>,
}

/// A verification's audited columns as stored.
#[derive(sqlx::FromRow)]
struct CurrentRow {
    id: String,
    tenant: String,
    phone: String,
    user_name: String,
    status: String,
    outcome: Option<String>,
    created_at: i64,
}

pub(super) async fn verify(pool: &Pool) -> Result<AuditReport, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut db = conn.exec();
    let mut report = AuditReport { tenants: 0, entries: 0, verifications: 0, unaudited: 0, problem: None };
    let mut audited: HashMap<String, Audited> = HashMap::new();
    if let Some(problem) = check_chains(&mut db, &mut report, &mut audited).await? {
        report.problem = Some(problem);
        return Ok(report);
    }
    report.problem = compare_rows(&mut db, &mut report, audited).await?;
    Ok(report)
}

fn problem(verification: Option<&str>, tenant: &str, detail: String) -> Option<AuditProblem> {
    Some(AuditProblem { verification: verification.map(str::to_string), tenant: tenant.to_string(), detail })
}

/// Walks every chain in (tenant, seq) order; folds the facts into `audited`.
async fn check_chains(
    db: &mut Exec<'_>,
    report: &mut AuditReport,
    audited: &mut HashMap<String, Audited>,
) -> Result<Option<AuditProblem>, StoreError> {
    let heads: Vec<(String, i64, String)> =
        db.fetch_all("SELECT tenant, seq, hash FROM audit_heads ORDER BY tenant", &[]).await?;
    let mut heads: BTreeMap<String, (i64, String)> =
        heads.into_iter().map(|(tenant, seq, hash)| (tenant, (seq, hash))).collect();
    // The tenant being walked, its last seq and hash.
    let mut current: Option<(String, i64, String)> = None;
    let mut after: Option<(String, i64)> = None;
    loop {
        let page: Vec<AuditRow> = match &after {
            None => db.fetch_all("SELECT * FROM audit_entries ORDER BY tenant, seq LIMIT $1", &[PAGE.into()]).await?,
            Some((tenant, seq)) => {
                db.fetch_all(
                    "SELECT * FROM audit_entries WHERE tenant > $1 OR (tenant = $1 AND seq > $2) \
                     ORDER BY tenant, seq LIMIT $3",
                    &[tenant.into(), (*seq).into(), PAGE.into()],
                )
                .await?
            }
        };
        let Some(last) = page.last() else { break };
        after = Some((last.tenant.clone(), last.seq));
        for row in page {
            report.entries += 1;
            if current.as_ref().is_none_or(|(tenant, _, _)| *tenant != row.tenant) {
                if let Some(found) = end_of_chain(current.take(), &mut heads) {
                    return Ok(Some(found));
                }
                report.tenants += 1;
                current = Some((row.tenant.clone(), 0, GENESIS.to_string()));
            }
            let Some((tenant, last_seq, last_hash)) = current.as_mut() else { continue };
            let id = Some(row.verification_id.as_str());
            if row.seq != *last_seq + 1 {
                let detail = format!("entries {} to {} of the chain are missing", *last_seq + 1, row.seq - 1);
                return Ok(problem(id, tenant, detail));
            }
            if row.prev_hash != *last_hash {
                let detail = format!("entry {} does not link to entry {}", row.seq, *last_seq);
                return Ok(problem(id, tenant, detail));
            }
            if row.expected_hash().as_deref() != Some(row.hash.as_str()) {
                let detail =
                    format!("entry {} ({}) was edited: its hash does not match its contents", row.seq, row.kind);
                return Ok(problem(id, tenant, detail));
            }
            let facts: AuditFacts = match serde_json::from_str(&row.facts) {
                Ok(facts) => facts,
                Err(error) => return Ok(problem(id, tenant, format!("entry {}: unreadable facts: {error}", row.seq))),
            };
            let state = audited.entry(row.verification_id.clone()).or_default();
            if state.tenant.is_empty() {
                state.tenant = tenant.clone();
            } else if state.tenant != *tenant {
                return Ok(problem(id, tenant, format!("entry {} puts it in a second tenant's chain", row.seq)));
            }
            state.apply(&row.kind, facts);
            *last_seq = row.seq;
            *last_hash = row.hash;
        }
    }
    if let Some(found) = end_of_chain(current, &mut heads) {
        return Ok(Some(found));
    }
    // A head with no entries at all: its whole chain is gone.
    if let Some((tenant, (seq, _))) = heads.into_iter().find(|(_, (seq, _))| *seq != 0) {
        return Ok(problem(None, &tenant, format!("entries 1 to {seq} of the chain are missing")));
    }
    Ok(None)
}

/// Checks that a walked chain ends where its head says (entries removed
/// from the end leave the head ahead).
fn end_of_chain(
    walked: Option<(String, i64, String)>,
    heads: &mut BTreeMap<String, (i64, String)>,
) -> Option<AuditProblem> {
    let (tenant, seq, hash) = walked?;
    match heads.remove(&tenant) {
        Some((head_seq, head_hash)) if head_seq == seq && head_hash == hash => None,
        Some((head_seq, _)) if head_seq != seq => {
            problem(None, &tenant, format!("the chain ends at entry {seq} but its head is entry {head_seq}"))
        }
        Some(_) => problem(None, &tenant, format!("the head's hash is not that of entry {seq}")),
        None => problem(None, &tenant, "the chain has no head".to_string()),
    }
}

/// Compares each verification's current rows with its folded entries.
async fn compare_rows(
    db: &mut Exec<'_>,
    report: &mut AuditReport,
    mut audited: HashMap<String, Audited>,
) -> Result<Option<AuditProblem>, StoreError> {
    let start: Option<(i64,)> = db.fetch_optional("SELECT at FROM audit_start WHERE id = 1", &[]).await?;
    let start = start.map_or(i64::MAX, |(at,)| at);
    let rows: Vec<CurrentRow> = db
        .fetch_all(
            "SELECT id, tenant, phone, user_name, status, outcome, created_at FROM verifications ORDER BY created_at, id",
            &[],
        )
        .await?;
    let mut attempts: HashMap<String, BTreeMap<i64, AttemptState>> = HashMap::new();
    let attempt_rows: Vec<AttemptRow> =
        db.fetch_all("SELECT verification_id, number, outcome, sip_status, dtmf_source FROM attempts", &[]).await?;
    for row in attempt_rows {
        let state = (row.outcome, row.sip_status, row.dtmf_source);
        attempts.entry(row.verification_id).or_default().insert(row.number, state);
    }
    let mut webhooks: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    let hook_rows: Vec<(String, String, Option<i64>, bool, i64)> =
        db.fetch_all("SELECT verification_id, id, delivered_at, gave_up, attempts FROM webhooks", &[]).await?;
    for (verification, id, delivered_at, gave_up, tries) in hook_rows {
        let state = match (delivered_at, gave_up, tries) {
            (Some(_), _, _) => "delivered",
            (None, true, _) => "gave_up",
            (None, false, 0) => "queued",
            (None, false, _) => "retrying",
        };
        webhooks.entry(verification).or_default().insert(id, state.to_string());
    }
    for row in rows {
        let Some(state) = audited.remove(&row.id) else {
            if row.created_at >= start {
                return Ok(problem(
                    Some(&row.id),
                    &row.tenant,
                    "created since the log began, but has no entries".into(),
                ));
            }
            report.unaudited += 1;
            continue;
        };
        report.verifications += 1;
        if !state.created {
            if row.created_at >= start {
                return Ok(problem(Some(&row.id), &row.tenant, "its `created` entry is missing".into()));
            }
            report.unaudited += 1;
        }
        let differs = differences(
            &row,
            &state,
            attempts.remove(&row.id).unwrap_or_default(),
            webhooks.remove(&row.id).unwrap_or_default(),
        );
        if let Some(detail) = differs {
            return Ok(problem(Some(&row.id), &row.tenant, detail));
        }
    }
    // Entries whose verification row is gone.
    if let Some((id, state)) = audited.into_iter().min_by(|a, b| a.0.cmp(&b.0)) {
        return Ok(problem(Some(&id), &state.tenant, "its row was deleted".into()));
    }
    Ok(None)
}

/// What differs between a verification's rows and its audited facts.
fn differences(
    row: &CurrentRow,
    state: &Audited,
    mut rows_by_number: BTreeMap<i64, AttemptState>,
    mut hooks: BTreeMap<String, String>,
) -> Option<String> {
    let shown = |value: Option<&str>| value.map_or_else(|| "none".to_string(), |v| format!("{v:?}"));
    if row.tenant != state.tenant {
        return Some("tenant: its row names another tenant than its entries' chain".into());
    }
    if let Some(status) = &state.status
        && *status != row.status
    {
        return Some(format!(
            "status: {} in its row, {} in the audit log",
            shown(Some(&row.status)),
            shown(Some(status))
        ));
    }
    // The outcome is audited with every decision; before one there is none.
    let final_status = Status::parse(&row.status).is_some_and(Status::is_final);
    if (state.created || state.outcome.is_some() || final_status) && row.outcome != state.outcome {
        return Some(format!(
            "outcome: {} in its row, {} in the audit log",
            shown(row.outcome.as_deref()),
            shown(state.outcome.as_deref())
        ));
    }
    // Personal data: say which, not what.
    if state.phone.as_ref().is_some_and(|phone| *phone != row.phone) {
        return Some("phone: its row holds another number than the audit log".into());
    }
    if state.user.as_ref().is_some_and(|user| *user != row.user_name) {
        return Some("user: its row holds another user than the audit log".into());
    }
    for (number, audited) in &state.attempts {
        match rows_by_number.remove(number) {
            None => return Some(format!("attempt {number}: its row is missing")),
            Some(current) if current != *audited => {
                return Some(format!(
                    "attempt {number}: outcome {} / sip_status {} / dtmf_source {} in its row, {} / {} / {} in the audit log",
                    shown(current.0.as_deref()),
                    shown(current.1.map(|s| s.to_string()).as_deref()),
                    shown(current.2.as_deref()),
                    shown(audited.0.as_deref()),
                    shown(audited.1.map(|s| s.to_string()).as_deref()),
                    shown(audited.2.as_deref()),
                ));
            }
            Some(_) => {}
        }
    }
    // Attempts made before the log began have no entries; since, every one has.
    if state.created
        && let Some(number) = rows_by_number.keys().next()
    {
        return Some(format!("attempt {number}: its row has no audit entry"));
    }
    for (id, audited) in &state.webhooks {
        match hooks.remove(id) {
            None => return Some(format!("webhook {id}: its row is missing")),
            Some(current) if current != *audited => {
                return Some(format!("webhook {id}: {current} in its row, {audited} in the audit log"));
            }
            Some(_) => {}
        }
    }
    if state.created
        && let Some(id) = hooks.keys().next()
    {
        return Some(format!("webhook {id}: its row has no audit entry"));
    }
    None
}

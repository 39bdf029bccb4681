//! `pound audit verify`: checks the store's tamper-evident audit log
//! (`store::audit`) against the rows it records.

use serde::Serialize;

use super::keys::is_missing_sqlite_file;
use crate::store::{self, AuditProblem, AuditReport, StoreError};

/// The one JSON line `pound audit verify` prints.
#[derive(Debug, Serialize)]
pub struct Verdict {
    /// Whether every chain and every audited verification matched.
    pub intact: bool,
    #[serde(flatten)]
    pub report: AuditReport,
}

impl Verdict {
    /// The difference found, if any.
    pub fn problem(&self) -> Option<&AuditProblem> {
        self.report.problem.as_ref()
    }
}

/// Why there is no verdict.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The SQLite file does not exist: a typo would otherwise verify a new, empty store as intact.
    #[error("the store {0} does not exist")]
    NoSuchStore(String),
}

/// Opens the store at `url` (migrating it like every command does) and
/// verifies its audit log.
pub async fn verify(url: &str) -> Result<Verdict, AuditError> {
    if is_missing_sqlite_file(url)? {
        return Err(AuditError::NoSuchStore(url.to_string()));
    }
    let report = store::open(url).await?.verify_audit().await?;
    Ok(Verdict { intact: report.problem.is_none(), report })
}

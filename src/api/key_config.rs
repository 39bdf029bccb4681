//! An API key with its grants (issue 7: tenancy, admin role, per-key webhook
//! secrets), as the configuration file states it and the key ring takes it.

use serde::Deserialize;

/// One `api.keys` entry: `"KEY"`, or `{ key = "KEY", webhook_secret = "…",
/// admin = true, tenant = "…" }` (also written as `[[api.keys]]` tables).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub key: String,
    /// Signs webhooks of this key's verifications; without it (and without
    /// `webhooks.secret`) the key cannot register a callback.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Sees and cancels every tenant's verifications.
    #[serde(default)]
    pub admin: bool,
    /// Keys naming the same tenant share their verifications; default: the key alone.
    #[serde(default)]
    pub tenant: Option<String>,
}

impl From<&str> for ApiKeyConfig {
    fn from(key: &str) -> Self {
        ApiKeyConfig { key: key.to_string(), webhook_secret: None, admin: false, tenant: None }
    }
}

impl From<String> for ApiKeyConfig {
    fn from(key: String) -> Self {
        ApiKeyConfig { key, webhook_secret: None, admin: false, tenant: None }
    }
}

// By hand so that neither the key nor its secret reaches a log through `{:?}`.
impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("admin", &self.admin)
            .field("tenant", &self.tenant)
            .field("webhook_secret", &self.webhook_secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

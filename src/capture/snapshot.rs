//! A call's configuration as a capture records it, and back.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::call::{CallConfig, Prompts};
use crate::code::Code;
use crate::dialplan::Dialplan;
use crate::locale;
use crate::media::codec::Codec;
use crate::sip::{Credentials, Timers};
use crate::vocab::{SrtpPolicy, Transport};

/// What the call machine was configured with, less its secrets: the
/// trunk's password and the STIR key stay out (a replayed call answers a
/// digest challenge and signs nothing, which changes only those headers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSnapshot {
    pub target: String,
    pub local_sip: SocketAddr,
    pub transport: String,
    pub from_uri: String,
    pub from_display: Option<String>,
    pub asserted_identity: Option<String>,
    /// The digest user name, when the call had credentials.
    pub auth_user: Option<String>,
    pub local_rtp: SocketAddr,
    pub codecs: Vec<String>,
    pub dialplan_name: String,
    /// The dialplan as TOML ([`Dialplan::to_toml`]); `None` when its prompt
    /// paths could not be written.
    pub dialplan: Option<String>,
    /// The locale the prompts played in.
    pub locale: String,
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    pub next_hop: SocketAddr,
    pub rtp_learning_packets: u16,
    pub wall_clock_unix_ms: u64,
    pub srtp: SrtpPolicy,
    /// Number matching: the code the callee had to key in.
    pub code: Option<String>,
    /// Whether the INVITEs were signed (a replay leaves them unsigned).
    pub stir: bool,
}

/// Why a recorded configuration cannot be run again.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the capture's {field} is not valid: {value:?}")]
    Field { field: &'static str, value: String },
    #[error("the capture holds no dialplan (its prompt paths were not UTF-8)")]
    NoDialplan,
    #[error("the capture's dialplan: {0}")]
    Dialplan(#[from] crate::dialplan::DialplanError),
    #[error("the prompts the call played are needed to replay it: {0}")]
    Prompt(#[from] crate::media::prompt::PromptError),
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl CallSnapshot {
    pub fn of(config: &CallConfig) -> CallSnapshot {
        CallSnapshot {
            target: config.target.clone(),
            local_sip: config.local_sip,
            transport: config.transport.via_name().to_ascii_lowercase(),
            from_uri: config.from_uri.clone(),
            from_display: config.from_display.clone(),
            asserted_identity: config.asserted_identity.clone(),
            auth_user: config.credentials.as_ref().map(|c| c.user.clone()),
            local_rtp: config.local_rtp,
            codecs: config.codecs.iter().map(|c| c.encoding_name().to_string()).collect(),
            dialplan_name: config.dialplan.name.clone(),
            dialplan: config.dialplan.to_toml(),
            locale: config.prompts.locale.to_string(),
            t1_ms: millis(config.timers.t1),
            t2_ms: millis(config.timers.t2),
            t4_ms: millis(config.timers.t4),
            next_hop: config.next_hop,
            rtp_learning_packets: config.rtp_learning_packets,
            wall_clock_unix_ms: config.wall_clock.duration_since(UNIX_EPOCH).map_or(0, millis),
            srtp: config.srtp,
            code: config.code.as_ref().map(|c| c.digits().to_string()),
            stir: config.stir.is_some(),
        }
    }

    /// The configuration to run the call again with; the prompts are loaded
    /// from where the capturing node had them.
    pub fn config(&self) -> Result<CallConfig, SnapshotError> {
        let invalid = |field: &'static str, value: &str| SnapshotError::Field { field, value: value.to_string() };
        let transport = match self.transport.as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => return Err(invalid("transport", other)),
        };
        let codecs = self
            .codecs
            .iter()
            .map(|name| Codec::from_encoding_name(name).ok_or_else(|| invalid("codec", name)))
            .collect::<Result<Vec<_>, _>>()?;
        let locale = locale::resolve(&self.locale).map_err(|_| invalid("locale", &self.locale))?;
        let toml = self.dialplan.as_deref().ok_or(SnapshotError::NoDialplan)?;
        let plan = Dialplan::parse(&self.dialplan_name, toml, Path::new(""))?.with_locale(locale);
        let prompts = Prompts::load(&plan)?;
        let code =
            self.code.as_deref().map(|c| Code::parse(c).map_err(|_| invalid("code", "(not shown)"))).transpose()?;
        Ok(CallConfig {
            target: self.target.clone(),
            local_sip: self.local_sip,
            transport,
            from_uri: self.from_uri.clone(),
            from_display: self.from_display.clone(),
            asserted_identity: self.asserted_identity.clone(),
            credentials: self.auth_user.clone().map(|user| Credentials { user, password: String::new() }),
            local_rtp: self.local_rtp,
            codecs,
            dialplan: Arc::new(plan),
            prompts: Arc::new(prompts),
            timers: Timers {
                t1: Duration::from_millis(self.t1_ms),
                t2: Duration::from_millis(self.t2_ms),
                t4: Duration::from_millis(self.t4_ms),
            },
            next_hop: self.next_hop,
            rtp_learning_packets: self.rtp_learning_packets,
            stir: None,
            wall_clock: UNIX_EPOCH + Duration::from_millis(self.wall_clock_unix_ms),
            srtp: self.srtp,
            code,
        })
    }
}

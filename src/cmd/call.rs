//! `pound call`: one verification call, its report as one JSON line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::call::{CallEvent, CallReport, Outcome, Prompts, Transport};
use crate::dialplan::Dialplan;
use crate::media::codec::Codec;
use crate::net::{CallSetup, resolve, run_call};
use crate::policy::NumberRules;
use crate::sip::{Credentials, Timers};

/// What `pound call` was asked to do.
#[derive(Debug, Clone)]
pub struct CallArgs {
    /// A SIP URI, or an E.164 number sent to the trunk.
    pub target: String,
    /// `sip:host[:port]` where E.164 numbers (and, if given, every call) go.
    pub trunk: Option<String>,
    pub auth_user: Option<String>,
    pub auth_pass: Option<String>,
    pub from_user: String,
    pub from_name: Option<String>,
    pub asserted_identity: Option<String>,
    pub dialplan: String,
    pub dialplans: Option<PathBuf>,
    /// Overrides the dialplan's ring timeout.
    pub ring_timeout: Option<Duration>,
    pub bind: std::net::SocketAddr,
    pub transport: Transport,
    pub codecs: Vec<Codec>,
}

/// Why the call could not even be attempted.
#[derive(Debug, thiserror::Error)]
pub enum CallCommandError {
    /// The target is neither a SIP URI nor an E.164 number, or needs a trunk.
    #[error("{0}")]
    Target(String),
    /// The dialplan or its prompts are unusable.
    #[error("{0}")]
    Dialplan(String),
    /// Sockets or name resolution failed.
    #[error("{0}")]
    Net(#[from] crate::net::NetError),
}

/// Places the call; progress goes to stderr through `tracing`. A number the
/// default toll-fraud rules refuse is not dialled: the report says `blocked`.
pub async fn run(args: CallArgs) -> Result<CallReport, CallCommandError> {
    if let Some(refused) = refused_number(&args.target) {
        return Ok(refused);
    }
    let (target, hop) = route(&args.target, args.trunk.as_deref())?;
    let next_hop = resolve(&hop).await?;
    let mut plan = Dialplan::find(&args.dialplan, args.dialplans.as_deref())
        .map_err(|e| CallCommandError::Dialplan(e.to_string()))?;
    if let Some(timeout) = args.ring_timeout {
        plan.ring_timeout = timeout;
    }
    let prompts = Prompts::load(&plan).map_err(|e| CallCommandError::Dialplan(format!("prompt: {e}")))?;
    let credentials = match (args.auth_user, args.auth_pass) {
        (Some(user), password) => Some(Credentials { user, password: password.unwrap_or_default() }),
        (None, _) => None,
    };
    let setup = CallSetup {
        target,
        next_hop,
        bind: args.bind,
        transport: args.transport,
        from_user: args.from_user,
        from_display: args.from_name,
        asserted_identity: args.asserted_identity,
        credentials,
        codecs: args.codecs,
        dialplan: Arc::new(plan),
        prompts: Arc::new(prompts),
        timers: Timers::default(),
        rtp_ports: None,
        cancel: None,
        rtp_learning_packets: crate::rtp::DEFAULT_LEARNING_PACKETS,
    };
    // The call machine logs its own events; a person at a terminal also gets
    // one plain line per change, and scripts reading stderr get nothing extra.
    let show_progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = run_call(setup, |event| {
        if let Some(line) = progress_line(event).filter(|_| show_progress) {
            eprintln!("{line}");
        }
    })
    .await?;
    Ok(report)
}

/// The line `pound call` shows a person for a call-state change, if any.
pub fn progress_line(event: &CallEvent) -> Option<String> {
    match event {
        CallEvent::Calling { .. } => Some("calling".into()),
        CallEvent::Ringing => Some("ringing".into()),
        CallEvent::Answered => Some("answered".into()),
        CallEvent::Digit { digit, source, .. } => Some(format!("key {digit} ({})", source.as_str())),
        CallEvent::Response { status } if *status >= 300 => Some(format!("refused: {status}")),
        CallEvent::Finished(report) => Some(format!("ended: {}", report.outcome.as_str())),
        CallEvent::Response { .. } => None,
    }
}

/// The Request-URI and the `host:port` SIP goes to.
pub fn route(target: &str, trunk: Option<&str>) -> Result<(String, String), CallCommandError> {
    let trunk_hop = trunk.map(host_port).transpose()?;
    if target.starts_with("sip:") {
        let hop = match trunk_hop {
            Some(hop) => hop,
            None => host_port(target)?,
        };
        return Ok((target.to_string(), hop));
    }
    let digits = target.strip_prefix('+').unwrap_or("");
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CallCommandError::Target(format!(
            "{target:?} is neither a SIP URI (sip:user@host:port) nor an E.164 number (+14155550100)"
        )));
    }
    let hop =
        trunk_hop.ok_or_else(|| CallCommandError::Target("an E.164 number needs --trunk sip:HOST[:PORT]".into()))?;
    Ok((format!("sip:{target}@{hop};user=phone"), hop))
}

/// The `blocked` report for a target whose E.164 number (the target itself,
/// or the user part of a SIP URI) the default number rules refuse.
fn refused_number(target: &str) -> Option<CallReport> {
    let user = target.strip_prefix("sip:").map_or(target, |rest| rest.split(['@', ';']).next().unwrap_or(rest));
    if !user.starts_with('+') {
        return None;
    }
    let refusal = NumberRules::default().check(user).err()?;
    tracing::warn!(target = %crate::mask::mask_phone(target), reason = refusal.code(), "not dialling");
    Some(CallReport {
        outcome: Outcome::Blocked,
        sip_status: None,
        dtmf_source: None,
        digits: String::new(),
        duration_ms: 0,
        call_id: String::new(),
        answered_ms: None,
        digit_ms: None,
        detail: Some(format!("{}: {refusal}", refusal.code())),
        foreign_rtp_packets: 0,
        foreign_sip_messages: 0,
    })
}

/// `host:port` of a SIP URI (port 5060 when absent).
fn host_port(uri: &str) -> Result<String, CallCommandError> {
    let bad = || CallCommandError::Target(format!("{uri:?} is not a SIP URI with a host"));
    let rest = uri.strip_prefix("sip:").ok_or_else(bad)?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let end = rest.find([';', '?', '>']).unwrap_or(rest.len());
    let host = &rest[..end];
    if host.is_empty() {
        return Err(bad());
    }
    let has_port = match host.rfind(']') {
        Some(close) => host[close..].contains(':'),
        None => host.contains(':'),
    };
    Ok(if has_port { host.to_string() } else { format!("{host}:5060") })
}

/// The process exit status for a report: 0 only for `verified`.
pub fn exit_code(report: &CallReport) -> u8 {
    if report.outcome == Outcome::Verified { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_uris_and_numbers() {
        assert_eq!(
            route("sip:bob@127.0.0.1:5070", None).unwrap(),
            ("sip:bob@127.0.0.1:5070".into(), "127.0.0.1:5070".into())
        );
        assert_eq!(route("sip:bob@example.com;transport=udp", None).unwrap().1, "example.com:5060");
        assert_eq!(route("sip:bob@[::1]:5070", None).unwrap().1, "[::1]:5070");
        assert_eq!(route("sip:[::1]", None).unwrap().1, "[::1]:5060");
        assert_eq!(
            route("+14155550100", Some("sip:trunk.example.com:5080")).unwrap(),
            ("sip:+14155550100@trunk.example.com:5080;user=phone".into(), "trunk.example.com:5080".into())
        );
        assert_eq!(route("sip:bob@a.example", Some("sip:proxy:5062")).unwrap().1, "proxy:5062");
        assert!(route("+14155550100", None).unwrap_err().to_string().contains("--trunk"));
        assert!(route("14155550100", Some("sip:t")).is_err());
        assert!(route("+1", Some("sip:t")).is_err());
        assert!(route("sip:", None).is_err());
        assert!(route("mailto:x", None).is_err());
    }

    #[test]
    fn refused_numbers_are_blocked_before_routing() {
        for target in ["+19002345678", "sip:+8821612345678@trunk.example.com", "sip:+18762345678@127.0.0.1:5070"] {
            let report = refused_number(target).unwrap_or_else(|| panic!("{target} was not refused"));
            assert_eq!(report.outcome, Outcome::Blocked, "{target}");
            assert!(report.detail.is_some());
        }
        for target in ["+14155550100", "sip:+442071234567@127.0.0.1", "sip:bob@127.0.0.1:5070", "sip:127.0.0.1"] {
            assert!(refused_number(target).is_none(), "{target}");
        }
    }
}

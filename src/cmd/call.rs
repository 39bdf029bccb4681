//! `pound call`: one verification call, its report as one JSON line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::call::{CallEvent, CallReport, Prompts};
use crate::capture::CaptureFile;
use crate::code::Code;
use crate::dialplan::{Dialplan, DialplanError};
use crate::media::codec::Codec;
use crate::media::prompt::PromptError;
use crate::net::{CallSetup, Endpoint, Tls, TlsFiles, bind_towards, resolve, run_call};
use crate::policy::NumberRules;
use crate::sip::route::{RouteError, route};
use crate::sip::{Credentials, Timers};
use crate::stir::{Attestation, Parties, Signer, StirError};
use crate::vocab::{Outcome, SrtpPolicy, Transport};

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
    /// The transport unless the target or trunk asks for TLS (`sips:`, `transport=tls`).
    pub transport: Transport,
    pub codecs: Vec<Codec>,
    pub srtp: SrtpPolicy,
    /// CA and client certificate for TLS (`--tls-ca`, `--tls-cert`, `--tls-key`).
    pub tls: TlsFiles,
    /// STIR/SHAKEN signing (`--stir-key`, `--stir-x5u`, `--stir-attest`).
    pub stir: Option<StirArgs>,
    /// Number matching (`--code`): the digits to key in before `#`.
    pub code: Option<Code>,
    /// `--capture FILE.pcap`: the call's SIP and RTP, for `pound replay`.
    pub capture: Option<PathBuf>,
    /// `--locale TAG`: the prompt set, instead of the dialplan's own.
    pub locale: Option<String>,
}

/// `--stir-key FILE --stir-x5u URL --stir-attest A|B|C`.
#[derive(Debug, Clone)]
pub struct StirArgs {
    pub key: PathBuf,
    pub x5u: String,
    pub attest: Attestation,
}

/// Why the call could not even be attempted.
#[derive(Debug, thiserror::Error)]
pub enum CallCommandError {
    /// The target is neither a SIP URI nor an E.164 number, or needs a trunk.
    #[error(transparent)]
    Target(#[from] RouteError),
    /// The dialplan is unusable.
    #[error(transparent)]
    Dialplan(#[from] DialplanError),
    /// A prompt the dialplan names is unusable.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// Sockets or name resolution failed.
    #[error("{0}")]
    Net(#[from] crate::net::NetError),
    /// The signing key or certificate URL is unusable, or a party has no number to sign.
    #[error(transparent)]
    Stir(#[from] StirError),
    /// `--locale` names no shipped prompt set.
    #[error("--locale {tag:?}: {source}")]
    Locale { tag: String, source: crate::locale::LocaleError },
    /// The `--capture` file cannot be written.
    #[error("--capture {path}: {source}")]
    Capture { path: String, source: std::io::Error },
    /// `--srtp` other than `off` without TLS: the SDES keys would travel in clear.
    #[error("--srtp {0} needs SIP over TLS (--transport tls or a sips: target): SDES keys must not travel in clear")]
    SrtpWithoutTls(&'static str),
}

/// Places the call; progress goes to stderr through `tracing`. A number the
/// default toll-fraud rules refuse is not dialled: the report says `blocked`.
pub async fn run(args: CallArgs) -> Result<CallReport, CallCommandError> {
    if let Some(refused) = refused_number(&args.target) {
        return Ok(refused);
    }
    let routed = route(&args.target, args.trunk.as_deref(), args.transport)?;
    // Refused before anything is sent: the key, and numbers for both parties.
    let stir = match &args.stir {
        Some(stir) => {
            Parties::new(args.asserted_identity.as_deref(), &args.from_user, &routed.uri)?;
            Some(Arc::new(Signer::load(&stir.key, &stir.x5u, stir.attest)?))
        }
        None => None,
    };
    if !args.srtp.allowed_over(routed.transport) {
        return Err(CallCommandError::SrtpWithoutTls(args.srtp.as_str()));
    }
    // Refused before dialling: a capture asked for and not written is a call that cannot be examined.
    if let Some(path) = &args.capture {
        crate::capture::create_private(path)
            .map_err(|source| CallCommandError::Capture { path: path.display().to_string(), source })?;
    }
    let next_hop = resolve(&routed.hop).await?;
    let mut plan = Dialplan::find(&args.dialplan, args.dialplans.as_deref())?;
    if let Some(timeout) = args.ring_timeout {
        plan.ring_timeout = timeout;
    }
    if let Some(tag) = &args.locale {
        let locale =
            crate::locale::resolve(tag).map_err(|source| CallCommandError::Locale { tag: tag.clone(), source })?;
        plan = plan.with_locale(locale);
    }
    let prompts = Prompts::load(&plan)?;
    let credentials = match (args.auth_user, args.auth_pass) {
        (Some(user), password) => Some(Credentials { user, password: password.unwrap_or_default() }),
        (None, _) => None,
    };
    let tls = if routed.transport == Transport::Tls { Some(Tls::client(&args.tls)?) } else { None };
    let endpoint =
        Endpoint::bind_with_tls(bind_towards(args.bind, next_hop), routed.transport == Transport::Tcp, tls).await?;
    let setup = CallSetup {
        target: routed.uri,
        next_hop,
        peer_name: routed.host,
        transport: routed.transport,
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
        stir,
        seed: None,
        srtp: args.srtp,
        code: args.code,
        capture: args.capture.map(|path| CaptureFile { path, max_bytes: None }),
    };
    // The call machine logs its own events; a person at a terminal also gets
    // one plain line per change, and scripts reading stderr get nothing extra.
    let show_progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = run_call(&endpoint, setup, |event| {
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
        // `ended:` follows with the same outcome once the call hangs up.
        CallEvent::Response { .. } | CallEvent::Decided { .. } => None,
    }
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
        srtp: None,
        srtp_rejected_packets: 0,
        evidence: Vec::new(),
    })
}

/// The process exit status for a report: 0 only for `verified`.
pub fn exit_code(report: &CallReport) -> u8 {
    if report.outcome == Outcome::Verified { 0 } else { 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

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

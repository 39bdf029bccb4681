//! The words every layer shares: how a verification ended, where a key press
//! came from, how SIP travels. A leaf: it imports nothing of pound's, so the
//! store, the API, metrics and config can speak of outcomes without reaching
//! into the call machine.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// What a socket-free machine asks to put on the wire: `contents` (a SIP
/// message, an RTP datagram) for `destination`. Every machine's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<T> {
    pub destination: SocketAddr,
    pub contents: T,
}

/// The outcome of a verification (stable names, snake_case in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The expected key was pressed.
    Verified,
    /// The fraud code was entered.
    FraudReported,
    /// Other keys, retries exhausted.
    WrongInput,
    /// Answered, prompt played, nothing pressed (a voicemail box that was
    /// not recognised, or a silent callee).
    NoInput,
    /// Hung up before confirming.
    CalleeHangup,
    /// 486 or 600.
    Busy,
    /// 603.
    Declined,
    /// Rang until the ring timeout; pound sent CANCEL.
    NoAnswer,
    /// Any other final failure, a transport failure, or no response.
    Unreachable,
    /// The number is not a valid phone number.
    InvalidNumber,
    /// Refused by policy, never dialled.
    Blocked,
    /// Canceled by the requester.
    Canceled,
    /// pound's own error; the detail says which.
    Failed,
    /// Answered by a voicemail box: a greeting longer than a human answer,
    /// then the record beep. Hung up without leaving a message; never verified.
    Voicemail,
}

impl Outcome {
    /// The outcome's JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::FraudReported => "fraud_reported",
            Outcome::WrongInput => "wrong_input",
            Outcome::NoInput => "no_input",
            Outcome::CalleeHangup => "callee_hangup",
            Outcome::Busy => "busy",
            Outcome::Declined => "declined",
            Outcome::NoAnswer => "no_answer",
            Outcome::Unreachable => "unreachable",
            Outcome::InvalidNumber => "invalid_number",
            Outcome::Blocked => "blocked",
            Outcome::Canceled => "canceled",
            Outcome::Failed => "failed",
            Outcome::Voicemail => "voicemail",
        }
    }

    /// The outcome of a final failure response to the INVITE.
    pub fn of_failure(status: u16) -> Outcome {
        match status {
            486 | 600 => Outcome::Busy,
            603 => Outcome::Declined,
            404 | 484 | 604 => Outcome::InvalidNumber,
            _ => Outcome::Unreachable,
        }
    }
}

/// Where a key press reached pound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DtmfSource {
    /// RFC 4733 telephone-events in the RTP stream.
    Rfc4733,
    /// SIP INFO (`application/dtmf-relay` or `application/dtmf`).
    Info,
    /// Tones in the audio, found by the in-band detector.
    Inband,
}

impl DtmfSource {
    /// The name used in JSON and in dialplans.
    pub fn as_str(self) -> &'static str {
        match self {
            DtmfSource::Rfc4733 => "rfc4733",
            DtmfSource::Info => "info",
            DtmfSource::Inband => "inband",
        }
    }

    /// The source [`DtmfSource::as_str`] names.
    pub fn parse(name: &str) -> Option<DtmfSource> {
        [DtmfSource::Rfc4733, DtmfSource::Info, DtmfSource::Inband].into_iter().find(|source| source.as_str() == name)
    }
}

/// Whether a trunk's media is SRTP (RFC 3711) with SDES keys (RFC 4568):
/// `mandatory` offers RTP/SAVP and refuses a call without it, `optional`
/// offers keys on RTP/AVP and takes whichever the peer answers, `off` speaks
/// plain RTP only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SrtpPolicy {
    Mandatory,
    Optional,
    #[default]
    Off,
}

impl SrtpPolicy {
    /// Whether this policy may be used over `transport`: SDES keys travel
    /// in the SDP, so SRTP needs the signalling encrypted (RFC 4568 §8.3).
    pub fn allowed_over(self, transport: Transport) -> bool {
        self == SrtpPolicy::Off || transport == Transport::Tls
    }

    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SrtpPolicy::Mandatory => "mandatory",
            SrtpPolicy::Optional => "optional",
            SrtpPolicy::Off => "off",
        }
    }
}

/// How SIP travels to the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// TCP under TLS (RFC 3261 §26, RFC 5630).
    Tls,
}

impl Transport {
    /// The name in Via headers.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// TCP and TLS deliver reliably, so transactions do not retransmit.
    pub fn is_reliable(self) -> bool {
        self != Transport::Udp
    }

    /// The port a URI without one means (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp | Transport::Tcp => 5060,
            Transport::Tls => 5061,
        }
    }
}

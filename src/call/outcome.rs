//! How a verification call ended, as DESIGN.md §2 names it.

use serde::Serialize;

use crate::dialplan::DtmfSource;

/// The outcome of a verification (stable names, snake_case in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The expected key was pressed.
    Verified,
    /// The fraud code was entered.
    FraudReported,
    /// Other keys, retries exhausted.
    WrongInput,
    /// Answered, prompt played, nothing pressed (often voicemail).
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

/// Everything recorded about one call attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallReport {
    pub outcome: Outcome,
    /// The INVITE's final status code, if one arrived.
    pub sip_status: Option<u16>,
    /// Where the deciding digit came from.
    pub dtmf_source: Option<DtmfSource>,
    /// Every key accepted, in order.
    pub digits: String,
    /// From the first INVITE to the end of the call.
    pub duration_ms: u64,
    pub call_id: String,
    /// From the first INVITE to the answer.
    pub answered_ms: Option<u64>,
    /// From the first INVITE to the deciding digit.
    pub digit_ms: Option<u64>,
    /// What went wrong, for `failed`, `unreachable` and timeouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// RTP datagrams dropped because they came from elsewhere than the
    /// callee's media address, or before the answer said where that is.
    #[serde(skip_serializing_if = "is_zero")]
    pub foreign_rtp_packets: u64,
    /// SIP messages not acted on because they came from elsewhere than the
    /// next hop or the dialog's remote target.
    #[serde(skip_serializing_if = "is_zero")]
    pub foreign_sip_messages: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

//! What one call attempt reports when it ends.

use serde::Serialize;

use crate::evidence::KeyEvidence;
use crate::srtp::Suite;
use crate::vocab::{DtmfSource, Outcome};

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
    /// The SRTP suite the media used; absent for plain RTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srtp: Option<Suite>,
    /// SRTP packets dropped unread: not authentic, replayed, or not RTP.
    #[serde(skip_serializing_if = "is_zero")]
    pub srtp_rejected_packets: u64,
    /// One entry per key accepted, in order: what each path measured.
    pub evidence: Vec<KeyEvidence>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

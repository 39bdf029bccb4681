//! `pound replay FILE.pcap`: a captured call run again.

use std::path::Path;

use crate::capture::replay::{ReplayError, Replayed, replay};

/// Largest capture read: a call of the longest dialplan duration with
/// every packet captured is far smaller.
const MAX_CAPTURE_BYTES: u64 = 1 << 30;

/// Why a capture could not be replayed, reading it included.
#[derive(Debug, thiserror::Error)]
pub enum ReplayCommandError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("{0} bytes is larger than any capture pound writes")]
    TooLarge(u64),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// Reads and replays the capture at `path`.
pub fn run(path: &Path) -> Result<Replayed, ReplayCommandError> {
    let size = std::fs::metadata(path)?.len();
    if size > MAX_CAPTURE_BYTES {
        return Err(ReplayCommandError::TooLarge(size));
    }
    Ok(replay(&std::fs::read(path)?)?)
}

/// One line for stderr: what was checked, and where the replay differed.
pub fn summary(replayed: &Replayed) -> String {
    let checked = format!(
        "replay: {} SIP messages and {} RTP packets sent (captured by pound {})",
        replayed.sip_sent, replayed.rtp_sent, replayed.header.pound_version
    );
    let past =
        if replayed.ran_past_capture { "; the capture ended first, the rest ran on the call's timers" } else { "" };
    match &replayed.divergence {
        Some(difference) => format!("{checked}{past}; diverged: {difference}"),
        None => format!("{checked}{past}; all as captured"),
    }
}

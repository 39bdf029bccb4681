//! RTP (RFC 3550) and telephone-events (RFC 4733), socket-free.
//!
//! - [`packet`]: one RTP packet, parsed from or written to a datagram (a thin
//!   wrapper over `rtp-rs` that adds our newtypes and never panics).
//! - [`sender`]: sequence numbers, timestamps, marker bit and drift-free 20 ms pacing.
//! - [`receiver`]: strict source checks (only the address the SDP named, or
//!   where its stream provably moved), a small reorder window, loss and
//!   duplicate accounting, extended sequence numbers.
//! - [`telephone_event`]: turning RFC 4733 event packets into key presses, and
//!   producing them for the simulated phone.
//!
//! Like every protocol piece here, nothing in this module touches a socket or
//! reads the clock: the caller passes datagrams and `now` in and asks what to
//! send or deliver next.

pub mod packet;
pub mod receiver;
pub mod sender;
pub mod telephone_event;

pub use packet::{PayloadType, RtpPacket, SeqNo, Ssrc};
pub use receiver::{DEFAULT_LEARNING_PACKETS, ReceivedPacket, RtpReceiver, RtpStats};
pub use sender::RtpSender;
pub use telephone_event::{DigitPress, EventReceiver, EventSender, PressEnd};

/// Why a datagram is not an RTP packet we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed RTP header.
    #[error("datagram of {len} bytes is shorter than an RTP header")]
    TooShort {
        /// Length of the datagram in bytes.
        len: usize,
    },
    /// The version field is not 2 (RFC 3550 defines only version 2; anything
    /// else on a media port is STUN, ZRTP or noise).
    #[error("RTP version {version} is not supported")]
    UnsupportedVersion {
        /// The version field found in the first byte.
        version: u8,
    },
    /// The CSRC list or the header extension announced by the header runs past
    /// the end of the datagram.
    #[error("RTP header needs {header_len} bytes but the datagram has {len}")]
    Truncated {
        /// Bytes the header claims to occupy.
        header_len: usize,
        /// Length of the datagram in bytes.
        len: usize,
    },
    /// The padding flag is set but the padding count is zero or larger than
    /// what follows the header.
    #[error("invalid RTP padding length {padding}")]
    InvalidPadding {
        /// The padding count from the last byte of the datagram.
        padding: u8,
    },
}

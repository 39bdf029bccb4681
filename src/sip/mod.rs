//! SIP signalling: a small message type over rsipstack's parser, TCP framing, digest authentication,
//! RFC 3261 client transactions and the dialog.
//!
//! Everything here is a socket-free state machine or a pure function (DESIGN.md §1): the `net` layer
//! reads bytes, hands them in together with the current time and sends what the machines ask for.

pub mod auth;
pub mod authenticator;
pub mod dialog;
pub mod endpoint;
pub mod frame;
pub mod header;
pub mod message;
pub mod route;
mod syntax;
pub mod transaction;
pub mod transactions;
pub mod trunk;

pub use auth::{Algorithm, Challenge, Credentials};
pub use header::{NameAddr, Via};
pub use message::{MAX_MESSAGE_BYTES, Message, Method};
pub use transaction::{ClientTransaction, Timers, TransactionEvent};
pub use transactions::{ClientEvent, ClientTransactions, Hop, Matched, Outgoing, TransactionKey};

/// Everything that can go wrong while reading SIP from the network or answering a challenge.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    /// A message, or a TCP header block still waiting for its end, is larger than [`MAX_MESSAGE_BYTES`].
    #[error("SIP message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    /// The bytes are not a well-formed SIP message, header value or challenge; the text says what was wrong.
    #[error("malformed SIP: {0}")]
    Malformed(String),
    /// A header that every message (or TCP framing) needs is absent.
    #[error("SIP message has no {0} header")]
    MissingHeader(&'static str),
    /// A challenge uses an authentication scheme, algorithm or qop we cannot answer.
    #[error("unsupported SIP authentication: {0}")]
    UnsupportedAuth(String),
}

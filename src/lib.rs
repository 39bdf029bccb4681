//! pound: proves that a person controls a phone number by calling it over SIP,
//! playing a prompt and detecting the pound key.
//!
//! Protocol and signal processing are socket-free state machines (`sip`, `sdp`,
//! `rtp`, `media`, `dsp`, `call`, `phone`); `net` drives them with tokio.
//!
//! Layers, lowest first; a module imports only modules below it:
//! `vocab`, `evidence`, `clock`, `timer`, `mask`, `code`, `locale`, `logging` (leaves) · `dsp`, `rtp`, `sip`, `stir` · `srtp` · `media`,
//! `sdp`, `dialplan` · `call`, `phone` · `store`, `policy`, `metrics` · `api`,
//! `net` · `engine` · `config` · `service` · `cmd` (imported by `main.rs` only).

/// The version and the commit the binary was built from (`0.1.0 (1a2b3c4d5e6f)`).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("POUND_COMMIT"), ")");
/// The commit the binary was built from, or "unknown".
pub const COMMIT: &str = env!("POUND_COMMIT");

pub mod api;
pub mod call;
pub mod capture;
pub mod clock;
pub mod cmd;
pub mod code;
pub mod config;
pub mod dialplan;
pub mod dsp;
pub mod engine;
pub mod evidence;
pub mod locale;
pub mod logging;
pub mod mask;
pub mod media;
pub mod metrics;
pub mod net;
pub mod phone;
pub mod policy;
pub mod rtp;
pub mod sdp;
pub mod service;
pub mod sip;
pub mod srtp;
pub mod stir;
pub mod store;
pub mod timer;
pub mod vocab;

//! pound: proves that a person controls a phone number by calling it over SIP,
//! playing a prompt and detecting the pound key.
//!
//! Protocol and signal processing are socket-free state machines (`sip`, `sdp`,
//! `rtp`, `media`, `dsp`, `call`, `phone`); `net` drives them with tokio.

pub mod api;
pub mod call;
pub mod cmd;
pub mod config;
pub mod dialplan;
pub mod dsp;
pub mod engine;
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
pub mod store;

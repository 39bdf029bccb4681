//! pound: proves that a person controls a phone number by calling it over SIP,
//! playing a prompt and detecting the pound key.

pub mod cmd;
pub mod dsp;
pub mod media;

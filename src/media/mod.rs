//! Audio media: codecs (PCMU, PCMA, Opus), prompts, WAV files.

pub mod builtin;
pub mod codec;
pub mod prompt;
pub mod wav;

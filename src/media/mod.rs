//! Audio media: WAV files (prompts, recordings, test fixtures).

pub mod wav;

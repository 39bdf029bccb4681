//! Answering-machine detection from the callee's audio: a greeting longer
//! than a human "hello?", then the record beep. Asterisk's `AMD()` judges the
//! greeting the same way (speech length); the beep makes the decision
//! certain, so pound never leaves a message and never waits for a timeout.
//!
//! The beep is one steady tone between 400 and 2100 Hz lasting at least
//! `beep_ms`; a DTMF key (two tones) and speech (no single dominant tone)
//! are never one.

use crate::dsp::steady::{BLOCK_MS, Block, RunTracker};

/// Where record beeps are (400 to 2100 Hz), widened by the estimate's error.
const BEEP_BAND_HZ: (f64, f64) = (395.0, 2105.0);

/// Thresholds of the detection (dialplan `voicemail_greeting_ms`, `voicemail_beep_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoicemailConfig {
    /// Speech heard, in total, before a beep counts.
    pub greeting_ms: u32,
    /// The beep's length at least.
    pub beep_ms: u32,
}

/// What was heard when a voicemail box was recognised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Voicemail {
    pub greeting_ms: u32,
    pub beep_hz: f64,
}

/// Follows the callee's audio from the answer.
#[derive(Debug, Clone)]
pub struct VoicemailDetector {
    config: VoicemailConfig,
    speech_ms: u32,
    runs: RunTracker,
    found: bool,
}

impl VoicemailDetector {
    pub fn new(config: VoicemailConfig) -> Self {
        Self { config, speech_ms: 0, runs: RunTracker::default(), found: false }
    }

    /// Takes the next block; a [`Voicemail`] once (per call) the beep after a long greeting is heard.
    pub fn push(&mut self, block: Block) -> Option<Voicemail> {
        if self.found {
            return None;
        }
        if block == Block::Sound {
            self.speech_ms = self.speech_ms.saturating_add(BLOCK_MS);
        }
        self.runs.push(block);
        let beep = self.runs.current()?;
        let in_band = (BEEP_BAND_HZ.0..=BEEP_BAND_HZ.1).contains(&beep.hz);
        if in_band && beep.ms() >= self.config.beep_ms && self.speech_ms > self.config.greeting_ms {
            self.found = true;
            return Some(Voicemail { greeting_ms: self.speech_ms, beep_hz: beep.hz });
        }
        None
    }

    /// Speech heard so far (ms).
    pub fn speech_ms(&self) -> u32 {
        self.speech_ms
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::dsp::steady::BlockAnalyser;
    use crate::dsp::steady::tests::{through_g711, tone};

    const CONFIG: VoicemailConfig = VoicemailConfig { greeting_ms: 2500, beep_ms: 150 };

    /// A stand-in for speech: noise bursts of syllable length, their
    /// loudness rising and falling, with short pauses.
    pub(crate) fn babble(ms: usize, seed: u64) -> Vec<i16> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(ms * 8);
        while out.len() < ms * 8 {
            let syllable = rng.random_range(800..2400);
            for n in 0..syllable {
                let envelope = (std::f64::consts::PI * n as f64 / syllable as f64).sin();
                out.push((envelope * rng.random_range(-6000.0..6000.0)) as i16);
            }
            out.extend(std::iter::repeat_n(0, rng.random_range(0..400)));
        }
        out.truncate(ms * 8);
        out
    }

    fn detect(audio: &[i16]) -> Option<Voicemail> {
        let (mut analyser, mut detector, mut found) = (BlockAnalyser::default(), VoicemailDetector::new(CONFIG), None);
        analyser.process(&through_g711(audio), |block| found = found.or(detector.push(block)));
        found
    }

    #[test]
    fn a_long_greeting_then_a_beep_anywhere_in_the_band() {
        for (i, hz) in [400.0, 440.0, 850.0, 1000.0, 1400.0, 2100.0].into_iter().enumerate() {
            let mut audio = babble(3500, i as u64);
            audio.extend(vec![0; 2400]);
            audio.extend(tone(&[hz], -15.0, 200));
            let found = detect(&audio).unwrap_or_else(|| panic!("{hz} Hz beep missed"));
            assert!((found.beep_hz - hz).abs() < 5.0, "{found:?}");
            assert!(found.greeting_ms > 2500, "{found:?}");
        }
    }

    #[test]
    fn no_voicemail_without_greeting_beep_or_single_tone() {
        // A human "hello?" then a beep-like tone: too little speech.
        let mut audio = babble(800, 1);
        audio.extend(tone(&[1000.0], -15.0, 300));
        assert_eq!(detect(&audio), None, "short greeting");
        // A long greeting alone, or followed by a DTMF key.
        let mut audio = babble(6000, 2);
        assert_eq!(detect(&audio), None, "speech alone");
        audio.extend(tone(&[941.0, 1477.0], -10.0, 300));
        assert_eq!(detect(&audio), None, "DTMF is two tones");
        // A beep too short, or outside the band.
        let mut audio = babble(4000, 3);
        audio.extend(tone(&[1000.0], -15.0, 100));
        audio.extend(vec![0; 800]);
        audio.extend(tone(&[300.0], -15.0, 400));
        assert_eq!(detect(&audio), None);
        assert_eq!(detect(&vec![0; 80_000]), None, "silence");
    }
}

//! Steady single tones and voice activity, measured over 20 ms blocks: the
//! raw material of SIT and voicemail-beep detection.
//!
//! A block holds one steady tone when a second-order predictor
//! `x[n] = 2cos(ω)·x[n-1] - x[n-2]` explains it almost entirely: that
//! recursion is exact for one sinusoid and nothing else, so the residual
//! separates a single tone from two tones (a DTMF key, a dual-tone call
//! progress signal), from noise and from speech, and `ω` is the frequency
//! estimate. One estimate per block, anywhere in the band, without a bank of
//! fixed bins: a voicemail beep can be at any frequency from 400 to 2100 Hz.

use crate::dsp::tone::{SAMPLE_RATE, dbm0_to_power};

/// Samples in one block: 20 ms at 8 kHz.
pub const BLOCK: usize = 160;
/// Milliseconds in one block.
pub const BLOCK_MS: u32 = 20;
/// Below this level a block is silence: neither speech nor a tone.
const FLOOR_DBM0: f64 = -40.0;
/// The predictor's residual over the block's energy at most, for a tone. A
/// pure tone through G.711 leaves ~0.001; two tones, noise or speech leave
/// 0.1 and more.
const MAX_TONE_RESIDUAL: f64 = 0.02;

/// What one block held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Block {
    Silence,
    /// Sound that is no single steady tone: speech, noise, two tones.
    Sound,
    /// One steady tone at this frequency (Hz).
    Tone(f64),
}

/// Cuts samples into blocks and says what each held.
#[derive(Debug, Clone)]
pub struct BlockAnalyser {
    samples: [f64; BLOCK],
    filled: usize,
    floor: f64,
}

impl Default for BlockAnalyser {
    fn default() -> Self {
        Self { samples: [0.0; BLOCK], filled: 0, floor: dbm0_to_power(FLOOR_DBM0) }
    }
}

impl BlockAnalyser {
    /// Feeds `samples` (8 kHz); `on_block` hears every block completed.
    pub fn process(&mut self, mut samples: &[i16], mut on_block: impl FnMut(Block)) {
        // A run of samples at a time rather than one by one: the conversion
        // then vectorises, and every call's audio passes here for the whole
        // call (issue 10's profile of in-band calls).
        while !samples.is_empty() {
            let (run, rest) = samples.split_at((BLOCK - self.filled).min(samples.len()));
            for (slot, &sample) in self.samples[self.filled..].iter_mut().zip(run) {
                *slot = f64::from(sample);
            }
            self.filled += run.len();
            samples = rest;
            if self.filled == BLOCK {
                self.filled = 0;
                on_block(self.classify());
            }
        }
    }

    fn classify(&self) -> Block {
        let x = &self.samples;
        let power = x.iter().map(|s| s * s).sum::<f64>() / BLOCK as f64;
        if power < self.floor {
            return Block::Silence;
        }
        let (mut cross, mut middle) = (0.0, 0.0);
        for n in 2..BLOCK {
            cross += x[n - 1] * (x[n] + x[n - 2]);
            middle += x[n - 1] * x[n - 1];
        }
        if middle <= 0.0 {
            return Block::Sound;
        }
        let cos = (cross / (2.0 * middle)).clamp(-1.0, 1.0);
        let residual: f64 = (2..BLOCK).map(|n| (x[n] + x[n - 2] - 2.0 * cos * x[n - 1]).powi(2)).sum();
        if residual / middle > MAX_TONE_RESIDUAL {
            return Block::Sound;
        }
        Block::Tone(cos.acos() * f64::from(SAMPLE_RATE) / std::f64::consts::TAU)
    }
}

/// Two estimates of one tone differ by less than this (Hz): E.180's
/// neighbouring SIT frequencies are 57 Hz apart and more.
pub const SAME_TONE_HZ: f64 = 20.0;

/// A run of consecutive blocks holding the same tone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneRun {
    /// The mean of the blocks' estimates (Hz).
    pub hz: f64,
    pub blocks: u32,
}

impl ToneRun {
    pub fn ms(&self) -> u32 {
        self.blocks * BLOCK_MS
    }
}

/// Follows the current tone run across blocks.
#[derive(Debug, Clone, Default)]
pub struct RunTracker {
    current: Option<ToneRun>,
}

impl RunTracker {
    /// Takes the next block; returns the run it ended, if it ended one.
    pub fn push(&mut self, block: Block) -> Option<ToneRun> {
        match (block, self.current.as_mut()) {
            (Block::Tone(hz), Some(run)) if (hz - run.hz).abs() < SAME_TONE_HZ => {
                run.hz += (hz - run.hz) / f64::from(run.blocks + 1);
                run.blocks += 1;
                None
            }
            (Block::Tone(hz), _) => self.current.replace(ToneRun { hz, blocks: 1 }),
            _ => self.current.take(),
        }
    }

    /// The run still going, if any.
    pub fn current(&self) -> Option<ToneRun> {
        self.current
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dsp::g711::{ulaw_decode, ulaw_encode};
    use crate::dsp::tone::ToneGenerator;

    /// `audio` through a G.711 µ-law round trip, as a phone would send it.
    pub(crate) fn through_g711(audio: &[i16]) -> Vec<i16> {
        audio.iter().map(|&s| ulaw_decode(ulaw_encode(s))).collect()
    }

    pub(crate) fn tone(hz: &[f64], dbm0: f64, ms: usize) -> Vec<i16> {
        let tones: Vec<(f64, f64)> = hz.iter().map(|&f| (f, dbm0)).collect();
        let mut out = vec![0; ms * 8];
        ToneGenerator::new(&tones).fill(&mut out);
        out
    }

    fn blocks(audio: &[i16]) -> Vec<Block> {
        let mut out = Vec::new();
        BlockAnalyser::default().process(&through_g711(audio), |b| out.push(b));
        out
    }

    #[test]
    fn a_single_tone_is_measured_anywhere_in_the_band() {
        for hz in [400.0, 440.0, 913.8, 1000.0, 1776.7, 2100.0] {
            for block in blocks(&tone(&[hz], -20.0, 200)) {
                let Block::Tone(measured) = block else { panic!("{hz} Hz: {block:?}") };
                assert!((measured - hz).abs() < 3.0, "{hz} Hz measured {measured}");
            }
        }
    }

    #[test]
    fn two_tones_and_silence_are_no_tone() {
        for block in blocks(&tone(&[941.0, 1477.0], -10.0, 200)) {
            assert_eq!(block, Block::Sound);
        }
        assert!(blocks(&vec![0; 1600]).iter().all(|&b| b == Block::Silence));
    }

    #[test]
    fn the_blocks_do_not_depend_on_how_the_audio_is_cut() {
        // A tone, silence and two tones, with block edges falling inside each.
        let mut audio = tone(&[440.0], -20.0, 130);
        audio.extend(vec![0; 333]);
        audio.extend(tone(&[941.0, 1477.0], -10.0, 97));
        let audio = through_g711(&audio);
        let mut whole = Vec::new();
        BlockAnalyser::default().process(&audio, |b| whole.push(b));
        assert_eq!(whole.len(), audio.len() / BLOCK);
        for piece in [1, 7, 159, 160, 161, 333] {
            let (mut analyser, mut cut) = (BlockAnalyser::default(), Vec::new());
            for chunk in audio.chunks(piece) {
                analyser.process(chunk, |b| cut.push(b));
            }
            assert_eq!(cut, whole, "fed {piece} samples at a time");
        }
    }
}

//! Signal construction shared by the DSP test suites: DTMF presses with any
//! frequency error, level, twist and timing, deterministic noise, speech
//! fixtures, and G.711 round trips.
#![allow(dead_code)] // each test crate uses its own subset

pub mod baresip;
pub mod http;
pub mod pcap;
pub mod postgres;
pub mod process;
pub mod sim;
pub mod stir;
pub mod tls;

use std::path::{Path, PathBuf};

use pound::dsp::dtmf::{DtmfConfig, DtmfDetector, DtmfEvent};
use pound::dsp::g711;
use pound::dsp::tone::{ToneGenerator, dbm0_to_power, key_frequencies, saturate};

pub const RATE: usize = 8000;

pub fn ms(ms: f64) -> usize {
    (ms * RATE as f64 / 1000.0).round() as usize
}

/// One DTMF press as it reaches the detector.
#[derive(Debug, Clone, Copy)]
pub struct Press {
    pub key: char,
    /// Frequency errors of the low and high tone, in percent.
    pub low_error_pct: f64,
    pub high_error_pct: f64,
    pub low_dbm0: f64,
    pub high_dbm0: f64,
    pub duration_ms: f64,
}

impl Press {
    pub fn new(key: char) -> Self {
        Self { key, low_error_pct: 0.0, high_error_pct: 0.0, low_dbm0: -10.0, high_dbm0: -10.0, duration_ms: 100.0 }
    }

    pub fn level(self, dbm0: f64) -> Self {
        Self { low_dbm0: dbm0, high_dbm0: dbm0, ..self }
    }

    pub fn levels(self, low_dbm0: f64, high_dbm0: f64) -> Self {
        Self { low_dbm0, high_dbm0, ..self }
    }

    pub fn errors(self, low_pct: f64, high_pct: f64) -> Self {
        Self { low_error_pct: low_pct, high_error_pct: high_pct, ..self }
    }

    pub fn duration(self, duration_ms: f64) -> Self {
        Self { duration_ms, ..self }
    }

    /// Mean power of both tones together.
    pub fn power(&self) -> f64 {
        dbm0_to_power(self.low_dbm0) + dbm0_to_power(self.high_dbm0)
    }

    fn generator(&self, phases: [f64; 2]) -> ToneGenerator {
        let (low, high) = key_frequencies(self.key).expect("a DTMF key");
        ToneGenerator::new(&[
            (low * (1.0 + self.low_error_pct / 100.0), self.low_dbm0),
            (high * (1.0 + self.high_error_pct / 100.0), self.high_dbm0),
        ])
        .with_phases(&phases)
    }
}

/// A signal under construction, in floating point until it is quantised.
#[derive(Debug, Clone)]
pub struct Signal {
    pub samples: Vec<f64>,
    /// Sample positions where presses start.
    pub press_starts: Vec<usize>,
}

impl Signal {
    pub fn silence(ms_: f64) -> Self {
        Self { samples: vec![0.0; ms(ms_)], press_starts: Vec::new() }
    }

    pub fn gap(mut self, ms_: f64) -> Self {
        self.samples.extend(std::iter::repeat_n(0.0, ms(ms_)));
        self
    }

    pub fn press(self, press: Press) -> Self {
        self.press_with_phases(press, [0.3, 1.1])
    }

    /// Appends a press whose tones start at the given phases (radians).
    pub fn press_with_phases(mut self, press: Press, phases: [f64; 2]) -> Self {
        let start = self.samples.len();
        let mut tone = vec![0.0; ms(press.duration_ms)];
        press.generator(phases).add_to(&mut tone);
        self.samples.extend(tone);
        self.press_starts.push(start);
        self
    }

    /// Adds `background` (looped if shorter) scaled to the given mean power,
    /// measured over the whole background.
    pub fn with_background(mut self, background: &[f64], power: f64) -> Self {
        let own = background.iter().map(|x| x * x).sum::<f64>() / background.len() as f64;
        let gain = (power / own.max(f64::MIN_POSITIVE)).sqrt();
        for (s, b) in self.samples.iter_mut().zip(background.iter().cycle()) {
            *s += b * gain;
        }
        self
    }

    pub fn quantise(&self, codec: Codec) -> Vec<i16> {
        self.samples.iter().map(|&x| codec.round_trip(saturate(x))).collect()
    }
}

/// The transmission path between the phone and the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Linear,
    Ulaw,
    Alaw,
}

pub const CODECS: [Codec; 3] = [Codec::Linear, Codec::Ulaw, Codec::Alaw];

impl Codec {
    pub fn round_trip(self, sample: i16) -> i16 {
        match self {
            Codec::Linear => sample,
            Codec::Ulaw => g711::ulaw_decode(g711::ulaw_encode(sample)),
            Codec::Alaw => g711::alaw_decode(g711::alaw_encode(sample)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Linear => "linear",
            Codec::Ulaw => "ulaw",
            Codec::Alaw => "alaw",
        }
    }
}

/// Deterministic white Gaussian noise with unit variance.
pub fn white_noise(len: usize, seed: u64) -> Vec<f64> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..len)
        .map(|_| {
            let (u1, u2) = (next().max(1e-300), next());
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audio")
}

/// Every WAV file in a fixtures folder, sorted by name.
pub fn fixture_files(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures().join(folder))
        .unwrap_or_else(|e| panic!("fixtures/audio/{folder}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "wav"))
        .collect();
    files.sort();
    files
}

pub fn load(path: &Path) -> Vec<i16> {
    pound::media::wav::read_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The digits pound's detector reports, with their on times in samples,
/// fed in 20 ms frames like RTP delivers them.
pub fn detect(samples: &[i16], config: &DtmfConfig) -> Vec<(char, u64)> {
    let mut detector = DtmfDetector::new(config);
    let mut found = Vec::new();
    let mut on = |event| {
        if let DtmfEvent::On { digit, sample, .. } = event {
            found.push((digit, sample));
        }
    };
    for frame in samples.chunks(160) {
        detector.process(frame, &mut on);
    }
    detector.finish(&mut on);
    found
}

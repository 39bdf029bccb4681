//! DTMF keys and frequencies, the dBm0 level convention, and a phase-continuous
//! tone generator (used by the tests and by the simulated phone).

/// Audio sample rate of everything in `dsp`, in Hz.
pub const SAMPLE_RATE: u32 = 8000;

/// Low-group (row) frequencies in Hz.
pub const ROW_HZ: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies in Hz.
pub const COL_HZ: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// The keypad, indexed by `[row][column]`.
pub const KEYPAD: [[char; 4]; 4] =
    [['1', '2', '3', 'A'], ['4', '5', '6', 'B'], ['7', '8', '9', 'C'], ['*', '0', '#', 'D']];

/// Every DTMF key, in keypad order.
pub const KEYS: [char; 16] = ['1', '2', '3', 'A', '4', '5', '6', 'B', '7', '8', '9', 'C', '*', '0', '#', 'D'];

/// The (row, column) indices of a key, or `None` for a character that is no key.
pub fn key_position(key: char) -> Option<(usize, usize)> {
    let key = key.to_ascii_uppercase();
    KEYPAD.iter().enumerate().find_map(|(row, keys)| keys.iter().position(|&k| k == key).map(|col| (row, col)))
}

/// The low and high frequency of a key in Hz.
pub fn key_frequencies(key: char) -> Option<(f64, f64)> {
    key_position(key).map(|(row, col)| (ROW_HZ[row], COL_HZ[col]))
}

/// spandsp's convention, used throughout: a full-scale sine is +3.14 dBm0.
// Not π: the level of a full-scale sine, by coincidence near it.
#[allow(clippy::approx_constant)]
const FULL_SCALE_SINE_DBM0: f64 = 3.14;

/// Peak amplitude (in 16-bit sample units) of a sine at `dbm0`.
pub fn dbm0_to_amplitude(dbm0: f64) -> f64 {
    32768.0 * 10f64.powf((dbm0 - FULL_SCALE_SINE_DBM0) / 20.0)
}

/// Mean power (in squared 16-bit sample units) of a sine at `dbm0`.
pub fn dbm0_to_power(dbm0: f64) -> f64 {
    let amplitude = dbm0_to_amplitude(dbm0);
    amplitude * amplitude / 2.0
}

/// The level in dBm0 of a signal with the given mean power.
pub fn power_to_dbm0(power: f64) -> f64 {
    10.0 * (power / dbm0_to_power(0.0)).log10()
}

/// A sum of sines with continuous phase across calls: a DTMF key, a dual-tone
/// call-progress signal, or a single tone.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    tones: Vec<Sine>,
}

#[derive(Debug, Clone)]
struct Sine {
    amplitude: f64,
    phase: f64,
    step: f64,
}

impl ToneGenerator {
    /// Tones given as `(frequency Hz, level dBm0)`, each starting at phase 0.
    pub fn new(tones: &[(f64, f64)]) -> Self {
        let tones = tones
            .iter()
            .map(|&(hz, dbm0)| Sine {
                amplitude: dbm0_to_amplitude(dbm0),
                phase: 0.0,
                step: std::f64::consts::TAU * hz / SAMPLE_RATE as f64,
            })
            .collect();
        Self { tones }
    }

    /// A DTMF key with both tones at `dbm0`; `None` for a character that is no key.
    pub fn dtmf(key: char, dbm0: f64) -> Option<Self> {
        key_frequencies(key).map(|(low, high)| Self::new(&[(low, dbm0), (high, dbm0)]))
    }

    /// Starts each tone at the given phase (radians) instead of 0.
    pub fn with_phases(mut self, phases: &[f64]) -> Self {
        for (tone, &phase) in self.tones.iter_mut().zip(phases) {
            tone.phase = phase;
        }
        self
    }

    /// Adds the next `out.len()` samples of the tones to `out`.
    pub fn add_to(&mut self, out: &mut [f64]) {
        for tone in &mut self.tones {
            for sample in out.iter_mut() {
                *sample += tone.amplitude * tone.phase.sin();
                tone.phase += tone.step;
            }
            tone.phase %= std::f64::consts::TAU;
        }
    }

    /// Writes the next `out.len()` samples, rounded and saturated to 16 bits.
    pub fn fill(&mut self, out: &mut [i16]) {
        let mut mixed = vec![0.0; out.len()];
        self.add_to(&mut mixed);
        for (o, m) in out.iter_mut().zip(mixed) {
            *o = saturate(m);
        }
    }
}

/// Rounds to the nearest 16-bit sample, clipping like a real A/D converter.
pub fn saturate(sample: f64) -> i16 {
    sample.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypad_maps_keys_to_frequencies() {
        assert_eq!(key_frequencies('#'), Some((941.0, 1477.0)));
        assert_eq!(key_frequencies('1'), Some((697.0, 1209.0)));
        assert_eq!(key_frequencies('d'), Some((941.0, 1633.0)));
        assert_eq!(key_frequencies('x'), None);
        assert_eq!(KEYS.len(), 16);
        assert!(KEYS.iter().all(|&k| key_position(k).is_some()));
    }

    #[test]
    fn full_scale_sine_is_3_14_dbm0() {
        assert!((dbm0_to_amplitude(FULL_SCALE_SINE_DBM0) - 32768.0).abs() < 1e-6);
        assert!((power_to_dbm0(dbm0_to_power(-17.5)) + 17.5).abs() < 1e-9);
    }

    #[test]
    fn generated_tone_has_the_requested_power_and_continuous_phase() {
        let mut one_go = ToneGenerator::dtmf('5', -10.0).unwrap();
        let mut pieces = one_go.clone();
        let mut whole = vec![0.0; 8000];
        one_go.add_to(&mut whole);
        let mut split = vec![0.0; 8000];
        let (a, b) = split.split_at_mut(1234);
        pieces.add_to(a);
        pieces.add_to(b);
        for (x, y) in whole.iter().zip(&split) {
            assert!((x - y).abs() < 1e-3);
        }
        let power = whole.iter().map(|x| x * x).sum::<f64>() / whole.len() as f64;
        // Two tones at -10 dBm0 each: -6.99 dBm0 in all.
        assert!((power_to_dbm0(power) + 6.99).abs() < 0.01);
    }
}

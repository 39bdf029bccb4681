//! The frequencies of a key not yet declared, measured over its whole run of
//! agreeing windows rather than one window at a time.
//!
//! One 16 ms window measures a tone's frequency from the phase advance between
//! its 8 ms halves, to a few tenths of a percent: the other tone leaks into
//! each half (it is only two or three 125 Hz bins away), and because the
//! detector steps every 4 ms that leakage's error repeats nearly unchanged
//! from window to window for some keys, so averaging windows does not remove
//! it. The phase advance of the whole window's sum over several windows has a
//! longer baseline and half the leakage: about four times as precise, enough
//! to tell the ±1.5 % that must be accepted from a musical note 1.7 % off.

use super::kernel::BLOCK;
use super::window::Hit;
use crate::dsp::tone::{COL_HZ, ROW_HZ, SAMPLE_RATE};

/// Largest frequency error of either tone over the run that declares a key:
/// the ±1.5 % that must be accepted and the long-baseline estimate's error.
/// A passage of music holding 783 Hz (770 Hz +1.7 %) and 1476 Hz is no `6`.
const RUN_FREQUENCY_TOLERANCE: f32 = 0.016;

/// The agreeing windows so far of one candidate key.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    hits: u8,
    /// Windows since the first hit, misses included.
    elapsed: u8,
    /// Per-window frequency errors (row, column) summed over the hits: only to
    /// resolve the long-baseline phase's whole turns.
    errors: [f32; 2],
    /// The row and column tones' window sums at the run's second hit (the
    /// first may hold the tone's onset, which shifts its phase), and when.
    reference: [(f32, f32); 2],
    reference_at: u8,
}

impl Run {
    pub fn start(hit: &Hit) -> Self {
        Self { hits: 1, errors: [hit.row_error, hit.col_error], ..Self::default() }
    }

    pub fn hits(&self) -> u8 {
        self.hits
    }

    /// Whether the run can take another window.
    pub fn has_room(&self) -> bool {
        self.elapsed < u8::MAX
    }

    pub fn miss(&mut self) {
        self.elapsed += 1;
    }

    pub fn add(&mut self, hit: &Hit) {
        self.elapsed += 1;
        self.hits += 1;
        self.errors[0] += hit.row_error;
        self.errors[1] += hit.col_error;
        if self.hits == 2 {
            self.reference = [hit.row_phasor, hit.col_phasor];
            self.reference_at = self.elapsed;
        }
    }

    /// Whether both tones, measured from the reference to `hit` (the run's
    /// latest), are within [`RUN_FREQUENCY_TOLERANCE`].
    pub fn on_frequency(&self, hit: &Hit) -> bool {
        self.frequency_errors(hit)
            .is_some_and(|[row, col]| row.abs() <= RUN_FREQUENCY_TOLERANCE && col.abs() <= RUN_FREQUENCY_TOLERANCE)
    }

    /// The row and column tones' frequency errors (fractions of nominal)
    /// from the reference to `hit`, once the run is long enough to measure.
    pub fn frequency_errors(&self, hit: &Hit) -> Option<[f32; 2]> {
        if self.hits < 3 {
            return None;
        }
        let windows = self.elapsed - self.reference_at;
        let hits = self.hits as f32;
        let row = run_error(self.errors[0] / hits, self.reference[0], hit.row_phasor, windows, ROW_HZ[hit.row]);
        let col = run_error(self.errors[1] / hits, self.reference[1], hit.col_phasor, windows, COL_HZ[hit.col]);
        Some([row, col])
    }
}

/// A tone's frequency error, as a fraction of `nominal_hz`, from the phase
/// advance of its window sum over `windows` steps of one block. The advance
/// may exceed half a turn; `coarse` (the per-window estimate) says how many
/// whole turns it made.
fn run_error(coarse: f32, from: (f32, f32), to: (f32, f32), windows: u8, nominal_hz: f64) -> f32 {
    let tau = std::f32::consts::TAU;
    let span_s = (windows as usize * BLOCK) as f32 / SAMPLE_RATE as f32;
    let nominal = nominal_hz as f32;
    let cross_re = to.0 * from.0 + to.1 * from.1;
    let cross_im = to.1 * from.0 - to.0 * from.1;
    let measured = cross_im.atan2(cross_re);
    let predicted = tau * coarse * nominal * span_s;
    let turns = ((predicted - measured) / tau).round();
    (measured + tau * turns) / (tau * span_s) / nominal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_advance_gives_the_error_beyond_half_a_turn() {
        // 1633 Hz + 2 % over 4 blocks: 32.66 Hz x 16 ms = 0.52 turns.
        let error = 0.02f32;
        let turns = error * 1633.0 * (4 * BLOCK) as f32 / SAMPLE_RATE as f32;
        let angle = std::f32::consts::TAU * turns;
        let got = run_error(0.018, (1.0, 0.0), (angle.cos(), angle.sin()), 4, 1633.0);
        assert!((got - error).abs() < 1e-5, "{got}");
        let got = run_error(-0.018, (1.0, 0.0), (angle.cos(), -angle.sin()), 4, 1633.0);
        assert!((got + error).abs() < 1e-5, "{got}");
    }
}

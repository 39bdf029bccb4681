//! What the last 16 ms (four blocks) of audio say: which key, if any, is
//! sounding. The blocks are combined coherently, so the window has the
//! frequency resolution of a 128-point DFT while the detector steps every 4 ms.

use super::kernel::{BLOCK, BlockSums, CENTRE, TABLE_SCALE, TONES};
use crate::dsp::tone::{COL_HZ, ROW_HZ, SAMPLE_RATE};

/// Blocks per analysis window.
pub const WINDOW_BLOCKS: usize = 4;
const WINDOW: f32 = (WINDOW_BLOCKS * BLOCK) as f32;
const HALF: f32 = WINDOW / 2.0;
/// A tone's mean power over the window from its window sum's `|Z|²`.
const POWER_SCALE: f32 = 2.0 / (WINDOW * WINDOW);
const _: () = assert!(WINDOW_BLOCKS * BLOCK == 128, "POWER_SCALE is then 2^-13, so scaling by it is exact");

/// After this many blocks the reference phasors are exactly 1 again: every
/// DTMF frequency is a whole number of Hz, and 250 blocks are one second.
const PHASOR_PERIOD: u32 = 250;
const _: () = assert!(PHASOR_PERIOD <= 256, "the phase index is a u8");

/// One block's correlations, phase-aligned to a reference that runs
/// continuously from the first sample, so consecutive blocks add coherently.
#[derive(Debug, Clone, Copy, Default)]
pub struct Block {
    /// Real parts of the eight tones in `[0..8]`, imaginary parts in `[8..16]`:
    /// one flat array, so the window arithmetic vectorises.
    z: [f32; 2 * TONES],
    energy: i64,
}

/// Where the continuous reference stands at the next block: `e^{-jωn}` at its
/// centre (the kernel correlates about the block's centre) is
/// `REFERENCE[phase]` (times `2 / TABLE_SCALE`, which undoes the kernel's
/// integer scaling and its fold's halving in the same multiplication).
#[derive(Debug, Clone, Copy, Default)]
pub struct Phasors {
    phase: u8,
}

/// The reference phasors at every block start of one period, `re` in
/// `[0..8]` and `im` in `[8..16]`. A table instead of a running product keeps
/// them exact and removes a block-to-block dependency from the hot loop.
/// The reference phasors, one row per block start of a period; 256 rows so
/// that a `u8` phase indexes it with no bounds check (the rows past the
/// period are never read).
pub type References = [[f32; 2 * TONES]; 256];

static REFERENCE: std::sync::LazyLock<References> = std::sync::LazyLock::new(|| {
    let mut table = [[0.0; 2 * TONES]; 256];
    for (m, phasors) in table.iter_mut().take(PHASOR_PERIOD as usize).enumerate() {
        for (k, hz) in ROW_HZ.iter().chain(COL_HZ.iter()).enumerate() {
            let cycles = hz * ((m * BLOCK) as f64 + CENTRE) / SAMPLE_RATE as f64;
            let angle = std::f64::consts::TAU * cycles.fract();
            let unscale = 2.0 / TABLE_SCALE as f64;
            phasors[k] = (unscale * angle.cos()) as f32;
            phasors[TONES + k] = (-unscale * angle.sin()) as f32;
        }
    }
    table
});

/// The reference phasors, for [`Phasors::align`]. Fetched once per call of
/// the detector: the lazy initialisation's check is not free.
pub fn references() -> &'static References {
    &REFERENCE
}

/// `cos` and `-sin` of twice each column frequency over one window, scaled
/// like the kernel's table, for [`Window::second_harmonic`].
static HARMONICS: std::sync::LazyLock<[[[i16; WINDOW_BLOCKS * BLOCK]; 2]; 4]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|col| {
        let step = std::f64::consts::TAU * 2.0 * COL_HZ[col] / SAMPLE_RATE as f64;
        let scaled = |value: f64| (TABLE_SCALE as f64 * value).round() as i16;
        [
            std::array::from_fn(|n| scaled((step * n as f64).cos())),
            std::array::from_fn(|n| scaled(-(step * n as f64).sin())),
        ]
    })
});

impl Phasors {
    /// Aligns one block's sums to the continuous reference and advances it.
    #[inline(always)]
    pub fn align(&mut self, references: &References, sums: &BlockSums) -> Block {
        let reference = &references[self.phase as usize];
        let mut block = Block { energy: sums.energy, ..Block::default() };
        for k in 0..TONES {
            let (re, im) = (sums.dot[k] as f32, sums.dot[TONES + k] as f32);
            let (pr, pi) = (reference[k], reference[TONES + k]);
            block.z[k] = re * pr - im * pi;
            block.z[TONES + k] = re * pi + im * pr;
        }
        self.phase = if self.phase as u32 + 1 == PHASOR_PERIOD { 0 } else { self.phase + 1 };
        block
    }
}

/// Detection thresholds, all as linear power ratios or mean powers.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Lowest mean power of one tone.
    pub min_power: f32,
    /// The window's energy (sum of squares) at that mean power: quieter
    /// windows hold no key.
    pub min_energy: f32,
    /// Largest `row / column` power ratio (normal twist).
    pub normal_twist: f32,
    /// Largest `column / row` power ratio (reverse twist).
    pub reverse_twist: f32,
}

/// Largest frequency error accepted, as a fraction of the nominal frequency:
/// the ±1.5 % that must be accepted plus the estimator's error, and no more,
/// because musical notes sit within 2.5 % of several key frequencies (a
/// chord's C7 at +2.1 % of 1633 Hz was an 'A' at 2.5 %).
const FREQUENCY_TOLERANCE: f32 = 0.02;
/// The strongest tone of a group must beat the others of its group by this.
const GROUP_PEAK: f32 = 6.3; // 8 dB
/// Share of the window's energy the two tones must carry. High: a key over
/// speech as loud as itself is still found in the windows where the speech
/// pauses or dips, while a voice or an instrument rarely puts 90 % of its
/// energy into two partials that sit on a key's frequencies.
const PURITY: f32 = 0.9;
/// Above this share the tones clearly dominate; below it they might be speech
/// harmonics that happen to sit near a key's frequencies, so they must sit
/// nearer: within [`TIGHT_FREQUENCY_TOLERANCE`].
const CLEAN_SHARE: f32 = 0.97;
/// Frequency tolerance for tones that carry less than [`CLEAN_SHARE`] of the
/// energy, still above the ±1.5 % that must be accepted.
const TIGHT_FREQUENCY_TOLERANCE: f32 = 0.017;
/// The smallest share of the window's energy a key's tones may carry.
#[cfg(test)]
pub const MIN_SHARE: f32 = PURITY;

/// Largest power at twice a tone's frequency, relative to the tone: a key's
/// tones are pure sines (symmetric clipping and G.711 add odd harmonics only),
/// while a voice or an instrument whose partials sit on a key's frequencies has
/// strong even ones too.
const HARMONIC: f32 = 0.1; // -10 dB
/// Keys 2, 6 and C have a column tone 4.3 % below twice their row tone; within
/// the frequency tolerance a voice or an instrument can put a partial and its
/// octave there, the second harmonic that cannot be measured directly (see
/// [`Window::second_harmonic`]). Tones this close to an exact octave are no
/// key; a real key at the ±1.5 % that must be accepted stays 1.2 % away.
const OCTAVE: f32 = 0.008;
/// Largest power ratio between the two halves of the window for either tone:
/// a steady tone has equal halves, a starting or stopping one does not.
const BALANCE: f32 = 2.0; // 3 dB

/// A key found in a window, with its tones' mean powers, frequency errors
/// (fractions of the nominal frequencies) and window sums (re, im).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub col: usize,
    pub row_power: f32,
    pub col_power: f32,
    pub row_error: f32,
    pub col_error: f32,
    pub row_phasor: (f32, f32),
    pub col_phasor: (f32, f32),
    /// Share of the window's energy the two tones carry.
    pub share: f32,
}

/// The last [`WINDOW_BLOCKS`] blocks, kept as what the tests need: sums of
/// consecutive block pairs (the window's halves), each block's energy, and each
/// block's power per tone. Adding one block updates them in a few vector
/// operations instead of re-adding the whole window every 4 ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Each block's correlations, by ring position.
    blocks: [[f32; 2 * TONES]; WINDOW_BLOCKS],
    /// `pairs[i]`: the block pushed at ring position `i` plus the one before
    /// it. The newest pair is the window's second half; the pair two positions
    /// back is its first.
    pairs: [[f32; 2 * TONES]; WINDOW_BLOCKS],
    /// The newest block's energy, and energies of block pairs as in `pairs`.
    /// (Summing a ring of four block energies read them with one wide load
    /// just after a narrow store, which the CPU cannot forward: a stall per block.)
    /// Integers, exact, so that they cost no vector loads and stores, the
    /// resource the detector runs short of first.
    last_energy: i64,
    pair_energy: [i64; WINDOW_BLOCKS],
    /// The blocks' samples, for the harmonic test of a window that holds a key.
    samples: [[i16; BLOCK]; WINDOW_BLOCKS],
    /// Ring position of the newest block.
    newest: u8,
}

impl Window {
    #[inline(always)]
    pub fn push(&mut self, block: Block, samples: &[i16]) {
        let previous = self.newest as usize % WINDOW_BLOCKS;
        let i = (previous + 1) % WINDOW_BLOCKS;
        for l in 0..2 * TONES {
            self.pairs[i][l] = self.blocks[previous][l] + block.z[l];
        }
        self.blocks[i] = block.z;
        self.pair_energy[i] = self.last_energy + block.energy;
        self.last_energy = block.energy;
        self.samples[i].copy_from_slice(samples);
        self.newest = i as u8;
    }

    /// The window's halves, oldest first.
    #[inline(always)]
    fn halves(&self) -> (&[f32; 2 * TONES], &[f32; 2 * TONES]) {
        let newest = self.newest as usize % WINDOW_BLOCKS;
        (&self.pairs[(newest + 2) % WINDOW_BLOCKS], &self.pairs[newest])
    }

    /// The whole window's energy (sum of squares).
    #[inline(always)]
    fn energy(&self) -> f32 {
        let newest = self.newest as usize % WINDOW_BLOCKS;
        (self.pair_energy[(newest + 2) % WINDOW_BLOCKS] + self.pair_energy[newest]) as f32
    }

    /// Mean power of the whole window.
    #[inline(always)]
    fn mean_power(&self) -> f32 {
        self.energy() / WINDOW
    }

    /// The key sounding steadily through the whole window, if any.
    #[inline(always)]
    pub fn classify(&self, thresholds: &Thresholds) -> Option<Hit> {
        let total = self.energy();
        if total < thresholds.min_energy {
            return None;
        }
        let energy = total / WINDOW;
        let (first, second) = self.halves();
        // |Z|² per tone, in the kernel's units: the mean power is this times
        // POWER_SCALE, a power of two, so scaling is exact and can wait for
        // the windows that pass the cheap test.
        let squared: [f32; TONES] = std::array::from_fn(|k| {
            let re = first[k] + second[k];
            let im = first[TONES + k] + second[TONES + k];
            re * re + im * im
        });
        // Cheap test first: most windows of speech and music end here. The
        // strongest tone of each group (rows 0..4, columns 4..8) by two
        // rounds of pairwise maxima over all eight: written as the plain
        // `max(max(..), max(..))` of each group, the detector's AVX2 loop
        // took 34.6 cycles per block in `llvm-mca -mcpu=znver3` against 26.8
        // in this shape, for the same result.
        let max = |a: f32, b: f32| if a > b { a } else { b };
        let pairs: [f32; TONES] = std::array::from_fn(|k| max(squared[k], squared[k ^ 1]));
        let groups: [f32; TONES] = std::array::from_fn(|k| max(pairs[k], pairs[k ^ 2]));
        // PURITY / 2 of the mean power, in |Z|² units, from the total: one
        // multiplication by a constant (scaling by WINDOW and POWER_SCALE,
        // powers of two, is exact, so it equals the test on mean powers).
        if groups[0] + groups[4] < PURITY * 0.5 / WINDOW / POWER_SCALE * total {
            return None;
        }
        let power = squared.map(|z| z * POWER_SCALE);
        let hit = examine(&Halves { z: *first }, &Halves { z: *second }, &power, energy, thresholds)?;
        (self.second_harmonic(hit.col) <= HARMONIC * hit.col_power).then_some(hit)
    }

    /// Mean power at twice column `col`'s frequency over the window: the
    /// window's samples, oldest first, correlated with [`HARMONICS`]. Only the
    /// column tone is tested: a row tone's second harmonic (1394 to 1882 Hz)
    /// lies within 100 Hz of a column frequency, too close for a 16 ms window
    /// to tell it from that tone's leakage, while a column tone's (2418 to
    /// 3266 Hz) is far from every key frequency. Integer products with no
    /// dependency between them: a Goertzel recurrence over the 128 samples
    /// was one chain of float operations, a tenth of the detector's time.
    #[inline(never)]
    fn second_harmonic(&self, col: usize) -> f32 {
        let [cos, sin] = &HARMONICS[col];
        let (mut re, mut im) = (0i64, 0i64);
        for b in 0..WINDOW_BLOCKS {
            let samples = &self.samples[(self.newest as usize + 1 + b) % WINDOW_BLOCKS];
            let at = b * BLOCK;
            // Each block's sum is below 2^31 (see the kernel's table scale), so
            // the i32 adds never wrap; they only spare debug builds' checks.
            let dot = |table: &[i16; WINDOW_BLOCKS * BLOCK]| {
                let products = samples.iter().zip(&table[at..at + BLOCK]).map(|(&x, &c)| x as i32 * c as i32);
                products.fold(0i32, i32::wrapping_add) as i64
            };
            re += dot(cos);
            im += dot(sin);
        }
        let (re, im) = (re as f32 / TABLE_SCALE, im as f32 / TABLE_SCALE);
        (re * re + im * im) * POWER_SCALE
    }

    /// Mean power of a row and a column tone over the window, block by block:
    /// insensitive to phase jumps, for telling whether a key already on still sounds.
    pub fn incoherent_power(&self, row: usize, col: usize) -> (f32, f32) {
        let mut sums = (0.0, 0.0);
        let col = 4 + col;
        for z in &self.blocks {
            sums.0 += z[row] * z[row] + z[TONES + row] * z[TONES + row];
            sums.1 += z[col] * z[col] + z[TONES + col] * z[TONES + col];
        }
        let scale = 2.0 / (BLOCK * BLOCK) as f32 / WINDOW_BLOCKS as f32;
        (sums.0 * scale, sums.1 * scale)
    }

    /// Share of the window's energy carried by the given tones' powers.
    pub fn share(&self, powers: f32) -> f32 {
        powers / self.mean_power().max(f32::MIN_POSITIVE)
    }
}

#[derive(Default)]
struct Halves {
    z: [f32; 2 * TONES],
}

impl Halves {
    /// Tone `k`'s sum over the whole window.
    fn sum(&self, second: &Halves, k: usize) -> (f32, f32) {
        (self.z[k] + second.z[k], self.z[TONES + k] + second.z[TONES + k])
    }

    /// Whether tone `k` has the same power in both halves of the window: a
    /// steady tone does, a starting or stopping one does not.
    fn balanced(&self, second: &Halves, k: usize) -> bool {
        let first_power = self.z[k] * self.z[k] + self.z[TONES + k] * self.z[TONES + k];
        let second_power = second.z[k] * second.z[k] + second.z[TONES + k] * second.z[TONES + k];
        first_power <= BALANCE * second_power && second_power <= BALANCE * first_power
    }

    /// The tone's power corrected for its frequency error, and that error as
    /// a fraction of the nominal frequency.
    fn true_power(&self, second: &Halves, k: usize, nominal_hz: f32, power: f32) -> (f32, f32) {
        let (a_re, a_im) = (self.z[k], self.z[TONES + k]);
        let (b_re, b_im) = (second.z[k], second.z[TONES + k]);
        // The phase advance from one half to the next is 2π·offset·HALF/rate.
        let cross_re = b_re * a_re + b_im * a_im;
        let cross_im = b_im * a_re - b_re * a_im;
        let offset_hz = cross_im.atan2(cross_re) * SAMPLE_RATE as f32 / (std::f32::consts::TAU * HALF);
        let error = offset_hz / nominal_hz;
        if error.abs() > FREQUENCY_TOLERANCE {
            // Beyond the main lobe the gain correction would blow up noise.
            return (power, error);
        }
        (power / window_gain(offset_hz), error)
    }
}

/// The full test of a window whose strongest tones might be a key.
#[inline(never)]
fn examine(first: &Halves, second: &Halves, power: &[f32; TONES], energy: f32, thresholds: &Thresholds) -> Option<Hit> {
    let row = strongest(&power[..4]);
    let col = 4 + strongest(&power[4..]);
    let peaked =
        |group: &[f32], best: usize| group.iter().enumerate().all(|(i, &p)| i == best || group[best] >= GROUP_PEAK * p);
    if !peaked(&power[..4], row) || !peaked(&power[4..], col - 4) {
        return None;
    }
    // Leakage from the stronger tone can unbalance the weaker one's halves,
    // so only the stronger tone says whether the key sounds steadily.
    let steadier = if power[row] >= power[col] { row } else { col };
    if !first.balanced(second, steadier) {
        return None;
    }
    let (row_power, row_error) = first.true_power(second, row, ROW_HZ[row] as f32, power[row]);
    let (col_power, col_error) = first.true_power(second, col, COL_HZ[col - 4] as f32, power[col]);
    let share = (row_power + col_power) / energy;
    let tolerance = if share >= CLEAN_SHARE { FREQUENCY_TOLERANCE } else { TIGHT_FREQUENCY_TOLERANCE };
    let on_frequency = row_error.abs() <= tolerance && col_error.abs() <= tolerance;
    let octave = (COL_HZ[col - 4] as f32 * (1.0 + col_error)) / (2.0 * ROW_HZ[row] as f32 * (1.0 + row_error));
    if (octave - 1.0).abs() < OCTAVE {
        return None;
    }
    let level_ok = row_power >= thresholds.min_power && col_power >= thresholds.min_power;
    let twist_ok =
        row_power <= thresholds.normal_twist * col_power && col_power <= thresholds.reverse_twist * row_power;
    (on_frequency && share >= PURITY && level_ok && twist_ok).then_some(Hit {
        row,
        col: col - 4,
        row_power,
        col_power,
        row_error,
        col_error,
        row_phasor: first.sum(second, row),
        col_phasor: first.sum(second, col),
        share,
    })
}

/// Power response of the rectangular window to a tone `offset_hz` from the bin centre.
fn window_gain(offset_hz: f32) -> f32 {
    let x = std::f32::consts::PI * offset_hz / SAMPLE_RATE as f32;
    if x.abs() < 1e-6 {
        return 1.0;
    }
    let dirichlet = (WINDOW * x).sin() / (WINDOW * x.sin());
    dirichlet * dirichlet
}

fn strongest(powers: &[f32]) -> usize {
    let mut best = 0;
    for (i, &p) in powers.iter().enumerate().skip(1) {
        if p > powers[best] {
            best = i;
        }
    }
    best
}

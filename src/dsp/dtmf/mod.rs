//! The in-band DTMF detector: a streaming, allocation-free state machine.
//!
//! Every 4 ms block is correlated with the eight DTMF frequencies (the SIMD
//! [`kernel`]); the last four blocks form a 16 ms window that is tested for a
//! single steady key ([`window`]): one dominant tone per group, each within
//! 2 % of nominal (measured from the phase advance between the window's
//! halves, which is far sharper than the bin width), level, twist, and share of
//! the total energy. A key is declared on after [`HITS_TO_START`] consecutive
//! windows agree (about 30 ms of tone) and the run of them puts both tones
//! within 1.6 % ([`run`]), and off after [`MISSES_TO_STOP`] consecutive
//! windows in which its tones have fallen away.

mod kernel;
mod run;
mod window;

pub use kernel::{BLOCK, BlockSums, KERNEL_ENV, Kernel, KernelError};

use crate::dsp::tone::{KEYPAD, SAMPLE_RATE, dbm0_to_power, power_to_dbm0};
use run::Run;
use window::{Hit, Phasors, Thresholds, WINDOW_BLOCKS, Window};

/// Samples in one analysis window.
const WINDOW_SAMPLES: u64 = (WINDOW_BLOCKS * BLOCK) as u64;

/// Consecutive agreeing windows that declare a key: 16 ms + 4 × 4 ms = 32 ms of
/// tone, between the 20 ms that must be ignored and the 40 ms that must count.
pub const HITS_TO_START: u8 = 5;
/// Windows without the key that a key not yet declared survives: speech over
/// a key breaks the run of agreeing windows now and then. A 20 ms tone still
/// gives at most three hits, so this does not let short tones through.
const PENDING_MISSES: u8 = 1;
/// Consecutive windows without the key's tones that end it. A window misses
/// only when at most ~2 ms of it carries the tones, so a 10 ms interruption
/// never ends a key and a 40 ms pause always does.
pub const MISSES_TO_STOP: u8 = 3;
/// Once on, a key's tones may fall this far below their level at onset (and
/// the window may be partly silent) before a window counts as a miss.
const SUSTAIN_DROP: f32 = 0.063; // -12 dB
/// Share of the window's energy the key's tones must keep while on.
const SUSTAIN_PURITY: f32 = 0.25;

/// Detector settings. Levels are per tone, with a full-scale sine at +3.14 dBm0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DtmfConfig {
    /// Quietest tone detected, in dBm0.
    pub min_level_dbm0: f32,
    /// Largest normal twist (high group below the low group) accepted, in dB.
    pub normal_twist_db: f32,
    /// Largest reverse twist (high group above the low group) accepted, in dB.
    pub reverse_twist_db: f32,
}

/// Twist is measured over 16 ms, with noise and speech around the tones; a key
/// exactly at the configured limit must still count, so the comparison allows
/// this much measurement error.
const TWIST_ALLOWANCE_DB: f32 = 1.5;

impl Default for DtmfConfig {
    fn default() -> Self {
        Self { min_level_dbm0: -45.0, normal_twist_db: 8.0, reverse_twist_db: 4.0 }
    }
}

impl DtmfConfig {
    fn thresholds(&self) -> Thresholds {
        let ratio = |db: f32| 10f32.powf((db + TWIST_ALLOWANCE_DB) / 10.0);
        let min_power = dbm0_to_power(self.min_level_dbm0 as f64) as f32;
        Thresholds {
            min_power,
            min_energy: min_power * WINDOW_SAMPLES as f32,
            normal_twist: ratio(self.normal_twist_db),
            reverse_twist: ratio(self.reverse_twist_db),
        }
    }
}

/// What the detector measured of a key when it declared it (the last window
/// of the run, and the run's long-baseline frequencies): the evidence an
/// operator audits a disputed verification or tunes detection with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyMeasurement {
    /// The row (low group) tone's level.
    pub low_dbm0: f32,
    /// The column (high group) tone's level.
    pub high_dbm0: f32,
    /// Frequency errors in percent of the nominal frequencies.
    pub low_error_pct: f32,
    pub high_error_pct: f32,
    /// Share of the window's energy the two tones carried (0 to 1).
    pub share: f32,
    /// How far the key was from being refused, in dB: the smaller of its
    /// tones' headroom above the minimum level and its twist's headroom below
    /// the configured limit. (The share is reported as it is: its limit, 0.9,
    /// is within half a dB of a pure key's 1.0, so in dB it would always be
    /// the smallest and say nothing.)
    pub margin_db: f32,
}

impl KeyMeasurement {
    /// Both tones together.
    pub fn level_dbm0(&self) -> f32 {
        10.0 * (10f32.powf(self.low_dbm0 / 10.0) + 10f32.powf(self.high_dbm0 / 10.0)).log10()
    }

    /// Low group level minus high group level: positive is normal twist
    /// (the high group weaker), negative reverse twist.
    pub fn twist_db(&self) -> f32 {
        self.low_dbm0 - self.high_dbm0
    }
}

/// A key going on or off, with the sample position (from the start of the
/// stream) at which the detector decided it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DtmfEvent {
    /// A key was recognised. `tone_start` is where its tone began: the start
    /// of the first window of the run that declared it, so `sample -
    /// tone_start` is the detection latency (about 32 ms for a clean tone).
    On { digit: char, sample: u64, tone_start: u64, measurement: KeyMeasurement },
    /// The key recognised last has ended.
    Off { digit: char, sample: u64 },
}

impl DtmfEvent {
    /// The sample position converted to milliseconds.
    pub fn millis(&self) -> f64 {
        let (DtmfEvent::On { sample, .. } | DtmfEvent::Off { sample, .. }) = *self;
        sample as f64 * 1000.0 / SAMPLE_RATE as f64
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle,
    /// `since`: the stream position where the first agreeing window began.
    Pending {
        row: u8,
        col: u8,
        misses: u8,
        since: u64,
        run: Run,
    },
    On {
        row: u8,
        col: u8,
        misses: u8,
        row_power: f32,
        col_power: f32,
    },
}

/// One channel's detector. About 450 bytes; create one per call.
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    config: DtmfConfig,
    thresholds: Thresholds,
    /// Energy below which a block is not correlated: see [`QUIET_BELOW_MIN_DB`].
    quiet: i64,
    kernel: Kernel,
    phasors: Phasors,
    window: Window,
    state: State,
    pending: [i16; BLOCK],
    pending_len: u8,
    position: u64,
}

impl DtmfDetector {
    /// A detector using the kernel [`Kernel::select`] chooses: the fastest for
    /// this CPU unless `POUND_DSP_KERNEL` names another.
    ///
    /// # Panics
    /// If `POUND_DSP_KERNEL` names an unknown kernel or one this CPU cannot
    /// run. The binary checks that at startup, before any detector exists.
    pub fn new(config: &DtmfConfig) -> Self {
        Self::with_kernel(config, Kernel::select().unwrap_or_else(|e| panic!("{e}")))
    }

    /// A detector using a given kernel; all kernels give identical results.
    pub fn with_kernel(config: &DtmfConfig, kernel: Kernel) -> Self {
        let thresholds = config.thresholds();
        Self {
            config: *config,
            quiet: quiet_block_energy(&thresholds),
            thresholds,
            kernel,
            phasors: Phasors::default(),
            window: Window::default(),
            state: State::Idle,
            pending: [0; BLOCK],
            pending_len: 0,
            position: 0,
        }
    }

    /// Samples consumed so far.
    pub fn position(&self) -> u64 {
        self.position + self.pending_len as u64
    }

    /// Feeds 8 kHz samples, any number at a time; `on_event` receives each key
    /// going on or off, in order.
    pub fn process(&mut self, samples: &[i16], mut on_event: impl FnMut(DtmfEvent)) {
        match self.kernel {
            Kernel::Portable => self.run(samples, &mut on_event, kernel::portable),
            // SAFETY: a detector holds `Avx2` or `Avx512Vnni` only if
            // `Kernel::available()` found the CPU features these functions enable.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { self.run_avx2(samples, &mut on_event) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => unsafe { self.run_avx512vnni(samples, &mut on_event) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => self.run(samples, &mut on_event, kernel::portable),
        }
    }

    // The whole per-block pipeline is compiled once per instruction set, so
    // the floating-point window arithmetic uses the wide registers too. Float
    // operations are never reassociated or fused, so results stay identical.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx2(&mut self, samples: &[i16], on_event: &mut impl FnMut(DtmfEvent)) {
        self.run(samples, on_event, |t, b, q| kernel::x86::avx2(t, b, q));
    }

    // The window arithmetic compiled for AVX2 here too: compiled with
    // AVX-512 enabled it was about 5 % slower on an AMD EPYC (Zen 4), and it
    // gains nothing from wider registers. The kernel is called out of line.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn run_avx512vnni(&mut self, samples: &[i16], on_event: &mut impl FnMut(DtmfEvent)) {
        // SAFETY: as in `process`: the CPU has every feature the kernel enables.
        self.run(samples, on_event, |t, b, q| unsafe { kernel::x86::avx512vnni(t, b, q) });
    }

    #[inline(always)]
    fn run(
        &mut self,
        mut samples: &[i16],
        on_event: &mut impl FnMut(DtmfEvent),
        block_sums: impl Fn(&kernel::Table, &[i16], i64) -> BlockSums,
    ) {
        let table = kernel::table();
        let quiet = self.quiet;
        let references = window::references();
        if self.pending_len > 0 {
            let have = self.pending_len as usize;
            let take = (BLOCK - have).min(samples.len());
            self.pending[have..have + take].copy_from_slice(&samples[..take]);
            self.pending_len += take as u8;
            samples = &samples[take..];
            if (self.pending_len as usize) < BLOCK {
                return;
            }
            let block = self.pending;
            self.pending_len = 0;
            self.on_block(&block, references, &block_sums(table, &block, quiet), on_event);
        }
        // The next block's sums are computed before this block's window is
        // tested: the test is one long chain of dependent float operations,
        // and with the next kernel's independent work already issued ahead
        // of it the CPU overlaps the two (6-9 % faster on an AMD EPYC).
        let mut blocks = samples.chunks_exact(BLOCK);
        if let Some(first) = blocks.next() {
            let mut current = (first, block_sums(table, first, quiet));
            for block in &mut blocks {
                let next = (block, block_sums(table, block, quiet));
                self.on_block(current.0, references, &current.1, on_event);
                current = next;
            }
            self.on_block(current.0, references, &current.1, on_event);
        }
        let tail = blocks.remainder();
        self.pending[..tail.len()].copy_from_slice(tail);
        self.pending_len = tail.len() as u8;
    }

    /// Ends the stream: a key still on is reported off at the current position.
    pub fn finish(&mut self, mut on_event: impl FnMut(DtmfEvent)) {
        if let State::On { row, col, .. } = self.state {
            on_event(DtmfEvent::Off { digit: digit(row, col), sample: self.position() });
        }
        self.state = State::Idle;
    }

    #[inline(always)]
    fn on_block(
        &mut self,
        samples: &[i16],
        references: &window::References,
        sums: &BlockSums,
        on_event: &mut impl FnMut(DtmfEvent),
    ) {
        self.window.push(self.phasors.align(references, sums), samples);
        self.position += BLOCK as u64;
        // The first blocks of a stream do not fill a window yet.
        if self.position < WINDOW_SAMPLES {
            return;
        }
        let hit = self.window.classify(&self.thresholds);
        if hit.is_none() && matches!(self.state, State::Idle) {
            // Most windows: nothing sounds and nothing did. Returning here
            // spares rewriting the whole state every 4 ms.
            return;
        }
        self.state = match (self.state, hit) {
            (State::On { row, col, misses, row_power, col_power }, hit) => {
                if self.sustains(row, col, row_power, col_power, hit) {
                    State::On { row, col, misses: 0, row_power, col_power }
                } else if misses + 1 >= MISSES_TO_STOP {
                    on_event(DtmfEvent::Off { digit: digit(row, col), sample: self.position });
                    State::Idle
                } else {
                    State::On { row, col, misses: misses + 1, row_power, col_power }
                }
            }
            (State::Pending { row, col, misses, since, mut run }, None)
                if misses < PENDING_MISSES && run.has_room() =>
            {
                run.miss();
                State::Pending { row, col, misses: misses + 1, since, run }
            }
            (_, None) => State::Idle,
            (State::Pending { row, col, misses, since, mut run }, Some(h))
                if (h.row, h.col) == (row as usize, col as usize) && run.has_room() =>
            {
                run.add(&h);
                if run.hits() >= HITS_TO_START && run.on_frequency(&h) {
                    let measurement = self.measure(&h, &run);
                    on_event(DtmfEvent::On {
                        digit: digit(row, col),
                        sample: self.position,
                        tone_start: since,
                        measurement,
                    });
                    State::On { row, col, misses: 0, row_power: h.row_power, col_power: h.col_power }
                } else {
                    State::Pending { row, col, misses, since, run }
                }
            }
            (_, Some(h)) => State::Pending {
                row: h.row as u8,
                col: h.col as u8,
                misses: 0,
                since: self.position.saturating_sub(WINDOW_SAMPLES),
                run: Run::start(&h),
            },
        };
    }

    /// The evidence of a key being declared on `hit`, the last of `run`.
    #[cold]
    fn measure(&self, hit: &Hit, run: &Run) -> KeyMeasurement {
        let [row_error, col_error] = run.frequency_errors(hit).unwrap_or([hit.row_error, hit.col_error]);
        let low_dbm0 = power_to_dbm0(hit.row_power as f64) as f32;
        let high_dbm0 = power_to_dbm0(hit.col_power as f64) as f32;
        let twist = low_dbm0 - high_dbm0;
        let allowance = |limit_db: f32| limit_db + TWIST_ALLOWANCE_DB;
        let twist_headroom = if twist >= 0.0 {
            allowance(self.config.normal_twist_db) - twist
        } else {
            allowance(self.config.reverse_twist_db) + twist
        };
        let level_headroom = low_dbm0.min(high_dbm0) - self.config.min_level_dbm0;
        KeyMeasurement {
            low_dbm0,
            high_dbm0,
            low_error_pct: 100.0 * row_error,
            high_error_pct: 100.0 * col_error,
            share: hit.share,
            margin_db: level_headroom.min(twist_headroom),
        }
    }

    /// Whether the key that is on still sounds in the current window.
    fn sustains(&self, row: u8, col: u8, row_power: f32, col_power: f32, hit: Option<Hit>) -> bool {
        if let Some(h) = hit {
            return (h.row, h.col) == (row as usize, col as usize);
        }
        let (r, c) = self.window.incoherent_power(row as usize, col as usize);
        let floor = self.thresholds.min_power * 0.25;
        r >= (row_power * SUSTAIN_DROP).max(floor)
            && c >= (col_power * SUSTAIN_DROP).max(floor)
            && self.window.share(r + c) >= SUSTAIN_PURITY
    }
}

/// A block whose mean power is this far below the quietest tone detected is
/// not correlated with the key frequencies (its sums count as zero): whatever
/// it holds moves a window's tone powers by less than the measurement itself
/// errs, so it can neither make nor break a key, and pauses in speech, line
/// noise (about -65 dBm0 at the default -45 dBm0) and silence-suppressed gaps
/// cost only their energy.
const QUIET_BELOW_MIN_DB: f32 = 20.0;

fn quiet_block_energy(thresholds: &Thresholds) -> i64 {
    let mean_power = thresholds.min_power / 10f32.powf(QUIET_BELOW_MIN_DB / 10.0);
    (mean_power * BLOCK as f32) as i64
}

fn digit(row: u8, col: u8) -> char {
    KEYPAD[row as usize][col as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::tone::ToneGenerator;

    fn events(samples: &[i16]) -> Vec<DtmfEvent> {
        let mut detector = DtmfDetector::new(&DtmfConfig::default());
        let mut events = Vec::new();
        detector.process(samples, |e| events.push(e));
        detector.finish(|e| events.push(e));
        events
    }

    fn key(key: char, ms: usize) -> Vec<i16> {
        let mut samples = vec![0i16; ms * 8];
        ToneGenerator::dtmf(key, -10.0).unwrap().fill(&mut samples);
        samples
    }

    #[test]
    fn one_key_gives_one_on_and_one_off() {
        let mut audio = vec![0i16; 800];
        audio.extend(key('#', 100));
        audio.extend(vec![0i16; 800]);
        let found = events(&audio);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(matches!(found[0], DtmfEvent::On { digit: '#', .. }));
        assert!(matches!(found[1], DtmfEvent::Off { digit: '#', .. }));
    }

    #[test]
    fn results_do_not_depend_on_how_the_input_is_split() {
        let mut audio = vec![0i16; 333];
        for k in ['1', '5', '9', '#'] {
            audio.extend(key(k, 60));
            audio.extend(vec![0i16; 400]);
        }
        let whole = events(&audio);
        assert_eq!(whole.len(), 8);
        for chunk in [1, 7, 31, 33, 160, 1000] {
            let mut detector = DtmfDetector::new(&DtmfConfig::default());
            let mut split = Vec::new();
            for piece in audio.chunks(chunk) {
                detector.process(piece, |e| split.push(e));
            }
            detector.finish(|e| split.push(e));
            assert_eq!(split, whole, "chunk {chunk}");
        }
    }

    #[test]
    fn every_kernel_reports_the_same_events() {
        let mut audio = Vec::new();
        let mut noise = 12345u32;
        for (i, k) in "123A456B789C*0#D".chars().enumerate() {
            audio.extend(key(k, 40 + 10 * i));
            audio.extend((0..300 + 37 * i).map(|_| {
                noise = noise.wrapping_mul(1664525).wrapping_add(1013904223);
                (noise >> 20) as i16 - 2048
            }));
        }
        let run = |kernel| {
            let mut detector = DtmfDetector::with_kernel(&DtmfConfig::default(), kernel);
            let mut events = Vec::new();
            detector.process(&audio, |e| events.push(e));
            events
        };
        let expected = run(Kernel::Portable);
        assert_eq!(expected.len(), 32);
        for kernel in Kernel::available() {
            assert_eq!(run(kernel), expected, "{}", kernel.name());
        }
    }

    #[test]
    fn the_tone_start_is_where_the_tone_began_not_where_it_was_decided() {
        for lead_ms in [1000, 1003, 2500] {
            let mut audio = vec![0i16; lead_ms * 8];
            audio.extend(key('#', 100));
            let on = events(&audio).into_iter().find(|e| matches!(e, DtmfEvent::On { .. })).unwrap();
            let DtmfEvent::On { sample, tone_start, .. } = on else { unreachable!() };
            let began = (lead_ms * 8) as i64;
            // Within one 4 ms block of the true start, whatever the alignment.
            assert!((tone_start as i64 - began).abs() <= BLOCK as i64, "{lead_ms} ms: tone_start {tone_start}");
            let latency_ms = (sample - tone_start) as f64 / 8.0;
            assert!((28.0..=40.0).contains(&latency_ms), "{lead_ms} ms: latency {latency_ms} ms");
        }
    }

    /// Two steady tones, 500 ms, after a lead of `lead` samples.
    fn tones(low_hz: f64, high_hz: f64, lead: usize) -> Vec<i16> {
        let mut samples = vec![0i16; lead + 4000];
        ToneGenerator::new(&[(low_hz, -10.0), (high_hz, -10.0)]).fill(&mut samples[lead..]);
        samples
    }

    /// The music that made most of the corpus's false digits held 783 Hz and
    /// 1476 Hz: a `6` with its row tone 1.7 % high, which one window alone
    /// cannot tell from the 1.5 % that must be accepted.
    #[test]
    fn a_tone_1_7_percent_off_is_no_key_at_any_alignment_while_1_5_percent_is() {
        for lead in 0..BLOCK {
            let digits = |audio: &[i16]| events(audio).iter().filter(|e| matches!(e, DtmfEvent::On { .. })).count();
            assert_eq!(digits(&tones(783.0, 1476.0, lead)), 0, "783 Hz, lead {lead}");
            assert_eq!(digits(&tones(770.0 * 0.983, 1477.0, lead)), 0, "-1.7 %, lead {lead}");
            assert_eq!(digits(&tones(770.0 * 1.015, 1477.0, lead)), 1, "+1.5 %, lead {lead}");
            assert_eq!(digits(&tones(770.0, 1477.0 * 0.985, lead)), 1, "-1.5 %, lead {lead}");
        }
    }

    /// A column tone with an even harmonic is an instrument or a voice, not a
    /// key: rejected when the harmonic is above -10 dB of the tone, whatever
    /// the block alignment, and accepted below it. -8 dB is weak enough that
    /// the share of the energy in the key's tones alone would let it through.
    #[test]
    fn a_column_tone_with_a_second_harmonic_is_no_key_at_any_alignment() {
        let keyed = |harmonic_db: f64, lead: usize| {
            let mut samples = vec![0i16; lead + 4000];
            ToneGenerator::new(&[(941.0, -10.0), (1477.0, -10.0), (2.0 * 1477.0, -10.0 + harmonic_db)])
                .fill(&mut samples[lead..]);
            events(&samples).iter().filter(|e| matches!(e, DtmfEvent::On { digit: '#', .. })).count()
        };
        for lead in 0..BLOCK {
            assert_eq!(keyed(-8.0, lead), 0, "harmonic at -8 dB, lead {lead}");
            assert_eq!(keyed(-13.0, lead), 1, "harmonic at -13 dB, lead {lead}");
        }
    }

    /// The evidence recorded for a key is what was sent: levels, twist and
    /// frequency errors, whatever the block alignment.
    #[test]
    fn a_key_is_measured_at_its_true_levels_and_frequencies() {
        for lead in 0..BLOCK {
            let mut samples = vec![0i16; lead + 1600];
            ToneGenerator::new(&[(770.0 * 1.01, -12.0), (1336.0 * 0.992, -15.0)]).fill(&mut samples[lead..]);
            let on = events(&samples).into_iter().find_map(|e| match e {
                DtmfEvent::On { digit, measurement, .. } => Some((digit, measurement)),
                DtmfEvent::Off { .. } => None,
            });
            let (digit, m) = on.unwrap_or_else(|| panic!("lead {lead}: no key"));
            assert_eq!(digit, '5');
            let close = |got: f32, want: f32, within: f32| (got - want).abs() <= within;
            assert!(close(m.low_dbm0, -12.0, 0.5) && close(m.high_dbm0, -15.0, 0.5), "lead {lead}: {m:?}");
            assert!(close(m.twist_db(), 3.0, 0.5), "lead {lead}: {m:?}");
            assert!(close(m.level_dbm0(), -10.24, 0.5), "lead {lead}: {m:?}");
            assert!(close(m.low_error_pct, 1.0, 0.15) && close(m.high_error_pct, -0.8, 0.15), "lead {lead}: {m:?}");
            // The nearest limit is the twist: 3 dB of the 8 + 1.5 allowed.
            assert!(close(m.margin_db, 6.5, 0.6), "lead {lead}: {m:?}");
            assert!(m.share > window::MIN_SHARE, "lead {lead}: {m:?}");
        }
    }

    #[test]
    fn channel_state_is_small() {
        assert!(std::mem::size_of::<DtmfDetector>() <= 1024, "{}", std::mem::size_of::<DtmfDetector>());
    }
}

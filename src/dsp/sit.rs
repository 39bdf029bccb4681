//! Special Information Tones (ITU-T E.180, Telcordia GR-1162): three tone
//! segments before a network announcement. The first two segments' frequency
//! (low or high) and length (short 274 ms or long 380 ms) say why the call
//! failed; the third is always 1776.7 Hz.

use crate::dsp::steady::{Block, RunTracker, SAME_TONE_HZ, ToneRun};

const FIRST: [f64; 2] = [913.8, 985.2];
const SECOND: [f64; 2] = [1370.6, 1428.5];
const THIRD: f64 = 1776.7;
/// Between the short (274 ms) and the long (380 ms) segment; a run loses up
/// to two blocks at its edges, so the middle is taken lower.
const LONG_MS: u32 = 300;
/// A segment shorter than this is no SIT segment (274 ms less both edge blocks, less 5 %).
const MIN_MS: u32 = 200;
/// The third segment is recognised once it has lasted this long.
const THIRD_MS: u32 = 100;
/// A run this short is an artefact of a segment change, not a segment.
const MIN_RUN_BLOCKS: u32 = 3;
/// Blocks between segments at most: the block straddling the change holds
/// two tones, and E.180 allows up to 30 ms of silence.
const MAX_GAP_BLOCKS: u32 = 3;

/// What the tones say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SitClass {
    /// Intercept: the number is not in service (IC).
    Intercept,
    /// Vacant code: no such number (VC).
    VacantCode,
    /// No circuit: the network found no way through (NC).
    NoCircuit,
    /// Reorder: equipment irregularity, the network is congested (RO).
    Reorder,
    /// A combination the standard reserves ("ineffective other", IO).
    Reserved,
}

impl SitClass {
    /// The class from the first two segments: whether each used its high
    /// frequency and whether each was long.
    fn of(high: [bool; 2], long: [bool; 2]) -> SitClass {
        match (high, long) {
            ([false, false], [false, false]) => SitClass::Intercept,
            ([true, false], [true, false]) => SitClass::VacantCode,
            ([true, true], [true, true]) | ([false, false], [true, true]) => SitClass::NoCircuit,
            ([false, true], [false, true]) | ([true, false], [false, true]) => SitClass::Reorder,
            _ => SitClass::Reserved,
        }
    }

    /// The code telephony uses for the class.
    pub fn code(self) -> &'static str {
        match self {
            SitClass::Intercept => "IC",
            SitClass::VacantCode => "VC",
            SitClass::NoCircuit => "NC",
            SitClass::Reorder => "RO",
            SitClass::Reserved => "IO",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SitClass::Intercept => "intercept",
            SitClass::VacantCode => "vacant code",
            SitClass::NoCircuit => "no circuit",
            SitClass::Reorder => "reorder",
            SitClass::Reserved => "ineffective other",
        }
    }

    /// Whether the number itself is wrong (intercept, vacant code), rather
    /// than the network unable to reach it now.
    pub fn number_is_invalid(self) -> bool {
        matches!(self, SitClass::Intercept | SitClass::VacantCode)
    }
}

/// Which of `choices` `hz` is, if any.
fn which(choices: [f64; 2], hz: f64) -> Option<bool> {
    choices.iter().position(|&c| (hz - c).abs() < SAME_TONE_HZ).map(|i| i == 1)
}

/// Finds a SIT in a stream of blocks.
#[derive(Debug, Clone, Default)]
pub struct SitDetector {
    runs: RunTracker,
    /// The last two finished runs, each with the blocks without a tone before it.
    first: Option<(ToneRun, u32)>,
    second: Option<(ToneRun, u32)>,
    /// Blocks without a tone before the current run.
    current_gap: u32,
    /// Blocks without a tone since the last run ended.
    idle: u32,
    found: bool,
}

impl SitDetector {
    /// Takes the next block; the class once the third segment is heard (once per stream).
    pub fn push(&mut self, block: Block) -> Option<SitClass> {
        if self.found {
            return None;
        }
        match self.runs.push(block) {
            // The block straddling two segments can pass for a tone between
            // them: it is part of the gap, not a segment.
            Some(ended) if ended.blocks < MIN_RUN_BLOCKS => self.idle = self.current_gap + ended.blocks,
            Some(ended) => {
                self.first = self.second.take();
                self.second = Some((ended, self.current_gap));
                self.idle = 0;
            }
            None => {}
        }
        match self.runs.current() {
            Some(run) if run.blocks == 1 => self.current_gap = self.idle,
            Some(_) => {}
            None => self.idle = self.idle.saturating_add(1),
        }
        self.runs.current().filter(|run| (run.hz - THIRD).abs() < SAME_TONE_HZ && run.ms() >= THIRD_MS)?;
        let (Some((first, _)), Some((second, second_gap))) = (self.first, self.second) else { return None };
        if self.current_gap > MAX_GAP_BLOCKS || second_gap > MAX_GAP_BLOCKS {
            return None;
        }
        if first.ms() < MIN_MS || second.ms() < MIN_MS {
            return None;
        }
        let high = [which(FIRST, first.hz)?, which(SECOND, second.hz)?];
        self.found = true;
        Some(SitClass::of(high, [first.ms() >= LONG_MS, second.ms() >= LONG_MS]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::steady::BlockAnalyser;
    use crate::dsp::steady::tests::{through_g711, tone};

    /// A SIT of the given segments, `offset` samples of silence before it,
    /// then an announcement stand-in (noise).
    pub(crate) fn sit(first: (f64, usize), second: (f64, usize), offset: usize) -> Vec<i16> {
        let mut audio = vec![0; offset];
        audio.extend(tone(&[first.0], -24.0, first.1));
        audio.extend(tone(&[second.0], -24.0, second.1));
        audio.extend(tone(&[THIRD], -24.0, 380));
        audio.extend(vec![0; 1600]);
        audio
    }

    fn detect(audio: &[i16]) -> Vec<SitClass> {
        let (mut analyser, mut detector, mut found) = (BlockAnalyser::default(), SitDetector::default(), Vec::new());
        analyser.process(&through_g711(audio), |block| found.extend(detector.push(block)));
        found
    }

    #[test]
    fn every_class_at_several_alignments() {
        let (short, long) = (274, 380);
        let cases = [
            ((913.8, short), (1370.6, short), SitClass::Intercept),
            ((985.2, long), (1370.6, short), SitClass::VacantCode),
            ((985.2, long), (1428.5, long), SitClass::NoCircuit),
            ((913.8, long), (1370.6, long), SitClass::NoCircuit),
            ((913.8, short), (1428.5, long), SitClass::Reorder),
            ((985.2, short), (1370.6, long), SitClass::Reorder),
            ((985.2, short), (1428.5, short), SitClass::Reserved),
        ];
        for (first, second, class) in cases {
            for offset in [0, 1, 37, 80, 159] {
                assert_eq!(detect(&sit(first, second, offset)), [class], "{first:?} {second:?} at {offset}");
            }
        }
    }

    #[test]
    fn the_third_tone_alone_or_other_tones_are_no_sit() {
        let mut audio = tone(&[THIRD], -24.0, 1000);
        assert!(detect(&audio).is_empty());
        audio = tone(&[440.0], -20.0, 300);
        audio.extend(tone(&[1000.0], -20.0, 300));
        audio.extend(tone(&[THIRD], -20.0, 400));
        assert!(detect(&audio).is_empty(), "wrong first two frequencies");
        // A gap of half a second breaks the sequence.
        let mut audio = tone(&[913.8], -24.0, 274);
        audio.extend(vec![0; 4000]);
        audio.extend(tone(&[1370.6], -24.0, 274));
        audio.extend(tone(&[THIRD], -24.0, 380));
        assert!(detect(&audio).is_empty());
    }
}

//! The in-band detector's conformance suite: every condition of the
//! requirements table, for every key, through every codec, generated
//! deterministically, and each case run at several alignments to the
//! detector's 32-sample blocks ([`SHIFTS`] samples of extra leading silence, on
//! top of a lead that already varies by 3-sample steps from case to case).
//!
//! `POUND_REF_DETECTOR=../shared/ref/spandsp_detect cargo test --release --test
//! conformance -- --ignored --nocapture` runs the same cases through a reference
//! detector speaking `pound dtmf`'s protocol and prints both scores side by side.

mod common;

use std::collections::BTreeMap;

use common::*;
use pound::dsp::dtmf::DtmfConfig;
use pound::dsp::tone::KEYS;

const LEAD_MS: f64 = 100.0;
/// The row of keys over speech exactly as loud as them: the one row that may
/// miss a few (at most [`SPEECH_AS_LOUD_MISSES`]), because a detector that
/// caught every one of them would also take the loudest speech for keys.
const SPEECH_AS_LOUD: &str = "speech as loud";
const SPEECH_AS_LOUD_MISSES: f64 = 0.05;
/// Extra leading samples each case is also run with: with the varying lead,
/// tones start at every phase of the block.
const SHIFTS: [usize; 3] = [0, 11, 22];
const TAIL_MS: f64 = 200.0;

/// One generated condition and what a correct detector reports for it.
struct Case {
    /// The requirements row, e.g. "frequency" or "reject: level".
    row: &'static str,
    name: String,
    audio: Vec<i16>,
    expected: Vec<char>,
    press_starts: Vec<usize>,
}

fn single(press: Press) -> Signal {
    lead(&press).press(press).gap(TAIL_MS)
}

/// Leading silence, varied by a few samples from case to case so that tones
/// start at every position relative to the detector's 4 ms blocks.
fn lead(press: &Press) -> Signal {
    let variety = (press.key as u32 * 7 + press.duration_ms as u32 + (press.low_dbm0 * -3.0) as u32) % 11;
    Signal::silence(LEAD_MS + variety as f64 * 0.375)
}

fn speech_clips() -> Vec<Vec<f64>> {
    let clips: Vec<Vec<f64>> =
        fixture_files("speech").iter().map(|p| load(p).into_iter().map(f64::from).collect()).collect();
    assert!(clips.len() >= 4, "fixtures/audio/speech holds {} clips", clips.len());
    clips
}

/// Every must-detect and must-reject condition for one key, before the codec.
fn conditions(key: char, speech: &[Vec<f64>]) -> Vec<(&'static str, String, Signal, Vec<char>)> {
    let mut out = Vec::new();
    let base = Press::new(key);
    let once = vec![key];
    for (low, high) in
        [(1.5, 0.0), (-1.5, 0.0), (0.0, 1.5), (0.0, -1.5), (1.5, 1.5), (1.5, -1.5), (-1.5, 1.5), (-1.5, -1.5)]
    {
        out.push(("frequency", format!("low {low:+}% high {high:+}%"), single(base.errors(low, high)), once.clone()));
    }
    for dbm0 in [0.0, -5.0, -10.0, -15.0, -20.0, -25.0, -30.0, -35.0, -39.0, -42.0] {
        out.push(("level", format!("{dbm0} dBm0"), single(base.level(dbm0)), once.clone()));
    }
    for reference in [-3.0, -10.0, -17.0] {
        for (low, high) in [(0.0, -8.0), (0.0, -4.0), (-4.0, 0.0), (0.0, 0.0)] {
            let press = base.levels(reference + low, reference + high);
            out.push((
                "twist",
                format!("low {} high {} dBm0", reference + low, reference + high),
                single(press),
                once.clone(),
            ));
        }
    }
    for duration in [40.0, 45.0, 50.0, 70.0, 100.0, 1000.0] {
        out.push(("duration", format!("{duration} ms"), single(base.duration(duration)), once.clone()));
    }
    for gap in [40.0, 50.0, 100.0] {
        let tone = base.duration(50.0);
        let signal = lead(&tone).press(tone).gap(gap).press(tone).gap(TAIL_MS);
        out.push(("pauses", format!("two presses {gap} ms apart"), signal, vec![key, key]));
    }
    for (gap, phases) in [(10.0, [0.3, 1.1]), (10.0, [2.9, 4.0]), (5.0, [1.0, 2.0]), (2.0, [3.1, 0.2])] {
        let tone = base.duration(80.0);
        let signal = lead(&tone).press(tone).gap(gap).press_with_phases(tone, phases).gap(TAIL_MS);
        out.push(("pauses", format!("{gap} ms interruption"), signal, once.clone()));
    }
    for (snr, dbm0, seed) in [(15.0, -10.0, 1), (15.0, -20.0, 2), (20.0, -15.0, 3), (30.0, -25.0, 4)] {
        let press = base.level(dbm0);
        let signal = single(press);
        let noise = white_noise(signal.samples.len(), seed + key as u64 * 10);
        let noise_power = press.power() / 10f64.powf(snr / 10.0);
        out.push((
            "noise",
            format!("{snr} dB SNR at {dbm0} dBm0"),
            signal.with_background(&noise, noise_power),
            once.clone(),
        ));
    }
    for (i, clip) in speech.iter().enumerate() {
        for above_db in [0.0, 6.0] {
            let press = base.level(-15.0);
            let signal = Signal::silence(600.0 + 150.0 * i as f64).press(press).gap(TAIL_MS);
            let speech_power = press.power() / 10f64.powf(above_db / 10.0);
            let name = format!("speech clip {i}, tone {above_db} dB above it");
            let row = if above_db == 0.0 { SPEECH_AS_LOUD } else { "speech" };
            out.push((row, name, signal.with_background(clip, speech_power), once.clone()));
        }
    }
    for (low, high) in [
        (3.5, 0.0),
        (-3.5, 0.0),
        (0.0, 3.5),
        (0.0, -3.5),
        (3.5, 3.5),
        (-3.5, -3.5),
        (5.0, 0.0),
        (0.0, -5.0),
        (-6.0, 0.0),
        (0.0, 6.0),
    ] {
        out.push(("reject: frequency", format!("low {low:+}% high {high:+}%"), single(base.errors(low, high)), vec![]));
    }
    for dbm0 in [-55.0, -60.0] {
        out.push(("reject: level", format!("{dbm0} dBm0"), single(base.level(dbm0)), vec![]));
    }
    for duration in [20.0, 15.0, 10.0, 5.0] {
        out.push(("reject: duration", format!("{duration} ms"), single(base.duration(duration)), vec![]));
    }
    out
}

fn cases() -> Vec<Case> {
    let speech = speech_clips();
    let mut cases = Vec::new();
    for key in KEYS {
        for (row, name, signal, expected) in conditions(key, &speech) {
            for codec in CODECS {
                cases.push(Case {
                    row,
                    name: format!("key {key} {} via {}", name, codec.name()),
                    audio: signal.quantise(codec),
                    expected: expected.clone(),
                    press_starts: signal.press_starts.clone(),
                });
            }
        }
    }
    cases
}

/// Per requirements row: (cases, passed), and the failures' names.
struct Score {
    rows: BTreeMap<&'static str, (usize, usize)>,
    failures: Vec<String>,
    /// Delay from the first press's start to the digit's report, per row.
    latencies_ms: BTreeMap<&'static str, Vec<f64>>,
}

impl Score {
    fn latencies(&self, rows: impl Fn(&str) -> bool) -> Vec<f64> {
        self.latencies_ms.iter().filter(|(row, _)| rows(row)).flat_map(|(_, l)| l.iter().copied()).collect()
    }
}

fn score(cases: &[Case], mut detector: impl FnMut(&[i16]) -> Vec<(char, u64)>) -> Score {
    let mut score = Score { rows: BTreeMap::new(), failures: Vec::new(), latencies_ms: BTreeMap::new() };
    for case in cases {
        for shift in SHIFTS {
            let mut audio = vec![0i16; shift];
            audio.extend_from_slice(&case.audio);
            let found = detector(&audio);
            let digits: Vec<char> = found.iter().map(|(d, _)| *d).collect();
            let entry = score.rows.entry(case.row).or_default();
            entry.0 += 1;
            if digits == case.expected {
                entry.1 += 1;
                if let (Some((_, on)), Some(start)) = (found.first(), case.press_starts.first()) {
                    let latency = (*on as f64 - (*start + shift) as f64) / 8.0;
                    score.latencies_ms.entry(case.row).or_default().push(latency);
                }
            } else {
                score.failures.push(format!(
                    "{} +{shift} samples [{}]: expected {:?}, got {:?}",
                    case.name, case.row, case.expected, digits
                ));
            }
        }
    }
    score
}

fn pound_detector(samples: &[i16]) -> Vec<(char, u64)> {
    detect(samples, &DtmfConfig::default())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[test]
fn every_condition_for_every_key_is_handled() {
    let cases = cases();
    let score = score(&cases, pound_detector);
    println!("{} cases, each at {} block alignments", cases.len(), SHIFTS.len());
    for (row, (total, passed)) in &score.rows {
        println!("{row:>20}: {passed}/{total}");
    }
    assert!(cases.len() > 2000, "{} cases", cases.len());
    let (total, passed) = score.rows[SPEECH_AS_LOUD];
    assert!(passed as f64 >= (1.0 - SPEECH_AS_LOUD_MISSES) * total as f64, "{SPEECH_AS_LOUD}: {passed}/{total}");
    let failures: Vec<&String> = score.failures.iter().filter(|f| !f.contains(SPEECH_AS_LOUD)).collect();
    assert!(failures.is_empty(), "{} failures:\n{failures:#?}", failures.len());
}

/// Latency is judged where the tone is heard on its own or in noise; over
/// speech as loud as the tone the detector waits for the windows the speech
/// leaves clear, and that latency is printed, not judged.
#[test]
fn digits_are_reported_within_45_ms_and_35_ms_at_the_median() {
    let cases = cases();
    let score = score(&cases, pound_detector);
    let mut latencies = score.latencies(|row| !row.starts_with("speech"));
    let worst = latencies.iter().copied().fold(0.0, f64::max);
    let middle = median(&mut latencies);
    println!("latency: median {middle} ms, worst {worst} ms over {} digits", latencies.len());
    let mut speech = score.latencies(|row| row.starts_with("speech"));
    let speech_worst = speech.iter().copied().fold(0.0, f64::max);
    println!("latency over speech: median {} ms, worst {speech_worst} ms", median(&mut speech));
    assert!(latencies.len() > 1500);
    assert!(worst <= 45.0, "worst latency {worst} ms");
    assert!(middle <= 35.0, "median latency {middle} ms");
}

#[test]
fn configured_twist_limits_are_honoured() {
    let strict = DtmfConfig { normal_twist_db: 4.0, reverse_twist_db: 2.0, ..DtmfConfig::default() };
    let press = |low, high| single(Press::new('#').levels(low, high)).quantise(Codec::Linear);
    assert_eq!(detect(&press(-10.0, -14.0), &strict).len(), 1);
    assert_eq!(detect(&press(-10.0, -8.0), &strict).len(), 1);
    assert!(detect(&press(-10.0, -18.0), &strict).is_empty());
    assert!(detect(&press(-14.0, -10.0), &strict).is_empty());
    let quiet = DtmfConfig { min_level_dbm0: -20.0, ..DtmfConfig::default() };
    assert_eq!(detect(&press(-15.0, -15.0), &quiet).len(), 1);
    assert!(detect(&press(-30.0, -30.0), &quiet).is_empty());
}

/// Runs the suite through a reference detector binary (e.g. spandsp's) and
/// checks that pound does at least as well on every row.
#[test]
#[ignore = "needs POUND_REF_DETECTOR pointing at a reference detector binary"]
fn at_least_as_good_as_the_reference_detector() {
    let reference = std::env::var("POUND_REF_DETECTOR").expect("POUND_REF_DETECTOR");
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let theirs = score(&cases, |samples| {
        let path = dir.path().join("case.wav");
        pound::media::wav::write_file(&path, samples, pound::media::wav::Encoding::Pcm16).unwrap();
        let output = std::process::Command::new(&reference).arg(&path).output().expect("reference detector runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|v| {
                let digit = v["digit"].as_str().and_then(|d| d.chars().next()).unwrap_or('?');
                (digit, (v["start_ms"].as_f64().unwrap_or(0.0) * 8.0) as u64)
            })
            .collect()
    });
    let ours = score(&cases, pound_detector);
    println!("{:>20} | {:>12} | {:>12}", "row", "pound", "reference");
    let total = |s: &Score| s.rows.values().fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
    for (row, (n, passed)) in &ours.rows {
        let (_, ref_passed) = theirs.rows[row];
        println!("{row:>20} | {passed:>5}/{n:<6} | {ref_passed:>5}/{n:<6}");
    }
    let (n, ours_passed) = total(&ours);
    let (_, theirs_passed) = total(&theirs);
    println!("{:>20} | {ours_passed:>5}/{n:<6} | {theirs_passed:>5}/{n:<6}", "all");
    let (mut a, mut b) = (ours.latencies(|_| true), theirs.latencies(|_| true));
    println!("median latency: pound {} ms, reference {} ms", median(&mut a), median(&mut b));
    for failure in theirs.failures.iter().take(40) {
        println!("reference: {failure}");
    }
    for (row, (_, passed)) in &ours.rows {
        assert!(*passed >= theirs.rows[row].1, "{row}");
    }
}

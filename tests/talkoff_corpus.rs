//! Talk-off on real recordings: hours of recorded speech in many languages and
//! voices, music and sound effects from Debian packages, built outside the
//! repository by `bash benches/talkoff-corpus.sh`. Every source is scaled to
//! -10, -20 and -30 dBm0 (active level), sent through linear, µ-law and A-law,
//! and run at every one of the 32 alignments to the detector's blocks.
//!
//! Opt-in, because the corpus must be downloaded (about 1.1 GB of packages):
//!
//!     bash benches/talkoff-corpus.sh
//!     cargo test --release --test talkoff_corpus -- --ignored --nocapture
//!
//! `POUND_CORPUS_DIR` names the corpus if it is not in `~/.cache/pound/talkoff`.
//! With `POUND_REF_DETECTOR` pointing at a detector speaking `pound dtmf`'s
//! protocol (e.g. `../shared/ref/spandsp_detect`), the second test runs it over
//! the same audio and prints its count beside pound's.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use pound::dsp::dtmf::{BLOCK, DtmfConfig};
use pound::dsp::tone::{dbm0_to_power, saturate};

const LEVELS_DBM0: [f64; 3] = [-10.0, -20.0, -30.0];
/// The 20 ms frames whose power is within this of the loudest count as active:
/// speech levels are measured over speech, not over the pauses between clips.
const ACTIVE_BELOW_PEAK_DB: f64 = 40.0;
/// At most one false digit per this many hours of audio: the corpus is every
/// source at every level, codec and alignment, as issue 8 counts hours (the
/// worst single alignment is printed too).
const HOURS_PER_FALSE_DIGIT: f64 = 3.0;

struct Source {
    class: String,
    name: String,
    samples: Vec<i16>,
}

fn corpus_dir() -> PathBuf {
    std::env::var_os("POUND_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache/pound/talkoff"))
}

fn sources() -> Vec<Source> {
    let dir = corpus_dir();
    let manifest = std::fs::read_to_string(dir.join("manifest.tsv")).unwrap_or_else(|e| {
        panic!("{}/manifest.tsv: {e}; build it with bash benches/talkoff-corpus.sh", dir.display())
    });
    manifest
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let (class, name) = (fields.next()?, fields.next()?);
            let samples = load(&dir.join(class).join(format!("{name}.wav")));
            (!samples.is_empty()).then(|| Source { class: class.to_string(), name: name.to_string(), samples })
        })
        .collect()
}

/// Mean power of the active 20 ms frames.
fn active_power(samples: &[i16]) -> f64 {
    let frames: Vec<f64> =
        samples.chunks(160).map(|f| f.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / f.len() as f64).collect();
    let peak = frames.iter().copied().fold(0.0, f64::max);
    let floor = peak / 10f64.powf(ACTIVE_BELOW_PEAK_DB / 10.0);
    let active: Vec<f64> = frames.into_iter().filter(|&p| p >= floor && p > 0.0).collect();
    active.iter().sum::<f64>() / active.len().max(1) as f64
}

/// One source at one level through one codec.
struct Variant<'a> {
    source: &'a Source,
    dbm0: f64,
    codec: Codec,
}

impl Variant<'_> {
    /// The audio as the detector hears it; made when needed, so that only
    /// one variant per thread is in memory.
    fn audio(&self) -> Vec<i16> {
        let gain = (dbm0_to_power(self.dbm0) / active_power(&self.source.samples).max(1.0)).sqrt();
        self.source.samples.iter().map(|&x| self.codec.round_trip(saturate(x as f64 * gain))).collect()
    }
}

fn variants(sources: &[Source]) -> Vec<Variant<'_>> {
    let mut out = Vec::new();
    for source in sources {
        for dbm0 in LEVELS_DBM0 {
            for codec in CODECS {
                out.push(Variant { source, dbm0, codec });
            }
        }
    }
    out
}

/// A false digit: which variant, at which alignment, where.
struct FalseDigit {
    class: String,
    source: String,
    variant: String,
    shift: usize,
    digit: char,
    seconds: f64,
}

/// Runs `detector` over every variant at every given alignment, on all cores.
fn false_digits(
    variants: &[Variant],
    shifts: &[usize],
    detector: impl Fn(&[i16]) -> Vec<(char, u64)> + Sync,
) -> Vec<FalseDigit> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let found = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(v) = variants.get(i) else { break };
                    let audio = v.audio();
                    for &shift in shifts {
                        for (digit, at) in detector(&audio[shift.min(audio.len())..]) {
                            found.lock().unwrap().push(FalseDigit {
                                class: v.source.class.clone(),
                                source: v.source.name.clone(),
                                variant: format!("{} dBm0 {}", v.dbm0, v.codec.name()),
                                shift,
                                digit,
                                seconds: (at as usize + shift) as f64 / RATE as f64,
                            });
                        }
                    }
                }
            });
        }
    });
    let mut found = found.into_inner().unwrap();
    found.sort_by(|a, b| (&a.class, &a.source, &a.variant, a.shift).cmp(&(&b.class, &b.source, &b.variant, b.shift)));
    found
}

/// Prints the corpus, the false digits per class and source, and per alignment;
/// returns the false digits per hour over all of it.
fn report(who: &str, sources: &[Source], found: &[FalseDigit], shifts: &[usize]) -> f64 {
    let variants_per_source = (LEVELS_DBM0.len() * CODECS.len()) as f64;
    let mut hours: BTreeMap<&str, f64> = BTreeMap::new();
    for s in sources {
        *hours.entry(&s.class).or_default() += s.samples.len() as f64 / RATE as f64 / 3600.0;
    }
    let total_hours: f64 = hours.values().sum();
    println!(
        "{who}: {total_hours:.2} h of recordings ({}), x {} levels x {} codecs = {:.1} h per alignment, {} alignments",
        hours.iter().map(|(c, h)| format!("{c} {h:.2} h")).collect::<Vec<_>>().join(", "),
        LEVELS_DBM0.len(),
        CODECS.len(),
        total_hours * variants_per_source,
        shifts.len()
    );
    for (class, h) in &hours {
        let n = found.iter().filter(|f| f.class == *class).count();
        let per_hour = n as f64 / (h * variants_per_source * shifts.len() as f64);
        println!("{who}:   {class}: {n} false digits, {per_hour:.3} per hour");
    }
    let mut by_source: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
    for f in found {
        by_source
            .entry((&f.class, &f.source))
            .or_default()
            .push(format!("'{}' {} +{} at {:.2} s", f.digit, f.variant, f.shift, f.seconds));
    }
    for ((class, source), digits) in &by_source {
        println!("{who}:   {class}/{source}: {} false digits: {}", digits.len(), digits.join("; "));
    }
    let per_alignment_hours = total_hours * variants_per_source;
    let worst = shifts.iter().map(|&s| found.iter().filter(|f| f.shift == s).count()).max().unwrap_or(0);
    let per_hour = found.len() as f64 / (per_alignment_hours * shifts.len() as f64);
    println!(
        "{who}: {} false digits in all ({per_hour:.3} per hour over {:.0} h); worst alignment {worst} ({:.3} per hour)",
        found.len(),
        per_alignment_hours * shifts.len() as f64,
        worst as f64 / per_alignment_hours
    );
    per_hour
}

#[test]
#[ignore = "needs the real-audio corpus: bash benches/talkoff-corpus.sh"]
fn real_recordings_give_no_hash_and_at_most_one_false_digit_per_three_hours_at_every_alignment() {
    let sources = sources();
    let speech_hours: f64 =
        sources.iter().filter(|s| s.class == "speech").map(|s| s.samples.len() as f64 / RATE as f64 / 3600.0).sum();
    let music_hours: f64 =
        sources.iter().filter(|s| s.class == "music").map(|s| s.samples.len() as f64 / RATE as f64 / 3600.0).sum();
    assert!(speech_hours >= 3.0 && music_hours >= 2.0, "{speech_hours:.2} h speech, {music_hours:.2} h music");
    let variants = variants(&sources);
    let shifts: Vec<usize> = (0..BLOCK).collect();
    let found = false_digits(&variants, &shifts, |audio| detect(audio, &DtmfConfig::default()));
    let per_hour = report("pound", &sources, &found, &shifts);
    let hashes = found.iter().filter(|f| f.digit == '#').count();
    assert_eq!(hashes, 0, "'#' reported {hashes} times");
    assert!(per_hour <= 1.0 / HOURS_PER_FALSE_DIGIT, "{per_hour:.3} false digits per hour");
}

/// The same audio through a reference detector binary, at four alignments
/// spread over spandsp's 102-sample block (every alignment of it would take
/// hours at its speed).
#[test]
#[ignore = "needs the corpus and POUND_REF_DETECTOR pointing at a reference detector binary"]
fn reference_detector_on_the_real_recordings() {
    let reference = std::env::var("POUND_REF_DETECTOR").expect("POUND_REF_DETECTOR");
    let sources = sources();
    let variants = variants(&sources);
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let shifts = [0, 25, 51, 76];
    let found = false_digits(&variants, &shifts, |audio| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.path().join(format!("{n}.wav"));
        pound::media::wav::write_file(&path, audio, pound::media::wav::Encoding::Pcm16).unwrap();
        let output = std::process::Command::new(&reference).arg(&path).output().expect("reference detector runs");
        std::fs::remove_file(&path).unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|v| {
                let digit = v["digit"].as_str().and_then(|d| d.chars().next()).unwrap_or('?');
                (digit, (v["start_ms"].as_f64().unwrap_or(0.0) * 8.0) as u64)
            })
            .collect()
    });
    report("reference", &sources, &found, &shifts);
}

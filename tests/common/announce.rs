//! Audio a callee's side plays instead of a person: greetings (synthetic, or
//! spoken by espeak-ng), record beeps, Special Information Tones.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::Path;
use std::process::Command;

use pound::dsp::tone::ToneGenerator;

/// `ms` of one or more tones at `dbm0` each.
pub fn tone(hz: &[f64], dbm0: f64, ms: usize) -> Vec<i16> {
    let tones: Vec<(f64, f64)> = hz.iter().map(|&f| (f, dbm0)).collect();
    let mut out = vec![0; ms * 8];
    ToneGenerator::new(&tones).fill(&mut out);
    out
}

pub fn silence(ms: usize) -> Vec<i16> {
    vec![0; ms * 8]
}

/// A stand-in for speech that needs no tool: syllable-long noise bursts, their
/// loudness rising and falling, with short pauses; deterministic in `seed`.
pub fn babble(ms: usize, seed: u64) -> Vec<i16> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let mut out = Vec::with_capacity(ms * 8);
    while out.len() < ms * 8 {
        let syllable = 800 + (next() % 1600) as usize;
        for n in 0..syllable {
            let envelope = (std::f64::consts::PI * n as f64 / syllable as f64).sin();
            let noise = f64::from(next() % 12_001) - 6000.0;
            out.push((envelope * noise) as i16);
        }
        out.extend(std::iter::repeat_n(0, (next() % 400) as usize));
    }
    out.truncate(ms * 8);
    out
}

/// A voicemail box: a greeting, a pause, then the record beep at `beep_hz`.
pub fn voicemail(greeting: Vec<i16>, beep_hz: f64) -> Vec<i16> {
    let mut audio = greeting;
    audio.extend(silence(300));
    audio.extend(tone(&[beep_hz], -12.0, 400));
    audio.extend(silence(2000));
    audio
}

/// A SIT (E.180): first and second segments as (Hz, ms), the third at
/// 1776.7 Hz for 380 ms, then an announcement stand-in.
pub fn sit(first: (f64, usize), second: (f64, usize)) -> Vec<i16> {
    let mut audio = silence(100);
    audio.extend(tone(&[first.0], -24.0, first.1));
    audio.extend(tone(&[second.0], -24.0, second.1));
    audio.extend(tone(&[1776.7], -24.0, 380));
    audio.extend(silence(200));
    audio.extend(babble(3000, 9));
    audio
}

/// `text` spoken by espeak-ng at 8 kHz, or `None` (with the reason on
/// stderr) when espeak-ng or sox is not installed.
pub fn espeak(text: &str, dir: &Path) -> Option<Vec<i16>> {
    let raw = dir.join("espeak.wav");
    let resampled = dir.join("espeak-8k.wav");
    let spoken = Command::new("espeak-ng").arg("-w").arg(&raw).arg(text).status();
    if !spoken.is_ok_and(|s| s.success()) {
        eprintln!("skipping the espeak-ng variant: espeak-ng is not installed");
        return None;
    }
    let converted = Command::new("sox").arg(&raw).args(["-r", "8000", "-c", "1", "-b", "16"]).arg(&resampled).status();
    if !converted.is_ok_and(|s| s.success()) {
        eprintln!("skipping the espeak-ng variant: sox is not installed");
        return None;
    }
    Some(pound::media::wav::read_file(&resampled).expect("sox wrote an 8 kHz WAV"))
}

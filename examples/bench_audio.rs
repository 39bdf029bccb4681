//! Writes the throughput benchmark's input: an hour of 8 kHz 16-bit audio made
//! of the talk-off fixtures (speech, music, tones, noise) looped, with a `#`
//! press every ten seconds. Usage: `cargo run --release --example bench_audio -- OUT.wav [MINUTES]`.

use std::path::{Path, PathBuf};

use pound::dsp::tone::ToneGenerator;
use pound::media::wav::{Encoding, read_file, write_file};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: bench_audio OUT.wav [MINUTES]")?);
    let minutes: usize = args.next().map(|m| m.parse()).transpose()?.unwrap_or(60);
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audio/talkoff");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&folder)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "wav"));
    paths.sort();
    let mut material = Vec::new();
    for path in &paths {
        material.extend(read_file(path)?);
    }
    let total = minutes * 60 * 8000;
    let mut audio: Vec<i16> = material.iter().copied().cycle().take(total).collect();
    let mut press = vec![0i16; 800];
    ToneGenerator::dtmf('#', -12.0).expect("a key").fill(&mut press);
    for start in (5 * 8000..total.saturating_sub(press.len())).step_by(10 * 8000) {
        for (sample, tone) in audio[start..].iter_mut().zip(&press) {
            *sample = sample.saturating_add(*tone);
        }
    }
    write_file(&out, &audio, Encoding::Pcm16)?;
    eprintln!("{}: {} min, {} presses of '#'", out.display(), minutes, (total / 8000 - 5) / 10);
    Ok(())
}

//! `pound dtmf`: the in-band detector over WAV files, and its throughput benchmark.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::dsp::dtmf::{DtmfConfig, DtmfDetector, DtmfEvent, Kernel, KernelError};
use crate::dsp::tone::SAMPLE_RATE;
use crate::media::wav::{WavError, WavReader, read_file};

/// What `pound dtmf` was asked to do.
#[derive(Debug, Clone)]
pub struct DtmfArgs {
    pub files: Vec<PathBuf>,
    pub config: DtmfConfig,
    /// Samples handed to the detector per call (160 = one 20 ms RTP frame).
    pub chunk: usize,
    /// Run each file this many times in-process and report throughput instead of digits.
    pub bench: Option<u32>,
}

/// One detected digit, as printed.
#[derive(Debug, Serialize, PartialEq)]
pub struct Digit {
    pub digit: String,
    pub start_ms: f64,
    pub end_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// The benchmark result line, field for field like the spandsp reference's.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub bench_passes: u32,
    pub samples_per_pass: u64,
    pub audio_s_per_pass: f64,
    pub digits_per_pass: u64,
    pub cpu_s: f64,
    pub wall_s: f64,
    pub samples_per_cpu_s: f64,
    pub realtime_factor_per_core: f64,
    pub kernel: &'static str,
}

/// Why a file, or the whole command, could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum DtmfError {
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: WavError,
    },
    /// `POUND_DSP_KERNEL` names a kernel that cannot run here: nothing is processed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Runs the command, writing JSON lines to `out`. Files that fail are
/// reported through the returned errors; the others are still processed.
pub fn run(args: &DtmfArgs, out: &mut impl Write) -> Result<Vec<DtmfError>, std::io::Error> {
    let chunk = args.chunk.max(1);
    let kernel = match Kernel::select() {
        Ok(kernel) => kernel,
        Err(e) => return Ok(vec![e.into()]),
    };
    let mut errors = Vec::new();
    for path in &args.files {
        let wrap = |source| DtmfError::File { path: path.display().to_string(), source };
        match args.bench {
            Some(passes) => match read_file(path) {
                Ok(samples) => writeln!(out, "{}", json(&bench(&samples, &args.config, kernel, chunk, passes)))?,
                Err(e) => errors.push(wrap(e)),
            },
            None => {
                let label = (args.files.len() > 1).then(|| path.display().to_string());
                match detect_file(path, &args.config, kernel, chunk) {
                    Ok(digits) => {
                        for mut digit in digits {
                            digit.file = label.clone();
                            writeln!(out, "{}", json(&digit))?;
                        }
                    }
                    Err(e) => errors.push(wrap(e)),
                }
            }
        }
    }
    Ok(errors)
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("plain structs always serialise")
}

/// Streams a file through a detector in `chunk`-sample pieces.
pub fn detect_file(path: &Path, config: &DtmfConfig, kernel: Kernel, chunk: usize) -> Result<Vec<Digit>, WavError> {
    let mut reader = WavReader::open(path)?;
    let mut detector = DtmfDetector::with_kernel(config, kernel);
    let mut digits = Digits::default();
    let mut buffer = vec![0i16; chunk];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        detector.process(&buffer[..n], |e| digits.push(e));
    }
    detector.finish(|e| digits.push(e));
    Ok(digits.done)
}

/// Pairs on and off events into digits.
#[derive(Default)]
struct Digits {
    on: Option<DtmfEvent>,
    done: Vec<Digit>,
}

impl Digits {
    fn push(&mut self, event: DtmfEvent) {
        match event {
            DtmfEvent::On { .. } => self.on = Some(event),
            DtmfEvent::Off { digit, .. } => {
                let start_ms = self.on.take().map_or(event.millis(), |on| on.millis());
                self.done.push(Digit { digit: digit.to_string(), start_ms, end_ms: event.millis(), file: None });
            }
        }
    }
}

/// Runs the detector over `samples` `passes` times, timing the process's CPU.
pub fn bench(samples: &[i16], config: &DtmfConfig, kernel: Kernel, chunk: usize, passes: u32) -> BenchReport {
    let passes = passes.max(1);
    let cpu_start = cpu_time::ProcessTime::now();
    let wall_start = Instant::now();
    let mut digits_per_pass = None;
    for _ in 0..passes {
        let mut detector = DtmfDetector::with_kernel(config, kernel);
        let mut digits = 0u64;
        let mut count = |e| digits += matches!(e, DtmfEvent::On { .. }) as u64;
        for piece in samples.chunks(chunk) {
            detector.process(piece, &mut count);
        }
        digits_per_pass.get_or_insert(digits);
    }
    let cpu_s = cpu_start.elapsed().as_secs_f64().max(1e-9);
    let wall_s = wall_start.elapsed().as_secs_f64();
    let total = samples.len() as f64 * passes as f64;
    BenchReport {
        bench_passes: passes,
        samples_per_pass: samples.len() as u64,
        audio_s_per_pass: samples.len() as f64 / SAMPLE_RATE as f64,
        digits_per_pass: digits_per_pass.unwrap_or(0),
        cpu_s,
        wall_s,
        samples_per_cpu_s: (total / cpu_s).round(),
        realtime_factor_per_core: ((total / SAMPLE_RATE as f64 / cpu_s) * 10.0).round() / 10.0,
        kernel: kernel.name(),
    }
}

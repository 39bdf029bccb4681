//! Criterion benchmarks of the in-band DTMF detector: one 20 ms frame on one
//! channel, one frame on each of many channels (state spread over memory as in
//! a busy node), and the block kernels. Input: the talk-off speech fixtures
//! with a `#` mixed in, so every path of the detector is exercised.

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pound::dsp::dtmf::{BLOCK, BlockSums, DtmfConfig, DtmfDetector, Kernel};
use pound::dsp::tone::ToneGenerator;
use pound::media::wav::read_file;

const FRAME: usize = 160;

fn audio() -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audio/talkoff/speech_en-us_male_phone-numbers_-12dBm0.wav");
    let mut samples = read_file(&path).expect("fixture");
    let mut press = vec![0i16; 1600];
    ToneGenerator::dtmf('#', -10.0).expect("a key").fill(&mut press);
    for (s, t) in samples[8000..].iter_mut().zip(&press) {
        *s = s.saturating_add(*t);
    }
    samples.truncate(samples.len() / FRAME * FRAME);
    samples
}

fn one_channel(c: &mut Criterion) {
    let samples = audio();
    let mut group = c.benchmark_group("dtmf");
    group.throughput(Throughput::Elements(FRAME as u64));
    for kernel in Kernel::available() {
        let mut detector = DtmfDetector::with_kernel(&DtmfConfig::default(), kernel);
        let mut frames = samples.chunks_exact(FRAME).cycle();
        group.bench_function(format!("frame_20ms/{}", kernel.name()), |b| {
            b.iter(|| {
                let frame = frames.next().expect("cycle");
                detector.process(black_box(frame), |e| {
                    black_box(e);
                });
            })
        });
    }
    group.finish();
}

fn many_channels(c: &mut Criterion) {
    const CHANNELS: usize = 1000;
    let samples = audio();
    let frames: Vec<&[i16]> = samples.chunks_exact(FRAME).collect();
    let mut group = c.benchmark_group("dtmf");
    group.throughput(Throughput::Elements((CHANNELS * FRAME) as u64));
    group.bench_function("frame_20ms_x1000_channels", |b| {
        let mut detectors: Vec<DtmfDetector> =
            (0..CHANNELS).map(|_| DtmfDetector::new(&DtmfConfig::default())).collect();
        let mut tick = 0usize;
        b.iter(|| {
            for (i, detector) in detectors.iter_mut().enumerate() {
                // Each channel hears a different part of the audio.
                let frame = frames[(tick + i * 7) % frames.len()];
                detector.process(frame, |e| {
                    black_box(e);
                });
            }
            tick += 1;
        })
    });
    group.finish();
}

fn kernels(c: &mut Criterion) {
    let samples = audio();
    let blocks = 64;
    let input = &samples[..blocks * BLOCK];
    let mut group = c.benchmark_group("dtmf_kernel");
    group.throughput(Throughput::Elements((blocks * BLOCK) as u64));
    for kernel in Kernel::available() {
        group.bench_function(kernel.name(), |b| {
            b.iter_batched_ref(
                || vec![BlockSums::default(); blocks],
                |out| kernel.block_sums(black_box(input), 0, out),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, one_channel, many_channels, kernels);
criterion_main!(benches);

//! Property tests of `pound replay`'s input: a capture file is untrusted (it may come from
//! another machine, be cut short or be edited). Seeds are the committed captures of
//! `fixtures/captures/`; mutations hit either the file's bytes or one record's payload (the pcap
//! rebuilt around it, so that SIP, RTP and the control records are reached). A replay never
//! panics and never holds more heap than the prompts and the capture need; see
//! `tests/fuzz_support` for the harness.

mod fuzz_support;

use fuzz_support::{CountingAllocator, Rng, Target, files, mutate_once, mutated};
use pound::capture::pcap;
use pound::capture::replay::replay;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// One record's payload mutated, or (one time in four) the file's bytes.
fn mutate_a_record(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = rng.pick(seeds);
    let Ok(mut records) = pcap::read(seed) else { return mutated(rng, seeds) };
    if rng.one_in(4) || records.is_empty() {
        return mutated(rng, seeds);
    }
    let index = rng.below(records.len());
    let payloads: Vec<Vec<u8>> = records.iter().map(|r| r.payload.clone()).collect();
    mutate_once(rng, &mut records[index].payload, &payloads);
    pcap::file(&records)
}

#[test]
fn replaying_a_mutated_capture_never_panics_and_stays_bounded() {
    let seeds = files("fixtures/captures", ".pcap");
    // The compiled-in prompts decoded once, the capture parsed, the call's buffers.
    let summary = Target::new("capture_replay", seeds).max_heap(|len| (32 << 20) + len.saturating_mul(8)).run_with(
        mutate_a_record,
        |bytes| {
            if let Ok(replayed) = replay(bytes) {
                assert!(replayed.sip_sent + replayed.rtp_sent > 0, "a call that ran sent something");
            }
        },
    );
    summary.assert_ran(20);
}

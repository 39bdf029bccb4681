//! Talk-off: digit-free audio (speech in many voices and languages, babble,
//! music, call-progress and fax tones, noise) must never produce a digit, also
//! after a G.711 round trip, and at every alignment of the audio to the
//! detector's 32-sample blocks: each file is run 32 times, starting 0 to 31
//! samples later. The fixtures and the script that made them are in
//! `fixtures/audio/`; the real-audio corpus is in `tests/talkoff_corpus.rs`.

mod common;

use common::*;
use pound::dsp::dtmf::{BLOCK, DtmfConfig};

#[test]
fn at_least_ten_minutes_of_digit_free_audio_give_no_digit_at_any_block_alignment() {
    let mut seconds = 0.0;
    let mut false_digits = Vec::new();
    for path in fixture_files("talkoff") {
        let audio = load(&path);
        seconds += audio.len() as f64 / RATE as f64;
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for codec in CODECS {
            let coded: Vec<i16> = audio.iter().map(|&s| codec.round_trip(s)).collect();
            for shift in 0..BLOCK {
                for (digit, at) in detect(&coded[shift..], &DtmfConfig::default()) {
                    false_digits.push(format!(
                        "{name} via {}, {shift} samples later: '{digit}' at {:.3} s",
                        codec.name(),
                        at as f64 / RATE as f64
                    ));
                }
            }
        }
    }
    println!(
        "talk-off: {seconds:.0} s of audio x {} codecs x {BLOCK} alignments, {} false digits",
        CODECS.len(),
        false_digits.len()
    );
    assert!(seconds >= 600.0, "only {seconds} s of talk-off audio");
    assert!(false_digits.is_empty(), "{} false digits:\n{}", false_digits.len(), false_digits.join("\n"));
}

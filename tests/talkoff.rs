//! Talk-off: digit-free audio (speech in many voices and languages, babble,
//! music, call-progress and fax tones, noise) must never produce a digit, also
//! after a G.711 round trip. The fixtures and the script that made them are in
//! `fixtures/audio/`.

mod common;

use common::*;
use pound::dsp::dtmf::DtmfConfig;

#[test]
fn at_least_ten_minutes_of_digit_free_audio_give_no_digit() {
    let mut seconds = 0.0;
    let mut false_digits = Vec::new();
    for path in fixture_files("talkoff") {
        let audio = load(&path);
        seconds += audio.len() as f64 / RATE as f64;
        for codec in CODECS {
            let coded: Vec<i16> = audio.iter().map(|&s| codec.round_trip(s)).collect();
            for (digit, at) in detect(&coded, &DtmfConfig::default()) {
                let name = path.file_name().unwrap().to_string_lossy();
                false_digits.push(format!(
                    "{name} via {}: '{digit}' at {:.3} s",
                    codec.name(),
                    at as f64 / RATE as f64
                ));
            }
        }
    }
    println!("talk-off: {seconds:.0} s of audio, {} false digits", false_digits.len());
    assert!(seconds >= 600.0, "only {seconds} s of talk-off audio");
    assert!(false_digits.is_empty(), "{}", false_digits.join("\n"));
}

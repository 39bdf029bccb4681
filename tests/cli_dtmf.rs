//! `pound dtmf` as a user runs it: the real binary on real files.

mod common;

use std::process::Command;

use common::*;
use pound::dsp::dtmf::{KERNEL_ENV, Kernel};
use pound::media::wav::{Encoding, write_file};

fn pound() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pound"))
}

fn keys_file(dir: &std::path::Path, name: &str, keys: &str, encoding: Encoding) -> std::path::PathBuf {
    let mut signal = Signal::silence(200.0);
    for key in keys.chars() {
        signal = signal.press(Press::new(key).duration(80.0)).gap(120.0);
    }
    let path = dir.join(name);
    write_file(&path, &signal.quantise(Codec::Linear), encoding).unwrap();
    path
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

#[test]
fn prints_one_json_line_per_digit_for_every_encoding() {
    let dir = tempfile::tempdir().unwrap();
    for (name, encoding) in [("pcm.wav", Encoding::Pcm16), ("ulaw.wav", Encoding::Ulaw), ("alaw.wav", Encoding::Alaw)] {
        let path = keys_file(dir.path(), name, "159#", encoding);
        let output = pound().arg("dtmf").arg(&path).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let lines = json_lines(&output.stdout);
        let digits: String = lines.iter().map(|l| l["digit"].as_str().unwrap()).collect();
        assert_eq!(digits, "159#", "{name}");
        let mut previous_end = 0.0;
        for (i, line) in lines.iter().enumerate() {
            let (start, end) = (line["start_ms"].as_f64().unwrap(), line["end_ms"].as_f64().unwrap());
            // Press i starts at 200 + 200 i ms and lasts 80 ms.
            let tone_start = 200.0 + 200.0 * i as f64;
            assert!(start > tone_start && start <= tone_start + 45.0, "{line}");
            assert!(end > start && end < tone_start + 80.0 + 60.0, "{line}");
            assert!(start > previous_end);
            previous_end = end;
            assert!(line.get("file").is_none());
        }
    }
}

#[test]
fn names_the_file_when_given_several() {
    let dir = tempfile::tempdir().unwrap();
    let a = keys_file(dir.path(), "a.wav", "1", Encoding::Pcm16);
    let b = keys_file(dir.path(), "b.wav", "2", Encoding::Pcm16);
    let output = pound().arg("dtmf").arg(&a).arg(&b).output().unwrap();
    assert!(output.status.success());
    let lines = json_lines(&output.stdout);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["file"].as_str().unwrap(), a.display().to_string());
    assert_eq!(lines[1]["digit"], "2");
}

#[test]
fn bench_prints_throughput_and_no_digits() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_file(dir.path(), "k.wav", "##", Encoding::Pcm16);
    let output = pound().args(["dtmf", "--bench", "3"]).arg(&path).output().unwrap();
    assert!(output.status.success());
    let lines = json_lines(&output.stdout);
    assert_eq!(lines.len(), 1);
    let report = &lines[0];
    assert_eq!(report["bench_passes"], 3);
    assert_eq!(report["digits_per_pass"], 2);
    assert_eq!(report["samples_per_pass"].as_u64().unwrap() as usize, ms(200.0 + 2.0 * 200.0));
    assert!(report["samples_per_cpu_s"].as_f64().unwrap() > 0.0);
    assert!(report["realtime_factor_per_core"].as_f64().unwrap() > 0.0);
    assert_eq!(report["kernel"], Kernel::best().name());

    let forced = pound().args(["dtmf", "--bench", "1"]).arg(&path).env(KERNEL_ENV, "portable").output().unwrap();
    assert!(forced.status.success());
    assert_eq!(json_lines(&forced.stdout)[0]["kernel"], "portable");
}

#[test]
fn a_kernel_that_is_unknown_or_missing_from_the_cpu_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_file(dir.path(), "k.wav", "#", Encoding::Pcm16);
    let run = |name: &str| pound().args(["dtmf", "--bench", "1"]).arg(&path).env(KERNEL_ENV, name).output().unwrap();
    let unknown = run("sse9");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(unknown.stdout.is_empty());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("POUND_DSP_KERNEL=\"sse9\" names no kernel"));
    let missing = ["avx2", "avx512vnni"].into_iter().find(|k| Kernel::available().iter().all(|a| a.name() != *k));
    if let Some(missing) = missing {
        let output = run(missing);
        assert_eq!(output.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&output.stderr).contains("this CPU lacks"), "{missing}");
    } else {
        println!("this CPU runs every kernel: the missing-instructions error is covered by the unit tests");
    }
}

#[test]
fn broken_files_are_clear_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wav");
    std::fs::write(&garbage, b"RIFF\x10\x00\x00\x00WAVEfmt \xff\xff\xff\xff").unwrap();
    let good = keys_file(dir.path(), "good.wav", "#", Encoding::Pcm16);
    let missing = dir.path().join("missing.wav");
    let output = pound().arg("dtmf").arg(&garbage).arg(&good).arg(&missing).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("garbage.wav: broken WAV file"), "{stderr}");
    assert!(stderr.contains("missing.wav"), "{stderr}");
    assert!(!stderr.contains("panicked"));
    // The good file in the middle is still processed.
    assert_eq!(json_lines(&output.stdout).len(), 1);

    let mut wide = Vec::new();
    pound::media::wav::write(&mut wide, &[0; 100], Encoding::Pcm16).unwrap();
    wide[24..28].copy_from_slice(&44100u32.to_le_bytes());
    let rate = dir.path().join("cd.wav");
    std::fs::write(&rate, wide).unwrap();
    let output = pound().arg("dtmf").arg(&rate).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("44100 Hz is not supported"));
}

#[test]
fn detector_options_change_what_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quiet.wav");
    let signal = Signal::silence(100.0).press(Press::new('#').level(-30.0)).gap(200.0);
    write_file(&path, &signal.quantise(Codec::Linear), Encoding::Pcm16).unwrap();
    let count = |extra: &[&str]| {
        let output = pound().arg("dtmf").args(extra).arg(&path).output().unwrap();
        assert!(output.status.success());
        json_lines(&output.stdout).len()
    };
    assert_eq!(count(&[]), 1);
    assert_eq!(count(&["--min-level", "-20"]), 0);
}

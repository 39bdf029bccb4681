//! pound builds with Rust alone and runs from any folder: no build step
//! needs cmake or a system library, and the default dialplan and prompts are
//! compiled in.

use std::process::Command;

/// The packages of the lock file, by name.
fn locked_packages() -> Vec<String> {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).expect("Cargo.lock");
    lock.lines().filter_map(|line| line.strip_prefix("name = \"")?.strip_suffix('"').map(str::to_string)).collect()
}

#[test]
fn no_dependency_builds_with_cmake_or_links_a_system_library() {
    let packages = locked_packages();
    assert!(packages.len() > 50, "the lock file was read: {packages:?}");
    // The `cmake` crate is how build scripts drive cmake; aws-lc-sys and
    // libopus bindings are the usual ways it comes back.
    for forbidden in ["cmake", "aws-lc-sys", "opusic-sys", "audiopus_sys", "opus"] {
        assert!(!packages.iter().any(|p| p == forbidden), "{forbidden} is in Cargo.lock");
    }
    // Native code may come only from crates that bundle their C source and
    // build it with the C compiler every Rust toolchain links with.
    let native: Vec<&String> = packages
        .iter()
        .filter(|p| p.ends_with("-sys") && !["js-sys", "web-sys", "windows-sys", "linux-raw-sys"].contains(&p.as_str()))
        .collect();
    assert_eq!(native, ["libsqlite3-sys"], "a new -sys crate: check that it needs no system library");
}

#[test]
fn pound_call_finds_the_compiled_in_dialplan_from_any_folder() {
    let folder = tempfile::tempdir().unwrap();
    // Nothing listens on the discard port: over TCP the call fails at once on
    // the network, which proves the dialplan and its prompts were found first.
    let output = Command::new(env!("CARGO_BIN_EXE_pound"))
        .current_dir(folder.path())
        .args(["call", "sip:nobody@127.0.0.1:9", "--bind", "127.0.0.1:0", "--transport", "tcp"])
        .output()
        .expect("pound call runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("dialplan") && !stderr.contains("prompt"), "{stderr}");
    assert!(stderr.contains("refused"), "the call reached the network: {stderr}");
}

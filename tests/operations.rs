//! What an operator sees: configuration checks with the key and line named,
//! logs as text or JSON filtered by RUST_LOG with each event once, and
//! `pound call`'s progress lines on a terminal.

mod common;

use std::process::Command;

use common::process::{Running, pound};
use serde_json::Value;

/// A phone on loopback that presses `#` by RFC 4733 soon after answering;
/// its `host:port`.
fn phone() -> (Running, String) {
    let (child, uri) = common::process::phone(&["--calls", "1", "--after", "300", "--answer-after", "50"]);
    (child, uri.trim_start_matches("sip:").to_string())
}

#[test]
fn check_config_names_the_key_and_line_and_exits_2() {
    let folder = tempfile::tempdir().unwrap();
    let bad = folder.path().join("pound.toml");
    std::fs::write(&bad, "node_id = \"a\"\n[api]\nmax_body_bytes = \"big\"\n").unwrap();
    let output = pound().args(["check-config", "--config"]).arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("pound.toml: 3:18: api.max_body_bytes: invalid type: string \"big\""), "{stderr}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/pound.example.toml");
    let output = pound().args(["check-config", "--config", example]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    // Out of range is caught too, not only types.
    std::fs::write(&bad, "[policy]\nmax_attempts = 9\n").unwrap();
    let output = pound().args(["check-config", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("policy.max_attempts"));
}

/// `pound call` to a fresh phone with extra environment and flags; its stderr.
fn call_stderr(env: &[(&str, &str)], flags: &[&str]) -> String {
    let (_phone, address) = phone();
    let mut command = pound();
    command.env_remove("RUST_LOG").env_remove("POUND_LOG").env_remove("POUND_LOG_FORMAT");
    command.envs(env.iter().copied()).args(flags);
    let target = format!("sip:+14155550100@{address}");
    let output = command.args(["call", &target, "--bind", "127.0.0.1:0"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8(output.stderr).expect("logs are UTF-8")
}

#[test]
fn json_logs_follow_rust_log_with_each_event_once() {
    let stderr = call_stderr(&[("RUST_LOG", "pound=info")], &["--log-format", "json"]);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let named = |message: &str| -> Vec<&Value> { lines.iter().filter(|l| l["fields"]["message"] == message).collect() };
    for message in ["calling", "answered", "key", "call finished"] {
        assert_eq!(named(message).len(), 1, "{message:?} once in {stderr}");
    }
    let key = named("key")[0];
    assert_eq!(key["level"], "INFO");
    assert!(key["timestamp"].is_string() && key["target"].as_str().unwrap().starts_with("pound"), "{key}");
    assert_eq!(key["fields"]["digit"], "#");
    assert!(key["fields"]["call_id"].as_str().is_some_and(|id| !id.is_empty()), "{key}");
    // The callee's number is masked even at info level.
    let calling = named("calling")[0];
    assert!(calling["fields"]["target"].as_str().unwrap().starts_with("sip:+1415*****00@"), "{calling}");
    assert!(!stderr.contains("4155550100"), "{stderr}");

    // POUND_LOG is the alias, and text is the default format.
    let stderr = call_stderr(&[("POUND_LOG", "pound=info")], &[]);
    assert!(stderr.contains("answered") && !stderr.trim_start().starts_with('{'), "{stderr}");
    // Nothing asked for, nothing but warnings: a quiet call prints nothing.
    assert_eq!(call_stderr(&[], &[]), "");
}

#[test]
fn pound_call_shows_progress_on_a_terminal() {
    let Ok(script) = which("script") else {
        eprintln!("util-linux `script` is not installed: the terminal case did not run");
        return;
    };
    let (_phone, address) = phone();
    // `script` gives pound a pseudo-terminal for stdout and stderr alike.
    let command = format!("{} call sip:verify@{address} --bind 127.0.0.1:0", env!("CARGO_BIN_EXE_pound"));
    let output = Command::new(script).args(["-qec", &command, "/dev/null"]).env_remove("RUST_LOG").output().unwrap();
    let screen = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    let expected = ["calling", "ringing", "answered", "key # (rfc4733)", "ended: verified"];
    let positions: Vec<usize> = expected
        .iter()
        .map(|line| screen.find(&format!("{line}\n")).unwrap_or_else(|| panic!("{line:?} in {screen}")))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order: {screen}");
    assert!(screen.contains("\"outcome\":\"verified\""), "the JSON report still comes: {screen}");
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(program)).find(|p| p.is_file()))
        .ok_or(())
}

#[test]
fn version_names_the_commit() {
    let output = pound().arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let commit =
        Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok().filter(|o| o.status.success());
    match commit {
        Some(commit) => {
            let commit = String::from_utf8_lossy(&commit.stdout).trim().to_string();
            assert_eq!(text.trim(), format!("pound {} ({commit})", env!("CARGO_PKG_VERSION")));
        }
        None => assert!(text.starts_with("pound ") && text.contains(" ("), "{text}"),
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: the unit was not verified");
        return;
    };
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/pound.service")).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("pound.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/pound", env!("CARGO_BIN_EXE_pound"))).unwrap();
    let output = Command::new(analyze).arg("verify").arg(&path).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let own: Vec<&str> = said.lines().filter(|l| l.contains("pound.service")).collect();
    assert!(output.status.success() && own.is_empty(), "{said}");
}

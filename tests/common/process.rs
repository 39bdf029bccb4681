//! Running `pound` subcommands as child processes that announce themselves
//! with a JSON "ready" line, and are killed when the test lets go of them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// The `pound` binary, run from the repository root.
pub fn pound() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pound"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// `pound call TARGET` from a loopback address with `args`: its JSON report
/// (`null` if it printed none) and what it logged.
pub fn call(target: &str, args: &[&str]) -> (Value, String) {
    let output = pound()
        .args(["call", target, "--bind", "127.0.0.1:0"])
        .args(args)
        .env("POUND_LOG", "info")
        .output()
        .expect("pound runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or(Value::Null);
    (report, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A child process killed (and reaped) on drop.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` and waits for its first stdout line, the JSON "ready" event.
pub fn start(mut command: Command) -> (Running, Value) {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("pound starts");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line);
    let child = Running(child);
    let ready = serde_json::from_str(&line).unwrap_or_else(|_| panic!("no ready line from pound: {line:?}"));
    (child, ready)
}

/// `pound phone` on a free loopback port with `args`; its `sip:` URI.
pub fn phone(args: &[&str]) -> (Running, String) {
    let mut command = pound();
    command.args(["phone", "--listen", "127.0.0.1:0"]).args(args);
    let (child, ready) = start(command);
    (child, format!("sip:{}", ready["sip"].as_str().expect("a sip address")))
}

/// `pound serve --config` with `config` written as its file in `dir`, a fresh
/// SQLite store there, `trunk` and one API key; the node and its API URL.
pub fn serve_with_config(dir: &std::path::Path, trunk: &str, config: &str, key: &str) -> (Running, String) {
    let file = dir.join("pound.toml");
    std::fs::write(&file, config).expect("the config file is written");
    let mut command = pound();
    command
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--store", &format!("sqlite://{}", dir.join("pound.db").display())])
        .args(["--trunk", trunk, "--api-bind", "127.0.0.1:0", "--sip-bind", "127.0.0.1:0", "--api-key", key]);
    let (child, ready) = start(command);
    (child, format!("http://{}", ready["api"].as_str().expect("an API address")))
}

/// What a `pound phone` child reported, line by line, each with the time it
/// was read (within a millisecond or so of the event on loopback).
#[derive(Clone, Default)]
pub struct PhoneLog(std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, Value)>>>);

impl PhoneLog {
    /// Reads `phone`'s stdout from now on (its ready line already read).
    pub fn follow(phone: &mut Running) -> PhoneLog {
        let log = PhoneLog::default();
        let lines = log.0.clone();
        let stdout = phone.0.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    lines.lock().unwrap().push((std::time::Instant::now(), value));
                }
            }
        });
        log
    }

    /// How many lines of this `event` kind came (`invite`, `key`, `call_ended`).
    pub fn count(&self, event: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|(_, line)| line["event"] == event).count()
    }

    /// The last line of this `event` kind, if one came.
    pub fn last(&self, event: &str) -> Option<Value> {
        self.0.lock().unwrap().iter().rev().find(|(_, line)| line["event"] == event).map(|(_, line)| line.clone())
    }

    /// When the first line of this `event` kind came.
    pub fn first(&self, event: &str) -> Option<std::time::Instant> {
        self.0.lock().unwrap().iter().find(|(_, line)| line["event"] == event).map(|(at, _)| *at)
    }

    /// Waits up to `within` for the first line of this `event` kind.
    pub async fn wait_for(&self, event: &str, within: std::time::Duration) -> Option<std::time::Instant> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(at) = self.first(event) {
                return Some(at);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

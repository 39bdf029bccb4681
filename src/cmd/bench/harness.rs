//! What the node benchmarks share: a `pound serve` child on loopback with a
//! fresh SQLite store (or the PostgreSQL URL given) and limits opened for
//! load, a callee child (sipp when installed, `pound phone` otherwise), the
//! node's CPU time and RSS from `/proc`, its metrics, and latency summaries.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::BenchError;
use crate::phone::PressVia;

/// The API key the benchmark node accepts.
pub const KEY: &str = "bench-key";

/// A child process killed (and reaped) on drop, so an interrupted benchmark
/// leaves nothing running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a child's stdout to its end on a thread: a child that prints a line
/// per call must never block on a full pipe.
fn drain(mut stdout: impl Read + Send + 'static) {
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
}

/// Starts `command` and returns it with its first stdout line (the JSON
/// "ready" event every pound subcommand prints).
fn start_ready(mut command: Command, what: &str) -> Result<(Reaped, Value), BenchError> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Start(format!("{what}: {e}")))?;
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let child = Reaped(child);
    let mut line = String::new();
    stdout.read_line(&mut line).map_err(|e| BenchError::Start(format!("{what}: {e}")))?;
    let ready =
        serde_json::from_str(&line).map_err(|_| BenchError::Start(format!("{what} did not start: {line:?}")))?;
    drain(stdout);
    Ok((child, ready))
}

/// The node under test.
pub struct Node {
    child: Reaped,
    pub api: String,
    folder: PathBuf,
}

impl Node {
    /// `pound serve` (this very binary) towards `trunk`, able to run
    /// `max_calls` calls at once and start `cps` per second, with every
    /// per-number and per-key limit opened: the benchmark dials many numbers
    /// of one prefix from one key, and from one client address (so the
    /// per-client connection cap is off, as behind a reverse proxy).
    /// Its dialplan waits for the key as long as the callee holds: the
    /// compiled-in one gives up (`no_input`) after three prompts.
    /// `api` holds more `[api]` keys, one per line (or nothing).
    pub fn start(
        trunk: &str,
        cps: f64,
        max_calls: usize,
        hold: Duration,
        store: Option<&str>,
        binary: Option<&Path>,
        api: &str,
    ) -> Result<Node, BenchError> {
        let folder = std::env::temp_dir().join(format!("pound-bench-{:016x}", rand::random::<u64>()));
        let dialplans = folder.join("dialplans");
        std::fs::create_dir_all(&dialplans)?;
        // Waits for the key of at most a minute each (the dialplan's limit),
        // repeated past the hold.
        let repeats = hold.as_secs() / 60 + 2;
        std::fs::write(
            dialplans.join("press-pound.toml"),
            format!(
                "prompt = \"builtin:en/press-pound.wav\"\nconfirmation_prompt = \"builtin:en/confirmed.wav\"\n\
                 prompt_repeats = {repeats}\ninput_timeout_ms = 60000\nmax_duration_ms = {}\n",
                (repeats + 1) * 70_000
            ),
        )?;
        let config = format!(
            "[api]\nmax_connections_per_client = 0\n{api}[trunk]\ncalls_per_second = {cps}\noptions_interval_s = 0\n\
             [engine]\nmax_concurrent_calls = {max_calls}\n\
             [policy]\ncooldown_s = 0\nallow_prefixes = [\"+1415\"]\nallowed_countries = []\n\
             max_per_key_per_hour = {max}\nmax_per_country_per_hour = {max}\nmax_per_prefix_per_hour = {max}\n\
             max_global_per_hour = {max}\nbreaker_numbers = {max}\nexpire_after_s = 3600\n",
            max = u32::MAX
        );
        let file = folder.join("pound.toml");
        std::fs::write(&file, config)?;
        let store = store.map_or_else(|| format!("sqlite://{}", folder.join("pound.db").display()), str::to_string);
        let binary = match binary {
            Some(binary) => binary.to_path_buf(),
            None => std::env::current_exe()?,
        };
        let mut command = Command::new(binary);
        command
            .args(["serve", "--config"])
            .arg(&file)
            .args(["--store", &store, "--trunk", trunk, "--api-bind", "127.0.0.1:0"])
            .args(["--sip-bind", "127.0.0.1:0", "--api-key", KEY, "--dialplans"])
            .arg(&dialplans)
            .env("RUST_LOG", "warn");
        let (child, ready) = start_ready(command, "pound serve")?;
        let api = ready["api"].as_str().ok_or_else(|| BenchError::Start("pound serve: no API address".into()))?;
        Ok(Node { api: format!("http://{api}"), child, folder })
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The node's own CPU time (user + system) and resident memory now.
    pub fn usage(&self) -> Result<Usage, BenchError> {
        Usage::of(self.pid())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// A process's CPU time and resident set, from `/proc/PID/stat` and `status`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_kb: u64,
}

impl Usage {
    fn of(pid: u32) -> Result<Usage, BenchError> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name may hold spaces: fields are counted after its ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
        // utime and stime are fields 14 and 15 of stat(5); 'state' (field 3) is fields[0].
        let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
            return Err(BenchError::Measure(format!("unreadable /proc/{pid}/stat")));
        };
        let hz = rustix::param::clock_ticks_per_second() as f64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| BenchError::Measure(format!("no VmRSS in /proc/{pid}/status")))?;
        Ok(Usage { cpu_s: (user + system) as f64 / hz, rss_kb })
    }
}

/// Which program plays the callee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CalleeKind {
    /// sipp for RFC 4733 when it is installed, `pound phone` otherwise.
    Auto,
    Sipp,
    Phone,
}

/// The callee: answers at once, holds, then presses `#`.
pub struct Callee {
    _child: Reaped,
    pub uri: String,
    /// `sipp` or `pound phone`, for the report.
    pub name: &'static str,
    _scenario: Option<Removed>,
}

impl Callee {
    pub fn start(kind: CalleeKind, via: PressVia, hold: Duration) -> Result<Callee, BenchError> {
        let sipp_usable = via == PressVia::Rfc4733 && sipp_installed();
        match kind {
            CalleeKind::Sipp if !sipp_usable => Err(BenchError::Start(
                "sipp plays only the RFC 4733 callee here, and must be installed (apt-get install sip-tester)".into(),
            )),
            CalleeKind::Sipp => Callee::sipp(hold),
            CalleeKind::Auto if sipp_usable => Callee::sipp(hold),
            CalleeKind::Auto | CalleeKind::Phone => Callee::phone(via, hold),
        }
    }

    fn phone(via: PressVia, hold: Duration) -> Result<Callee, BenchError> {
        let via = match via {
            PressVia::Rfc4733 => "rfc4733",
            PressVia::Inband => "inband",
            PressVia::Info => "info",
        };
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["phone", "--listen", "127.0.0.1:0", "--via", via, "--answer-after", "0"])
            .args(["--after", &hold.as_millis().to_string(), "--codecs", "pcmu"])
            .env("RUST_LOG", "warn");
        let (child, ready) = start_ready(command, "pound phone")?;
        let sip = ready["sip"].as_str().ok_or_else(|| BenchError::Start("pound phone: no SIP address".into()))?;
        Ok(Callee { _child: child, uri: format!("sip:{sip}"), name: "pound phone", _scenario: None })
    }

    /// sipp answering with PCMU and telephone-event 101, pausing `hold`,
    /// then playing its own RFC 4733 `#` capture (sipp needs raw sockets:
    /// root or `cap_net_raw`).
    fn sipp(hold: Duration) -> Result<Callee, BenchError> {
        let scenario = include_str!("sipp-callee.xml").replace("HOLD_MS", &hold.as_millis().to_string());
        let file = std::env::temp_dir().join(format!("pound-bench-sipp-{:016x}.xml", rand::random::<u64>()));
        std::fs::write(&file, scenario)?;
        let scenario = Removed(file.clone());
        let (sip_port, media_port, control_port) = (free_udp_port()?, sipp_media_port()?, free_udp_port()?);
        let mut command = Command::new("sipp");
        command
            .arg("-sf")
            .arg(&file)
            .args(["-i", "127.0.0.1", "-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
            .args(["-cp", &control_port.to_string(), "-aa", "-nostdin"])
            .args(["-buff_size", "4194304", "-max_recv_loops", "10000", "-max_sched_loops", "10000"]);
        let child = Reaped(command.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?);
        // sipp prints no ready line: give it time to bind its port.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Callee { _child: child, uri: format!("sip:127.0.0.1:{sip_port}"), name: "sipp", _scenario: Some(scenario) })
    }
}

fn sipp_installed() -> bool {
    Command::new("sipp").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A UDP port free now (bound and released: good enough on loopback).
fn free_udp_port() -> Result<u16, BenchError> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A base port for sipp's `-mp`: sipp binds audio RTP there and video RTP
/// two above it, and gives up the whole run when either is taken. Drawn below
/// the kernel's ephemeral range, so that no socket bound to port 0 meanwhile
/// (the node's RTP, a thousand calls' worth under `load`, or other tests'
/// calls) can take one of them between this check and sipp's bind; the four
/// ports from the base are free now.
pub fn sipp_media_port() -> std::io::Result<u16> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(12_000));
    for _ in 0..1000 {
        let base = low + 2 * (rand::random::<u16>() % ((high - low - 4) / 2));
        if (base..base + 4).all(|port| UdpSocket::bind(("127.0.0.1", port)).is_ok()) {
            return Ok(base);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no four free UDP ports in a row for sipp's media"))
}

/// A file removed on drop.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The node's `/metrics`, parsed into `name{labels} value` pairs.
pub async fn metrics(client: &reqwest::Client, node: &Node) -> Result<Vec<(String, f64)>, BenchError> {
    let text = client.get(format!("{}/metrics", node.api)).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// One metric's value (0 when absent).
pub fn metric(metrics: &[(String, f64)], name: &str) -> f64 {
    metrics.iter().find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v)
}

/// Completed verifications by outcome, from `pound_verifications_total`.
pub fn outcomes(metrics: &[(String, f64)]) -> serde_json::Map<String, Value> {
    metrics
        .iter()
        .filter_map(|(name, value)| {
            let outcome = name.strip_prefix("pound_verifications_total{outcome=\"")?.strip_suffix("\"}")?;
            (*value > 0.0).then(|| (outcome.to_string(), Value::from(*value as u64)))
        })
        .collect()
}

/// `POST /v1/verifications` for `phone`; its status code and latency.
pub async fn submit(client: &reqwest::Client, api: &str, phone: &str) -> (u16, Duration) {
    let (answer, latency) = post(client, api, phone).await;
    (answer.map_or(0, |response| response.status().as_u16()), latency)
}

/// `POST /v1/verifications` for `phone`: the response (its body unread) or
/// why there was none, and the time to its header.
pub async fn post(
    client: &reqwest::Client,
    api: &str,
    phone: &str,
) -> (Result<reqwest::Response, reqwest::Error>, Duration) {
    let started = std::time::Instant::now();
    let answer = client
        .post(format!("{api}/v1/verifications"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"phone": phone, "user": format!("bench-{phone}")}))
        .send()
        .await;
    (answer, started.elapsed())
}

/// The store a report names: the scheme of `--store`, SQLite when none.
pub fn store_name(store: Option<&str>) -> &str {
    store.and_then(|url| url.split_once("://")).map_or("sqlite", |(scheme, _)| scheme)
}

/// POST answers by status code (0: no answer at all), as JSON.
pub fn status_counts(statuses: std::collections::BTreeMap<u16, u64>) -> Value {
    statuses
        .into_iter()
        .map(|(status, n)| (status.to_string(), Value::from(n)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The `i`-th benchmark number: valid San Francisco numbers (exchanges 200
/// to 999), 8 million before one repeats.
pub fn number(i: usize) -> String {
    format!("+1415{}{:04}", 200 + i / 10_000 % 800, i % 10_000)
}

/// Three decimals: enough for a report, stable to read.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The CPU this ran on (`model name` of `/proc/cpuinfo`) and its core count.
pub fn machine() -> Value {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
        info.lines().find_map(|l| l.strip_prefix("model name")?.split(':').nth(1).map(str::trim).map(String::from))
    });
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    serde_json::json!({"cpu": model, "cores": cores})
}

//! The process's own resources, read from `/proc` at each scrape, under the
//! names every Prometheus client library uses (`process_*`), so existing
//! dashboards and alerts work unchanged. Elsewhere than Linux they are absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Encodes a fresh [`Sample`] on every scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector;

/// One reading of the process's resources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Sample {
    pub cpu_seconds: f64,
    pub resident_bytes: i64,
    pub open_fds: i64,
    /// Unix seconds.
    pub start_time_seconds: f64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sample) = Sample::read() else { return Ok(()) };
        // Registered without `_total`: the encoder appends it to counters.
        let cpu = ConstCounter::new(sample.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", sample.resident_bytes as f64),
            ("process_open_fds", "Open file descriptors", sample.open_fds as f64),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds",
                sample.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

impl Sample {
    /// Reads `/proc/self`; `None` where there is no such thing or it cannot
    /// be parsed (a scrape then simply lacks these metrics).
    #[cfg(target_os = "linux")]
    pub(super) fn read() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
        let fields = stat_fields(&stat)?;
        // Fields 14 and 15 (utime, stime) and 22 (starttime, since boot), in
        // clock ticks; `fields` starts at field 3.
        let tick_field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let cpu_ticks = tick_field(14)?.saturating_add(tick_field(15)?);
        let started_ticks = tick_field(22)?;
        let boot_time: u64 = boot.lines().find_map(|l| l.strip_prefix("btime")?.trim().parse().ok())?;
        let resident_kib: i64 =
            status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())?;
        Some(Sample {
            cpu_seconds: cpu_ticks as f64 / ticks,
            resident_bytes: resident_kib.saturating_mul(1024),
            open_fds: i64::try_from(open_fds).unwrap_or(i64::MAX),
            start_time_seconds: boot_time as f64 + started_ticks as f64 / ticks,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn read() -> Option<Sample> {
        None
    }
}

/// The fields of `/proc/self/stat` after the command name, which is in
/// parentheses and may itself contain spaces and parentheses.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_name_may_hold_spaces_and_parentheses() {
        let fields = stat_fields("42 (po (un) d) S 1 42 42 0 -1").unwrap();
        assert_eq!(fields[..3], ["S", "1", "42"]);
        assert!(stat_fields("garbage").is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let sample = Sample::read().expect("a Linux process can read /proc/self");
        assert!(sample.open_fds >= 1, "{sample:?}");
        assert!(sample.resident_bytes > 1024 * 1024, "{sample:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(sample.start_time_seconds <= now + 1.0 && sample.start_time_seconds > now - 86_400.0, "{sample:?}");
        assert!(sample.cpu_seconds >= 0.0);
    }
}

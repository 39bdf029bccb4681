//! What operators watch besides verifications (issue 11): the build, the
//! process, the trunk, the backlog in the store, the HTTP API's requests, and
//! how long the detectors take to decide a key.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::Metrics;
use super::process::ProcessCollector;
use crate::sip::trunk::TrunkHealth;
use crate::vocab::DtmfSource;

/// The trunk as the engine's watch sees it, read at each scrape.
pub trait TrunkState: Send + Sync + std::fmt::Debug + 'static {
    /// Answering OPTIONS (or not pinged, hence assumed up).
    fn is_up(&self) -> bool;
    /// Registered; `None` when no registration is configured.
    fn is_registered(&self) -> Option<bool>;
}

impl TrunkState for TrunkHealth {
    fn is_up(&self) -> bool {
        TrunkHealth::is_up(self)
    }

    fn is_registered(&self) -> Option<bool> {
        TrunkHealth::is_registered(self)
    }
}

/// The route label of requests no route matched: one series for every
/// unknown path, so a scanner cannot grow the exposition.
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_duration() -> Histogram {
    // API requests take milliseconds; the tail is the store under load and
    // the 30 s request timeout.
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

fn detection_latency() -> Histogram {
    // The in-band detector decides after ~32 ms of tone by design; RFC 4733
    // senders report 0 to a few packet intervals. Beyond 100 ms something
    // buffers or drops the start of presses.
    Histogram::new([0.01, 0.02, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.5])
}

/// The trunk gauges, encoded only once the engine has said where to read them.
#[derive(Debug, Default)]
struct TrunkCollector {
    state: Arc<OnceLock<Arc<dyn TrunkState>>>,
}

impl Collector for TrunkCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(state) = self.state.get() else { return Ok(()) };
        let up = ConstGauge::new(i64::from(state.is_up()));
        up.encode(encoder.encode_descriptor(
            "pound_trunk_up",
            "1 while the trunk answers OPTIONS (or is not pinged), 0 while dialling is paused for it",
            None,
            up.metric_type(),
        )?)?;
        if let Some(registered) = state.is_registered() {
            let registered = ConstGauge::new(i64::from(registered));
            registered.encode(encoder.encode_descriptor(
                "pound_trunk_registered",
                "1 while the registration with the trunk (trunk.register_as) holds; absent without one",
                None,
                registered.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// The metrics of this module, registered by [`Operations::new`].
#[derive(Debug)]
pub(super) struct Operations {
    trunk: Arc<OnceLock<Arc<dyn TrunkState>>>,
    queue_depth: Gauge,
    webhooks_pending: Gauge,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: HistogramFamily<RouteLabel>,
    detection_latency: HistogramFamily<SourceLabel>,
}

impl Operations {
    pub(super) fn new(registry: &mut Registry) -> Operations {
        registry.register(
            "pound_build",
            "The version and commit of this binary",
            Info::new([("version", env!("CARGO_PKG_VERSION")), ("commit", crate::COMMIT)]),
        );
        registry.register_collector(Box::new(ProcessCollector));
        let trunk = TrunkCollector::default();
        let operations = Operations {
            trunk: trunk.state.clone(),
            queue_depth: Gauge::default(),
            webhooks_pending: Gauge::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(request_duration),
            detection_latency: Family::new_with_constructor(detection_latency),
        };
        registry.register_collector(Box::new(trunk));
        registry.register(
            "pound_queue_depth",
            "Verifications due and waiting for a node (what the next claim would take), from the store",
            operations.queue_depth.clone(),
        );
        registry.register(
            "pound_webhooks_pending",
            "Webhooks neither delivered nor given up, from the store",
            operations.webhooks_pending.clone(),
        );
        registry.register(
            "pound_http_requests",
            "HTTP API requests, by route template and status class",
            operations.http_requests.clone(),
        );
        registry.register(
            "pound_http_request_duration_seconds",
            "HTTP API request time until the response head, by route template",
            operations.http_duration.clone(),
        );
        registry.register(
            "pound_dtmf_detection_latency_seconds",
            "Time from the start of a key's tone to the key being decided, by source (inband, rfc4733)",
            operations.detection_latency.clone(),
        );
        for source in [DtmfSource::Inband, DtmfSource::Rfc4733] {
            operations.detection_latency.get_or_create_owned(&SourceLabel { source: source.as_str() });
        }
        operations
    }
}

/// Recording the operations metrics.
impl Metrics {
    /// Where `pound_trunk_up` and `pound_trunk_registered` are read from;
    /// only the first call counts (one engine per process).
    pub fn watch_trunk(&self, state: Arc<dyn TrunkState>) {
        let _ = self.operations.trunk.set(state);
    }

    /// The store's backlog: verifications due and unclaimed, webhooks pending.
    pub fn backlog(&self, queue_depth: u64, webhooks_pending: u64) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.operations.queue_depth.set(gauge(queue_depth));
        self.operations.webhooks_pending.set(gauge(webhooks_pending));
    }

    /// An HTTP request was answered; `route` is the matched route's template
    /// (`/v1/verifications/{id}`) or [`UNMATCHED_ROUTE`], never the raw path.
    pub fn http_request(&self, route: &str, status: u16, took: Duration) {
        let status = match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        };
        let route = route.to_string();
        self.operations.http_requests.get_or_create(&RequestLabels { route: route.clone(), status }).inc();
        self.operations.http_duration.get_or_create(&RouteLabel { route }).observe(took.as_secs_f64());
    }

    /// A key was decided `latency` after its tone began (in-band: from the
    /// detector; RFC 4733: the event's duration at its first packet).
    pub fn dtmf_detection_latency(&self, source: DtmfSource, latency: Duration) {
        self.operations
            .detection_latency
            .get_or_create(&SourceLabel { source: source.as_str() })
            .observe(latency.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn line_value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[derive(Debug, Default)]
    struct Trunk {
        up: AtomicBool,
        registering: bool,
    }

    impl TrunkState for Trunk {
        fn is_up(&self) -> bool {
            self.up.load(Ordering::Relaxed)
        }
        fn is_registered(&self) -> Option<bool> {
            self.registering.then(|| self.is_up())
        }
    }

    #[test]
    fn build_info_names_version_and_commit() {
        let text = Metrics::new().encode();
        let line = text.lines().find(|l| l.starts_with("pound_build_info{")).expect(&text);
        assert!(line.contains(&format!("commit=\"{}\"", crate::COMMIT)), "{line}");
        assert!(line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{line}");
        assert!(line.ends_with(" 1"), "{line}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_read_at_scrape_time() {
        let metrics = Metrics::new();
        let fds = |text: &str| line_value(text, "process_open_fds").expect(text);
        let held: Vec<std::fs::File> = (0..5).map(|_| std::fs::File::open("/proc/self/stat").unwrap()).collect();
        let text = metrics.encode();
        // Other tests open and close files meanwhile: at least the ones held.
        assert!(fds(&text) >= 5.0, "{text}");
        drop(held);
        assert!(line_value(&text, "process_resident_memory_bytes").unwrap() > 0.0, "{text}");
        assert!(line_value(&text, "process_start_time_seconds").unwrap() > 1.0e9, "{text}");
        assert!(line_value(&text, "process_cpu_seconds_total").is_some(), "{text}");
    }

    #[test]
    fn trunk_state_is_read_at_scrape_time_and_registration_only_when_configured() {
        let metrics = Metrics::new();
        assert!(!metrics.encode().contains("pound_trunk_up"), "absent until the engine names its trunk");
        let trunk = Arc::new(Trunk { up: AtomicBool::new(true), registering: true });
        metrics.watch_trunk(trunk.clone());
        let text = metrics.encode();
        assert_eq!(line_value(&text, "pound_trunk_up"), Some(1.0), "{text}");
        assert_eq!(line_value(&text, "pound_trunk_registered"), Some(1.0), "{text}");
        trunk.up.store(false, Ordering::Relaxed);
        let text = metrics.encode();
        assert_eq!(line_value(&text, "pound_trunk_up"), Some(0.0), "{text}");
        assert_eq!(line_value(&text, "pound_trunk_registered"), Some(0.0), "{text}");
        let unregistered = Metrics::new();
        unregistered.watch_trunk(Arc::new(Trunk { up: AtomicBool::new(true), registering: false }));
        let text = unregistered.encode();
        assert_eq!(line_value(&text, "pound_trunk_up"), Some(1.0), "{text}");
        assert!(!text.contains("pound_trunk_registered"), "{text}");
    }

    #[test]
    fn http_requests_by_route_template_and_status_class() {
        let metrics = Metrics::new();
        metrics.http_request("/v1/verifications/{id}", 200, Duration::from_millis(3));
        metrics.http_request("/v1/verifications/{id}", 404, Duration::from_millis(1));
        metrics.http_request("/v1/verifications/{id}", 404, Duration::from_millis(1));
        metrics.http_request(UNMATCHED_ROUTE, 503, Duration::from_millis(1));
        let text = metrics.encode();
        let series = |route: &str, status: &str| {
            line_value(&text, &format!("pound_http_requests_total{{route=\"{route}\",status=\"{status}\"}}"))
        };
        assert_eq!(series("/v1/verifications/{id}", "2xx"), Some(1.0), "{text}");
        assert_eq!(series("/v1/verifications/{id}", "4xx"), Some(2.0), "{text}");
        assert_eq!(series("unmatched", "5xx"), Some(1.0), "{text}");
        assert_eq!(
            line_value(&text, "pound_http_request_duration_seconds_count{route=\"/v1/verifications/{id}\"}"),
            Some(3.0),
            "{text}"
        );
    }

    #[test]
    fn backlog_and_detection_latency() {
        let metrics = Metrics::new();
        metrics.backlog(7, 2);
        metrics.dtmf_detection_latency(DtmfSource::Inband, Duration::from_millis(36));
        let text = metrics.encode();
        assert_eq!(line_value(&text, "pound_queue_depth"), Some(7.0), "{text}");
        assert_eq!(line_value(&text, "pound_webhooks_pending"), Some(2.0), "{text}");
        let bucket = |source: &str, le: &str| {
            line_value(
                &text,
                &format!("pound_dtmf_detection_latency_seconds_bucket{{source=\"{source}\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("inband", "0.035"), Some(0.0), "{text}");
        assert_eq!(bucket("inband", "0.04"), Some(1.0), "{text}");
        assert_eq!(bucket("rfc4733", "0.5"), Some(0.0), "{text}");
    }
}

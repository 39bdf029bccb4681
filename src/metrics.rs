//! Prometheus metrics: verifications, calls, SIP responses, DTMF and webhooks.
//!
//! One [`Metrics`] per process, shared through `Arc`; the engine records call
//! events, the API records cancels and webhook deliveries, and `GET /metrics`
//! serves [`Metrics::encode`].

mod operations;
mod process;

pub use operations::{TrunkState, UNMATCHED_ROUTE};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::vocab::DtmfSource;
use crate::vocab::Outcome;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How one webhook delivery try ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookResult {
    /// The receiver answered 2xx.
    Delivered,
    /// The try failed; another is scheduled.
    Failed,
    /// The try failed and it was the last one.
    GaveUp,
}

impl WebhookResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Delivered => "delivered",
            WebhookResult::Failed => "failed",
            WebhookResult::GaveUp => "gave_up",
        }
    }
}

/// Every outcome, so each series exists from the start (an outcome added
/// later still counts; its series appears with its first verification).
const ALL_OUTCOMES: [Outcome; 14] = [
    Outcome::Verified,
    Outcome::FraudReported,
    Outcome::WrongInput,
    Outcome::NoInput,
    Outcome::CalleeHangup,
    Outcome::Busy,
    Outcome::Declined,
    Outcome::NoAnswer,
    Outcome::Unreachable,
    Outcome::InvalidNumber,
    Outcome::Blocked,
    Outcome::Canceled,
    Outcome::Failed,
    Outcome::Voicemail,
];

/// Every reason the toll-fraud guard gives, so each series starts at zero.
pub const POLICY_REFUSAL_REASONS: [&str; 10] = [
    "country_not_allowed",
    "prefix_denied",
    "number_type_not_allowed",
    "invalid_number",
    "rate_limited",
    "country_rate_limited",
    "prefix_rate_limited",
    "global_rate_limited",
    "cooldown",
    "prefix_paused",
];

/// Label sets. Values are `&'static str` so recording never allocates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabel {
    class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Every metric pound exports, with the registry that encodes them.
///
/// The metric handles are cheap clones sharing their values with the copies
/// registered in `registry`, so recording needs no lock.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http: HttpMetrics,
    verifications: Family<OutcomeLabel, Counter>,
    calls_in_progress: Gauge,
    sip_responses: Family<ClassLabel, Counter>,
    dtmf_digits: Family<SourceLabel, Counter>,
    answer_to_key: Histogram,
    call_setup: Histogram,
    webhook_deliveries: Family<ResultLabel, Counter>,
    // Strict media and SIP origins (issue 7).
    rtp_foreign_packets: Counter,
    sip_foreign_messages: Counter,
    // The toll-fraud guard (issue 7).
    policy_refusals: Family<ReasonLabel, Counter>,
    breaker_trips: Counter,
    breakers_open: Gauge,
    // Operations (issue 11): build, process, trunk, backlog, HTTP requests, detection latency.
    operations: operations::Operations,
}

/// The HTTP server's own health under load and abuse (issue 7).
#[derive(Debug, Default)]
struct HttpMetrics {
    connections: Gauge,
    connections_refused: Counter,
    timeouts: Family<KindLabel, Counter>,
    auth_throttled: Counter,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

impl HttpMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register("pound_http_connections", "Open HTTP API connections", self.connections.clone());
        registry.register(
            "pound_http_connections_refused",
            "HTTP connections closed at once: the client already held api.max_connections_per_client",
            self.connections_refused.clone(),
        );
        registry.register(
            "pound_http_timeouts",
            "HTTP connections or requests ended by a timeout, by kind (header, request, idle)",
            self.timeouts.clone(),
        );
        registry.register(
            "pound_http_auth_throttled",
            "Requests refused with 429 after too many failed authentications from their client",
            self.auth_throttled.clone(),
        );
        for kind in ["header", "request", "idle"] {
            self.timeouts.get_or_create_owned(&KindLabel { kind });
        }
    }
}

/// Recording the HTTP server's metrics.
impl Metrics {
    /// An HTTP connection was accepted (pair with [`Metrics::http_connection_closed`]).
    pub fn http_connection_opened(&self) {
        self.http.connections.inc();
    }

    /// An HTTP connection ended.
    pub fn http_connection_closed(&self) {
        self.http.connections.dec();
    }

    /// An HTTP connection was closed at once for its client's connection limit.
    pub fn http_connection_refused(&self) {
        self.http.connections_refused.inc();
    }

    /// A timeout ended an HTTP connection or request: `header`, `request` or `idle`.
    pub fn http_timeout(&self, kind: &'static str) {
        self.http.timeouts.get_or_create(&KindLabel { kind }).inc();
    }

    /// A request was refused for its client's failed authentications.
    pub fn http_auth_throttled(&self) {
        self.http.auth_throttled.inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric, all at zero.
    pub fn new() -> Metrics {
        let verifications = Family::<OutcomeLabel, Counter>::default();
        let calls_in_progress = Gauge::default();
        let sip_responses = Family::<ClassLabel, Counter>::default();
        let dtmf_digits = Family::<SourceLabel, Counter>::default();
        // A person needs one to a few seconds to press a key after the prompt
        // starts; the tail (tens of seconds) is the input timeout.
        let answer_to_key = Histogram::new([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 60.0]);
        // Call setup is dominated by ringing: from under a second (an
        // auto-answering phone) to the 45-60 s ring timeout.
        let call_setup = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0]);
        let webhook_deliveries = Family::<ResultLabel, Counter>::default();

        let mut registry = Registry::default();
        let http = HttpMetrics::default();
        http.register(&mut registry);
        // Counters are registered without `_total`: the encoder appends it
        // (and prometheus-client 0.26 asserts against a doubled suffix).
        registry.register("pound_verifications", "Verifications finished, by outcome", verifications.clone());
        registry.register("pound_calls_in_progress", "Verification calls running now", calls_in_progress.clone());
        registry.register(
            "pound_sip_responses",
            "SIP responses to our INVITEs, by class (1xx..6xx)",
            sip_responses.clone(),
        );
        registry.register("pound_dtmf_digits", "DTMF digits received, by where they came from", dtmf_digits.clone());
        registry.register(
            "pound_answer_to_key_seconds",
            "Time from the answer to the deciding key (how long people take to press it)",
            answer_to_key.clone(),
        );
        registry.register("pound_call_setup_seconds", "Time from INVITE to answer", call_setup.clone());
        registry.register("pound_webhook_deliveries", "Webhook delivery tries, by result", webhook_deliveries.clone());
        // Every known label value starts at zero: a series that appears only
        // with its first event breaks `rate()` and alerts on absence, and the
        // text format would not even list the metric until then.
        for outcome in ALL_OUTCOMES {
            verifications.get_or_create_owned(&OutcomeLabel { outcome: outcome.as_str() });
        }
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"] {
            sip_responses.get_or_create_owned(&ClassLabel { class });
        }
        for source in [DtmfSource::Rfc4733, DtmfSource::Info, DtmfSource::Inband] {
            dtmf_digits.get_or_create_owned(&SourceLabel { source: source.as_str() });
        }
        for result in [WebhookResult::Delivered, WebhookResult::Failed, WebhookResult::GaveUp] {
            webhook_deliveries.get_or_create_owned(&ResultLabel { result: result.as_str() });
        }
        // Strict media and SIP origins (issue 7).
        let rtp_foreign_packets = Counter::default();
        let sip_foreign_messages = Counter::default();
        registry.register(
            "pound_rtp_foreign_packets",
            "RTP datagrams dropped: from elsewhere than the callee's media address, or before the answer",
            rtp_foreign_packets.clone(),
        );
        registry.register(
            "pound_sip_foreign_messages",
            "SIP messages of a call not acted on: from elsewhere than the next hop or the dialog's remote target",
            sip_foreign_messages.clone(),
        );
        // The toll-fraud guard (issue 7): refusals by their API error code,
        // and the per-prefix breaker.
        let policy_refusals = Family::<ReasonLabel, Counter>::default();
        let breaker_trips = Counter::default();
        let breakers_open = Gauge::default();
        registry.register(
            "pound_policy_refusals",
            "Verifications refused by the toll-fraud guard, by reason (the API error code)",
            policy_refusals.clone(),
        );
        registry.register(
            "pound_prefix_breaker_trips",
            "Times a burst of distinct numbers in one prefix paused that prefix",
            breaker_trips.clone(),
        );
        registry.register(
            "pound_prefix_breakers_open",
            "Prefixes paused by the breaker, across all nodes, as of this node's last admission",
            breakers_open.clone(),
        );
        for reason in POLICY_REFUSAL_REASONS {
            policy_refusals.get_or_create_owned(&ReasonLabel { reason });
        }
        let operations = operations::Operations::new(&mut registry);
        Metrics {
            registry,
            http,
            verifications,
            calls_in_progress,
            sip_responses,
            dtmf_digits,
            answer_to_key,
            call_setup,
            webhook_deliveries,
            rtp_foreign_packets,
            sip_foreign_messages,
            policy_refusals,
            breaker_trips,
            breakers_open,
            operations,
        }
    }

    /// Every metric in the Prometheus text exposition format (0.0.4); serve
    /// it with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; the Result is fmt::Write's.
        if let Err(err) = prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(%err, "encoding metrics failed");
        }
        text
    }

    /// A verification reached its final outcome.
    pub fn verification_finished(&self, outcome: Outcome) {
        self.verifications.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).inc();
    }

    /// A verification call started (pair with [`Metrics::call_ended`]).
    pub fn call_started(&self) {
        self.calls_in_progress.inc();
    }

    /// A verification call ended.
    pub fn call_ended(&self) {
        self.calls_in_progress.dec();
    }

    /// A SIP response arrived; counted by class. Codes outside 100..=699
    /// (which a parser should never hand over) are not counted.
    pub fn sip_response(&self, status: u16) {
        let class = match status / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            6 => "6xx",
            _ => return,
        };
        self.sip_responses.get_or_create(&ClassLabel { class }).inc();
    }

    /// A DTMF digit was received.
    pub fn digit(&self, source: DtmfSource) {
        self.dtmf_digits.get_or_create(&SourceLabel { source: source.as_str() }).inc();
    }

    /// Seconds from the answer to the deciding key.
    pub fn answer_to_key(&self, seconds: f64) {
        self.answer_to_key.observe(seconds);
    }

    /// Seconds from the INVITE to the answer.
    pub fn call_setup(&self, seconds: f64) {
        self.call_setup.observe(seconds);
    }

    /// A webhook delivery try ended.
    pub fn webhook(&self, result: WebhookResult) {
        self.webhook_deliveries.get_or_create(&ResultLabel { result: result.as_str() }).inc();
    }

    /// What a finished call dropped from foreign addresses: RTP datagrams and
    /// SIP messages.
    pub fn foreign_traffic(&self, rtp_packets: u64, sip_messages: u64) {
        self.rtp_foreign_packets.inc_by(rtp_packets);
        self.sip_foreign_messages.inc_by(sip_messages);
    }

    /// The toll-fraud guard refused a verification (at the API, or in the
    /// engine before dialling); `reason` is the error code.
    pub fn policy_refused(&self, reason: &'static str) {
        self.policy_refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A burst tripped a prefix breaker.
    pub fn breaker_tripped(&self) {
        self.breaker_trips.inc();
    }

    /// How many prefix breakers the store reports open.
    pub fn breakers_open(&self, open: u64) {
        self.breakers_open.set(i64::try_from(open).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn exports_every_metric_name_even_at_zero() {
        let text = Metrics::new().encode();
        for name in [
            "pound_http_connections",
            "pound_http_connections_refused_total",
            "pound_http_timeouts_total",
            "pound_http_auth_throttled_total",
            "pound_verifications_total",
            "pound_calls_in_progress",
            "pound_sip_responses_total",
            "pound_dtmf_digits_total",
            "pound_answer_to_key_seconds",
            "pound_dtmf_detection_latency_seconds",
            "pound_call_setup_seconds",
            "pound_webhook_deliveries_total",
            "pound_rtp_foreign_packets_total",
            "pound_sip_foreign_messages_total",
            "pound_policy_refusals_total",
            "pound_prefix_breaker_trips_total",
            "pound_prefix_breakers_open",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing from\n{text}");
        }
        assert!(!text.contains("_total_total"), "{text}");
    }

    #[test]
    fn records_with_the_right_labels() {
        let metrics = Metrics::new();
        metrics.verification_finished(Outcome::Verified);
        metrics.verification_finished(Outcome::Verified);
        metrics.verification_finished(Outcome::NoAnswer);
        metrics.call_started();
        metrics.call_started();
        metrics.call_ended();
        metrics.sip_response(180);
        metrics.sip_response(486);
        metrics.sip_response(603);
        metrics.sip_response(99);
        metrics.sip_response(700);
        metrics.digit(DtmfSource::Inband);
        metrics.answer_to_key(1.5);
        metrics.call_setup(0.3);
        metrics.webhook(WebhookResult::GaveUp);
        metrics.foreign_traffic(120, 2);
        metrics.foreign_traffic(3, 0);
        let text = metrics.encode();
        assert_eq!(line_value(&text, "pound_verifications_total{outcome=\"verified\"}"), Some(2.0));
        assert_eq!(line_value(&text, "pound_verifications_total{outcome=\"no_answer\"}"), Some(1.0));
        assert_eq!(line_value(&text, "pound_calls_in_progress"), Some(1.0));
        assert_eq!(line_value(&text, "pound_sip_responses_total{class=\"1xx\"}"), Some(1.0));
        assert_eq!(line_value(&text, "pound_sip_responses_total{class=\"6xx\"}"), Some(1.0));
        assert_eq!(line_value(&text, "pound_sip_responses_total{class=\"2xx\"}"), Some(0.0));
        assert_eq!(text.matches("pound_sip_responses_total{").count(), 6, "out-of-range codes are dropped:\n{text}");
        assert_eq!(line_value(&text, "pound_dtmf_digits_total{source=\"inband\"}"), Some(1.0));
        assert_eq!(line_value(&text, "pound_answer_to_key_seconds_count"), Some(1.0));
        assert_eq!(line_value(&text, "pound_answer_to_key_seconds_bucket{le=\"1\"}"), Some(0.0));
        assert_eq!(line_value(&text, "pound_answer_to_key_seconds_bucket{le=\"2\"}"), Some(1.0));
        assert_eq!(line_value(&text, "pound_call_setup_seconds_sum"), Some(0.3));
        assert_eq!(line_value(&text, "pound_webhook_deliveries_total{result=\"gave_up\"}"), Some(1.0));
        assert_eq!(line_value(&text, "pound_rtp_foreign_packets_total"), Some(123.0));
        assert_eq!(line_value(&text, "pound_sip_foreign_messages_total"), Some(2.0));
        metrics.policy_refused("prefix_denied");
        metrics.breaker_tripped();
        metrics.breakers_open(2);
        let text = metrics.encode();
        assert_eq!(line_value(&text, "pound_policy_refusals_total{reason=\"prefix_denied\"}"), Some(1.0));
        assert_eq!(line_value(&text, "pound_policy_refusals_total{reason=\"cooldown\"}"), Some(0.0));
        assert_eq!(line_value(&text, "pound_prefix_breaker_trips_total"), Some(1.0));
        assert_eq!(line_value(&text, "pound_prefix_breakers_open"), Some(2.0));
    }

    #[test]
    fn is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }
}

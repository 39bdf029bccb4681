//! `pound.toml`: the service's configuration. Every key has a default that
//! works on loopback; flags and `POUND_*` variables override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::api::ApiKeyConfig;
use crate::api::limits::HttpLimits;
use crate::api::ssrf::{Cidr, TargetPolicy};
use crate::media::codec::Codec;
use crate::net::TlsFiles;
use crate::policy::numbers::{DEFAULT_ALLOWED_COUNTRIES, is_valid_prefix};
use crate::policy::{NumberRules, VelocityLimits};
use crate::stir::{Attestation, Signer, caller_number};
use crate::vocab::{SrtpPolicy, Transport};

/// Expiry (issue 11): thirty days; a verification older than that is no
/// longer a proof of anything the requester is waiting for.
const MAX_EXPIRE_AFTER_S: u64 = 30 * 86_400;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Names this node in leases and attempt records (default: host name and process id).
    pub node_id: Option<String>,
    /// Folder of extra dialplans; every `*.toml` in it is loaded at start, on
    /// top of (and replacing by name) the compiled-in ones. None: compiled-in only.
    pub dialplans: Option<PathBuf>,
    pub store: StoreSection,
    pub api: ApiSection,
    pub sip: SipSection,
    pub trunk: TrunkSection,
    pub rtp: RtpSection,
    pub policy: PolicySection,
    pub webhooks: WebhookSection,
    pub engine: EngineSection,
    pub log: LogSection,
    pub capture: CaptureSection,
}

/// `[capture]`: each call's SIP and RTP written as a pcap file that
/// `pound replay` runs again (off unless `dir` is set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSection {
    /// The folder captures go to (created owner-only if missing); unset: no capture.
    pub dir: Option<PathBuf>,
    /// The folder's budget: the oldest captures are deleted to keep within it.
    pub max_bytes: u64,
    /// One call's capture stops growing at this size.
    pub max_call_bytes: u64,
}

impl Default for CaptureSection {
    fn default() -> Self {
        CaptureSection { dir: None, max_bytes: 1 << 30, max_call_bytes: 16 << 20 }
    }
}

/// A capture smaller than this could not hold a call's first messages.
const MIN_CAPTURE_BYTES: u64 = 64 * 1024;

impl CaptureSection {
    /// The capture folder, if captures are on.
    pub fn folder(&self) -> Option<crate::capture::CaptureFolder> {
        let dir = self.dir.clone()?;
        Some(crate::capture::CaptureFolder { dir, max_bytes: self.max_bytes, max_call_bytes: self.max_call_bytes })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.dir.is_some() && !(MIN_CAPTURE_BYTES <= self.max_call_bytes && self.max_call_bytes <= self.max_bytes) {
            return Err(ConfigError::Invalid(format!(
                "capture.max_call_bytes must be at least {MIN_CAPTURE_BYTES} and at most capture.max_bytes, not {} with {}",
                self.max_call_bytes, self.max_bytes
            )));
        }
        Ok(())
    }
}

/// `[log]`: how `pound serve` writes its log (flags and `POUND_LOG_FORMAT` win).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` or `json`.
    pub format: Option<crate::logging::LogFormat>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sqlite://FILE` (created if missing) or `postgres://…`.
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    pub bind: SocketAddr,
    /// Bearer keys accepted besides those made with `pound keys create`:
    /// plain strings, or tables with the key's grants ([`ApiKeyConfig`]).
    #[serde(deserialize_with = "deserialize_api_keys")]
    pub keys: Vec<ApiKeyConfig>,
    pub max_body_bytes: usize,
    // Slow and abusive clients (issue 7): see `api::limits::HttpLimits`.
    pub header_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_connections: usize,
    /// 0: no per-client limit (behind a reverse proxy every client is the proxy).
    pub max_connections_per_client: usize,
    /// 0: no limit.
    pub auth_failures_per_minute: u32,
    /// Creates waiting for the store at once, then `429 queue_full`; 0: no limit.
    pub queue_limit: usize,
}

impl ApiSection {
    /// The HTTP server's limits these keys describe.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            auth_failures_per_minute: self.auth_failures_per_minute,
            queue_limit: self.queue_limit,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// The node's one SIP address (UDP, and TCP with `transport = "tcp"`):
    /// every call, REGISTER and OPTIONS leaves from it and is answered to it.
    /// An unspecified IP listens on every interface, and Via and Contact
    /// carry the one towards the trunk.
    pub bind: SocketAddr,
    pub transport: TransportName,
    /// Codecs offered, in order of preference.
    pub codecs: Vec<CodecName>,
    /// PEM CA certificates that must sign the trunk's TLS certificate;
    /// none: the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate chain and key for trunks that require mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl SipSection {
    /// The TLS files, as the endpoint takes them.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles { ca: self.tls_ca.clone(), cert: self.tls_cert.clone(), key: self.tls_key.clone() }
    }
}

/// `udp`, `tcp` or `tls`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportName {
    Udp,
    Tcp,
    Tls,
}

impl From<TransportName> for Transport {
    fn from(name: TransportName) -> Transport {
        match name {
            TransportName::Udp => Transport::Udp,
            TransportName::Tcp => Transport::Tcp,
            TransportName::Tls => Transport::Tls,
        }
    }
}

/// `pcmu`, `pcma` or `opus`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    Pcmu,
    Pcma,
    Opus,
}

impl From<CodecName> for Codec {
    fn from(name: CodecName) -> Codec {
        match name {
            CodecName::Pcmu => Codec::Pcmu,
            CodecName::Pcma => Codec::Pcma,
            CodecName::Opus => Codec::Opus,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrunkSection {
    /// `sip:host[:port]` where every verification call goes.
    pub uri: String,
    pub auth_user: Option<String>,
    pub auth_password: Option<String>,
    /// Caller ID: From user and display name, and P-Asserted-Identity.
    pub from_user: String,
    pub from_name: Option<String>,
    pub asserted_identity: Option<String>,
    /// Call starts per second the carrier accepts.
    pub calls_per_second: f64,
    /// Register with the trunk as this address of record (`sip:user@domain`); none: no REGISTER.
    pub register_as: Option<String>,
    pub register_expires_s: u64,
    /// Seconds between OPTIONS pings to the trunk; 0 sends none.
    pub options_interval_s: u64,
    /// SRTP with SDES keys: `mandatory`, `optional` or `off`. The keys travel
    /// in the SDP, so anything but `off` needs SIP over TLS.
    pub srtp: SrtpPolicy,
    /// `[trunk.stir]`: sign every INVITE (STIR/SHAKEN); none: calls go unsigned.
    pub stir: Option<StirSection>,
}

/// `[trunk.stir]`: the trunk's STIR/SHAKEN signing identity. All three keys are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StirSection {
    /// The P-256 private key, PEM (PKCS#8 or SEC1). Read at start; never logged.
    pub key: PathBuf,
    /// The https URL of the certificate that verifiers fetch.
    pub x5u: String,
    /// `A`, `B` or `C`.
    pub attest: Attestation,
}

impl StirSection {
    /// Reads the key: a file that is missing or not a P-256 key, or a bad x5u, is refused here.
    pub fn signer(&self) -> Result<Signer, ConfigError> {
        Signer::load(&self.key, &self.x5u, self.attest).map_err(|e| ConfigError::Invalid(format!("trunk.stir: {e}")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtpSection {
    /// `"10000-20000"`, or empty for any free port.
    pub ports: String,
    /// Strict media: consecutive packets (same SSRC) the callee's stream must
    /// send from a new address before pound listens there instead of the
    /// address the SDP named (symmetric RTP behind a NAT that rebinds).
    pub learning_packets: u16,
}

impl Default for RtpSection {
    fn default() -> Self {
        RtpSection { ports: String::new(), learning_packets: crate::rtp::DEFAULT_LEARNING_PACKETS }
    }
}

/// Bounds of `rtp.learning_packets`: at least one packet must prove a move;
/// more than a second of packets would leave a moved callee unheard too long.
const LEARNING_PACKETS: std::ops::RangeInclusive<u16> = 1..=50;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// E.164 country calling codes accepted (`[1, 44]`); empty accepts all.
    pub allowed_country_codes: Vec<u16>,
    /// Seconds between two verifications of the same number.
    pub cooldown_s: u64,
    /// Call attempts per verification (at most 5).
    pub max_attempts: u32,
    /// Verifications one API key may create per sliding hour.
    pub max_per_key_per_hour: u32,
    // The toll-fraud guard (issue 7); `policy::numbers` and `policy::velocity`
    // say what each does.
    /// Regions (`US`, `GB`, `001` for the global services) that may be called; empty accepts all.
    pub allowed_countries: Vec<String>,
    /// E.164 prefixes refused besides the built-in deny-list.
    pub deny_prefixes: Vec<String>,
    /// E.164 prefixes exempt from the deny-lists and the number-type check.
    pub allow_prefixes: Vec<String>,
    pub max_per_country_per_hour: u32,
    pub max_per_prefix_per_hour: u32,
    /// Verifications per sliding hour for all nodes sharing the store together.
    pub max_global_per_hour: u32,
    /// Digits of the E.164 number (country code included) that make a prefix.
    pub prefix_digits: usize,
    /// More distinct numbers than this in one prefix within `breaker_window_s` pause the prefix.
    pub breaker_numbers: u32,
    pub breaker_window_s: u64,
    pub breaker_pause_s: u64,
    // Expiry (issue 11).
    /// A verification not completed this long after its creation ends
    /// `expired` (once no call of it runs) and is never dialled again.
    pub expire_after_s: u64,
}

impl PolicySection {
    /// Which numbers may be called.
    pub fn number_rules(&self) -> NumberRules {
        NumberRules {
            allowed_countries: self.allowed_countries.clone(),
            allowed_country_codes: self.allowed_country_codes.clone(),
            deny_prefixes: self.deny_prefixes.clone(),
            allow_prefixes: self.allow_prefixes.clone(),
        }
    }

    /// The velocity limits besides the per-key one and the cooldown.
    pub fn velocity_limits(&self) -> VelocityLimits {
        VelocityLimits {
            max_per_country_per_hour: self.max_per_country_per_hour,
            max_per_prefix_per_hour: self.max_per_prefix_per_hour,
            max_global_per_hour: self.max_global_per_hour,
            prefix_digits: self.prefix_digits,
            breaker_numbers: self.breaker_numbers,
            breaker_window: std::time::Duration::from_secs(self.breaker_window_s),
            breaker_pause: std::time::Duration::from_secs(self.breaker_pause_s),
        }
    }

    /// The toll-fraud keys' ranges.
    fn validate_toll_fraud(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for prefix in self.deny_prefixes.iter().chain(&self.allow_prefixes) {
            if !is_valid_prefix(prefix) {
                return invalid(format!("policy prefixes must be + and 1 to 15 digits, not {prefix:?}"));
            }
        }
        for country in &self.allowed_countries {
            let region = country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase());
            if !(region || country == "001") {
                return invalid(format!(
                    "policy.allowed_countries holds region codes such as \"US\" (or \"001\"), not {country:?}"
                ));
            }
        }
        if !(2..=15).contains(&self.prefix_digits) {
            return invalid(format!("policy.prefix_digits must be 2 to 15, not {}", self.prefix_digits));
        }
        if self.breaker_numbers == 0 || self.breaker_window_s == 0 {
            return invalid("policy.breaker_numbers and policy.breaker_window_s must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSection {
    /// The HMAC-SHA256 key of `Pound-Signature`.
    pub secret: String,
    /// Tries before a delivery is given up (and shown as failed).
    pub max_attempts: u32,
    // SSRF guard (issue 7): destinations that are not global unicast are
    // refused unless allowed here.
    /// Allow loopback, private, link-local and reserved destinations.
    pub allow_private: bool,
    /// Address blocks allowed even though they are not global (`"10.1.0.0/16"`).
    pub allow_cidrs: Vec<Cidr>,
}

impl WebhookSection {
    /// The destination guard these keys describe.
    pub fn targets(&self) -> TargetPolicy {
        TargetPolicy { allow_private: self.allow_private, allow_cidrs: self.allow_cidrs.clone() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub max_concurrent_calls: usize,
    /// Seconds a claim lasts without renewal (a dead node's work is retaken after this).
    pub lease_s: u64,
    /// Seconds running calls get to finish on SIGTERM.
    pub shutdown_grace_s: u64,
    /// Milliseconds between the engine's looks for due work when nothing
    /// wakes it: new work does (this node's API, and on PostgreSQL every
    /// node's), so the poll finds retries whose time came, leases that ran
    /// out and work whose wake-up was lost in a database outage.
    pub poll_interval_ms: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { url: "sqlite://pound.db".into() }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        let limits = HttpLimits::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        ApiSection {
            bind: "127.0.0.1:8080".parse().expect("literal"),
            keys: Vec::new(),
            max_body_bytes: 16 * 1024,
            header_timeout_ms: ms(limits.header_timeout),
            request_timeout_ms: ms(limits.request_timeout),
            idle_timeout_ms: ms(limits.idle_timeout),
            max_connections: limits.max_connections,
            max_connections_per_client: limits.max_connections_per_client,
            auth_failures_per_minute: limits.auth_failures_per_minute,
            queue_limit: limits.queue_limit,
        }
    }
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            bind: "0.0.0.0:5060".parse().expect("literal"),
            transport: TransportName::Udp,
            codecs: vec![CodecName::Pcmu, CodecName::Pcma, CodecName::Opus],
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for TrunkSection {
    fn default() -> Self {
        TrunkSection {
            uri: "sip:127.0.0.1:5070".into(),
            auth_user: None,
            auth_password: None,
            from_user: "pound".into(),
            from_name: None,
            asserted_identity: None,
            calls_per_second: 10.0,
            register_as: None,
            register_expires_s: 3600,
            options_interval_s: 30,
            stir: None,
            srtp: SrtpPolicy::Off,
        }
    }
}

impl Default for PolicySection {
    fn default() -> Self {
        let velocity = VelocityLimits::default();
        PolicySection {
            allowed_country_codes: Vec::new(),
            cooldown_s: 60,
            max_attempts: 3,
            max_per_key_per_hour: 100,
            // The toll-fraud guard (issue 7): the same defaults as the API's.
            allowed_countries: DEFAULT_ALLOWED_COUNTRIES.iter().map(|c| (*c).to_string()).collect(),
            deny_prefixes: Vec::new(),
            allow_prefixes: Vec::new(),
            max_per_country_per_hour: velocity.max_per_country_per_hour,
            max_per_prefix_per_hour: velocity.max_per_prefix_per_hour,
            max_global_per_hour: velocity.max_global_per_hour,
            prefix_digits: velocity.prefix_digits,
            breaker_numbers: velocity.breaker_numbers,
            breaker_window_s: velocity.breaker_window.as_secs(),
            breaker_pause_s: velocity.breaker_pause.as_secs(),
            // Expiry (issue 11).
            expire_after_s: 600,
        }
    }
}

impl Default for WebhookSection {
    fn default() -> Self {
        WebhookSection { secret: String::new(), max_attempts: 8, allow_private: false, allow_cidrs: Vec::new() }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection { max_concurrent_calls: 200, lease_s: 30, shutdown_grace_s: 60, poll_interval_ms: 250 }
    }
}

/// A plain string is a key with no grants of its own, so configurations
/// written before tables existed keep working.
fn deserialize_api_key<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<ApiKeyConfig, D::Error> {
    struct Entry;
    impl<'de> serde::de::Visitor<'de> for Entry {
        type Value = ApiKeyConfig;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a key string or a table with `key`, `webhook_secret`, `admin`, `tenant`")
        }

        fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<ApiKeyConfig, E> {
            Ok(key.into())
        }

        fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<ApiKeyConfig, M::Error> {
            ApiKeyConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(Entry)
}

/// `api.keys`: a list of [`deserialize_api_key`] entries.
fn deserialize_api_keys<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<ApiKeyConfig>, D::Error> {
    #[derive(Deserialize)]
    struct One(#[serde(deserialize_with = "deserialize_api_key")] ApiKeyConfig);
    Ok(Vec::<One>::deserialize(deserializer)?.into_iter().map(|One(key)| key).collect())
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The file is not valid TOML for this schema (unknown keys included).
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: shown.clone(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Syntax { path: shown, message })
    }

    /// Parses configuration TOML. The error names the key path
    /// (`api.max_body_bytes`) and the line and column of the offending value,
    /// as `LINE:COLUMN: KEY: what is wrong`.
    pub fn parse(text: &str) -> Result<Config, String> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| located(text, &e, None))?;
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            located(text, e.inner(), Some(key.as_str()).filter(|k| *k != "."))
        })
    }

    /// Checks what serde cannot: ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(1..=5).contains(&self.policy.max_attempts) {
            return invalid(format!("policy.max_attempts must be 1 to 5, not {}", self.policy.max_attempts));
        }
        if !(self.trunk.calls_per_second > 0.0 && self.trunk.calls_per_second <= 10_000.0) {
            return invalid(format!("trunk.calls_per_second must be above 0, not {}", self.trunk.calls_per_second));
        }
        if self.engine.max_concurrent_calls == 0 {
            return invalid("engine.max_concurrent_calls must be at least 1".into());
        }
        if !(3..=3600).contains(&self.engine.lease_s) {
            return invalid(format!("engine.lease_s must be 3 to 3600, not {}", self.engine.lease_s));
        }
        if !(10..=60_000).contains(&self.engine.poll_interval_ms) {
            return invalid(format!(
                "engine.poll_interval_ms must be 10 to 60000, not {}",
                self.engine.poll_interval_ms
            ));
        }
        if self.sip.codecs.is_empty() {
            return invalid("sip.codecs must name at least one codec".into());
        }
        if self.sip.tls_cert.is_some() != self.sip.tls_key.is_some() {
            return invalid("sip.tls_cert and sip.tls_key go together: give both or neither".into());
        }
        if self.trunk.register_as.is_some() && !(60..=86_400).contains(&self.trunk.register_expires_s) {
            return invalid(format!(
                "trunk.register_expires_s must be 60 to 86400, not {}",
                self.trunk.register_expires_s
            ));
        }
        for (key, ms) in [
            ("api.header_timeout_ms", self.api.header_timeout_ms),
            ("api.request_timeout_ms", self.api.request_timeout_ms),
            ("api.idle_timeout_ms", self.api.idle_timeout_ms),
        ] {
            if !(100..=3_600_000).contains(&ms) {
                return invalid(format!("{key} must be 100 to 3600000, not {ms}"));
            }
        }
        if self.api.max_connections == 0 {
            return invalid("api.max_connections must be at least 1".into());
        }
        self.rtp_ports()?;
        if !LEARNING_PACKETS.contains(&self.rtp.learning_packets) {
            let (low, high, value) = (LEARNING_PACKETS.start(), LEARNING_PACKETS.end(), self.rtp.learning_packets);
            return invalid(format!("rtp.learning_packets must be {low} to {high}, not {value}"));
        }
        self.policy.validate_toll_fraud()?;
        self.capture.validate()?;
        self.validate_api_keys()?;
        // Expiry (issue 11).
        if !(1..=MAX_EXPIRE_AFTER_S).contains(&self.policy.expire_after_s) {
            return invalid(format!(
                "policy.expire_after_s must be 1 to {MAX_EXPIRE_AFTER_S}, not {}",
                self.policy.expire_after_s
            ));
        }
        validate_trunk_uri(&self.trunk.uri)?;
        let trunk_transport =
            if crate::sip::route::wants_tls(&self.trunk.uri) { Transport::Tls } else { self.sip.transport.into() };
        if !self.trunk.srtp.allowed_over(trunk_transport) {
            return invalid(format!(
                "trunk.srtp = \"{}\" needs SIP over TLS (sip.transport = \"tls\" or a sips: trunk.uri): \
                 SDES keys must not travel in clear",
                self.trunk.srtp.as_str()
            ));
        }
        self.validate_stir()?;
        Ok(())
    }

    /// A signing trunk has a working key and a caller number to sign: the P-Asserted-Identity's
    /// when set, the From user's otherwise. (Callees are E.164 numbers, checked per verification.)
    fn validate_stir(&self) -> Result<(), ConfigError> {
        let Some(stir) = &self.trunk.stir else { return Ok(()) };
        stir.signer()?;
        caller_number(self.trunk.asserted_identity.as_deref(), &self.trunk.from_user).map_err(|e| {
            ConfigError::Invalid(format!(
                "trunk.stir needs trunk.from_user or trunk.asserted_identity to be a number: {e}"
            ))
        })?;
        Ok(())
    }

    /// Every `api.keys` entry has a key, and its secret and tenant are not empty.
    fn validate_api_keys(&self) -> Result<(), ConfigError> {
        for (n, entry) in self.api.keys.iter().enumerate() {
            let empty = |what: &str| Err(ConfigError::Invalid(format!("api.keys[{n}].{what} must not be empty")));
            if entry.key.is_empty() {
                return empty("key");
            }
            if entry.webhook_secret.as_ref().is_some_and(String::is_empty) {
                return empty("webhook_secret");
            }
            if entry.tenant.as_ref().is_some_and(String::is_empty) {
                return empty("tenant");
            }
        }
        Ok(())
    }

    /// `api.keys`, where a key without a webhook secret of its own signs with
    /// `webhooks.secret` when that is set.
    pub fn api_keys(&self) -> Vec<ApiKeyConfig> {
        let shared = Some(&self.webhooks.secret).filter(|secret| !secret.is_empty());
        self.api
            .keys
            .iter()
            .map(|entry| ApiKeyConfig {
                webhook_secret: entry.webhook_secret.clone().or_else(|| shared.cloned()),
                ..entry.clone()
            })
            .collect()
    }

    /// The RTP port range, if one is set.
    pub fn rtp_ports(&self) -> Result<Option<std::ops::RangeInclusive<u16>>, ConfigError> {
        let text = self.rtp.ports.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let parsed = text
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
        match parsed {
            Some((low, high)) if low >= 1024 && low < high => Ok(Some(low..=high)),
            _ => Err(ConfigError::Invalid(format!(
                "rtp.ports must be \"LOW-HIGH\" with 1024 <= LOW < HIGH, not {text:?}"
            ))),
        }
    }
}

// Start-up errors that name the value (issue 11).

/// `trunk.uri` is `sip:[user@]host[:port][;params]`: anything else would
/// start a node that can never dial.
fn validate_trunk_uri(uri: &str) -> Result<(), ConfigError> {
    let invalid = || ConfigError::Invalid(format!("trunk.uri must be a SIP URI (sip:host[:port]), not {uri:?}"));
    let rest = uri.strip_prefix("sip:").or_else(|| uri.strip_prefix("sips:")).ok_or_else(invalid)?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host_port = &rest[..rest.find([';', '?']).unwrap_or(rest.len())];
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (address, after) = v6.split_once(']').ok_or_else(invalid)?;
            address.parse::<std::net::Ipv6Addr>().map_err(|_| invalid())?;
            (address, after.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok { Ok(()) } else { Err(invalid()) }
}

/// A TOML error as `LINE:COLUMN: KEY: message` (each part when known).
fn located(text: &str, error: &toml::de::Error, key: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(span) = error.span() {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        out.push_str(&format!("{line}:{column}: "));
    }
    if let Some(key) = key {
        out.push_str(&format!("{key}: "));
    }
    out.push_str(error.message());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid_and_an_empty_file_means_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("pound.example.toml");
        let config = Config::load(&example).unwrap();
        config.validate().unwrap();
        let empty: Config = toml::from_str("").unwrap();
        empty.validate().unwrap();
        assert_eq!(empty.trunk.calls_per_second, 10.0);
        assert_eq!(empty.policy.max_attempts, 3);
    }

    #[test]
    fn sip_over_tls_keys() {
        let config = Config::parse("[sip]\ntransport = \"tls\"\ntls_ca = \"/etc/pound/ca.pem\"\n").unwrap();
        config.validate().unwrap();
        assert_eq!(Transport::from(config.sip.transport), Transport::Tls);
        assert_eq!(config.sip.tls_files().ca.as_deref(), Some(Path::new("/etc/pound/ca.pem")));
        let half = Config::parse("[sip]\ntls_cert = \"/c.pem\"\n").unwrap();
        assert!(half.validate().unwrap_err().to_string().contains("sip.tls_cert and sip.tls_key"));
        let error = Config::parse("[sip]\ntransport = \"sctp\"\n").unwrap_err();
        assert!(error.contains("sip.transport"), "{error}");
    }

    #[test]
    fn srtp_is_off_by_default_and_needs_tls_otherwise() {
        assert_eq!(Config::default().trunk.srtp, SrtpPolicy::Off);
        for (text, ok) in [
            ("[trunk]\nsrtp = \"mandatory\"\n", false),
            ("[sip]\ntransport = \"tcp\"\n[trunk]\nsrtp = \"optional\"\n", false),
            ("[sip]\ntransport = \"tls\"\n[trunk]\nsrtp = \"mandatory\"\n", true),
            ("[trunk]\nuri = \"sips:sip.example.com\"\nsrtp = \"optional\"\n", true),
            ("[trunk]\nuri = \"sip:sip.example.com;transport=tls\"\nsrtp = \"mandatory\"\n", true),
            ("[trunk]\nsrtp = \"off\"\n", true),
        ] {
            let result = Config::parse(text).unwrap().validate();
            match (ok, result) {
                (true, result) => assert!(result.is_ok(), "{text}: {result:?}"),
                (false, Err(ConfigError::Invalid(message))) => {
                    assert!(message.contains("trunk.srtp") && message.contains("TLS"), "{text}: {message}");
                }
                (false, result) => panic!("{text}: {result:?}"),
            }
        }
        assert!(Config::parse("[trunk]\nsrtp = \"always\"\n").unwrap_err().contains("trunk.srtp"));
    }

    #[test]
    fn errors_name_the_key_path_and_the_line() {
        let text = "node_id = \"a\"\n[api]\nmax_body_bytes = \"big\"\n";
        let error = Config::parse(text).unwrap_err();
        assert!(error.starts_with("3:18: api.max_body_bytes: invalid type: string"), "{error}");
        let error = Config::parse("[trunk]\nuri = \"sip:x\"\n[trunk]\n").unwrap_err();
        assert!(error.starts_with("3:"), "a TOML syntax error has its line: {error}");
        let error = Config::parse("[engine]\nbogus = 1").unwrap_err();
        assert!(error.contains("engine") && error.contains("unknown field `bogus`"), "{error}");
    }

    #[test]
    fn captures_are_off_by_default_and_their_limits_checked() {
        assert_eq!(Config::default().capture.folder(), None);
        let config: Config = toml::from_str("[capture]\ndir = \"/var/lib/pound/captures\"").unwrap();
        config.validate().unwrap();
        let folder = config.capture.folder().unwrap();
        assert_eq!((folder.max_bytes, folder.max_call_bytes), (1 << 30, 16 << 20));
        let config: Config =
            toml::from_str("[capture]\ndir = \"c\"\nmax_bytes = 100000\nmax_call_bytes = 200000").unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("capture.max_call_bytes"));
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        assert!(toml::from_str::<Config>("[api]\nbogus = 1").unwrap_err().to_string().contains("unknown field"));
        let config: Config = toml::from_str("[policy]\nmax_attempts = 9").unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("max_attempts"));
        let config: Config = toml::from_str("[rtp]\nports = \"20000-10000\"").unwrap();
        assert!(config.validate().is_err());
        let config: Config = toml::from_str("[api]\nheader_timeout_ms = 0").unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("api.header_timeout_ms"));
        let error = toml::from_str::<Config>("[webhooks]\nallow_cidrs = [\"10.0.0.0/33\"]").unwrap_err().to_string();
        assert!(error.contains("10.0.0.0/33"), "{error}");
        let config: Config = toml::from_str("[rtp]\nports = \"10000-20000\"").unwrap();
        assert_eq!(config.rtp_ports().unwrap(), Some(10000..=20000));
        assert_eq!(config.rtp.learning_packets, 4);
        for bad in [0, 51] {
            let config: Config = toml::from_str(&format!("[rtp]\nlearning_packets = {bad}")).unwrap();
            assert!(config.validate().unwrap_err().to_string().contains("learning_packets"), "{bad}");
        }
    }

    #[test]
    fn the_toll_fraud_guard_is_on_without_a_file_and_its_keys_are_checked() {
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty.policy.number_rules(), NumberRules::default());
        assert_eq!(empty.policy.velocity_limits(), VelocityLimits::default());
        let example = Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("pound.example.toml")).unwrap();
        assert_eq!(example.policy.number_rules(), NumberRules::default(), "the example shows the defaults");
        for bad in [
            "deny_prefixes = [\"1900\"]",
            "allow_prefixes = [\"+19x\"]",
            "allowed_countries = [\"us\"]",
            "prefix_digits = 1",
            "breaker_numbers = 0",
        ] {
            let config: Config = toml::from_str(&format!("[policy]\n{bad}")).unwrap();
            assert!(config.validate().is_err(), "{bad}");
        }
        let config: Config =
            toml::from_str("[policy]\nallowed_countries = [\"DE\", \"001\"]\ndeny_prefixes = [\"+4930\"]").unwrap();
        config.validate().unwrap();
    }

    #[test]
    fn a_malformed_trunk_uri_is_refused_naming_the_value() {
        for good in [
            "sip:127.0.0.1:5070",
            "sip:trunk.example.com",
            "sip:pound@[::1]:5060;transport=udp",
            "sips:trunk.example.com",
            "sip:trunk.example.com:5061;transport=tls",
        ] {
            validate_trunk_uri(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["http://x", "sip:", "sip:host:port", "sip:host:0", "sip:ho st", "sip:[::1", "x"] {
            let config: Config = toml::from_str(&format!("[trunk]\nuri = {bad:?}")).unwrap();
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("trunk.uri") && error.contains(&format!("{bad:?}")), "{bad}: {error}");
        }
    }

    #[test]
    fn a_signing_trunk_needs_a_p256_key_an_https_x5u_an_attestation_and_a_caller_number() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/stir");
        let key = fixtures.join("pkcs8.key.pem").display().to_string();
        let config = |trunk: &str, key: &str, x5u: &str, attest: &str| {
            Config::parse(&format!(
                "[trunk]\n{trunk}\n[trunk.stir]\nkey = {key:?}\nx5u = {x5u:?}\nattest = {attest:?}\n"
            ))
        };
        let x5u = "https://cert.example.org/pound.pem";
        for trunk in ["from_user = \"+14155550000\"", "asserted_identity = \"sip:+14155550000@example.com\""] {
            let good = config(trunk, &key, x5u, "B").unwrap();
            good.validate().unwrap_or_else(|e| panic!("{trunk}: {e}"));
            assert_eq!(good.trunk.stir.as_ref().unwrap().attest, Attestation::B);
        }
        let number = "from_user = \"+14155550000\"";
        let error = config(number, &key, x5u, "D").unwrap_err();
        assert!(error.contains("trunk.stir.attest") && error.contains("`A`, `B`, `C`"), "{error}");
        let public = fixtures.join("public.pem").display().to_string();
        for (trunk, key, x5u, expected) in [
            (number, key.as_str(), "http://cert.example.org/pound.pem", "x5u"),
            (number, public.as_str(), x5u, "P-256"),
            (number, "/nonexistent/key.pem", x5u, "/nonexistent/key.pem"),
            ("from_user = \"pound\"", key.as_str(), x5u, "trunk.from_user"),
        ] {
            let error = config(trunk, key, x5u, "A").unwrap().validate().unwrap_err().to_string();
            assert!(error.contains("trunk.stir") && error.contains(expected), "{error}");
        }
        let error = Config::parse("[trunk.stir]\nkey = \"k\"\nx5u = \"https://x\"\n").unwrap_err();
        assert!(error.contains("attest"), "all three keys are required: {error}");
    }

    #[test]
    fn api_keys_are_plain_strings_or_tables_with_grants() {
        let inline: Config = toml::from_str(
            "[api]\nkeys = [\"plain\", { key = \"ops\", admin = true, webhook_secret = \"s1\", tenant = \"t\" }]",
        )
        .unwrap();
        let tables: Config = toml::from_str(
            "[[api.keys]]\nkey = \"plain\"\n[[api.keys]]\nkey = \"ops\"\nadmin = true\nwebhook_secret = \"s1\"\ntenant = \"t\"",
        )
        .unwrap();
        for config in [inline, tables] {
            config.validate().unwrap();
            assert_eq!(config.api.keys[0], ApiKeyConfig::from("plain"));
            let ops = &config.api.keys[1];
            assert_eq!((ops.key.as_str(), ops.admin), ("ops", true));
            assert_eq!((ops.webhook_secret.as_deref(), ops.tenant.as_deref()), (Some("s1"), Some("t")));
            assert!(!format!("{ops:?}").contains("s1"), "Debug hides the secret");
            // Without webhooks.secret the plain key has no secret: it cannot register callbacks.
            assert_eq!(config.api_keys()[0].webhook_secret, None);
        }
        let shared: Config = toml::from_str(
            "[api]\nkeys = [\"plain\", { key = \"own\", webhook_secret = \"mine\" }]\n[webhooks]\nsecret = \"shared\"",
        )
        .unwrap();
        let secrets: Vec<_> = shared.api_keys().into_iter().map(|key| key.webhook_secret).collect();
        assert_eq!(secrets, [Some("shared".to_string()), Some("mine".to_string())]);

        let unknown = toml::from_str::<Config>("[api]\nkeys = [{ key = \"k\", admn = true }]").unwrap_err();
        assert!(unknown.to_string().contains("admn"), "{unknown}");
        assert!(toml::from_str::<Config>("[api]\nkeys = [7]").is_err());
        for bad in ["{ key = \"\" }", "{ key = \"k\", webhook_secret = \"\" }", "{ key = \"k\", tenant = \"\" }"] {
            let config: Config = toml::from_str(&format!("[api]\nkeys = [{bad}]")).unwrap();
            assert!(config.validate().unwrap_err().to_string().contains("api.keys[0]"), "{bad}");
        }
    }

    // Expiry (issue 11).
    #[test]
    fn verifications_expire_after_ten_minutes_unless_configured() {
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty.policy.expire_after_s, 600);
        for bad in [0, MAX_EXPIRE_AFTER_S + 1] {
            let config: Config = toml::from_str(&format!("[policy]\nexpire_after_s = {bad}")).unwrap();
            assert!(config.validate().unwrap_err().to_string().contains("policy.expire_after_s"), "{bad}");
        }
    }
}

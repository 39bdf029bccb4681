//! The `pound` command line: parses arguments and hands over to `pound::cmd`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pound::cmd::call::{CallArgs, StirArgs, exit_code};
use pound::cmd::dtmf::{DtmfArgs, run};
use pound::code::Code;
use pound::config::Config;
use pound::dsp::dtmf::DtmfConfig;
use pound::logging::LogFormat;
use pound::media::codec::Codec;
use pound::net::{PhoneSetup, TlsFiles};
use pound::phone::{PhoneConfig, PressVia};
use pound::sip::Timers;
use pound::stir::Attestation;
use pound::vocab::{SrtpPolicy, Transport};

#[derive(Parser)]
#[command(name = "pound", version = pound::VERSION, about = "Phone-call verification over SIP: call, prompt, detect the pound key.")]
struct Cli {
    /// Log lines as text or as one JSON object per line (filter with RUST_LOG or POUND_LOG).
    #[arg(long, global = true, value_enum, env = "POUND_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect DTMF digits in WAV files (8 kHz, 16-bit PCM or G.711); one JSON line per digit.
    Dtmf(DtmfCommand),
    /// Place one verification call; print its outcome as one JSON line (exit 0 only when verified).
    Call(Box<CallCommand>),
    /// The simulated callee: answer pound's calls and press keys.
    Phone(PhoneCommand),
    /// The service: HTTP API, engine, registration store, webhooks.
    Serve(ServeCommand),
    /// The whole job on embedded defaults: a temporary store, the service and a simulated phone on loopback.
    Demo(DemoCommand),
    /// API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Measure the whole service on loopback; one JSON line per benchmark.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a captured call (`pound call --capture`, `[capture]`) again in simulated time and print its
    /// report as `pound call` did (exit 0 only when verified; 3 when the replay sent other than the capture).
    Replay {
        /// The capture.
        file: PathBuf,
    },
    /// The tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Validate a configuration file without starting anything; exit 0 when it is valid.
    CheckConfig {
        #[arg(long, env = "POUND_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Args)]
struct ServeCommand {
    /// Configuration file (every key documented in the README); flags override it.
    #[arg(long, env = "POUND_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "POUND_API_BIND")]
    api_bind: Option<SocketAddr>,
    #[arg(long, env = "POUND_SIP_BIND")]
    sip_bind: Option<SocketAddr>,
    /// sqlite://FILE or postgres://…
    #[arg(long, env = "POUND_STORE")]
    store: Option<String>,
    /// Where calls go: sip:host[:port].
    #[arg(long, env = "POUND_TRUNK")]
    trunk: Option<String>,
    /// A bearer API key (repeatable).
    #[arg(long = "api-key", env = "POUND_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    api_keys: Vec<String>,
    #[arg(long, env = "POUND_DIALPLANS")]
    dialplans: Option<PathBuf>,
    #[arg(long, env = "POUND_NODE_ID")]
    node_id: Option<String>,
    /// Signs webhooks of config keys without a webhook_secret of their own.
    #[arg(long, env = "POUND_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
}

#[derive(Args)]
struct DemoCommand {
    /// How the simulated phone presses #.
    #[arg(long, value_enum, default_value = "rfc4733")]
    dtmf: ViaArg,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// POST answered -> INVITE at the trunk, and # pressed -> outcome visible through the API and webhook
    /// received: p50, p99 and max in milliseconds.
    Latency {
        /// Verifications measured (after one unmeasured warm-up).
        #[arg(long, default_value_t = 200)]
        calls: usize,
        /// Requesters submitting at once, each waiting for its outcome and webhook before the next.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Hold N calls at once; the node's CPU per concurrent call and memory per call.
    Load {
        #[arg(long, default_value_t = 200)]
        calls: usize,
        /// Seconds from the answer to the key press.
        #[arg(long, default_value_t = 30.0)]
        hold: f64,
        #[arg(long, value_enum, default_value = "rfc4733")]
        via: ViaArg,
        /// Verifications submitted (and calls started) per second.
        #[arg(long, default_value_t = 100.0)]
        submit_rate: f64,
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Send N verifications at once; each answer's latency, what was accepted, refused or never answered.
    Burst {
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Requests in flight at once (default: all of them).
        #[arg(long)]
        concurrency: Option<usize>,
        /// The node's api.queue_limit (0: none); its default when not given.
        #[arg(long)]
        queue_limit: Option<usize>,
        #[command(flatten)]
        common: BenchCommon,
    },
    /// Offer verifications through the API at a fixed rate; what is accepted, how fast, and how they end.
    Rate {
        #[arg(long, default_value_t = 50.0)]
        cps: f64,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, value_enum, default_value = "rfc4733")]
        via: ViaArg,
        /// Seconds from the answer to the key press.
        #[arg(long, default_value_t = 1.0)]
        hold: f64,
        /// Nodes sharing the store and the offer (above 1 needs `--store postgres://…`); every
        /// accepted verification is then read back to count its attempts.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        #[command(flatten)]
        common: BenchCommon,
    },
}

#[derive(Args)]
struct BenchCommon {
    /// Who plays the callee: sipp (RFC 4733 only, needs root for its raw sockets) or `pound phone`.
    #[arg(long, value_enum, default_value = "auto")]
    callee: pound::cmd::bench::CalleeKind,
    /// `postgres://…` for the node's store; a fresh SQLite file otherwise.
    #[arg(long)]
    store: Option<String>,
    /// Run this pound binary as the node instead of this one (to compare two builds on one machine).
    #[arg(long, value_name = "PATH")]
    node_binary: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key and its webhook secret; both are printed once, the key is stored only as a hash.
    Create {
        /// A name to recognise the key by.
        #[arg(long, default_value = "default")]
        name: String,
        /// Keys of one tenant see each other's verifications (default: the key is its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// An operator key: sees and cancels every tenant's verifications.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the stored keys, oldest first, one JSON object per line: id, name, tenant, admin, created_at,
    /// last_used_at, revoked_at (never the key, its hash or its webhook secret).
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a key: every node refuses it from its next request. Its queued webhooks are still signed.
    Revoke {
        /// The key's id, or its name when only one working key has it.
        key: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give a key a new webhook secret (printed once); webhooks are signed with it from then on.
    RotateSecret {
        /// The key's id, or its name when only one key has it.
        key: String,
        /// Seconds the previous secret keeps signing too (a second v1= in Pound-Signature); 0: none.
        #[arg(long, default_value_t = pound::cmd::keys::DEFAULT_OVERLAP.as_secs())]
        overlap_s: u64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every tenant's hash chain and compare each verification's audited facts with its rows;
    /// one JSON line; exit 0 when intact, 1 naming the first verification that differs.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store a key or audit command works on; one of the two is required.
#[derive(Args)]
struct StoreArgs {
    /// The store: sqlite://FILE or postgres://… (as in pound serve).
    #[arg(long, env = "POUND_STORE")]
    store: Option<String>,
    /// Use the store.url of this configuration file (when --store is not given).
    #[arg(long, env = "POUND_CONFIG")]
    config: Option<PathBuf>,
}

impl StoreArgs {
    fn url(self) -> Result<String, pound::cmd::keys::KeysError> {
        pound::cmd::keys::store_url(self.store, self.config.as_deref())
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
    Tls,
}

impl From<TransportArg> for Transport {
    fn from(t: TransportArg) -> Self {
        match t {
            TransportArg::Udp => Transport::Udp,
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Tls => Transport::Tls,
        }
    }
}

/// `--srtp`: SRTP with SDES keys, which travel in the SDP and so need `--transport tls`.
#[derive(Clone, Copy, ValueEnum)]
enum SrtpArg {
    Mandatory,
    Optional,
    Off,
}

impl From<SrtpArg> for SrtpPolicy {
    fn from(arg: SrtpArg) -> Self {
        match arg {
            SrtpArg::Mandatory => SrtpPolicy::Mandatory,
            SrtpArg::Optional => SrtpPolicy::Optional,
            SrtpArg::Off => SrtpPolicy::Off,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CodecArg {
    Pcmu,
    Pcma,
    Opus,
}

fn codecs(args: &[CodecArg]) -> Vec<Codec> {
    args.iter()
        .map(|c| match c {
            CodecArg::Pcmu => Codec::Pcmu,
            CodecArg::Pcma => Codec::Pcma,
            CodecArg::Opus => Codec::Opus,
        })
        .collect()
}

#[derive(Args)]
struct CallCommand {
    /// The callee: a SIP URI (sip:user@host:port) or an E.164 number (+14155550100, needs --trunk).
    target: String,
    /// The operator's trunk (sip:host[:port]): E.164 numbers, and every call when given, go there.
    #[arg(long, env = "POUND_TRUNK")]
    trunk: Option<String>,
    /// Digest authentication user.
    #[arg(long, env = "POUND_AUTH_USER")]
    auth_user: Option<String>,
    /// Digest authentication password (never logged).
    #[arg(long, env = "POUND_AUTH_PASS", hide_env_values = true)]
    auth_pass: Option<String>,
    /// Caller ID: the From user.
    #[arg(long, default_value = "pound")]
    from: String,
    /// Caller ID: the From display name.
    #[arg(long)]
    from_name: Option<String>,
    /// Caller ID: P-Asserted-Identity URI (sip:+14155550000@example.com).
    #[arg(long)]
    pai: Option<String>,
    /// Dialplan name (in --dialplans) or file.
    #[arg(long, default_value = "press-pound")]
    dialplan: String,
    /// Number matching: the callee must key in these 2 to 8 digits, then #
    /// (the dialplan's code prompts play). Never logged; the report shows each digit as x.
    #[arg(long, value_name = "DIGITS", value_parser = parse_code)]
    code: Option<Code>,
    /// Folder of extra dialplans (the shipped ones are compiled in).
    #[arg(long, env = "POUND_DIALPLANS")]
    dialplans: Option<PathBuf>,
    /// Ring timeout in seconds (overrides the dialplan's).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Local SIP address; 0.0.0.0:0 picks the interface that reaches the next hop and a free port.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// How SIP travels; a sips: target or trunk, or one with transport=tls, means tls.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// Codecs offered, in order of preference.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pcmu,pcma,opus")]
    codecs: Vec<CodecArg>,
    /// STIR/SHAKEN: sign the INVITE with this P-256 private key (PEM; never logged). Needs
    /// --stir-x5u and --stir-attest, and a telephone number in --from or --pai.
    #[arg(long, value_name = "FILE", requires_all = ["stir_x5u", "stir_attest"])]
    stir_key: Option<PathBuf>,
    /// STIR/SHAKEN: the https URL of the signing certificate.
    #[arg(long, value_name = "URL", requires = "stir_key")]
    stir_x5u: Option<String>,
    /// STIR/SHAKEN attestation: A (full), B (partial) or C (gateway).
    #[arg(long, value_name = "A|B|C", requires = "stir_key")]
    stir_attest: Option<Attestation>,
    /// SRTP: `mandatory` offers RTP/SAVP only, `optional` offers keys on RTP/AVP (needs --transport tls).
    #[arg(long, value_enum, default_value = "off")]
    srtp: SrtpArg,
    /// TLS: PEM CA certificates the peer's certificate must chain to (default: the system's roots).
    #[arg(long, value_name = "FILE", env = "POUND_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// TLS: PEM client certificate chain, for trunks that require mutual TLS (with --tls-key).
    #[arg(long, value_name = "FILE", env = "POUND_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", env = "POUND_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The prompts' language (BCP 47: en, de, fr, es, pt, it, nl, pl, ja, zh), instead of the dialplan's.
    #[arg(long, value_name = "TAG")]
    locale: Option<String>,
    /// Write the call's SIP and RTP to this pcap file (owner-only: it holds the number, the keys
    /// pressed and the SRTP keys); `pound replay FILE` runs the call again from it.
    #[arg(long, value_name = "FILE.pcap")]
    capture: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ViaArg {
    Rfc4733,
    Inband,
    Info,
}

#[derive(Args)]
struct PhoneCommand {
    /// SIP address to listen on.
    #[arg(long, default_value = "127.0.0.1:5070")]
    listen: SocketAddr,
    /// Keys to press after the answer.
    #[arg(long, default_value = "#")]
    press: String,
    /// How to press them.
    #[arg(long, value_enum, default_value = "rfc4733")]
    via: ViaArg,
    /// Milliseconds from the answer to the first key.
    #[arg(long, default_value_t = 1000)]
    after: u64,
    /// Milliseconds of ringing before the answer.
    #[arg(long, default_value_t = 200)]
    answer_after: u64,
    /// Reject every call with this status (e.g. 486) instead of answering.
    #[arg(long, value_parser = clap::value_parser!(u16).range(300..700))]
    reject: Option<u16>,
    /// Ring and never answer.
    #[arg(long)]
    no_answer: bool,
    /// Milliseconds from the answer to the phone's own BYE.
    #[arg(long)]
    hangup_after: Option<u64>,
    /// Silence suppression (VAD/DTX): no RTP while listening, only the keys.
    #[arg(long, visible_alias = "vad")]
    silent: bool,
    /// Send this WAV (8 kHz mono) from the answer on, before the keys: a
    /// greeting and beep (a voicemail box), or a SIT and announcement.
    #[arg(long, value_name = "FILE.wav")]
    play: Option<PathBuf>,
    /// Send a 183 with SDP at once and this WAV (8 kHz mono) as early media
    /// while ringing (a SIT and announcement); the answer, or --reject,
    /// follows --answer-after.
    #[arg(long, value_name = "FILE.wav")]
    early_media: Option<PathBuf>,
    /// Exit after this many calls have ended.
    #[arg(long)]
    calls: Option<u64>,
    /// How SIP arrives; tls needs --tls-cert and --tls-key, and listens for TLS instead of TCP.
    #[arg(long, value_enum, default_value = "udp")]
    transport: TransportArg,
    /// Codecs accepted, in order of preference.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "pcmu,pcma,opus")]
    codecs: Vec<CodecArg>,
    /// SRTP offers: `mandatory` answers only those (488 otherwise), `optional` takes keys when offered.
    #[arg(long, value_enum, default_value = "off")]
    srtp: SrtpArg,
    /// TLS: the PEM certificate chain the phone presents.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Args)]
struct DtmfCommand {
    /// WAV files to analyse.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Process each file N times in-process and print one JSON line of throughput instead of digits.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    bench: Option<u32>,
    /// Samples per detector call (160 = one 20 ms RTP frame).
    #[arg(long, default_value_t = 160, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    chunk: u32,
    /// Quietest tone detected, per tone, in dBm0.
    #[arg(long, value_name = "DBM0", default_value_t = DtmfConfig::default().min_level_dbm0, allow_negative_numbers = true)]
    min_level: f32,
    /// Largest normal twist (high group weaker) accepted, in dB.
    #[arg(long, value_name = "DB", default_value_t = DtmfConfig::default().normal_twist_db)]
    twist: f32,
    /// Largest reverse twist (high group stronger) accepted, in dB.
    #[arg(long, value_name = "DB", default_value_t = DtmfConfig::default().reverse_twist_db)]
    reverse_twist: f32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every command may run the in-band detector: a kernel forced by
    // POUND_DSP_KERNEL that cannot run here stops it before anything starts.
    if let Err(e) = pound::dsp::dtmf::Kernel::select() {
        eprintln!("pound: {e}");
        return ExitCode::FAILURE;
    }
    if let Command::Serve(cmd) = cli.command {
        // The config file may choose the log format, so it is read first.
        return serve(cmd, cli.log_format);
    }
    pound::logging::init(cli.log_format.unwrap_or_default());
    match cli.command {
        Command::Dtmf(cmd) => dtmf(cmd),
        Command::Call(cmd) => call(*cmd),
        Command::Phone(cmd) => phone(cmd),
        Command::Serve(_) => unreachable!("handled above"),
        Command::Demo(cmd) => demo(cmd),
        Command::Keys(command) => keys(command),
        Command::Bench(command) => bench(command),
        Command::Audit(AuditCommand::Verify { store }) => audit_verify(store),
        Command::CheckConfig { config } => check_config(&config),
        Command::Replay { file } => replay(&file),
    }
}

/// `pound check-config`: the file parses, every value is in range.
fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path).and_then(|config| config.validate()) {
        Ok(()) => {
            println!("{}: valid", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pound check-config: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(cmd: ServeCommand, log_format: Option<LogFormat>) -> ExitCode {
    let config = match serve_config(&cmd) {
        Ok(config) => config,
        Err(e) => {
            pound::logging::init(log_format.unwrap_or_default());
            eprintln!("pound serve: {e}");
            return ExitCode::from(2);
        }
    };
    pound::logging::init(log_format.or(config.log.format).unwrap_or_default());
    // SIGHUP reads the file again, with the same flags on top.
    let load = || serve_config(&cmd).map_err(|e| e.to_string());
    match runtime().block_on(pound::cmd::serve::run(config, load)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pound serve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration file (or the defaults), then the flags over it.
fn serve_config(cmd: &ServeCommand) -> Result<Config, pound::config::ConfigError> {
    let mut config = match &cmd.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(bind) = cmd.api_bind {
        config.api.bind = bind;
    }
    if let Some(bind) = cmd.sip_bind {
        config.sip.bind = bind;
    }
    if let Some(store) = &cmd.store {
        config.store.url = store.clone();
    }
    if let Some(trunk) = &cmd.trunk {
        config.trunk.uri = trunk.clone();
    }
    config.api.keys.extend(cmd.api_keys.iter().cloned().map(Into::into));
    if let Some(dialplans) = &cmd.dialplans {
        config.dialplans = Some(dialplans.clone());
    }
    if cmd.node_id.is_some() {
        config.node_id = cmd.node_id.clone();
    }
    if let Some(secret) = &cmd.webhook_secret {
        config.webhooks.secret = secret.clone();
    }
    Ok(config)
}

impl From<ViaArg> for PressVia {
    fn from(via: ViaArg) -> PressVia {
        match via {
            ViaArg::Rfc4733 => PressVia::Rfc4733,
            ViaArg::Inband => PressVia::Inband,
            ViaArg::Info => PressVia::Info,
        }
    }
}

fn bench(command: BenchCommand) -> ExitCode {
    use pound::cmd::bench::{BurstArgs, LoadArgs, RateArgs, burst, load, rate};
    let seconds = |s: f64| Duration::try_from_secs_f64(s).unwrap_or_default();
    let result = match command {
        BenchCommand::Latency { calls, concurrency } => runtime()
            .block_on(pound::cmd::bench::latency::run(pound::cmd::bench::latency::LatencyArgs { calls, concurrency })),
        BenchCommand::Load { calls, hold, via, submit_rate, common } => runtime().block_on(load(LoadArgs {
            calls,
            hold: seconds(hold),
            via: via.into(),
            callee: common.callee,
            submit_rate,
            store: common.store,
            node: common.node_binary,
        })),
        BenchCommand::Burst { requests, concurrency, queue_limit, common } => runtime().block_on(burst(BurstArgs {
            requests,
            concurrency: concurrency.unwrap_or(requests),
            queue_limit,
            callee: common.callee,
            store: common.store,
            node: common.node_binary,
        })),
        BenchCommand::Rate { cps, seconds: offer, via, hold, nodes, common } => runtime().block_on(rate(RateArgs {
            cps,
            seconds: offer,
            via: via.into(),
            callee: common.callee,
            hold: seconds(hold),
            store: common.store,
            node: common.node_binary,
            nodes,
        })),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pound bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn demo(cmd: DemoCommand) -> ExitCode {
    match runtime().block_on(pound::cmd::demo::run(cmd.dtmf.into())) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pound demo: {e}");
            ExitCode::from(2)
        }
    }
}

fn keys(command: KeysCommand) -> ExitCode {
    use pound::cmd::keys;
    match command {
        KeysCommand::Create { name, tenant, admin, store } => {
            let new = keys::NewKey { name, tenant, admin };
            run_keys("pound keys create", store, |url| async move { Ok(vec![keys::create(&url, &new).await?]) })
        }
        KeysCommand::List { store } => run_keys("pound keys list", store, |url| async move { keys::list(&url).await }),
        KeysCommand::Revoke { key, store } => {
            run_keys("pound keys revoke", store, |url| async move { Ok(vec![keys::revoke(&url, &key).await?]) })
        }
        KeysCommand::RotateSecret { key, overlap_s, store } => {
            let overlap = Duration::from_secs(overlap_s);
            run_keys("pound keys rotate-secret", store, |url| async move {
                Ok(vec![keys::rotate_secret(&url, &key, overlap).await?])
            })
        }
    }
}

/// `pound audit verify`: exit 0 when intact, 1 when something differs, 2
/// when the store could not be read.
fn audit_verify(store: StoreArgs) -> ExitCode {
    let url = match store.url() {
        Ok(url) => url,
        Err(e) => {
            eprintln!("pound audit verify: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime().block_on(pound::cmd::audit::verify(&url)) {
        Ok(verdict) => {
            println!("{}", serde_json::to_string(&verdict).expect("serialises"));
            match verdict.problem() {
                None => ExitCode::SUCCESS,
                Some(problem) => {
                    let who = problem.verification.as_deref().map_or_else(
                        || format!("tenant {:?}", problem.tenant),
                        |id| format!("verification {id} (tenant {:?})", problem.tenant),
                    );
                    eprintln!("pound audit verify: {who}: {}", problem.detail);
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("pound audit verify: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs a key command on the store `store` names.
fn run_keys<T, F, Fut>(command: &str, store: StoreArgs, run: F) -> ExitCode
where
    T: serde::Serialize,
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, pound::cmd::keys::KeysError>>,
{
    print_json(command, store.url().and_then(|url| runtime().block_on(run(url))))
}

/// Prints a key command's results, one JSON line each, or its error.
fn print_json<T: serde::Serialize>(command: &str, result: Result<Vec<T>, pound::cmd::keys::KeysError>) -> ExitCode {
    match result {
        Ok(values) => {
            for value in values {
                println!("{}", serde_json::to_string(&value).expect("serialises"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{command}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime")
}

/// `--code`: refused with a message that does not repeat the value.
fn parse_code(text: &str) -> Result<Code, String> {
    Code::parse(text).map_err(|e| e.to_string())
}

fn call(cmd: CallCommand) -> ExitCode {
    let args = CallArgs {
        target: cmd.target,
        trunk: cmd.trunk,
        auth_user: cmd.auth_user,
        auth_pass: cmd.auth_pass,
        from_user: cmd.from,
        from_name: cmd.from_name,
        asserted_identity: cmd.pai,
        dialplan: cmd.dialplan,
        dialplans: cmd.dialplans,
        ring_timeout: cmd.timeout.filter(|s| s.is_finite() && *s > 0.0).map(Duration::from_secs_f64),
        bind: cmd.bind,
        transport: cmd.transport.into(),
        codecs: codecs(&cmd.codecs),
        stir: match (cmd.stir_key, cmd.stir_x5u, cmd.stir_attest) {
            (Some(key), Some(x5u), Some(attest)) => Some(StirArgs { key, x5u, attest }),
            _ => None,
        },
        srtp: cmd.srtp.into(),
        tls: TlsFiles { ca: cmd.tls_ca, cert: cmd.tls_cert, key: cmd.tls_key },
        code: cmd.code,
        capture: cmd.capture,
        locale: cmd.locale,
    };
    match runtime().block_on(pound::cmd::call::run(args)) {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).expect("a report serialises"));
            ExitCode::from(exit_code(&report))
        }
        Err(e) => {
            eprintln!("pound call: {e}");
            ExitCode::from(2)
        }
    }
}

fn replay(file: &std::path::Path) -> ExitCode {
    match pound::cmd::replay::run(file) {
        Ok(replayed) => {
            println!("{}", serde_json::to_string(&replayed.report).expect("a report serialises"));
            eprintln!("{}", pound::cmd::replay::summary(&replayed));
            match replayed.divergence {
                Some(_) => ExitCode::from(3),
                None => ExitCode::from(exit_code(&replayed.report)),
            }
        }
        Err(e) => {
            eprintln!("pound replay: {}: {e}", file.display());
            ExitCode::from(2)
        }
    }
}

fn phone(cmd: PhoneCommand) -> ExitCode {
    let (srtp, transport): (SrtpPolicy, Transport) = (cmd.srtp.into(), cmd.transport.into());
    if !srtp.allowed_over(transport) {
        eprintln!("pound phone: --srtp {} needs --transport tls: SDES keys must not travel in clear", srtp.as_str());
        return ExitCode::from(2);
    }
    let audio = |flag: &str, path: Option<&std::path::Path>| match path.map(pound::media::wav::read_file).transpose() {
        Ok(audio) => Ok(audio.map(Arc::from)),
        Err(e) => {
            eprintln!("pound phone: {flag}: {e}");
            Err(ExitCode::from(2))
        }
    };
    let (play, early_media) =
        match (audio("--play", cmd.play.as_deref()), audio("--early-media", cmd.early_media.as_deref())) {
            (Ok(play), Ok(early)) => (play, early),
            (Err(code), _) | (_, Err(code)) => return code,
        };
    let via = cmd.via.into();
    let setup = PhoneSetup {
        listen: cmd.listen,
        calls: cmd.calls,
        config: PhoneConfig {
            local_sip: cmd.listen,
            transport: cmd.transport.into(),
            local_rtp: cmd.listen,
            press: cmd.press,
            play,
            early_media,
            via,
            press_after: Duration::from_millis(cmd.after),
            answer_after: Duration::from_millis(cmd.answer_after),
            reject: cmd.reject,
            never_answer: cmd.no_answer,
            hangup_after: cmd.hangup_after.map(Duration::from_millis),
            silent: cmd.silent,
            codecs: codecs(&cmd.codecs),
            srtp: cmd.srtp.into(),
            timers: Timers::default(),
        },
        tls: TlsFiles { ca: None, cert: cmd.tls_cert, key: cmd.tls_key },
    };
    match runtime().block_on(pound::cmd::phone::run(setup)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pound phone: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dtmf(cmd: DtmfCommand) -> ExitCode {
    let args = DtmfArgs {
        files: cmd.files,
        config: DtmfConfig {
            min_level_dbm0: cmd.min_level,
            normal_twist_db: cmd.twist,
            reverse_twist_db: cmd.reverse_twist,
        },
        chunk: cmd.chunk as usize,
        bench: cmd.bench,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match run(&args, &mut out) {
        Ok(errors) if errors.is_empty() => ExitCode::SUCCESS,
        Ok(errors) => {
            for error in errors {
                eprintln!("pound dtmf: {error}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pound dtmf: writing output: {e}");
            ExitCode::FAILURE
        }
    }
}

//! Where log lines go and what they look like: stderr, as text for people or
//! one JSON object per line for log shippers, filtered by `RUST_LOG` (or its
//! alias `POUND_LOG`, which wins when both are set).

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, fields, and the
    /// fields of every enclosing span (verification id, call id).
    Json,
}

/// The filter directives in force: `POUND_LOG`, else `RUST_LOG`, else `warn`.
fn directives() -> String {
    ["POUND_LOG", "RUST_LOG"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "warn".to_string())
}

/// Installs the process's logger. Bad filter directives are reported once on
/// stderr and replaced by `warn`, rather than silently logging nothing.
pub fn init(format: LogFormat) {
    let directives = directives();
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("pound: ignoring the log filter {directives:?}: {e}");
        EnvFilter::new("warn")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().with_current_span(false).with_span_list(true).init(),
    }
}

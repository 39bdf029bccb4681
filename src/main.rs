//! The `pound` command line: parses arguments and hands over to `pound::cmd`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pound::cmd::dtmf::{DtmfArgs, run};
use pound::dsp::dtmf::DtmfConfig;

#[derive(Parser)]
#[command(name = "pound", version, about = "Phone-call verification over SIP: call, prompt, detect the pound key.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect DTMF digits in WAV files (8 kHz, 16-bit PCM or G.711); one JSON line per digit.
    Dtmf(DtmfCommand),
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
    match Cli::parse().command {
        Command::Dtmf(cmd) => dtmf(cmd),
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

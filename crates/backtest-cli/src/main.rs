//! `backtest`: run backtest sessions and capture every event to JSON Lines,
//! list the service's available ranges, or run the reference server.
//!
//! Exit codes: 0 every session completed; 1 a session failed (the capture
//! is incomplete); 2 usage or input error; 130 interrupted (Ctrl-C or
//! SIGTERM: the sessions were closed and the partial output flushed).

mod output;
mod progress;
mod ranges;
mod run;
mod session;
mod summary;
mod tls;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Exit code: a session failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage or input error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: interrupted by Ctrl-C or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Run backtest sessions against the Solana simulator backtest API (or an
/// embedded reference server) and capture their events.
#[derive(Debug, Parser)]
#[command(name = "backtest", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one backtest (or one parallel batch) to its end, writing every
    /// event to a JSON Lines file.
    Run(Box<RunArgs>),
    /// List the slot ranges the service can replay (`/available-ranges`).
    Ranges(RangesArgs),
    /// Run the reference server in the foreground (same flags as the
    /// `backtest-server` binary).
    Server(backtest_server::cli::ServerArgs),
}

/// Flags of `backtest run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Control-plane URL (`wss://HOST/backtest`, `ws://HOST:PORT`, or a bare
    /// host name for `wss://HOST/backtest`). Without it, an embedded
    /// reference server is started on a free loopback port.
    #[arg(long)]
    pub url: Option<String>,
    /// API key sent as `X-API-Key`.
    #[arg(long, env = "BACKTEST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Also trust the root certificate(s) of this PEM file for `wss://`
    /// (a private CA, a self-signed server), besides the webpki and system
    /// roots.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// First slot to replay.
    #[arg(long)]
    pub start_slot: u64,
    /// Last slot to replay (inclusive).
    #[arg(long, conflicts_with = "slots", required_unless_present = "slots")]
    pub end_slot: Option<u64>,
    /// Number of slots to replay from the start slot.
    #[arg(long)]
    pub slots: Option<u64>,
    /// Subscribe to transactions that mention this program (repeatable).
    #[arg(long = "tx-program", value_name = "ID")]
    pub tx_programs: Vec<String>,
    /// Subscribe to account diffs of accounts owned by this program
    /// (repeatable).
    #[arg(long = "diff-program", value_name = "ID")]
    pub diff_programs: Vec<String>,
    /// Ask the server to split the range into parallel sub-sessions.
    #[arg(long)]
    pub parallel: bool,
    /// Slots per `continue`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub advance_count: u64,
    /// Seconds the server keeps the session alive after the control
    /// connection drops (0..=900); 0 disables control-plane recovery.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u16).range(0..=900))]
    pub disconnect_timeout: u16,
    /// Ask for a session summary in `completed`.
    #[arg(long)]
    pub send_summary: bool,
    /// Seconds a subscription may stay silent after `completed` before the
    /// capture is declared incomplete.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub drain_idle_timeout: u64,
    /// Write every event to this JSON Lines file (`-` for stdout).
    #[arg(long, value_name = "FILE.jsonl")]
    pub out: Option<PathBuf>,
    /// Write the run's summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
    /// No progress bars and no summary on stderr (errors are still shown).
    #[arg(long)]
    pub quiet: bool,
    /// Log filter for stderr (tracing EnvFilter syntax), e.g. `info`.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

/// Flags of `backtest ranges`.
#[derive(Debug, clap::Args)]
pub struct RangesArgs {
    /// Control-plane URL or host of the service (its HTTP base is used).
    /// Without it, the embedded reference server's ranges are listed.
    #[arg(long)]
    pub url: Option<String>,
    /// Also trust the root certificate(s) of this PEM file for `https://`,
    /// besides the webpki and system roots.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Emit JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A failure and the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_FAILED,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(e),
    };
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Ranges(args) => ranges::ranges(args),
        Command::Server(args) => backtest_server::cli::serve(args)
            .map(|()| 0)
            .map_err(CliError::usage),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("backtest: {}", one_line(&e.message));
            ExitCode::from(e.code)
        }
    }
}

/// Help and version go to stdout with exit 0; any other parse error is one
/// line on stderr and exit 2.
fn clap_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // The first paragraph of clap's message, on one line.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            let line = one_line(&first.join(" "));
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("backtest: {line} (see --help)");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Collapse a message onto one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

//! `backtest-server`: run the reference backtest server.
//!
//! Prints exactly one line, `listening on ws://ADDR/backtest`, to stdout once
//! bound (so scripts can read the port), then logs to stderr.

use std::{io::IsTerminal, io::Write, net::SocketAddr, process::ExitCode, time::Duration};

use backtest_server::{FaultPlan, LedgerConfig, ServerConfig};
use clap::Parser;

/// Reference server for the Solana simulator backtest WebSocket API, with
/// synthetic data and fault injection.
#[derive(Debug, Parser)]
#[command(name = "backtest-server", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8900")]
    listen: SocketAddr,
    /// Accepted API key (repeatable). Without any, every key is accepted.
    #[arg(long = "api-key", value_name = "KEY")]
    api_keys: Vec<String>,
    /// Seed of the synthetic ledger.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Program ids the ledger's transactions invoke, comma separated.
    #[arg(long, value_delimiter = ',', value_name = "ID,ID,...")]
    programs: Option<Vec<String>>,
    /// Transactions per slot.
    #[arg(long, default_value_t = 8)]
    txs_per_slot: u32,
    /// Transactions per batch within a slot.
    #[arg(long, default_value_t = 4)]
    batch_size: u32,
    /// First slot of the data set.
    #[arg(long, default_value_t = 1000)]
    first_slot: u64,
    /// Last slot of the data set (inclusive).
    #[arg(long, default_value_t = 100_999)]
    last_slot: u64,
    /// Slots per bundle in `/available-ranges` (and per parallel sub-session).
    #[arg(long, default_value_t = 10_000)]
    bundle_slots: u64,
    /// Pause between executed slots, in milliseconds.
    #[arg(long, default_value_t = 0)]
    slot_interval_ms: u64,
    /// Fault to inject, NAME=VALUE (repeatable; comma-separated lists too):
    /// control-drop-after=N, close-1012-after=N, data-drop-after=N,
    /// data-stall-after=N, attach-busy=K, garbage-every=N,
    /// link-bytes-per-sec=N, random-drops=P, seed=S, terminal-error-at-slot=S.
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `debug`.
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backtest-server: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .map_err(|e| format!("bad --log-level: {e}"))?,
        )
        .init();
    let faults = FaultPlan::from_specs(&args.faults).map_err(|e| e.to_string())?;
    let config = ServerConfig {
        ledger: LedgerConfig {
            seed: args.seed,
            programs: args.programs.unwrap_or_else(LedgerConfig::default_programs),
            txs_per_slot: args.txs_per_slot,
            batch_size: args.batch_size,
            first_slot: args.first_slot,
            last_slot: args.last_slot,
        },
        api_keys: args.api_keys,
        bundle_slots: args.bundle_slots,
        slot_interval: Duration::from_millis(args.slot_interval_ms),
        faults,
        workers: args.workers,
        ..ServerConfig::default()
    };
    let state = backtest_server::build_state(config).map_err(|e| e.to_string())?;
    actix_rt::System::new().block_on(async move {
        let faults = state.config.faults.to_string();
        let (server, addr) = backtest_server::bind(state, args.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "listening on ws://{addr}/backtest");
            let _ = stdout.flush();
        }
        tracing::info!(%addr, %faults, "backtest server started");
        let handle = server.handle();
        actix_rt::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                handle.stop(true).await;
            }
        });
        server.await.map_err(|e| e.to_string())
    })
}

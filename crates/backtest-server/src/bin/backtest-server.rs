//! `backtest-server`: run the reference backtest server.
//!
//! Prints exactly one line, `listening on ws://ADDR/backtest` (`wss://`
//! with `--tls-cert`), to stdout once bound (so scripts can read the port), then logs to stderr.

use std::process::ExitCode;

use backtest_server::cli::ServerArgs;
use clap::Parser;

/// Reference server for the Solana simulator backtest WebSocket API, with
/// synthetic data and fault injection.
#[derive(Debug, Parser)]
#[command(name = "backtest-server", version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match backtest_server::cli::serve(args.server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backtest-server: {e}");
            ExitCode::from(2)
        }
    }
}

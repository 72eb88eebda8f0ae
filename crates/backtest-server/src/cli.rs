//! The server's command-line flags and its foreground run, shared by the
//! `backtest-server` binary and the `backtest server` subcommand of the CLI
//! (so both take exactly the same flags).

use std::{io::IsTerminal, io::Write, net::SocketAddr, path::PathBuf, time::Duration};

use crate::{FaultPlan, LedgerConfig, ServerConfig, TlsConfig};

/// Flags of a foreground reference server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8900")]
    pub listen: SocketAddr,
    /// Accepted API key (repeatable). Without any, every key is accepted.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
    /// Seed of the synthetic ledger.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Program ids the ledger's transactions invoke, comma separated.
    #[arg(long, value_delimiter = ',', value_name = "ID,ID,...")]
    pub programs: Option<Vec<String>>,
    /// Transactions per slot.
    #[arg(long, default_value_t = 8)]
    pub txs_per_slot: u32,
    /// Transactions per batch within a slot.
    #[arg(long, default_value_t = 4)]
    pub batch_size: u32,
    /// First slot of the data set.
    #[arg(long, default_value_t = 1000)]
    pub first_slot: u64,
    /// Last slot of the data set (inclusive).
    #[arg(long, default_value_t = 100_999)]
    pub last_slot: u64,
    /// Slots per bundle in `/available-ranges` (and per parallel sub-session).
    #[arg(long, default_value_t = 10_000)]
    pub bundle_slots: u64,
    /// Pause between executed slots, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub slot_interval_ms: u64,
    /// Fault to inject, NAME=VALUE (repeatable; comma-separated lists too):
    /// control-drop-after=N, close-1012-after=N, data-drop-after=N,
    /// data-stall-after=N, attach-busy=K, garbage-every=N,
    /// link-bytes-per-sec=N, random-drops=P, seed=S, terminal-error-at-slot=S.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `debug`.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Serve TLS (`wss://`) with this certificate chain (PEM, leaf first);
    /// needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServerArgs {
    /// The server configuration these flags describe (faults checked).
    pub fn config(&self) -> Result<ServerConfig, String> {
        let faults = FaultPlan::from_specs(&self.faults).map_err(|e| e.to_string())?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = TlsConfig::from_pem_files(cert, key)
                    .map_err(|e| format!("cannot read --tls-cert/--tls-key: {e}"))?;
                // Checked now, so a bad pair is a one-line start-up error.
                tls.server_config()
                    .map_err(|e| format!("bad --tls-cert/--tls-key: {e}"))?;
                Some(tls)
            }
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        Ok(ServerConfig {
            ledger: LedgerConfig {
                seed: self.seed,
                programs: self
                    .programs
                    .clone()
                    .unwrap_or_else(LedgerConfig::default_programs),
                txs_per_slot: self.txs_per_slot,
                batch_size: self.batch_size,
                first_slot: self.first_slot,
                last_slot: self.last_slot,
            },
            api_keys: self.api_keys.clone(),
            bundle_slots: self.bundle_slots,
            slot_interval: Duration::from_millis(self.slot_interval_ms),
            faults,
            workers: self.workers,
            tls,
            ..ServerConfig::default()
        })
    }
}

/// Run a server in the foreground until Ctrl-C: set up logging to stderr
/// (`--log-level`), bind, print exactly one line,
/// `listening on ws://ADDR/backtest` (`wss://` with `--tls-cert`), to
/// stdout, then serve. An `Err` is a
/// one-line reason (bad flags, cannot listen).
pub fn serve(args: ServerArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log_level)
                .map_err(|e| format!("bad --log-level: {e}"))?,
        )
        .init();
    let config = args.config()?;
    let scheme = if config.tls.is_some() { "wss" } else { "ws" };
    let state = crate::build_state(config).map_err(|e| e.to_string())?;
    actix_rt::System::new().block_on(async move {
        let faults = state.config.faults.to_string();
        let (server, addr) = crate::bind(state, args.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        // Logged before the listening line: whoever reads that line can
        // rely on the start-up log (with the faults) being written already.
        tracing::info!(%addr, %faults, "backtest server started");
        {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "listening on {scheme}://{addr}/backtest");
            let _ = stdout.flush();
        }
        let handle = server.handle();
        actix_rt::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                handle.stop(true).await;
            }
        });
        server.await.map_err(|e| e.to_string())
    })
}

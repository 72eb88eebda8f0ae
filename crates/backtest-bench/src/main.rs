//! `backtest-bench`: throughput, memory and recovery of the backtest-actors
//! client against the crates.io seed crate (`simulator-client` 0.9.0) and
//! the bare in-process decode limit, on loopback against a minimal server.
//!
//! ```text
//! backtest-bench [--quick] [--runs N] [--only firehose,slow_consumer,recovery,end_to_end]
//!                [--markdown PATH]
//! backtest-bench soak [--seeds N] [--first-seed S] [--parallelism P]
//! ```
//!
//! Prints one JSON object per scenario (and codec) on stdout; progress goes
//! to stderr. `--quick` runs a small version of everything in seconds (CI
//! runs it so the harness keeps working; it asserts nothing about speed).
//! `backtest-bench soak` runs the seeded fault soak (see `soak`).
//! `backtest-bench client ...` is the child process of the slow-consumer
//! scenario, not for direct use.

mod clients;
mod corpus;
mod end_to_end;
mod firehose;
mod limit;
mod recovery;
mod report;
mod server;
mod slow;
mod soak;
mod stats;
mod wsframe;

use std::{sync::Arc, time::Duration};

use clap::{Parser, Subcommand};

use crate::{clients::Impl, server::Codec};

#[derive(Parser)]
#[command(name = "backtest-bench", about = "Benchmarks of backtest-actors")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A small version of every scenario (seconds).
    #[arg(long)]
    quick: bool,
    /// Runs per client and scenario (default 5, 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Only these scenarios (comma separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Firehose only: run just these clients (for profiling one of them).
    #[arg(long, value_delimiter = ',')]
    clients: Vec<String>,
    /// Firehose notifications per run (default 100 000, 2 000 with --quick).
    #[arg(long)]
    firehose_count: Option<u64>,
    /// Also write the results as a markdown table to this file.
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// The seeded fault soak: every seed's server, faults, session and
    /// verdict (see docs/reliability.md).
    Soak {
        /// How many seeds.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Seeds run at a time.
        #[arg(long, default_value_t = 3)]
        parallelism: usize,
    },
    /// Child process of the slow-consumer scenario.
    Client {
        #[arg(long = "impl")]
        which: String,
        #[arg(long)]
        control: String,
        #[arg(long)]
        rpc: String,
        #[arg(long)]
        program: String,
        #[arg(long, default_value_t = 50)]
        work_us: u64,
    },
}

/// Sizes of every scenario.
#[derive(Debug, Clone)]
pub struct Settings {
    pub runs: usize,
    /// Clients the firehose runs (both unless narrowed for profiling).
    pub clients: Vec<Impl>,
    pub firehose_count: u64,
    pub slow_count: u64,
    pub slow_work: Duration,
    pub per_slot: u64,
    pub recovery_every: u64,
    pub recovery_drops: usize,
    pub seed_recovery_drops: usize,
    pub e2e_slots: u64,
    pub e2e_txs_per_slot: u32,
    pub e2e_step: u64,
}

impl Settings {
    fn full() -> Self {
        Self {
            runs: 5,
            clients: vec![Impl::Ours, Impl::Seed],
            firehose_count: 100_000,
            slow_count: 200_000,
            slow_work: Duration::from_micros(50),
            per_slot: 8,
            recovery_every: 5_000,
            recovery_drops: 20,
            seed_recovery_drops: 3,
            e2e_slots: 200,
            e2e_txs_per_slot: 64,
            e2e_step: 20,
        }
    }

    fn quick() -> Self {
        Self {
            runs: 1,
            firehose_count: 2_000,
            slow_count: 2_000,
            recovery_every: 300,
            recovery_drops: 3,
            seed_recovery_drops: 1,
            e2e_slots: 10,
            e2e_txs_per_slot: 8,
            e2e_step: 5,
            ..Self::full()
        }
    }
}

fn main() {
    let cli = Cli::parse();
    // Library logs (reconnects, drains) on stderr when BENCH_LOG is set,
    // e.g. BENCH_LOG=backtest_actors=debug.
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    if let Some(Command::Soak {
        seeds,
        first_seed,
        parallelism,
    }) = cli.command
    {
        std::process::exit(soak::main(soak::SoakArgs {
            first_seed,
            seeds,
            parallelism: parallelism.max(1),
        }));
    }
    if let Some(Command::Client {
        which,
        control,
        rpc,
        program,
        work_us,
    }) = cli.command
    {
        let Some(which) = Impl::parse(&which) else {
            eprintln!("--impl ours|seed");
            std::process::exit(2);
        };
        let target = clients::Target {
            control_url: control,
            rpc_endpoint: rpc,
            program,
        };
        std::process::exit(slow::child_main(
            which,
            target,
            Duration::from_micros(work_us),
        ));
    }
    let mut settings = if cli.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    if let Some(runs) = cli.runs {
        settings.runs = runs.max(1);
    }
    if let Some(count) = cli.firehose_count {
        settings.firehose_count = count.max(1);
    }
    if !cli.clients.is_empty() {
        settings.clients = cli.clients.iter().filter_map(|c| Impl::parse(c)).collect();
    }
    let wanted = |name: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == name);
    let corpus = Arc::new(corpus::Corpus::new(settings.per_slot));
    let mut figures = Vec::new();
    let mut failed = false;
    let mut record = |result: Result<stats::Figure, String>| match result {
        Ok(figure) => {
            println!("{}", figure.to_json());
            figures.push(figure);
        }
        Err(e) => {
            eprintln!("error: {e}");
            failed = true;
        }
    };
    if wanted("firehose") {
        for codec in [Codec::Text, Codec::Zstd] {
            record(firehose::run(&settings, &corpus, codec));
        }
    }
    if wanted("slow_consumer") {
        record(slow::run(&settings, corpus.clone()));
    }
    if wanted("recovery") {
        record(recovery::run(&settings, corpus.clone()));
    }
    if wanted("end_to_end") {
        record(end_to_end::run(&settings));
    }
    if let Some(path) = &cli.markdown {
        let table = report::markdown(&settings, &figures);
        if let Err(e) = std::fs::write(path, table) {
            eprintln!("error: write {}: {e}", path.display());
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
}

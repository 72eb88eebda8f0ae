//! Seeded fault soak (see `backtest_e2e::soak`): each seed starts a
//! reference server with a reproducible random mix of faults and runs one
//! single or parallel session, with both subscription kinds, to its end.
//! No item may be lost or delivered twice, no run may hang, every failure
//! must be explained by an injected fault, and nothing may leak.

use backtest_e2e::soak::{self, SoakReport};

/// Worker threads: the seeds are mostly waiting on sockets and timers.
const PARALLELISM: usize = 3;

fn assert_clean(report: &SoakReport) {
    println!("{report}");
    assert_eq!(report.items_lost, 0, "items lost\n{report}");
    assert_eq!(report.duplicates, 0, "duplicates delivered\n{report}");
    assert_eq!(report.hangs, 0, "hangs\n{report}");
    assert_eq!(report.wrong_verdicts, 0, "wrong verdicts\n{report}");
    assert_eq!(report.leaks, 0, "leaked actors or sessions\n{report}");
    if let (Some(before), Some(after)) = (report.fds_before, report.fds_after) {
        assert!(
            after <= before + 8,
            "open file descriptors grew from {before} to {after}\n{report}"
        );
    }
}

/// Seeds that exposed client bugs in the long soak, now fixed (see
/// docs/reliability.md): kept as regression cases, each run several times
/// since the races were timing dependent.
/// * 20, 1012: parallel run under heavy random drops: a continue racing a
///   control drop failed, `run_batch` abandoned the sub-session without
///   shutting it down and the coordinator never granted the siblings'
///   parked reconnects (hang).
/// * 385: the same race failed a sub-session (wrong verdict).
/// * 585: single session, terminal error racing a data drop: `Shutdown`
///   could wait on a connection still in its handshake.
const REGRESSION_SEEDS: &[u64] = &[20, 385, 585, 1012];

/// The soak tests share the process's file descriptors (checked for
/// leaks): one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn thirty_seeds_lose_nothing_duplicate_nothing_and_never_hang() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let seeds: Vec<u64> = (1..=30).collect();
    let report = soak::run_many_with(&seeds, PARALLELISM, |seed| println!("{seed}"));
    assert_eq!(report.runs, 30);
    assert!(report.faults_injected > 0, "the seeds inject faults");
    assert_clean(&report);
}

#[test]
fn regression_seeds_stay_fixed() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let seeds: Vec<u64> = REGRESSION_SEEDS.iter().flat_map(|s| [*s; 3]).collect();
    let report = soak::run_many_with(&seeds, PARALLELISM, |seed| println!("{seed}"));
    assert_clean(&report);
}

/// The long mode: `SOAK_SEEDS` seeds (default 1000) from `SOAK_FIRST_SEED`
/// (default 1), `SOAK_PARALLELISM` workers (default 3).
/// `cargo test -p backtest-e2e --test soak -- --ignored --nocapture`
#[test]
#[ignore = "long soak: thousands of seeds"]
fn long_soak() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    // `RUST_LOG=backtest_actors=debug` to see the connections' lives.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_thread_names(true)
            .try_init();
    }
    let count = env("SOAK_SEEDS", 1000);
    let first = env("SOAK_FIRST_SEED", 1);
    let parallelism = env("SOAK_PARALLELISM", PARALLELISM as u64) as usize;
    let seeds: Vec<u64> = (first..first + count).collect();
    let report = soak::run_many_with(&seeds, parallelism, |seed| {
        if !seed.is_clean() || seed.plan.seed % 100 == 0 {
            println!("{seed}");
            for status in &seed.hang_status {
                println!("    {status}");
            }
        }
    });
    assert_clean(&report);
}

//! `backtest-bench soak`: the seeded fault soak of `backtest_e2e::soak` as
//! a long-running mode of a release build (the test target runs 30 seeds in
//! CI; this runs thousands). Each unclean seed, and every hundredth, is
//! printed on stderr as it ends; the totals go to stderr as text and to
//! stdout as one JSON object. Exit code 0 when every run passed every
//! check, 1 otherwise.

use backtest_e2e::soak::{self, SoakReport};
use serde_json::{Value, json};

/// Which seeds to run and how many at a time.
#[derive(Debug, Clone, Copy)]
pub struct SoakArgs {
    pub first_seed: u64,
    pub seeds: u64,
    pub parallelism: usize,
}

pub fn main(args: SoakArgs) -> i32 {
    let seeds: Vec<u64> = (args.first_seed..args.first_seed.saturating_add(args.seeds)).collect();
    eprintln!(
        "soak: seeds {}..={} on {} workers",
        args.first_seed,
        args.first_seed + args.seeds.saturating_sub(1),
        args.parallelism
    );
    let report = soak::run_many_with(&seeds, args.parallelism, |seed| {
        if !seed.is_clean() || seed.plan.seed.is_multiple_of(100) {
            eprintln!("{seed}");
        }
    });
    eprintln!("{report}");
    println!("{}", to_json(&args, &report));
    if report.is_clean() { 0 } else { 1 }
}

fn to_json(args: &SoakArgs, report: &SoakReport) -> Value {
    json!({
        "scenario": "soak",
        "first_seed": args.first_seed,
        "runs": report.runs,
        "sessions": report.sessions,
        "sessions_completed": report.sessions_completed,
        "failures_by_cause": report.failures_by_cause,
        "faults_injected": report.faults_injected,
        "faults_by_kind": report.faults_by_kind,
        "items_expected": report.items_expected,
        "items_delivered": report.items_delivered,
        "items_lost": report.items_lost,
        "duplicates": report.duplicates,
        "hangs": report.hangs,
        "wrong_verdicts": report.wrong_verdicts,
        "leaks": report.leaks,
        "fds_before": report.fds_before,
        "fds_after": report.fds_after,
        "elapsed_secs": report.elapsed.as_secs_f64(),
        "slowest_seed_secs": report.slowest.as_secs_f64(),
        "bad_seeds": report.bad_seeds.iter().map(|s| s.plan.seed).collect::<Vec<_>>(),
        "clean": report.is_clean(),
    })
}

//! The markdown table of a run (machine, commit, date, figures).

use std::{fmt::Write as _, process::Command};

use crate::{Settings, stats::Figure};

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = command_line("uname", &["-r"]).unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

fn number(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.is_finite() => format!("{v:.2}"),
        _ => "n/a".into(),
    }
}

/// The table, with a header saying where and when it was measured.
pub fn markdown(settings: &Settings, figures: &[Figure]) -> String {
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "- machine: {}", machine());
    let _ = writeln!(out, "- commit: `{commit}` (plus the working tree)");
    let _ = writeln!(out, "- date: {date}");
    let _ = writeln!(out, "- runs per client: {}, medians", settings.runs);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| figure | unit | ours | seed crate | limit | ours vs seed | ours vs limit |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for f in figures {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.label,
            f.unit,
            number(Some(f.ours)),
            number(f.seed_crate),
            number(f.limit),
            number(f.ratio_vs_seed()),
            number(f.ratio_vs_limit()),
        );
    }
    out
}

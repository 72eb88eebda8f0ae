//! Scenario 3, recovery: the server drops the data connection (no close
//! frame) every `every` notifications; the client resubscribes from its
//! cursor (`replayFromSlot`, inclusive, so the boundary slot comes again).
//!
//! Figures: total time; per drop, the consumer-visible stall (the gap
//! between the last notification delivered before the resume and the first
//! new one after it) and the gap from the server's drop to that first new
//! notification (which also includes draining what was already in the
//! socket buffers when the server dropped); and exactly-once delivery.
//!
//! The seed crate backs off 1 s, 2 s, 4 s, ... between reconnects and only
//! resets after 30 s of uptime, so 20 drops would take minutes and run out
//! of its budget: it gets `seed_recovery_drops` drops instead, and the
//! figure says so.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    Settings,
    clients::{self, Impl, Target},
    corpus::{Corpus, signature},
    server::{BenchServer, Codec, DataPlan},
    stats::{Better, Figure, median, percentile},
};

/// What one run showed.
struct Outcome {
    total_s: f64,
    visible_ms: Vec<f64>,
    from_drop_ms: Vec<f64>,
    duplicates: u64,
    missing: u64,
    drops: usize,
}

pub fn run(settings: &Settings, corpus: Arc<Corpus>) -> Result<Figure, String> {
    let most = settings.recovery_drops.max(settings.seed_recovery_drops) as u64 + 1;
    let index: Arc<HashMap<String, u32>> = Arc::new(
        (0..most * settings.recovery_every)
            .map(|i| (signature(i), i as u32))
            .collect(),
    );
    let mut ours = Vec::new();
    let mut seed = Vec::new();
    for round in 0..settings.runs {
        let order = if round % 2 == 0 {
            [Impl::Ours, Impl::Seed]
        } else {
            [Impl::Seed, Impl::Ours]
        };
        for which in order {
            let drops = match which {
                Impl::Ours => settings.recovery_drops,
                Impl::Seed => settings.seed_recovery_drops,
            };
            let outcome = one(settings, &corpus, &index, which, drops)?;
            eprintln!(
                "recovery {} run {}: {:.2} s, {} drops, stall p50 {:.1} ms, drop→new p50 {:.1} ms, dup {} missing {}",
                which.name(),
                round + 1,
                outcome.total_s,
                outcome.drops,
                median(&outcome.visible_ms),
                median(&outcome.from_drop_ms),
                outcome.duplicates,
                outcome.missing
            );
            match which {
                Impl::Ours => ours.push(outcome),
                Impl::Seed => seed.push(outcome),
            }
        }
    }
    let all = |runs: &[Outcome], f: fn(&Outcome) -> &Vec<f64>| -> Vec<f64> {
        runs.iter().flat_map(|o| f(o).iter().copied()).collect()
    };
    let ours_visible = all(&ours, |o| &o.visible_ms);
    let seed_visible = all(&seed, |o| &o.visible_ms);
    let ours_from_drop = all(&ours, |o| &o.from_drop_ms);
    let seed_from_drop = all(&seed, |o| &o.from_drop_ms);
    let totals = |runs: &[Outcome]| median(&runs.iter().map(|o| o.total_s).collect::<Vec<_>>());
    let exactly_once = ours.iter().all(|o| o.duplicates == 0 && o.missing == 0);
    let seed_missing: u64 = seed.iter().map(|o| o.missing).sum();
    let seed_duplicates: u64 = seed.iter().map(|o| o.duplicates).sum();
    Ok(Figure {
        scenario: "recovery",
        codec: Some(Codec::Text.name()),
        label: format!(
            "recovery, drop every {} notifications: stall per drop, p50",
            settings.recovery_every
        ),
        unit: "ms",
        better: Better::Lower,
        ours: median(&ours_visible),
        seed_crate: Some(median(&seed_visible)),
        limit: None,
        extra: json!({
            "drops_ours": settings.recovery_drops,
            "drops_seed_crate": settings.seed_recovery_drops,
            "notifications_ours": (settings.recovery_drops as u64 + 1) * settings.recovery_every,
            "notifications_seed_crate": (settings.seed_recovery_drops as u64 + 1) * settings.recovery_every,
            "stall_p99_ms": {"ours": percentile(&ours_visible, 99.0), "seed_crate": percentile(&seed_visible, 99.0)},
            "drop_to_next_new_p50_ms": {"ours": median(&ours_from_drop), "seed_crate": median(&seed_from_drop)},
            "drop_to_next_new_p99_ms": {"ours": percentile(&ours_from_drop, 99.0), "seed_crate": percentile(&seed_from_drop, 99.0)},
            "total_time_s": {"ours": totals(&ours), "seed_crate": totals(&seed)},
            "exactly_once_ours": exactly_once,
            "seed_crate_duplicates_delivered": seed_duplicates,
            "seed_crate_missing": seed_missing,
        }),
    })
}

fn one(
    settings: &Settings,
    corpus: &Arc<Corpus>,
    index: &HashMap<String, u32>,
    which: Impl,
    drops: usize,
) -> Result<Outcome, String> {
    let count = (drops as u64 + 1) * settings.recovery_every;
    let server = BenchServer::start(DataPlan::Generated {
        corpus: corpus.clone(),
        count,
        codec: Codec::Text,
        drop_every: Some(settings.recovery_every),
        max_drops: drops,
    })
    .map_err(|e| e.to_string())?;
    let target = Target {
        control_url: server.control_url(),
        rpc_endpoint: server.rpc_endpoint(),
        program: corpus.program.clone(),
    };
    let mut delivered: Vec<(u32, Instant)> = Vec::with_capacity(count as usize + 1024);
    let run = clients::run(which, &target, &mut |tx| {
        let at = Instant::now();
        let sig = backtest_actors::frames::transaction_signature(tx).unwrap_or_default();
        delivered.push((index.get(&sig).copied().unwrap_or(u32::MAX), at));
    })?;
    let marks = server.drops();
    let mut seen = vec![0u32; count as usize];
    for (i, _) in &delivered {
        if let Some(slot) = seen.get_mut(*i as usize) {
            *slot += 1;
        }
    }
    let duplicates = seen.iter().map(|&c| u64::from(c.saturating_sub(1))).sum();
    let missing = seen.iter().filter(|&&c| c == 0).count() as u64;
    let mut visible_ms = Vec::new();
    let mut from_drop_ms = Vec::new();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for mark in &marks {
        let next = mark.last_index as u32 + 1;
        let Some(p) = delivered.iter().position(|(i, _)| *i == next) else {
            continue;
        };
        // The stall: the longest pause between consecutive deliveries from
        // the drop to the first new notification (what was still buffered,
        // the reconnect, replayed duplicates: only the pause counts).
        let before = delivered[..p]
            .partition_point(|(_, at)| *at <= mark.at)
            .saturating_sub(1);
        let stall = delivered[before..=p]
            .windows(2)
            .map(|w| w[1].1 - w[0].1)
            .max()
            .unwrap_or_default();
        visible_ms.push(ms(stall));
        from_drop_ms.push(ms(delivered[p].1.saturating_duration_since(mark.at)));
    }
    Ok(Outcome {
        total_s: (run.finished - run.started).as_secs_f64(),
        visible_ms,
        from_drop_ms,
        duplicates,
        missing,
        drops: marks.len(),
    })
}

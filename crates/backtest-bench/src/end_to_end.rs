//! Scenario 4, end to end: a whole session against the reference server
//! (`backtest_server::RunningServer`, in process): create, subscribe to
//! transactions and account diffs of every program, continue until
//! completed. Figure: delivered events per second, ours and the seed
//! crate's `ManagedBacktestSession` side by side (same server, same thread
//! budget for the client: one).

use std::time::{Duration, Instant};

use backtest_actors::{
    Continue, ManagedEvent, NextEvent, SessionSupervisor, SubscribeAccountDiffs,
    SubscribeTransactions, WaitSession,
};
use backtest_server::{LedgerConfig, RunningServer, ServerConfig};
use serde_json::json;
use simulator_api::{ContinueParams, CreateBacktestSessionRequest};

use crate::{
    Settings,
    clients::{Impl, STALL},
    stats::{Better, Figure, median},
};

/// What one session delivered.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    events: u64,
    transactions: u64,
    diffs: u64,
    completed: bool,
}

pub fn run(settings: &Settings) -> Result<Figure, String> {
    let first = 1_000;
    let last = first + settings.e2e_slots - 1;
    let server = RunningServer::spawn(
        ServerConfig {
            ledger: LedgerConfig {
                txs_per_slot: settings.e2e_txs_per_slot,
                first_slot: first,
                last_slot: last,
                ..LedgerConfig::default()
            },
            workers: 1,
            ..ServerConfig::default()
        },
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
    )
    .map_err(|e| e.to_string())?;
    let programs = server.state().ledger.programs().to_vec();
    let create: CreateBacktestSessionRequest =
        serde_json::from_value(json!({"startSlot": first, "endSlot": last}))
            .map_err(|e| e.to_string())?;
    let expected_txs = settings.e2e_slots * u64::from(settings.e2e_txs_per_slot);
    let (mut ours, mut seed) = (Vec::new(), Vec::new());
    let mut tallies = Vec::new();
    for round in 0..settings.runs {
        let order = if round % 2 == 0 {
            [Impl::Ours, Impl::Seed]
        } else {
            [Impl::Seed, Impl::Ours]
        };
        for which in order {
            let started = Instant::now();
            let tally = match which {
                Impl::Ours => ours_session(&server, &programs, &create, settings.e2e_step)?,
                Impl::Seed => seed_session(&server, &programs, &create, settings.e2e_step)?,
            };
            let elapsed = started.elapsed().as_secs_f64();
            if !tally.completed || tally.transactions != expected_txs {
                return Err(format!(
                    "end_to_end {}: {tally:?}, expected {expected_txs} transactions",
                    which.name()
                ));
            }
            let rate = tally.events as f64 / elapsed;
            eprintln!(
                "end_to_end {} run {}: {} events ({} tx, {} diffs) in {elapsed:.2} s = {rate:.0}/s",
                which.name(),
                round + 1,
                tally.events,
                tally.transactions,
                tally.diffs
            );
            match which {
                Impl::Ours => ours.push(rate),
                Impl::Seed => seed.push(rate),
            }
            tallies.push(tally);
        }
    }
    server.stop();
    let sample = tallies.first().copied().unwrap_or_default();
    Ok(Figure {
        scenario: "end_to_end",
        codec: Some("zstd"),
        label: format!(
            "end to end, {} slots x {} transactions, both subscription kinds",
            settings.e2e_slots, settings.e2e_txs_per_slot
        ),
        unit: "events/s",
        better: Better::Higher,
        ours: median(&ours),
        seed_crate: Some(median(&seed)),
        limit: None,
        extra: json!({
            "events_per_session": sample.events,
            "transactions_per_session": sample.transactions,
            "account_diffs_per_session": sample.diffs,
            "continue_advance_count": settings.e2e_step,
            "runs_ours": ours, "runs_seed_crate": seed,
        }),
    })
}

fn step(advance: u64) -> ContinueParams {
    ContinueParams {
        advance_count: advance,
        ..ContinueParams::default()
    }
}

fn ours_session(
    server: &RunningServer,
    programs: &[String],
    create: &CreateBacktestSessionRequest,
    advance: u64,
) -> Result<Tally, String> {
    let url = server.control_url();
    let programs = programs.to_vec();
    let create = create.clone();
    actix_rt::System::new().block_on(async move {
        let addr = SessionSupervisor::builder(url, "bench", create).start();
        let wait = |e: &dyn std::fmt::Display| format!("ours: {e}");
        within(addr.send(WaitSession))
            .await?
            .map_err(|e| wait(&e))?
            .map_err(|e| wait(&e))?;
        within(addr.send(SubscribeTransactions {
            programs: programs.clone(),
        }))
        .await?
        .map_err(|e| wait(&e))?
        .map_err(|e| wait(&e))?;
        within(addr.send(SubscribeAccountDiffs {
            programs: programs.clone(),
        }))
        .await?
        .map_err(|e| wait(&e))?
        .map_err(|e| wait(&e))?;
        let mut tally = Tally::default();
        loop {
            let next = within(addr.send(NextEvent))
                .await?
                .map_err(|e| wait(&e))?
                .map_err(|e| wait(&e))?;
            let Some(event) = next else { break };
            tally.events += 1;
            match event {
                ManagedEvent::Transaction(_) => tally.transactions += 1,
                ManagedEvent::AccountDiff(_) => tally.diffs += 1,
                ManagedEvent::Completed { .. } => tally.completed = true,
                ManagedEvent::ReadyForContinue | ManagedEvent::Paused(_) => {
                    let addr = addr.clone();
                    actix_rt::spawn(async move {
                        let _ = addr.send(Continue(step(advance))).await;
                    });
                }
                _ => {}
            }
        }
        Ok(tally)
    })
}

fn seed_session(
    server: &RunningServer,
    programs: &[String],
    create: &CreateBacktestSessionRequest,
    advance: u64,
) -> Result<Tally, String> {
    use simulator_client::managed::{
        ManagedBacktestSession, ManagedEvent as SeedEvent, ManagedSessionError,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let start =
            ManagedBacktestSession::start(server.control_url(), "bench".into(), create.clone());
        let mut session = within(start).await?.map_err(|e| format!("seed: {e}"))?;
        session.subscribe_transactions(programs.to_vec());
        session.subscribe_account_diffs(programs.to_vec());
        let mut tally = Tally::default();
        loop {
            match within(session.next_event()).await? {
                Ok(event) => {
                    tally.events += 1;
                    match event {
                        SeedEvent::Transaction(_) => tally.transactions += 1,
                        SeedEvent::AccountDiff(_) => tally.diffs += 1,
                        SeedEvent::Completed { .. } => tally.completed = true,
                        SeedEvent::ReadyForContinue | SeedEvent::Paused(_) => {
                            within(session.send_continue(step(advance)))
                                .await?
                                .map_err(|e| format!("seed: {e}"))?;
                        }
                        _ => {}
                    }
                }
                Err(ManagedSessionError::ControlClosed) if tally.completed => break,
                Err(e) => return Err(format!("seed: {e}")),
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), session.shutdown()).await;
        Ok(tally)
    })
}

/// Await `f` for at most [`STALL`].
async fn within<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    tokio::time::timeout(STALL, f)
        .await
        .map_err(|_| format!("no progress for {STALL:?}"))
}

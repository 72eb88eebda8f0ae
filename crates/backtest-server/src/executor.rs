//! Runs one session: executes slots on `continue` / `continueTo`, announces
//! discoveries, publishes progress for the data plane and ends the session.
//!
//! Slots are executed batch by batch so `continueTo {slot, batchIndex}` can
//! stop before a batch. Nothing is really executed: the ledger's
//! transactions are the outcome.

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use simulator_api::{
    BacktestError, BacktestStatus, BinaryEncoding, ContinueParams, ContinueToParams,
    DiscoveryBatchEvent, DiscoveryFilter, EncodedBinary, PausedEvent, SessionEventKind,
    SessionSummary,
};
use tracing::{debug, info};

use crate::{
    session::{Command, Finish, Framing, Session, SessionRunner},
    state::ServerState,
};

/// How far ahead of the cursor a discovery is looked for, in slots.
const DISCOVERY_LOOKAHEAD_SLOTS: u64 = 1_000;

/// The next thing to execute: batch `batch` of slot `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    slot: u64,
    batch: u32,
}

/// Where a run of slots must stop.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// After this many whole slots.
    Count(u64),
    /// Before batch `batch` of `slot` (`None`: after the whole slot).
    At { slot: u64, batch: Option<u32> },
}

/// Drive `session` until it ends. Spawned once per session.
pub async fn run(session: Arc<Session>, mut runner: SessionRunner, server: Arc<ServerState>) {
    let mut exec = Executor {
        position: Position {
            slot: session.spec.start_slot,
            batch: 0,
        },
        announced: None,
        executed_transactions: 0,
        session,
        server,
    };
    exec.start().await;
    if exec.session.is_ended() {
        return;
    }
    loop {
        let command = tokio::select! {
            command = runner.commands.recv() => command,
            _ = exec.session.ended() => None,
        };
        let Some(command) = command else { break };
        exec.session.wait_resumed().await;
        if exec.session.is_ended() {
            break;
        }
        let done = match command {
            Command::Continue(params) => exec.continue_(params).await,
            Command::ContinueTo(params) => exec.continue_to(params).await,
        };
        if done {
            break;
        }
    }
    debug!(session_id = %exec.session.id, "executor stopped");
}

struct Executor {
    session: Arc<Session>,
    server: Arc<ServerState>,
    position: Position,
    /// The discovery last announced, so it is not announced twice.
    announced: Option<Position>,
    executed_transactions: usize,
}

impl Executor {
    /// The opening responses: `status startingRuntime`, `sessionCreated`
    /// (single sessions; a parallel group announces its sub-sessions
    /// itself), the first discovery and `readyForContinue`.
    async fn start(&mut self) {
        self.session
            .emit(SessionEventKind::Status {
                status: BacktestStatus::StartingRuntime,
            })
            .await;
        if !matches!(self.session.framing, Framing::ParallelEvent) {
            self.session
                .emit_response(self.session.created_response())
                .await;
        }
        self.announce_next_discovery().await;
        self.session.emit(SessionEventKind::ReadyForContinue).await;
    }

    /// Returns true when the session ended.
    async fn continue_(&mut self, params: ContinueParams) -> bool {
        if let Err(error) = validate_continue(&params) {
            self.session.emit(SessionEventKind::Error(error)).await;
            self.session.emit(SessionEventKind::ReadyForContinue).await;
            return false;
        }
        let count = params.advance_count.max(1);
        self.run_until(Stop::Count(count)).await
    }

    async fn continue_to(&mut self, params: ContinueToParams) -> bool {
        let target = Position {
            slot: params.slot,
            batch: params.batch_index.unwrap_or(0),
        };
        let behind = match params.batch_index {
            Some(_) => target < self.position,
            None => params.slot < self.position.slot,
        };
        if behind || params.slot > self.session.spec.end_slot {
            let error = BacktestError::InvalidRequest {
                error: format!(
                    "continueTo target slot {} batch {:?} is outside the session's remaining range {}..={}",
                    params.slot, params.batch_index, self.position.slot, self.session.spec.end_slot
                ),
            };
            self.session.emit(SessionEventKind::Error(error)).await;
            self.session.emit(SessionEventKind::ReadyForContinue).await;
            return false;
        }
        self.run_until(Stop::At {
            slot: params.slot,
            batch: params.batch_index,
        })
        .await
    }

    /// Execute until `stop`; then announce, and say ready / paused /
    /// completed. Returns true when the session ended.
    async fn run_until(&mut self, stop: Stop) -> bool {
        let mut slots_done = 0u64;
        loop {
            if self.session.is_ended() {
                return true;
            }
            match stop {
                Stop::Count(n) if slots_done >= n => break,
                Stop::At {
                    slot,
                    batch: Some(b),
                } if self.position >= (Position { slot, batch: b }) => {
                    self.announce_next_discovery().await;
                    self.session
                        .emit(SessionEventKind::Paused(PausedEvent {
                            slot,
                            batch_index: Some(b),
                        }))
                        .await;
                    return false;
                }
                Stop::At { slot, batch: None } if self.position.slot > slot => {
                    self.announce_next_discovery().await;
                    self.session
                        .emit(SessionEventKind::Paused(PausedEvent {
                            slot,
                            batch_index: None,
                        }))
                        .await;
                    return false;
                }
                _ => {}
            }
            let until_batch = match stop {
                Stop::At {
                    slot,
                    batch: Some(b),
                } if slot == self.position.slot => Some(b),
                _ => None,
            };
            match self.execute(until_batch).await {
                Step::Partial => {}
                Step::SlotDone => slots_done += 1,
                Step::Ended => return true,
            }
            if self.position.slot > self.session.spec.end_slot {
                self.complete().await;
                return true;
            }
            self.session.wait_resumed().await;
        }
        self.announce_next_discovery().await;
        self.session.emit(SessionEventKind::ReadyForContinue).await;
        false
    }

    /// Execute batches of the current slot, up to (not including)
    /// `until_batch` when given, else the rest of the slot.
    async fn execute(&mut self, until_batch: Option<u32>) -> Step {
        let slot = self.position.slot;
        if self.server.config.faults.terminal_error_at_slot == Some(slot) {
            // Logged and counted like every other fault, so a run's log and
            // `faults_fired` say why the session failed.
            info!(
                session_id = %self.session.id,
                plane = "control",
                slot,
                fault = "terminal-error",
                "fault injected"
            );
            self.server.fault_fired("terminal-error");
            self.session
                .emit(SessionEventKind::Error(BacktestError::AdvanceSlotFailed {
                    slot,
                    error: "injected fault: terminal-error-at-slot".into(),
                }))
                .await;
            self.server.finish_session(&self.session, Finish::Failed);
            return Step::Ended;
        }
        let Some(data) = self.server.ledger.slot(slot) else {
            self.session
                .emit(SessionEventKind::Error(BacktestError::NoMoreBlocks))
                .await;
            self.server.finish_session(&self.session, Finish::Failed);
            return Step::Ended;
        };
        let batches = data.batch_count();
        let end = until_batch.unwrap_or(batches).min(batches);
        while self.position.batch < end {
            self.executed_transactions += data.batch(self.position.batch).len();
            if self.announced == Some(self.position) {
                self.announced = None;
            }
            self.position.batch += 1;
        }
        if self.position.batch < batches {
            return Step::Partial;
        }
        let interval = self.server.config.slot_interval;
        if !interval.is_zero() {
            actix_rt::time::sleep(interval).await;
        }
        self.position = Position {
            slot: slot + 1,
            batch: 0,
        };
        self.server.count_executed_slot(&self.session);
        self.session.publish_slot(slot);
        self.session
            .emit(SessionEventKind::SlotNotification(slot))
            .await;
        Step::SlotDone
    }

    async fn complete(&mut self) {
        let summary = self.session.spec.send_summary.then(|| SessionSummary {
            correct_simulation: self.executed_transactions,
            ..SessionSummary::default()
        });
        // Progress first: the data plane ends its subscriptions after the
        // last slot, whatever order the client reads the two planes in.
        self.server.finish_session(&self.session, Finish::Completed);
        self.session
            .emit(SessionEventKind::Completed { summary })
            .await;
    }

    /// Announce the next batch ahead that matches a discovery filter, unless
    /// it was already announced.
    async fn announce_next_discovery(&mut self) {
        if self.session.spec.discoveries.is_empty() {
            return;
        }
        let last = self
            .session
            .spec
            .end_slot
            .min(self.position.slot.saturating_add(DISCOVERY_LOOKAHEAD_SLOTS));
        let mut from = self.position;
        while from.slot <= last {
            let Some(data) = self.server.ledger.slot(from.slot) else {
                return;
            };
            for batch in from.batch..data.batch_count() {
                let txs = data.batch(batch);
                let matched: Vec<&String> = self
                    .session
                    .spec
                    .discoveries
                    .iter()
                    .filter(|program| txs.iter().any(|tx| tx.mentions(program)))
                    .collect();
                if matched.is_empty() {
                    continue;
                }
                let here = Position {
                    slot: from.slot,
                    batch,
                };
                if self.announced == Some(here) {
                    return;
                }
                self.announced = Some(here);
                let event = DiscoveryBatchEvent {
                    slot: from.slot,
                    batch_index: batch,
                    matched: matched
                        .iter()
                        .filter_map(|p| p.parse().ok().map(DiscoveryFilter::ProgramExecuted))
                        .collect(),
                    transactions: txs
                        .iter()
                        .filter(|tx| matched.iter().any(|p| tx.mentions(p)))
                        .map(|tx| EncodedBinary::from_bytes(&tx.wire_bytes, BinaryEncoding::Base64))
                        .collect(),
                };
                self.session
                    .emit(SessionEventKind::DiscoveryBatch(event))
                    .await;
                return;
            }
            from = Position {
                slot: from.slot + 1,
                batch: 0,
            };
        }
    }
}

enum Step {
    Partial,
    SlotDone,
    Ended,
}

/// Decode what a real runtime would decode; nothing is executed.
fn validate_continue(params: &ContinueParams) -> Result<(), BacktestError> {
    for (index, tx) in params.transactions.iter().enumerate() {
        BASE64
            .decode(tx)
            .map_err(|e| BacktestError::InvalidTransactionEncoding {
                index,
                error: e.to_string(),
            })?;
    }
    for (address, account) in &params.modify_account_states.0 {
        account
            .data
            .decode()
            .map_err(|e| BacktestError::InvalidAccountEncoding {
                address: address.to_string(),
                encoding: account.data.encoding,
                error: e.to_string(),
            })?;
    }
    Ok(())
}

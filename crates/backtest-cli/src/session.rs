//! Driving one session to its end, whatever kind of handle it is (a single
//! session, or a sub-session of a parallel batch): subscribe, continue on
//! every ready, write every event, track progress and counters.

use std::{
    cell::RefCell,
    rc::Rc,
    time::{Duration, Instant},
};

use backtest_actors::{
    ManagedBacktestSession, ManagedEvent, ManagedSessionError, ParallelSubSession, SessionStatus,
};
use simulator_api::ContinueParams;
use tokio_util::sync::CancellationToken;

use crate::{output::Output, progress::Progress};

/// How often the progress bar refreshes the session's counters.
const STATUS_EVERY: Duration = Duration::from_millis(250);

/// What the runner needs from a session handle.
pub trait SessionHandle {
    fn session_id(&self) -> String;
    /// First and last slot (inclusive) this handle runs.
    fn range(&self) -> (u64, u64);
    fn subscribe_transactions(&mut self, programs: Vec<String>);
    fn subscribe_account_diffs(&mut self, programs: Vec<String>);
    async fn next_event(&mut self) -> Result<ManagedEvent, ManagedSessionError>;
    async fn send_continue(&self, params: ContinueParams) -> Result<(), ManagedSessionError>;
    async fn status(&self) -> Result<SessionStatus, ManagedSessionError>;
    async fn shutdown(self);
}

/// A single session and the range it was created with.
pub struct Single {
    pub session: ManagedBacktestSession,
    pub range: (u64, u64),
}

impl SessionHandle for Single {
    fn session_id(&self) -> String {
        self.session.session_info().session_id.clone()
    }

    fn range(&self) -> (u64, u64) {
        self.range
    }

    fn subscribe_transactions(&mut self, programs: Vec<String>) {
        self.session.subscribe_transactions(programs);
    }

    fn subscribe_account_diffs(&mut self, programs: Vec<String>) {
        self.session.subscribe_account_diffs(programs);
    }

    async fn next_event(&mut self) -> Result<ManagedEvent, ManagedSessionError> {
        self.session.next_event().await
    }

    async fn send_continue(&self, params: ContinueParams) -> Result<(), ManagedSessionError> {
        self.session.send_continue(params).await
    }

    async fn status(&self) -> Result<SessionStatus, ManagedSessionError> {
        self.session.status().await
    }

    async fn shutdown(self) {
        self.session.shutdown().await;
    }
}

impl SessionHandle for ParallelSubSession {
    fn session_id(&self) -> String {
        self.session_info().session_id.clone()
    }

    fn range(&self) -> (u64, u64) {
        ParallelSubSession::range(self)
    }

    fn subscribe_transactions(&mut self, programs: Vec<String>) {
        ManagedBacktestSession::subscribe_transactions(self, programs);
    }

    fn subscribe_account_diffs(&mut self, programs: Vec<String>) {
        ManagedBacktestSession::subscribe_account_diffs(self, programs);
    }

    async fn next_event(&mut self) -> Result<ManagedEvent, ManagedSessionError> {
        ManagedBacktestSession::next_event(self).await
    }

    async fn send_continue(&self, params: ContinueParams) -> Result<(), ManagedSessionError> {
        ManagedBacktestSession::send_continue(self, params).await
    }

    async fn status(&self) -> Result<SessionStatus, ManagedSessionError> {
        ManagedBacktestSession::status(self).await
    }

    async fn shutdown(self) {
        ParallelSubSession::shutdown(self).await;
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Completed,
    Failed(String),
    Cancelled,
}

/// What one session delivered.
#[derive(Debug, Clone)]
pub struct SessionReport {
    pub session_id: String,
    pub slots: u64,
    pub transactions: u64,
    pub account_diffs: u64,
    pub duplicates_removed: u64,
    pub reconnects: u64,
    pub end: End,
}

/// What to subscribe and how to step.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tx_programs: Vec<String>,
    pub diff_programs: Vec<String>,
    pub advance_count: u64,
}

/// Subscribe, then drive the session to its end, writing every event to
/// `out`. Closes the session (graceful close request) however it ends.
pub async fn drive<H: SessionHandle>(
    mut handle: H,
    plan: &Plan,
    out: Rc<RefCell<Output>>,
    progress: &Progress,
    cancel: CancellationToken,
) -> SessionReport {
    let session_id = handle.session_id();
    let (first, last) = handle.range();
    let bar = progress.session(&short_id(&session_id), last - first + 1);
    if !plan.tx_programs.is_empty() {
        handle.subscribe_transactions(plan.tx_programs.clone());
    }
    if !plan.diff_programs.is_empty() {
        handle.subscribe_account_diffs(plan.diff_programs.clone());
    }
    let mut report = SessionReport {
        session_id: session_id.clone(),
        slots: 0,
        transactions: 0,
        account_diffs: 0,
        duplicates_removed: 0,
        reconnects: 0,
        end: End::Cancelled,
    };
    let mut last_status = Instant::now();
    let end = loop {
        if cancel.is_cancelled() {
            break End::Cancelled;
        }
        let event = match handle.next_event().await {
            Ok(event) => event,
            Err(ManagedSessionError::Cancelled) => break End::Cancelled,
            Err(e) => break End::Failed(e.to_string()),
        };
        if let Err(e) = out.borrow_mut().write(&session_id, &event) {
            break End::Failed(format!("writing the capture: {e}"));
        }
        match &event {
            ManagedEvent::Transaction(_) => report.transactions += 1,
            ManagedEvent::AccountDiff(_) => report.account_diffs += 1,
            ManagedEvent::Slot(_) => report.slots += 1,
            ManagedEvent::Error(e) => tracing::warn!(session = %session_id, "server error: {e}"),
            _ => {}
        }
        if last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            refresh(&handle, &mut report).await;
        }
        bar.update(&report);
        match event {
            ManagedEvent::ReadyForContinue | ManagedEvent::Paused(_) => {
                let step = ContinueParams {
                    advance_count: plan.advance_count,
                    ..ContinueParams::default()
                };
                let sent = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => break End::Cancelled,
                    sent = handle.send_continue(step) => sent,
                };
                match sent {
                    Ok(()) => {}
                    Err(ManagedSessionError::Cancelled) => break End::Cancelled,
                    Err(e) => break End::Failed(e.to_string()),
                }
            }
            ManagedEvent::Completed { .. } => break End::Completed,
            _ => {}
        }
    };
    refresh(&handle, &mut report).await;
    report.end = end;
    bar.finish(&report);
    handle.shutdown().await;
    report
}

/// Take the counters the consumer cannot see from the session's status.
async fn refresh<H: SessionHandle>(handle: &H, report: &mut SessionReport) {
    if let Ok(status) = handle.status().await {
        report.duplicates_removed = status.counters.duplicates_removed;
        report.reconnects = status.counters.reconnects;
    }
}

/// A label for a progress bar: the end of the session id.
fn short_id(id: &str) -> String {
    let tail: Vec<char> = id.chars().rev().take(12).collect();
    tail.into_iter().rev().collect()
}

//! `ManagedParallelSession`: the async facade of a parallel run, with the
//! signatures of crates.io `simulator-client`'s, and a batch driver that
//! runs every sub-session to its end with one call.

use std::ops::{Deref, DerefMut};

use actix::{Addr, Message, Recipient};
use simulator_api::{ContinueParams, CreateBacktestSessionRequest, SessionSummary};
use tokio_util::sync::CancellationToken;

use crate::{
    ManagedBacktestSession, ParallelSupervisor, SupervisorBuilder,
    events::{ManagedEvent, ManagedSessionError},
    messages::Shutdown,
    parallel::{GetParallelStatus, ParallelStatus, WaitSubSessions},
    runtime,
};

/// A parallel run: its sub-sessions are driven one by one or together
/// ([`run_batch`]).
pub struct ManagedParallelSession {
    addr: Addr<ParallelSupervisor>,
    control_session_id: String,
    subs: Vec<ParallelSubSession>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for ManagedParallelSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedParallelSession")
            .field("control_session_id", &self.control_session_id)
            .field("sub_sessions", &self.subs.len())
            .finish_non_exhaustive()
    }
}

/// One sub-session: a [`ManagedBacktestSession`] (deref) with its range.
#[derive(Debug)]
pub struct ParallelSubSession {
    session: ManagedBacktestSession,
    range: (u64, u64),
}

impl Deref for ParallelSubSession {
    type Target = ManagedBacktestSession;

    fn deref(&self) -> &Self::Target {
        &self.session
    }
}

impl DerefMut for ParallelSubSession {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.session
    }
}

impl ParallelSubSession {
    /// `(start_slot, end_slot)` as the server split the run.
    pub fn range(&self) -> (u64, u64) {
        self.range
    }

    /// Shut this sub-session down (the server is asked to end it).
    pub async fn shutdown(self) {
        self.session.shutdown().await;
    }
}

impl ManagedParallelSession {
    /// Create a parallel run and wait for its sub-sessions. `create` is sent
    /// with `parallel: true`. Cancelling `cancel` aborts the start and,
    /// later, every sub-session's `next_event`.
    pub async fn start_with_cancel(
        url: String,
        api_key: String,
        create: CreateBacktestSessionRequest,
        cancel: CancellationToken,
    ) -> Result<Self, ManagedSessionError> {
        Self::start_with_builder(ParallelSupervisor::builder(url, api_key, create), cancel).await
    }

    /// Start from a configured builder (policy, timeouts, drain, credit).
    pub async fn start_with_builder(
        builder: SupervisorBuilder,
        cancel: CancellationToken,
    ) -> Result<Self, ManagedSessionError> {
        let addr = runtime::start_actor(move || ParallelSupervisor::start_from(builder)).await?;
        let created = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let _ = addr.send(Shutdown).await;
                return Err(ManagedSessionError::Cancelled);
            }
            created = addr.send(WaitSubSessions) => created,
        };
        let (control_session_id, subs) =
            created.map_err(|_| ManagedSessionError::ControlClosed)??;
        let subs = subs
            .into_iter()
            .map(|sub| ParallelSubSession {
                session: ManagedBacktestSession::from_parts(sub.addr, sub.info, cancel.clone()),
                range: sub.range,
            })
            .collect();
        Ok(Self {
            addr,
            control_session_id,
            subs,
            cancel,
        })
    }

    /// The run's id (for attach).
    pub fn control_session_id(&self) -> &str {
        &self.control_session_id
    }

    /// Take the sub-sessions out, to drive them (once: later calls get none).
    pub fn take_sub_sessions(&mut self) -> Vec<ParallelSubSession> {
        std::mem::take(&mut self.subs)
    }

    /// The supervisor's address.
    pub fn addr(&self) -> &Addr<ParallelSupervisor> {
        &self.addr
    }

    /// Status of the multiplexed connection and the reconnect coordinator.
    pub async fn status(&self) -> Result<ParallelStatus, ManagedSessionError> {
        self.addr
            .send(GetParallelStatus)
            .await
            .map_err(|_| ManagedSessionError::ControlClosed)
    }

    /// Shut every sub-session down, close the control connection, stop.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.addr.send(Shutdown).await;
    }
}

/// An event of one sub-session, for a batch's event recipient.
#[derive(Debug)]
pub struct BatchEvent {
    pub session_id: String,
    pub event: ManagedEvent,
}

impl Message for BatchEvent {
    type Result = ();
}

/// How [`run_batch`] drives each sub-session.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Slots per `continue`.
    pub advance_count: u64,
    /// Programs whose transactions to subscribe (empty: none).
    pub transaction_programs: Vec<String>,
    /// Programs whose account diffs to subscribe (empty: none).
    pub account_diff_programs: Vec<String>,
}

/// What became of one sub-session.
#[derive(Debug, Clone)]
pub struct SubSessionResult {
    pub session_id: String,
    pub range: (u64, u64),
    pub slots: u64,
    pub transactions: u64,
    pub account_diffs: u64,
    pub duplicates_removed: u64,
    pub reconnects: u64,
    /// The summary on completion, or why it failed.
    pub outcome: Result<Option<SessionSummary>, ManagedSessionError>,
}

/// Run every sub-session to its end concurrently: subscribe, continue on
/// each `ReadyForContinue`, hand every event to `events` (awaited: a slow
/// recipient slows its sub-session down). One sub-session failing does not
/// stop the others; each result says how its sub-session ended.
pub async fn run_batch(
    subs: Vec<ParallelSubSession>,
    options: BatchOptions,
    events: Option<Recipient<BatchEvent>>,
) -> Vec<SubSessionResult> {
    let runs = subs
        .into_iter()
        .map(|sub| run_one(sub, options.clone(), events.clone()));
    futures::future::join_all(runs).await
}

async fn run_one(
    mut sub: ParallelSubSession,
    options: BatchOptions,
    events: Option<Recipient<BatchEvent>>,
) -> SubSessionResult {
    let session_id = sub.session_info().session_id.clone();
    let range = sub.range();
    if !options.transaction_programs.is_empty() {
        sub.subscribe_transactions(options.transaction_programs.clone());
    }
    if !options.account_diff_programs.is_empty() {
        sub.subscribe_account_diffs(options.account_diff_programs.clone());
    }
    let mut slots = 0;
    let mut summary = None;
    let outcome = loop {
        let event = match sub.next_event().await {
            Ok(event) => event,
            Err(ManagedSessionError::ControlClosed) if summary.is_some() => break Ok(()),
            Err(e) => break Err(e),
        };
        match &event {
            ManagedEvent::ReadyForContinue | ManagedEvent::Paused(_) => {
                let step = ContinueParams {
                    advance_count: options.advance_count.max(1),
                    ..ContinueParams::default()
                };
                match sub.send_continue(step).await {
                    Ok(()) => {}
                    // Refused because the session has already ended: its
                    // last events (`Completed`, or the failure) are still
                    // to be read.
                    Err(ManagedSessionError::ControlClosed) => {}
                    Err(e) => break Err(e),
                }
            }
            ManagedEvent::Slot(_) => slots += 1,
            ManagedEvent::Completed { summary: s, .. } => summary = Some(s.clone()),
            _ => {}
        }
        if let Some(events) = &events
            && events
                .send(BatchEvent {
                    session_id: session_id.clone(),
                    event,
                })
                .await
                .is_err()
        {
            break Err(ManagedSessionError::Cancelled);
        }
    };
    let counters = sub.status().await.map(|s| s.counters).unwrap_or_default();
    // Done with it either way: a sub-session given up on must not keep its
    // connections (and their streaming registrations) alive.
    sub.session.shutdown().await;
    SubSessionResult {
        session_id,
        range,
        slots,
        transactions: counters.transactions,
        account_diffs: counters.account_diffs,
        duplicates_removed: counters.duplicates_removed,
        reconnects: counters.reconnects,
        outcome: outcome.map(|()| summary.flatten()),
    }
}

//! One simulated backtest session: its identity, its position in the
//! ledger, the responses it has sent (for attach replay) and who owns it.
//!
//! A session outlives its control connection when it was created with a
//! disconnect timeout; its executor (see [`crate::executor`]) runs the slots
//! and publishes progress that the data plane follows.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use simulator_api::{BacktestResponse, SequencedResponse, SessionEventKind};
use tokio::sync::{mpsc, watch};

use crate::{
    faults::FaultLedger,
    outbox::{Outbox, SharedOutbox},
};

/// What a session was asked to do at creation.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub start_slot: u64,
    pub end_slot: u64,
    pub send_summary: bool,
    /// Keep the session this long after its control connection drops;
    /// `None` ends it with the connection.
    pub disconnect_timeout: Option<Duration>,
    /// Program ids whose batches are announced with `discoveryBatch`.
    pub discoveries: Vec<String>,
    /// Name (not value) of the API key that created the session, for usage.
    pub key_name: String,
}

/// How a session ended, as far as the data plane and usage care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Completed,
    Failed,
    Closed,
}

/// Published by the executor after each slot; the data plane streams up to
/// `executed_through` and ends subscriptions once `finish` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub executed_through: Option<u64>,
    pub finish: Option<Finish>,
}

/// Commands from control connections to the session's executor.
#[derive(Debug)]
pub enum Command {
    Continue(simulator_api::ContinueParams),
    ContinueTo(simulator_api::ContinueToParams),
}

/// What a session sends: one of its events, or a plain response.
enum Payload {
    Event(SessionEventKind),
    Response(BacktestResponse),
}

/// How responses are framed on the wire.
#[derive(Debug, Clone)]
pub enum Framing {
    /// Plain `BacktestResponse` (no disconnect timeout): nothing is kept.
    Plain,
    /// `SequencedResponse` with `seqId`, kept for attach replay.
    Sequenced,
    /// `sessionEventV2` of a parallel group, with a per-session `seq_id`.
    ParallelEvent,
}

/// Mutable state behind one lock: sequence numbers, the replay buffer and
/// the handoff pause.
#[derive(Debug)]
struct SessionState {
    next_seq: u64,
    replay: VecDeque<(u64, Arc<str>)>,
    /// Set while a sequenced single session has no control connection: the
    /// executor stops between slots until `resumeAttachedSession`.
    paused_for_handoff: bool,
    /// Bumped on every detach and attach, so a stale disconnect timer knows
    /// it lost the race.
    generation: u64,
}

/// A live session.
pub struct Session {
    pub id: String,
    pub task_id: String,
    pub spec: SessionSpec,
    pub framing: Framing,
    /// The connection that receives this session's responses. Shared by
    /// every sub-session of a parallel group.
    pub outbox: Arc<SharedOutbox>,
    pub faults: FaultLedger,
    replay_capacity: usize,
    state: Mutex<SessionState>,
    progress: watch::Sender<Progress>,
    resume: watch::Sender<bool>,
    ended: watch::Sender<bool>,
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("spec", &self.spec)
            .field("progress", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

/// The executor's end of a new session.
pub struct SessionRunner {
    pub commands: mpsc::Receiver<Command>,
}

impl Session {
    /// A new session; the caller spawns the executor with the returned
    /// runner.
    pub fn new(
        id: String,
        task_id: String,
        spec: SessionSpec,
        framing: Framing,
        outbox: Arc<SharedOutbox>,
        replay_capacity: usize,
    ) -> (Arc<Self>, SessionRunner) {
        let (commands_tx, commands) = mpsc::channel(16);
        let session = Arc::new(Self {
            id,
            task_id,
            spec,
            framing,
            outbox,
            faults: FaultLedger::default(),
            replay_capacity: replay_capacity.max(1),
            state: Mutex::new(SessionState {
                next_seq: 1,
                replay: VecDeque::new(),
                paused_for_handoff: false,
                generation: 0,
            }),
            progress: watch::channel(Progress::default()).0,
            resume: watch::channel(true).0,
            ended: watch::channel(false).0,
            commands: commands_tx,
        });
        (session, SessionRunner { commands })
    }

    fn state(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether responses are kept for attach (sequenced or parallel).
    pub fn keeps_history(&self) -> bool {
        !matches!(self.framing, Framing::Plain)
    }

    /// Frame and send one session event to the owning connection, keeping
    /// it for replay when the session keeps history. Waits while the
    /// connection's outbox is full (backpressure); a missing connection drops
    /// the frame from the live path only (it stays in the replay buffer).
    pub async fn emit(&self, event: SessionEventKind) {
        match self.framing {
            Framing::ParallelEvent => self.send(Payload::Event(event)).await,
            Framing::Plain | Framing::Sequenced => {
                self.send(Payload::Response(into_response(event))).await
            }
        }
    }

    /// Send a response that has no sub-session event form (`sessionCreated`
    /// of a single session), framed like the session's events.
    pub async fn emit_response(&self, response: BacktestResponse) {
        self.send(Payload::Response(response)).await
    }

    async fn send(&self, payload: Payload) {
        let outbox = {
            let mut state = self.state();
            let text: Arc<str> = match (&self.framing, payload) {
                (Framing::Plain, Payload::Response(response)) => to_json(&response),
                (Framing::Plain, Payload::Event(event)) => to_json(&into_response(event)),
                (Framing::Sequenced, payload) => {
                    let seq_id = state.next_seq;
                    state.next_seq += 1;
                    let response = match payload {
                        Payload::Response(response) => response,
                        Payload::Event(event) => into_response(event),
                    };
                    let text = to_json(&SequencedResponse { seq_id, response });
                    self.remember(&mut state, seq_id, &text);
                    text
                }
                (Framing::ParallelEvent, Payload::Event(event)) => {
                    let seq_id = state.next_seq;
                    state.next_seq += 1;
                    let text = to_json(&BacktestResponse::SessionEventV2 {
                        session_id: self.id.clone(),
                        seq_id,
                        event,
                    });
                    self.remember(&mut state, seq_id, &text);
                    text
                }
                // Group-level responses of a parallel session are sent by the
                // control plane itself, unsequenced.
                (Framing::ParallelEvent, Payload::Response(response)) => to_json(&response),
            };
            self.outbox.get().map(|outbox| (outbox, text))
        };
        if let Some((outbox, text)) = outbox {
            // A closed channel means the connection just went away; the
            // frame is in the replay buffer for the next attach.
            let _ = outbox.tx.send(text).await;
        }
    }

    fn remember(&self, state: &mut SessionState, seq_id: u64, text: &Arc<str>) {
        if state.replay.len() == self.replay_capacity {
            state.replay.pop_front();
        }
        state.replay.push_back((seq_id, text.clone()));
    }

    /// Kept responses after `last_sequence` (all of them for `None`).
    pub fn replay_after(&self, last_sequence: Option<u64>) -> Vec<Arc<str>> {
        let state = self.state();
        state
            .replay
            .iter()
            .filter(|(seq, _)| last_sequence.is_none_or(|last| *seq > last))
            .map(|(_, text)| text.clone())
            .collect()
    }

    /// Drop the kept responses: the session has been reaped and nobody can
    /// attach any more (it is kept only for its data plane).
    pub fn forget_replay(&self) {
        self.state().replay = VecDeque::new();
    }

    /// Hand the session to a new connection: it becomes the outbox owner and
    /// gets the replay after `last_sequence`. The outbox is set before the
    /// replay is collected, so a response emitted in between is sent twice
    /// (and dropped by the client's sequence check) rather than lost.
    pub fn attach(&self, outbox: Outbox, last_sequence: Option<u64>) -> Vec<Arc<str>> {
        {
            let mut state = self.state();
            state.generation += 1;
        }
        self.outbox.set(Some(outbox));
        self.replay_after(last_sequence)
    }

    /// The control connection `connection` went away. Returns the detach
    /// generation when it owned the session, for the disconnect timer.
    pub fn detach(&self, connection: u64) -> Option<u64> {
        if !self.outbox.clear_if_owner(connection) {
            return None;
        }
        let mut state = self.state();
        state.generation += 1;
        if matches!(self.framing, Framing::Sequenced) {
            state.paused_for_handoff = true;
            self.resume.send_replace(false);
        }
        Some(state.generation)
    }

    /// Whether nothing attached since the detach that returned `generation`.
    pub fn still_detached(&self, generation: u64) -> bool {
        self.state().generation == generation && self.outbox.owner().is_none()
    }

    /// `resumeAttachedSession`: let the executor go on after a handoff.
    pub fn resume(&self) {
        self.state().paused_for_handoff = false;
        self.resume.send_replace(true);
    }

    /// Wait until the session is not paused for a handoff (or has ended).
    pub async fn wait_resumed(&self) {
        let mut resume = self.resume.subscribe();
        let mut ended = self.ended.subscribe();
        tokio::select! {
            _ = resume.wait_for(|running| *running) => {}
            _ = ended.wait_for(|ended| *ended) => {}
        }
    }

    /// The data-plane endpoint, relative to the server's HTTP base.
    pub fn rpc_endpoint(&self) -> String {
        format!("/rpc/{}", self.id)
    }

    /// `sessionCreated` for this session.
    pub fn created_response(&self) -> BacktestResponse {
        BacktestResponse::SessionCreated {
            session_id: self.id.clone(),
            rpc_endpoint: self.rpc_endpoint(),
            task_id: Some(self.task_id.clone()),
        }
    }

    /// The owning connection, if any.
    pub fn owner(&self) -> Option<u64> {
        self.outbox.owner()
    }

    /// Queue a continue for the executor. Fails when the session has ended.
    pub fn command(&self, command: Command) -> Result<(), Command> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(c) | mpsc::error::TrySendError::Closed(c) => c,
        })
    }

    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub fn current_progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    pub fn publish_slot(&self, slot: u64) {
        self.progress
            .send_modify(|p| p.executed_through = Some(slot));
    }

    /// Mark the session finished (first finish wins) and wake everyone.
    pub fn finish(&self, finish: Finish) {
        self.progress.send_if_modified(|p| {
            if p.finish.is_none() {
                p.finish = Some(finish);
                true
            } else {
                false
            }
        });
        self.ended.send_replace(true);
    }

    pub fn is_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Resolves when the session has ended.
    pub async fn ended(&self) {
        let mut ended = self.ended.subscribe();
        let _ = ended.wait_for(|ended| *ended).await;
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Arc<str> {
    // Serialising the protocol's own types cannot fail (no maps with
    // non-string keys, no failing Serialize impls).
    serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"method\":\"error\",\"params\":{{\"internal\":{{\"error\":\"serialize: {e}\"}}}}}}"))
        .into()
}

/// A sub-session event as the single-session response it stands for.
pub fn into_response(event: SessionEventKind) -> BacktestResponse {
    match event {
        SessionEventKind::ReadyForContinue => BacktestResponse::ReadyForContinue,
        SessionEventKind::SlotNotification(slot) => BacktestResponse::SlotNotification(slot),
        SessionEventKind::Paused(p) => BacktestResponse::Paused(p),
        SessionEventKind::DiscoveryBatch(d) => BacktestResponse::DiscoveryBatch(d),
        SessionEventKind::Error(e) => BacktestResponse::Error(e),
        SessionEventKind::Success => BacktestResponse::Success,
        SessionEventKind::Completed { summary } => BacktestResponse::Completed {
            summary,
            agent_stats: None,
        },
        SessionEventKind::Status { status } => BacktestResponse::Status { status },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SessionSpec {
        SessionSpec {
            start_slot: 10,
            end_slot: 20,
            send_summary: false,
            disconnect_timeout: Some(Duration::from_secs(5)),
            discoveries: vec![],
            key_name: "dev".into(),
        }
    }

    #[actix_rt::test]
    async fn sequenced_emits_are_kept_and_replayed_after_a_cursor() {
        let outbox = Arc::new(SharedOutbox::default());
        let (session, _runner) = Session::new(
            "s1".into(),
            "t1".into(),
            spec(),
            Framing::Sequenced,
            outbox,
            2,
        );
        let (tx, mut rx) = Outbox::channel(1);
        assert!(session.attach(tx, None).is_empty());
        session.emit(SessionEventKind::ReadyForContinue).await;
        session.emit(SessionEventKind::SlotNotification(10)).await;
        session.emit(SessionEventKind::SlotNotification(11)).await;
        assert_eq!(
            &*rx.recv().await.unwrap(),
            r#"{"seqId":1,"method":"readyForContinue"}"#
        );
        // Capacity 2: the oldest frame is forgotten.
        let replay = session.replay_after(None);
        assert_eq!(
            replay.iter().map(|t| &**t).collect::<Vec<_>>(),
            vec![
                r#"{"seqId":2,"method":"slotNotification","params":10}"#,
                r#"{"seqId":3,"method":"slotNotification","params":11}"#
            ]
        );
        assert_eq!(session.replay_after(Some(2)).len(), 1);
    }

    #[actix_rt::test]
    async fn detach_pauses_sequenced_sessions_until_resumed() {
        let outbox = Arc::new(SharedOutbox::default());
        let (session, _runner) = Session::new(
            "s1".into(),
            "t1".into(),
            spec(),
            Framing::Sequenced,
            outbox,
            8,
        );
        let (tx, _rx) = Outbox::channel(7);
        session.attach(tx, None);
        assert_eq!(session.detach(99), None, "not the owner");
        let generation = session.detach(7).expect("owner detaches");
        assert!(session.still_detached(generation));
        let waiter = tokio::time::timeout(Duration::from_millis(50), session.wait_resumed());
        assert!(waiter.await.is_err(), "paused until resume");
        session.resume();
        tokio::time::timeout(Duration::from_secs(5), session.wait_resumed())
            .await
            .expect("resumed");
        let (tx, _rx) = Outbox::channel(8);
        session.attach(tx, Some(0));
        assert!(!session.still_detached(generation));
    }

    #[actix_rt::test]
    async fn parallel_events_carry_the_session_id_and_own_sequence() {
        let outbox = Arc::new(SharedOutbox::default());
        let (session, _runner) = Session::new(
            "sub-a".into(),
            "t".into(),
            spec(),
            Framing::ParallelEvent,
            outbox,
            8,
        );
        session.emit(SessionEventKind::SlotNotification(10)).await;
        assert_eq!(
            &*session.replay_after(None)[0],
            r#"{"method":"sessionEventV2","params":{"session_id":"sub-a","seq_id":1,"event":{"method":"slotNotification","params":10}}}"#
        );
    }
}

//! The control plane: `GET /backtest` upgraded to a WebSocket that speaks
//! `BacktestRequest` / `BacktestResponse`.
//!
//! One task per connection reads requests and writes two kinds of frames:
//! direct replies (errors, `sessionAttached`, `success`, the parallel
//! handshake) and the bound session's responses, which arrive through a
//! bounded outbox so a slow client slows its session down.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, ProtocolError};
use simulator_api::{BacktestError, BacktestRequest, BacktestResponse, CreateSessionParams};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{
    auth,
    outbox::{Outbox, SharedOutbox},
    session::{Command, Framing, Session, SessionSpec},
    state::{ParallelGroup, ServerState},
    wire::{Cut, Plane, Wire},
};

/// Longest disconnect timeout a session may ask for.
const MAX_DISCONNECT_TIMEOUT_SECS: u16 = 900;

/// `GET /backtest`: check the API key, upgrade, and serve the connection.
pub async fn control_ws(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<Arc<ServerState>>,
) -> actix_web::Result<HttpResponse> {
    let state = state.get_ref().clone();
    let key = auth::presented_key(&req);
    if !auth::is_authorized(&state.config.api_keys, key) {
        return Ok(HttpResponse::Unauthorized().body("missing or unknown X-API-Key"));
    }
    let key_name = state.key_name(key);
    let (response, ws, stream) = actix_ws::handle(&req, body)?;
    let max = state.config.limits.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let connection = state.new_connection();
    let (outbox, rx) = Outbox::channel(connection);
    let conn = ControlConnection {
        wire: Wire::new(ws, state.clone(), Plane::Control),
        state,
        connection,
        key_name,
        outbox,
        bound: Bound::None,
    };
    actix_rt::spawn(conn.run(stream, rx));
    Ok(response)
}

/// What the connection drives.
enum Bound {
    None,
    Single(Arc<Session>),
    Parallel(Arc<ParallelGroup>),
}

/// Whether to keep serving after a frame.
enum Flow {
    Continue,
    /// Fault: cut without a close frame.
    Drop,
    /// Fault: close with 1012 (service restart).
    Restart,
    /// The peer is gone.
    Gone,
}

impl From<Cut> for Flow {
    fn from(cut: Cut) -> Self {
        match cut {
            Cut::Closed => Flow::Gone,
            Cut::Dropped => Flow::Drop,
        }
    }
}

struct ControlConnection {
    state: Arc<ServerState>,
    wire: Wire,
    connection: u64,
    key_name: String,
    outbox: Outbox,
    bound: Bound,
}

impl ControlConnection {
    async fn run(mut self, mut stream: AggregatedMessageStream, mut rx: mpsc::Receiver<Arc<str>>) {
        let flow = loop {
            let flow = tokio::select! {
                biased;
                msg = stream.recv() => match msg {
                    None => Flow::Gone,
                    Some(Ok(AggregatedMessage::Text(text))) => self.request(&text).await,
                    Some(Ok(AggregatedMessage::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                        Ok(text) => self.request(text).await,
                        Err(_) => self.reply_error(invalid("binary frame is not UTF-8 JSON")).await,
                    },
                    Some(Ok(AggregatedMessage::Ping(payload))) => match self.wire.pong(&payload).await {
                        Ok(()) => Flow::Continue,
                        Err(cut) => cut.into(),
                    },
                    Some(Ok(AggregatedMessage::Pong(_))) => Flow::Continue,
                    Some(Ok(AggregatedMessage::Close(_))) => {
                        self.detach();
                        self.wire.close(CloseCode::Normal, "bye").await;
                        return;
                    }
                    Some(Err(ProtocolError::Overflow)) => {
                        warn!(connection = self.connection, "control frame over the size limit");
                        self.detach();
                        self.wire.close(CloseCode::Size, "frame too large").await;
                        return;
                    }
                    Some(Err(e)) => {
                        debug!(connection = self.connection, error = %e, "control protocol error");
                        Flow::Gone
                    }
                },
                Some(frame) = rx.recv() => self.session_frame(&frame).await,
            };
            match flow {
                Flow::Continue => {}
                other => break other,
            }
        };
        self.detach();
        match flow {
            Flow::Restart => {
                self.wire
                    .close(CloseCode::Restart, "management host redeploy")
                    .await
            }
            // Dropping the writer ends the response body: the TCP
            // connection closes without a close frame.
            Flow::Drop | Flow::Gone | Flow::Continue => {}
        }
    }

    /// Forward one of the bound session's responses, unless a control
    /// fault cuts the connection first.
    async fn session_frame(&mut self, frame: &str) -> Flow {
        let faults = &self.state.config.faults;
        let sent = self.wire.frames();
        let ledger = match &self.bound {
            Bound::Single(s) => Some(&s.faults),
            Bound::Parallel(g) => Some(&g.faults),
            Bound::None => None,
        };
        if let Some(ledger) = ledger {
            if faults.control_drop_after.is_some_and(|n| sent >= n) && ledger.claim("control-drop")
            {
                self.wire.fault("control-drop");
                return Flow::Drop;
            }
            if faults.close_1012_after.is_some_and(|n| sent >= n) && ledger.claim("close-1012") {
                self.wire.fault("close-1012");
                return Flow::Restart;
            }
        }
        match self.wire.text(frame.to_string()).await {
            Ok(()) => Flow::Continue,
            Err(cut) => cut.into(),
        }
    }

    async fn reply(&mut self, response: &BacktestResponse) -> Flow {
        let text = serde_json::to_string(response).unwrap_or_default();
        match self.wire.text(text).await {
            Ok(()) => Flow::Continue,
            Err(cut) => cut.into(),
        }
    }

    async fn reply_error(&mut self, error: BacktestError) -> Flow {
        self.reply(&BacktestResponse::Error(error)).await
    }

    async fn request(&mut self, text: &str) -> Flow {
        let request = match serde_json::from_str::<BacktestRequest>(text) {
            Ok(request) => request,
            Err(e) => {
                return self
                    .reply_error(invalid(format!("unparseable request: {e}")))
                    .await;
            }
        };
        match request {
            BacktestRequest::CreateBacktestSession(create) => {
                let (params, parallel) = create.into_request_and_parallel();
                if !matches!(self.bound, Bound::None) {
                    return self
                        .reply_error(invalid("this connection already drives a session"))
                        .await;
                }
                if parallel {
                    self.create_parallel(params).await
                } else {
                    self.create_single(params).await
                }
            }
            BacktestRequest::Continue(params) => {
                self.command_single(Command::Continue(params)).await
            }
            BacktestRequest::ContinueTo(params) => {
                self.command_single(Command::ContinueTo(params)).await
            }
            BacktestRequest::ContinueSessionV1(req) => {
                self.command_sub(&req.session_id, Command::Continue(req.request))
                    .await
            }
            BacktestRequest::ContinueToSessionV1(req) => {
                self.command_sub(&req.session_id, Command::ContinueTo(req.request))
                    .await
            }
            BacktestRequest::CloseBacktestSession => {
                match std::mem::replace(&mut self.bound, Bound::None) {
                    Bound::Single(session) => self.state.reap(&session),
                    Bound::Parallel(group) => {
                        group.sessions.iter().for_each(|s| self.state.reap(s))
                    }
                    Bound::None => {}
                }
                self.reply(&BacktestResponse::Success).await
            }
            BacktestRequest::CloseSessionV1(req) => {
                let sub = match &self.bound {
                    Bound::Parallel(group) => group
                        .sessions
                        .iter()
                        .find(|s| s.id == req.session_id)
                        .cloned(),
                    _ => None,
                };
                match sub {
                    Some(sub) => {
                        self.state.reap(&sub);
                        self.reply(&BacktestResponse::Success).await
                    }
                    None => self.reply_error(not_found(&req.session_id)).await,
                }
            }
            BacktestRequest::AttachBacktestSession {
                session_id,
                last_sequence,
            } => self.attach(&session_id, last_sequence).await,
            BacktestRequest::ResumeAttachedSession => match &self.bound {
                Bound::Single(session) => {
                    session.resume();
                    self.reply(&BacktestResponse::Success).await
                }
                _ => {
                    self.reply_error(invalid("no attached session to resume"))
                        .await
                }
            },
            BacktestRequest::AttachParallelControlSessionV2 {
                control_session_id,
                last_sequences,
            } => {
                self.attach_parallel(&control_session_id, last_sequences)
                    .await
            }
        }
    }

    fn spec(&self, params: &CreateSessionParams) -> Result<SessionSpec, BacktestError> {
        self.state
            .validate_range(params.start_slot, params.end_slot)?;
        let timeout = params.disconnect_timeout_secs.unwrap_or(0);
        if timeout > MAX_DISCONNECT_TIMEOUT_SECS {
            return Err(invalid(format!(
                "disconnectTimeoutSecs {timeout} is above the maximum {MAX_DISCONNECT_TIMEOUT_SECS}"
            )));
        }
        Ok(SessionSpec {
            start_slot: params.start_slot,
            end_slot: params.end_slot,
            send_summary: params.send_summary,
            disconnect_timeout: (timeout > 0).then(|| Duration::from_secs(u64::from(timeout))),
            discoveries: params
                .discoveries
                .iter()
                .map(|f| match f {
                    simulator_api::DiscoveryFilter::ProgramExecuted(address) => address.to_string(),
                })
                .collect(),
            key_name: self.key_name.clone(),
        })
    }

    async fn create_single(&mut self, params: CreateSessionParams) -> Flow {
        let spec = match self.spec(&params) {
            Ok(spec) => spec,
            Err(e) => return self.reply_error(e).await,
        };
        let framing = if spec.disconnect_timeout.is_some() {
            Framing::Sequenced
        } else {
            Framing::Plain
        };
        let outbox = Arc::new(SharedOutbox::default());
        outbox.set(Some(self.outbox.clone()));
        let id = self.state.new_id("session");
        match self.state.create_session(id, spec, framing, outbox) {
            Ok(session) => {
                info!(session_id = %session.id, start = session.spec.start_slot, end = session.spec.end_slot, "session created");
                self.wire
                    .bind(&session.id, session.faults.next_connection());
                self.bound = Bound::Single(session);
                Flow::Continue
            }
            Err(e) => self.reply_error(e).await,
        }
    }

    async fn create_parallel(&mut self, params: CreateSessionParams) -> Flow {
        let spec = match self.spec(&params) {
            Ok(spec) => spec,
            Err(e) => return self.reply_error(e).await,
        };
        let ranges = match simulator_api::split_range(
            &self.state.config.available_ranges(),
            params.start_slot,
            params.end_slot,
        ) {
            Ok(ranges) => ranges,
            Err(e) => return self.reply_error(invalid(e)).await,
        };
        let limit = self.state.config.limits.max_parallel_sessions;
        if ranges.len() > limit {
            return self
                .reply_error(invalid(format!(
                    "the range splits into {} sub-sessions, more than the limit of {limit}",
                    ranges.len()
                )))
                .await;
        }
        let outbox = Arc::new(SharedOutbox::default());
        outbox.set(Some(self.outbox.clone()));
        let control_session_id = self.state.new_id("control");
        let mut sessions = Vec::with_capacity(ranges.len());
        for (start, end) in &ranges {
            let sub_spec = SessionSpec {
                start_slot: *start,
                end_slot: *end,
                ..spec.clone()
            };
            let id = self.state.new_id("session");
            match self
                .state
                .create_session(id, sub_spec, Framing::ParallelEvent, outbox.clone())
            {
                Ok(session) => sessions.push(session),
                Err(e) => {
                    sessions.iter().for_each(|s| self.state.reap(s));
                    return self.reply_error(e).await;
                }
            }
        }
        let group = Arc::new(ParallelGroup {
            control_session_id: control_session_id.clone(),
            sessions: sessions.clone(),
            outbox,
            faults: Default::default(),
            generation: Default::default(),
        });
        self.state.register_group(group.clone());
        self.wire
            .bind(&control_session_id, group.faults.next_connection());
        self.bound = Bound::Parallel(group);
        info!(%control_session_id, sub_sessions = sessions.len(), "parallel session created");
        for session in &sessions {
            let flow = self.reply(&session.created_response()).await;
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
        self.reply(&BacktestResponse::SessionsCreatedV2 {
            control_session_id,
            session_ids: sessions.iter().map(|s| s.id.clone()).collect(),
            task_ids: sessions.iter().map(|s| Some(s.task_id.clone())).collect(),
            start_slots: ranges.iter().map(|r| r.0).collect(),
            end_slots: ranges.iter().map(|r| r.1).collect(),
        })
        .await
    }

    async fn command_single(&mut self, command: Command) -> Flow {
        let Bound::Single(session) = &self.bound else {
            return self
                .reply_error(invalid(
                    "no session on this connection: create or attach first",
                ))
                .await;
        };
        let session = session.clone();
        self.command(&session, command).await
    }

    async fn command_sub(&mut self, session_id: &str, command: Command) -> Flow {
        let sub = match &self.bound {
            Bound::Parallel(group) => group.sessions.iter().find(|s| s.id == session_id).cloned(),
            _ => None,
        };
        match sub {
            Some(sub) => self.command(&sub, command).await,
            None => self.reply_error(not_found(session_id)).await,
        }
    }

    async fn command(&mut self, session: &Arc<Session>, command: Command) -> Flow {
        if session.is_ended() {
            return self
                .reply_error(invalid(format!("session {} has ended", session.id)))
                .await;
        }
        match session.command(command) {
            Ok(()) => Flow::Continue,
            Err(_) => {
                self.reply_error(invalid(
                    "too many continues queued; wait for readyForContinue",
                ))
                .await
            }
        }
    }

    async fn attach(&mut self, session_id: &str, last_sequence: Option<u64>) -> Flow {
        if !matches!(self.bound, Bound::None) {
            return self
                .reply_error(invalid("this connection already drives a session"))
                .await;
        }
        let Some(session) = self.state.session(session_id) else {
            return self.reply_error(not_found(session_id)).await;
        };
        if !matches!(session.framing, Framing::Sequenced) {
            return self.reply_error(not_found(session_id)).await;
        }
        if self.state.config.faults.attach_busy > 0
            && session
                .faults
                .refuse_attach(self.state.config.faults.attach_busy)
        {
            self.wire.bind(session_id, u64::MAX);
            self.wire.fault("attach-busy");
            return self.reply_error(busy("injected fault: attach-busy")).await;
        }
        if session.owner().is_some() {
            return self
                .reply_error(busy("the session is held by a live connection"))
                .await;
        }
        let replay = session.attach(self.outbox.clone(), last_sequence);
        self.wire
            .bind(&session.id, session.faults.next_connection());
        info!(session_id = %session.id, ?last_sequence, replayed = replay.len(), "session attached");
        self.bound = Bound::Single(session.clone());
        let flow = self
            .reply(&BacktestResponse::SessionAttached {
                session_id: session.id.clone(),
                rpc_endpoint: session.rpc_endpoint(),
                task_id: Some(session.task_id.clone()),
            })
            .await;
        self.replay(flow, replay).await
    }

    async fn attach_parallel(
        &mut self,
        control_session_id: &str,
        last_sequences: BTreeMap<String, u64>,
    ) -> Flow {
        if !matches!(self.bound, Bound::None) {
            return self
                .reply_error(invalid("this connection already drives a session"))
                .await;
        }
        let Some(group) = self.state.group(control_session_id) else {
            return self.reply_error(not_found(control_session_id)).await;
        };
        let busy_limit = self.state.config.faults.attach_busy;
        if busy_limit > 0 && group.faults.refuse_attach(busy_limit) {
            self.wire.bind(control_session_id, u64::MAX);
            self.wire.fault("attach-busy");
            return self.reply_error(busy("injected fault: attach-busy")).await;
        }
        if group.outbox.owner().is_some() {
            return self
                .reply_error(busy("the session is held by a live connection"))
                .await;
        }
        // Outbox first, then the replays: a frame emitted in between is
        // sent twice (the client drops it by sequence), never lost.
        group.outbox.set(Some(self.outbox.clone()));
        group.bump_generation();
        let replay: Vec<Arc<str>> = group
            .sessions
            .iter()
            .flat_map(|s| s.replay_after(last_sequences.get(&s.id).copied()))
            .collect();
        self.wire
            .bind(control_session_id, group.faults.next_connection());
        info!(%control_session_id, replayed = replay.len(), "parallel session attached");
        self.bound = Bound::Parallel(group.clone());
        let flow = self
            .reply(&BacktestResponse::ParallelSessionAttachedV2 {
                control_session_id: group.control_session_id.clone(),
                session_ids: group.sessions.iter().map(|s| s.id.clone()).collect(),
                task_ids: group
                    .sessions
                    .iter()
                    .map(|s| Some(s.task_id.clone()))
                    .collect(),
            })
            .await;
        self.replay(flow, replay).await
    }

    async fn replay(&mut self, flow: Flow, frames: Vec<Arc<str>>) -> Flow {
        if !matches!(flow, Flow::Continue) {
            return flow;
        }
        for frame in frames {
            let flow = self.session_frame(&frame).await;
            if !matches!(flow, Flow::Continue) {
                return flow;
            }
        }
        Flow::Continue
    }

    /// The connection is ending: let go of what it drives, and end it now
    /// or after its disconnect timeout.
    fn detach(&mut self) {
        match std::mem::replace(&mut self.bound, Bound::None) {
            Bound::None => {}
            Bound::Single(session) => {
                let Some(generation) = session.detach(self.connection) else {
                    return;
                };
                match session.spec.disconnect_timeout {
                    None => self.state.reap(&session),
                    Some(timeout) => {
                        info!(session_id = %session.id, ?timeout, "control connection lost; session kept for attach");
                        let state = self.state.clone();
                        actix_rt::spawn(async move {
                            actix_rt::time::sleep(timeout).await;
                            if session.still_detached(generation) {
                                info!(session_id = %session.id, "disconnect timeout expired; session ended");
                                state.reap(&session);
                            }
                        });
                    }
                }
            }
            Bound::Parallel(group) => {
                if !group.outbox.clear_if_owner(self.connection) {
                    return;
                }
                let generation = group.bump_generation();
                let timeout = group
                    .sessions
                    .first()
                    .and_then(|s| s.spec.disconnect_timeout);
                match timeout {
                    None => group.sessions.iter().for_each(|s| self.state.reap(s)),
                    Some(timeout) => {
                        let state = self.state.clone();
                        actix_rt::spawn(async move {
                            actix_rt::time::sleep(timeout).await;
                            if group.generation() == generation && group.outbox.owner().is_none() {
                                info!(control_session_id = %group.control_session_id, "disconnect timeout expired; parallel session ended");
                                group.sessions.iter().for_each(|s| state.reap(s));
                            }
                        });
                    }
                }
            }
        }
    }
}

fn invalid(error: impl Into<String>) -> BacktestError {
    BacktestError::InvalidRequest {
        error: error.into(),
    }
}

fn not_found(session_id: &str) -> BacktestError {
    BacktestError::SessionNotFound {
        session_id: session_id.to_string(),
    }
}

fn busy(reason: &str) -> BacktestError {
    BacktestError::SessionOwnershipBusy {
        reason: reason.to_string(),
    }
}

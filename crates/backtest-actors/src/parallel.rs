//! Parallel runs: one multiplexed control connection, one sub-session
//! supervisor per server sub-session.
//!
//! The [`ParallelSupervisor`] creates the run (`createBacktestSession` V1
//! with `parallel: true`), binds each sub-session to the range the server
//! split for it, routes `sessionEventV2` frames to the sub-session's
//! supervisor (dropping any `seq_id` not above that sub-session's cursor),
//! sends its continues as `continueSessionV1` / `continueToSessionV1`,
//! re-attaches with `attachParallelControlSessionV2` and the cursors after a
//! drop, and closes the control connection once every sub-session is done.
//! Each sub-session is a [`SessionSupervisor`] in sub-session mode: the same
//! subscriptions, exactly-once filter, drain and gating as a single session.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use actix::prelude::*;
use simulator_api::{
    BacktestRequest, BacktestResponse, CloseSessionRequestV1, ContinueSessionRequestV1,
    ContinueToSessionRequestV1, CreateBacktestSessionRequest, CreateBacktestSessionRequestV1,
    SessionEventKind,
};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::{
    SessionSupervisor, SupervisorBuilder,
    backoff::{ReconnectBudget, ReconnectPolicy, random_jitter},
    connection::{ConnEnd, Credit, CreditPool},
    control::{
        CloseSession, ControlActor, ControlReport, ControlReportKind, ControlTask, SendRequest,
        SubSessionSpec,
    },
    coordinator::{CoordinatorStats, GetCoordinatorStats, ReconnectCoordinator},
    events::{ConnectionState, ManagedSessionError, SessionInfo},
    messages::Shutdown,
    url,
    ws::ConnectOptions,
};

/// Control responses in flight on the multiplexed connection, all
/// sub-sessions together.
const PARALLEL_CONTROL_CREDIT: usize = 4096;

/// What every sub-session of a run shares.
#[derive(Clone)]
pub(crate) struct SubSessionSettings {
    pub options: ConnectOptions,
    pub policy: ReconnectPolicy,
    pub drain_idle_timeout: Duration,
    pub data_credit: usize,
    pub coordinator: Addr<ReconnectCoordinator>,
    pub continue_resend_after: Duration,
}

/// One sub-session of a parallel run.
#[derive(Debug, Clone)]
pub struct SubSession {
    pub info: SessionInfo,
    /// `(start_slot, end_slot)` as the server split the run.
    pub range: (u64, u64),
    /// Drive it like a single session (pull events with `NextEvent`).
    pub addr: Addr<SessionSupervisor>,
}

/// The run's control session id and its sub-sessions.
pub type CreatedRun = (String, Vec<SubSession>);

/// Wait until the run is created; its sub-sessions.
#[derive(Debug, Message)]
#[rtype(result = "Result<CreatedRun, ManagedSessionError>")]
pub struct WaitSubSessions;

/// A snapshot of the multiplexed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelStatus {
    pub control_session_id: Option<String>,
    pub control: ConnectionState,
    /// Per sub-session, the highest event sequence delivered to it.
    pub last_sequences: BTreeMap<String, u64>,
    /// Sub-session events dropped because their sequence was already seen.
    pub duplicates_removed: u64,
    pub reconnects: u64,
    pub coordinator: CoordinatorStats,
}

/// Status of the run.
#[derive(Debug, Message)]
#[rtype(result = "ParallelStatus")]
pub struct GetParallelStatus;

/// An event routed to a sub-session (internal).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubSessionEvent {
    pub event: SessionEventKind,
    pub credit: Option<Credit>,
}

/// The multiplexed connection's state, told to every sub-session.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubLinkState(pub ConnectionState);

/// A sub-session's request to send on the multiplexed connection.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub(crate) struct SubRequest(pub BacktestRequest);

/// A sub-session is done (`close`: ask the server to end it too).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubFinished {
    pub session_id: String,
    pub close: bool,
}

/// The sub-session form of a single-session request.
pub(crate) fn sub_session_request(session_id: String, request: BacktestRequest) -> BacktestRequest {
    match request {
        BacktestRequest::Continue(request) => {
            BacktestRequest::ContinueSessionV1(ContinueSessionRequestV1 {
                session_id,
                request,
            })
        }
        BacktestRequest::ContinueTo(request) => {
            BacktestRequest::ContinueToSessionV1(ContinueToSessionRequestV1 {
                session_id,
                request,
            })
        }
        BacktestRequest::CloseBacktestSession => {
            BacktestRequest::CloseSessionV1(CloseSessionRequestV1 { session_id })
        }
        other => other,
    }
}

/// A sub-session event as the single-session response it stands for.
pub(crate) fn into_response(event: SessionEventKind) -> BacktestResponse {
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

struct SubEntry {
    spec: SubSessionSpec,
    addr: Addr<SessionSupervisor>,
    cursor: Option<u64>,
    finished: bool,
}

/// Supervises a parallel run. Build with [`ParallelSupervisor::builder`]
/// (the same builder as a single session; the create request is sent with
/// `parallel: true`).
pub struct ParallelSupervisor {
    control_url: Result<String, String>,
    create: CreateBacktestSessionRequest,
    settings: SubSessionSettings,
    control_addr: Option<Addr<ControlActor>>,
    control_generation: u64,
    control_state: ConnectionState,
    budget: ReconnectBudget,
    credits: CreditPool,
    control_session_id: Option<String>,
    subs: Vec<SubEntry>,
    by_id: HashMap<String, usize>,
    /// Events that arrived before the run was created, in order.
    early: Vec<(String, u64, SessionEventKind, Option<Credit>)>,
    waiters: Vec<oneshot::Sender<Result<CreatedRun, ManagedSessionError>>>,
    failure: Option<ManagedSessionError>,
    duplicates_removed: u64,
    reconnects: u64,
    generations: u64,
    shutting_down: bool,
}

impl ParallelSupervisor {
    /// A builder for a parallel run over `create`'s range. Options set on
    /// it (policy, timeouts, drain, credit, headers, roots) apply to every
    /// sub-session; a push recipient does not (sub-sessions are pulled).
    pub fn builder(
        url: impl Into<String>,
        api_key: impl Into<crate::url::ApiKey>,
        create: impl Into<CreateBacktestSessionRequest>,
    ) -> SupervisorBuilder {
        SessionSupervisor::builder(url, api_key, create)
    }

    /// Start a parallel run on the current actix arbiter.
    pub fn start_from(builder: SupervisorBuilder) -> Addr<Self> {
        Self::from_builder(builder).start()
    }

    pub(crate) fn from_builder(builder: SupervisorBuilder) -> Self {
        let mut options = builder.options;
        let control_url = url::control_url(&builder.url)
            .map_err(|e| format!("bad URL: {e}"))
            .and_then(|url| {
                crate::tls::client_config(&builder.extra_roots).map(|tls| {
                    options.tls = Some(tls);
                    url
                })
            });
        let (request, _) = builder.create.into_request_and_parallel();
        let create = CreateBacktestSessionRequest::V1(CreateBacktestSessionRequestV1 {
            request,
            parallel: true,
        });
        Self {
            control_url,
            create,
            settings: SubSessionSettings {
                options,
                policy: builder.policy.clone(),
                drain_idle_timeout: builder.drain_idle_timeout,
                data_credit: builder.data_credit,
                coordinator: ReconnectCoordinator::default().start(),
                continue_resend_after: builder.continue_resend_after,
            },
            control_addr: None,
            control_generation: 0,
            control_state: ConnectionState::Connecting,
            budget: ReconnectBudget::new(builder.policy, Instant::now()),
            credits: CreditPool::new(PARALLEL_CONTROL_CREDIT),
            control_session_id: None,
            subs: Vec::new(),
            by_id: HashMap::new(),
            early: Vec::new(),
            waiters: Vec::new(),
            failure: None,
            duplicates_removed: 0,
            reconnects: 0,
            generations: 0,
            shutting_down: false,
        }
    }

    fn start_control(&mut self, ctx: &mut Context<Self>) {
        let Ok(url) = self.control_url.clone() else {
            return;
        };
        let task = match &self.control_session_id {
            None => ControlTask::CreateParallel(self.create.clone()),
            Some(id) => ControlTask::AttachParallel {
                control_session_id: id.clone(),
                last_sequences: self
                    .subs
                    .iter()
                    .filter_map(|s| Some((s.spec.info.session_id.clone(), s.cursor?)))
                    .collect(),
            },
        };
        self.generations += 1;
        self.control_generation = self.generations;
        let actor = ControlActor::new(
            url,
            self.settings.options.clone(),
            task,
            ctx.address().downgrade().recipient(),
            self.control_generation,
            self.credits.clone(),
        );
        self.control_addr = Some(actor.start());
    }

    fn broadcast(&self, state: ConnectionState) {
        for sub in self.subs.iter().filter(|s| !s.finished) {
            sub.addr.do_send(SubLinkState(state.clone()));
        }
    }

    fn set_state(&mut self, state: ConnectionState) {
        self.control_state = state.clone();
        self.broadcast(state);
    }

    fn fail(&mut self, reason: String) {
        warn!(%reason, "parallel run failed");
        let error = if self.control_session_id.is_none() {
            ManagedSessionError::Create(reason.clone())
        } else {
            ManagedSessionError::ControlFailed(reason.clone())
        };
        self.failure = Some(error.clone());
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
        self.set_state(ConnectionState::Failed(reason));
    }

    fn created(
        &mut self,
        control_session_id: String,
        specs: Vec<SubSessionSpec>,
        ctx: &mut Context<Self>,
    ) {
        info!(%control_session_id, sub_sessions = specs.len(), "parallel run created");
        self.control_session_id = Some(control_session_id.clone());
        for spec in specs {
            let supervisor = SessionSupervisor::sub_session(
                ctx.address().downgrade(),
                spec.clone(),
                self.settings.clone(),
            );
            self.by_id
                .insert(spec.info.session_id.clone(), self.subs.len());
            self.subs.push(SubEntry {
                spec,
                addr: supervisor.start(),
                cursor: None,
                finished: false,
            });
        }
        for (session_id, seq_id, event, credit) in std::mem::take(&mut self.early) {
            self.route(&session_id, seq_id, event, credit);
        }
        let handles = self.handles();
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Ok((control_session_id.clone(), handles.clone())));
        }
    }

    fn handles(&self) -> Vec<SubSession> {
        self.subs
            .iter()
            .map(|s| SubSession {
                info: s.spec.info.clone(),
                range: s.spec.range,
                addr: s.addr.clone(),
            })
            .collect()
    }

    fn route(
        &mut self,
        session_id: &str,
        seq_id: u64,
        event: SessionEventKind,
        credit: Option<Credit>,
    ) {
        if self.control_session_id.is_none() {
            self.early
                .push((session_id.to_string(), seq_id, event, credit));
            return;
        }
        let Some(&index) = self.by_id.get(session_id) else {
            warn!(%session_id, "event for an unknown sub-session dropped");
            return;
        };
        let sub = &mut self.subs[index];
        if sub.cursor.is_some_and(|cursor| seq_id <= cursor) {
            self.duplicates_removed += 1;
            return;
        }
        sub.cursor = Some(seq_id);
        sub.addr.do_send(SubSessionEvent { event, credit });
    }

    fn on_ended(&mut self, end: ConnEnd, ctx: &mut Context<Self>) {
        self.control_addr = None;
        let all_done = !self.subs.is_empty() && self.subs.iter().all(|s| s.finished);
        let reason = match end {
            ConnEnd::Closed | ConnEnd::Complete => {
                self.control_state = ConnectionState::Closed;
                return;
            }
            _ if self.shutting_down || all_done => {
                self.control_state = ConnectionState::Closed;
                return;
            }
            ConnEnd::Fatal(reason) => return self.fail(reason),
            ConnEnd::Lost(reason) => reason,
            ConnEnd::Orphaned => "control connection actor stopped".into(),
        };
        let now = Instant::now();
        self.budget.on_down(now);
        match self.budget.next_attempt(now, random_jitter()) {
            Ok(attempt) => {
                warn!(%reason, attempt = attempt.number, delay = ?attempt.delay, "multiplexed control connection lost; re-attaching");
                self.reconnects += 1;
                self.set_state(ConnectionState::Reconnecting);
                ctx.run_later(attempt.delay, |act, ctx| {
                    if !act.shutting_down && act.failure.is_none() {
                        act.start_control(ctx);
                    }
                });
            }
            Err(exhausted) => self.fail(format!("{reason}; {exhausted}")),
        }
    }
}

impl Actor for ParallelSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match &self.control_url {
            Ok(url) => {
                info!(%url, "starting parallel run");
                self.start_control(ctx);
            }
            Err(e) => {
                let reason = e.clone();
                self.fail(reason);
            }
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.shutting_down = true;
        if let Some(control) = &self.control_addr {
            control.do_send(CloseSession);
        }
        Running::Stop
    }
}

impl Handler<ControlReport> for ParallelSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ControlReport, ctx: &mut Self::Context) {
        if msg.generation != self.control_generation {
            return;
        }
        match msg.kind {
            ControlReportKind::ParallelReady {
                control_session_id,
                sessions,
            } => {
                self.budget.on_up(Instant::now());
                if self.control_session_id.is_none() {
                    self.control_state = ConnectionState::Up;
                    self.created(control_session_id, sessions, ctx);
                } else {
                    info!(%control_session_id, "multiplexed control connection re-attached");
                    self.set_state(ConnectionState::Up);
                }
            }
            ControlReportKind::Frame {
                response:
                    BacktestResponse::SessionEventV2 {
                        session_id,
                        seq_id,
                        event,
                    },
                credit,
                ..
            } => self.route(&session_id, seq_id, event, credit),
            ControlReportKind::Frame {
                response: BacktestResponse::Success,
                ..
            } => {}
            ControlReportKind::Frame { response, .. } => {
                warn!(
                    ?response,
                    "control response of the parallel run not tied to a sub-session"
                );
            }
            ControlReportKind::Garbage(reason) => {
                warn!(%reason, "skipping a control frame that is not a response");
            }
            ControlReportKind::Ready { .. } => {}
            ControlReportKind::Ended(end) => self.on_ended(end, ctx),
        }
    }
}

impl Handler<SubRequest> for ParallelSupervisor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: SubRequest, _: &mut Self::Context) -> Self::Result {
        let control = self.control_addr.clone();
        Box::pin(async move {
            let control = control.ok_or("the multiplexed control connection is down")?;
            control
                .send(SendRequest(msg.0))
                .await
                .map_err(|e| e.to_string())?
        })
    }
}

impl Handler<SubFinished> for ParallelSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SubFinished, _: &mut Self::Context) {
        let Some(&index) = self.by_id.get(&msg.session_id) else {
            return;
        };
        if std::mem::replace(&mut self.subs[index].finished, true) {
            return;
        }
        if msg.close
            && let Some(control) = &self.control_addr
        {
            control.do_send(SendRequest(sub_session_request(
                msg.session_id,
                BacktestRequest::CloseBacktestSession,
            )));
        }
        if self.subs.iter().all(|s| s.finished) {
            info!("every sub-session is done; closing the control connection");
            if let Some(control) = &self.control_addr {
                control.do_send(CloseSession);
            }
        }
    }
}

impl Handler<WaitSubSessions> for ParallelSupervisor {
    type Result = ResponseFuture<Result<CreatedRun, ManagedSessionError>>;

    fn handle(&mut self, _: WaitSubSessions, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match (&self.control_session_id, &self.failure) {
            (Some(id), _) => {
                let _ = tx.send(Ok((id.clone(), self.handles())));
            }
            (None, Some(error)) => {
                let _ = tx.send(Err(error.clone()));
            }
            (None, None) => self.waiters.push(tx),
        }
        Box::pin(async move { rx.await.unwrap_or(Err(ManagedSessionError::ControlClosed)) })
    }
}

impl Handler<GetParallelStatus> for ParallelSupervisor {
    type Result = ResponseFuture<ParallelStatus>;

    fn handle(&mut self, _: GetParallelStatus, _: &mut Self::Context) -> Self::Result {
        let status = ParallelStatus {
            control_session_id: self.control_session_id.clone(),
            control: self.control_state.clone(),
            last_sequences: self
                .subs
                .iter()
                .filter_map(|s| Some((s.spec.info.session_id.clone(), s.cursor?)))
                .collect(),
            duplicates_removed: self.duplicates_removed,
            reconnects: self.reconnects,
            coordinator: CoordinatorStats::default(),
        };
        let coordinator = self.settings.coordinator.clone();
        Box::pin(async move {
            ParallelStatus {
                coordinator: coordinator
                    .send(GetCoordinatorStats)
                    .await
                    .unwrap_or_default(),
                ..status
            }
        })
    }
}

impl Handler<Shutdown> for ParallelSupervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.shutting_down = true;
        let subs: Vec<_> = self.subs.iter().map(|s| s.addr.clone()).collect();
        let close_timeout = self.settings.options.close_timeout;
        Box::pin(
            async move {
                let shutdowns = subs.iter().map(|s| s.send(Shutdown));
                let _ =
                    tokio::time::timeout(close_timeout * 2, futures::future::join_all(shutdowns))
                        .await;
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                if let Some(control) = &act.control_addr {
                    control.do_send(CloseSession);
                }
                ctx.stop();
            }),
        )
    }
}

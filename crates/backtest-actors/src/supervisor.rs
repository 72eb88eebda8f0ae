//! The session supervisor: owns the session's identity, the reconnect
//! policy, continue gating, the completion drain, exactly-once delivery and
//! the shutdown order. Connection actors report to it; it decides.
//!
//! Events flow connection → supervisor → consumer through one ordered
//! queue. Every event read from a socket carries a unit of its connection's
//! flow-control credit until the consumer has taken it, so a slow consumer
//! stops the connections from reading: memory stays bounded end to end.

use std::{
    collections::{HashMap, VecDeque},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use actix::{WeakAddr, prelude::*};
use futures::future::BoxFuture;
use simulator_api::{BacktestRequest, BacktestResponse, CreateBacktestSessionRequest};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    backoff::{ReconnectBudget, ReconnectPolicy, random_jitter},
    builder::SupervisorBuilder,
    connection::{ConnEnd, Credit, CreditPool},
    control::{
        CloseSession, ControlActor, ControlReport, ControlReportKind, ControlTask, SendRequest,
        SubSessionSpec,
    },
    coordinator::{ReconnectCoordinator, ReconnectSlot, acquire_slot},
    dedup::{Admission, StreamDedup},
    drain::{DrainState, DrainVerdict, SubState},
    events::{
        ConnectionState, Counters, ManagedEvent, ManagedSessionError, SessionInfo, SessionStatus,
        SubscriptionStatus,
    },
    frames::{ErrorClass, NotificationKind},
    messages::*,
    parallel::{
        ParallelSupervisor, SubFinished, SubLinkState, SubRequest, SubSessionEvent,
        SubSessionSettings, sub_session_request,
    },
    subscription::{
        DedupKey, StopSubscription, SubscriptionActor, SubscriptionReport, SubscriptionReportKind,
        SubscriptionSetup,
    },
    url,
    ws::ConnectOptions,
};

/// See [`SupervisorBuilder::continue_resend_after`].
pub(crate) const CONTINUE_RESEND_AFTER: Duration = Duration::from_secs(5);

/// Notifications a data connection may keep while its acks are awaited.
const MAX_PENDING_DURING_SUBSCRIBE: usize = 65_536;

/// One queued event and the credit it holds.
struct Queued {
    event: ManagedEvent,
    _credit: Option<Credit>,
}

/// Where events go.
enum Consumer {
    /// Pulled with `NextEvent`; waiting pulls in order.
    Pull(VecDeque<oneshot::Sender<Result<Option<ManagedEvent>, ManagedSessionError>>>),
    /// Pushed to a recipient, one delivery at a time.
    Push {
        recipient: Recipient<ManagedEvent>,
        sending: bool,
    },
}

/// The control connection's slot.
struct ControlSlot {
    addr: Option<Addr<ControlActor>>,
    generation: u64,
    state: ConnectionState,
    budget: ReconnectBudget,
    credits: CreditPool,
    /// Set once `completed` arrived: the control plane's job is done and a
    /// lost connection is not reconnected.
    done: bool,
}

/// One subscription connection's slot (a kind and its programs).
struct SubSlot {
    kind: NotificationKind,
    programs: Vec<String>,
    addr: Option<Addr<SubscriptionActor>>,
    generation: u64,
    state: ConnectionState,
    budget: ReconnectBudget,
    credits: CreditPool,
    /// Per program: exactly-once filter and replay cursor.
    dedup: HashMap<String, StreamDedup<DedupKey>>,
}

impl SubSlot {
    fn cursors(&self) -> Vec<(String, Option<u64>)> {
        self.programs
            .iter()
            .map(|p| (p.clone(), self.dedup.get(p).and_then(StreamDedup::cursor)))
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "{:?} subscription for {}",
            self.kind,
            self.programs.join(",")
        )
    }
}

/// A managed backtest session as an actor. Build with
/// [`SessionSupervisor::builder`]; drive with the messages in
/// [`crate::messages`].
pub struct SessionSupervisor {
    control_url: Result<String, String>,
    options: ConnectOptions,
    policy: ReconnectPolicy,
    link: ControlLink,
    session: Option<SessionInfo>,
    last_seq: Option<u64>,
    generations: u64,
    control: ControlSlot,
    subs: Vec<SubSlot>,
    data_credit: usize,
    queue: VecDeque<Queued>,
    consumer: Consumer,
    session_waiters: Vec<oneshot::Sender<Result<SessionInfo, ManagedSessionError>>>,
    outcome_waiters: Vec<oneshot::Sender<Result<(), ManagedSessionError>>>,
    pending_continue: Option<(
        BacktestRequest,
        oneshot::Sender<Result<(), ManagedSessionError>>,
    )>,
    continue_in_flight: bool,
    /// `Completed`, held back until every subscription has drained.
    held_completed: Option<ManagedEvent>,
    drain: DrainState<usize>,
    drain_timer: Option<SpawnHandle>,
    /// How the event stream ends, once known. Events queued before it are
    /// still delivered.
    outcome: Option<Result<(), ManagedSessionError>>,
    counters: Counters,
    shutting_down: bool,
    shutdown_waiters: Vec<oneshot::Sender<()>>,
    /// Paces subscription reconnects across a parallel batch.
    coordinator: Option<Addr<ReconnectCoordinator>>,
    /// Cancels waits parked on the coordinator when the session ends.
    parking: CancellationToken,
    /// The continue in flight (serialised), kept to send it again if the
    /// control connection dropped before the server could have seen it.
    in_flight_request: Option<serde_json::Value>,
    /// Control responses handled since the control link last came up.
    responses_since_up: u64,
    /// How long after a re-attach a continue in flight may go unanswered
    /// before it is presumed lost and sent again.
    continue_resend_after: Duration,
}

/// Where the session's control plane is.
enum ControlLink {
    /// Its own control connection, created with this request.
    Own(CreateBacktestSessionRequest),
    /// A sub-session of a parallel run: the parallel supervisor owns the
    /// multiplexed control connection and routes this session's events.
    Parent {
        parent: WeakAddr<ParallelSupervisor>,
        range: (u64, u64),
    },
}

impl SessionSupervisor {
    /// A builder for a session at `url` (a bare host means
    /// `wss://HOST/backtest`; a `ws(s)://` URL gains `/backtest` when
    /// missing) that sends `create` on its first connection.
    pub fn builder(
        url: impl Into<String>,
        api_key: impl Into<crate::url::ApiKey>,
        create: impl Into<CreateBacktestSessionRequest>,
    ) -> SupervisorBuilder {
        SupervisorBuilder::new(url, api_key, create.into())
    }

    pub(crate) fn from_builder(builder: SupervisorBuilder) -> Self {
        let now = Instant::now();
        let consumer = match builder.events {
            Some(recipient) => Consumer::Push {
                recipient,
                sending: false,
            },
            None => Consumer::Pull(VecDeque::new()),
        };
        let mut options = builder.options;
        let control_url = url::control_url(&builder.url)
            .map_err(|e| format!("bad URL: {e}"))
            .and_then(
                |url| match crate::tls::client_config(&builder.extra_roots) {
                    Ok(tls) => {
                        options.tls = Some(tls);
                        Ok(url)
                    }
                    Err(e) => Err(e),
                },
            );
        Self {
            control_url,
            options,
            policy: builder.policy.clone(),
            link: ControlLink::Own(builder.create),
            session: None,
            last_seq: None,
            generations: 0,
            control: ControlSlot {
                addr: None,
                generation: 0,
                state: ConnectionState::Connecting,
                budget: ReconnectBudget::new(builder.policy, now),
                credits: CreditPool::new(builder.control_credit),
                done: false,
            },
            subs: Vec::new(),
            data_credit: builder.data_credit,
            queue: VecDeque::new(),
            consumer,
            session_waiters: Vec::new(),
            outcome_waiters: Vec::new(),
            pending_continue: None,
            continue_in_flight: false,
            held_completed: None,
            drain: DrainState::new(builder.drain_idle_timeout),
            drain_timer: None,
            outcome: None,
            counters: Counters::default(),
            shutting_down: false,
            shutdown_waiters: Vec::new(),
            coordinator: None,
            parking: CancellationToken::new(),
            in_flight_request: None,
            responses_since_up: 0,
            continue_resend_after: builder.continue_resend_after,
        }
    }

    /// A sub-session of a parallel run, driven through `parent`'s
    /// multiplexed control connection. Events are pulled.
    pub(crate) fn sub_session(
        parent: WeakAddr<ParallelSupervisor>,
        spec: SubSessionSpec,
        shared: SubSessionSettings,
    ) -> Self {
        let now = Instant::now();
        Self {
            control_url: Ok(String::new()),
            options: shared.options,
            policy: shared.policy.clone(),
            link: ControlLink::Parent {
                parent,
                range: spec.range,
            },
            session: Some(spec.info),
            last_seq: None,
            generations: 0,
            control: ControlSlot {
                addr: None,
                generation: 0,
                state: ConnectionState::Up,
                budget: ReconnectBudget::new(shared.policy, now),
                credits: CreditPool::new(1),
                done: false,
            },
            subs: Vec::new(),
            data_credit: shared.data_credit,
            queue: VecDeque::new(),
            consumer: Consumer::Pull(VecDeque::new()),
            session_waiters: Vec::new(),
            outcome_waiters: Vec::new(),
            pending_continue: None,
            continue_in_flight: false,
            held_completed: None,
            drain: DrainState::new(shared.drain_idle_timeout),
            drain_timer: None,
            outcome: None,
            counters: Counters::default(),
            shutting_down: false,
            shutdown_waiters: Vec::new(),
            coordinator: Some(shared.coordinator),
            parking: CancellationToken::new(),
            in_flight_request: None,
            responses_since_up: 0,
            continue_resend_after: shared.continue_resend_after,
        }
    }

    fn session_id(&self) -> String {
        self.session
            .as_ref()
            .map(|s| s.session_id.clone())
            .unwrap_or_default()
    }

    fn next_generation(&mut self) -> u64 {
        self.generations += 1;
        self.generations
    }

    // ----- control connection -------------------------------------------

    fn start_control(&mut self, ctx: &mut Context<Self>) {
        let Ok(url) = self.control_url.clone() else {
            return;
        };
        let ControlLink::Own(create) = &self.link else {
            return;
        };
        let task = match &self.session {
            None => ControlTask::Create(create.clone()),
            Some(info) => ControlTask::Attach {
                session_id: info.session_id.clone(),
                last_sequence: self.last_seq,
            },
        };
        let generation = self.next_generation();
        self.control.generation = generation;
        let actor = ControlActor::new(
            url,
            self.options.clone(),
            task,
            ctx.address().downgrade().recipient(),
            generation,
            self.control.credits.clone(),
        );
        self.control.addr = Some(actor.start());
    }

    fn on_control_ended(&mut self, end: ConnEnd, ctx: &mut Context<Self>) {
        self.control.addr = None;
        let reason = match end {
            ConnEnd::Closed | ConnEnd::Complete => {
                self.control.state = ConnectionState::Closed;
                self.maybe_finish_shutdown(ctx);
                return;
            }
            _ if self.shutting_down => {
                self.control.state = ConnectionState::Closed;
                self.maybe_finish_shutdown(ctx);
                return;
            }
            _ if self.control.done => {
                // `completed` arrived: nothing more to read on control.
                self.control.state = ConnectionState::Closed;
                return;
            }
            ConnEnd::Fatal(reason) => return self.fail_control(reason, ctx),
            ConnEnd::Lost(reason) => reason,
            ConnEnd::Orphaned => "control connection actor stopped".to_string(),
        };
        let now = Instant::now();
        self.control.budget.on_down(now);
        match self.control.budget.next_attempt(now, random_jitter()) {
            Ok(attempt) => {
                warn!(%reason, attempt = attempt.number, delay = ?attempt.delay, "control connection lost; reconnecting");
                self.control.state = ConnectionState::Reconnecting;
                self.counters.reconnects += 1;
                self.gate(ctx);
                ctx.run_later(attempt.delay, |act, ctx| {
                    if !act.shutting_down && act.outcome.is_none() {
                        act.start_control(ctx);
                    }
                });
            }
            Err(exhausted) => self.fail_control(format!("{reason}; {exhausted}"), ctx),
        }
    }

    fn fail_control(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.control.state = ConnectionState::Failed(reason.clone());
        let error = if self.session.is_none() {
            ManagedSessionError::Create(reason)
        } else {
            ManagedSessionError::ControlFailed(reason)
        };
        self.fail(error, ctx);
    }

    fn on_control_response(
        &mut self,
        seq: Option<u64>,
        response: BacktestResponse,
        credit: Option<Credit>,
        ctx: &mut Context<Self>,
    ) {
        self.responses_since_up += 1;
        if let Some(seq) = seq {
            if self.last_seq.is_some_and(|last| seq <= last) {
                self.counters.control_duplicates += 1;
                return;
            }
            self.last_seq = Some(seq);
        }
        let event = match response {
            BacktestResponse::ReadyForContinue => {
                self.continue_in_flight = false;
                ManagedEvent::ReadyForContinue
            }
            BacktestResponse::Paused(paused) => {
                self.continue_in_flight = false;
                ManagedEvent::Paused(paused)
            }
            BacktestResponse::DiscoveryBatch(batch) => ManagedEvent::DiscoveryBatch(batch),
            BacktestResponse::SlotNotification(slot) => ManagedEvent::Slot(slot),
            BacktestResponse::Status { status } => ManagedEvent::Status(status),
            BacktestResponse::Completed {
                summary,
                agent_stats,
            } => {
                self.continue_in_flight = false;
                self.on_completed(
                    ManagedEvent::Completed {
                        summary,
                        agent_stats,
                    },
                    ctx,
                );
                return;
            }
            BacktestResponse::Error(error) => match ErrorClass::of(&error) {
                ErrorClass::NonFatalSilent => {
                    warn!(%error, "simulation error (not forwarded)");
                    return;
                }
                ErrorClass::Terminal => {
                    self.continue_in_flight = false;
                    let reason = format!("the server ended the session: {error}");
                    self.enqueue(ManagedEvent::Error(error), credit, ctx);
                    self.control.done = true;
                    self.fail(ManagedSessionError::ControlFailed(reason), ctx);
                    return;
                }
                ErrorClass::Forward => ManagedEvent::Error(error),
            },
            BacktestResponse::Success => return,
            other => {
                debug!(?other, "ignoring unexpected control response");
                return;
            }
        };
        self.enqueue(event, credit, ctx);
        self.gate(ctx);
    }

    // ----- subscriptions --------------------------------------------------

    fn subscribe(
        &mut self,
        kind: NotificationKind,
        programs: Vec<String>,
        ctx: &mut Context<Self>,
    ) -> Result<(), ManagedSessionError> {
        if let Some(Err(e)) = &self.outcome {
            return Err(e.clone());
        }
        if self.outcome.is_some() || self.shutting_down {
            return Err(ManagedSessionError::ControlClosed);
        }
        let mut programs = programs;
        programs.dedup();
        if programs.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let index = self.subs.len();
        self.subs.push(SubSlot {
            kind,
            dedup: programs
                .iter()
                .map(|p| (p.clone(), StreamDedup::new()))
                .collect(),
            programs,
            addr: None,
            generation: 0,
            state: ConnectionState::Connecting,
            budget: ReconnectBudget::new(self.policy.clone(), now),
            credits: CreditPool::new(self.data_credit),
        });
        self.drain
            .subscription_state(index, SubState::Reconnecting, now);
        self.start_subscription(index, None, ctx);
        Ok(())
    }

    fn start_subscription(
        &mut self,
        index: usize,
        slot: Option<ReconnectSlot>,
        ctx: &mut Context<Self>,
    ) {
        let Some(info) = self.session.clone() else {
            return;
        };
        let ws_url = match url::data_ws_url(&info.rpc_endpoint) {
            Ok(url) => url,
            Err(e) => {
                return self.fail_subscription(index, format!("bad rpc endpoint: {e}"), ctx);
            }
        };
        let generation = self.next_generation();
        let report = ctx.address().downgrade().recipient();
        let options = self.options.clone();
        let sub = &mut self.subs[index];
        sub.generation = generation;
        let actor = SubscriptionActor::new(SubscriptionSetup {
            index,
            generation,
            kind: sub.kind,
            ws_url,
            programs: sub.cursors(),
            options,
            credits: sub.credits.clone(),
            report,
            max_pending: MAX_PENDING_DURING_SUBSCRIBE,
            streaming: self
                .coordinator
                .clone()
                .map(|c| (c, info.session_id.clone())),
            slot,
        });
        sub.addr = Some(match crate::runtime::data_arbiter() {
            Some(arbiter) => SubscriptionActor::start_in_arbiter(&arbiter, move |_| actor),
            None => actor.start(),
        });
    }

    fn on_subscription_ended(&mut self, index: usize, end: ConnEnd, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.subs[index].addr = None;
        let reason = match end {
            ConnEnd::Complete => {
                self.subs[index].state = ConnectionState::Complete;
                self.drain
                    .subscription_state(index, SubState::Complete, now);
                self.check_drain(ctx);
                self.gate(ctx);
                return;
            }
            ConnEnd::Closed => {
                self.subs[index].state = ConnectionState::Closed;
                self.maybe_finish_shutdown(ctx);
                return;
            }
            _ if self.shutting_down || self.outcome.is_some() => {
                self.subs[index].state = ConnectionState::Closed;
                self.maybe_finish_shutdown(ctx);
                return;
            }
            ConnEnd::Fatal(reason) => return self.fail_subscription(index, reason, ctx),
            ConnEnd::Lost(reason) => reason,
            ConnEnd::Orphaned => "subscription actor stopped".to_string(),
        };
        let sub = &mut self.subs[index];
        sub.budget.on_down(now);
        match sub.budget.next_attempt(now, random_jitter()) {
            Ok(attempt) => {
                warn!(subscription = %sub.describe(), %reason, attempt = attempt.number, delay = ?attempt.delay, "subscription lost; resubscribing from its cursors");
                self.counters.reconnects += 1;
                match (&self.coordinator, attempt.gated) {
                    (Some(coordinator), true) => {
                        let coordinator = coordinator.clone();
                        self.park(index, coordinator, ctx);
                    }
                    _ => {
                        sub.state = ConnectionState::Reconnecting;
                        self.drain
                            .subscription_state(index, SubState::Reconnecting, now);
                        self.check_drain(ctx);
                        ctx.run_later(attempt.delay, move |act, ctx| {
                            if !act.shutting_down && act.outcome.is_none() {
                                act.start_subscription(index, None, ctx);
                            }
                        });
                    }
                }
            }
            Err(exhausted) => {
                let reason = format!("{}: {reason}; {exhausted}", sub.describe());
                self.fail_subscription(index, reason, ctx);
            }
        }
    }

    /// Wait on the batch's coordinator for the reconnect slot (the link is
    /// quiet), then reconnect holding it. Parked time is not charged to the
    /// wall-clock budget; the wait is cancelled when the session ends.
    fn park(
        &mut self,
        index: usize,
        coordinator: Addr<ReconnectCoordinator>,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        self.subs[index].state = ConnectionState::Parked;
        self.drain.subscription_state(index, SubState::Parked, now);
        self.check_drain(ctx);
        let session = self.session_id();
        let cancelled = self.parking.clone();
        let waiting = async move {
            tokio::select! {
                slot = acquire_slot(&coordinator, session) => slot,
                _ = cancelled.cancelled() => None,
            }
        };
        ctx.spawn(waiting.into_actor(self).map(move |slot, act, ctx| {
            if act.shutting_down || act.outcome.is_some() {
                return;
            }
            act.subs[index].budget.discount_parked(now.elapsed());
            act.subs[index].state = ConnectionState::Reconnecting;
            act.drain
                .subscription_state(index, SubState::Reconnecting, Instant::now());
            act.start_subscription(index, slot, ctx);
        }));
    }

    fn fail_subscription(&mut self, index: usize, reason: String, ctx: &mut Context<Self>) {
        let sub = &mut self.subs[index];
        sub.state = ConnectionState::Failed(reason.clone());
        self.drain
            .subscription_state(index, SubState::Failed(reason.clone()), Instant::now());
        self.fail(ManagedSessionError::SubscriptionFailed(reason), ctx);
    }

    fn on_data(
        &mut self,
        index: usize,
        items: Vec<crate::subscription::DataItem>,
        ctx: &mut Context<Self>,
    ) {
        let now = Instant::now();
        for item in items {
            let sub = &mut self.subs[index];
            let admitted = match (&item.key, sub.dedup.get_mut(&*item.program)) {
                (Some(key), Some(dedup)) => dedup.admit(item.slot, key.clone()),
                _ => Admission::Deliver,
            };
            if admitted == Admission::Duplicate {
                self.counters.duplicates_removed += 1;
                continue;
            }
            self.counters.notifications += 1;
            match item.event {
                ManagedEvent::Transaction(_) => self.counters.transactions += 1,
                ManagedEvent::AccountDiff(_) => self.counters.account_diffs += 1,
                _ => {}
            }
            self.drain.notification(now);
            self.queue.push_back(Queued {
                event: item.event,
                _credit: Some(item.credit),
            });
        }
        self.pump(ctx);
        self.check_drain(ctx);
    }

    // ----- completion drain ----------------------------------------------

    fn on_completed(&mut self, completed: ManagedEvent, ctx: &mut Context<Self>) {
        self.control.done = true;
        self.held_completed = Some(completed);
        let now = Instant::now();
        self.drain.control_completed(now);
        for (index, sub) in self.subs.iter().enumerate() {
            let state = match &sub.state {
                ConnectionState::Up => SubState::Streaming,
                ConnectionState::Complete | ConnectionState::Closed => SubState::Complete,
                ConnectionState::Parked => SubState::Parked,
                ConnectionState::Failed(reason) => SubState::Failed(reason.clone()),
                ConnectionState::Connecting | ConnectionState::Reconnecting => {
                    SubState::Reconnecting
                }
            };
            self.drain.subscription_state(index, state, now);
        }
        self.check_drain(ctx);
    }

    fn check_drain(&mut self, ctx: &mut Context<Self>) {
        if self.outcome.is_some() {
            return;
        }
        let now = Instant::now();
        match self.drain.poll(now) {
            DrainVerdict::NotDraining => {}
            DrainVerdict::Waiting { idle_deadline } => {
                if let Some(timer) = self.drain_timer.take() {
                    ctx.cancel_future(timer);
                }
                if let Some(deadline) = idle_deadline {
                    let wait = deadline.saturating_duration_since(now);
                    self.drain_timer = Some(ctx.run_later(wait, |act, ctx| {
                        act.drain_timer = None;
                        act.check_drain(ctx);
                    }));
                }
            }
            DrainVerdict::Complete => {
                if let Some(completed) = self.held_completed.take() {
                    self.enqueue(completed, None, ctx);
                }
                info!("session completed; every subscription drained");
                self.set_outcome(Ok(()), ctx);
                self.close_connections();
            }
            DrainVerdict::Stalled { subscription, idle } => {
                let what = self.subs[subscription].describe();
                let reason = format!(
                    "completion drain stalled: the {what} sent nothing for {idle:?} after the session completed; the capture is incomplete"
                );
                self.fail(ManagedSessionError::SubscriptionFailed(reason), ctx);
            }
            DrainVerdict::Failed { reason, .. } => {
                self.fail(ManagedSessionError::SubscriptionFailed(reason), ctx);
            }
        }
    }

    // ----- continue gating -------------------------------------------------

    /// Send the waiting continue if every connection is up and none is in
    /// flight; fail it if a connection has failed.
    fn gate(&mut self, ctx: &mut Context<Self>) {
        if self.pending_continue.is_none() {
            return;
        }
        let failure = match &self.control.state {
            ConnectionState::Failed(reason) => {
                Some(ManagedSessionError::ControlFailed(reason.clone()))
            }
            _ => self.subs.iter().find_map(|s| match &s.state {
                ConnectionState::Failed(reason) => {
                    Some(ManagedSessionError::SubscriptionFailed(reason.clone()))
                }
                _ => None,
            }),
        }
        .or_else(|| match &self.outcome {
            Some(Err(e)) => Some(e.clone()),
            Some(Ok(())) => Some(ManagedSessionError::ControlClosed),
            None => None,
        });
        if let Some(error) = failure {
            if let Some((_, tx)) = self.pending_continue.take() {
                let _ = tx.send(Err(error));
            }
            return;
        }
        let all_up = self.control.state == ConnectionState::Up
            && self.subs.iter().all(|s| {
                matches!(
                    s.state,
                    ConnectionState::Up | ConnectionState::Complete | ConnectionState::Closed
                )
            });
        if !all_up || self.continue_in_flight {
            return;
        }
        let Some(sending) = self.control_sender() else {
            return;
        };
        let Some((request, tx)) = self.pending_continue.take() else {
            return;
        };
        self.continue_in_flight = true;
        self.in_flight_request = serde_json::to_value(&request).ok();
        ctx.spawn(sending(request).into_actor(self).map(
            move |result: Result<(), String>, act, ctx| {
                let Err(e) = result else {
                    let _ = tx.send(Ok(()));
                    return;
                };
                act.continue_in_flight = false;
                // The write failed with the connection: the server never
                // got it. Unless the session is over, wait for the link to
                // come back and send it then.
                let request = act
                    .in_flight_request
                    .take()
                    .and_then(|v| serde_json::from_value::<BacktestRequest>(v).ok());
                match request {
                    Some(request) if act.outcome.is_none() && act.pending_continue.is_none() => {
                        warn!(error = %e, "continue not sent; sending it once the control link is back");
                        act.pending_continue = Some((request, tx));
                        // The link's loss is reported separately; look
                        // again shortly rather than at once.
                        ctx.run_later(Duration::from_millis(100), |act, ctx| act.gate(ctx));
                    }
                    _ => {
                        warn!(error = %e, "continue not sent");
                        let _ = tx.send(Err(ManagedSessionError::ContinueSend(e)));
                    }
                }
            },
        ));
    }

    /// The control link is back after a drop. A continue sent just before
    /// the drop may never have reached the server (lost with the socket),
    /// and nothing says so: if the server stays silent for the resend delay
    /// after the re-attach, send it again. A server that did get it answers
    /// within that time; one that did not would wait forever.
    fn on_link_restored(&mut self, ctx: &mut Context<Self>) {
        self.responses_since_up = 0;
        if !self.continue_in_flight {
            return;
        }
        ctx.run_later(self.continue_resend_after, |act, ctx| {
            if !act.continue_in_flight || act.responses_since_up > 0 || act.outcome.is_some() {
                return;
            }
            let Some(request) = act
                .in_flight_request
                .clone()
                .and_then(|v| serde_json::from_value::<BacktestRequest>(v).ok())
            else {
                return;
            };
            let Some(sending) = act.control_sender() else {
                return;
            };
            warn!("no answer to the continue sent before the control connection dropped; sending it again");
            act.counters.continues_resent += 1;
            ctx.spawn(sending(request).into_actor(act).map(|result, _, _| {
                if let Err(e) = result {
                    warn!(error = %e, "continue not sent again");
                }
            }));
        });
    }

    /// How a request reaches the server: this session's control connection,
    /// or the parallel supervisor's (as the sub-session form of the request).
    #[allow(clippy::type_complexity)]
    fn control_sender(
        &self,
    ) -> Option<Box<dyn FnOnce(BacktestRequest) -> BoxFuture<'static, Result<(), String>>>> {
        match &self.link {
            ControlLink::Own(_) => {
                let control = self.control.addr.clone()?;
                Some(Box::new(move |request| {
                    Box::pin(async move {
                        match control.send(SendRequest(request)).await {
                            Ok(result) => result,
                            Err(e) => Err(e.to_string()),
                        }
                    })
                }))
            }
            ControlLink::Parent { parent, .. } => {
                let parent = parent.upgrade()?;
                let session_id = self.session_id();
                Some(Box::new(move |request| {
                    Box::pin(async move {
                        let request = sub_session_request(session_id, request);
                        match parent.send(SubRequest(request)).await {
                            Ok(result) => result,
                            Err(e) => Err(e.to_string()),
                        }
                    })
                }))
            }
        }
    }

    fn request_continue(
        &mut self,
        request: BacktestRequest,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<(), ManagedSessionError>> {
        let (tx, rx) = oneshot::channel();
        if self.pending_continue.is_some() {
            let _ = tx.send(Err(ManagedSessionError::ContinueSend(
                "another continue is already waiting to be sent".into(),
            )));
            return rx;
        }
        self.pending_continue = Some((request, tx));
        self.gate(ctx);
        rx
    }

    // ----- event delivery --------------------------------------------------

    fn enqueue(&mut self, event: ManagedEvent, credit: Option<Credit>, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.queue.push_back(Queued {
            event,
            _credit: credit,
        });
        self.pump(ctx);
    }

    /// Hand queued events to waiting pulls or the push recipient; end the
    /// stream for waiting pulls once the queue is empty and the outcome
    /// known.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        self.deliver(ctx);
        self.answer_outcome_waiters();
    }

    /// `WaitOutcome` resolves once the outcome is known and every event
    /// before it has been handed to the consumer.
    fn answer_outcome_waiters(&mut self) {
        let delivering = matches!(self.consumer, Consumer::Push { sending: true, .. });
        let Some(outcome) = &self.outcome else { return };
        if !self.queue.is_empty() || delivering {
            return;
        }
        for waiter in self.outcome_waiters.drain(..) {
            let _ = waiter.send(outcome.clone());
        }
    }

    fn deliver(&mut self, ctx: &mut Context<Self>) {
        match &mut self.consumer {
            Consumer::Pull(waiters) => {
                while !waiters.is_empty() {
                    if let Some(queued) = self.queue.pop_front() {
                        if let Some(waiter) = waiters.pop_front() {
                            let _ = waiter.send(Ok(Some(queued.event)));
                        }
                    } else if let Some(outcome) = &self.outcome {
                        for waiter in waiters.drain(..) {
                            let _ = waiter.send(outcome.clone().map(|()| None));
                        }
                    } else {
                        break;
                    }
                }
            }
            Consumer::Push { recipient, sending } => {
                if *sending {
                    return;
                }
                let Some(queued) = self.queue.pop_front() else {
                    return;
                };
                *sending = true;
                let delivery = recipient.send(queued.event);
                let credit = queued._credit;
                ctx.spawn(delivery.into_actor(self).map(move |result, act, ctx| {
                    drop(credit);
                    if let Consumer::Push { sending, .. } = &mut act.consumer {
                        *sending = false;
                    }
                    if result.is_err() {
                        warn!("event recipient is gone; shutting the session down");
                        act.begin_shutdown(ctx);
                        return;
                    }
                    act.pump(ctx);
                }));
            }
        }
    }

    // ----- ending ------------------------------------------------------------

    fn set_outcome(&mut self, outcome: Result<(), ManagedSessionError>, ctx: &mut Context<Self>) {
        if self.outcome.is_some() {
            return;
        }
        self.outcome = Some(outcome.clone());
        for waiter in self.session_waiters.drain(..) {
            let _ = waiter.send(Err(match &outcome {
                Err(e) => e.clone(),
                Ok(()) => ManagedSessionError::ControlClosed,
            }));
        }
        self.gate(ctx);
        self.pump(ctx);
    }

    /// The session failed: what is queued is still delivered, then the
    /// stream ends with `error`. Connections are closed.
    fn fail(&mut self, error: ManagedSessionError, ctx: &mut Context<Self>) {
        if self.outcome.is_some() {
            return;
        }
        warn!(%error, "session failed");
        self.set_outcome(Err(error), ctx);
        self.close_connections();
    }

    /// Ask every live connection to close gracefully; each reports `Closed`.
    fn close_connections(&mut self) {
        for sub in &self.subs {
            if let Some(addr) = &sub.addr {
                addr.do_send(StopSubscription);
            }
        }
        match &self.link {
            ControlLink::Own(_) => {
                if let Some(control) = &self.control.addr {
                    control.do_send(CloseSession);
                }
            }
            ControlLink::Parent { parent, .. } => {
                if let Some(parent) = parent.upgrade() {
                    parent.do_send(SubFinished {
                        session_id: self.session_id(),
                        close: !matches!(self.outcome, Some(Ok(()))),
                    });
                }
            }
        }
        self.parking.cancel();
    }

    fn begin_shutdown(&mut self, ctx: &mut Context<Self>) {
        if !self.shutting_down {
            self.shutting_down = true;
            self.set_outcome(Err(ManagedSessionError::Cancelled), ctx);
            if let Some((_, tx)) = self.pending_continue.take() {
                let _ = tx.send(Err(ManagedSessionError::Cancelled));
            }
            // Dropping the queue frees its credit: connections waiting for
            // credit read on, see the close request and close.
            self.queue.clear();
            self.close_connections();
        }
        self.maybe_finish_shutdown(ctx);
    }

    fn maybe_finish_shutdown(&mut self, ctx: &mut Context<Self>) {
        if !self.shutting_down {
            return;
        }
        let live = self.control.addr.is_some() || self.subs.iter().any(|s| s.addr.is_some());
        if live {
            return;
        }
        for waiter in self.shutdown_waiters.drain(..) {
            let _ = waiter.send(());
        }
        ctx.stop();
    }

    fn status(&self) -> SessionStatus {
        let mut counters = self.counters.clone();
        counters.bytes_in = self.options.bytes_in.load(Ordering::Relaxed);
        SessionStatus {
            range: match &self.link {
                ControlLink::Parent { range, .. } => Some(*range),
                ControlLink::Own(_) => None,
            },
            session: self.session.clone(),
            control: self.control.state.clone(),
            subscriptions: self
                .subs
                .iter()
                .map(|s| SubscriptionStatus {
                    kind: s.kind,
                    programs: s.programs.clone(),
                    state: s.state.clone(),
                    cursors: s.cursors(),
                })
                .collect(),
            last_sequence: self.last_seq,
            queued_events: self.queue.len(),
            draining: self.drain.is_draining() && self.outcome.is_none(),
            counters,
        }
    }
}

impl Actor for SessionSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let ControlLink::Parent { range, .. } = &self.link {
            info!(session_id = %self.session_id(), ?range, "starting sub-session");
            return;
        }
        match &self.control_url {
            Ok(url) => {
                info!(url = %url, "starting managed session");
                self.start_control(ctx);
            }
            Err(e) => {
                let reason = e.clone();
                self.control.state = ConnectionState::Failed(reason.clone());
                self.set_outcome(Err(ManagedSessionError::Create(reason)), ctx);
            }
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        // Every address is gone (or shutdown finished): close what is left.
        // The connection actors finish their graceful close on their own.
        if !self.shutting_down {
            self.shutting_down = true;
            self.close_connections();
        }
        Running::Stop
    }
}

impl Handler<ControlReport> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: ControlReport, ctx: &mut Self::Context) {
        if msg.generation != self.control.generation {
            return;
        }
        match msg.kind {
            ControlReportKind::Ready { info, seq } => {
                self.control.state = ConnectionState::Up;
                self.control.budget.on_up(Instant::now());
                if let Some(seq) = seq {
                    self.last_seq = Some(self.last_seq.map_or(seq, |last| last.max(seq)));
                }
                if self.session.is_none() {
                    info!(session_id = %info.session_id, "session created");
                    self.session = Some(info.clone());
                    for waiter in self.session_waiters.drain(..) {
                        let _ = waiter.send(Ok(info.clone()));
                    }
                } else {
                    info!("control connection re-attached");
                    self.on_link_restored(ctx);
                }
                self.gate(ctx);
            }
            ControlReportKind::Frame {
                seq,
                response,
                credit,
            } => self.on_control_response(seq, response, credit, ctx),
            ControlReportKind::ParallelReady { .. } => {}
            ControlReportKind::Garbage(reason) => {
                self.counters.undecodable_frames += 1;
                warn!(%reason, "skipping a control frame that is not a response");
            }
            ControlReportKind::Ended(end) => self.on_control_ended(end, ctx),
        }
    }
}

impl Handler<SubSessionEvent> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SubSessionEvent, ctx: &mut Self::Context) {
        let response = crate::parallel::into_response(msg.event);
        self.on_control_response(None, response, msg.credit, ctx);
    }
}

impl Handler<SubLinkState> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SubLinkState, ctx: &mut Self::Context) {
        match msg.0 {
            ConnectionState::Failed(reason) if !self.control.done => self.fail_control(reason, ctx),
            state if !self.control.done => {
                let restored =
                    state == ConnectionState::Up && self.control.state != ConnectionState::Up;
                self.control.state = state;
                if restored {
                    self.on_link_restored(ctx);
                }
                self.gate(ctx);
            }
            _ => {}
        }
    }
}

impl Handler<SubscriptionReport> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SubscriptionReport, ctx: &mut Self::Context) {
        let index = msg.index;
        if index >= self.subs.len() {
            return;
        }
        match msg.kind {
            // Data is data, whichever connection read it: the filter
            // removes what was already delivered.
            SubscriptionReportKind::Batch(items) => self.on_data(index, items, ctx),
            SubscriptionReportKind::Undecodable => self.counters.undecodable_frames += 1,
            _ if msg.generation != self.subs[index].generation => {}
            SubscriptionReportKind::Up => {
                let now = Instant::now();
                let sub = &mut self.subs[index];
                sub.state = ConnectionState::Up;
                sub.budget.on_up(now);
                self.drain
                    .subscription_state(index, SubState::Streaming, now);
                self.check_drain(ctx);
                self.gate(ctx);
            }
            SubscriptionReportKind::Ended(end) => self.on_subscription_ended(index, end, ctx),
        }
    }
}

impl Handler<WaitSession> for SessionSupervisor {
    type Result = ResponseFuture<Result<SessionInfo, ManagedSessionError>>;

    fn handle(&mut self, _: WaitSession, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match (&self.session, &self.outcome) {
            (Some(info), _) => {
                let _ = tx.send(Ok(info.clone()));
            }
            (None, Some(Err(e))) => {
                let _ = tx.send(Err(e.clone()));
            }
            (None, Some(Ok(()))) => {
                let _ = tx.send(Err(ManagedSessionError::ControlClosed));
            }
            (None, None) => self.session_waiters.push(tx),
        }
        Box::pin(async move { rx.await.unwrap_or(Err(ManagedSessionError::ControlClosed)) })
    }
}

/// Subscribe once the session exists.
fn subscribe_when_created(
    act: &mut SessionSupervisor,
    kind: NotificationKind,
    programs: Vec<String>,
    ctx: &mut Context<SessionSupervisor>,
) -> ResponseActFuture<SessionSupervisor, Result<(), ManagedSessionError>> {
    let waiting = act.handle(WaitSession, ctx);
    Box::pin(waiting.into_actor(act).map(move |created, act, ctx| {
        created?;
        act.subscribe(kind, programs, ctx)
    }))
}

impl Handler<SubscribeTransactions> for SessionSupervisor {
    type Result = ResponseActFuture<Self, Result<(), ManagedSessionError>>;

    fn handle(&mut self, msg: SubscribeTransactions, ctx: &mut Self::Context) -> Self::Result {
        subscribe_when_created(self, NotificationKind::Transaction, msg.programs, ctx)
    }
}

impl Handler<SubscribeAccountDiffs> for SessionSupervisor {
    type Result = ResponseActFuture<Self, Result<(), ManagedSessionError>>;

    fn handle(&mut self, msg: SubscribeAccountDiffs, ctx: &mut Self::Context) -> Self::Result {
        subscribe_when_created(self, NotificationKind::AccountDiff, msg.programs, ctx)
    }
}

impl Handler<Continue> for SessionSupervisor {
    type Result = ResponseFuture<Result<(), ManagedSessionError>>;

    fn handle(&mut self, msg: Continue, ctx: &mut Self::Context) -> Self::Result {
        let rx = self.request_continue(BacktestRequest::Continue(msg.0), ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(ManagedSessionError::ControlClosed)) })
    }
}

impl Handler<ContinueTo> for SessionSupervisor {
    type Result = ResponseFuture<Result<(), ManagedSessionError>>;

    fn handle(&mut self, msg: ContinueTo, ctx: &mut Self::Context) -> Self::Result {
        let rx = self.request_continue(BacktestRequest::ContinueTo(msg.0), ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(ManagedSessionError::ControlClosed)) })
    }
}

impl Handler<NextEvent> for SessionSupervisor {
    type Result = ResponseFuture<Result<Option<ManagedEvent>, ManagedSessionError>>;

    fn handle(&mut self, _: NextEvent, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        match &mut self.consumer {
            Consumer::Pull(waiters) => waiters.push_back(tx),
            Consumer::Push { .. } => {
                let _ = tx.send(Err(ManagedSessionError::ControlFailed(
                    "events are pushed to the recipient given at start; NextEvent is for pull mode"
                        .into(),
                )));
            }
        }
        self.pump(ctx);
        Box::pin(async move { rx.await.unwrap_or(Err(ManagedSessionError::ControlClosed)) })
    }
}

impl Handler<WaitOutcome> for SessionSupervisor {
    type Result = ResponseFuture<Result<(), ManagedSessionError>>;

    fn handle(&mut self, _: WaitOutcome, _: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.outcome_waiters.push(tx);
        self.answer_outcome_waiters();
        Box::pin(async move { rx.await.unwrap_or(Err(ManagedSessionError::ControlClosed)) })
    }
}

impl Handler<SetDrainIdleTimeout> for SessionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SetDrainIdleTimeout, _: &mut Self::Context) {
        self.drain.set_idle_timeout(msg.0);
    }
}

impl Handler<GetStatus> for SessionSupervisor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.status())
    }
}

impl Handler<Shutdown> for SessionSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.shutdown_waiters.push(tx);
        self.begin_shutdown(ctx);
        let timeout = self.options.close_timeout * 2;
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, rx).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_cursors_follow_the_dedup_filters() {
        let mut dedup = HashMap::new();
        let mut d = StreamDedup::new();
        d.admit(7, DedupKey::Signature("a".into()));
        dedup.insert("p1".to_string(), d);
        dedup.insert("p2".to_string(), StreamDedup::new());
        let slot = SubSlot {
            kind: NotificationKind::Transaction,
            programs: vec!["p1".into(), "p2".into()],
            addr: None,
            generation: 0,
            state: ConnectionState::Up,
            budget: ReconnectBudget::new(ReconnectPolicy::default(), Instant::now()),
            credits: CreditPool::new(1),
            dedup,
        };
        assert_eq!(
            slot.cursors(),
            vec![("p1".to_string(), Some(7)), ("p2".to_string(), None)]
        );
        assert_eq!(slot.describe(), "Transaction subscription for p1,p2");
    }
}

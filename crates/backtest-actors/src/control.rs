//! The control connection actor: one WebSocket to `/backtest`.
//!
//! Started by the supervisor with a task: create the session (first
//! connection) or attach and resume it (every later one, with the last
//! sequence seen). It forwards every response to the supervisor, keeps the
//! connection alive with pings, sends the requests it is given, and reports
//! how the connection ended; then it stops. Policy (retry or not, when) is
//! the supervisor's.

use std::{collections::BTreeMap, time::Instant};

use actix::{WeakRecipient, prelude::*};
use awc::ws::Message;
use futures::SinkExt as _;
use simulator_api::{
    BacktestError, BacktestRequest, BacktestResponse, CreateBacktestSessionRequest,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::{
    connection::{ConnEnd, Credit, CreditPool, EndReporter},
    events::SessionInfo,
    frames::{ControlFrame, parse_control},
    url,
    ws::{self, ConnectOptions, Inbound, ReadError, Reader, Socket},
};

/// What the connection must do first.
#[derive(Debug, Clone)]
pub(crate) enum ControlTask {
    Create(CreateBacktestSessionRequest),
    Attach {
        session_id: String,
        last_sequence: Option<u64>,
    },
    /// Create a parallel run (the request has `parallel: true`).
    CreateParallel(CreateBacktestSessionRequest),
    /// Re-attach the multiplexed connection with per-sub-session cursors.
    AttachParallel {
        control_session_id: String,
        last_sequences: BTreeMap<String, u64>,
    },
}

/// A sub-session of a parallel run as the server announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubSessionSpec {
    pub info: SessionInfo,
    /// The server's split: authoritative `(start_slot, end_slot)`.
    pub range: (u64, u64),
}

/// A report from a control connection to its supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct ControlReport {
    pub generation: u64,
    pub kind: ControlReportKind,
}

pub(crate) enum ControlReportKind {
    /// Created (or attached and resumed): the connection is up. `seq` is
    /// the sequence number of a sequenced `sessionCreated`.
    Ready {
        info: SessionInfo,
        seq: Option<u64>,
    },
    /// A response, with its sequence number when sequenced.
    Frame {
        seq: Option<u64>,
        response: BacktestResponse,
        credit: Option<Credit>,
    },
    /// A parallel run is created (with its sub-sessions) or re-attached
    /// (`sessions` empty: the supervisor knows them).
    ParallelReady {
        control_session_id: String,
        sessions: Vec<SubSessionSpec>,
    },
    /// A frame that parsed as neither response form (skipped).
    Garbage(String),
    Ended(ConnEnd),
}

/// Send a request on the connection.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub(crate) struct SendRequest(pub BacktestRequest);

/// Close the session gracefully: `closeBacktestSession`, then a close
/// frame, within the close timeout.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct CloseSession;

enum Command {
    Send(BacktestRequest, oneshot::Sender<Result<(), String>>),
    Close,
}

pub(crate) struct ControlActor {
    setup: Option<Setup>,
    commands: Option<mpsc::Sender<Command>>,
    end: EndReporter<ControlReport>,
    close_timeout: std::time::Duration,
}

/// Everything the connection task needs.
struct Setup {
    url: String,
    http_base: String,
    options: ConnectOptions,
    task: ControlTask,
    report: WeakRecipient<ControlReport>,
    generation: u64,
    credits: CreditPool,
}

impl ControlActor {
    pub fn new(
        url: String,
        options: ConnectOptions,
        task: ControlTask,
        report: WeakRecipient<ControlReport>,
        generation: u64,
        credits: CreditPool,
    ) -> Self {
        let http_base = url::http_base(&url);
        let close_timeout = options.close_timeout;
        Self {
            close_timeout,
            setup: Some(Setup {
                url,
                http_base,
                options,
                task,
                report: report.clone(),
                generation,
                credits,
            }),
            commands: None,
            end: EndReporter::new(report, move |end| ControlReport {
                generation,
                kind: ControlReportKind::Ended(end),
            }),
        }
    }
}

impl Actor for ControlActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (tx, rx) = mpsc::channel(8);
        self.commands = Some(tx);
        let Some(setup) = self.setup.take() else {
            ctx.stop();
            return;
        };
        ctx.spawn(run(setup, rx).into_actor(self).map(|end, act, ctx| {
            act.end.send(end);
            ctx.stop();
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // Stopped from outside (its address dropped): the socket is gone.
        self.end.send(ConnEnd::Orphaned);
    }
}

impl Handler<SendRequest> for ControlActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: SendRequest, _: &mut Self::Context) -> Self::Result {
        let commands = self.commands.clone();
        Box::pin(async move {
            let commands = commands.ok_or("control connection not started")?;
            let (tx, rx) = oneshot::channel();
            commands
                .send(Command::Send(msg.0, tx))
                .await
                .map_err(|_| "control connection ended".to_string())?;
            rx.await
                .map_err(|_| "control connection ended".to_string())?
        })
    }
}

impl Handler<CloseSession> for ControlActor {
    type Result = ();

    fn handle(&mut self, _: CloseSession, ctx: &mut Self::Context) {
        if let Some(commands) = &self.commands {
            let _ = commands.try_send(Command::Close);
        }
        // The graceful close has its own budget; past it (and a margin) the
        // connection is cut.
        ctx.run_later(self.close_timeout * 2, |_, ctx| ctx.stop());
    }
}

/// The connection's life: connect, handshake, then serve until it ends.
async fn run(setup: Setup, mut commands: mpsc::Receiver<Command>) -> ConnEnd {
    let options = setup.options.clone();
    let opening = async {
        let mut socket = ws::connect(&setup.url, &options, true)
            .await
            .map_err(ws::ConnectError::into_end)?;
        let mut conn = Conn {
            reader: Reader::new(&options),
            setup,
            last_inbound: Instant::now(),
        };
        conn.handshake(&mut socket).await?;
        Ok::<_, ConnEnd>((socket, conn))
    };
    // A close request during connect or handshake ends the attempt at once
    // (requests to send wait for the handshake).
    let opened = tokio::select! {
        opened = opening => opened,
        _ = wait_for_close(&mut commands) => return ConnEnd::Closed,
    };
    let (mut socket, mut conn) = match opened {
        Ok(opened) => opened,
        Err(end) => return end,
    };
    conn.serve(&mut socket, &mut commands).await
}

/// Resolve when a close is requested (or every sender is gone); fail the
/// send requests that arrive meanwhile: nothing can be sent yet.
async fn wait_for_close(commands: &mut mpsc::Receiver<Command>) {
    loop {
        match commands.recv().await {
            Some(Command::Send(_, done)) => {
                let _ = done.send(Err("the control connection is not up yet".into()));
            }
            Some(Command::Close) | None => return,
        }
    }
}

struct Conn {
    setup: Setup,
    reader: Reader,
    last_inbound: Instant,
}

/// What a handshake waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Created,
    Attached,
    Resumed,
    ParallelAttached,
}

impl Conn {
    fn report(&self, kind: ControlReportKind) -> Result<(), ConnEnd> {
        let report = self.setup.report.upgrade().ok_or(ConnEnd::Orphaned)?;
        report.do_send(ControlReport {
            generation: self.setup.generation,
            kind,
        });
        Ok(())
    }

    async fn send(&self, socket: &mut Socket, request: &BacktestRequest) -> Result<(), ConnEnd> {
        let text = serde_json::to_string(request)
            .map_err(|e| ConnEnd::Fatal(format!("cannot encode request: {e}")))?;
        ws::send_text(socket, text).await.map_err(ConnEnd::Lost)
    }

    async fn handshake(&mut self, socket: &mut Socket) -> Result<(), ConnEnd> {
        let (seq, response) = match self.setup.task.clone() {
            ControlTask::CreateParallel(create) => {
                self.send(socket, &BacktestRequest::CreateBacktestSession(create))
                    .await?;
                return self.await_parallel_created(socket).await;
            }
            ControlTask::AttachParallel {
                control_session_id,
                last_sequences,
            } => {
                self.send(
                    socket,
                    &BacktestRequest::AttachParallelControlSessionV2 {
                        control_session_id,
                        last_sequences,
                    },
                )
                .await?;
                let (_, attached) = self
                    .await_response(socket, Awaiting::ParallelAttached)
                    .await?;
                let BacktestResponse::ParallelSessionAttachedV2 {
                    control_session_id, ..
                } = attached
                else {
                    return Err(ConnEnd::Fatal(
                        "attach ended without the parallel session".into(),
                    ));
                };
                return self.report(ControlReportKind::ParallelReady {
                    control_session_id,
                    sessions: Vec::new(),
                });
            }
            ControlTask::Create(create) => {
                self.send(socket, &BacktestRequest::CreateBacktestSession(create))
                    .await?;
                self.await_response(socket, Awaiting::Created).await?
            }
            ControlTask::Attach {
                session_id,
                last_sequence,
            } => {
                self.send(
                    socket,
                    &BacktestRequest::AttachBacktestSession {
                        session_id,
                        last_sequence,
                    },
                )
                .await?;
                let attached = self.await_response(socket, Awaiting::Attached).await?;
                self.send(socket, &BacktestRequest::ResumeAttachedSession)
                    .await?;
                self.await_response(socket, Awaiting::Resumed).await?;
                attached
            }
        };
        let (BacktestResponse::SessionCreated {
            session_id,
            rpc_endpoint,
            task_id,
        }
        | BacktestResponse::SessionAttached {
            session_id,
            rpc_endpoint,
            task_id,
        }) = response
        else {
            return Err(ConnEnd::Fatal("handshake ended without a session".into()));
        };
        let rpc_endpoint = url::resolve_rpc_endpoint(&self.setup.http_base, &rpc_endpoint)
            .map_err(|e| ConnEnd::Fatal(format!("bad rpc_endpoint: {e}")))?;
        self.report(ControlReportKind::Ready {
            info: SessionInfo {
                session_id,
                rpc_endpoint,
                task_id,
            },
            seq,
        })
    }

    /// Read until the awaited handshake response and return it, forwarding
    /// everything else (responses before `sessionCreated` or replayed after
    /// `sessionAttached` are events, not noise). Each response is awaited
    /// at most the handshake timeout.
    async fn await_response(
        &mut self,
        socket: &mut Socket,
        awaiting: Awaiting,
    ) -> Result<(Option<u64>, BacktestResponse), ConnEnd> {
        let timeout = self.setup.options.handshake_timeout;
        loop {
            let message = tokio::time::timeout(timeout, self.reader.next(socket))
                .await
                .map_err(|_| ConnEnd::Lost(format!("no handshake response within {timeout:?}")))?
                .map_err(ReadError::into_end)?;
            let Some((seq, response)) = self.response_of(socket, message).await? else {
                continue;
            };
            let awaited = matches!(
                (awaiting, &response),
                (Awaiting::Created, BacktestResponse::SessionCreated { .. })
                    | (Awaiting::Attached, BacktestResponse::SessionAttached { .. })
                    | (Awaiting::Resumed, BacktestResponse::Success)
                    | (
                        Awaiting::ParallelAttached,
                        BacktestResponse::ParallelSessionAttachedV2 { .. }
                    )
            );
            if awaited {
                return Ok((seq, response));
            }
            // An unsequenced error answers the handshake request; a
            // sequenced one is replayed history and goes to the consumer.
            match (awaiting, seq, response) {
                (Awaiting::Created, _, BacktestResponse::Error(error))
                | (_, None, BacktestResponse::Error(error)) => {
                    return Err(handshake_error(awaiting, error));
                }
                (_, seq, response) => self.forward(seq, response).await?,
            }
        }
    }

    /// Collect the streamed `sessionCreated` until `sessionsCreatedV2`,
    /// forwarding sub-session events that arrive in between.
    async fn await_parallel_created(&mut self, socket: &mut Socket) -> Result<(), ConnEnd> {
        let timeout = self.setup.options.handshake_timeout;
        let mut created: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
        loop {
            let message = tokio::time::timeout(timeout, self.reader.next(socket))
                .await
                .map_err(|_| ConnEnd::Lost(format!("no create response within {timeout:?}")))?
                .map_err(ReadError::into_end)?;
            let Some((seq, response)) = self.response_of(socket, message).await? else {
                continue;
            };
            match response {
                BacktestResponse::SessionCreated {
                    session_id,
                    rpc_endpoint,
                    task_id,
                } => {
                    let rpc_endpoint =
                        url::resolve_rpc_endpoint(&self.setup.http_base, &rpc_endpoint)
                            .map_err(|e| ConnEnd::Fatal(format!("bad rpc_endpoint: {e}")))?;
                    created.insert(session_id, (rpc_endpoint, task_id));
                }
                BacktestResponse::SessionsCreatedV2 {
                    control_session_id,
                    session_ids,
                    task_ids,
                    start_slots,
                    end_slots,
                } => {
                    let sessions = parallel_sessions(
                        &mut created,
                        session_ids,
                        task_ids,
                        start_slots,
                        end_slots,
                    )?;
                    return self.report(ControlReportKind::ParallelReady {
                        control_session_id,
                        sessions,
                    });
                }
                BacktestResponse::SessionsCreated { .. } => {
                    return Err(ConnEnd::Fatal(
                        "the server answered sessionsCreated without ranges: it is too old for parallel runs"
                            .into(),
                    ));
                }
                BacktestResponse::Error(error) => {
                    return Err(ConnEnd::Fatal(format!("create: {error}")));
                }
                response => self.forward(seq, response).await?,
            }
        }
    }

    /// Turn a message into a response; `None` for pings and garbage.
    async fn response_of(
        &mut self,
        socket: &mut Socket,
        message: Inbound,
    ) -> Result<Option<(Option<u64>, BacktestResponse)>, ConnEnd> {
        self.last_inbound = Instant::now();
        let bytes = match message {
            Inbound::Text(bytes) | Inbound::Binary(bytes) => bytes,
            Inbound::Ping(payload) => {
                let _ = socket.send(Message::Pong(payload)).await;
                return Ok(None);
            }
            Inbound::Pong => return Ok(None),
            Inbound::Close(code, reason) => return Err(closed_by_server(code, &reason)),
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            self.report(ControlReportKind::Garbage("non-UTF-8 frame".into()))?;
            return Ok(None);
        };
        Ok(match parse_control(text) {
            ControlFrame::Sequenced { seq, response } => Some((Some(seq), response)),
            ControlFrame::Plain(response) => Some((None, response)),
            ControlFrame::Garbage(reason) => {
                self.report(ControlReportKind::Garbage(reason))?;
                None
            }
        })
    }

    /// Hand a response to the supervisor once credit allows.
    async fn forward(&self, seq: Option<u64>, response: BacktestResponse) -> Result<(), ConnEnd> {
        let credit = self
            .setup
            .credits
            .acquire()
            .await
            .ok_or(ConnEnd::Orphaned)?;
        self.report(ControlReportKind::Frame {
            seq,
            response,
            credit: Some(credit),
        })
    }

    async fn serve(
        &mut self,
        socket: &mut Socket,
        commands: &mut mpsc::Receiver<Command>,
    ) -> ConnEnd {
        let end = self.serve_until_end(socket, commands).await;
        if end == ConnEnd::Orphaned {
            // Nobody will drive the session any more (every address of the
            // supervisor was dropped): close it so the server reaps it now.
            self.graceful_close(socket).await;
        }
        end
    }

    async fn serve_until_end(
        &mut self,
        socket: &mut Socket,
        commands: &mut mpsc::Receiver<Command>,
    ) -> ConnEnd {
        let options = self.setup.options.clone();
        let mut ping = tokio::time::interval(options.keepalive_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        self.last_inbound = Instant::now();
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(Command::Send(request, done)) => {
                        let result = self.send(socket, &request).await;
                        let lost = result.as_ref().err().cloned();
                        let _ = done.send(result.map_err(|e| match e {
                            ConnEnd::Lost(reason) | ConnEnd::Fatal(reason) => reason,
                            other => format!("{other:?}"),
                        }));
                        if let Some(end) = lost {
                            return end;
                        }
                    }
                    Some(Command::Close) => {
                        self.graceful_close(socket).await;
                        return ConnEnd::Closed;
                    }
                    None => return ConnEnd::Orphaned,
                },
                message = self.reader.next(socket) => {
                    let message = match message {
                        Ok(message) => message,
                        Err(e) => return e.into_end(),
                    };
                    let (seq, response) = match self.response_of(socket, message).await {
                        Ok(Some(pair)) => pair,
                        Ok(None) => continue,
                        Err(end) => return end,
                    };
                    if let Err(end) = self.forward(seq, response).await {
                        return end;
                    }
                    // Waiting for credit is not silence from the server.
                    self.last_inbound = Instant::now();
                }
                _ = ping.tick() => {
                    if self.last_inbound.elapsed() >= options.keepalive_dead_after {
                        return ConnEnd::Lost(format!(
                            "no frame from the server for {:?}",
                            options.keepalive_dead_after
                        ));
                    }
                    if socket.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                        return ConnEnd::Lost("keepalive ping failed".into());
                    }
                }
            }
        }
    }

    /// `closeBacktestSession` then a close frame, together within the
    /// close timeout, so the server reaps the runtime at once.
    async fn graceful_close(&mut self, socket: &mut Socket) {
        let timeout = self.setup.options.close_timeout;
        let closing = async {
            if self
                .send(socket, &BacktestRequest::CloseBacktestSession)
                .await
                .is_err()
            {
                return;
            }
            // Read until the server acknowledges (`success`), so the request
            // is not lost to a reset when the socket is dropped with unread
            // frames; responses still in flight before it are dropped (the
            // session is ending).
            loop {
                match self.reader.next(socket).await {
                    Ok(Inbound::Text(bytes) | Inbound::Binary(bytes)) => {
                        let acknowledged = std::str::from_utf8(&bytes).is_ok_and(|text| {
                            matches!(
                                parse_control(text),
                                ControlFrame::Plain(BacktestResponse::Success)
                                    | ControlFrame::Sequenced {
                                        response: BacktestResponse::Success,
                                        ..
                                    }
                            )
                        });
                        if acknowledged {
                            break;
                        }
                    }
                    Ok(Inbound::Ping(payload)) => {
                        let _ = socket.send(Message::Pong(payload)).await;
                    }
                    Ok(Inbound::Pong) => {}
                    Ok(Inbound::Close(..)) | Err(_) => return,
                }
            }
            ws::close(socket, timeout).await;
            // Wait for the close echo (or the end), then drop.
            while let Ok(message) = self.reader.next(socket).await {
                if matches!(message, Inbound::Close(..)) {
                    break;
                }
            }
        };
        if tokio::time::timeout(timeout, closing).await.is_err() {
            warn!("graceful close did not finish within {timeout:?}");
        }
        debug!("control connection closed");
    }
}

fn handshake_error(awaiting: Awaiting, error: BacktestError) -> ConnEnd {
    let step = match awaiting {
        Awaiting::Created => "create",
        Awaiting::Attached | Awaiting::ParallelAttached => "attach",
        Awaiting::Resumed => "resume",
    };
    if crate::frames::is_attach_transient(&error) && awaiting != Awaiting::Created {
        ConnEnd::Lost(format!("{step}: {error}"))
    } else {
        ConnEnd::Fatal(format!("{step}: {error}"))
    }
}

fn closed_by_server(code: Option<u16>, reason: &str) -> ConnEnd {
    match code {
        Some(1012) => ConnEnd::Lost(format!("server restarting (close 1012) {reason}")),
        Some(code) => ConnEnd::Lost(format!("closed by the server (code {code}) {reason}")),
        None => ConnEnd::Lost("closed by the server".into()),
    }
}

/// Bind each announced sub-session to its range and data endpoint. Ranges
/// missing or of another length mean a server too old for parallel runs.
fn parallel_sessions(
    created: &mut BTreeMap<String, (String, Option<String>)>,
    session_ids: Vec<String>,
    task_ids: Vec<Option<String>>,
    start_slots: Vec<u64>,
    end_slots: Vec<u64>,
) -> Result<Vec<SubSessionSpec>, ConnEnd> {
    let n = session_ids.len();
    if start_slots.len() != n || end_slots.len() != n {
        return Err(ConnEnd::Fatal(format!(
            "sessionsCreatedV2 lists {n} sub-sessions but {} start and {} end slots: the server is too old for parallel runs",
            start_slots.len(),
            end_slots.len()
        )));
    }
    let mut task_ids = task_ids.into_iter();
    session_ids
        .into_iter()
        .zip(start_slots.into_iter().zip(end_slots))
        .map(|(session_id, range)| {
            let announced_task = task_ids.next().flatten();
            let (rpc_endpoint, task_id) = created.remove(&session_id).ok_or_else(|| {
                ConnEnd::Fatal(format!(
                    "sub-session {session_id} was never announced with sessionCreated"
                ))
            })?;
            Ok(SubSessionSpec {
                info: SessionInfo {
                    session_id,
                    rpc_endpoint,
                    task_id: task_id.or(announced_task),
                },
                range,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announced() -> BTreeMap<String, (String, Option<String>)> {
        [("a", "http://h/rpc/a"), ("b", "http://h/rpc/b")]
            .into_iter()
            .map(|(id, url)| (id.to_string(), (url.to_string(), None)))
            .collect()
    }

    #[test]
    fn sub_sessions_bind_to_the_servers_ranges() {
        let specs = parallel_sessions(
            &mut announced(),
            vec!["a".into(), "b".into()],
            vec![Some("ta".into())],
            vec![100, 201],
            vec![200, 300],
        )
        .unwrap();
        assert_eq!(specs[0].range, (100, 200));
        assert_eq!(specs[0].info.task_id.as_deref(), Some("ta"));
        assert_eq!(specs[1].range, (201, 300));
        assert_eq!(specs[1].info.rpc_endpoint, "http://h/rpc/b");
    }

    #[test]
    fn missing_or_mismatched_ranges_are_fatal() {
        for (starts, ends) in [
            (vec![], vec![]),
            (vec![1], vec![2, 3]),
            (vec![1, 2], vec![3]),
        ] {
            let result = parallel_sessions(
                &mut announced(),
                vec!["a".into(), "b".into()],
                vec![],
                starts,
                ends,
            );
            match result {
                Err(ConnEnd::Fatal(reason)) => assert!(reason.contains("too old"), "{reason}"),
                other => panic!("expected fatal, got {other:?}"),
            }
        }
        let result =
            parallel_sessions(&mut announced(), vec!["z".into()], vec![], vec![1], vec![2]);
        assert!(
            matches!(result, Err(ConnEnd::Fatal(reason)) if reason.contains("never announced"))
        );
    }
}

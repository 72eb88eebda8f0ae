//! The data plane: each session's `rpc_endpoint` (`/rpc/<session_id>`), a
//! WebSocket that speaks Solana-style JSON-RPC pub/sub.
//!
//! One task per connection. Subscriptions follow the session's progress:
//! a subscription made late gets the history first (from `replayFromSlot`
//! or the session's start), then live slots as they execute. The task
//! always streams the subscription that is furthest behind, so the
//! connection's notifications are in slot order across its subscriptions
//! (a client that keeps one cursor per connection resumes losslessly).
//! Writes wait for the socket, so a slow reader slows only itself.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, ProtocolError};
use serde_json::{Value, json};
use simulator_api::{
    subscribe_config::{Compression, SubscribeConfig},
    ws_compression::{WS_COMPRESSION_LEVEL, WsStreamCompressor},
};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{
    rpc_request::{RpcRequest, SubscriptionKind as Kind, parse_rpc_request, rpc_error},
    session::{Progress, Session},
    state::ServerState,
    wire::{Cut, Plane, Wire},
};

/// `GET /rpc/{session_id}`: upgrade and serve the session's data plane.
pub async fn data_ws(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<Arc<ServerState>>,
) -> actix_web::Result<HttpResponse> {
    let state = state.get_ref().clone();
    let Some(session) = state.data_session(&path) else {
        return Ok(HttpResponse::NotFound().body("unknown session"));
    };
    if state.config.faults.refuse_data_start_slot == Some(session.spec.start_slot) {
        tracing::info!(session_id = %session.id, plane = "data", fault = "refuse-data", "fault injected");
        state.fault_fired("refuse-data");
        return Ok(
            HttpResponse::ServiceUnavailable().body("injected fault: refuse-data-start-slot")
        );
    }
    let (response, ws, stream) = actix_ws::handle(&req, body)?;
    let max = state.config.limits.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let mut wire = Wire::new(ws, state.clone(), Plane::Data);
    wire.bind(&session.id, session.faults.next_connection());
    let conn = DataConnection {
        progress: session.progress(),
        session,
        state,
        wire,
        subs: Vec::new(),
        compressor: None,
        notifications: 0,
        stalled: false,
        paused_until: None,
    };
    actix_rt::spawn(conn.run(stream));
    Ok(response)
}

impl Kind {
    fn notification_method(self) -> &'static str {
        match self {
            Kind::Transaction => "transactionNotification",
            Kind::AccountDiff => "accountDiffNotification",
        }
    }

    fn drop_fault(self) -> &'static str {
        match self {
            Kind::Transaction => "data-drop:transaction",
            Kind::AccountDiff => "data-drop:accountDiff",
        }
    }

    fn stall_fault(self) -> &'static str {
        match self {
            Kind::Transaction => "data-stall:transaction",
            Kind::AccountDiff => "data-stall:accountDiff",
        }
    }

    fn pause_fault(self) -> &'static str {
        match self {
            Kind::Transaction => "data-pause:transaction",
            Kind::AccountDiff => "data-pause:accountDiff",
        }
    }
}

#[derive(Debug)]
struct Subscription {
    id: u64,
    kind: Kind,
    program: String,
    next_slot: u64,
    compress: bool,
    complete_sent: bool,
}

/// What the connection should do next.
enum Work {
    Slot(usize),
    Complete(usize),
}

struct DataConnection {
    state: Arc<ServerState>,
    session: Arc<Session>,
    progress: watch::Receiver<Progress>,
    wire: Wire,
    subs: Vec<Subscription>,
    /// One zstd stream per connection, made on the first compressed frame.
    compressor: Option<WsStreamCompressor>,
    /// Notifications sent on this connection.
    notifications: u64,
    /// A stall fault fired: send nothing more, keep answering pings.
    stalled: bool,
    /// A pause fault fired: send nothing until then, keep answering pings.
    paused_until: Option<tokio::time::Instant>,
}

impl DataConnection {
    async fn run(mut self, mut stream: AggregatedMessageStream) {
        loop {
            let work = self.next_work();
            let result = tokio::select! {
                biased;
                msg = stream.recv() => match msg {
                    None => Err(Cut::Closed),
                    Some(Ok(AggregatedMessage::Text(text))) => self.request(&text).await,
                    Some(Ok(AggregatedMessage::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                        Ok(text) => self.request(text).await,
                        Err(_) => self.send_json(rpc_error(Value::Null, -32700, "Parse error: binary frame is not UTF-8")).await,
                    },
                    Some(Ok(AggregatedMessage::Ping(payload))) => self.wire.pong(&payload).await,
                    Some(Ok(AggregatedMessage::Pong(_))) => Ok(()),
                    Some(Ok(AggregatedMessage::Close(_))) => {
                        self.wire.close(CloseCode::Normal, "bye").await;
                        return;
                    }
                    Some(Err(ProtocolError::Overflow)) => {
                        warn!(session_id = %self.session.id, "data frame over the size limit");
                        self.wire.close(CloseCode::Size, "frame too large").await;
                        return;
                    }
                    Some(Err(e)) => {
                        debug!(session_id = %self.session.id, error = %e, "data protocol error");
                        Err(Cut::Closed)
                    }
                },
                _ = std::future::ready(()), if work.is_some() => match work {
                    Some(Work::Slot(i)) => self.stream_slot(i).await,
                    Some(Work::Complete(i)) => self.complete(i).await,
                    None => Ok(()),
                },
                changed = self.progress.changed() => match changed {
                    Ok(()) => Ok(()),
                    Err(_) => Err(Cut::Closed),
                },
                _ = tokio::time::sleep_until(self.paused_until.unwrap_or_else(tokio::time::Instant::now)),
                    if self.paused_until.is_some() => {
                    self.paused_until = None;
                    Ok(())
                }
            };
            if result.is_err() {
                // Dropped by a fault or gone: either way the socket ends
                // here without a close frame.
                return;
            }
        }
    }

    /// The subscription furthest behind with an executed slot to send, or
    /// one that has sent everything of a finished session.
    fn next_work(&mut self) -> Option<Work> {
        if self.stalled || self.paused_until.is_some() {
            return None;
        }
        let progress = self.progress.borrow_and_update().clone();
        let executed = progress.executed_through;
        let behind = self
            .subs
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.complete_sent && executed.is_some_and(|e| s.next_slot <= e))
            .min_by_key(|(_, s)| s.next_slot)
            .map(|(i, _)| Work::Slot(i));
        if behind.is_some() || progress.finish.is_none() {
            return behind;
        }
        self.subs
            .iter()
            .position(|s| !s.complete_sent)
            .map(Work::Complete)
    }

    async fn stream_slot(&mut self, index: usize) -> Result<(), Cut> {
        let (slot, kind, sub_id, compress) = {
            let sub = &self.subs[index];
            (sub.next_slot, sub.kind, sub.id, sub.compress)
        };
        if let Some((after, pause)) = self.state.config.faults.data_pause_after
            && self.notifications >= after
            && self.session.faults.claim(kind.pause_fault())
        {
            // At a slot boundary: the slot is streamed once the pause ends.
            self.wire.fault(kind.pause_fault());
            self.paused_until = Some(tokio::time::Instant::now() + pause);
            return Ok(());
        }
        if let Some(data) = self.state.ledger.slot(slot) {
            let program = self.subs[index].program.clone();
            for tx in data.transactions.iter().filter(|tx| tx.mentions(&program)) {
                match kind {
                    Kind::Transaction => {
                        self.notify(kind, sub_id, compress, &tx.json).await?;
                    }
                    Kind::AccountDiff => {
                        for diff in &tx.diffs {
                            self.notify(kind, sub_id, compress, &diff.result_json)
                                .await?;
                        }
                    }
                }
                if self.stalled {
                    return Ok(());
                }
            }
        }
        self.subs[index].next_slot = slot + 1;
        Ok(())
    }

    /// Send one notification, unless a data fault fires first.
    async fn notify(
        &mut self,
        kind: Kind,
        sub_id: u64,
        compress: bool,
        result: &str,
    ) -> Result<(), Cut> {
        if self.stalled {
            return Ok(());
        }
        let faults = &self.state.config.faults;
        if faults
            .data_drop_after
            .is_some_and(|n| self.notifications >= n)
            && self.session.faults.claim(kind.drop_fault())
        {
            self.wire.fault(kind.drop_fault());
            return Err(Cut::Dropped);
        }
        if faults
            .data_stall_after
            .is_some_and(|n| self.notifications >= n)
            && self.session.faults.claim(kind.stall_fault())
        {
            self.wire.fault(kind.stall_fault());
            self.stalled = true;
            return Ok(());
        }
        let frame = format!(
            r#"{{"jsonrpc":"2.0","method":"{}","params":{{"subscription":{sub_id},"result":{result}}}}}"#,
            kind.notification_method()
        );
        self.notifications += 1;
        if compress {
            let compressor = match &mut self.compressor {
                Some(c) => c,
                None => self.compressor.insert(
                    WsStreamCompressor::new(WS_COMPRESSION_LEVEL).map_err(|_| Cut::Closed)?,
                ),
            };
            let bytes = compressor
                .compress(frame.as_bytes())
                .map_err(|_| Cut::Closed)?;
            self.wire.binary(bytes).await
        } else {
            self.wire.text(frame).await
        }
    }

    async fn complete(&mut self, index: usize) -> Result<(), Cut> {
        let sub = &mut self.subs[index];
        sub.complete_sent = true;
        let frame = json!({
            "jsonrpc": "2.0",
            "method": "subscriptionComplete",
            "params": {"subscription": sub.id},
        });
        self.send_json(frame).await
    }

    async fn send_json(&mut self, value: Value) -> Result<(), Cut> {
        self.wire.text(value.to_string()).await
    }

    async fn request(&mut self, text: &str) -> Result<(), Cut> {
        let reply = self.handle(parse_rpc_request(text));
        self.send_json(reply).await
    }

    /// Answer one parsed JSON-RPC request.
    fn handle(&mut self, request: RpcRequest) -> Value {
        match request {
            RpcRequest::Subscribe {
                id,
                kind,
                program,
                config,
            } => self.subscribe(id, kind, program, &config),
            RpcRequest::Unsubscribe { id, subscription } => {
                let before = self.subs.len();
                self.subs.retain(|s| Some(s.id) != subscription);
                json!({"jsonrpc": "2.0", "id": id, "result": self.subs.len() < before})
            }
            RpcRequest::Error { id, code, message } => rpc_error(id, code, &message),
        }
    }

    fn subscribe(
        &mut self,
        id: Value,
        kind: Kind,
        program: String,
        options: &SubscribeConfig,
    ) -> Value {
        if self.subs.len() >= self.state.config.limits.max_subscriptions_per_connection {
            return rpc_error(id, -32000, "subscription limit reached for this connection");
        }
        let start = self.session.spec.start_slot;
        let next_slot = options
            .replay_from_slot
            .map_or(start, |slot| u64::try_from(slot).unwrap_or(0).max(start));
        let sub_id = self.state.new_connection();
        self.subs.push(Subscription {
            id: sub_id,
            kind,
            program,
            next_slot,
            compress: options.compression == Some(Compression::Zstd),
            complete_sent: false,
        });
        json!({"jsonrpc": "2.0", "id": id, "result": sub_id})
    }
}

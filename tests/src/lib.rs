//! Shared helpers for the end-to-end tests: a raw WebSocket peer (to send
//! and expect exact frames), servers on free loopback ports, and bounded
//! waits.

pub mod soak;

use std::time::Duration;

use awc::ws::{Codec, Frame, Message};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;

pub use backtest_server::{FaultPlan, LedgerConfig, RunningServer, ServerConfig};

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// A small data set so tests run fast: slots 1000..=1999, 2 programs,
/// 4 transactions a slot in batches of 2, 100-slot bundles.
pub fn small_config() -> ServerConfig {
    ServerConfig {
        ledger: LedgerConfig {
            seed: 7,
            programs: LedgerConfig::default_programs()[..2].to_vec(),
            txs_per_slot: 4,
            batch_size: 2,
            first_slot: 1000,
            last_slot: 1999,
        },
        bundle_slots: 100,
        workers: 1,
        ..ServerConfig::default()
    }
}

/// Start a server on a free loopback port.
pub fn start(config: ServerConfig) -> RunningServer {
    RunningServer::spawn(config, "127.0.0.1:0".parse().expect("loopback address"))
        .expect("server starts")
}

/// One frame as the tests see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Text(String),
    Binary(Vec<u8>),
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Ended,
}

/// A raw WebSocket client driven frame by frame (awc; needs an actix
/// runtime: use `#[actix_rt::test]`).
pub struct RawWs {
    framed: actix_codec::Framed<awc::BoxedSocket, Codec>,
}

impl RawWs {
    /// Connect to `url`, with `X-API-Key: key` when given.
    pub async fn connect(url: &str, key: Option<&str>) -> Result<Self, String> {
        let client = awc::Client::builder().timeout(WAIT).finish();
        let mut request = client.ws(url).max_frame_size(64 << 20);
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let (_, framed) = tokio::time::timeout(WAIT, request.connect())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| match e {
                awc::error::WsClientError::InvalidResponseStatus(status) => {
                    format!("HTTP {}", status.as_u16())
                }
                other => other.to_string(),
            })?;
        Ok(Self { framed })
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        tokio::time::timeout(WAIT, self.framed.send(Message::Text(text.into())))
            .await
            .expect("the send completes within the wait")
            .expect("send");
    }

    /// Send a text frame; `false` when the connection is already gone (a
    /// server-side cut may race a request).
    pub async fn try_send_json(&mut self, value: &Value) -> bool {
        tokio::time::timeout(
            WAIT,
            self.framed.send(Message::Text(value.to_string().into())),
        )
        .await
        .expect("the send completes within the wait")
        .is_ok()
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
    }

    /// Send a ping with `payload` and read until its pong; returns the data
    /// frames that arrived before the pong, in order. Proves the peer still
    /// reads and answers on this socket.
    pub async fn ping_pong(&mut self, payload: &[u8]) -> Vec<Inbound> {
        tokio::time::timeout(
            WAIT,
            self.framed.send(Message::Ping(payload.to_vec().into())),
        )
        .await
        .expect("the ping is sent within the wait")
        .expect("send ping");
        let mut before = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .expect("a pong within the wait");
            match frame {
                Some(Ok(Frame::Pong(p))) if p.as_ref() == payload => return before,
                Some(Ok(Frame::Pong(_))) | Some(Ok(Frame::Continuation(_))) => {}
                Some(Ok(Frame::Ping(p))) => {
                    let _ = self.framed.send(Message::Pong(p)).await;
                }
                Some(Ok(Frame::Text(bytes))) => before.push(Inbound::Text(
                    String::from_utf8(bytes.to_vec()).expect("utf-8 text"),
                )),
                Some(Ok(Frame::Binary(bytes))) => before.push(Inbound::Binary(bytes.to_vec())),
                other => panic!("the connection ended before the pong: {other:?}"),
            }
        }
    }

    /// The next data or close frame (pings answered, pongs skipped).
    pub async fn next(&mut self) -> Inbound {
        self.next_within(WAIT)
            .await
            .expect("a frame within the wait")
    }

    /// Like [`RawWs::next`], `None` when nothing arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Inbound> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .ok()?;
            return Some(match frame {
                None | Some(Err(_)) => Inbound::Ended,
                Some(Ok(Frame::Text(bytes))) => {
                    Inbound::Text(String::from_utf8(bytes.to_vec()).expect("utf-8 text"))
                }
                Some(Ok(Frame::Binary(bytes))) => Inbound::Binary(bytes.to_vec()),
                Some(Ok(Frame::Close(reason))) => Inbound::Close(reason.map(|r| r.code.into())),
                Some(Ok(Frame::Ping(payload))) => {
                    let _ = self.framed.send(Message::Pong(payload)).await;
                    continue;
                }
                Some(Ok(Frame::Pong(_))) | Some(Ok(Frame::Continuation(_))) => continue,
            });
        }
    }

    /// The next text frame parsed as JSON; panics on anything else.
    pub async fn next_json(&mut self) -> Value {
        match self.next().await {
            Inbound::Text(text) => {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
            }
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Read JSON frames until one satisfies `pred`; returns every frame read.
    pub async fn read_until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let value = self.next_json().await;
            let done = pred(&value);
            seen.push(value);
            if done {
                return seen;
            }
        }
    }

    /// Send a close frame and wait (bounded) for the peer to end.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.framed.send(Message::Close(None))).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(frame)) = self.framed.next().await {
                if matches!(frame, Frame::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// The `method` of a response, looking through a `seqId` wrapper.
pub fn method(value: &Value) -> &str {
    value["method"].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Control-plane shorthands.

/// A `createBacktestSession` request for `start..=end` with extra params
/// (`{"disconnectTimeoutSecs": 30}`, `{"parallel": true}`, ...).
pub fn create_request(start: u64, end: u64, extra: Value) -> Value {
    let mut params = serde_json::json!({"startSlot": start, "endSlot": end});
    if let (Some(params), Some(extra)) = (params.as_object_mut(), extra.as_object()) {
        params.extend(extra.clone());
    }
    serde_json::json!({"method": "createBacktestSession", "params": params})
}

/// `continue {advanceCount: n}`.
pub fn continue_request(n: u64) -> Value {
    serde_json::json!({"method": "continue", "params": {"advanceCount": n}})
}

/// Connect a control socket, create a single session and read through the
/// first `readyForContinue`. Returns the socket, the session id and the
/// frames read.
pub async fn create_session(
    server: &RunningServer,
    start: u64,
    end: u64,
    extra: Value,
) -> (RawWs, String, Vec<Value>) {
    let mut ws = RawWs::connect(&server.control_url(), None)
        .await
        .expect("control connects");
    ws.send_json(&create_request(start, end, extra)).await;
    let frames = ws.read_until(|v| method(v) == "readyForContinue").await;
    let id = frames
        .iter()
        .find(|v| method(v) == "sessionCreated")
        .and_then(|v| v["params"]["session_id"].as_str())
        .expect("sessionCreated before readyForContinue")
        .to_string();
    (ws, id, frames)
}

/// Continue `advance` slots at a time until `completed`; returns the slots
/// announced by `slotNotification`, in order.
pub async fn run_to_completion(ws: &mut RawWs, advance: u64) -> Vec<u64> {
    let mut slots = Vec::new();
    loop {
        ws.send_json(&continue_request(advance)).await;
        let frames = ws
            .read_until(|v| matches!(method(v), "readyForContinue" | "completed"))
            .await;
        slots.extend(
            frames
                .iter()
                .filter(|v| method(v) == "slotNotification")
                .map(|v| v["params"].as_u64().expect("slot")),
        );
        if frames.iter().any(|v| method(v) == "completed") {
            return slots;
        }
    }
}

// ---------------------------------------------------------------------------
// Data plane: a JSON-RPC pub/sub peer that decodes zstd frames.

/// One data-plane frame, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum DataFrame {
    /// `transactionNotification` / `accountDiffNotification`.
    Notification {
        subscription: u64,
        method: String,
        result: Value,
        /// Arrived as a zstd Binary frame.
        compressed: bool,
    },
    /// `subscriptionComplete`.
    Complete {
        subscription: u64,
    },
    /// A JSON-RPC response (has an `id`): an ack or an error.
    Reply(Value),
    /// A text frame that is not JSON (the `garbage-every` fault).
    Garbage(String),
    Close(Option<u16>),
    Ended,
}

impl DataFrame {
    /// The slot a notification belongs to.
    pub fn slot(&self) -> Option<u64> {
        match self {
            DataFrame::Notification { result, .. } => notification_slot(result),
            _ => None,
        }
    }
}

/// The slot of a notification's `result` (`slot` of a transaction,
/// `context.slot` of a diff).
pub fn notification_slot(result: &Value) -> Option<u64> {
    result["slot"]
        .as_u64()
        .or_else(|| result["context"]["slot"].as_u64())
}

/// A data-plane socket with the one zstd stream decoder its connection
/// needs (frames must be decoded in arrival order).
pub struct DataWs {
    pub ws: RawWs,
    decoder: simulator_api::ws_compression::WsStreamDecompressor,
    next_id: u64,
}

impl DataWs {
    /// Connect to `/rpc/<session_id>`.
    pub async fn connect(server: &RunningServer, session_id: &str) -> Result<Self, String> {
        let url = format!("ws://{}/rpc/{session_id}", server.addr());
        Ok(Self {
            ws: RawWs::connect(&url, None).await?,
            decoder: simulator_api::ws_compression::WsStreamDecompressor::new()
                .expect("zstd decoder"),
            next_id: 1,
        })
    }

    /// The next frame, decoded.
    pub async fn next(&mut self) -> DataFrame {
        let frame = self.ws.next().await;
        self.decode(frame)
    }

    /// Like [`DataWs::next`], `None` when nothing arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<DataFrame> {
        let frame = self.ws.next_within(wait).await?;
        Some(self.decode(frame))
    }

    /// Decode a frame read from this connection (in order).
    pub fn decode(&mut self, frame: Inbound) -> DataFrame {
        let (text, compressed) = match frame {
            Inbound::Text(text) => (text, false),
            Inbound::Binary(bytes) => {
                let raw = self.decoder.decompress(&bytes).expect("a zstd frame");
                (String::from_utf8(raw).expect("utf-8 JSON"), true)
            }
            Inbound::Close(code) => return DataFrame::Close(code),
            Inbound::Ended => return DataFrame::Ended,
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            assert!(!compressed, "a compressed frame is not JSON: {text}");
            return DataFrame::Garbage(text);
        };
        match value["method"].as_str() {
            Some("subscriptionComplete") => {
                assert!(!compressed, "subscriptionComplete must be Text");
                DataFrame::Complete {
                    subscription: value["params"]["subscription"].as_u64().expect("id"),
                }
            }
            Some(m @ ("transactionNotification" | "accountDiffNotification")) => {
                DataFrame::Notification {
                    subscription: value["params"]["subscription"].as_u64().expect("id"),
                    method: m.to_string(),
                    result: value["params"]["result"].clone(),
                    compressed,
                }
            }
            _ => {
                assert!(!compressed, "replies must be Text: {value}");
                assert!(value.get("id").is_some(), "unexpected frame: {value}");
                DataFrame::Reply(value)
            }
        }
    }

    /// Send a JSON-RPC request with the next id; returns the id.
    pub async fn request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send_json(&serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// Send a subscribe request and read until its reply; returns the reply
    /// and every frame that arrived before it (notifications of earlier
    /// subscriptions streaming meanwhile), in order.
    pub async fn subscribe(&mut self, method: &str, params: Value) -> (Value, Vec<DataFrame>) {
        let id = self.request(method, params).await;
        let mut before = Vec::new();
        loop {
            match self.next().await {
                DataFrame::Reply(reply) if reply["id"] == id => return (reply, before),
                DataFrame::Ended | DataFrame::Close(_) => {
                    panic!("the connection ended before the reply: {before:?}")
                }
                other => before.push(other),
            }
        }
    }

    /// `transactionSubscribe` for `program` with `options` merged into the
    /// config; returns the subscription id and the frames read before the
    /// ack.
    pub async fn subscribe_transactions(
        &mut self,
        program: &str,
        options: Value,
    ) -> (u64, Vec<DataFrame>) {
        let mut config = serde_json::json!({"commitment": "confirmed"});
        merge(&mut config, options);
        let (reply, before) = self
            .subscribe(
                "transactionSubscribe",
                serde_json::json!([{"mentions": [program]}, config]),
            )
            .await;
        (reply["result"].as_u64().expect("an ack"), before)
    }

    /// `accountDiffSubscribe` for `program`, like
    /// [`DataWs::subscribe_transactions`].
    pub async fn subscribe_diffs(
        &mut self,
        program: &str,
        options: Value,
    ) -> (u64, Vec<DataFrame>) {
        let mut config = serde_json::json!({"address_type": "program"});
        merge(&mut config, options);
        let (reply, before) = self
            .subscribe("accountDiffSubscribe", serde_json::json!([program, config]))
            .await;
        (reply["result"].as_u64().expect("an ack"), before)
    }

    /// Read until every subscription in `subs` has completed; returns every
    /// frame read (completions included), in order.
    pub async fn read_until_complete(&mut self, subs: &[u64]) -> Vec<DataFrame> {
        let mut open: std::collections::BTreeSet<u64> = subs.iter().copied().collect();
        let mut frames = Vec::new();
        while !open.is_empty() {
            let frame = self.next().await;
            match &frame {
                DataFrame::Complete { subscription } => {
                    assert!(open.remove(subscription), "unexpected completion {frame:?}");
                }
                DataFrame::Ended | DataFrame::Close(_) => {
                    panic!("the connection ended before completion: {frame:?}")
                }
                _ => {}
            }
            frames.push(frame);
        }
        frames
    }
}

fn merge(config: &mut Value, options: Value) {
    if let (Some(config), Value::Object(options)) = (config.as_object_mut(), options) {
        config.extend(options);
    }
}

/// Notifications of `subscription` among `frames`, in order.
pub fn results_of(frames: &[DataFrame], subscription: u64) -> Vec<Value> {
    frames
        .iter()
        .filter_map(|f| match f {
            DataFrame::Notification {
                subscription: s,
                result,
                ..
            } if *s == subscription => Some(result.clone()),
            _ => None,
        })
        .collect()
}

/// What the ledger says a transaction subscription to `program` streams
/// over `slots`: the `result` of each notification, in ledger order.
pub fn expected_transactions(
    ledger: &backtest_server::Ledger,
    program: &str,
    slots: std::ops::RangeInclusive<u64>,
) -> Vec<Value> {
    ledger_items(ledger, program, slots, |tx| vec![&*tx.json])
}

/// What the ledger says an account-diff subscription to `program` streams
/// over `slots`, in ledger order.
pub fn expected_diffs(
    ledger: &backtest_server::Ledger,
    program: &str,
    slots: std::ops::RangeInclusive<u64>,
) -> Vec<Value> {
    ledger_items(ledger, program, slots, |tx| {
        tx.diffs.iter().map(|d| &*d.result_json).collect()
    })
}

/// The JSON texts `items` picks from each of `program`'s transactions over
/// `slots`, parsed, in ledger order.
fn ledger_items(
    ledger: &backtest_server::Ledger,
    program: &str,
    slots: std::ops::RangeInclusive<u64>,
    items: impl Fn(&backtest_server::LedgerTransaction) -> Vec<&str>,
) -> Vec<Value> {
    let mut out = Vec::new();
    for data in slots.filter_map(|slot| ledger.slot(slot)) {
        for tx in data.transactions.iter().filter(|tx| tx.program == program) {
            out.extend(
                items(tx)
                    .into_iter()
                    .map(|json| serde_json::from_str::<Value>(json).expect("ledger JSON")),
            );
        }
    }
    out
}

/// The signature of a transaction notification's `result`.
pub fn signature_of(result: &Value) -> String {
    result["transaction"]["signatures"][0]
        .as_str()
        .expect("a signature")
        .to_string()
}

/// The comparison key of an account-diff notification's `result`.
pub fn diff_key_of(result: &Value) -> backtest_server::DiffKey {
    backtest_server::DiffKey {
        slot: result["context"]["slot"].as_u64().expect("slot"),
        account: result["account"].as_str().expect("account").to_string(),
        signature: result["signature"].as_str().expect("signature").to_string(),
        tx_index: result["txIndex"].as_u64().expect("txIndex") as u32,
    }
}

/// A ledger for `config` (the same data the server generates).
pub fn ledger_of(config: &ServerConfig) -> backtest_server::Ledger {
    backtest_server::Ledger::new(config.ledger.clone()).expect("ledger")
}

/// Poll `cond` (cheap, in-process state) until it holds, bounded by
/// [`WAIT`]. For server-side effects that have no event a test can await.
pub async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

//! Shared helpers for the end-to-end tests: a raw WebSocket peer (to send
//! and expect exact frames), servers on free loopback ports, and bounded
//! waits.

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
        self.framed
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(value.to_string()).await;
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
        let _ = self.framed.send(Message::Close(None)).await;
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

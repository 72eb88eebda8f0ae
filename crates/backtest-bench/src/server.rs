//! The minimal benchmark server: a control plane just rich enough for a
//! `SessionSupervisor` (create, continue, close) and a data plane that
//! writes notifications as fast as the socket takes them.
//!
//! It runs on its own thread with a single-threaded tokio runtime, on a free
//! loopback port. It is deliberately not the reference server: that one
//! renders the ledger slot by slot and paces executions, so it would be the
//! bottleneck. Here a firehose is framed once up front ([`prebuild`]) and
//! written in 256 KiB chunks; longer streams are framed on the fly from the
//! [`Corpus`] (a few string copies per notification).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use simulator_api::ws_compression::{WS_COMPRESSION_LEVEL, WsStreamCompressor};
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

use crate::{
    corpus::{Corpus, SUBSCRIPTION},
    wsframe::{self, BINARY, CLOSE, FrameReader, PING, PONG, TEXT},
};

/// Every wait of the server is bounded by this.
const IO_WAIT: Duration = Duration::from_secs(30);
/// Chunk of a prebuilt stream handed to one `write_all`.
const WRITE_CHUNK: usize = 256 << 10;

/// How notifications are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Text frames of JSON.
    Text,
    /// Binary frames of one zstd stream per connection.
    Zstd,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Text => "text",
            Codec::Zstd => "zstd",
        }
    }
}

/// What a data connection sends after the subscribe ack.
pub enum DataPlan {
    /// These bytes (frames and the final `subscriptionComplete`), as is.
    Prebuilt(Arc<Vec<u8>>),
    /// Notifications `first..count` of the corpus, from the replay cursor,
    /// framed per connection; the connection is dropped (no close frame)
    /// after `drop_every` notifications, at most `max_drops` times overall.
    Generated {
        corpus: Arc<Corpus>,
        count: u64,
        codec: Codec,
        drop_every: Option<u64>,
        max_drops: usize,
    },
}

/// A drop of a data connection by the server.
#[derive(Debug, Clone, Copy)]
pub struct DropMark {
    pub at: Instant,
    /// Index of the last notification written before the drop.
    pub last_index: u64,
}

struct Shared {
    plan: DataPlan,
    drops: Mutex<Vec<DropMark>>,
}

/// A running benchmark server; stopped and joined on drop.
pub struct BenchServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BenchServer {
    pub fn start(plan: DataPlan) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            plan,
            drops: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime");
                runtime.block_on(serve(listener, thread_shared, stopped));
            })?;
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Control-plane URL for a `SessionSupervisor`.
    pub fn control_url(&self) -> String {
        format!("ws://{}/backtest", self.addr)
    }

    /// Data-plane endpoint, as a `sessionCreated` would give it absolutely.
    pub fn rpc_endpoint(&self) -> String {
        format!("http://{}/rpc/s1", self.addr)
    }

    /// The drops made so far.
    pub fn drops(&self) -> Vec<DropMark> {
        self.shared
            .drops
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        tokio::task::spawn_local(connection(stream, shared.clone()));
                    }
                }
            }
        })
        .await;
}

async fn connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let Ok(path) = wsframe::accept(&mut stream, IO_WAIT).await else {
        return;
    };
    if path.starts_with("/rpc/") {
        data(stream, &shared).await;
    } else {
        control(stream).await;
    }
}

async fn send(stream: &mut TcpStream, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    wsframe::encode(opcode, payload, &mut out);
    stream.write_all(&out).await
}

/// create → sessionCreated + readyForContinue; continue → completed;
/// closeBacktestSession → success; close → close.
async fn control(mut stream: TcpStream) {
    let mut reader = FrameReader::default();
    loop {
        let frame = match tokio::time::timeout(IO_WAIT * 4, reader.next(&mut stream)).await {
            Ok(Ok(Some(frame))) => frame,
            _ => return,
        };
        let replies: Vec<Value> = match frame {
            (TEXT, payload) => {
                let request: Value = serde_json::from_slice(&payload).unwrap_or_default();
                match request["method"].as_str().unwrap_or_default() {
                    "createBacktestSession" => vec![
                        json!({"method": "sessionCreated", "params": {
                            "session_id": "s1", "rpc_endpoint": "/rpc/s1", "task_id": "t1"}}),
                        json!({"method": "readyForContinue"}),
                    ],
                    "continue" | "continueTo" => vec![json!({"method": "completed", "params": {}})],
                    "closeBacktestSession" => vec![json!({"method": "success"})],
                    _ => vec![],
                }
            }
            (PING, payload) => {
                let _ = send(&mut stream, PONG, &payload).await;
                continue;
            }
            (CLOSE, _) => {
                let _ = send(&mut stream, CLOSE, &[]).await;
                return;
            }
            _ => continue,
        };
        for reply in replies {
            if send(&mut stream, TEXT, reply.to_string().as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The subscribe request's id and replay cursor.
fn subscribe_request(payload: &[u8]) -> Option<(u64, Option<u64>)> {
    let request: Value = serde_json::from_slice(payload).ok()?;
    let id = request["id"].as_u64()?;
    let cursor = request["params"][1]["replayFromSlot"].as_u64();
    Some((id, cursor))
}

async fn data(mut stream: TcpStream, shared: &Shared) {
    let mut reader = FrameReader::default();
    let cursor = loop {
        match tokio::time::timeout(IO_WAIT, reader.next(&mut stream)).await {
            Ok(Ok(Some((TEXT, payload)))) => {
                let Some((id, cursor)) = subscribe_request(&payload) else {
                    return;
                };
                let ack = json!({"jsonrpc": "2.0", "id": id, "result": SUBSCRIPTION});
                if send(&mut stream, TEXT, ack.to_string().as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                break cursor;
            }
            Ok(Ok(Some(_))) => continue,
            _ => return,
        }
    };
    let (mut read, mut write) = stream.into_split();
    // Drain the client's frames (pings, close) so its writes never block and
    // a close ends the connection.
    let (closed_tx, closed) = oneshot::channel::<()>();
    let drain = tokio::task::spawn_local(async move {
        let mut reader = reader;
        while let Ok(Some((opcode, _))) = reader.next(&mut read).await {
            if opcode == CLOSE {
                break;
            }
        }
        let _ = closed_tx.send(());
    });
    let outcome = match &shared.plan {
        DataPlan::Prebuilt(bytes) => {
            let mut result = Ok(Outcome::Complete);
            for chunk in bytes.chunks(WRITE_CHUNK) {
                if let Err(e) = write.write_all(chunk).await {
                    result = Err(e);
                    break;
                }
            }
            result
        }
        DataPlan::Generated {
            corpus,
            count,
            codec,
            drop_every,
            max_drops,
        } => {
            let first = cursor.map_or(0, |slot| corpus.first_index_at(slot));
            let may_drop = drop_every.filter(|_| {
                shared
                    .drops
                    .lock()
                    .map(|d| d.len() < *max_drops)
                    .unwrap_or(false)
            });
            generate(&mut write, corpus, first, *count, *codec, may_drop, shared).await
        }
    };
    match outcome {
        Ok(Outcome::Complete) => {
            // Wait (bounded) for the client's close, then answer it.
            let _ = tokio::time::timeout(IO_WAIT, closed).await;
            let mut out = Vec::new();
            wsframe::encode(CLOSE, &[], &mut out);
            let _ = write.write_all(&out).await;
            let _ = write.shutdown().await;
        }
        Ok(Outcome::Dropped) | Err(_) => {}
    }
    drain.abort();
}

enum Outcome {
    Complete,
    Dropped,
}

/// Frame notifications `first..count` (and the completion) on the fly.
async fn generate(
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    corpus: &Corpus,
    first: u64,
    count: u64,
    codec: Codec,
    drop_every: Option<u64>,
    shared: &Shared,
) -> std::io::Result<Outcome> {
    let mut compressor = match codec {
        Codec::Zstd => Some(WsStreamCompressor::new(WS_COMPRESSION_LEVEL)?),
        Codec::Text => None,
    };
    let mut out = Vec::with_capacity(WRITE_CHUNK + 8192);
    let mut text = Vec::with_capacity(8192);
    for (sent, i) in (first..count).enumerate() {
        let sent = sent as u64 + 1;
        text.clear();
        corpus.write_notification(i, &mut text);
        match compressor.as_mut() {
            Some(zstd) => wsframe::encode(BINARY, &zstd.compress(&text)?, &mut out),
            None => wsframe::encode(TEXT, &text, &mut out),
        }
        if drop_every.is_some_and(|n| sent >= n) && i + 1 < count {
            write.write_all(&out).await?;
            if let Ok(mut drops) = shared.drops.lock() {
                drops.push(DropMark {
                    at: Instant::now(),
                    last_index: i,
                });
            }
            return Ok(Outcome::Dropped);
        }
        if out.len() >= WRITE_CHUNK {
            write.write_all(&out).await?;
            out.clear();
        }
    }
    wsframe::encode(TEXT, &complete_frame(), &mut out);
    write.write_all(&out).await?;
    Ok(Outcome::Complete)
}

/// The `subscriptionComplete` text.
pub fn complete_frame() -> Vec<u8> {
    json!({"jsonrpc": "2.0", "method": "subscriptionComplete",
        "params": {"subscription": SUBSCRIPTION}})
    .to_string()
    .into_bytes()
}

/// Frame notifications `0..count` and the completion once, as one
/// connection would receive them (zstd: one stream from a fresh compressor).
pub fn prebuild(corpus: &Corpus, count: u64, codec: Codec) -> std::io::Result<Vec<u8>> {
    let mut compressor = match codec {
        Codec::Zstd => Some(WsStreamCompressor::new(WS_COMPRESSION_LEVEL)?),
        Codec::Text => None,
    };
    let mut out = Vec::with_capacity(count as usize * 4_400);
    let mut text = Vec::with_capacity(8192);
    for i in 0..count {
        text.clear();
        corpus.write_notification(i, &mut text);
        match compressor.as_mut() {
            Some(zstd) => wsframe::encode(BINARY, &zstd.compress(&text)?, &mut out),
            None => wsframe::encode(TEXT, &text, &mut out),
        }
    }
    wsframe::encode(TEXT, &complete_frame(), &mut out);
    out.shrink_to_fit();
    Ok(out)
}

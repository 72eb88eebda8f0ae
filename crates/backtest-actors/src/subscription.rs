//! The subscription connection actor: one data-plane WebSocket carrying one
//! subscription per program, all of one kind (transactions or account
//! diffs).
//!
//! It subscribes every program with its replay cursor and zstd requested,
//! keeps notifications that arrive between acks (in order, ahead of live
//! frames), inflates Binary frames with one bounded zstd stream per
//! connection, has the payloads decoded in batches on the decoder arbiters
//! (see `decoder`; results taken in order, a bounded number in flight),
//! tracks `subscriptionComplete`, and hands notifications to the supervisor
//! in batches as flow-control credit allows. With no credit, or with its
//! decode jobs all in flight, it stops reading, so the server is pushed
//! back and memory stays bounded.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::poll_fn,
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::Instant,
};

use actix::{WeakRecipient, prelude::*};
use awc::ws::Message;
use bytes::Bytes;
use futures::{FutureExt as _, SinkExt as _};
use serde_json::json;
use simulator_api::subscribe_config::{Compression, SubscribeConfig};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{
    connection::{ConnEnd, Credit, CreditPool, EndReporter},
    coordinator::{EnterStreaming, ReconnectCoordinator, ReconnectSlot},
    decoder::{self, Decoded, PendingDecode, RawFrame},
    dedup::DiffKey,
    events::ManagedEvent,
    frames::{BoundedZstdStream, DataFrame, DecompressError, NotificationKind, parse_data},
    ws::{self, ConnectOptions, Inbound, ReadError, Reader, Socket},
};

/// Most frames in one decode job (and so most notifications handed over
/// in one message).
const JOB_FRAMES: usize = 64;
/// A job also closes once it holds this many bytes of text.
const JOB_BYTES: usize = 1 << 20;
/// Most decode jobs a connection has in flight; it stops reading beyond.
/// With the batch bounds this caps the frames held between the socket and
/// the consumer's credit at a few MiB.
const JOBS_IN_FLIGHT: usize = 4;

/// What a notification is deduplicated by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum DedupKey {
    Signature(String),
    Diff(DiffKey),
}

/// One decoded notification on its way to the consumer.
#[derive(Debug)]
pub(crate) struct DataItem {
    pub program: Arc<str>,
    pub slot: u64,
    /// `None` when the payload carries nothing to identify it by: delivered
    /// as is.
    pub key: Option<DedupKey>,
    pub event: ManagedEvent,
    pub credit: Credit,
}

/// A report from a subscription connection to its supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SubscriptionReport {
    pub index: usize,
    pub generation: u64,
    pub kind: SubscriptionReportKind,
}

pub(crate) enum SubscriptionReportKind {
    /// Every program is subscribed.
    Up,
    Batch(Vec<DataItem>),
    /// A frame or payload that could not be decoded (skipped).
    Undecodable,
    Ended(ConnEnd),
}

/// Close the connection (a close frame, then stop).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct StopSubscription;

/// Everything a subscription connection needs.
pub(crate) struct SubscriptionSetup {
    pub index: usize,
    pub generation: u64,
    pub kind: NotificationKind,
    pub ws_url: String,
    /// Programs with their replay cursors (`replayFromSlot`, inclusive).
    pub programs: Vec<(String, Option<u64>)>,
    pub options: ConnectOptions,
    pub credits: CreditPool,
    pub report: WeakRecipient<SubscriptionReport>,
    /// Notifications kept while acks are awaited, at most.
    pub max_pending: usize,
    /// In a parallel batch: the coordinator to register with while
    /// streaming, and the sub-session this connection belongs to.
    pub streaming: Option<(Addr<ReconnectCoordinator>, String)>,
    /// The reconnect slot this connection was granted, if it was parked:
    /// released once subscribed (or when the attempt fails).
    pub slot: Option<ReconnectSlot>,
}

pub(crate) struct SubscriptionActor {
    setup: Option<SubscriptionSetup>,
    stop: Option<mpsc::Sender<()>>,
    end: EndReporter<SubscriptionReport>,
    close_timeout: std::time::Duration,
}

impl SubscriptionActor {
    pub fn new(setup: SubscriptionSetup) -> Self {
        let (index, generation) = (setup.index, setup.generation);
        Self {
            end: EndReporter::new(setup.report.clone(), move |end| SubscriptionReport {
                index,
                generation,
                kind: SubscriptionReportKind::Ended(end),
            }),
            close_timeout: setup.options.close_timeout,
            setup: Some(setup),
            stop: None,
        }
    }
}

impl Actor for SubscriptionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let (tx, rx) = mpsc::channel(1);
        self.stop = Some(tx);
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
        self.end.send(ConnEnd::Orphaned);
    }
}

impl Handler<StopSubscription> for SubscriptionActor {
    type Result = ();

    fn handle(&mut self, _: StopSubscription, ctx: &mut Self::Context) {
        if let Some(stop) = &self.stop {
            let _ = stop.try_send(());
        }
        // A connection that does not finish closing in time is cut.
        ctx.run_later(self.close_timeout, |_, ctx| ctx.stop());
    }
}

async fn run(mut setup: SubscriptionSetup, mut stop: mpsc::Receiver<()>) -> ConnEnd {
    let slot = setup.slot.take();
    let streaming = setup.streaming.take();
    // A stop during connect or subscribe ends the attempt at once.
    let opened = tokio::select! {
        biased;
        _ = stop.recv() => return ConnEnd::Closed,
        opened = open(setup) => opened,
    };
    let (mut socket, mut conn, pending) = match opened {
        Ok(opened) => opened,
        Err(end) => return end,
    };
    // Subscribed: the handshake is through, give the slot back and count
    // as streaming until this connection ends, however it ends.
    drop(slot);
    let _streaming = match streaming {
        Some((coordinator, session)) => coordinator.send(EnterStreaming { session }).await.ok(),
        None => None,
    };
    if let Err(end) = conn.report(SubscriptionReportKind::Up) {
        return end;
    }
    if let Err(end) = conn.take_in_all(&mut socket, pending).await {
        return conn.drain_and_finish(end, &mut socket).await;
    }
    conn.serve(&mut socket, &mut stop).await
}

/// Connect and subscribe every program; the notifications that arrived
/// between acks come back to be processed first.
async fn open(setup: SubscriptionSetup) -> Result<(Socket, Conn, Vec<Inbound>), ConnEnd> {
    let mut socket = ws::connect(&setup.ws_url, &setup.options, false)
        .await
        .map_err(ws::ConnectError::into_end)?;
    let decoder = BoundedZstdStream::new(setup.options.max_frame_bytes)
        .map_err(|e| ConnEnd::Fatal(format!("zstd decoder: {e}")))?;
    let mut conn = Conn {
        reader: Reader::new(&setup.options),
        subs: HashMap::new(),
        completed: HashSet::new(),
        decoder,
        in_flight: VecDeque::new(),
        batch: Vec::new(),
        last_inbound: Instant::now(),
        setup,
    };
    let pending = conn.subscribe(&mut socket).await?;
    Ok((socket, conn, pending))
}

enum Step {
    Continue,
    AllComplete,
}

struct Conn {
    setup: SubscriptionSetup,
    reader: Reader,
    /// Server subscription id → program.
    subs: HashMap<u64, Arc<str>>,
    /// Subscriptions that delivered `subscriptionComplete`.
    completed: HashSet<u64>,
    decoder: BoundedZstdStream,
    /// Decode jobs submitted and not yet delivered, oldest first.
    in_flight: VecDeque<PendingDecode>,
    batch: Vec<DataItem>,
    last_inbound: Instant,
}

impl Conn {
    fn report(&self, kind: SubscriptionReportKind) -> Result<(), ConnEnd> {
        let report = self.setup.report.upgrade().ok_or(ConnEnd::Orphaned)?;
        report.do_send(SubscriptionReport {
            index: self.setup.index,
            generation: self.setup.generation,
            kind,
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ConnEnd> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.report(SubscriptionReportKind::Batch(batch))
    }

    /// Subscribe each program in turn (request ids 1, 2, ...). Returns the
    /// notifications that arrived between acks, to be processed first.
    async fn subscribe(&mut self, socket: &mut Socket) -> Result<Vec<Inbound>, ConnEnd> {
        let mut pending = Vec::new();
        let programs = self.setup.programs.clone();
        for (index, (program, cursor)) in programs.iter().enumerate() {
            let id = index as u64 + 1;
            let mut params = match self.setup.kind {
                NotificationKind::Transaction => {
                    json!([{"mentions": [program]}, {"commitment": "confirmed"}])
                }
                NotificationKind::AccountDiff => json!([program, {"address_type": "program"}]),
            };
            SubscribeConfig {
                replay_from_slot: cursor.and_then(|slot| i64::try_from(slot).ok()),
                compression: Some(Compression::Zstd),
            }
            .apply_to(&mut params);
            let request = json!({
                "jsonrpc": "2.0",
                "id": id,
                "method": self.setup.kind.subscribe_method(),
                "params": params,
            });
            ws::send_text(socket, request.to_string())
                .await
                .map_err(ConnEnd::Lost)?;
            let sub_id = self.await_ack(socket, id, program, &mut pending).await?;
            self.subs.insert(sub_id, Arc::from(program.as_str()));
        }
        debug!(kind = ?self.setup.kind, count = self.subs.len(), "subscribed");
        Ok(pending)
    }

    async fn await_ack(
        &mut self,
        socket: &mut Socket,
        id: u64,
        program: &str,
        pending: &mut Vec<Inbound>,
    ) -> Result<u64, ConnEnd> {
        let timeout = self.setup.options.handshake_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.reader.next(socket))
                .await
                .map_err(|_| ConnEnd::Lost(format!("no subscribe ack within {timeout:?}")))?
                .map_err(ReadError::into_end)?;
            match &message {
                Inbound::Text(bytes) => {
                    if let Ok(text) = std::str::from_utf8(bytes)
                        && let DataFrame::Ack { id: ack_id, result } = parse_data(text)
                    {
                        if ack_id != id {
                            continue;
                        }
                        return result.map_err(|e| {
                            ConnEnd::Fatal(format!(
                                "{} for {program} rejected: {e}",
                                self.setup.kind.subscribe_method()
                            ))
                        });
                    }
                }
                Inbound::Ping(payload) => {
                    let _ = socket.send(Message::Pong(payload.clone())).await;
                    continue;
                }
                Inbound::Pong => continue,
                Inbound::Close(code, reason) => {
                    return Err(ConnEnd::Lost(format!(
                        "closed during subscribe (code {code:?}) {reason}"
                    )));
                }
                Inbound::Binary(_) => {}
            }
            if pending.len() >= self.setup.max_pending {
                return Err(ConnEnd::Fatal(format!(
                    "more than {} notifications arrived before the subscribe acks",
                    self.setup.max_pending
                )));
            }
            pending.push(message);
        }
    }

    async fn serve(&mut self, socket: &mut Socket, stop: &mut mpsc::Receiver<()>) -> ConnEnd {
        let options = self.setup.options.clone();
        let mut ping = tokio::time::interval(options.keepalive_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        self.last_inbound = Instant::now();
        loop {
            let reading = self.in_flight.len() < JOBS_IN_FLIGHT;
            tokio::select! {
                decoded = oldest(&mut self.in_flight) => {
                    self.in_flight.pop_front();
                    match self.deliver(decoded).await {
                        Ok(Step::Continue) => {}
                        Ok(Step::AllComplete) => return self.finish(ConnEnd::Complete, socket).await,
                        Err(end) => return self.finish(end, socket).await,
                    }
                }
                message = self.reader.next(socket), if reading => {
                    let read = match message {
                        Ok(message) => self.read_ready(socket, message).await,
                        Err(e) => Err(e.into_end()),
                    };
                    if let Err(end) = read {
                        return self.drain_and_finish(end, socket).await;
                    }
                }
                _ = stop.recv() => {
                    return self.finish(ConnEnd::Closed, socket).await;
                }
                _ = ping.tick() => {
                    if self.last_inbound.elapsed() >= options.keepalive_dead_after {
                        return self.finish(ConnEnd::Lost(format!(
                            "no frame from the server for {:?}",
                            options.keepalive_dead_after
                        )), socket).await;
                    }
                    if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                        return self.finish(ConnEnd::Lost("keepalive ping failed".into()), socket).await;
                    }
                }
            }
        }
    }

    /// Take in a message and whatever else is already readable (up to a
    /// job), and submit the job.
    async fn read_ready(&mut self, socket: &mut Socket, first: Inbound) -> Result<(), ConnEnd> {
        let mut job = Job::default();
        let mut message = first;
        let read = loop {
            if let Err(end) = self.take_in(socket, message, &mut job).await {
                break Err(end);
            }
            if job.is_full() {
                break Ok(());
            }
            match self.reader.next(socket).now_or_never() {
                Some(Ok(next)) => message = next,
                Some(Err(e)) => break Err(e.into_end()),
                None => break Ok(()),
            }
        };
        self.submit(job);
        read
    }

    /// Take in the messages that arrived during the handshake, in order.
    async fn take_in_all(
        &mut self,
        socket: &mut Socket,
        messages: Vec<Inbound>,
    ) -> Result<(), ConnEnd> {
        let mut job = Job::default();
        for message in messages {
            let taken = self.take_in(socket, message, &mut job).await;
            if taken.is_err() || job.is_full() {
                self.submit(std::mem::take(&mut job));
            }
            taken?;
        }
        self.submit(job);
        Ok(())
    }

    /// Take in one message: a data frame (inflated if compressed) joins
    /// the job, a ping is answered, a close ends reading.
    async fn take_in(
        &mut self,
        socket: &mut Socket,
        message: Inbound,
        job: &mut Job,
    ) -> Result<(), ConnEnd> {
        self.last_inbound = Instant::now();
        match message {
            Inbound::Text(bytes) => job.push(RawFrame {
                bytes,
                inflated: false,
            }),
            Inbound::Binary(bytes) => match self.decoder.decode(&bytes) {
                Ok(text) => job.push(RawFrame {
                    bytes: Bytes::copy_from_slice(text),
                    inflated: true,
                }),
                Err(DecompressError::TooLarge { limit }) => {
                    return Err(ConnEnd::Fatal(format!(
                        "a compressed notification decompresses to more than {limit} bytes"
                    )));
                }
                Err(e) => return Err(ConnEnd::Lost(format!("zstd stream: {e}"))),
            },
            Inbound::Ping(payload) => {
                let _ = socket.send(Message::Pong(payload)).await;
            }
            Inbound::Pong => {}
            Inbound::Close(code, reason) => {
                return Err(ConnEnd::Lost(format!(
                    "closed by the server (code {code:?}) {reason}"
                )));
            }
        }
        Ok(())
    }

    fn submit(&mut self, job: Job) {
        if !job.frames.is_empty() {
            self.in_flight
                .push_back(decoder::submit(self.setup.kind, job.frames));
        }
    }

    /// Reading ended with `end`: deliver what is still being decoded (it
    /// was received), then finish.
    async fn drain_and_finish(&mut self, end: ConnEnd, socket: &mut Socket) -> ConnEnd {
        while let Some(pending) = self.in_flight.pop_front() {
            match self.deliver(pending.await).await {
                Ok(Step::Continue) => {}
                Ok(Step::AllComplete) => return self.finish(ConnEnd::Complete, socket).await,
                Err(end) => return self.finish(end, socket).await,
            }
        }
        self.finish(end, socket).await
    }

    /// Hand over what was decoded, then close politely.
    async fn finish(&mut self, end: ConnEnd, socket: &mut Socket) -> ConnEnd {
        let end = match self.flush() {
            Ok(()) => end,
            Err(orphaned) => orphaned,
        };
        if matches!(end, ConnEnd::Complete | ConnEnd::Closed | ConnEnd::Orphaned) {
            ws::close(socket, self.setup.options.close_timeout).await;
        }
        end
    }

    /// Turn a decoded job into items for the supervisor, in order, each
    /// with a credit (waiting for one without reading when there is none),
    /// and hand them over.
    async fn deliver(&mut self, decoded: Option<Vec<Decoded>>) -> Result<Step, ConnEnd> {
        let decoded =
            decoded.ok_or_else(|| ConnEnd::Lost("a frame decoder stopped".to_string()))?;
        for item in decoded {
            match item {
                Decoded::Notification {
                    subscription,
                    slot,
                    key,
                    event,
                } => {
                    // A notification of a subscription not ours is ignored.
                    let Some(program) = self.subs.get(&subscription).cloned() else {
                        continue;
                    };
                    let credit = match self.setup.credits.try_acquire() {
                        Some(credit) => credit,
                        None => {
                            // Hand over what is held so the consumer can
                            // free credit, then wait for it.
                            self.flush()?;
                            let credit = self
                                .setup
                                .credits
                                .acquire()
                                .await
                                .ok_or(ConnEnd::Orphaned)?;
                            // Nothing was read meanwhile: the server's
                            // silence is only timed while reading.
                            self.last_inbound = Instant::now();
                            credit
                        }
                    };
                    self.batch.push(DataItem {
                        program,
                        slot,
                        key,
                        event,
                        credit,
                    });
                }
                Decoded::Complete(subscription) => {
                    if self.subs.contains_key(&subscription) {
                        self.completed.insert(subscription);
                        if self.completed.len() == self.subs.len() {
                            return Ok(Step::AllComplete);
                        }
                    }
                }
                Decoded::Ignore => {}
                Decoded::Undecodable(what) => self.undecodable(&what)?,
            }
        }
        self.flush()?;
        Ok(Step::Continue)
    }

    fn undecodable(&self, what: &str) -> Result<(), ConnEnd> {
        warn!(kind = ?self.setup.kind, "skipping undecodable frame: {what}");
        self.report(SubscriptionReportKind::Undecodable)
    }
}

/// Frames read and not yet submitted for decoding.
#[derive(Default)]
struct Job {
    frames: Vec<RawFrame>,
    bytes: usize,
}

impl Job {
    fn push(&mut self, frame: RawFrame) {
        self.bytes += frame.bytes.len();
        self.frames.push(frame);
    }

    fn is_full(&self) -> bool {
        self.frames.len() >= JOB_FRAMES || self.bytes >= JOB_BYTES
    }
}

/// The oldest decode job's result; pending while there is none.
async fn oldest(in_flight: &mut VecDeque<PendingDecode>) -> Option<Vec<Decoded>> {
    poll_fn(|cx| match in_flight.front_mut() {
        Some(pending) => Pin::new(pending).poll(cx),
        None => Poll::Pending,
    })
    .await
}

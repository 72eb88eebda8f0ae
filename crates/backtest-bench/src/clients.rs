//! The clients under test, behind one call: run a transaction stream to its
//! end and hand each transaction to a consumer callback.
//!
//! Each runs as it would in a user's program. Ours: a `SessionSupervisor` on
//! a fresh actix system, the consumer pulling `NextEvent` on that thread,
//! and the data connections on the library's background thread (socket
//! reads, zstd and JSON decoding), so it uses up to two threads. The seed
//! crate: its subscription manager on a current-thread tokio runtime, the
//! consumer reading its channel on that thread. The limit is one thread.

use std::time::{Duration, Instant};

use backtest_actors::{
    Continue, ManagedEvent, NextEvent, SessionSupervisor, Shutdown, SubscribeTransactions,
    WaitSession,
};
use simulator_api::{ContinueParams, CreateBacktestSessionRequest};
use simulator_client::managed::{SubscriptionNotification, spawn_transaction_subscription_manager};
use solana_transaction_status::EncodedConfirmedTransactionWithStatusMeta;
use tokio_util::sync::CancellationToken;

/// Longest silence tolerated from a client before the run is declared stuck.
pub const STALL: Duration = Duration::from_secs(60);

/// Which client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Ours,
    Seed,
}

impl Impl {
    pub fn name(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Seed => "seed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ours" => Some(Impl::Ours),
            "seed" => Some(Impl::Seed),
            _ => None,
        }
    }
}

/// Where the stream is served.
#[derive(Debug, Clone)]
pub struct Target {
    pub control_url: String,
    pub rpc_endpoint: String,
    pub program: String,
}

/// Timing of one run.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    /// When the subscription was requested.
    pub started: Instant,
    /// When the stream ended (every notification handed over).
    pub finished: Instant,
    /// When the first transaction reached the consumer.
    pub first: Option<Instant>,
    pub received: u64,
}

/// A consumer of transactions.
pub type Consumer<'a> = &'a mut dyn FnMut(&EncodedConfirmedTransactionWithStatusMeta);

/// Run `which` against `target` to the end of the stream.
pub fn run(which: Impl, target: &Target, consumer: Consumer<'_>) -> Result<Run, String> {
    match which {
        Impl::Ours => run_ours(target, consumer),
        Impl::Seed => run_seed(target, consumer),
    }
}

fn create_request() -> CreateBacktestSessionRequest {
    serde_json::from_value(serde_json::json!({"startSlot": 1000, "endSlot": 1000}))
        .expect("create params")
}

/// Ours: a supervisor whose control and data planes the bench server
/// serves; the consumer pulls `NextEvent`.
fn run_ours(target: &Target, consumer: Consumer<'_>) -> Result<Run, String> {
    let target = target.clone();
    actix_rt::System::new().block_on(async move {
        let addr = SessionSupervisor::builder(&target.control_url, "bench", create_request())
            .drain_idle_timeout(STALL)
            .start();
        bounded(addr.send(WaitSession))
            .await?
            .map_err(|e| format!("ours: {e}"))?;
        let started = Instant::now();
        bounded(addr.send(SubscribeTransactions {
            programs: vec![target.program.clone()],
        }))
        .await?
        .map_err(|e| format!("ours: {e}"))?;
        let mut received = 0;
        let mut first = None;
        let outcome = loop {
            match bounded(addr.send(NextEvent)).await {
                Ok(Ok(Some(ManagedEvent::Transaction(tx)))) => {
                    first.get_or_insert_with(Instant::now);
                    received += 1;
                    consumer(&tx);
                }
                Ok(Ok(Some(ManagedEvent::ReadyForContinue))) => {
                    // Gated until the subscription is up; do not block the
                    // consumer on it.
                    let addr = addr.clone();
                    actix_rt::spawn(async move {
                        let _ = addr.send(Continue(ContinueParams::default())).await;
                    });
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => break Ok(()),
                Ok(Err(e)) => break Err(format!("ours: {e}")),
                Err(e) => break Err(e),
            }
        };
        let finished = Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(10), addr.send(Shutdown)).await;
        outcome.map(|()| Run {
            started,
            finished,
            first,
            received,
        })
    })
}

/// The seed crate: its subscription manager; the consumer reads its channel.
fn run_seed(target: &Target, consumer: Consumer<'_>) -> Result<Run, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let mut handle = spawn_transaction_subscription_manager(
            target.rpc_endpoint.clone(),
            vec![target.program.clone()],
            cancel.clone(),
            None,
        );
        let mut received = 0;
        let mut first = None;
        let outcome = loop {
            match tokio::time::timeout(STALL, handle.notifications.recv()).await {
                Ok(Some(SubscriptionNotification::Transaction(tx))) => {
                    first.get_or_insert_with(Instant::now);
                    received += 1;
                    consumer(&tx);
                }
                Ok(Some(SubscriptionNotification::AccountDiff(_))) => {}
                Ok(None) => break Ok(()),
                Err(_) => break Err(format!("seed: no notification for {STALL:?}")),
            }
        };
        let finished = Instant::now();
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), handle.join).await;
        let status = handle.status.borrow().clone();
        if let simulator_client::managed::ConnectionStatus::Failed(reason) = status {
            return Err(format!("seed: {reason}"));
        }
        outcome.map(|()| Run {
            started,
            finished,
            first,
            received,
        })
    })
}

/// Await `f` for at most [`STALL`].
async fn bounded<F: std::future::Future<Output = Result<T, actix::MailboxError>>, T>(
    f: F,
) -> Result<T, String> {
    match tokio::time::timeout(STALL, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("ours: supervisor gone: {e}")),
        Err(_) => Err(format!("ours: no answer for {STALL:?}")),
    }
}

//! Actix actors that run managed sessions against the Solana simulator
//! backtest WebSocket API.
//!
//! A [`SessionSupervisor`] owns one backtest session: it creates it, keeps
//! its control connection and its subscriptions alive (attach + resume,
//! resubscribe from the replay cursors), delivers every transaction and
//! account diff exactly once, holds `Completed` back until the data plane
//! has drained, and closes the session gracefully. Drive it through its
//! `Addr` with the [`messages`]; or use [`ManagedBacktestSession`], an async
//! facade with the signatures of crates.io `simulator-client`'s managed
//! session, usable from any async context.
//!
//! ```
//! use backtest_actors::{
//!     Continue, ManagedEvent, NextEvent, SessionSupervisor, SubscribeTransactions, WaitSession,
//! };
//! use simulator_api::{ContinueParams, CreateSessionParams};
//!
//! // A reference server on a free loopback port stands in for the service.
//! let server = backtest_server::RunningServer::spawn(
//!     backtest_server::ServerConfig::default(),
//!     "127.0.0.1:0".parse().unwrap(),
//! )
//! .unwrap();
//! let programs = server.state().ledger.programs().to_vec();
//! let create: CreateSessionParams =
//!     serde_json::from_value(serde_json::json!({"startSlot": 1000, "endSlot": 1009})).unwrap();
//!
//! actix_rt::System::new().block_on(async move {
//!     let session = SessionSupervisor::builder(server.control_url(), "my-api-key", create).start();
//!     let info = session.send(WaitSession).await.unwrap().unwrap();
//!     println!("session {}", info.session_id);
//!     session.send(SubscribeTransactions { programs }).await.unwrap().unwrap();
//!
//!     let mut transactions = 0;
//!     // `Ok(None)`: the stream ended after `Completed`.
//!     while let Some(event) = session.send(NextEvent).await.unwrap().unwrap() {
//!         match event {
//!             ManagedEvent::ReadyForContinue => {
//!                 let step = ContinueParams { advance_count: 5, ..ContinueParams::default() };
//!                 session.send(Continue(step)).await.unwrap().unwrap();
//!             }
//!             ManagedEvent::Transaction(_) => transactions += 1,
//!             _ => {}
//!         }
//!     }
//!     assert_eq!(transactions, 10 * 8);
//! });
//! ```
//!
//! The pure parts live in plain modules without actix or sockets, so their
//! rules are unit-tested exactly:
//!
//! * [`url`]: control, HTTP and data-plane URL rules, and the redacted
//!   [`url::ApiKey`];
//! * [`backoff`]: reconnect policy and per-connection budget;
//! * [`dedup`]: exactly-once delivery per notification stream across replays;
//! * [`drain`]: the completion-drain state machine;
//! * [`frames`]: control and data frame parsing, bounded zstd decoding.

pub mod backoff;
mod builder;
mod connection;
mod control;
pub mod coordinator;
mod decoder;
pub mod dedup;
pub mod drain;
pub mod events;
mod facade;
pub mod frames;
mod json_transaction;
pub mod messages;
mod parallel;
mod parallel_facade;
mod runtime;
mod subscription;
mod supervisor;
pub mod tls;
pub mod url;
mod ws;

pub use crate::{
    backoff::ReconnectPolicy,
    builder::SupervisorBuilder,
    events::{
        AccountDiffContext, AccountDiffNotification, ConnectionState, Counters, ManagedEvent,
        ManagedSessionError, SessionInfo, SessionStatus, SubscriptionStatus,
    },
    facade::ManagedBacktestSession,
    messages::*,
    parallel::{
        GetParallelStatus, ParallelStatus, ParallelSupervisor, SubSession, WaitSubSessions,
    },
    parallel_facade::{
        BatchEvent, BatchOptions, ManagedParallelSession, ParallelSubSession, SubSessionResult,
        run_batch,
    },
    runtime::start_background_runtime,
    supervisor::SessionSupervisor,
};

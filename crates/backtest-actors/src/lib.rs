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
pub mod dedup;
pub mod drain;
pub mod events;
mod facade;
pub mod frames;
pub mod messages;
mod runtime;
mod subscription;
mod supervisor;
mod tls;
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
    supervisor::SessionSupervisor,
};

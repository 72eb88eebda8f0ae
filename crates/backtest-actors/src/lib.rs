//! Actix actors for managed backtest sessions.
//!
//! The pure parts of the client live in plain modules without actix or
//! sockets, so their rules are unit-tested exactly:
//!
//! * [`url`]: control, HTTP and data-plane URL rules, and the redacted
//!   [`url::ApiKey`];
//! * [`backoff`]: reconnect policy and per-connection budget;
//! * [`dedup`]: exactly-once delivery per notification stream across replays;
//! * [`drain`]: the completion-drain state machine;
//! * [`frames`]: control and data frame parsing, bounded zstd decoding.

pub mod backoff;
pub mod dedup;
pub mod drain;
pub mod frames;
pub mod url;

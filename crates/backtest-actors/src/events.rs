//! What a managed session hands its consumer, and how it fails.
//!
//! The variants mirror the managed session of crates.io `simulator-client`
//! 0.9.0 so code written for it ports by changing an import.

use simulator_api::{
    AgentStatsReport, BacktestError, BacktestStatus, DiscoveryBatchEvent, PausedEvent,
    SessionSummary,
};
use solana_transaction_status::EncodedConfirmedTransactionWithStatusMeta;

pub use crate::frames::{AccountDiffContext, AccountDiffNotification};

/// One event of a managed session, in delivery order.
///
/// Data-plane events (`Transaction`, `AccountDiff`) are delivered exactly
/// once each; `Completed` comes only after every subscription has delivered
/// its last notification.
#[derive(Debug)]
pub enum ManagedEvent {
    /// The server is ready for the next `Continue` / `ContinueTo`.
    ReadyForContinue,
    /// The server paused at a `ContinueTo` target.
    Paused(PausedEvent),
    /// The server discovered an upcoming batch matching a registered filter.
    DiscoveryBatch(DiscoveryBatchEvent),
    /// A slot was executed.
    Slot(u64),
    /// A progress status.
    Status(BacktestStatus),
    /// The session completed and every subscription has drained.
    /// `agent_stats` is always `None` for parallel sub-sessions.
    Completed {
        summary: Option<SessionSummary>,
        agent_stats: Option<Vec<AgentStatsReport>>,
    },
    /// A non-fatal server error, or the terminal one just before the
    /// session fails.
    Error(BacktestError),
    /// A transaction notification.
    Transaction(Box<EncodedConfirmedTransactionWithStatusMeta>),
    /// An account diff notification.
    AccountDiff(AccountDiffNotification),
}

impl actix::Message for ManagedEvent {
    type Result = ();
}

impl ManagedEvent {
    /// Whether the event came from the data plane.
    pub fn is_data(&self) -> bool {
        matches!(self, Self::Transaction(_) | Self::AccountDiff(_))
    }
}

/// Why a managed session failed or a request to it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedSessionError {
    /// The session could not be created (the server refused, or no
    /// connection could be made within the reconnect budget).
    #[error("session create failed: {0}")]
    Create(String),
    /// The session's actors are gone (shut down, or dropped).
    #[error("control channel closed")]
    ControlClosed,
    /// The control connection failed for good, or the server ended the
    /// session with a terminal error.
    #[error("control failed: {0}")]
    ControlFailed(String),
    /// A subscription failed for good, or the completion drain found the
    /// data plane incomplete: the capture is missing notifications.
    #[error("subscription failed: {0}")]
    SubscriptionFailed(String),
    /// The session was cancelled (shutdown or cancellation token).
    #[error("cancelled")]
    Cancelled,
    /// A continue could not be sent.
    #[error("control closed while sending continue: {0}")]
    ContinueSend(String),
}

/// Identity of a created session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    /// Absolute data-plane URL (`http(s)://...`), resolved against the
    /// control URL's host when the server sent a relative one.
    pub rpc_endpoint: String,
    pub task_id: Option<String>,
}

/// State of one connection as the supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting or handshaking (first connection).
    Connecting,
    /// Up and streaming.
    Up,
    /// Lost; a reconnect is scheduled or in progress.
    Reconnecting,
    /// Waiting on the batch's reconnect coordinator.
    Parked,
    /// Every subscription on it delivered its end-of-stream marker.
    Complete,
    /// Closed by us (shutdown or after completion).
    Closed,
    /// Gave up: the reason.
    Failed(String),
}

/// Counters of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Data notifications handed to the consumer.
    pub notifications: u64,
    pub transactions: u64,
    pub account_diffs: u64,
    /// Replayed notifications removed by the exactly-once filter.
    pub duplicates_removed: u64,
    /// Control responses dropped because their sequence was already seen.
    pub control_duplicates: u64,
    /// Frames that could not be parsed or decoded (skipped).
    pub undecodable_frames: u64,
    /// Reconnect attempts started, all connections together.
    pub reconnects: u64,
    /// Continues sent again after a re-attach because the server never
    /// answered the one sent just before the drop.
    pub continues_resent: u64,
    /// Bytes received on every connection.
    pub bytes_in: u64,
}

/// One subscription connection's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionStatus {
    pub kind: crate::frames::NotificationKind,
    pub programs: Vec<String>,
    pub state: ConnectionState,
    /// Per program, the replay cursor (highest slot delivered).
    pub cursors: Vec<(String, Option<u64>)>,
}

/// A snapshot of a session, answered to [`crate::GetStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub session: Option<SessionInfo>,
    /// A parallel sub-session's `(start_slot, end_slot)`, as the server split
    /// the run.
    pub range: Option<(u64, u64)>,
    pub control: ConnectionState,
    pub subscriptions: Vec<SubscriptionStatus>,
    /// Highest control sequence number seen.
    pub last_sequence: Option<u64>,
    /// Events waiting for the consumer.
    pub queued_events: usize,
    /// Whether `completed` arrived and the drain is waiting on the data plane.
    pub draining: bool,
    pub counters: Counters,
}

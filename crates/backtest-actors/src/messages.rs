//! The messages a [`crate::SessionSupervisor`] answers: the whole public
//! surface of a managed session, driven through its `Addr`.

use actix::Message;
use simulator_api::{ContinueParams, ContinueToParams};

use crate::events::{ManagedEvent, ManagedSessionError, SessionInfo, SessionStatus};

/// Wait until the session is created; its identity.
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionInfo, ManagedSessionError>")]
pub struct WaitSession;

/// Subscribe to transaction notifications of these programs (one data
/// connection for all of them). Waits for the session to exist.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), ManagedSessionError>")]
pub struct SubscribeTransactions {
    pub programs: Vec<String>,
}

/// Subscribe to account-diff notifications of accounts owned by these
/// programs (one data connection for all of them).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<(), ManagedSessionError>")]
pub struct SubscribeAccountDiffs {
    pub programs: Vec<String>,
}

/// Send `continue`. Gated: sent once the control connection and every
/// subscription are up and no other continue is in flight; fails with the
/// reason when one of them has failed. Resolves when sent.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ManagedSessionError>")]
pub struct Continue(pub ContinueParams);

/// Send `continueTo`, gated like [`Continue`].
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ManagedSessionError>")]
pub struct ContinueTo(pub ContinueToParams);

/// Pull the next event (when no recipient was given at start).
/// `Ok(None)` after `Completed`: the stream ended cleanly. An error ends
/// the stream: the session failed, or was shut down.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<ManagedEvent>, ManagedSessionError>")]
pub struct NextEvent;

/// Wait until the session has ended and every event before the end has been
/// handed to the consumer: `Ok` after `Completed`, else the reason it
/// failed. Useful with a push recipient, which sees events but not the
/// failure.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ManagedSessionError>")]
pub struct WaitOutcome;

/// Change the completion-drain idle timeout.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetDrainIdleTimeout(pub std::time::Duration);

/// A snapshot of connection states, cursors and counters.
#[derive(Debug, Message)]
#[rtype(result = "SessionStatus")]
pub struct GetStatus;

/// Cancel, close the session gracefully (`closeBacktestSession` and a close
/// frame), close the subscriptions, and stop. Resolves when done.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

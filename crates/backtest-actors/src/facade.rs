//! `ManagedBacktestSession`: a small async facade over a
//! [`SessionSupervisor`] address with the signatures of crates.io
//! `simulator-client`'s managed session, so a program written for it ports
//! by changing an import. Works from any async context: inside an actix
//! system the supervisor runs on the current arbiter, anywhere else on a
//! background actix system of this library's.

use std::time::Duration;

use actix::Addr;
use simulator_api::{ContinueParams, ContinueToParams, CreateBacktestSessionRequest};
use tokio_util::sync::CancellationToken;

use crate::{
    SessionSupervisor, SupervisorBuilder,
    events::{ManagedEvent, ManagedSessionError, SessionInfo, SessionStatus},
    messages::*,
    runtime,
};

/// A managed backtest session: create, subscribe, drive, read events, shut
/// down.
pub struct ManagedBacktestSession {
    addr: Addr<SessionSupervisor>,
    info: SessionInfo,
    cancel: CancellationToken,
    ended: bool,
}

impl std::fmt::Debug for ManagedBacktestSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedBacktestSession")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn mailbox_closed(_: actix::MailboxError) -> ManagedSessionError {
    ManagedSessionError::ControlClosed
}

impl ManagedBacktestSession {
    /// Create a session and wait until the server has created it.
    pub async fn start(
        url: String,
        api_key: String,
        create: CreateBacktestSessionRequest,
    ) -> Result<Self, ManagedSessionError> {
        Self::start_with_cancel(url, api_key, create, CancellationToken::new()).await
    }

    /// Like [`Self::start`], tied to `cancel`: cancelling it aborts the start
    /// and, later, shuts the session down.
    pub async fn start_with_cancel(
        url: String,
        api_key: String,
        create: CreateBacktestSessionRequest,
        cancel: CancellationToken,
    ) -> Result<Self, ManagedSessionError> {
        Self::start_with_builder(SessionSupervisor::builder(url, api_key, create), cancel).await
    }

    /// Start from a configured builder (policy, timeouts, headers). A push
    /// recipient set on the builder leaves `next_event` unavailable.
    pub async fn start_with_builder(
        builder: SupervisorBuilder,
        cancel: CancellationToken,
    ) -> Result<Self, ManagedSessionError> {
        let addr = runtime::start_actor(move || builder.start()).await?;
        let info = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                let _ = addr.send(Shutdown).await;
                return Err(ManagedSessionError::Cancelled);
            }
            info = addr.send(WaitSession) => info.map_err(mailbox_closed)??,
        };
        Ok(Self::from_parts(addr, info, cancel))
    }

    pub(crate) fn from_parts(
        addr: Addr<SessionSupervisor>,
        info: SessionInfo,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            addr,
            info,
            cancel,
            ended: false,
        }
    }

    /// The session's identity.
    pub fn session_info(&self) -> &SessionInfo {
        &self.info
    }

    /// The supervisor's address, to drive it with messages directly.
    pub fn addr(&self) -> &Addr<SessionSupervisor> {
        &self.addr
    }

    /// Override the completion-drain idle timeout. Takes effect for drains
    /// that start after the call.
    pub fn set_completion_drain_timeout(&mut self, idle_timeout: Duration) {
        self.addr.do_send(SetDrainIdleTimeout(idle_timeout));
    }

    /// Subscribe to transaction notifications of these programs.
    pub fn subscribe_transactions(&mut self, program_ids: Vec<String>) {
        self.addr.do_send(SubscribeTransactions {
            programs: program_ids,
        });
    }

    /// Subscribe to account-diff notifications of these programs.
    pub fn subscribe_account_diffs(&mut self, program_ids: Vec<String>) {
        self.addr.do_send(SubscribeAccountDiffs {
            programs: program_ids,
        });
    }

    /// The next event. After `Completed` the stream is over and this
    /// returns `Err(ControlClosed)`; a failed session returns its error.
    pub async fn next_event(&mut self) -> Result<ManagedEvent, ManagedSessionError> {
        if self.ended {
            return Err(ManagedSessionError::ControlClosed);
        }
        let next = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => {
                self.ended = true;
                let _ = self.addr.send(Shutdown).await;
                return Err(ManagedSessionError::Cancelled);
            }
            next = self.addr.send(NextEvent) => next,
        };
        match next.map_err(mailbox_closed)? {
            Ok(Some(event)) => Ok(event),
            Ok(None) => {
                self.ended = true;
                Err(ManagedSessionError::ControlClosed)
            }
            Err(e) => {
                self.ended = true;
                Err(e)
            }
        }
    }

    /// Send `continue` once every connection is up.
    pub async fn send_continue(&self, params: ContinueParams) -> Result<(), ManagedSessionError> {
        self.addr
            .send(Continue(params))
            .await
            .map_err(mailbox_closed)?
    }

    /// Send `continueTo` once every connection is up.
    pub async fn send_continue_to(
        &self,
        params: ContinueToParams,
    ) -> Result<(), ManagedSessionError> {
        self.addr
            .send(ContinueTo(params))
            .await
            .map_err(mailbox_closed)?
    }

    /// Connection states, cursors and counters.
    pub async fn status(&self) -> Result<SessionStatus, ManagedSessionError> {
        self.addr.send(GetStatus).await.map_err(mailbox_closed)
    }

    /// Cancel, close gracefully and wait for the actors to stop.
    pub async fn shutdown(self) {
        let _ = self.addr.send(Shutdown).await;
    }
}

//! What connection actors tell the supervisor, and the flow-control credit
//! that bounds how much they may hand it before the consumer catches up.

use std::sync::Arc;

use actix::{Message, WeakRecipient};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnEnd {
    /// Lost (network, server close, keepalive, transient handshake error):
    /// the supervisor may reconnect.
    Lost(String),
    /// Failed in a way a reconnect cannot fix (refused create, rejected
    /// subscribe, bad key, hostile frames).
    Fatal(String),
    /// Every subscription on the connection delivered `subscriptionComplete`.
    Complete,
    /// Closed on the supervisor's request.
    Closed,
    /// The supervisor is gone.
    Orphaned,
}

/// One unit of flow-control credit: held by an event from the moment its
/// connection reads it until the consumer has taken it (or it was dropped
/// as a duplicate). A connection with no credit left stops reading its
/// socket, which pushes back on the server: memory stays bounded.
#[derive(Debug)]
pub(crate) struct Credit(#[allow(dead_code)] OwnedSemaphorePermit);

/// A pool of credit for one connection.
#[derive(Debug, Clone)]
pub(crate) struct CreditPool(Arc<Semaphore>);

impl CreditPool {
    pub fn new(size: usize) -> Self {
        Self(Arc::new(Semaphore::new(size.max(1))))
    }

    /// Wait for one unit of credit. `None` only if the pool was closed
    /// (it never is while the session lives).
    pub async fn acquire(&self) -> Option<Credit> {
        self.0.clone().acquire_owned().await.ok().map(Credit)
    }

    /// Take credit without waiting, if any is left.
    pub fn try_acquire(&self) -> Option<Credit> {
        self.0.clone().try_acquire_owned().ok().map(Credit)
    }
}

/// Tells a connection's supervisor how the connection ended, exactly once:
/// from the connection task when it returns, or from the actor's `stopped`
/// when the actor was stopped from outside.
pub(crate) struct EndReporter<M: Message<Result = ()> + Send> {
    report: WeakRecipient<M>,
    ended: Box<dyn Fn(ConnEnd) -> M + Send>,
    sent: bool,
}

impl<M: Message<Result = ()> + Send + 'static> EndReporter<M> {
    /// `ended` builds the report message for an end.
    pub fn new(report: WeakRecipient<M>, ended: impl Fn(ConnEnd) -> M + Send + 'static) -> Self {
        Self {
            report,
            ended: Box::new(ended),
            sent: false,
        }
    }

    pub fn send(&mut self, end: ConnEnd) {
        if std::mem::replace(&mut self.sent, true) {
            return;
        }
        if let Some(report) = self.report.upgrade() {
            report.do_send((self.ended)(end));
        }
    }
}

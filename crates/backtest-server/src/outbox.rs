//! Where a session's responses go: the control connection that currently
//! owns it, if any. A bounded channel, so a slow client slows the session
//! down instead of growing a queue.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

/// Frames queued for one control connection. Small: the executor waits
/// when the client does not read.
pub const OUTBOX_CAPACITY: usize = 256;

/// The sending half handed to sessions; `connection` identifies the owner.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub connection: u64,
    pub tx: mpsc::Sender<Arc<str>>,
}

impl Outbox {
    /// A new outbox for connection `connection` and the receiver its writer
    /// drains.
    pub fn channel(connection: u64) -> (Self, mpsc::Receiver<Arc<str>>) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        (Self { connection, tx }, rx)
    }
}

/// An outbox shared by every sub-session of a parallel group (they speak
/// over one multiplexed connection).
#[derive(Debug, Default)]
pub struct SharedOutbox(Mutex<Option<Outbox>>);

impl SharedOutbox {
    pub fn get(&self) -> Option<Outbox> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, outbox: Option<Outbox>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = outbox;
    }

    /// Clear the outbox only if `connection` still owns it.
    pub fn clear_if_owner(&self, connection: u64) -> bool {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|o| o.connection == connection) {
            *slot = None;
            true
        } else {
            false
        }
    }

    pub fn owner(&self) -> Option<u64> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|o| o.connection)
    }
}

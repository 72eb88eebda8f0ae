//! The reconnect coordinator of a parallel batch: one actor shared by every
//! sub-session's subscriptions, which share one client link.
//!
//! A dropped subscription that has used its ungated attempts parks here. It
//! is granted the single reconnect slot (one handshake at a time) once no
//! connection that can make progress is streaming: the link is quiet, so
//! the handshake gets through. After connecting it registers as streaming
//! and gives the slot back.
//!
//! Registrations and slots are guards: dropping one (the holder stopped,
//! however it stopped) releases it and wakes the parked. A waiter that goes
//! away before its grant is skipped, never granted.
//!
//! One refinement over "wait until no sibling streams": a streaming
//! connection of a sub-session that itself has a parked subscription does
//! not count, because that sub-session cannot advance (its continues are
//! gated on the parked one): counting it would let two such sub-sessions
//! wait on each other forever.

use std::collections::{HashMap, HashSet, VecDeque};

use actix::prelude::*;
use tokio::sync::oneshot;

/// Counters, for tests and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinatorStats {
    /// Streaming registrations now.
    pub streaming: usize,
    /// Waiters parked now.
    pub parked: usize,
    /// Slots granted since start (one at a time: the next grant waits for
    /// the previous slot's release).
    pub grants: u64,
    /// Waiters that went away before their grant.
    pub cancelled: u64,
}

/// Coordinates subscription reconnects across a parallel batch.
#[derive(Default)]
pub struct ReconnectCoordinator {
    next_token: u64,
    /// Token → the sub-session it streams for.
    streaming: HashMap<u64, String>,
    parked: VecDeque<Parked>,
    slot_holder: Option<u64>,
    stats: CoordinatorStats,
}

struct Parked {
    token: u64,
    session: String,
    grant: oneshot::Sender<ReconnectSlot>,
}

/// Held while a connection is up and streaming; dropping it leaves.
#[derive(Debug)]
pub struct StreamingGuard {
    token: u64,
    coordinator: Addr<ReconnectCoordinator>,
}

impl Drop for StreamingGuard {
    fn drop(&mut self) {
        self.coordinator.do_send(Leave(self.token));
    }
}

/// The single reconnect slot; dropping it releases the slot.
#[derive(Debug)]
pub struct ReconnectSlot {
    token: u64,
    coordinator: Addr<ReconnectCoordinator>,
}

impl Drop for ReconnectSlot {
    fn drop(&mut self) {
        self.coordinator.do_send(Release(self.token));
    }
}

/// Register a streaming connection of sub-session `session`.
#[derive(Message)]
#[rtype(result = "StreamingGuard")]
pub struct EnterStreaming {
    pub session: String,
}

/// Park until granted the reconnect slot, which arrives on `grant`.
/// Dropping the receiving end (cancellation) gives the place up at once.
/// [`acquire_slot`] wraps this.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AcquireReconnectSlot {
    pub session: String,
    pub grant: oneshot::Sender<ReconnectSlot>,
}

/// Park on `coordinator` until granted the reconnect slot; `None` if the
/// coordinator is gone. Dropping the future cancels the wait.
pub async fn acquire_slot(
    coordinator: &Addr<ReconnectCoordinator>,
    session: String,
) -> Option<ReconnectSlot> {
    let (grant, granted) = oneshot::channel();
    coordinator
        .send(AcquireReconnectSlot { session, grant })
        .await
        .ok()?;
    granted.await.ok()
}

/// Current counters.
#[derive(Message)]
#[rtype(result = "CoordinatorStats")]
pub struct GetCoordinatorStats;

#[derive(Message)]
#[rtype(result = "()")]
struct Leave(u64);

#[derive(Message)]
#[rtype(result = "()")]
struct Release(u64);

impl ReconnectCoordinator {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Grant the slot to the first live parked waiter if the link is quiet.
    fn wake(&mut self, ctx: &mut Context<Self>) {
        while self.slot_holder.is_none() {
            let blocked: HashSet<&str> = self.parked.iter().map(|p| p.session.as_str()).collect();
            let quiet = self
                .streaming
                .values()
                .all(|session| blocked.contains(session.as_str()));
            if !quiet {
                return;
            }
            let Some(parked) = self.parked.pop_front() else {
                return;
            };
            if parked.grant.is_closed() {
                self.stats.cancelled += 1;
                continue;
            }
            let slot = ReconnectSlot {
                token: parked.token,
                coordinator: ctx.address(),
            };
            match parked.grant.send(slot) {
                Ok(()) => {
                    self.slot_holder = Some(parked.token);
                    self.stats.grants += 1;
                }
                // The waiter went away just now: the slot guard it would
                // have received was dropped with the message; releasing an
                // ungranted token is a no-op.
                Err(_) => self.stats.cancelled += 1,
            }
        }
    }
}

impl Actor for ReconnectCoordinator {
    type Context = Context<Self>;
}

impl Handler<EnterStreaming> for ReconnectCoordinator {
    type Result = MessageResult<EnterStreaming>;

    fn handle(&mut self, msg: EnterStreaming, ctx: &mut Context<Self>) -> Self::Result {
        let token = self.token();
        self.streaming.insert(token, msg.session);
        MessageResult(StreamingGuard {
            token,
            coordinator: ctx.address(),
        })
    }
}

impl Handler<AcquireReconnectSlot> for ReconnectCoordinator {
    type Result = ();

    fn handle(&mut self, msg: AcquireReconnectSlot, ctx: &mut Context<Self>) {
        let token = self.token();
        self.parked.push_back(Parked {
            token,
            session: msg.session,
            grant: msg.grant,
        });
        self.wake(ctx);
    }
}

impl Handler<Leave> for ReconnectCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        self.streaming.remove(&msg.0);
        self.wake(ctx);
    }
}

impl Handler<Release> for ReconnectCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Context<Self>) {
        if self.slot_holder == Some(msg.0) {
            self.slot_holder = None;
        }
        self.wake(ctx);
    }
}

impl Handler<GetCoordinatorStats> for ReconnectCoordinator {
    type Result = MessageResult<GetCoordinatorStats>;

    fn handle(&mut self, _: GetCoordinatorStats, _: &mut Context<Self>) -> Self::Result {
        self.parked.retain(|p| !p.grant.is_closed());
        MessageResult(CoordinatorStats {
            streaming: self.streaming.len(),
            parked: self.parked.len(),
            ..self.stats.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn stats(c: &Addr<ReconnectCoordinator>) -> CoordinatorStats {
        c.send(GetCoordinatorStats).await.unwrap()
    }

    fn acquire(
        c: &Addr<ReconnectCoordinator>,
        session: &str,
    ) -> tokio::task::JoinHandle<Option<ReconnectSlot>> {
        let c = c.clone();
        let session = session.to_string();
        actix_rt::spawn(async move { acquire_slot(&c, session).await })
    }

    async fn settle(c: &Addr<ReconnectCoordinator>) {
        // A round trip through the mailbox: earlier messages are handled.
        let _ = stats(c).await;
    }

    #[actix_rt::test]
    async fn a_parked_waiter_is_woken_when_the_last_streamer_leaves() {
        let c = ReconnectCoordinator::default().start();
        let a = c
            .send(EnterStreaming {
                session: "a".into(),
            })
            .await
            .unwrap();
        let b = c
            .send(EnterStreaming {
                session: "b".into(),
            })
            .await
            .unwrap();
        let waiter = acquire(&c, "c");
        settle(&c).await;
        assert_eq!(stats(&c).await.parked, 1);
        drop(a);
        settle(&c).await;
        assert!(!waiter.is_finished(), "b still streams");
        drop(b);
        let slot = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("granted")
            .unwrap()
            .expect("a slot");
        let s = stats(&c).await;
        assert_eq!((s.grants, s.parked, s.streaming), (1, 0, 0));
        drop(slot);
    }

    #[actix_rt::test]
    async fn release_on_actor_stop_frees_the_link() {
        struct Holder(#[allow(dead_code)] Option<StreamingGuard>);
        impl Actor for Holder {
            type Context = Context<Self>;
        }
        #[derive(Message)]
        #[rtype(result = "()")]
        struct Stop;
        impl Handler<Stop> for Holder {
            type Result = ();
            fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
                ctx.stop();
            }
        }
        let c = ReconnectCoordinator::default().start();
        let guard = c
            .send(EnterStreaming {
                session: "a".into(),
            })
            .await
            .unwrap();
        let holder = Holder(Some(guard)).start();
        let waiter = acquire(&c, "b");
        settle(&c).await;
        assert_eq!(stats(&c).await.streaming, 1);
        holder.do_send(Stop);
        let slot = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("granted once the holder stopped")
            .unwrap();
        assert!(slot.is_some());
        assert_eq!(stats(&c).await.streaming, 0);
    }

    #[actix_rt::test]
    async fn one_grant_at_a_time_and_no_double_grant() {
        let c = ReconnectCoordinator::default().start();
        let first = acquire(&c, "a");
        let second = acquire(&c, "b");
        let slot = tokio::time::timeout(Duration::from_secs(5), first)
            .await
            .unwrap()
            .unwrap()
            .expect("a slot");
        settle(&c).await;
        assert!(!second.is_finished(), "the slot is taken");
        assert_eq!(stats(&c).await.parked, 1);
        drop(slot);
        let slot = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap()
            .expect("a slot");
        assert_eq!(stats(&c).await.grants, 2);
        drop(slot);
    }

    #[actix_rt::test]
    async fn cancelling_a_parked_waiter_releases_its_place() {
        let c = ReconnectCoordinator::default().start();
        let streaming = c
            .send(EnterStreaming {
                session: "x".into(),
            })
            .await
            .unwrap();
        let cancelled = acquire(&c, "a");
        let kept = acquire(&c, "b");
        settle(&c).await;
        assert_eq!(stats(&c).await.parked, 2);
        cancelled.abort();
        let _ = cancelled.await;
        assert_eq!(stats(&c).await.parked, 1);
        drop(streaming);
        let slot = tokio::time::timeout(Duration::from_secs(5), kept)
            .await
            .unwrap()
            .unwrap();
        assert!(slot.is_some());
        assert_eq!(stats(&c).await.grants, 1);
    }

    #[actix_rt::test]
    async fn streaming_of_a_blocked_sub_session_does_not_hold_the_link() {
        // a and b each stream one kind while their other kind is parked:
        // neither can advance, so their streams must not block (else each
        // would wait for the other forever).
        let c = ReconnectCoordinator::default().start();
        let a_tx = c
            .send(EnterStreaming {
                session: "a".into(),
            })
            .await
            .unwrap();
        let _b_tx = c
            .send(EnterStreaming {
                session: "b".into(),
            })
            .await
            .unwrap();
        let a_diff = acquire(&c, "a");
        settle(&c).await;
        assert!(!a_diff.is_finished(), "b can advance: a waits");
        let b_diff = acquire(&c, "b");
        let first = tokio::time::timeout(Duration::from_secs(5), a_diff)
            .await
            .expect("both blocked: the link counts as quiet")
            .unwrap()
            .expect("a slot");
        drop(first);
        settle(&c).await;
        assert!(!b_diff.is_finished(), "a can advance again: b waits for it");
        drop(a_tx);
        tokio::time::timeout(Duration::from_secs(5), b_diff)
            .await
            .expect("a finished streaming: b goes")
            .unwrap()
            .expect("a slot");
    }
}

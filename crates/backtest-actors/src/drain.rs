//! Completion drain: do not report `completed` before the data is all in.
//!
//! The control plane's `completed` and the data plane's trailing
//! notifications travel on different sockets, so `completed` often overtakes
//! the last notifications. Reporting it at once would hand the consumer a
//! truncated capture that looks complete. Instead the supervisor enters a
//! drain: it keeps delivering notifications until every subscription has sent
//! its `subscriptionComplete`, and only then reports `completed`.
//!
//! The drain must not hang forever either. An idle timeout bounds the gap
//! between notifications (not the total drain time: a large backlog may take
//! long, as long as it keeps flowing). The timer only runs while some
//! subscription is connected and silent; a subscription that is reconnecting
//! or parked on the coordinator is making progress of its own kind, so while
//! any is, the timer is paused, and it restarts from zero when they are back.
//!
//! The state machine is fed events and asked for a verdict with an explicit
//! `now`, so the supervisor owns the timer and the rules are tested exactly.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// Reference idle timeout of the drain.
pub const DEFAULT_DRAIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a subscription connection is doing, as the drain needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    /// Connected and subscribed; notifications may flow.
    Streaming,
    /// Dropped, backing off or reconnecting.
    Reconnecting,
    /// Waiting on the reconnect coordinator for a quiet link.
    Parked,
    /// Sent `subscriptionComplete` for every subscription it holds. Terminal.
    Complete,
    /// Gave up (budget exhausted or fatal error). Terminal.
    Failed(String),
}

impl SubState {
    fn is_terminal(&self) -> bool {
        matches!(self, SubState::Complete | SubState::Failed(_))
    }

    fn pauses_timer(&self) -> bool {
        matches!(self, SubState::Reconnecting | SubState::Parked)
    }
}

/// The drain's answer to "are we done?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainVerdict<Id> {
    /// Control has not reported `completed` yet.
    NotDraining,
    /// Keep delivering. With `Some`, poll again at the deadline (the timer is
    /// running); with `None`, the timer is paused and only an event can
    /// change the verdict.
    Waiting {
        /// When the current idle gap would become a stall.
        idle_deadline: Option<Instant>,
    },
    /// Every subscription completed (or there were none): report `completed`.
    Complete,
    /// A connected subscription went silent past the idle timeout: the capture
    /// is incomplete, fail loudly.
    Stalled {
        /// A subscription that was connected and silent.
        subscription: Id,
        /// How long nothing arrived.
        idle: Duration,
    },
    /// A subscription failed: the capture is incomplete, fail loudly.
    Failed {
        /// The failed subscription.
        subscription: Id,
        /// Its failure reason.
        reason: String,
    },
}

/// Completion-drain state of one session. `Id` names a subscription
/// connection; ordering makes verdicts deterministic when several qualify.
#[derive(Debug, Clone)]
pub struct DrainState<Id> {
    idle_timeout: Duration,
    draining: bool,
    subscriptions: BTreeMap<Id, SubState>,
    /// Start of the current idle gap; `Some` exactly while the timer runs.
    idle_since: Option<Instant>,
}

impl<Id: Ord + Clone> DrainState<Id> {
    /// Change the idle timeout (applies to the next `poll`).
    pub fn set_idle_timeout(&mut self, idle_timeout: Duration) {
        self.idle_timeout = idle_timeout;
    }

    /// A drain that declares a stall after `idle_timeout` of silence.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout,
            draining: false,
            subscriptions: BTreeMap::new(),
            idle_since: None,
        }
    }

    /// Whether control has reported `completed`.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Control reported `completed`: the drain starts. Repeated calls are
    /// ignored.
    pub fn control_completed(&mut self, now: Instant) {
        if !self.draining {
            self.draining = true;
            self.refresh_timer(now);
        }
    }

    /// A trailing notification was delivered: the idle gap starts over.
    pub fn notification(&mut self, now: Instant) {
        if let Some(since) = &mut self.idle_since {
            *since = (*since).max(now);
        }
    }

    /// A subscription connection changed state (the first report registers
    /// it). `Complete` and `Failed` are terminal: later reports for the same
    /// id are ignored, so a late status message cannot reopen a finished
    /// stream. A subscription completing counts as activity: its end marker is
    /// the last frame of its stream.
    pub fn subscription_state(&mut self, id: Id, state: SubState, now: Instant) {
        let previous = self.subscriptions.get(&id);
        if previous.is_some_and(SubState::is_terminal) {
            return;
        }
        let completes = state == SubState::Complete;
        self.subscriptions.insert(id, state);
        if completes {
            self.notification(now);
        }
        self.refresh_timer(now);
    }

    /// The verdict at `now`.
    pub fn poll(&self, now: Instant) -> DrainVerdict<Id> {
        if !self.draining {
            return DrainVerdict::NotDraining;
        }
        if let Some((id, reason)) = self.subscriptions.iter().find_map(|(id, s)| match s {
            SubState::Failed(reason) => Some((id, reason)),
            _ => None,
        }) {
            return DrainVerdict::Failed {
                subscription: id.clone(),
                reason: reason.clone(),
            };
        }
        if self
            .subscriptions
            .values()
            .all(|s| *s == SubState::Complete)
        {
            return DrainVerdict::Complete;
        }
        let Some(since) = self.idle_since else {
            return DrainVerdict::Waiting {
                idle_deadline: None,
            };
        };
        let idle = now.saturating_duration_since(since);
        if idle > self.idle_timeout {
            let silent = self
                .subscriptions
                .iter()
                .find(|(_, s)| **s == SubState::Streaming)
                .map(|(id, _)| id.clone());
            if let Some(subscription) = silent {
                return DrainVerdict::Stalled { subscription, idle };
            }
        }
        DrainVerdict::Waiting {
            idle_deadline: Some(since + self.idle_timeout),
        }
    }

    /// Start or stop the idle timer after a change. It runs while draining,
    /// with at least one subscription streaming and none reconnecting or
    /// parked; a (re)start counts the gap from `now`.
    fn refresh_timer(&mut self, now: Instant) {
        let any_streaming = self
            .subscriptions
            .values()
            .any(|s| *s == SubState::Streaming);
        let any_paused = self.subscriptions.values().any(SubState::pauses_timer);
        let running = self.draining && any_streaming && !any_paused;
        match (running, self.idle_since) {
            (true, None) => self.idle_since = Some(now),
            (false, Some(_)) => self.idle_since = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn drain() -> (DrainState<&'static str>, Instant) {
        (DrainState::new(TIMEOUT), Instant::now())
    }

    fn waiting_until(t: Instant) -> DrainVerdict<&'static str> {
        DrainVerdict::Waiting {
            idle_deadline: Some(t),
        }
    }

    const PAUSED: DrainVerdict<&str> = DrainVerdict::Waiting {
        idle_deadline: None,
    };

    #[test]
    fn not_draining_before_control_completed() {
        let (mut d, t0) = drain();
        d.subscription_state("tx", SubState::Complete, t0);
        d.subscription_state("diff", SubState::Failed("boom".into()), t0);
        assert_eq!(d.poll(t0 + s(1000)), DrainVerdict::NotDraining);
        assert!(!d.is_draining());
    }

    #[test]
    fn no_subscriptions_completes_at_once() {
        let (mut d, t0) = drain();
        d.control_completed(t0);
        assert_eq!(d.poll(t0), DrainVerdict::Complete);
    }

    #[test]
    fn completes_when_every_subscription_completed() {
        let (mut d, t0) = drain();
        d.subscription_state("tx", SubState::Streaming, t0);
        d.subscription_state("diff", SubState::Streaming, t0);
        d.control_completed(t0 + s(1));
        assert_eq!(d.poll(t0 + s(1)), waiting_until(t0 + s(61)));
        d.subscription_state("tx", SubState::Complete, t0 + s(2));
        assert_eq!(d.poll(t0 + s(2)), waiting_until(t0 + s(62)));
        d.subscription_state("diff", SubState::Complete, t0 + s(3));
        assert_eq!(d.poll(t0 + s(3)), DrainVerdict::Complete);
    }

    #[test]
    fn completion_before_control_completed_is_remembered() {
        let (mut d, t0) = drain();
        d.subscription_state("tx", SubState::Streaming, t0);
        d.subscription_state("tx", SubState::Complete, t0 + s(5));
        d.control_completed(t0 + s(6));
        assert_eq!(d.poll(t0 + s(6)), DrainVerdict::Complete);
    }

    #[test]
    fn any_failed_fails_the_drain() {
        let (mut d, t0) = drain();
        d.subscription_state("a", SubState::Complete, t0);
        d.subscription_state("b", SubState::Failed("budget exhausted".into()), t0);
        d.control_completed(t0);
        assert_eq!(
            d.poll(t0),
            DrainVerdict::Failed {
                subscription: "b",
                reason: "budget exhausted".into()
            }
        );
    }

    #[test]
    fn terminal_states_are_sticky() {
        let (mut d, t0) = drain();
        d.subscription_state("a", SubState::Complete, t0);
        d.subscription_state("a", SubState::Reconnecting, t0);
        d.subscription_state("b", SubState::Failed("x".into()), t0);
        d.subscription_state("b", SubState::Streaming, t0);
        d.control_completed(t0);
        assert_eq!(
            d.poll(t0),
            DrainVerdict::Failed {
                subscription: "b",
                reason: "x".into()
            }
        );
    }

    #[test]
    fn silent_streaming_subscription_stalls_after_the_timeout() {
        let (mut d, t0) = drain();
        d.subscription_state("tx", SubState::Streaming, t0);
        d.control_completed(t0);
        // Exactly at the timeout is not yet a stall.
        assert_eq!(d.poll(t0 + TIMEOUT), waiting_until(t0 + TIMEOUT));
        assert_eq!(
            d.poll(t0 + TIMEOUT + Duration::from_millis(1)),
            DrainVerdict::Stalled {
                subscription: "tx",
                idle: TIMEOUT + Duration::from_millis(1)
            }
        );
    }

    #[test]
    fn timeout_bounds_the_gap_not_the_total() {
        let (mut d, t0) = drain();
        d.subscription_state("tx", SubState::Streaming, t0);
        d.control_completed(t0);
        // A notification every 50 s for 10 minutes never stalls.
        for i in 1..=12 {
            let t = t0 + s(50 * i);
            assert_eq!(d.poll(t), waiting_until(t0 + s(50 * (i - 1) + 60)));
            d.notification(t);
        }
        let last = t0 + s(600);
        assert_eq!(d.poll(last + s(60)), waiting_until(last + s(60)));
        assert_eq!(
            d.poll(last + s(61)),
            DrainVerdict::Stalled {
                subscription: "tx",
                idle: s(61)
            }
        );
    }

    #[test]
    fn notifications_before_the_drain_do_not_start_the_timer() {
        let (mut d, t0) = drain();
        d.subscription_state("tx", SubState::Streaming, t0);
        d.notification(t0 + s(10));
        d.control_completed(t0 + s(100));
        assert_eq!(d.poll(t0 + s(159)), waiting_until(t0 + s(160)));
    }

    #[test]
    fn reconnecting_and_parked_are_not_stalls() {
        for paused in [SubState::Reconnecting, SubState::Parked] {
            let (mut d, t0) = drain();
            d.subscription_state("tx", paused.clone(), t0);
            d.control_completed(t0);
            assert_eq!(d.poll(t0 + s(3600)), PAUSED, "{paused:?}");
        }
    }

    #[test]
    fn reconnecting_pauses_the_timer_and_restarts_it_when_back_up() {
        let (mut d, t0) = drain();
        d.subscription_state("tx", SubState::Streaming, t0);
        d.control_completed(t0);
        // 50 s of silence, then the connection drops.
        d.subscription_state("tx", SubState::Reconnecting, t0 + s(50));
        assert_eq!(d.poll(t0 + s(200)), PAUSED);
        d.subscription_state("tx", SubState::Parked, t0 + s(200));
        assert_eq!(d.poll(t0 + s(500)), PAUSED);
        // Back up at 500 s: a full timeout from there, not 10 s.
        d.subscription_state("tx", SubState::Streaming, t0 + s(500));
        assert_eq!(d.poll(t0 + s(560)), waiting_until(t0 + s(560)));
        assert_eq!(
            d.poll(t0 + s(561)),
            DrainVerdict::Stalled {
                subscription: "tx",
                idle: s(61)
            }
        );
    }

    #[test]
    fn a_sibling_reconnecting_pauses_the_timer_for_everyone() {
        let (mut d, t0) = drain();
        d.subscription_state("a", SubState::Streaming, t0);
        d.subscription_state("b", SubState::Reconnecting, t0);
        d.control_completed(t0);
        assert_eq!(d.poll(t0 + s(300)), PAUSED);
        d.subscription_state("b", SubState::Streaming, t0 + s(300));
        assert_eq!(d.poll(t0 + s(300)), waiting_until(t0 + s(360)));
    }

    #[test]
    fn a_subscription_completing_counts_as_activity() {
        let (mut d, t0) = drain();
        d.subscription_state("a", SubState::Streaming, t0);
        d.subscription_state("b", SubState::Streaming, t0);
        d.control_completed(t0);
        d.subscription_state("a", SubState::Complete, t0 + s(40));
        assert_eq!(d.poll(t0 + s(90)), waiting_until(t0 + s(100)));
        assert_eq!(
            d.poll(t0 + s(101)),
            DrainVerdict::Stalled {
                subscription: "b",
                idle: s(61)
            }
        );
    }

    #[test]
    fn streaming_state_repeated_does_not_reset_the_timer() {
        let (mut d, t0) = drain();
        d.subscription_state("a", SubState::Streaming, t0);
        d.control_completed(t0);
        d.subscription_state("a", SubState::Streaming, t0 + s(30));
        assert_eq!(d.poll(t0 + s(30)), waiting_until(t0 + s(60)));
    }

    #[test]
    fn repeated_control_completed_is_ignored() {
        let (mut d, t0) = drain();
        d.subscription_state("a", SubState::Streaming, t0);
        d.control_completed(t0);
        d.control_completed(t0 + s(50));
        assert_eq!(d.poll(t0 + s(50)), waiting_until(t0 + s(60)));
    }

    #[test]
    fn failure_wins_over_a_stall() {
        let (mut d, t0) = drain();
        d.subscription_state("a", SubState::Streaming, t0);
        d.control_completed(t0);
        d.subscription_state("b", SubState::Failed("gone".into()), t0 + s(1));
        assert_eq!(
            d.poll(t0 + s(500)),
            DrainVerdict::Failed {
                subscription: "b",
                reason: "gone".into()
            }
        );
    }
}

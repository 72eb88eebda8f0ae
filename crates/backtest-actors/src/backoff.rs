//! Reconnect policy and the budget that enforces it.
//!
//! Every connection (control or subscription) that drops is retried by its
//! supervisor. Retrying forever would hide a dead server; giving up on the
//! first blip would make long backtests fragile. The budget below encodes the
//! middle ground:
//!
//! * the first retry after a healthy connection drops fires at once (most
//!   drops are a proxy or load balancer recycling an idle socket);
//! * later retries back off exponentially with jitter, so many clients that
//!   lost the same server do not reconnect in lockstep;
//! * a streak of failures is bounded both by a number of attempts and by wall
//!   clock time, whichever comes first;
//! * a connection that stayed up long enough proves the server is fine again,
//!   so the next drop starts a fresh streak;
//! * time spent parked on the reconnect coordinator (deliberately waiting for
//!   siblings in a parallel batch) is not counted against the wall clock.
//!
//! The budget is a plain value: it never reads the clock or a random source.
//! Callers pass `now` and a jitter sample, which keeps every rule testable
//! exactly and keeps timing decisions in the actor that owns the timer.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    time::{Duration, Instant},
};

/// Tunable reconnect policy. [`Default`] gives the reference values.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectPolicy {
    /// Delay before the first backed-off attempt.
    pub initial_backoff: Duration,
    /// Factor applied to the delay after each backed-off attempt.
    pub multiplier: f64,
    /// Upper bound of the delay before jitter is applied.
    pub max_backoff: Duration,
    /// Relative jitter amplitude: 0.2 means the delay is spread over ±20 %.
    pub jitter: f64,
    /// Attempts allowed in one failure streak.
    pub max_attempts: u32,
    /// Wall-clock time allowed for one failure streak (parked time excluded).
    pub max_total: Duration,
    /// Uptime after which a connection counts as healthy, so that its drop
    /// starts a new streak with the full budget.
    pub uptime_reset: Duration,
    /// Attempts that may fire without asking the reconnect coordinator; later
    /// ones are `gated` (in a parallel batch they park until the link is
    /// quiet).
    pub ungated_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(30),
            jitter: 0.2,
            max_attempts: 20,
            max_total: Duration::from_secs(5 * 60),
            uptime_reset: Duration::from_secs(30),
            ungated_attempts: 5,
        }
    }
}

/// One permitted reconnect attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based number of this attempt within the current failure streak.
    pub number: u32,
    /// How long to wait before connecting.
    pub delay: Duration,
    /// `true` once the ungated attempts are used up: the caller must take a
    /// reconnect slot from the coordinator (when it has one) before
    /// connecting.
    pub gated: bool,
}

/// Which limit ended the streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetLimit {
    /// `max_attempts` reached.
    Attempts,
    /// `max_total` wall-clock time exceeded.
    WallClock,
}

/// The reconnect budget is used up; the connection should be reported
/// `Failed` with this as the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "reconnect budget exhausted ({}): {attempts} attempts over {elapsed:?}",
    match limit { BudgetLimit::Attempts => "attempt limit", BudgetLimit::WallClock => "time limit" }
)]
pub struct BudgetExhausted {
    /// The limit that was hit.
    pub limit: BudgetLimit,
    /// Attempts made in the streak.
    pub attempts: u32,
    /// Wall-clock time of the streak, parked time excluded.
    pub elapsed: Duration,
}

/// Per-connection reconnect bookkeeping. See the module docs for the rules.
#[derive(Debug, Clone)]
pub struct ReconnectBudget {
    policy: ReconnectPolicy,
    /// Attempts made in the current streak.
    attempts: u32,
    /// Base delay (before jitter) of the next backed-off attempt.
    next_backoff: Duration,
    /// Start of the current streak's wall clock (shifted by parked time).
    streak_start: Instant,
    /// When the current connection came up, while it is up.
    up_since: Option<Instant>,
    /// The next attempt is the first one after a healthy connection dropped.
    immediate_next: bool,
}

impl ReconnectBudget {
    /// A fresh budget. `now` is when the first connect is tried: if it fails,
    /// the initial attempts count against the wall clock from here.
    pub fn new(policy: ReconnectPolicy, now: Instant) -> Self {
        let next_backoff = policy.initial_backoff;
        Self {
            policy,
            attempts: 0,
            next_backoff,
            streak_start: now,
            up_since: None,
            immediate_next: false,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &ReconnectPolicy {
        &self.policy
    }

    /// Attempts made in the current streak.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether a connection is currently up (between `on_up` and `on_down`).
    pub fn is_up(&self) -> bool {
        self.up_since.is_some()
    }

    /// A connection came up (connect and handshake succeeded).
    ///
    /// This does not reset the streak by itself: a connection that comes up and
    /// falls over at once is still part of the same trouble. The reset happens
    /// in [`Self::on_down`] once the uptime is known.
    pub fn on_up(&mut self, now: Instant) {
        self.up_since = Some(now);
        self.immediate_next = false;
    }

    /// The connection that was up went down.
    ///
    /// The first attempt after the drop of a connection that was up is
    /// immediate, and the backoff ladder restarts from `initial_backoff`: a
    /// connection that was just working most likely comes back at once, and
    /// a resumed stream should not wait a second per drop. What bounds a
    /// flapping server is the attempt count and the wall clock: they start
    /// over only when the connection stayed up for at least `uptime_reset`,
    /// so a connection that keeps dropping soon after coming up still runs
    /// out of budget.
    ///
    /// Calling this without a preceding [`Self::on_up`] (a failed connect) is
    /// harmless and changes nothing.
    pub fn on_down(&mut self, now: Instant) {
        let Some(up_since) = self.up_since.take() else {
            return;
        };
        if now.saturating_duration_since(up_since) >= self.policy.uptime_reset {
            self.attempts = 0;
        }
        if self.attempts == 0 {
            // A new streak: its wall clock starts with this failure.
            self.streak_start = now;
        }
        self.next_backoff = self.policy.initial_backoff;
        self.immediate_next = true;
    }

    /// Remove time spent parked on the reconnect coordinator from the
    /// wall-clock budget. Parking is deliberate waiting, not failing; the
    /// attempt limit still bounds the streak.
    pub fn discount_parked(&mut self, parked: Duration) {
        self.streak_start = self
            .streak_start
            .checked_add(parked)
            .unwrap_or(self.streak_start);
    }

    /// Wall-clock time of the current streak at `now`, parked time excluded.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.streak_start)
    }

    /// Ask for the next attempt.
    ///
    /// `jitter` is a sample in `[-1, 1]` (clamped), scaled by
    /// `policy.jitter`; pass `0.0` for no jitter, or [`random_jitter`].
    /// Once exhausted, every later call returns the same kind of error
    /// until a new streak starts.
    pub fn next_attempt(&mut self, now: Instant, jitter: f64) -> Result<Attempt, BudgetExhausted> {
        let elapsed = self.elapsed(now);
        let limit = if self.attempts >= self.policy.max_attempts {
            Some(BudgetLimit::Attempts)
        } else if elapsed > self.policy.max_total {
            Some(BudgetLimit::WallClock)
        } else {
            None
        };
        if let Some(limit) = limit {
            return Err(BudgetExhausted {
                limit,
                attempts: self.attempts,
                elapsed,
            });
        }

        self.attempts += 1;
        let delay = if std::mem::take(&mut self.immediate_next) {
            Duration::ZERO
        } else {
            let base = self.next_backoff.min(self.policy.max_backoff);
            self.next_backoff = scale(base, self.policy.multiplier).min(self.policy.max_backoff);
            let sample = if jitter.is_finite() {
                jitter.clamp(-1.0, 1.0)
            } else {
                0.0
            };
            scale(base, 1.0 + self.policy.jitter * sample)
        };
        Ok(Attempt {
            number: self.attempts,
            delay,
            gated: self.attempts > self.policy.ungated_attempts,
        })
    }
}

/// `d * factor`, rounded to whole nanoseconds (so decimal factors give exact
/// results), never negative, saturating on overflow.
fn scale(d: Duration, factor: f64) -> Duration {
    let nanos = (d.as_nanos() as f64 * factor).round();
    if nanos.is_nan() || nanos <= 0.0 {
        Duration::ZERO
    } else if nanos >= u64::MAX as f64 {
        Duration::from_nanos(u64::MAX)
    } else {
        Duration::from_nanos(nanos as u64)
    }
}

/// A jitter sample in `[-1, 1]` from the standard library's randomly seeded
/// hasher. Good enough to spread reconnects; not for anything secret.
pub fn random_jitter() -> f64 {
    let bits = RandomState::new().build_hasher().finish();
    // 53 random bits mapped onto [0, 1], then onto [-1, 1].
    let unit = (bits >> 11) as f64 / ((1u64 << 53) - 1) as f64;
    unit * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn budget() -> (ReconnectBudget, Instant) {
        let t0 = Instant::now();
        (ReconnectBudget::new(ReconnectPolicy::default(), t0), t0)
    }

    #[test]
    fn defaults_are_the_reference_values() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.initial_backoff, secs(1));
        assert_eq!(p.multiplier, 2.0);
        assert_eq!(p.max_backoff, secs(30));
        assert_eq!(p.jitter, 0.2);
        assert_eq!(p.max_attempts, 20);
        assert_eq!(p.max_total, secs(300));
        assert_eq!(p.uptime_reset, secs(30));
        assert_eq!(p.ungated_attempts, 5);
    }

    #[test]
    fn first_attempt_after_drop_is_immediate_then_backoff_grows_and_caps() {
        let (mut b, t0) = budget();
        b.on_up(t0);
        b.on_down(t0 + secs(100));
        let now = t0 + secs(100);
        let delays: Vec<Duration> = (0..9)
            .map(|_| b.next_attempt(now, 0.0).unwrap().delay)
            .collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 30, 30, 30].map(secs).to_vec(),);
    }

    #[test]
    fn initial_connect_failure_backs_off_from_the_first_retry() {
        let (mut b, t0) = budget();
        // The first connect failed: no on_up, so no immediate retry.
        let a = b.next_attempt(t0, 0.0).unwrap();
        assert_eq!(
            a,
            Attempt {
                number: 1,
                delay: secs(1),
                gated: false
            }
        );
        assert_eq!(b.next_attempt(t0, 0.0).unwrap().delay, secs(2));
    }

    #[test]
    fn jitter_is_applied_after_the_cap() {
        let (mut b, t0) = budget();
        assert_eq!(
            b.next_attempt(t0, 1.0).unwrap().delay,
            Duration::from_millis(1200)
        );
        assert_eq!(
            b.next_attempt(t0, -1.0).unwrap().delay,
            Duration::from_millis(1600)
        );
        assert_eq!(
            b.next_attempt(t0, 0.5).unwrap().delay,
            Duration::from_millis(4400)
        );
        // Out-of-range samples are clamped; NaN means no jitter.
        assert_eq!(
            b.next_attempt(t0, 7.0).unwrap().delay,
            Duration::from_millis(9600)
        );
        assert_eq!(b.next_attempt(t0, f64::NAN).unwrap().delay, secs(16));
        // 32 s would exceed the cap: 30 s, then +20 %.
        assert_eq!(b.next_attempt(t0, 1.0).unwrap().delay, secs(36));
        assert_eq!(b.next_attempt(t0, -1.0).unwrap().delay, secs(24));
    }

    #[test]
    fn attempts_are_numbered_and_gated_after_the_ungated_ones() {
        let (mut b, t0) = budget();
        b.on_up(t0);
        b.on_down(t0);
        let attempts: Vec<(u32, bool)> = (0..7)
            .map(|_| {
                let a = b.next_attempt(t0, 0.0).unwrap();
                (a.number, a.gated)
            })
            .collect();
        assert_eq!(
            attempts,
            [
                (1, false),
                (2, false),
                (3, false),
                (4, false),
                (5, false),
                (6, true),
                (7, true)
            ]
        );
    }

    #[test]
    fn exhausted_after_max_attempts() {
        let (mut b, t0) = budget();
        for n in 1..=20 {
            assert_eq!(b.next_attempt(t0, 0.0).unwrap().number, n);
        }
        let err = b.next_attempt(t0 + secs(7), 0.0).unwrap_err();
        assert_eq!(
            err,
            BudgetExhausted {
                limit: BudgetLimit::Attempts,
                attempts: 20,
                elapsed: secs(7)
            }
        );
        assert!(err.to_string().contains("attempt limit"), "{err}");
        // Stays exhausted.
        assert!(b.next_attempt(t0 + secs(8), 0.0).is_err());
        assert_eq!(b.attempts(), 20);
    }

    #[test]
    fn exhausted_when_wall_clock_exceeds_max_total() {
        let (mut b, t0) = budget();
        b.on_up(t0);
        b.on_down(t0 + secs(10));
        b.next_attempt(t0 + secs(10), 0.0).unwrap();
        // Exactly at the limit is still allowed; beyond it is not.
        assert!(b.next_attempt(t0 + secs(310), 0.0).is_ok());
        let err = b.next_attempt(t0 + secs(311), 0.0).unwrap_err();
        assert_eq!(
            err,
            BudgetExhausted {
                limit: BudgetLimit::WallClock,
                attempts: 2,
                elapsed: secs(301)
            }
        );
        assert!(err.to_string().contains("time limit"), "{err}");
    }

    #[test]
    fn wall_clock_of_initial_connect_counts_from_new() {
        let (mut b, t0) = budget();
        let err = b.next_attempt(t0 + secs(301), 0.0).unwrap_err();
        assert_eq!(err.limit, BudgetLimit::WallClock);
        assert_eq!(err.attempts, 0);
    }

    #[test]
    fn long_uptime_resets_attempts_backoff_and_wall_clock() {
        let (mut b, t0) = budget();
        for _ in 0..10 {
            b.next_attempt(t0, 0.0).unwrap();
        }
        b.on_up(t0 + secs(200));
        b.on_down(t0 + secs(230)); // exactly uptime_reset
        assert_eq!(b.attempts(), 0);
        assert_eq!(b.elapsed(t0 + secs(230)), Duration::ZERO);
        let a = b.next_attempt(t0 + secs(230), 0.0).unwrap();
        assert_eq!(
            a,
            Attempt {
                number: 1,
                delay: Duration::ZERO,
                gated: false
            }
        );
        assert_eq!(b.next_attempt(t0 + secs(230), 0.0).unwrap().delay, secs(1));
        // The old streak's wall clock is gone: 5 min from the new drop is fine.
        assert!(b.next_attempt(t0 + secs(530), 0.0).is_ok());
    }

    #[test]
    fn short_uptime_keeps_counting_but_retries_at_once() {
        let (mut b, t0) = budget();
        b.on_up(t0);
        b.on_down(t0 + secs(60));
        assert_eq!(
            b.next_attempt(t0 + secs(60), 0.0).unwrap().delay,
            Duration::ZERO
        );
        assert_eq!(b.next_attempt(t0 + secs(60), 0.0).unwrap().delay, secs(1));
        assert_eq!(b.next_attempt(t0 + secs(61), 0.0).unwrap().delay, secs(2));
        // Up for 29 s only: same streak (attempts go on counting), but the
        // first retry after a drop is immediate and the ladder restarts.
        b.on_up(t0 + secs(63));
        b.on_down(t0 + secs(92));
        let a = b.next_attempt(t0 + secs(92), 0.0).unwrap();
        assert_eq!(
            a,
            Attempt {
                number: 4,
                delay: Duration::ZERO,
                gated: false
            }
        );
        assert_eq!(b.next_attempt(t0 + secs(92), 0.0).unwrap().delay, secs(1));
        // The wall clock still counts from the first drop at t0+60.
        assert_eq!(b.elapsed(t0 + secs(92)), secs(32));
    }

    #[test]
    fn on_down_without_on_up_is_a_no_op() {
        let (mut b, t0) = budget();
        b.next_attempt(t0, 0.0).unwrap();
        b.on_down(t0 + secs(100));
        assert_eq!(b.attempts(), 1);
        assert_eq!(b.next_attempt(t0 + secs(100), 0.0).unwrap().delay, secs(2));
    }

    #[test]
    fn parked_time_is_not_counted() {
        let (mut b, t0) = budget();
        b.on_up(t0);
        b.on_down(t0);
        for _ in 0..6 {
            b.next_attempt(t0, 0.0).unwrap();
        }
        // Parked for 10 minutes, then 20 s more of trying.
        b.discount_parked(secs(600));
        assert_eq!(b.elapsed(t0 + secs(620)), secs(20));
        assert!(b.next_attempt(t0 + secs(620), 0.0).is_ok());
        // Not more than 5 min of real trying after the park.
        let err = b.next_attempt(t0 + secs(901), 0.0).unwrap_err();
        assert_eq!(err.limit, BudgetLimit::WallClock);
        assert_eq!(err.elapsed, secs(301));
    }

    #[test]
    fn parked_time_does_not_lift_the_attempt_limit() {
        let (mut b, t0) = budget();
        for _ in 0..20 {
            b.next_attempt(t0, 0.0).unwrap();
        }
        b.discount_parked(secs(1000));
        assert_eq!(
            b.next_attempt(t0, 0.0).unwrap_err().limit,
            BudgetLimit::Attempts
        );
    }

    #[test]
    fn custom_policy_is_respected() {
        let policy = ReconnectPolicy {
            initial_backoff: Duration::from_millis(100),
            multiplier: 3.0,
            max_backoff: Duration::from_millis(500),
            jitter: 0.0,
            max_attempts: 4,
            max_total: secs(1),
            uptime_reset: secs(1),
            ungated_attempts: 1,
        };
        let t0 = Instant::now();
        let mut b = ReconnectBudget::new(policy, t0);
        let got: Vec<(u64, bool)> = (0..4)
            .map(|_| {
                let a = b.next_attempt(t0, 1.0).unwrap();
                (a.delay.as_millis() as u64, a.gated)
            })
            .collect();
        assert_eq!(got, [(100, false), (300, true), (500, true), (500, true)]);
        assert_eq!(
            b.next_attempt(t0, 0.0).unwrap_err().limit,
            BudgetLimit::Attempts
        );
    }

    #[test]
    fn random_jitter_stays_in_range() {
        for _ in 0..1000 {
            let j = random_jitter();
            assert!((-1.0..=1.0).contains(&j), "{j}");
        }
    }
}

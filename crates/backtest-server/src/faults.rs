//! Fault injection: which faults a server injects, parsed from `--fault SPEC`
//! flags or set in [`crate::ServerConfig`], and the per-session bookkeeping
//! that decides when each one fires.
//!
//! Faults are off by default. Each one is deterministic for a given
//! configuration (random drops use a seeded generator) so tests can prove
//! recovery paths exactly, and every fault that fires is logged at `info`
//! with the session id and its position in the stream.

use std::{
    collections::HashSet,
    fmt,
    sync::{
        Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

/// The faults a server injects. Counts are in frames (control plane) or
/// notifications (data plane) sent on one connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// Drop the control connection (no close frame) once it has sent this
    /// many frames. Fires once per session.
    pub control_drop_after: Option<u64>,
    /// Close the control connection with code 1012 (service restart) once it
    /// has sent this many frames. Fires once per session.
    pub close_1012_after: Option<u64>,
    /// Drop a data connection once it has sent this many notifications.
    /// Fires once per session and subscription kind.
    pub data_drop_after: Option<u64>,
    /// Stop sending on a data connection (the socket stays open and pings are
    /// still answered) once it has sent this many notifications. Fires once
    /// per session and subscription kind.
    pub data_stall_after: Option<u64>,
    /// Pause a data connection for the duration (nothing is sent, the socket
    /// stays open and pings are answered), then carry on where it stopped,
    /// at the first slot boundary after it has sent this many
    /// notifications. Fires once per session and subscription kind. A pause
    /// shorter than a client's completion-drain idle timeout must not fail
    /// its session; a longer one during the drain may.
    pub data_pause_after: Option<(u64, Duration)>,
    /// Answer the first K attach requests of each session with
    /// `sessionOwnershipBusy`.
    pub attach_busy: u32,
    /// Send a non-JSON text frame before every N-th frame of a connection.
    pub garbage_every: Option<u64>,
    /// Throttle every connection's writes to this many bytes per second.
    pub link_bytes_per_sec: Option<u64>,
    /// Drop any connection before a frame with this probability (0..=1).
    pub random_drops: Option<f64>,
    /// Seed for `random_drops`.
    pub seed: u64,
    /// Fail the session with `advanceSlotFailed` when it reaches this slot.
    pub terminal_error_at_slot: Option<u64>,
    /// Refuse every data-plane upgrade (HTTP 503) of the session whose range
    /// starts at this slot: one sub-session of a parallel run can never
    /// subscribe, so its client exhausts its reconnect budget alone.
    pub refuse_data_start_slot: Option<u64>,
}

/// Error parsing a `--fault` specification.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultSpecError {
    #[error("fault `{0}` must be NAME=VALUE")]
    MissingValue(String),
    #[error("unknown fault `{0}` (known: {KNOWN_FAULTS})")]
    Unknown(String),
    #[error("fault `{name}`: `{value}` is not {expected}")]
    BadValue {
        name: String,
        value: String,
        expected: &'static str,
    },
}

const KNOWN_FAULTS: &str = "control-drop-after, close-1012-after, data-drop-after, \
data-stall-after, data-pause-after, attach-busy, garbage-every, link-bytes-per-sec, random-drops, seed, \
terminal-error-at-slot, refuse-data-start-slot";

impl FaultPlan {
    /// Apply one `NAME=VALUE` specification (the `--fault` flag's argument).
    /// Several may be joined with commas: `random-drops=0.01,seed=7`.
    pub fn apply_spec(&mut self, spec: &str) -> Result<(), FaultSpecError> {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| FaultSpecError::MissingValue(part.to_string()))?;
            let (name, value) = (name.trim(), value.trim());
            let count = || positive(name, value);
            match name {
                "control-drop-after" => self.control_drop_after = Some(count()?),
                "close-1012-after" => self.close_1012_after = Some(count()?),
                "data-drop-after" => self.data_drop_after = Some(count()?),
                "data-stall-after" => self.data_stall_after = Some(count()?),
                "data-pause-after" => self.data_pause_after = Some(pause(name, value)?),
                "attach-busy" => {
                    self.attach_busy = u32::try_from(number(name, value)?)
                        .map_err(|_| bad(name, value, "a count that fits in 32 bits"))?
                }
                "garbage-every" => self.garbage_every = Some(count()?),
                "link-bytes-per-sec" => self.link_bytes_per_sec = Some(count()?),
                "random-drops" => {
                    let p: f64 = value
                        .parse()
                        .map_err(|_| bad(name, value, "a probability"))?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(bad(name, value, "a probability between 0 and 1"));
                    }
                    self.random_drops = Some(p);
                }
                "seed" => self.seed = number(name, value)?,
                "refuse-data-start-slot" => {
                    self.refuse_data_start_slot = Some(number(name, value)?)
                }
                "terminal-error-at-slot" => {
                    self.terminal_error_at_slot = Some(number(name, value)?)
                }
                other => return Err(FaultSpecError::Unknown(other.to_string())),
            }
        }
        Ok(())
    }

    /// Parse a list of specifications into a plan.
    pub fn from_specs<S: AsRef<str>>(specs: &[S]) -> Result<Self, FaultSpecError> {
        let mut plan = Self::default();
        for spec in specs {
            plan.apply_spec(spec.as_ref())?;
        }
        Ok(plan)
    }

    /// Whether any fault is configured.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// How long to pause after writing `bytes` to respect the link throttle.
    pub fn throttle_delay(&self, bytes: usize) -> Option<Duration> {
        let rate = self.link_bytes_per_sec?;
        Some(Duration::from_secs_f64(bytes as f64 / rate as f64))
    }
}

fn bad(name: &str, value: &str, expected: &'static str) -> FaultSpecError {
    FaultSpecError::BadValue {
        name: name.to_string(),
        value: value.to_string(),
        expected,
    }
}

fn number(name: &str, value: &str) -> Result<u64, FaultSpecError> {
    value
        .parse()
        .map_err(|_| bad(name, value, "a non-negative integer"))
}

/// `N:MS`: after N notifications (positive), pause for MS milliseconds
/// (positive).
fn pause(name: &str, value: &str) -> Result<(u64, Duration), FaultSpecError> {
    let expected = "N:MS (notifications, then milliseconds, both positive)";
    let (after, millis) = value
        .split_once(':')
        .ok_or_else(|| bad(name, value, expected))?;
    let after = positive(name, after.trim()).map_err(|_| bad(name, value, expected))?;
    let millis = positive(name, millis.trim()).map_err(|_| bad(name, value, expected))?;
    Ok((after, Duration::from_millis(millis)))
}

fn positive(name: &str, value: &str) -> Result<u64, FaultSpecError> {
    match number(name, value)? {
        0 => Err(bad(name, value, "a positive integer")),
        n => Ok(n),
    }
}

/// Which one-shot faults have already fired for a session, so that each
/// fires once per session (and, for the data plane, once per kind).
#[derive(Debug, Default)]
pub struct FaultLedger {
    fired: Mutex<HashSet<&'static str>>,
    attaches_refused: AtomicU32,
    connections: AtomicU64,
}

impl FaultLedger {
    /// Claim a one-shot fault. Returns true the first time only.
    pub fn claim(&self, what: &'static str) -> bool {
        self.fired
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(what)
    }

    /// Whether the next attach must be refused as busy (first `limit` ones).
    pub fn refuse_attach(&self, limit: u32) -> bool {
        self.attaches_refused
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// A fresh number for a new connection of this session (seeds its
    /// random-drop generator so each connection draws its own sequence).
    pub fn next_connection(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::SeqCst)
    }
}

/// A per-connection random source for `random-drops`: splitmix64, seeded
/// from the plan's seed, the session id and the connection number.
#[derive(Debug, Clone)]
pub struct DropDice {
    state: u64,
    probability: f64,
}

impl DropDice {
    /// `None` when random drops are off.
    pub fn new(plan: &FaultPlan, session_id: &str, connection: u64) -> Option<Self> {
        let probability = plan.random_drops.filter(|p| *p > 0.0)?;
        let mut state = plan.seed ^ 0x9E37_79B9_7F4A_7C15;
        for byte in session_id.bytes() {
            state = (state ^ u64::from(byte)).wrapping_mul(0x100_0000_01B3);
        }
        state ^= connection.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Some(Self { state, probability })
    }

    /// Roll once: true means drop the connection now.
    pub fn roll(&mut self) -> bool {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < self.probability
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut push = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                parts.push(format!("{name}={value}"));
            }
        };
        push(
            "control-drop-after",
            self.control_drop_after.map(|v| v.to_string()),
        );
        push(
            "close-1012-after",
            self.close_1012_after.map(|v| v.to_string()),
        );
        push(
            "data-drop-after",
            self.data_drop_after.map(|v| v.to_string()),
        );
        push(
            "data-stall-after",
            self.data_stall_after.map(|v| v.to_string()),
        );
        push(
            "data-pause-after",
            self.data_pause_after
                .map(|(after, pause)| format!("{after}:{}", pause.as_millis())),
        );
        push(
            "attach-busy",
            (self.attach_busy > 0).then(|| self.attach_busy.to_string()),
        );
        push("garbage-every", self.garbage_every.map(|v| v.to_string()));
        push(
            "link-bytes-per-sec",
            self.link_bytes_per_sec.map(|v| v.to_string()),
        );
        push("random-drops", self.random_drops.map(|v| v.to_string()));
        push("seed", self.random_drops.map(|_| self.seed.to_string()));
        push(
            "terminal-error-at-slot",
            self.terminal_error_at_slot.map(|v| v.to_string()),
        );
        push(
            "refuse-data-start-slot",
            self.refuse_data_start_slot.map(|v| v.to_string()),
        );
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault_kind() {
        let plan = FaultPlan::from_specs(&[
            "control-drop-after=10",
            "close-1012-after=11,data-drop-after=12",
            "data-stall-after=13",
            "data-pause-after=14:250",
            "attach-busy=2",
            "garbage-every=5",
            "link-bytes-per-sec=1000",
            "random-drops=0.25,seed=9",
            "terminal-error-at-slot=1005,refuse-data-start-slot=1100",
            "refuse-data-start-slot=1100",
        ])
        .unwrap();
        assert_eq!(
            plan,
            FaultPlan {
                control_drop_after: Some(10),
                close_1012_after: Some(11),
                data_drop_after: Some(12),
                data_stall_after: Some(13),
                data_pause_after: Some((14, Duration::from_millis(250))),
                attach_busy: 2,
                garbage_every: Some(5),
                link_bytes_per_sec: Some(1000),
                random_drops: Some(0.25),
                seed: 9,
                terminal_error_at_slot: Some(1005),
                refuse_data_start_slot: Some(1100),
            }
        );
        assert_eq!(
            plan.to_string(),
            "control-drop-after=10,close-1012-after=11,data-drop-after=12,data-stall-after=13,\
data-pause-after=14:250,attach-busy=2,garbage-every=5,link-bytes-per-sec=1000,random-drops=0.25,seed=9,\
terminal-error-at-slot=1005,refuse-data-start-slot=1100"
        );
        assert_eq!(FaultPlan::default().to_string(), "none");
    }

    #[test]
    fn rejects_bad_specs_with_clear_errors() {
        assert_eq!(
            FaultPlan::from_specs(&["explode=1"]),
            Err(FaultSpecError::Unknown("explode".into()))
        );
        assert_eq!(
            FaultPlan::from_specs(&["data-drop-after"]),
            Err(FaultSpecError::MissingValue("data-drop-after".into()))
        );
        assert!(matches!(
            FaultPlan::from_specs(&["data-drop-after=0"]),
            Err(FaultSpecError::BadValue {
                expected: "a positive integer",
                ..
            })
        ));
        assert!(matches!(
            FaultPlan::from_specs(&["random-drops=1.5"]),
            Err(FaultSpecError::BadValue { .. })
        ));
        assert!(matches!(
            FaultPlan::from_specs(&["garbage-every=x"]),
            Err(FaultSpecError::BadValue { .. })
        ));
        for pause in ["5", "5:", ":100", "0:100", "5:0", "5:x"] {
            assert!(
                matches!(
                    FaultPlan::from_specs(&[format!("data-pause-after={pause}")]),
                    Err(FaultSpecError::BadValue {
                        expected: "N:MS (notifications, then milliseconds, both positive)",
                        ..
                    })
                ),
                "{pause}"
            );
        }
    }

    #[test]
    fn one_shot_claims_and_attach_refusals_are_counted() {
        let ledger = FaultLedger::default();
        assert!(ledger.claim("control-drop"));
        assert!(!ledger.claim("control-drop"));
        assert!(ledger.claim("data-drop:transaction"));
        assert!(ledger.refuse_attach(2));
        assert!(ledger.refuse_attach(2));
        assert!(!ledger.refuse_attach(2));
        assert!(!FaultLedger::default().refuse_attach(0));
    }

    #[test]
    fn drop_dice_is_reproducible_and_near_its_probability() {
        let plan = FaultPlan {
            random_drops: Some(0.1),
            seed: 42,
            ..FaultPlan::default()
        };
        let rolls = |conn| {
            let mut dice = DropDice::new(&plan, "session-a", conn).unwrap();
            (0..10_000).map(|_| dice.roll()).collect::<Vec<_>>()
        };
        assert_eq!(rolls(0), rolls(0));
        assert_ne!(rolls(0), rolls(1));
        let hits = rolls(0).iter().filter(|hit| **hit).count();
        assert!(
            (800..1200).contains(&hits),
            "{hits} drops in 10000 at p=0.1"
        );
        assert!(DropDice::new(&FaultPlan::default(), "s", 0).is_none());
    }

    #[test]
    fn throttle_delay_follows_the_rate() {
        let plan = FaultPlan {
            link_bytes_per_sec: Some(1000),
            ..FaultPlan::default()
        };
        assert_eq!(plan.throttle_delay(500), Some(Duration::from_millis(500)));
        assert_eq!(FaultPlan::default().throttle_delay(500), None);
    }
}

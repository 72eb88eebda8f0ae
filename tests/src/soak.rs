//! Seeded fault soak: for each seed, a reference server with a random but
//! reproducible mix of faults, one managed session (single or parallel)
//! subscribed to both notification kinds and driven to its end, and a
//! verdict on what the consumer got.
//!
//! Everything a seed does is derived from the seed by [`plan_for`] (its own
//! splitmix64, independent of any crate's generator), so a seed that finds
//! a problem is a deterministic reproduction: `run_seed(seed)` again, or
//! print [`plan_for`]`(seed)` and replay the plan by hand
//! (`backtest server --fault ...`).
//!
//! The checks, per session (a parallel run has one per sub-session):
//!
//! * **completed** ⇒ the capture equals the server's record exactly: every
//!   transaction signature of every program once, in ledger order per
//!   program; every account diff once (as a multiset); every slot once;
//!   `Completed` last;
//! * **failed** ⇒ the reason is explained by an injected fault that can fail
//!   a run: `terminal-error-at-slot=S` in the session's range (control
//!   failed, the reason names `S`), `data-stall-after`, or a
//!   `data-pause-after` longer than the drain idle timeout, that fired (the
//!   completion drain stalled), or a reconnect budget exhausted under
//!   random drops or busy attaches; anything else is a *wrong verdict*. A
//!   failed session's partial capture must still hold no duplicate and
//!   nothing outside its record, in ledger order per program;
//! * the seed ends within [`SEED_WALL_BOUND`], else it is a *hang*;
//! * after `Shutdown` every supervisor has stopped and the server has no
//!   live session left (bounded waits), else it is a *leak*.
//!
//! [`run_many`] adds the process' open file descriptors before and after.
//!
//! Run it outside any async runtime (each seed runs its own actix system on
//! a worker thread); from async code use `spawn_blocking`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix::{Actor, Addr, Context, Handler};
use backtest_actors::{
    BatchEvent, BatchOptions, Continue, GetParallelStatus, GetStatus, ManagedEvent,
    ManagedParallelSession, ManagedSessionError, NextEvent, ParallelSupervisor, ReconnectPolicy,
    SessionSupervisor, Shutdown, SubscribeAccountDiffs, SubscribeTransactions, SupervisorBuilder,
    WaitSession, run_batch,
};
use backtest_server::{
    DiffKey, FaultPlan, Finish, LedgerConfig, RunningServer, ServerConfig, SessionRecord,
};
use simulator_api::{ContinueParams, CreateBacktestSessionRequest};
use tokio_util::sync::CancellationToken;

/// A seed that has not ended after this long is a hang.
pub const SEED_WALL_BOUND: Duration = Duration::from_secs(20);
/// The client's completion-drain idle timeout.
pub const DRAIN_IDLE_TIMEOUT: Duration = Duration::from_millis(500);
/// `disconnectTimeoutSecs` of every session: the server keeps a session
/// this long after its control connection dropped, so the client can
/// re-attach.
pub const DISCONNECT_TIMEOUT_SECS: u64 = 3;
/// Bound of the shutdown and of each leak check.
pub const CLEANUP_BOUND: Duration = Duration::from_secs(10);

/// First slot of the soak's data set.
const FIRST_SLOT: u64 = 1000;
/// Last slot of the soak's data set.
const LAST_SLOT: u64 = 1999;
/// Bundle size: a parallel run of 20..=60 slots splits into 2..=5
/// sub-sessions.
const BUNDLE_SLOTS: u64 = 16;

// ---------------------------------------------------------------------------
// The seed's plan.

/// splitmix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next_u64() as usize % items.len()]
    }
}

/// Single session or parallel run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Single,
    Parallel,
}

/// Everything a seed does, derived from the seed alone.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedPlan {
    pub seed: u64,
    pub kind: SessionKind,
    pub start_slot: u64,
    pub end_slot: u64,
    /// Slots per `continue`.
    pub advance: u64,
    pub faults: FaultPlan,
}

impl fmt::Display for SeedPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {:?} {}..={} advance {} faults {}",
            self.seed, self.kind, self.start_slot, self.end_slot, self.advance, self.faults
        )
    }
}

/// The seed's plan: session kind, range, step and fault mix. Each fault is
/// drawn independently, so a seed may inject none, one or several.
pub fn plan_for(seed: u64) -> SeedPlan {
    let mut rng = SplitMix64::new(seed ^ 0x5EED_50A4_0000_0000);
    let kind = if rng.chance(0.5) {
        SessionKind::Parallel
    } else {
        SessionKind::Single
    };
    let len = rng.range(20, 60);
    let start_slot = rng.range(FIRST_SLOT, LAST_SLOT - len);
    let end_slot = start_slot + len - 1;
    let advance = rng.range(1, 12);
    let mut faults = FaultPlan::default();
    if rng.chance(0.35) {
        // Mostly mild; the heavy ones may exhaust a reconnect budget.
        faults.random_drops = Some(rng.pick(&[0.002, 0.005, 0.01, 0.02, 0.04, 0.1, 0.2]));
        faults.seed = rng.next_u64() >> 16;
    }
    if rng.chance(0.3) {
        faults.control_drop_after = Some(rng.range(2, 80));
    }
    if rng.chance(0.25) {
        faults.close_1012_after = Some(rng.range(2, 80));
    }
    if rng.chance(0.3) {
        faults.data_drop_after = Some(rng.range(1, 200));
    }
    if rng.chance(0.15) {
        // Up to about a run's notifications of one kind: it may not fire.
        faults.data_stall_after = Some(rng.range(1, 250));
    }
    if rng.chance(0.2) {
        faults.attach_busy = rng.range(1, 3) as u32;
    }
    if rng.chance(0.25) {
        faults.garbage_every = Some(rng.range(2, 40));
    }
    if rng.chance(0.15) {
        faults.link_bytes_per_sec = Some(rng.pick(&[300_000, 600_000, 1_500_000]));
    }
    if rng.chance(0.12) {
        // Sometimes past the range: then it never fires.
        faults.terminal_error_at_slot = Some(rng.range(start_slot, end_slot + 10));
    }
    // Faults added after the soak's first long runs draw from a stream of
    // their own, so every earlier seed keeps its plan (and the regression
    // seeds their reproduction).
    let mut later = SplitMix64::new(seed ^ 0x9A05_E000_0000_0000);
    if later.chance(0.2) {
        // Mostly shorter than the drain idle timeout (must never fail a
        // session), sometimes longer (may stall a drain it overlaps).
        let pause = if later.chance(0.7) {
            later.range(50, 250)
        } else {
            later.range(700, 1500)
        };
        faults.data_pause_after = Some((later.range(1, 200), Duration::from_millis(pause)));
    }
    SeedPlan {
        seed,
        kind,
        start_slot,
        end_slot,
        advance,
        faults,
    }
}

/// The reference server of a seed: slots 1000..=1999, 2 programs, 4
/// transactions a slot, 16-slot bundles, one worker, the plan's faults.
pub fn server_config(plan: &SeedPlan) -> ServerConfig {
    ServerConfig {
        ledger: LedgerConfig {
            seed: plan.seed,
            programs: LedgerConfig::default_programs()[..2].to_vec(),
            txs_per_slot: 4,
            batch_size: 2,
            first_slot: FIRST_SLOT,
            last_slot: LAST_SLOT,
        },
        bundle_slots: BUNDLE_SLOTS,
        workers: 1,
        faults: plan.faults.clone(),
        ..ServerConfig::default()
    }
}

/// The client's reconnect policy: millisecond backoffs so failures
/// surface fast, a budget large enough for the one-shot faults and the
/// milder random drops.
pub fn client_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        initial_backoff: Duration::from_millis(5),
        multiplier: 2.0,
        max_backoff: Duration::from_millis(100),
        jitter: 0.2,
        max_attempts: 12,
        max_total: Duration::from_secs(5),
        uptime_reset: Duration::from_millis(300),
        ungated_attempts: 3,
    }
}

fn configure(builder: SupervisorBuilder) -> SupervisorBuilder {
    builder
        .drain_idle_timeout(DRAIN_IDLE_TIMEOUT)
        .reconnect_policy(client_policy())
        .continue_resend_after(Duration::from_millis(300))
        .timeouts(Duration::from_secs(3), Duration::from_secs(5))
}

fn create_request(plan: &SeedPlan) -> CreateBacktestSessionRequest {
    serde_json::from_value(serde_json::json!({
        "startSlot": plan.start_slot,
        "endSlot": plan.end_slot,
        "disconnectTimeoutSecs": DISCONNECT_TIMEOUT_SECS,
    }))
    .expect("create params")
}

// ---------------------------------------------------------------------------
// What a consumer got.

/// What one session's consumer received.
#[derive(Debug, Default, Clone)]
pub struct Capture {
    pub signatures: Vec<String>,
    pub diffs: Vec<DiffKey>,
    pub slots: Vec<u64>,
    pub completed: bool,
    /// Events delivered after `Completed` (must be none).
    pub after_completed: u64,
    /// A data event whose identity could not be read.
    pub malformed: u64,
}

impl Capture {
    pub fn record(&mut self, event: &ManagedEvent) {
        if self.completed {
            self.after_completed += 1;
        }
        match event {
            ManagedEvent::Transaction(tx) => match &tx.transaction.transaction {
                solana_transaction_status::EncodedTransaction::Json(ui) => {
                    match ui.signatures.first() {
                        Some(sig) => self.signatures.push(sig.clone()),
                        None => self.malformed += 1,
                    }
                }
                _ => self.malformed += 1,
            },
            ManagedEvent::AccountDiff(diff) => {
                match (&diff.account, &diff.signature, diff.tx_index) {
                    (Some(account), Some(signature), Some(tx_index)) => self.diffs.push(DiffKey {
                        slot: diff.context.slot,
                        account: account.clone(),
                        signature: signature.clone(),
                        tx_index,
                    }),
                    _ => self.malformed += 1,
                }
            }
            ManagedEvent::Slot(slot) => self.slots.push(*slot),
            ManagedEvent::Completed { .. } => self.completed = true,
            _ => {}
        }
    }
}

/// How a capture compares with its record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub expected: u64,
    pub delivered: u64,
    /// Record items (transactions, diffs, slots) never delivered.
    pub missing: u64,
    /// Deliveries beyond the first of the same item.
    pub duplicates: u64,
    /// Delivered items not in the record.
    pub foreign: u64,
    /// Programs whose transactions came out of ledger order.
    pub misordered: u64,
}

/// Compare a capture with the server's record of the same session.
pub fn compare(capture: &Capture, record: &SessionRecord) -> Comparison {
    // A data event without its identity counts as foreign.
    let mut c = Comparison {
        foreign: capture.malformed,
        ..Comparison::default()
    };
    // Transactions: per program, in ledger order, once each.
    let program_of: HashMap<&str, &str> = record
        .transactions
        .iter()
        .flat_map(|(p, sigs)| sigs.iter().map(move |s| (s.as_str(), p.as_str())))
        .collect();
    let mut seen = HashSet::new();
    let mut per_program: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for sig in &capture.signatures {
        c.delivered += 1;
        let Some(program) = program_of.get(sig.as_str()) else {
            c.foreign += 1;
            continue;
        };
        if !seen.insert(sig.as_str()) {
            c.duplicates += 1;
            continue;
        }
        per_program.entry(program).or_default().push(sig);
    }
    for (program, expected) in &record.transactions {
        c.expected += expected.len() as u64;
        let got = per_program.remove(program.as_str()).unwrap_or_default();
        c.missing += (expected.len() - got.len()) as u64;
        if !got.iter().zip(expected).all(|(a, b)| a == b) {
            c.misordered += 1;
        }
    }
    // Diffs: a multiset.
    let mut wanted: HashMap<&DiffKey, u64> = HashMap::new();
    for key in record.diffs.values().flatten() {
        c.expected += 1;
        *wanted.entry(key).or_default() += 1;
    }
    let mut got: HashMap<&DiffKey, u64> = HashMap::new();
    for key in &capture.diffs {
        c.delivered += 1;
        *got.entry(key).or_default() += 1;
    }
    for (key, n) in &got {
        match wanted.get(key) {
            None => c.foreign += n,
            Some(w) => c.duplicates += n.saturating_sub(*w),
        }
    }
    for (key, w) in &wanted {
        c.missing += w.saturating_sub(got.get(key).copied().unwrap_or(0));
    }
    // Slots (control plane).
    let record_slots: HashSet<u64> = record.slots.iter().copied().collect();
    let mut seen_slots = HashSet::new();
    for slot in &capture.slots {
        c.delivered += 1;
        if !record_slots.contains(slot) {
            c.foreign += 1;
        } else if !seen_slots.insert(*slot) {
            c.duplicates += 1;
        }
    }
    c.expected += record.slots.len() as u64;
    c.missing += record
        .slots
        .iter()
        .filter(|s| !seen_slots.contains(s))
        .count() as u64;
    c
}

// ---------------------------------------------------------------------------
// Reports.

/// How one session ended and what the verdict says about it.
#[derive(Debug, Clone)]
pub struct SessionVerdict {
    pub session_id: String,
    pub range: (u64, u64),
    /// `Ok` on completion, else the error's text.
    pub outcome: Result<(), String>,
    /// Why a failure is legitimate (`terminal-error`, `drain-stalled`,
    /// `budget-exhausted`), or `completed`.
    pub explained_by: Option<&'static str>,
    pub comparison: Comparison,
    /// Items lost: missing from a completed capture.
    pub lost: u64,
    /// Set when the verdict is wrong: what was wrong.
    pub wrong: Option<String>,
}

/// The result of one seed.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub plan: SeedPlan,
    pub sessions: Vec<SessionVerdict>,
    /// A failure before any session existed (create refused, budget
    /// exhausted while creating).
    pub create_error: Option<String>,
    /// Faults that fired, by kind (`ServerState::faults_fired`).
    pub faults_fired: BTreeMap<String, u64>,
    pub hang: bool,
    /// Supervisors still running or server sessions still live after the
    /// bounded cleanup waits.
    pub leaks: Vec<String>,
    /// Wrong verdicts, described (sessions' and the run's own).
    pub wrong_verdicts: Vec<String>,
    /// On a hang: every supervisor's status at the deadline.
    pub hang_status: Vec<String>,
    pub elapsed: Duration,
}

impl SeedReport {
    pub fn faults_injected(&self) -> u64 {
        self.faults_fired.values().sum()
    }

    pub fn lost(&self) -> u64 {
        self.sessions.iter().map(|s| s.lost).sum()
    }

    pub fn duplicates(&self) -> u64 {
        self.sessions.iter().map(|s| s.comparison.duplicates).sum()
    }

    /// Whether the seed passed every check.
    pub fn is_clean(&self) -> bool {
        !self.hang
            && self.leaks.is_empty()
            && self.wrong_verdicts.is_empty()
            && self.lost() == 0
            && self.duplicates() == 0
    }

    pub fn completed(&self) -> usize {
        self.sessions.iter().filter(|s| s.outcome.is_ok()).count()
    }
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failed: Vec<&str> = self
            .sessions
            .iter()
            .filter_map(|s| s.explained_by.filter(|e| *e != "completed"))
            .collect();
        write!(
            f,
            "{} | {:.2}s sessions {} completed {} failed {:?}{} faults {} {:?} lost {} dup {}{}{}{}",
            self.plan,
            self.elapsed.as_secs_f64(),
            self.sessions.len(),
            self.completed(),
            failed,
            self.create_error
                .as_ref()
                .map(|e| format!(" create error: {e}"))
                .unwrap_or_default(),
            self.faults_injected(),
            self.faults_fired,
            self.lost(),
            self.duplicates(),
            if self.hang { " HANG" } else { "" },
            if self.leaks.is_empty() {
                String::new()
            } else {
                format!(" LEAKS {:?}", self.leaks)
            },
            if self.wrong_verdicts.is_empty() {
                String::new()
            } else {
                format!(" WRONG {:?}", self.wrong_verdicts)
            },
        )
    }
}

/// Totals over many seeds.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub runs: u64,
    pub sessions: u64,
    pub sessions_completed: u64,
    /// Failed sessions by the fault that explains them (wrong verdicts
    /// excluded).
    pub failures_by_cause: BTreeMap<String, u64>,
    pub faults_by_kind: BTreeMap<String, u64>,
    pub faults_injected: u64,
    pub items_expected: u64,
    pub items_delivered: u64,
    pub items_lost: u64,
    pub duplicates: u64,
    pub hangs: u64,
    pub wrong_verdicts: u64,
    pub leaks: u64,
    pub fds_before: Option<usize>,
    pub fds_after: Option<usize>,
    pub elapsed: Duration,
    /// Wall time of the slowest seed.
    pub slowest: Duration,
    /// Every seed that failed a check.
    pub bad_seeds: Vec<SeedReport>,
}

impl SoakReport {
    pub fn add(&mut self, seed: SeedReport) {
        self.runs += 1;
        self.sessions += seed.sessions.len() as u64;
        self.sessions_completed += seed.completed() as u64;
        for s in &seed.sessions {
            if let (Err(_), Some(cause)) = (&s.outcome, s.explained_by) {
                *self.failures_by_cause.entry(cause.to_string()).or_default() += 1;
            }
            self.items_expected += s.comparison.expected;
            self.items_delivered += s.comparison.delivered;
        }
        if seed.create_error.is_some() && seed.wrong_verdicts.is_empty() {
            *self
                .failures_by_cause
                .entry("create: budget-exhausted".to_string())
                .or_default() += 1;
        }
        for (kind, n) in &seed.faults_fired {
            *self.faults_by_kind.entry(kind.clone()).or_default() += n;
        }
        self.faults_injected += seed.faults_injected();
        self.items_lost += seed.lost();
        self.duplicates += seed.duplicates();
        self.hangs += u64::from(seed.hang);
        self.wrong_verdicts += seed.wrong_verdicts.len() as u64;
        self.leaks += seed.leaks.len() as u64;
        self.slowest = self.slowest.max(seed.elapsed);
        if !seed.is_clean() {
            self.bad_seeds.push(seed);
        }
    }

    /// Whether every run passed every check.
    pub fn is_clean(&self) -> bool {
        self.items_lost == 0
            && self.duplicates == 0
            && self.hangs == 0
            && self.wrong_verdicts == 0
            && self.leaks == 0
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "soak: {} runs, {} sessions ({} completed), {} faults injected, {:.1}s (slowest seed {:.2}s)",
            self.runs,
            self.sessions,
            self.sessions_completed,
            self.faults_injected,
            self.elapsed.as_secs_f64(),
            self.slowest.as_secs_f64(),
        )?;
        writeln!(f, "  faults by kind: {:?}", self.faults_by_kind)?;
        writeln!(
            f,
            "  failed sessions by cause: {:?}",
            self.failures_by_cause
        )?;
        writeln!(
            f,
            "  items: {} expected, {} delivered",
            self.items_expected, self.items_delivered
        )?;
        writeln!(
            f,
            "  items lost {}, duplicates delivered {}, hangs {}, wrong verdicts {}, leaks {}",
            self.items_lost, self.duplicates, self.hangs, self.wrong_verdicts, self.leaks
        )?;
        write!(
            f,
            "  open fds: {:?} before, {:?} after",
            self.fds_before, self.fds_after
        )?;
        for bad in &self.bad_seeds {
            write!(f, "\n  BAD {bad}")?;
            for status in &bad.hang_status {
                write!(f, "\n    {status}")?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Running seeds.

/// Open file descriptors of this process (`/proc/self/fd`), where
/// available.
pub fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// Run seeds on `parallelism` worker threads (at least one); totals in
/// seed order. `on_seed` sees each seed's report as it ends (progress).
pub fn run_many_with(
    seeds: &[u64],
    parallelism: usize,
    on_seed: impl Fn(&SeedReport) + Sync,
) -> SoakReport {
    let started = Instant::now();
    // The client library's background runtime lives for the process: start
    // it before counting, so it is not mistaken for a leak.
    backtest_actors::start_background_runtime();
    let fds_before = open_fds();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SeedReport>>> = Mutex::new(vec![None; seeds.len()]);
    std::thread::scope(|scope| {
        for _ in 0..parallelism.max(1).min(seeds.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&seed) = seeds.get(i) else { break };
                    let report = run_seed(seed);
                    on_seed(&report);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(report);
                }
            });
        }
    });
    let mut total = SoakReport::default();
    for report in results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
    {
        total.add(report);
    }
    total.fds_before = fds_before;
    total.fds_after = open_fds();
    total.elapsed = started.elapsed();
    total
}

/// [`run_many_with`] without progress.
pub fn run_many(seeds: &[u64], parallelism: usize) -> SoakReport {
    run_many_with(seeds, parallelism, |_| {})
}

/// Run one seed: start its server, run its session to the end, judge,
/// shut down, check for leaks, stop the server. Blocks the calling thread
/// (which must not be running an async runtime).
pub fn run_seed(seed: u64) -> SeedReport {
    let plan = plan_for(seed);
    let started = Instant::now();
    let server = match RunningServer::spawn(server_config(&plan), "127.0.0.1:0".parse().unwrap()) {
        Ok(server) => server,
        Err(e) => {
            return SeedReport {
                plan,
                sessions: Vec::new(),
                create_error: None,
                faults_fired: BTreeMap::new(),
                hang: false,
                leaks: Vec::new(),
                wrong_verdicts: vec![format!("the server did not start: {e}")],
                hang_status: Vec::new(),
                elapsed: started.elapsed(),
            };
        }
    };
    let system = actix_rt::System::new();
    let mut report = system.block_on(run_on_server(&plan, &server));
    // Stopping the server joins its thread: every server socket is closed.
    let faults = server.state().faults_fired();
    report.faults_fired = faults
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    server.stop();
    drop(system);
    report.elapsed = started.elapsed();
    report
}

/// One session's end, before judging.
struct Ended {
    session_id: String,
    range: (u64, u64),
    capture: Capture,
    outcome: Result<(), ManagedSessionError>,
}

/// What the run phase produced.
enum RunResult {
    CreateFailed(ManagedSessionError),
    Ended(Vec<Ended>),
}

async fn run_on_server(plan: &SeedPlan, server: &RunningServer) -> SeedReport {
    let mut report = SeedReport {
        plan: plan.clone(),
        sessions: Vec::new(),
        create_error: None,
        faults_fired: BTreeMap::new(),
        hang: false,
        leaks: Vec::new(),
        wrong_verdicts: Vec::new(),
        hang_status: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let programs = server.state().ledger.programs().to_vec();
    let deadline = tokio::time::Instant::now() + SEED_WALL_BOUND;
    // The actors to check after shutdown, filled in as they start.
    let actors = Arc::new(Mutex::new(Actors::default()));
    let run = {
        let actors = actors.clone();
        async move {
            match plan.kind {
                SessionKind::Single => run_single(plan, server, programs, actors).await,
                SessionKind::Parallel => run_parallel(plan, server, programs, actors).await,
            }
        }
    };
    let result = tokio::time::timeout_at(deadline, run).await;

    // Shut down whatever is running, then check nothing is left.
    let to_stop = std::mem::take(&mut *actors.lock().unwrap_or_else(|p| p.into_inner()));
    let mut control_failed = false;
    match result {
        Err(_) => {
            report.hang_status = statuses(&to_stop, server).await;
            report.hang = true;
            report.wrong_verdicts.push(format!(
                "hang: the run did not end within {SEED_WALL_BOUND:?}"
            ));
        }
        Ok(RunResult::CreateFailed(e)) => {
            let text = e.to_string();
            if explains_budget(plan, &text) {
                report.create_error = Some(text);
            } else {
                report.create_error = Some(text.clone());
                report
                    .wrong_verdicts
                    .push(format!("create failed unexplained: {text}"));
            }
            control_failed = true;
        }
        Ok(RunResult::Ended(ended)) => {
            for e in ended {
                if matches!(e.outcome, Err(ManagedSessionError::ControlFailed(_))) {
                    control_failed = true;
                }
                let verdict = judge(plan, server, e);
                if let Some(wrong) = &verdict.wrong {
                    report
                        .wrong_verdicts
                        .push(format!("{}: {wrong}", verdict.session_id));
                }
                report.sessions.push(verdict);
            }
        }
    }
    report.leaks = shut_down_and_check(to_stop, server, control_failed).await;
    report
}

/// Supervisors started by a seed.
#[derive(Default)]
struct Actors {
    single: Vec<Addr<SessionSupervisor>>,
    parallel: Option<ManagedParallelSession>,
    parallel_addr: Option<Addr<ParallelSupervisor>>,
}

/// Every supervisor's status and the server's view, for a hang report.
async fn statuses(actors: &Actors, server: &RunningServer) -> Vec<String> {
    let bound = Duration::from_secs(2);
    let mut out = Vec::new();
    if let Some(addr) = &actors.parallel_addr {
        out.push(
            match tokio::time::timeout(bound, addr.send(GetParallelStatus)).await {
                Ok(Ok(status)) => format!("parallel: {status:?}"),
                other => format!("parallel: no status ({other:?})"),
            },
        );
    }
    for addr in &actors.single {
        out.push(
            match tokio::time::timeout(bound, addr.send(GetStatus)).await {
                Ok(Ok(status)) => format!("session: {status:?}"),
                other => format!("session: no status ({other:?})"),
            },
        );
    }
    let state = server.state();
    for status in &out.clone() {
        if let Some(id) = status
            .split("session_id: \"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            && let Some(record) = state.record(id)
        {
            out.push(format!(
                "server {id}: executed_through {:?} finish {:?}",
                record.executed_through, record.finish
            ));
        }
    }
    out.push(format!("server live sessions: {}", state.live_sessions()));
    out
}

async fn shut_down_and_check(
    actors: Actors,
    server: &RunningServer,
    control_failed: bool,
) -> Vec<String> {
    let mut leaks = Vec::new();
    let shutdown = async {
        if let Some(batch) = actors.parallel {
            batch.shutdown().await;
        }
        if let Some(addr) = &actors.parallel_addr {
            let _ = addr.send(Shutdown).await;
        }
        for addr in &actors.single {
            let _ = addr.send(Shutdown).await;
        }
    };
    if tokio::time::timeout(CLEANUP_BOUND, shutdown).await.is_err() {
        leaks.push(format!("shutdown did not finish within {CLEANUP_BOUND:?}"));
    }
    let stopped = eventually(CLEANUP_BOUND, || {
        actors.single.iter().all(|a| !a.connected())
            && actors.parallel_addr.as_ref().is_none_or(|a| !a.connected())
    })
    .await;
    if !stopped {
        let running = actors.single.iter().filter(|a| a.connected()).count()
            + actors
                .parallel_addr
                .iter()
                .filter(|a| a.connected())
                .count();
        leaks.push(format!(
            "{running} supervisor(s) still running after Shutdown"
        ));
    }
    // A session whose control link failed for good cannot be closed by the
    // client: the server reaps it after its disconnect timeout.
    let bound = if control_failed {
        Duration::from_secs(DISCONNECT_TIMEOUT_SECS) + CLEANUP_BOUND
    } else {
        CLEANUP_BOUND
    };
    let state = server.state().clone();
    if !eventually(bound, || state.live_sessions() == 0).await {
        leaks.push(format!(
            "{} server session(s) still live {bound:?} after shutdown",
            state.live_sessions()
        ));
    }
    leaks
}

async fn eventually(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

async fn run_single(
    plan: &SeedPlan,
    server: &RunningServer,
    programs: Vec<String>,
    actors: Arc<Mutex<Actors>>,
) -> RunResult {
    let addr = configure(SessionSupervisor::builder(
        server.control_url(),
        "soak",
        create_request(plan),
    ))
    .start();
    actors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .single
        .push(addr.clone());
    let info = match addr.send(WaitSession).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return RunResult::CreateFailed(e),
        Err(_) => return RunResult::CreateFailed(ManagedSessionError::ControlClosed),
    };
    let mut capture = Capture::default();
    let subscribed = async {
        addr.send(SubscribeTransactions {
            programs: programs.clone(),
        })
        .await
        .map_err(|_| ManagedSessionError::ControlClosed)??;
        addr.send(SubscribeAccountDiffs { programs })
            .await
            .map_err(|_| ManagedSessionError::ControlClosed)?
    }
    .await;
    // A refused subscribe surfaces again as the stream's error below.
    let _ = subscribed;
    let outcome = loop {
        let next = match addr.send(NextEvent).await {
            Ok(next) => next,
            Err(_) => break Err(ManagedSessionError::ControlClosed),
        };
        match next {
            Ok(Some(event)) => {
                capture.record(&event);
                if matches!(
                    event,
                    ManagedEvent::ReadyForContinue | ManagedEvent::Paused(_)
                ) {
                    // A refused continue means the session failed: the
                    // stream ends with the reason.
                    let _ = addr.send(Continue(step(plan))).await;
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    RunResult::Ended(vec![Ended {
        session_id: info.session_id,
        range: (plan.start_slot, plan.end_slot),
        capture,
        outcome,
    }])
}

fn step(plan: &SeedPlan) -> ContinueParams {
    ContinueParams {
        advance_count: plan.advance,
        ..ContinueParams::default()
    }
}

/// Records each sub-session's events.
struct Recorder(Arc<Mutex<HashMap<String, Capture>>>);

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<BatchEvent> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: BatchEvent, _: &mut Context<Self>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(msg.session_id)
            .or_default()
            .record(&msg.event);
    }
}

async fn run_parallel(
    plan: &SeedPlan,
    server: &RunningServer,
    programs: Vec<String>,
    actors: Arc<Mutex<Actors>>,
) -> RunResult {
    let builder = configure(ParallelSupervisor::builder(
        server.control_url(),
        "soak",
        create_request(plan),
    ));
    let mut batch =
        match ManagedParallelSession::start_with_builder(builder, CancellationToken::new()).await {
            Ok(batch) => batch,
            Err(e) => return RunResult::CreateFailed(e),
        };
    let subs = batch.take_sub_sessions();
    {
        let mut actors = actors.lock().unwrap_or_else(|p| p.into_inner());
        actors.parallel_addr = Some(batch.addr().clone());
        actors.single = subs.iter().map(|s| s.addr().clone()).collect();
        actors.parallel = Some(batch);
    }
    let captures = Arc::new(Mutex::new(HashMap::new()));
    let recorder = Recorder(captures.clone()).start();
    let results = run_batch(
        subs,
        BatchOptions {
            advance_count: plan.advance,
            transaction_programs: programs.clone(),
            account_diff_programs: programs,
        },
        Some(recorder.recipient()),
    )
    .await;
    let mut captures = std::mem::take(&mut *captures.lock().unwrap_or_else(|p| p.into_inner()));
    RunResult::Ended(
        results
            .into_iter()
            .map(|r| Ended {
                capture: captures.remove(&r.session_id).unwrap_or_default(),
                session_id: r.session_id,
                range: r.range,
                outcome: r.outcome.map(|_| ()),
            })
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Verdicts.

/// A reconnect budget exhausted is legitimate only under faults that keep
/// cutting connections or refusing attaches.
fn explains_budget(plan: &SeedPlan, reason: &str) -> bool {
    reason.contains("budget exhausted")
        && (plan.faults.random_drops.is_some() || plan.faults.attach_busy > 0)
}

fn judge(plan: &SeedPlan, server: &RunningServer, ended: Ended) -> SessionVerdict {
    let Ended {
        session_id,
        range,
        capture,
        outcome,
    } = ended;
    let mut verdict = SessionVerdict {
        session_id: session_id.clone(),
        range,
        outcome: outcome.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        explained_by: None,
        comparison: Comparison::default(),
        lost: 0,
        wrong: None,
    };
    let Some(record) = server.state().record(&session_id) else {
        verdict.wrong = Some("the server has no record of the session".into());
        return verdict;
    };
    let c = compare(&capture, &record);
    verdict.comparison = c.clone();
    let terminal_here = plan
        .faults
        .terminal_error_at_slot
        .filter(|s| (range.0..=range.1).contains(s));
    let mut wrong = Vec::new();
    if c.foreign > 0 {
        wrong.push(format!("{} delivered items not in the record", c.foreign));
    }
    if c.misordered > 0 {
        wrong.push(format!(
            "transactions of {} program(s) out of ledger order",
            c.misordered
        ));
    }
    if capture.after_completed > 0 {
        wrong.push(format!(
            "{} events after Completed",
            capture.after_completed
        ));
    }
    match &outcome {
        Ok(()) => {
            verdict.explained_by = Some("completed");
            verdict.lost = c.missing;
            if !capture.completed {
                wrong.push("ended Ok without Completed".into());
            }
            if record.finish != Some(Finish::Completed) {
                wrong.push(format!(
                    "completed, but the server says {:?}",
                    record.finish
                ));
            }
            if let Some(slot) = terminal_here {
                wrong.push(format!("completed through terminal-error-at-slot={slot}"));
            }
            if c.missing > 0 {
                wrong.push(format!("completed with {} items missing", c.missing));
            }
        }
        Err(e) => {
            let text = e.to_string();
            let fired = server.state().faults_fired();
            let long_pause = plan
                .faults
                .data_pause_after
                .is_some_and(|(_, pause)| pause > DRAIN_IDLE_TIMEOUT);
            let stall_fired = fired.keys().any(|k| {
                k.starts_with("data-stall") || (long_pause && k.starts_with("data-pause"))
            });
            let explained = match e {
                ManagedSessionError::ControlFailed(reason)
                    if terminal_here.is_some_and(|s| reason.contains(&s.to_string()))
                        && record.finish == Some(Finish::Failed) =>
                {
                    Some("terminal-error")
                }
                ManagedSessionError::SubscriptionFailed(reason)
                    if stall_fired && reason.contains("stalled") =>
                {
                    Some("drain-stalled")
                }
                _ if explains_budget(plan, &text) => Some("budget-exhausted"),
                _ => None,
            };
            match explained {
                Some(cause) => verdict.explained_by = Some(cause),
                None => wrong.push(format!("failed unexplained: {text}")),
            }
        }
    }
    if !wrong.is_empty() {
        verdict.wrong = Some(wrong.join("; "));
    }
    verdict
}

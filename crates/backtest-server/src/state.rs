//! The server's shared state: the ledger, live sessions and parallel
//! groups, finished-session reports, usage per API key and counts of the
//! faults that fired. Shared by every worker thread behind one `Arc`.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use backtest_ledger::{DiffKey, Ledger};
use simulator_api::{
    BacktestError,
    usage::{ComputeTotals, SessionCounts},
};

use crate::{
    config::ServerConfig,
    outbox::SharedOutbox,
    session::{Finish, Framing, Progress, Session, SessionSpec},
};

/// How many finished sessions keep a report (for `record`).
const REPORTS_KEPT: usize = 4096;

/// How many ended sessions keep serving their data plane. A client may
/// close its session as soon as `completed` arrives while its
/// subscriptions still drain (the reference client does): a subscription
/// cut in that window must be able to reconnect and resume from its
/// cursor. An ended session's data is the ledger over its executed slots,
/// so keeping it costs only the session's small shell.
const ENDED_SESSIONS_SERVED: usize = 256;

/// What a session executed, for comparing a client's capture to the truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: String,
    pub start_slot: u64,
    pub end_slot: u64,
    /// Highest executed slot; `None` when nothing ran.
    pub executed_through: Option<u64>,
    pub finish: Option<Finish>,
    /// Per program, the signatures of its transactions in ledger order.
    pub transactions: BTreeMap<String, Vec<String>>,
    /// Per program, the keys of its account diffs in ledger order.
    pub diffs: BTreeMap<String, Vec<DiffKey>>,
    /// Every executed slot in order.
    pub slots: Vec<u64>,
}

/// A parallel run: sub-sessions that share one control connection.
#[derive(Debug)]
pub struct ParallelGroup {
    pub control_session_id: String,
    pub sessions: Vec<Arc<Session>>,
    pub outbox: Arc<SharedOutbox>,
    pub faults: crate::faults::FaultLedger,
    /// Bumped on every attach and detach, so a stale disconnect timer knows
    /// it lost the race.
    pub generation: AtomicU64,
}

impl ParallelGroup {
    pub fn bump_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
struct Report {
    id: String,
    start_slot: u64,
    end_slot: u64,
    /// Final progress, saved when the session is reaped.
    progress: Option<Progress>,
}

#[derive(Debug, Default, Clone, Copy)]
struct KeyUsage {
    sessions: SessionCounts,
    compute: ComputeTotals,
}

/// Shared server state.
pub struct ServerState {
    pub config: ServerConfig,
    pub ledger: Ledger,
    pub started_at: chrono::DateTime<chrono::Utc>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Recently reaped sessions whose data plane is still served, oldest
    /// first (see [`ENDED_SESSIONS_SERVED`]).
    ended: Mutex<VecDeque<Arc<Session>>>,
    groups: Mutex<HashMap<String, Arc<ParallelGroup>>>,
    reports: Mutex<(HashMap<String, Report>, VecDeque<String>)>,
    usage: Mutex<HashMap<String, KeyUsage>>,
    faults_fired: Mutex<BTreeMap<&'static str, u64>>,
    started: Mutex<HashMap<String, Instant>>,
    ids: AtomicU64,
    id_prefix: String,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ServerState {
    pub fn new(config: ServerConfig, ledger: Ledger) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        Self {
            config,
            ledger,
            started_at: chrono::Utc::now(),
            sessions: Mutex::default(),
            ended: Mutex::default(),
            groups: Mutex::default(),
            reports: Mutex::default(),
            usage: Mutex::default(),
            faults_fired: Mutex::default(),
            started: Mutex::default(),
            ids: AtomicU64::new(1),
            id_prefix: format!("{:08x}", (nanos >> 16) as u32),
        }
    }

    /// A fresh id such as `s-1a2b3c4d-7`.
    pub fn new_id(&self, kind: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{kind}-{}-{n}", self.id_prefix)
    }

    /// A fresh connection number.
    pub fn new_connection(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Name under which usage is reported for `key`: never the key itself.
    pub fn key_name(&self, key: Option<&str>) -> String {
        if self.config.api_keys.is_empty() {
            return "development".into();
        }
        key.and_then(|key| {
            self.config
                .api_keys
                .iter()
                .position(|k| crate::auth::constant_time_eq(k.as_bytes(), key.as_bytes()))
        })
        .map(|i| format!("key-{}", i + 1))
        .unwrap_or_else(|| "unknown".into())
    }

    /// Check a create request's range against the data set.
    pub fn validate_range(&self, start: u64, end: u64) -> Result<(), BacktestError> {
        let (first, last) = (self.config.ledger.first_slot, self.config.ledger.last_slot);
        if start > end {
            return Err(BacktestError::InvalidRequest {
                error: format!("start_slot {start} is after end_slot {end}"),
            });
        }
        if start < first || end > last {
            return Err(BacktestError::InvalidRequest {
                error: format!(
                    "range {start}..={end} is outside the available data {first}..={last}"
                ),
            });
        }
        Ok(())
    }

    /// Register a new session and start its executor on the current
    /// runtime.
    pub fn create_session(
        self: &Arc<Self>,
        id: String,
        spec: SessionSpec,
        framing: Framing,
        outbox: Arc<SharedOutbox>,
    ) -> Result<Arc<Session>, BacktestError> {
        let task_id = format!("task-{id}");
        let (session, runner) = Session::new(
            id.clone(),
            task_id,
            spec,
            framing,
            outbox,
            self.config.limits.replay_buffer_frames,
        );
        {
            let mut sessions = lock(&self.sessions);
            if sessions.len() >= self.config.limits.max_sessions {
                return Err(BacktestError::Internal {
                    error: format!(
                        "session limit reached ({} live sessions)",
                        self.config.limits.max_sessions
                    ),
                });
            }
            sessions.insert(id.clone(), session.clone());
        }
        {
            let mut reports = lock(&self.reports);
            let (map, order) = &mut *reports;
            map.insert(
                id.clone(),
                Report {
                    id: id.clone(),
                    start_slot: session.spec.start_slot,
                    end_slot: session.spec.end_slot,
                    progress: None,
                },
            );
            order.push_back(id.clone());
            while order.len() > REPORTS_KEPT {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        lock(&self.started).insert(id, Instant::now());
        self.usage_of(&session.spec.key_name, |u| u.sessions.started += 1);
        actix_rt::spawn(crate::executor::run(session.clone(), runner, self.clone()));
        Ok(session)
    }

    pub fn register_group(&self, group: Arc<ParallelGroup>) {
        lock(&self.groups).insert(group.control_session_id.clone(), group);
    }

    pub fn group(&self, control_session_id: &str) -> Option<Arc<ParallelGroup>> {
        lock(&self.groups).get(control_session_id).cloned()
    }

    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.sessions).get(id).cloned()
    }

    /// The session whose data plane `/rpc/<id>` serves: a live one, or one
    /// that ended recently (its subscriptions get the executed slots, then
    /// `subscriptionComplete`).
    pub fn data_session(&self, id: &str) -> Option<Arc<Session>> {
        self.session(id)
            .or_else(|| lock(&self.ended).iter().rev().find(|s| s.id == id).cloned())
    }

    /// Number of live sessions.
    pub fn live_sessions(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Mark a session finished (completed or failed) and account for it.
    pub fn finish_session(&self, session: &Session, finish: Finish) {
        if session.current_progress().finish.is_some() {
            return;
        }
        session.finish(finish);
        let elapsed = lock(&self.started)
            .remove(&session.id)
            .map(|t| t.elapsed().as_millis() as u64)
            .unwrap_or_default();
        self.usage_of(&session.spec.key_name, |u| {
            match finish {
                Finish::Completed => u.sessions.completed += 1,
                Finish::Failed | Finish::Closed => u.sessions.failed += 1,
            }
            u.compute.session_duration_ms += elapsed;
        });
    }

    /// End a session for good: closed by the client, its connection gone
    /// without a disconnect timeout, or the timeout expired.
    pub fn reap(&self, session: &Session) {
        self.finish_session(session, Finish::Closed);
        if let Some(report) = lock(&self.reports).0.get_mut(&session.id) {
            report.progress = Some(session.current_progress());
        }
        let live: HashSet<String> = {
            let mut sessions = lock(&self.sessions);
            if let Some(reaped) = sessions.remove(&session.id) {
                reaped.forget_replay();
                let mut ended = lock(&self.ended);
                ended.push_back(reaped);
                while ended.len() > ENDED_SESSIONS_SERVED {
                    ended.pop_front();
                }
            }
            sessions.keys().cloned().collect()
        };
        lock(&self.groups).retain(|_, g| g.sessions.iter().any(|s| live.contains(&s.id)));
    }

    pub fn count_executed_slot(&self, session: &Session) {
        self.usage_of(&session.spec.key_name, |u| {
            u.compute.executed_slot_count += 1
        });
    }

    fn usage_of(&self, key_name: &str, f: impl FnOnce(&mut KeyUsage)) {
        f(lock(&self.usage).entry(key_name.to_string()).or_default());
    }

    /// Usage counters for a key name.
    pub fn usage(&self, key_name: &str) -> (SessionCounts, ComputeTotals) {
        let usage = lock(&self.usage).get(key_name).copied().unwrap_or_default();
        (usage.sessions, usage.compute)
    }

    /// Count a fault that fired (logged by the caller).
    pub fn fault_fired(&self, kind: &'static str) {
        *lock(&self.faults_fired).entry(kind).or_default() += 1;
    }

    /// How many times each fault kind fired since start.
    pub fn faults_fired(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.faults_fired).clone()
    }

    /// What session `id` executed, from the ledger (deterministic, so the
    /// record is exactly what was streamed). `None` for an unknown id.
    pub fn record(&self, id: &str) -> Option<SessionRecord> {
        // Live session first: `reap` saves the final progress in the report
        // before it removes the session, so a session gone by the time the
        // report is read has its progress there (the other order races).
        let live = self.session(id).map(|session| session.current_progress());
        let report = lock(&self.reports).0.get(id).cloned()?;
        let progress = live.or_else(|| report.progress.clone()).unwrap_or_default();
        let mut record = SessionRecord {
            session_id: report.id.clone(),
            start_slot: report.start_slot,
            end_slot: report.end_slot,
            executed_through: progress.executed_through,
            finish: progress.finish,
            transactions: BTreeMap::new(),
            diffs: BTreeMap::new(),
            slots: Vec::new(),
        };
        for program in self.ledger.programs() {
            record.transactions.insert(program.clone(), Vec::new());
            record.diffs.insert(program.clone(), Vec::new());
        }
        let Some(through) = progress.executed_through else {
            return Some(record);
        };
        for slot in report.start_slot..=through {
            let Some(data) = self.ledger.slot(slot) else {
                continue;
            };
            record.slots.push(slot);
            for tx in &data.transactions {
                if let Some(sigs) = record.transactions.get_mut(&tx.program) {
                    sigs.push(tx.signature.clone());
                }
                if let Some(keys) = record.diffs.get_mut(&tx.program) {
                    keys.extend(tx.diffs.iter().map(|d| d.key(tx)));
                }
            }
        }
        Some(record)
    }
}

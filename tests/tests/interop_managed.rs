//! The crates.io client `simulator-client` 0.9.0 (its `managed` module,
//! written by the API's owners) against the reference server: what its
//! managed sessions hand to the consumer is exactly the server's record,
//! with and without faults.
//!
//! The seed client's `AccountDiffNotification` reads `tx_index` and
//! `block_time` in snake_case, while the server sends `txIndex` /
//! `blockTime` (the protocol notes' spelling), so those two fields arrive
//! empty on its side: its diffs are compared on (slot, account, signature).

use std::collections::{BTreeMap, HashMap};

use backtest_e2e::{FaultPlan, RunningServer, ledger_of, small_config, start};
use backtest_server::{Finish, Ledger, ServerConfig};
use simulator_api::{
    ContinueParams, CreateBacktestSessionRequest, CreateBacktestSessionRequestV1,
    CreateSessionParams,
};
use simulator_client::{
    ManagedBacktestSession, ManagedEvent,
    managed::{ManagedParallelSession, ParallelSubSession},
};

/// Every wait on the seed client is bounded by this.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn server_with(faults: &[&str]) -> (RunningServer, ServerConfig) {
    let mut config = small_config();
    config.faults = FaultPlan::from_specs(faults).unwrap();
    (start(config.clone()), config)
}

fn params(start: u64, end: u64) -> CreateSessionParams {
    serde_json::from_value(serde_json::json!({"startSlot": start, "endSlot": end})).unwrap()
}

fn advance(n: u64) -> ContinueParams {
    ContinueParams {
        advance_count: n,
        ..ContinueParams::default()
    }
}

/// What a consumer of the seed client was handed.
#[derive(Debug, Default)]
struct Capture {
    slots: Vec<u64>,
    /// Per program, (slot, signature) of transactions in arrival order.
    transactions: BTreeMap<String, Vec<(u64, String)>>,
    /// Per program, (slot, account, signature) of diffs in arrival order.
    diffs: BTreeMap<String, Vec<(u64, String, String)>>,
    completed: bool,
}

impl Capture {
    fn take(&mut self, event: ManagedEvent, programs: &HashMap<String, String>) {
        match event {
            ManagedEvent::Slot(slot) => self.slots.push(slot),
            ManagedEvent::Transaction(tx) => {
                let value = serde_json::to_value(&tx.transaction.transaction).unwrap();
                let signature = value["signatures"][0].as_str().unwrap().to_string();
                let program = programs[&signature].clone();
                self.transactions
                    .entry(program)
                    .or_default()
                    .push((tx.slot, signature));
            }
            ManagedEvent::AccountDiff(diff) => {
                let signature = diff.signature.clone().expect("a signature");
                let program = programs[&signature].clone();
                self.diffs.entry(program).or_default().push((
                    diff.context.slot,
                    diff.account.clone().expect("an account"),
                    signature,
                ));
            }
            ManagedEvent::Completed { .. } => self.completed = true,
            _ => {}
        }
    }

    /// The capture with repeated items removed (the seed client leaves
    /// boundary-slot repeats after a resume to the consumer); returns the
    /// slots of the repeated transactions and of the repeated diffs.
    fn dedup(&mut self) -> (Vec<u64>, Vec<u64>) {
        let mut tx_repeats = Vec::new();
        for sigs in self.transactions.values_mut() {
            let mut seen = std::collections::HashSet::new();
            sigs.retain(|(slot, sig)| {
                let fresh = seen.insert(sig.clone());
                if !fresh {
                    tx_repeats.push(*slot);
                }
                fresh
            });
        }
        let mut diff_repeats = Vec::new();
        for keys in self.diffs.values_mut() {
            let mut seen = std::collections::HashSet::new();
            keys.retain(|k| {
                let fresh = seen.insert(k.clone());
                if !fresh {
                    diff_repeats.push(k.0);
                }
                fresh
            });
        }
        (tx_repeats, diff_repeats)
    }
}

/// Signature → program, from the ledger.
fn program_of(ledger: &Ledger, slots: std::ops::RangeInclusive<u64>) -> HashMap<String, String> {
    slots
        .filter_map(|s| ledger.slot(s))
        .flat_map(|d| {
            d.transactions
                .iter()
                .map(|tx| (tx.signature.clone(), tx.program.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Assert `capture` (deduplicated) is the server's record of `session_id`.
fn assert_is_record(server: &RunningServer, session_id: &str, capture: &Capture) {
    let record = server.state().record(session_id).expect("a record");
    assert_eq!(record.finish, Some(Finish::Completed));
    assert_eq!(capture.slots, record.slots);
    let txs: BTreeMap<String, Vec<String>> = record
        .transactions
        .keys()
        .map(|p| {
            let sigs = capture.transactions.get(p).cloned().unwrap_or_default();
            (p.clone(), sigs.into_iter().map(|(_, sig)| sig).collect())
        })
        .collect();
    assert_eq!(txs, record.transactions);
    let diffs: BTreeMap<String, Vec<(u64, String, String)>> = record
        .diffs
        .iter()
        .map(|(p, keys)| {
            (
                p.clone(),
                keys.iter()
                    .map(|k| (k.slot, k.account.clone(), k.signature.clone()))
                    .collect(),
            )
        })
        .collect();
    let got: BTreeMap<_, _> = record
        .diffs
        .keys()
        .map(|p| (p.clone(), capture.diffs.get(p).cloned().unwrap_or_default()))
        .collect();
    assert_eq!(got, diffs);
    assert!(record.transactions.values().all(|v| !v.is_empty()));
}

/// Run a managed single session over `first..=last` with both
/// subscription kinds on every program; returns its id and the capture.
async fn run_managed(
    server: &RunningServer,
    config: &ServerConfig,
    create: CreateSessionParams,
) -> (String, Capture) {
    let ledger = ledger_of(config);
    let programs = ledger.programs().to_vec();
    let lookup = program_of(&ledger, create.start_slot..=create.end_slot);
    let mut session = tokio::time::timeout(
        WAIT,
        ManagedBacktestSession::start(server.control_url(), "interop".into(), create.into()),
    )
    .await
    .expect("created in time")
    .expect("session created");
    let id = session.session_info().session_id.clone();
    session.subscribe_transactions(programs.clone());
    session.subscribe_account_diffs(programs);
    let mut capture = Capture::default();
    while !capture.completed {
        let event = tokio::time::timeout(WAIT, session.next_event())
            .await
            .expect("an event in time")
            .expect("no session error");
        if matches!(event, ManagedEvent::ReadyForContinue) {
            tokio::time::timeout(WAIT, session.send_continue(advance(7)))
                .await
                .expect("continue sent in time")
                .expect("continue sent");
        }
        capture.take(event, &lookup);
    }
    tokio::time::timeout(WAIT, session.shutdown())
        .await
        .expect("shut down in time");
    (id, capture)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_session_receives_exactly_the_record() {
    let (server, config) = server_with(&[]);
    let (id, mut capture) = run_managed(&server, &config, params(1000, 1029)).await;
    assert_eq!(capture.dedup(), (vec![], vec![]), "nothing repeated");
    assert_is_record(&server, &id, &capture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_session_recovers_from_data_drops_by_its_replay_cursor() {
    let (server, config) = server_with(&["data-drop-after=7"]);
    let (id, mut capture) = run_managed(&server, &config, params(1000, 1029)).await;
    // Each kind's connection was cut once; the client resubscribed from
    // the highest slot it had handed on, so only that slot came again.
    let fired = server.state().faults_fired();
    assert_eq!(fired.get("data-drop:transaction"), Some(&1));
    assert_eq!(fired.get("data-drop:accountDiff"), Some(&1));
    // One resume per kind, so the repeats of each kind (if the cut fell
    // after a slot with notifications) all come from one boundary slot.
    let (tx_repeats, diff_repeats) = capture.dedup();
    for repeats in [&tx_repeats, &diff_repeats] {
        assert!(
            repeats.windows(2).all(|w| w[0] == w[1]),
            "repeats from more than one slot: {repeats:?}"
        );
    }
    assert_is_record(&server, &id, &capture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_session_survives_a_control_drop_with_a_disconnect_timeout() {
    let (server, config) = server_with(&["control-drop-after=5"]);
    let mut create = params(1000, 1029);
    create.disconnect_timeout_secs = Some(30);
    let (id, mut capture) = run_managed(&server, &config, create).await;
    assert_eq!(server.state().faults_fired().get("control-drop"), Some(&1));
    // The attach replayed exactly what was missing: every slot once.
    assert_eq!(capture.dedup(), (vec![], vec![]));
    assert_is_record(&server, &id, &capture);
}

/// Drive one sub-session to `Completed`, subscribing both kinds.
async fn drive_sub(
    mut sub: ParallelSubSession,
    programs: Vec<String>,
    lookup: HashMap<String, String>,
) -> (String, (u64, u64), Capture) {
    let id = sub.session_info().session_id.clone();
    let range = sub.range();
    sub.subscribe_transactions(programs.clone());
    sub.subscribe_account_diffs(programs);
    let mut capture = Capture::default();
    while !capture.completed {
        let event = tokio::time::timeout(WAIT, sub.next_event())
            .await
            .expect("an event in time")
            .expect("no session error");
        if matches!(event, ManagedEvent::ReadyForContinue) {
            tokio::time::timeout(WAIT, sub.send_continue(advance(30)))
                .await
                .expect("continue sent in time")
                .expect("continue sent");
        }
        capture.take(event, &lookup);
    }
    tokio::time::timeout(WAIT, sub.shutdown())
        .await
        .expect("shut down in time");
    (id, range, capture)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_parallel_session_drives_every_sub_session_to_completed() {
    let (server, config) = server_with(&[]);
    let ledger = ledger_of(&config);
    let programs = ledger.programs().to_vec();
    let lookup = program_of(&ledger, 1000..=1249);
    let create = CreateBacktestSessionRequest::V1(CreateBacktestSessionRequestV1 {
        request: params(1000, 1249),
        parallel: true,
    });
    let mut parallel = tokio::time::timeout(
        WAIT,
        // `Default::default()`: a fresh cancellation token.
        ManagedParallelSession::start_with_cancel(
            server.control_url(),
            "interop".into(),
            create,
            Default::default(),
        ),
    )
    .await
    .expect("created in time")
    .expect("parallel session created");
    let subs = parallel.take_sub_sessions();
    assert_eq!(
        subs.iter().map(|s| s.range()).collect::<Vec<_>>(),
        vec![(1000, 1099), (1100, 1199), (1200, 1249)]
    );
    let results = futures_util::future::join_all(
        subs.into_iter()
            .map(|sub| drive_sub(sub, programs.clone(), lookup.clone())),
    )
    .await;
    for (id, (start, end), mut capture) in results {
        assert_eq!(capture.slots, (start..=end).collect::<Vec<_>>());
        assert_eq!(capture.dedup(), (vec![], vec![]));
        assert_is_record(&server, &id, &capture);
    }
    tokio::time::timeout(WAIT, parallel.shutdown())
        .await
        .expect("shut down in time");
}

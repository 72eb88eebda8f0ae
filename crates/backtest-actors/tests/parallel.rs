//! Parallel runs against the reference server: every sub-session's capture
//! is exactly its record, through control drops and data drops, with
//! parked reconnects paced by the coordinator.

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::{Actor, Context, Handler};
use backtest_actors::{
    BatchEvent, BatchOptions, ManagedParallelSession, ParallelSupervisor, ReconnectPolicy,
    SubSessionResult, run_batch,
};
use backtest_server::{FaultPlan, RunningServer, ServerConfig};
use serde_json::json;
use support::*;
use tokio_util::sync::CancellationToken;

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
            .unwrap()
            .entry(msg.session_id)
            .or_default()
            .record(&msg.event);
    }
}

async fn run(
    server: &RunningServer,
    end: u64,
    extra: serde_json::Value,
    policy: ReconnectPolicy,
) -> (
    Vec<SubSessionResult>,
    HashMap<String, Capture>,
    ManagedParallelSession,
) {
    let programs = programs(server);
    let builder =
        ParallelSupervisor::builder(server.control_url(), "key", create(1000, end, extra))
            .reconnect_policy(policy)
            .continue_resend_after(Duration::from_millis(500));
    let mut batch = ManagedParallelSession::start_with_builder(builder, CancellationToken::new())
        .await
        .expect("run created");
    let captures = Arc::new(Mutex::new(HashMap::new()));
    let recorder = Recorder(captures.clone()).start();
    let results = tokio::time::timeout(
        Duration::from_secs(15),
        run_batch(
            batch.take_sub_sessions(),
            BatchOptions {
                advance_count: 7,
                transaction_programs: programs.clone(),
                account_diff_programs: programs,
            },
            Some(recorder.recipient()),
        ),
    )
    .await
    .expect("the batch ends in time");
    let captures = std::mem::take(&mut *captures.lock().unwrap());
    (results, captures, batch)
}

fn assert_all_exact(
    server: &RunningServer,
    results: &[SubSessionResult],
    captures: &HashMap<String, Capture>,
) {
    for result in results {
        assert!(
            result.outcome.is_ok(),
            "{}: {:?}",
            result.session_id,
            result.outcome
        );
        let record = server.state().record(&result.session_id).unwrap();
        assert_eq!((record.start_slot, record.end_slot), result.range);
        let capture = &captures[&result.session_id];
        capture.assert_matches(&record);
        assert_eq!(result.transactions as usize, capture.signatures.len());
        assert_eq!(result.account_diffs as usize, capture.diffs.len());
    }
}

#[actix_rt::test]
async fn a_batch_of_sub_sessions_each_gets_exactly_its_record() {
    let server = server(config());
    let (results, captures, batch) =
        run(&server, 1449, json!({}), ReconnectPolicy::default()).await;
    let ranges: Vec<_> = results.iter().map(|r| r.range).collect();
    assert_eq!(
        ranges,
        vec![
            (1000, 1099),
            (1100, 1199),
            (1200, 1299),
            (1300, 1399),
            (1400, 1449)
        ]
    );
    assert_all_exact(&server, &results, &captures);
    assert!(results.iter().all(|r| r.reconnects == 0));
    let status = batch.status().await.unwrap();
    assert_eq!(status.reconnects, 0);
    assert_eq!(status.last_sequences.len(), 5);
    batch.shutdown().await;
}

#[actix_rt::test]
async fn control_drop_mid_batch_reattaches_and_every_sub_session_completes() {
    let server = server(ServerConfig {
        faults: FaultPlan::from_specs(&["control-drop-after=40"]).unwrap(),
        ..config()
    });
    let (results, captures, batch) = run(
        &server,
        1399,
        json!({"disconnectTimeoutSecs": 30}),
        ReconnectPolicy::default(),
    )
    .await;
    assert_eq!(server.state().faults_fired().get("control-drop"), Some(&1));
    assert_eq!(results.len(), 4);
    assert_all_exact(&server, &results, &captures);
    let status = batch.status().await.unwrap();
    assert_eq!(status.reconnects, 1);
    batch.shutdown().await;
}

#[actix_rt::test]
async fn random_data_drops_on_a_throttled_link_park_and_lose_nothing() {
    let server = server(ServerConfig {
        faults: FaultPlan::from_specs(&[
            "random-drops=0.02",
            "seed=5",
            "link-bytes-per-sec=400000",
        ])
        .unwrap(),
        ..config()
    });
    // One ungated attempt: the second drop of a connection parks it.
    let policy = ReconnectPolicy {
        ungated_attempts: 1,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        max_attempts: 50,
        ..ReconnectPolicy::default()
    };
    let (results, captures, batch) =
        run(&server, 1299, json!({"disconnectTimeoutSecs": 30}), policy).await;
    assert_all_exact(&server, &results, &captures);
    let fired = server.state().faults_fired();
    let drops = |plane| fired.get(plane).copied().unwrap_or(0);
    let (data_drops, control_drops) = (drops("random-drop:data"), drops("random-drop:control"));
    assert!(data_drops > 0, "the seed drops data connections");
    let status = batch.status().await.unwrap();
    // Every data drop is recovered once, by its sub-session.
    let sub_reconnects: u64 = results.iter().map(|r| r.reconnects).sum();
    assert_eq!(sub_reconnects, data_drops, "every data drop recovered once");
    // Every control drop too, except one that may hit the close exchange
    // after the last sub-session completed: nothing is left to recover.
    assert!(
        (control_drops.saturating_sub(1)..=control_drops).contains(&status.reconnects),
        "{} control reconnects for {control_drops} drops",
        status.reconnects
    );
    assert!(
        status.coordinator.grants > 0,
        "some reconnects were parked and granted"
    );
    assert_eq!(status.coordinator.parked, 0);
    batch.shutdown().await;
}

#[actix_rt::test]
async fn a_sub_session_that_exhausts_its_budget_fails_alone() {
    // The server refuses every data connection of the sub-session starting
    // at 1100: its subscriptions can never come up.
    let server = server(ServerConfig {
        faults: FaultPlan::from_specs(&["refuse-data-start-slot=1100"]).unwrap(),
        ..config()
    });
    let policy = ReconnectPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_attempts: 3,
        ..ReconnectPolicy::default()
    };
    let (results, captures, batch) = run(&server, 1299, json!({}), policy).await;
    assert_eq!(results.len(), 3);
    let (failed, completed): (Vec<_>, Vec<_>) =
        results.into_iter().partition(|r| r.range == (1100, 1199));
    match &failed[0].outcome {
        Err(backtest_actors::ManagedSessionError::SubscriptionFailed(reason)) => {
            assert!(reason.contains("HTTP 503"), "{reason}");
            assert!(reason.contains("budget exhausted"), "{reason}");
        }
        other => panic!("expected the refused sub-session to fail, got {other:?}"),
    }
    assert_eq!(failed[0].transactions, 0);
    // The subscription that gave up first: its first connect, then three
    // attempts; its sibling stopped with the sub-session, after its first
    // connect and at most as many attempts.
    let refused = server.state().faults_fired().get("refuse-data").copied();
    assert!(
        refused.is_some_and(|n| (4 + 1..=4 + 4).contains(&n)),
        "{refused:?} refused upgrades"
    );
    assert_all_exact(&server, &completed, &captures);
    batch.shutdown().await;
}

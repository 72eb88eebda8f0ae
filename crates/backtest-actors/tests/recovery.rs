//! Reconnects against the reference server's faults: nothing lost, nothing
//! delivered twice, failures loud.

mod support;

use std::time::Duration;

use backtest_actors::{
    ConnectionState, GetStatus, ManagedSessionError, ReconnectPolicy, SessionSupervisor,
};
use backtest_server::{FaultPlan, ServerConfig};
use serde_json::json;
use support::*;

fn with_faults(specs: &[&str]) -> ServerConfig {
    ServerConfig {
        faults: FaultPlan::from_specs(specs).unwrap(),
        ..config()
    }
}

/// A fast policy so budget tests finish quickly.
fn quick_policy(max_attempts: u32) -> ReconnectPolicy {
    ReconnectPolicy {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_attempts,
        ..ReconnectPolicy::default()
    }
}

async fn run_with_subscriptions(
    server: &backtest_server::RunningServer,
    create_extra: serde_json::Value,
    end: u64,
    policy: ReconnectPolicy,
) -> (Capture, backtest_actors::SessionStatus, String) {
    let programs = programs(server);
    let (addr, info) = start_subscribed(
        SessionSupervisor::builder(server.control_url(), "key", create(1000, end, create_extra))
            .reconnect_policy(policy),
        programs,
    )
    .await;
    let capture = drive(&addr, 3).await;
    let status = addr.send(GetStatus).await.unwrap();
    (capture, status, info.session_id)
}

#[actix_rt::test]
async fn control_drop_mid_run_attaches_and_resumes_without_loss() {
    let server = server(with_faults(&["control-drop-after=12"]));
    let (capture, status, id) = run_with_subscriptions(
        &server,
        json!({"disconnectTimeoutSecs": 30}),
        1029,
        ReconnectPolicy::default(),
    )
    .await;
    assert_eq!(capture.end, Some(Ok(())), "{:?}", capture.labels);
    capture.assert_matches(&server.state().record(&id).unwrap());
    assert_eq!(server.state().faults_fired().get("control-drop"), Some(&1));
    assert_eq!(status.counters.reconnects, 1);
    assert!(status.last_sequence.is_some());
}

#[actix_rt::test]
async fn close_1012_is_a_redeploy_the_session_survives() {
    let server = server(with_faults(&["close-1012-after=20"]));
    let (capture, status, id) = run_with_subscriptions(
        &server,
        json!({"disconnectTimeoutSecs": 30}),
        1029,
        ReconnectPolicy::default(),
    )
    .await;
    assert_eq!(capture.end, Some(Ok(())));
    capture.assert_matches(&server.state().record(&id).unwrap());
    assert_eq!(server.state().faults_fired().get("close-1012"), Some(&1));
    assert_eq!(status.counters.reconnects, 1);
}

#[actix_rt::test]
async fn busy_attaches_are_retried_within_the_budget() {
    let server = server(with_faults(&["control-drop-after=10", "attach-busy=2"]));
    let (capture, status, id) = run_with_subscriptions(
        &server,
        json!({"disconnectTimeoutSecs": 30}),
        1019,
        quick_policy(20),
    )
    .await;
    assert_eq!(capture.end, Some(Ok(())));
    capture.assert_matches(&server.state().record(&id).unwrap());
    assert_eq!(server.state().faults_fired().get("attach-busy"), Some(&2));
    // One drop, then two busy answers: three reconnects in all.
    assert_eq!(status.counters.reconnects, 3);
}

#[actix_rt::test]
async fn exhausted_budget_fails_the_control_plane() {
    let server = server(with_faults(&["control-drop-after=10", "attach-busy=50"]));
    let (capture, status, _) = run_with_subscriptions(
        &server,
        json!({"disconnectTimeoutSecs": 30}),
        1019,
        quick_policy(3),
    )
    .await;
    match capture.end {
        Some(Err(ManagedSessionError::ControlFailed(reason))) => {
            assert!(reason.contains("busy"), "{reason}");
            assert!(reason.contains("budget exhausted"), "{reason}");
        }
        other => panic!("expected ControlFailed, got {other:?}"),
    }
    assert!(!capture.completed);
    assert!(matches!(status.control, ConnectionState::Failed(_)));
    assert_eq!(status.counters.reconnects, 3);
}

#[actix_rt::test]
async fn a_session_without_disconnect_timeout_cannot_be_reattached() {
    let server = server(with_faults(&["control-drop-after=10"]));
    let (capture, _, _) = run_with_subscriptions(&server, json!({}), 1019, quick_policy(3)).await;
    match capture.end {
        Some(Err(ManagedSessionError::ControlFailed(reason))) => {
            assert!(reason.contains("session not found"), "{reason}")
        }
        other => panic!("expected ControlFailed, got {other:?}"),
    }
}

#[actix_rt::test]
async fn data_drops_resubscribe_from_the_cursor_exactly_once() {
    // Each kind's connection is cut once, mid-slot (3 notifications per
    // slot and program on average, so 25 lands inside a slot).
    let server = server(with_faults(&["data-drop-after=25"]));
    let (capture, status, id) =
        run_with_subscriptions(&server, json!({}), 1039, ReconnectPolicy::default()).await;
    assert_eq!(capture.end, Some(Ok(())), "{:?}", capture.labels.last());
    capture.assert_matches(&server.state().record(&id).unwrap());
    let fired = server.state().faults_fired();
    assert_eq!(fired.get("data-drop:transaction"), Some(&1));
    assert_eq!(fired.get("data-drop:accountDiff"), Some(&1));
    assert_eq!(status.counters.reconnects, 2);
    assert!(
        status.counters.duplicates_removed > 0,
        "the boundary slot was replayed and filtered"
    );
}

#[actix_rt::test]
async fn garbage_frames_are_counted_and_skipped() {
    let server = server(with_faults(&["garbage-every=7"]));
    let (capture, status, id) = run_with_subscriptions(
        &server,
        json!({"disconnectTimeoutSecs": 30}),
        1019,
        ReconnectPolicy::default(),
    )
    .await;
    assert_eq!(capture.end, Some(Ok(())));
    capture.assert_matches(&server.state().record(&id).unwrap());
    let garbage = *server.state().faults_fired().get("garbage").unwrap();
    assert_eq!(status.counters.undecodable_frames, garbage);
}

#[actix_rt::test]
async fn random_drops_everywhere_still_deliver_exactly_once() {
    let server = server(with_faults(&["random-drops=0.01", "seed=3"]));
    let (capture, status, id) = run_with_subscriptions(
        &server,
        json!({"disconnectTimeoutSecs": 30}),
        1059,
        quick_policy(20),
    )
    .await;
    assert_eq!(capture.end, Some(Ok(())), "{:?}", capture.labels.last());
    capture.assert_matches(&server.state().record(&id).unwrap());
    let fired = server.state().faults_fired();
    let drops = |plane| fired.get(plane).copied().unwrap_or(0);
    let drops = drops("random-drop:data") + drops("random-drop:control");
    assert!(drops > 0, "the seed drops something");
    // Every drop is recovered once, except one that may hit the close
    // exchange after `Completed`: nothing is left to recover there.
    assert!(
        (drops - 1..=drops).contains(&status.counters.reconnects),
        "{} reconnects for {drops} drops",
        status.counters.reconnects
    );
}

#[actix_rt::test]
async fn terminal_error_is_forwarded_then_fails_the_session() {
    let server = server(with_faults(&["terminal-error-at-slot=1005"]));
    let (capture, _, _) =
        run_with_subscriptions(&server, json!({}), 1019, ReconnectPolicy::default()).await;
    assert_eq!(capture.slots, vec![1000, 1001, 1002, 1003, 1004]);
    assert_eq!(capture.errors.len(), 1);
    assert!(capture.errors[0].contains("failed to advance to slot 1005"));
    assert!(!capture.completed);
    match capture.end {
        Some(Err(ManagedSessionError::ControlFailed(reason))) => {
            assert!(reason.contains("slot 1005"), "{reason}")
        }
        other => panic!("expected ControlFailed, got {other:?}"),
    }
}

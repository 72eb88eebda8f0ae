//! The completion drain and backpressure against the reference server:
//! trailing notifications stream before `Completed`, a stall fails loudly,
//! a slow but flowing stream is not cut, cancellation is clean, and a slow
//! consumer holds memory bounded without losing anything.

mod support;

use std::time::Duration;

use backtest_actors::{
    GetStatus, ManagedEvent, ManagedSessionError, NextEvent, SessionSupervisor, Shutdown,
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

async fn start(
    server: &backtest_server::RunningServer,
    end: u64,
    idle: Duration,
    credit: (usize, usize),
) -> (actix::Addr<SessionSupervisor>, String) {
    let programs = programs(server);
    let (addr, info) = start_subscribed(
        SessionSupervisor::builder(server.control_url(), "key", create(1000, end, json!({})))
            .drain_idle_timeout(idle)
            .credit(credit.0, credit.1),
        programs,
    )
    .await;
    (addr, info.session_id)
}

#[actix_rt::test]
async fn a_stalled_subscription_fails_the_drain_never_completes() {
    let server = server(with_faults(&["data-stall-after=20"]));
    let (addr, id) = start(&server, 1019, Duration::from_millis(300), (256, 1024)).await;
    let capture = drive(&addr, 5).await;
    assert!(!capture.completed, "a truncated capture is never completed");
    match &capture.end {
        Some(Err(ManagedSessionError::SubscriptionFailed(reason))) => {
            assert!(reason.contains("completion drain stalled"), "{reason}");
            assert!(reason.contains("capture is incomplete"), "{reason}");
        }
        other => panic!("expected a drain failure, got {other:?}"),
    }
    // What was delivered is a clean prefix: every slot ran, no duplicate.
    let record = server.state().record(&id).unwrap();
    assert_eq!(capture.slots, record.slots);
    let mut sigs = capture.signatures.clone();
    sigs.sort();
    sigs.dedup();
    assert_eq!(sigs.len(), capture.signatures.len());
    let total: usize = record.transactions.values().map(Vec::len).sum();
    assert!(capture.signatures.len() < total);
}

#[actix_rt::test]
async fn a_slow_but_flowing_drain_is_not_cut() {
    // The control plane finishes long before the throttled data plane; no
    // gap between notifications comes near the idle timeout, the total does.
    let server = server(with_faults(&["link-bytes-per-sec=60000"]));
    let (addr, id) = start(&server, 1019, Duration::from_secs(1), (256, 1024)).await;
    let started = std::time::Instant::now();
    let capture = drive(&addr, 20).await;
    assert_eq!(capture.end, Some(Ok(())), "{:?}", capture.labels.last());
    capture.assert_matches(&server.state().record(&id).unwrap());
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the drain outlasted the idle timeout"
    );
}

#[actix_rt::test]
async fn shutdown_during_the_drain_is_a_clean_stop() {
    let server = server(with_faults(&["link-bytes-per-sec=20000"]));
    let (addr, id) = start(&server, 1019, Duration::from_secs(5), (256, 1024)).await;
    // Run the whole range, read until the control plane is done.
    addr.send(backtest_actors::Continue(advance(20)))
        .await
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = addr.send(GetStatus).await.unwrap();
        if status.draining {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "drain starts");
        // Keep the consumer moving so the control events get through.
        let _ = tokio::time::timeout(Duration::from_millis(50), addr.send(NextEvent)).await;
    }
    tokio::time::timeout(WAIT, addr.send(Shutdown))
        .await
        .expect("shutdown finishes")
        .unwrap();
    assert!(!addr.connected(), "the supervisor stopped");
    // The session was closed by request, not left to a timeout.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.state().session(&id).is_some() {
        assert!(tokio::time::Instant::now() < deadline, "session reaped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn a_slow_consumer_keeps_memory_bounded_and_loses_nothing() {
    let server = server(config());
    let (control_credit, data_credit) = (4, 8);
    let (addr, id) = start(
        &server,
        1029,
        Duration::from_secs(10),
        (control_credit, data_credit),
    )
    .await;
    addr.send(backtest_actors::Continue(advance(30)))
        .await
        .unwrap()
        .unwrap();
    let mut capture = Capture::default();
    let mut max_queued = 0;
    let mut readies = 0;
    loop {
        let status = addr.send(GetStatus).await.unwrap();
        max_queued = max_queued.max(status.queued_events);
        let next = tokio::time::timeout(WAIT, addr.send(NextEvent))
            .await
            .expect("an event")
            .unwrap();
        match next {
            Ok(Some(event)) => {
                let data = event.is_data();
                capture.record(&event);
                if data {
                    tokio::time::sleep(Duration::from_micros(300)).await;
                }
                if matches!(event, ManagedEvent::ReadyForContinue) {
                    readies += 1;
                    assert_eq!(
                        readies, 1,
                        "only the opening one: a continue covers the range"
                    );
                }
            }
            Ok(None) => break,
            Err(e) => panic!("failed: {e}"),
        }
    }
    capture.assert_matches(&server.state().record(&id).unwrap());
    // Control credit, one data connection's credit per kind, and
    // `Completed` (which holds none).
    let bound = control_credit + 2 * data_credit + 1;
    assert!(max_queued <= bound, "{max_queued} queued, bound {bound}");
    assert!(max_queued > 0);
}

#[actix_rt::test]
async fn a_consumer_pausing_past_the_keepalive_deadline_causes_no_reconnect() {
    let server = server(config());
    let programs = programs(&server);
    // Both planes out of credit while the consumer sleeps far past the
    // keepalive deadline: waiting for credit is not silence from the server.
    let (addr, info) = start_subscribed(
        SessionSupervisor::builder(server.control_url(), "key", create(1000, 1029, json!({})))
            .keepalive(Duration::from_millis(50), Duration::from_millis(300))
            .credit(4, 8),
        programs,
    )
    .await;
    addr.send(backtest_actors::Continue(advance(30)))
        .await
        .unwrap()
        .unwrap();
    let mut capture = Capture::default();
    let mut paused = false;
    loop {
        let next = tokio::time::timeout(WAIT, addr.send(NextEvent))
            .await
            .expect("an event")
            .unwrap();
        match next {
            Ok(Some(event)) => {
                if event.is_data() && !paused {
                    paused = true;
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                    let status = addr.send(GetStatus).await.unwrap();
                    assert!(
                        status.queued_events > 0,
                        "the planes filled their credit meanwhile"
                    );
                }
                capture.record(&event);
            }
            Ok(None) => break,
            Err(e) => panic!("failed: {e}"),
        }
    }
    capture.assert_matches(&server.state().record(&info.session_id).unwrap());
    let status = addr.send(GetStatus).await.unwrap();
    assert_eq!(
        status.counters.reconnects, 0,
        "no connection was presumed dead"
    );
    assert_eq!(status.counters.duplicates_removed, 0);
}

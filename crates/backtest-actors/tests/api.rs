//! The public surface: the async facade from plain tokio, continueTo and
//! discoveries, create and request errors.

mod support;

use backtest_actors::{
    ContinueTo, ManagedBacktestSession, ManagedEvent, ManagedSessionError, NextEvent,
    SessionSupervisor, WaitSession,
};
use serde_json::json;
use simulator_api::{ContinueParams, ContinueToParams};
use support::*;

/// The facade has the seed crate's shape and runs from a plain tokio
/// runtime (no actix system): the library starts its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facade_runs_from_plain_tokio() {
    let server = server(config());
    let programs = programs(&server);
    let mut session = ManagedBacktestSession::start(
        server.control_url(),
        "key".into(),
        create(1000, 1014, json!({"sendSummary": true})),
    )
    .await
    .expect("started");
    let id = session.session_info().session_id.clone();
    session.subscribe_transactions(programs.clone());
    session.subscribe_account_diffs(programs);
    session.set_completion_drain_timeout(std::time::Duration::from_secs(10));
    let mut capture = Capture::default();
    let end = loop {
        match tokio::time::timeout(WAIT, session.next_event())
            .await
            .expect("event")
        {
            Ok(event) => {
                capture.record(&event);
                if let ManagedEvent::Completed {
                    summary,
                    agent_stats,
                } = &event
                {
                    assert_eq!(summary.as_ref().map(|s| s.correct_simulation), Some(60));
                    assert!(agent_stats.is_none());
                }
                if matches!(event, ManagedEvent::ReadyForContinue) {
                    session.send_continue(advance(4)).await.expect("continue");
                }
            }
            Err(e) => break e,
        }
    };
    assert_eq!(
        end,
        ManagedSessionError::ControlClosed,
        "the stream ends after Completed"
    );
    capture.assert_matches(&server.state().record(&id).unwrap());
    // Ended streams stay ended.
    assert_eq!(
        session.next_event().await.unwrap_err(),
        ManagedSessionError::ControlClosed
    );
    session.shutdown().await;
}

#[actix_rt::test]
async fn continue_to_pauses_and_discoveries_are_forwarded() {
    let server = server(config());
    let program = programs(&server)[0].clone();
    let addr = SessionSupervisor::builder(
        server.control_url(),
        "key",
        create(
            1000,
            1009,
            json!({"discoveries": [{"kind": "programExecuted", "value": program}]}),
        ),
    )
    .start();
    addr.send(WaitSession).await.unwrap().unwrap();
    let mut discovered = None;
    while discovered.is_none() {
        let event = addr.send(NextEvent).await.unwrap().unwrap().unwrap();
        if let ManagedEvent::DiscoveryBatch(d) = &event {
            discovered = Some((d.slot, d.batch_index));
        }
    }
    let (slot, batch) = discovered.unwrap();
    addr.send(ContinueTo(ContinueToParams {
        slot,
        batch_index: Some(batch),
    }))
    .await
    .unwrap()
    .unwrap();
    loop {
        match addr.send(NextEvent).await.unwrap().unwrap().unwrap() {
            ManagedEvent::Paused(paused) => {
                assert_eq!((paused.slot, paused.batch_index), (slot, Some(batch)));
                break;
            }
            ManagedEvent::Slot(s) => assert!(s < slot),
            ManagedEvent::ReadyForContinue => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn create_errors_and_forwarded_errors() {
    let server = server(config());
    // The server refuses the range: the session never exists.
    let addr =
        SessionSupervisor::builder(server.control_url(), "key", create(5, 1, json!({}))).start();
    match addr.send(WaitSession).await.unwrap() {
        Err(ManagedSessionError::Create(reason)) => {
            assert!(
                reason.contains("start_slot 5 is after end_slot 1"),
                "{reason}"
            )
        }
        other => panic!("expected a create error, got {other:?}"),
    }
    assert!(matches!(
        addr.send(NextEvent).await.unwrap(),
        Err(ManagedSessionError::Create(_))
    ));

    // A bad URL fails the same way, before any connection.
    let addr =
        SessionSupervisor::builder("http://nowhere", "key", create(1000, 1001, json!({}))).start();
    assert!(matches!(
        addr.send(WaitSession).await.unwrap(),
        Err(ManagedSessionError::Create(_))
    ));

    // A bad transaction is refused by the server and forwarded; the session
    // goes on.
    let addr =
        SessionSupervisor::builder(server.control_url(), "key", create(1000, 1001, json!({})))
            .start();
    addr.send(WaitSession).await.unwrap().unwrap();
    addr.send(backtest_actors::Continue(ContinueParams {
        transactions: vec!["!!".into()],
        ..ContinueParams::default()
    }))
    .await
    .unwrap()
    .unwrap();
    let mut saw_error = false;
    let capture = loop {
        match addr.send(NextEvent).await.unwrap().unwrap() {
            Some(ManagedEvent::Error(e)) => {
                assert!(
                    e.to_string()
                        .contains("invalid transaction encoding at index 0")
                );
                saw_error = true;
            }
            Some(ManagedEvent::ReadyForContinue) if saw_error => {
                addr.send(backtest_actors::Continue(advance(2)))
                    .await
                    .unwrap()
                    .unwrap();
                break drive(&addr, 2).await;
            }
            Some(_) => {}
            None => panic!("ended early"),
        }
    };
    assert!(capture.completed);
}

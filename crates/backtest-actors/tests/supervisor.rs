//! The supervisor against the reference server over loopback: full runs,
//! push and pull, exactly once, trailing notifications before `Completed`.

mod support;

use backtest_actors::{GetStatus, ManagedEvent, SessionSupervisor, Shutdown, WaitOutcome};
use serde_json::json;
use support::*;

#[actix_rt::test]
async fn full_run_pull_delivers_the_record_exactly_once() {
    let server = server(config());
    let programs = programs(&server);
    let (addr, info) = start_subscribed(
        SessionSupervisor::builder(server.control_url(), "key", create(1000, 1029, json!({}))),
        programs,
    )
    .await;
    assert_eq!(
        info.rpc_endpoint,
        format!("{}/rpc/{}", server.http_base(), info.session_id)
    );
    let capture = drive(&addr, 7).await;
    assert_eq!(capture.end, Some(Ok(())), "{:?}", capture.labels.last());
    let record = server.state().record(&info.session_id).unwrap();
    capture.assert_matches(&record);
    assert_eq!(record.slots.len(), 30);

    let status = addr.send(GetStatus).await.unwrap();
    assert_eq!(
        status.counters.transactions as usize,
        capture.signatures.len()
    );
    assert_eq!(status.counters.account_diffs as usize, capture.diffs.len());
    assert_eq!(status.counters.duplicates_removed, 0);
    assert_eq!(status.counters.reconnects, 0);
    assert!(status.counters.bytes_in > 0);
    assert_eq!(addr.send(WaitOutcome).await.unwrap(), Ok(()));
    addr.send(Shutdown).await.unwrap();
}

/// A push consumer: records events as they are pushed.
struct Recorder {
    capture: std::sync::Arc<std::sync::Mutex<Capture>>,
}

impl actix::Actor for Recorder {
    type Context = actix::Context<Self>;
}

impl actix::Handler<ManagedEvent> for Recorder {
    type Result = ();

    fn handle(&mut self, event: ManagedEvent, _: &mut Self::Context) {
        self.capture.lock().unwrap().record(&event);
    }
}

#[actix_rt::test]
async fn full_run_push_delivers_the_record_exactly_once() {
    use actix::Actor as _;
    let server = server(config());
    let programs = programs(&server);
    let capture = std::sync::Arc::new(std::sync::Mutex::new(Capture::default()));
    let recorder = Recorder {
        capture: capture.clone(),
    }
    .start();
    let (addr, info) = start_subscribed(
        SessionSupervisor::builder(server.control_url(), "key", create(1000, 1019, json!({})))
            .events(recorder.recipient()),
        programs,
    )
    .await;
    // Drive blind: continue until the session ends.
    let outcome = async {
        while addr
            .send(backtest_actors::Continue(advance(4)))
            .await
            .unwrap()
            .is_ok()
        {}
        addr.send(WaitOutcome).await.unwrap()
    };
    let outcome = tokio::time::timeout(WAIT, outcome)
        .await
        .expect("ends in time");
    assert_eq!(outcome, Ok(()));
    // WaitOutcome resolves after the recipient handled the last event.
    assert!(capture.lock().unwrap().completed);
    let record = server.state().record(&info.session_id).unwrap();
    capture.lock().unwrap().assert_matches(&record);
}

//! The crates.io client `simulator-client` 0.9.0, written by the API's
//! owners, drives the reference server's control plane unchanged.

use std::time::Duration;

use backtest_e2e::{small_config, start};
use simulator_api::BacktestResponse;
use simulator_client::{BacktestClient, Continue, CreateSession, ReadyOutcome};

const WAIT: Option<Duration> = Some(Duration::from_secs(20));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_client_runs_a_session_to_completion() {
    let server = start(small_config());
    let client = BacktestClient::builder()
        .url(server.control_url())
        .api_key("interop")
        .request_timeout(Duration::from_secs(20))
        .build();
    let mut session = client
        .create_session(
            CreateSession::builder()
                .start_slot(1100)
                .end_slot(1124)
                .send_summary(true)
                .build(),
        )
        .await
        .expect("session created");
    assert!(session.session_id().is_some());
    assert_eq!(
        session.rpc_endpoint().unwrap(),
        format!(
            "{}/rpc/{}",
            server.http_base(),
            session.session_id().unwrap()
        )
    );
    assert!(matches!(
        session.ensure_ready(WAIT).await.unwrap(),
        ReadyOutcome::Ready
    ));

    let mut slots = Vec::new();
    let mut completed = false;
    for _ in 0..100 {
        let result = session
            .continue_until_ready(Continue::builder().advance_count(7).build(), WAIT, |r| {
                if let BacktestResponse::SlotNotification(slot) = r {
                    slots.push(*slot);
                }
            })
            .await
            .expect("continue");
        if result.completed {
            completed = true;
            break;
        }
    }
    assert!(completed);
    assert_eq!(slots, (1100..=1124).collect::<Vec<_>>());
    session.close(WAIT).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_client_attaches_with_a_last_sequence() {
    let server = start(small_config());
    let client = BacktestClient::builder()
        .url(server.control_url())
        .api_key("interop")
        .request_timeout(Duration::from_secs(20))
        .build();
    let mut first = client
        .create_session(
            CreateSession::builder()
                .start_slot(1200)
                .end_slot(1209)
                .disconnect_timeout_secs(60)
                .build(),
        )
        .await
        .expect("session created");
    first.ensure_ready(WAIT).await.unwrap();
    let mut slots = Vec::new();
    first
        .continue_until_ready(Continue::builder().advance_count(4).build(), WAIT, |r| {
            if let BacktestResponse::SlotNotification(slot) = r {
                slots.push(*slot);
            }
        })
        .await
        .unwrap();
    let id = first.session_id().unwrap().to_string();
    let last = first.last_sequence().expect("sequenced session");
    first.abort();

    // The server notices the drop shortly; until then the session is busy.
    let mut attached = None;
    for _ in 0..100 {
        match client.attach_session(&id, Some(last)).await {
            Ok(session) => {
                attached = Some(session);
                break;
            }
            Err(e) => {
                assert!(e.to_string().contains("busy"), "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let mut session = attached.expect("attached");
    session.resume_attached_session().await.expect("resumed");
    loop {
        let result = session
            .continue_until_ready(Continue::builder().advance_count(3).build(), WAIT, |r| {
                if let BacktestResponse::SlotNotification(slot) = r {
                    slots.push(*slot);
                }
            })
            .await
            .expect("continue after attach");
        if result.completed {
            break;
        }
    }
    assert_eq!(slots, (1200..=1209).collect::<Vec<_>>());
    session.close(WAIT).await.expect("close");
}

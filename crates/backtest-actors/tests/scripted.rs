//! The supervisor against a scripted peer, for exact frames: errors that
//! must or must not be forwarded, notifications between subscribe acks,
//! continue gating, a zstd bomb, and the shutdown order.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use backtest_actors::{
    Continue, ManagedSessionError, SessionSupervisor, Shutdown, SubscribeTransactions, WaitSession,
};
use backtest_server::{Ledger, LedgerConfig};
use serde_json::{Value, json};
use simulator_api::ws_compression::{WS_COMPRESSION_LEVEL, WsStreamCompressor};
use support::{scripted::Scripted, *};

/// Two real transactions (one per program) of slot 1000.
fn ledger_txs() -> (Vec<String>, Vec<(String, String)>) {
    let ledger = Ledger::new(LedgerConfig {
        programs: LedgerConfig::default_programs()[..2].to_vec(),
        ..LedgerConfig::default()
    })
    .unwrap();
    let programs = ledger.programs().to_vec();
    let slot = ledger.slot(1000).unwrap();
    let txs = programs
        .iter()
        .map(|p| {
            let tx = slot
                .transactions
                .iter()
                .find(|tx| &tx.program == p)
                .unwrap();
            (tx.signature.clone(), tx.json.to_string())
        })
        .collect();
    (programs, txs)
}

fn notification(sub: u64, result: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","method":"transactionNotification","params":{{"subscription":{sub},"result":{result}}}}}"#
    )
}

/// Control: create → created + ready; continue → slot, a simulation
/// error (not forwarded), a forwarded error, completed.
async fn control_script(mut peer: support::scripted::Peer) {
    let Some(create) = peer.recv_json().await else {
        return;
    };
    assert_eq!(create["method"], "createBacktestSession");
    peer.send_json(json!({"method": "sessionCreated", "params": {
        "session_id": "s1", "rpc_endpoint": "/rpc/s1", "task_id": "t1"}}))
        .await;
    peer.send_json(json!({"method": "readyForContinue"})).await;
    while let Some(request) = peer.recv_json().await {
        if request["method"] == "continue" {
            peer.send_json(json!({"method": "slotNotification", "params": 1000}))
                .await;
            peer.send_json(json!({"method": "error", "params": {"simulationError": {"error": "tx 3 diverged"}}}))
                .await;
            peer.send_json(json!({"method": "error", "params": {"invalidRequest": {"error": "just so you know"}}}))
                .await;
            peer.send_json(json!({"method": "completed", "params": {}}))
                .await;
        }
    }
}

/// A peer whose control connections run [`control_script`] and whose data
/// connections run `data` with their number (0 for the first); also
/// returns the count of data connections.
fn control_and_data<F, Fut>(data: F) -> (Scripted, Arc<AtomicUsize>)
where
    F: Fn(support::scripted::Peer, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    let data = Arc::new(data);
    let peer = Scripted::start(move |peer| {
        let data = data.clone();
        let seen = seen.clone();
        async move {
            if peer.path != "/rpc/s1" {
                return control_script(peer).await;
            }
            let connection = seen.fetch_add(1, Ordering::SeqCst);
            data(peer, connection).await;
        }
    });
    (peer, connections)
}

#[actix_rt::test]
async fn errors_acks_and_gating_are_exact() {
    let (programs, txs) = ledger_txs();
    let data_txs = txs.clone();
    let peer = Scripted::start(move |mut peer| {
        let txs = data_txs.clone();
        async move {
            if peer.path != "/rpc/s1" {
                return control_script(peer).await;
            }
            let first: Value = peer.recv_json().await.unwrap();
            assert_eq!(first["id"], 1);
            assert_eq!(first["params"][1]["compression"], "zstd");
            // Slow acks: the continue must wait for them.
            tokio::time::sleep(Duration::from_millis(300)).await;
            peer.send_json(json!({"jsonrpc": "2.0", "id": 1, "result": 10}))
                .await;
            let second: Value = peer.recv_json().await.unwrap();
            assert_eq!(second["id"], 2);
            // Program A already streams before B's ack (compressed).
            let mut zstd = WsStreamCompressor::new(WS_COMPRESSION_LEVEL).unwrap();
            peer.send_binary(
                zstd.compress(notification(10, &txs[0].1).as_bytes())
                    .unwrap(),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            peer.note("<acks sent>");
            peer.send_json(json!({"jsonrpc": "2.0", "id": 2, "result": 11}))
                .await;
            peer.send_text(notification(11, &txs[1].1)).await;
            peer.send_json(json!({"jsonrpc": "2.0", "method": "subscriptionComplete", "params": {"subscription": 10}}))
                .await;
            peer.send_json(json!({"jsonrpc": "2.0", "method": "subscriptionComplete", "params": {"subscription": 11}}))
                .await;
            peer.idle().await;
        }
    });
    let addr = SessionSupervisor::builder(peer.url(), "key", create(1000, 1000, json!({}))).start();
    let info = addr.send(WaitSession).await.unwrap().unwrap();
    assert_eq!(info.rpc_endpoint, format!("http://{}/rpc/s1", peer.addr));
    addr.send(SubscribeTransactions { programs })
        .await
        .unwrap()
        .unwrap();
    // Gated: resolves only once both subscriptions are acknowledged.
    addr.send(Continue(advance(1))).await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !peer.log().iter().any(|l| l.contains("\"continue\"")) {
        assert!(tokio::time::Instant::now() < deadline, "continue arrives");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = peer.log();
    let acks = log.iter().position(|l| l == "<acks sent>").unwrap();
    let cont = log.iter().position(|l| l.contains("\"continue\"")).unwrap();
    assert!(
        acks < cont,
        "continue sent before the subscriptions were up: {log:?}"
    );

    let mut capture = Capture::default();
    loop {
        match addr.send(backtest_actors::NextEvent).await.unwrap() {
            Ok(Some(event)) => capture.record(&event),
            Ok(None) => break,
            Err(e) => panic!("failed: {e}"),
        }
    }
    // The opening ready first, `completed` last; in between (in arrival
    // order, which races across the two planes) exactly these.
    assert_eq!(capture.labels.first().map(String::as_str), Some("ready"));
    assert_eq!(capture.labels.last().map(String::as_str), Some("completed"));
    let mut middle = capture.labels[1..capture.labels.len() - 1].to_vec();
    middle.sort();
    assert_eq!(
        middle,
        vec![
            "error invalid request: just so you know",
            "slot 1000",
            "tx",
            "tx"
        ]
    );
    let mut expected: Vec<_> = txs.iter().map(|t| t.0.clone()).collect();
    let mut got = capture.signatures.clone();
    expected.sort();
    got.sort();
    assert_eq!(
        got, expected,
        "both transactions once, the early one included"
    );
    assert!(
        capture.errors.iter().all(|e| !e.contains("diverged")),
        "simulationError is not forwarded"
    );
    assert_eq!(capture.errors.len(), 1);
}

#[actix_rt::test]
async fn a_zstd_bomb_fails_the_subscription_with_a_clear_error() {
    let (programs, _) = ledger_txs();
    let peer = Scripted::start(move |mut peer| async move {
        if peer.path != "/rpc/s1" {
            return control_script(peer).await;
        }
        let _ = peer.recv_json().await;
        peer.send_json(json!({"jsonrpc": "2.0", "id": 1, "result": 10}))
            .await;
        let mut zstd = WsStreamCompressor::new(WS_COMPRESSION_LEVEL).unwrap();
        let bomb = zstd.compress(&vec![b' '; 8 << 20]).unwrap();
        assert!(bomb.len() < 64 << 10, "small on the wire");
        peer.send_binary(bomb).await;
        peer.idle().await;
    });
    let addr = SessionSupervisor::builder(peer.url(), "key", create(1000, 1000, json!({})))
        .max_frame_bytes(1 << 20)
        .start();
    addr.send(WaitSession).await.unwrap().unwrap();
    addr.send(SubscribeTransactions {
        programs: programs[..1].to_vec(),
    })
    .await
    .unwrap()
    .unwrap();
    let capture = drive(&addr, 1).await;
    match capture.end {
        Some(Err(ManagedSessionError::SubscriptionFailed(reason))) => {
            assert!(
                reason.contains("decompresses to more than 1048576 bytes"),
                "{reason}"
            )
        }
        other => panic!("expected a subscription failure, got {other:?}"),
    }
}

#[actix_rt::test]
async fn shutdown_sends_the_close_request_then_a_close_frame() {
    let peer = Scripted::start(|mut peer| async move {
        let _ = peer.recv_json().await;
        peer.send_json(json!({"method": "sessionCreated", "params": {
            "session_id": "s1", "rpc_endpoint": "/rpc/s1"}}))
            .await;
        peer.send_json(json!({"method": "readyForContinue"})).await;
        while let Some(request) = peer.recv_json().await {
            if request["method"] == "closeBacktestSession" {
                peer.send_json(json!({"method": "success"})).await;
            }
        }
    });
    let addr = SessionSupervisor::builder(peer.url(), "key", create(1000, 1000, json!({}))).start();
    addr.send(WaitSession).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, addr.send(Shutdown))
        .await
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !peer.log().iter().any(|l| l == "<close>") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "close frame arrives"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = peer.log();
    let tail: Vec<&str> = log.iter().rev().take(2).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        vec![r#"{"method":"closeBacktestSession"}"#, "<close>"]
    );
}

#[actix_rt::test]
async fn a_reconnecting_subscription_is_not_a_stall() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_test_writer()
        .try_init();
    let (programs, txs) = ledger_txs();
    let data_txs = txs.clone();
    let (peer, connections) = control_and_data(move |mut peer, connection| {
        let txs = data_txs.clone();
        async move {
            let request = peer.recv_json().await.unwrap();
            if connection == 0 {
                peer.send_json(json!({"jsonrpc": "2.0", "id": 1, "result": 10}))
                    .await;
                peer.send_text(notification(10, &txs[0].1)).await;
                // Drop without a close frame well within the idle timeout
                // (the control plane completes meanwhile).
                tokio::time::sleep(Duration::from_millis(100)).await;
                return;
            }
            // The resubscribe resumes from the delivered slot.
            assert_eq!(request["params"][1]["replayFromSlot"], 1000);
            // A slow handshake, longer than the idle timeout: the drain
            // must wait, not declare a stall.
            tokio::time::sleep(Duration::from_millis(800)).await;
            peer.send_json(json!({"jsonrpc": "2.0", "id": 1, "result": 20}))
                .await;
            // The boundary slot again (a duplicate), then the rest.
            peer.send_text(notification(20, &txs[0].1)).await;
            peer.send_json(json!({"jsonrpc": "2.0", "method": "subscriptionComplete", "params": {"subscription": 20}}))
                .await;
            peer.idle().await;
        }
    });
    let addr = SessionSupervisor::builder(peer.url(), "key", create(1000, 1000, json!({})))
        .drain_idle_timeout(Duration::from_millis(500))
        .start();
    addr.send(WaitSession).await.unwrap().unwrap();
    addr.send(SubscribeTransactions {
        programs: programs[..1].to_vec(),
    })
    .await
    .unwrap()
    .unwrap();
    let mut capture = Capture::default();
    loop {
        match addr.send(backtest_actors::NextEvent).await.unwrap() {
            Ok(Some(event)) => {
                if matches!(event, backtest_actors::ManagedEvent::ReadyForContinue) {
                    addr.send(Continue(advance(1))).await.unwrap().unwrap();
                }
                capture.record(&event);
            }
            Ok(None) => break,
            Err(e) => panic!("the drain failed: {e}"),
        }
    }
    assert_eq!(capture.signatures, vec![txs[0].0.clone()], "once");
    assert!(capture.completed);
    let status = addr.send(backtest_actors::GetStatus).await.unwrap();
    assert_eq!(status.counters.duplicates_removed, 1);
    assert_eq!(status.counters.reconnects, 1);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[actix_rt::test]
async fn an_oversized_frame_fails_clearly_and_deep_nesting_is_skipped() {
    let (programs, _) = ledger_txs();
    let peer = Scripted::start(move |mut peer| async move {
        if peer.path != "/rpc/s1" {
            let _ = peer.recv_json().await;
            // Hostile control frames first: skipped and counted.
            peer.send_text(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)))
                .await;
            peer.send_json(json!({"method": "sessionCreated", "params": {
                "session_id": "s1", "rpc_endpoint": "/rpc/s1"}}))
                .await;
            peer.send_json(json!({"method": "readyForContinue"})).await;
            return peer.idle().await;
        }
        let _ = peer.recv_json().await;
        peer.send_json(json!({"jsonrpc": "2.0", "id": 1, "result": 10}))
            .await;
        peer.send_text("x".repeat(2 << 20)).await;
        peer.idle().await;
    });
    let addr = SessionSupervisor::builder(peer.url(), "key", create(1000, 1000, json!({})))
        .max_frame_bytes(1 << 20)
        .start();
    addr.send(WaitSession).await.unwrap().unwrap();
    addr.send(SubscribeTransactions {
        programs: programs[..1].to_vec(),
    })
    .await
    .unwrap()
    .unwrap();
    // Pull until the stream ends (no continue: the data plane fails first).
    let outcome = loop {
        match tokio::time::timeout(WAIT, addr.send(backtest_actors::NextEvent))
            .await
            .expect("ends")
            .unwrap()
        {
            Ok(Some(_)) => {}
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let status = addr.send(backtest_actors::GetStatus).await.unwrap();
    assert_eq!(status.counters.undecodable_frames, 1, "the nested frame");
    assert_eq!(
        status.counters.reconnects, 0,
        "a frame too large is not retried"
    );
    match outcome {
        Err(ManagedSessionError::SubscriptionFailed(reason)) => {
            assert!(
                reason.contains("message larger than 1048576 bytes"),
                "{reason}"
            )
        }
        other => panic!("expected a subscription failure, got {other:?}"),
    }
}

/// Transactions of the first program over `slots` slots from 1000, in
/// ledger order: (slot, signature, JSON).
fn first_program_txs(slots: u64) -> (String, Vec<(u64, String, String)>) {
    let ledger = Ledger::new(LedgerConfig {
        programs: LedgerConfig::default_programs()[..2].to_vec(),
        ..LedgerConfig::default()
    })
    .unwrap();
    let program = ledger.programs()[0].clone();
    let txs = (1000..1000 + slots)
        .flat_map(|slot| {
            let data = ledger.slot(slot).unwrap();
            data.transactions
                .iter()
                .filter(|tx| tx.program == program)
                .map(|tx| (slot, tx.signature.clone(), tx.json.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    (program, txs)
}

#[actix_rt::test]
async fn frames_read_with_a_dropped_connection_are_delivered_before_the_resubscribe() {
    let (program, txs) = first_program_txs(40);
    let last_slot = txs.last().unwrap().0;
    let data_txs = txs.clone();
    let (peer, connections) = control_and_data(move |mut peer, connection| {
        let txs = data_txs.clone();
        async move {
            let request = peer.recv_json().await.unwrap();
            peer.send_json(json!({"jsonrpc": "2.0", "id": 1, "result": 10}))
                .await;
            if connection == 0 {
                // Everything back to back, then the connection drops (no
                // close frame): the client reads the frames and the end
                // together, and must still deliver every frame it read.
                for (_, _, tx) in &txs {
                    peer.send_text(notification(10, tx)).await;
                }
                return;
            }
            // The cursor covers the last frame sent before the drop.
            peer.note(format!("resume {}", request["params"][1]["replayFromSlot"]));
            for (_, _, tx) in txs.iter().filter(|(slot, _, _)| *slot == last_slot) {
                peer.send_text(notification(10, tx)).await;
            }
            peer.send_json(json!({"jsonrpc": "2.0", "method": "subscriptionComplete", "params": {"subscription": 10}}))
                .await;
            peer.idle().await;
        }
    });
    let addr = SessionSupervisor::builder(peer.url(), "key", create(1000, 1000, json!({}))).start();
    addr.send(WaitSession).await.unwrap().unwrap();
    addr.send(SubscribeTransactions {
        programs: vec![program],
    })
    .await
    .unwrap()
    .unwrap();
    let capture = drive(&addr, 1).await;
    assert!(
        matches!(capture.end, Some(Ok(()))),
        "completed: {:?}",
        capture.end
    );
    let expected: Vec<_> = txs.iter().map(|(_, sig, _)| sig.clone()).collect();
    assert_eq!(capture.signatures, expected, "all, once, in wire order");
    assert!(capture.completed);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert!(
        peer.log().contains(&format!("resume {last_slot}")),
        "resubscribed from the last slot read: {:?}",
        peer.log()
            .iter()
            .filter(|l| l.starts_with("resume"))
            .collect::<Vec<_>>()
    );
    let status = addr.send(backtest_actors::GetStatus).await.unwrap();
    let last_slot_txs = txs.iter().filter(|(slot, _, _)| *slot == last_slot).count();
    assert_eq!(status.counters.duplicates_removed, last_slot_txs as u64);
}

//! The reference server's control plane over real loopback WebSockets:
//! exact frames (golden JSON written by hand), handoff, errors and auth.

use backtest_e2e::{Inbound, RawWs, small_config, start};
use backtest_server::{Ledger, ServerConfig};
use serde_json::{Value, json};

fn create(start: u64, end: u64, extra: Value) -> Value {
    let mut params = json!({"startSlot": start, "endSlot": end});
    params
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    json!({"method": "createBacktestSession", "params": params})
}

fn session_id(created: &Value) -> String {
    created["params"]["session_id"]
        .as_str()
        .expect("session_id")
        .to_string()
}

#[actix_rt::test]
async fn single_session_frames_are_exactly_the_protocol() {
    let server = start(small_config());
    let mut ws = RawWs::connect(&server.control_url(), Some("any"))
        .await
        .unwrap();
    ws.send_json(&create(1000, 1002, json!({"sendSummary": true})))
        .await;

    assert_eq!(
        ws.next_json().await,
        json!({"method": "status", "params": {"status": "startingRuntime"}})
    );
    let created = ws.next_json().await;
    let id = session_id(&created);
    assert_eq!(
        created,
        json!({"method": "sessionCreated", "params": {
            "session_id": id, "rpc_endpoint": format!("/rpc/{id}"), "task_id": format!("task-{id}")}})
    );
    assert_eq!(ws.next_json().await, json!({"method": "readyForContinue"}));

    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 2}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "slotNotification", "params": 1000})
    );
    assert_eq!(
        ws.next_json().await,
        json!({"method": "slotNotification", "params": 1001})
    );
    assert_eq!(ws.next_json().await, json!({"method": "readyForContinue"}));

    // Advancing past the end stops at the end with `completed`.
    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 10}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "slotNotification", "params": 1002})
    );
    assert_eq!(
        ws.next_json().await,
        json!({"method": "completed", "params": {"summary": {
            "correctSimulation": 12, "incorrectSimulation": 0, "executionErrors": 0,
            "balanceDiff": 0, "logDiff": 0}}})
    );

    ws.send_json(&json!({"method": "closeBacktestSession"}))
        .await;
    assert_eq!(ws.next_json().await, json!({"method": "success"}));
    ws.close().await;

    let record = server.state().record(&id).expect("record kept");
    assert_eq!(record.slots, vec![1000, 1001, 1002]);
    assert_eq!(record.finish, Some(backtest_server::Finish::Completed));
    assert_eq!(
        server.state().live_sessions(),
        0,
        "closed sessions are reaped"
    );
}

#[actix_rt::test]
async fn completed_without_summary_has_no_params_fields() {
    let server = start(small_config());
    let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();
    ws.send_json(&create(1500, 1500, json!({}))).await;
    ws.read_until(|v| v["method"] == "readyForContinue").await;
    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 1}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "slotNotification", "params": 1500})
    );
    assert_eq!(
        ws.next_json().await,
        json!({"method": "completed", "params": {}})
    );
}

#[actix_rt::test]
async fn continue_to_pauses_before_a_batch_and_at_a_slot_boundary() {
    let server = start(small_config());
    let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();
    ws.send_json(&create(1000, 1010, json!({}))).await;
    ws.read_until(|v| v["method"] == "readyForContinue").await;

    ws.send_json(&json!({"method": "continueTo", "params": {"slot": 1001, "batchIndex": 1}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "slotNotification", "params": 1000})
    );
    assert_eq!(
        ws.next_json().await,
        json!({"method": "paused", "params": {"slot": 1001, "batchIndex": 1}})
    );
    ws.send_json(&json!({"method": "continueTo", "params": {"slot": 1002}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "slotNotification", "params": 1001})
    );
    assert_eq!(
        ws.next_json().await,
        json!({"method": "slotNotification", "params": 1002})
    );
    assert_eq!(
        ws.next_json().await,
        json!({"method": "paused", "params": {"slot": 1002}})
    );

    // A target behind the cursor is refused; the session goes on.
    ws.send_json(&json!({"method": "continueTo", "params": {"slot": 1001}}))
        .await;
    let error = ws.next_json().await;
    assert_eq!(error["method"], "error");
    assert!(
        error["params"]["invalidRequest"]["error"]
            .as_str()
            .unwrap()
            .contains("outside")
    );
    assert_eq!(ws.next_json().await, json!({"method": "readyForContinue"}));
    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 1}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "slotNotification", "params": 1003})
    );
}

#[actix_rt::test]
async fn discoveries_announce_the_next_matching_batch() {
    let config = small_config();
    let ledger = Ledger::new(config.ledger.clone()).unwrap();
    let program = ledger.programs()[1].clone();
    // The first batch at or after slot 1000 with a transaction of `program`.
    let (slot, batch, sigs) = (1000..1100)
        .flat_map(|slot| {
            let data = ledger.slot(slot).unwrap();
            (0..data.batch_count())
                .map(|b| {
                    let txs: Vec<_> = data
                        .batch(b)
                        .iter()
                        .filter(|tx| tx.program == program)
                        .map(|tx| tx.wire_bytes.clone())
                        .collect();
                    (slot, b, txs)
                })
                .collect::<Vec<_>>()
        })
        .find(|(_, _, txs)| !txs.is_empty())
        .expect("the program appears");
    let server = start(config);
    let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();
    ws.send_json(&create(
        1000,
        1099,
        json!({"discoveries": [{"kind": "programExecuted", "value": program}]}),
    ))
    .await;
    let frames = ws.read_until(|v| v["method"] == "readyForContinue").await;
    let discovery = frames
        .iter()
        .find(|v| v["method"] == "discoveryBatch")
        .expect("a discovery before the first readyForContinue");
    use base64::Engine as _;
    let expected_txs: Vec<Value> = sigs
        .iter()
        .map(|bytes| {
            json!({"data": base64::engine::general_purpose::STANDARD.encode(bytes), "encoding": "base64"})
        })
        .collect();
    assert_eq!(
        discovery,
        &json!({"method": "discoveryBatch", "params": {
            "slot": slot, "batchIndex": batch,
            "matched": [{"kind": "programExecuted", "value": program}],
            "transactions": expected_txs}})
    );
    // Pausing right before it does not announce it again.
    ws.send_json(&json!({"method": "continueTo", "params": {"slot": slot, "batchIndex": batch}}))
        .await;
    let frames = ws.read_until(|v| v["method"] == "paused").await;
    assert!(
        frames.iter().all(|v| v["method"] != "discoveryBatch"),
        "{frames:?}"
    );
}

#[actix_rt::test]
async fn sequenced_session_survives_its_connection_and_replays_after_attach() {
    let server = start(small_config());
    let url = server.control_url();
    let mut ws = RawWs::connect(&url, None).await.unwrap();
    ws.send_json(&create(1000, 1005, json!({"disconnectTimeoutSecs": 30})))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"seqId": 1, "method": "status", "params": {"status": "startingRuntime"}})
    );
    let created = ws.next_json().await;
    assert_eq!(created["seqId"], 2);
    let id = session_id(&created);
    assert_eq!(
        ws.next_json().await,
        json!({"seqId": 3, "method": "readyForContinue"})
    );
    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 2}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"seqId": 4, "method": "slotNotification", "params": 1000})
    );

    // While the first connection lives, the session is busy.
    let mut other = RawWs::connect(&url, None).await.unwrap();
    other
        .send_json(&json!({"method": "attachBacktestSession", "params": {"session_id": id, "last_sequence": 4}}))
        .await;
    let busy = other.next_json().await;
    assert_eq!(
        busy["params"]["sessionOwnershipBusy"]["reason"],
        "the session is held by a live connection"
    );

    // Drop the first connection without reading the rest.
    drop(ws);
    let mut attached = None;
    for _ in 0..50 {
        other
            .send_json(&json!({"method": "attachBacktestSession", "params": {"session_id": id, "last_sequence": 4}}))
            .await;
        let reply = other.next_json().await;
        if reply["method"] == "sessionAttached" {
            attached = Some(reply);
            break;
        }
        assert!(
            reply["params"]["sessionOwnershipBusy"].is_object(),
            "{reply}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        attached.expect("attached once the server saw the drop"),
        json!({"method": "sessionAttached", "params": {
            "session_id": id, "rpc_endpoint": format!("/rpc/{id}"), "task_id": format!("task-{id}")}})
    );
    // Replay: exactly what came after sequence 4.
    assert_eq!(
        other.next_json().await,
        json!({"seqId": 5, "method": "slotNotification", "params": 1001})
    );
    assert_eq!(
        other.next_json().await,
        json!({"seqId": 6, "method": "readyForContinue"})
    );
    other
        .send_json(&json!({"method": "resumeAttachedSession"}))
        .await;
    assert_eq!(other.next_json().await, json!({"method": "success"}));
    other
        .send_json(&json!({"method": "continue", "params": {"advanceCount": 1}}))
        .await;
    assert_eq!(
        other.next_json().await,
        json!({"seqId": 7, "method": "slotNotification", "params": 1002})
    );
}

#[actix_rt::test]
async fn attach_errors_are_exact() {
    let server = start(small_config());
    let url = server.control_url();
    let mut ws = RawWs::connect(&url, None).await.unwrap();
    ws.send_json(&json!({"method": "attachBacktestSession", "params": {"session_id": "nope", "last_sequence": null}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "error", "params": {"sessionNotFound": {"session_id": "nope"}}})
    );

    // A session without a disconnect timeout ends with its connection.
    let mut owner = RawWs::connect(&url, None).await.unwrap();
    owner.send_json(&create(1000, 1001, json!({}))).await;
    let frames = owner
        .read_until(|v| v["method"] == "readyForContinue")
        .await;
    let id = session_id(&frames[1]);
    owner.close().await;
    let mut gone = false;
    for _ in 0..100 {
        if server.state().session(&id).is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "session reaped with its connection");
    ws.send_json(&json!({"method": "attachBacktestSession", "params": {"session_id": id, "last_sequence": null}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "error", "params": {"sessionNotFound": {"session_id": id}}})
    );
    ws.send_json(&json!({"method": "resumeAttachedSession"}))
        .await;
    assert_eq!(
        ws.next_json().await["params"]["invalidRequest"]["error"],
        "no attached session to resume"
    );
}

#[actix_rt::test]
async fn bad_input_gets_errors_and_the_session_goes_on() {
    let server = start(small_config());
    let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();

    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 1}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "error", "params": {"invalidRequest": {
            "error": "no session on this connection: create or attach first"}}})
    );
    ws.send_json(&create(1005, 1004, json!({}))).await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "error", "params": {"invalidRequest": {
            "error": "start_slot 1005 is after end_slot 1004"}}})
    );
    ws.send_json(&create(900, 1004, json!({}))).await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "error", "params": {"invalidRequest": {
            "error": "range 900..=1004 is outside the available data 1000..=1999"}}})
    );
    ws.send_json(&create(1000, 1004, json!({}))).await;
    ws.read_until(|v| v["method"] == "readyForContinue").await;

    ws.send_text("this is { not json").await;
    let error = ws.next_json().await;
    assert!(
        error["params"]["invalidRequest"]["error"]
            .as_str()
            .unwrap()
            .starts_with("unparseable request:"),
        "{error}"
    );
    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 1, "transactions": ["AAAA", "not base64!"]}}))
        .await;
    let error = ws.next_json().await;
    assert_eq!(
        error["params"]["invalidTransactionEncoding"]["index"], 1,
        "{error}"
    );
    assert_eq!(ws.next_json().await, json!({"method": "readyForContinue"}));
    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 1}}))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "slotNotification", "params": 1000})
    );
    assert_eq!(ws.next_json().await, json!({"method": "readyForContinue"}));
}

#[actix_rt::test]
async fn oversized_frames_are_refused_with_1009() {
    let mut config = small_config();
    config.limits.max_frame_bytes = 4096;
    let server = start(config);
    let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();
    ws.send_text("x".repeat(10_000)).await;
    assert_eq!(ws.next().await, Inbound::Close(Some(1009)));
    // The server is still there for others.
    let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();
    ws.send_json(&create(1000, 1000, json!({}))).await;
    ws.read_until(|v| v["method"] == "readyForContinue").await;
}

#[actix_rt::test]
async fn api_keys_are_enforced_when_configured() {
    let server = start(ServerConfig {
        api_keys: vec!["right-key".into()],
        ..small_config()
    });
    let url = server.control_url();
    let wrong = RawWs::connect(&url, Some("wrong-key"))
        .await
        .err()
        .expect("refused");
    assert!(wrong.contains("401"), "{wrong}");
    let missing = RawWs::connect(&url, None).await.err().expect("refused");
    assert!(missing.contains("401"), "{missing}");
    let mut ws = RawWs::connect(&url, Some("right-key"))
        .await
        .expect("accepted");
    ws.send_json(&create(1000, 1000, json!({}))).await;
    ws.read_until(|v| v["method"] == "readyForContinue").await;
}

#[actix_rt::test]
async fn http_endpoints_report_ranges_and_usage() {
    let server = start(ServerConfig {
        api_keys: vec!["k1".into(), "k2".into()],
        ..small_config()
    });
    let client = awc::Client::default();
    let mut res = client
        .get(format!("{}/available-ranges", server.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ranges: Value = res.json().await.unwrap();
    assert_eq!(ranges.as_array().unwrap().len(), 10);
    assert_eq!(
        ranges[0],
        json!({"bundle_start_slot": 1000, "bundle_start_slot_utc": null, "max_bundle_end_slot": 1099,
               "max_bundle_end_slot_utc": null, "max_bundle_size": 100})
    );

    let mut ws = RawWs::connect(&server.control_url(), Some("k2"))
        .await
        .unwrap();
    ws.send_json(&create(1000, 1001, json!({}))).await;
    ws.read_until(|v| v["method"] == "readyForContinue").await;
    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 2}}))
        .await;
    ws.read_until(|v| v["method"] == "completed").await;

    let res = client
        .get(format!("{}/usage", server.http_base()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let mut res = client
        .get(format!(
            "{}/usage?since=2026-01-01T00:00:00Z",
            server.http_base()
        ))
        .insert_header(("X-API-Key", "k2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let usage: Value = res.json().await.unwrap();
    assert_eq!(usage["api_key_name"], "key-2");
    assert_eq!(usage["since"], "2026-01-01T00:00:00Z");
    assert_eq!(
        usage["sessions"],
        json!({"started": 1, "completed": 1, "failed": 0})
    );
    assert_eq!(usage["compute"]["executed_slot_count"], 2);
    let res = client
        .get(format!("{}/usage?since=yesterday", server.http_base()))
        .insert_header(("X-API-Key", "k1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

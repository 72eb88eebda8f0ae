//! Every bound where input arrives at the server: crossing it gets a clear
//! error, never a crash and never unbounded memory; the server goes on.

use backtest_e2e::{
    DataWs, Inbound, RawWs, create_request, create_session, method, small_config, start,
};
use backtest_server::{LedgerConfig, ServerConfig};
use serde_json::json;

#[actix_rt::test]
async fn the_session_limit_refuses_with_an_error() {
    let mut config = small_config();
    config.limits.max_sessions = 2;
    let server = start(config);
    let (_a, _, _) = create_session(&server, 1000, 1001, json!({})).await;
    let (_b, _, _) = create_session(&server, 1000, 1001, json!({})).await;
    let mut c = RawWs::connect(&server.control_url(), None).await.unwrap();
    c.send_json(&create_request(1000, 1001, json!({}))).await;
    assert_eq!(
        c.next_json().await,
        json!({"method": "error", "params": {"internal": {"error": "session limit reached (2 live sessions)"}}})
    );
    assert_eq!(server.state().live_sessions(), 2);
    // Closing one frees a place.
    drop(_a);
    let mut freed = false;
    for _ in 0..200 {
        if server.state().live_sessions() < 2 {
            freed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(freed);
    c.send_json(&create_request(1000, 1001, json!({}))).await;
    let frames = c.read_until(|v| method(v) == "readyForContinue").await;
    assert!(frames.iter().any(|v| method(v) == "sessionCreated"));
}

#[actix_rt::test]
async fn the_parallel_split_limit_refuses_with_an_error() {
    let mut config = small_config();
    config.limits.max_parallel_sessions = 3;
    let server = start(config);
    let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();
    ws.send_json(&create_request(1000, 1399, json!({"parallel": true})))
        .await;
    assert_eq!(
        ws.next_json().await,
        json!({"method": "error", "params": {"invalidRequest": {
            "error": "the range splits into 4 sub-sessions, more than the limit of 3"}}})
    );
    assert_eq!(server.state().live_sessions(), 0);
}

#[actix_rt::test]
async fn the_subscription_limit_per_connection_refuses_with_an_error() {
    let mut config = small_config();
    config.limits.max_subscriptions_per_connection = 2;
    let server = start(config);
    let (_control, id, _) = create_session(&server, 1000, 1001, json!({})).await;
    let program = LedgerConfig::default_programs()[0].clone();
    let mut data = DataWs::connect(&server, &id).await.unwrap();
    data.subscribe_transactions(&program, json!({})).await;
    data.subscribe_diffs(&program, json!({})).await;
    let (reply, _) = data
        .subscribe("transactionSubscribe", json!([{"mentions": [program]}, {}]))
        .await;
    assert_eq!(
        reply["error"],
        json!({"code": -32000, "message": "subscription limit reached for this connection"})
    );
}

#[actix_rt::test]
async fn deep_json_nesting_is_an_error_on_both_planes() {
    let server = start(small_config());
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (mut control, id, _) = create_session(&server, 1000, 1001, json!({})).await;
    // 100 000 levels in 200 kB: no stack overflow, an error.
    control.send_text(nested.clone()).await;
    let error = control.next_json().await;
    assert!(
        error["params"]["invalidRequest"]["error"]
            .as_str()
            .unwrap()
            .starts_with("unparseable request:"),
        "{error}"
    );
    let mut data = DataWs::connect(&server, &id).await.unwrap();
    data.ws.send_text(nested).await;
    match data.ws.next().await {
        Inbound::Text(text) => {
            let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(reply["error"]["code"], -32700, "{reply}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    // Both connections still serve.
    control
        .send_json(&json!({"method": "continue", "params": {"advanceCount": 1}}))
        .await;
    assert_eq!(
        control.next_json().await,
        json!({"method": "slotNotification", "params": 1000})
    );
}

#[actix_rt::test]
async fn the_replay_buffer_is_bounded() {
    let server = start(ServerConfig {
        limits: backtest_server::Limits {
            replay_buffer_frames: 4,
            ..backtest_server::Limits::default()
        },
        ..small_config()
    });
    let (mut ws, id, _) =
        create_session(&server, 1000, 1019, json!({"disconnectTimeoutSecs": 30})).await;
    ws.send_json(&json!({"method": "continue", "params": {"advanceCount": 10}}))
        .await;
    ws.read_until(|v| method(v) == "readyForContinue").await;
    drop(ws);
    // Attach from the start: only the last 4 responses are still kept.
    let mut other = RawWs::connect(&server.control_url(), None).await.unwrap();
    let mut attached = false;
    for _ in 0..100 {
        other
            .send_json(&json!({"method": "attachBacktestSession", "params": {"session_id": id, "last_sequence": null}}))
            .await;
        if method(&other.next_json().await) == "sessionAttached" {
            attached = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(attached);
    let mut seqs = Vec::new();
    for _ in 0..4 {
        match other.next().await {
            Inbound::Text(text) => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                seqs.push(value["seqId"].as_u64().unwrap());
            }
            other => panic!("{other:?}"),
        }
    }
    // 3 opening responses + 10 slots + ready = 14 sequenced; the last 4.
    assert_eq!(seqs, vec![11, 12, 13, 14]);
    assert!(
        other
            .next_within(std::time::Duration::from_millis(200))
            .await
            .is_none(),
        "nothing more"
    );
}

//! Each injected fault does what it says, on real loopback sockets: the
//! cut, close, stall, refusal, garbage or failure happens exactly where the
//! plan puts it, once where it is one-shot, is counted, and what a client
//! recovers afterwards is exactly the server's record.

use std::collections::BTreeMap;

use backtest_e2e::{
    DataFrame, DataWs, FaultPlan, Inbound, RawWs, RunningServer, continue_request, create_request,
    create_session, expected_diffs, expected_transactions, ledger_of, notification_slot,
    results_of, run_to_completion, signature_of, small_config, start,
};
use backtest_server::{Finish, faults::DropDice};
use serde_json::{Value, json};

fn server_with(faults: &str) -> (RunningServer, FaultPlan) {
    let plan = FaultPlan::from_specs(&[faults]).expect("a fault plan");
    let mut config = small_config();
    config.faults = plan.clone();
    (start(config), plan)
}

fn fired(server: &RunningServer) -> BTreeMap<String, u64> {
    server
        .state()
        .faults_fired()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// How one control connection of a driven session ended.
#[derive(Debug, Clone, PartialEq)]
struct ConnectionLog {
    /// Text frames received on it.
    frames: usize,
    /// `Ended` (cut), `Close(code)`, or `None` when the run finished on it.
    end: Option<Inbound>,
}

/// What driving a sequenced session to its end saw.
#[derive(Debug, Default)]
struct Driven {
    slots: Vec<u64>,
    connections: Vec<ConnectionLog>,
}

/// Drive the sequenced session `id` to `completed`, continuing `advance`
/// slots at a time, attaching again (with the highest `seqId` seen) each
/// time the connection is cut or closed. `ws` is the live connection
/// (`frames` read on it so far) or `None` to start with an attach; `last`
/// and `last_method` describe the last sequenced frame seen. Checks that
/// sequence numbers have no gap; replayed frames already seen are dropped
/// by sequence.
async fn drive_sequenced(
    server: &RunningServer,
    ws: Option<(RawWs, usize)>,
    id: &str,
    mut last: u64,
    last_method: &str,
    advance: u64,
) -> Driven {
    let mut driven = Driven::default();
    let mut last_method = last_method.to_string();
    let (mut ws, mut frames) = match ws {
        Some((mut ws, frames)) => {
            if last_method == "readyForContinue" {
                let _ = ws.try_send_json(&continue_request(advance)).await;
            }
            (ws, frames)
        }
        None => (
            reattach(server, id, last, &last_method, advance, &mut driven).await,
            1,
        ),
    };
    loop {
        let text = match ws.next().await {
            Inbound::Text(text) => text,
            end @ (Inbound::Ended | Inbound::Close(_)) => {
                driven.connections.push(ConnectionLog {
                    frames,
                    end: Some(end),
                });
                ws = reattach(server, id, last, &last_method, advance, &mut driven).await;
                frames = 1;
                continue;
            }
            other => panic!("unexpected frame {other:?}"),
        };
        frames += 1;
        let value: Value = serde_json::from_str(&text).unwrap();
        let Some(seq) = value["seqId"].as_u64() else {
            // Replies to this connection: `success` of a resume, or a
            // repeated continue that found the session ended or busy.
            let method = value["method"].as_str().unwrap_or_default();
            assert!(
                method == "success" || value["params"]["invalidRequest"].is_object(),
                "{value}"
            );
            continue;
        };
        if seq <= last {
            continue;
        }
        assert_eq!(seq, last + 1, "no gap in sequence numbers");
        last = seq;
        last_method = value["method"].as_str().unwrap().to_string();
        match last_method.as_str() {
            "slotNotification" => driven.slots.push(value["params"].as_u64().unwrap()),
            "readyForContinue" => {
                let _ = ws.try_send_json(&continue_request(advance)).await;
            }
            "completed" => {
                driven.connections.push(ConnectionLog { frames, end: None });
                return driven;
            }
            "status" | "sessionCreated" => {}
            other => panic!("unexpected {other}: {value}"),
        }
    }
}

/// Attach to `id` from sequence `last` until an attach is answered, then
/// resume; and continue again when the session was last seen waiting for
/// one (a continue sent just before a cut may not have arrived; a repeated
/// one is harmless: every slot runs once and frames are deduplicated by
/// sequence). Connections cut before answering are logged.
async fn reattach(
    server: &RunningServer,
    id: &str,
    last: u64,
    last_method: &str,
    advance: u64,
    driven: &mut Driven,
) -> RawWs {
    loop {
        let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();
        ws.send_json(&json!({"method": "attachBacktestSession",
            "params": {"session_id": id, "last_sequence": last}}))
            .await;
        match ws.next().await {
            Inbound::Text(reply) => {
                let reply: Value = serde_json::from_str(&reply).unwrap();
                assert_eq!(reply["method"], "sessionAttached", "{reply}");
                let _ = ws
                    .try_send_json(&json!({"method": "resumeAttachedSession"}))
                    .await;
                if last_method == "readyForContinue" {
                    let _ = ws.try_send_json(&continue_request(advance)).await;
                }
                return ws;
            }
            end => driven.connections.push(ConnectionLog {
                frames: 0,
                end: Some(end),
            }),
        }
    }
}

/// Create a sequenced session and read through `readyForContinue`.
async fn create_sequenced(server: &RunningServer, first: u64, last: u64) -> (RawWs, String) {
    let (ws, id, frames) =
        create_session(server, first, last, json!({"disconnectTimeoutSecs": 60})).await;
    assert_eq!(frames.len(), 3);
    (ws, id)
}

#[actix_rt::test]
async fn control_drop_after_cuts_before_frame_n_plus_1_once_per_session() {
    let (server, _) = server_with("control-drop-after=3");
    let (ws, id) = create_sequenced(&server, 1000, 1009).await;
    // Frames 1..=3 arrived (status, sessionCreated, readyForContinue); the
    // continue's first slot would be frame 4: the connection is cut (no
    // close frame) instead. The session lives on; one attach recovers all.
    let driven = drive_sequenced(&server, Some((ws, 3)), &id, 3, "readyForContinue", 4).await;
    assert_eq!(driven.slots, (1000..=1009).collect::<Vec<_>>());
    assert_eq!(
        driven.connections,
        vec![
            ConnectionLog {
                frames: 3,
                end: Some(Inbound::Ended)
            },
            ConnectionLog {
                frames: driven.connections[1].frames,
                end: None
            },
        ]
    );
    assert_eq!(fired(&server), counts(&[("control-drop", 1)]));
    assert_eq!(
        server.state().record(&id).unwrap().finish,
        Some(Finish::Completed)
    );
}

#[actix_rt::test]
async fn close_1012_after_closes_with_restart_once_per_session() {
    let (server, _) = server_with("close-1012-after=5");
    let (ws, id) = create_sequenced(&server, 1000, 1009).await;
    // Frames 4 and 5 are the first two slots; frame 6 is replaced by a
    // close with 1012.
    let driven = drive_sequenced(&server, Some((ws, 3)), &id, 3, "readyForContinue", 10).await;
    assert_eq!(driven.slots, (1000..=1009).collect::<Vec<_>>());
    assert_eq!(driven.connections.len(), 2);
    assert_eq!(
        driven.connections[0],
        ConnectionLog {
            frames: 5,
            end: Some(Inbound::Close(Some(1012)))
        }
    );
    assert_eq!(driven.connections[1].end, None);
    assert_eq!(fired(&server), counts(&[("close-1012", 1)]));
}

async fn subscribe(data: &mut DataWs, diffs: bool, program: &str, options: Value) -> u64 {
    if diffs {
        data.subscribe_diffs(program, options).await.0
    } else {
        data.subscribe_transactions(program, options).await.0
    }
}

/// Read notifications of one subscription until the connection ends or
/// the subscription completes; returns them and how the connection ended
/// (`None`: completed).
async fn read_subscription(data: &mut DataWs, sub: u64) -> (Vec<Value>, Option<DataFrame>) {
    let mut results = Vec::new();
    loop {
        match data.next().await {
            DataFrame::Notification {
                subscription,
                result,
                ..
            } => {
                assert_eq!(subscription, sub);
                results.push(result);
            }
            DataFrame::Complete { subscription } if subscription == sub => {
                return (results, None);
            }
            end @ (DataFrame::Ended | DataFrame::Close(_)) => return (results, Some(end)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[actix_rt::test]
async fn data_drop_after_cuts_after_n_notifications_once_per_kind() {
    let (server, _) = server_with("data-drop-after=5");
    let config = small_config();
    let ledger = ledger_of(&config);
    let program = ledger.programs()[0].clone();
    let (mut control, id, _) = create_session(&server, 1000, 1019, json!({})).await;
    run_to_completion(&mut control, 20).await;

    for diffs in [false, true] {
        let expected = if diffs {
            expected_diffs(&ledger, &program, 1000..=1019)
        } else {
            expected_transactions(&ledger, &program, 1000..=1019)
        };
        let options = json!({"compression": "zstd"});
        let mut data = DataWs::connect(&server, &id).await.unwrap();
        let sub = subscribe(&mut data, diffs, &program, options.clone()).await;
        let (first, end) = read_subscription(&mut data, sub).await;
        assert_eq!(end, Some(DataFrame::Ended), "cut without a close frame");
        assert_eq!(first[..], expected[..5]);
        // Resume from the highest slot handed on: the boundary slot again,
        // then the rest, and no second cut for this kind.
        let cursor = notification_slot(&first[4]).unwrap();
        let mut data = DataWs::connect(&server, &id).await.unwrap();
        let sub = subscribe(
            &mut data,
            diffs,
            &program,
            json!({"compression": "zstd", "replayFromSlot": cursor}),
        )
        .await;
        let (rest, end) = read_subscription(&mut data, sub).await;
        assert_eq!(end, None);
        let from = expected
            .iter()
            .position(|r| notification_slot(r) == Some(cursor))
            .unwrap();
        assert_eq!(rest[..], expected[from..]);
    }
    assert_eq!(
        fired(&server),
        counts(&[("data-drop:accountDiff", 1), ("data-drop:transaction", 1)])
    );
}

#[actix_rt::test]
async fn data_stall_after_stops_sending_but_keeps_the_socket() {
    let (server, _) = server_with("data-stall-after=4");
    let ledger = ledger_of(&small_config());
    let program = ledger.programs()[1].clone();
    let (mut control, id, _) = create_session(&server, 1000, 1019, json!({})).await;
    run_to_completion(&mut control, 20).await;
    let expected = expected_transactions(&ledger, &program, 1000..=1019);

    let mut stalled = DataWs::connect(&server, &id).await.unwrap();
    let (sub, _) = stalled.subscribe_transactions(&program, json!({})).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        match stalled.next().await {
            DataFrame::Notification { result, .. } => got.push(result),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got[..], expected[..4]);
    // Everything ran, so an unstalled connection would now send the rest.
    // This one answers a ping with nothing before the pong, and a request
    // with its reply as the very next frame.
    assert_eq!(stalled.ws.ping_pong(b"are you there").await, vec![]);
    let rid = stalled.request("getSlot", json!([])).await;
    match stalled.next().await {
        DataFrame::Reply(reply) => assert_eq!(reply["id"], rid),
        other => panic!("expected the reply, got {other:?}"),
    }
    // A second connection is not stalled again (once per kind).
    let mut fresh = DataWs::connect(&server, &id).await.unwrap();
    let (fresh_sub, _) = fresh.subscribe_transactions(&program, json!({})).await;
    let frames = fresh.read_until_complete(&[fresh_sub]).await;
    assert_eq!(results_of(&frames, fresh_sub), expected);
    // And the stalled one still sends nothing.
    assert_eq!(stalled.ws.ping_pong(b"still there").await, vec![]);
    let _ = sub;
    assert_eq!(fired(&server), counts(&[("data-stall:transaction", 1)]));
}

#[actix_rt::test]
async fn data_pause_after_pauses_at_a_slot_boundary_then_resumes_losslessly() {
    let pause = std::time::Duration::from_secs(2);
    let (server, _) = server_with("data-pause-after=4:2000");
    let ledger = ledger_of(&small_config());
    let program = ledger.programs()[0].clone();
    let (mut control, id, _) = create_session(&server, 1000, 1019, json!({})).await;
    run_to_completion(&mut control, 20).await;
    let expected = expected_transactions(&ledger, &program, 1000..=1019);
    // The pause comes before the first slot that starts after 4 sent.
    let before = (4..expected.len())
        .find(|&i| notification_slot(&expected[i]) != notification_slot(&expected[i - 1]))
        .unwrap();

    let mut data = DataWs::connect(&server, &id).await.unwrap();
    let (sub, _) = data.subscribe_transactions(&program, json!({})).await;
    let mut got = Vec::new();
    while got.len() < before {
        match data.next().await {
            DataFrame::Notification { result, .. } => got.push(result),
            other => panic!("unexpected {other:?}"),
        }
    }
    let paused_at = std::time::Instant::now();
    // Paused: a ping is answered with nothing before the pong.
    assert_eq!(data.ws.ping_pong(b"paused?").await, vec![]);
    // Then the rest follows, once each, after the pause.
    let frames = data.read_until_complete(&[sub]).await;
    assert!(paused_at.elapsed() >= pause - std::time::Duration::from_millis(100));
    got.extend(results_of(&frames, sub));
    assert_eq!(got, expected);
    // Once per kind: a second connection streams straight through.
    let mut fresh = DataWs::connect(&server, &id).await.unwrap();
    let (fresh_sub, _) = fresh.subscribe_transactions(&program, json!({})).await;
    let frames = fresh.read_until_complete(&[fresh_sub]).await;
    assert_eq!(results_of(&frames, fresh_sub), expected);
    assert_eq!(fired(&server), counts(&[("data-pause:transaction", 1)]));
}

#[actix_rt::test]
async fn attach_busy_refuses_the_first_k_attaches() {
    let (server, _) = server_with("attach-busy=2");
    let (ws, id) = create_sequenced(&server, 1000, 1003).await;
    ws.close().await;
    let mut other = RawWs::connect(&server.control_url(), None).await.unwrap();
    let attach = json!({"method": "attachBacktestSession",
        "params": {"session_id": id, "last_sequence": 3}});
    for _ in 0..2 {
        other.send_json(&attach).await;
        assert_eq!(
            other.next_json().await,
            json!({"method": "error", "params": {"sessionOwnershipBusy": {
                "reason": "injected fault: attach-busy"}}})
        );
    }
    other.send_json(&attach).await;
    assert_eq!(
        other.next_json().await,
        json!({"method": "sessionAttached", "params": {
            "session_id": id, "rpc_endpoint": format!("/rpc/{id}"), "task_id": format!("task-{id}")}})
    );
    other
        .send_json(&json!({"method": "resumeAttachedSession"}))
        .await;
    assert_eq!(other.next_json().await, json!({"method": "success"}));
    other.send_json(&continue_request(4)).await;
    let frames = other.read_until(|v| v["method"] == "completed").await;
    let slots: Vec<u64> = frames
        .iter()
        .filter(|v| v["method"] == "slotNotification")
        .map(|v| v["params"].as_u64().unwrap())
        .collect();
    assert_eq!(slots, vec![1000, 1001, 1002, 1003]);
    assert_eq!(fired(&server), counts(&[("attach-busy", 2)]));
}

const GARBAGE: &str = "<<garbage frame: not JSON>>";

#[actix_rt::test]
async fn garbage_every_puts_a_non_json_frame_before_every_nth() {
    let (server, _) = server_with("garbage-every=3");
    let ledger = ledger_of(&small_config());
    let program = ledger.programs()[0].clone();
    let mut control = RawWs::connect(&server.control_url(), None).await.unwrap();
    control
        .send_json(&create_request(1000, 1003, json!({})))
        .await;
    let mut texts = Vec::new();
    for _ in 0..4 {
        match control.next().await {
            Inbound::Text(text) => texts.push(text),
            other => panic!("{other:?}"),
        }
    }
    // status, sessionCreated, GARBAGE, readyForContinue.
    assert_eq!(texts[2], GARBAGE);
    let id = serde_json::from_str::<Value>(&texts[1]).unwrap()["params"]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let methods = |texts: &[String]| -> Vec<String> {
        texts
            .iter()
            .map(|t| match serde_json::from_str::<Value>(t) {
                Ok(v) => format!(
                    "{}{}",
                    v["method"].as_str().unwrap(),
                    v["params"]
                        .as_u64()
                        .map(|s| format!(" {s}"))
                        .unwrap_or_default()
                ),
                Err(_) => {
                    assert_eq!(t, GARBAGE);
                    "GARBAGE".to_string()
                }
            })
            .collect()
    };
    assert_eq!(
        methods(&texts),
        ["status", "sessionCreated", "GARBAGE", "readyForContinue"]
    );

    // The data plane: garbage is Text between zstd Binary frames, and the
    // zstd stream decodes across it.
    let mut data = DataWs::connect(&server, &id).await.unwrap();
    let (sub, _) = data
        .subscribe_transactions(&program, json!({"compression": "zstd"}))
        .await;
    control.send_json(&continue_request(4)).await;
    let mut more = Vec::new();
    for _ in 0..6 {
        match control.next().await {
            Inbound::Text(text) => more.push(text),
            other => panic!("{other:?}"),
        }
    }
    // Frames 4..=8 with garbage before the 6th.
    assert_eq!(
        methods(&more),
        [
            "slotNotification 1000",
            "slotNotification 1001",
            "GARBAGE",
            "slotNotification 1002",
            "slotNotification 1003",
            "completed",
        ]
    );
    let frames = data.read_until_complete(&[sub]).await;
    // The ack was frame 1; garbage before frames 3, 6, 9, ...
    let expected = expected_transactions(&ledger, &program, 1000..=1003);
    let mut want = Vec::new();
    let mut frame_no = 1; // the ack
    for result in expected {
        frame_no += 1;
        if frame_no % 3 == 0 {
            want.push(DataFrame::Garbage(GARBAGE.into()));
        }
        want.push(DataFrame::Notification {
            subscription: sub,
            method: "transactionNotification".into(),
            result,
            compressed: true,
        });
    }
    frame_no += 1;
    if frame_no % 3 == 0 {
        want.push(DataFrame::Garbage(GARBAGE.into()));
    }
    want.push(DataFrame::Complete { subscription: sub });
    assert_eq!(frames, want);
    let garbage = 1
        + 1
        + want
            .iter()
            .filter(|f| matches!(f, DataFrame::Garbage(_)))
            .count();
    assert_eq!(fired(&server), counts(&[("garbage", garbage as u64)]));
}

#[actix_rt::test]
async fn link_bytes_per_sec_throttles_without_loss() {
    let (server, _) = server_with("link-bytes-per-sec=400000");
    let ledger = ledger_of(&small_config());
    let programs = ledger.programs().to_vec();
    let (mut control, id, _) = create_session(&server, 1000, 1009, json!({})).await;
    let mut data = DataWs::connect(&server, &id).await.unwrap();
    let (tx_sub, _) = data
        .subscribe_transactions(&programs[0], json!({"compression": "zstd"}))
        .await;
    let (diff_sub, _) = data.subscribe_diffs(&programs[1], json!({})).await;
    assert_eq!(
        run_to_completion(&mut control, 3).await,
        (1000..=1009).collect::<Vec<_>>()
    );
    let frames = data.read_until_complete(&[tx_sub, diff_sub]).await;
    let record = server.state().record(&id).unwrap();
    assert_eq!(
        results_of(&frames, tx_sub)
            .iter()
            .map(signature_of)
            .collect::<Vec<_>>(),
        record.transactions[&programs[0]]
    );
    assert_eq!(
        results_of(&frames, diff_sub),
        expected_diffs(&ledger, &programs[1], 1000..=1009)
    );
    // Reported once per connection that wrote: the control and data sockets.
    assert_eq!(fired(&server), counts(&[("link-throttle", 2)]));
}

/// The number of the frame (1-based) before which `dice` cuts.
fn cut_at(dice: &mut DropDice) -> usize {
    (1..).find(|_| dice.roll()).unwrap()
}

#[actix_rt::test]
async fn random_drops_cut_where_the_seeded_dice_say() {
    let (server, plan) = server_with("random-drops=0.15,seed=11");
    let ledger = ledger_of(&small_config());
    let program = ledger.programs()[0].clone();
    let (first, last) = (1000, 1019);
    // Create until a connection lives long enough to name its session
    // (a cut before `sessionCreated` leaves nothing to attach to).
    let (ws, id, frames) = loop {
        let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();
        ws.send_json(&create_request(
            first,
            last,
            json!({"disconnectTimeoutSecs": 60}),
        ))
        .await;
        let mut frames = Vec::new();
        let mut id = None;
        while frames.len() < 3 {
            match ws.next().await {
                Inbound::Text(text) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["method"] == "sessionCreated" {
                        id = v["params"]["session_id"].as_str().map(str::to_string);
                    }
                    frames.push(v);
                }
                _ => break,
            }
        }
        if let Some(id) = id {
            break (ws, id, frames);
        }
    };
    let mut driven = if frames.len() == 3 {
        drive_sequenced(&server, Some((ws, 3)), &id, 3, "readyForContinue", 3).await
    } else {
        // Cut right after `sessionCreated`: attach from sequence 2.
        let mut driven = drive_sequenced(&server, None, &id, 2, "sessionCreated", 3).await;
        driven.connections.insert(
            0,
            ConnectionLog {
                frames: frames.len(),
                end: Some(Inbound::Ended),
            },
        );
        driven
    };
    assert_eq!(driven.slots, (first..=last).collect::<Vec<_>>());
    // Every control connection that was cut got exactly the frames before
    // its dice's first hit; the last one, where the run ended, had not hit.
    let finished = driven.connections.pop().unwrap();
    assert_eq!(finished.end, None);
    for (connection, log) in driven.connections.iter().enumerate() {
        let mut dice = DropDice::new(&plan, &id, connection as u64).unwrap();
        assert_eq!(log.end, Some(Inbound::Ended), "connection {connection}");
        assert_eq!(log.frames, cut_at(&mut dice) - 1, "connection {connection}");
    }
    let mut dice = DropDice::new(&plan, &id, driven.connections.len() as u64).unwrap();
    assert!(cut_at(&mut dice) > finished.frames);

    // The data plane, history only: resume from the highest slot seen on
    // every cut; each connection is cut exactly where its dice say.
    let mut connection = driven.connections.len() as u64 + 1;
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor: Option<u64> = None;
    let mut cuts = 0;
    loop {
        let mut dice = DropDice::new(&plan, &id, connection).unwrap();
        let cut = cut_at(&mut dice);
        connection += 1;
        let mut data = DataWs::connect(&server, &id).await.unwrap();
        let mut options = json!({"compression": "zstd"});
        if let Some(cursor) = cursor {
            options["replayFromSlot"] = json!(cursor);
        }
        let rid = data
            .request(
                "transactionSubscribe",
                json!([{"mentions": [program]}, options]),
            )
            .await;
        let mut frames = 0;
        let mut complete = false;
        loop {
            match data.next().await {
                DataFrame::Reply(reply) => assert_eq!(reply["id"], rid),
                DataFrame::Notification { result, .. } => {
                    let slot = notification_slot(&result).unwrap();
                    cursor = Some(cursor.map_or(slot, |c| c.max(slot)));
                    if !seen.contains(&result) {
                        seen.push(result);
                    }
                }
                DataFrame::Complete { .. } => complete = true,
                DataFrame::Ended => break,
                other => panic!("unexpected {other:?}"),
            }
            frames += 1;
            if complete {
                break;
            }
        }
        if complete {
            assert!(cut > frames, "completed before its cut");
            break;
        }
        assert_eq!(frames, cut - 1, "data connection {connection}");
        cuts += 1;
        assert!(cuts < 200, "the run does not converge");
    }
    assert_eq!(seen, expected_transactions(&ledger, &program, first..=last));
    let record = server.state().record(&id).unwrap();
    assert_eq!(
        seen.iter().map(signature_of).collect::<Vec<_>>(),
        record.transactions[&program]
    );
    // Each plane's drops are counted on their own: the data plane's are
    // exactly the cuts seen here.
    let fired = fired(&server);
    assert_eq!(fired.get("random-drop:data").copied().unwrap_or(0), cuts);
    assert!(
        fired.keys().all(|kind| kind.starts_with("random-drop:")),
        "{fired:?}"
    );
}

#[actix_rt::test]
async fn terminal_error_at_slot_fails_the_session_there() {
    let (server, _) = server_with("terminal-error-at-slot=1003");
    let ledger = ledger_of(&small_config());
    let program = ledger.programs()[1].clone();
    let (mut control, id, _) = create_session(&server, 1000, 1009, json!({})).await;
    let mut data = DataWs::connect(&server, &id).await.unwrap();
    let (tx_sub, _) = data.subscribe_transactions(&program, json!({})).await;
    let (diff_sub, _) = data
        .subscribe_diffs(&program, json!({"compression": "zstd"}))
        .await;
    control.send_json(&continue_request(10)).await;
    for slot in 1000..=1002 {
        assert_eq!(
            control.next_json().await,
            json!({"method": "slotNotification", "params": slot})
        );
    }
    assert_eq!(
        control.next_json().await,
        json!({"method": "error", "params": {"advanceSlotFailed": {
            "slot": 1003, "error": "injected fault: terminal-error-at-slot"}}})
    );
    // Nothing more from the session: the next frame answers the next request.
    control.send_json(&continue_request(1)).await;
    assert_eq!(
        control.next_json().await,
        json!({"method": "error", "params": {"invalidRequest": {
            "error": format!("session {id} has ended")}}})
    );
    // The data plane ends its subscriptions after the last executed slot.
    let frames = data.read_until_complete(&[tx_sub, diff_sub]).await;
    assert_eq!(
        results_of(&frames, tx_sub),
        expected_transactions(&ledger, &program, 1000..=1002)
    );
    assert_eq!(
        results_of(&frames, diff_sub),
        expected_diffs(&ledger, &program, 1000..=1002)
    );
    let record = server.state().record(&id).unwrap();
    assert_eq!(record.slots, vec![1000, 1001, 1002]);
    assert_eq!(record.finish, Some(Finish::Failed));
    assert_eq!(fired(&server), counts(&[("terminal-error", 1)]));
}

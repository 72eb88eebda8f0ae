//! Parallel sessions on the reference server: one multiplexed control
//! connection, sub-sessions split over `/available-ranges`, per-sub-session
//! sequenced events, attach with cursors, and a data plane per
//! sub-session.

use std::collections::BTreeMap;

use backtest_e2e::{
    DataWs, RawWs, create_request, diff_key_of, ledger_of, method, results_of, signature_of,
    small_config, start,
};
use serde_json::{Value, json};

/// Every `sessionEventV2` seen, per sub-session, as `(seq_id, event)`.
type Events = BTreeMap<String, Vec<(u64, Value)>>;

/// Read control frames, filing `sessionEventV2` per sub-session, until
/// `done` holds for the events so far. Any other frame is returned.
async fn read_events(
    ws: &mut RawWs,
    events: &mut Events,
    mut done: impl FnMut(&Events) -> bool,
) -> Vec<Value> {
    let mut others = Vec::new();
    while !done(events) {
        let frame = ws.next_json().await;
        if method(&frame) == "sessionEventV2" {
            let params = &frame["params"];
            events
                .entry(params["session_id"].as_str().unwrap().to_string())
                .or_default()
                .push((params["seq_id"].as_u64().unwrap(), params["event"].clone()));
        } else {
            others.push(frame);
        }
    }
    others
}

fn last_method(events: &Events, id: &str) -> String {
    events
        .get(id)
        .and_then(|e| e.last())
        .map(|(_, event)| method(event).to_string())
        .unwrap_or_default()
}

fn continue_sub(id: &str, n: u64) -> Value {
    json!({"method": "continueSessionV1", "params": {"sessionId": id, "request": {"advanceCount": n}}})
}

/// Read the parallel create handshake: one `sessionCreated` per
/// sub-session, then `sessionsCreatedV2`. Returns the summary frame.
async fn read_created(ws: &mut RawWs, expected: usize) -> Value {
    let mut created = Vec::new();
    for _ in 0..expected {
        let frame = ws.next_json().await;
        assert_eq!(method(&frame), "sessionCreated", "{frame}");
        let id = frame["params"]["session_id"].as_str().unwrap().to_string();
        assert_eq!(
            frame,
            json!({"method": "sessionCreated", "params": {
                "session_id": id, "rpc_endpoint": format!("/rpc/{id}"), "task_id": format!("task-{id}")}})
        );
        created.push(id);
    }
    let summary = ws.next_json().await;
    assert_eq!(method(&summary), "sessionsCreatedV2", "{summary}");
    assert_eq!(summary["params"]["session_ids"], json!(created));
    summary
}

#[actix_rt::test]
async fn parallel_create_splits_the_range_and_drives_every_sub_session() {
    let config = small_config();
    let ledger = ledger_of(&config);
    let programs = ledger.programs().to_vec();
    // A mid-bundle start anchors to its bundle, as `split_range` says.
    let ranges = simulator_api::split_range(&config.available_ranges(), 1050, 1249).unwrap();
    assert_eq!(ranges, vec![(1000, 1099), (1100, 1199), (1200, 1249)]);
    let server = start(config);
    let mut ws = RawWs::connect(&server.control_url(), None).await.unwrap();
    ws.send_json(&create_request(
        1050,
        1249,
        json!({"parallel": true, "sendSummary": true}),
    ))
    .await;
    let summary = read_created(&mut ws, 3).await;
    let ids: Vec<String> =
        serde_json::from_value(summary["params"]["session_ids"].clone()).unwrap();
    let control_id = summary["params"]["control_session_id"].as_str().unwrap();
    assert_eq!(
        summary,
        json!({"method": "sessionsCreatedV2", "params": {
            "control_session_id": control_id,
            "session_ids": ids,
            "task_ids": ids.iter().map(|id| format!("task-{id}")).collect::<Vec<_>>(),
            "start_slots": [1000, 1100, 1200],
            "end_slots": [1099, 1199, 1249]}})
    );

    // Each sub-session has its own data plane.
    let mut data = Vec::new();
    for id in &ids {
        let mut conn = DataWs::connect(&server, id).await.unwrap();
        let (tx, _) = conn
            .subscribe_transactions(&programs[0], json!({"compression": "zstd"}))
            .await;
        let (diff, _) = conn.subscribe_diffs(&programs[1], json!({})).await;
        data.push((conn, tx, diff));
    }

    let mut events = Events::new();
    let others = read_events(&mut ws, &mut events, |e| {
        ids.iter().all(|id| e.get(id).is_some_and(|v| v.len() == 2))
    })
    .await;
    assert!(others.is_empty(), "{others:?}");
    for id in &ids {
        assert_eq!(
            events[id],
            vec![
                (
                    1,
                    json!({"method": "status", "params": {"status": "startingRuntime"}})
                ),
                (2, json!({"method": "readyForContinue"})),
            ]
        );
    }

    // The first sub-session steps to a slot with continueToSessionV1.
    ws.send_json(&json!({"method": "continueToSessionV1",
        "params": {"sessionId": ids[0], "request": {"slot": 1010}}}))
        .await;
    let others = read_events(&mut ws, &mut events, |e| {
        last_method(e, &ids[0]) == "paused"
    })
    .await;
    assert!(others.is_empty(), "{others:?}");
    assert_eq!(
        events[&ids[0]].last().unwrap().1,
        json!({"method": "paused", "params": {"slot": 1010}})
    );

    // Then every sub-session is driven to completion, all at once: each
    // round continues every waiting sub-session and reads until each of
    // them has answered with a new `readyForContinue` or `completed`.
    loop {
        let mut waiting = BTreeMap::new();
        for id in &ids {
            if matches!(
                last_method(&events, id).as_str(),
                "readyForContinue" | "paused"
            ) {
                ws.send_json(&continue_sub(id, 40)).await;
                waiting.insert(id.clone(), events[id].len());
            }
        }
        if waiting.is_empty() {
            break;
        }
        let others = read_events(&mut ws, &mut events, |e| {
            waiting.iter().all(|(id, &before)| {
                e[id][before..]
                    .iter()
                    .any(|(_, ev)| matches!(method(ev), "readyForContinue" | "completed"))
            })
        })
        .await;
        assert!(others.is_empty(), "{others:?}");
    }

    for (i, id) in ids.iter().enumerate() {
        let evs = &events[id];
        // One sequence per sub-session, from 1, no gap.
        let seqs: Vec<u64> = evs.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=evs.len() as u64).collect::<Vec<_>>());
        let slots: Vec<u64> = evs
            .iter()
            .filter(|(_, e)| method(e) == "slotNotification")
            .map(|(_, e)| e["params"].as_u64().unwrap())
            .collect();
        assert_eq!(slots, (ranges[i].0..=ranges[i].1).collect::<Vec<_>>());
        let (_, completed) = evs.last().unwrap();
        assert_eq!(method(completed), "completed");
        assert!(completed["params"]["summary"].is_object(), "{completed}");
        assert!(completed["params"].get("agentStats").is_none());

        // Its data plane streamed exactly its own record.
        let (conn, tx, diff) = &mut data[i];
        let frames = conn.read_until_complete(&[*tx, *diff]).await;
        let record = server.state().record(id).unwrap();
        assert_eq!(
            results_of(&frames, *tx)
                .iter()
                .map(signature_of)
                .collect::<Vec<_>>(),
            record.transactions[&programs[0]]
        );
        assert_eq!(
            results_of(&frames, *diff)
                .iter()
                .map(diff_key_of)
                .collect::<Vec<_>>(),
            record.diffs[&programs[1]]
        );
        assert_eq!(record.slots, slots);
    }
    ws.send_json(&json!({"method": "closeBacktestSession"}))
        .await;
    assert_eq!(ws.next_json().await, json!({"method": "success"}));
    ws.close().await;
    assert_eq!(server.state().live_sessions(), 0);
}

#[actix_rt::test]
async fn attach_with_cursors_replays_only_what_is_missing() {
    let config = small_config();
    let ledger = ledger_of(&config);
    let program = ledger.programs()[0].clone();
    let server = start(config);
    let url = server.control_url();
    let mut ws = RawWs::connect(&url, None).await.unwrap();
    ws.send_json(&create_request(
        1000,
        1199,
        json!({"parallel": true, "disconnectTimeoutSecs": 60}),
    ))
    .await;
    let summary = read_created(&mut ws, 2).await;
    let control_id = summary["params"]["control_session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ids: Vec<String> =
        serde_json::from_value(summary["params"]["session_ids"].clone()).unwrap();
    let (a, b) = (ids[0].clone(), ids[1].clone());

    let mut events = Events::new();
    read_events(&mut ws, &mut events, |e| {
        ids.iter()
            .all(|id| last_method(e, id) == "readyForContinue")
    })
    .await;
    ws.send_json(&continue_sub(&a, 5)).await;
    ws.send_json(&continue_sub(&b, 3)).await;
    read_events(&mut ws, &mut events, |e| {
        ids.iter()
            .all(|id| last_method(e, id) == "readyForContinue" && e[id].len() > 2)
    })
    .await;
    // a: status, ready, 5 slots, ready = 8 events; b: 2 + 3 + 1 = 6.
    assert_eq!(events[&a].len(), 8);
    assert_eq!(events[&b].len(), 6);

    // While the connection lives, the group is busy; an unknown id is not
    // found.
    let mut other = RawWs::connect(&url, None).await.unwrap();
    let attach = |cursors: Value| {
        json!({"method": "attachParallelControlSessionV2",
            "params": {"control_session_id": control_id, "last_sequences": cursors}})
    };
    other.send_json(&attach(json!({}))).await;
    assert_eq!(
        other.next_json().await,
        json!({"method": "error", "params": {"sessionOwnershipBusy": {
            "reason": "the session is held by a live connection"}}})
    );
    other
        .send_json(&json!({"method": "attachParallelControlSessionV2",
            "params": {"control_session_id": "nope", "last_sequences": {}}}))
        .await;
    assert_eq!(
        other.next_json().await,
        json!({"method": "error", "params": {"sessionNotFound": {"session_id": "nope"}}})
    );

    ws.close().await;
    // `a` has seen through seq 3; `b` names no cursor, so all of it.
    other.send_json(&attach(json!({&a: 3}))).await;
    assert_eq!(
        other.next_json().await,
        json!({"method": "parallelSessionAttachedV2", "params": {
            "control_session_id": control_id,
            "session_ids": ids,
            "task_ids": ids.iter().map(|id| format!("task-{id}")).collect::<Vec<_>>()}})
    );
    let mut replayed = Events::new();
    read_events(&mut other, &mut replayed, |e| {
        e.get(&a).is_some_and(|v| v.len() == 5) && e.get(&b).is_some_and(|v| v.len() == 6)
    })
    .await;
    assert_eq!(replayed[&a], events[&a][3..]);
    assert_eq!(replayed[&b], events[&b]);

    // The group goes on from the new connection, each sub-session's
    // sequence continuing where it was.
    for id in [&a, &b] {
        other.send_json(&continue_sub(id, 100)).await;
    }
    let mut more = Events::new();
    read_events(&mut other, &mut more, |e| {
        ids.iter().all(|id| last_method(e, id) == "completed")
    })
    .await;
    assert_eq!(more[&a][0].0, 9);
    assert_eq!(more[&b][0].0, 7);
    let slots = |evs: &[(u64, Value)]| -> Vec<u64> {
        evs.iter()
            .filter(|(_, e)| method(e) == "slotNotification")
            .map(|(_, e)| e["params"].as_u64().unwrap())
            .collect()
    };
    let all_a: Vec<u64> = [slots(&events[&a]), slots(&more[&a])].concat();
    let all_b: Vec<u64> = [slots(&events[&b]), slots(&more[&b])].concat();
    assert_eq!(all_a, (1000..=1099).collect::<Vec<_>>());
    assert_eq!(all_b, (1100..=1199).collect::<Vec<_>>());

    // A subscription after the fact gets each sub-session's own history.
    for id in [&a, &b] {
        let mut conn = DataWs::connect(&server, id).await.unwrap();
        let (sub, _) = conn.subscribe_transactions(&program, json!({})).await;
        let frames = conn.read_until_complete(&[sub]).await;
        assert_eq!(
            results_of(&frames, sub)
                .iter()
                .map(signature_of)
                .collect::<Vec<_>>(),
            server.state().record(id).unwrap().transactions[&program]
        );
    }
}

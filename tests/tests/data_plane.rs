//! The reference server's data plane over real loopback WebSockets: what a
//! session's `/rpc/<id>` streams, frame by frame, against the ledger and
//! the server's own record, in Text and in zstd.

use std::collections::BTreeMap;

use backtest_e2e::{
    DataFrame, DataWs, continue_request, create_session, diff_key_of, expected_diffs,
    expected_transactions, ledger_of, notification_slot, results_of, run_to_completion,
    signature_of, small_config, start,
};
use backtest_server::{Finish, Ledger};
use serde_json::{Value, json};

/// What one subscription is: its id on the connection, kind and program.
#[derive(Debug, Clone)]
struct Sub {
    id: u64,
    diffs: bool,
    program: String,
}

impl Sub {
    fn expected(&self, ledger: &Ledger, slots: std::ops::RangeInclusive<u64>) -> Vec<Value> {
        if self.diffs {
            expected_diffs(ledger, &self.program, slots)
        } else {
            expected_transactions(ledger, &self.program, slots)
        }
    }

    fn method(&self) -> &'static str {
        if self.diffs {
            "accountDiffNotification"
        } else {
            "transactionNotification"
        }
    }
}

/// The exact frames a connection sends for `subs`, each with the results
/// it still owes (`remaining`, in ledger order): slot by slot, and within a
/// slot subscription by subscription in the order they were made (the
/// server streams the subscription furthest behind, ties in order).
fn interleave(subs: &[(Sub, Vec<Value>)], compressed: bool) -> Vec<DataFrame> {
    let mut cursors = vec![0usize; subs.len()];
    let mut out = Vec::new();
    loop {
        let next_slot = subs
            .iter()
            .zip(&cursors)
            .filter_map(|((_, results), &at)| results.get(at).and_then(notification_slot))
            .min();
        let Some(slot) = next_slot else { return out };
        for ((sub, results), at) in subs.iter().zip(cursors.iter_mut()) {
            while let Some(result) = results.get(*at) {
                if notification_slot(result) != Some(slot) {
                    break;
                }
                out.push(DataFrame::Notification {
                    subscription: sub.id,
                    method: sub.method().to_string(),
                    result: result.clone(),
                    compressed,
                });
                *at += 1;
            }
        }
    }
}

/// Subscribe both kinds for both programs on one connection.
async fn subscribe_all(data: &mut DataWs, programs: &[String], options: Value) -> Vec<Sub> {
    let mut subs = Vec::new();
    for diffs in [false, true] {
        for program in programs {
            let (id, before) = if diffs {
                data.subscribe_diffs(program, options.clone()).await
            } else {
                data.subscribe_transactions(program, options.clone()).await
            };
            assert!(before.is_empty(), "nothing streams before a slot runs");
            subs.push(Sub {
                id,
                diffs,
                program: program.clone(),
            });
        }
    }
    subs
}

/// A full session, both kinds on both programs, on a Text and a zstd
/// connection at once, driven one slot at a time: each slot's
/// notifications arrive while the session waits for the next continue, in
/// ledger order, then `subscriptionComplete` for each subscription, and
/// the capture is exactly the server's record. The socket stays open.
#[actix_rt::test]
async fn full_session_streams_the_record_in_order_in_text_and_zstd() {
    let config = small_config();
    let ledger = ledger_of(&config);
    let programs = ledger.programs().to_vec();
    assert_eq!(programs.len(), 2);
    let server = start(config);
    let (first, last) = (1000, 1011);
    let (mut control, id, _) = create_session(&server, first, last, json!({})).await;

    let mut text = DataWs::connect(&server, &id).await.unwrap();
    let mut zstd = DataWs::connect(&server, &id).await.unwrap();
    let text_subs = subscribe_all(&mut text, &programs, json!({})).await;
    let zstd_subs = subscribe_all(&mut zstd, &programs, json!({"compression": "zstd"})).await;

    let (mut text_capture, mut zstd_capture) = (Vec::new(), Vec::new());
    for slot in first..=last {
        control.send_json(&continue_request(1)).await;
        assert_eq!(
            control.next_json().await,
            json!({"method": "slotNotification", "params": slot})
        );
        let done = control.next_json().await;
        let expected_method = if slot == last {
            "completed"
        } else {
            "readyForContinue"
        };
        assert_eq!(done["method"], expected_method);
        // This slot's notifications arrive now, before any further continue.
        for (data, subs, compressed, capture) in [
            (&mut text, &text_subs, false, &mut text_capture),
            (&mut zstd, &zstd_subs, true, &mut zstd_capture),
        ] {
            let owed: Vec<(Sub, Vec<Value>)> = subs
                .iter()
                .map(|s| (s.clone(), s.expected(&ledger, slot..=slot)))
                .collect();
            let expected = interleave(&owed, compressed);
            let mut got = Vec::new();
            for _ in 0..expected.len() {
                got.push(data.next().await);
            }
            assert_eq!(got, expected, "slot {slot}, compressed {compressed}");
            capture.extend(got);
        }
    }
    // The session completed: each subscription ends, in subscription order.
    for (data, subs) in [(&mut text, &text_subs), (&mut zstd, &zstd_subs)] {
        for sub in subs {
            assert_eq!(
                data.next().await,
                DataFrame::Complete {
                    subscription: sub.id
                }
            );
        }
        // The socket stays open and serving after every completion.
        let id = data.request("getHealth", json!([])).await;
        assert_eq!(
            data.next().await,
            DataFrame::Reply(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": "Method not found: getHealth"}}))
        );
    }

    // The capture is the server's record, in order, on both connections.
    let record = server.state().record(&id).expect("a record");
    assert_eq!(record.slots, (first..=last).collect::<Vec<_>>());
    assert_eq!(record.finish, Some(Finish::Completed));
    for (capture, subs) in [(&text_capture, &text_subs), (&zstd_capture, &zstd_subs)] {
        let mut txs = BTreeMap::new();
        let mut diffs = BTreeMap::new();
        for sub in subs {
            let results = results_of(capture, sub.id);
            if sub.diffs {
                diffs.insert(
                    sub.program.clone(),
                    results.iter().map(diff_key_of).collect::<Vec<_>>(),
                );
            } else {
                txs.insert(
                    sub.program.clone(),
                    results.iter().map(signature_of).collect::<Vec<_>>(),
                );
            }
        }
        assert_eq!(txs, record.transactions);
        assert_eq!(diffs, record.diffs);
        assert!(record.transactions.values().all(|v| !v.is_empty()));
    }
    text.ws.close().await;
    zstd.ws.close().await;
}

/// A subscription made after slots ran gets the history, then live slots.
/// A second subscription made while the first streams its history gets its
/// ack between the first one's notifications (kept, in order, and one zstd
/// stream across them); from then on the one furthest behind streams first.
#[actix_rt::test]
async fn late_subscriptions_get_history_then_live_with_interleaved_acks() {
    let config = small_config();
    let ledger = ledger_of(&config);
    let programs = ledger.programs().to_vec();
    let server = start(config);
    let (first, last) = (1000, 1059);
    let (mut control, id, _) = create_session(&server, first, last, json!({})).await;
    // Run 40 slots before anyone subscribes.
    control.send_json(&continue_request(40)).await;
    control
        .read_until(|v| v["method"] == "readyForContinue")
        .await;
    let ran = first + 39;

    for compression in [json!({}), json!({"compression": "zstd"})] {
        let compressed = !compression.as_object().unwrap().is_empty();
        let mut data = DataWs::connect(&server, &id).await.unwrap();
        let (tx_sub, before) = data
            .subscribe_transactions(&programs[0], compression.clone())
            .await;
        assert!(before.is_empty());
        let tx = Sub {
            id: tx_sub,
            diffs: false,
            program: programs[0].clone(),
        };
        // Wait for the history to start, then subscribe again.
        let first_frame = data.next().await;
        let (diff_sub, mut between) = data
            .subscribe_diffs(&programs[1], compression.clone())
            .await;
        between.insert(0, first_frame);
        let diff = Sub {
            id: diff_sub,
            diffs: true,
            program: programs[1].clone(),
        };
        // Before the second ack: a prefix of the first subscription's
        // history, whole slots only.
        let tx_history = tx.expected(&ledger, first..=ran);
        let prefix = interleave(&[(tx.clone(), tx_history.clone())], compressed);
        assert_eq!(between[..], prefix[..between.len()]);
        // After it: the rest, the furthest behind first.
        let owed = vec![
            (tx.clone(), tx_history[between.len()..].to_vec()),
            (diff.clone(), diff.expected(&ledger, first..=ran)),
        ];
        let expected = interleave(&owed, compressed);
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(data.next().await);
        }
        assert_eq!(got, expected, "history, compressed {compressed}");
        data.ws.close().await;
    }

    // Live after history: one connection that keeps up to the end.
    let mut data = DataWs::connect(&server, &id).await.unwrap();
    let (tx_sub, _) = data
        .subscribe_transactions(&programs[1], json!({"compression": "zstd"}))
        .await;
    let tx = Sub {
        id: tx_sub,
        diffs: false,
        program: programs[1].clone(),
    };
    let history = interleave(&[(tx.clone(), tx.expected(&ledger, first..=ran))], true);
    for expected in &history {
        assert_eq!(&data.next().await, expected);
    }
    assert_eq!(
        run_to_completion(&mut control, 7).await,
        (ran + 1..=last).collect::<Vec<_>>()
    );
    let frames = data.read_until_complete(&[tx_sub]).await;
    let mut live = interleave(&[(tx.clone(), tx.expected(&ledger, ran + 1..=last))], true);
    live.push(DataFrame::Complete {
        subscription: tx_sub,
    });
    assert_eq!(frames, live);
}

/// `replayFromSlot: N` starts at slot N inclusive (clamped to the session's
/// start); a client that resumes from the highest slot it handed on loses
/// nothing and sees again only that slot's notifications.
#[actix_rt::test]
async fn replay_from_slot_is_inclusive_and_lossless() {
    let config = small_config();
    let ledger = ledger_of(&config);
    let program = ledger.programs()[0].clone();
    let server = start(config);
    let (first, last) = (1000, 1029);
    let (mut control, id, _) = create_session(&server, first, last, json!({})).await;

    // A cursor ahead of the session: only live slots from it, nothing before.
    let mut ahead = DataWs::connect(&server, &id).await.unwrap();
    let (ahead_sub, _) = ahead
        .subscribe_transactions(
            &program,
            json!({"replayFromSlot": 1020, "compression": "zstd"}),
        )
        .await;
    assert_eq!(
        run_to_completion(&mut control, 30).await,
        (first..=last).collect::<Vec<_>>()
    );
    let frames = ahead.read_until_complete(&[ahead_sub]).await;
    assert_eq!(
        results_of(&frames, ahead_sub),
        expected_transactions(&ledger, &program, 1020..=last)
    );

    // Cursors at and before the start: the whole session.
    for cursor in [0, 999, 1000] {
        let mut data = DataWs::connect(&server, &id).await.unwrap();
        let (sub, _) = data
            .subscribe_diffs(&program, json!({"replayFromSlot": cursor}))
            .await;
        let frames = data.read_until_complete(&[sub]).await;
        assert_eq!(
            results_of(&frames, sub),
            expected_diffs(&ledger, &program, first..=last),
            "cursor {cursor}"
        );
    }

    // Inclusive at every slot with notifications.
    let all = expected_transactions(&ledger, &program, first..=last);
    for cursor in [1007, 1013, last] {
        let mut data = DataWs::connect(&server, &id).await.unwrap();
        let (sub, _) = data
            .subscribe_transactions(&program, json!({"replayFromSlot": cursor}))
            .await;
        let got = results_of(&data.read_until_complete(&[sub]).await, sub);
        let expected: Vec<Value> = all
            .iter()
            .filter(|r| notification_slot(r).unwrap() >= cursor)
            .cloned()
            .collect();
        assert_eq!(got, expected, "cursor {cursor}");
    }

    // Resume after a cut mid-stream: read part of the stream, hang up, and
    // resubscribe from the highest slot seen.
    let mut data = DataWs::connect(&server, &id).await.unwrap();
    let (sub, _) = data
        .subscribe_transactions(&program, json!({"compression": "zstd"}))
        .await;
    let cut_after = all.len() / 2 + 1;
    let mut seen = Vec::new();
    for _ in 0..cut_after {
        match data.next().await {
            DataFrame::Notification { result, .. } => seen.push(result),
            other => panic!("expected a notification, got {other:?}"),
        }
    }
    drop(data);
    let cursor = notification_slot(seen.last().unwrap()).unwrap();
    let mut data = DataWs::connect(&server, &id).await.unwrap();
    let (sub2, _) = data
        .subscribe_transactions(
            &program,
            json!({"replayFromSlot": cursor, "compression": "zstd"}),
        )
        .await;
    assert_ne!(sub, sub2);
    let resumed = results_of(&data.read_until_complete(&[sub2]).await, sub2);
    // Exactly the boundary slot again, then the rest.
    let boundary_start = all
        .iter()
        .position(|r| notification_slot(r) == Some(cursor))
        .unwrap();
    assert_eq!(resumed[..], all[boundary_start..]);
    // Deduplicated by signature, the two captures are the record.
    let mut union: Vec<String> = seen.iter().map(signature_of).collect();
    for result in &resumed {
        let sig = signature_of(result);
        if !union.contains(&sig) {
            union.push(sig);
        }
    }
    let record = server.state().record(&id).unwrap();
    assert_eq!(union, record.transactions[&program]);
}

/// Bad requests get JSON-RPC errors with the request's id; the connection
/// stays and serves the next request.
#[actix_rt::test]
async fn bad_requests_get_json_rpc_errors() {
    let config = small_config();
    let program = ledger_of(&config).programs()[0].clone();
    let server = start(config);
    let (_control, id, _) = create_session(&server, 1000, 1001, json!({})).await;

    // An unknown session has no data plane.
    let missing = DataWs::connect(&server, "no-such-session").await.err();
    assert_eq!(missing.as_deref(), Some("HTTP 404"));

    let mut data = DataWs::connect(&server, &id).await.unwrap();
    let error = |id: Value, code: i64, message: &str| {
        DataFrame::Reply(
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
        )
    };
    let rid = data.request("slotSubscribe", json!([])).await;
    assert_eq!(
        data.next().await,
        error(json!(rid), -32601, "Method not found: slotSubscribe")
    );
    let rid = data
        .request("transactionSubscribe", json!([{"accounts": [program]}, {}]))
        .await;
    assert_eq!(
        data.next().await,
        error(
            json!(rid),
            -32602,
            r#"Invalid params: expected [{"mentions": [PROGRAM]}, {config}]"#
        )
    );
    let rid = data
        .request("accountDiffSubscribe", json!(["not-a-key", {}]))
        .await;
    assert_eq!(
        data.next().await,
        error(
            json!(rid),
            -32602,
            "Invalid params: `not-a-key` is not a base58 public key"
        )
    );
    let rid = data
        .request(
            "accountDiffSubscribe",
            json!([program, {"address_type": "account"}]),
        )
        .await;
    assert_eq!(
        data.next().await,
        error(
            json!(rid),
            -32602,
            r#"Invalid params: only address_type "program" is supported"#
        )
    );
    data.ws.send_text(r#"{"jsonrpc":"2.0","id":77}"#).await;
    assert_eq!(
        data.next().await,
        error(json!(77), -32600, "Invalid request: missing method")
    );
    data.ws.send_text("{ not json").await;
    match data.next().await {
        DataFrame::Reply(reply) => {
            assert_eq!(reply["id"], Value::Null);
            assert_eq!(reply["error"]["code"], -32700);
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    // Still serving: a good subscription is acked, an unsubscribe answered.
    let (sub, _) = data.subscribe_transactions(&program, json!({})).await;
    let rid = data.request("transactionUnsubscribe", json!([sub])).await;
    assert_eq!(
        data.next().await,
        DataFrame::Reply(json!({"jsonrpc": "2.0", "id": rid, "result": true}))
    );
    let rid = data.request("transactionUnsubscribe", json!([sub])).await;
    assert_eq!(
        data.next().await,
        DataFrame::Reply(json!({"jsonrpc": "2.0", "id": rid, "result": false}))
    );
}

/// A session closed by its client (the reference client closes on
/// `completed` while its subscriptions may still drain) keeps serving its
/// data plane: a new subscription gets the executed slots, then
/// `subscriptionComplete`.
#[actix_rt::test]
async fn a_closed_session_still_serves_what_it_executed() {
    let config = small_config();
    let ledger = ledger_of(&config);
    let program = ledger.programs()[1].clone();
    let server = start(config);
    let (mut control, id, _) = create_session(&server, 1000, 1009, json!({})).await;
    control.send_json(&continue_request(4)).await;
    control
        .read_until(|v| v["method"] == "readyForContinue")
        .await;
    control
        .send_json(&json!({"method": "closeBacktestSession"}))
        .await;
    assert_eq!(control.next_json().await, json!({"method": "success"}));
    assert!(server.state().session(&id).is_none(), "reaped");

    let mut data = DataWs::connect(&server, &id).await.unwrap();
    let (sub, _) = data
        .subscribe_diffs(
            &program,
            json!({"compression": "zstd", "replayFromSlot": 1002}),
        )
        .await;
    let frames = data.read_until_complete(&[sub]).await;
    assert_eq!(
        results_of(&frames, sub),
        expected_diffs(&ledger, &program, 1002..=1003)
    );
    let record = server.state().record(&id).unwrap();
    assert_eq!(record.slots, vec![1000, 1001, 1002, 1003]);
    assert_eq!(record.finish, Some(Finish::Closed));
}

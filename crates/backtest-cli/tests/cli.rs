//! The `backtest` binary end to end: captures compared with the ledger or
//! the server's record, faults, a stalled drain, usage errors, overwrite
//! protection, the output format, signals, `ranges` and `server`.
//!
//! Every process a test starts is killed when the test ends; every wait is
//! bounded; servers listen on free loopback ports.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use backtest_server::{
    FaultPlan, Ledger, LedgerConfig, RunningServer, ServerConfig, SessionRecord,
};
use serde_json::Value;

mod common;

use common::*;

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("capture file")
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", i + 1))
        })
        .collect()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("json file")).expect("json")
}

/// What a run should have captured.
struct Expected {
    slots: Vec<u64>,
    /// Per program, signatures in ledger order.
    transactions: BTreeMap<String, Vec<String>>,
    /// (slot, account, signature, txIndex), sorted.
    diffs: Vec<(u64, String, String, u64)>,
}

impl Expected {
    fn from_ledger(config: LedgerConfig, first: u64, last: u64) -> Self {
        let ledger = Ledger::new(config).expect("ledger");
        let mut expected = Expected {
            slots: Vec::new(),
            transactions: ledger
                .programs()
                .iter()
                .map(|p| (p.clone(), Vec::new()))
                .collect(),
            diffs: Vec::new(),
        };
        for slot in first..=last {
            let data = ledger.slot(slot).expect("slot in the ledger");
            expected.slots.push(slot);
            for tx in &data.transactions {
                expected
                    .transactions
                    .get_mut(&tx.program)
                    .expect("known program")
                    .push(tx.signature.clone());
                for diff in &tx.diffs {
                    let k = diff.key(tx);
                    expected
                        .diffs
                        .push((k.slot, k.account, k.signature, u64::from(k.tx_index)));
                }
            }
        }
        expected.diffs.sort();
        expected
    }

    fn from_record(record: &SessionRecord) -> Self {
        let mut diffs: Vec<_> = record
            .diffs
            .values()
            .flatten()
            .map(|k| {
                (
                    k.slot,
                    k.account.clone(),
                    k.signature.clone(),
                    u64::from(k.tx_index),
                )
            })
            .collect();
        diffs.sort();
        Expected {
            slots: record.slots.clone(),
            transactions: record.transactions.clone(),
            diffs,
        }
    }

    /// The capture holds every transaction and diff exactly once, each
    /// program's transactions in ledger order, every slot in order, and ends
    /// with `completed` (one session).
    fn assert_matches(&self, lines: &[Value]) {
        let program_of: BTreeMap<&str, &str> = self
            .transactions
            .iter()
            .flat_map(|(p, sigs)| sigs.iter().map(move |s| (s.as_str(), p.as_str())))
            .collect();
        let mut got_txs: BTreeMap<String, Vec<String>> = self
            .transactions
            .keys()
            .map(|p| (p.clone(), Vec::new()))
            .collect();
        let mut got_diffs = Vec::new();
        let mut got_slots = Vec::new();
        for line in lines {
            match line["type"].as_str().expect("type") {
                "transaction" => {
                    let sig = line["signature"].as_str().expect("signature");
                    let program = program_of
                        .get(sig)
                        .unwrap_or_else(|| panic!("{sig} is not expected"));
                    got_txs.get_mut(*program).unwrap().push(sig.to_string());
                }
                "accountDiff" => got_diffs.push((
                    line["slot"].as_u64().unwrap(),
                    line["account"].as_str().unwrap().to_string(),
                    line["signature"].as_str().unwrap().to_string(),
                    line["txIndex"].as_u64().unwrap(),
                )),
                "slot" => got_slots.push(line["slot"].as_u64().unwrap()),
                _ => {}
            }
        }
        for (program, expected) in &self.transactions {
            assert_eq!(&got_txs[program], expected, "transactions of {program}");
        }
        got_diffs.sort();
        assert_eq!(got_diffs.len(), self.diffs.len(), "diff count");
        assert_eq!(got_diffs, self.diffs, "diffs");
        assert_eq!(got_slots, self.slots, "slots");
        let completed: Vec<_> = lines.iter().filter(|l| l["type"] == "completed").collect();
        assert_eq!(completed.len(), 1, "one completed");
        assert_eq!(
            lines.last().unwrap()["type"],
            "completed",
            "completed is last"
        );
    }

    fn transaction_count(&self) -> u64 {
        self.transactions.values().map(|v| v.len() as u64).sum()
    }
}

/// Every line has exactly the documented keys, with the documented types.
fn assert_format(lines: &[Value]) {
    let session = lines[0]["session"].as_str().expect("session").to_string();
    for line in lines {
        let obj = line.as_object().expect("an object per line");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(line["session"], session.as_str());
        match line["type"].as_str().expect("type") {
            "transaction" => {
                assert_eq!(keys, ["session", "signature", "slot", "tx", "type"]);
                assert!(line["slot"].is_u64());
                assert!(line["signature"].is_string());
                assert!(line["tx"].is_object());
                assert_eq!(line["tx"]["slot"], line["slot"]);
                assert_eq!(
                    line["tx"]["transaction"]["signatures"][0],
                    line["signature"]
                );
            }
            "accountDiff" => {
                assert_eq!(
                    keys,
                    [
                        "account",
                        "blockTime",
                        "post",
                        "pre",
                        "session",
                        "signature",
                        "slot",
                        "txIndex",
                        "type"
                    ]
                );
                assert!(line["slot"].is_u64());
                assert!(line["account"].is_string());
                assert!(line["signature"].is_string());
                assert!(line["txIndex"].is_u64());
                assert!(line["blockTime"].is_i64());
                assert!(line["pre"].is_object() || line["pre"].is_null());
                assert!(line["post"].is_object() || line["post"].is_null());
                assert!(line["pre"].is_object() || line["post"].is_object());
            }
            "slot" => {
                assert_eq!(keys, ["session", "slot", "type"]);
                assert!(line["slot"].is_u64());
            }
            "status" => {
                assert_eq!(keys, ["session", "status", "type"]);
                assert!(line["status"].is_string());
            }
            "completed" => {
                assert_eq!(keys, ["session", "summary", "type"]);
                assert!(line["summary"].is_object() || line["summary"].is_null());
            }
            other => panic!("unexpected record type {other} in {line}"),
        }
    }
}

/// A ledger of 2 programs, 4 transactions a slot, slots 1000..=1999.
fn small_config() -> ServerConfig {
    ServerConfig {
        ledger: LedgerConfig {
            seed: 5,
            programs: LedgerConfig::default_programs()[..2].to_vec(),
            txs_per_slot: 4,
            batch_size: 2,
            first_slot: 1000,
            last_slot: 1999,
        },
        bundle_slots: 100,
        workers: 1,
        ..ServerConfig::default()
    }
}

fn server_with_faults(faults: &[&str]) -> RunningServer {
    let specs: Vec<String> = faults.iter().map(|s| s.to_string()).collect();
    let config = ServerConfig {
        faults: FaultPlan::from_specs(&specs).expect("fault specs"),
        ..small_config()
    };
    RunningServer::spawn(config, "127.0.0.1:0".parse().unwrap()).expect("server starts")
}

fn program_flags(server: &RunningServer) -> Vec<String> {
    let mut flags = Vec::new();
    for p in server.state().ledger.programs() {
        flags.extend(["--tx-program".to_string(), p.clone()]);
        flags.extend(["--diff-program".to_string(), p.clone()]);
    }
    flags
}

fn session_of(lines: &[Value]) -> String {
    lines[0]["session"]
        .as_str()
        .expect("session id")
        .to_string()
}

// ------------------------------------------------------------------ tests

#[test]
fn default_run_against_the_embedded_server_captures_the_ledger_exactly() {
    let dir = scratch("default");
    let (out, summary) = (dir.join("capture.jsonl"), dir.join("summary.json"));
    let result = run(&[
        "run",
        "--start-slot",
        "1000",
        "--slots",
        "30",
        "--advance-count",
        "7",
        "--out",
        path_str(&out),
        "--summary-json",
        path_str(&summary),
    ]);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    assert!(
        result
            .stderr
            .contains("no --url: running against an embedded reference server at ws://127.0.0.1:"),
        "{}",
        result.stderr
    );
    assert!(result.stdout.is_empty(), "stdout: {}", result.stdout);

    let lines = read_lines(&out);
    let expected = Expected::from_ledger(LedgerConfig::default(), 1000, 1029);
    expected.assert_matches(&lines);
    assert_format(&lines);

    let summary = read_json(&summary);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["error"], Value::Null);
    assert_eq!(summary["sessions"], 1);
    assert_eq!(summary["slots"], 30);
    assert_eq!(summary["transactions"], expected.transaction_count());
    assert_eq!(summary["account_diffs"], expected.diffs.len() as u64);
    assert_eq!(summary["duplicates_removed"], 0);
    assert_eq!(summary["reconnects"], 0);
    assert!(summary["elapsed_secs"].as_f64().unwrap() > 0.0);
    assert!(
        result.stderr.contains(&format!(
            "completed: 1 session, 30 slots, {} transactions, {} account diffs",
            expected.transaction_count(),
            expected.diffs.len()
        )),
        "{}",
        result.stderr
    );
}

#[test]
fn program_flags_select_what_is_captured() {
    let programs = LedgerConfig::default_programs();
    let dir = scratch("select");
    let out = dir.join("capture.jsonl");
    let result = run(&[
        "run",
        "--start-slot",
        "2000",
        "--end-slot",
        "2009",
        "--tx-program",
        &programs[1],
        "--send-summary",
        "--quiet",
        "--out",
        path_str(&out),
    ]);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    assert_eq!(result.stderr, "", "--quiet prints nothing on success");
    let lines = read_lines(&out);
    assert_format(&lines);
    let mut expected = Expected::from_ledger(LedgerConfig::default(), 2000, 2009);
    expected.transactions.retain(|p, _| p == &programs[1]);
    expected.diffs.clear();
    expected.assert_matches(&lines);
    // --send-summary: the completed record carries the server's summary.
    let completed = lines.last().unwrap();
    assert!(completed["summary"].is_object(), "{completed}");
    assert!(completed["summary"]["correctSimulation"].is_u64());
}

#[test]
fn data_drops_lose_nothing_and_reconnects_are_counted() {
    let server = server_with_faults(&["data-drop-after=50"]);
    let dir = scratch("drops");
    let (out, summary) = (dir.join("capture.jsonl"), dir.join("summary.json"));
    let url = server.control_url();
    let mut args: Vec<String> = [
        "run",
        "--url",
        &url,
        "--api-key",
        "k",
        "--start-slot",
        "1000",
        "--slots",
        "40",
        "--out",
        path_str(&out),
        "--summary-json",
        path_str(&summary),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(program_flags(&server));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = run(&args);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    assert!(!result.stderr.contains("embedded"), "{}", result.stderr);

    let lines = read_lines(&out);
    let record = server
        .state()
        .record(&session_of(&lines))
        .expect("the server knows the session");
    assert_eq!(record.executed_through, Some(1039));
    Expected::from_record(&record).assert_matches(&lines);

    let fired = server.state().faults_fired();
    assert_eq!(fired.get("data-drop:transaction"), Some(&1), "{fired:?}");
    assert_eq!(fired.get("data-drop:accountDiff"), Some(&1), "{fired:?}");
    let summary = read_json(&summary);
    assert_eq!(summary["status"], "completed");
    // One drop per subscription kind, each healed by one reconnect.
    assert_eq!(summary["reconnects"], 2, "{summary}");
    // The replayed boundary slot was filtered out.
    assert!(
        summary["duplicates_removed"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

#[test]
fn a_stalled_drain_fails_with_exit_1_and_keeps_what_arrived() {
    let server = server_with_faults(&["data-stall-after=30"]);
    let dir = scratch("stall");
    let (out, summary) = (dir.join("capture.jsonl"), dir.join("summary.json"));
    let url = server.control_url();
    let program = server.state().ledger.programs()[0].clone();
    let result = run(&[
        "run",
        "--url",
        &url,
        "--start-slot",
        "1000",
        "--slots",
        "20",
        "--tx-program",
        &program,
        "--drain-idle-timeout",
        "1",
        "--out",
        path_str(&out),
        "--summary-json",
        path_str(&summary),
    ]);
    assert_eq!(result.code, Some(1), "stderr: {}", result.stderr);
    assert!(
        result.stderr.contains("the capture is incomplete"),
        "{}",
        result.stderr
    );

    let summary = read_json(&summary);
    assert_eq!(summary["status"], "failed");
    assert!(
        summary["error"]
            .as_str()
            .unwrap()
            .contains("subscription failed"),
        "{summary}"
    );
    assert_eq!(summary["transactions"], 30);
    // The partial capture is flushed: exactly the 30 transactions that
    // arrived, every slot, and no completed record.
    let lines = read_lines(&out);
    let txs = lines.iter().filter(|l| l["type"] == "transaction").count();
    assert_eq!(txs, 30);
    assert_eq!(lines.iter().filter(|l| l["type"] == "slot").count(), 20);
    assert!(lines.iter().all(|l| l["type"] != "completed"));
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = scratch("usage");
    let out = dir.join("x.jsonl");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "--start-slot", "1000", "--end-slot", "999"],
            "before --start-slot",
        ),
        (
            vec!["run", "--start-slot", "1000", "--slots", "0"],
            "--slots must be at least 1",
        ),
        (vec!["run", "--start-slot", "1000"], "--end-slot"),
        (
            vec![
                "run",
                "--start-slot",
                "1000",
                "--slots",
                "5",
                "--end-slot",
                "1004",
            ],
            "cannot be used with",
        ),
        (
            vec!["run", "--start-slot", "x", "--slots", "5"],
            "invalid value",
        ),
        (
            vec!["run", "--start-slot", "1000", "--slots", "5", "--bogus"],
            "--bogus",
        ),
        (
            vec![
                "run",
                "--url",
                "http://localhost:1",
                "--start-slot",
                "1000",
                "--slots",
                "5",
                "--tx-program",
                "p",
            ],
            "bad --url",
        ),
        (
            vec![
                "run",
                "--url",
                "ws://127.0.0.1:1",
                "--start-slot",
                "1000",
                "--slots",
                "5",
            ],
            "--tx-program or --diff-program",
        ),
        (
            vec![
                "run",
                "--start-slot",
                "1000",
                "--slots",
                "5",
                "--log-level",
                "a=b=c",
            ],
            "bad --log-level",
        ),
        (
            vec!["run", "--start-slot", "5", "--slots", "5"],
            "embedded server serves slots",
        ),
        (
            vec![
                "run",
                "--start-slot",
                "1000",
                "--slots",
                "5",
                "--out",
                "/nonexistent-dir/x.jsonl",
            ],
            "cannot write /nonexistent-dir/x.jsonl",
        ),
        (
            vec![
                "run",
                "--start-slot",
                "1000",
                "--slots",
                "5",
                "--disconnect-timeout",
                "901",
            ],
            "901",
        ),
        (vec!["nope"], "nope"),
        (vec!["ranges", "--url", "ftp://x"], "bad --url"),
        (vec!["server", "--listen", "nowhere"], "invalid value"),
        (
            vec!["server", "--listen", "127.0.0.1:0", "--fault", "bogus=1"],
            "bogus",
        ),
    ];
    for (args, needle) in cases {
        let mut args = args;
        if args[0] == "run" && !args.contains(&"--out") {
            args.extend(["--out", path_str(&out)]);
        }
        let result = run(&args);
        assert_eq!(result.code, Some(2), "{args:?}: {}", result.stderr);
        let lines: Vec<&str> = result.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one line, got {:?}",
            result.stderr
        );
        assert!(lines[0].starts_with("backtest"), "{args:?}: {}", lines[0]);
        assert!(
            lines[0].contains(needle),
            "{args:?}: {} lacks {needle}",
            lines[0]
        );
        assert!(!lines[0].contains("panicked"), "{}", lines[0]);
        assert!(!out.exists(), "{args:?}: no output on a usage error");
    }
}

#[test]
fn existing_output_is_not_overwritten_without_force() {
    let dir = scratch("force");
    let (out, summary) = (dir.join("capture.jsonl"), dir.join("summary.json"));
    std::fs::write(&out, "keep\n").unwrap();
    let base = [
        "run",
        "--start-slot",
        "1000",
        "--slots",
        "3",
        "--out",
        path_str(&out),
        "--summary-json",
        path_str(&summary),
    ];
    let result = run(&base);
    assert_eq!(result.code, Some(2), "{}", result.stderr);
    assert_eq!(
        result.stderr.trim(),
        format!(
            "backtest: {} exists; pass --force to overwrite it",
            out.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep\n");
    assert!(!summary.exists());

    // The summary file is protected the same way.
    std::fs::remove_file(&out).unwrap();
    std::fs::write(&summary, "{}").unwrap();
    let result = run(&base);
    assert_eq!(result.code, Some(2), "{}", result.stderr);
    assert!(
        result.stderr.contains("summary.json exists"),
        "{}",
        result.stderr
    );
    assert!(!out.exists());

    std::fs::write(&out, "keep\n").unwrap();
    let mut forced = base.to_vec();
    forced.push("--force");
    let result = run(&forced);
    assert_eq!(result.code, Some(0), "{}", result.stderr);
    let lines = read_lines(&out);
    assert_eq!(lines.last().unwrap()["type"], "completed");
    assert_eq!(read_json(&summary)["slots"], 3);
}

#[cfg(unix)]
#[test]
fn sigterm_closes_the_session_flushes_and_exits_130() {
    let dir = scratch("sigterm");
    let (out, summary) = (dir.join("capture.jsonl"), dir.join("summary.json"));
    let proc = spawn(&[
        "run",
        "--start-slot",
        "1000",
        "--slots",
        "50000",
        "--out",
        path_str(&out),
        "--summary-json",
        path_str(&summary),
    ]);
    // Wait until the run is under way (the buffered capture reached disk).
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) < 200_000 {
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = proc.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let result = finish(proc, Duration::from_secs(30));
    assert_eq!(result.code, Some(130), "stderr: {}", result.stderr);
    assert!(result.stderr.contains("interrupted"), "{}", result.stderr);
    // Flushed: every line is whole JSON; the run did not complete.
    let lines = read_lines(&out);
    assert!(lines.len() > 100);
    assert!(lines.iter().all(|l| l["type"] != "completed"));
    let summary = read_json(&summary);
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["error"], "cancelled");
    let slots = lines.iter().filter(|l| l["type"] == "slot").count() as u64;
    assert_eq!(summary["slots"], slots);
    assert!(slots < 50_000);
}

/// `backtest server` with a small data set, then `ranges` and a capture
/// against it.
#[test]
fn server_subcommand_serves_ranges_and_runs() {
    let programs = LedgerConfig::default_programs()[..2].to_vec();
    let program_list = programs.join(",");
    let mut server = spawn(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--first-slot",
        "1000",
        "--last-slot",
        "1249",
        "--bundle-slots",
        "100",
        "--txs-per-slot",
        "2",
        "--programs",
        &program_list,
        "--log-level",
        "warn",
    ]);
    let url = listening_url(&mut server);

    let ranges = run(&["ranges", "--url", &url]);
    assert_eq!(ranges.code, Some(0), "{}", ranges.stderr);
    assert_eq!(
        ranges.stdout,
        "START  END   SLOTS  START UTC  END UTC\n\
         1000   1099  100    -          -\n\
         1100   1199  100    -          -\n\
         1200   1249  50     -          -\n\
         3 ranges\n"
    );

    let dir = scratch("server");
    let out = dir.join("capture.jsonl");
    let result = run(&[
        "run",
        "--url",
        &url,
        "--start-slot",
        "1200",
        "--end-slot",
        "1249",
        "--diff-program",
        &programs[1],
        "--out",
        path_str(&out),
    ]);
    assert_eq!(result.code, Some(0), "{}", result.stderr);
    let lines = read_lines(&out);
    assert_format(&lines);
    let mut expected = Expected::from_ledger(
        LedgerConfig {
            seed: 0,
            programs: programs.clone(),
            txs_per_slot: 2,
            batch_size: 4,
            first_slot: 1000,
            last_slot: 1249,
        },
        1200,
        1249,
    );
    // Only the second program's diffs were asked for.
    let ledger_programs: BTreeMap<String, Vec<String>> = expected.transactions.clone();
    let second: std::collections::BTreeSet<&String> =
        ledger_programs[&programs[1]].iter().collect();
    expected.transactions.values_mut().for_each(Vec::clear);
    expected.diffs.retain(|d| second.contains(&d.2));
    expected.assert_matches(&lines);

    // A range the server does not have: the create is refused, exit 1.
    let refused = run(&[
        "run",
        "--url",
        &url,
        "--start-slot",
        "1200",
        "--end-slot",
        "1300",
        "--tx-program",
        "x",
    ]);
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("session create failed"),
        "{}",
        refused.stderr
    );
}

#[test]
fn ranges_without_url_lists_the_embedded_server() {
    let result = run(&["ranges", "--json"]);
    assert_eq!(result.code, Some(0), "{}", result.stderr);
    let ranges: Value = serde_json::from_str(&result.stdout).expect("json");
    let ranges = ranges.as_array().expect("a list");
    assert_eq!(ranges.len(), 10);
    assert_eq!(ranges[0]["bundle_start_slot"], 1000);
    assert_eq!(ranges[9]["max_bundle_end_slot"], 100_999);
}

/// `--parallel`: the server splits 1000..=1249 into its 100-slot bundles;
/// each sub-session's capture is exactly its record, and the summary adds
/// them up.
fn parallel_run(faults: &[&str]) -> (RunningServer, Vec<Value>, Value) {
    let server = server_with_faults(faults);
    let dir = scratch("parallel");
    let (out, summary) = (dir.join("capture.jsonl"), dir.join("summary.json"));
    let url = server.control_url();
    let mut args: Vec<String> = [
        "run",
        "--url",
        &url,
        "--parallel",
        "--start-slot",
        "1000",
        "--end-slot",
        "1249",
        "--advance-count",
        "10",
        "--out",
        path_str(&out),
        "--summary-json",
        path_str(&summary),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(program_flags(&server));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = run(&args);
    assert_eq!(result.code, Some(0), "stderr: {}", result.stderr);
    assert!(
        result.stderr.contains("completed: 3 sessions, 250 slots"),
        "{}",
        result.stderr
    );
    (server, read_lines(&out), read_json(&summary))
}

fn assert_parallel_capture(server: &RunningServer, lines: &[Value], summary: &Value) {
    assert_format_per_session(lines);
    let mut by_session: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for line in lines {
        by_session
            .entry(line["session"].as_str().unwrap().to_string())
            .or_default()
            .push(line.clone());
    }
    assert_eq!(by_session.len(), 3);
    let mut ranges = Vec::new();
    let (mut txs, mut diffs) = (0, 0);
    for (id, lines) in &by_session {
        let record = server.state().record(id).expect("a sub-session of the run");
        ranges.push((record.start_slot, record.end_slot));
        let expected = Expected::from_record(&record);
        assert_eq!(record.executed_through, Some(record.end_slot));
        expected.assert_matches(lines);
        txs += expected.transaction_count();
        diffs += expected.diffs.len() as u64;
    }
    ranges.sort();
    assert_eq!(ranges, [(1000, 1099), (1100, 1199), (1200, 1249)]);
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["sessions"], 3);
    assert_eq!(summary["slots"], 250);
    assert_eq!(summary["transactions"], txs);
    assert_eq!(summary["account_diffs"], diffs);
}

fn assert_format_per_session(lines: &[Value]) {
    let mut by_session: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for line in lines {
        by_session
            .entry(line["session"].as_str().expect("session"))
            .or_default()
            .push(line.clone());
    }
    for lines in by_session.values() {
        assert_format(lines);
    }
}

#[test]
fn parallel_run_captures_every_sub_session_exactly() {
    let (server, lines, summary) = parallel_run(&[]);
    assert_parallel_capture(&server, &lines, &summary);
    assert_eq!(summary["reconnects"], 0);
    assert_eq!(summary["duplicates_removed"], 0);
}

#[test]
fn parallel_run_heals_data_drops() {
    let (server, lines, summary) = parallel_run(&["data-drop-after=40"]);
    assert_parallel_capture(&server, &lines, &summary);
    let fired = server.state().faults_fired();
    // Once per sub-session and kind.
    assert_eq!(fired.get("data-drop:transaction"), Some(&3), "{fired:?}");
    assert_eq!(fired.get("data-drop:accountDiff"), Some(&3), "{fired:?}");
    assert_eq!(summary["reconnects"], 6, "{summary}");
    assert!(
        summary["duplicates_removed"].as_u64().unwrap() > 0,
        "{summary}"
    );
}

/// Ctrl-C (SIGINT) against a server while it streams: the CLI cancels,
/// closes the session, flushes the partial capture and exits 130. Returns
/// the server (for the close check), the capture and the summary.
#[cfg(unix)]
fn interrupt_a_streaming_run() -> (RunningServer, Vec<Value>, Value) {
    let server = RunningServer::spawn(
        ServerConfig {
            slot_interval: Duration::from_millis(5),
            ..small_config()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("server starts");
    let dir = scratch("sigint");
    let (out, summary) = (dir.join("capture.jsonl"), dir.join("summary.json"));
    let url = server.control_url();
    let program = server.state().ledger.programs()[0].clone();
    let proc = spawn(&[
        "run",
        "--url",
        &url,
        "--start-slot",
        "1000",
        "--end-slot",
        "1999",
        "--diff-program",
        &program,
        "--disconnect-timeout",
        "60",
        "--out",
        path_str(&out),
        "--summary-json",
        path_str(&summary),
    ]);
    let deadline = Instant::now() + WAIT;
    while server.state().live_sessions() == 0
        || std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) == 0
    {
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = proc.0.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let result = finish(proc, Duration::from_secs(30));
    assert_eq!(result.code, Some(130), "stderr: {}", result.stderr);
    assert!(result.stderr.contains("interrupted"), "{}", result.stderr);
    let lines = read_lines(&out);
    assert!(lines.iter().all(|l| l["type"] != "completed"));
    let summary = read_json(&summary);
    assert_eq!(summary["status"], "failed");
    assert_eq!(summary["error"], "cancelled");
    let diffs = lines.iter().filter(|l| l["type"] == "accountDiff").count() as u64;
    assert_eq!(summary["account_diffs"], diffs);
    (server, lines, summary)
}

#[cfg(unix)]
#[test]
fn ctrl_c_flushes_the_partial_capture_and_exits_130() {
    let (server, lines, _) = interrupt_a_streaming_run();
    // What was captured is a prefix of the record.
    let record = server
        .state()
        .record(&session_of(&lines))
        .expect("the session");
    let slots: Vec<u64> = lines
        .iter()
        .filter(|l| l["type"] == "slot")
        .map(|l| l["slot"].as_u64().unwrap())
        .collect();
    assert_eq!(slots, record.slots[..slots.len()]);
}

/// The close request reaches the server: it reaps the session at once,
/// although a merely dropped connection would keep it for the 60 s
/// disconnect timeout.
///
/// Ignored: today the library's graceful close sends `closeBacktestSession`
/// and a close frame, then drops the socket without waiting for the
/// server's reply or close echo; with notifications still unread the
/// kernel resets the connection and the server (busy streaming) loses the
/// request: it logs "control connection lost; session kept for attach".
#[cfg(unix)]
#[test]
fn ctrl_c_close_request_reaches_the_server() {
    let (server, lines, _) = interrupt_a_streaming_run();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.state().live_sessions() != 0 {
        assert!(Instant::now() < deadline, "the session was not closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let record = server
        .state()
        .record(&session_of(&lines))
        .expect("the session");
    assert_eq!(record.finish, Some(backtest_server::Finish::Closed));
}

//! Shared by the supervisor tests: a reference server on a free loopback
//! port, requests, and a capture of a session's events compared with the
//! server's record.

#![allow(dead_code)]

use std::{collections::BTreeMap, time::Duration};

use actix::Addr;
use backtest_actors::{
    ManagedEvent, ManagedSessionError, NextEvent, SessionInfo, SessionSupervisor,
    SubscribeAccountDiffs, SubscribeTransactions, SupervisorBuilder, WaitSession,
};
use backtest_server::{LedgerConfig, RunningServer, ServerConfig, SessionRecord};
use serde_json::json;
use simulator_api::{ContinueParams, CreateBacktestSessionRequest};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(30);

/// Start a supervisor, wait for its session, and subscribe both kinds for
/// `programs`.
pub async fn start_subscribed(
    builder: SupervisorBuilder,
    programs: Vec<String>,
) -> (Addr<SessionSupervisor>, SessionInfo) {
    let addr = builder.start();
    let info = addr.send(WaitSession).await.unwrap().unwrap();
    addr.send(SubscribeTransactions {
        programs: programs.clone(),
    })
    .await
    .unwrap()
    .unwrap();
    addr.send(SubscribeAccountDiffs { programs })
        .await
        .unwrap()
        .unwrap();
    (addr, info)
}

/// Slots 1000..=1999, 2 programs, 4 transactions a slot.
pub fn config() -> ServerConfig {
    ServerConfig {
        ledger: LedgerConfig {
            seed: 11,
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

pub fn server(config: ServerConfig) -> RunningServer {
    RunningServer::spawn(config, "127.0.0.1:0".parse().unwrap()).expect("server starts")
}

pub fn programs(server: &RunningServer) -> Vec<String> {
    server.state().ledger.programs().to_vec()
}

/// A create request from camelCase fields.
pub fn create(start: u64, end: u64, extra: serde_json::Value) -> CreateBacktestSessionRequest {
    let mut params = json!({"startSlot": start, "endSlot": end});
    if let Some(extra) = extra.as_object() {
        params.as_object_mut().unwrap().extend(extra.clone());
    }
    serde_json::from_value(params).expect("create params")
}

pub fn advance(count: u64) -> ContinueParams {
    ContinueParams {
        advance_count: count,
        ..ContinueParams::default()
    }
}

/// What a consumer saw.
#[derive(Debug, Default)]
pub struct Capture {
    /// Every event, in order, as a short label.
    pub labels: Vec<String>,
    pub signatures: Vec<String>,
    /// (slot, account, signature, tx_index) of each diff.
    pub diffs: Vec<(u64, String, String, u32)>,
    pub slots: Vec<u64>,
    pub errors: Vec<String>,
    pub completed: bool,
    /// How the stream ended.
    pub end: Option<Result<(), ManagedSessionError>>,
}

impl Capture {
    pub fn record(&mut self, event: &ManagedEvent) {
        let label = match event {
            ManagedEvent::Transaction(tx) => {
                let signature = match &tx.transaction.transaction {
                    solana_transaction_status::EncodedTransaction::Json(ui) => {
                        ui.signatures[0].clone()
                    }
                    other => panic!("unexpected encoding {other:?}"),
                };
                self.signatures.push(signature);
                "tx".to_string()
            }
            ManagedEvent::AccountDiff(diff) => {
                self.diffs.push((
                    diff.context.slot,
                    diff.account.clone().unwrap(),
                    diff.signature.clone().unwrap(),
                    diff.tx_index.unwrap(),
                ));
                "diff".to_string()
            }
            ManagedEvent::Slot(slot) => {
                self.slots.push(*slot);
                format!("slot {slot}")
            }
            ManagedEvent::Completed { .. } => {
                self.completed = true;
                "completed".to_string()
            }
            ManagedEvent::Error(e) => {
                self.errors.push(e.to_string());
                format!("error {e}")
            }
            ManagedEvent::ReadyForContinue => "ready".to_string(),
            ManagedEvent::Paused(p) => format!("paused {} {:?}", p.slot, p.batch_index),
            ManagedEvent::DiscoveryBatch(d) => format!("discovery {} {}", d.slot, d.batch_index),
            ManagedEvent::Status(s) => format!("status {s}"),
        };
        self.labels.push(label);
    }

    /// Assert the capture is exactly the record: every transaction and diff
    /// of every program once, each program's in ledger order, all before
    /// `Completed`, which is last.
    pub fn assert_matches(&self, record: &SessionRecord) {
        let program_of: BTreeMap<&str, &str> = record
            .transactions
            .iter()
            .flat_map(|(p, sigs)| sigs.iter().map(move |s| (s.as_str(), p.as_str())))
            .collect();
        let mut got_txs: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for sig in &self.signatures {
            let program = program_of
                .get(sig.as_str())
                .unwrap_or_else(|| panic!("signature {sig} is not in the record"));
            got_txs.entry(program).or_default().push(sig);
        }
        for (program, expected) in &record.transactions {
            let got = got_txs.remove(program.as_str()).unwrap_or_default();
            assert_eq!(got.len(), expected.len(), "transactions of {program}");
            assert!(
                got.iter().zip(expected).all(|(a, b)| a == b),
                "order for {program}"
            );
        }
        let mut expected_diffs: Vec<_> = record
            .diffs
            .values()
            .flatten()
            .map(|k| (k.slot, k.account.clone(), k.signature.clone(), k.tx_index))
            .collect();
        let mut got_diffs = self.diffs.clone();
        expected_diffs.sort();
        got_diffs.sort();
        assert_eq!(got_diffs.len(), expected_diffs.len(), "diff count");
        assert_eq!(got_diffs, expected_diffs, "diffs");
        assert_eq!(self.slots, record.slots, "slot notifications");
        assert!(self.completed, "completed delivered");
        assert_eq!(self.labels.last().map(String::as_str), Some("completed"));
    }
}

/// Drive a session to its end with the pull API: continue by `step` on
/// every ready, record everything.
pub async fn drive(addr: &Addr<SessionSupervisor>, step: u64) -> Capture {
    let mut capture = Capture::default();
    loop {
        let next = tokio::time::timeout(WAIT, addr.send(NextEvent))
            .await
            .expect("an event within the wait")
            .expect("supervisor alive");
        match next {
            Ok(Some(event)) => {
                capture.record(&event);
                if matches!(
                    event,
                    ManagedEvent::ReadyForContinue | ManagedEvent::Paused(_)
                ) {
                    addr.send(backtest_actors::Continue(advance(step)))
                        .await
                        .expect("supervisor alive")
                        .expect("continue sent");
                }
            }
            Ok(None) => {
                capture.end = Some(Ok(()));
                return capture;
            }
            Err(e) => {
                capture.end = Some(Err(e));
                return capture;
            }
        }
    }
}
pub mod scripted;

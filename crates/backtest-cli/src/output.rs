//! The capture: one JSON object per event, one per line, in delivery order.
//!
//! ```text
//! {"type":"transaction","session":ID,"slot":N,"signature":S,"tx":{...}}
//! {"type":"accountDiff","session":ID,"slot":N,"account":A,"signature":S,"txIndex":I,"blockTime":T,"pre":{..},"post":{..}}
//! {"type":"slot","session":ID,"slot":N}
//! {"type":"status","session":ID,"status":"startingRuntime"}
//! {"type":"paused","session":ID,"slot":N,"batchIndex":I}
//! {"type":"discovery","session":ID,"slot":N,"batchIndex":I,"matched":[..],"transactions":[..]}
//! {"type":"error","session":ID,"message":"...","error":{..}}
//! {"type":"completed","session":ID,"summary":{..}|null}
//! ```

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
};

use backtest_actors::{ManagedEvent, frames::transaction_signature};
use serde::Serialize;
use serde_json::Value;
use simulator_api::{BacktestError, BacktestStatus, DiscoveryBatchEvent, SessionSummary};
use solana_transaction_status::EncodedConfirmedTransactionWithStatusMeta;

/// One line of the capture.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Record<'a> {
    Transaction {
        session: &'a str,
        slot: u64,
        signature: Option<String>,
        tx: &'a EncodedConfirmedTransactionWithStatusMeta,
    },
    #[serde(rename_all = "camelCase")]
    AccountDiff {
        session: &'a str,
        slot: u64,
        account: Option<&'a str>,
        signature: Option<&'a str>,
        tx_index: Option<u32>,
        block_time: Option<i64>,
        pre: Option<&'a Value>,
        post: Option<&'a Value>,
    },
    Slot {
        session: &'a str,
        slot: u64,
    },
    Status {
        session: &'a str,
        status: &'a BacktestStatus,
    },
    #[serde(rename_all = "camelCase")]
    Paused {
        session: &'a str,
        slot: u64,
        batch_index: Option<u32>,
    },
    Discovery {
        session: &'a str,
        #[serde(flatten)]
        event: &'a DiscoveryBatchEvent,
    },
    Error {
        session: &'a str,
        message: String,
        error: &'a BacktestError,
    },
    Completed {
        session: &'a str,
        summary: Option<&'a SessionSummary>,
    },
}

/// The record of an event, `None` for events that carry nothing to keep
/// (`ReadyForContinue`).
fn record<'a>(session: &'a str, event: &'a ManagedEvent) -> Option<Record<'a>> {
    Some(match event {
        ManagedEvent::Transaction(tx) => Record::Transaction {
            session,
            slot: tx.slot,
            signature: transaction_signature(tx),
            tx,
        },
        ManagedEvent::AccountDiff(diff) => Record::AccountDiff {
            session,
            slot: diff.context.slot,
            account: diff.account.as_deref(),
            signature: diff.signature.as_deref(),
            tx_index: diff.tx_index,
            block_time: diff.block_time,
            pre: diff.pre.as_ref(),
            post: diff.post.as_ref(),
        },
        ManagedEvent::Slot(slot) => Record::Slot {
            session,
            slot: *slot,
        },
        ManagedEvent::Status(status) => Record::Status { session, status },
        ManagedEvent::Paused(paused) => Record::Paused {
            session,
            slot: paused.slot,
            batch_index: paused.batch_index,
        },
        ManagedEvent::DiscoveryBatch(event) => Record::Discovery { session, event },
        ManagedEvent::Error(error) => Record::Error {
            session,
            message: error.to_string(),
            error,
        },
        ManagedEvent::Completed { summary, .. } => Record::Completed {
            session,
            summary: summary.as_ref(),
        },
        ManagedEvent::ReadyForContinue => return None,
    })
}

/// Where the capture goes: a buffered file, stdout, or nowhere.
pub struct Output {
    writer: Option<Box<dyn Write>>,
}

impl Output {
    /// No capture.
    pub fn none() -> Self {
        Self { writer: None }
    }

    /// Capture to `path` (`-` is stdout). An existing file is an error
    /// unless `force`.
    pub fn open(path: &Path, force: bool) -> io::Result<Self> {
        let writer: Box<dyn Write> = if path == Path::new("-") {
            Box::new(BufWriter::new(io::stdout()))
        } else {
            Box::new(BufWriter::with_capacity(1 << 16, create_file(path, force)?))
        };
        Ok(Self {
            writer: Some(writer),
        })
    }

    /// Append the event's record, if it has one.
    pub fn write(&mut self, session: &str, event: &ManagedEvent) -> io::Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let Some(record) = record(session, event) else {
            return Ok(());
        };
        serde_json::to_writer(&mut *writer, &record)?;
        writer.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(writer) => writer.flush(),
            None => Ok(()),
        }
    }
}

/// Create `path` for writing: refuses an existing file unless `force`.
pub fn create_file(path: &Path, force: bool) -> io::Result<File> {
    let mut options = File::options();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(
                e.kind(),
                format!("{} exists; pass --force to overwrite it", path.display()),
            )
        } else {
            io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use backtest_actors::{AccountDiffContext, AccountDiffNotification};
    use serde_json::json;

    fn line(event: &ManagedEvent) -> Value {
        serde_json::to_value(record("s1", event).expect("a record")).unwrap()
    }

    #[test]
    fn records_have_their_documented_shape() {
        assert_eq!(
            line(&ManagedEvent::Slot(7)),
            json!({"type": "slot", "session": "s1", "slot": 7})
        );
        let diff = AccountDiffNotification {
            context: AccountDiffContext { slot: 9 },
            account: Some("acc".into()),
            signature: Some("sig".into()),
            tx_index: Some(3),
            block_time: None,
            pre: None,
            post: Some(json!({"lamports": 1})),
        };
        assert_eq!(
            line(&ManagedEvent::AccountDiff(diff)),
            json!({"type": "accountDiff", "session": "s1", "slot": 9, "account": "acc",
                   "signature": "sig", "txIndex": 3, "blockTime": null, "pre": null,
                   "post": {"lamports": 1}})
        );
        assert_eq!(
            line(&ManagedEvent::Completed {
                summary: None,
                agent_stats: None
            }),
            json!({"type": "completed", "session": "s1", "summary": null})
        );
        assert_eq!(
            line(&ManagedEvent::Status(BacktestStatus::StartingRuntime)),
            json!({"type": "status", "session": "s1", "status": "startingRuntime"})
        );
        assert_eq!(
            line(&ManagedEvent::Error(BacktestError::NoMoreBlocks)),
            json!({"type": "error", "session": "s1", "message": BacktestError::NoMoreBlocks.to_string(),
                   "error": "noMoreBlocks"})
        );
        assert!(record("s1", &ManagedEvent::ReadyForContinue).is_none());
    }
}

//! The end-of-run summary: a short text on stderr, and the same as JSON for
//! `--summary-json`.

use std::{io::Write, path::Path};

use serde::Serialize;

use crate::session::{End, SessionReport};

/// Totals of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub sessions: u64,
    pub slots: u64,
    pub transactions: u64,
    pub account_diffs: u64,
    pub duplicates_removed: u64,
    pub reconnects: u64,
    pub elapsed_secs: f64,
    /// `completed` or `failed` (a cancelled run is `failed`, error
    /// `cancelled`).
    pub status: &'static str,
    pub error: Option<String>,
}

impl Summary {
    /// Totals over the sessions' reports. `error` is a failure that is not
    /// any one session's (the run could not start, or was cancelled).
    pub fn of(reports: &[SessionReport], elapsed_secs: f64, error: Option<String>) -> Self {
        let failure = error.or_else(|| {
            reports.iter().find_map(|r| match &r.end {
                End::Completed => None,
                End::Failed(e) => Some(format!("session {}: {e}", r.session_id)),
                End::Cancelled => Some("cancelled".to_string()),
            })
        });
        let sum = |f: fn(&SessionReport) -> u64| reports.iter().map(f).sum();
        Self {
            sessions: reports.len() as u64,
            slots: sum(|r| r.slots),
            transactions: sum(|r| r.transactions),
            account_diffs: sum(|r| r.account_diffs),
            duplicates_removed: sum(|r| r.duplicates_removed),
            reconnects: sum(|r| r.reconnects),
            elapsed_secs,
            status: if failure.is_none() {
                "completed"
            } else {
                "failed"
            },
            error: failure,
        }
    }

    /// Two or three lines for a human.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{}: {} session{}, {} slots, {} transactions, {} account diffs, \
             {} duplicates removed, {} reconnects in {:.1}s",
            self.status,
            self.sessions,
            if self.sessions == 1 { "" } else { "s" },
            self.slots,
            self.transactions,
            self.account_diffs,
            self.duplicates_removed,
            self.reconnects,
            self.elapsed_secs
        );
        if let Some(error) = &self.error {
            text.push_str(&format!("\nerror: {error}\nthe capture is incomplete"));
        }
        text
    }

    /// Write as JSON to `path`.
    pub fn write_json(&self, path: &Path, force: bool) -> std::io::Result<()> {
        let mut file = crate::output::create_file(path, force)?;
        serde_json::to_writer_pretty(&mut file, self)?;
        file.write_all(b"\n")?;
        file.flush()
    }
}

//! Progress on stderr: one bar per session (slots done / total,
//! transactions, diffs, reconnects). Hidden with `--quiet` or when stderr is
//! not a terminal.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::session::{End, SessionReport};

/// The bars of a run.
pub struct Progress {
    multi: MultiProgress,
    visible: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let visible = !quiet && std::io::stderr().is_terminal();
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Self {
            multi: MultiProgress::with_draw_target(target),
            visible,
        }
    }

    /// A bar for a session running `slots` slots.
    pub fn session(&self, label: &str, slots: u64) -> SessionBar {
        let bar = self.multi.add(ProgressBar::new(slots));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} slots  {msg}  {elapsed_precise}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        SessionBar { bar }
    }

    /// Print a line above the bars (or plainly when they are hidden).
    pub fn println(&self, line: &str) {
        if self.visible {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }
}

/// One session's bar.
pub struct SessionBar {
    bar: ProgressBar,
}

impl SessionBar {
    pub fn update(&self, report: &SessionReport) {
        self.bar.set_position(report.slots);
        self.bar.set_message(counts(report));
    }

    pub fn finish(&self, report: &SessionReport) {
        self.update(report);
        let how = match &report.end {
            End::Completed => "completed",
            End::Failed(_) => "failed",
            End::Cancelled => "cancelled",
        };
        self.bar
            .abandon_with_message(format!("{}  {how}", counts(report)));
    }
}

fn counts(report: &SessionReport) -> String {
    format!(
        "tx {}  diffs {}  reconnects {}",
        report.transactions, report.account_diffs, report.reconnects
    )
}

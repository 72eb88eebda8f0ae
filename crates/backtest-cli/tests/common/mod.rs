//! Helpers shared by the CLI's end-to-end tests: running the built
//! `backtest` binary with bounded waits, and scratch directories.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// Longest a CLI run may take in these tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// A child process killed when dropped, however the test ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn backtest() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backtest"));
    cmd.env_remove("BACKTEST_API_KEY")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    cmd
}

pub fn spawn(args: &[&str]) -> Proc {
    Proc(
        backtest()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts"),
    )
}

/// The URL from the `listening on URL` line a `backtest server` prints
/// first on stdout; fails the test if it does not come within 30 s.
pub fn listening_url(server: &mut Proc) -> String {
    let stdout = server.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("listening line");
    line.strip_prefix("listening on ")
        .and_then(|l| l.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_string()
}

/// Wait for the process to exit within `limit` (killed and failed
/// otherwise) and collect its output.
pub fn finish(mut proc: Proc, limit: Duration) -> Outcome {
    let mut stdout = proc.0.stdout.take().expect("stdout");
    let mut stderr = proc.0.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = proc.0.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = proc.0.kill();
            let _ = proc.0.wait();
            panic!(
                "backtest did not exit within {limit:?}; stderr: {}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

pub fn run(args: &[&str]) -> Outcome {
    finish(spawn(args), WAIT)
}

/// A fresh directory for one test's files.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "backtest-cli-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

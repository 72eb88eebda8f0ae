//! The `backtest-server` binary: the listening line, flag errors and
//! fault logging.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Kills the child when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Server {
    Server(
        Command::new(env!("CARGO_BIN_EXE_backtest-server"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts"),
    )
}

/// Read the first stdout line within a deadline.
fn first_line(server: &mut Server) -> String {
    let stdout = server.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("listening line within 30 s")
}

#[test]
fn prints_one_listening_line_with_the_bound_port() {
    let mut server = spawn(&["--listen", "127.0.0.1:0", "--fault", "data-drop-after=500"]);
    let line = first_line(&mut server);
    let addr = line
        .strip_prefix("listening on ws://")
        .and_then(|rest| rest.strip_suffix("/backtest\n"))
        .unwrap_or_else(|| panic!("unexpected line: {line:?}"));
    let addr: std::net::SocketAddr = addr.parse().expect("an address");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    // The port answers HTTP.
    let started = Instant::now();
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "port not open");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The configured fault is shown in the start-up log.
    let _ = server.0.kill();
    let _ = server.0.wait();
    let mut log = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("faults=data-drop-after=500"), "{log}");
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        vec!["--fault", "explode=1"],
        vec!["--programs", "not-a-key"],
        vec!["--first-slot", "10", "--last-slot", "5"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_backtest-server"))
            .args(&args)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("backtest-server: "), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

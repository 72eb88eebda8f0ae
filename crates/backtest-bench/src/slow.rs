//! Scenario 2, slow consumer: the consumer spends 50 µs per event (busy
//! work on the client's thread) while the server pushes as fast as the
//! socket takes. Figure: peak RSS growth of the client process over its idle
//! baseline, and that nothing was lost.
//!
//! The client runs in a child process (`backtest-bench client ...`) so its
//! memory is its own: the parent reads `/proc/<pid>/status` (VmRSS at the
//! idle baseline, VmHWM at the end, VmRSS sampled in between). The child is
//! killed if it outlives its bounded wait, and on every early return.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    Settings,
    clients::{self, Impl, Target},
    corpus::Corpus,
    server::{BenchServer, Codec, DataPlan},
    stats::{Better, Figure, median},
};

/// A child process killed when dropped, unless it already exited.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// One measured child run.
struct Sample {
    growth_mib: f64,
    received: u64,
    elapsed_s: f64,
}

pub fn run(settings: &Settings, corpus: Arc<Corpus>) -> Result<Figure, String> {
    let n = settings.slow_count;
    let server = BenchServer::start(DataPlan::Generated {
        corpus: corpus.clone(),
        count: n,
        codec: Codec::Zstd,
        drop_every: None,
        max_drops: 0,
    })
    .map_err(|e| e.to_string())?;
    let (mut ours, mut seed) = (Vec::new(), Vec::new());
    let mut lost = 0u64;
    for round in 0..settings.runs {
        let order = if round % 2 == 0 {
            [Impl::Ours, Impl::Seed]
        } else {
            [Impl::Seed, Impl::Ours]
        };
        for which in order {
            let sample = child_run(which, &server, &corpus.program, settings)?;
            lost += n.saturating_sub(sample.received);
            eprintln!(
                "slow_consumer {} run {}: +{:.1} MiB, {} of {n} in {:.1} s",
                which.name(),
                round + 1,
                sample.growth_mib,
                sample.received,
                sample.elapsed_s
            );
            match which {
                Impl::Ours => ours.push(sample.growth_mib),
                Impl::Seed => seed.push(sample.growth_mib),
            }
        }
    }
    Ok(Figure {
        scenario: "slow_consumer",
        codec: Some(Codec::Zstd.name()),
        label: format!(
            "slow consumer ({} µs/event, {n} notifications), peak RSS growth",
            settings.slow_work.as_micros()
        ),
        unit: "MiB",
        better: Better::Lower,
        ours: median(&ours),
        seed_crate: Some(median(&seed)),
        limit: None,
        extra: json!({
            "notifications": n,
            "lost": lost,
            "runs_ours": ours, "runs_seed_crate": seed,
        }),
    })
}

fn child_run(
    which: Impl,
    server: &BenchServer,
    program: &str,
    settings: &Settings,
) -> Result<Sample, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .args(["client", "--impl", which.name()])
        .args(["--control", &server.control_url()])
        .args(["--rpc", &server.rpc_endpoint()])
        .args(["--program", program])
        .args(["--work-us", &settings.slow_work.as_micros().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn client: {e}"))?;
    let mut guard = ChildGuard(child);
    let pid = guard.0.id();
    let mut stdin = guard.0.stdin.take().ok_or("child stdin")?;
    let stdout = guard.0.stdout.take().ok_or("child stdout")?;
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = lines
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "client not ready within 30 s")?;
    if ready != "ready" {
        return Err(format!("client said {ready:?}"));
    }
    let baseline = status_kib(pid, "VmRSS").ok_or("no VmRSS")?;
    say(&mut stdin, "go")?;
    let budget = settings.slow_work * settings.slow_count as u32 * 4 + Duration::from_secs(120);
    let deadline = Instant::now() + budget;
    let mut peak = baseline;
    let result: Value = loop {
        if Instant::now() > deadline {
            return Err(format!("client did not finish within {budget:?}"));
        }
        match lines.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                if let Some(json) = line.strip_prefix("result ") {
                    break serde_json::from_str(json).map_err(|e| e.to_string())?;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("client died".into()),
        }
        peak = peak.max(status_kib(pid, "VmRSS").unwrap_or(0));
    };
    peak = peak.max(status_kib(pid, "VmHWM").unwrap_or(0));
    say(&mut stdin, "exit")?;
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = guard.0.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if let Some(error) = result["error"].as_str() {
        return Err(format!("client {}: {error}", which.name()));
    }
    Ok(Sample {
        growth_mib: peak.saturating_sub(baseline) as f64 / 1024.0,
        received: result["received"].as_u64().unwrap_or(0),
        elapsed_s: result["elapsed_s"].as_f64().unwrap_or(f64::NAN),
    })
}

fn say(stdin: &mut ChildStdin, line: &str) -> Result<(), String> {
    writeln!(stdin, "{line}")
        .and_then(|()| stdin.flush())
        .map_err(|e| format!("talk to client: {e}"))
}

/// The child side (`backtest-bench client ...`): report ready, wait for
/// `go`, consume the stream spending `work` per event, print the result,
/// wait for `exit` (so the parent can read VmHWM while it is alive).
pub fn child_main(which: Impl, target: Target, work: Duration) -> i32 {
    let stdin = std::io::stdin();
    let mut line = String::new();
    println!("ready");
    let _ = std::io::stdout().flush();
    if stdin.lock().read_line(&mut line).is_err() || line.trim() != "go" {
        return 2;
    }
    let mut last_slot = 0u64;
    let mut out_of_order = 0u64;
    let outcome = clients::run(which, &target, &mut |tx| {
        if tx.slot < last_slot {
            out_of_order += 1;
        }
        last_slot = tx.slot;
        let until = Instant::now() + work;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    });
    let result = match outcome {
        Ok(run) => json!({
            "received": run.received,
            "out_of_order": out_of_order,
            "elapsed_s": (run.finished - run.started).as_secs_f64(),
        }),
        Err(e) => json!({"error": e}),
    };
    println!("result {result}");
    let _ = std::io::stdout().flush();
    line.clear();
    let _ = stdin.lock().read_line(&mut line);
    0
}

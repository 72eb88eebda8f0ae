//! `backtest run`: check the flags, start the embedded server when no URL
//! was given, run the session(s) to their end, write the capture and the
//! summary, and map the outcome to an exit code.

use std::{cell::RefCell, io::IsTerminal, rc::Rc, time::Duration, time::Instant};

use backtest_actors::{
    ManagedBacktestSession, ManagedParallelSession, ParallelSupervisor, SessionSupervisor,
};
use backtest_server::{RunningServer, ServerConfig};
use simulator_api::CreateBacktestSessionRequest;
use tokio_util::sync::CancellationToken;

use crate::{
    CliError, EXIT_FAILED, EXIT_INTERRUPTED, RunArgs,
    output::Output,
    progress::Progress,
    session::{self, Plan, SessionReport, Single},
    summary::Summary,
};

/// How long a cancelled run may take to close its sessions before the CLI
/// gives up waiting.
const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// What the session(s) of a run delivered.
struct Outcome {
    reports: Vec<SessionReport>,
    /// A failure that is no session's (the run could not start).
    error: Option<String>,
    /// Reconnects of a parallel run's shared control connection.
    control_reconnects: u64,
}

impl Outcome {
    fn error(error: String) -> Self {
        Self {
            reports: Vec::new(),
            error: Some(error),
            control_reconnects: 0,
        }
    }
}

/// Everything checked before anything runs.
struct Job {
    url: String,
    api_key: String,
    range: (u64, u64),
    plan: Plan,
    parallel: bool,
    create: CreateBacktestSessionRequest,
    drain_idle_timeout: Duration,
    /// Extra roots (DER) from `--ca-cert`.
    extra_roots: Vec<Vec<u8>>,
}

pub fn run(args: RunArgs) -> Result<u8, CliError> {
    init_logging(&args.log_level)?;
    let started = Instant::now();
    let range = range(&args)?;
    let extra_roots = match &args.ca_cert {
        Some(path) => crate::tls::read_ca_cert(path)?,
        None => Vec::new(),
    };
    let url = args
        .url
        .as_deref()
        .map(backtest_actors::url::control_url)
        .transpose()
        .map_err(|e| CliError::usage(format!("bad --url: {e}")))?;
    if url.is_some()
        && args.tx_programs.is_empty()
        && args.diff_programs.is_empty()
        && !args.send_summary
    {
        return Err(CliError::usage(
            "with --url, give at least one --tx-program or --diff-program \
             (or --send-summary for a summary-only run)",
        ));
    }
    if let Some(path) = &args.summary_json
        && !args.force
        && path.exists()
    {
        return Err(CliError::usage(format!(
            "{} exists; pass --force to overwrite it",
            path.display()
        )));
    }
    let embedded = ServerConfig::default();
    if url.is_none() {
        let ledger = &embedded.ledger;
        if range.0 < ledger.first_slot || range.1 > ledger.last_slot {
            return Err(CliError::usage(format!(
                "the embedded server serves slots {}..={}; {}..={} is outside",
                ledger.first_slot, ledger.last_slot, range.0, range.1
            )));
        }
    }
    let out = match &args.out {
        Some(path) => Output::open(path, args.force).map_err(|e| CliError::usage(e.to_string()))?,
        None => Output::none(),
    };
    let progress = Progress::new(args.quiet);

    // Without a URL: the reference server, in this process.
    let server = match &url {
        Some(_) => None,
        None => {
            let server = RunningServer::spawn(embedded, "127.0.0.1:0".parse().expect("ip"))
                .map_err(|e| CliError::failed(format!("cannot start the embedded server: {e}")))?;
            if !args.quiet {
                eprintln!(
                    "no --url: running against an embedded reference server at {}",
                    server.control_url()
                );
            }
            Some(server)
        }
    };
    let (tx_programs, diff_programs) = match &server {
        Some(server) if args.tx_programs.is_empty() && args.diff_programs.is_empty() => {
            let all = server.state().ledger.programs().to_vec();
            (all.clone(), all)
        }
        _ => (args.tx_programs.clone(), args.diff_programs.clone()),
    };
    let url = url.unwrap_or_else(|| server.as_ref().map(|s| s.control_url()).unwrap_or_default());
    let mut create = serde_json::json!({
        "startSlot": range.0,
        "endSlot": range.1,
        "sendSummary": args.send_summary,
    });
    if args.disconnect_timeout > 0 {
        create["disconnectTimeoutSecs"] = args.disconnect_timeout.into();
    }
    if args.parallel {
        create["parallel"] = true.into();
    }
    let create: CreateBacktestSessionRequest = serde_json::from_value(create)
        .map_err(|e| CliError::usage(format!("bad session parameters: {e}")))?;
    let job = Job {
        url,
        api_key: args.api_key.clone().unwrap_or_default(),
        range,
        plan: Plan {
            tx_programs,
            diff_programs,
            advance_count: args.advance_count,
        },
        parallel: args.parallel,
        create,
        drain_idle_timeout: Duration::from_secs(args.drain_idle_timeout),
        extra_roots,
    };

    let out = Rc::new(RefCell::new(out));
    let (outcome, interrupted) =
        actix_rt::System::new().block_on(supervise(job, out.clone(), &progress));
    let mut error = outcome.error;
    if let Err(e) = out.borrow_mut().flush() {
        error.get_or_insert(format!("writing the capture: {e}"));
    }
    if interrupted {
        error = Some("cancelled".into());
    }
    let mut summary = Summary::of(&outcome.reports, started.elapsed().as_secs_f64(), error);
    summary.reconnects += outcome.control_reconnects;
    if let Some(path) = &args.summary_json
        && let Err(e) = summary.write_json(path, true)
    {
        eprintln!("backtest: cannot write {}: {e}", path.display());
    }
    if summary.status != "completed" || !args.quiet {
        progress.println(&summary.text());
    }
    if let Some(server) = server {
        server.stop();
    }
    Ok(if interrupted {
        EXIT_INTERRUPTED
    } else if summary.status == "completed" {
        0
    } else {
        EXIT_FAILED
    })
}

/// Run the job until it ends or a signal arrives; on a signal, cancel
/// (every session is closed) and wait a bounded time for the close.
/// Returns what the run delivered and whether it was interrupted.
async fn supervise(job: Job, out: Rc<RefCell<Output>>, progress: &Progress) -> (Outcome, bool) {
    let cancel = CancellationToken::new();
    let work = execute(job, out, progress, cancel.clone());
    tokio::pin!(work);
    tokio::select! {
        outcome = &mut work => return (outcome, false),
        _ = interrupt() => {}
    }
    progress.println("interrupted: closing the session(s)");
    cancel.cancel();
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        _ = interrupt() => Outcome::error("interrupted twice".into()),
        _ = tokio::time::sleep(CANCEL_GRACE) => Outcome::error("the close timed out".into()),
    };
    (outcome, true)
}

/// Ctrl-C or SIGTERM.
async fn interrupt() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Start the session(s) and drive them to their end.
async fn execute(
    job: Job,
    out: Rc<RefCell<Output>>,
    progress: &Progress,
    cancel: CancellationToken,
) -> Outcome {
    if job.parallel {
        return execute_parallel(job, out, progress, cancel).await;
    }
    let mut builder = SessionSupervisor::builder(job.url.clone(), job.api_key.clone(), job.create)
        .drain_idle_timeout(job.drain_idle_timeout);
    for root in &job.extra_roots {
        builder = builder.add_root_certificate(root.clone());
    }
    let session = match ManagedBacktestSession::start_with_builder(builder, cancel.clone()).await {
        Ok(session) => session,
        Err(e) => return Outcome::error(e.to_string()),
    };
    let handle = Single {
        session,
        range: job.range,
    };
    let report = session::drive(handle, &job.plan, out, progress, cancel).await;
    Outcome {
        reports: vec![report],
        error: None,
        control_reconnects: 0,
    }
}

/// Start a parallel run and drive every sub-session concurrently, one bar
/// each. Returns the sub-sessions' reports and the control connection's
/// reconnects (not any sub-session's).
async fn execute_parallel(
    job: Job,
    out: Rc<RefCell<Output>>,
    progress: &Progress,
    cancel: CancellationToken,
) -> Outcome {
    let mut builder = ParallelSupervisor::builder(job.url.clone(), job.api_key.clone(), job.create)
        .drain_idle_timeout(job.drain_idle_timeout);
    for root in &job.extra_roots {
        builder = builder.add_root_certificate(root.clone());
    }
    let mut parallel =
        match ManagedParallelSession::start_with_builder(builder, cancel.clone()).await {
            Ok(parallel) => parallel,
            Err(e) => return Outcome::error(e.to_string()),
        };
    tracing::info!(
        control_session_id = parallel.control_session_id(),
        "parallel run created"
    );
    let mut subs = parallel.take_sub_sessions();
    subs.sort_by_key(|sub| sub.range());
    let runs = subs
        .into_iter()
        .map(|sub| session::drive(sub, &job.plan, out.clone(), progress, cancel.clone()));
    let reports = futures::future::join_all(runs).await;
    let control_reconnects = parallel.status().await.map(|s| s.reconnects).unwrap_or(0);
    parallel.shutdown().await;
    Outcome {
        reports,
        error: None,
        control_reconnects,
    }
}

/// The inclusive slot range the flags describe.
fn range(args: &RunArgs) -> Result<(u64, u64), CliError> {
    let start = args.start_slot;
    let end = match (args.end_slot, args.slots) {
        (Some(end), None) => end,
        (None, Some(0)) => return Err(CliError::usage("--slots must be at least 1")),
        (None, Some(n)) => start
            .checked_add(n - 1)
            .ok_or_else(|| CliError::usage("--start-slot + --slots overflows"))?,
        _ => {
            return Err(CliError::usage(
                "give exactly one of --end-slot and --slots",
            ));
        }
    };
    if end < start {
        return Err(CliError::usage(format!(
            "--end-slot {end} is before --start-slot {start}"
        )));
    }
    Ok((start, end))
}

fn init_logging(filter: &str) -> Result<(), CliError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| CliError::usage(format!("bad --log-level: {e}")))?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    Ok(())
}

//! Embedding a managed backtest session in an actix application.
//!
//! A `Driver` actor receives the session's events by push (its
//! `Recipient<ManagedEvent>`), continues the run on every
//! `ReadyForContinue`, and counts what arrives. Backpressure is built in:
//! the supervisor waits for `Driver` to handle each event.
//!
//! Run against the embedded reference server:
//!     cargo run -p backtest-actors --example actix_app
//! or against a service:
//!     cargo run -p backtest-actors --example actix_app -- wss://HOST/backtest API_KEY

use actix::prelude::*;
use backtest_actors::{
    Continue, ManagedEvent, SessionSupervisor, SubscribeAccountDiffs, SubscribeTransactions,
    WaitOutcome, WaitSession,
};
use simulator_api::{ContinueParams, CreateSessionParams};

/// Drives the session and counts its events.
struct Driver {
    session: Option<Addr<SessionSupervisor>>,
    slots: u64,
    transactions: u64,
    diffs: u64,
}

/// Hands the driver the session it drives (it exists only after the
/// driver's address was given to the supervisor as the event recipient).
#[derive(Message)]
#[rtype(result = "()")]
struct Drive(Addr<SessionSupervisor>);

impl Actor for Driver {
    type Context = Context<Self>;
}

impl Handler<Drive> for Driver {
    type Result = ();

    fn handle(&mut self, msg: Drive, _: &mut Context<Self>) {
        self.session = Some(msg.0);
    }
}

impl Handler<ManagedEvent> for Driver {
    type Result = ();

    fn handle(&mut self, event: ManagedEvent, ctx: &mut Context<Self>) {
        match event {
            ManagedEvent::ReadyForContinue => {
                if let Some(session) = self.session.clone() {
                    let step = ContinueParams {
                        advance_count: 10,
                        ..ContinueParams::default()
                    };
                    // Gated by the supervisor: sent once every connection is up.
                    ctx.spawn(
                        async move {
                            if let Ok(Err(e)) = session.send(Continue(step)).await {
                                eprintln!("continue not sent: {e}");
                            }
                        }
                        .into_actor(self),
                    );
                }
            }
            ManagedEvent::Slot(_) => self.slots += 1,
            ManagedEvent::Transaction(_) => self.transactions += 1,
            ManagedEvent::AccountDiff(_) => self.diffs += 1,
            ManagedEvent::Completed { summary, .. } => println!(
                "completed: {} slots, {} transactions, {} account diffs, summary {summary:?}",
                self.slots, self.transactions, self.diffs
            ),
            ManagedEvent::Error(e) => eprintln!("server error: {e}"),
            _ => {}
        }
    }
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (url, api_key) = (args.next(), args.next().unwrap_or_default());
    // Without a URL, run against the reference server on a free port.
    let server = match url {
        Some(_) => None,
        None => Some(backtest_server::RunningServer::spawn(
            backtest_server::ServerConfig::default(),
            "127.0.0.1:0".parse().expect("loopback"),
        )?),
    };
    let url = url.unwrap_or_else(|| server.as_ref().map(|s| s.control_url()).unwrap_or_default());
    let programs = backtest_server::LedgerConfig::default_programs();

    actix_rt::System::new().block_on(async move {
        let driver = Driver {
            session: None,
            slots: 0,
            transactions: 0,
            diffs: 0,
        }
        .start();
        let create: CreateSessionParams =
            serde_json::from_value(serde_json::json!({"startSlot": 1000, "endSlot": 1049}))
                .expect("create params");
        let session = SessionSupervisor::builder(url, api_key, create)
            .events(driver.clone().recipient())
            .start();
        driver.do_send(Drive(session.clone()));

        let info = match session.send(WaitSession).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return eprintln!("session not created: {e}"),
            Err(e) => return eprintln!("supervisor gone: {e}"),
        };
        println!("session {} created", info.session_id);
        let _ = session
            .send(SubscribeTransactions {
                programs: programs.clone(),
            })
            .await;
        let _ = session.send(SubscribeAccountDiffs { programs }).await;
        match session.send(WaitOutcome).await {
            Ok(Ok(())) => println!("done"),
            Ok(Err(e)) => eprintln!("session failed: {e}"),
            Err(e) => eprintln!("supervisor gone: {e}"),
        }
    });
    Ok(())
}

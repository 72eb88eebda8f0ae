//! Reference server for the Solana simulator backtest WebSocket API.
//!
//! It speaks the same protocol as the real service (control plane at
//! `/backtest`, data plane at each session's `rpc_endpoint`, HTTP at
//! `/available-ranges` and `/usage`) over a deterministic synthetic ledger,
//! with fault injection, so clients can be built and tested on one machine
//! with no account. It is the test bed of this workspace and the embedded
//! default of the `backtest` CLI.
//!
//! ```no_run
//! use backtest_server::{RunningServer, ServerConfig};
//!
//! let server = RunningServer::spawn(ServerConfig::default(), "127.0.0.1:0".parse().unwrap())?;
//! println!("control plane at {}", server.control_url());
//! server.stop();
//! # Ok::<(), std::io::Error>(())
//! ```

mod auth;
pub mod cli;
mod config;
mod control;
mod data;
mod executor;
pub mod faults;
mod http;
mod outbox;
pub mod rpc_request;
mod session;
mod state;
#[cfg(feature = "test-pki")]
pub mod test_pki;
mod wire;

use std::{io, net::SocketAddr, sync::Arc, thread};

use actix_web::{App, HttpServer, dev::ServerHandle, web};
pub use backtest_ledger::{DiffKey, Ledger, LedgerConfig, LedgerTransaction};

pub use crate::{
    auth::API_KEY_HEADER,
    config::{Limits, ServerConfig, TlsConfig},
    faults::{FaultPlan, FaultSpecError},
    session::Finish,
    state::{ServerState, SessionRecord},
};

/// Mount the server's routes on an actix-web app.
pub fn routes(state: Arc<ServerState>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(state))
            .route("/backtest", web::get().to(control::control_ws))
            .route("/rpc/{session_id}", web::get().to(data::data_ws))
            .route("/available-ranges", web::get().to(http::available_ranges))
            .route("/usage", web::get().to(http::usage))
            .route("/health", web::get().to(http::health));
    }
}

/// Build the shared state, checking the configuration.
pub fn build_state(config: ServerConfig) -> io::Result<Arc<ServerState>> {
    if config.bundle_slots == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bundle slots must be at least 1",
        ));
    }
    let ledger = Ledger::new(config.ledger.clone())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    Ok(Arc::new(ServerState::new(config, ledger)))
}

/// Bind `listen` and build the HTTP server on the current actix system.
/// Returns the server future and the bound address.
pub fn bind(
    state: Arc<ServerState>,
    listen: SocketAddr,
) -> io::Result<(actix_web::dev::Server, SocketAddr)> {
    let workers = state.config.workers.max(1);
    let tls = state.config.tls.clone();
    let server = HttpServer::new(move || App::new().configure(routes(state.clone())))
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(1)
        // When a WebSocket handler ends its response (a cut fault, a close,
        // a finished connection), end the TCP connection at once after the
        // flush. actix-web would otherwise linger up to a second waiting for
        // the client to hang up, so an injected cut would reach the client
        // only as a late EOF, and frames the client sends meanwhile would be
        // silently swallowed.
        .client_disconnect_timeout(std::time::Duration::ZERO);
    let server = match &tls {
        Some(tls) => server.bind_rustls_0_23(listen, tls.server_config()?)?,
        None => server.bind(listen)?,
    };
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("the server bound no address"))?;
    Ok((server.run(), addr))
}

/// A server running on a thread of its own, for tests and the CLI's
/// embedded default. Stopped by [`RunningServer::stop`] or on drop.
pub struct RunningServer {
    addr: SocketAddr,
    state: Arc<ServerState>,
    handle: ServerHandle,
    thread: Option<thread::JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    /// Start a server on `listen` (port 0 picks a free port) in a new thread
    /// with its own actix system. Returns once the port is bound.
    pub fn spawn(config: ServerConfig, listen: SocketAddr) -> io::Result<Self> {
        let state = build_state(config)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_state = state.clone();
        let thread = thread::Builder::new()
            .name("backtest-server".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    match bind(thread_state, listen) {
                        Ok((server, addr)) => {
                            let _ = tx.send(Ok((server.handle(), addr)));
                            server.await
                        }
                        Err(e) => {
                            let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                            Err(e)
                        }
                    }
                })
            })?;
        let (handle, addr) = rx
            .recv()
            .map_err(|_| io::Error::other("the server thread ended before binding"))??;
        Ok(Self {
            addr,
            state,
            handle,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/backtest` (`wss://` when serving TLS).
    pub fn control_url(&self) -> String {
        let tls = self.state.config.tls.is_some();
        format!(
            "{}://{}/backtest",
            if tls { "wss" } else { "ws" },
            self.addr
        )
    }

    /// `http://ADDR` (`https://` when serving TLS).
    pub fn http_base(&self) -> String {
        let tls = self.state.config.tls.is_some();
        format!("{}://{}", if tls { "https" } else { "http" }, self.addr)
    }

    /// The server's state: records, usage, fault counts.
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Stop accepting, close connections and wait for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            // `stop` returns a future that resolves once the server has
            // stopped; the server's own thread drives it, so it need not be
            // awaited here. Joining the thread waits for the stop.
            drop(self.handle.stop(false));
            let _ = thread.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

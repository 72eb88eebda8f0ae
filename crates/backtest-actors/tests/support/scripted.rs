//! A scripted WebSocket peer: an actix-web server whose connections run a
//! test's script, for exact frames the reference server would never send.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream};
use serde_json::Value;

/// Everything the peer received or noted, in order.
pub type Log = Arc<Mutex<Vec<String>>>;

/// One connection as a script sees it.
pub struct Peer {
    pub path: String,
    ws: actix_ws::Session,
    stream: AggregatedMessageStream,
    pub log: Log,
}

impl Peer {
    pub fn note(&self, what: impl Into<String>) {
        self.log.lock().unwrap().push(what.into());
    }

    /// The next text frame (logged); `None` when the client closed or left.
    pub async fn recv(&mut self) -> Option<String> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.stream.recv())
                .await
                .ok()??;
            match message.ok()? {
                AggregatedMessage::Text(text) => {
                    self.note(text.to_string());
                    return Some(text.to_string());
                }
                AggregatedMessage::Ping(payload) => {
                    let _ = self.ws.pong(&payload).await;
                }
                AggregatedMessage::Close(_) => {
                    self.note("<close>");
                    return None;
                }
                _ => {}
            }
        }
    }

    /// The next text frame as JSON.
    pub async fn recv_json(&mut self) -> Option<Value> {
        let text = self.recv().await?;
        serde_json::from_str(&text).ok()
    }

    pub async fn send_json(&mut self, value: Value) {
        let _ = self.ws.text(value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        let _ = self.ws.text(text).await;
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        let _ = self.ws.binary(bytes).await;
    }

    /// Keep answering pings until the client leaves, logging what it sends.
    pub async fn idle(mut self) {
        while self.recv().await.is_some() {}
    }
}

type Script = Arc<dyn Fn(Peer) -> Pin<Box<dyn Future<Output = ()>>> + Send + Sync>;

/// A running scripted server.
pub struct Scripted {
    pub addr: SocketAddr,
    pub log: Log,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scripted {
    /// Serve every WebSocket connection (any path) with `script`.
    pub fn start<F, Fut>(script: F) -> Self
    where
        F: Fn(Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let script: Script = Arc::new(move |peer| Box::pin(script(peer)));
        let log: Log = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_log = log.clone();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    let script = script.clone();
                    let log = thread_log.clone();
                    App::new().default_service(web::to(
                        move |req: HttpRequest, body: web::Payload| {
                            let script = script.clone();
                            let log = log.clone();
                            async move {
                                let (response, ws, stream) = actix_ws::handle(&req, body)?;
                                let peer = Peer {
                                    path: req.path().to_string(),
                                    ws,
                                    stream: stream
                                        .max_frame_size(64 << 20)
                                        .aggregate_continuations(),
                                    log,
                                };
                                actix_rt::spawn(script(peer));
                                Ok::<HttpResponse, actix_web::Error>(response)
                            }
                        },
                    ))
                })
                .workers(1)
                .disable_signals()
                // A script that returns drops its connection at once (the
                // default waits up to a second for the client to close;
                // zero disables that wait).
                .client_disconnect_timeout(Duration::ZERO)
                .bind("127.0.0.1:0")
                .expect("bind");
                let addr = server.addrs()[0];
                let server = server.run();
                let _ = tx.send((server.handle(), addr));
                let _ = server.await;
            })
        });
        let (handle, addr) = rx.recv().expect("scripted server starts");
        Self {
            addr,
            log,
            handle,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/backtest", self.addr)
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

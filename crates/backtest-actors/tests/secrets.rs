//! The API key and header values stay secret: not in `Debug`, not in
//! errors, not in logs at TRACE. Its own test binary, because it installs
//! the process-wide log subscriber.

mod support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use backtest_actors::{SessionSupervisor, WaitSession};
use backtest_server::ServerConfig;
use serde_json::json;
use support::*;

/// Collects all log output of this process.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[actix_rt::test]
async fn the_api_key_never_shows() {
    const KEY: &str = "sk-very-secret-0123456789";
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // A process-wide subscriber: log lines from any thread are captured,
    // and no other test shares this binary. (A thread-scoped one raced
    // callsite-interest caching with tests running on other threads.)
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");

    let server = server(ServerConfig {
        api_keys: vec!["another-key".into()],
        ..config()
    });
    let builder =
        SessionSupervisor::builder(server.control_url(), KEY, create(1000, 1001, json!({})))
            .header("X-Trace", "also-secret-header-value");
    let shown = format!("{builder:?}");
    assert!(
        !shown.contains(KEY) && !shown.contains("also-secret"),
        "{shown}"
    );
    let addr = builder.start();
    let error = addr.send(WaitSession).await.unwrap().unwrap_err();
    assert!(
        error.to_string().contains("refused the API key (HTTP 401)"),
        "{error}"
    );
    assert!(!format!("{error} {error:?}").contains(KEY));
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("starting managed session"),
        "trace logs were captured"
    );
    assert!(!logs.contains(KEY), "the key leaked into the logs");
    assert!(
        !logs.contains("also-secret"),
        "a header value leaked into the logs"
    );
}

//! Parsing of data-plane JSON-RPC requests, without a connection.
//!
//! [`parse_rpc_request`] turns one request text into what the connection
//! should do: subscribe, unsubscribe, or answer with an error. Everything
//! that depends only on the text is decided here (the error codes and
//! messages are part of the wire contract); what depends on the
//! connection's state (the subscription limit, the subscription ids) is left
//! to the caller. Kept separate so it can be fuzzed.

use serde_json::{Value, json};
use simulator_api::subscribe_config::SubscribeConfig;

/// Longest text that can be a base58 public key: 32 bytes of `0xff` take
/// 44 characters, and leading `1`s (zero bytes) only make it shorter.
/// Checked before decoding, because base58 decoding takes time quadratic in
/// the length: a frame-sized "key" would hold a worker for minutes.
const MAX_PUBKEY_CHARS: usize = 44;

/// The two subscription kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// `transactionSubscribe`.
    Transaction,
    /// `accountDiffSubscribe`.
    AccountDiff,
}

/// One parsed data-plane request.
#[derive(Debug, Clone, PartialEq)]
pub enum RpcRequest {
    /// A well-formed subscribe request.
    Subscribe {
        /// The request's `id` (`null` when absent).
        id: Value,
        /// Which stream.
        kind: SubscriptionKind,
        /// The program filter, a base58 public key.
        program: String,
        /// The cross-cutting options of the config object.
        config: SubscribeConfig,
    },
    /// An unsubscribe request (either kind).
    Unsubscribe {
        /// The request's `id` (`null` when absent).
        id: Value,
        /// The subscription to end; `None` when the params name none.
        subscription: Option<u64>,
    },
    /// A request to answer with a JSON-RPC error.
    Error {
        /// The request's `id` (`null` when absent or unparsable).
        id: Value,
        /// JSON-RPC error code.
        code: i64,
        /// Error message.
        message: String,
    },
}

impl RpcRequest {
    fn error(id: Value, code: i64, message: impl Into<String>) -> Self {
        RpcRequest::Error {
            id,
            code,
            message: message.into(),
        }
    }
}

/// Parse one data-plane request text.
pub fn parse_rpc_request(text: &str) -> RpcRequest {
    match serde_json::from_str::<Value>(text) {
        Ok(request) => parse_rpc_value(&request),
        Err(e) => RpcRequest::error(Value::Null, -32700, format!("Parse error: {e}")),
    }
}

/// Parse one data-plane request already read as JSON.
pub fn parse_rpc_value(request: &Value) -> RpcRequest {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return RpcRequest::error(id, -32600, "Invalid request: missing method");
    };
    let params = request.get("params").unwrap_or(&Value::Null);
    match method {
        "transactionSubscribe" => subscribe(id, SubscriptionKind::Transaction, params),
        "accountDiffSubscribe" => subscribe(id, SubscriptionKind::AccountDiff, params),
        "transactionUnsubscribe" | "accountDiffUnsubscribe" => RpcRequest::Unsubscribe {
            id,
            subscription: params.get(0).and_then(Value::as_u64),
        },
        other => RpcRequest::error(id, -32601, format!("Method not found: {other}")),
    }
}

fn subscribe(id: Value, kind: SubscriptionKind, params: &Value) -> RpcRequest {
    let program = match kind {
        SubscriptionKind::Transaction => params
            .get(0)
            .and_then(|filter| filter.get("mentions"))
            .and_then(Value::as_array)
            .filter(|m| m.len() == 1)
            .and_then(|m| m[0].as_str()),
        SubscriptionKind::AccountDiff => params.get(0).and_then(Value::as_str),
    };
    let Some(program) = program else {
        let expected = match kind {
            SubscriptionKind::Transaction => r#"[{"mentions": [PROGRAM]}, {config}]"#,
            SubscriptionKind::AccountDiff => r#"[PROGRAM, {"address_type": "program", ...}]"#,
        };
        return RpcRequest::error(id, -32602, format!("Invalid params: expected {expected}"));
    };
    if !is_pubkey(program) {
        return RpcRequest::error(
            id,
            -32602,
            format!("Invalid params: `{program}` is not a base58 public key"),
        );
    }
    let config = params.get(1);
    if kind == SubscriptionKind::AccountDiff {
        let address_type = config
            .and_then(|c| c.get("address_type"))
            .and_then(Value::as_str);
        if address_type.is_some_and(|t| t != "program") {
            return RpcRequest::error(
                id,
                -32602,
                "Invalid params: only address_type \"program\" is supported",
            );
        }
    }
    RpcRequest::Subscribe {
        id,
        kind,
        program: program.to_string(),
        config: SubscribeConfig::from_value(config),
    }
}

/// Whether `text` is a base58 public key (32 bytes).
pub fn is_pubkey(text: &str) -> bool {
    text.len() <= MAX_PUBKEY_CHARS
        && bs58::decode(text)
            .into_vec()
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// A JSON-RPC error reply.
pub fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use simulator_api::subscribe_config::Compression;

    use super::*;

    const PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";

    fn error(text: &str) -> (Value, i64, String) {
        match parse_rpc_request(text) {
            RpcRequest::Error { id, code, message } => (id, code, message),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn subscribes() {
        let text = format!(
            r#"{{"id":1,"method":"transactionSubscribe","params":[{{"mentions":["{PROGRAM}"]}},{{"replayFromSlot":5,"compression":"zstd"}}]}}"#
        );
        assert_eq!(
            parse_rpc_request(&text),
            RpcRequest::Subscribe {
                id: json!(1),
                kind: SubscriptionKind::Transaction,
                program: PROGRAM.into(),
                config: SubscribeConfig {
                    replay_from_slot: Some(5),
                    compression: Some(Compression::Zstd),
                },
            }
        );
        let text = format!(
            r#"{{"method":"accountDiffSubscribe","params":["{PROGRAM}",{{"address_type":"program"}}]}}"#
        );
        assert_eq!(
            parse_rpc_request(&text),
            RpcRequest::Subscribe {
                id: Value::Null,
                kind: SubscriptionKind::AccountDiff,
                program: PROGRAM.into(),
                config: SubscribeConfig::default(),
            }
        );
    }

    #[test]
    fn unsubscribes() {
        assert_eq!(
            parse_rpc_request(r#"{"id":"a","method":"accountDiffUnsubscribe","params":[9]}"#),
            RpcRequest::Unsubscribe {
                id: json!("a"),
                subscription: Some(9),
            }
        );
        assert_eq!(
            parse_rpc_request(r#"{"id":2,"method":"transactionUnsubscribe"}"#),
            RpcRequest::Unsubscribe {
                id: json!(2),
                subscription: None,
            }
        );
    }

    #[test]
    fn errors() {
        let (id, code, message) = error("{");
        assert_eq!((id, code), (Value::Null, -32700));
        assert!(message.starts_with("Parse error: "), "{message}");
        assert_eq!(
            error(r#"{"id":77}"#),
            (json!(77), -32600, "Invalid request: missing method".into())
        );
        assert_eq!(
            error(r#"{"id":1,"method":"getHealth"}"#),
            (json!(1), -32601, "Method not found: getHealth".into())
        );
        assert_eq!(
            error(r#"{"id":1,"method":"transactionSubscribe","params":[{"mentions":[]}]}"#).1,
            -32602
        );
        assert_eq!(
            error(r#"{"id":1,"method":"accountDiffSubscribe","params":["not-a-key"]}"#).2,
            "Invalid params: `not-a-key` is not a base58 public key"
        );
        let text = format!(
            r#"{{"method":"accountDiffSubscribe","params":["{PROGRAM}",{{"address_type":"account"}}]}}"#
        );
        assert_eq!(
            error(&text).2,
            "Invalid params: only address_type \"program\" is supported"
        );
    }

    #[test]
    fn pubkeys() {
        assert!(is_pubkey(PROGRAM));
        assert!(is_pubkey(&"1".repeat(32)));
        assert!(!is_pubkey(&"1".repeat(33)));
        assert!(!is_pubkey("Prog"));
        // 44 characters is the longest key; one more is never a key.
        assert!(is_pubkey("JEKNVnkbo3jma5nREBBJCDoXFVeKkD56V3xKrvRmWxFG"));
        assert!(!is_pubkey(&format!("1{PROGRAM}")));
    }

    /// Found with the `server_requests` fuzz target fed long inputs: base58
    /// decoding is quadratic, and a program "key" of 256 KiB took over four
    /// minutes (a frame-sized one, 1 MiB, far longer), holding the worker
    /// that serves the connection. Long texts are refused before decoding.
    #[test]
    fn long_program_is_refused_without_decoding() {
        let program = "z".repeat(1 << 18);
        let text = format!(r#"{{"id":1,"method":"accountDiffSubscribe","params":["{program}"]}}"#);
        let started = std::time::Instant::now();
        let (id, code, message) = error(&text);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!((id, code), (json!(1), -32602));
        assert_eq!(
            message,
            format!("Invalid params: `{program}` is not a base58 public key")
        );
    }
}

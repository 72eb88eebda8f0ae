//! The reference server's request parsing: control-plane
//! `BacktestRequest`s with the validation the server applies before acting
//! on them, and data-plane JSON-RPC requests (`parse_rpc_request`, the pure
//! part of the data connection's request handling).

#![no_main]

use std::sync::{Arc, OnceLock};

use backtest_server::{
    ServerConfig, ServerState, build_state,
    rpc_request::{RpcRequest, is_pubkey, parse_rpc_request, rpc_error},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use libfuzzer_sys::fuzz_target;
use simulator_api::{
    BacktestError, BacktestRequest, BacktestResponse, ContinueParams, DiscoveryFilter,
};

fn state() -> &'static Arc<ServerState> {
    static STATE: OnceLock<Arc<ServerState>> = OnceLock::new();
    STATE.get_or_init(|| build_state(ServerConfig::default()).expect("default state"))
}

/// What `executor::validate_continue` checks.
fn validate_continue(params: &ContinueParams) {
    for tx in &params.transactions {
        let _ = BASE64.decode(tx);
    }
    for account in params.modify_account_states.0.values() {
        let _ = account.data.decode();
    }
}

fn control(text: &str) {
    let request = match serde_json::from_str::<BacktestRequest>(text) {
        Ok(request) => request,
        Err(e) => {
            // The server's reply to an unparsable request.
            let reply = BacktestResponse::Error(BacktestError::InvalidRequest {
                error: format!("unparseable request: {e}"),
            });
            serde_json::to_string(&reply).expect("error reply serialises");
            return;
        }
    };
    // A parsed request serialises and parses again.
    let again = serde_json::to_string(&request).expect("request serialises");
    serde_json::from_str::<BacktestRequest>(&again)
        .unwrap_or_else(|e| panic!("re-serialised request does not parse: {e}: {again}"));
    match request {
        BacktestRequest::CreateBacktestSession(create) => {
            let (params, _parallel) = create.into_request_and_parallel();
            let _ = state().validate_range(params.start_slot, params.end_slot);
            let _ = params.disconnect_timeout_secs.unwrap_or(0);
            for filter in &params.discoveries {
                match filter {
                    DiscoveryFilter::ProgramExecuted(address) => {
                        let _ = address.to_string();
                    }
                }
            }
        }
        BacktestRequest::Continue(params) => validate_continue(&params),
        BacktestRequest::ContinueSessionV1(req) => validate_continue(&req.request),
        _ => {}
    }
}

fn data(text: &str) {
    match parse_rpc_request(text) {
        RpcRequest::Subscribe { program, .. } => assert!(is_pubkey(&program)),
        RpcRequest::Unsubscribe { .. } => {}
        RpcRequest::Error { id, code, message } => {
            assert!(
                matches!(code, -32700 | -32600 | -32601 | -32602),
                "code {code}"
            );
            let reply = rpc_error(id, code, &message);
            assert_eq!(reply["error"]["code"], code);
            let _ = reply.to_string();
        }
    }
}

fuzz_target!(|text: &str| {
    control(text);
    data(text);
});

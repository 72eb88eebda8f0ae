//! The client's control-plane frame handling: `parse_control` on any text,
//! then the error classification the supervisor applies.

#![no_main]

use backtest_actors::frames::{ControlFrame, ErrorClass, is_attach_transient, parse_control};
use libfuzzer_sys::fuzz_target;
use simulator_api::BacktestResponse;

/// `GARBAGE_REASON_MAX` in `frames.rs`.
const GARBAGE_REASON_MAX: usize = 160;

fuzz_target!(|text: &str| {
    match parse_control(text) {
        ControlFrame::Sequenced { response, .. } | ControlFrame::Plain(response) => {
            if let BacktestResponse::Error(error) = &response {
                let _ = ErrorClass::of(error);
                let _ = is_attach_transient(error);
            }
            // What was understood can be said again and is understood the
            // same way (a plain frame, since the re-serialised response
            // carries no `seqId`).
            if let Ok(again) = serde_json::to_string(&response) {
                assert!(
                    !matches!(parse_control(&again), ControlFrame::Garbage(_)),
                    "re-serialised response does not parse: {again}"
                );
            }
        }
        ControlFrame::Garbage(reason) => {
            assert!(!reason.is_empty());
            assert!(reason.chars().count() <= GARBAGE_REASON_MAX, "{reason}");
        }
    }
});

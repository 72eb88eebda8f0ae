//! The bare decode limit: the very frames a client receives, decoded in one
//! thread with no sockets, no actors and no channels: zstd (one stream, a
//! reused output buffer) and one serde pass straight into
//! `EncodedConfirmedTransactionWithStatusMeta`. No client can beat it on one
//! thread; it tells how much a client adds on top of decoding.

use std::time::{Duration, Instant};

use serde::Deserialize;
use solana_transaction_status::EncodedConfirmedTransactionWithStatusMeta;
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use crate::wsframe::{self, BINARY, TEXT};

#[derive(Deserialize)]
struct Notification {
    params: Params,
}

#[derive(Deserialize)]
struct Params {
    result: EncodedConfirmedTransactionWithStatusMeta,
}

/// Decode every notification of a prebuilt stream; the count and the time.
pub fn decode_stream(stream: &[u8]) -> Result<(u64, Duration), String> {
    let mut decoder = Decoder::new().map_err(|e| e.to_string())?;
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut decoded = 0u64;
    let started = Instant::now();
    for (opcode, payload) in wsframe::frames(stream) {
        let text: &[u8] = match opcode {
            TEXT => payload,
            BINARY => {
                buffer.clear();
                let mut input = InBuffer::around(payload);
                let mut output = OutBuffer::around_pos(&mut buffer, 0);
                decoder
                    .run(&mut input, &mut output)
                    .map_err(|e| e.to_string())?;
                if input.pos() != payload.len() {
                    return Err("frame larger than the limit's buffer".into());
                }
                &buffer
            }
            _ => continue,
        };
        // Validate UTF-8 in one pass, then parse from `str` (no per-string
        // re-validation), as the fastest client would.
        let Ok(text) = std::str::from_utf8(text) else {
            continue;
        };
        if let Ok(n) = serde_json::from_str::<Notification>(text) {
            std::hint::black_box(&n.params.result);
            decoded += 1;
        }
    }
    Ok((decoded, started.elapsed()))
}

//! Inputs found by fuzzing (`fuzz/`, see docs/reliability.md), kept as
//! regression tests. Each feeds the exact bytes the fuzzer found, through
//! the same steps as its fuzz target.

use backtest_actors::frames::{
    BoundedZstdStream, DataFrame, decode_transaction, parse_data, transaction_signature,
};
use simulator_api::ws_compression::{WS_COMPRESSION_LEVEL, WsStreamCompressor};
use solana_transaction_status::EncodedConfirmedTransactionWithStatusMeta;

/// The `data_frames` target's framing: 2-byte little-endian length
/// prefixes; a short last chunk takes what is left.
fn split(mut data: &[u8]) -> Vec<&[u8]> {
    let mut chunks = Vec::new();
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let len = len.min(rest.len());
        chunks.push(&rest[..len]);
        data = &rest[len..];
    }
    chunks
}

/// `data_frames`, round-trip mode: a message, then 45 empty ones, then one
/// more. The server's compressor turns an empty message into an empty
/// frame; zstd fails a stream after 16 calls in a row without progress, so
/// the decoder used to poison itself on the 17th empty frame.
#[test]
fn empty_compressed_frames_keep_the_stream_usable() {
    let input = include_bytes!("fuzz_regressions/data_frames-empty-frames.bin");
    assert_eq!(input[0] % 3, 2, "round-trip mode");
    let mut compressor = WsStreamCompressor::new(WS_COMPRESSION_LEVEL).unwrap();
    let mut stream = BoundedZstdStream::new(64 * 1024).unwrap();
    let messages = split(&input[1..]);
    assert_eq!(messages.len(), 47);
    for (i, message) in messages.into_iter().enumerate() {
        let frame = compressor.compress(message).unwrap();
        let out = stream
            .decode(&frame)
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert_eq!(out, message, "message {i}");
    }
    // Empty frames on their own, many in a row.
    let mut stream = BoundedZstdStream::new(1024).unwrap();
    for _ in 0..100 {
        assert_eq!(stream.decode(b"").unwrap(), b"");
    }
}

/// `data_frames`, text mode: a `transactionNotification` whose transaction
/// is a long base58 string. Base58 decoding is quadratic: 64 KiB took
/// seconds and a frame-sized blob (64 MiB by default) would take hours of
/// the data connection's thread. Blobs longer than any transaction are not
/// decoded now.
#[test]
fn long_base58_transaction_is_not_decoded() {
    let text = format!(
        r#"{{"jsonrpc":"2.0","method":"transactionNotification","params":{{"subscription":7,"result":{{"slot":1,"transaction":"{}","meta":null}}}}}}"#,
        "z".repeat(1 << 20)
    );
    let DataFrame::Notification { result, .. } = parse_data(&text) else {
        panic!("not a notification");
    };
    let tx = decode_transaction(&result).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(transaction_signature(&tx), None);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // The same for the explicit base58 form.
    let text = format!(
        r#"{{"jsonrpc":"2.0","method":"transactionNotification","params":{{"subscription":7,"result":{{"slot":1,"transaction":["{}","base58"],"meta":null}}}}}}"#,
        "z".repeat(1 << 20)
    );
    let DataFrame::Notification { result, .. } = parse_data(&text) else {
        panic!("not a notification");
    };
    let tx = decode_transaction(&result).unwrap();
    assert_eq!(transaction_signature(&tx), None);
}

/// A `data_frames` text-mode input holding a transaction notification that
/// the wire type refuses for text inside unknown fields (well-formed JSON,
/// not a value) and the fast path accepts, skipping them unread: the one
/// documented divergence. What the fast path read must be exactly the wire
/// type's value of the payload without those fields. `readable` turns the
/// offending text into a value so the payload can be edited; `unknown`
/// lists (object, field) of the fields to drop.
fn assert_unknown_fields_are_skipped(
    input: &[u8],
    wire_error: &str,
    readable: (&str, &str),
    unknown: &[(&str, &str)],
) {
    assert_eq!(input[0], 0, "text mode");
    let text = std::str::from_utf8(&input[1..]).unwrap();
    let DataFrame::Notification { result, .. } = parse_data(text) else {
        panic!("a notification");
    };
    let wire = serde_json::from_str::<EncodedConfirmedTransactionWithStatusMeta>(result.get());
    let error = wire.unwrap_err().to_string();
    assert!(
        error.starts_with(wire_error),
        "the wire type refuses it: {error}"
    );
    let fast = decode_transaction(&result).expect("the fast path reads it");

    let edited = result.get().replace(readable.0, readable.1);
    let mut value: serde_json::Value = serde_json::from_str(&edited).unwrap();
    for (object, field) in unknown {
        let object = value.pointer_mut(object).unwrap().as_object_mut().unwrap();
        assert!(object.remove(*field).is_some(), "{field} is in the input");
    }
    let known: EncodedConfirmedTransactionWithStatusMeta = serde_json::from_value(value).unwrap();
    assert_eq!(fast, known);
    assert_eq!(transaction_signature(&fast).as_deref(), Some("5sigA"));
}

/// A mutated key in the meta (`preToken@alances`) holding `1e9991`.
#[test]
fn an_out_of_range_number_in_an_unknown_field_is_skipped() {
    assert_unknown_fields_are_skipped(
        include_bytes!("fuzz_regressions/data_frames-unknown-field-out-of-range.bin"),
        "number out of range",
        (r#""accountIndex":1e9991"#, r#""accountIndex":1"#),
        &[("/meta", "preToken@alances")],
    );
}

/// A mutated key in the message (`addressTableLookup=s`) whose object has
/// a key with a lone surrogate escape, and two more unknown meta fields.
#[test]
fn a_lone_surrogate_in_an_unknown_field_is_skipped() {
    assert_unknown_fields_are_skipped(
        include_bytes!("fuzz_regressions/data_frames-unknown-field-lone-surrogate.bin"),
        "unexpected end of hex escape",
        (r"writabl\ud800eIndexes", "writableIndexes"),
        &[
            ("/transaction/message", "addressTableLookup=s"),
            ("/meta", "preTos"),
            ("/meta", "loadedAddressesnData"),
        ],
    );
}

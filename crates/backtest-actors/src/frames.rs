//! Parsing of inbound frames, control and data, without touching a socket.
//!
//! The data plane is a firehose, so each frame is parsed once: the envelope is
//! read with the notification payload kept as raw JSON text
//! ([`RawValue`]), and the payload is turned into its target type exactly once,
//! later, by whoever needs it ([`decode_transaction`], [`decode_account_diff`]).
//! Compressed frames go through [`BoundedZstdStream`], which refuses to
//! inflate a frame past a hard limit, so a hostile or broken server cannot
//! make the client allocate without bound.
//!
//! Control frames use the `simulator-api` wire types directly; nothing here
//! re-describes the protocol.

use std::{borrow::Cow, io};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::value::RawValue;
use simulator_api::{BacktestError, BacktestResponse, SequencedResponse};
use solana_transaction_status::{
    EncodedConfirmedTransactionWithStatusMeta, EncodedTransaction, TransactionBinaryEncoding,
};
use zstd::stream::raw::{DParameter, Decoder, InBuffer, Operation, OutBuffer};

use crate::dedup::DiffKey;
pub use crate::json_transaction::{JsonTransactionPayload, decode_fast};

/// Longest reason text kept for a frame that could not be parsed.
const GARBAGE_REASON_MAX: usize = 160;
/// How much of an unparsable frame is quoted in its reason.
const GARBAGE_QUOTE_MAX: usize = 48;

// ---------------------------------------------------------------------------
// Control plane
// ---------------------------------------------------------------------------

/// One inbound control-plane text frame.
#[derive(Debug, Clone)]
pub enum ControlFrame {
    /// A response with a sequence number (sessions created with
    /// `disconnectTimeoutSecs > 0`); track `seq` for attach.
    Sequenced {
        /// The frame's `seqId`.
        seq: u64,
        /// The response itself.
        response: BacktestResponse,
    },
    /// A response without a sequence number.
    Plain(BacktestResponse),
    /// Neither form: log the reason and skip the frame.
    Garbage(String),
}

/// Parse a control-plane frame.
///
/// The sequenced form is only tried when the text mentions `"seqId"`, so the
/// common unsequenced path parses once. If the sequenced parse fails, the
/// plain form is still tried (the marker may sit inside a string field).
pub fn parse_control(text: &str) -> ControlFrame {
    if text.contains("\"seqId\"") {
        match serde_json::from_str::<SequencedResponse>(text) {
            Ok(sequenced) => {
                return ControlFrame::Sequenced {
                    seq: sequenced.seq_id,
                    response: sequenced.response,
                };
            }
            Err(err) => {
                return match serde_json::from_str::<BacktestResponse>(text) {
                    Ok(response) => ControlFrame::Plain(response),
                    Err(_) => ControlFrame::Garbage(garbage_reason(&err, text)),
                };
            }
        }
    }
    match serde_json::from_str::<BacktestResponse>(text) {
        Ok(response) => ControlFrame::Plain(response),
        Err(err) => ControlFrame::Garbage(garbage_reason(&err, text)),
    }
}

/// Short, bounded description of a frame that failed to parse: the parser's
/// message and the start of the frame. Never the whole frame, which may be
/// huge.
fn garbage_reason(err: &serde_json::Error, text: &str) -> String {
    let quote = truncate_chars(text, GARBAGE_QUOTE_MAX);
    let ellipsis = if quote.len() < text.len() { "…" } else { "" };
    let reason = format!("{err}; frame starts {quote:?}{ellipsis}");
    truncate_chars(&reason, GARBAGE_REASON_MAX).to_string()
}

/// The longest prefix of `s` with at most `max` characters.
fn truncate_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// How the client reacts to a `BacktestError` on the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Per-slot simulation failure: log it, do not forward, keep going.
    NonFatalSilent,
    /// The session cannot continue: forward, then stop.
    Terminal,
    /// Forward to the driver; the session continues.
    Forward,
}

impl ErrorClass {
    /// Classify an error.
    pub fn of(error: &BacktestError) -> Self {
        match error {
            BacktestError::SimulationError { .. } => ErrorClass::NonFatalSilent,
            BacktestError::NoMoreBlocks
            | BacktestError::AdvanceSlotFailed { .. }
            | BacktestError::FinalizeSlotFailed { .. }
            | BacktestError::Internal { .. } => ErrorClass::Terminal,
            _ => ErrorClass::Forward,
        }
    }
}

/// During attach/resume, whether an error is worth retrying within the
/// reconnect budget (the session's ownership is changing hands). Any other
/// error during attach/resume is fatal.
pub fn is_attach_transient(error: &BacktestError) -> bool {
    matches!(error, BacktestError::SessionOwnershipBusy { .. })
}

// ---------------------------------------------------------------------------
// Data plane
// ---------------------------------------------------------------------------

/// The two notification streams of the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// `transactionNotification`.
    Transaction,
    /// `accountDiffNotification`.
    AccountDiff,
}

impl NotificationKind {
    /// JSON-RPC method that subscribes to this stream.
    pub fn subscribe_method(self) -> &'static str {
        match self {
            NotificationKind::Transaction => "transactionSubscribe",
            NotificationKind::AccountDiff => "accountDiffSubscribe",
        }
    }

    /// JSON-RPC method of this stream's notifications.
    pub fn notification_method(self) -> &'static str {
        match self {
            NotificationKind::Transaction => "transactionNotification",
            NotificationKind::AccountDiff => "accountDiffNotification",
        }
    }
}

/// One inbound data-plane frame (after decompression).
#[derive(Debug)]
pub enum DataFrame {
    /// Answer to a subscribe request: `Ok(subscription id)` or the server's
    /// error, rendered as text.
    Ack {
        /// The request id it answers.
        id: u64,
        /// Subscription id, or the error.
        result: Result<u64, String>,
    },
    /// A notification; `result` is the payload, still raw JSON.
    Notification {
        /// Which stream.
        method: NotificationKind,
        /// Server subscription id.
        subscription: u64,
        /// Payload, to be decoded once by the consumer of the frame.
        result: Box<RawValue>,
    },
    /// End of a subscription's stream; no notification of it follows.
    Complete {
        /// Server subscription id.
        subscription: u64,
    },
    /// Anything else (unknown methods, unparsable text): log and skip.
    Other,
}

/// Envelope of every JSON-RPC frame; fields absent in a given frame kind
/// default to `None`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
    #[serde(default)]
    params: Option<EnvelopeParams>,
}

#[derive(Deserialize)]
struct EnvelopeParams {
    #[serde(default)]
    subscription: Option<u64>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
}

/// A notification envelope parsed straight into its payload type.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: DeserializeOwned"))]
struct TypedNotification<'a, T> {
    #[serde(borrow)]
    method: Cow<'a, str>,
    params: TypedParams<T>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "T: DeserializeOwned"))]
struct TypedParams<T> {
    subscription: u64,
    result: T,
}

/// Parse a notification of `kind` in one pass, payload included:
/// `(subscription, payload)`. `None` for any other frame (or a payload that
/// does not decode): classify those with [`parse_data`].
pub fn parse_notification<T: DeserializeOwned>(
    text: &str,
    kind: NotificationKind,
) -> Option<(u64, T)> {
    let parsed: TypedNotification<'_, T> = serde_json::from_str(text).ok()?;
    (parsed.method == kind.notification_method())
        .then_some((parsed.params.subscription, parsed.params.result))
}

/// Parse a data-plane frame in a single pass.
pub fn parse_data(text: &str) -> DataFrame {
    let Ok(envelope) = serde_json::from_str::<Envelope<'_>>(text) else {
        return DataFrame::Other;
    };
    if let Some(method) = envelope.method.as_deref() {
        let Some(params) = envelope.params else {
            return DataFrame::Other;
        };
        let Some(subscription) = params.subscription else {
            return DataFrame::Other;
        };
        let kind = match method {
            "transactionNotification" => NotificationKind::Transaction,
            "accountDiffNotification" => NotificationKind::AccountDiff,
            "subscriptionComplete" => return DataFrame::Complete { subscription },
            _ => return DataFrame::Other,
        };
        return match params.result {
            Some(result) => DataFrame::Notification {
                method: kind,
                subscription,
                result,
            },
            None => DataFrame::Other,
        };
    }
    let Some(id) = envelope.id else {
        return DataFrame::Other;
    };
    // `"error": null` is not an error.
    let error = envelope.error.filter(|e| e.get() != "null");
    let result = match (error, envelope.result) {
        (Some(error), _) => Err(error.get().to_string()),
        (None, Some(result)) => serde_json::from_str::<u64>(result.get()).map_err(|_| {
            format!(
                "subscribe ack result is not a subscription id: {}",
                truncate_chars(result.get(), GARBAGE_QUOTE_MAX)
            )
        }),
        (None, None) => Err("subscribe ack has neither result nor error".to_string()),
    };
    DataFrame::Ack { id, result }
}

/// Slot context of an account diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDiffContext {
    /// Slot the diff belongs to.
    pub slot: u64,
}

/// Payload of an `accountDiffNotification`. Accepts both the camelCase wire
/// names and snake_case aliases; serialises camelCase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountDiffNotification {
    /// Slot context.
    pub context: AccountDiffContext,
    /// Account that changed.
    #[serde(default)]
    pub account: Option<String>,
    /// Transaction that changed it, when known.
    #[serde(default)]
    pub signature: Option<String>,
    /// Position of that transaction in its slot, when known.
    #[serde(default, rename = "txIndex", alias = "tx_index")]
    pub tx_index: Option<u32>,
    /// Block time (Unix seconds) of the slot, when known.
    #[serde(default, rename = "blockTime", alias = "block_time")]
    pub block_time: Option<i64>,
    /// Account before the change (absent when created).
    #[serde(default)]
    pub pre: Option<serde_json::Value>,
    /// Account after the change (absent when deleted).
    #[serde(default)]
    pub post: Option<serde_json::Value>,
}

impl AccountDiffNotification {
    /// Slot of the diff.
    pub fn slot(&self) -> u64 {
        self.context.slot
    }

    /// Key under which this diff is deduplicated.
    pub fn dedup_key(&self) -> DiffKey {
        DiffKey {
            slot: self.context.slot,
            account: self.account.clone(),
            signature: self.signature.clone(),
            tx_index: self.tx_index,
        }
    }
}

/// Decode a `transactionNotification` payload: the JSON-encoding fast
/// path first, else the wire type's own (other encodings).
pub fn decode_transaction(
    raw: &RawValue,
) -> Result<EncodedConfirmedTransactionWithStatusMeta, serde_json::Error> {
    match decode_fast(raw.get()) {
        Some(tx) => Ok(tx),
        None => serde_json::from_str(raw.get()),
    }
}

/// Decode an `accountDiffNotification` payload.
pub fn decode_account_diff(raw: &RawValue) -> Result<AccountDiffNotification, serde_json::Error> {
    serde_json::from_str(raw.get())
}

/// Longest base58 transaction blob [`transaction_signature`] decodes.
/// Base58 decoding takes time quadratic in the length (a 64 KiB blob costs
/// seconds, a frame-sized one hours), and a transaction fits in a 1232-byte
/// packet, 1683 base58 characters; the rest is room to spare.
const MAX_BASE58_TRANSACTION_CHARS: usize = 4096;

/// The first signature of a transaction: its identity for deduplication.
/// `None` when the encoding carries no readable signature (including a
/// base58 blob too long to be a transaction).
pub fn transaction_signature(tx: &EncodedConfirmedTransactionWithStatusMeta) -> Option<String> {
    match &tx.transaction.transaction {
        EncodedTransaction::Json(ui) => ui.signatures.first().cloned(),
        EncodedTransaction::Accounts(list) => list.signatures.first().cloned(),
        EncodedTransaction::LegacyBinary(blob)
        | EncodedTransaction::Binary(blob, TransactionBinaryEncoding::Base58)
            if blob.len() > MAX_BASE58_TRANSACTION_CHARS =>
        {
            None
        }
        binary @ (EncodedTransaction::LegacyBinary(_) | EncodedTransaction::Binary(..)) => binary
            .decode()
            .and_then(|decoded| decoded.signatures.first().map(ToString::to_string)),
    }
}

// ---------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------

/// Default cap on one decompressed data frame.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// Default cap on the zstd window the decoder accepts (2^24 = 16 MiB); the
/// server compresses at a low level whose window is far smaller.
pub const DEFAULT_WINDOW_LOG_MAX: u32 = 24;

/// Growth step of the output buffer.
const OUTPUT_CHUNK: usize = 64 * 1024;

/// Why a compressed frame could not be decoded. After any error the stream is
/// out of sync: drop the connection (the resubscribe resumes from the replay
/// cursor on a fresh stream).
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// The frame inflates past `max_frame_bytes`.
    #[error("decompressed frame exceeds {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// zstd rejected the data.
    #[error("zstd: {0}")]
    Zstd(#[source] io::Error),
    /// An earlier frame failed; the stream cannot be resumed.
    #[error("zstd stream is unusable after an earlier error")]
    Poisoned,
}

/// Per-connection streaming zstd decoder with a hard cap per frame.
///
/// The server runs one zstd stream per connection and flushes after each
/// message, so every Binary frame decodes to exactly one message while the
/// window carries over between frames: frames must be fed in order, and a new
/// connection needs a new decoder. Output goes into a buffer reused across
/// frames; decoding stops as soon as a frame would exceed `max_frame_bytes`,
/// so a compression bomb costs at most that much memory.
pub struct BoundedZstdStream {
    decoder: Decoder<'static>,
    buffer: Vec<u8>,
    max_frame_bytes: usize,
    poisoned: bool,
}

impl std::fmt::Debug for BoundedZstdStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedZstdStream")
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("buffer_capacity", &self.buffer.capacity())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl BoundedZstdStream {
    /// A decoder for a new connection, with [`DEFAULT_WINDOW_LOG_MAX`].
    pub fn new(max_frame_bytes: usize) -> Result<Self, DecompressError> {
        Self::with_window_log_max(max_frame_bytes, DEFAULT_WINDOW_LOG_MAX)
    }

    /// A decoder that also refuses streams declaring a window above
    /// `2^window_log_max` bytes (the window is allocated up front).
    pub fn with_window_log_max(
        max_frame_bytes: usize,
        window_log_max: u32,
    ) -> Result<Self, DecompressError> {
        let mut decoder = Decoder::new().map_err(DecompressError::Zstd)?;
        decoder
            .set_parameter(DParameter::WindowLogMax(window_log_max))
            .map_err(DecompressError::Zstd)?;
        Ok(Self {
            decoder,
            buffer: Vec::new(),
            max_frame_bytes,
            poisoned: false,
        })
    }

    /// The configured cap.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Decode one frame. The returned slice borrows the internal buffer and is
    /// valid until the next call.
    pub fn decode(&mut self, frame: &[u8]) -> Result<&[u8], DecompressError> {
        if self.poisoned {
            return Err(DecompressError::Poisoned);
        }
        match self.decode_inner(frame) {
            Ok(()) => Ok(&self.buffer),
            Err(err) => {
                self.poisoned = true;
                self.buffer.clear();
                Err(err)
            }
        }
    }

    fn decode_inner(&mut self, frame: &[u8]) -> Result<(), DecompressError> {
        self.buffer.clear();
        // An empty frame decodes to nothing (a flush with nothing new to
        // flush compresses to no bytes, and nothing is left buffered inside
        // the decoder after a frame). Not handed to zstd: it counts calls
        // without progress and fails the stream after 16 in a row.
        if frame.is_empty() {
            return Ok(());
        }
        // One byte past the cap is room enough to notice the cap was crossed.
        let hard_cap = self.max_frame_bytes.saturating_add(1);
        let mut input = InBuffer::around(frame);
        loop {
            if self.buffer.len() == self.buffer.capacity() {
                let room = hard_cap - self.buffer.len();
                self.buffer
                    .reserve_exact(room.min(OUTPUT_CHUNK.max(self.buffer.len())));
            }
            let capacity = self.buffer.capacity().min(hard_cap);
            let start = self.buffer.len();
            let read_before = input.pos();
            let filled = {
                let mut output = OutBuffer::around_pos(&mut self.buffer, start);
                self.decoder
                    .run(&mut input, &mut output)
                    .map_err(DecompressError::Zstd)?;
                output.pos()
            };
            if filled > self.max_frame_bytes {
                return Err(DecompressError::TooLarge {
                    limit: self.max_frame_bytes,
                });
            }
            // Done once all input is consumed and the decoder stopped short of
            // filling the space it had (nothing more is buffered inside).
            let consumed = input.pos() == frame.len();
            if consumed && filled < capacity {
                return Ok(());
            }
            if filled == start && input.pos() == read_before && filled < capacity {
                // Neither input read nor output written although there was
                // room: zstd reports corrupt data as an error, so this should
                // not happen, but never spin on it.
                return Err(DecompressError::Zstd(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "zstd decoder made no progress",
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simulator_api::ws_compression::{WS_COMPRESSION_LEVEL, WsStreamCompressor};

    // ----- control -----

    #[test]
    fn control_plain_response() {
        let frame = parse_control(r#"{"method":"readyForContinue"}"#);
        assert!(matches!(
            frame,
            ControlFrame::Plain(BacktestResponse::ReadyForContinue)
        ));
        let frame = parse_control(
            r#"{"method":"sessionCreated","params":{"session_id":"s1","rpc_endpoint":"/rpc/s1"}}"#,
        );
        match frame {
            ControlFrame::Plain(BacktestResponse::SessionCreated {
                session_id,
                rpc_endpoint,
                task_id,
            }) => {
                assert_eq!(session_id, "s1");
                assert_eq!(rpc_endpoint, "/rpc/s1");
                assert_eq!(task_id, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_sequenced_response() {
        let frame = parse_control(r#"{"seqId":42,"method":"slotNotification","params":1234}"#);
        match frame {
            ControlFrame::Sequenced {
                seq,
                response: BacktestResponse::SlotNotification(slot),
            } => {
                assert_eq!(seq, 42);
                assert_eq!(slot, 1234);
            }
            other => panic!("{other:?}"),
        }
        let frame = parse_control(r#"{"method":"readyForContinue","seqId":7}"#);
        assert!(matches!(
            frame,
            ControlFrame::Sequenced {
                seq: 7,
                response: BacktestResponse::ReadyForContinue
            }
        ));
    }

    #[test]
    fn control_seq_id_inside_a_string_still_parses_plain() {
        let frame = parse_control(
            r#"{"method":"error","params":{"internal":{"error":"bad \"seqId\" value"}}}"#,
        );
        match frame {
            ControlFrame::Plain(BacktestResponse::Error(BacktestError::Internal { error })) => {
                assert_eq!(error, r#"bad "seqId" value"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_unit_error() {
        let frame = parse_control(r#"{"method":"error","params":"noMoreBlocks"}"#);
        match frame {
            ControlFrame::Plain(BacktestResponse::Error(err)) => {
                assert!(matches!(err, BacktestError::NoMoreBlocks));
                assert_eq!(ErrorClass::of(&err), ErrorClass::Terminal);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_garbage_is_reported_short() {
        for text in ["not json", r#"{"method":"noSuchThing"}"#, "{", ""] {
            match parse_control(text) {
                ControlFrame::Garbage(reason) => {
                    assert!(!reason.is_empty());
                    assert!(reason.chars().count() <= GARBAGE_REASON_MAX, "{reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let huge = format!(r#"{{"seqId":1,"method":"{}"}}"#, "x".repeat(100_000));
        match parse_control(&huge) {
            ControlFrame::Garbage(reason) => {
                assert!(reason.chars().count() <= GARBAGE_REASON_MAX, "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_classes() {
        let simulation = BacktestError::SimulationError { error: "x".into() };
        assert_eq!(ErrorClass::of(&simulation), ErrorClass::NonFatalSilent);
        for terminal in [
            BacktestError::NoMoreBlocks,
            BacktestError::AdvanceSlotFailed {
                slot: 1,
                error: "x".into(),
            },
            BacktestError::FinalizeSlotFailed {
                slot: 1,
                error: "x".into(),
            },
            BacktestError::Internal { error: "x".into() },
        ] {
            assert_eq!(
                ErrorClass::of(&terminal),
                ErrorClass::Terminal,
                "{terminal:?}"
            );
        }
        for forward in [
            BacktestError::InvalidRequest { error: "x".into() },
            BacktestError::SessionOwnershipBusy { reason: "x".into() },
            BacktestError::SessionOwnerMismatch,
        ] {
            assert_eq!(ErrorClass::of(&forward), ErrorClass::Forward, "{forward:?}");
        }
    }

    #[test]
    fn attach_transient_is_only_ownership_busy() {
        assert!(is_attach_transient(&BacktestError::SessionOwnershipBusy {
            reason: "handover".into()
        }));
        assert!(!is_attach_transient(&BacktestError::SessionNotFound {
            session_id: "s".into()
        }));
        assert!(!is_attach_transient(&BacktestError::SessionOwnerMismatch));
    }

    // ----- data -----

    #[test]
    fn data_ack() {
        match parse_data(r#"{"jsonrpc":"2.0","id":1,"result":7}"#) {
            DataFrame::Ack { id, result } => {
                assert_eq!(id, 1);
                assert_eq!(result, Ok(7));
            }
            other => panic!("{other:?}"),
        }
        // `error: null` beside a result is a success.
        match parse_data(r#"{"jsonrpc":"2.0","id":2,"result":8,"error":null}"#) {
            DataFrame::Ack { id: 2, result } => assert_eq!(result, Ok(8)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_error_ack() {
        match parse_data(
            r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"Invalid params"}}"#,
        ) {
            DataFrame::Ack { id, result } => {
                assert_eq!(id, 2);
                let err = result.unwrap_err();
                assert!(err.contains("Invalid params"), "{err}");
            }
            other => panic!("{other:?}"),
        }
        match parse_data(r#"{"jsonrpc":"2.0","id":3,"result":true}"#) {
            DataFrame::Ack { id: 3, result } => assert!(result.is_err()),
            other => panic!("{other:?}"),
        }
    }

    const TX_NOTIFICATION: &str = r#"{"jsonrpc":"2.0","method":"transactionNotification","params":{"subscription":7,"result":{"slot":4242,"transaction":{"signatures":["5sigA"],"message":{"header":{"numRequiredSignatures":1,"numReadonlySignedAccounts":0,"numReadonlyUnsignedAccounts":1},"accountKeys":["11111111111111111111111111111111","Prog1111111111111111111111111111111111111111"],"recentBlockhash":"11111111111111111111111111111111","instructions":[{"programIdIndex":1,"accounts":[0],"data":"3Bxs4h24hBtQy9rw","stackHeight":null}]}},"meta":null,"blockTime":1700000000}}}"#;

    #[test]
    fn data_transaction_notification() {
        match parse_data(TX_NOTIFICATION) {
            DataFrame::Notification {
                method,
                subscription,
                result,
            } => {
                assert_eq!(method, NotificationKind::Transaction);
                assert_eq!(subscription, 7);
                let tx = decode_transaction(&result).unwrap();
                assert_eq!(tx.slot, 4242);
                assert_eq!(tx.block_time, Some(1_700_000_000));
                assert_eq!(transaction_signature(&tx).as_deref(), Some("5sigA"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_account_diff_notification() {
        let text = r#"{"jsonrpc":"2.0","method":"accountDiffNotification","params":{"subscription":9,"result":{"context":{"slot":77},"account":"Acc1","signature":"sigB","txIndex":3,"blockTime":1700000001,"pre":{"lamports":1},"post":{"lamports":2}}}}"#;
        match parse_data(text) {
            DataFrame::Notification {
                method,
                subscription,
                result,
            } => {
                assert_eq!(method, NotificationKind::AccountDiff);
                assert_eq!(subscription, 9);
                let diff = decode_account_diff(&result).unwrap();
                assert_eq!(diff.slot(), 77);
                assert_eq!(diff.tx_index, Some(3));
                assert_eq!(diff.block_time, Some(1_700_000_001));
                assert_eq!(diff.pre, Some(serde_json::json!({"lamports": 1})));
                assert_eq!(
                    diff.dedup_key(),
                    DiffKey {
                        slot: 77,
                        account: Some("Acc1".into()),
                        signature: Some("sigB".into()),
                        tx_index: Some(3),
                    }
                );
                // Serialises with the wire names and reads back the same.
                let json = serde_json::to_value(&diff).unwrap();
                assert_eq!(json["txIndex"], 3);
                assert_eq!(json["blockTime"], 1_700_000_001);
                let back: AccountDiffNotification = serde_json::from_value(json).unwrap();
                assert_eq!(back, diff);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn account_diff_accepts_aliases_and_missing_fields() {
        let raw = RawValue::from_string(
            r#"{"context":{"slot":5},"tx_index":1,"block_time":9}"#.to_string(),
        )
        .unwrap();
        let diff = decode_account_diff(&raw).unwrap();
        assert_eq!(diff.tx_index, Some(1));
        assert_eq!(diff.block_time, Some(9));
        assert_eq!(diff.account, None);
        assert_eq!(diff.signature, None);
        assert_eq!(diff.pre, None);
        assert_eq!(diff.post, None);
    }

    #[test]
    fn data_subscription_complete() {
        match parse_data(
            r#"{"jsonrpc":"2.0","method":"subscriptionComplete","params":{"subscription":7}}"#,
        ) {
            DataFrame::Complete { subscription } => assert_eq!(subscription, 7),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_other() {
        for text in [
            "garbage",
            "",
            r#"{"jsonrpc":"2.0","method":"slotNotification","params":{"subscription":1,"result":5}}"#,
            r#"{"jsonrpc":"2.0","method":"transactionNotification","params":{"subscription":1}}"#,
            r#"{"jsonrpc":"2.0","method":"transactionNotification"}"#,
            r#"{"jsonrpc":"2.0"}"#,
        ] {
            assert!(matches!(parse_data(text), DataFrame::Other), "{text}");
        }
    }

    #[test]
    fn data_method_with_escapes_is_understood() {
        let text = r#"{"method":"subscription\u0043omplete","params":{"subscription":3}}"#;
        assert!(matches!(
            parse_data(text),
            DataFrame::Complete { subscription: 3 }
        ));
    }

    #[test]
    fn kind_method_names() {
        assert_eq!(
            NotificationKind::Transaction.subscribe_method(),
            "transactionSubscribe"
        );
        assert_eq!(
            NotificationKind::AccountDiff.notification_method(),
            "accountDiffNotification"
        );
    }

    // ----- compression -----

    fn sample(i: usize) -> Vec<u8> {
        format!(
            r#"{{"jsonrpc":"2.0","method":"transactionNotification","params":{{"subscription":1,"result":{{"slot":{},"n":{}}}}}}}"#,
            1000 + i / 3,
            i
        )
        .into_bytes()
    }

    #[test]
    fn zstd_round_trips_a_stream() {
        let mut compressor = WsStreamCompressor::new(WS_COMPRESSION_LEVEL).unwrap();
        let mut stream = BoundedZstdStream::new(1024 * 1024).unwrap();
        for i in 0..500 {
            let message = sample(i);
            let frame = compressor.compress(&message).unwrap();
            assert_eq!(stream.decode(&frame).unwrap(), &message[..], "message {i}");
        }
        // Empty and large messages too.
        let frame = compressor.compress(b"").unwrap();
        assert_eq!(stream.decode(&frame).unwrap(), b"");
        let large: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8).collect();
        let frame = compressor.compress(&large).unwrap();
        assert_eq!(stream.decode(&frame).unwrap(), &large[..]);
        // Exactly at the limit is fine.
        let exact = vec![b'z'; 1024 * 1024];
        let frame = compressor.compress(&exact).unwrap();
        assert_eq!(stream.decode(&frame).unwrap().len(), 1024 * 1024);
        // And the stream keeps going afterwards.
        let frame = compressor.compress(&sample(1)).unwrap();
        assert_eq!(stream.decode(&frame).unwrap(), &sample(1)[..]);
    }

    #[test]
    fn zstd_frame_over_the_limit_errors() {
        let mut compressor = WsStreamCompressor::new(WS_COMPRESSION_LEVEL).unwrap();
        let mut stream = BoundedZstdStream::new(1000).unwrap();
        let frame = compressor.compress(&vec![b'a'; 1001]).unwrap();
        assert!(matches!(
            stream.decode(&frame),
            Err(DecompressError::TooLarge { limit: 1000 })
        ));
        // The stream is out of sync now and says so.
        let next = compressor.compress(b"x").unwrap();
        assert!(matches!(
            stream.decode(&next),
            Err(DecompressError::Poisoned)
        ));
    }

    #[test]
    fn zstd_bomb_errors_without_inflating() {
        use std::io::Write;
        // 100 MiB of zeros, flushed as one frame the way the server does it.
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        let chunk = vec![0u8; 1024 * 1024];
        for _ in 0..100 {
            encoder.write_all(&chunk).unwrap();
        }
        encoder.flush().unwrap();
        let bomb = std::mem::take(encoder.get_mut());
        assert!(bomb.len() < 100 * 1024, "bomb is {} bytes", bomb.len());

        let limit = 1024 * 1024;
        let mut stream = BoundedZstdStream::new(limit).unwrap();
        let err = stream.decode(&bomb).unwrap_err();
        assert!(
            matches!(err, DecompressError::TooLarge { limit: 1_048_576 }),
            "{err}"
        );
        assert!(err.to_string().contains("1048576"), "{err}");
        assert!(
            stream.buffer.capacity() <= limit + 1,
            "buffer grew to {}",
            stream.buffer.capacity()
        );
    }

    #[test]
    fn zstd_garbage_errors() {
        let mut stream = BoundedZstdStream::new(1024).unwrap();
        let err = stream.decode(b"this is not zstd at all").unwrap_err();
        assert!(matches!(err, DecompressError::Zstd(_)), "{err}");
    }

    #[test]
    fn zstd_decoded_text_parses_as_data() {
        let mut compressor = WsStreamCompressor::new(WS_COMPRESSION_LEVEL).unwrap();
        let mut stream = BoundedZstdStream::new(DEFAULT_MAX_FRAME_BYTES).unwrap();
        let frame = compressor.compress(TX_NOTIFICATION.as_bytes()).unwrap();
        let text = std::str::from_utf8(stream.decode(&frame).unwrap()).unwrap();
        assert!(matches!(
            parse_data(text),
            DataFrame::Notification {
                method: NotificationKind::Transaction,
                subscription: 7,
                ..
            }
        ));
    }

    #[test]
    fn typed_notifications_parse_in_one_pass_and_nothing_else_does() {
        let diff = r#"{"jsonrpc":"2.0","method":"accountDiffNotification","params":{"subscription":9,"result":{"context":{"slot":12},"account":"A","signature":"S","txIndex":3,"blockTime":5,"post":{"lamports":1}}}}"#;
        let (sub, parsed) =
            parse_notification::<AccountDiffNotification>(diff, NotificationKind::AccountDiff)
                .expect("a diff notification");
        assert_eq!(sub, 9);
        assert_eq!(parsed.context.slot, 12);
        assert_eq!(parsed.tx_index, Some(3));
        assert!(parsed.pre.is_none());
        // The other kind, acks, completions and garbage are not notifications.
        assert!(
            parse_notification::<AccountDiffNotification>(diff, NotificationKind::Transaction)
                .is_none()
        );
        for other in [
            r#"{"jsonrpc":"2.0","id":1,"result":9}"#,
            r#"{"jsonrpc":"2.0","method":"subscriptionComplete","params":{"subscription":9}}"#,
            "garbage",
        ] {
            assert!(
                parse_notification::<AccountDiffNotification>(other, NotificationKind::AccountDiff)
                    .is_none(),
                "{other}"
            );
        }
    }

    #[test]
    fn transactions_decode_by_either_path() {
        let raw = RawValue::from_string(
            TX_NOTIFICATION
                [TX_NOTIFICATION.find(r#""result":"#).unwrap() + 9..TX_NOTIFICATION.len() - 2]
                .to_string(),
        )
        .unwrap();
        let tx = decode_transaction(&raw).unwrap();
        assert_eq!(tx, serde_json::from_str(raw.get()).unwrap());
        assert_eq!(transaction_signature(&tx).as_deref(), Some("5sigA"));
        // A binary encoding is not the fast shape: the wire type's path
        // still decodes it.
        let binary = r#"{"slot":5,"transaction":["AQID","base64"],"meta":null,"blockTime":null}"#;
        let raw = RawValue::from_string(binary.to_string()).unwrap();
        let decoded = decode_transaction(&raw).unwrap();
        assert!(matches!(
            decoded.transaction.transaction,
            EncodedTransaction::Binary(..)
        ));
    }
}

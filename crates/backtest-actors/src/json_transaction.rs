//! The fast path for transaction payloads in JSON encoding (what the service
//! streams), the client's hottest decode.
//!
//! The wire type, `EncodedConfirmedTransactionWithStatusMeta`, is shaped for
//! every encoding at once: `#[serde(flatten)]` and the untagged
//! `EncodedTransaction`, `UiMessage` and `UiInstruction` make serde buffer
//! each payload, message and instruction into an intermediate tree and try
//! one variant after another on it. That buffering was most of the decode's
//! cost. [`JsonTransactionPayload`] reads the one shape a JSON-encoded
//! transaction has (raw message, compiled instructions) straight from the
//! text and builds the same wire value from it.
//!
//! Exactness: a payload this shape accepts decodes to the value the wire
//! type gives (tested on the ledger's transactions, and checked on every
//! accepted input by the `data_frames` fuzz target), with one known
//! exception found by that target: unknown fields are skipped unread, so
//! text in one that is well-formed JSON but not a value (a number out of
//! `f64` range like `1e400`, a lone surrogate escape like `"\ud800"`) is
//! accepted here while the wire type, which buffers unknown fields, refuses
//! the payload; the value is then the wire type's value of the payload
//! without the unknown field.
//! Whatever it does not
//! accept (binary or parsed encodings, or a message the wire type would
//! read as parsed) fails here and takes the wire type's own path.

use serde::Deserialize;
use serde_json::value::RawValue;
use solana_transaction_status::{
    EncodedConfirmedTransactionWithStatusMeta, EncodedTransaction,
    EncodedTransactionWithStatusMeta, Rewards, UiCompiledInstruction, UiInnerInstructions,
    UiInstruction, UiLoadedAddresses, UiMessage, UiRawMessage, UiTransaction,
    UiTransactionReturnData, UiTransactionStatusMeta, UiTransactionTokenBalance,
    option_serializer::OptionSerializer,
};

/// A `transactionNotification` payload in JSON encoding, read without
/// intermediate buffering. Convert with `TryInto`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonTransactionPayload {
    slot: u64,
    transaction: JsonTransaction,
    meta: Option<JsonStatusMeta>,
    /// `"legacy"` or a number; converted into the wire type's version type.
    #[serde(default)]
    version: Option<serde_json::Value>,
    #[serde(default)]
    block_time: Option<i64>,
}

/// `UiTransaction` with its message read as raw (the untagged `UiMessage`
/// tries parsed first; see [`JsonTransactionPayload::try_from`]).
#[derive(Deserialize)]
struct JsonTransaction {
    signatures: Vec<String>,
    message: UiRawMessage,
}

/// `UiTransactionStatusMeta` field for field, with inner instructions read
/// as compiled. Same defaults for missing fields as the wire type.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonStatusMeta {
    /// The error type is not exported by name; these two are kept as text
    /// and read into the wire type's fields on conversion.
    err: Box<RawValue>,
    status: Box<RawValue>,
    fee: u64,
    pre_balances: Vec<u64>,
    post_balances: Vec<u64>,
    #[serde(default = "OptionSerializer::none")]
    inner_instructions: OptionSerializer<Vec<JsonInnerInstructions>>,
    #[serde(default = "OptionSerializer::none")]
    log_messages: OptionSerializer<Vec<String>>,
    #[serde(default = "OptionSerializer::none")]
    pre_token_balances: OptionSerializer<Vec<UiTransactionTokenBalance>>,
    #[serde(default = "OptionSerializer::none")]
    post_token_balances: OptionSerializer<Vec<UiTransactionTokenBalance>>,
    #[serde(default = "OptionSerializer::none")]
    rewards: OptionSerializer<Rewards>,
    #[serde(default = "OptionSerializer::skip")]
    loaded_addresses: OptionSerializer<UiLoadedAddresses>,
    #[serde(default = "OptionSerializer::skip")]
    return_data: OptionSerializer<UiTransactionReturnData>,
    #[serde(default = "OptionSerializer::skip")]
    compute_units_consumed: OptionSerializer<u64>,
    #[serde(default = "OptionSerializer::skip")]
    cost_units: OptionSerializer<u64>,
}

/// `UiInnerInstructions` whose instructions are compiled, the variant the
/// untagged `UiInstruction` tries first.
#[derive(Deserialize)]
struct JsonInnerInstructions {
    index: u8,
    instructions: Vec<UiCompiledInstruction>,
}

/// Why a payload of the fast shape is still left to the wire type's path.
#[derive(Debug, thiserror::Error)]
pub enum NotFastShape {
    /// No account keys: the untagged `UiMessage` would read the message as
    /// parsed (an empty list fits both variants and parsed comes first).
    #[error("a message without account keys")]
    NoAccountKeys,
    /// Not the shape, or the version, `err` or `status` do not read as the
    /// wire type's.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl TryFrom<JsonTransactionPayload> for EncodedConfirmedTransactionWithStatusMeta {
    type Error = NotFastShape;

    fn try_from(p: JsonTransactionPayload) -> Result<Self, Self::Error> {
        if p.transaction.message.account_keys.is_empty() {
            return Err(NotFastShape::NoAccountKeys);
        }
        Ok(Self {
            slot: p.slot,
            transaction: EncodedTransactionWithStatusMeta {
                transaction: EncodedTransaction::Json(UiTransaction {
                    signatures: p.transaction.signatures,
                    message: UiMessage::Raw(p.transaction.message),
                }),
                meta: p.meta.map(TryInto::try_into).transpose()?,
                version: p.version.map(serde_json::from_value).transpose()?,
            },
            block_time: p.block_time,
        })
    }
}

impl TryFrom<JsonStatusMeta> for UiTransactionStatusMeta {
    type Error = serde_json::Error;

    fn try_from(m: JsonStatusMeta) -> Result<Self, Self::Error> {
        Ok(Self {
            err: serde_json::from_str(m.err.get())?,
            status: serde_json::from_str(m.status.get())?,
            fee: m.fee,
            pre_balances: m.pre_balances,
            post_balances: m.post_balances,
            inner_instructions: map_option_serializer(m.inner_instructions, |list| {
                list.into_iter().map(Into::into).collect()
            }),
            log_messages: m.log_messages,
            pre_token_balances: m.pre_token_balances,
            post_token_balances: m.post_token_balances,
            rewards: m.rewards,
            loaded_addresses: m.loaded_addresses,
            return_data: m.return_data,
            compute_units_consumed: m.compute_units_consumed,
            cost_units: m.cost_units,
        })
    }
}

impl From<JsonInnerInstructions> for UiInnerInstructions {
    fn from(inner: JsonInnerInstructions) -> Self {
        Self {
            index: inner.index,
            instructions: inner
                .instructions
                .into_iter()
                .map(UiInstruction::Compiled)
                .collect(),
        }
    }
}

fn map_option_serializer<T, U>(
    value: OptionSerializer<T>,
    f: impl FnOnce(T) -> U,
) -> OptionSerializer<U> {
    match value {
        OptionSerializer::Some(v) => OptionSerializer::Some(f(v)),
        OptionSerializer::None => OptionSerializer::None,
        OptionSerializer::Skip => OptionSerializer::Skip,
    }
}

/// Decode a payload by the fast shape, `None` if it is not of that shape.
pub fn decode_fast(text: &str) -> Option<EncodedConfirmedTransactionWithStatusMeta> {
    try_decode_fast(text).ok()
}

fn try_decode_fast(text: &str) -> Result<EncodedConfirmedTransactionWithStatusMeta, NotFastShape> {
    serde_json::from_str::<JsonTransactionPayload>(text)?.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(text: &str) -> Result<EncodedConfirmedTransactionWithStatusMeta, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Every transaction of the reference ledger: the fast path accepts it
    /// and gives exactly the wire type's value.
    #[test]
    fn ledger_transactions_decode_exactly_like_the_wire_type() {
        let ledger =
            backtest_server::Ledger::new(backtest_server::LedgerConfig::default()).unwrap();
        let mut checked = 0;
        for slot in 1000..1050 {
            for tx in &ledger.slot(slot).unwrap().transactions {
                let text = tx.json.to_string();
                assert_eq!(
                    decode_fast(&text).expect("fast shape"),
                    wire(&text).unwrap()
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 50 * 8);
    }

    const MESSAGE: &str = r#"{"header":{"numRequiredSignatures":1,"numReadonlySignedAccounts":0,"numReadonlyUnsignedAccounts":1},"accountKeys":["11111111111111111111111111111111","Prog1111111111111111111111111111111111111111"],"recentBlockhash":"11111111111111111111111111111111","instructions":[{"programIdIndex":1,"accounts":[0],"data":"3Bxs4h24hBtQy9rw","stackHeight":null}]}"#;

    fn payload(message: &str, meta: &str) -> String {
        format!(
            r#"{{"slot":7,"transaction":{{"signatures":["5sig"],"message":{message}}},"meta":{meta},"version":0,"blockTime":null}}"#
        )
    }

    /// The wire type's defaults for missing meta fields (`None` for some,
    /// `Skip` for others), `null` values, and every optional field present.
    #[test]
    fn meta_fields_missing_null_and_present_match_the_wire_type() {
        let metas = [
            r#"null"#,
            r#"{"err":null,"status":{"Ok":null},"fee":5000,"preBalances":[1],"postBalances":[2]}"#,
            r#"{"err":null,"status":{"Ok":null},"fee":5000,"preBalances":[],"postBalances":[],
                "innerInstructions":null,"logMessages":null,"preTokenBalances":null,
                "postTokenBalances":null,"rewards":null,"loadedAddresses":null,
                "returnData":null,"computeUnitsConsumed":null,"costUnits":null}"#,
            r#"{"err":{"InstructionError":[0,{"Custom":1}]},"status":{"Err":{"InstructionError":[0,{"Custom":1}]}},
                "fee":5000,"preBalances":[1,2],"postBalances":[0,3],
                "innerInstructions":[{"index":0,"instructions":[{"programIdIndex":1,"accounts":[0,1],"data":"3Bxs","stackHeight":2}]}],
                "logMessages":["Program log: hi"],
                "preTokenBalances":[{"accountIndex":1,"mint":"Mint","uiTokenAmount":{"uiAmount":1.5,"decimals":2,"amount":"150","uiAmountString":"1.5"},"owner":"Own","programId":"Tok"}],
                "postTokenBalances":[{"accountIndex":1,"mint":"Mint","uiTokenAmount":{"uiAmount":null,"decimals":0,"amount":"0","uiAmountString":"0"}}],
                "rewards":[{"pubkey":"P","lamports":-3,"postBalance":4,"rewardType":"Fee","commission":null}],
                "loadedAddresses":{"writable":["W"],"readonly":[]},
                "returnData":{"programId":"Prog","data":["AQ==","base64"]},
                "computeUnitsConsumed":150,"costUnits":300}"#,
        ];
        for meta in metas {
            let text = payload(MESSAGE, meta);
            assert_eq!(
                try_decode_fast(&text).unwrap_or_else(|e| panic!("{e}: {meta}")),
                wire(&text).unwrap(),
                "{meta}"
            );
        }
    }

    /// Shapes the fast path must leave to the wire type, because the wire
    /// type reads them as another variant (or they are not JSON encoding).
    #[test]
    fn other_shapes_are_left_to_the_wire_type() {
        let parsed_message = r#"{"accountKeys":[{"pubkey":"A","writable":true,"signer":true,"source":"transaction"}],"recentBlockhash":"1","instructions":[{"programId":"P","accounts":["A"],"data":"3B","stackHeight":null}]}"#;
        let no_keys = MESSAGE.replace(
            r#""accountKeys":["11111111111111111111111111111111","Prog1111111111111111111111111111111111111111"]"#,
            r#""accountKeys":[]"#,
        );
        let parsed_inner = r#"{"err":null,"status":{"Ok":null},"fee":1,"preBalances":[],"postBalances":[],
            "innerInstructions":[{"index":0,"instructions":[{"program":"spl-token","programId":"T","parsed":{"type":"x"},"stackHeight":2}]}]}"#;
        for text in [
            payload(parsed_message, "null"),
            payload(&no_keys, "null"),
            payload(MESSAGE, parsed_inner),
            r#"{"slot":5,"transaction":["AQID","base64"],"meta":null,"blockTime":null}"#.into(),
        ] {
            assert!(decode_fast(&text).is_none(), "{text}");
            // The wire type still reads each of them.
            wire(&text).unwrap();
        }
        // An empty key list is a parsed message to the wire type.
        let tx = wire(&payload(&no_keys, "null")).unwrap();
        assert!(matches!(
            tx.transaction.transaction,
            EncodedTransaction::Json(UiTransaction {
                message: UiMessage::Parsed(_),
                ..
            })
        ));
    }
}

//! Realistic `transactionNotification` frames, made cheaply for any index.
//!
//! The benchmarks need hundreds of thousands of distinct notifications of
//! realistic size (~4 KB). Rendering each one through the ledger would make
//! the *server* the bottleneck, so a small set of templates is rendered once
//! from `backtest-ledger` transactions, widened to the shape of a busy DeFi
//! transaction (12 account keys, 24 log lines, token balances, inner
//! instructions), and split around the two fields that must vary per
//! notification: the slot and the first signature. Notification `i` is then
//! a few string copies: template `i % T`, slot `first_slot + i / per_slot`
//! (several notifications per slot, so replay cursors are meaningful) and a
//! unique base58 signature derived from `i`.

use backtest_ledger::{Ledger, LedgerConfig};
use serde_json::{Value, json};
use solana_transaction_status::EncodedConfirmedTransactionWithStatusMeta;

/// Distinct templates (more than a zstd window's worth of variety at level 3).
const TEMPLATES: usize = 256;
/// Account keys of every template.
const ACCOUNT_KEYS: usize = 12;
/// Log lines of every template.
const LOG_LINES: usize = 24;
/// Subscription id used in every notification (the server acks with it).
pub const SUBSCRIPTION: u64 = 1;

/// One template: everything of the notification but the slot and signature.
struct Template {
    /// From after `"signatures":["SIG"` to the end of the result object.
    tail: String,
}

/// Generator of notification `i` of a stream.
pub struct Corpus {
    templates: Vec<Template>,
    /// Program every notification mentions (the subscription's program).
    pub program: String,
    pub first_slot: u64,
    pub per_slot: u64,
}

impl Corpus {
    /// Build the templates from the synthetic ledger (deterministic).
    pub fn new(per_slot: u64) -> Self {
        let ledger = Ledger::new(LedgerConfig {
            txs_per_slot: 64,
            ..LedgerConfig::default()
        })
        .expect("default ledger config is valid");
        let program = ledger.programs()[0].clone();
        let mut templates = Vec::with_capacity(TEMPLATES);
        let mut slot = ledger.config().first_slot;
        while templates.len() < TEMPLATES {
            let data = ledger.slot(slot).expect("slot in range");
            for tx in &data.transactions {
                if templates.len() == TEMPLATES {
                    break;
                }
                templates.push(widen(&tx.json, templates.len() as u64));
            }
            slot += 1;
        }
        Self {
            templates,
            program,
            first_slot: 1_000,
            per_slot: per_slot.max(1),
        }
    }

    /// Slot of notification `i`.
    pub fn slot_of(&self, i: u64) -> u64 {
        self.first_slot + i / self.per_slot
    }

    /// First index whose slot is `>= slot` (a `replayFromSlot` cursor).
    pub fn first_index_at(&self, slot: u64) -> u64 {
        slot.saturating_sub(self.first_slot) * self.per_slot
    }

    /// Append the full JSON-RPC notification text of index `i` to `out`.
    pub fn write_notification(&self, i: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(
            br#"{"jsonrpc":"2.0","method":"transactionNotification","params":{"subscription":"#,
        );
        out.extend_from_slice(SUBSCRIPTION.to_string().as_bytes());
        out.extend_from_slice(br#","result":{"slot":"#);
        out.extend_from_slice(self.slot_of(i).to_string().as_bytes());
        out.extend_from_slice(br#","transaction":{"signatures":[""#);
        out.extend_from_slice(signature(i).as_bytes());
        out.extend_from_slice(b"\"]");
        let template = &self.templates[(i % self.templates.len() as u64) as usize];
        out.extend_from_slice(template.tail.as_bytes());
        out.extend_from_slice(b"}}}");
    }

    /// The notification text of index `i`.
    #[cfg(test)]
    pub fn notification(&self, i: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(4_608);
        self.write_notification(i, &mut out);
        out
    }
}

/// The unique signature of notification `i`: base58 of 64 bytes from `i`.
pub fn signature(i: u64) -> String {
    let mut bytes = [0u8; 64];
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5151_5151;
    for chunk in bytes.chunks_mut(8) {
        state = splitmix(state);
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    bs58::encode(bytes).into_string()
}

/// SplitMix64 step: cheap, well-mixed bytes for keys and signatures.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A base58 32-byte key from a seed.
fn key(seed: u64) -> String {
    let mut bytes = [0u8; 32];
    let mut state = seed ^ 0x4b45_5953;
    for chunk in bytes.chunks_mut(8) {
        state = splitmix(state);
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    bs58::encode(bytes).into_string()
}

/// Widen a ledger transaction to the benchmark's shape and split it into a
/// template.
fn widen(json: &str, n: u64) -> Template {
    let mut tx: Value = serde_json::from_str(json).expect("ledger json");
    let message = &mut tx["transaction"]["message"];
    let keys = message["accountKeys"].as_array_mut().expect("accountKeys");
    let mut k = 0;
    while keys.len() < ACCOUNT_KEYS {
        keys.push(json!(key(n * 64 + k)));
        k += 1;
    }
    keys.truncate(ACCOUNT_KEYS);
    let owner = keys[0].clone();
    let meta = &mut tx["meta"];
    for balances in ["preBalances", "postBalances"] {
        let list = meta[balances].as_array_mut().expect("balances");
        while list.len() < ACCOUNT_KEYS {
            list.push(json!(2_039_280 + list.len() as u64));
        }
        list.truncate(ACCOUNT_KEYS);
    }
    let logs = meta["logMessages"].as_array_mut().expect("logs");
    let mut line = 0u64;
    while logs.len() < LOG_LINES {
        logs.push(json!(format!(
            "Program log: amount_in={} amount_out={} pool={}",
            1_000_000 + n * 7 + line,
            990_000 + n * 5 + line,
            key(n * 131 + line).get(..16).unwrap_or_default()
        )));
        line += 1;
    }
    logs.truncate(LOG_LINES);
    let token = |index: u64, amount: u64| {
        json!({
            "accountIndex": index,
            "mint": key(n * 17 + index),
            "uiTokenAmount": {
                "uiAmount": amount as f64 / 1e6,
                "decimals": 6,
                "amount": amount.to_string(),
                "uiAmountString": format!("{}", amount as f64 / 1e6),
            },
            "owner": owner,
            "programId": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
        })
    };
    meta["preTokenBalances"] = json!([token(2, 5_000_000 + n), token(3, 7_000_000 + n)]);
    meta["postTokenBalances"] = json!([token(2, 4_000_000 + n), token(3, 8_000_000 + n)]);
    if meta["innerInstructions"]
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        meta["innerInstructions"] = json!([{
            "index": 0,
            "instructions": [
                {"programIdIndex": 11, "accounts": [0, 2, 3], "data": key(n * 3 + 1), "stackHeight": 2},
                {"programIdIndex": 11, "accounts": [3, 4], "data": key(n * 3 + 2), "stackHeight": 2}
            ]
        }]);
    }
    serde_json::from_value::<EncodedConfirmedTransactionWithStatusMeta>(tx.clone())
        .expect("widened template still decodes");
    // The slot and signature lead, then the rest of the transaction and of
    // the result: {"slot":S,"transaction":{"signatures":["SIG"] + tail.
    let mut rest = tx;
    let _ = rest.as_object_mut().map(|o| o.remove("slot"));
    let transaction = rest["transaction"].take();
    let mut transaction_rest = transaction;
    let _ = transaction_rest
        .as_object_mut()
        .map(|o| o.remove("signatures"));
    let transaction_tail = object_tail(&transaction_rest);
    let result_tail = object_tail(&rest);
    Template {
        tail: format!("{transaction_tail}}}{result_tail}"),
    }
}

/// `,"k":v,...` of an object without its braces (empty objects give "").
fn object_tail(value: &Value) -> String {
    let map = value.as_object().expect("object");
    let mut out = String::new();
    for (k, v) in map {
        if k == "transaction" {
            continue;
        }
        out.push(',');
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_decode_and_are_realistic() {
        let corpus = Corpus::new(8);
        for i in [0u64, 1, 77, 1_000] {
            let text = corpus.notification(i);
            let value: Value = serde_json::from_slice(&text).unwrap();
            let result = value["params"]["result"].clone();
            let tx: EncodedConfirmedTransactionWithStatusMeta =
                serde_json::from_value(result).unwrap();
            assert_eq!(tx.slot, corpus.slot_of(i));
            let sig = backtest_actors::frames::transaction_signature(&tx).unwrap();
            assert_eq!(sig, signature(i));
            assert!((3_500..6_000).contains(&text.len()), "{}", text.len());
        }
        assert_ne!(signature(1), signature(2));
    }
}

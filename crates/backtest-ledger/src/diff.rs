//! Account diffs: the before/after state of accounts a transaction touched,
//! and their `accountDiffNotification` result JSON.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::transaction::LedgerTransaction;

/// `rentEpoch` of rent-exempt accounts, as the RPC reports it.
pub const RENT_EPOCH_EXEMPT: u64 = u64::MAX;

/// Lamports per byte-year times the two-year exemption threshold.
const RENT_LAMPORTS_PER_BYTE: u64 = 6_960;
/// Account metadata overhead counted by the rent calculation.
const ACCOUNT_STORAGE_OVERHEAD: u64 = 128;

/// Minimum rent-exempt balance for an account with `space` data bytes.
pub fn rent_exempt_minimum(space: u64) -> u64 {
    (ACCOUNT_STORAGE_OVERHEAD + space) * RENT_LAMPORTS_PER_BYTE
}

/// Identity of one diff for dedup/comparison: `(slot, account, signature, tx_index)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiffKey {
    /// Slot of the transaction.
    pub slot: u64,
    /// Base58 account address.
    pub account: String,
    /// Base58 transaction signature.
    pub signature: String,
    /// Position of the transaction in its slot.
    pub tx_index: u32,
}

/// One account changed by a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerAccountDiff {
    /// Base58 32-byte address, drawn from the owning program's pool so the
    /// same accounts recur across slots.
    pub account: String,
    /// Owning program (always the transaction's `program`).
    pub owner: String,
    /// Account JSON before the transaction; `None` when it was created.
    pub pre: Option<Value>,
    /// Account JSON after the transaction; `None` when it was closed.
    /// Never `None` together with `pre`.
    pub post: Option<Value>,
    /// The `accountDiffNotification` `result` object as JSON text:
    /// `{"context":{"slot":S},"account":A,"signature":SIG,"txIndex":I,"blockTime":T,"pre":..,"post":..}`
    /// with `pre`/`post` omitted when `None`.
    pub result_json: Arc<str>,
}

impl LedgerAccountDiff {
    /// The dedup/comparison identity of this diff within `tx`.
    pub fn key(&self, tx: &LedgerTransaction) -> DiffKey {
        DiffKey {
            slot: tx.slot,
            account: self.account.clone(),
            signature: tx.signature.clone(),
            tx_index: tx.tx_index,
        }
    }
}

/// Raw account state used to build both the JSON text and the `Value`.
#[derive(Debug, Clone)]
pub(crate) struct AccountState {
    pub lamports: u64,
    pub data: Vec<u8>,
}

/// An account state rendered once, as text and as a `Value`.
struct RenderedAccount {
    text: String,
    value: Value,
}

fn render_account(state: &AccountState, owner: &str) -> RenderedAccount {
    let data = BASE64.encode(&state.data);
    let space = state.data.len() as u64;
    let mut text = String::with_capacity(data.len() + owner.len() + 128);
    let _ = write!(
        text,
        r#"{{"lamports":{},"owner":"{owner}","data":["{data}","base64"],"executable":false,"rentEpoch":{RENT_EPOCH_EXEMPT},"space":{space}}}"#,
        state.lamports
    );
    let value = json!({
        "lamports": state.lamports,
        "owner": owner,
        "data": [data, "base64"],
        "executable": false,
        "rentEpoch": RENT_EPOCH_EXEMPT,
        "space": space,
    });
    RenderedAccount { text, value }
}

/// Everything a diff's result JSON mentions besides the account states.
pub(crate) struct DiffContext<'a> {
    pub slot: u64,
    pub signature: &'a str,
    pub tx_index: u32,
    pub block_time: i64,
}

/// Builds a diff; `pre` and `post` must not both be `None`.
pub(crate) fn build_diff(
    ctx: &DiffContext<'_>,
    account: &str,
    owner: &str,
    pre: Option<&AccountState>,
    post: Option<&AccountState>,
) -> LedgerAccountDiff {
    debug_assert!(
        pre.is_some() || post.is_some(),
        "diff with neither pre nor post"
    );
    let pre = pre.map(|s| render_account(s, owner));
    let post = post.map(|s| render_account(s, owner));
    let extra =
        pre.as_ref().map_or(0, |r| r.text.len()) + post.as_ref().map_or(0, |r| r.text.len());
    let mut text = String::with_capacity(extra + 256);
    let _ = write!(
        text,
        r#"{{"context":{{"slot":{}}},"account":"{account}","signature":"{}","txIndex":{},"blockTime":{}"#,
        ctx.slot, ctx.signature, ctx.tx_index, ctx.block_time
    );
    if let Some(pre) = &pre {
        text.push_str(r#","pre":"#);
        text.push_str(&pre.text);
    }
    if let Some(post) = &post {
        text.push_str(r#","post":"#);
        text.push_str(&post.text);
    }
    text.push('}');
    LedgerAccountDiff {
        account: account.to_owned(),
        owner: owner.to_owned(),
        pre: pre.map(|r| r.value),
        post: post.map(|r| r.value),
        result_json: Arc::from(text),
    }
}

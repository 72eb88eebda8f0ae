//! One synthetic transaction: its RPC JSON (`EncodedConfirmedTransactionWithStatusMeta`),
//! wire bytes and account diffs, generated purely from `(seed, slot, tx_index, program)`.

use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use solana_transaction_status::EncodedConfirmedTransactionWithStatusMeta;

use crate::diff::{AccountState, DiffContext, LedgerAccountDiff, build_diff, rent_exempt_minimum};
use crate::keys::{Key, Universe};
use crate::rng::{Rng, hash_words, mix64};
use crate::wire::{CompiledIx, serialize_transaction};

const DOMAIN_TX: u64 = 0x5458_0000_0000_0001;
const DOMAIN_SIG_SLOT: u64 = 0x5349_4753_0000_0001;
const DOMAIN_SIG_TX: u64 = 0x5349_4754_0000_0001;
const DOMAIN_BLOCKHASH: u64 = 0x4248_0000_0000_0001;

/// Base fee per signature, in lamports.
pub const BASE_FEE_LAMPORTS: u64 = 5_000;
/// Compute units charged by each compute-budget instruction.
const COMPUTE_BUDGET_IX_UNITS: u64 = 150;
/// Most log lines a generated transaction carries.
const MAX_LOG_LINES: usize = 24;

/// Instruction names used in `Program log: Instruction: ...` lines.
const IX_NAMES: [&str; 10] = [
    "Swap",
    "Deposit",
    "Withdraw",
    "Route",
    "SettleFunds",
    "PlaceOrder",
    "CancelOrder",
    "UpdatePosition",
    "Claim",
    "Rebalance",
];
/// Words used in free-form `Program log:` lines (JSON-safe by construction).
const LOG_WORDS: [&str; 8] = [
    "amount_in",
    "amount_out",
    "fee_paid",
    "price",
    "liquidity",
    "sequence",
    "pool_balance",
    "tick",
];

/// One transaction of the synthetic ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerTransaction {
    /// Slot the transaction landed in.
    pub slot: u64,
    /// Position in the slot, `0..txs_per_slot`.
    pub tx_index: u32,
    /// `tx_index / batch_size`.
    pub batch_index: u32,
    /// Base58 64-byte signature, unique within a ledger (by construction)
    /// and across seeds (with overwhelming probability).
    pub signature: String,
    /// The single configured program this transaction invokes.
    pub program: String,
    /// The `EncodedConfirmedTransactionWithStatusMeta` as JSON text
    /// (`"encoding":"json"` shape), computed once.
    pub json: Arc<str>,
    /// 1..=3 distinct accounts owned by `program` that the transaction changed.
    pub diffs: Vec<LedgerAccountDiff>,
    /// The bincode-serialized transaction (legacy or v0), decodable by
    /// Solana tooling; used by discovery events as base64.
    pub wire_bytes: Vec<u8>,
}

impl LedgerTransaction {
    /// Whether this transaction invokes `program` (the configured one only;
    /// native programs such as compute budget do not count).
    pub fn mentions(&self, program: &str) -> bool {
        self.program == program
    }

    /// Parses [`Self::json`]. Infallible by construction (covered by tests).
    pub fn decode(&self) -> EncodedConfirmedTransactionWithStatusMeta {
        serde_json::from_str(&self.json).expect(
            "generated transaction JSON always matches EncodedConfirmedTransactionWithStatusMeta",
        )
    }
}

/// Deterministic blockhash of `slot` for `seed`, as raw bytes.
pub(crate) fn blockhash_bytes(seed: u64, slot: u64) -> [u8; 32] {
    Rng::derive(DOMAIN_BLOCKHASH, &[seed, slot]).bytes32()
}

/// 64 signature bytes. The first 16 are an injective function of
/// `(slot, tx_index)` (keyed by the seed), which makes signatures unique
/// within a ledger by construction; the rest are random.
fn signature_bytes(seed: u64, slot: u64, tx_index: u32, rng: &mut Rng) -> [u8; 64] {
    let w0 = mix64(slot ^ hash_words(DOMAIN_SIG_SLOT, &[seed]));
    let w1 = mix64(w0 ^ u64::from(tx_index) ^ hash_words(DOMAIN_SIG_TX, &[seed]));
    let mut sig = [0u8; 64];
    sig[..8].copy_from_slice(&w0.to_le_bytes());
    sig[8..16].copy_from_slice(&w1.to_le_bytes());
    rng.fill(&mut sig[16..]);
    sig
}

/// Where a key comes from; decides its balance.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Payer,
    Diff(usize),
    ExtraWritable,
    NativeProgram,
    Program,
    OtherReadonly,
}

/// Inputs of [`generate`] besides the key universe.
pub(crate) struct TxSpec {
    pub slot: u64,
    pub block_time: i64,
    pub tx_index: u32,
    pub batch_index: u32,
    pub program: usize,
}

/// Per-diff states before/after.
struct DiffPlan {
    pool_index: usize,
    pre: Option<AccountState>,
    post: Option<AccountState>,
}

fn plan_diff(rng: &mut Rng, pool_index: usize, space: u64) -> DiffPlan {
    let created = rng.one_in(8);
    let closed = !created && rng.one_in(32);
    let rent = rent_exempt_minimum(space);
    let len = space as usize;
    let pre = (!created).then(|| {
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        AccountState {
            lamports: rent + rng.below(4) * rng.below(50_000_000),
            data,
        }
    });
    let post = if closed {
        None
    } else {
        let (lamports, mut data) = match &pre {
            Some(p) => (
                p.lamports + rng.below(2) * rng.below(1_000_000),
                p.data.clone(),
            ),
            None => (rent, vec![0u8; len]),
        };
        // Change a handful of bytes (or initialize, for a created account).
        let changes = if pre.is_some() {
            1 + rng.index(8)
        } else {
            len / 2
        };
        for _ in 0..changes.min(len) {
            let at = rng.index(len.max(1));
            if let Some(b) = data.get_mut(at) {
                *b = rng.next_u64() as u8;
            }
        }
        Some(AccountState { lamports, data })
    };
    DiffPlan {
        pool_index,
        pre,
        post,
    }
}

/// Generates one transaction. Pure: depends only on the arguments.
pub(crate) fn generate(u: &Universe, spec: &TxSpec) -> LedgerTransaction {
    let seed = u.seed;
    let mut rng = Rng::derive(DOMAIN_TX, &[seed, spec.slot, u64::from(spec.tx_index)]);
    let sig_bytes = signature_bytes(seed, spec.slot, spec.tx_index, &mut rng);
    let signature = crate::b58::encode(&sig_bytes);
    let pool = &u.programs[spec.program];
    let program = &pool.id;

    // --- accounts touched (distinct pool entries) ---
    let diff_count = rng.range(1, 3) as usize;
    let mut picks: Vec<usize> = Vec::with_capacity(diff_count);
    while picks.len() < diff_count {
        let p = rng.index(pool.accounts.len());
        if !picks.contains(&p) {
            picks.push(p);
        }
    }
    let plans: Vec<DiffPlan> = picks
        .iter()
        .map(|&p| plan_diff(&mut rng, p, pool.accounts[p].space))
        .collect();

    // --- account keys ---
    let payer = &u.payers[rng.index(u.payers.len())];
    let has_inner = !u.system_configured && rng.one_in(2);
    let v0 = rng.one_in(2);
    let mut readonly: Vec<(&Key, Role)> = Vec::with_capacity(8);
    readonly.push((&u.compute_budget, Role::NativeProgram));
    readonly.push((program, Role::Program));
    if has_inner {
        readonly.push((&u.system, Role::NativeProgram));
    }
    let total = rng.range(6, 12) as usize;
    let mandatory = 1 + diff_count + readonly.len();
    let extra = total.saturating_sub(mandatory);
    let extra_writable = rng.index(extra + 1);
    let extra_readonly = extra - extra_writable;
    let mut candidates: Vec<&Key> = u.extra_readonly.iter().collect();
    rng.shuffle(&mut candidates);
    let fresh_readonly = extra_readonly.saturating_sub(candidates.len());
    let fresh: Vec<Key> = (0..extra_writable + fresh_readonly)
        .map(|_| Key::from_bytes(rng.bytes32()))
        .collect();
    for k in candidates.iter().take(extra_readonly) {
        readonly.push((k, Role::OtherReadonly));
    }
    for k in &fresh[extra_writable..] {
        readonly.push((k, Role::OtherReadonly));
    }
    rng.shuffle(&mut readonly);

    let mut keys: Vec<(&Key, Role)> = Vec::with_capacity(total.max(mandatory));
    keys.push((payer, Role::Payer));
    for (i, &p) in picks.iter().enumerate() {
        keys.push((&pool.accounts[p].key, Role::Diff(i)));
    }
    for k in &fresh[..extra_writable] {
        keys.push((k, Role::ExtraWritable));
    }
    let first_readonly = keys.len();
    keys.extend(readonly.iter().copied());
    let index_of = |target: &Key| -> u8 {
        keys.iter()
            .position(|(k, _)| k.bytes == target.bytes)
            .expect("key is present") as u8
    };
    let program_index = index_of(program);
    let compute_budget_index = index_of(&u.compute_budget);
    let system_index = has_inner.then(|| index_of(&u.system));
    let header = [1u8, 0, (keys.len() - first_readonly) as u8];

    // --- instructions ---
    let unit_limit = rng.range(20, 1_400) * 1_000;
    let unit_price = (!rng.one_in(4)).then(|| rng.range(100, 1_000_000));
    let mut instructions: Vec<CompiledIx> = Vec::with_capacity(4);
    let mut limit_data = vec![2u8];
    limit_data.extend_from_slice(&(unit_limit as u32).to_le_bytes());
    instructions.push(CompiledIx {
        program_id_index: compute_budget_index,
        accounts: Vec::new(),
        data: limit_data,
    });
    if let Some(price) = unit_price {
        let mut price_data = vec![3u8];
        price_data.extend_from_slice(&price.to_le_bytes());
        instructions.push(CompiledIx {
            program_id_index: compute_budget_index,
            accounts: Vec::new(),
            data: price_data,
        });
    }
    let cb_count = instructions.len();
    let program_ix_count = rng.range(1, 2) as usize;
    for _ in 0..program_ix_count {
        let mut accounts: Vec<u8> = vec![0];
        accounts.extend(1..=diff_count as u8);
        let others = keys.len() - 1 - diff_count;
        for _ in 0..rng.index(others + 1).min(4) {
            accounts.push((1 + diff_count + rng.index(others)) as u8);
        }
        let mut data = vec![0u8; rng.range(8, 40) as usize];
        rng.fill(&mut data);
        instructions.push(CompiledIx {
            program_id_index: program_index,
            accounts,
            data,
        });
    }
    let priority_fee = unit_price.map_or(0, |p| (p * unit_limit).div_ceil(1_000_000));
    let fee = BASE_FEE_LAMPORTS + priority_fee;

    // --- inner instruction (CPI transfer into the first touched account) ---
    let inner = system_index.map(|sys| {
        let mut data = vec![2u8, 0, 0, 0];
        data.extend_from_slice(&rng.range(1_000, 5_000_000).to_le_bytes());
        CompiledIx {
            program_id_index: sys,
            accounts: vec![0, 1],
            data,
        }
    });

    // --- logs and compute units ---
    let mut logs: Vec<String> = Vec::with_capacity(MAX_LOG_LINES);
    let cb_text = &u.compute_budget.text;
    for _ in 0..cb_count {
        logs.push(format!("Program {cb_text} invoke [1]"));
        logs.push(format!("Program {cb_text} success"));
    }
    let fixed_lines = 2 * cb_count + 4 * program_ix_count + if inner.is_some() { 2 } else { 0 };
    let mut spare = MAX_LOG_LINES - fixed_lines;
    let mut remaining = unit_limit - COMPUTE_BUDGET_IX_UNITS * cb_count as u64;
    let mut consumed_total = COMPUTE_BUDGET_IX_UNITS * cb_count as u64;
    let pid = &program.text;
    for ix in 0..program_ix_count {
        logs.push(format!("Program {pid} invoke [1]"));
        logs.push(format!(
            "Program log: Instruction: {}",
            IX_NAMES[rng.index(IX_NAMES.len())]
        ));
        let extra_lines = rng.index(spare.min(5) + 1);
        spare -= extra_lines;
        for _ in 0..extra_lines {
            if rng.one_in(3) {
                let mut event = [0u8; 48];
                rng.fill(&mut event);
                logs.push(format!("Program data: {}", BASE64.encode(event)));
            } else {
                logs.push(format!(
                    "Program log: {}={}",
                    LOG_WORDS[rng.index(LOG_WORDS.len())],
                    rng.below(10_000_000_000)
                ));
            }
        }
        // The CPI (if any) is issued by the first program instruction.
        if let Some(inner) = inner.as_ref().filter(|_| ix == 0) {
            let sys = &keys[inner.program_id_index as usize].0.text;
            logs.push(format!("Program {sys} invoke [2]"));
            logs.push(format!("Program {sys} success"));
        }
        let consumed = rng.range(1_000, (remaining / 2).max(1_000)).min(remaining);
        logs.push(format!(
            "Program {pid} consumed {consumed} of {remaining} compute units"
        ));
        logs.push(format!("Program {pid} success"));
        remaining -= consumed;
        consumed_total += consumed;
    }

    // --- balances (lamports are conserved: the payer funds fee and deltas) ---
    let diff_pre = |i: usize| plans[i].pre.as_ref().map_or(0, |s| s.lamports);
    let diff_post = |i: usize| plans[i].post.as_ref().map_or(0, |s| s.lamports);
    let diff_post_sum: u64 = (0..plans.len()).map(diff_post).sum();
    let diff_pre_sum: u64 = (0..plans.len()).map(diff_pre).sum();
    let payer_pre = fee + diff_post_sum + rng.range(10_000_000, 50_000_000_000);
    let payer_post = payer_pre + diff_pre_sum - diff_post_sum - fee;
    let mut pre_balances: Vec<u64> = Vec::with_capacity(keys.len());
    let mut post_balances: Vec<u64> = Vec::with_capacity(keys.len());
    for (_, role) in &keys {
        let (pre, post) = match *role {
            Role::Payer => (payer_pre, payer_post),
            Role::Diff(i) => (diff_pre(i), diff_post(i)),
            Role::ExtraWritable => {
                let b = rng.range(890_880, 100_000_000);
                (b, b)
            }
            Role::NativeProgram => (1, 1),
            Role::Program => (1_141_440, 1_141_440),
            Role::OtherReadonly => (1_009_200, 1_009_200),
        };
        pre_balances.push(pre);
        post_balances.push(post);
    }

    // --- blockhash ---
    let age = rng.range(1, 150);
    let blockhash = blockhash_bytes(seed, spec.slot.saturating_sub(age));
    let blockhash_text = crate::b58::encode(&blockhash);

    // --- JSON ---
    let json = write_json(&JsonParts {
        slot: spec.slot,
        block_time: spec.block_time,
        signature: &signature,
        header,
        keys: &keys,
        blockhash: &blockhash_text,
        instructions: &instructions,
        inner: inner.as_ref().map(|ix| (cb_count as u8, ix)),
        fee,
        pre_balances: &pre_balances,
        post_balances: &post_balances,
        logs: &logs,
        compute_units: consumed_total,
        v0,
    });

    let key_bytes: Vec<&[u8; 32]> = keys.iter().map(|(k, _)| &k.bytes).collect();
    let wire_bytes = serialize_transaction(
        &sig_bytes,
        header,
        &key_bytes,
        &blockhash,
        &instructions,
        v0,
    );

    // --- diffs ---
    let ctx = DiffContext {
        slot: spec.slot,
        signature: &signature,
        tx_index: spec.tx_index,
        block_time: spec.block_time,
    };
    let diffs = plans
        .iter()
        .map(|plan| {
            build_diff(
                &ctx,
                &pool.accounts[plan.pool_index].key.text,
                &program.text,
                plan.pre.as_ref(),
                plan.post.as_ref(),
            )
        })
        .collect();

    LedgerTransaction {
        slot: spec.slot,
        tx_index: spec.tx_index,
        batch_index: spec.batch_index,
        signature,
        program: program.text.clone(),
        json: Arc::from(json),
        diffs,
        wire_bytes,
    }
}

/// Inputs of [`write_json`].
struct JsonParts<'a> {
    slot: u64,
    block_time: i64,
    signature: &'a str,
    header: [u8; 3],
    keys: &'a [(&'a Key, Role)],
    blockhash: &'a str,
    instructions: &'a [CompiledIx],
    /// The CPI and the index of the top-level instruction that issued it.
    inner: Option<(u8, &'a CompiledIx)>,
    fee: u64,
    pre_balances: &'a [u64],
    post_balances: &'a [u64],
    logs: &'a [String],
    compute_units: u64,
    v0: bool,
}

/// Writes a comma-separated list using `item` for each element.
fn write_list<T>(out: &mut String, items: &[T], mut item: impl FnMut(&mut String, &T)) {
    out.push('[');
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item(out, it);
    }
    out.push(']');
}

fn write_ix(out: &mut String, ix: &CompiledIx, stack_height: Option<u32>) {
    let _ = write!(
        out,
        r#"{{"programIdIndex":{},"accounts":"#,
        ix.program_id_index
    );
    write_list(out, &ix.accounts, |o, a| {
        let _ = write!(o, "{a}");
    });
    let _ = write!(
        out,
        r#","data":"{}","stackHeight":"#,
        crate::b58::encode(&ix.data)
    );
    match stack_height {
        Some(h) => {
            let _ = write!(out, "{h}}}");
        }
        None => out.push_str("null}"),
    }
}

/// Renders the RPC `getTransaction` (`encoding: "json"`) shape by hand: all
/// strings are base58/base64 or fixed ASCII vocabulary, so no escaping is needed.
fn write_json(p: &JsonParts<'_>) -> String {
    let mut out = String::with_capacity(3_072);
    let _ = write!(
        out,
        r#"{{"slot":{},"transaction":{{"signatures":["{}"],"message":{{"header":{{"numRequiredSignatures":{},"numReadonlySignedAccounts":{},"numReadonlyUnsignedAccounts":{}}},"accountKeys":"#,
        p.slot, p.signature, p.header[0], p.header[1], p.header[2]
    );
    write_list(&mut out, p.keys, |o, (k, _)| {
        o.push('"');
        o.push_str(&k.text);
        o.push('"');
    });
    let _ = write!(
        out,
        r#","recentBlockhash":"{}","instructions":"#,
        p.blockhash
    );
    write_list(&mut out, p.instructions, |o, ix| write_ix(o, ix, None));
    if p.v0 {
        out.push_str(r#","addressTableLookups":[]"#);
    }
    let _ = write!(
        out,
        r#"}}}},"meta":{{"err":null,"status":{{"Ok":null}},"fee":{},"preBalances":"#,
        p.fee
    );
    write_list(&mut out, p.pre_balances, |o, b| {
        let _ = write!(o, "{b}");
    });
    out.push_str(r#","postBalances":"#);
    write_list(&mut out, p.post_balances, |o, b| {
        let _ = write!(o, "{b}");
    });
    out.push_str(r#","innerInstructions":["#);
    if let Some((index, inner)) = p.inner {
        let _ = write!(out, r#"{{"index":{index},"instructions":["#);
        write_ix(&mut out, inner, Some(2));
        out.push_str("]}");
    }
    out.push_str(r#"],"logMessages":"#);
    write_list(&mut out, p.logs, |o, l| {
        o.push('"');
        o.push_str(l);
        o.push('"');
    });
    let _ = write!(
        out,
        r#","preTokenBalances":[],"postTokenBalances":[],"rewards":[],"loadedAddresses":{{"writable":[],"readonly":[]}},"computeUnitsConsumed":{}}},"version":{},"blockTime":{}}}"#,
        p.compute_units,
        if p.v0 { "0" } else { r#""legacy""# },
        p.block_time
    );
    out
}

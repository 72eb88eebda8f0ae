//! Integration tests of the public ledger API.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use backtest_ledger::{
    COMPUTE_BUDGET_PROGRAM, DiffKey, Ledger, LedgerConfig, LedgerError, LedgerTransaction, SlotData,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use solana_transaction_status::option_serializer::OptionSerializer;
use solana_transaction_status::{
    EncodedTransaction, TransactionBinaryEncoding, UiInstruction, UiMessage,
};

fn ledger(seed: u64, first: u64, last: u64) -> Ledger {
    Ledger::new(LedgerConfig {
        seed,
        first_slot: first,
        last_slot: last,
        ..LedgerConfig::default()
    })
    .expect("valid config")
}

fn slots(ledger: &Ledger, range: std::ops::RangeInclusive<u64>) -> Vec<Arc<SlotData>> {
    range
        .map(|s| ledger.slot(s).expect("slot in range"))
        .collect()
}

#[test]
fn default_config_is_valid_and_documented() {
    let c = LedgerConfig::default();
    assert_eq!(c.seed, 0);
    assert_eq!(c.txs_per_slot, 8);
    assert_eq!(c.batch_size, 4);
    assert_eq!((c.first_slot, c.last_slot), (1_000, 100_999));
    assert_eq!(c.programs, LedgerConfig::default_programs());
    assert_eq!(c.programs.len(), 3);
    let distinct: HashSet<_> = c.programs.iter().collect();
    assert_eq!(distinct.len(), 3);
    for p in &c.programs {
        assert_eq!(bs58::decode(p).into_vec().unwrap().len(), 32, "{p}");
    }
    let l = Ledger::new(c.clone()).unwrap();
    assert_eq!(l.config(), &c);
    assert_eq!(l.programs(), c.programs.as_slice());
}

#[test]
fn same_config_and_slot_give_identical_output() {
    let a = ledger(7, 10, 20);
    let b = ledger(7, 10, 20);
    for s in 10..=20 {
        let x = a.slot(s).unwrap();
        let y = b.generate_slot(s);
        assert_eq!(*x, y, "slot {s}");
        for (tx, ty) in x.transactions.iter().zip(&y.transactions) {
            assert_eq!(tx.json, ty.json);
            assert_eq!(tx.wire_bytes, ty.wire_bytes);
        }
    }
    // Generation order does not matter.
    let rev: Vec<SlotData> = (10..=20).rev().map(|s| b.generate_slot(s)).collect();
    for d in rev {
        assert_eq!(*a.slot(d.slot).unwrap(), d);
    }
}

#[test]
fn different_seeds_give_different_signatures() {
    let a = ledger(1, 100, 199);
    let b = ledger(2, 100, 199);
    let sigs = |l: &Ledger| -> HashSet<String> {
        (100..=199)
            .flat_map(|s| l.slot(s).unwrap().transactions.clone())
            .map(|t| t.signature)
            .collect()
    };
    let sa = sigs(&a);
    let sb = sigs(&b);
    assert_eq!(sa.len(), 800);
    assert_eq!(sb.len(), 800);
    assert!(sa.is_disjoint(&sb));
    assert_ne!(
        a.slot(100).unwrap().transactions[0].json,
        b.slot(100).unwrap().transactions[0].json
    );
}

fn check_transaction(l: &Ledger, data: &SlotData, tx: &LedgerTransaction) {
    let decoded = tx.decode();
    assert_eq!(decoded.slot, data.slot);
    assert_eq!(decoded.block_time, Some(data.block_time));
    assert_eq!(tx.slot, data.slot);
    let EncodedTransaction::Json(ui) = &decoded.transaction.transaction else {
        panic!("expected json transaction");
    };
    assert_eq!(ui.signatures, vec![tx.signature.clone()]);
    assert_eq!(bs58::decode(&tx.signature).into_vec().unwrap().len(), 64);
    let UiMessage::Raw(msg) = &ui.message else {
        panic!("expected raw message");
    };
    let keys = &msg.account_keys;
    assert!((6..=12).contains(&keys.len()), "{} keys", keys.len());
    assert_eq!(
        keys.iter().collect::<HashSet<_>>().len(),
        keys.len(),
        "duplicate keys"
    );
    assert!(keys.contains(&tx.program));
    assert!(keys.contains(&COMPUTE_BUDGET_PROGRAM.to_owned()));
    assert_eq!(
        bs58::decode(&msg.recent_blockhash)
            .into_vec()
            .unwrap()
            .len(),
        32
    );
    assert_eq!(msg.header.num_required_signatures, 1);
    assert!((2..=4).contains(&msg.instructions.len()));
    let program_ids: Vec<&str> = msg
        .instructions
        .iter()
        .map(|ix| keys[ix.program_id_index as usize].as_str())
        .collect();
    assert_eq!(program_ids[0], COMPUTE_BUDGET_PROGRAM);
    assert!(program_ids.contains(&tx.program.as_str()));
    // Exactly one configured program is invoked.
    for p in l.programs() {
        assert_eq!(program_ids.contains(&p.as_str()), *p == tx.program);
        assert_eq!(tx.mentions(p), *p == tx.program);
        // A configured program's id appears only in its own transactions.
        assert_eq!(keys.contains(p), *p == tx.program);
    }
    for ix in &msg.instructions {
        assert!(ix.accounts.iter().all(|&a| (a as usize) < keys.len()));
    }

    let meta = decoded.transaction.meta.as_ref().expect("meta");
    assert!(meta.err.is_none());
    assert!(meta.status.is_ok());
    assert!(meta.fee >= 5_000);
    assert_eq!(meta.pre_balances.len(), keys.len());
    assert_eq!(meta.post_balances.len(), keys.len());
    assert_eq!(
        meta.post_balances[0],
        meta.pre_balances[0] - meta.fee - tx.diffs.iter().map(|d| lamports(&d.post)).sum::<u64>()
            + tx.diffs.iter().map(|d| lamports(&d.pre)).sum::<u64>()
    );
    let OptionSerializer::Some(logs) = &meta.log_messages else {
        panic!("logs missing");
    };
    assert!((6..=24).contains(&logs.len()), "{} log lines", logs.len());
    assert!(logs.contains(&format!("Program {} invoke [1]", tx.program)));
    assert!(logs.contains(&format!("Program {} success", tx.program)));
    let OptionSerializer::Some(cu) = meta.compute_units_consumed else {
        panic!("computeUnitsConsumed missing");
    };
    assert!(cu > 0);
    let OptionSerializer::Some(inner) = &meta.inner_instructions else {
        panic!("innerInstructions missing");
    };
    for group in inner {
        assert!((group.index as usize) < msg.instructions.len());
        for ix in &group.instructions {
            let UiInstruction::Compiled(ix) = ix else {
                panic!("expected compiled inner instruction");
            };
            assert!((ix.program_id_index as usize) < keys.len());
            assert_eq!(ix.stack_height, Some(2));
        }
    }
    assert!(matches!(&meta.pre_token_balances, OptionSerializer::Some(v) if v.is_empty()));
    assert!(matches!(&meta.post_token_balances, OptionSerializer::Some(v) if v.is_empty()));
    assert!(matches!(&meta.rewards, OptionSerializer::Some(v) if v.is_empty()));
    assert!(matches!(&meta.loaded_addresses, OptionSerializer::Some(_)));
    assert!(decoded.transaction.version.is_some());
    assert!(
        (1_000..=8_000).contains(&tx.json.len()),
        "json {} bytes",
        tx.json.len()
    );

    // Wire bytes are a real, sanitized transaction agreeing with the JSON.
    let vt = EncodedTransaction::Binary(
        BASE64.encode(&tx.wire_bytes),
        TransactionBinaryEncoding::Base64,
    )
    .decode()
    .expect("wire bytes decode and sanitize");
    assert_eq!(vt.signatures.len(), 1);
    assert_eq!(vt.signatures[0].to_string(), tx.signature);
    let wire_keys: Vec<String> = vt
        .message
        .static_account_keys()
        .iter()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(&wire_keys, keys);
    assert_eq!(
        vt.message.recent_blockhash().to_string(),
        msg.recent_blockhash
    );
    assert_eq!(vt.message.instructions().len(), msg.instructions.len());
    for (w, j) in vt.message.instructions().iter().zip(&msg.instructions) {
        assert_eq!(w.program_id_index, j.program_id_index);
        assert_eq!(w.accounts, j.accounts);
        assert_eq!(bs58::encode(&w.data).into_string(), j.data);
    }

    // Diffs: 1..=3 distinct accounts owned by the program, present in the keys.
    assert!((1..=3).contains(&tx.diffs.len()));
    let accounts: HashSet<&str> = tx.diffs.iter().map(|d| d.account.as_str()).collect();
    assert_eq!(accounts.len(), tx.diffs.len(), "diff accounts not distinct");
    let pool: HashSet<String> = l
        .program_accounts(&tx.program)
        .unwrap()
        .into_iter()
        .collect();
    for d in &tx.diffs {
        assert_eq!(d.owner, tx.program);
        assert!(pool.contains(&d.account));
        assert!(keys.contains(&d.account));
        assert!(d.pre.is_some() || d.post.is_some());
        check_result_json(tx, d, data.block_time);
    }
    assert!(tx.wire_bytes.len() >= 200);
}

fn lamports(v: &Option<Value>) -> u64 {
    v.as_ref().map_or(0, |v| v["lamports"].as_u64().unwrap())
}

fn check_account_json(v: &Value, owner: &str) {
    let obj = v.as_object().unwrap();
    let fields: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "lamports",
            "owner",
            "data",
            "executable",
            "rentEpoch",
            "space"
        ])
    );
    assert!(obj["lamports"].as_u64().unwrap() > 0);
    assert_eq!(obj["owner"], owner);
    assert_eq!(obj["executable"], false);
    assert_eq!(obj["rentEpoch"].as_u64(), Some(u64::MAX));
    let data = obj["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1], "base64");
    let bytes = BASE64.decode(data[0].as_str().unwrap()).unwrap();
    assert_eq!(obj["space"].as_u64(), Some(bytes.len() as u64));
}

fn check_result_json(
    tx: &LedgerTransaction,
    d: &backtest_ledger::LedgerAccountDiff,
    block_time: i64,
) {
    let v: Value = serde_json::from_str(&d.result_json).expect("result_json parses");
    let obj = v.as_object().unwrap();
    let mut expected = BTreeSet::from(["context", "account", "signature", "txIndex", "blockTime"]);
    if d.pre.is_some() {
        expected.insert("pre");
    }
    if d.post.is_some() {
        expected.insert("post");
    }
    let fields: BTreeSet<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(fields, expected);
    assert_eq!(obj["context"], serde_json::json!({ "slot": tx.slot }));
    assert_eq!(obj["account"], d.account.as_str());
    assert_eq!(obj["signature"], tx.signature.as_str());
    assert_eq!(obj["txIndex"].as_u64(), Some(u64::from(tx.tx_index)));
    assert_eq!(obj["blockTime"].as_i64(), Some(block_time));
    assert_eq!(obj.get("pre"), d.pre.as_ref());
    assert_eq!(obj.get("post"), d.post.as_ref());
    for state in [&d.pre, &d.post].into_iter().flatten() {
        check_account_json(state, &tx.program);
    }
    let key = d.key(tx);
    assert_eq!(
        key,
        DiffKey {
            slot: tx.slot,
            account: d.account.clone(),
            signature: tx.signature.clone(),
            tx_index: tx.tx_index
        }
    );
}

#[test]
fn every_transaction_is_well_formed() {
    let l = ledger(3, 5_000, 5_299);
    let mut versions = HashSet::new();
    let mut with_inner = 0;
    let mut created = 0;
    let mut closed = 0;
    for data in slots(&l, 5_000..=5_299) {
        assert_eq!(data.block_time, l.block_time(data.slot));
        assert_eq!(data.transactions.len(), 8);
        for (i, tx) in data.transactions.iter().enumerate() {
            assert_eq!(tx.tx_index as usize, i);
            assert_eq!(tx.batch_index, tx.tx_index / 4);
            check_transaction(&l, &data, tx);
            let decoded = tx.decode();
            versions.insert(format!("{:?}", decoded.transaction.version));
            if let OptionSerializer::Some(inner) =
                &decoded.transaction.meta.unwrap().inner_instructions
            {
                with_inner += usize::from(!inner.is_empty());
            }
            for d in &tx.diffs {
                created += usize::from(d.pre.is_none());
                closed += usize::from(d.post.is_none());
            }
        }
    }
    // Both versions, CPIs, created and closed accounts all occur.
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(with_inner > 0);
    assert!(created > 0);
    assert!(closed > 0);
}

#[test]
fn block_time_is_monotonic() {
    let l = ledger(0, 0, 10);
    assert_eq!(l.block_time(0), backtest_ledger::BLOCK_TIME_BASE);
    assert_eq!(l.block_time(5), backtest_ledger::BLOCK_TIME_BASE + 2);
    let mut prev = l.block_time(0);
    for s in 1..2_000 {
        let t = l.block_time(s);
        assert!(t >= prev);
        assert_eq!(t, backtest_ledger::BLOCK_TIME_BASE + (s * 2 / 5) as i64);
        prev = t;
    }
    assert!(l.block_time(u64::MAX) > 0);
}

#[test]
fn signatures_and_diff_keys_are_unique_and_programs_all_appear() {
    let l = Ledger::with_cache_capacity(
        LedgerConfig {
            seed: 11,
            first_slot: 50_000,
            last_slot: 53_999,
            ..LedgerConfig::default()
        },
        0,
    )
    .unwrap();
    let mut sigs = HashSet::new();
    let mut keys = HashSet::new();
    let mut per_program: HashMap<String, usize> = HashMap::new();
    let mut accounts_seen: HashMap<String, usize> = HashMap::new();
    for s in 50_000..=53_999 {
        let data = l.slot(s).unwrap();
        // Every program appears in every slot (8 txs >= 3 programs).
        let in_slot: HashSet<&str> = data
            .transactions
            .iter()
            .map(|t| t.program.as_str())
            .collect();
        assert_eq!(in_slot.len(), 3, "slot {s}");
        for tx in &data.transactions {
            assert!(sigs.insert(tx.signature.clone()), "duplicate signature");
            *per_program.entry(tx.program.clone()).or_default() += 1;
            for d in &tx.diffs {
                assert!(keys.insert(d.key(tx)), "duplicate diff key");
                *accounts_seen.entry(d.account.clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(sigs.len(), 32_000);
    assert_eq!(per_program.len(), 3);
    for (p, n) in &per_program {
        assert!(*n > 32_000 / 3 / 2, "program {p} only {n} times");
    }
    // Accounts recur: 3 programs x 64 pool accounts.
    assert_eq!(
        accounts_seen.len(),
        3 * backtest_ledger::ACCOUNTS_PER_PROGRAM
    );
    assert_eq!(l.cached_slots(), 0, "cache disabled");
}

#[test]
fn programs_are_covered_even_with_few_transactions() {
    let programs: Vec<String> = (1..=5u8)
        .map(|b| bs58::encode([b; 32]).into_string())
        .collect();
    let l = Ledger::new(LedgerConfig {
        programs: programs.clone(),
        txs_per_slot: 2,
        batch_size: 3,
        first_slot: 0,
        last_slot: 499,
        ..LedgerConfig::default()
    })
    .unwrap();
    let mut seen = HashSet::new();
    for s in 0..=499 {
        let data = l.slot(s).unwrap();
        assert_eq!(data.batch_count(), 1);
        assert_eq!(data.batch(0).len(), 2);
        assert!(data.batch(1).is_empty());
        // Two different programs per slot (distinct while they fit).
        assert_ne!(data.transactions[0].program, data.transactions[1].program);
        for tx in &data.transactions {
            check_transaction(&l, &data, tx);
            seen.insert(tx.program.clone());
        }
    }
    assert_eq!(seen.len(), 5);
}

#[test]
fn batches_partition_the_slot() {
    let l = Ledger::new(LedgerConfig {
        txs_per_slot: 10,
        batch_size: 4,
        first_slot: 1,
        last_slot: 1,
        ..LedgerConfig::default()
    })
    .unwrap();
    let data = l.slot(1).unwrap();
    assert_eq!(data.batch_count(), 3);
    let sizes: Vec<usize> = (0..3).map(|b| data.batch(b).len()).collect();
    assert_eq!(sizes, vec![4, 4, 2]);
    for b in 0..3 {
        assert!(data.batch(b).iter().all(|t| t.batch_index == b));
    }
    let flat: Vec<u32> = data.batches().flatten().map(|t| t.tx_index).collect();
    assert_eq!(flat, (0..10).collect::<Vec<_>>());
    assert!(data.batch(3).is_empty());
    assert!(data.batch(u32::MAX).is_empty());
    let p0 = &l.programs()[0];
    assert!(data.transactions_for(p0).all(|t| &t.program == p0));
    assert!(data.transactions_for(p0).count() >= 1);
}

#[test]
fn config_validation_rejects_each_bad_case() {
    let base = LedgerConfig::default();
    let bad = |f: &dyn Fn(&mut LedgerConfig)| {
        let mut c = base.clone();
        f(&mut c);
        Ledger::new(c).expect_err("config must be rejected")
    };

    let e = bad(&|c| c.programs.clear());
    assert_eq!(e, LedgerError::NoPrograms);
    assert!(e.to_string().contains("empty"));

    let e = bad(&|c| c.txs_per_slot = 0);
    assert_eq!(e, LedgerError::ZeroTxsPerSlot);
    assert!(e.to_string().contains("txs_per_slot"));

    let e = bad(&|c| c.batch_size = 0);
    assert_eq!(e, LedgerError::ZeroBatchSize);
    assert!(e.to_string().contains("batch_size"));

    let e = bad(&|c| {
        c.first_slot = 10;
        c.last_slot = 9;
    });
    assert_eq!(
        e,
        LedgerError::InvalidSlotRange {
            first_slot: 10,
            last_slot: 9
        }
    );
    assert!(e.to_string().contains("10 > last_slot 9"));

    let e = bad(&|c| c.programs[1] = "not-base58-0OIl".to_owned());
    assert!(
        matches!(&e, LedgerError::InvalidProgramId { index: 1, id, reason } if id == "not-base58-0OIl" && reason.contains("base58")),
        "{e:?}"
    );
    assert!(e.to_string().contains("#1"));

    let short = bs58::encode([7u8; 31]).into_string();
    let e = bad(&|c| c.programs[2] = short.clone());
    assert!(
        matches!(&e, LedgerError::InvalidProgramId { index: 2, reason, .. } if reason.contains("31 bytes")),
        "{e:?}"
    );

    let e = bad(&|c| c.programs[0] = String::new());
    assert!(
        matches!(&e, LedgerError::InvalidProgramId { index: 0, reason, .. } if reason.contains("empty"))
    );

    let e = bad(&|c| c.programs[1] = COMPUTE_BUDGET_PROGRAM.to_owned());
    assert_eq!(
        e,
        LedgerError::ReservedProgram {
            index: 1,
            id: COMPUTE_BUDGET_PROGRAM.to_owned()
        }
    );
    assert!(e.to_string().contains("compute-budget"));

    let dup = base.programs[0].clone();
    let e = bad(&|c| c.programs.push(dup.clone()));
    assert_eq!(
        e,
        LedgerError::DuplicateProgram {
            id: dup.clone(),
            first: 0,
            second: 3
        }
    );
    assert!(e.to_string().contains(&dup));

    // Single-slot range and a single program are fine.
    let ok = LedgerConfig {
        programs: vec![base.programs[0].clone()],
        first_slot: 5,
        last_slot: 5,
        txs_per_slot: 1,
        batch_size: 1,
        seed: 1,
    };
    let l = Ledger::new(ok).unwrap();
    assert_eq!(l.slot(5).unwrap().transactions.len(), 1);
}

#[test]
fn out_of_range_slots_are_none_and_cache_is_bounded() {
    let l = ledger(5, 100, 1_099);
    assert_eq!(
        l.cache_capacity(),
        backtest_ledger::DEFAULT_SLOT_CACHE_CAPACITY
    );
    assert!(l.slot(99).is_none());
    assert!(l.slot(1_100).is_none());
    assert!(l.slot(u64::MAX).is_none());
    assert!(!l.contains(99) && l.contains(100) && l.contains(1_099) && !l.contains(1_100));
    assert_eq!(l.cached_slots(), 0);

    let first = l.slot(100).unwrap();
    let again = l.slot(100).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "cache hit returns the same Arc"
    );
    // Clones share the cache.
    let clone = l.clone();
    assert!(Arc::ptr_eq(&first, &clone.slot(100).unwrap()));
    assert_eq!(l.cached_slots(), 1);

    for s in 100..=1_099 {
        l.slot(s).unwrap();
        assert!(l.cached_slots() <= l.cache_capacity());
    }
    assert_eq!(l.cached_slots(), l.cache_capacity());
    // Slot 100 was evicted: a new Arc with identical content.
    let regenerated = l.slot(100).unwrap();
    assert!(!Arc::ptr_eq(&first, &regenerated));
    assert_eq!(*first, *regenerated);
}

#[test]
fn ledger_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Ledger>();
    let l = ledger(9, 0, 63);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                (0..64u64)
                    .map(|i| (i * 7 + t) % 64)
                    .map(|s| l.slot(s).unwrap().transactions[0].json.clone())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for json in h.join().unwrap() {
            let tx: Value = serde_json::from_str(&json).unwrap();
            let s = tx["slot"].as_u64().unwrap();
            assert_eq!(json, l.generate_slot(s).transactions[0].json);
        }
    }
}

#[test]
fn configured_program_may_be_a_native_program() {
    // Edge case: a configured program equal to a native/well-known one must
    // not produce duplicate account keys nor leak into other transactions.
    let l = Ledger::new(LedgerConfig {
        programs: vec![
            LedgerConfig::default_programs()[0].clone(),
            backtest_ledger::SYSTEM_PROGRAM.to_owned(),
            "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA".to_owned(),
        ],
        first_slot: 0,
        last_slot: 49,
        ..LedgerConfig::default()
    })
    .unwrap();
    for data in slots(&l, 0..=49) {
        for tx in &data.transactions {
            check_transaction(&l, &data, tx);
        }
    }
}

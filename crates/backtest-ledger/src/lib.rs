//! Deterministic synthetic ledger.
//!
//! For a [`LedgerConfig`], every slot in `first_slot..=last_slot` holds
//! `txs_per_slot` transactions, each invoking exactly one configured program,
//! rendered as a real `EncodedConfirmedTransactionWithStatusMeta` JSON plus
//! the account diffs it caused. Generation is a pure function of
//! `(config, slot)`: any slot can be produced on demand, in any order, by any
//! thread, and always comes out byte-identical.
//!
//! The reference server streams these slots, tests compare captures against
//! them, and benchmarks use them as realistic frames.

#![warn(missing_docs)]

mod b58;
mod cache;
mod config;
mod diff;
mod keys;
mod rng;
mod slot;
mod transaction;
mod wire;

use std::sync::Arc;

pub use cache::DEFAULT_SLOT_CACHE_CAPACITY;
pub use config::{LedgerConfig, LedgerError};
pub use diff::{DiffKey, LedgerAccountDiff, RENT_EPOCH_EXEMPT, rent_exempt_minimum};
pub use keys::{ACCOUNTS_PER_PROGRAM, COMPUTE_BUDGET_PROGRAM, SYSTEM_PROGRAM};
pub use slot::SlotData;
pub use transaction::{BASE_FEE_LAMPORTS, LedgerTransaction};

use cache::SlotCache;
use keys::Universe;
use transaction::TxSpec;

/// Unix time of slot 0; block times grow by 2 seconds every 5 slots (400 ms slots).
pub const BLOCK_TIME_BASE: i64 = 1_700_000_000;

#[derive(Debug)]
struct Shared {
    config: LedgerConfig,
    universe: Universe,
    cache: SlotCache,
}

/// A validated synthetic ledger. Cheap to clone (one `Arc`); clones share
/// the slot cache. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Ledger {
    shared: Arc<Shared>,
}

impl Ledger {
    /// Validates `config` and precomputes the key pools; caches the last
    /// [`DEFAULT_SLOT_CACHE_CAPACITY`] generated slots.
    pub fn new(config: LedgerConfig) -> Result<Self, LedgerError> {
        Self::with_cache_capacity(config, DEFAULT_SLOT_CACHE_CAPACITY)
    }

    /// Like [`Ledger::new`] with an explicit slot cache size (0 disables it).
    pub fn with_cache_capacity(config: LedgerConfig, capacity: usize) -> Result<Self, LedgerError> {
        let program_bytes = config.validate()?;
        let universe = Universe::new(config.seed, &config.programs, &program_bytes);
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                universe,
                cache: SlotCache::new(capacity),
            }),
        })
    }

    /// The configuration this ledger was built from.
    pub fn config(&self) -> &LedgerConfig {
        &self.shared.config
    }

    /// The configured program ids, in configuration order.
    pub fn programs(&self) -> &[String] {
        &self.shared.config.programs
    }

    /// Whether `slot` lies in `first_slot..=last_slot`.
    pub fn contains(&self, slot: u64) -> bool {
        let c = &self.shared.config;
        (c.first_slot..=c.last_slot).contains(&slot)
    }

    /// Block time of `slot` in unix seconds: `BLOCK_TIME_BASE + slot * 2 / 5`,
    /// non-decreasing in `slot` (defined for any slot, in range or not).
    pub fn block_time(&self, slot: u64) -> i64 {
        BLOCK_TIME_BASE
            .saturating_add(i64::try_from(slot / 5 * 2 + slot % 5 * 2 / 5).unwrap_or(i64::MAX))
    }

    /// The slot's data, or `None` outside `first_slot..=last_slot`.
    /// Served from the bounded cache when recently generated.
    pub fn slot(&self, slot: u64) -> Option<Arc<SlotData>> {
        if !self.contains(slot) {
            return None;
        }
        if let Some(hit) = self.shared.cache.get(slot) {
            return Some(hit);
        }
        // Generate outside the lock; concurrent callers may both generate,
        // but the first insertion wins and both get the same Arc.
        let data = Arc::new(self.generate_slot(slot));
        Some(self.shared.cache.insert(data))
    }

    /// Generates `slot` without touching the cache (also for slots outside
    /// the configured range). Pure: same config and slot, same result.
    pub fn generate_slot(&self, slot: u64) -> SlotData {
        let c = &self.shared.config;
        let u = &self.shared.universe;
        let block_time = self.block_time(slot);
        let assignment = slot::assign_programs(c.seed, slot, c.txs_per_slot, u.programs.len());
        let transactions = assignment
            .iter()
            .enumerate()
            .map(|(i, &program)| {
                let tx_index = i as u32;
                transaction::generate(
                    u,
                    &TxSpec {
                        slot,
                        block_time,
                        tx_index,
                        batch_index: tx_index / c.batch_size,
                        program,
                    },
                )
            })
            .collect();
        SlotData {
            slot,
            block_time,
            transactions,
            batch_size: c.batch_size,
        }
    }

    /// Number of slots currently cached (never above [`Ledger::cache_capacity`]).
    pub fn cached_slots(&self) -> usize {
        self.shared.cache.len()
    }

    /// Maximum number of cached slots.
    pub fn cache_capacity(&self) -> usize {
        self.shared.cache.capacity()
    }

    /// The recurring accounts of `program` (base58), or `None` if it is not
    /// configured. Diffs of `program` only ever touch these accounts.
    pub fn program_accounts(&self, program: &str) -> Option<Vec<String>> {
        self.shared
            .universe
            .programs
            .iter()
            .find(|p| p.id.text == program)
            .map(|p| p.accounts.iter().map(|a| a.key.text.clone()).collect())
    }
}

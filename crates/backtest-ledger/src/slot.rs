//! A generated slot and the assignment of programs to its transactions.

use crate::rng::Rng;
use crate::transaction::LedgerTransaction;

const DOMAIN_ASSIGN: u64 = 0x4153_5347_0000_0001;

/// All transactions of one slot, in ledger order.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotData {
    /// The slot number.
    pub slot: u64,
    /// Unix seconds, see [`crate::Ledger::block_time`].
    pub block_time: i64,
    /// Transactions ordered by `tx_index`.
    pub transactions: Vec<LedgerTransaction>,
    /// Transactions per batch (copied from the config).
    pub(crate) batch_size: u32,
}

impl SlotData {
    /// Number of batches: `ceil(transactions / batch_size)`; the last batch
    /// may be shorter than `batch_size`.
    pub fn batch_count(&self) -> u32 {
        (self.transactions.len() as u32).div_ceil(self.batch_size)
    }

    /// Transactions of batch `index` (those with `batch_index == index`);
    /// empty when `index >= batch_count()`.
    pub fn batch(&self, index: u32) -> &[LedgerTransaction] {
        let len = self.transactions.len();
        let start = (index as usize)
            .saturating_mul(self.batch_size as usize)
            .min(len);
        let end = start.saturating_add(self.batch_size as usize).min(len);
        &self.transactions[start..end]
    }

    /// Iterates over all batches in order.
    pub fn batches(&self) -> impl Iterator<Item = &[LedgerTransaction]> {
        self.transactions.chunks(self.batch_size as usize)
    }

    /// Transactions invoking `program`, in ledger order.
    pub fn transactions_for<'a>(
        &'a self,
        program: &'a str,
    ) -> impl Iterator<Item = &'a LedgerTransaction> + 'a {
        self.transactions
            .iter()
            .filter(move |tx| tx.mentions(program))
    }
}

/// Which program (index into the config's list) each transaction invokes.
///
/// The first `min(txs, programs)` entries cover every program once, the rest
/// are drawn uniformly, then the whole list is shuffled. So every slot with
/// `txs_per_slot >= programs.len()` contains every program, at random
/// positions.
pub(crate) fn assign_programs(seed: u64, slot: u64, txs: u32, programs: usize) -> Vec<usize> {
    let mut rng = Rng::derive(DOMAIN_ASSIGN, &[seed, slot]);
    let txs = txs as usize;
    let mut out: Vec<usize> = Vec::with_capacity(txs);
    if txs >= programs {
        out.extend(0..programs);
    } else {
        // Not every program fits: pick a random subset without repetition.
        let mut all: Vec<usize> = (0..programs).collect();
        rng.shuffle(&mut all);
        out.extend_from_slice(&all[..txs]);
    }
    while out.len() < txs {
        out.push(rng.index(programs));
    }
    rng.shuffle(&mut out);
    out
}

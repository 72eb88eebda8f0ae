//! Ledger configuration and its validation.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Domain tag for deriving the default program ids.
const DEFAULT_PROGRAM_DOMAIN: u64 = 0xB4C7_7E57_0000_0001;

/// Everything that determines a synthetic ledger.
///
/// Two ledgers built from equal configs produce byte-identical slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LedgerConfig {
    /// Root of all randomness; different seeds give unrelated ledgers.
    pub seed: u64,
    /// Base58 32-byte program ids; every transaction invokes exactly one.
    pub programs: Vec<String>,
    /// Transactions in every slot (`>= 1`).
    pub txs_per_slot: u32,
    /// Transactions per batch within a slot (`>= 1`); the last batch of a
    /// slot may be shorter.
    pub batch_size: u32,
    /// First slot of the ledger (inclusive).
    pub first_slot: u64,
    /// Last slot of the ledger (inclusive, `>= first_slot`).
    pub last_slot: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            programs: Self::default_programs(),
            txs_per_slot: 8,
            batch_size: 4,
            first_slot: 1_000,
            last_slot: 100_999,
        }
    }
}

impl LedgerConfig {
    /// Three fixed, distinct, valid program ids (base58 of 32 bytes derived
    /// from constants), so callers and tests agree on them without config.
    pub fn default_programs() -> Vec<String> {
        (0..3u64)
            .map(|i| {
                let bytes = Rng::derive(DEFAULT_PROGRAM_DOMAIN, &[i]).bytes32();
                crate::b58::encode(&bytes)
            })
            .collect()
    }

    /// Number of slots in `first_slot..=last_slot` (saturating).
    pub fn slot_count(&self) -> u64 {
        self.last_slot
            .saturating_sub(self.first_slot)
            .saturating_add(1)
    }

    /// Checks the config and returns the decoded program ids, in order.
    pub(crate) fn validate(&self) -> Result<Vec<[u8; 32]>, LedgerError> {
        if self.programs.is_empty() {
            return Err(LedgerError::NoPrograms);
        }
        if self.txs_per_slot == 0 {
            return Err(LedgerError::ZeroTxsPerSlot);
        }
        if self.batch_size == 0 {
            return Err(LedgerError::ZeroBatchSize);
        }
        if self.first_slot > self.last_slot {
            return Err(LedgerError::InvalidSlotRange {
                first_slot: self.first_slot,
                last_slot: self.last_slot,
            });
        }
        let mut decoded: Vec<[u8; 32]> = Vec::with_capacity(self.programs.len());
        for (index, id) in self.programs.iter().enumerate() {
            let bytes = decode_pubkey(id).map_err(|reason| LedgerError::InvalidProgramId {
                index,
                id: id.clone(),
                reason,
            })?;
            if bytes == compute_budget_bytes() {
                return Err(LedgerError::ReservedProgram {
                    index,
                    id: id.clone(),
                });
            }
            if let Some(first) = decoded.iter().position(|d| *d == bytes) {
                return Err(LedgerError::DuplicateProgram {
                    id: id.clone(),
                    first,
                    second: index,
                });
            }
            decoded.push(bytes);
        }
        Ok(decoded)
    }
}

/// Bytes of the compute-budget program, which every transaction invokes.
fn compute_budget_bytes() -> [u8; 32] {
    decode_pubkey(crate::keys::COMPUTE_BUDGET_PROGRAM).expect("valid constant")
}

/// Decodes a base58 pubkey, explaining what is wrong when it is not one.
fn decode_pubkey(id: &str) -> Result<[u8; 32], String> {
    if id.is_empty() {
        return Err("empty string".to_owned());
    }
    let bytes = bs58::decode(id)
        .into_vec()
        .map_err(|e| format!("not base58: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("decodes to {} bytes, expected 32", bytes.len()))
}

/// Why a [`LedgerConfig`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// A program id is not a base58 encoding of 32 bytes.
    #[error("invalid program id #{index} {id:?}: {reason}")]
    InvalidProgramId {
        /// Position in `programs`.
        index: usize,
        /// The offending string.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `programs` is empty, so no transaction could be generated.
    #[error("program list is empty: at least one program id is required")]
    NoPrograms,
    /// The same program id is configured twice.
    #[error("duplicate program id {id} at positions {first} and {second}")]
    DuplicateProgram {
        /// The repeated id.
        id: String,
        /// Position of its first occurrence.
        first: usize,
        /// Position of the repetition.
        second: usize,
    },
    /// The compute-budget program cannot be configured: every transaction
    /// invokes it, which would break "each transaction invokes exactly one
    /// configured program".
    #[error(
        "program id #{index} {id} is the compute-budget program, which every transaction invokes; it cannot be a configured program"
    )]
    ReservedProgram {
        /// Position in `programs`.
        index: usize,
        /// The offending id.
        id: String,
    },
    /// `txs_per_slot` is zero.
    #[error("txs_per_slot must be at least 1")]
    ZeroTxsPerSlot,
    /// `batch_size` is zero.
    #[error("batch_size must be at least 1")]
    ZeroBatchSize,
    /// `first_slot > last_slot`.
    #[error("invalid slot range: first_slot {first_slot} > last_slot {last_slot}")]
    InvalidSlotRange {
        /// Configured first slot.
        first_slot: u64,
        /// Configured last slot.
        last_slot: u64,
    },
}

//! Pubkeys the generator draws from: well-known native programs, a payer
//! pool per seed and an account pool per program.
//!
//! Everything here is computed once in [`crate::Ledger::new`], so per-slot
//! generation never base58-encodes a recurring key again.

use crate::rng::Rng;

/// The compute-budget program every generated transaction invokes first.
pub const COMPUTE_BUDGET_PROGRAM: &str = "ComputeBudget111111111111111111111111111111";
/// The system program, used for inner (CPI) transfers.
pub const SYSTEM_PROGRAM: &str = "11111111111111111111111111111111";
/// Read-only keys sprinkled into transactions to reach realistic key counts.
const EXTRA_READONLY: [&str; 6] = [
    "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
    "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL",
    "SysvarRent111111111111111111111111111111111",
    "SysvarC1ock11111111111111111111111111111111",
    "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr",
    "Sysvar1nstructions1111111111111111111111111",
];

/// Accounts per program pool; small enough that accounts recur across slots.
pub const ACCOUNTS_PER_PROGRAM: usize = 64;
/// Fee payers per seed.
pub const PAYER_POOL: usize = 256;

const DOMAIN_PAYER: u64 = 0x5041_5945_5200_0001;
const DOMAIN_POOL: u64 = 0x504F_4F4C_0000_0001;

/// A pubkey in both representations (base58 text for JSON, bytes for wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub text: String,
    pub bytes: [u8; 32],
}

impl Key {
    /// Key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            text: crate::b58::encode(&bytes),
            bytes,
        }
    }

    /// Key from a base58 constant known to be valid.
    fn from_const(text: &str) -> Self {
        let mut bytes = [0u8; 32];
        let n = bs58::decode(text)
            .onto(&mut bytes[..])
            .expect("well-known key constants are valid base58");
        assert_eq!(n, 32, "well-known key {text} must be 32 bytes");
        Self {
            text: text.to_owned(),
            bytes,
        }
    }
}

/// One recurring account owned by a program.
#[derive(Debug, Clone)]
pub(crate) struct PoolAccount {
    pub key: Key,
    /// Data length; fixed per account so it is stable across slots.
    pub space: u64,
}

/// A configured program and its account pool.
#[derive(Debug, Clone)]
pub(crate) struct ProgramPool {
    pub id: Key,
    pub accounts: Vec<PoolAccount>,
}

/// All precomputed keys of one ledger.
#[derive(Debug, Clone)]
pub(crate) struct Universe {
    pub seed: u64,
    pub programs: Vec<ProgramPool>,
    pub payers: Vec<Key>,
    pub compute_budget: Key,
    pub system: Key,
    pub extra_readonly: Vec<Key>,
    /// Whether the system program is itself configured (then no other
    /// program's transaction may CPI into it).
    pub system_configured: bool,
}

impl Universe {
    /// Builds the key universe for `seed` and the (validated) programs.
    pub fn new(seed: u64, programs: &[String], program_bytes: &[[u8; 32]]) -> Self {
        let programs = programs
            .iter()
            .zip(program_bytes)
            .map(|(text, bytes)| {
                let words = words_of(bytes);
                let accounts = (0..ACCOUNTS_PER_PROGRAM as u64)
                    .map(|i| {
                        let mut rng = Rng::derive(
                            DOMAIN_POOL,
                            &[seed, words[0], words[1], words[2], words[3], i],
                        );
                        let key = Key::from_bytes(rng.bytes32());
                        let space = 40 + rng.below(72) * 8;
                        PoolAccount { key, space }
                    })
                    .collect();
                ProgramPool {
                    id: Key {
                        text: text.clone(),
                        bytes: *bytes,
                    },
                    accounts,
                }
            })
            .collect();
        let payers = (0..PAYER_POOL as u64)
            .map(|i| Key::from_bytes(Rng::derive(DOMAIN_PAYER, &[seed, i]).bytes32()))
            .collect();
        let system = Key::from_const(SYSTEM_PROGRAM);
        Self {
            seed,
            programs,
            payers,
            compute_budget: Key::from_const(COMPUTE_BUDGET_PROGRAM),
            // Configured programs must only appear in their own transactions.
            extra_readonly: EXTRA_READONLY
                .iter()
                .map(|k| Key::from_const(k))
                .filter(|k| !program_bytes.contains(&k.bytes))
                .collect(),
            system_configured: program_bytes.contains(&system.bytes),
            system,
        }
    }
}

/// The four little-endian words of a 32-byte key, for hashing.
fn words_of(bytes: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (w, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
    }
    out
}

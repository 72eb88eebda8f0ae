//! Bincode wire format of a (legacy or v0) Solana transaction, written by
//! hand so `wire_bytes` are a real, decodable serialized transaction.

/// One compiled instruction, as it appears on the wire and in JSON.
#[derive(Debug, Clone)]
pub(crate) struct CompiledIx {
    pub program_id_index: u8,
    pub accounts: Vec<u8>,
    pub data: Vec<u8>,
}

/// Appends `len` in Solana's compact-u16 ("short vec") encoding.
pub(crate) fn push_compact_len(out: &mut Vec<u8>, len: usize) {
    let mut rem = u16::try_from(len).expect("short-vec length fits in u16");
    loop {
        let mut byte = (rem & 0x7f) as u8;
        rem >>= 7;
        if rem == 0 {
            out.push(byte);
            return;
        }
        byte |= 0x80;
        out.push(byte);
    }
}

/// Serializes a single-signer transaction.
///
/// `v0` selects the versioned message format (prefix `0x80`, empty
/// address-table lookups); otherwise the legacy format is written.
pub(crate) fn serialize_transaction(
    signature: &[u8; 64],
    header: [u8; 3],
    keys: &[&[u8; 32]],
    blockhash: &[u8; 32],
    instructions: &[CompiledIx],
    v0: bool,
) -> Vec<u8> {
    let data_len: usize = instructions
        .iter()
        .map(|ix| 6 + ix.accounts.len() + ix.data.len())
        .sum();
    let mut out = Vec::with_capacity(72 + keys.len() * 32 + 40 + data_len);
    push_compact_len(&mut out, 1);
    out.extend_from_slice(signature);
    if v0 {
        out.push(0x80);
    }
    out.extend_from_slice(&header);
    push_compact_len(&mut out, keys.len());
    for key in keys {
        out.extend_from_slice(&key[..]);
    }
    out.extend_from_slice(blockhash);
    push_compact_len(&mut out, instructions.len());
    for ix in instructions {
        out.push(ix.program_id_index);
        push_compact_len(&mut out, ix.accounts.len());
        out.extend_from_slice(&ix.accounts);
        push_compact_len(&mut out, ix.data.len());
        out.extend_from_slice(&ix.data);
    }
    if v0 {
        push_compact_len(&mut out, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_u16_matches_solana_encoding() {
        let cases: [(usize, &[u8]); 5] = [
            (0, &[0x00]),
            (0x7f, &[0x7f]),
            (0x80, &[0x80, 0x01]),
            (0x3fff, &[0xff, 0x7f]),
            (0x4000, &[0x80, 0x80, 0x01]),
        ];
        for (len, expected) in cases {
            let mut out = Vec::new();
            push_compact_len(&mut out, len);
            assert_eq!(out, expected, "len {len}");
        }
    }
}

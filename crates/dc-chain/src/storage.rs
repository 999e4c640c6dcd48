//! The live DCChain `DcNode` pallet storage, decoded from SCALE.
//!
//! - `DcProgram: Option<DcProgramInfo>`: `origin_url, mirror_url, enclave_id, version` (each a
//!   `Vec<u8>`), followed on the live chain by `mirror_cids: Vec<Vec<u8>>`; both layouts are
//!   accepted, nothing else (trailing bytes are an error).
//! - `EnclaveIds: Option<BTreeSet<(u32, Vec<u8>, Vec<u8>)>>`: (block number, enclave id,
//!   signature), encoded as a compact length and the tuples in order.

use parity_scale_codec::{Compact, Decode};

use crate::ChainError;

/// `twox128("DcNode") ++ twox128("DcProgram")`
pub fn dc_program_key() -> Vec<u8> {
    storage_key("DcNode", "DcProgram")
}

/// `twox128("DcNode") ++ twox128("EnclaveIds")`
pub fn enclave_ids_key() -> Vec<u8> {
    storage_key("DcNode", "EnclaveIds")
}

pub fn storage_key(pallet: &str, item: &str) -> Vec<u8> {
    [
        sp_crypto_hashing::twox_128(pallet.as_bytes()),
        sp_crypto_hashing::twox_128(item.as_bytes()),
    ]
    .concat()
}

/// Largest storage value we decode.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Largest byte string inside a value (URL, enclave id, signature, CID).
pub const MAX_FIELD_BYTES: usize = 4096;
/// Most entries in `EnclaveIds` or mirror CIDs.
pub const MAX_ENTRIES: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcProgramInfo {
    pub origin_url: Vec<u8>,
    pub mirror_url: Vec<u8>,
    pub enclave_id: Vec<u8>,
    pub version: Vec<u8>,
    /// Present on the live chain's newer layout.
    pub mirror_cids: Option<Vec<Vec<u8>>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnclaveIdEntry {
    pub block: u32,
    pub enclave_id: Vec<u8>,
    pub signature: Vec<u8>,
}

fn bytes(input: &mut &[u8], what: &str) -> Result<Vec<u8>, ChainError> {
    let len = Compact::<u32>::decode(input)
        .map_err(|e| ChainError::Decode(format!("{what}: length: {e}")))?
        .0 as usize;
    if len > MAX_FIELD_BYTES {
        return Err(ChainError::Decode(format!(
            "{what}: {len} bytes, over the {MAX_FIELD_BYTES}-byte limit"
        )));
    }
    if input.len() < len {
        return Err(ChainError::Decode(format!("{what}: truncated")));
    }
    let (a, rest) = input.split_at(len);
    *input = rest;
    Ok(a.to_vec())
}

fn count(input: &mut &[u8], what: &str) -> Result<usize, ChainError> {
    let n = Compact::<u32>::decode(input)
        .map_err(|e| ChainError::Decode(format!("{what}: count: {e}")))?
        .0 as usize;
    if n > MAX_ENTRIES {
        return Err(ChainError::Decode(format!(
            "{what}: {n} entries, over the {MAX_ENTRIES} limit"
        )));
    }
    Ok(n)
}

fn check_size(v: &[u8]) -> Result<(), ChainError> {
    if v.len() > MAX_VALUE_BYTES {
        return Err(ChainError::TooLarge {
            got: v.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

impl DcProgramInfo {
    pub fn decode(value: &[u8]) -> Result<Self, ChainError> {
        check_size(value)?;
        let mut input = value;
        let origin_url = bytes(&mut input, "origin_url")?;
        let mirror_url = bytes(&mut input, "mirror_url")?;
        let enclave_id = bytes(&mut input, "enclave_id")?;
        let version = bytes(&mut input, "version")?;
        let mirror_cids = if input.is_empty() {
            None
        } else {
            let n = count(&mut input, "mirror_cids")?;
            Some(
                (0..n)
                    .map(|_| bytes(&mut input, "mirror_cid"))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        if !input.is_empty() {
            return Err(ChainError::Decode(format!(
                "{} trailing bytes after DcProgramInfo",
                input.len()
            )));
        }
        Ok(Self {
            origin_url,
            mirror_url,
            enclave_id,
            version,
            mirror_cids,
        })
    }

    /// A byte field as text for display (lossy).
    pub fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }
}

impl EnclaveIdEntry {
    pub fn decode_set(value: &[u8]) -> Result<Vec<Self>, ChainError> {
        check_size(value)?;
        let mut input = value;
        let n = count(&mut input, "EnclaveIds")?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let block = u32::decode(&mut input)
                .map_err(|e| ChainError::Decode(format!("block number: {e}")))?;
            out.push(Self {
                block,
                enclave_id: bytes(&mut input, "enclave_id")?,
                signature: bytes(&mut input, "signature")?,
            });
        }
        if !input.is_empty() {
            return Err(ChainError::Decode(format!(
                "{} trailing bytes after EnclaveIds",
                input.len()
            )));
        }
        Ok(out)
    }
}

/// SCALE encoders, for tests and for writing fixtures into a test chain.
pub mod encode {
    use parity_scale_codec::{Compact, Encode};

    use super::{DcProgramInfo, EnclaveIdEntry};

    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        Compact(b.len() as u32).encode_to(out);
        out.extend_from_slice(b);
    }

    pub fn dc_program(p: &DcProgramInfo) -> Vec<u8> {
        let mut o = Vec::new();
        for f in [&p.origin_url, &p.mirror_url, &p.enclave_id, &p.version] {
            bytes(&mut o, f);
        }
        if let Some(c) = &p.mirror_cids {
            Compact(c.len() as u32).encode_to(&mut o);
            c.iter().for_each(|x| bytes(&mut o, x));
        }
        o
    }

    /// Entries in BTreeSet order (sorted), as the runtime stores them.
    pub fn enclave_ids(entries: &[EnclaveIdEntry]) -> Vec<u8> {
        let mut sorted: Vec<(u32, Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|e| (e.block, e.enclave_id.clone(), e.signature.clone()))
            .collect();
        sorted.sort();
        sorted.dedup();
        sorted.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parity_scale_codec::Encode;

    #[test]
    fn storage_keys_match_the_live_chain() {
        assert_eq!(
            hex::encode(dc_program_key()),
            "50d202ba26a5dc6d31e538a4e0cd17841d35a94bc7b69a03184ec1a08dfd1aca"
        );
        assert_eq!(
            hex::encode(enclave_ids_key()),
            "50d202ba26a5dc6d31e538a4e0cd1784586d4cc1e7a585a09f8649ae5093203f"
        );
    }

    fn program(cids: Option<Vec<Vec<u8>>>) -> DcProgramInfo {
        DcProgramInfo {
            origin_url: b"https://origin/dcnode.tar".to_vec(),
            mirror_url: b"https://mirror/dcnode.tar".to_vec(),
            enclave_id: b"ab".repeat(32),
            version: b"0.2.1".to_vec(),
            mirror_cids: cids,
        }
    }

    #[test]
    fn dc_program_hand_built_four_fields_and_with_cids() {
        // Built by hand: compact(len) ‖ bytes for each field.
        let mut v = Vec::new();
        for f in [&b"o"[..], b"m", b"e", b"1.0.0"] {
            v.push((f.len() as u8) << 2);
            v.extend_from_slice(f);
        }
        let p = DcProgramInfo::decode(&v).unwrap();
        assert_eq!(p.version, b"1.0.0");
        assert_eq!(p.mirror_cids, None);
        let mut with = v.clone();
        with.extend_from_slice(&[2 << 2, 1 << 2, b'x', 0]);
        assert_eq!(
            DcProgramInfo::decode(&with).unwrap().mirror_cids,
            Some(vec![b"x".to_vec(), vec![]])
        );
        // Our encoder agrees with parity-scale-codec's own.
        let p = program(Some(vec![b"bafy".to_vec()]));
        let reference = (
            &p.origin_url,
            &p.mirror_url,
            &p.enclave_id,
            &p.version,
            p.mirror_cids.as_ref().unwrap(),
        )
            .encode();
        assert_eq!(encode::dc_program(&p), reference);
        assert_eq!(DcProgramInfo::decode(&reference).unwrap(), p);
    }

    #[test]
    fn dc_program_garbage_is_an_error_never_a_panic() {
        let good = encode::dc_program(&program(None));
        for n in 0..good.len() {
            assert!(DcProgramInfo::decode(&good[..n]).is_err(), "prefix {n}");
        }
        let mut trailing = encode::dc_program(&program(Some(vec![])));
        trailing.push(7);
        assert!(DcProgramInfo::decode(&trailing).is_err());
        // A length claiming 1 GiB.
        assert!(DcProgramInfo::decode(&[0xFE, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(matches!(
            DcProgramInfo::decode(&vec![0; MAX_VALUE_BYTES + 1]),
            Err(ChainError::TooLarge { .. })
        ));
    }

    #[test]
    fn enclave_ids_roundtrip_and_limits() {
        let entries = vec![
            EnclaveIdEntry {
                block: 7,
                enclave_id: b"ab".repeat(32),
                signature: b"bsig1".to_vec(),
            },
            EnclaveIdEntry {
                block: 3,
                enclave_id: b"cd".repeat(32),
                signature: b"bsig2".to_vec(),
            },
        ];
        let v = encode::enclave_ids(&entries);
        let set: std::collections::BTreeSet<(u32, Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|e| (e.block, e.enclave_id.clone(), e.signature.clone()))
            .collect();
        assert_eq!(v, set.encode(), "a BTreeSet encodes as its sorted elements");
        let d = EnclaveIdEntry::decode_set(&v).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].block, 3);
        for n in 0..v.len() {
            assert!(EnclaveIdEntry::decode_set(&v[..n]).is_err(), "prefix {n}");
        }
        let mut huge_count = Vec::new();
        Compact(1_000_000u32).encode_to(&mut huge_count);
        assert!(EnclaveIdEntry::decode_set(&huge_count).is_err());
        assert!(EnclaveIdEntry::decode_set(&[0]).unwrap().is_empty());
    }
}

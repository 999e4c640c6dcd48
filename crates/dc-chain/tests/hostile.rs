//! Hostile SCALE values from the chain: any bytes decode or are refused, never a panic, and
//! every value we can encode decodes back to itself.
//! Longer runs: `PROPTEST_CASES=100000 cargo test -p dc-chain --test hostile`.

use dc_chain::storage::{encode, DcProgramInfo, EnclaveIdEntry};
use proptest::prelude::*;

fn field() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..80)
}

proptest! {
    #[test]
    fn arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = DcProgramInfo::decode(&b);
        let _ = EnclaveIdEntry::decode_set(&b);
    }

    #[test]
    fn dc_program_roundtrip(o in field(), m in field(), e in field(), v in field(), cids in proptest::option::of(proptest::collection::vec(field(), 0..4))) {
        let p = DcProgramInfo { origin_url: o, mirror_url: m, enclave_id: e, version: v, mirror_cids: cids };
        prop_assert_eq!(DcProgramInfo::decode(&encode::dc_program(&p)).unwrap(), p);
    }

    #[test]
    fn enclave_ids_roundtrip(entries in proptest::collection::vec((any::<u32>(), field(), field()), 0..8)) {
        let es: Vec<EnclaveIdEntry> = entries.into_iter().map(|(block, enclave_id, signature)| EnclaveIdEntry { block, enclave_id, signature }).collect();
        let decoded = EnclaveIdEntry::decode_set(&encode::enclave_ids(&es)).unwrap();
        let mut want: Vec<_> = es.iter().map(|e| (e.block, e.enclave_id.clone(), e.signature.clone())).collect();
        want.sort();
        want.dedup();
        let got: Vec<_> = decoded.iter().map(|e| (e.block, e.enclave_id.clone(), e.signature.clone())).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn truncated_values_are_refused(o in field(), v in field(), cut in any::<usize>()) {
        let p = DcProgramInfo { origin_url: o, mirror_url: vec![], enclave_id: vec![1; 64], version: v, mirror_cids: None };
        let b = encode::dc_program(&p);
        let n = cut % b.len();
        prop_assert!(DcProgramInfo::decode(&b[..n]).is_err());
    }
}

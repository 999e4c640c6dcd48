//! Hostile input for the SGX structures and sealed blobs: any bytes are either refused with an
//! error or accepted only if they re-encode to exactly themselves; nothing panics.
//! Longer runs: `PROPTEST_CASES=100000 cargo test -p dc-tee --test hostile`.

use dc_tee::seal::{open_with_key, parse, seal_key_request, seal_with_key, SealPolicy};
use dc_tee::sgx::{KeyRequest, Report, TargetInfo};
use dc_tee::{Key128, KeyId};
use proptest::prelude::*;

fn near(len: usize) -> impl Strategy<Value = Vec<u8>> {
    // Mostly the right length (so the reserved-byte checks are exercised), sometimes not.
    prop_oneof![
        proptest::collection::vec(any::<u8>(), len..=len),
        proptest::collection::vec(any::<u8>(), 0..len + 64),
        proptest::collection::vec(0u8..2, len..=len),
    ]
}

proptest! {
    #[test]
    fn report_bytes(b in near(Report::LEN)) {
        if let Ok(r) = Report::from_bytes(&b) {
            prop_assert_eq!(r.to_bytes().to_vec(), b);
        }
    }

    #[test]
    fn target_info_bytes(b in near(TargetInfo::LEN)) {
        if let Ok(t) = TargetInfo::from_bytes(&b) {
            prop_assert_eq!(t.to_bytes().to_vec(), b);
        }
    }

    #[test]
    fn key_request_bytes(b in near(KeyRequest::LEN)) {
        if let Ok(k) = KeyRequest::from_bytes(&b) {
            prop_assert_eq!(k.to_bytes().to_vec(), b);
        }
    }

    #[test]
    fn sealed_blob_bytes(b in proptest::collection::vec(any::<u8>(), 0..2048), key in any::<[u8; 16]>()) {
        if let Ok(p) = parse(&b) {
            // A random blob never opens (the AEAD tag would have to be forged).
            prop_assert!(open_with_key(&p, &Key128::new(key), b"").is_err());
        }
    }

    #[test]
    fn sealed_blob_mutations(data in proptest::collection::vec(any::<u8>(), 0..256), pos in any::<usize>(), bit in 0u8..8) {
        let me = Report::from_bytes(&[0u8; Report::LEN]).unwrap();
        let req = seal_key_request(SealPolicy::MrEnclave, &me, KeyId([3; 32]));
        let key = Key128::new([9; 16]);
        let blob = seal_with_key(&req, &key, b"aad", &data).unwrap().0;
        prop_assert_eq!(&open_with_key(&parse(&blob).unwrap(), &key, b"aad").unwrap()[..], &data[..]);
        let mut bad = blob.clone();
        let i = pos % bad.len();
        bad[i] ^= 1 << bit;
        let opened = parse(&bad).and_then(|p| open_with_key(&p, &key, b"aad"));
        prop_assert!(opened.is_err(), "a flipped bit at {} went unnoticed", i);
    }
}

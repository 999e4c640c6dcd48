//! Hostile release records, revocations, multibase text and legacy EnclaveIds entries: refused
//! or accepted, never a panic, and never accepted without a committee signature.
//! Longer runs: `PROPTEST_CASES=20000 cargo test -p dc-release --test hostile`.

use dc_release::committee::CommitteeSigner;
use dc_release::revocation::SignedRevocation;
use dc_release::{legacy, multibase, Committee, SignedRecord};
use proptest::prelude::*;

fn committee() -> Committee {
    Committee::new([CommitteeSigner::from_seed([1; 32]).public()], 1).unwrap()
}

proptest! {
    #[test]
    fn arbitrary_text(text in ".{0,400}") {
        let _ = SignedRecord::parse(text.as_bytes());
        let _ = SignedRevocation::parse(text.as_bytes());
        let _ = multibase::decode(&text);
    }

    #[test]
    fn structured_records_without_a_valid_signature_are_refused(
        product in ".{0,12}", version in "[0-9.a-z]{0,10}", mre in "[0-9a-fA-F]{0,70}", svn in any::<u16>(), sha in "[0-9a-f]{0,70}", size in any::<u64>(), url in ".{0,30}", sig in ".{0,120}",
    ) {
        let json = serde_json::json!({
            "record": { "product": product, "role": "node", "version": version, "mr_enclave": mre, "isv_svn": svn,
                        "artifact": { "sha256": sha, "size": size, "urls": [url] } },
            "signatures": [{ "key": CommitteeSigner::from_seed([1; 32]).public().to_text(), "signature": sig }],
        });
        if let Ok(r) = SignedRecord::parse(json.to_string().as_bytes()) {
            prop_assert!(r.verify(&committee(), 0).is_err());
        }
    }

    #[test]
    fn legacy_entries_need_the_committee(id in proptest::collection::vec(any::<u8>(), 0..80), sig in proptest::collection::vec(any::<u8>(), 0..140)) {
        prop_assert!(legacy::authorize(&committee(), &id, [(id.as_slice(), sig.as_slice())]).is_err());
    }
}

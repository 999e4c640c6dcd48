//! Hostile input for the handover: arbitrary JSON, keyrings, and arbitrary (well-formed-JSON)
//! messages fed to live holder and receiver state machines. Nothing panics, and no arbitrary
//! message ever makes the holder release keys or the receiver accept any.
//! Longer runs: `PROPTEST_CASES=20000 cargo test -p dc-handover --test hostile`.

use std::sync::Arc;

use dc_handover::messages::{Ack, Challenge, Hello, Keys, Response};
use dc_handover::{
    Holder, HolderConfig, Keyring, PeerRole, Receiver, ReceiverConfig, StaticAllowList, Version,
};
use dc_tee_sim::platform::{test_identity, InProcessTee, Platform};
use proptest::prelude::*;
use rand_core::{OsRng, TryRngCore};
use zeroize::Zeroizing;

fn tees() -> (InProcessTee, InProcessTee, StaticAllowList) {
    let p = Arc::new(Platform::new(
        Zeroizing::new([1; 32]),
        dc_tee::CpuSvn([1; 16]),
        dc_tee::KeyId([2; 32]),
    ));
    let (n, a) = (test_identity(1, 9, 1, false), test_identity(2, 8, 1, false));
    let allow = StaticAllowList::new()
        .allow(n.mr_enclave, PeerRole::Node(Version::new(1, 0, 0)))
        .allow(a.mr_enclave, PeerRole::Upgrader);
    (
        InProcessTee::new(p.clone(), n),
        InProcessTee::new(p, a),
        allow,
    )
}

fn hcfg() -> HolderConfig {
    HolderConfig {
        allow_debug_peers: false,
        min_node_version: Version::new(1, 0, 0),
        allow_upgrader: true,
        challenge_ttl_ms: 10_000,
        max_pending: 8,
        authorization: vec![],
    }
}

fn bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| v.try_into().unwrap())
}

proptest! {
    #[test]
    fn arbitrary_json_messages(text in ".{0,300}") {
        let _ = serde_json::from_str::<Hello>(&text);
        let _ = serde_json::from_str::<Challenge>(&text);
        let _ = serde_json::from_str::<Response>(&text);
        let _ = serde_json::from_str::<Keys>(&text);
        let _ = serde_json::from_str::<Ack>(&text);
    }

    #[test]
    fn arbitrary_keyrings(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(k) = Keyring::decode(&b) {
            prop_assert_eq!(k.encode().to_vec(), b);
        }
    }

    #[test]
    fn holder_never_releases_keys_for_an_arbitrary_response(
        report in bytes::<432>(), pk in bytes::<32>(), auth in proptest::collection::vec(any::<u8>(), 0..64), real_session in any::<bool>(), other in bytes::<16>(),
    ) {
        let (htee, _, allow) = tees();
        let mut h = Holder::new(&htee, hcfg(), allow).unwrap();
        let hello = Hello { target_info: test_identity(2, 8, 1, false).target_info().to_bytes() };
        let ch = h.on_hello(&htee, &hello, 1, &mut OsRng.unwrap_err()).unwrap();
        let ring = Keyring::generate(&["k"], &mut OsRng.unwrap_err()).unwrap();
        let resp = Response { session: if real_session { ch.session } else { other }, receiver_report: report, hpke_public_key: pk, receiver_authorization: auth.clone(), destination: auth };
        prop_assert!(h.on_response(&htee, &resp, &ring, 2, &mut OsRng.unwrap_err()).is_err());
        let ack = Ack { session: ch.session, receiver_report: report, keyring_fingerprint: pk };
        prop_assert!(h.on_ack(&htee, &ack, 3).is_err());
    }

    #[test]
    fn receiver_never_accepts_arbitrary_challenges_or_keys(
        report in bytes::<432>(), nonce in bytes::<32>(), session in bytes::<16>(), enc in bytes::<32>(), ct in proptest::collection::vec(any::<u8>(), 0..200), expires in any::<u64>(),
    ) {
        let (_, rtee, allow) = tees();
        let cfg = ReceiverConfig { allow_debug_peers: false, authorization: vec![], destination: vec![], expect_released_to: None };
        let (mut r, _) = Receiver::start(&rtee, cfg, allow, &mut OsRng.unwrap_err()).unwrap();
        let ch = Challenge { session, nonce, expires_at_ms: expires, holder_report: report, holder_authorization: vec![] };
        prop_assert!(r.on_challenge(&rtee, &ch, 1).is_err());
        let keys = Keys { session, encapsulated_key: enc, ciphertext: ct, holder_report: report };
        prop_assert!(r.on_keys(&rtee, &keys).is_err());
    }
}

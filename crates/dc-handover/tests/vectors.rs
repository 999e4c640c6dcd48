//! Deterministic test vectors for `docs/protocol.md` §9. Fixed platform secret, identities,
//! clock and fixed random streams give the exact bytes of every message; this test fails if
//! the code and the document disagree. Every value another implementation needs to recompute
//! the messages is published and checked here: both HPKE key pairs (the holder's ephemeral
//! one too), the transcript hashes, and the REPORT keys that verify each report's MAC. To
//! regenerate after an intended protocol change:
//! `DC_UPDATE_VECTORS=1 cargo test -p dc-handover --test vectors`.

use std::sync::Arc;

use dc_handover::{
    transcript, Destination, Holder, HolderConfig, Keyring, PeerRole, Receiver, ReceiverConfig,
    StaticAllowList, Version,
};
use dc_tee::{KeyRequest, Report, Tee};
use dc_tee_sim::platform::{test_identity, InProcessTee, Platform};
use hpke::{Deserializable, Kem as _, Serializable};
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A deterministic byte stream: block i (from 0) is SHA-256(SHA-256(label) ‖ u64_le(i)), and
/// the stream is the concatenation of the blocks. Test vectors only.
struct Stream {
    seed: [u8; 32],
    counter: u64,
    buf: Vec<u8>,
}

impl Stream {
    fn new(label: &str) -> Self {
        Self {
            seed: Sha256::digest(label.as_bytes()).into(),
            counter: 0,
            buf: Vec::new(),
        }
    }
}

impl rand_core::RngCore for Stream {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for d in dst {
            if self.buf.is_empty() {
                let mut h = Sha256::new();
                h.update(self.seed);
                h.update(self.counter.to_le_bytes());
                self.counter += 1;
                self.buf = h.finalize().to_vec();
            }
            *d = self.buf.remove(0);
        }
    }
}

impl rand_core::CryptoRng for Stream {}

type Kem = hpke::kem::X25519HkdfSha256;

fn generate() -> String {
    let report_key_id = dc_tee::KeyId([0x24; 32]);
    let platform = Arc::new(Platform::new(
        Zeroizing::new([0x42; 32]),
        dc_tee::CpuSvn([1; 16]),
        report_key_id,
    ));
    let node = test_identity(0x11, 0xAA, 1, false);
    let destination = Destination {
        mr_enclave: test_identity(0x22, 0xAA, 2, false).mr_enclave,
        version: Version::new(2, 0, 0),
        isv_svn: 2,
    };
    let agent = test_identity(0x33, 0xBB, 1, false);
    let (htee, rtee) = (
        InProcessTee::new(platform.clone(), node),
        InProcessTee::new(platform, agent),
    );
    let allow = StaticAllowList::new()
        .allow(node.mr_enclave, PeerRole::Node(Version::new(1, 0, 0)))
        .allow(agent.mr_enclave, PeerRole::Upgrader)
        .allow_destination(b"destination-evidence", destination);
    let ring = Keyring::new(
        1,
        vec![
            ("data".into(), 1, Zeroizing::new(vec![0xD0; 32])),
            ("node-identity".into(), 1, Zeroizing::new(vec![0x1D; 32])),
        ],
    )
    .unwrap();
    let now = 1_700_000_000_000u64;
    let cfg = HolderConfig {
        allow_debug_peers: false,
        min_node_version: Version::new(1, 0, 0),
        allow_upgrader: true,
        challenge_ttl_ms: 30_000,
        max_pending: 8,
        authorization: b"holder-authorization".to_vec(),
    };
    let rcfg = ReceiverConfig {
        allow_debug_peers: false,
        authorization: b"receiver-authorization".to_vec(),
        destination: b"destination-evidence".to_vec(),
        expect_released_to: Some(destination),
    };
    let mut holder = Holder::new(&htee, cfg, allow.clone()).unwrap();
    let mut hrng = Stream::new("dc-handover vectors: holder");
    let mut rrng = Stream::new("dc-handover vectors: receiver");

    // The receiver's ephemeral key pair is DeriveKeyPair of the first 32 bytes of its stream.
    let mut ikm = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut Stream::new("dc-handover vectors: receiver"), &mut ikm);
    let (sk, pk) = Kem::derive_keypair(&ikm);
    // The holder's stream gives the session id (16 bytes) and the nonce (32) at hello, then
    // the IKM of its HPKE ephemeral key pair (32) at the response.
    let mut holder_stream = [0u8; 80];
    rand_core::RngCore::fill_bytes(
        &mut Stream::new("dc-handover vectors: holder"),
        &mut holder_stream,
    );
    let eph_ikm: [u8; 32] = holder_stream[48..80].try_into().unwrap();
    let (eph_sk, eph_pk) = Kem::derive_keypair(&eph_ikm);

    let (mut receiver, hello) = Receiver::start(&rtee, rcfg, allow, &mut rrng).unwrap();
    let challenge = holder.on_hello(&htee, &hello, now, &mut hrng).unwrap();
    let response = receiver.on_challenge(&rtee, &challenge, now + 5).unwrap();
    assert_eq!(response.hpke_public_key[..], pk.to_bytes()[..]);
    let keys = holder
        .on_response(&htee, &response, &ring, now + 10, &mut hrng)
        .unwrap();
    let received = receiver.on_keys(&rtee, &keys).unwrap();
    let mut released = ring.clone();
    released.custody_mut().released_to = Some(destination);
    assert!(received.keyring.ct_eq(&released));
    let ack = receiver.ack(&rtee).unwrap();
    let delivered = holder.on_ack(&htee, &ack, now + 15).unwrap().reply;

    assert_eq!(challenge.session[..], holder_stream[..16]);
    assert_eq!(challenge.nonce[..], holder_stream[16..48]);
    // enc is the public key of the published ephemeral secret.
    assert_eq!(keys.encapsulated_key[..], eph_pk.to_bytes()[..]);

    let rd = |b: &[u8; 432]| hex::encode(Report::from_bytes(b).unwrap().report_data.0);
    // Recompute each transcript hash from its definition, independently of the state machines.
    let ti = dc_tee::TargetInfo::from_bytes(&hello.target_info).unwrap();
    let t1 = transcript::challenge(
        &challenge.session,
        &challenge.nonce,
        challenge.expires_at_ms,
        &ti,
        &challenge.holder_authorization,
    );
    let t2 = transcript::response(
        &t1,
        &challenge.holder_report,
        &node.mr_enclave,
        &agent.mr_enclave,
        &response.hpke_public_key,
        &response.receiver_authorization,
        &response.destination,
    );
    let t3 = transcript::keys(&t2, &keys.encapsulated_key, &keys.ciphertext);
    let t4 = transcript::ack(&t3, &ack.keyring_fingerprint);
    assert_eq!(rd(&challenge.holder_report), hex::encode(t1.0));
    assert_eq!(rd(&response.receiver_report), hex::encode(t2.0));
    assert_eq!(rd(&keys.holder_report), hex::encode(t3.0));
    assert_eq!(rd(&ack.receiver_report), hex::encode(t4.0));
    // And the HPKE opening with the published secret key.
    let opened =
        hpke::single_shot_open::<hpke::aead::ChaCha20Poly1305, hpke::kdf::HkdfSha256, Kem>(
            &hpke::OpModeR::Base,
            &<Kem as hpke::Kem>::PrivateKey::from_bytes(&sk.to_bytes()).unwrap(),
            &<Kem as hpke::Kem>::EncappedKey::from_bytes(&keys.encapsulated_key).unwrap(),
            &transcript::hpke_info(&t2),
            &keys.ciphertext,
            &t2.0,
        )
        .unwrap();
    assert_eq!(opened, released.encode().to_vec());
    // The holder's side recomputed: sealing with the published ephemeral IKM gives exactly
    // `encapsulated_key` and `ciphertext`.
    let mut eph_rng = Stream::new("dc-handover vectors: holder");
    rand_core::RngCore::fill_bytes(&mut eph_rng, &mut [0u8; 48]);
    let (enc, ct) =
        hpke::single_shot_seal::<hpke::aead::ChaCha20Poly1305, hpke::kdf::HkdfSha256, Kem, _>(
            &hpke::OpModeS::Base,
            &<Kem as hpke::Kem>::PublicKey::from_bytes(&response.hpke_public_key).unwrap(),
            &transcript::hpke_info(&t2),
            &released.encode(),
            &t2.0,
            &mut eph_rng,
        )
        .unwrap();
    assert_eq!(enc.to_bytes()[..], keys.encapsulated_key[..]);
    assert_eq!(ct, keys.ciphertext);

    // The REPORT key of each enclave (for the platform's report KEYID) verifies the reports
    // made for it: AES-128-CMAC over bytes 0..384 is the MAC at 416..432.
    let report_key = |tee: &InProcessTee| {
        let k = tee.get_key(&KeyRequest::report_key(report_key_id)).unwrap();
        *k.expose()
    };
    let (holder_report_key, receiver_report_key) = (report_key(&htee), report_key(&rtee));
    for (what, bytes, key) in [
        ("challenge", &challenge.holder_report, &receiver_report_key),
        ("response", &response.receiver_report, &holder_report_key),
        ("keys", &keys.holder_report, &receiver_report_key),
        ("ack", &ack.receiver_report, &holder_report_key),
    ] {
        assert_eq!(bytes[384..416], report_key_id.0, "{what}: KEYID");
        let mac = dc_tee::mac::cmac_aes128(&dc_tee::Key128::new(*key), &bytes[..384]);
        assert_eq!(mac[..], bytes[416..432], "{what}: MAC");
    }

    let v = json!({
        "platform": {
            "root_secret_hex": hex::encode([0x42; 32]),
            "cpusvn_hex": hex::encode([1; 16]),
            "report_keyid_hex": hex::encode(report_key_id.0),
        },
        "holder_report_key_hex": hex::encode(holder_report_key),
        "receiver_report_key_hex": hex::encode(receiver_report_key),
        "holder_min_node_version": "1.0.0",
        "released_to": {
            "mr_enclave": destination.mr_enclave.to_string(),
            "version": destination.version.to_string(),
            "isv_svn": destination.isv_svn,
        },
        "holder_mrenclave": node.mr_enclave.to_string(),
        "receiver_mrenclave": agent.mr_enclave.to_string(),
        "holder_time_ms_at_hello": now,
        "challenge_ttl_ms": 30_000,
        "keyring_encoding_hex": hex::encode(released.encode().as_slice()),
        "keyring_fingerprint_hex": hex::encode(ring.fingerprint()),
        "receiver_hpke_ikm_hex": hex::encode(ikm),
        "receiver_hpke_secret_key_hex": hex::encode(sk.to_bytes()),
        "holder_hpke_ephemeral_ikm_hex": hex::encode(eph_ikm),
        "holder_hpke_ephemeral_secret_key_hex": hex::encode(eph_sk.to_bytes()),
        "receiver_hpke_public_key_hex": hex::encode(pk.to_bytes()),
        "hpke_info_hex": hex::encode(transcript::hpke_info(&t2)),
        "t1_hex": hex::encode(t1.0),
        "t2_hex": hex::encode(t2.0),
        "t3_hex": hex::encode(t3.0),
        "t4_hex": hex::encode(t4.0),
        "messages": {
            "hello": hello,
            "challenge": challenge,
            "response": response,
            "keys": keys,
            "ack": ack,
            "delivered": delivered,
        }
    });
    serde_json::to_string_pretty(&v).unwrap()
}

const BEGIN: &str =
    "<!-- vectors:begin (generated by crates/dc-handover/tests/vectors.rs) -->\n```json\n";
const END: &str = "```\n<!-- vectors:end -->";

#[test]
fn protocol_document_carries_the_current_vectors() {
    let vectors = generate() + "\n";
    assert_eq!(vectors, generate() + "\n", "vectors must be deterministic");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    let doc = std::fs::read_to_string(path).expect("docs/protocol.md");
    let (a, b) = (
        doc.find(BEGIN).expect("vectors:begin marker"),
        doc.find(END).expect("vectors:end marker"),
    );
    let current = &doc[a + BEGIN.len()..b];
    if current != vectors {
        if std::env::var_os("DC_UPDATE_VECTORS").is_some() {
            let updated = format!("{}{BEGIN}{vectors}{}", &doc[..a], &doc[b..]);
            std::fs::write(path, updated).unwrap();
        } else {
            panic!("docs/protocol.md test vectors differ from the code; if the protocol change is intended, run DC_UPDATE_VECTORS=1 cargo test -p dc-handover --test vectors");
        }
    }
}

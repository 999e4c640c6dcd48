//! The sans-IO holder and receiver against each other, with in-process sim enclaves, and with
//! an attacker in the middle rewriting messages.

use std::sync::Arc;

use dc_handover::messages::{Challenge, Hello, Keys, Response};
use dc_handover::{
    Authorizer, Destination, HandoverError, Holder, HolderConfig, Keyring, PeerRole, Receiver,
    ReceiverConfig, StaticAllowList, Version,
};
use dc_tee::{EnclaveIdentity, Tee};
use dc_tee_sim::platform::{test_identity, InProcessTee, Platform};
use rand_core::{OsRng, TryRngCore};
use zeroize::Zeroizing;

const NOW: u64 = 1_000_000;
const TTL: u64 = 10_000;

fn rng() -> impl rand_core::CryptoRng {
    OsRng.unwrap_err()
}

struct World {
    platform: Arc<Platform>,
}

impl World {
    fn new() -> Self {
        Self {
            platform: Arc::new(Platform::new(
                Zeroizing::new([7; 32]),
                dc_tee::CpuSvn([1; 16]),
                dc_tee::KeyId([3; 32]),
            )),
        }
    }
    fn tee(&self, id: EnclaveIdentity) -> InProcessTee {
        InProcessTee::new(self.platform.clone(), id)
    }
}

fn node_v1() -> EnclaveIdentity {
    test_identity(0x11, 0xAA, 1, false)
}
fn node_v2() -> EnclaveIdentity {
    test_identity(0x22, 0xAA, 2, false)
}
fn agent() -> EnclaveIdentity {
    test_identity(0x33, 0xBB, 1, false)
}

/// Destination evidence an upgrader presents for node v2 (the allow-list maps it).
const DEST_V2: &[u8] = b"destination: node v2";

fn dest_of(id: &EnclaveIdentity, v: Version) -> Destination {
    Destination {
        mr_enclave: id.mr_enclave,
        version: v,
        isv_svn: id.isv_svn,
    }
}

fn dest_v2() -> Destination {
    dest_of(&node_v2(), Version::new(2, 0, 0))
}

fn allow_all() -> StaticAllowList {
    StaticAllowList::new()
        .allow(node_v1().mr_enclave, PeerRole::Node(Version::new(1, 0, 0)))
        .allow(node_v2().mr_enclave, PeerRole::Node(Version::new(2, 0, 0)))
        .allow(agent().mr_enclave, PeerRole::Upgrader)
        .allow_destination(DEST_V2, dest_v2())
}

/// The node releases a receiver node stands for, in the tests.
fn as_node(id: &EnclaveIdentity) -> Option<Destination> {
    if id.mr_enclave == node_v1().mr_enclave {
        Some(dest_of(id, Version::new(1, 0, 0)))
    } else if id.mr_enclave == node_v2().mr_enclave {
        Some(dest_of(id, Version::new(2, 0, 0)))
    } else {
        None
    }
}

fn holder_cfg() -> HolderConfig {
    HolderConfig {
        allow_debug_peers: false,
        min_node_version: Version::new(1, 0, 0),
        allow_upgrader: true,
        challenge_ttl_ms: TTL,
        max_pending: 8,
        authorization: b"holder-evidence".to_vec(),
    }
}

/// An upgrader collects keys for node v2; a node receiver names no destination and expects
/// keys released for itself.
fn receiver_cfg_for(id: &EnclaveIdentity) -> ReceiverConfig {
    let me = as_node(id);
    ReceiverConfig {
        allow_debug_peers: false,
        authorization: b"receiver-evidence".to_vec(),
        destination: if me.is_some() {
            vec![]
        } else {
            DEST_V2.to_vec()
        },
        expect_released_to: Some(me.unwrap_or_else(dest_v2)),
    }
}

fn receiver_cfg() -> ReceiverConfig {
    receiver_cfg_for(&agent())
}

fn keyring() -> Keyring {
    Keyring::generate(&["node-identity", "data"], &mut rng()).unwrap()
}

struct Run<A: Authorizer, B: Authorizer> {
    holder: Holder<A>,
    receiver: Receiver<B>,
    htee: InProcessTee,
    rtee: InProcessTee,
    ring: Keyring,
    hello: Hello,
}

fn setup<A: Authorizer, B: Authorizer>(
    w: &World,
    holder_id: EnclaveIdentity,
    receiver_id: EnclaveIdentity,
    hcfg: HolderConfig,
    hauth: A,
    rauth: B,
) -> Run<A, B> {
    let htee = w.tee(holder_id);
    let rtee = w.tee(receiver_id);
    let holder = Holder::new(&htee, hcfg, hauth).unwrap();
    let (receiver, hello) =
        Receiver::start(&rtee, receiver_cfg_for(&receiver_id), rauth, &mut rng()).unwrap();
    // Keys held for a node receiver (by the agent) were released for that node.
    let mut ring = keyring();
    ring.custody_mut().released_to = as_node(&receiver_id);
    Run {
        holder,
        receiver,
        htee,
        rtee,
        ring,
        hello,
    }
}

fn default_run(w: &World) -> Run<StaticAllowList, StaticAllowList> {
    setup(
        w,
        node_v1(),
        agent(),
        holder_cfg(),
        allow_all(),
        allow_all(),
    )
}

impl<A: Authorizer, B: Authorizer> Run<A, B> {
    fn challenge(&mut self) -> Challenge {
        self.holder
            .on_hello(&self.htee, &self.hello, NOW, &mut rng())
            .unwrap()
    }
    fn respond(&mut self, ch: &Challenge) -> Response {
        self.receiver.on_challenge(&self.rtee, ch, NOW + 1).unwrap()
    }
    fn holder_answers(&mut self, resp: &Response) -> Result<Keys, HandoverError> {
        self.holder
            .on_response(&self.htee, resp, &self.ring, NOW + 2, &mut rng())
    }
}

/// Asserts the holder refused and forgot the session, releasing nothing.
fn refused(r: Result<Keys, HandoverError>) -> HandoverError {
    match r {
        Ok(_) => panic!("the holder released the keys"),
        Err(e) => e,
    }
}

#[test]
fn full_handover_moves_the_keyring_and_confirms_durability() {
    let w = World::new();
    let mut run = default_run(&w);
    let ch = run.challenge();
    let resp = run.respond(&ch);
    let keys = run.holder_answers(&resp).unwrap();
    let got = run.receiver.on_keys(&run.rtee, &keys).unwrap();
    assert_eq!(got.keyring.fingerprint(), run.ring.fingerprint());
    // Released for the destination the upgrader named, and only that differs.
    assert_eq!(got.keyring.custody().released_to, Some(dest_v2()));
    let mut expected = run.ring.clone();
    expected.custody_mut().released_to = Some(dest_v2());
    assert!(got.keyring.ct_eq(&expected));
    assert_eq!(got.holder.mr_enclave, node_v1().mr_enclave);
    assert_eq!(got.holder_role, PeerRole::Node(Version::new(1, 0, 0)));
    let ack = run.receiver.ack(&run.rtee).unwrap();
    let delivery = run.holder.on_ack(&run.htee, &ack, NOW + 3).unwrap();
    assert_eq!(delivery.receiver.mr_enclave, agent().mr_enclave);
    assert_eq!(delivery.keyring_fingerprint, run.ring.fingerprint());
    assert_eq!(delivery.released_to, Some(dest_v2()));
    assert_eq!(run.holder.pending(), 0);
    // The ack cannot be replayed.
    assert!(matches!(
        run.holder.on_ack(&run.htee, &ack, NOW + 4),
        Err(HandoverError::UnknownSession)
    ));
}

#[test]
fn agent_to_newer_node_works_and_to_lower_version_is_refused() {
    let w = World::new();
    let cfg = HolderConfig {
        min_node_version: Version::new(2, 0, 0),
        allow_upgrader: false,
        ..holder_cfg()
    };
    let mut run = setup(
        &w,
        agent(),
        node_v2(),
        cfg.clone(),
        allow_all(),
        allow_all(),
    );
    let ch = run.challenge();
    let resp = run.respond(&ch);
    assert!(run.holder_answers(&resp).is_ok());

    let mut run = setup(
        &w,
        agent(),
        node_v1(),
        cfg.clone(),
        allow_all(),
        allow_all(),
    );
    let ch = run.challenge();
    let resp = run.respond(&ch);
    let e = refused(run.holder_answers(&resp));
    assert!(matches!(e, HandoverError::LowerVersion { .. }), "{e}");
    assert_eq!(run.holder.pending(), 0);

    // An agent holding keys for a new node does not give them to another agent.
    let mut run = setup(&w, agent(), agent(), cfg, allow_all(), allow_all());
    let ch = run.challenge();
    let resp = run.respond(&ch);
    assert!(matches!(
        refused(run.holder_answers(&resp)),
        HandoverError::WrongRole(_)
    ));
}

#[test]
fn unauthorized_receiver_is_refused() {
    let w = World::new();
    let only_v2 =
        StaticAllowList::new().allow(node_v2().mr_enclave, PeerRole::Node(Version::new(2, 0, 0)));
    let mut run = setup(&w, node_v1(), agent(), holder_cfg(), only_v2, allow_all());
    let ch = run.challenge();
    let resp = run.respond(&ch);
    let e = refused(run.holder_answers(&resp));
    assert!(matches!(e, HandoverError::Unauthorized(_)), "{e}");
    assert_eq!(e.code(), "unauthorized");
    assert_eq!(run.holder.pending(), 0);
}

#[test]
fn debug_receiver_is_refused_unless_local_policy_allows() {
    let w = World::new();
    let debug_agent = test_identity(0x44, 0xBB, 1, true);
    let auth = allow_all().allow(debug_agent.mr_enclave, PeerRole::Upgrader);
    let mut run = setup(
        &w,
        node_v1(),
        debug_agent,
        holder_cfg(),
        auth.clone(),
        allow_all(),
    );
    let ch = run.challenge();
    let resp = run.respond(&ch);
    assert!(matches!(
        refused(run.holder_answers(&resp)),
        HandoverError::DebugPeer(_)
    ));

    let cfg = HolderConfig {
        allow_debug_peers: true,
        ..holder_cfg()
    };
    let mut run = setup(&w, node_v1(), debug_agent, cfg, auth, allow_all());
    let ch = run.challenge();
    let resp = run.respond(&ch);
    assert!(run.holder_answers(&resp).is_ok());
}

#[test]
fn replayed_nonce_is_refused() {
    let w = World::new();
    let mut run = default_run(&w);
    let ch = run.challenge();
    let resp = run.respond(&ch);
    run.holder_answers(&resp).unwrap();
    // The same answer again: the session is no longer waiting for a response.
    assert!(matches!(
        refused(run.holder_answers(&resp)),
        HandoverError::UnknownSession
    ));
    // A failed answer consumes the nonce too.
    let ch2 = run.challenge();
    let good = run.receiver_for_new_session(&w, &ch2);
    let mut bad = good.clone();
    bad.receiver_report[400] ^= 1;
    assert!(matches!(
        refused(run.holder_answers(&bad)),
        HandoverError::ReportMac
    ));
    assert!(matches!(
        refused(run.holder_answers(&good)),
        HandoverError::UnknownSession
    ));
}

impl Run<StaticAllowList, StaticAllowList> {
    /// A fresh receiver answering `ch` (which was made for `self.hello`'s target).
    fn receiver_for_new_session(&self, _w: &World, ch: &Challenge) -> Response {
        let (mut r, _) =
            Receiver::start(&self.rtee, receiver_cfg(), allow_all(), &mut rng()).unwrap();
        r.on_challenge(&self.rtee, ch, NOW + 1).unwrap()
    }
}

#[test]
fn expired_nonce_is_refused_by_both_sides() {
    let w = World::new();
    let mut run = default_run(&w);
    let ch = run.challenge();
    let resp = run.respond(&ch);
    let e = refused(
        run.holder
            .on_response(&run.htee, &resp, &run.ring, NOW + TTL + 1, &mut rng()),
    );
    assert!(matches!(e, HandoverError::Expired), "{e}");

    let mut run = default_run(&w);
    let ch = run.challenge();
    assert!(matches!(
        run.receiver.on_challenge(&run.rtee, &ch, NOW + TTL + 1),
        Err(HandoverError::Expired)
    ));
}

#[test]
fn report_targeted_at_another_enclave_is_refused() {
    let w = World::new();
    let mut run = default_run(&w);
    let ch = run.challenge();
    let mut resp = run.respond(&ch);
    // The receiver's report, remade for a third enclave's target with the same data.
    let real = dc_tee::Report::from_bytes(&resp.receiver_report).unwrap();
    let other = test_identity(0x55, 0xCC, 1, false).target_info();
    resp.receiver_report = run
        .rtee
        .report(&other, &real.report_data)
        .unwrap()
        .to_bytes();
    assert!(matches!(
        refused(run.holder_answers(&resp)),
        HandoverError::ReportMac
    ));
}

#[test]
fn report_with_a_flipped_bit_is_refused() {
    let w = World::new();
    for (byte, bit) in [
        (0usize, 0u8),
        (64, 3),
        (258, 0),
        (320, 7),
        (383, 1),
        (416, 2),
    ] {
        let mut run = default_run(&w);
        let ch = run.challenge();
        let mut resp = run.respond(&ch);
        resp.receiver_report[byte] ^= 1 << bit;
        let e = refused(run.holder_answers(&resp));
        assert!(matches!(e, HandoverError::ReportMac), "byte {byte}: {e}");
        assert_eq!(run.holder.pending(), 0);
    }
}

#[test]
fn report_data_not_matching_the_transcript_is_refused() {
    let w = World::new();
    let mut run = default_run(&w);
    let ch = run.challenge();
    let mut resp = run.respond(&ch);
    let holder_target = dc_tee::Report::from_bytes(&ch.holder_report)
        .unwrap()
        .to_target_info();
    resp.receiver_report = run
        .rtee
        .report(&holder_target, &dc_tee::ReportData([9; 64]))
        .unwrap()
        .to_bytes();
    assert!(matches!(
        refused(run.holder_answers(&resp)),
        HandoverError::TranscriptMismatch
    ));
}

#[test]
fn substituted_ephemeral_key_is_refused() {
    let w = World::new();
    let mut run = default_run(&w);
    let ch = run.challenge();
    let mut resp = run.respond(&ch);
    // A host in the middle swaps in its own HPKE key to read the keyring.
    let (_, pk) = <hpke::kem::X25519HkdfSha256 as hpke::Kem>::gen_keypair(&mut rng());
    resp.hpke_public_key = hpke::Serializable::to_bytes(&pk).into();
    assert!(matches!(
        refused(run.holder_answers(&resp)),
        HandoverError::TranscriptMismatch
    ));
    // Or its own authorization evidence.
    let mut run = default_run(&w);
    let ch = run.challenge();
    let mut resp = run.respond(&ch);
    resp.receiver_authorization = b"forged".to_vec();
    assert!(matches!(
        refused(run.holder_answers(&resp)),
        HandoverError::TranscriptMismatch
    ));
}

#[test]
fn tampered_ciphertext_is_refused_by_the_receiver() {
    let w = World::new();
    // In transit: T3 covers the ciphertext.
    let mut run = default_run(&w);
    let ch = run.challenge();
    let resp = run.respond(&ch);
    let mut keys = run.holder_answers(&resp).unwrap();
    keys.ciphertext[5] ^= 1;
    assert!(matches!(
        run.receiver.on_keys(&run.rtee, &keys),
        Err(HandoverError::TranscriptMismatch)
    ));

    // Even if the holder attests a corrupted ciphertext, HPKE refuses it.
    let mut run = default_run(&w);
    let ch = run.challenge();
    let resp = run.respond(&ch);
    let mut keys = run.holder_answers(&resp).unwrap();
    keys.ciphertext[5] ^= 1;
    let t1 = dc_tee::Report::from_bytes(&ch.holder_report)
        .unwrap()
        .report_data;
    let t2 = dc_handover::transcript::response(
        &t1,
        &ch.holder_report,
        &node_v1().mr_enclave,
        &agent().mr_enclave,
        &resp.hpke_public_key,
        &resp.receiver_authorization,
        &resp.destination,
    );
    let t3 = dc_handover::transcript::keys(&t2, &keys.encapsulated_key, &keys.ciphertext);
    keys.holder_report = run
        .htee
        .report(&agent().target_info(), &t3)
        .unwrap()
        .to_bytes();
    assert!(matches!(
        run.receiver.on_keys(&run.rtee, &keys),
        Err(HandoverError::DecryptFailed)
    ));
}

#[test]
fn keys_from_an_unauthorized_holder_are_refused() {
    let w = World::new();
    let rogue = test_identity(0x66, 0xDD, 9, false);
    let mut run = setup(&w, rogue, agent(), holder_cfg(), allow_all(), allow_all());
    let ch = run.challenge();
    let e = run
        .receiver
        .on_challenge(&run.rtee, &ch, NOW + 1)
        .unwrap_err();
    assert!(matches!(e, HandoverError::Unauthorized(_)), "{e}");
    // And a holder that is swapped after the challenge is caught at the keys.
    let mut run = default_run(&w);
    let ch = run.challenge();
    let resp = run.respond(&ch);
    let mut keys = run.holder_answers(&resp).unwrap();
    let data = dc_tee::Report::from_bytes(&keys.holder_report)
        .unwrap()
        .report_data;
    keys.holder_report = w
        .tee(node_v2())
        .report(&agent().target_info(), &data)
        .unwrap()
        .to_bytes();
    assert!(matches!(
        run.receiver.on_keys(&run.rtee, &keys),
        Err(HandoverError::PeerChanged)
    ));
}

#[test]
fn debug_holder_is_refused_by_the_receiver() {
    let w = World::new();
    let dbg_node = test_identity(0x77, 0xAA, 1, true);
    let auth = allow_all().allow(dbg_node.mr_enclave, PeerRole::Node(Version::new(1, 0, 0)));
    let mut run = setup(&w, dbg_node, agent(), holder_cfg(), allow_all(), auth);
    let ch = run.challenge();
    assert!(matches!(
        run.receiver.on_challenge(&run.rtee, &ch, NOW + 1),
        Err(HandoverError::DebugPeer(_))
    ));
}

#[test]
fn challenge_altered_in_transit_is_refused_by_the_receiver() {
    let w = World::new();
    let mut run = default_run(&w);
    let mut ch = run.challenge();
    ch.nonce[0] ^= 1;
    assert!(matches!(
        run.receiver.on_challenge(&run.rtee, &ch, NOW + 1),
        Err(HandoverError::TranscriptMismatch)
    ));
    let mut run = default_run(&w);
    let mut ch = run.challenge();
    ch.expires_at_ms += 60_000;
    assert!(matches!(
        run.receiver.on_challenge(&run.rtee, &ch, NOW + 1),
        Err(HandoverError::TranscriptMismatch)
    ));
}

#[test]
fn pending_challenges_are_capped_and_expire() {
    let w = World::new();
    let cfg = HolderConfig {
        max_pending: 3,
        ..holder_cfg()
    };
    let mut run = setup(&w, node_v1(), agent(), cfg, allow_all(), allow_all());
    for _ in 0..3 {
        run.challenge();
    }
    assert!(matches!(
        run.holder.on_hello(&run.htee, &run.hello, NOW, &mut rng()),
        Err(HandoverError::Busy)
    ));
    // Once they expire, room is made.
    assert!(run
        .holder
        .on_hello(&run.htee, &run.hello, NOW + TTL + 1, &mut rng())
        .is_ok());
    assert_eq!(run.holder.pending(), 1);
}

#[test]
fn ack_must_come_from_the_receiver_and_name_the_keyring() {
    let w = World::new();
    let mut run = default_run(&w);
    let ch = run.challenge();
    let resp = run.respond(&ch);
    let keys = run.holder_answers(&resp).unwrap();
    run.receiver.on_keys(&run.rtee, &keys).unwrap();
    let ack = run.receiver.ack(&run.rtee).unwrap();
    let mut wrong_fp = ack.clone();
    wrong_fp.keyring_fingerprint[0] ^= 1;
    assert!(matches!(
        run.holder.on_ack(&run.htee, &wrong_fp, NOW + 3),
        Err(HandoverError::AckMismatch)
    ));
    let mut forged = ack.clone();
    let data = dc_tee::Report::from_bytes(&ack.receiver_report)
        .unwrap()
        .report_data;
    forged.receiver_report = w
        .tee(node_v2())
        .report(&node_v1().target_info(), &data)
        .unwrap()
        .to_bytes();
    assert!(matches!(
        run.holder.on_ack(&run.htee, &forged, NOW + 3),
        Err(HandoverError::PeerChanged)
    ));
    assert!(run.holder.on_ack(&run.htee, &ack, NOW + 3).is_ok());
}

#[test]
fn messages_out_of_order_are_refused() {
    let w = World::new();
    let mut run = default_run(&w);
    assert!(matches!(
        run.receiver.ack(&run.rtee),
        Err(HandoverError::WrongState(_))
    ));
    let fake = Keys {
        session: [0; 16],
        encapsulated_key: [0; 32],
        ciphertext: vec![],
        holder_report: [0; 432],
    };
    let mut run = default_run(&w);
    assert!(matches!(
        run.receiver.on_keys(&run.rtee, &fake),
        Err(HandoverError::WrongState(_))
    ));
    let resp = Response {
        session: [1; 16],
        receiver_report: [0; 432],
        hpke_public_key: [0; 32],
        receiver_authorization: vec![],
        destination: vec![],
    };
    assert!(matches!(
        refused(run.holder_answers(&resp)),
        HandoverError::UnknownSession
    ));
}

/// Runs a handover up to the holder's decision on the response.
fn decide<A: Authorizer, B: Authorizer>(run: &mut Run<A, B>) -> Result<Keys, HandoverError> {
    let ch = run.challenge();
    let resp = run.respond(&ch);
    run.holder_answers(&resp)
}

#[test]
fn an_upgrader_gets_keys_only_for_a_destination_the_holder_authorizes() {
    let w = World::new();
    // No destination at all.
    let mut run = default_run(&w);
    let (r, hello) = Receiver::start(
        &run.rtee,
        ReceiverConfig {
            destination: vec![],
            ..receiver_cfg()
        },
        allow_all(),
        &mut rng(),
    )
    .unwrap();
    (run.receiver, run.hello) = (r, hello);
    let e = refused(decide(&mut run));
    assert!(matches!(e, HandoverError::NoDestination), "{e}");
    assert_eq!(e.code(), "no_destination");
    assert_eq!(run.holder.pending(), 0);
    // Evidence the holder's authorizer does not accept.
    let mut run = default_run(&w);
    let (r, hello) = Receiver::start(
        &run.rtee,
        ReceiverConfig {
            destination: b"a release the host made up".to_vec(),
            ..receiver_cfg()
        },
        allow_all(),
        &mut rng(),
    )
    .unwrap();
    (run.receiver, run.hello) = (r, hello);
    let e = refused(decide(&mut run));
    assert!(
        matches!(
            e,
            HandoverError::Unauthorized(dc_handover::AuthzError::BadDestination(_))
        ),
        "{e}"
    );
    // A holder without a destination policy (the default) releases to no upgrader.
    struct NoPolicy;
    impl Authorizer for NoPolicy {
        fn authorize(
            &self,
            peer: &EnclaveIdentity,
            e: &[u8],
        ) -> Result<PeerRole, dc_handover::AuthzError> {
            allow_all().authorize(peer, e)
        }
    }
    let mut run = setup(&w, node_v1(), agent(), holder_cfg(), NoPolicy, allow_all());
    let e = refused(decide(&mut run));
    assert!(
        matches!(
            e,
            HandoverError::Unauthorized(dc_handover::AuthzError::NoDestinationPolicy)
        ),
        "{e}"
    );
}

#[test]
fn a_destination_below_the_holder_or_the_floor_or_revoked_is_refused() {
    let w = World::new();
    // Below the holder's own version.
    let mut run = setup(
        &w,
        node_v1(),
        agent(),
        HolderConfig {
            min_node_version: Version::new(3, 0, 0),
            ..holder_cfg()
        },
        allow_all(),
        allow_all(),
    );
    let e = refused(decide(&mut run));
    assert!(matches!(e, HandoverError::LowerVersion { .. }), "{e}");
    // Below the keyring's floor: a newer release already held these keys.
    let mut run = default_run(&w);
    run.ring.custody_mut().raise_floor(Version::new(2, 0, 1), 0);
    let e = refused(decide(&mut run));
    assert!(matches!(e, HandoverError::BelowFloor { .. }), "{e}");
    assert_eq!(e.code(), "below_floor");
    // Below the keyring's ISVSVN floor.
    let mut run = default_run(&w);
    run.ring.custody_mut().raise_floor(Version::new(1, 0, 0), 3);
    assert!(matches!(
        refused(decide(&mut run)),
        HandoverError::BelowFloor { .. }
    ));
    // Revoked, as the keyring's custody state records.
    let mut run = default_run(&w);
    run.ring
        .custody_mut()
        .add_revocation(dc_handover::keyring::RevocationEntry {
            mr_enclave: node_v2().mr_enclave,
            evidence: b"signed revocation".to_vec(),
        })
        .unwrap();
    let e = refused(decide(&mut run));
    assert_eq!(e.code(), "revoked", "{e}");
    assert_eq!(run.holder.pending(), 0);
}

#[test]
fn the_agent_delivers_only_to_the_release_the_keys_were_released_for() {
    let w = World::new();
    let cfg = HolderConfig {
        min_node_version: Version::new(1, 0, 0),
        allow_upgrader: false,
        ..holder_cfg()
    };
    // Released for node v1; node v2 asks.
    let mut run = setup(
        &w,
        agent(),
        node_v2(),
        cfg.clone(),
        allow_all(),
        allow_all(),
    );
    run.ring.custody_mut().released_to = as_node(&node_v1());
    let e = refused(decide(&mut run));
    assert!(matches!(e, HandoverError::NotReleasedForPeer { .. }), "{e}");
    // Not released at all (keys a node never released).
    let mut run = setup(
        &w,
        agent(),
        node_v2(),
        cfg.clone(),
        allow_all(),
        allow_all(),
    );
    run.ring.custody_mut().released_to = None;
    assert!(matches!(
        refused(decide(&mut run)),
        HandoverError::NotReleasedForPeer { .. }
    ));
    // A node may not name a destination.
    let mut run = setup(
        &w,
        agent(),
        node_v2(),
        cfg.clone(),
        allow_all(),
        allow_all(),
    );
    let (r, hello) = Receiver::start(
        &run.rtee,
        ReceiverConfig {
            destination: DEST_V2.to_vec(),
            ..receiver_cfg_for(&node_v2())
        },
        allow_all(),
        &mut rng(),
    )
    .unwrap();
    (run.receiver, run.hello) = (r, hello);
    assert!(matches!(
        refused(decide(&mut run)),
        HandoverError::UnexpectedDestination
    ));
    // Released for this MRENCLAVE but another version: the node itself refuses the keys.
    let mut run = setup(&w, agent(), node_v2(), cfg, allow_all(), allow_all());
    run.ring.custody_mut().released_to = Some(dest_of(&node_v2(), Version::new(9, 0, 0)));
    let keys = decide(&mut run).unwrap();
    let e = run.receiver.on_keys(&run.rtee, &keys).unwrap_err();
    assert!(matches!(e, HandoverError::NotReleasedForMe { .. }), "{e}");
    assert!(
        run.receiver.ack(&run.rtee).is_err(),
        "nothing to acknowledge"
    );
}

#[test]
fn a_revoked_upgrader_gets_nothing() {
    let w = World::new();
    let mut run = default_run(&w);
    run.ring
        .custody_mut()
        .add_revocation(dc_handover::keyring::RevocationEntry {
            mr_enclave: agent().mr_enclave,
            evidence: b"signed revocation of the agent".to_vec(),
        })
        .unwrap();
    let e = refused(decide(&mut run));
    assert_eq!(e.code(), "revoked", "{e}");
}

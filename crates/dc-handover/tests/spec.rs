//! Executable statements of `docs/protocol.md`: every behaviour the specification states
//! beyond the transcript vectors (identity, REPORT and TARGETINFO layouts, X25519 key
//! validity, keyring limits, the session life cycle, the JSON rules, the `hello` checks, and
//! the HTTP status of every error code) is checked here against the code. A failure means the
//! document and the code disagree: fix one of them.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dc_handover::http::{
    holder_router, serve, ClientError, HolderClient, ServeLimits, MAX_BODY, MAX_RESPONSE_BODY,
    PATH_ACK, PATH_HELLO, PATH_RESPONSE,
};
use dc_handover::keyring::{RevocationEntry, MAX_ENCODED_LEN};
use dc_handover::messages::{
    Ack, Challenge, Delivered, Hello, Keys, Response, MAX_AUTHORIZATION, MAX_CIPHERTEXT,
};
use dc_handover::{
    transcript, AuthzError, Destination, HandoverError, Holder, HolderConfig, Keyring, PeerRole,
    Receiver, ReceiverConfig, StaticAllowList, Version,
};
use dc_tee::sgx::{ConfigId, Isv16, LayoutError};
use dc_tee::{
    mac, Attributes, CpuSvn, EnclaveIdentity, KeyId, KeyRequest, Measurement, Report, ReportData,
    TargetInfo, Tee, TeeError,
};
use dc_tee_sim::platform::{test_identity, InProcessTee, Platform};
use rand_core::{OsRng, TryRngCore};
use serde_json::{json, Value};
use zeroize::Zeroizing;

const NOW: u64 = 1_000_000;
const TTL: u64 = 10_000;

fn rng() -> impl rand_core::CryptoRng {
    OsRng.unwrap_err()
}

fn platform() -> Arc<Platform> {
    Arc::new(Platform::new(
        Zeroizing::new([7; 32]),
        CpuSvn([1; 16]),
        KeyId([3; 32]),
    ))
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
fn rogue() -> EnclaveIdentity {
    test_identity(0x99, 0xEE, 1, false)
}
fn debug_agent() -> EnclaveIdentity {
    test_identity(0x44, 0xBB, 1, true)
}

const DEST_V2: &[u8] = b"destination: node v2";

fn dest_v2() -> Destination {
    Destination {
        mr_enclave: node_v2().mr_enclave,
        version: Version::new(2, 0, 0),
        isv_svn: 2,
    }
}

fn allow() -> StaticAllowList {
    StaticAllowList::new()
        .allow(node_v1().mr_enclave, PeerRole::Node(Version::new(1, 0, 0)))
        .allow(node_v2().mr_enclave, PeerRole::Node(Version::new(2, 0, 0)))
        .allow(agent().mr_enclave, PeerRole::Upgrader)
        .allow(debug_agent().mr_enclave, PeerRole::Upgrader)
        .allow_destination(DEST_V2, dest_v2())
}

fn hcfg() -> HolderConfig {
    HolderConfig {
        allow_debug_peers: false,
        min_node_version: Version::new(1, 0, 0),
        allow_upgrader: true,
        challenge_ttl_ms: TTL,
        max_pending: 8,
        authorization: b"holder-evidence".to_vec(),
    }
}

/// The agent collecting keys for node v2.
fn upgrader_cfg() -> ReceiverConfig {
    ReceiverConfig {
        allow_debug_peers: false,
        authorization: b"receiver-evidence".to_vec(),
        destination: DEST_V2.to_vec(),
        expect_released_to: Some(dest_v2()),
    }
}

/// Node v2 taking the keys released for it.
fn node_cfg() -> ReceiverConfig {
    ReceiverConfig {
        allow_debug_peers: false,
        authorization: b"receiver-evidence".to_vec(),
        destination: vec![],
        expect_released_to: Some(dest_v2()),
    }
}

fn keyring() -> Keyring {
    Keyring::generate(&["node-identity", "data"], &mut rng()).unwrap()
}

/// A holder and a receiver on one platform, driven step by step.
struct Pair {
    platform: Arc<Platform>,
    htee: InProcessTee,
    rtee: InProcessTee,
    holder: Holder<StaticAllowList>,
    receiver: Receiver<StaticAllowList>,
    hello: Hello,
    ring: Keyring,
}

fn pair_with(
    holder_id: EnclaveIdentity,
    receiver_id: EnclaveIdentity,
    cfg: HolderConfig,
    rcfg: ReceiverConfig,
) -> Pair {
    let platform = platform();
    let htee = InProcessTee::new(platform.clone(), holder_id);
    let rtee = InProcessTee::new(platform.clone(), receiver_id);
    let holder = Holder::new(&htee, cfg, allow()).unwrap();
    let (receiver, hello) = Receiver::start(&rtee, rcfg, allow(), &mut rng()).unwrap();
    Pair {
        platform,
        htee,
        rtee,
        holder,
        receiver,
        hello,
        ring: keyring(),
    }
}

/// Node v1 holding the keys; the agent collects them for node v2.
fn pair() -> Pair {
    pair_with(node_v1(), agent(), hcfg(), upgrader_cfg())
}

/// The agent holding keys released for node v2; node v2 takes them.
fn agent_to_node() -> Pair {
    let cfg = HolderConfig {
        allow_upgrader: false,
        ..hcfg()
    };
    let mut p = pair_with(agent(), node_v2(), cfg, node_cfg());
    p.ring.custody_mut().released_to = Some(dest_v2());
    p
}

impl Pair {
    fn challenge(&mut self, now: u64) -> Challenge {
        self.holder
            .on_hello(&self.htee, &self.hello, now, &mut rng())
            .unwrap()
    }
    fn respond(&mut self, ch: &Challenge, now: u64) -> Response {
        self.receiver.on_challenge(&self.rtee, ch, now).unwrap()
    }
    fn answer(&mut self, resp: &Response, now: u64) -> Result<Keys, HandoverError> {
        self.holder
            .on_response(&self.htee, resp, &self.ring, now, &mut rng())
    }
    /// A whole exchange up to the holder's answer, which must be a refusal: its code.
    fn refusal(&mut self) -> &'static str {
        let ch = self.challenge(NOW);
        let resp = self.respond(&ch, NOW + 1);
        self.answer(&resp, NOW + 2).unwrap_err().code()
    }
    /// Runs to the keys message (holder time NOW..NOW+2).
    fn run_to_keys(&mut self) -> (Challenge, Response, Keys) {
        let ch = self.challenge(NOW);
        let resp = self.respond(&ch, NOW + 1);
        let keys = self.answer(&resp, NOW + 2).unwrap();
        (ch, resp, keys)
    }
    /// Runs to the acknowledgement (not yet given to the holder).
    fn run_to_ack(&mut self) -> Ack {
        let (_, _, keys) = self.run_to_keys();
        self.receiver.on_keys(&self.rtee, &keys).unwrap();
        self.receiver.ack(&self.rtee).unwrap()
    }
    fn response_with_key(&self, ch: &Challenge, real: &Response, pk: [u8; 32]) -> Response {
        response_with_key(&self.rtee, ch, real, pk)
    }
}

/// A response to `ch` with another HPKE public key, correctly bound into T2 (what a receiver
/// enclave sending that key would produce).
fn response_with_key(rtee: &dyn Tee, ch: &Challenge, real: &Response, pk: [u8; 32]) -> Response {
    let holder_report = Report::from_bytes(&ch.holder_report).unwrap();
    let me = rtee.target_info().unwrap();
    let t2 = transcript::response(
        &holder_report.report_data,
        &ch.holder_report,
        &holder_report.mr_enclave,
        &me.mr_enclave,
        &pk,
        &real.receiver_authorization,
        &real.destination,
    );
    let report = rtee.report(&holder_report.to_target_info(), &t2).unwrap();
    Response {
        hpke_public_key: pk,
        receiver_report: report.to_bytes(),
        ..real.clone()
    }
}

/// A test can do what no enclave can: MAC a report of its choosing for `verifier`, with the
/// verifier's REPORT key for the report's KEYID.
fn remac(verifier: &dyn Tee, mut r: Report) -> [u8; 432] {
    let key = verifier.get_key(&KeyRequest::report_key(r.key_id)).unwrap();
    r.mac = mac::report_mac(&key, &r);
    r.to_bytes()
}

// ---------------------------------------------------------------------------------------
// §2 Identity
// ---------------------------------------------------------------------------------------

/// One change per identity field (ATTRIBUTES without touching DEBUG, which is refused first).
/// A named change to a REPORT.
type ReportChange = (&'static str, fn(&mut Report));

fn identity_field_changes() -> Vec<ReportChange> {
    vec![
        ("MRENCLAVE", |r| r.mr_enclave.0[0] ^= 1),
        ("MRSIGNER", |r| r.mr_signer.0[0] ^= 1),
        ("ISVPRODID", |r| r.isv_prod_id ^= 1),
        ("ISVSVN", |r| r.isv_svn ^= 1),
        ("ATTRIBUTES.FLAGS", |r| r.attributes.flags ^= 0x80),
        ("ATTRIBUTES.XFRM", |r| r.attributes.xfrm ^= 0x4),
        ("MISCSELECT", |r| r.misc_select ^= 1),
        ("CONFIGID", |r| r.config_id.0[0] ^= 1),
        ("CONFIGSVN", |r| r.config_svn ^= 1),
        ("CET_ATTRIBUTES", |r| r.cet_attributes ^= 1),
    ]
}

/// Fields of a REPORT that are not part of the identity.
fn non_identity_field_changes() -> Vec<ReportChange> {
    vec![
        ("CPUSVN", |r| r.cpu_svn.0[0] ^= 1),
        ("ISVEXTPRODID", |r| r.isv_ext_prod_id.0[0] ^= 1),
        ("ISVFAMILYID", |r| r.isv_family_id.0[0] ^= 1),
        ("KEYID", |r| r.key_id.0[0] ^= 1),
    ]
}

#[test]
fn the_holder_compares_identity_at_the_ack_as_exactly_the_documented_fields() {
    let mut p = pair();
    let ack = p.run_to_ack();
    let real = Report::from_bytes(&ack.receiver_report).unwrap();
    // Every identity field: peer_changed, and the session keeps waiting for the real ack.
    for (field, change) in identity_field_changes() {
        let mut r = real.clone();
        change(&mut r);
        let forged = Ack {
            receiver_report: remac(&p.htee, r),
            ..ack.clone()
        };
        let e = p.holder.on_ack(&p.htee, &forged, NOW + 3).unwrap_err();
        assert!(matches!(e, HandoverError::PeerChanged), "{field}: {e}");
        assert_eq!(p.holder.pending(), 1, "{field}");
    }
    // Every other field may differ: the ack is accepted.
    for (field, change) in non_identity_field_changes() {
        let mut p = pair();
        let ack = p.run_to_ack();
        let mut r = Report::from_bytes(&ack.receiver_report).unwrap();
        change(&mut r);
        let other = Ack {
            receiver_report: remac(&p.htee, r),
            ..ack.clone()
        };
        p.holder
            .on_ack(&p.htee, &other, NOW + 3)
            .unwrap_or_else(|e| panic!("{field}: {e}"));
    }
}

#[test]
fn the_receiver_compares_identity_at_the_keys_as_exactly_the_documented_fields() {
    for (field, change, same) in identity_field_changes()
        .into_iter()
        .map(|(f, c)| (f, c, false))
        .chain(
            non_identity_field_changes()
                .into_iter()
                .map(|(f, c)| (f, c, true)),
        )
    {
        let mut p = pair();
        let (_, _, mut keys) = p.run_to_keys();
        let mut r = Report::from_bytes(&keys.holder_report).unwrap();
        change(&mut r);
        keys.holder_report = remac(&p.rtee, r);
        let got = p.receiver.on_keys(&p.rtee, &keys);
        match (same, got) {
            (true, Ok(_)) => {}
            (false, Err(HandoverError::PeerChanged)) => {}
            (_, other) => panic!("{field}: {:?}", other.map(|r| r.keyring)),
        }
    }
}

#[test]
fn identity_is_the_report_fields_of_enclave_identity() {
    let r = marked_report();
    let id = r.identity();
    assert_eq!(id.mr_enclave, r.mr_enclave);
    assert_eq!(id.mr_signer, r.mr_signer);
    assert_eq!(id.isv_prod_id, r.isv_prod_id);
    assert_eq!(id.isv_svn, r.isv_svn);
    assert_eq!(id.attributes, r.attributes);
    assert_eq!(id.misc_select, r.misc_select);
    assert_eq!(id.config_id, r.config_id);
    assert_eq!(id.config_svn, r.config_svn);
    assert_eq!(id.cet_attributes, r.cet_attributes);
    // Reports differing only outside the identity have the same identity.
    for (_, change) in non_identity_field_changes() {
        let mut o = r.clone();
        change(&mut o);
        o.report_data.0[0] ^= 1;
        o.mac.0[0] ^= 1;
        assert_eq!(o.identity(), id);
    }
}

// ---------------------------------------------------------------------------------------
// §2 REPORT and TARGETINFO layouts
// ---------------------------------------------------------------------------------------

/// A REPORT with a distinct marker in every field.
fn marked_report() -> Report {
    Report {
        cpu_svn: CpuSvn([0x11; 16]),
        misc_select: 0x2222_2222,
        cet_attributes: 0x33,
        isv_ext_prod_id: Isv16([0x44; 16]),
        attributes: Attributes {
            flags: 0x5555_5555_5555_5555,
            xfrm: 0x6666_6666_6666_6666,
        },
        mr_enclave: Measurement([0x77; 32]),
        mr_signer: Measurement([0x88; 32]),
        config_id: ConfigId([0x99; 64]),
        isv_prod_id: 0xAAAA,
        isv_svn: 0xBBBB,
        config_svn: 0xCCCC,
        isv_family_id: Isv16([0xDD; 16]),
        report_data: ReportData([0xEE; 64]),
        key_id: KeyId([0xF1; 32]),
        mac: dc_tee::sgx::ReportMac([0xF2; 16]),
    }
}

/// The REPORT layout table of §2: (offset, size, marker in `marked_report`).
const REPORT_FIELDS: &[(&str, usize, usize, u8)] = &[
    ("CPUSVN", 0, 16, 0x11),
    ("MISCSELECT", 16, 4, 0x22),
    ("CET_ATTRIBUTES", 20, 1, 0x33),
    ("ISVEXTPRODID", 32, 16, 0x44),
    ("ATTRIBUTES.FLAGS", 48, 8, 0x55),
    ("ATTRIBUTES.XFRM", 56, 8, 0x66),
    ("MRENCLAVE", 64, 32, 0x77),
    ("MRSIGNER", 128, 32, 0x88),
    ("CONFIGID", 192, 64, 0x99),
    ("ISVPRODID", 256, 2, 0xAA),
    ("ISVSVN", 258, 2, 0xBB),
    ("CONFIGSVN", 260, 2, 0xCC),
    ("ISVFAMILYID", 304, 16, 0xDD),
    ("REPORTDATA", 320, 64, 0xEE),
    ("KEYID", 384, 32, 0xF1),
    ("MAC", 416, 16, 0xF2),
];

/// The reserved REPORT bytes of §2.
const REPORT_RESERVED: &[std::ops::Range<usize>] = &[21..32, 96..128, 160..192, 262..304];
/// The reserved TARGETINFO bytes of §2.
const TARGETINFO_RESERVED: &[std::ops::Range<usize>] = &[49..50, 56..64, 128..512];

#[test]
fn report_layout_and_reserved_bytes_are_as_documented() {
    let b = marked_report().to_bytes();
    let mut field = [false; 432];
    for &(name, off, len, v) in REPORT_FIELDS {
        assert!(b[off..off + len].iter().all(|&x| x == v), "{name}");
        field[off..off + len].iter_mut().for_each(|f| *f = true);
    }
    let reserved = |i: usize| REPORT_RESERVED.iter().any(|r| r.contains(&i));
    assert_eq!(
        (0..432).filter(|&i| reserved(i)).count(),
        117,
        "117 reserved bytes"
    );
    for i in 0..432 {
        assert_ne!(
            field[i],
            reserved(i),
            "byte {i} is either a field or reserved"
        );
        let mut x = b;
        x[i] = if x[i] == 0 { 1 } else { 0 };
        let parsed = Report::from_bytes(&x);
        if reserved(i) {
            assert_eq!(
                parsed,
                Err(LayoutError::ReservedNotZero {
                    what: "REPORT",
                    offset: i
                })
            );
        } else {
            assert!(parsed.is_ok(), "byte {i}");
        }
    }
    for n in [0, 431, 433] {
        assert!(Report::from_bytes(&vec![0; n]).is_err());
    }
}

#[test]
fn target_info_layout_reserved_bytes_and_the_copy_from_a_report_are_as_documented() {
    let r = marked_report();
    let rb = r.to_bytes();
    let t = r.to_target_info().to_bytes();
    // (TARGETINFO offset, REPORT offset, length)
    let copied: &[(usize, usize, usize)] = &[
        (0, 64, 32),   // MRENCLAVE
        (32, 48, 16),  // ATTRIBUTES
        (48, 20, 1),   // CET_ATTRIBUTES
        (50, 260, 2),  // CONFIGSVN
        (52, 16, 4),   // MISCSELECT
        (64, 192, 64), // CONFIGID
    ];
    let mut field = [false; 512];
    for &(to, from, len) in copied {
        assert_eq!(t[to..to + len], rb[from..from + len], "TARGETINFO @{to}");
        field[to..to + len].iter_mut().for_each(|f| *f = true);
    }
    let reserved = |i: usize| TARGETINFO_RESERVED.iter().any(|r| r.contains(&i));
    for i in 0..512 {
        assert_ne!(field[i], reserved(i), "byte {i}");
        if reserved(i) {
            assert_eq!(t[i], 0);
        }
        let mut x = t;
        x[i] ^= 0x01;
        let parsed = TargetInfo::from_bytes(&x);
        assert_eq!(parsed.is_err(), reserved(i), "byte {i}");
    }
    assert_eq!(TargetInfo::from_bytes(&t).unwrap().to_bytes(), t);
    // The TARGETINFO of an identity is the same copy.
    assert_eq!(r.identity().target_info().to_bytes(), t);
}

#[test]
fn hello_checks_and_errors() {
    let mut p = pair();
    // A TARGETINFO with a non-zero reserved byte, or of the wrong size (JSON level).
    for off in [49usize, 56, 63, 128, 511] {
        let mut bad = p.hello.clone();
        bad.target_info[off] = 1;
        let e = p
            .holder
            .on_hello(&p.htee, &bad, NOW, &mut rng())
            .unwrap_err();
        assert_eq!(e.code(), "malformed_report", "offset {off}");
    }
    assert_eq!(p.holder.pending(), 0);
    // Any well-formed TARGETINFO gets a challenge: nothing is authorized at hello.
    let stranger = Hello {
        target_info: rogue().target_info().to_bytes(),
    };
    let ch = p
        .holder
        .on_hello(&p.htee, &stranger, NOW, &mut rng())
        .unwrap();
    assert_eq!(ch.expires_at_ms, NOW + TTL);
    assert_eq!(ch.holder_authorization, b"holder-evidence");
    let t1 = transcript::challenge(
        &ch.session,
        &ch.nonce,
        ch.expires_at_ms,
        &rogue().target_info(),
        &ch.holder_authorization,
    );
    let hr = Report::from_bytes(&ch.holder_report).unwrap();
    assert_eq!(hr.report_data, t1);
    assert_eq!(hr.identity(), node_v1());
    // A report the holder made for the stranger does not verify at the receiver.
    assert!(matches!(
        p.receiver.on_challenge(&p.rtee, &ch, NOW),
        Err(HandoverError::ReportMac)
    ));
    // The TEE failing.
    struct NoReports(InProcessTee);
    impl Tee for NoReports {
        fn target_info(&self) -> Result<TargetInfo, TeeError> {
            self.0.target_info()
        }
        fn report(&self, _: &TargetInfo, _: &ReportData) -> Result<Report, TeeError> {
            Err(TeeError::Unavailable("test".into()))
        }
        fn get_key(&self, r: &KeyRequest) -> Result<dc_tee::Key128, TeeError> {
            self.0.get_key(r)
        }
    }
    let broken = NoReports(InProcessTee::new(p.platform.clone(), node_v1()));
    let mut h = Holder::new(&broken, hcfg(), allow()).unwrap();
    let e = h.on_hello(&broken, &p.hello, NOW, &mut rng()).unwrap_err();
    assert_eq!(e.code(), "tee_failure");
    assert_eq!(h.pending(), 0);
}

#[test]
fn a_response_report_with_a_reserved_byte_set_is_malformed_and_consumes_the_session() {
    let mut p = pair();
    let ch = p.challenge(NOW);
    let mut resp = p.respond(&ch, NOW + 1);
    resp.receiver_report[100] = 1;
    let e = p.answer(&resp, NOW + 2).unwrap_err();
    assert_eq!(e.code(), "malformed_report");
    assert_eq!(p.holder.pending(), 0);
}

// ---------------------------------------------------------------------------------------
// §2 X25519 public keys
// ---------------------------------------------------------------------------------------

fn le(hex: &str) -> [u8; 32] {
    hex::decode(hex).unwrap().try_into().unwrap()
}

/// The encodings of small-order points of Curve25519 and its twist (§2): the five canonical
/// u-coordinates 0, 1, two points of order 8, p−1, the non-canonical p and p+1, and each of
/// these with bit 255 set. X25519 of any of them with a clamped scalar is all zero.
fn small_order_encodings() -> Vec<[u8; 32]> {
    let base = [
        le("0000000000000000000000000000000000000000000000000000000000000000"),
        le("0100000000000000000000000000000000000000000000000000000000000000"),
        le("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        le("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        le("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        le("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        le("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    ];
    base.iter()
        .flat_map(|b| {
            let mut high = *b;
            high[31] |= 0x80;
            [*b, high]
        })
        .collect()
}

#[test]
fn the_holder_refuses_small_order_hpke_public_keys_as_malformed() {
    for pk in small_order_encodings() {
        let mut p = pair();
        let ch = p.challenge(NOW);
        let real = p.respond(&ch, NOW + 1);
        let resp = p.response_with_key(&ch, &real, pk);
        let e = p.answer(&resp, NOW + 2).unwrap_err();
        assert!(
            matches!(&e, HandoverError::Malformed(m) if m.starts_with("HPKE seal failed")),
            "{}: {e}",
            hex::encode(pk)
        );
        assert_eq!(e.code(), "malformed");
        assert_eq!(p.holder.pending(), 0, "the session is consumed");
    }
}

#[test]
fn any_other_32_bytes_are_a_usable_hpke_public_key() {
    // Bit 255 set on a real key: the holder seals (X25519 ignores the bit); the bytes are
    // used as sent, in T2 and in the HPKE key schedule.
    let mut p = pair();
    let ch = p.challenge(NOW);
    let real = p.respond(&ch, NOW + 1);
    let mut pk = real.hpke_public_key;
    pk[31] |= 0x80;
    let resp = p.response_with_key(&ch, &real, pk);
    assert!(p.answer(&resp, NOW + 2).is_ok());
    // A point on the twist (u = 2 is not on Curve25519): accepted too.
    let mut p = pair();
    let ch = p.challenge(NOW);
    let real = p.respond(&ch, NOW + 1);
    let mut two = [0u8; 32];
    two[0] = 2;
    let resp = p.response_with_key(&ch, &real, two);
    assert!(p.answer(&resp, NOW + 2).is_ok());
}

#[test]
fn the_receiver_refuses_a_small_order_encapsulated_key_as_decrypt_failed() {
    for enc in small_order_encodings() {
        let mut p = pair();
        let (ch, resp, mut keys) = p.run_to_keys();
        // The holder attests the bad `enc` (T3 binds it), so only HPKE can refuse it.
        keys.encapsulated_key = enc;
        let t1 = Report::from_bytes(&ch.holder_report).unwrap().report_data;
        let t2 = transcript::response(
            &t1,
            &ch.holder_report,
            &node_v1().mr_enclave,
            &agent().mr_enclave,
            &resp.hpke_public_key,
            &resp.receiver_authorization,
            &resp.destination,
        );
        let t3 = transcript::keys(&t2, &keys.encapsulated_key, &keys.ciphertext);
        keys.holder_report = p
            .htee
            .report(&agent().target_info(), &t3)
            .unwrap()
            .to_bytes();
        let e = p.receiver.on_keys(&p.rtee, &keys).unwrap_err();
        assert!(matches!(e, HandoverError::DecryptFailed), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// §5 Keyring limits
// ---------------------------------------------------------------------------------------

/// The largest keyring the format allows.
fn maximal_keyring() -> Keyring {
    let keys = (0..1024u32)
        .map(|i| {
            (
                format!("{i:0>64}"),
                u32::MAX - i,
                Zeroizing::new(vec![i as u8 | 1; 256]),
            )
        })
        .collect();
    let mut ring = Keyring::new(u64::MAX, keys).unwrap();
    let c = ring.custody_mut();
    c.raise_floor(Version::new(u64::MAX, u64::MAX, u64::MAX), u16::MAX);
    c.released_to = Some(dest_v2());
    for i in 0..32u8 {
        c.add_revocation(RevocationEntry {
            mr_enclave: Measurement([i; 32]),
            evidence: vec![b'x'; 4096],
        })
        .unwrap();
    }
    ring
}

#[test]
fn keyring_size_limits_are_as_documented() {
    assert_eq!(MAX_ENCODED_LEN, 467_110);
    assert_eq!(MAX_CIPHERTEXT, 467_126);
    assert_eq!(dc_handover::messages::b64::var::MAX, 622_836);
    assert_eq!(MAX_AUTHORIZATION, 16_384);
    let ring = maximal_keyring();
    let e = ring.encode();
    assert_eq!(e.len(), MAX_ENCODED_LEN, "the bound is exact");
    assert!(Keyring::decode(&e).unwrap().ct_eq(&ring));
    assert!(Keyring::decode(&[e.as_slice(), &[0]].concat()).is_err());
    // One more key, a longer name or secret, another revocation: refused.
    let mut more = ring.clone();
    assert!(more.mint_generation("data", &mut rng()).is_err());
    assert!(Keyring::new(1, vec![("a".repeat(65), 1, Zeroizing::new(vec![1]))]).is_err());
    assert!(Keyring::new(1, vec![("a".into(), 1, Zeroizing::new(vec![1; 257]))]).is_err());
    assert!(more
        .custody_mut()
        .add_revocation(RevocationEntry {
            mr_enclave: Measurement([0xFF; 32]),
            evidence: vec![1],
        })
        .is_err());
    // Keys sort by name bytes, then by key_version numerically.
    let r = Keyring::new(
        1,
        vec![
            ("b".into(), 1, Zeroizing::new(vec![1])),
            ("a".into(), 10, Zeroizing::new(vec![1])),
            ("a".into(), 2, Zeroizing::new(vec![1])),
            ("a-".into(), 1, Zeroizing::new(vec![1])),
        ],
    )
    .unwrap();
    let order: Vec<(&str, u32)> = r.keys().iter().map(|k| (k.name(), k.version())).collect();
    assert_eq!(order, [("a", 2), ("a", 10), ("a-", 1), ("b", 1)]);
}

#[test]
fn a_maximal_keyring_is_handed_over_and_fits_the_http_body_limit() {
    let mut p = pair();
    p.ring = maximal_keyring();
    p.ring.custody_mut().released_to = None;
    // Its floor is above every release: no destination is admissible.
    assert_eq!(p.refusal(), "below_floor");
    // The same size without the floor.
    let mut p = pair();
    let mut ring = maximal_keyring();
    ring.custody_mut().floor = Version::new(0, 0, 0);
    ring.custody_mut().floor_isv_svn = 0;
    ring.custody_mut().released_to = None;
    p.ring = ring;
    let (_, _, keys) = p.run_to_keys();
    assert_eq!(keys.ciphertext.len(), MAX_CIPHERTEXT);
    // Its Keys message fits the answer limit and passes the JSON rules.
    let json = serde_json::to_vec(&keys).unwrap();
    assert!(json.len() <= MAX_RESPONSE_BODY, "{}", json.len());
    assert_eq!(serde_json::from_slice::<Keys>(&json).unwrap(), keys);
    let got = p.receiver.on_keys(&p.rtee, &keys).unwrap();
    assert_eq!(got.keyring.fingerprint(), p.ring.fingerprint());
    // One byte more ciphertext is refused before anything else.
    let mut p = pair();
    let (_, _, mut keys) = p.run_to_keys();
    keys.ciphertext = vec![0; MAX_CIPHERTEXT + 1];
    let e = p.receiver.on_keys(&p.rtee, &keys).unwrap_err();
    assert!(
        matches!(&e, HandoverError::Malformed(m) if m.contains("ciphertext")),
        "{e}"
    );
}

#[test]
fn the_fingerprint_covers_epoch_and_keys_only() {
    let ring = keyring();
    let enc = ring.encode();
    // The encoding without "DCKR", the format byte and the custody section.
    let keys_len = enc.len() - 5 - (24 + 2 + 1 + 2);
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, b"dc-keyring/v2/fingerprint\0");
    sha2::Digest::update(&mut h, &enc[5..5 + keys_len]);
    let fp: [u8; 32] = sha2::Digest::finalize(h).into();
    assert_eq!(fp, ring.fingerprint());
    let mut stamped = ring.clone();
    stamped.custody_mut().released_to = Some(dest_v2());
    stamped.custody_mut().raise_floor(Version::new(3, 0, 0), 3);
    assert_eq!(stamped.fingerprint(), ring.fingerprint());
}

// ---------------------------------------------------------------------------------------
// §4 Session life cycle
// ---------------------------------------------------------------------------------------

#[test]
fn a_challenge_is_valid_through_its_deadline_inclusive() {
    let mut p = pair();
    let ch = p.challenge(NOW);
    assert_eq!(ch.expires_at_ms, NOW + TTL);
    // The receiver accepts it at the deadline, not after.
    let resp = p.respond(&ch, NOW + TTL);
    let mut late = Receiver::start(&p.rtee, upgrader_cfg(), allow(), &mut rng())
        .unwrap()
        .0;
    assert!(matches!(
        late.on_challenge(&p.rtee, &ch, NOW + TTL + 1),
        Err(HandoverError::Expired)
    ));
    // The holder answers at the deadline ...
    assert!(p.answer(&resp, NOW + TTL).is_ok());
    // ... and refuses one millisecond later, consuming the session.
    let mut p = pair();
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    assert_eq!(
        p.answer(&resp, NOW + TTL + 1).unwrap_err().code(),
        "expired"
    );
    assert_eq!(p.holder.pending(), 0);
    assert_eq!(
        p.answer(&resp, NOW + 2).unwrap_err().code(),
        "unknown_session"
    );
}

#[test]
fn a_response_is_answered_once_whatever_the_outcome() {
    // Refused responses consume the session.
    let failures: Vec<(&str, Spoil)> = vec![
        ("report_mac", |r| r.receiver_report[400] ^= 1),
        ("transcript_mismatch", |r| r.receiver_authorization.push(0)),
        ("malformed_report", |r| r.receiver_report[21] = 1),
        ("malformed", |r| {
            r.receiver_authorization = vec![0; MAX_AUTHORIZATION + 1]
        }),
    ];
    for (code, spoil) in failures {
        let mut p = pair();
        let ch = p.challenge(NOW);
        let good = p.respond(&ch, NOW + 1);
        let mut bad = good.clone();
        spoil(&mut bad);
        assert_eq!(p.answer(&bad, NOW + 2).unwrap_err().code(), code);
        assert_eq!(p.holder.pending(), 0, "{code}");
        assert_eq!(
            p.answer(&good, NOW + 2).unwrap_err().code(),
            "unknown_session",
            "{code}"
        );
    }
    // A response for a session that already got its keys changes nothing.
    let mut p = pair();
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    let keys = p.answer(&resp, NOW + 2).unwrap();
    assert_eq!(
        p.answer(&resp, NOW + 3).unwrap_err().code(),
        "unknown_session"
    );
    assert_eq!(p.holder.pending(), 1);
    p.receiver.on_keys(&p.rtee, &keys).unwrap();
    let ack = p.receiver.ack(&p.rtee).unwrap();
    assert!(p.holder.on_ack(&p.htee, &ack, NOW + 4).is_ok());
}

#[test]
fn the_ack_deadline_is_the_response_time_plus_the_ttl() {
    let mut p = pair();
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    // Keys sent 5 ms before the challenge deadline: the ack may come a whole TTL later.
    let keys = p.answer(&resp, NOW + TTL - 5).unwrap();
    p.receiver.on_keys(&p.rtee, &keys).unwrap();
    let ack = p.receiver.ack(&p.rtee).unwrap();
    let d = p.holder.on_ack(&p.htee, &ack, NOW + 2 * TTL - 5).unwrap();
    assert_eq!(d.reply.keyring_fingerprint, p.ring.fingerprint());
    assert_eq!(d.reply.session, ack.session);

    let mut p = pair();
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    let keys = p.answer(&resp, NOW + 2).unwrap();
    p.receiver.on_keys(&p.rtee, &keys).unwrap();
    let ack = p.receiver.ack(&p.rtee).unwrap();
    assert_eq!(
        p.holder
            .on_ack(&p.htee, &ack, NOW + 2 + TTL + 1)
            .unwrap_err()
            .code(),
        "expired"
    );
    assert_eq!(p.holder.pending(), 0, "an expired ack ends the session");
    assert_eq!(
        p.holder.on_ack(&p.htee, &ack, NOW + 3).unwrap_err().code(),
        "unknown_session"
    );
}

#[test]
fn refused_acks_leave_the_session_waiting() {
    let mut p = pair();
    let ack = p.run_to_ack();
    let mut wrong_fp = ack.clone();
    wrong_fp.keyring_fingerprint[0] ^= 1;
    let mut bad_mac = ack.clone();
    bad_mac.receiver_report[416] ^= 1;
    let mut bad_reserved = ack.clone();
    bad_reserved.receiver_report[300] = 1;
    let mut wrong_data = ack.clone();
    let mut r = Report::from_bytes(&ack.receiver_report).unwrap();
    r.report_data.0[0] ^= 1;
    wrong_data.receiver_report = remac(&p.htee, r);
    let other_session = Ack {
        session: [0xEE; 16],
        ..ack.clone()
    };
    for (bad, code) in [
        (&wrong_fp, "ack_mismatch"),
        (&bad_mac, "report_mac"),
        (&bad_reserved, "malformed_report"),
        (&wrong_data, "transcript_mismatch"),
        (&other_session, "unknown_session"),
    ] {
        let e = p.holder.on_ack(&p.htee, bad, NOW + 3).unwrap_err();
        assert_eq!(e.code(), code);
        assert_eq!(p.holder.pending(), 1, "{code}");
    }
    assert!(p.holder.on_ack(&p.htee, &ack, NOW + 3).is_ok());
    assert_eq!(p.holder.pending(), 0);
    // An ack for a session still waiting for its response is unknown, and changes nothing.
    let mut p = pair();
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    let early = Ack {
        session: ch.session,
        receiver_report: resp.receiver_report,
        keyring_fingerprint: [0; 32],
    };
    assert_eq!(
        p.holder
            .on_ack(&p.htee, &early, NOW + 1)
            .unwrap_err()
            .code(),
        "unknown_session"
    );
    assert!(p.answer(&resp, NOW + 2).is_ok());
}

#[test]
fn sessions_in_both_states_count_against_max_pending_and_are_evicted_only_at_hello() {
    let cfg = HolderConfig {
        max_pending: 2,
        ..hcfg()
    };
    let mut p = pair_with(node_v1(), agent(), cfg, upgrader_cfg());
    // One session waiting for its ack (keys sent at NOW + 2, deadline NOW + 2 + TTL) and one
    // waiting for its response (deadline NOW + TTL).
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    p.answer(&resp, NOW + 2).unwrap();
    p.challenge(NOW);
    assert_eq!(p.holder.pending(), 2);
    let hello = p.hello.clone();
    let busy = |p: &mut Pair, now| p.holder.on_hello(&p.htee, &hello, now, &mut rng());
    assert_eq!(busy(&mut p, NOW).unwrap_err().code(), "busy");
    // At its deadline a session is still live.
    assert_eq!(busy(&mut p, NOW + TTL).unwrap_err().code(), "busy");
    // Past it, the next hello evicts it and takes its place.
    assert!(busy(&mut p, NOW + TTL + 1).is_ok());
    assert_eq!(p.holder.pending(), 2);
    // Past the ack deadline too: both older sessions go.
    assert!(busy(&mut p, NOW + 2 + TTL + 1).is_ok());
    assert_eq!(p.holder.pending(), 2, "the two sessions made since");
    // A Busy hello changes nothing.
    assert_eq!(busy(&mut p, NOW + 2 + TTL + 1).unwrap_err().code(), "busy");
    assert_eq!(p.holder.pending(), 2);
}

#[test]
fn the_receiver_fails_for_good_on_any_error() {
    let mut p = pair();
    let mut ch = p.challenge(NOW);
    ch.nonce[0] ^= 1;
    assert_eq!(
        p.receiver
            .on_challenge(&p.rtee, &ch, NOW)
            .unwrap_err()
            .code(),
        "transcript_mismatch"
    );
    ch.nonce[0] ^= 1;
    assert_eq!(
        p.receiver
            .on_challenge(&p.rtee, &ch, NOW)
            .unwrap_err()
            .code(),
        "wrong_state"
    );
    // Keys for another session.
    let mut p = pair();
    let (_, _, mut keys) = p.run_to_keys();
    keys.session[0] ^= 1;
    assert_eq!(
        p.receiver.on_keys(&p.rtee, &keys).unwrap_err().code(),
        "unknown_session"
    );
    assert_eq!(p.receiver.ack(&p.rtee).unwrap_err().code(), "wrong_state");
}

// ---------------------------------------------------------------------------------------
// §6 Custody and destinations
// ---------------------------------------------------------------------------------------

#[test]
fn an_upgrader_gets_a_copy_stamped_for_its_destination_a_node_gets_the_keyring_as_held() {
    let mut p = pair();
    p.ring.custody_mut().raise_floor(Version::new(1, 0, 0), 1);
    let (_, _, keys) = p.run_to_keys();
    let got = p.receiver.on_keys(&p.rtee, &keys).unwrap();
    let mut expected = p.ring.clone();
    expected.custody_mut().released_to = Some(dest_v2());
    assert!(got.keyring.ct_eq(&expected));
    assert_eq!(
        p.ring.custody().released_to,
        None,
        "the held keyring is unchanged"
    );
    // A node receives exactly what the agent holds, stamp included.
    let mut p = agent_to_node();
    let (_, _, keys) = p.run_to_keys();
    let got = p.receiver.on_keys(&p.rtee, &keys).unwrap();
    assert!(got.keyring.ct_eq(&p.ring));
}

#[test]
fn destination_rules_apply_in_the_documented_order() {
    // Revoked wins over a version below the holder's and below the floor.
    let mut p = pair_with(
        node_v1(),
        agent(),
        HolderConfig {
            min_node_version: Version::new(3, 0, 0),
            ..hcfg()
        },
        upgrader_cfg(),
    );
    p.ring.custody_mut().raise_floor(Version::new(4, 0, 0), 4);
    p.ring
        .custody_mut()
        .add_revocation(RevocationEntry {
            mr_enclave: node_v2().mr_enclave,
            evidence: b"revocation".to_vec(),
        })
        .unwrap();
    assert_eq!(p.refusal(), "revoked");
    // Below the holder's version wins over below the floor.
    let mut p = pair_with(
        node_v1(),
        agent(),
        HolderConfig {
            min_node_version: Version::new(3, 0, 0),
            ..hcfg()
        },
        upgrader_cfg(),
    );
    p.ring.custody_mut().raise_floor(Version::new(4, 0, 0), 4);
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    assert_eq!(
        p.answer(&resp, NOW + 2).unwrap_err().code(),
        "lower_version"
    );
    // Version at the floor but ISVSVN below its floor.
    let mut p = pair();
    p.ring.custody_mut().raise_floor(Version::new(2, 0, 0), 3);
    assert_eq!(p.refusal(), "below_floor");
    // Exactly at both floors: released.
    let mut p = pair();
    p.ring.custody_mut().raise_floor(Version::new(2, 0, 0), 2);
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    assert!(p.answer(&resp, NOW + 2).is_ok());
    // wrong_role comes before the destination is looked at.
    let mut p = pair_with(
        node_v1(),
        agent(),
        HolderConfig {
            allow_upgrader: false,
            ..hcfg()
        },
        ReceiverConfig {
            destination: vec![],
            ..upgrader_cfg()
        },
    );
    assert_eq!(p.refusal(), "wrong_role");
    // A revoked upgrader gets nothing, whatever it names: checked right after the role,
    // before the destination.
    let mut p = pair_with(
        node_v1(),
        agent(),
        hcfg(),
        ReceiverConfig {
            destination: vec![],
            ..upgrader_cfg()
        },
    );
    p.ring
        .custody_mut()
        .add_revocation(RevocationEntry {
            mr_enclave: agent().mr_enclave,
            evidence: b"revocation".to_vec(),
        })
        .unwrap();
    assert_eq!(p.refusal(), "revoked");
    // An oversized destination is malformed, before the authorizer sees it.
    let mut p = pair_with(
        node_v1(),
        agent(),
        hcfg(),
        ReceiverConfig {
            destination: vec![b'x'; MAX_AUTHORIZATION + 1],
            ..upgrader_cfg()
        },
    );
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    let e = p.answer(&resp, NOW + 2).unwrap_err();
    assert!(
        matches!(&e, HandoverError::Malformed(m) if m.contains("destination")),
        "{e}"
    );
}

#[test]
fn node_receivers_are_checked_against_custody() {
    // A node below the floor, revoked, or not the release the keys were released for.
    let mut p = agent_to_node();
    p.ring
        .custody_mut()
        .add_revocation(RevocationEntry {
            mr_enclave: node_v2().mr_enclave,
            evidence: b"revocation".to_vec(),
        })
        .unwrap();
    assert_eq!(p.refusal(), "revoked");

    let mut p = agent_to_node();
    p.ring.custody_mut().raise_floor(Version::new(2, 0, 1), 0);
    assert_eq!(p.refusal(), "below_floor");

    // The holder compares the stamp's MRENCLAVE only; the node compares the whole stamp.
    let mut p = agent_to_node();
    p.ring.custody_mut().released_to = Some(Destination {
        isv_svn: 1,
        ..dest_v2()
    });
    let (_, _, keys) = p.run_to_keys();
    assert_eq!(
        p.receiver.on_keys(&p.rtee, &keys).unwrap_err().code(),
        "not_released_for_me"
    );
    let mut p = agent_to_node();
    p.ring.custody_mut().released_to = Some(Destination {
        mr_enclave: node_v1().mr_enclave,
        ..dest_v2()
    });
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    assert_eq!(
        p.answer(&resp, NOW + 2).unwrap_err().code(),
        "not_released_for_peer"
    );
    // A node naming a destination.
    let mut p = agent_to_node();
    let (r, hello) = Receiver::start(
        &p.rtee,
        ReceiverConfig {
            destination: DEST_V2.to_vec(),
            ..node_cfg()
        },
        allow(),
        &mut rng(),
    )
    .unwrap();
    (p.receiver, p.hello) = (r, hello);
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    assert_eq!(
        p.answer(&resp, NOW + 2).unwrap_err().code(),
        "unexpected_destination"
    );
}

#[test]
fn authorization_error_codes() {
    let e = |a: AuthzError| HandoverError::from(a).code();
    let m = Measurement([1; 32]);
    assert_eq!(e(AuthzError::Revoked(m)), "revoked");
    assert_eq!(e(AuthzError::NotAuthorized(m)), "unauthorized");
    assert_eq!(e(AuthzError::NoDestinationPolicy), "unauthorized");
    assert_eq!(e(AuthzError::BadDestination("x".into())), "unauthorized");
    assert_eq!(
        e(AuthzError::BadEvidence {
            mr_enclave: m,
            reason: "x".into()
        }),
        "unauthorized"
    );
}

// ---------------------------------------------------------------------------------------
// §3 JSON rules
// ---------------------------------------------------------------------------------------

/// One valid instance of every message, as JSON values.
fn messages() -> Vec<(&'static str, Value)> {
    messages_text()
        .into_iter()
        .map(|(k, t)| (k, serde_json::from_str(&t).unwrap()))
        .collect()
}

/// One valid instance of every message, as serialized (fields in declaration order).
fn messages_text() -> Vec<(&'static str, String)> {
    let mut p = pair();
    let hello = p.hello.clone();
    let ch = p.challenge(NOW);
    let resp = p.respond(&ch, NOW + 1);
    let keys = p.answer(&resp, NOW + 2).unwrap();
    p.receiver.on_keys(&p.rtee, &keys).unwrap();
    let ack = p.receiver.ack(&p.rtee).unwrap();
    let delivered = p.holder.on_ack(&p.htee, &ack, NOW + 3).unwrap().reply;
    let v = |x: &dyn erased::Ser| x.text();
    vec![
        ("hello", v(&hello)),
        ("challenge", v(&ch)),
        ("response", v(&resp)),
        ("keys", v(&keys)),
        ("ack", v(&ack)),
        ("delivered", v(&delivered)),
    ]
}

mod erased {
    pub trait Ser {
        fn text(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn text(&self) -> String {
            serde_json::to_string(self).unwrap()
        }
    }
}

/// Parses `text` as the message `kind`; `Ok` re-serialized as a value.
fn parse(kind: &str, text: &str) -> Result<Value, String> {
    fn go<T: serde::de::DeserializeOwned + serde::Serialize>(t: &str) -> Result<Value, String> {
        serde_json::from_str::<T>(t)
            .map(|m| serde_json::to_value(m).unwrap())
            .map_err(|e| e.to_string())
    }
    match kind {
        "hello" => go::<Hello>(text),
        "challenge" => go::<Challenge>(text),
        "response" => go::<Response>(text),
        "keys" => go::<Keys>(text),
        "ack" => go::<Ack>(text),
        "delivered" => go::<Delivered>(text),
        _ => unreachable!(),
    }
}

#[test]
fn json_every_field_is_required_and_typed() {
    for (kind, v) in messages() {
        let text = v.to_string();
        assert_eq!(parse(kind, &text).unwrap(), v, "{kind} roundtrips");
        for field in v.as_object().unwrap().keys() {
            let mut missing = v.clone();
            missing.as_object_mut().unwrap().remove(field);
            assert!(
                parse(kind, &missing.to_string()).is_err(),
                "{kind}: no {field}"
            );
            for bad in [Value::Null, json!(1), json!([]), json!({}), json!(true)] {
                let mut x = v.clone();
                x[field] = bad.clone();
                if field == "expires_at_ms" && bad == json!(1) {
                    continue;
                }
                assert!(
                    parse(kind, &x.to_string()).is_err(),
                    "{kind}.{field} = {bad}"
                );
            }
        }
        // Unknown fields, and field names differing in case.
        let mut x = v.clone();
        x["extra"] = json!("");
        assert!(
            parse(kind, &x.to_string()).is_err(),
            "{kind}: unknown field"
        );
        let first = v.as_object().unwrap().keys().next().unwrap().clone();
        let mut x = v.clone();
        let val = x.as_object_mut().unwrap().remove(&first).unwrap();
        x[first.to_uppercase()] = val;
        assert!(parse(kind, &x.to_string()).is_err(), "{kind}: case");
    }
}

#[test]
fn json_duplicate_keys_are_refused() {
    for (kind, v) in messages() {
        for (field, val) in v.as_object().unwrap() {
            // The same member twice, with the same value.
            let body = v.to_string();
            let dup = format!("{{{}:{},{}", Value::String(field.clone()), val, &body[1..]);
            let e = parse(kind, &dup).unwrap_err();
            assert!(e.contains("duplicate field"), "{kind}.{field}: {e}");
        }
    }
}

#[test]
fn json_the_message_is_one_object() {
    for (kind, v) in messages() {
        let text = v.to_string();
        // Whitespace around it is fine; anything else after it is not.
        assert!(parse(kind, &format!(" \n\t{text}\r\n ")).is_ok(), "{kind}");
        for bad in [
            format!("{text} {{}}"),
            format!("{text}x"),
            format!("[{text}]"),
            format!("\u{feff}{text}"),
            "null".to_string(),
            String::new(),
        ] {
            assert!(parse(kind, &bad).is_err(), "{kind}: {bad:.40}");
        }
    }
    // The same values as a JSON array in declaration order (serde's sequence form of a
    // struct): refused.
    for (kind, text) in messages_text() {
        // No value contains ',' or ':' (base64 strings and integers).
        let values: Vec<&str> = text[1..text.len() - 1]
            .split(',')
            .map(|member| member.split_once(':').unwrap().1)
            .collect();
        let as_array = format!("[{}]", values.join(","));
        let e = parse(kind, &as_array).unwrap_err();
        assert!(e.contains("object"), "{kind}: {e}");
    }
}

#[test]
fn json_base64_must_be_canonical() {
    let (_, hello) = messages().remove(0);
    let ti = hello["target_info"].as_str().unwrap().to_string();
    let with = |s: &str| json!({ "target_info": s }).to_string();
    assert!(parse("hello", &with(&ti)).is_ok());
    // 512 bytes encode to 684 characters ending in "=" (512 = 3·170 + 2).
    assert_eq!(ti.len(), 684);
    assert!(ti.ends_with("A=") && !ti.ends_with("=="));
    let mut trailing_bits = ti.clone();
    trailing_bits.replace_range(682..683, "B"); // last symbol's 2 unused bits non-zero
    let cases = [
        ("non-zero trailing bits", trailing_bits),
        ("missing padding", ti[..683].to_string()),
        ("extra padding", format!("{ti}=")),
        ("leading space", format!(" {ti}")),
        ("trailing newline", format!("{ti}\n")),
        (
            "inner line break",
            format!("{}\r\n{}", &ti[..76], &ti[76..]),
        ),
        ("URL-safe alphabet", ti.replace('A', "-")),
        ("too short", ti[..680].to_string()),
        ("padding inside", format!("{}={}", &ti[..100], &ti[101..])),
    ];
    for (what, s) in cases {
        let e = parse("hello", &with(&s)).unwrap_err();
        assert!(!e.is_empty(), "{what}");
    }
    // Variable fields too: one byte is "AA==", not "AB==", "AA" or "AA=".
    let (_, resp) = messages().remove(2);
    for (s, ok) in [
        ("", true),
        ("AA==", true),
        ("AB==", false),
        ("AA", false),
        ("AA=", false),
        ("AAA=", true),
        ("AAB=", false),
        ("AAE=", true),
        ("A===", false),
        ("====", false),
        (" AA==", false),
    ] {
        let mut x = resp.clone();
        x["receiver_authorization"] = json!(s);
        assert_eq!(parse("response", &x.to_string()).is_ok(), ok, "{s:?}");
    }
    // JSON string escapes are decoded before base64: "\/" is "/", "\u0041" is "A".
    let escaped = ti.replace('/', "\\/").replacen('A', "\\u0041", 1);
    assert_ne!(escaped, ti);
    let text = format!("{{\"target_info\":\"{escaped}\"}}");
    assert_eq!(parse("hello", &text).unwrap(), hello);
}

#[test]
fn json_integers() {
    let (_, ch) = messages().remove(1);
    let body = ch.to_string();
    let n = format!(
        "\"expires_at_ms\":{}",
        ch["expires_at_ms"].as_u64().unwrap()
    );
    assert!(body.contains(&n));
    let with = |s: &str| body.replace(&n, &format!("\"expires_at_ms\":{s}"));
    assert!(parse("challenge", &body).is_ok());
    assert!(parse("challenge", &with("18446744073709551615")).is_ok());
    for bad in [
        "18446744073709551616",
        "-1",
        "1.0",
        "1e3",
        "0x10",
        "01",
        "\"1\"",
        "+1",
    ] {
        assert!(parse("challenge", &with(bad)).is_err(), "{bad}");
    }
    // serde_json reads "-0" as a float: refused like any other sign.
    assert!(parse("challenge", &with("-0")).is_err());
}

// ---------------------------------------------------------------------------------------
// §3 HTTP statuses
// ---------------------------------------------------------------------------------------

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Served {
    url: String,
    platform: Arc<Platform>,
}

async fn serve_holder(
    holder_id: EnclaveIdentity,
    cfg: HolderConfig,
    ring: Keyring,
    tee: Option<Arc<dyn Tee>>,
) -> Served {
    let platform = platform();
    let tee = tee.unwrap_or_else(|| Arc::new(InProcessTee::new(platform.clone(), holder_id)));
    let holder = Holder::new(&*tee, cfg, allow()).unwrap();
    let ring = Arc::new(ring);
    let app = holder_router(
        holder,
        tee,
        Arc::new(move || ring.clone()),
        Arc::new(|_| {}),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        app,
        ServeLimits::default(),
        std::future::pending(),
    ));
    Served { url, platform }
}

fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Refused { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// What to do to the receiver's response before sending it.
type Spoil = fn(&mut Response);

/// Runs hello and challenge over HTTP with `receiver_id`, then sends the (spoiled) response.
async fn respond_over_http(
    s: &Served,
    receiver_id: EnclaveIdentity,
    rcfg: ReceiverConfig,
    spoil: Spoil,
) -> (u16, String) {
    let rtee = InProcessTee::new(s.platform.clone(), receiver_id);
    let client = HolderClient::new(&s.url).unwrap();
    let (mut r, hello) = Receiver::start(&rtee, rcfg, allow(), &mut rng()).unwrap();
    let ch = client.hello(&hello).await.unwrap();
    let mut resp = r.on_challenge(&rtee, &ch, now_ms()).unwrap();
    spoil(&mut resp);
    refusal(client.response(&resp).await)
}

async fn post(url: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_holder_error_code_has_its_documented_http_status() {
    let ring_for_node = {
        let mut r = keyring();
        r.custody_mut().released_to = Some(dest_v2());
        r
    };
    let agent_cfg = HolderConfig {
        allow_upgrader: false,
        ..hcfg()
    };
    let s = serve_holder(node_v1(), hcfg(), keyring(), None).await;
    let nothing: Spoil = |_| {};

    // hello
    let hello_url = format!("{}{PATH_HELLO}", s.url);
    let (status, text) = post(&hello_url, b"{".to_vec()).await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "malformed");
    assert!(body["message"].is_string());
    let mut ti = agent().target_info().to_bytes();
    ti[128] = 1;
    let (status, text) = post(
        &hello_url,
        json!({ "target_info": STANDARD.encode(ti) })
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!((status, text.contains("\"malformed_report\"")), (400, true));

    // response
    type Row = (u16, &'static str, EnclaveIdentity, ReceiverConfig, Spoil);
    let table: Vec<Row> = vec![
        (403, "report_mac", agent(), upgrader_cfg(), |r| {
            r.receiver_report[400] ^= 1
        }),
        (403, "transcript_mismatch", agent(), upgrader_cfg(), |r| {
            r.destination.push(0)
        }),
        (400, "malformed_report", agent(), upgrader_cfg(), |r| {
            r.receiver_report[300] = 1
        }),
        (409, "unknown_session", agent(), upgrader_cfg(), |r| {
            r.session[0] ^= 1
        }),
        (403, "unauthorized", rogue(), upgrader_cfg(), nothing),
        (403, "debug_peer", debug_agent(), upgrader_cfg(), nothing),
        (
            403,
            "no_destination",
            agent(),
            ReceiverConfig {
                destination: vec![],
                ..upgrader_cfg()
            },
            nothing,
        ),
        (
            403,
            "unauthorized",
            agent(),
            ReceiverConfig {
                destination: b"made up".to_vec(),
                ..upgrader_cfg()
            },
            nothing,
        ),
        (
            400,
            "malformed",
            agent(),
            ReceiverConfig {
                authorization: vec![0; MAX_AUTHORIZATION + 1],
                ..upgrader_cfg()
            },
            nothing,
        ),
    ];
    for (status, code, id, rcfg, spoil) in table {
        assert_eq!(
            respond_over_http(&s, id, rcfg, spoil).await,
            (status, code.to_string()),
            "{code}"
        );
    }

    // Holder and keyring configurations.
    let revoked = {
        let mut r = keyring();
        r.custody_mut()
            .add_revocation(RevocationEntry {
                mr_enclave: node_v2().mr_enclave,
                evidence: b"revocation".to_vec(),
            })
            .unwrap();
        r
    };
    let floor = {
        let mut r = keyring();
        r.custody_mut().raise_floor(Version::new(2, 0, 1), 0);
        r
    };
    let high = HolderConfig {
        min_node_version: Version::new(3, 0, 0),
        ..hcfg()
    };
    let unstamped = keyring();
    struct Case {
        code: &'static str,
        holder: (EnclaveIdentity, HolderConfig, Keyring),
        receiver: (EnclaveIdentity, ReceiverConfig),
    }
    let cases = vec![
        Case {
            code: "revoked",
            holder: (node_v1(), hcfg(), revoked),
            receiver: (agent(), upgrader_cfg()),
        },
        Case {
            code: "below_floor",
            holder: (node_v1(), hcfg(), floor),
            receiver: (agent(), upgrader_cfg()),
        },
        Case {
            code: "lower_version",
            holder: (node_v1(), high, keyring()),
            receiver: (agent(), upgrader_cfg()),
        },
        Case {
            code: "wrong_role",
            holder: (agent(), agent_cfg.clone(), ring_for_node.clone()),
            receiver: (agent(), upgrader_cfg()),
        },
        Case {
            code: "unexpected_destination",
            holder: (agent(), agent_cfg.clone(), ring_for_node.clone()),
            receiver: (
                node_v2(),
                ReceiverConfig {
                    destination: DEST_V2.to_vec(),
                    ..node_cfg()
                },
            ),
        },
        Case {
            code: "not_released_for_peer",
            holder: (agent(), agent_cfg.clone(), unstamped),
            receiver: (node_v2(), node_cfg()),
        },
    ];
    for Case {
        code,
        holder: (hid, cfg, ring),
        receiver: (rid, rcfg),
    } in cases
    {
        let s = serve_holder(hid, cfg, ring, None).await;
        assert_eq!(
            respond_over_http(&s, rid, rcfg, nothing).await,
            (403, code.to_string()),
            "{code}"
        );
    }

    // The small-order HPKE key (the report binds it, so only the key itself is wrong).
    {
        let rtee = InProcessTee::new(s.platform.clone(), agent());
        let client = HolderClient::new(&s.url).unwrap();
        let (mut r, hello) = Receiver::start(&rtee, upgrader_cfg(), allow(), &mut rng()).unwrap();
        let ch = client.hello(&hello).await.unwrap();
        let real = r.on_challenge(&rtee, &ch, now_ms()).unwrap();
        let resp = response_with_key(&rtee, &ch, &real, [0; 32]);
        assert_eq!(
            refusal(client.response(&resp).await),
            (400, "malformed".to_string())
        );
    }

    // expired (a 1 ms challenge)
    let s2 = serve_holder(
        node_v1(),
        HolderConfig {
            challenge_ttl_ms: 1,
            ..hcfg()
        },
        keyring(),
        None,
    )
    .await;
    {
        let rtee = InProcessTee::new(s2.platform.clone(), agent());
        let client = HolderClient::new(&s2.url).unwrap();
        let (mut r, hello) = Receiver::start(&rtee, upgrader_cfg(), allow(), &mut rng()).unwrap();
        let ch = client.hello(&hello).await.unwrap();
        let resp = r.on_challenge(&rtee, &ch, ch.expires_at_ms).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            refusal(client.response(&resp).await),
            (409, "expired".to_string())
        );
    }

    // ack
    {
        let rtee = InProcessTee::new(s.platform.clone(), agent());
        let client = HolderClient::new(&s.url).unwrap();
        let (mut r, hello) = Receiver::start(&rtee, upgrader_cfg(), allow(), &mut rng()).unwrap();
        let ch = client.hello(&hello).await.unwrap();
        let resp = r.on_challenge(&rtee, &ch, now_ms()).unwrap();
        let keys = client.response(&resp).await.unwrap();
        r.on_keys(&rtee, &keys).unwrap();
        let ack = r.ack(&rtee).unwrap();
        let mut wrong = ack.clone();
        wrong.keyring_fingerprint[0] ^= 1;
        assert_eq!(
            refusal(client.ack(&wrong).await),
            (403, "ack_mismatch".to_string())
        );
        let data = Report::from_bytes(&ack.receiver_report)
            .unwrap()
            .report_data;
        let forged = Ack {
            receiver_report: InProcessTee::new(s.platform.clone(), node_v2())
                .report(&node_v1().target_info(), &data)
                .unwrap()
                .to_bytes(),
            ..ack.clone()
        };
        assert_eq!(
            refusal(client.ack(&forged).await),
            (403, "peer_changed".to_string())
        );
        let mut bad = ack.clone();
        bad.receiver_report[420] ^= 1;
        assert_eq!(
            refusal(client.ack(&bad).await),
            (403, "report_mac".to_string())
        );
        let done = client.ack(&ack).await.unwrap();
        assert_eq!(done.keyring_fingerprint, ack.keyring_fingerprint);
        assert_eq!(
            refusal(client.ack(&ack).await),
            (409, "unknown_session".to_string())
        );
    }

    // busy
    let s3 = serve_holder(
        node_v1(),
        HolderConfig {
            max_pending: 1,
            ..hcfg()
        },
        keyring(),
        None,
    )
    .await;
    let client = HolderClient::new(&s3.url).unwrap();
    let hello = Hello {
        target_info: agent().target_info().to_bytes(),
    };
    client.hello(&hello).await.unwrap();
    assert_eq!(
        refusal(client.hello(&hello).await),
        (503, "busy".to_string())
    );

    // tee_failure
    struct NoReports(InProcessTee);
    impl Tee for NoReports {
        fn target_info(&self) -> Result<TargetInfo, TeeError> {
            self.0.target_info()
        }
        fn report(&self, _: &TargetInfo, _: &ReportData) -> Result<Report, TeeError> {
            Err(TeeError::Unavailable("test".into()))
        }
        fn get_key(&self, r: &KeyRequest) -> Result<dc_tee::Key128, TeeError> {
            self.0.get_key(r)
        }
    }
    let broken: Arc<dyn Tee> = Arc::new(NoReports(InProcessTee::new(platform(), node_v1())));
    let s4 = serve_holder(node_v1(), hcfg(), keyring(), Some(broken)).await;
    let client = HolderClient::new(&s4.url).unwrap();
    assert_eq!(
        refusal(client.hello(&hello).await),
        (500, "tee_failure".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_body_limit_paths_and_methods() {
    let s = serve_holder(node_v1(), hcfg(), keyring(), None).await;
    for path in [PATH_HELLO, PATH_RESPONSE, PATH_ACK] {
        let url = format!("{}{path}", s.url);
        // Exactly MAX_BODY bytes are read (and are not a message); one more is 413.
        let (status, text) = post(&url, vec![b' '; MAX_BODY]).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("\"malformed\""));
        let (status, _) = post(&url, vec![b' '; MAX_BODY + 1]).await;
        assert_eq!(status, 413, "{path}");
        // Only POST.
        let r = reqwest::Client::new().get(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405, "{path}");
    }
    assert_eq!(MAX_BODY, 64 * 1024);
    assert_eq!(MAX_RESPONSE_BODY, 1024 * 1024);
    // The largest request: a response with both evidence fields at their limit.
    let largest = Response {
        session: [0xFF; 16],
        receiver_report: [0xFF; 432],
        hpke_public_key: [0xFF; 32],
        receiver_authorization: vec![0xFF; MAX_AUTHORIZATION],
        destination: vec![0xFF; MAX_AUTHORIZATION],
    };
    assert!(serde_json::to_vec(&largest).unwrap().len() < MAX_BODY);
    let (status, _) = post(&format!("{}/v1/handover/other", s.url), b"{}".to_vec()).await;
    assert_eq!(status, 404);
    // The Content-Type is not checked.
    let hello = json!({ "target_info": STANDARD.encode(agent().target_info().to_bytes()) });
    let r = reqwest::Client::new()
        .post(format!("{}{PATH_HELLO}", s.url))
        .header("content-type", "text/plain")
        .body(hello.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_not_completed_within_ten_seconds_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = serve_holder(node_v1(), hcfg(), keyring(), None).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Complete headers, then a body that never completes.
    c.write_all(
        format!("POST {PATH_HELLO} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{")
            .as_bytes(),
    )
    .await
    .unwrap();
    let start = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") || !answer.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(20), c.read(&mut buf))
            .await
            .expect("no answer within 20 s")
            .unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"timeout\""), "{text}");
    // Not before the deadline; no upper bound: a busy machine may answer late.
    assert!(elapsed >= Duration::from_secs(9), "{elapsed:?}");
}

#[test]
fn the_receiver_limits_the_holder_evidence() {
    let cfg = HolderConfig {
        authorization: vec![b'e'; MAX_AUTHORIZATION + 1],
        ..hcfg()
    };
    let mut p = pair_with(node_v1(), agent(), cfg, upgrader_cfg());
    let ch = p.challenge(NOW);
    let e = p.receiver.on_challenge(&p.rtee, &ch, NOW).unwrap_err();
    assert!(
        matches!(&e, HandoverError::Malformed(m) if m.contains("authorization")),
        "{e}"
    );
    // At the limit it is accepted.
    let cfg = HolderConfig {
        authorization: vec![b'e'; MAX_AUTHORIZATION],
        ..hcfg()
    };
    let mut p = pair_with(node_v1(), agent(), cfg, upgrader_cfg());
    let ch = p.challenge(NOW);
    assert!(p.receiver.on_challenge(&p.rtee, &ch, NOW).is_ok());
}

//! CPU cost of one complete handover (hello → challenge → response → keys → open → ack →
//! delivery), both sides, with an in-process software TEE: platform round trips excluded,
//! the TEE's own CMAC work (what EREPORT/EGETKEY cost on hardware) included.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use dc_handover::{
    Holder, HolderConfig, Keyring, PeerRole, Receiver, ReceiverConfig, StaticAllowList, Version,
};
use dc_tee::sim::SimTee;
use dc_tee::{EnclaveIdentity, Tee};
use dc_tee_sim::platform::{test_identity, InProcessTee, Platform};
use rand_core::{OsRng, TryRngCore};
use zeroize::Zeroizing;

/// Runs `f` with holder and receiver TEEs of one platform: in-process, or as `SimTee` clients
/// over the platform's real channel protocol (a socketpair served by its channel thread).
fn tees(channel: bool) -> (Box<dyn Tee>, Box<dyn Tee>, EnclaveIdentity, EnclaveIdentity) {
    let platform = Arc::new(Platform::new(
        Zeroizing::new([1; 32]),
        dc_tee::CpuSvn([1; 16]),
        dc_tee::KeyId([2; 32]),
    ));
    let (node, agent) = (test_identity(1, 9, 1, false), test_identity(2, 8, 1, false));
    let make = |id: EnclaveIdentity| -> Box<dyn Tee> {
        if channel {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            let p = platform.clone();
            std::thread::spawn(move || dc_tee_sim::server::serve_channel(&p, &id, b"", b));
            Box::new(SimTee::from_stream(a).unwrap())
        } else {
            Box::new(InProcessTee::new(platform.clone(), id))
        }
    };
    (make(node), make(agent), node, agent)
}

fn full_handover(c: &mut Criterion) {
    bench(c, "full handover (both sides, in-process TEE)", false);
    bench(
        c,
        "full handover (both sides, over the sim platform channel)",
        true,
    );
}

const DEST: dc_handover::Destination = dc_handover::Destination {
    mr_enclave: dc_tee::Measurement([0x77; 32]),
    version: Version::new(2, 0, 0),
    isv_svn: 2,
};

fn bench(c: &mut Criterion, name: &str, channel: bool) {
    let (htee, rtee, node, agent) = tees(channel);
    let (htee, rtee) = (&*htee, &*rtee);
    let allow = StaticAllowList::new()
        .allow(node.mr_enclave, PeerRole::Node(Version::new(1, 0, 0)))
        .allow(agent.mr_enclave, PeerRole::Upgrader)
        .allow_destination(b"destination", DEST);
    let cfg = HolderConfig {
        allow_debug_peers: false,
        min_node_version: Version::new(1, 0, 0),
        allow_upgrader: true,
        challenge_ttl_ms: 10_000,
        max_pending: 64,
        authorization: vec![],
    };
    let mut rng = OsRng.unwrap_err();
    let ring = Keyring::generate(&["node-identity", "data", "index"], &mut rng).unwrap();
    let mut holder = Holder::new(htee, cfg, allow.clone()).unwrap();
    let rcfg = ReceiverConfig {
        allow_debug_peers: false,
        authorization: vec![],
        destination: b"destination".to_vec(),
        expect_released_to: Some(DEST),
    };
    c.bench_function(name, |b| {
        b.iter(|| {
            let (mut r, hello) =
                Receiver::start(rtee, rcfg.clone(), allow.clone(), &mut rng).unwrap();
            let ch = holder.on_hello(htee, &hello, 1, &mut rng).unwrap();
            let resp = r.on_challenge(rtee, &ch, 2).unwrap();
            let keys = holder.on_response(htee, &resp, &ring, 3, &mut rng).unwrap();
            let got = r.on_keys(rtee, &keys).unwrap();
            let ack = r.ack(rtee).unwrap();
            holder.on_ack(htee, &ack, 4).unwrap();
            got
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(5));
    targets = full_handover
}
criterion_main!(benches);

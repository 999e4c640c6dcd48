//! CPU cost of one complete handover as the node and the agent run it: committee-signed
//! evidence on both sides and a committee-signed destination (2-of-3 committee), checked by
//! `CommitteeAuthorizer`, with an in-process software TEE (platform round trips excluded).
//! The node releases its keyring to the agent for the destination; the agent verifies the
//! node's record.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use dc_handover::{Destination, Holder, HolderConfig, Keyring, Receiver, ReceiverConfig, Version};
use dc_release::committee::CommitteeSigner;
use dc_release::{Artifact, Committee, CommitteeAuthorizer, ReleaseRecord, Role, SignedRecord};
use dc_tee::EnclaveIdentity;
use dc_tee_sim::platform::{test_identity, InProcessTee, Platform};
use rand_core::{OsRng, TryRngCore};
use zeroize::Zeroizing;

fn record(signers: &[CommitteeSigner], id: &EnclaveIdentity, role: Role, version: &str) -> Vec<u8> {
    let mut r = SignedRecord::unsigned(ReleaseRecord {
        product: match role {
            Role::Node => "dcnode".into(),
            Role::Upgrader => "dcupgrade".into(),
        },
        role,
        version: version.into(),
        mr_enclave: id.mr_enclave.to_string(),
        isv_svn: id.isv_svn,
        artifact: (role == Role::Node).then(|| Artifact {
            sha256: "ab".repeat(32),
            size: 1 << 20,
            urls: vec!["https://releases.example/dcnode.tar".into()],
        }),
        expires_at: None,
    });
    for s in signers {
        r.sign(s).unwrap();
    }
    r.to_json()
}

fn committee_handover(c: &mut Criterion) {
    let platform = Arc::new(Platform::new(
        Zeroizing::new([1; 32]),
        dc_tee::CpuSvn([1; 16]),
        dc_tee::KeyId([2; 32]),
    ));
    let (node, agent, target) = (
        test_identity(1, 9, 1, false),
        test_identity(2, 8, 1, false),
        test_identity(3, 9, 2, false),
    );
    let (htee, rtee) = (
        InProcessTee::new(platform.clone(), node),
        InProcessTee::new(platform, agent),
    );
    let signers: Vec<CommitteeSigner> = (1..=3)
        .map(|i| CommitteeSigner::from_seed([i; 32]))
        .collect();
    let committee = Committee::new(signers.iter().map(|s| s.public()), 2).unwrap();
    let authz = || CommitteeAuthorizer::new(committee.clone()).with_products("dcnode", "dcupgrade");
    let signing = &signers[..2];
    let destination = record(signing, &target, Role::Node, "2.0.0");
    let mut rng = OsRng.unwrap_err();
    let mut ring = Keyring::generate(&["node-identity", "data"], &mut rng).unwrap();
    ring.custody_mut().raise_floor(Version::new(1, 0, 0), 1);
    let mut holder = Holder::new(
        &htee,
        HolderConfig {
            allow_debug_peers: false,
            min_node_version: Version::new(1, 0, 0),
            allow_upgrader: true,
            challenge_ttl_ms: 10_000,
            max_pending: 64,
            authorization: record(signing, &node, Role::Node, "1.0.0"),
        },
        authz(),
    )
    .unwrap();
    let rcfg = ReceiverConfig {
        allow_debug_peers: false,
        authorization: record(signing, &agent, Role::Upgrader, "0.1.0"),
        destination,
        expect_released_to: Some(Destination {
            mr_enclave: target.mr_enclave,
            version: Version::new(2, 0, 0),
            isv_svn: 2,
        }),
    };
    c.bench_function(
        "full handover, committee evidence and destination (2-of-3), in-process TEE",
        |b| {
            b.iter(|| {
                let (mut r, hello) =
                    Receiver::start(&rtee, rcfg.clone(), authz(), &mut rng).unwrap();
                let ch = holder.on_hello(&htee, &hello, 1, &mut rng).unwrap();
                let resp = r.on_challenge(&rtee, &ch, 2).unwrap();
                let keys = holder
                    .on_response(&htee, &resp, &ring, 3, &mut rng)
                    .unwrap();
                let got = r.on_keys(&rtee, &keys).unwrap();
                let ack = r.ack(&rtee).unwrap();
                holder.on_ack(&htee, &ack, 4).unwrap();
                got
            })
        },
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(std::time::Duration::from_secs(5));
    targets = committee_handover
}
criterion_main!(benches);

//! An upgrade driven by DCChain — a real Substrate runtime under chopsticks — instead of the
//! local feed: DcProgram names the release, EnclaveIds carries the committee's legacy
//! signature over its EnclaveID.

use std::time::Duration;

use dc_chain::storage::{self, encode, DcProgramInfo, EnclaveIdEntry};
use dc_chain::testnet::Testnet;
use dc_lab::Lab;
use dcupgrade::agent::now_ms;
use dcupgrade::journal::Phase;

mod common;
use common::{bins, AGENT, T};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_driven_upgrade_refuses_unsigned_ids_and_upgrades_to_a_signed_one() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start(dir.path()).await.unwrap();
    let mut lab = Lab::start(&dir.path().join("lab"), bins()).unwrap();
    let v1 = lab.build_node("1.0.0", 1, "", &[]).unwrap();
    lab.start_agent_with(&v1, Duration::from_secs(3600), false, &[net.url()])
        .unwrap();
    lab.wait_serving("1.0.0", T).await.unwrap();
    lab.put("before-upgrade", b"written by v1").await.unwrap();
    lab.wait_for(T, "the chain connection", |s| {
        s.chain
            .as_ref()
            .is_some_and(|c| c.finalized_block.is_some())
    })
    .await
    .unwrap();

    // A release whose EnclaveID nobody in the committee signed.
    let v2 = lab.build_node("2.0.0", 2, "", &[]).unwrap();
    let forged = EnclaveIdEntry {
        block: 1,
        enclave_id: v2.mr_enclave.to_string().into_bytes(),
        signature: dc_release::legacy::sign(
            &dc_release::committee::CommitteeSigner::generate().unwrap(),
            &v2.mr_enclave,
        )
        .into_bytes(),
    };
    net.set_storage_and_new_block(&[
        (
            storage::dc_program_key(),
            Some(encode::dc_program(&lab.chain_program(&v2, "2.0.0"))),
        ),
        (
            storage::enclave_ids_key(),
            Some(encode::enclave_ids(&[forged])),
        ),
    ])
    .await
    .unwrap();
    let s = lab
        .wait_for(T, "a refusal", |s| {
            s.refused.iter().any(|r| r.contains("not authorized"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.agent_log()));
    let st = s.state.unwrap();
    assert_eq!(
        (st.current.version.as_str(), st.upgrades_completed, st.phase),
        ("1.0.0", 0, Phase::Idle)
    );
    assert_eq!(lab.get("before-upgrade").await.unwrap().0, "1.0.0");

    // Now the committee signs it.
    net.set_storage_and_new_block(&[(
        storage::enclave_ids_key(),
        Some(encode::enclave_ids(&[lab.signed_enclave_id(&v2, 2)])),
    )])
    .await
    .unwrap();
    let block_at = now_ms();
    let s = lab
        .wait_serving("2.0.0", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.agent_log()));
    let st = s.state.unwrap();
    assert_eq!(st.upgrades_completed, 1);
    assert_eq!(st.current.mr_enclave, v2.mr_enclave.to_string());
    // A chain release's evidence: the chain's signatures and the measured manifest, which
    // the node holding the keys verified before releasing them for it.
    let evidence = std::fs::read(st.current.record.as_ref().expect("evidence")).unwrap();
    assert!(
        matches!(
            dc_release::ReleaseEvidence::parse(&evidence).unwrap(),
            dc_release::ReleaseEvidence::Legacy(_)
        ),
        "a chain release has no feed record"
    );
    assert_eq!(st.highest_isv_svn, 2, "ISVSVN from the measured manifest");
    let candidate = st.timeline.iter().find(|e| e.phase == "candidate").unwrap();
    assert!(
        candidate.note.contains("DCChain block #"),
        "{}",
        candidate.note
    );
    eprintln!(
        "detection: {} ms from dev_newBlock to the agent's decision",
        candidate.at_ms.saturating_sub(block_at)
    );
    let (version, data) = lab.get("before-upgrade").await.unwrap();
    assert_eq!(
        (version.as_str(), data.as_slice()),
        ("2.0.0", &b"written by v1"[..])
    );

    // The chain claims a version the measured bundle does not have: refused.
    let v3 = lab.build_node("3.0.0", 3, "", &[]).unwrap();
    lab.announce_on_chain(&net, &v3, "9.0.0", 3).await.unwrap();
    let s = lab
        .wait_for(T, "a failure", |s| {
            s.state.as_ref().is_some_and(|st| !st.failed.is_empty())
        })
        .await
        .unwrap();
    let st = s.state.unwrap();
    assert!(
        st.failed
            .values()
            .any(|f| f.reason.contains("measured bundle is version 3.0.0")),
        "{:?}",
        st.failed
    );
    assert_eq!(st.current.version, "2.0.0");

    // What the agent's metrics say of all this: the endpoint, its finalized head, each
    // decision and outcome by reason.
    let m = lab
        .wait_metrics(&lab.agent_url(), T, |m| {
            m.contains("dcupgrade_upgrades_total{outcome=\"refused\",reason=\"verification\"} 1")
        })
        .await
        .unwrap();
    let ep = format!("{{endpoint=\"{}\"}}", net.url());
    let value = |series: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{m}"))
    };
    assert_eq!(value(&format!("dcupgrade_chain_connected{ep}")), 1.0);
    assert_eq!(value(&format!("dcupgrade_chain_syncing{ep}")), 0.0);
    assert!(value(&format!("dcupgrade_chain_finalized_block{ep}")) >= 3.0);
    assert!(value(&format!("dcupgrade_chain_finalized_lag_seconds{ep}")) >= 0.0);
    assert_eq!(
        value("dcupgrade_release_decisions_total{decision=\"refused\",reason=\"chain_record_invalid\"}"),
        1.0,
        "the unsigned EnclaveID"
    );
    assert_eq!(
        value("dcupgrade_release_decisions_total{decision=\"upgrade\",reason=\"newer_release\"}"),
        2.0,
        "2.0.0, then 3.0.0 (refused after its download)"
    );
    assert_eq!(
        value("dcupgrade_upgrades_total{outcome=\"committed\",reason=\"none\"}"),
        1.0
    );
    assert_eq!(
        value("dcupgrade_upgrades_total{outcome=\"refused\",reason=\"verification\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_finalized_state_each_signature_and_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start(dir.path()).await.unwrap();
    let committee = dc_release::committee::CommitteeSigner::generate().unwrap();
    let id = dc_tee::Measurement([0x5a; 32]);
    let good = EnclaveIdEntry {
        block: 4,
        enclave_id: id.to_string().into_bytes(),
        signature: dc_release::legacy::sign(&committee, &id).into_bytes(),
    };
    let bad = EnclaveIdEntry {
        block: 5,
        enclave_id: id.to_string().into_bytes(),
        signature: b"bnotasignature".to_vec(),
    };
    let program = DcProgramInfo {
        origin_url: b"http://127.0.0.1:9/dcnode.tar".to_vec(),
        mirror_url: b"http://127.0.0.1:10/dcnode.tar".to_vec(),
        enclave_id: id.to_string().into_bytes(),
        version: b"0.2.1".to_vec(),
        mirror_cids: None,
    };
    let hash = net
        .set_storage_and_new_block(&[
            (
                storage::dc_program_key(),
                Some(encode::dc_program(&program)),
            ),
            (
                storage::enclave_ids_key(),
                Some(encode::enclave_ids(&[good, bad])),
            ),
        ])
        .await
        .unwrap();
    let run = |current: &str, json: bool| {
        let mut c = std::process::Command::new(&*AGENT);
        c.args([
            "check",
            "--chain",
            &net.url(),
            "--committee-key",
            &committee.public().to_text(),
            "--current",
            current,
        ]);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: serde_json::Value = serde_json::from_str(&run("0.1.0", true)).unwrap();
    assert_eq!(v["finalized_hash"], hash.as_str());
    assert_eq!(v["dc_program"]["version"], "0.2.1");
    assert_eq!(v["dc_program"]["mirror_cids"], serde_json::Value::Null);
    let entries = v["enclave_ids"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries.iter().filter(|e| e["valid"] == true).count(), 1);
    assert!(
        v["decision"]
            .as_str()
            .unwrap()
            .starts_with("upgrade to 0.2.1"),
        "{}",
        v["decision"]
    );
    let text = run("0.2.1", false);
    assert!(text.contains("decision      up to date"), "{text}");
    assert!(text.contains("signature INVALID"), "{text}");
    assert!(run("0.3.0", false).contains("refused because 0.2.1 is lower"));
}

//! End-to-end upgrades with real processes: the software TEE platform, the agent enclave, node
//! enclaves, a local feed. Needs the workspace binaries (`cargo build --workspace --bins`,
//! which `scripts/test` does).

mod common;

use std::time::Duration;

use common::{world, T};
use dc_release::{ReleaseRecord, SignedRecord};
use dcupgrade::journal::Phase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_moves_the_keys_and_v2_serves_every_object() {
    let w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    let s = w
        .lab
        .wait_serving("2.0.0", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    let st = s.state.unwrap();
    assert_eq!(st.upgrades_completed, 1);
    assert_eq!(st.current.mr_enclave, v2.mr_enclave.to_string());
    assert_eq!(st.highest_trusted, "2.0.0");
    let phases: Vec<&str> = st.timeline.iter().map(|e| e.phase.as_str()).collect();
    // Make-before-break: the new node holds the keys (as a standby) before the old one is
    // drained and stopped.
    let expected = [
        "candidate",
        "downloaded",
        "keys_acquired",
        "standby_launched",
        "standby_ready",
        "switching",
        "old_node_exited",
        "new_node_serving",
        "healthy",
    ];
    let at: Vec<usize> = expected
        .iter()
        .map(|p| {
            phases
                .iter()
                .position(|q| q == p)
                .unwrap_or_else(|| panic!("{p} missing from {phases:?}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "out of order: {phases:?}"
    );
    w.all_readable_from("2.0.0").await;
}

/// The earlier mode still works: the old node stops before the new one starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_before_make_still_upgrades() {
    let w = common::world_with(
        &[],
        dc_lab::AgentOptions {
            switch: "break-before-make".into(),
            ..dc_lab::AgentOptions::default()
        },
    )
    .await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    let s = w
        .lab
        .wait_serving("2.0.0", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    let phases: Vec<String> = s
        .state
        .unwrap()
        .timeline
        .iter()
        .map(|e| e.phase.clone())
        .collect();
    for p in ["old_stopped", "new_launched", "keys_delivered", "healthy"] {
        assert!(phases.iter().any(|q| q == p), "{p} missing from {phases:?}");
    }
    w.all_readable_from("2.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_upgrades_in_a_row() {
    let w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    w.lab.wait_serving("2.0.0", T).await.unwrap();
    let v3 = w.lab.build_node("3.0.0", 3, "", &[]).unwrap();
    w.lab.publish(&v3.record).unwrap();
    let s = w
        .lab
        .wait_serving("3.0.0", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    assert_eq!(s.state.unwrap().upgrades_completed, 2);
    w.all_readable_from("3.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_release_is_refused() {
    let w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    // No signature at all, and a signature by a key outside the committee.
    let unsigned = SignedRecord::unsigned(v2.record.record.clone());
    w.lab
        .publish_raw("unsigned.json", &unsigned.to_json())
        .unwrap();
    let mut foreign = SignedRecord::unsigned(v2.record.record.clone());
    foreign
        .sign(&dc_release::committee::CommitteeSigner::generate().unwrap())
        .unwrap();
    w.lab
        .publish_raw("foreign.json", &foreign.to_json())
        .unwrap();
    w.lab.publish_raw("garbage.json", b"{ not json").unwrap();
    let s = w
        .lab
        .wait_for(T, "three refusals", |s| s.refused.len() >= 3)
        .await
        .unwrap();
    assert!(
        s.refused
            .iter()
            .filter(|r| r.contains("signatures"))
            .count()
            >= 2,
        "{:?}",
        s.refused
    );
    w.after_two_scans("unsigned").await;
    w.v1_untouched().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_whose_artifact_digest_does_not_match_is_refused() {
    let w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    let mut r: ReleaseRecord = v2.record.record.clone();
    r.artifact.as_mut().unwrap().sha256 = "00".repeat(32);
    w.lab.publish(&w.lab.sign(r).unwrap()).unwrap();
    let reason = w.failure_reason().await;
    assert!(reason.contains("SHA-256"), "{reason}");
    w.v1_untouched().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_whose_bundle_measures_differently_is_refused() {
    let w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    let other = w
        .lab
        .build_node("2.0.0", 2, "-other", &["--listen", "127.0.0.1:1"])
        .unwrap();
    // The committee signed `other`'s identity, but the artifact is v2's bundle.
    let mut r = v2.record.record.clone();
    r.mr_enclave = other.mr_enclave.to_string();
    w.lab.publish(&w.lab.sign(r).unwrap()).unwrap();
    let reason = w.failure_reason().await;
    assert!(reason.contains("measures"), "{reason}");
    w.v1_untouched().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_version_is_refused() {
    let w = world().await;
    let old = w.lab.build_node("0.9.0", 1, "", &[]).unwrap();
    w.lab.publish(&old.record).unwrap();
    let refused = w.refusals_matching("0.9.0").await;
    assert!(
        refused
            .iter()
            .any(|r| r.contains("lower than the highest version")),
        "{:?}",
        refused
    );
    w.v1_untouched().await;
}

/// A failed release leaves v1 serving. `after_switch`: it failed after the old node was
/// stopped (rolled back); otherwise before the switch (abandoned: the old node never stopped).
async fn rolled_back(w: &common::World, fault: &str, after_switch: bool) {
    let bad = w
        .lab
        .build_node("2.0.0", 2, &format!("-{fault}"), &["--fault", fault])
        .unwrap();
    w.lab.publish(&bad.record).unwrap();
    let s = w
        .lab
        .wait_for(T, "a rollback", |s| {
            s.node_running
                && s.state
                    .as_ref()
                    .is_some_and(|st| !st.failed.is_empty() && st.phase == Phase::Idle)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    let st = s.state.unwrap();
    assert_eq!(st.current.version, "1.0.0");
    assert_eq!(st.upgrades_completed, 0);
    let has = |p: &str| st.timeline.iter().any(|e| e.phase == p);
    if after_switch {
        assert!(has("rolling_back"), "{:?}", st.timeline);
    } else {
        assert!(
            !has("switching") && !has("old_node_exited") && !has("rolling_back"),
            "the old node was touched: {:?}",
            st.timeline
        );
    }
    assert_eq!(
        st.highest_trusted, "1.0.0",
        "a failed release must not raise the rollback floor"
    );
    w.all_readable_from("1.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_version_that_crashes_at_start_is_rolled_back() {
    let w = world().await;
    // The standby crashes before the switch: abandoned, the old node never stopped.
    rolled_back(&w, "crash-at-start", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_version_that_fails_its_health_check_is_rolled_back() {
    let w = world().await;
    rolled_back(&w, "unhealthy", true).await;
}

#[test]
fn the_demo_command_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.txt");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dcupgrade-demo"))
        .args(["--objects", "5", "--metrics-out"])
        .arg(&metrics)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("all 5 objects read back from v2"), "{text}");
    // Make-before-break (the default) under the demo's load: nothing refused, reset or lost.
    let result: std::collections::HashMap<&str, &str> = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line: {text}"))
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    for key in ["downtime_ms", "upgrade_ms", "detection_ms", "requests"] {
        assert!(result.contains_key(key), "{key} missing: {text}");
    }
    assert_eq!(result.get("failed_requests"), Some(&"0"), "{text}");
    assert_eq!(result.get("lost_writes"), Some(&"0"), "{text}");
    // --metrics-out: the agent's scrape after the upgrade (the format is checked with
    // promtool in tests/metrics.rs).
    let m = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        m.contains("dcupgrade_upgrades_total{outcome=\"committed\",reason=\"none\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("dcupgrade_upgrade_downtime_seconds_count 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_release_is_refused() {
    let w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab
        .revoke(&v2.mr_enclave, "key extraction bug in 2.0.0")
        .unwrap();
    w.lab.publish(&v2.record).unwrap();
    let refused = w.refusals_matching("revoked").await;
    assert!(
        refused
            .iter()
            .any(|r| r.contains(&v2.mr_enclave.to_string())),
        "{:?}",
        refused
    );
    // The revocation is journaled: removing the file from the feed does not lift it.
    let j = w.lab.journal().unwrap().unwrap();
    assert!(j.revoked.contains(&v2.mr_enclave.to_string()));
    std::fs::remove_file(w.lab.feed.join(format!("revoke-{}.json", v2.mr_enclave))).unwrap();
    w.after_two_scans("revoke-removed").await;
    w.v1_untouched().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_protection_survives_an_agent_restart() {
    let mut w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    w.lab.wait_serving("2.0.0", T).await.unwrap();
    // Stop the agent (and its node); start it again: it resumes from its journal.
    w.lab.stop_agent();
    w.lab.start_agent(&w.v1, Duration::from_secs(3600)).unwrap();
    let s = w
        .lab
        .wait_serving("2.0.0", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    let st = s.state.unwrap();
    assert_eq!(
        (st.highest_trusted.as_str(), st.highest_isv_svn),
        ("2.0.0", 2)
    );
    // A release between v1 and v2 is now below the floor.
    let mid = w.lab.build_node("1.5.0", 2, "", &[]).unwrap();
    w.lab.publish(&mid.record).unwrap();
    w.lab
        .wait_for(T, "a refusal", |s| {
            s.refused
                .iter()
                .any(|r| r.contains("1.5.0") && r.contains("lower"))
        })
        .await
        .unwrap();
    w.all_readable_from("2.0.0").await;
}

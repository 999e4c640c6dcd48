//! Crash at every step (DESIGN §7). For each injection point the agent exits abruptly there
//! during an upgrade v1 → v2 (as `kill -9` would); it is then restarted. Whatever the point,
//! the agent must settle idle with exactly one node serving — v1 (abandoned or rolled back) or
//! v2 (completed) — every object written before the upgrade readable, and a consistent journal.
//! The same for the old node and the new node crashing at each step of their handover.
//!
//! The agent's points are `dcupgrade::crash::POINTS`; `every_agent_point_is_covered` keeps this
//! list and that one equal.

mod common;

use std::time::Duration;

use common::{world, world_with, World};
use dc_lab::AgentOptions;

/// What a crash at `point` must end in: a crash before anything was journaled retries; one
/// after the new node was verified healthy commits; everything between ends on v1.
fn expected(point: &str) -> &'static str {
    match point {
        "before:candidate" | "after:healthy" | "before:idle" | "after:idle" => "2.0.0",
        _ => "1.0.0",
    }
}

/// Runs an upgrade to a v2 built with `v2_args` while the agent is armed to crash at `point`;
/// checks it did crash there, and restarts it.
async fn crash_then_restart(point: &str, v2_tag: &str, v2_args: &[&str]) -> World {
    crash_then_restart_with(point, v2_tag, v2_args, AgentOptions::default()).await
}

async fn crash_then_restart_with(
    point: &str,
    v2_tag: &str,
    v2_args: &[&str],
    base: AgentOptions,
) -> World {
    let opts = AgentOptions {
        crash_at: Some(point.into()),
        ..base.clone()
    };
    let mut w: World = world_with(&[], opts).await;
    let v2 = w.lab.build_node("2.0.0", 2, v2_tag, v2_args).unwrap();
    w.lab.publish(&v2.record).unwrap();
    let code = w.lab.wait_agent_exit(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(86),
        "the agent did not crash at {point}\n{}",
        w.lab.agent_log()
    );
    // Restart the agent, as systemd would.
    let v1 = w.v1.clone();
    w.lab.start_agent_opts(&v1, &base).unwrap();
    w
}

async fn agent_crash(point: &str) {
    agent_crash_with(point, AgentOptions::default()).await
}

async fn agent_crash_with(point: &str, base: AgentOptions) {
    let w = crash_then_restart_with(point, "", &[], base).await;
    w.settled_on(expected(point)).await;
    // The rollback floors follow the outcome, even when the commit happened during recovery.
    let j = w.lab.journal().unwrap().unwrap();
    let (floor, svn) = if expected(point) == "2.0.0" {
        ("2.0.0", 2)
    } else {
        ("1.0.0", 1)
    };
    assert_eq!(
        (j.highest_trusted.as_str(), j.highest_isv_svn),
        (floor, svn),
        "rollback floors after a crash at {point}"
    );
}

/// The agent crashes while rolling back a v2 that fails its health check after the switch;
/// after a restart it must finish the rollback.
async fn agent_crash_during_rollback(point: &str) {
    assert!(dcupgrade::crash::ROLLBACK_POINTS.contains(&point));
    let w = crash_then_restart(point, "-unhealthy", &["--fault", "unhealthy"]).await;
    w.settled_on("1.0.0").await;
}

macro_rules! agent_points {
    ($($name:ident => $point:literal,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                agent_crash($point).await;
            }
        )*

        #[test]
        fn every_agent_point_is_covered() {
            assert_eq!(&[$($point),*][..], dcupgrade::crash::POINTS);
        }
    };
}

agent_points! {
    agent_before_candidate => "before:candidate",
    agent_after_candidate => "after:candidate",
    agent_after_download => "after-effect:download",
    agent_before_downloaded => "before:downloaded",
    agent_after_downloaded => "after:downloaded",
    agent_after_probe => "after-effect:probe",
    agent_after_keys_sealed => "after-effect:keys-sealed",
    agent_after_keys_acknowledged => "after-effect:keys-acknowledged",
    agent_before_keys_acquired => "before:keys_acquired",
    agent_after_keys_acquired => "after:keys_acquired",
    agent_before_standby_launched => "before:standby_launched",
    agent_after_standby_launched => "after:standby_launched",
    agent_after_standby_process_launched => "after-effect:standby-launched",
    agent_serving_the_challenge => "handover:challenge-made",
    agent_serving_the_keys => "handover:keys-made",
    agent_after_keys_delivered => "after-effect:keys-delivered",
    agent_before_standby_ready => "before:standby_ready",
    agent_after_standby_ready => "after:standby_ready",
    agent_before_switching => "before:switching",
    agent_after_switching => "after:switching",
    agent_after_old_node_stopped => "after-effect:old-node-stopped",
    agent_after_new_node_ready => "after-effect:new-node-ready",
    agent_after_health_checked => "after-effect:health-checked",
    agent_before_healthy => "before:healthy",
    agent_after_healthy => "after:healthy",
    agent_before_idle => "before:idle",
    agent_after_idle => "after:idle",
}

fn break_before_make() -> AgentOptions {
    AgentOptions {
        switch: "break-before-make".into(),
        ..AgentOptions::default()
    }
}

macro_rules! break_before_make_points {
    ($($name:ident => $point:literal,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                agent_crash_with($point, break_before_make()).await;
            }
        )*

        #[test]
        fn every_break_before_make_point_is_covered() {
            assert_eq!(&[$($point),*][..], dcupgrade::crash::BREAK_BEFORE_MAKE_POINTS);
        }
    };
}

break_before_make_points! {
    bbm_agent_before_old_stopped => "before:old_stopped",
    bbm_agent_after_old_stopped => "after:old_stopped",
    bbm_agent_before_new_launched => "before:new_launched",
    bbm_agent_after_new_launched => "after:new_launched",
    bbm_agent_after_new_node_launched => "after-effect:new-node-launched",
    bbm_agent_before_keys_delivered => "before:keys_delivered",
    bbm_agent_after_keys_delivered_journaled => "after:keys_delivered",
}

/// The old node (holder) crashes at a step of the handover with the agent.
async fn old_node_crash(point: &str, expect: &str) {
    let w = world_with(&["--crash-at", point], AgentOptions::default()).await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    // The upgrade either failed (backoff, v1 restarted) or completed.
    w.lab
        .wait_for(common::T, "the upgrade to end", |s| {
            s.state
                .as_ref()
                .is_some_and(|st| !st.failed.is_empty() || st.upgrades_completed > 0)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    w.settled_on(expect).await;
}

/// The new node (receiver) crashes at a step of the handover with the agent.
async fn new_node_crash(point: &str) {
    let w = world().await;
    let v2 = w
        .lab
        .build_node("2.0.0", 2, "-crash", &["--crash-at", point])
        .unwrap();
    w.lab.publish(&v2.record).unwrap();
    w.lab
        .wait_for(common::T, "the rollback", |s| {
            s.state.as_ref().is_some_and(|st| !st.failed.is_empty())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    w.settled_on("1.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_node_crashes_after_its_challenge() {
    old_node_crash("holder:after-challenge", "1.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_node_crashes_after_sending_the_keys() {
    old_node_crash("holder:after-keys", "1.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_node_crashes_after_the_acknowledgement() {
    // The agent already holds the keys durably: the upgrade goes on and completes.
    old_node_crash("holder:after-ack", "2.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_node_crashes_before_sealing() {
    new_node_crash("receiver:before-seal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_node_crashes_after_sealing_before_acknowledging() {
    new_node_crash("receiver:after-seal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_node_crashes_after_acknowledging() {
    new_node_crash("receiver:after-ack").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_crashes_before_journaling_the_rollback() {
    agent_crash_during_rollback("before:rolling_back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_crashes_after_journaling_the_rollback() {
    agent_crash_during_rollback("after:rolling_back").await;
}

#[test]
fn every_rollback_point_is_covered() {
    assert_eq!(
        dcupgrade::crash::ROLLBACK_POINTS,
        &["before:rolling_back", "after:rolling_back"]
    );
}

//! Shared by the end-to-end tests: a lab with v1 serving some objects.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use dc_lab::{AgentOptions, Bins, Lab, NodeRelease};
use dcupgrade::journal::Phase;

/// The agent's binary, found like every program of the lab: next to this test's executable
/// (`cargo build --workspace --bins` builds them; `scripts/test` does).
pub static AGENT: LazyLock<PathBuf> = LazyLock::new(|| bins().agent);
pub const T: Duration = Duration::from_secs(60);

pub struct World {
    pub lab: Lab,
    pub v1: NodeRelease,
    pub objects: Vec<(String, Vec<u8>)>,
    _dir: tempfile::TempDir,
}

pub fn bins() -> Bins {
    Bins::locate(&std::env::current_exe().unwrap()).unwrap_or_else(|e| panic!("{e}"))
}

/// A lab whose agent serves v1 (built with `v1_args` measured) with eight objects stored.
pub async fn world_with(v1_args: &[&str], opts: AgentOptions) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::start(dir.path(), bins()).unwrap();
    let v1 = lab.build_node("1.0.0", 1, "", v1_args).unwrap();
    lab.publish(&v1.record).unwrap();
    lab.start_agent_opts(&v1, &opts).unwrap();
    lab.wait_serving("1.0.0", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.agent_log()));
    let mut objects = Vec::new();
    for i in 0..8u8 {
        let data: Vec<u8> = (0..(100 + i as usize * 50))
            .map(|j| (j as u8).wrapping_mul(i + 1))
            .collect();
        let name = format!("obj-{i}");
        lab.put(&name, &data).await.unwrap();
        objects.push((name, data));
    }
    World {
        lab,
        v1,
        objects,
        _dir: dir,
    }
}

pub async fn world() -> World {
    world_with(&[], AgentOptions::default()).await
}

impl World {
    pub async fn all_readable_from(&self, version: &str) {
        for (name, data) in &self.objects {
            let (v, got) = self
                .lab
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", self.lab.agent_log()));
            assert_eq!(v, version, "{name} served by the wrong version");
            assert_eq!(&got, data, "{name} differs");
        }
    }

    /// Waits until the agent reports a refusal mentioning `needle`; returns all refusals.
    pub async fn refusals_matching(&self, needle: &str) -> Vec<String> {
        let n = needle.to_string();
        self.lab
            .wait_for(T, needle, move |s| s.refused.iter().any(|r| r.contains(&n)))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.lab.agent_log()))
            .refused
    }

    /// Returns once the agent has scanned its feed twice more from now, acting on each scan as
    /// it does (what "it did not upgrade" must wait for): each scan is seen by the refusal of a
    /// malformed probe file published for it.
    pub async fn after_two_scans(&self, tag: &str) {
        for n in 0..2 {
            let name = format!("probe-{tag}-{n}.json");
            self.lab.publish_raw(&name, b"{").unwrap();
            self.refusals_matching(&name).await;
        }
    }

    /// Waits until the agent records a failed release; returns the reason.
    pub async fn failure_reason(&self) -> String {
        let s = self
            .lab
            .wait_for(T, "a failure", |s| {
                s.state.as_ref().is_some_and(|st| !st.failed.is_empty())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.lab.agent_log()));
        s.state.unwrap().failed.into_values().next().unwrap().reason
    }

    /// v1 still serves, nothing was stopped, no upgrade happened.
    pub async fn v1_untouched(&self) {
        let s = self.lab.status().await.unwrap();
        let st = s.state.unwrap();
        assert_eq!(st.current.version, "1.0.0");
        assert_eq!(st.current.mr_enclave, self.v1.mr_enclave.to_string());
        assert_eq!(st.upgrades_completed, 0);
        assert_eq!(st.phase, Phase::Idle);
        assert!(s.node_running);
        assert!(
            !st.timeline.iter().any(|e| e.phase == "old_stopped"),
            "the old node was stopped: {:?}",
            st.timeline
        );
        self.all_readable_from("1.0.0").await;
    }

    /// After whatever happened: the agent is idle, exactly one node serves `version`, every
    /// object reads back, and the journal on disk is consistent.
    pub async fn settled_on(&self, version: &str) {
        // The agent may still be restarting a node that just crashed: wait until exactly one
        // node enclave runs and the agent reports it serving, then check it stays at one.
        let end = tokio::time::Instant::now() + T;
        let s = loop {
            let s = self
                .lab
                .wait_serving(version, T)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", self.lab.agent_log()));
            if self.lab.running_nodes() == 1 {
                break s;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "node count never settled at one\n{}",
                self.lab.agent_log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        let st = s.state.unwrap();
        assert!(st.upgrade.is_none(), "{:?}", st.upgrade);
        for _ in 0..5 {
            assert!(self.lab.running_nodes() <= 1, "two node enclaves at once");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.all_readable_from(version).await;
        let j = self.lab.journal().unwrap().expect("a journal");
        assert_eq!(j.phase, Phase::Idle);
        assert_eq!(j.current.version, version);
    }
}

//! The orchestrator's persisted state: exactly what the agent's journal holds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Entries kept in the timeline of the latest upgrade.
pub const TIMELINE_LIMIT: usize = 64;

/// A node release installed (or being installed) on this machine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Release {
    pub version: String,
    pub mr_enclave: String,
    /// The unpacked, verified bundle.
    pub bundle_dir: PathBuf,
    /// Its committee-signed record, if it came from a feed (given to the node as evidence).
    #[serde(default)]
    pub record: Option<PathBuf>,
}

/// Where an upgrade stands. Each phase is written before the action it names is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Idle,
    /// A signed, newer release was found.
    Candidate,
    /// Its artifact is downloaded, digest and measurement verified.
    Downloaded,
    /// The running node's keys are sealed inside the agent.
    KeysAcquired,
    /// The old node is (being) stopped.
    OldStopped,
    /// The new node is (being) launched.
    NewLaunched,
    /// The new node attested durable receipt of the keys.
    KeysDelivered,
    /// The new node serves the old node's data with the expected identity.
    Healthy,
    /// Putting the old node back.
    RollingBack,
    /// Make-before-break: the new node is (being) launched as a standby beside the old one,
    /// which keeps serving.
    StandbyLaunched,
    /// The standby attested durable receipt of the keys; it serves nothing yet.
    StandbyReady,
    /// The old node is (being) drained and stopped; the standby takes the data directory.
    Switching,
}

impl Phase {
    /// Whether the old node may be down in this phase (so a crash here must roll back or
    /// finish, never simply carry on).
    pub fn old_node_may_be_stopped(self) -> bool {
        matches!(
            self,
            Phase::OldStopped
                | Phase::Switching
                | Phase::NewLaunched
                | Phase::KeysDelivered
                | Phase::Healthy
                | Phase::RollingBack
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upgrade {
    pub target_version: String,
    pub target_mr_enclave: String,
    /// Set once downloaded and verified.
    pub target: Option<Release>,
    /// Fingerprint of the keyring taken from the old node.
    pub keyring_fingerprint: Option<String>,
    /// SHA-256 of the probe object written through the old node.
    pub probe_sha256: Option<String>,
    pub started_at_ms: u64,
    /// Where the release came from (feed file, chain block).
    #[serde(default)]
    pub source: String,
    /// The target's ISVSVN from its measured bundle, journaled with `Downloaded` so a commit
    /// after a crash raises the ISVSVN floor too.
    #[serde(default)]
    pub target_isv_svn: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Failure {
    pub version: String,
    pub attempts: u32,
    pub retry_after_ms: u64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub phase: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct State {
    pub current: Release,
    /// Rollback protection: no release below this version is ever accepted again.
    pub highest_trusted: String,
    /// Rollback protection: nor below this ISVSVN.
    #[serde(default)]
    pub highest_isv_svn: u16,
    pub phase: Phase,
    pub upgrade: Option<Upgrade>,
    /// Failed releases by MRENCLAVE, with backoff.
    pub failed: BTreeMap<String, Failure>,
    /// The phases of the latest upgrade, for operators and the demo.
    pub timeline: Vec<TimelineEntry>,
    pub upgrades_completed: u64,
    /// Set by an operator: no new upgrade starts while paused.
    #[serde(default)]
    pub paused: bool,
    /// EnclaveIDs the committee revoked, as seen so far (hex). Persisted, never removed: a
    /// revocation file deleted from the feed does not lift it.
    #[serde(default)]
    pub revoked: std::collections::BTreeSet<String>,
}

impl State {
    pub fn new(current: Release) -> Self {
        Self {
            highest_trusted: current.version.clone(),
            highest_isv_svn: 0,
            current,
            phase: Phase::Idle,
            upgrade: None,
            failed: BTreeMap::new(),
            timeline: Vec::new(),
            upgrades_completed: 0,
            paused: false,
            revoked: Default::default(),
        }
    }

    pub fn mark(&mut self, phase: &str, at_ms: u64, note: impl Into<String>) {
        if self.timeline.len() >= TIMELINE_LIMIT {
            self.timeline.remove(0);
        }
        self.timeline.push(TimelineEntry {
            phase: phase.into(),
            at_ms,
            note: note.into(),
        });
    }
}

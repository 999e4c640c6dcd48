//! The orchestrator's persisted state: exactly what the agent's journal holds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Entries kept in the timeline of the latest upgrade.
pub const TIMELINE_LIMIT: usize = 64;
/// Finished upgrades kept in [`State::history`] (the oldest is dropped first).
pub const HISTORY_LIMIT: usize = 100;

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

/// Timeline marks that are not phases: the old node's exit, the new node serving.
pub const MARK_OLD_NODE_EXITED: &str = "old_node_exited";
pub const MARK_NEW_NODE_SERVING: &str = "new_node_serving";

impl Phase {
    /// Every phase.
    pub const ALL: [Phase; 12] = [
        Phase::Idle,
        Phase::Candidate,
        Phase::Downloaded,
        Phase::KeysAcquired,
        Phase::OldStopped,
        Phase::NewLaunched,
        Phase::KeysDelivered,
        Phase::Healthy,
        Phase::RollingBack,
        Phase::StandbyLaunched,
        Phase::StandbyReady,
        Phase::Switching,
    ];

    /// The journal's name of the phase (its serialized form), as timelines, crash points and
    /// metrics use it. Exhaustive: a new phase does not compile until it is named here (and,
    /// by the test, in [`Phase::ALL`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Candidate => "candidate",
            Phase::Downloaded => "downloaded",
            Phase::KeysAcquired => "keys_acquired",
            Phase::OldStopped => "old_stopped",
            Phase::NewLaunched => "new_launched",
            Phase::KeysDelivered => "keys_delivered",
            Phase::Healthy => "healthy",
            Phase::RollingBack => "rolling_back",
            Phase::StandbyLaunched => "standby_launched",
            Phase::StandbyReady => "standby_ready",
            Phase::Switching => "switching",
        }
    }

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

/// How a finished upgrade ended, as [`State::history`] records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeOutcome {
    /// The new release serves; it became the installed one.
    Committed,
    /// The old node serves again after it had been stopped (or drained) for the switch.
    RolledBack,
    /// Given up before the old node was touched (make-before-break: before the switch).
    Abandoned,
    /// The release itself failed verification (digest, measurement, evidence, policy) when
    /// it was downloaded; the old node was never touched.
    Refused,
}

impl UpgradeOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            UpgradeOutcome::Committed => "committed",
            UpgradeOutcome::RolledBack => "rolled_back",
            UpgradeOutcome::Abandoned => "abandoned",
            UpgradeOutcome::Refused => "refused",
        }
    }
}

/// One finished upgrade. Times are the agent's wall clock (ms since the Unix epoch), as the
/// core was given them with its events.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The release installed when the upgrade began.
    pub from_version: String,
    pub from_mr_enclave: String,
    /// The release offered.
    pub to_version: String,
    pub to_mr_enclave: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    pub outcome: UpgradeOutcome,
    /// Why it did not commit (empty when committed); like `source`, at most
    /// [`HISTORY_TEXT_LIMIT`](crate::core::HISTORY_TEXT_LIMIT) characters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    /// `ended_at_ms - started_at_ms`.
    pub duration_ms: u64,
    /// How long no node served (break-before-make), or how long the switch window was
    /// (make-before-break), as the agent's timeline shows it: from the moment the agent
    /// decided to stop (or drain) the old node — `old_stopped` or `switching` — until a node
    /// served again: `new_node_serving` for a commit, the end of the rollback for a rollback.
    /// In make-before-break the listening socket stays open through the window, so requests
    /// in it wait rather than fail. `Some(0)`: the old node was never touched. `None`: the
    /// timeline does not tell (an agent restart between the two points, or the end was not
    /// reached).
    #[serde(default)]
    pub downtime_ms: Option<u64>,
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
    /// Finished upgrades, oldest first, at most [`HISTORY_LIMIT`]. Journals written before
    /// it existed load with an empty history.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
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
            history: Vec::new(),
        }
    }

    pub fn mark(&mut self, phase: &str, at_ms: u64, note: impl Into<String>) {
        if self.timeline.len() >= TIMELINE_LIMIT {
            self.timeline.remove(0);
        }
        self.timeline.push(TimelineEntry {
            phase: phase.into(),
            at_ms,
            note: crate::core::bounded(&note.into()),
        });
    }

    /// Appends a finished upgrade to the history, dropping the oldest beyond
    /// [`HISTORY_LIMIT`].
    pub fn record(&mut self, entry: HistoryEntry) {
        if self.history.len() >= HISTORY_LIMIT {
            let excess = self.history.len() + 1 - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
        self.history.push(entry);
    }

    /// The downtime of the upgrade the timeline describes (see [`HistoryEntry::downtime_ms`]).
    /// `served_again_ms`: when a node served again, if the caller knows (the end of a
    /// rollback); otherwise the timeline's `new_node_serving`.
    pub fn downtime_ms(&self, served_again_ms: Option<u64>) -> Option<u64> {
        let Some(i) = self.timeline.iter().position(|e| {
            e.phase == Phase::OldStopped.as_str() || e.phase == Phase::Switching.as_str()
        }) else {
            // Never touched — if the timeline covers the whole upgrade.
            let whole = self
                .timeline
                .first()
                .is_some_and(|e| e.phase == Phase::Candidate.as_str());
            return whole.then_some(0);
        };
        let start = self.timeline[i].at_ms;
        let end = served_again_ms.or_else(|| {
            self.timeline[i..]
                .iter()
                .find(|e| e.phase == MARK_NEW_NODE_SERVING)
                .map(|e| e.at_ms)
        })?;
        Some(end.saturating_sub(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_are_their_journal_form_and_all_lists_each_once() {
        let mut seen = std::collections::BTreeSet::new();
        for p in Phase::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
            assert!(seen.insert(p.as_str()), "{p:?} twice");
        }
    }

    fn entry(n: u64) -> HistoryEntry {
        HistoryEntry {
            from_version: "1.0.0".into(),
            from_mr_enclave: "aa".into(),
            to_version: format!("2.0.{n}"),
            to_mr_enclave: "bb".into(),
            source: String::new(),
            outcome: UpgradeOutcome::Committed,
            reason: String::new(),
            started_at_ms: n,
            ended_at_ms: n + 1,
            duration_ms: 1,
            downtime_ms: Some(0),
        }
    }

    #[test]
    fn the_history_keeps_the_latest_entries_only() {
        let mut s = State::new(Release {
            version: "1.0.0".into(),
            mr_enclave: "aa".into(),
            bundle_dir: PathBuf::from("/b"),
            record: None,
        });
        for n in 0..(HISTORY_LIMIT as u64 + 5) {
            s.record(entry(n));
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history[0].started_at_ms, 5, "the oldest went first");
        assert_eq!(
            s.history.last().map(|e| e.started_at_ms),
            Some(HISTORY_LIMIT as u64 + 4)
        );
    }

    #[test]
    fn downtime_follows_the_timeline() {
        let mut s = State::new(Release {
            version: "1.0.0".into(),
            mr_enclave: "aa".into(),
            bundle_dir: PathBuf::from("/b"),
            record: None,
        });
        assert_eq!(s.downtime_ms(None), None, "no timeline: unknown");
        s.mark("candidate", 10, "");
        s.mark("downloaded", 20, "");
        assert_eq!(s.downtime_ms(Some(90)), Some(0), "never touched");
        s.mark("switching", 30, "");
        assert_eq!(s.downtime_ms(None), None, "not serving again yet");
        s.mark("old_node_exited", 35, "");
        s.mark("new_node_serving", 42, "");
        assert_eq!(s.downtime_ms(None), Some(12));
        assert_eq!(s.downtime_ms(Some(80)), Some(50));
    }
}

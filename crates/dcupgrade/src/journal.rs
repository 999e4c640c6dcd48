//! The agent's journal: the orchestrator's state, written durably *before* each side effect.
//!
//! File format: the first line is the SHA-256 (hex) of the rest, which is the JSON state. A
//! write goes to a temporary file, is fsync'd, renamed over the journal, and the directory is
//! fsync'd, so a crash or power loss leaves either the old or the new state. A journal whose
//! checksum does not match is corrupt: the agent refuses to act on it and says so; it never
//! "repairs" it by guessing.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const MAX_JOURNAL_BYTES: u64 = 1024 * 1024;
const TIMELINE_LIMIT: usize = 64;

/// A node release installed (or being installed) on this machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl Phase {
    /// Whether the old node may be down in this phase (so a crash here must roll back or
    /// finish, never simply carry on).
    pub fn old_node_may_be_stopped(self) -> bool {
        matches!(
            self,
            Phase::OldStopped
                | Phase::NewLaunched
                | Phase::KeysDelivered
                | Phase::Healthy
                | Phase::RollingBack
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub version: String,
    pub attempts: u32,
    pub retry_after_ms: u64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub phase: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path} is corrupt ({reason}); refusing to act on it. It was left untouched: inspect it, restore it from backup, or move it away to re-initialize the agent from --initial-bundle")]
    Corrupt { path: PathBuf, reason: String },
}

pub struct Journal {
    path: PathBuf,
}

impl Journal {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(None)` when there is no journal yet.
    pub fn load(&self) -> Result<Option<State>, JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let corrupt = |reason: &str| JournalError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        };
        let bytes = match dc_tee::read_limited(&self.path, MAX_JOURNAL_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(corrupt("too large"))
            }
            Err(e) => return Err(io(e)),
        };
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| corrupt("no checksum line"))?;
        let (sum, body) = (&bytes[..nl], &bytes[nl + 1..]);
        if sum != hex::encode(Sha256::digest(body)).as_bytes() {
            return Err(corrupt("checksum mismatch: truncated or altered"));
        }
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| corrupt(&format!("unreadable state: {e}")))
    }

    /// Writes the state durably (temporary file, fsync, rename, directory fsync).
    pub fn save(&self, state: &State) -> Result<(), JournalError> {
        let body = serde_json::to_vec_pretty(state).expect("state serializes");
        let dir = self.path.parent().expect("journal in a directory");
        let tmp = dir.join(".journal.tmp");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| JournalError::Io { path: p, source }
        };
        {
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(hex::encode(Sha256::digest(&body)).as_bytes())
                .map_err(io(&tmp))?;
            f.write_all(b"\n").map_err(io(&tmp))?;
            f.write_all(&body).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(Release {
            version: "1.0.0".into(),
            mr_enclave: "ab".repeat(32),
            bundle_dir: "/b".into(),
            record: Some("/r".into()),
        })
    }

    #[test]
    fn roundtrip_and_every_truncation_or_flip_is_detected() {
        let t = tempfile::tempdir().unwrap();
        let j = Journal::new(&t.path().join("journal"));
        assert_eq!(j.load().unwrap(), None);
        let mut s = state();
        s.phase = Phase::KeysAcquired;
        j.save(&s).unwrap();
        assert_eq!(j.load().unwrap(), Some(s));
        let good = std::fs::read(j.path()).unwrap();
        for cut in [0, 1, 10, 64, 65, good.len() / 2, good.len() - 1] {
            std::fs::write(j.path(), &good[..cut]).unwrap();
            assert!(j.load().is_err(), "truncation at {cut} accepted");
        }
        // An oversized file is corrupt, and is not read into memory whole.
        std::fs::write(j.path(), vec![b'x'; MAX_JOURNAL_BYTES as usize + 1]).unwrap();
        assert!(
            matches!(j.load(), Err(JournalError::Corrupt { ref reason, .. }) if reason == "too large")
        );
        for i in (0..good.len()).step_by(7) {
            let mut b = good.clone();
            b[i] ^= 0x01;
            std::fs::write(j.path(), &b).unwrap();
            assert!(j.load().is_err(), "flip at {i} accepted");
        }
    }
}

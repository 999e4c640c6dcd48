//! The agent's journal: the orchestrator's state, written durably *before* each side effect.
//!
//! File format: the first line is the HMAC-SHA256 (hex), under the journal key, of
//! `"dcupgrade journal v2\0"` followed by the rest of the file, which is the JSON state. A
//! write goes to a temporary file, is fsync'd, renamed over the journal, and the directory is
//! fsync'd, so a crash or power loss leaves either the old or the new state. A journal that
//! does not verify is refused: the agent does not act on it, says so, and never "repairs" it
//! by guessing.
//!
//! # The journal key
//!
//! The host (root) can write every file in the state directory. A plain checksum only catches
//! accidents: the host could rewrite `current`, lower the rollback floors or drop revocations
//! and recompute it. So the journal is MACed with a 32-byte key that the agent enclave draws
//! at random once and keeps only sealed to its own MRENCLAVE ([`KEY_FILE`], [`KEY_AAD`]);
//! verification is constant time. A journal that fails its MAC ([`JournalError::Altered`]),
//! a journal whose key is missing ([`JournalError::KeyMissing`]) and a key that does not
//! unseal in this enclave ([`JournalError::KeyUnsealable`]) all stop the agent before it
//! starts anything, and nothing is modified. The state is authenticated, not encrypted: it
//! holds no secrets, and operators read it ([`UnauthenticatedJournal`]).
//!
//! The MAC cannot tell an old journal from the current one: the host can put back an earlier
//! journal this agent wrote, or delete the state directory so that the agent must be
//! re-initialized. Neither lowers the node's own floors: its version and ISVSVN floors and
//! the revocations it has seen travel sealed inside its keyring, and it hands its keys to no
//! release below them.
//!
//! # How a future agent version takes this state over
//!
//! The journal key is sealed to this agent's MRENCLAVE, so no other build can unseal it — not
//! even a newer agent signed with the same enclave signing key. A future agent version
//! receives it from this version through the same attested handover that moves the node's
//! keys: the running agent (the holder) verifies the new agent's committee-signed upgrader
//! release and measurement, then sends it the journal key as a named key
//! ([`HANDOVER_KEY_NAME`]) of the transferred keyring. The new agent verifies the journal
//! under that key, so it adopts exactly the state the old agent wrote and nothing the host
//! rewrote, and re-seals the key to its own MRENCLAVE as its own `journal.key`. The key is a
//! plain 32-byte secret so that it fits a keyring entry, and the MAC's domain string names the
//! format version, so a successor can read this format and move to another. Until that
//! handover exists, a different agent build finds a key it cannot unseal and refuses to start;
//! the operator then re-initializes it (see [`JournalError::KeyUnsealable`]). Sealing to
//! MRSIGNER instead would have let any build signed by the enclave signing key unseal the
//! journal key with no handover at all; that was rejected because the signing key is a single
//! key, weaker than the release committee whose threshold signature the handover requires.

use std::io::Write;
use std::path::{Path, PathBuf};

use dc_tee::{SealPolicy, Tee};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub const MAX_JOURNAL_BYTES: u64 = 1024 * 1024;

/// The journal's file name in the state directory.
pub const JOURNAL_FILE: &str = "journal";
/// The sealed journal key's file name in the state directory.
pub const KEY_FILE: &str = "journal.key";
/// Additional data the journal key is sealed with (MRENCLAVE policy).
pub const KEY_AAD: &[u8] = b"dcupgrade journal key v1";
/// The name under which a future agent version receives the journal key in the handover
/// keyring (see the module documentation).
pub const HANDOVER_KEY_NAME: &str = "dcupgrade-journal-v1";
/// Domain separation of the journal MAC.
const MAC_DOMAIN: &[u8] = b"dcupgrade journal v2\0";
/// A sealed 32-byte key is far smaller; anything larger is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

pub use dc_orchestrator::state::{
    Failure, Phase, Release, State, TimelineEntry, Upgrade, TIMELINE_LIMIT,
};

/// What an operator can do about a journal the agent refuses.
const RECOVERY: &str = "To recover, either restore the journal and journal.key together from a backup this agent build wrote, or move the state directory aside and re-initialize the agent with --initial-bundle and --initial-record naming the installed node release. Re-initializing starts a fresh journal whose rollback floor is that release, but it cannot lower the node's own floors: its version and ISVSVN floors and the revocations it has seen travel sealed in its keyring, and it hands its keys to no release below them";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Malformed: truncated, damaged, too large, or not a journal at all.
    #[error("journal {path} is corrupt ({reason}); refusing to act on it. It was left untouched and nothing was started. {recovery}", recovery = RECOVERY)]
    Corrupt { path: PathBuf, reason: String },
    /// A well-formed journal whose MAC does not verify under this agent's journal key.
    #[error("journal {path} fails its MAC check{detail}: it was altered, or written by another agent build (or is corrupt). Refusing to act on it; it was left untouched and nothing was started. {recovery}", recovery = RECOVERY)]
    Altered { path: PathBuf, detail: String },
    #[error("journal {journal} exists but its key {key} does not: a journal without its key cannot be authenticated (the key was deleted, or the journal was planted or written by an agent build without journal keys). Refusing to start; nothing was modified. {recovery}", recovery = RECOVERY)]
    KeyMissing { journal: PathBuf, key: PathBuf },
    #[error("journal key {path} does not unseal in this agent enclave ({reason}): it was sealed by another agent build, or altered. A newer agent takes the journal over only by attested handover from the agent holding the key. Refusing to start; nothing was modified. {recovery}", recovery = RECOVERY)]
    KeyUnsealable { path: PathBuf, reason: String },
    #[error("cannot create the journal key {path}: {reason}")]
    KeyCreate { path: PathBuf, reason: String },
}

type HmacSha256 = Hmac<Sha256>;

/// The journal MAC key: 32 random bytes made inside the agent enclave, stored only sealed.
/// Zeroized on drop; its `Debug` never shows the bytes.
pub struct JournalKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for JournalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalKey(<redacted>)")
    }
}

impl JournalKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(Zeroizing::new(*bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut k = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(&mut k[..])?;
        Ok(Self(k))
    }

    /// The key bytes, for the MAC (and, later, the handover keyring). Never log them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The journal key of the agent whose state directory is `dir`:
    ///
    /// - `journal.key` exists: it must unseal in this enclave (MRENCLAVE policy), journal or
    ///   not; otherwise [`JournalError::KeyUnsealable`] and it stays as it is.
    /// - no key but a journal: [`JournalError::KeyMissing`]; nothing is created.
    /// - neither: a fresh key is sealed to `journal.key` (atomically) before any journal
    ///   exists.
    ///
    /// Only the last case writes anything.
    pub fn open(tee: &dyn Tee, dir: &Path) -> Result<Self, JournalError> {
        let key_path = dir.join(KEY_FILE);
        let journal_path = dir.join(JOURNAL_FILE);
        let unsealable = |reason: String| JournalError::KeyUnsealable {
            path: key_path.clone(),
            reason,
        };
        let blob = match dc_tee::read_limited(&key_path, MAX_KEY_FILE_BYTES) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) =>
            {
                return Err(unsealable(e.to_string()))
            }
            Err(source) => {
                return Err(JournalError::Io {
                    path: key_path,
                    source,
                })
            }
        };
        if let Some(blob) = blob {
            let plain = tee
                .unseal(SealPolicy::MrEnclave, &blob, KEY_AAD)
                .map_err(|e| unsealable(e.to_string()))?;
            let bytes: &[u8; 32] = plain[..]
                .try_into()
                .map_err(|_| unsealable(format!("{} bytes, not a 32-byte key", plain.len())))?;
            return Ok(Self::from_bytes(bytes));
        }
        match std::fs::symlink_metadata(&journal_path) {
            Ok(_) => {
                return Err(JournalError::KeyMissing {
                    journal: journal_path,
                    key: key_path,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(JournalError::Io {
                    path: journal_path,
                    source,
                })
            }
        }
        let create = |reason: String| JournalError::KeyCreate {
            path: key_path.clone(),
            reason,
        };
        let key = Self::generate().map_err(|e| create(format!("no randomness: {e}")))?;
        let blob = tee
            .seal(SealPolicy::MrEnclave, KEY_AAD, key.expose())
            .map_err(|e| create(e.to_string()))?;
        write_atomic(&key_path, &blob.0)?;
        Ok(key)
    }
}

fn hmac(key: &[u8; 32]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(MAC_DOMAIN);
    m
}

/// The journal MAC of the state bytes `body` under `key`: HMAC-SHA256 of the domain string
/// followed by `body`. Pure, so that it can be checked without a TEE.
pub fn mac(key: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut m = hmac(key);
    m.update(body);
    m.finalize().into_bytes().into()
}

/// The journal file's bytes for `state` under `key`: the MAC (lowercase hex), a newline, the
/// JSON state.
pub fn encode(key: &[u8; 32], state: &State) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(state).expect("state serializes");
    let mut out = hex::encode(mac(key, &body)).into_bytes();
    out.push(b'\n');
    out.extend_from_slice(&body);
    out
}

/// Why journal bytes were refused (the caller adds the path).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or truncated.
    Corrupt(String),
    /// Well formed, but the MAC does not verify; the detail says what it looks like.
    Altered(String),
}

/// Splits journal bytes into the first line, which must be 64 lowercase hex digits, and the
/// rest. `None` when there is no such line.
fn split(bytes: &[u8]) -> Option<([u8; 32], &[u8])> {
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    let (line, body) = (&bytes[..nl], &bytes[nl + 1..]);
    if line.len() != 64 || !line.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut tag = [0u8; 32];
    hex::decode_to_slice(line, &mut tag).ok()?;
    Some((tag, body))
}

/// Verifies journal bytes under `key` (constant time) and parses the state. Pure.
///
/// A MAC mismatch over a body that is not a readable state is reported as corrupt (most likely
/// truncated or damaged); over a readable state, as altered. Both are refused alike.
pub fn decode(key: &[u8; 32], bytes: &[u8]) -> Result<State, Refusal> {
    let (tag, body) =
        split(bytes).ok_or_else(|| Refusal::Corrupt("the first line is not a MAC".into()))?;
    let mut m = hmac(key);
    m.update(body);
    if m.verify_slice(&tag).is_err() {
        return Err(match serde_json::from_slice::<State>(body) {
            Err(_) => Refusal::Corrupt("MAC mismatch over an unreadable state: truncated or damaged".into()),
            Ok(_) if Sha256::digest(body).as_slice() == tag => Refusal::Altered(
                " (its first line is a plain SHA-256 of the state: the old unauthenticated format, which is no longer accepted)".into(),
            ),
            Ok(_) => Refusal::Altered(String::new()),
        });
    }
    serde_json::from_slice(body).map_err(|e| Refusal::Corrupt(format!("unreadable state: {e}")))
}

/// Reads a journal-sized file; `Ok(None)` when there is none.
fn read(path: &Path) -> Result<Option<Vec<u8>>, JournalError> {
    match dc_tee::read_limited(path, MAX_JOURNAL_BYTES) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            reason: "too large".into(),
        }),
        Err(source) => Err(JournalError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `bytes` durably (temporary file, fsync, rename, directory fsync).
/// Writes `path` so that a crash leaves the old content or the new, never a mix: a temporary
/// file beside it, synced, renamed over it, and the directory synced.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| JournalError::Io { path: p, source }
    };
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// The agent's journal, authenticated under its journal key.
pub struct Journal {
    path: PathBuf,
    key: JournalKey,
}

impl Journal {
    pub fn with_key(path: &Path, key: JournalKey) -> Self {
        Self {
            path: path.to_path_buf(),
            key,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(None)` when there is no journal yet.
    pub fn load(&self) -> Result<Option<State>, JournalError> {
        let Some(bytes) = read(&self.path)? else {
            return Ok(None);
        };
        decode(self.key.expose(), &bytes)
            .map(Some)
            .map_err(|r| match r {
                Refusal::Corrupt(reason) => JournalError::Corrupt {
                    path: self.path.clone(),
                    reason,
                },
                Refusal::Altered(detail) => JournalError::Altered {
                    path: self.path.clone(),
                    detail,
                },
            })
    }

    /// Writes the state durably (temporary file, fsync, rename, directory fsync).
    pub fn save(&self, state: &State) -> Result<(), JournalError> {
        write_atomic(&self.path, &encode(self.key.expose(), state))
    }
}

/// The journal's state as it stands on disk, read *without* authenticating it (its MAC is
/// not checked: only the agent enclave has the key). For tests and operators outside the
/// enclave: never act on it.
pub struct UnauthenticatedJournal {
    path: PathBuf,
}

impl UnauthenticatedJournal {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// `Ok(None)` when there is no journal.
    pub fn load(&self) -> Result<Option<State>, JournalError> {
        let corrupt = |reason: String| JournalError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let Some(bytes) = read(&self.path)? else {
            return Ok(None);
        };
        let (_, body) =
            split(&bytes).ok_or_else(|| corrupt("the first line is not a MAC".into()))?;
        serde_json::from_slice(body)
            .map(Some)
            .map_err(|e| corrupt(format!("unreadable state: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_tee_sim::platform::{test_identity, InProcessTee, Platform};
    use std::sync::Arc;

    fn state() -> State {
        State::new(Release {
            version: "1.0.0".into(),
            mr_enclave: "ab".repeat(32),
            bundle_dir: "/b".into(),
            record: Some("/r".into()),
        })
    }

    fn journal(dir: &Path, key: [u8; 32]) -> Journal {
        Journal::with_key(&dir.join(JOURNAL_FILE), JournalKey::from_bytes(&key))
    }

    #[test]
    fn roundtrip_and_every_truncation_or_flip_is_detected() {
        let t = tempfile::tempdir().unwrap();
        let j = journal(t.path(), [7; 32]);
        assert_eq!(j.load().unwrap(), None);
        let mut s = state();
        s.phase = Phase::KeysAcquired;
        j.save(&s).unwrap();
        assert_eq!(j.load().unwrap(), Some(s.clone()));
        assert_eq!(
            UnauthenticatedJournal::new(j.path()).load().unwrap(),
            Some(s)
        );
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
        for i in 0..good.len() {
            for bit in [0x01, 0x20] {
                let mut b = good.clone();
                b[i] ^= bit;
                std::fs::write(j.path(), &b).unwrap();
                assert!(j.load().is_err(), "flip {bit:#x} at {i} accepted");
            }
        }
        // Nothing above touched anything but the journal itself.
        std::fs::write(j.path(), &good).unwrap();
        assert!(j.load().unwrap().is_some());
    }

    /// The host rewrites the state and recomputes the first line as the old format did (a
    /// plain SHA-256): refused as altered, and the error says what to do.
    #[test]
    fn rewritten_state_with_a_recomputed_sha256_line_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let j = journal(t.path(), [7; 32]);
        let mut s = state();
        s.revoked.insert("cd".repeat(32));
        j.save(&s).unwrap();
        s.current.mr_enclave = "ee".repeat(32);
        s.highest_trusted = "0.0.1".into();
        s.revoked.clear();
        let body = serde_json::to_vec_pretty(&s).unwrap();
        let mut forged = hex::encode(Sha256::digest(&body)).into_bytes();
        forged.push(b'\n');
        forged.extend_from_slice(&body);
        std::fs::write(j.path(), &forged).unwrap();
        let e = j.load().unwrap_err();
        assert!(
            matches!(e, JournalError::Altered { ref detail, .. } if detail.contains("old unauthenticated format")),
            "{e:?}"
        );
        let msg = e.to_string();
        for needle in [
            "fails its MAC check",
            "altered, or written by another agent build",
            "left untouched",
            "--initial-bundle",
            "cannot lower the node's own floors",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
        assert_eq!(
            std::fs::read(j.path()).unwrap(),
            forged,
            "the journal was modified"
        );
    }

    #[test]
    fn journal_maced_under_another_key_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let mut s = state();
        s.highest_trusted = "9.9.9".into();
        for other in [[0u8; 32], [8; 32]] {
            std::fs::write(t.path().join(JOURNAL_FILE), encode(&other, &s)).unwrap();
            assert!(
                matches!(journal(t.path(), [7; 32]).load(), Err(JournalError::Altered { ref detail, .. }) if detail.is_empty())
            );
            assert_eq!(journal(t.path(), other).load().unwrap(), Some(s.clone()));
        }
        // The MAC is domain separated: a bare HMAC of the state under the key is not it.
        let body = serde_json::to_vec_pretty(&s).unwrap();
        let mut bare = HmacSha256::new_from_slice(&[7; 32]).unwrap();
        bare.update(&body);
        let mut b = hex::encode(bare.finalize().into_bytes()).into_bytes();
        b.push(b'\n');
        b.extend_from_slice(&body);
        std::fs::write(t.path().join(JOURNAL_FILE), b).unwrap();
        assert!(matches!(
            journal(t.path(), [7; 32]).load(),
            Err(JournalError::Altered { .. })
        ));
    }

    #[test]
    fn key_is_never_shown() {
        let k = JournalKey::from_bytes(&[0xA5; 32]);
        assert_eq!(format!("{k:?}"), "JournalKey(<redacted>)");
    }

    fn tee(platform: &Arc<Platform>, build: u8) -> InProcessTee {
        InProcessTee::new(platform.clone(), test_identity(build, 0xBB, 1, false))
    }

    fn platform() -> Arc<Platform> {
        Arc::new(Platform::new(
            Zeroizing::new([9; 32]),
            dc_tee::CpuSvn([1; 16]),
            dc_tee::KeyId([1; 32]),
        ))
    }

    #[test]
    fn key_is_sealed_once_then_reused_with_or_without_a_journal() {
        let t = tempfile::tempdir().unwrap();
        let p = platform();
        let k = JournalKey::open(&tee(&p, 0x33), t.path()).unwrap();
        let sealed = std::fs::read(t.path().join(KEY_FILE)).unwrap();
        assert!(
            !sealed.windows(32).any(|w| w == k.expose()),
            "key stored in the clear"
        );
        // No journal yet (a crash before the first one was written): the same key.
        let again = JournalKey::open(&tee(&p, 0x33), t.path()).unwrap();
        assert_eq!(again.expose(), k.expose());
        Journal::with_key(&t.path().join(JOURNAL_FILE), again)
            .save(&state())
            .unwrap();
        let k3 = JournalKey::open(&tee(&p, 0x33), t.path()).unwrap();
        assert_eq!(k3.expose(), k.expose());
        assert_eq!(std::fs::read(t.path().join(KEY_FILE)).unwrap(), sealed);
        assert_eq!(
            Journal::with_key(&t.path().join(JOURNAL_FILE), k3)
                .load()
                .unwrap(),
            Some(state())
        );
    }

    #[test]
    fn journal_without_its_key_is_refused_and_nothing_is_created() {
        let t = tempfile::tempdir().unwrap();
        let p = platform();
        let j = journal(t.path(), [7; 32]);
        j.save(&state()).unwrap();
        let before = std::fs::read(j.path()).unwrap();
        let e = JournalKey::open(&tee(&p, 0x33), t.path()).unwrap_err();
        assert!(matches!(e, JournalError::KeyMissing { .. }), "{e:?}");
        assert!(e.to_string().contains("Refusing to start"), "{e}");
        assert!(!t.path().join(KEY_FILE).exists(), "a key was created");
        assert_eq!(std::fs::read(j.path()).unwrap(), before);
    }

    /// Another agent build (another MRENCLAVE, same signer) cannot unseal the key: refused,
    /// left alone, never replaced — with or without a journal.
    #[test]
    fn key_of_another_agent_build_is_refused_and_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let p = platform();
        JournalKey::open(&tee(&p, 0x33), t.path()).unwrap();
        let sealed = std::fs::read(t.path().join(KEY_FILE)).unwrap();
        for with_journal in [false, true] {
            if with_journal {
                journal(t.path(), [7; 32]).save(&state()).unwrap();
            }
            let e = JournalKey::open(&tee(&p, 0x34), t.path()).unwrap_err();
            assert!(matches!(e, JournalError::KeyUnsealable { .. }), "{e:?}");
            assert_eq!(std::fs::read(t.path().join(KEY_FILE)).unwrap(), sealed);
        }
        // Nor does a garbled key file unseal for the right build.
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        std::fs::write(t.path().join(KEY_FILE), &bad).unwrap();
        assert!(matches!(
            JournalKey::open(&tee(&p, 0x33), t.path()),
            Err(JournalError::KeyUnsealable { .. })
        ));
        assert_eq!(std::fs::read(t.path().join(KEY_FILE)).unwrap(), bad);
    }
}

//! Power loss and storage corruption: a journal or a sealed keyring truncated or altered at
//! arbitrary offsets is refused and reported — never acted on, never "repaired", never
//! deleted — and restoring the file brings everything back.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::world;

/// Deterministic offsets spread over a file (a fixed LCG, so failures reproduce).
fn offsets(len: usize, n: usize) -> Vec<usize> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as usize % len
        })
        .collect()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push((e.path(), std::fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_journal_is_refused_and_left_alone() {
    let mut w = world().await;
    w.lab.stop_agent();
    let journal = w.lab.dir.join("agent/journal");
    let good = std::fs::read(&journal).unwrap();
    let node_keys = w.lab.dir.join("node-data/keys");
    let keys_before = snapshot(&node_keys);
    assert_eq!(keys_before.len(), 1, "v1's sealed keyring");
    let v1 = w.v1.clone();
    for (i, at) in offsets(good.len(), 6).into_iter().enumerate() {
        let bad = if i % 2 == 0 {
            good[..at].to_vec()
        } else {
            let mut b = good.clone();
            b[at] ^= 0x20;
            b
        };
        std::fs::write(&journal, &bad).unwrap();
        // Only this case's lines: the log file is appended to by every case.
        let log_from = w.lab.agent_log().len();
        w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
        let code = w.lab.wait_agent_exit(common::T);
        assert_eq!(
            code,
            Some(1),
            "agent ran on a corrupt journal (case {i}, offset {at})\n{}",
            w.lab.agent_log()
        );
        assert!(
            w.lab.agent_log()[log_from..].contains("is corrupt"),
            "no clear report (case {i}, offset {at})"
        );
        assert_eq!(
            std::fs::read(&journal).unwrap(),
            bad,
            "the journal was modified"
        );
        assert_eq!(
            snapshot(&node_keys),
            keys_before,
            "a sealed keyring was touched"
        );
        assert_eq!(
            w.lab.running_nodes(),
            0,
            "a node runs without a trusted journal"
        );
    }
    std::fs::write(&journal, &good).unwrap();
    w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
    w.settled_on("1.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_sealed_keyring_is_reported_and_never_deleted() {
    let mut w = world().await;
    w.lab.stop_agent();
    let keys = snapshot(&w.lab.dir.join("node-data/keys"));
    let (blob_path, good) = keys[0].clone();
    let v1 = w.v1.clone();
    for (i, at) in offsets(good.len(), 4).into_iter().enumerate() {
        let bad = if i % 2 == 0 {
            good[..at].to_vec()
        } else {
            let mut b = good.clone();
            b[at] ^= 0x01;
            b
        };
        std::fs::write(&blob_path, &bad).unwrap();
        let log_from = w.lab.agent_log().len();
        w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
        w.lab
            .wait_for(common::T, "the failure report", |s| {
                s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("node does not start"))
            })
            .await
            .unwrap_or_else(|e| panic!("case {i} offset {at}: {e}\n{}", w.lab.agent_log()));
        w.lab
            .wait_log_since(log_from, common::T, |l| {
                l.contains("was left untouched") || l.contains("does not unseal")
            })
            .await
            .unwrap_or_else(|e| panic!("case {i} offset {at}: the node did not say why: {e}"));
        w.lab.stop_agent();
        assert_eq!(
            std::fs::read(&blob_path).unwrap(),
            bad,
            "the sealed keyring was modified or deleted"
        );
        // It must never generate fresh keys over the existing data either.
        assert_eq!(snapshot(&w.lab.dir.join("node-data/keys")).len(), 1);
    }
    std::fs::write(&blob_path, &good).unwrap();
    w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
    w.settled_on("1.0.0").await;
}

/// Every file under `dir`, recursively, with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(tree(&e.path()));
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The journal, its sealed key, and every sealed file of the agent and the node.
fn guarded(lab_dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = tree(&lab_dir.join("agent/keys"));
    out.extend(tree(&lab_dir.join("node-data/keys")));
    for f in ["agent/journal", "agent/journal.key"] {
        let p = lab_dir.join(f);
        let b = std::fs::read(&p).unwrap_or_default();
        out.push((p, b));
    }
    out
}

/// A journal file: `first_line`, a newline, `body`.
fn journal_bytes(first_line: &str, body: &[u8]) -> Vec<u8> {
    let mut b = first_line.as_bytes().to_vec();
    b.push(b'\n');
    b.extend_from_slice(body);
    b
}

/// The host rewrites the state (the installed release, the rollback floor, the revocations)
/// and recomputes the first line — as the old SHA-256 checksum, or as the journal MAC under a
/// key it guesses. The agent refuses to start, says why, starts no node, and changes nothing;
/// putting the original journal back brings everything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_journal_with_a_recomputed_checksum_is_refused() {
    use sha2::Digest;
    let mut w = world().await;
    w.lab.stop_agent();
    let journal = w.lab.dir.join("agent/journal");
    let good = std::fs::read(&journal).unwrap();
    let nl = good.iter().position(|&b| b == b'\n').unwrap();
    let state: serde_json::Value = serde_json::from_slice(&good[nl + 1..]).unwrap();
    assert_eq!(state["current"]["mr_enclave"], w.v1.mr_enclave.to_string());
    assert!(
        w.lab.dir.join("agent/journal.key").exists(),
        "no sealed journal key"
    );
    let before = guarded(&w.lab.dir);
    assert!(before.len() >= 3, "{before:?}");

    let mut other_node = state.clone();
    other_node["current"]["mr_enclave"] = "ee".repeat(32).into();
    let mut lower_floor = state.clone();
    lower_floor["highest_trusted"] = "0.0.1".into();
    lower_floor["highest_isv_svn"] = 0.into();
    lower_floor["revoked"] = serde_json::json!([]);
    let sha256_line = |body: &[u8]| hex::encode(sha2::Sha256::digest(body));
    let guessed_mac_line = |body: &[u8]| hex::encode(dcupgrade::journal::mac(&[0; 32], body));
    let mut cases = Vec::new();
    for (what, s) in [
        ("current.mr_enclave", &other_node),
        ("highest_trusted", &lower_floor),
    ] {
        let body = serde_json::to_vec_pretty(s).unwrap();
        cases.push((
            format!("{what}, SHA-256 line"),
            journal_bytes(&sha256_line(&body), &body),
        ));
        cases.push((
            format!("{what}, MAC under an all-zero key"),
            journal_bytes(&guessed_mac_line(&body), &body),
        ));
    }

    let v1 = w.v1.clone();
    for (case, forged) in cases {
        std::fs::write(&journal, &forged).unwrap();
        let mut expected = before.clone();
        for (p, b) in expected.iter_mut() {
            if *p == journal {
                *b = forged.clone();
            }
        }
        let log_from = w.lab.agent_log().len();
        w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
        let code = w.lab.wait_agent_exit(common::T);
        let log = w.lab.agent_log()[log_from..].to_string();
        assert_eq!(
            code,
            Some(1),
            "agent ran on a rewritten journal ({case})\n{log}"
        );
        assert!(
            log.contains("fails its MAC check") && log.contains("left untouched"),
            "no clear report ({case})\n{log}"
        );
        assert_eq!(w.lab.running_nodes(), 0, "a node was started ({case})");
        assert!(
            guarded(&w.lab.dir) == expected,
            "the journal or a sealed file was modified ({case})"
        );
    }

    std::fs::write(&journal, &good).unwrap();
    w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
    w.settled_on("1.0.0").await;
}

/// Without its sealed key the journal cannot be authenticated: the agent refuses to start and
/// creates no new key; putting the key back brings everything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_without_its_sealed_key_is_refused() {
    let mut w = world().await;
    w.lab.stop_agent();
    let key = w.lab.dir.join("agent/journal.key");
    let aside = w.lab.dir.join("journal.key.aside");
    std::fs::rename(&key, &aside).unwrap();
    let before = guarded(&w.lab.dir);
    let v1 = w.v1.clone();
    let log_from = w.lab.agent_log().len();
    w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
    let code = w.lab.wait_agent_exit(common::T);
    let log = w.lab.agent_log()[log_from..].to_string();
    assert_eq!(
        code,
        Some(1),
        "agent ran on a journal without its key\n{log}"
    );
    assert!(log.contains("exists but its key"), "no clear report\n{log}");
    assert!(!key.exists(), "a new journal key was created");
    assert_eq!(w.lab.running_nodes(), 0, "a node was started");
    assert!(
        guarded(&w.lab.dir) == before,
        "the journal or a sealed file was modified"
    );

    std::fs::rename(&aside, &key).unwrap();
    w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
    w.settled_on("1.0.0").await;
}

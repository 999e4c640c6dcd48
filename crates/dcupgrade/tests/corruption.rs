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
        w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
        let code = w.lab.wait_agent_exit(Duration::from_secs(30));
        assert_eq!(
            code,
            Some(1),
            "agent ran on a corrupt journal (case {i}, offset {at})\n{}",
            w.lab.agent_log()
        );
        assert!(w.lab.agent_log().contains("is corrupt"), "no clear report");
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
        w.lab.start_agent(&v1, Duration::from_secs(3600)).unwrap();
        w.lab
            .wait_for(common::T, "the failure report", |s| {
                s.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("node does not start"))
            })
            .await
            .unwrap_or_else(|e| panic!("case {i} offset {at}: {e}\n{}", w.lab.agent_log()));
        assert!(
            w.lab.agent_log().contains("was left untouched")
                || w.lab.agent_log().contains("does not unseal"),
            "the node did not say why\n{}",
            w.lab.agent_log()
        );
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

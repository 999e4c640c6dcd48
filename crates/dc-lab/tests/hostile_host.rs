//! The host (root) as the attacker, with real processes: each test performs one attack from
//! the key-custody review and shows that it fails, that the node still serves every object
//! with its original keys, and that the refusal is reported. Named in
//! `docs/threat-model.md` (§3.6).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{world, T};
use dc_bundle::{BundleSpec, SignerKey, TrustRoots};
use dc_lab::AgentOptions;
use dc_tee::Measurement;

/// The node's own `/v1/status` (JSON).
async fn node_status(lab: &dc_lab::Lab) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{}/v1/status", lab.node_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn field(v: &serde_json::Value, k: &str) -> String {
    v.get(k)
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .to_string()
}

fn sealed_path(lab: &dc_lab::Lab, m: &Measurement) -> PathBuf {
    lab.dir
        .join("node-data")
        .join("keys")
        .join(format!("{m}.sealed"))
}

/// An enclave of the host's own: the platform's probe program, signed by a key the host made,
/// with the node's ISVPRODID and ISVSVN (anyone can sign such an enclave under flexible launch
/// control). Runs `args` in `cwd`; returns the exit code and output.
fn run_host_enclave(lab: &dc_lab::Lab, cwd: &Path, args: &[&str]) -> (i32, String) {
    let bundle = lab.dir.join("bundles").join("host-enclave");
    if !bundle.exists() {
        let probe = lab.bins.sim.parent().unwrap().join("dctee-probe");
        let spec = BundleSpec {
            name: "host-enclave".into(),
            version: "6.6.6".into(),
            isv_prod_id: 1,
            isv_svn: 1,
            debug: false,
            entrypoint: "bin/dctee-probe".into(),
            args: vec![],
            env_passthrough: vec![],
            trust: TrustRoots::default(),
        };
        dc_bundle::build(
            &bundle,
            &spec,
            &[(probe, "bin/dctee-probe".into())],
            &SignerKey::generate().unwrap(),
        )
        .unwrap();
    }
    let out = Command::new(&lab.bins.sim)
        .arg("launch")
        .arg("--state")
        .arg(lab.dir.join("platform"))
        .arg(&bundle)
        .arg("--")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Attack 1: the host plants a keyring it knows as the genuine node's sealed blob, sealed by
/// its own enclave under KEYPOLICY 0 (no MRENCLAVE/MRSIGNER bit, attribute mask 0), so the
/// genuine node's EGETKEY for the recorded request would give the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_keyring_blob_is_refused_and_the_node_keeps_its_keys() {
    let mut w = world().await;
    let before = node_status(&w.lab).await;
    w.lab.stop_agent();
    let path = sealed_path(&w.lab, &w.v1.mr_enclave);
    let genuine = std::fs::read(&path).unwrap();

    let work = tempfile::tempdir().unwrap();
    let known = dc_handover::Keyring::generate(
        &["data", "node-identity"],
        &mut rand_core::TryRngCore::unwrap_err(rand_core::OsRng),
    )
    .unwrap();
    std::fs::write(work.path().join("ring"), known.encode().as_slice()).unwrap();
    let (code, out) = run_host_enclave(
        &w.lab,
        work.path(),
        &["seal-raw", "0", "0", "dcnode keyring v1", "ring", "planted"],
    );
    assert_eq!(code, 0, "{out}");
    let planted = std::fs::read(work.path().join("planted")).unwrap();
    std::fs::write(&path, &planted).unwrap();

    // The genuine node refuses the blob before any EGETKEY, never generates keys over it,
    // and the agent reports that the node does not start.
    w.lab
        .start_agent_opts(&w.v1, &AgentOptions::default())
        .unwrap();
    let s = w
        .lab
        .wait_for(T, "the node refusing the planted blob", |s| {
            s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("node does not start"))
        })
        .await
        .unwrap();
    assert!(!s.node_running);
    w.lab
        .wait_log(T, |l| {
            l.contains("KEYPOLICY") && l.contains("left untouched")
        })
        .await
        .unwrap_or_else(|e| {
            panic!("the node's refusal names the key request and leaves the blob: {e}")
        });
    assert_eq!(std::fs::read(&path).unwrap(), planted, "blob modified");
    let keys = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
    assert_eq!(
        keys, 1,
        "a new keyring was generated beside the planted one"
    );

    // Restoring the genuine blob brings the node back with its original keys.
    w.lab.stop_agent();
    std::fs::write(&path, &genuine).unwrap();
    w.lab
        .start_agent_opts(&w.v1, &AgentOptions::default())
        .unwrap();
    w.lab.wait_serving("1.0.0", T).await.unwrap();
    w.all_readable_from("1.0.0").await;
    let after = node_status(&w.lab).await;
    assert_eq!(
        field(&after, "keyring_fingerprint"),
        field(&before, "keyring_fingerprint")
    );
}

/// Attack 3: the node learns a revocation as soon as the agent sees it and keeps it sealed.
/// The host then wipes the agent's state, removes the revocation from the feed and restarts
/// a fresh agent, which no longer knows it — and publishes the revoked (once signed) release.
/// The node holding the keys refuses to release them for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_agent_state_cannot_send_the_keys_to_a_revoked_release() {
    let mut w = world().await;
    let before = node_status(&w.lab).await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.revoke(&v2.mr_enclave, "key leak in 2.0.0").unwrap();
    // The running node records the revocation in its sealed custody state.
    let want = v2.mr_enclave.to_string();
    let end = tokio::time::Instant::now() + T;
    loop {
        let st = node_status(&w.lab).await;
        if st["revoked"]
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m.as_str() == Some(want.as_str())))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the node never learned the revocation: {st}\n{}",
            w.lab.agent_log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The host wipes the agent and hides the revocation, then offers the revoked release.
    w.lab.stop_agent();
    std::fs::remove_dir_all(w.lab.dir.join("agent")).unwrap();
    for e in std::fs::read_dir(&w.lab.feed).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    w.lab.publish(&v2.record).unwrap();
    w.lab
        .start_agent_opts(&w.v1, &AgentOptions::default())
        .unwrap();
    let reason = w.failure_reason().await;
    assert!(
        reason.contains("revoked"),
        "the refusal names its reason: {reason}"
    );
    assert!(reason.contains(&want), "{reason}");
    w.v1_untouched().await;
    let after = node_status(&w.lab).await;
    assert_eq!(
        field(&after, "keyring_fingerprint"),
        field(&before, "keyring_fingerprint")
    );
    assert!(
        !w.lab
            .dir
            .join("node-data/keys")
            .join(format!("{want}.sealed"))
            .exists(),
        "the revoked release received keys"
    );
    // The revocation survives node restarts: it is in the sealed keyring.
    assert!(after["revoked"].to_string().contains(&want));
}

/// Attack 7: a FIFO named like a record in the feed used to block the agent's loop forever.
/// Now it is refused and reported, and the agent goes on: it installs the next release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_the_feed_is_refused_and_does_not_stall_the_agent() {
    let w = world().await;
    let fifo = w.lab.feed.join("0-stall.json");
    let c = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: mkfifo(3) with a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let refusals = w.refusals_matching("not a regular file").await;
    assert!(
        refusals.iter().any(|r| r.contains("0-stall.json")),
        "{refusals:?}"
    );
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    w.settled_on("2.0.0").await;
}

/// Attack 8: a committee-signed DEBUG build is refused when the download is verified, before
/// the running node is touched, and the refusal says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_debug_build_is_refused_before_the_node_is_touched() {
    let w = world().await;
    let dbg = w
        .lab
        .build_node_with("2.0.0", 2, "-debug", &[], true)
        .unwrap();
    w.lab.publish(&dbg.record).unwrap();
    let reason = w.failure_reason().await;
    assert!(reason.contains("DEBUG"), "{reason}");
    w.v1_untouched().await;
}

/// Forward secrecy of key generations: after an upgrade, the host restarts the old version
/// from its old sealed keyring (the agent re-initialized on it). It still reads what was
/// written before it was retired, and nothing written after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_version_restarted_from_its_old_blob_reads_only_data_from_before_its_retirement() {
    let mut w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    w.settled_on("2.0.0").await;
    let st = node_status(&w.lab).await;
    assert_eq!(st["data_generation"], 2, "{st}");
    assert_eq!(field(&st, "keyring_floor"), "2.0.0");
    w.lab
        .put("after-upgrade", b"written by 2.0.0")
        .await
        .unwrap();

    // The host wipes the agent and brings 1.0.0 back on the same data directory.
    w.lab.stop_agent();
    std::fs::remove_dir_all(w.lab.dir.join("agent")).unwrap();
    for e in std::fs::read_dir(&w.lab.feed).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    w.lab
        .start_agent_opts(&w.v1, &AgentOptions::default())
        .unwrap();
    w.lab.wait_serving("1.0.0", T).await.unwrap();
    w.all_readable_from("1.0.0").await;
    let e = w.lab.get("after-upgrade").await.unwrap_err();
    assert!(e.contains("HTTP 500"), "{e}");
    let st = node_status(&w.lab).await;
    assert_eq!(st["data_generation"], 1, "{st}");
}

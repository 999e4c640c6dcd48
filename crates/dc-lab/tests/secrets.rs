//! No secret in any output: an upgrade, a rollback and the operator's views, with every
//! component at the most verbose log level. The node's keyring is derived from a test seed
//! (a measured test-only argument), so the test knows every key byte and looks for it —
//! raw, hex (both cases), base64 (standard and URL-safe, padded or not) and partial hex — in
//! every log, status output and error.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use dc_lab::AgentOptions;

const SEED: &str = "5eed5eed5eed5eed";

fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let h = hex::encode(secret);
    vec![
        secret.to_vec(),
        h.clone().into_bytes(),
        h.to_uppercase().into_bytes(),
        h[..24].to_string().into_bytes(),
        STANDARD.encode(secret).into_bytes(),
        STANDARD_NO_PAD.encode(secret).into_bytes(),
        URL_SAFE.encode(secret).into_bytes(),
        URL_SAFE_NO_PAD.encode(secret).into_bytes(),
        STANDARD
            .encode(&secret[..16])
            .trim_end_matches('=')
            .to_string()
            .into_bytes(),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_bytes_in_any_log_status_or_error_at_trace_level() {
    let opts = AgentOptions {
        log: "trace".into(),
        ..AgentOptions::default()
    };
    let w = common::world_with(&["--test-key-seed", SEED], opts).await;
    let ring = dcnode::test_keyring(SEED).unwrap();
    // The node really runs on these keys.
    let status: serde_json::Value = reqwest::get(format!("{}/v1/status", w.lab.node_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["keyring_fingerprint"],
        hex::encode(ring.fingerprint())
    );

    // A successful upgrade, then a failed one that is rolled back (errors get logged).
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    w.lab.wait_serving("2.0.0", common::T).await.unwrap();
    let bad = w
        .lab
        .build_node("3.0.0", 3, "-bad", &["--fault", "unhealthy"])
        .unwrap();
    w.lab.publish(&bad.record).unwrap();
    w.lab
        .wait_for(common::T, "the rollback", |s| {
            s.state.as_ref().is_some_and(|st| !st.failed.is_empty())
        })
        .await
        .unwrap();
    w.lab.wait_serving("2.0.0", common::T).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut outputs: Vec<(String, Vec<u8>)> = vec![
        (
            "agent and node log".into(),
            std::fs::read(w.lab.dir.join("agent.log")).unwrap(),
        ),
        (
            "platform log".into(),
            std::fs::read(w.lab.dir.join("platform.log")).unwrap(),
        ),
        (
            "agent status".into(),
            reqwest::get(format!("{}/v1/status", w.lab.agent_url()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec(),
        ),
        (
            "node status".into(),
            reqwest::get(format!("{}/v1/status", w.lab.node_url()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .to_vec(),
        ),
        (
            "journal".into(),
            std::fs::read(w.lab.dir.join("agent/journal")).unwrap(),
        ),
    ];
    for json in [false, true] {
        let mut c = std::process::Command::new(&*common::AGENT);
        c.args(["status", "--url", &w.lab.agent_url()]);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        outputs.push((
            format!("dcupgrade status json={json}"),
            [out.stdout, out.stderr].concat(),
        ));
    }
    // Trace level really was on, in the agent and in the nodes.
    let log = String::from_utf8_lossy(&outputs[0].1).to_string();
    let trace_lines = log.lines().filter(|l| l.contains(" TRACE ")).count();
    assert!(trace_lines > 100, "only {trace_lines} trace lines");
    assert!(
        log.contains("dcupgrade trace logging is on"),
        "the agent was not at trace level"
    );
    assert!(
        log.contains("dcnode trace logging is on"),
        "the nodes were not at trace level"
    );
    for k in ring.keys() {
        for form in forms(k.secret()) {
            for (what, bytes) in &outputs {
                assert!(
                    !contains(bytes, &form),
                    "key {} appears in the {what} as {:?}",
                    k.name(),
                    String::from_utf8_lossy(&form)
                );
            }
        }
    }
}

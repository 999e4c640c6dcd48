//! No secret in any output: an upgrade, a rollback and the operator's views, with every
//! component at the most verbose log level. The node's keyring is derived from a test seed
//! (a measured test-only argument), so the test knows every key byte and looks for it —
//! raw, hex (both cases), base64 (standard and URL-safe, padded or not) and partial hex — in
//! every log, status output and error. It runs with both log formats: text, and JSON (where
//! every line of the agent's and nodes' log must be one JSON object with `time`, `level`,
//! `target` and `message`).

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

/// The agent started by the test itself (the lab starts it with text logs): stopped on drop.
struct OwnAgent(std::process::Child);

impl Drop for OwnAgent {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let end = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < end {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Restarts the lab's agent with `--log-format json`, its settings from a config file
/// (`run --config`), into a fresh `agent.log` (the text log so far is kept beside it).
fn restart_agent_json(w: &mut common::World) -> OwnAgent {
    let lab = &mut w.lab;
    lab.stop_agent();
    let dir = lab.dir.clone();
    std::fs::rename(dir.join("agent.log"), dir.join("agent-text.log")).unwrap();
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let config = format!(
        "state = {}\nfeed = {}\nchain_poll_ms = 2000\nlisten = \"127.0.0.1:{}\"\n\
         node_data = {}\nnode_listen = \"127.0.0.1:{}\"\nnode_upgrade = \"127.0.0.1:{}\"\n\
         launcher = \"sim\"\nsim_bin = {}\nplatform_state = {}\ninitial_bundle = {}\n\
         initial_record = {}\nagent_record = {}\npoll_ms = 100\nhealth_ms = 15000\n\
         retry_backoff_ms = 3600000\n",
        q(&dir.join("agent")),
        q(&lab.feed),
        lab.agent_port,
        q(&dir.join("node-data")),
        lab.node_port,
        lab.node_upgrade_port,
        q(&lab.bins.sim),
        q(&dir.join("platform")),
        q(&w.v1.bundle_dir),
        q(&w.v1.record_path),
        q(&dir.join("records").join("dcupgrade.json")),
    );
    let config_path = dir.join("dcupgrade.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = std::process::Command::new(&lab.bins.sim)
        .arg("launch")
        .arg("--state")
        .arg(dir.join("platform"))
        .args(["--env", "DCUPGRADE_LOG=trace", "--env", "DCNODE_LOG=trace"])
        .arg(dir.join("bundles").join("dcupgrade"))
        .args(["--", "run", "--log-format", "json", "--config"])
        .arg(&config_path)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    OwnAgent(child)
}

/// Every line of the log is one JSON object with the stable fields, except the software
/// platform's own launcher lines (`dctee-sim: …`, not the agent's or a node's).
fn check_json_log(log: &str) {
    let mut fields = std::collections::BTreeSet::new();
    let mut lines = 0;
    for line in log.lines() {
        if line.starts_with("dctee-sim: ") {
            continue;
        }
        lines += 1;
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let o = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        for k in ["time", "level", "target", "message"] {
            assert!(
                o.get(k).is_some_and(|x| x.is_string()),
                "no string `{k}`: {line}"
            );
        }
        fields.extend(o.keys().cloned());
    }
    assert!(lines > 100, "only {lines} JSON lines");
    for k in ["version", "mrenclave"] {
        assert!(
            fields.contains(k),
            "no line has the field `{k}` ({fields:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_bytes_in_any_log_status_or_error_at_trace_level() {
    no_key_bytes(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_bytes_in_any_json_log_status_or_error_at_trace_level() {
    no_key_bytes(true).await
}

async fn no_key_bytes(json: bool) {
    let opts = AgentOptions {
        log: "trace".into(),
        ..AgentOptions::default()
    };
    let mut w = common::world_with(&["--test-key-seed", SEED], opts).await;
    let own = json.then(|| restart_agent_json(&mut w));
    if json {
        w.lab
            .wait_serving("1.0.0", common::T)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    }
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
    if json {
        outputs.push((
            "text log before the restart".into(),
            std::fs::read(w.lab.dir.join("agent-text.log")).unwrap(),
        ));
    }
    // The logs are read once the agent (and with it its nodes) stopped: every line is then
    // in the file, and whole (node lines reach it through relays, in pieces while they run).
    drop(own);
    w.lab.stop_agent();
    outputs[0].1 = std::fs::read(w.lab.dir.join("agent.log")).unwrap();
    outputs[1].1 = std::fs::read(w.lab.dir.join("platform.log")).unwrap();
    // Trace level really was on, in the agent and in the nodes.
    let log = String::from_utf8_lossy(&outputs[0].1).to_string();
    if json {
        check_json_log(&log);
    }
    let trace = if json {
        "\"level\":\"TRACE\""
    } else {
        " TRACE "
    };
    let trace_lines = log.lines().filter(|l| l.contains(trace)).count();
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

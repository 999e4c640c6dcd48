//! `dcupgrade doctor` on the real binary, against a lab (software platform, committee,
//! bundles, feed, a running agent): a healthy setup passes, before and while the agent runs,
//! and each failure is reported as FAIL with advice and exit status 1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{world, World, AGENT, T};
use dc_lab::{Lab, NodeRelease};
use dc_release::{ReleaseRecord, Role};
use serde_json::Value;

/// Comfortably below any free space a test machine has: the disk check is tested on its own.
const SMALL_ARTIFACT: &str = "1048576";

struct Outcome {
    code: i32,
    checks: Vec<Value>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn status_of(&self, name: &str) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| c["check"] == name)
            .map(|c| c["status"].as_str().unwrap_or("?"))
            .collect()
    }

    fn check(&self, name: &str) -> &Value {
        self.checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {self}"))
    }

    fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| c["status"] == "FAIL")
            .map(|c| c["check"].as_str().unwrap_or("?"))
            .collect()
    }

    /// Exactly `name` failed, with advice, and the exit status says so.
    fn only_failure(&self, name: &str) -> &Value {
        assert_eq!(self.code, 1, "{self}");
        assert_eq!(self.failed(), vec![name], "{self}");
        let c = self.check(name);
        assert!(
            c["advice"].as_str().is_some_and(|a| !a.is_empty()),
            "a FAIL says what to do: {self}"
        );
        c
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run(args: &[String], json: bool) -> Outcome {
    let mut c = Command::new(&*AGENT);
    c.arg("doctor").args(args);
    if json {
        c.arg("--json");
    }
    // Only what the test gives: no DCUPGRADE_* of the environment running the tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("DCUPGRADE_") {
            c.env_remove(k);
        }
    }
    let out = c.stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let checks = if json {
        serde_json::from_str::<Vec<Value>>(&stdout)
            .unwrap_or_else(|e| panic!("--json prints an array ({e}): {stdout}"))
    } else {
        Vec::new()
    };
    Outcome {
        code: out.status.code().unwrap_or(-1),
        checks,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn doctor(args: &[String]) -> Outcome {
    run(args, true)
}

/// The lab's agent configuration as `run` gets it, as a config file's entries (key, TOML
/// value).
fn settings(lab: &Lab, v1: &NodeRelease) -> Vec<(&'static str, String)> {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    vec![
        ("state", q(&lab.dir.join("agent"))),
        ("feed", q(&lab.feed)),
        ("listen", format!("\"127.0.0.1:{}\"", lab.agent_port)),
        ("node_data", q(&lab.dir.join("node-data"))),
        ("node_listen", format!("\"127.0.0.1:{}\"", lab.node_port)),
        (
            "node_upgrade",
            format!("\"127.0.0.1:{}\"", lab.node_upgrade_port),
        ),
        ("sim_bin", q(&lab.bins.sim)),
        ("platform_state", q(&lab.dir.join("platform"))),
        ("initial_bundle", q(&v1.bundle_dir)),
        ("initial_record", q(&v1.record_path)),
        ("agent_record", q(&agent_record(lab))),
    ]
}

fn agent_record(lab: &Lab) -> PathBuf {
    lab.dir.join("records").join("dcupgrade.json")
}

fn agent_bundle(lab: &Lab) -> PathBuf {
    lab.dir.join("bundles").join("dcupgrade")
}

/// Writes a config file with `entries`, `changes` replacing (or adding, or with an empty value
/// removing) some; returns doctor's arguments for it.
fn config(
    lab: &Lab,
    name: &str,
    entries: &[(&'static str, String)],
    changes: &[(&'static str, String)],
) -> Vec<String> {
    let mut text = String::new();
    for (k, v) in entries {
        let v = changes
            .iter()
            .find(|(ck, _)| ck == k)
            .map(|(_, cv)| cv)
            .unwrap_or(v);
        if !v.is_empty() {
            text.push_str(&format!("{k} = {v}\n"));
        }
    }
    for (k, v) in changes {
        if !entries.iter().any(|(ek, _)| ek == k) && !v.is_empty() {
            text.push_str(&format!("{k} = {v}\n"));
        }
    }
    let f = lab.dir.join(format!("doctor-{name}.toml"));
    std::fs::write(&f, text).unwrap();
    vec![
        "--config".into(),
        f.display().to_string(),
        "--agent-bundle".into(),
        agent_bundle(lab).display().to_string(),
        "--artifact-bytes".into(),
        SMALL_ARTIFACT.into(),
    ]
}

fn all_pass(o: &Outcome) {
    assert_eq!(o.code, 0, "{o}");
    for c in &o.checks {
        assert_eq!(c["status"], "PASS", "{c}\n{o}");
    }
    for name in [
        "config",
        "platform",
        "agent_record",
        "node_record",
        "feed",
        "state_dir",
        "disk",
        "port.listen",
        "port.node_listen",
        "port.node_upgrade",
        "clock",
    ] {
        assert_eq!(o.status_of(name), vec!["PASS"], "{name}: {o}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_setup_passes_while_the_agent_runs_and_after_it_stopped() {
    let mut w: World = world().await;
    let entries = settings(&w.lab, &w.v1);
    let args = config(&w.lab, "healthy", &entries, &[]);

    // The agent runs: its port and the node's are held by the expected processes.
    let o = doctor(&args);
    all_pass(&o);
    let d = |n: &str| {
        o.check(n)["detail"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(d("port.listen").contains("dcupgrade agent"), "{o}");
    assert!(d("port.node_listen").contains("dcnode 1.0.0"), "{o}");
    assert!(d("port.node_upgrade").contains("dcnode"), "{o}");
    assert!(d("node_record").contains("journal"), "{o}");
    assert!(d("node_record").contains("1.0.0"), "{o}");
    assert!(
        d("agent_record").contains(&w.lab.status().await.unwrap().agent_mr_enclave[..16]),
        "the agent's record is checked for the measurement the running agent has: {o}"
    );

    // The same in text: one line per check, a summary, exit status 0.
    let t = run(&args, false);
    assert_eq!(t.code, 0, "{t}");
    for name in ["platform", "agent_record", "node_record", "port.listen"] {
        assert!(
            t.stdout
                .lines()
                .any(|l| l.starts_with("PASS  ") && l.split_whitespace().nth(1) == Some(name)),
            "{name}: {t}"
        );
    }
    assert!(t.stdout.contains("0 failed"), "{t}");
    assert!(
        !t.stderr.contains('\u{1b}'),
        "no progress drawing when stderr is not a terminal: {t}"
    );

    // The agent stopped: its ports are free (or still held by a node that drains).
    w.lab.stop_agent();
    let o = doctor(&args);
    all_pass(&o);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_failure_is_reported_with_what_to_do() {
    let w = world().await;
    let lab = &w.lab;
    let entries = settings(lab, &w.v1);
    let dir = &lab.dir;
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let detail = |c: &Value| c["detail"].as_str().unwrap_or_default().to_string();

    // The healthy baseline, so that every case below fails for its own reason only.
    all_pass(&doctor(&config(lab, "base", &entries, &[])));

    // The software platform's socket is missing.
    let no_platform = dir.join("no-platform");
    std::fs::create_dir(&no_platform).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&no_platform, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let o = doctor(&config(
        lab,
        "platform",
        &entries,
        &[("platform_state", q(&no_platform))],
    ));
    assert!(
        detail(o.only_failure("platform")).contains("control.sock"),
        "{o}"
    );

    // The agent's record, tampered with after signing: the version changed.
    let signed = std::fs::read_to_string(agent_record(lab)).unwrap();
    let mut v: Value = serde_json::from_str(&signed).unwrap();
    v["record"]["version"] = "9.9.9".into();
    let tampered = dir.join("tampered-agent.json");
    std::fs::write(&tampered, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = doctor(&config(
        lab,
        "tampered",
        &entries,
        &[("agent_record", q(&tampered))],
    ));
    assert!(
        detail(o.only_failure("agent_record")).contains("signatures"),
        "{o}"
    );

    // The agent's record without signatures.
    let mut v: Value = serde_json::from_str(&signed).unwrap();
    v["signatures"] = Value::Array(vec![]);
    let unsigned = dir.join("unsigned-agent.json");
    std::fs::write(&unsigned, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = doctor(&config(
        lab,
        "unsigned",
        &entries,
        &[("agent_record", q(&unsigned))],
    ));
    assert!(
        detail(o.only_failure("agent_record")).contains("0 of the required 1"),
        "{o}"
    );

    // A correctly signed upgrader record, but for another measurement.
    let mut r: ReleaseRecord = serde_json::from_value(v["record"].clone()).unwrap();
    r.mr_enclave = w.v1.mr_enclave.to_string();
    r.role = Role::Upgrader;
    let other = dir.join("other-agent.json");
    std::fs::write(&other, lab.sign(r).unwrap().to_json()).unwrap();
    let o = doctor(&config(
        lab,
        "other-agent",
        &entries,
        &[("agent_record", q(&other))],
    ));
    assert!(
        detail(o.only_failure("agent_record")).contains("signed for"),
        "{o}"
    );

    // No agent bundle: nothing to check the records against.
    let mut args = config(lab, "no-bundle", &entries, &[]);
    let i = args.iter().position(|a| a == "--agent-bundle").unwrap();
    args.drain(i..i + 2);
    let o = doctor(&args);
    assert_eq!(o.code, 1, "{o}");
    assert_eq!(o.status_of("agent_record"), vec!["FAIL"], "{o}");

    // The installed node (before the agent's first run: no journal) is not the release its
    // record names: v1's bundle with v2's committee-signed record.
    let v2 = lab.build_node("2.0.0", 2, "", &[]).unwrap();
    let fresh = dir.join("fresh-state");
    let o = doctor(&config(
        lab,
        "mismatch",
        &entries,
        &[("state", q(&fresh)), ("initial_record", q(&v2.record_path))],
    ));
    let c = o.only_failure("node_record");
    assert!(
        detail(c).contains(&w.v1.mr_enclave.to_string())
            && detail(c).contains(&v2.mr_enclave.to_string()),
        "{o}"
    );
    // ... and with its own record it passes.
    let o = doctor(&config(lab, "fresh", &entries, &[("state", q(&fresh))]));
    all_pass(&o);
    assert!(
        detail(o.check("node_record")).contains("initial_bundle"),
        "{o}"
    );

    // The installed node's bundle was changed after it was measured.
    let changed = dir.join("changed-bundle");
    copy_dir(&w.v1.bundle_dir, &changed);
    let bin = changed.join("bin").join("dcnode");
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes.push(0);
    std::fs::write(&bin, bytes).unwrap();
    let o = doctor(&config(
        lab,
        "changed",
        &entries,
        &[("state", q(&fresh)), ("initial_bundle", q(&changed))],
    ));
    assert!(
        detail(o.only_failure("node_record")).contains("bin/dcnode"),
        "{o}"
    );

    // A chain endpoint nothing answers on.
    let port = dc_chain::testnet::free_port().unwrap();
    let o = doctor(&config(
        lab,
        "chain",
        &entries,
        &[("chain", format!("[\"ws://127.0.0.1:{port}\"]"))],
    ));
    assert!(
        detail(o.only_failure("chain")).contains("unreachable"),
        "{o}"
    );

    // The node's data port held by a process that is neither the agent nor a node (this one).
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fport = foreign.local_addr().unwrap().port();
    let o = doctor(&config(
        lab,
        "port",
        &entries,
        &[("node_listen", format!("\"127.0.0.1:{fport}\""))],
    ));
    let c = o.only_failure("port.node_listen");
    assert!(
        detail(c).contains(&format!("pid {}", std::process::id())),
        "the holder is named: {o}"
    );
    drop(foreign);

    // Not enough disk for the largest allowed artifact.
    let mut args = config(lab, "disk", &entries, &[]);
    let i = args.iter().position(|a| a == "--artifact-bytes").unwrap();
    args[i + 1] = (1u64 << 62).to_string();
    let o = doctor(&args);
    o.only_failure("disk");

    // A clock before 2024 (test builds may set the clock check's "now").
    let mut args = config(lab, "clock", &entries, &[]);
    args.extend(["--clock-secs".into(), "1000000000".into()]);
    let o = doctor(&args);
    o.only_failure("clock");

    // A configuration that does not resolve.
    let o = doctor(&config(
        lab,
        "bad-config",
        &entries,
        &[("state", String::new())],
    ));
    let c = o.only_failure("config");
    assert!(detail(c).contains("state"), "{o}");

    // Text output: the FAIL line and what to do under it; the summary.
    let t = run(
        &config(
            lab,
            "text",
            &entries,
            &[("platform_state", q(&no_platform))],
        ),
        false,
    );
    assert_eq!(t.code, 1, "{t}");
    let lines: Vec<&str> = t.stdout.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.starts_with("FAIL  platform"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(lines[i + 1].trim_start().starts_with("→ start it"), "{t}");
    assert!(t.stdout.contains("1 failed"), "{t}");

    // Last (it changes the feed the running agent reads): the committee revokes the
    // installed node.
    lab.revoke(&w.v1.mr_enclave, "doctor test").unwrap();
    let o = doctor(&config(lab, "revoked", &entries, &[]));
    assert!(
        detail(o.only_failure("node_record")).contains("revoked"),
        "{o}"
    );
}

/// The chain check against a real Substrate RPC node (chopsticks): synced and finalizing
/// while blocks are made, a WARN when the finalized head stands still.
#[tokio::test(flavor = "multi_thread")]
async fn chain_endpoint_synced_and_finalizing() {
    let dir = tempfile::tempdir().unwrap();
    let net = dc_chain::testnet::Testnet::start(dir.path()).await.unwrap();
    let f = dir.path().join("chain.toml");
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    std::fs::write(
        &f,
        format!(
            "state = {}\nnode_data = {}\nchain = [\"{}\"]\nsim_bin = \"/nonexistent\"\nplatform_state = {}\n",
            q(&dir.path().join("state")),
            q(&dir.path().join("data")),
            net.url(),
            q(&dir.path().join("platform")),
        ),
    )
    .unwrap();
    let base = |finality: u64| -> Vec<String> {
        vec![
            "--config".into(),
            f.display().to_string(),
            "--artifact-bytes".into(),
            SMALL_ARTIFACT.into(),
            // Hang guards only: the check returns as soon as it has seen what it waits for.
            "--timeout-secs".into(),
            "300".into(),
            "--finality-secs".into(),
            finality.to_string(),
        ]
    };

    // Blocks are made while the doctor watches: finalizing. (Other checks fail here: there
    // is no platform or agent in this test.)
    let args = base(300);
    let child = tokio::task::spawn_blocking(move || doctor(&args));
    let watching = async {
        loop {
            net.new_block().await.unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let o = tokio::select! {
        o = child => o.unwrap(),
        _ = tokio::time::timeout(T * 10, watching) => panic!("the doctor did not finish"),
    };
    let c = o.check("chain");
    assert_eq!(c["status"], "PASS", "{o}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("finalizing"),
        "{o}"
    );
    // The clock was compared with the finalized block's time (chopsticks stamps blocks from
    // the wall clock plus one slot each).
    let c = o.check("clock");
    assert_eq!(c["status"], "PASS", "{o}");
    assert!(
        c["detail"].as_str().unwrap_or_default().contains("block #"),
        "{o}"
    );

    // The block loop above was dropped mid-call: a block it asked for may still be in the
    // making. One more, awaited, comes after it (chopsticks builds blocks one at a time), so
    // from here the head stands still.
    net.new_block().await.unwrap();

    // No blocks: the finalized head stands still, which is a warning; and a clock an hour
    // behind the chain's block time is one too.
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let mut args = base(3);
    args.extend(["--clock-secs".into(), hour_ago.to_string()]);
    let o = doctor(&args);
    let c = o.check("chain");
    assert_eq!(c["status"], "WARN", "{o}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stayed at"),
        "{o}"
    );
    let c = o.check("clock");
    assert_eq!(c["status"], "WARN", "{o}");
    assert!(
        c["detail"].as_str().unwrap_or_default().contains("behind"),
        "{o}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

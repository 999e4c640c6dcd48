//! `dcupgrade status` and `dcupgrade history` (the real binary) against a real agent that
//! refused one release at its download, committed one and rolled one back. Needs the
//! workspace binaries (`cargo build --workspace --bins`, which `scripts/test` does).

mod common;

use common::{world, T};
use dcupgrade::journal::{Phase, State};

/// Runs `dcupgrade ARGS --url AGENT`; returns stdout, failing the test on a non-zero exit.
fn cli(w: &common::World, args: &[&str]) -> String {
    let out = std::process::Command::new(&*common::AGENT)
        .args(args)
        .args(["--url", &w.lab.agent_url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "dcupgrade {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits until the journal's history has `n` entries and the agent is idle with a node.
async fn history_of(w: &common::World, n: usize) -> State {
    w.lab
        .wait_for(T, &format!("{n} finished upgrades"), |s| {
            s.node_running
                && s.state
                    .as_ref()
                    .is_some_and(|st| st.history.len() >= n && st.phase == Phase::Idle)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()))
        .state
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_history_show_a_refusal_a_commit_and_a_rollback() {
    let w = world().await;
    assert_eq!(
        cli(&w, &["history"]),
        "no finished upgrades in the journal yet\n"
    );

    // 1. A release whose artifact does not match its signed digest: refused at the download.
    let v15 = w.lab.build_node("1.5.0", 1, "", &[]).unwrap();
    let mut r = v15.record.record.clone();
    if let Some(a) = r.artifact.as_mut() {
        a.sha256 = "00".repeat(32);
    }
    w.lab.publish(&w.lab.sign(r).unwrap()).unwrap();
    history_of(&w, 1).await;

    // 2. v2 commits.
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    w.lab
        .wait_serving("2.0.0", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    history_of(&w, 2).await;

    // 3. v3 fails its health check after the switch: rolled back to v2.
    let v3 = w
        .lab
        .build_node("3.0.0", 3, "-unhealthy", &["--fault", "unhealthy"])
        .unwrap();
    w.lab.publish(&v3.record).unwrap();
    let st = history_of(&w, 3).await;
    assert_eq!(st.current.version, "2.0.0");

    // 4. A release below the floor: refused when offered (never begun, so not in history).
    let old = w.lab.build_node("0.9.0", 1, "", &[]).unwrap();
    w.lab.publish(&old.record).unwrap();
    let s = w
        .lab
        .wait_for(T, "the refusal of 0.9.0", |s| {
            s.refused.iter().any(|r| r.contains("0.9.0"))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));

    // The journal's history, through the API and on disk.
    let h = s.state.as_ref().unwrap().history.clone();
    let outcomes: Vec<&str> = h.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["refused", "committed", "rolled_back"], "{h:#?}");
    let v1 = w.v1.mr_enclave.to_string();
    let (v2m, v3m) = (v2.mr_enclave.to_string(), v3.mr_enclave.to_string());
    assert_eq!(
        (h[0].from_mr_enclave.as_str(), h[0].to_version.as_str()),
        (v1.as_str(), "1.5.0")
    );
    assert!(h[0].reason.contains("SHA-256"), "{}", h[0].reason);
    assert_eq!(h[0].downtime_ms, Some(0), "refused: v1 was never touched");
    assert_eq!(
        (h[1].from_mr_enclave.as_str(), h[1].to_mr_enclave.as_str()),
        (v1.as_str(), v2m.as_str())
    );
    assert_eq!(h[1].reason, "");
    assert_eq!(
        (h[2].from_mr_enclave.as_str(), h[2].to_mr_enclave.as_str()),
        (v2m.as_str(), v3m.as_str())
    );
    assert!(!h[2].reason.is_empty());
    for e in &h {
        assert!(e.started_at_ms <= e.ended_at_ms, "{e:?}");
        assert_eq!(e.duration_ms, e.ended_at_ms - e.started_at_ms, "{e:?}");
    }
    // Make-before-break: the commit's and the rollback's switch windows are known (and
    // within the upgrade); no bound on their size, which depends on the machine.
    for e in &h[1..] {
        let d = e.downtime_ms.unwrap_or_else(|| panic!("{e:?}"));
        assert!(d <= e.duration_ms, "{e:?}");
    }
    assert_eq!(
        w.lab.journal().unwrap().unwrap().history,
        h,
        "the API shows the journal's history"
    );

    // `dcupgrade history`: the same, as a table and as JSON.
    let table = cli(&w, &["history"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("STARTED (UTC)"), "{table}");
    let row = |from: &str, to: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("{from} → {to}")))
            .unwrap_or_else(|| panic!("no {from} → {to} row:\n{table}"))
            .to_string()
    };
    let refused = row("1.0.0", "1.5.0");
    assert!(refused.contains(" refused "), "{refused}");
    assert!(refused.contains("SHA-256"), "{refused}");
    let committed = row("1.0.0", "2.0.0");
    assert!(committed.contains(" committed "), "{committed}");
    let rolled_back = row("2.0.0", "3.0.0");
    assert!(rolled_back.contains(" rolled back "), "{rolled_back}");
    assert!(rolled_back.contains(&h[2].reason), "{rolled_back}");
    assert!(table.contains("3 upgrade(s)"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&cli(&w, &["history", "--json"])).unwrap();
    assert_eq!(json, serde_json::to_value(&h).unwrap());
    assert_eq!(json[2]["outcome"], "rolled_back");

    // `dcupgrade status`: a summary for people…
    let text = cli(&w, &["status"]);
    let failed = &st.failed[&v3m];
    for needle in [
        "installed    dcnode 2.0.0".to_string(),
        format!("MRENCLAVE  {v2m}"),
        "node         running".into(),
        "phase        idle".into(),
        format!("feed       {}", w.lab.feed.display()),
        "chain      none".into(),
        "last upgrade 2.0.0 → 3.0.0 ROLLED BACK".into(),
        // the rolled-back upgrade's timeline
        "timeline".into(),
        "switching".into(),
        "rolling_back".into(),
        // the failed release, its reason and when it is retried
        "failed releases".into(),
        "3.0.0".into(),
        "attempts 1, next retry".into(),
        format!("reason: {}", failed.reason),
        // the refusal, with its reason
        "refused releases".into(),
        "lower than the highest version".into(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing:\n{text}");
    }
    let retry = text
        .lines()
        .find(|l| l.contains("next retry"))
        .unwrap_or_default();
    assert!(
        retry.contains(" (in "),
        "the retry is in the future: {retry}"
    );
    // …and `--json` is the API's StatusView.
    let v: serde_json::Value = serde_json::from_str(&cli(&w, &["status", "--json"])).unwrap();
    assert_eq!(v["state"]["current"]["version"], "2.0.0");
    assert_eq!(v["state"]["history"].as_array().map(Vec::len), Some(3));
    assert!(v["refused"].as_array().is_some_and(|r| !r.is_empty()));
    w.all_readable_from("2.0.0").await;
}

/// A journal written before the history existed loads, with an empty history.
#[test]
fn a_journal_without_history_loads() {
    let old = r#"{
      "current": {"version": "1.0.0", "mr_enclave": "aa", "bundle_dir": "/b"},
      "highest_trusted": "1.0.0",
      "phase": "idle",
      "upgrade": null,
      "failed": {},
      "timeline": [],
      "upgrades_completed": 0
    }"#;
    let s: State = serde_json::from_str(old).unwrap();
    assert!(s.history.is_empty());
    assert_eq!(s.current.version, "1.0.0");
}

//! The binary against the test node: exit status, report table, JSON and SVG files.

mod common;

use common::{bounded, start_node, Fault};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_a_clean_report_and_writes_json_and_svg() {
    let (addr, _node) = start_node(Fault::None).await;
    let dir = tempfile::tempdir().unwrap();
    let (json, svg) = (dir.path().join("r.json"), dir.path().join("r.svg"));
    let out = bounded(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dc-loadgen"))
            .args(["--target", &addr.to_string(), "--clients", "4"])
            .args(["--seconds", "20", "--requests", "25", "--window", "0-5"])
            .arg("--json")
            .arg(&json)
            .arg("--svg")
            .arg(&svg)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("steady state") && stdout.contains("lost 0"),
        "{stdout}"
    );

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["report"]["overall"]["requests"], 100);
    assert_eq!(report["report"]["overall"]["failed"], 0);
    assert_eq!(report["report"]["lost_writes"], 0);
    assert_eq!(report["config"]["clients"], 4);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("dc-loadgen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exits_2_when_requests_fail() {
    let (addr, _bound) = common::closed_port().await;
    let out = bounded(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dc-loadgen"))
            .args(["--target", &addr.to_string(), "--clients", "2"])
            .args(["--seconds", "20", "--requests", "3"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("refused"));
}

//! Prometheus metrics of a real agent and a real node after a real upgrade, checked with
//! `promtool check metrics` (Debian's `prometheus` package; `scripts/test` installs it), and
//! a forged handover counted as a security event on the node.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{world, T};
use dc_handover::messages::{Hello, Response};

/// `promtool check metrics` on `text`: its findings, `Ok` if none.
fn promtool(text: &str) -> Result<(), String> {
    // On PATH, or where scripts/test unpacks it.
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/promtool");
    let bin = if local.exists() {
        local
    } else {
        "promtool".into()
    };
    let mut child = Command::new(bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is needed (apt-get install prometheus; scripts/test installs it): {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The value of the sample `series` (name with its labels, exactly as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[test]
fn promtool_finds_problems_it_is_shown() {
    // The check can fail: a counter without `_total` and a sample without help.
    let bad = "# TYPE x counter\nx 1\ny 2\n";
    assert!(promtool(bad).is_err());
    assert!(promtool("# HELP z_total Z.\n# TYPE z_total counter\nz_total 1\n").is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_node_metrics_after_an_upgrade_pass_promtool() {
    let w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    w.lab.publish(&v2.record).unwrap();
    w.lab
        .wait_serving("2.0.0", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));
    w.all_readable_from("2.0.0").await;

    let agent = w
        .lab
        .wait_metrics(&w.lab.agent_url(), T, |m| {
            m.contains("dcupgrade_upgrades_total{outcome=\"committed\",reason=\"none\"} 1")
        })
        .await
        .unwrap();
    promtool(&agent).unwrap_or_else(|e| panic!("{e}\n{agent}"));
    let a = |s: &str| value(&agent, s).unwrap_or_else(|| panic!("no {s} in\n{agent}"));
    assert_eq!(
        a("dcupgrade_upgrades_total{outcome=\"committed\",reason=\"none\"}"),
        1.0
    );
    assert_eq!(
        a("dcupgrade_upgrade_duration_seconds_count{outcome=\"committed\"}"),
        1.0
    );
    assert_eq!(a("dcupgrade_upgrade_downtime_seconds_count"), 1.0);
    assert_eq!(
        a("dcupgrade_release_decisions_total{decision=\"upgrade\",reason=\"newer_release\"}"),
        1.0
    );
    assert_eq!(a("dcupgrade_phase{phase=\"idle\"}"), 1.0);
    assert_eq!(a("dcupgrade_phase{phase=\"switching\"}"), 0.0);
    // The agent took the keys from v1 and gave them to v2: one delivery on each side.
    assert_eq!(
        a("dcupgrade_handover_attempts_total{role=\"receiver\",result=\"delivered\",code=\"none\"}"),
        1.0
    );
    assert_eq!(
        a("dcupgrade_handover_attempts_total{role=\"holder\",result=\"delivered\",code=\"none\"}"),
        1.0
    );
    let artifact = std::fs::metadata(w.lab.dir.join("artifacts").join("dcnode-2.0.0.tar"))
        .unwrap()
        .len();
    assert_eq!(a("dcupgrade_download_bytes_total"), artifact as f64);
    assert_eq!(
        a("dcupgrade_download_duration_seconds_count{result=\"ok\"}"),
        1.0
    );

    // The node v2: it took the keys as receiver, serves the data API, and counts it.
    let node = w.lab.metrics(&w.lab.node_url()).await.unwrap();
    promtool(&node).unwrap_or_else(|e| panic!("{e}\n{node}"));
    let n = |s: &str| value(&node, s).unwrap_or_else(|| panic!("no {s} in\n{node}"));
    assert_eq!(
        n("dcnode_handover_attempts_total{role=\"receiver\",result=\"delivered\",code=\"none\"}"),
        1.0
    );
    assert_eq!(
        n(&format!(
            "dcnode_release{{version=\"2.0.0\",mrenclave=\"{}\"}}",
            v2.mr_enclave
        )),
        1.0
    );
    assert_eq!(n("dcnode_ready"), 1.0);
    let reads = n(
        "dcnode_http_requests_total{route=\"/v1/objects/{name}\",method=\"GET\",status=\"200\"}",
    );
    assert!(reads >= w.objects.len() as f64, "{reads}");
    assert!(
        n("dcnode_http_request_duration_seconds_count{route=\"/v1/objects/{name}\",method=\"GET\"}")
            >= reads
    );

    // A Prometheus server asks for OpenMetrics and gets it.
    let open = reqwest::Client::new()
        .get(format!("{}/metrics", w.lab.agent_url()))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(open.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(open.text().await.unwrap().ends_with("# EOF\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_handover_report_is_counted_and_logged_by_the_node() {
    let w = world().await;
    let upgrade = format!("http://127.0.0.1:{}", w.lab.node_upgrade_port);
    let http = reqwest::Client::new();
    // A challenge the node makes for anyone...
    let hello = Hello {
        target_info: [0u8; 512],
    };
    let challenge: serde_json::Value = http
        .post(format!("{upgrade}{}", dc_handover::http::PATH_HELLO))
        .json(&hello)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = challenge["session"]
        .as_str()
        .unwrap_or_else(|| panic!("{challenge}"));
    let mut sid = [0u8; 16];
    let raw = base64_decode(session);
    sid.copy_from_slice(&raw);
    // ...answered with a report no enclave made.
    let forged = Response {
        session: sid,
        receiver_report: [7u8; 432],
        hpke_public_key: [9u8; 32],
        receiver_authorization: Vec::new(),
        destination: Vec::new(),
    };
    let r = http
        .post(format!("{upgrade}{}", dc_handover::http::PATH_RESPONSE))
        .json(&forged)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let body: serde_json::Value = r.json().await.unwrap();
    let code = body["error"].as_str().unwrap().to_string();

    let node = w.lab.metrics(&w.lab.node_url()).await.unwrap();
    promtool(&node).unwrap_or_else(|e| panic!("{e}\n{node}"));
    let series = format!(
        "dcnode_handover_attempts_total{{role=\"holder\",result=\"refused\",code=\"{code}\"}}"
    );
    assert_eq!(value(&node, &series), Some(1.0), "{series} in\n{node}");
    assert!(
        !node.contains("result=\"delivered\""),
        "nothing was delivered:\n{node}"
    );
    // Logged at WARN with its code (the node's log goes to the agent's log).
    w.lab
        .wait_log(T, |log| {
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("refused") && l.contains(&code))
        })
        .await
        .unwrap_or_else(|e| panic!("no WARN with code={code}: {e}"));
    // The node still serves every object.
    w.all_readable_from("1.0.0").await;
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

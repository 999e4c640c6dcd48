//! The generator against test servers: a healthy node, nodes that lose or alter writes or
//! answer 500, a server that closes connections, one that never answers, a closed port.
//! Bounded request counts; no timing assertions.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{bounded, start_node, Fault, VERSION};
use dc_loadgen::{run, start, LoadConfig, Op, Outcome, Report, Run};

fn config(target: SocketAddr, clients: usize, requests: u64) -> LoadConfig {
    LoadConfig {
        clients,
        put_fraction: 0.3,
        object_size: 1000,
        max_requests_per_client: Some(requests),
        duration: Some(Duration::from_secs(30)),
        ..LoadConfig::new(target)
    }
}

async fn run_bounded(config: LoadConfig) -> Run {
    bounded(run(config)).await.unwrap()
}

fn outcomes(run: &Run) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in &run.samples {
        *m.entry(s.outcome.class()).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_node_answers_everything_and_keeps_every_write() {
    let (addr, node) = start_node(Fault::None).await;
    let run = run_bounded(config(addr, 8, 50)).await;
    let connections = node.connections.load(Ordering::SeqCst);
    let verification = bounded(run.verify_writes()).await;

    let report = Report::new(&run.samples, &[], Some(&verification));
    assert_eq!(report.overall.requests, 400);
    assert_eq!(report.overall.failed, 0, "{:?}", outcomes(&run));
    assert_eq!(report.overall.versions.get(VERSION), Some(&400));
    assert!(report.writes_acknowledged > 0);
    assert_eq!(report.writes_acknowledged, run.writes.len() as u64);
    assert_eq!(verification.checked, report.writes_acknowledged);
    assert_eq!(verification.lost(), 0);
    assert!(verification.unreadable.is_empty());
    assert_eq!(report.lost_writes, Some(0));
    assert!(run.samples.iter().any(|s| s.op == Op::Get));
    assert!(run.samples.iter().any(|s| s.op == Op::Put));
    // Half the clients keep one connection; the other half connect once per request.
    assert_eq!(run.samples.iter().filter(|s| s.keep_alive).count(), 200);
    assert_eq!(connections, 4 + 4 * 50);
    assert!(run
        .samples
        .windows(2)
        .all(|w| w[0].start_us <= w[1].start_us));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_split_the_run() {
    let (addr, _node) = start_node(Fault::None).await;
    let run = run_bounded(config(addr, 4, 40)).await;
    let mid = run.samples[run.samples.len() / 2].start_us;
    let windows = [(mid, mid + 1), (mid + 2, run.elapsed_us + 1)];
    let report = Report::new(&run.samples, &windows, None);
    assert_eq!(report.overall.requests, 160);
    assert_eq!(
        report.steady.requests + report.switch.requests,
        report.overall.requests
    );
    assert!(report.switch.requests > 0 && report.steady.requests > 0);
    let per_window: u64 = report.per_window.iter().map(|p| p.requests).sum();
    assert_eq!(per_window, report.switch.requests);
    assert_eq!(report.lost_writes, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_signal_ends_an_unbounded_run() {
    let (addr, node) = start_node(Fault::None).await;
    let handle = start(LoadConfig {
        clients: 4,
        object_size: 100,
        ..LoadConfig::new(addr)
    })
    .unwrap();
    let stop = handle.stop_signal();
    let t0 = handle.now_us();
    // A request has reached the node (a client's first is a PUT, and a client finishes the
    // request in flight before it looks at the stop signal): the run has a sample to show.
    bounded(async {
        while node.puts.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(handle.now_us() > t0);
    stop.stop();
    let run = bounded(handle.join()).await;
    assert!(!run.samples.is_empty());
    assert!(run.samples.iter().all(|s| s.outcome.is_ok()));
    assert_eq!(bounded(run.verify_writes()).await.lost(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_but_dropped_writes_are_lost() {
    let (addr, node) = start_node(Fault::DropEveryThirdWrite).await;
    let run = run_bounded(config(addr, 4, 30)).await;
    let verification = bounded(run.verify_writes()).await;
    let mut missing = verification.missing.clone();
    let mut dropped = node.damaged.lock().unwrap().clone();
    missing.sort();
    dropped.sort();
    assert!(!dropped.is_empty());
    assert_eq!(missing, dropped);
    assert!(verification.different.is_empty());
    assert_eq!(verification.lost(), dropped.len() as u64);
    let report = Report::new(&run.samples, &[], Some(&verification));
    assert_eq!(report.lost_writes, Some(dropped.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_writes_are_lost() {
    let (addr, node) = start_node(Fault::AlterEveryThirdWrite).await;
    let run = run_bounded(config(addr, 4, 30)).await;
    let verification = bounded(run.verify_writes()).await;
    let mut different = verification.different.clone();
    let mut altered = node.damaged.lock().unwrap().clone();
    different.sort();
    altered.sort();
    assert!(!altered.is_empty());
    assert_eq!(different, altered);
    assert!(verification.missing.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_http_5xx() {
    let (addr, _node) = start_node(Fault::Always500).await;
    let run = run_bounded(config(addr, 4, 10)).await;
    assert_eq!(run.samples.len(), 40);
    assert!(run
        .samples
        .iter()
        .all(|s| s.outcome == Outcome::Http5xx(500)));
    assert!(run.writes.is_empty());
    let report = Report::new(&run.samples, &[], None);
    assert_eq!(report.overall.failures_of("http_500"), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_refused() {
    let (addr, _bound) = common::closed_port().await;
    let run = run_bounded(config(addr, 4, 5)).await;
    assert_eq!(run.samples.len(), 20);
    assert!(
        run.samples.iter().all(|s| s.outcome == Outcome::Refused),
        "{:?}",
        outcomes(&run)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_are_resets() {
    let addr = common::closing_server().await;
    let run = run_bounded(config(addr, 4, 5)).await;
    assert_eq!(run.samples.len(), 20);
    assert!(
        run.samples.iter().all(|s| s.outcome == Outcome::Reset),
        "{:?}",
        outcomes(&run)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_time_out() {
    let addr = common::silent_server().await;
    let run = run_bounded(LoadConfig {
        request_timeout: Duration::from_millis(200),
        ..config(addr, 2, 2)
    })
    .await;
    assert_eq!(run.samples.len(), 4);
    assert!(run.samples.iter().all(|s| s.outcome == Outcome::Timeout));
}

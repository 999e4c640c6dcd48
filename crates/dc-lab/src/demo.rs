//! `dcupgrade-demo`: a whole upgrade on the software TEE platform, measured from outside.
//!
//! Starts the platform, makes a dev committee, builds dcnode v1 and v2 and the agent, starts
//! the agent (which starts v1), stores objects, publishes v2 to the local feed, lets the agent
//! upgrade (make-before-break unless `--switch break-before-make`) while load clients keep
//! writing and reading (`dc-loadgen`: keep-alive and new-connection clients, nothing retried),
//! reads every object and every acknowledged write back from v2, and prints the timeline, the
//! failed requests and the downtime (last request served by v1 → first served by v2).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dc_lab::{AgentOptions, Bins, Lab};
use dc_loadgen::{LoadConfig, Outcome, Report};
use dcupgrade::agent::now_ms;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Working directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// How many objects v1 stores.
    #[arg(long, default_value_t = 20)]
    objects: usize,
    /// Load clients during the upgrade: half keep one connection alive, the others open a
    /// new connection per request; 20 % of requests are PUTs of new objects.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// How the new node takes over: `make-before-break` (the new node gets the keys while
    /// the old one serves; connections wait in the listening socket during the switch) or
    /// `break-before-make` (the old node stops first).
    #[arg(long, default_value = "make-before-break", value_parser = ["make-before-break", "break-before-make"])]
    switch: String,
    /// Keep the working directory.
    #[arg(long)]
    keep: bool,
    /// Write the agent's Prometheus metrics, scraped after the upgrade, to this file.
    #[arg(long, value_name = "FILE")]
    metrics_out: Option<std::path::PathBuf>,
}

fn step(t0: Instant, msg: &str) {
    println!("[{:>7.3}s] {msg}", t0.elapsed().as_secs_f64());
}

pub async fn run(a: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("dcupgrade-demo-")
        .tempdir()?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let bins = Bins::locate(&std::env::current_exe()?).map_err(|e| anyhow!(e))?;
    println!(
        "dcupgrade demo — software TEE platform (INSECURE, development only), local release feed"
    );
    println!("working directory: {}", dir.display());

    let mut lab = Lab::start(&dir, bins).map_err(|e| anyhow!(e))?;
    step(t0, "software TEE platform started");
    let v1 = lab
        .build_node("1.0.0", 1, "", &[])
        .map_err(|e| anyhow!(e))?;
    let v2 = lab
        .build_node("2.0.0", 2, "", &[])
        .map_err(|e| anyhow!(e))?;
    step(
        t0,
        &format!(
            "dev committee key made; bundles built: v1 {} / v2 {}",
            v1.mr_enclave, v2.mr_enclave
        ),
    );
    lab.publish(&v1.record).map_err(|e| anyhow!(e))?;
    lab.start_agent_opts(
        &v1,
        &AgentOptions {
            retry_backoff: Duration::from_secs(60),
            switch: a.switch.clone(),
            ..AgentOptions::default()
        },
    )
    .map_err(|e| anyhow!(e))?;
    lab.wait_serving("1.0.0", Duration::from_secs(300))
        .await
        .map_err(|e| anyhow!(e))?;
    step(
        t0,
        &format!(
            "agent running on {} ({}); dcnode v1 serving on {}",
            lab.agent_url(),
            a.switch,
            lab.node_url()
        ),
    );

    let mut objects = Vec::new();
    for i in 0..a.objects {
        let mut data = vec![0u8; 256 + i * 37];
        getrandom::getrandom(&mut data).map_err(|e| anyhow!("no randomness: {e}"))?;
        let name = format!("object-{i:03}");
        lab.put(&name, &data).await.map_err(|e| anyhow!(e))?;
        objects.push((name, data));
    }
    step(
        t0,
        &format!(
            "stored {} objects through v1 (encrypted at rest with the node's keys)",
            objects.len()
        ),
    );

    // Load clients all the time, recording which version served each request.
    let target = format!("127.0.0.1:{}", lab.node_port).parse()?;
    let config = LoadConfig {
        clients: a.clients.max(1),
        ..LoadConfig::new(target)
    };
    let keep_alive = config.keep_alive_clients();
    let load = dc_loadgen::start(config).map_err(|e| anyhow!(e))?;
    step(
        t0,
        &format!(
            "{} load clients started ({keep_alive} keep-alive, the others a new connection per request; GETs and PUTs)",
            a.clients.max(1)
        ),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    let published_at = now_ms();
    lab.publish(&v2.record).map_err(|e| anyhow!(e))?;
    step(t0, "published v2 (committee-signed) to the local feed");
    let done = lab.wait_for(Duration::from_secs(300), "the upgrade", |s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.upgrades_completed >= 1 || !st.failed.is_empty())
    });
    let status = done.await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = load.stop_and_join().await;
    let status = status.map_err(|e| anyhow!(e))?;
    let st = status.state.clone().context("no agent state")?;
    if st.upgrades_completed < 1 {
        bail!(
            "the upgrade failed: {:?}; agent log: {}",
            st.failed,
            dir.join("agent.log").display()
        );
    }
    lab.wait_serving("2.0.0", Duration::from_secs(120))
        .await
        .map_err(|e| anyhow!(e))?;
    step(t0, "the agent upgraded the node to v2");

    for (name, data) in &objects {
        let (version, got) = lab.get(name).await.map_err(|e| anyhow!(e))?;
        if version != "2.0.0" || &got != data {
            bail!(
                "{name}: served by {version}, {} bytes, content {}",
                got.len(),
                if &got == data { "equal" } else { "DIFFERENT" }
            );
        }
    }
    step(
        t0,
        &format!(
            "all {} objects read back from v2, byte for byte",
            objects.len()
        ),
    );
    let verification = run.verify_writes().await;
    step(
        t0,
        &format!(
            "{} writes acknowledged during the upgrade read back: {} lost, {} unreadable",
            verification.checked,
            verification.lost(),
            verification.unreadable.len()
        ),
    );

    println!("\nupgrade timeline (agent journal):");
    let first = st.timeline.first().map(|e| e.at_ms).unwrap_or(published_at);
    let mut prev = first;
    for e in &st.timeline {
        println!(
            "  +{:>6} ms  (+{:>5} ms)  {:<16} {}",
            e.at_ms - first,
            e.at_ms - prev,
            e.phase,
            e.note
        );
        prev = e.at_ms;
    }
    // Completion times (µs since the load started) of the requests each version served.
    let served_by = |v: &str| -> Vec<u64> {
        run.samples
            .iter()
            .filter(|s| matches!(&s.outcome, Outcome::Ok { version } if version == v))
            .map(|s| s.start_us + s.latency_us)
            .collect()
    };
    let (Some(last_v1), Some(first_v2)) = (
        served_by("1.0.0").into_iter().max(),
        served_by("2.0.0").into_iter().min(),
    ) else {
        bail!("the load clients did not see both versions serve");
    };
    let report = Report::new(&run.samples, &[], Some(&verification));
    let o = &report.overall;
    let downtime_us = first_v2.saturating_sub(last_v1);
    let downtime = downtime_us / 1000;
    let detection = first.saturating_sub(published_at);
    let total = st.timeline.last().map(|e| e.at_ms).unwrap_or(first) - first;
    println!("\nrelease detection: {detection} ms after publication (feed polled every 100 ms)");
    println!("upgrade (candidate → committed): {total} ms");
    println!(
        "downtime (last request served by v1 → first served by v2, at the client): {:.1} ms",
        downtime_us as f64 / 1000.0
    );
    let classes: Vec<String> = o.failures.iter().map(|(c, n)| format!("{c} {n}")).collect();
    println!(
        "requests during the run ({}): {} ok, {} failed{}",
        a.switch,
        o.ok,
        o.failed,
        if classes.is_empty() {
            String::new()
        } else {
            format!(" ({})", classes.join(", "))
        }
    );
    println!(
        "RESULT downtime_ms={downtime} upgrade_ms={total} detection_ms={detection} failed_requests={} requests={} lost_writes={}",
        o.failed,
        o.requests,
        verification.lost()
    );
    if let Some(path) = &a.metrics_out {
        // Once the commit is counted (the agent publishes its status just before).
        let scrape = lab
            .wait_metrics(&lab.agent_url(), Duration::from_secs(60), |m| {
                m.contains("dcupgrade_upgrades_total{outcome=\"committed\"")
            })
            .await
            .map_err(|e| anyhow!(e))?;
        std::fs::write(path, scrape)
            .map_err(|e| anyhow!("writing the metrics to {}: {e}", path.display()))?;
        println!(
            "agent metrics (Prometheus text format) written to {}",
            path.display()
        );
    }
    drop(lab);
    if a.keep && a.dir.is_none() {
        println!("kept {}", tmp.keep().display());
    }
    step(t0, "done; all processes stopped");
    Ok(())
}

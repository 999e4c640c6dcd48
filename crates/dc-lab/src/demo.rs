//! `dcupgrade-demo`: a whole upgrade on the software TEE platform, measured from outside.
//!
//! Starts the platform, makes a dev committee, builds dcnode v1 and v2 and the agent, starts
//! the agent (which starts v1), stores objects, publishes v2 to the local feed, lets the agent
//! upgrade while a client keeps reading, reads every object back from v2, and prints the
//! timeline and the downtime (last read served by v1 → first served by v2).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use dc_lab::{Bins, Lab};
use dcupgrade::agent::now_ms;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Working directory (default: a temporary one, removed afterwards).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// How many objects v1 stores.
    #[arg(long, default_value_t = 20)]
    objects: usize,
    /// Keep the working directory.
    #[arg(long)]
    keep: bool,
}

/// One read by the demo's client: when it finished, and which version served it (if any).
type Read = (u64, Option<String>);

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
    lab.start_agent(&v1, Duration::from_secs(60))
        .map_err(|e| anyhow!(e))?;
    lab.wait_serving("1.0.0", Duration::from_secs(30))
        .await
        .map_err(|e| anyhow!(e))?;
    step(
        t0,
        &format!(
            "agent running on {}; dcnode v1 serving on {}",
            lab.agent_url(),
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

    // A client reading all the time, recording which version served each read.
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<Read>>> = Arc::default();
    let reader = {
        let (stop, log, names) = (
            stop.clone(),
            log.clone(),
            objects.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        );
        let url = lab.node_url();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_millis(500))
                .build()
                .expect("client");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let name = &names[i % names.len()];
                i += 1;
                let r = http.get(format!("{url}/v1/objects/{name}")).send().await;
                let served = match r {
                    Ok(r) if r.status().is_success() => r
                        .headers()
                        .get("x-dcnode-version")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from),
                    _ => None,
                };
                let ok = served.is_some();
                log.lock().expect("log").push((now_ms(), served));
                if !ok {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let published_at = now_ms();
    lab.publish(&v2.record).map_err(|e| anyhow!(e))?;
    step(t0, "published v2 (committee-signed) to the local feed");
    let done = lab.wait_for(Duration::from_secs(90), "the upgrade", |s| {
        s.state
            .as_ref()
            .is_some_and(|st| st.upgrades_completed >= 1 || !st.failed.is_empty())
    });
    let status = done.await.map_err(|e| anyhow!(e))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await?;
    let st = status.state.clone().context("no agent state")?;
    if st.upgrades_completed < 1 {
        bail!(
            "the upgrade failed: {:?}; agent log: {}",
            st.failed,
            dir.join("agent.log").display()
        );
    }
    lab.wait_serving("2.0.0", Duration::from_secs(10))
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
    let log = log.lock().expect("log");
    let last_v1 = log
        .iter()
        .filter(|(_, v)| v.as_deref() == Some("1.0.0"))
        .map(|(t, _)| *t)
        .max();
    let first_v2 = log
        .iter()
        .filter(|(_, v)| v.as_deref() == Some("2.0.0"))
        .map(|(t, _)| *t)
        .min();
    let failed = log.iter().filter(|(_, v)| v.is_none()).count();
    let (Some(last_v1), Some(first_v2)) = (last_v1, first_v2) else {
        bail!("the reader did not see both versions serve");
    };
    let downtime = first_v2.saturating_sub(last_v1);
    let detection = first.saturating_sub(published_at);
    let total = st.timeline.last().map(|e| e.at_ms).unwrap_or(first) - first;
    println!("\nrelease detection: {detection} ms after publication (feed polled every 100 ms)");
    println!("upgrade (candidate → committed): {total} ms");
    println!("downtime (last read served by v1 → first served by v2): {downtime} ms");
    println!(
        "reads during the upgrade: {} ok, {failed} failed while no node served",
        log.len() - failed
    );
    println!("RESULT downtime_ms={downtime} upgrade_ms={total} detection_ms={detection} failed_reads={failed}");
    drop(log);
    drop(lab);
    if a.keep && a.dir.is_none() {
        println!("kept {}", tmp.keep().display());
    }
    step(t0, "done; all processes stopped");
    Ok(())
}

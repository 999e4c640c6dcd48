//! The agent at rest, metrics on: resident memory and CPU of the agent enclave process while
//! it watches the feed at its default poll interval (500 ms) with a node serving, scraped
//! every 15 s the way Prometheus would.
//!
//! `cargo bench -p dc-lab --bench agent_idle` (release binaries: `cargo build --release
//! --workspace --bins` first). `AGENT_IDLE_SECS` sets the measured period (default 120).

use std::time::{Duration, Instant};

use dc_lab::{AgentOptions, Bins, Lab};

/// Clock ticks of CPU (user + system) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("agent /proc stat");
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A `/proc/PID/status` value in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("agent /proc status")
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() {
    let secs: u64 = std::env::var("AGENT_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let bins = Bins::locate(&std::env::current_exe().unwrap()).unwrap();
        let mut lab = Lab::start(dir.path(), bins).unwrap();
        let v1 = lab.build_node("1.0.0", 1, "", &[]).unwrap();
        lab.publish(&v1.record).unwrap();
        lab.start_agent_opts(
            &v1,
            &AgentOptions {
                poll_ms: 500,
                ..AgentOptions::default()
            },
        )
        .unwrap();
        lab.wait_serving("1.0.0", Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.agent_log()));
        let pid = lab.agent_pid().expect("the agent process");
        // Settle, and the first scrape (its allocations belong to the steady state).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let first = lab
            .metrics(&lab.agent_url())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.agent_log()));
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let (t0, c0) = (Instant::now(), cpu_ticks(pid));
        let mut max_rss = 0;
        let mut next_scrape = Instant::now() + Duration::from_secs(15);
        while t0.elapsed() < Duration::from_secs(secs) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            max_rss = max_rss.max(status_kib(pid, "VmRSS:"));
            if Instant::now() >= next_scrape {
                lab.metrics(&lab.agent_url())
                    .await
                    .unwrap_or_else(|e| panic!("{e}\n{}", lab.agent_log()));
                next_scrape += Duration::from_secs(15);
            }
        }
        let cpu_s = (cpu_ticks(pid) - c0) as f64 / tick;
        let wall = t0.elapsed().as_secs_f64();
        let rss = status_kib(pid, "VmRSS:");
        let hwm = status_kib(pid, "VmHWM:");
        println!(
            "agent idle, metrics on (a {} byte scrape every 15 s), {wall:.0} s:",
            first.len()
        );
        println!(
            "  RSS {:.1} MiB now, {:.1} MiB max while idle, {:.1} MiB peak since start",
            rss as f64 / 1024.0,
            max_rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        println!(
            "  CPU {cpu_s:.2} s in {wall:.0} s = {:.3} % of one core",
            100.0 * cpu_s / wall
        );
        println!(
            "RESULT rss_kib={rss} max_idle_rss_kib={max_rss} peak_rss_kib={hwm} cpu_percent={:.3}",
            100.0 * cpu_s / wall
        );
        drop(lab);
    });
}

//! Load through upgrades, both switch modes in the same run (issue 12, item 5).
//!
//! For make-before-break and then break-before-make, each in its own lab (temporary
//! directory, ports, platform, agent): node v1 serving, `dc-loadgen` clients running against
//! the node's data port (default 32: half keep-alive, half a new connection per request; 20 %
//! PUTs of 4 KiB, the rest GETs of objects already written; nothing retried), then 20
//! upgrades v1 → v2 → … → v21 in a row, then every acknowledged PUT read back.
//!
//! The switch window of an upgrade runs from 5 ms before the agent's journal marks the switch
//! (`switching`, or `old_stopped` for break-before-make; the mark is taken before the old node
//! is touched, with millisecond resolution) until the lab saw the new version serving (polled
//! every 50 ms, so the window is wider than the switch, never narrower). A request counts in
//! the window its start falls in; everything else is steady state.
//!
//! ```sh
//! cargo build --release --workspace --bins     # the binaries the lab launches
//! cargo bench -p dc-lab --bench switch_load
//! ```
//!
//! Environment: `UPGRADES` (20), `CLIENTS` (32), `MODES`
//! (`make-before-break,break-before-make`), `GAP_MS` (steady state between upgrades, 300),
//! `KEEP` (keep the labs' directories and logs; kept anyway when make-before-break failed a
//! request or an upgrade failed), `DUMP_SAMPLES` (a directory: every request of each mode as
//! JSON), `SVG` (default `docs/switch-load.svg`; `none` for no chart), `JSON` (default
//! `target/switch-load.json`). The labs live
//! in the system's temporary directory (`TMPDIR`): the node's data directory too, so every
//! PUT's fsync goes to that file system.
//! Exits 2 if make-before-break failed a request, lost a write, did not complete an upgrade
//! or left other than one node running; a switch-window request over the 50 ms target is
//! reported, not enforced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dc_lab::{AgentOptions, Bins, Lab, NodeRelease};
use dc_loadgen::{around, svg_chart, LoadConfig, Outcome, Report, Run, Sample, Verification};
use dcupgrade::journal::Phase;

/// Target of item 5: worst request latency inside a switch window.
const WINDOW_MAX_TARGET_US: u64 = 50_000;
/// The window opens this long before the journal's switch mark (whose resolution is 1 ms).
const WINDOW_LEAD_US: u64 = 5_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: not a valid value")),
        Err(_) => default,
    }
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// Maps the agent's wall-clock journal times (ms since the epoch) onto the load run's clock
/// (µs since the run started), anchored just before each upgrade.
#[derive(Clone, Copy)]
struct Clock {
    run_us: u64,
    wall_us: u64,
}

impl Clock {
    fn now(h: &dc_loadgen::LoadHandle) -> Clock {
        let a = h.now_us();
        let wall_us = wall_us();
        let b = h.now_us();
        Clock {
            run_us: (a + b) / 2,
            wall_us,
        }
    }
    fn run_us(&self, at_ms: u64) -> u64 {
        (at_ms * 1000 + self.run_us).saturating_sub(self.wall_us)
    }
}

/// One upgrade as the lab saw it, times on the load run's clock (µs).
struct Upgrade {
    from: String,
    to: String,
    completed: bool,
    /// Why it did not complete (the agent's record of the failure).
    failure: Option<String>,
    published_us: u64,
    /// The journal's timeline of this upgrade: phase and time.
    marks: Vec<(String, u64)>,
    /// The lab saw the outcome (serving the new version, or the failure recorded).
    seen_us: u64,
    window: (u64, u64),
}

impl Upgrade {
    fn mark(&self, phase: &str) -> Option<u64> {
        self.marks.iter().find(|(p, _)| p == phase).map(|(_, t)| *t)
    }
    fn switch_mark(&self) -> Option<u64> {
        self.mark("switching").or_else(|| self.mark("old_stopped"))
    }
}

struct ModeResult {
    mode: String,
    run: Run,
    verification: Verification,
    /// Windows: the switch windows.
    report: Report,
    /// Windows: each whole upgrade (candidate − 5 ms → seen serving).
    whole: Report,
    upgrades: Vec<Upgrade>,
    took: Duration,
    final_version: String,
    nodes_at_end: usize,
    /// The lab's directory, if kept (see `KEEP`).
    kept: Option<PathBuf>,
}

fn main() {
    let upgrades: u32 = env_or("UPGRADES", 20);
    let clients: usize = env_or("CLIENTS", 32);
    let gap = Duration::from_millis(env_or("GAP_MS", 300));
    let modes: Vec<String> = env_or("MODES", "make-before-break,break-before-make".to_string())
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    let exe = std::env::current_exe().expect("current exe");
    let bins = match Bins::locate(&exe) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "switch_load: the release binaries the lab launches are missing.\n  {e}\n  \
                 Build them first: cargo build --release --workspace --bins"
            );
            std::process::exit(1);
        }
    };
    check_binaries(&bins);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let results: Vec<ModeResult> = modes
        .iter()
        .map(|mode| {
            rt.block_on(run_mode(mode, &bins, upgrades, clients, gap))
                .unwrap_or_else(|e| panic!("{mode}: {e}"))
        })
        .collect();

    println!();
    for r in &results {
        print_mode(r);
    }
    print_markdown(&results, upgrades, clients);

    let json_path = std::env::var("JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            bins.agent
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."))
                .join("switch-load.json")
        });
    let json = serde_json::json!({
        "upgrades": upgrades,
        "clients": clients,
        "modes": results.iter().map(|r| serde_json::json!({
            "mode": r.mode,
            "report": r.report,
            "whole_upgrades": r.whole,
            "upgrades": r.upgrades.iter().map(|u| serde_json::json!({
                "from": u.from, "to": u.to, "completed": u.completed, "failure": u.failure,
                "published_us": u.published_us, "seen_us": u.seen_us, "window": u.window,
                "marks": u.marks,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    match std::fs::write(&json_path, serde_json::to_vec_pretty(&json).expect("json")) {
        Ok(()) => println!("report (JSON): {}", json_path.display()),
        Err(e) => eprintln!("writing {}: {e}", json_path.display()),
    }

    let svg = std::env::var("SVG")
        .unwrap_or_else(|_| format!("{}/../../docs/switch-load.svg", env!("CARGO_MANIFEST_DIR")));
    if svg != "none" {
        draw_chart(&results, Path::new(&svg));
    }

    // Correctness misses fail the run; the latency target is reported, not enforced (timings
    // vary with the machine).
    let mut failed_run = false;
    for r in results.iter().filter(|r| r.mode == "make-before-break") {
        let (wrong, slow) = missed_targets(r);
        if !wrong.is_empty() || !slow.is_empty() {
            println!("\nmake-before-break missed its targets:");
        }
        for m in wrong.iter().chain(&slow) {
            println!("  - {m}");
        }
        failed_run |= !wrong.is_empty();
    }
    if failed_run {
        std::process::exit(2);
    }
}

/// Says which binaries run, and warns loudly if a source file a binary was built from (its
/// `.d` dep-info file, as cargo writes it) changed after the build.
fn check_binaries(bins: &Bins) {
    let dir = bins.agent.parent().unwrap_or(Path::new("?"));
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    println!("binaries: {} ({profile} profile)", dir.display());
    if profile != "release" {
        println!("WARNING: not release binaries; the numbers are not comparable");
    }
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    for b in [&bins.sim, &bins.node, &bins.agent] {
        let Some(built) = modified(b) else { continue };
        let deps = std::fs::read_to_string(b.with_extension("d")).unwrap_or_default();
        let deps = deps
            .split_once(": ")
            .map_or("", |(_, d)| d.lines().next().unwrap_or(""));
        let newer = deps
            .replace("\\ ", "\0")
            .split_whitespace()
            .map(|d| PathBuf::from(d.replace('\0', " ")))
            .find(|d| modified(d).is_some_and(|m| m > built));
        if let Some(d) = newer {
            println!(
                "WARNING: {} is older than its source {}; rebuild: cargo build --release --workspace --bins",
                b.display(),
                d.display()
            );
        }
    }
}

async fn run_mode(
    mode: &str,
    bins: &Bins,
    upgrades: u32,
    clients: usize,
    gap: Duration,
) -> Result<ModeResult, String> {
    let t0 = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("switch-load-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let mut lab = Lab::start(tmp.path(), bins.clone())?;
    let releases: Vec<NodeRelease> = (1..=upgrades + 1)
        .map(|i| lab.build_node(&format!("{i}.0.0"), i as u16, "", &[]))
        .collect::<Result<_, _>>()?;
    println!(
        "[{mode}] lab in {}; {} releases built in {:.1} s",
        tmp.path().display(),
        releases.len(),
        t0.elapsed().as_secs_f64()
    );
    lab.publish(&releases[0].record)?;
    // A failed release is recorded with an hour's backoff and never retried: the loop below
    // sees the failure, reports it and goes on with the next (higher) release.
    lab.start_agent_opts(
        &releases[0],
        &AgentOptions {
            retry_backoff: Duration::from_secs(3600),
            switch: mode.to_string(),
            ..AgentOptions::default()
        },
    )?;
    lab.wait_serving(&releases[0].version, Duration::from_secs(60))
        .await?;

    let target = format!("127.0.0.1:{}", lab.node_port)
        .parse()
        .map_err(|e| format!("{e}"))?;
    let h = dc_loadgen::start(LoadConfig {
        clients,
        ..LoadConfig::new(target)
    })?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut done = Vec::new();
    for pair in releases.windows(2) {
        let (from, to) = (&pair[0], &pair[1]);
        let clock = Clock::now(&h);
        let published_us = h.now_us();
        lab.publish(&to.record)?;
        let mr = to.mr_enclave.to_string();
        let v = to.version.clone();
        let status = lab
            .wait_for(Duration::from_secs(60), &format!("upgrade to {v}"), |s| {
                s.state.as_ref().is_some_and(|st| {
                    st.phase == Phase::Idle
                        && ((st.current.version == v && s.node_running)
                            || st.failed.contains_key(&mr))
                })
            })
            .await?;
        let seen_us = h.now_us();
        let st = status.state.expect("state");
        let completed = st.current.version == to.version;
        let marks: Vec<(String, u64)> = st
            .timeline
            .iter()
            .map(|e| (e.phase.clone(), clock.run_us(e.at_ms)))
            .collect();
        let mut u = Upgrade {
            from: from.version.clone(),
            to: to.version.clone(),
            completed,
            failure: st.failed.get(&mr).map(|f| f.reason.clone()),
            published_us,
            marks,
            seen_us,
            window: (0, 0),
        };
        // Without a switch mark (abandoned before it), the whole upgrade is the window.
        let start = u
            .switch_mark()
            .or_else(|| u.mark("candidate"))
            .unwrap_or(published_us);
        u.window = (start.saturating_sub(WINDOW_LEAD_US), seen_us);
        println!(
            "[{mode}] {} → {}: {} (switch mark → seen serving {:.1} ms)",
            u.from,
            u.to,
            if completed {
                "completed".to_string()
            } else {
                format!("FAILED: {}", u.failure.clone().unwrap_or_default())
            },
            (u.window.1 - u.window.0) as f64 / 1000.0 - WINDOW_LEAD_US as f64 / 1000.0
        );
        done.push(u);
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let run = h.stop_and_join().await;
    let verification = run.verify_writes().await;
    let status = lab.status().await?;
    let final_version = status.state.map(|s| s.current.version).unwrap_or_default();
    let nodes_at_end = lab.running_nodes();
    let windows: Vec<(u64, u64)> = done.iter().map(|u| u.window).collect();
    let whole_windows: Vec<(u64, u64)> = done
        .iter()
        .map(|u| {
            let a = u.mark("candidate").unwrap_or(u.published_us);
            (a.saturating_sub(WINDOW_LEAD_US), u.seen_us)
        })
        .collect();
    if let Ok(dir) = std::env::var("DUMP_SAMPLES") {
        let path = Path::new(&dir).join(format!("{mode}-samples.json"));
        let _ = std::fs::write(&path, serde_json::to_vec(&run.samples).expect("json"));
    }
    let report = Report::new(&run.samples, &windows, Some(&verification));
    let whole = Report::new(&run.samples, &whole_windows, Some(&verification));
    drop(lab);
    // Keep the lab directory (logs) when something failed, for the investigation.
    let keep = report.overall.failed > 0 && mode == "make-before-break"
        || done.iter().any(|u| !u.completed)
        || std::env::var_os("KEEP").is_some();
    let kept = keep.then(|| tmp.keep());
    Ok(ModeResult {
        mode: mode.to_string(),
        run,
        verification,
        report,
        whole,
        upgrades: done,
        took: t0.elapsed(),
        final_version,
        nodes_at_end,
        kept,
    })
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

fn signed_ms(a: u64, b: u64) -> String {
    format!("{:+.1}", (a as f64 - b as f64) / 1000.0)
}

fn print_mode(r: &ModeResult) {
    let secs = r.run.elapsed_us as f64 / 1e6;
    println!(
        "== {} == {} upgrades ({} completed), {} requests in {secs:.1} s ({:.0}/s); mode took {:.1} s",
        r.mode,
        r.upgrades.len(),
        r.upgrades.iter().filter(|u| u.completed).count(),
        r.report.overall.requests,
        r.report.overall.requests as f64 / secs,
        r.took.as_secs_f64()
    );
    print!("{}", r.report);
    println!(
        "final version {}, node enclaves running at the end: {}",
        r.final_version, r.nodes_at_end
    );
    let w = &r.whole.switch;
    println!(
        "whole upgrades (candidate → serving, {} windows): {} requests, {} failed, latency p50/p99/max {}",
        r.whole.windows.len(),
        w.requests,
        w.failed,
        w.latency
            .map(|l| format!("{}/{}/{} ms", ms(l.p50_us), ms(l.p99_us), ms(l.max_us)))
            .unwrap_or("-".into())
    );
    if !r.verification.unreadable.is_empty() {
        println!(
            "acknowledged writes that could not be read back: {:?}",
            &r.verification.unreadable[..r.verification.unreadable.len().min(5)]
        );
    }
    // Switch timing per upgrade: the journal marks relative to the switch mark.
    let mut durations: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for u in &r.upgrades {
        if let Some(s) = u.switch_mark() {
            for (p, t) in &u.marks {
                if t >= &s {
                    durations.entry(p.as_str()).or_default().push(t - s);
                }
            }
            durations
                .entry("(seen serving)")
                .or_default()
                .push(u.seen_us.saturating_sub(s));
        }
    }
    let mut line = Vec::new();
    for (p, mut v) in durations {
        v.sort_unstable();
        line.push(format!("{p} +{} ms", ms(v[v.len() / 2])));
    }
    println!("median after the switch mark: {}", line.join(", "));
    for (i, (u, p)) in r.upgrades.iter().zip(&r.report.per_window).enumerate() {
        let l = p.latency.unwrap_or_default();
        println!(
            "  #{:<2} {:>6} → {:<6} window {:>6} ms: {:>5} requests, {:>4} failed {:?}, max {:>6} ms{}",
            i + 1,
            u.from,
            u.to,
            ms(u.window.1 - u.window.0),
            p.requests,
            p.failed,
            p.failures,
            ms(l.max_us),
            if u.completed { "" } else { "  (upgrade FAILED)" }
        );
    }
    print_slowest(r);
    print_failures(r);
    if let Some(dir) = &r.kept {
        println!("lab kept: {} (agent.log, platform.log)", dir.display());
    }
    println!();
}

/// The slowest successful requests that started inside a switch window, placed against
/// their upgrade's journal marks; and the check that the windows start early enough: requests
/// that started before a window and were still running inside it.
fn print_slowest(r: &ModeResult) {
    let mut inside: Vec<(&Sample, &Upgrade)> = Vec::new();
    let (mut straddling, mut straddling_max) = (0usize, 0u64);
    for s in r.run.samples.iter().filter(|s| s.outcome.is_ok()) {
        for u in &r.upgrades {
            let (a, b) = u.window;
            if (a..b).contains(&s.start_us) {
                inside.push((s, u));
            } else if s.start_us < a && s.start_us + s.latency_us > a {
                straddling += 1;
                straddling_max = straddling_max.max(s.latency_us);
            }
        }
    }
    println!(
        "requests started before a window and still running inside it: {straddling}, the slowest {} ms (counted as steady state)",
        ms(straddling_max)
    );
    inside.sort_by_key(|(s, _)| std::cmp::Reverse(s.latency_us));
    for (s, u) in inside.iter().take(5) {
        let m = u.switch_mark().unwrap_or(u.window.0);
        let end = s.start_us + s.latency_us;
        let marks: Vec<String> = ["old_node_exited", "new_node_serving"]
            .iter()
            .filter_map(|p| u.mark(p).map(|t| format!("{p} {} ms", signed_ms(t, m))))
            .collect();
        println!(
            "  slowest in a window: {} ms, {:?} {}, {} → {}: started {} ms after the switch mark, ended {} ms after it ({})",
            ms(s.latency_us),
            s.op,
            if s.keep_alive { "keep-alive" } else { "new-connection" },
            u.from,
            u.to,
            signed_ms(s.start_us, m),
            signed_ms(end, m),
            marks.join(", ")
        );
    }
}

/// Every failed request of make-before-break (the first 60), and for break-before-make a
/// summary: where each failure lies relative to its upgrade's journal marks.
fn print_failures(r: &ModeResult) {
    let failed: Vec<&Sample> = r
        .run
        .samples
        .iter()
        .filter(|s| !s.outcome.is_ok())
        .collect();
    if failed.is_empty() {
        return;
    }
    let nearest = |s: &Sample| {
        r.upgrades
            .iter()
            .min_by_key(|u| {
                let m = u.switch_mark().unwrap_or(u.window.0);
                (s.start_us as i64 - m as i64).unsigned_abs()
            })
            .expect("upgrades")
    };
    let detail = r.mode == "make-before-break";
    let mut outside = 0;
    let mut rel: Vec<i64> = Vec::new();
    for (i, s) in failed.iter().enumerate() {
        let u = nearest(s);
        let inside = (u.window.0..u.window.1).contains(&s.start_us);
        outside += usize::from(!inside);
        let m = u.switch_mark().unwrap_or(u.window.0);
        rel.push((s.start_us as i64 - m as i64) / 1000);
        if detail && i < 60 {
            let marks: Vec<String> = ["old_node_exited", "new_node_serving", "healthy"]
                .iter()
                .filter_map(|p| {
                    u.mark(p)
                        .map(|t| format!("{p} {}", signed_ms(s.start_us, t)))
                })
                .collect();
            println!(
                "  failed: {} {:?} {} client {} ({}), started {} ms from the switch mark of {} → {} ({}), latency {} ms{}",
                s.outcome.class(),
                s.op,
                if s.keep_alive { "keep-alive" } else { "new-connection" },
                s.client,
                if inside { "in the window" } else { "OUTSIDE the window" },
                signed_ms(s.start_us, m),
                u.from,
                u.to,
                marks.join(", "),
                ms(s.latency_us),
                match &s.outcome {
                    Outcome::Other(d) => format!(": {d}"),
                    _ => String::new(),
                }
            );
        }
    }
    rel.sort_unstable();
    println!(
        "failures relative to their switch mark: first {} ms, median {} ms, last {} ms; {} outside every window",
        rel[0],
        rel[rel.len() / 2],
        rel[rel.len() - 1],
        outside
    );
}

fn lat(p: &dc_loadgen::Phase) -> String {
    p.latency
        .map(|l| format!("{} / {} / {}", ms(l.p50_us), ms(l.p99_us), ms(l.max_us)))
        .unwrap_or("-".into())
}

/// The table for BENCHMARKS.md.
fn print_markdown(results: &[ModeResult], upgrades: u32, clients: usize) {
    println!("BENCHMARKS.md table ({upgrades} upgrades, {clients} clients, per mode):\n");
    println!("| mode | upgrades completed | requests | failed (refused / reset / 5xx / timeout / other) | acknowledged PUTs read back: lost | steady state p50 / p99 / max ms | switch window p50 / p99 / max ms | requests in switch windows |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in results {
        let o = &r.report.overall;
        println!(
            "| {} | {} / {} | {} | **{}** ({} / {} / {} / {} / {}) | {} : **{}** | {} | **{}** | {} in {} ms |",
            r.mode,
            r.upgrades.iter().filter(|u| u.completed).count(),
            r.upgrades.len(),
            o.requests,
            o.failed,
            o.failures_of("refused"),
            o.failures_of("reset"),
            o.failures_of("http_5"),
            o.failures_of("timeout"),
            o.failures_of("other"),
            r.verification.checked,
            r.verification.lost(),
            lat(&r.report.steady),
            lat(&r.report.switch),
            r.report.switch.requests,
            ms(r.report.windows.iter().map(|(a, b)| b - a).sum()),
        );
    }
    println!();
}

/// What make-before-break promises: (no failed request, no lost write, every upgrade
/// completed, one node at the end; the worst switch-window latency under 50 ms).
fn missed_targets(r: &ModeResult) -> (Vec<String>, Vec<String>) {
    let mut m = Vec::new();
    if r.report.overall.failed > 0 {
        m.push(format!(
            "{} failed requests {:?}",
            r.report.overall.failed, r.report.overall.failures
        ));
    }
    if r.verification.lost() > 0 || !r.verification.unreadable.is_empty() {
        m.push(format!(
            "{} lost writes, {} unreadable",
            r.verification.lost(),
            r.verification.unreadable.len()
        ));
    }
    let incomplete = r.upgrades.iter().filter(|u| !u.completed).count();
    if incomplete > 0 {
        m.push(format!("{incomplete} upgrades did not complete"));
    }
    if r.nodes_at_end != 1 {
        m.push(format!(
            "{} node enclaves running at the end",
            r.nodes_at_end
        ));
    }
    let mut slow = Vec::new();
    if let Some(l) = r.report.switch.latency {
        if l.max_us >= WINDOW_MAX_TARGET_US {
            let over = r
                .report
                .per_window
                .iter()
                .filter(|p| p.latency.is_some_and(|l| l.max_us >= WINDOW_MAX_TARGET_US))
                .count();
            slow.push(format!(
                "worst switch-window latency {} ms (target < 50 ms; {over} of {} windows at or over it)",
                ms(l.max_us),
                r.report.windows.len()
            ));
        }
    }
    (m, slow)
}

/// One representative switch per mode (the completed upgrade with the median worst latency
/// in its window) on one chart: 150 ms before the window to 250 ms after it.
fn draw_chart(results: &[ModeResult], path: &Path) {
    let mut cut = Vec::new();
    for r in results {
        let mut idx: Vec<usize> = (0..r.upgrades.len())
            .filter(|&i| r.upgrades[i].completed)
            .collect();
        if idx.is_empty() {
            continue;
        }
        let key = |i: &usize| {
            let p = &r.report.per_window[*i];
            (p.failed, p.latency.map_or(0, |l| l.max_us))
        };
        idx.sort_by_key(key);
        let i = idx[idx.len() / 2];
        let u = &r.upgrades[i];
        let (samples, window) = around(&r.run.samples, u.window, 150_000, 250_000);
        println!(
            "chart: {} upgrade #{} ({} → {}), window {} ms",
            r.mode,
            i + 1,
            u.from,
            u.to,
            ms(u.window.1 - u.window.0)
        );
        cut.push((
            format!("{} ({} → {})", r.mode, u.from, u.to),
            samples,
            window,
        ));
    }
    let series: Vec<(&str, &[Sample])> = cut
        .iter()
        .map(|(l, s, _)| (l.as_str(), s.as_slice()))
        .collect();
    let windows: Vec<(u64, u64)> = cut.iter().map(|c| c.2).collect();
    match svg_chart(&series, &windows, path) {
        Ok(()) => println!("chart: {}", path.display()),
        Err(e) => eprintln!("chart {}: {e}", path.display()),
    }
}

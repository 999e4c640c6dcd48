//! `dcupgrade doctor`: the preflight an operator runs on the host before enabling upgrades,
//! with the same configuration as `run` (`--config FILE.toml`, `DCUPGRADE_*`, flags).
//!
//! Checks, in order (each prints `PASS|WARN|FAIL  name  detail` and, unless it passed, what
//! to do):
//!
//! - `config`: the effective configuration resolves.
//! - `platform` (software platform: program, state directory, the control socket answers) or
//!   `sgx_enclave`, `sgx_provision`, `gramine` (Gramine-SGX launchers).
//! - `agent_record`: the agent's bundle (`--agent-bundle`) verifies, and `agent_record` is an
//!   upgrader record signed by the committee of the agent's measured manifest for exactly that
//!   MRENCLAVE, not revoked.
//! - `node_record`: the installed node (the journal's current release, else `initial_bundle`
//!   and `initial_record`) verifies, and its committee-signed record names its MRENCLAVE.
//! - `feed`: the feed directory reads, and which records in it are refused.
//! - `chain` (per endpoint): reachable, not syncing, finalized head advancing.
//! - `state_dir`, `disk`: writable state, room for the largest allowed artifact.
//! - `port.listen`, `port.node_listen`, `port.node_upgrade` (and `port.broker`): free, or
//!   held by the process that should hold them.
//! - `clock`: plausible system time.
//!
//! Exit status 1 when any check fails. `--json` prints an array of
//! `{check, status, detail, advice}` instead. The journal is read without authenticating it
//! (only the agent enclave holds its key): the doctor reports, it never acts.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Result};
use dc_bundle::Bundle;
use dc_release::feed::LocalFeed;
use dc_release::{Committee, Role};
use dc_tee::Measurement;
use dcupgrade::agent::{now_ms, StatusView, PRODUCT};
use dcupgrade::preflight::{self, ChainTime, Check, PreflightError, Status};

use crate::config::{self, LauncherKind, RunConfig, Settings};

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// The agent's `run` configuration file (the same file `run --config` takes).
    /// `DCUPGRADE_<NAME>` environment variables override it; flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
    /// The agent's enclave bundle (the directory it is launched from): its measured manifest
    /// names the committee, and its measurement must be what `agent_record` is signed for.
    #[arg(long, env = "DCUPGRADE_AGENT_BUNDLE")]
    agent_bundle: Option<PathBuf>,
    /// Print a JSON array of {check, status, detail, advice} instead of lines.
    #[arg(long)]
    json: bool,
    /// How long to wait for a chain endpoint's first finalized block, the platform and the
    /// ports to answer (seconds).
    #[arg(long, default_value_t = 20)]
    timeout_secs: u64,
    /// How long to watch each chain endpoint's finalized head for progress (seconds).
    #[arg(long, default_value_t = 30)]
    finality_secs: u64,
    /// The largest artifact to make room for, in bytes [default: what the release sources
    /// allow: 2 GiB for a feed's signed records, 512 MiB for DCChain releases].
    #[arg(long)]
    artifact_bytes: Option<u64>,
    /// Test builds only: the clock check's "now", in seconds since 1970.
    #[cfg(debug_assertions)]
    #[arg(long, hide = true)]
    clock_secs: Option<u64>,
}

/// A spinner on stderr while a check runs, only where a person watches a terminal.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(on: bool) -> Self {
        Self(on.then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
                pb.set_style(style);
            }
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        }))
    }

    fn step(&self, msg: String) {
        if let Some(pb) = &self.0 {
            pb.set_message(msg);
        }
    }

    fn println(&self, text: &str) {
        match &self.0 {
            Some(pb) => pb.suspend(|| println!("{text}")),
            None => println!("{text}"),
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

struct Report {
    json: bool,
    checks: Vec<Check>,
    progress: Progress,
}

impl Report {
    fn add(&mut self, c: Check) {
        if !self.json {
            // Details quote files, other processes' command lines and peers' answers.
            let clean = crate::status_text::clean;
            let mut text = format!("{}  {:<18} {}", c.status.label(), c.check, clean(&c.detail));
            if let Some(a) = &c.advice {
                text.push_str(&format!("\n      → {}", clean(a)));
            }
            self.progress.println(&text);
        }
        self.checks.push(c);
    }

    fn finish(self) -> Result<()> {
        self.progress.finish();
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let (warn, fail) = (count(Status::Warn), count(Status::Fail));
        if self.json {
            println!("{}", serde_json::to_string_pretty(&self.checks)?);
        } else {
            println!(
                "\n{} passed, {warn} warning(s), {fail} failed",
                count(Status::Pass)
            );
        }
        if fail > 0 {
            bail!("{fail} check(s) failed");
        }
        Ok(())
    }
}

pub async fn run(a: DoctorArgs) -> Result<()> {
    let mut r = Report {
        json: a.json,
        checks: Vec::new(),
        progress: Progress::new(!a.json && std::io::stderr().is_terminal()),
    };
    let timeout = Duration::from_secs(a.timeout_secs.max(1));
    let env = |k: &str| std::env::var(k).ok();
    r.progress.step("configuration".into());
    let cfg = match config::effective(a.config.as_deref(), &env, a.settings.clone()) {
        Ok(c) => {
            r.add(Check::pass(
                "config",
                match &a.config {
                    Some(f) => format!("{} with the environment and flags", f.display()),
                    None => "from the environment and flags".into(),
                },
            ));
            c
        }
        Err(e) => {
            r.add(Check::fail(
                "config",
                format!("{e:#}"),
                "fix the setting named; `dcupgrade config check FILE` prints the effective configuration",
            ));
            return r.finish();
        }
    };
    let now_secs = now_ms() / 1000;

    r.progress.step("TEE platform".into());
    match cfg.launcher {
        LauncherKind::Sim => {
            let (bin, state) = (
                cfg.sim_bin.clone().unwrap_or_default(),
                cfg.platform_state.clone().unwrap_or_default(),
            );
            let c =
                tokio::task::spawn_blocking(move || preflight::sim_platform(&bin, &state, timeout))
                    .await?;
            r.add(c);
        }
        LauncherKind::Gramine | LauncherKind::Broker => {
            let bin = cfg.gramine_bin.clone();
            let cs = tokio::task::spawn_blocking(move || {
                preflight::sgx_platform(Path::new("/dev"), &bin, timeout)
            })
            .await?;
            for c in cs {
                r.add(c);
            }
        }
    }

    // The committee comes from the agent's measured manifest.
    r.progress.step("the agent's bundle and record".into());
    let agent = a.agent_bundle.as_deref().map(preflight::open_bundle);
    let committee = match &agent {
        Some(Ok(b)) => Some(Committee::from_trust_roots(&b.manifest.trust)),
        _ => None,
    };
    let scan = match (&cfg.feed, &committee) {
        (Some(feed), Some(Ok(c))) => Some(LocalFeed::new(feed).scan(c, PRODUCT, now_secs)),
        _ => None,
    };
    let revoked: Vec<Measurement> = match &scan {
        Some(Ok(s)) => s.revoked.iter().map(|(m, _)| *m).collect(),
        _ => Vec::new(),
    };
    r.add(agent_record(&cfg, &agent, &committee, &revoked, now_secs));
    let committee = match committee {
        Some(Ok(c)) => Some(c),
        _ => None,
    };

    r.progress
        .step("the installed node's bundle and record".into());
    r.add(node_record(
        &cfg,
        committee.as_ref(),
        agent.as_ref().and_then(|b| b.as_ref().ok()),
        &revoked,
        now_secs,
    ));

    if let Some(feed) = &cfg.feed {
        r.progress.step(format!("feed {}", feed.display()));
        r.add(feed_check(feed, scan));
    }

    let mut times: Vec<ChainTime> = Vec::new();
    if !cfg.chain.is_empty() {
        r.progress.step(format!(
            "chain: waiting for finalized blocks (up to {} s)",
            a.timeout_secs + a.finality_secs
        ));
        for (c, t) in chain_checks(&cfg, timeout, Duration::from_secs(a.finality_secs)).await {
            r.add(c);
            times.extend(t);
        }
    }
    // The clock is compared with a finalizing endpoint's block time if there is one.
    let chain_time = times.iter().find(|t| t.advancing).or(times.first());

    r.progress.step("disk".into());
    r.add(preflight::state_dir(&cfg.state));
    let (largest, why) = match a.artifact_bytes {
        Some(n) => (n, "--artifact-bytes".to_string()),
        None if cfg.feed.is_some() => (
            dc_release::record::MAX_ARTIFACT_BYTES,
            "the most a signed feed record may declare".to_string(),
        ),
        None => (
            dcupgrade::source::MAX_UNSIGNED_ARTIFACT,
            "the cap on DCChain downloads".to_string(),
        ),
    };
    r.add(match preflight::free_bytes(&cfg.state) {
        Ok(free) => preflight::disk(&cfg.state, free, largest, &why),
        Err(e) => Check::fail(
            "disk",
            e.to_string(),
            "check that `state` names a directory on a mounted file system",
        ),
    });

    r.progress.step("ports".into());
    // A process that accepts but does not answer is not the expected one: no long wait.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout.min(Duration::from_secs(5)))
        .build()?;
    let mut ports = vec![
        ("port.listen", cfg.listen, Expect::Agent),
        ("port.node_listen", cfg.node_listen, Expect::NodeData),
        ("port.node_upgrade", cfg.node_upgrade, Expect::NodeUpgrade),
    ];
    if cfg.launcher == LauncherKind::Broker {
        ports.push(("port.broker", cfg.broker, Expect::Broker));
    }
    for (name, addr, expect) in ports {
        r.add(port_check(name, addr, expect, &http).await);
    }

    r.progress.step("clock".into());
    #[cfg(debug_assertions)]
    let now = match a.clock_secs {
        Some(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        None => SystemTime::now(),
    };
    #[cfg(not(debug_assertions))]
    let now = SystemTime::now();
    let last_write = std::fs::metadata(cfg.state.join(dcupgrade::journal::JOURNAL_FILE))
        .and_then(|m| m.modified())
        .ok();
    r.add(preflight::clock(now, last_write, chain_time));
    r.finish()
}

fn short(m: &Measurement) -> String {
    let s = m.to_string();
    format!("{}…", &s[..s.len().min(16)])
}

fn record_advice(e: &PreflightError, what: &str) -> String {
    match e {
        PreflightError::Mismatch(_) => format!(
            "the record is not for this build: install the bundle the committee signed, or get the committee's record for this {what}'s MRENCLAVE"
        ),
        PreflightError::Record { source: dc_release::ReleaseError::Expired { .. }, .. } => {
            "the record has expired: get a current record from the committee (or check the clock)".into()
        }
        PreflightError::Record { .. } => format!(
            "the {what}'s record does not verify against the committee in the agent's measured manifest: get a correctly signed record (`dcrelease`)"
        ),
        PreflightError::Bundle { .. } => format!(
            "the {what}'s bundle does not verify (a changed or missing file): reinstall it from its artifact"
        ),
        PreflightError::Io { .. } => format!("check the path of the {what}'s record"),
    }
}

fn agent_record(
    cfg: &RunConfig,
    agent: &Option<Result<Bundle, PreflightError>>,
    committee: &Option<Result<Committee, dc_release::ReleaseError>>,
    revoked: &[Measurement],
    now_secs: u64,
) -> Check {
    const NAME: &str = "agent_record";
    let bundle = match agent {
        None => {
            return Check::fail(
                NAME,
                "not checked: the agent's bundle is not given",
                "give --agent-bundle DIR (or DCUPGRADE_AGENT_BUNDLE): the bundle the agent runs as; its manifest names the committee",
            )
        }
        Some(Err(e)) => {
            return Check::fail(
                NAME,
                format!("the agent's bundle: {e}"),
                "reinstall the agent's bundle: it must verify exactly as the platform measures it",
            )
        }
        Some(Ok(b)) => b,
    };
    let committee = match committee {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            return Check::fail(
                NAME,
                format!("the trust roots in {}: {e}", bundle.dir.display()),
                "the agent's manifest must name the committee keys and threshold ([trust])",
            )
        }
        None => {
            return Check::fail(
                NAME,
                "no committee",
                "the agent's manifest must name the committee keys and threshold ([trust])",
            )
        }
    };
    let Some(record) = &cfg.agent_record else {
        return Check::fail(
            NAME,
            format!(
                "no `agent_record` set for the agent {} ({})",
                bundle.manifest.version, bundle.mr_enclave
            ),
            "set `agent_record` (--agent-record) to the committee-signed upgrader record for this MRENCLAVE: nodes hand keys only to an agent that presents one",
        );
    };
    if revoked.contains(&bundle.mr_enclave) {
        return Check::fail(
            NAME,
            format!(
                "the committee revoked this agent's MRENCLAVE {}",
                bundle.mr_enclave
            ),
            "install the agent release the committee currently signs",
        );
    }
    match preflight::verify_record_for(bundle, committee, record, Role::Upgrader, now_secs) {
        Ok((_, v)) => Check::pass(
            NAME,
            format!(
                "{} {} MRENCLAVE {}: upgrader record signed by the committee ({} of {} keys needed)",
                bundle.manifest.name,
                v.record.version,
                short(&v.mr_enclave),
                committee.threshold(),
                committee.keys().count()
            ),
        ),
        Err(e) => {
            let advice = record_advice(&e, "agent");
            Check::fail(NAME, e.to_string(), advice)
        }
    }
}

fn node_record(
    cfg: &RunConfig,
    committee: Option<&Committee>,
    agent: Option<&Bundle>,
    revoked: &[Measurement],
    now_secs: u64,
) -> Check {
    const NAME: &str = "node_record";
    let Some(committee) = committee else {
        return Check::fail(
            NAME,
            "not checked: no committee (it comes from the agent's bundle, see agent_record)",
            "give a verifiable --agent-bundle",
        );
    };
    let journal_path = cfg.state.join(dcupgrade::journal::JOURNAL_FILE);
    let journal = dcupgrade::journal::UnauthenticatedJournal::new(&journal_path).load();
    let (bundle_dir, record, expected, origin) = match journal {
        Err(e) => {
            return Check::fail(
                NAME,
                format!("the journal: {e}"),
                "the agent will refuse this journal too: restore it from a backup, or see docs for recovery",
            )
        }
        Ok(Some(s)) => (
            s.current.bundle_dir,
            s.current.record,
            Some(s.current.mr_enclave),
            "the journal's installed release",
        ),
        Ok(None) => match (&cfg.initial_bundle, &cfg.initial_record) {
            (Some(b), Some(r)) => (b.clone(), Some(r.clone()), None, "initial_bundle"),
            _ => {
                return Check::fail(
                    NAME,
                    format!(
                        "no journal in {} and no installed node given",
                        cfg.state.display()
                    ),
                    "set `initial_bundle` and `initial_record` to the installed node's bundle and its committee-signed record",
                )
            }
        },
    };
    let bundle = match preflight::open_bundle(&bundle_dir) {
        Ok(b) => b,
        Err(e) => {
            let advice = record_advice(&e, "node");
            return Check::fail(NAME, e.to_string(), advice);
        }
    };
    if let Some(m) = &expected {
        if *m != bundle.mr_enclave.to_string() {
            return Check::fail(
                NAME,
                format!(
                    "the journal names MRENCLAVE {m}, its bundle {} measures {}",
                    bundle_dir.display(),
                    bundle.mr_enclave
                ),
                "the installed bundle was replaced: reinstall the release the journal names",
            );
        }
    }
    if revoked.contains(&bundle.mr_enclave) {
        return Check::fail(
            NAME,
            format!(
                "the committee revoked the installed node's MRENCLAVE {}",
                bundle.mr_enclave
            ),
            "publish (or wait for) a newer release: the agent upgrades away from a revoked one",
        );
    }
    let trust_note = match agent {
        Some(a)
            if a.manifest.trust.committee_keys != bundle.manifest.trust.committee_keys
                || a.manifest.trust.threshold != bundle.manifest.trust.threshold =>
        {
            Some("the node's manifest names another committee than the agent's")
        }
        _ => None,
    };
    let Some(record) = record else {
        return Check::warn(
            NAME,
            format!(
                "{} {} MRENCLAVE {} ({origin}) was installed from DCChain: no record file to check",
                bundle.manifest.name,
                bundle.manifest.version,
                short(&bundle.mr_enclave)
            ),
            "`dcupgrade check --chain URL --manifest AGENT_BUNDLE/enclave.toml` shows the EnclaveIds signature that authorized it",
        );
    };
    match preflight::verify_record_for(&bundle, committee, &record, Role::Node, now_secs) {
        Ok((_, v)) => match trust_note {
            Some(note) => Check::warn(
                NAME,
                format!("{} {}: {note}", bundle.manifest.name, v.record.version),
                "node and agent must trust the same committee, or handovers between them are refused",
            ),
            None => Check::pass(
                NAME,
                format!(
                    "{} {} MRENCLAVE {} ({origin}): committee-signed node record",
                    bundle.manifest.name,
                    v.record.version,
                    short(&v.mr_enclave)
                ),
            ),
        },
        Err(e) => {
            let advice = record_advice(&e, "node");
            Check::fail(NAME, e.to_string(), advice)
        }
    }
}

fn feed_check(
    feed: &Path,
    scan: Option<Result<dc_release::feed::FeedScan, dc_release::ReleaseError>>,
) -> Check {
    const NAME: &str = "feed";
    match scan {
        None => match std::fs::read_dir(feed) {
            Ok(_) => Check::warn(
                NAME,
                format!(
                    "{} reads; its records were not verified (no committee)",
                    feed.display()
                ),
                "give a verifiable --agent-bundle",
            ),
            Err(e) => Check::fail(
                NAME,
                format!("{}: {e}", feed.display()),
                "create the feed directory or fix `feed`",
            ),
        },
        Some(Err(e)) => Check::fail(
            NAME,
            e.to_string(),
            "create the feed directory (readable by the agent) or fix `feed`",
        ),
        Some(Ok(s)) => {
            let highest = s
                .valid
                .first()
                .map(|e| format!(", highest {}", e.record.version))
                .unwrap_or_default();
            let detail = format!(
                "{}: {} valid node release(s){highest}, {} revocation(s)",
                feed.display(),
                s.valid.len(),
                s.revoked.len()
            );
            if s.refused.is_empty() {
                Check::pass(NAME, detail)
            } else {
                let names: Vec<String> = s
                    .refused
                    .iter()
                    .take(3)
                    .map(|(p, why)| {
                        format!(
                            "{}: {why}",
                            p.file_name().unwrap_or_default().to_string_lossy()
                        )
                    })
                    .collect();
                Check::warn(
                    NAME,
                    format!(
                        "{detail}; {} refused ({})",
                        s.refused.len(),
                        names.join("; ")
                    ),
                    "the agent ignores refused files: remove them, or replace them with correctly signed records",
                )
            }
        }
    }
}

async fn chain_checks(
    cfg: &RunConfig,
    timeout: Duration,
    finality: Duration,
) -> Vec<(Check, Option<ChainTime>)> {
    let mut roots = Vec::new();
    for p in &cfg.chain_ca {
        match std::fs::read(p) {
            Ok(b) => roots.push(b),
            Err(e) => {
                return vec![(
                    Check::fail(
                        "chain",
                        format!("chain_ca {}: {e}", p.display()),
                        "fix `chain_ca` (--chain-ca)",
                    ),
                    None,
                )]
            }
        }
    }
    let mut wc = dc_chain::WatcherConfig::new(cfg.chain.clone());
    wc.extra_roots_pem = roots.clone();
    if let Err(e) = wc.check() {
        return vec![(
            Check::fail(
                "chain",
                e,
                "chain endpoints are ws:// or wss:// URLs; `chain_ca` files are PEM certificates",
            ),
            None,
        )];
    }
    let tasks: Vec<_> = cfg
        .chain
        .iter()
        .map(|ep| tokio::spawn(chain_endpoint(ep.clone(), roots.clone(), timeout, finality)))
        .collect();
    let mut out = Vec::new();
    for (t, ep) in tasks.into_iter().zip(&cfg.chain) {
        out.push(t.await.unwrap_or_else(|e| {
            (
                Check::fail("chain", format!("{ep}: {e}"), "report this as a bug"),
                None,
            )
        }));
    }
    out
}

/// One endpoint: a first finalized block within `timeout` (not syncing), then the finalized
/// head advancing within `finality`; and the time of the last finalized block seen, if the
/// endpoint also answers JSON-RPC over HTTP (Substrate nodes do, on the same port).
async fn chain_endpoint(
    ep: String,
    roots: Vec<Vec<u8>>,
    timeout: Duration,
    finality: Duration,
) -> (Check, Option<ChainTime>) {
    use dc_chain::Event;
    const NAME: &str = "chain";
    // Consecutive failed connections before the endpoint counts as unreachable.
    const ATTEMPTS: usize = 3;
    let mut wc = dc_chain::WatcherConfig::new(vec![ep.clone()]);
    wc.extra_roots_pem = roots.clone();
    wc.request_timeout = timeout.min(Duration::from_secs(10));
    wc.poll_interval = Duration::from_secs(2);
    let mut rx = dc_chain::watcher::spawn(wc);
    let end = tokio::time::Instant::now() + timeout;
    let (mut connected, mut syncing) = (false, false);
    let mut problems: Vec<String> = Vec::new();
    let first = loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(Event::Observed(o))) => break Some(o),
            Ok(Some(Event::Connected { .. })) => connected = true,
            Ok(Some(Event::Syncing { .. })) => syncing = true,
            Ok(Some(Event::Disconnected { reason, .. })) => {
                problems.push(reason);
                if !connected && problems.len() >= ATTEMPTS {
                    break None;
                }
            }
            Ok(None) | Err(_) => break None,
        }
    };
    let Some(first) = first else {
        problems.dedup();
        let why = problems.last().cloned().unwrap_or_default();
        let check = if syncing {
            Check::fail(
                NAME,
                format!("{ep}: the RPC node is syncing"),
                "wait until it has synced, or list an endpoint that has: the agent never acts on a syncing node",
            )
        } else if connected {
            Check::fail(
                NAME,
                format!(
                    "{ep}: connected, but no finalized block within {} s ({why})",
                    timeout.as_secs()
                ),
                "check that the endpoint is a DCChain RPC node that serves the chain_* and state_* methods",
            )
        } else {
            Check::fail(
                NAME,
                format!("{ep}: unreachable ({why})"),
                "check the URL, that the RPC node runs and this host may connect (firewall); for wss:// with a private CA give `chain_ca`",
            )
        };
        return (check, None);
    };
    let started = Instant::now();
    let end = tokio::time::Instant::now() + finality;
    let program = match &first.program {
        Ok(Some(_)) => "a DcProgram is published",
        Ok(None) => "no DcProgram published",
        Err(_) => "DcProgram does not decode",
    };
    loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(Event::Observed(o))) if o.block_number > first.block_number => {
                let check = Check::pass(
                    NAME,
                    format!(
                        "{ep}: synced, finalizing (#{} → #{} in {} s); {program}",
                        first.block_number,
                        o.block_number,
                        started.elapsed().as_secs()
                    ),
                );
                let t = block_time(&ep, &roots, &o.block_hash, timeout).await;
                return (
                    check,
                    t.map(|at| ChainTime {
                        endpoint: ep.clone(),
                        block: o.block_number,
                        at,
                        advancing: true,
                    }),
                );
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                let t = block_time(&ep, &roots, &first.block_hash, timeout).await;
                let check = Check::warn(
                    NAME,
                    format!(
                        "{ep}: synced, but the finalized head stayed at #{} for {} s; {program}",
                        first.block_number,
                        finality.as_secs()
                    ),
                    "a live DCChain finalizes every few seconds: check the RPC node's peers and finality (GRANDPA); the agent acts only on finalized blocks",
                );
                return (
                    check,
                    t.map(|at| ChainTime {
                        endpoint: ep.clone(),
                        block: first.block_number,
                        at,
                        advancing: false,
                    }),
                );
            }
        }
    }
}

/// `Timestamp.Now` at block `hash`, read with JSON-RPC over HTTP(S) on the endpoint's address
/// (`ws://` → `http://`, `wss://` → `https://`). `None` when the endpoint does not answer
/// that way or the value is not a u64: the clock check then does without it.
async fn block_time(
    ep: &str,
    roots: &[Vec<u8>],
    hash: &str,
    timeout: Duration,
) -> Option<SystemTime> {
    const MAX_ANSWER: usize = 64 * 1024;
    let lower = ep.to_ascii_lowercase();
    let url = if lower.starts_with("ws://") {
        format!("http://{}", &ep[5..])
    } else if lower.starts_with("wss://") {
        format!("https://{}", &ep[6..])
    } else {
        return None;
    };
    let mut b = reqwest::Client::builder().no_proxy().timeout(timeout);
    for pem in roots {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem).ok()?);
    }
    let key = format!(
        "0x{}",
        hex::encode(dc_chain::storage::storage_key("Timestamp", "Now"))
    );
    let resp = b
        .build()
        .ok()?
        .post(url)
        .json(&serde_json::json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": "state_getStorage",
            "params": [key, hash],
        }))
        .send()
        .await
        .ok()?;
    let body = dcupgrade::download::read_body_capped(resp, MAX_ANSWER)
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let raw = hex::decode(v.get("result")?.as_str()?.strip_prefix("0x")?).ok()?;
    let ms = u64::from_le_bytes(raw.as_slice().try_into().ok()?);
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A dcupgrade agent answering `/v1/status`.
    Agent,
    /// A dcnode answering `/v1/status` (or the agent that owns the data port).
    NodeData,
    /// A dcnode.
    NodeUpgrade,
    /// The launch broker.
    Broker,
}

fn key_of(name: &str) -> &str {
    name.trim_start_matches("port.")
}

/// Whether a holder's command line is `program`: its file name, or (Gramine) an argument.
fn runs(h: &preflight::Holder, program: &str) -> bool {
    h.program() == program
        || h.cmdline
            .iter()
            .take(3)
            .any(|a| Path::new(a).file_name().is_some_and(|n| n == program))
}

async fn port_check(name: &str, addr: SocketAddr, expect: Expect, http: &reqwest::Client) -> Check {
    let key = key_of(name);
    match preflight::port_free(addr) {
        Err(e) => {
            return Check::fail(
                name,
                format!("cannot listen on {addr}: {e}"),
                format!("set `{key}` to an address of this host (and a port above 1023 unless the agent may bind privileged ports)"),
            )
        }
        Ok(true) if expect == Expect::Broker => {
            return Check::fail(
                name,
                format!("nothing listens on {addr}: the agent cannot start nodes"),
                "start the launch broker (deploy/systemd/dcupgrade-launch-broker.service) or fix `broker`",
            )
        }
        Ok(true) => return Check::pass(name, format!("{addr} is free")),
        Ok(false) => {}
    }
    let mut probe = addr;
    if probe.ip().is_unspecified() {
        probe.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    // Whatever holds the port answers: read at most 1 MiB of it.
    let status = |url: String| async move {
        let r = http.get(url).send().await.ok()?;
        r.status().is_success().then_some(())?;
        let body = dcupgrade::download::read_body_capped(r, 1 << 20)
            .await
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&body).ok()
    };
    match expect {
        Expect::Agent => {
            if let Some(v) = status(format!("http://{probe}/v1/status")).await {
                if let Ok(s) = serde_json::from_value::<StatusView>(v) {
                    if !s.agent_mr_enclave.is_empty() {
                        return Check::pass(
                            name,
                            format!(
                                "{addr} is held by a running dcupgrade agent {} ({})",
                                s.agent_version, s.agent_mr_enclave
                            ),
                        );
                    }
                }
            }
        }
        Expect::NodeData => {
            if let Some(v) = status(format!("http://{probe}/v1/status")).await {
                if v.get("product").and_then(|p| p.as_str()) == Some(PRODUCT) {
                    return Check::pass(
                        name,
                        format!(
                            "{addr} is served by {PRODUCT} {} ({})",
                            v.get("version").and_then(|x| x.as_str()).unwrap_or("?"),
                            v.get("mr_enclave").and_then(|x| x.as_str()).unwrap_or("?")
                        ),
                    );
                }
            }
        }
        Expect::NodeUpgrade | Expect::Broker => {}
    }
    let holders = preflight::port_holders(Path::new("/proc"), addr.port());
    let expected_program = match expect {
        Expect::Agent | Expect::Broker => "dcupgrade",
        Expect::NodeData | Expect::NodeUpgrade => PRODUCT,
    };
    let matching: Vec<&preflight::Holder> = holders
        .iter()
        .filter(|h| {
            runs(h, expected_program)
                // The agent owns the data port in make-before-break.
                || (expect == Expect::NodeData && runs(h, "dcupgrade"))
        })
        .filter(|h| expect != Expect::Broker || h.cmdline.iter().any(|a| a == "launch-broker"))
        .collect();
    if let Some(h) = matching.first() {
        return match expect {
            Expect::Agent => Check::warn(
                name,
                format!(
                    "{addr} is held by {}, which does not answer /v1/status",
                    h.describe()
                ),
                "a dcupgrade agent that does not answer: see its log, or restart it",
            ),
            _ => Check::pass(name, format!("{addr} is held by {}", h.describe())),
        };
    }
    let who = if holders.is_empty() {
        "another process (not one this user may inspect)".to_string()
    } else {
        holders
            .iter()
            .map(|h| h.describe())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let expected = match expect {
        Expect::Agent => "the dcupgrade agent",
        Expect::NodeData | Expect::NodeUpgrade => "dcnode or the agent",
        Expect::Broker => "the launch broker",
    };
    if holders.is_empty() && expect == Expect::Broker {
        return Check::warn(
            name,
            format!("{addr} is in use by {who}"),
            "check that the launch broker listens there (`ss -ltnp`)",
        );
    }
    Check::fail(
        name,
        format!("{addr} is in use by {who}, not {expected}"),
        format!("stop that process, or set `{key}` to a free port"),
    )
}

//! `dcupgrade`: the DC upgrade agent (`run`, inside an enclave), its operator commands
//! (`status`, `pause`, `resume`, `check`) and the host-side launch broker (`launch-broker`).
//! The demo upgrade is a separate program, `dcupgrade-demo` (crate `dc-lab`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dc_bundle::Manifest;
use dc_release::Committee;
use dcupgrade::agent::{Agent, AgentConfig, Shared, StatusView};
use dcupgrade::launcher::SimLauncher;
use tracing::info;

mod check;

#[derive(Parser)]
#[command(
    name = "dcupgrade",
    version,
    about = "DC upgrade agent: committee-signed releases, attested key handover, upgrades with rollback"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent (as an enclave: `dctee-sim launch AGENT_BUNDLE -- run ...`).
    Run(Box<RunArgs>),
    /// Show the agent's state.
    Status {
        #[arg(long, default_value = "http://127.0.0.1:6666")]
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop starting new upgrades (one in progress finishes or rolls back).
    Pause {
        #[arg(long, default_value = "http://127.0.0.1:6666")]
        url: String,
    },
    /// Allow upgrades again.
    Resume {
        #[arg(long, default_value = "http://127.0.0.1:6666")]
        url: String,
    },
    /// The host-side launch broker for Gramine-SGX deployments: starts and stops node
    /// enclaves for an agent running inside Gramine (run it on the host, not in an enclave).
    LaunchBroker {
        #[arg(long, default_value = "127.0.0.1:6668")]
        listen: SocketAddr,
        #[arg(long, default_value = "gramine-sgx")]
        gramine_bin: PathBuf,
        /// Only bundles under this directory are launched (the agent's `STATE/bundles`).
        #[arg(long)]
        bundles_root: PathBuf,
        /// A local user id allowed to use the broker (repeatable; the agent's user).
        /// Default: only the broker's own user.
        #[arg(long = "allow-uid")]
        allow_uid: Vec<u32>,
    },
    /// Read DCChain once: the finalized block, DcProgram, every EnclaveIds entry with whether
    /// its signature verifies, and what the agent would decide.
    Check(check::CheckArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SwitchArg {
    MakeBeforeBreak,
    BreakBeforeMake,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LauncherKind {
    /// The software TEE platform (`dctee-sim launch`).
    Sim,
    /// `gramine-sgx` as a child process (an agent running outside Gramine).
    Gramine,
    /// The host-side launch broker (an agent running inside Gramine).
    Broker,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Agent state: journal, downloaded artifacts, bundles, sealed keys in transit.
    #[arg(long)]
    state: PathBuf,
    /// Local release feed directory (a release source).
    #[arg(long)]
    feed: Option<PathBuf>,
    /// DCChain RPC endpoint, `ws://HOST:PORT` (a release source; repeatable, tried in order).
    #[arg(long = "chain")]
    chain: Vec<String>,
    /// Re-read the chain's finalized head this often even without notifications.
    #[arg(long, default_value_t = 6000)]
    chain_poll_ms: u64,
    #[arg(long, default_value = "127.0.0.1:6666")]
    listen: SocketAddr,
    /// The node's data directory.
    #[arg(long)]
    node_data: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7000")]
    node_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:6667")]
    node_upgrade: SocketAddr,
    /// How nodes are started: on the software platform (`sim`) or under Gramine-SGX.
    #[arg(long, value_enum, default_value = "sim")]
    launcher: LauncherKind,
    /// How the new node takes over: `make-before-break` (the agent owns the data port and
    /// passes it to every node; the new node gets the keys while the old one serves; no
    /// connection is refused) or `break-before-make` (the old node stops first). Only the
    /// `sim` launcher can pass sockets; the others always break before make.
    #[arg(long, value_enum, default_value = "make-before-break")]
    switch: SwitchArg,
    /// `sim`: the software TEE platform's `dctee-sim` binary.
    #[arg(long, required_if_eq("launcher", "sim"))]
    sim_bin: Option<PathBuf>,
    /// `sim`: the platform's state directory (for `dctee-sim launch --state`).
    #[arg(long, required_if_eq("launcher", "sim"))]
    platform_state: Option<PathBuf>,
    /// `gramine`: the `gramine-sgx` program.
    #[arg(long, default_value = "gramine-sgx")]
    gramine_bin: PathBuf,
    /// `broker`: the launch broker's address.
    #[arg(long, default_value = "127.0.0.1:6668")]
    broker: SocketAddr,
    /// First run only: the installed node's bundle directory.
    #[arg(long)]
    initial_bundle: Option<PathBuf>,
    /// First run only: the installed node's signed release record.
    #[arg(long)]
    initial_record: Option<PathBuf>,
    /// This agent's committee-signed upgrader record.
    #[arg(long)]
    agent_record: Option<PathBuf>,
    /// Extra PEM root certificate trusted for https downloads (repeatable).
    #[arg(long = "download-ca")]
    download_ca: Vec<PathBuf>,
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
    #[arg(long, default_value_t = 60_000)]
    retry_backoff_ms: u64,
    #[arg(long, default_value_t = 30_000)]
    node_ready_ms: u64,
    #[arg(long, default_value_t = 30_000)]
    handover_ms: u64,
    #[arg(long, default_value_t = 15_000)]
    health_ms: u64,
    /// Test builds only: exit abruptly at this crash-injection point.
    #[cfg(debug_assertions)]
    #[arg(long, hide = true)]
    crash_at: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DCUPGRADE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dcupgrade: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Run(a) => run(*a).await,
            Cmd::Status { url, json } => status(&url, json).await,
            Cmd::Pause { url } => post(&url, "/v1/pause").await,
            Cmd::Resume { url } => post(&url, "/v1/resume").await,
            Cmd::Check(a) => check::run(a).await,
            Cmd::LaunchBroker {
                listen,
                gramine_bin,
                bundles_root,
                allow_uid,
            } => {
                if !listen.ip().is_loopback() {
                    bail!("the launch broker listens on loopback only");
                }
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding {listen}"))?;
                let cfg = dcupgrade::broker::BrokerConfig {
                    listen,
                    gramine_bin,
                    bundles_root,
                    stop_grace: Duration::from_secs(10),
                    allowed_uids: allow_uid,
                };
                dcupgrade::broker::serve(cfg, l).await;
                Ok(())
            }
        }
    });
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcupgrade: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(a: RunArgs) -> Result<()> {
    // Trust roots come only from the measured configuration, never from arguments.
    let opened =
        dc_tee::open().context("the agent must run as an enclave (Gramine-SGX or dctee-sim)")?;
    let (tee, manifest_bytes) = (opened.tee, opened.measured_config);
    info!(backend = opened.backend, "TEE");
    let manifest = Manifest::parse(&manifest_bytes)?;
    let committee = Committee::from_trust_roots(&manifest.trust)
        .context("trust roots in the measured manifest")?;
    #[cfg(debug_assertions)]
    dcupgrade::crash::arm(a.crash_at.clone());
    if a.feed.is_none() && a.chain.is_empty() {
        bail!("no release source: give --feed DIR and/or --chain ws://HOST:PORT");
    }
    let initial = match (a.initial_bundle, a.initial_record) {
        (Some(b), Some(r)) => Some((b, r)),
        (None, None) => None,
        _ => bail!("--initial-bundle and --initial-record go together"),
    };
    let switch = match (a.switch, a.launcher) {
        (SwitchArg::MakeBeforeBreak, LauncherKind::Sim) => {
            dc_orchestrator::core::SwitchMode::MakeBeforeBreak
        }
        (SwitchArg::MakeBeforeBreak, _) => {
            tracing::warn!("this launcher cannot pass listening sockets: the switch breaks before it makes (a short gap on the data port)");
            dc_orchestrator::core::SwitchMode::BreakBeforeMake
        }
        (SwitchArg::BreakBeforeMake, _) => dc_orchestrator::core::SwitchMode::BreakBeforeMake,
    };
    let cfg = AgentConfig {
        switch,
        state_dir: a.state,
        feed: a.feed,
        listen: a.listen,
        node_data: a.node_data,
        node_listen: a.node_listen,
        node_upgrade: a.node_upgrade,
        poll: Duration::from_millis(a.poll_ms),
        node_ready_deadline: Duration::from_millis(a.node_ready_ms),
        handover_deadline: Duration::from_millis(a.handover_ms),
        health_deadline: Duration::from_millis(a.health_ms),
        stop_grace: Duration::from_secs(10),
        retry_backoff: Duration::from_millis(a.retry_backoff_ms),
        agent_record: a.agent_record,
        initial,
        download_roots: a
            .download_ca
            .iter()
            .map(|p| std::fs::read(p).with_context(|| p.display().to_string()))
            .collect::<Result<_>>()?,
    };
    let launcher: Arc<dyn dcupgrade::launcher::Launcher> = match a.launcher {
        LauncherKind::Sim => Arc::new(SimLauncher {
            sim_bin: a.sim_bin.clone().context("--sim-bin")?,
            platform_state: a.platform_state.clone().context("--platform-state")?,
            // The node's log level follows the agent's environment, if set.
            env: std::env::var("DCNODE_LOG")
                .map(|v| vec![format!("DCNODE_LOG={v}")])
                .unwrap_or_default(),
        }),
        LauncherKind::Gramine => Arc::new(dcupgrade::launcher::GramineLauncher {
            gramine_bin: a.gramine_bin.clone(),
        }),
        LauncherKind::Broker => Arc::new(dcupgrade::launcher::BrokerLauncher { addr: a.broker }),
    };
    let shared = Arc::new(Shared::default());
    let listen = cfg.listen;
    let chain = (!a.chain.is_empty()).then(|| {
        let mut wc = dc_chain::WatcherConfig::new(a.chain.clone());
        wc.poll_interval = Duration::from_millis(a.chain_poll_ms);
        dc_chain::watcher::spawn(wc)
    });
    let agent = Agent::open(
        cfg,
        tee,
        committee,
        manifest.trust.allow_debug_peers,
        launcher,
        shared.clone(),
        &manifest.version,
        chain,
    )?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tokio::spawn(dc_handover::http::serve(
        listener,
        dcupgrade::api::router(shared),
        dc_handover::http::ServeLimits::default(),
        std::future::pending(),
    ));
    info!(%listen, "dcupgrade agent running");
    tracing::trace!("dcupgrade trace logging is on");
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut t), Ok(mut i)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            let _ = tx.send(true);
        }
    });
    agent.run(rx).await;
    info!("stopped");
    Ok(())
}

async fn status(url: &str, json: bool) -> Result<()> {
    let s: StatusView = reqwest::get(format!("{url}/v1/status"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("agent      {} ({})", s.agent_version, s.agent_mr_enclave);
    if let Some(st) = &s.state {
        println!(
            "node       {} {} ({})",
            st.current.version,
            st.current.mr_enclave,
            if s.node_running {
                "running"
            } else {
                "NOT running"
            }
        );
        println!(
            "phase      {:?}{}",
            st.phase,
            if st.paused { " (paused)" } else { "" }
        );
        println!("highest    {}", st.highest_trusted);
        println!("upgrades   {}", st.upgrades_completed);
        if let Some(u) = &st.upgrade {
            println!("target     {} {}", u.target_version, u.target_mr_enclave);
        }
        for (mre, f) in &st.failed {
            println!(
                "failed     {} {} ({} attempts): {}",
                f.version, mre, f.attempts, f.reason
            );
        }
    }
    if let Some(e) = &s.last_error {
        println!("last error {e}");
    }
    for r in &s.refused {
        println!("refused    {r}");
    }
    Ok(())
}

async fn post(url: &str, path: &str) -> Result<()> {
    reqwest::Client::new()
        .post(format!("{url}{path}"))
        .send()
        .await?
        .error_for_status()?;
    println!("ok");
    Ok(())
}

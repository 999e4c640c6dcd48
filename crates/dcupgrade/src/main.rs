//! `dcupgrade`: the DC upgrade agent (`run`, inside an enclave), its operator commands
//! (`status`, `pause`, `resume`, `check`) and the host-side launch broker (`launch-broker`).
//! The demo upgrade is a separate program, `dcupgrade-demo` (crate `dc-lab`).
//!
//! `run` takes its settings from `--config FILE.toml`, `DCUPGRADE_*` environment variables
//! and flags (flags win, then the environment, then the file; see `config.rs`).

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
mod config;
mod doctor;
mod status_text;

use config::{LauncherKind, LogFormat, RunConfig, Settings, SwitchArg};

#[derive(Parser)]
#[command(
    name = "dcupgrade",
    version,
    about = "DC upgrade agent: committee-signed releases, attested key handover, upgrades with rollback"
)]
struct Cli {
    /// Log format (stderr): `text` or `json` (one object per line: time, level, target,
    /// message, span and event fields). Also `DCUPGRADE_LOG_FORMAT` or, for `run`, the config
    /// file's `log_format` [default: text].
    #[arg(long, value_enum, global = true, env = "DCUPGRADE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent (as an enclave: `dctee-sim launch AGENT_BUNDLE -- run ...`).
    Run(Box<RunArgs>),
    /// Show the agent's state: installed release, phase, sources, the latest upgrade's
    /// timeline, failed and refused releases.
    Status {
        #[arg(long, default_value = "http://127.0.0.1:6666")]
        url: String,
        /// The agent's `/v1/status` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the finished upgrades the journal records: outcome, reason, duration, downtime.
    History {
        #[arg(long, default_value = "http://127.0.0.1:6666")]
        url: String,
        /// The agent's `/v1/history` as JSON.
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
    /// Preflight before enabling upgrades, with `run`'s configuration: TEE platform, the
    /// agent's and the installed node's committee-signed records, chain endpoints, disk, ports,
    /// clock. PASS/WARN/FAIL per check with what to do; exit status 1 on any FAIL.
    Doctor(Box<doctor::DoctorArgs>),
    /// The `run` configuration file.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a config file and print the effective `run` configuration (the file with the
    /// `DCUPGRADE_*` environment variables applied, defaults filled in).
    Check { file: PathBuf },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A TOML file with any of the settings below (`--node-listen` → `node_listen = "…"`).
    /// `DCUPGRADE_<NAME>` environment variables override it; flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
    /// Test builds only: exit abruptly at this crash-injection point.
    #[cfg(debug_assertions)]
    #[arg(long, hide = true)]
    crash_at: Option<String>,
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Logging to stderr in the chosen format, filtered by `DCUPGRADE_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    dc_log::init("DCUPGRADE_LOG", format == LogFormat::Json);
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `run`: the effective configuration (file, environment, flags) before anything else,
    // since it chooses the log format too.
    let run_cfg = match &cli.cmd {
        Cmd::Run(a) => {
            let flags = Settings {
                log_format: cli.log_format,
                ..a.settings.clone()
            };
            match config::effective(a.config.as_deref(), &env_var, flags) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("dcupgrade: error: {e:#}");
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let log_format = match &run_cfg {
        Some(c) => c.log_format,
        None => cli.log_format.unwrap_or_default(),
    };
    init_logging(log_format);
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
            // `_args` is read only by test builds (crash injection).
            Cmd::Run(_args) => {
                #[cfg(debug_assertions)]
                dcupgrade::crash::arm(_args.crash_at.clone());
                run(run_cfg.expect("resolved above")).await
            }
            Cmd::Config(ConfigCmd::Check { file }) => {
                let c = config::effective(Some(&file), &env_var, Settings::default())?;
                print!("{}", c.to_toml());
                Ok(())
            }
            Cmd::Status { url, json } => status(&url, json).await,
            Cmd::History { url, json } => history(&url, json).await,
            Cmd::Pause { url } => post(&url, "/v1/pause").await,
            Cmd::Resume { url } => post(&url, "/v1/resume").await,
            Cmd::Check(a) => check::run(a).await,
            Cmd::Doctor(a) => doctor::run(*a).await,
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

async fn run(a: RunConfig) -> Result<()> {
    // Trust roots come only from the measured configuration, never from arguments.
    let opened =
        dc_tee::open().context("the agent must run as an enclave (Gramine-SGX or dctee-sim)")?;
    let (tee, manifest_bytes) = (opened.tee, opened.measured_config);
    info!(backend = opened.backend, "TEE");
    let manifest = Manifest::parse(&manifest_bytes)?;
    let committee = Committee::from_trust_roots(&manifest.trust)
        .context("trust roots in the measured manifest")?;
    // Both or neither: `Settings::resolve` refused anything else.
    let initial = a.initial_bundle.zip(a.initial_record);
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
            // The node's log level follows the agent's environment, if set; its log format
            // too, else it follows the agent's own (only JSON is passed on: a node bundle
            // must list `DCNODE_LOG_FORMAT` in `env_passthrough` for that).
            env: std::env::var("DCNODE_LOG")
                .map(|v| format!("DCNODE_LOG={v}"))
                .into_iter()
                .chain(
                    std::env::var("DCNODE_LOG_FORMAT")
                        .ok()
                        .filter(|v| !v.is_empty())
                        .or_else(|| (a.log_format == LogFormat::Json).then(|| "json".into()))
                        .map(|v| format!("DCNODE_LOG_FORMAT={v}")),
                )
                .collect(),
        }),
        LauncherKind::Gramine => Arc::new(dcupgrade::launcher::GramineLauncher {
            gramine_bin: a.gramine_bin.clone(),
        }),
        LauncherKind::Broker => Arc::new(dcupgrade::launcher::BrokerLauncher { addr: a.broker }),
    };
    let shared = Arc::new(Shared::default());
    shared.metrics.chain_endpoints(&a.chain);
    let listen = cfg.listen;
    let chain_roots: Vec<Vec<u8>> = a
        .chain_ca
        .iter()
        .map(|p| std::fs::read(p).with_context(|| p.display().to_string()))
        .collect::<Result<_>>()?;
    let chain = if a.chain.is_empty() {
        None
    } else {
        let mut wc = dc_chain::WatcherConfig::new(a.chain.clone());
        wc.poll_interval = Duration::from_millis(a.chain_poll_ms);
        wc.extra_roots_pem = chain_roots;
        wc.check()
            .map_err(anyhow::Error::msg)
            .context("chain endpoints (--chain, --chain-ca)")?;
        Some(dc_chain::watcher::spawn(wc))
    };
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

/// The agent's API is local and small: no proxy, a deadline, and a cap on what is read (any
/// process may be listening on the port).
const API_TIMEOUT: Duration = Duration::from_secs(10);
const API_MAX_BODY: usize = 8 << 20;

fn api_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(API_TIMEOUT)
        .build()?)
}

/// `GET url` as JSON, at most [`API_MAX_BODY`] bytes.
async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> Result<T> {
    let r = api_client()?
        .get(url)
        .send()
        .await
        .with_context(|| format!("asking the agent at {url} (is it running? --url)"))?
        .error_for_status()?;
    let body = dcupgrade::download::read_body_capped(r, API_MAX_BODY)
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    serde_json::from_slice(&body).with_context(|| format!("{url}: not the agent's answer"))
}

async fn status(url: &str, json: bool) -> Result<()> {
    let s: StatusView = get_json(&format!("{url}/v1/status")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print!("{}", status_text::status(&s, dcupgrade::agent::now_ms()));
    Ok(())
}

async fn history(url: &str, json: bool) -> Result<()> {
    let h: Vec<dc_orchestrator::state::HistoryEntry> =
        get_json(&format!("{url}/v1/history")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(());
    }
    print!("{}", status_text::history(&h, dcupgrade::agent::now_ms()));
    Ok(())
}

async fn post(url: &str, path: &str) -> Result<()> {
    api_client()?
        .post(format!("{url}{path}"))
        .send()
        .await
        .with_context(|| format!("asking the agent at {url} (is it running? --url)"))?
        .error_for_status()?;
    println!("ok");
    Ok(())
}

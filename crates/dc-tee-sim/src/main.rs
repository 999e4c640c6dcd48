//! `dctee-sim`: the software TEE platform's command line. INSECURE: development and CI only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dc_bundle::{Bundle, SignerKey, TrustRoots};
use dc_tee::sim::control::LaunchRequest;
use dc_tee::sim::listen::check_name;
use dc_tee::CpuSvn;
use dc_tee_sim::launch::{forward_termination, Launch};
use dc_tee_sim::server::{identity_of, Server};
use dc_tee_sim::state::StateDir;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

#[derive(Parser)]
#[command(
    name = "dctee-sim",
    version,
    about = "The software TEE platform (INSECURE: for development and CI; root on the host can read its secret)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the platform: hold the root secret, launch enclaves, answer EREPORT/EGETKEY.
    Serve {
        /// State directory (root secret, CPUSVN, control socket).
        #[arg(long, env = "DCTEE_SIM_STATE")]
        state: PathBuf,
        /// Set the platform CPUSVN (32 hex characters) before starting, as a microcode update
        /// would. Persisted.
        #[arg(long)]
        cpusvn: Option<String>,
    },
    /// Launch a bundle as an enclave on a running platform; exits with the enclave's code.
    /// Stopping this process stops the enclave.
    Launch {
        #[arg(long, env = "DCTEE_SIM_STATE")]
        state: PathBuf,
        /// Environment for the enclave, KEY=VALUE (repeatable). Untrusted input to it.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Pass the listening TCP socket this process inherited as descriptor FD (3 or above)
        /// to the enclave under NAME (repeatable, at most 8). The enclave finds them at fds 3,
        /// 4, … in this order, with LISTEN_FDS, LISTEN_FDNAMES and LISTEN_PID set by the
        /// platform (systemd socket activation); this launcher closes its own copies once the
        /// platform has them.
        #[arg(long = "listen-fd", value_name = "NAME=FD")]
        listen_fd: Vec<String>,
        /// Print the assigned identity to stderr.
        #[arg(long)]
        verbose: bool,
        bundle: PathBuf,
        /// Extra arguments, appended after the manifest's measured ones.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Verify a bundle and print the identity the platform would give it.
    Measure { bundle: PathBuf },
    /// Create an enclave signer key file (mode 0600).
    Keygen { out: PathBuf },
    /// Build and sign a bundle from files.
    Bundle {
        #[command(flatten)]
        bundle: dc_bundle::BundleArgs,
        /// Trust roots: a TOML file with the [trust] table's fields.
        #[arg(long)]
        trust: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dctee-sim: error: {e:#}");
            ExitCode::from(125)
        }
    }
}

/// `NAME=FD` pairs of `--listen-fd`.
fn parse_listen_fds(specs: &[String]) -> Result<Vec<(String, RawFd)>> {
    specs
        .iter()
        .map(|spec| {
            let (name, fd) = spec
                .split_once('=')
                .with_context(|| format!("--listen-fd {spec:?}: expected NAME=FD"))?;
            check_name(name).with_context(|| format!("--listen-fd {spec:?}"))?;
            let fd: RawFd = fd.parse().ok().filter(|fd| *fd >= 3).with_context(|| {
                format!("--listen-fd {spec:?}: FD must be a descriptor number of 3 or above")
            })?;
            Ok((name.to_string(), fd))
        })
        .collect()
}

/// Relays the enclave's output until it exits; SIGTERM/SIGINT to this process stop it.
fn relay_until_exit(launch: Launch, verbose: bool) -> Result<i32, String> {
    forward_termination(&launch);
    launch.relay(
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        |e, s, pid| {
            if verbose {
                eprintln!("dctee-sim: enclave pid {pid} mrenclave {e} mrsigner {s}");
            }
        },
    )
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Serve { state, cpusvn } => {
            let svn = cpusvn
                .map(|s| CpuSvn::from_hex(&s).context("--cpusvn must be 32 hex characters"))
                .transpose()?;
            let server = Server::bind(&state, svn)?;
            eprintln!("dctee-sim: WARNING: software TEE platform — not a security boundary; root on this host can read {}", state.join(dc_tee_sim::state::ROOT_SECRET_FILE).display());
            println!(
                "dctee-sim: serving on {} (CPUSVN {})",
                server.socket().display(),
                server.cpu_svn()
            );
            server.run()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Launch {
            state,
            env,
            listen_fd,
            verbose,
            bundle,
            args,
        } => {
            let socket = StateDir { path: state }.control_socket();
            let req = LaunchRequest {
                bundle: std::path::absolute(&bundle)?.to_string_lossy().into_owned(),
                cwd: std::env::current_dir()?.to_string_lossy().into_owned(),
                args,
                env,
            };
            let passed = parse_listen_fds(&listen_fd)?;
            let listeners: Vec<(&str, BorrowedFd<'_>)> = passed
                .iter()
                // SAFETY: only borrowed while the request is sent; `Launch::start` checks each
                // is an open listening TCP socket before using it.
                .map(|(n, fd)| (n.as_str(), unsafe { BorrowedFd::borrow_raw(*fd) }))
                .collect();
            let launch = Launch::start(&socket, &req, &listeners).map_err(anyhow::Error::msg)?;
            drop(listeners);
            // The platform and the enclave hold the sockets now; this process keeps no copy,
            // so it does not keep them open after their owner closed them.
            let mut own: Vec<RawFd> = passed.iter().map(|(_, fd)| *fd).collect();
            own.sort_unstable();
            own.dedup();
            for fd in own {
                // SAFETY: an inherited descriptor given to this process only to be passed on;
                // nothing else in it uses it, and each is closed once (deduplicated).
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            let code = relay_until_exit(launch, verbose).map_err(anyhow::Error::msg)?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        Cmd::Measure { bundle } => {
            let b = Bundle::open(&bundle)?;
            let id = identity_of(&b);
            println!("name       {}", b.manifest.name);
            println!("version    {}", b.manifest.version);
            println!("mrenclave  {}", b.mr_enclave);
            println!("mrsigner   {}", b.mr_signer);
            println!("isvprodid  {}", id.isv_prod_id);
            println!("isvsvn     {}", id.isv_svn);
            println!("debug      {}", id.is_debug());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Keygen { out } => {
            let k = SignerKey::generate()?;
            k.save(&out)?;
            println!("mrsigner {}", k.mr_signer());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bundle { bundle, trust } => {
            let trust: TrustRoots = match trust {
                Some(p) => toml::from_str(
                    &std::fs::read_to_string(&p).with_context(|| p.display().to_string())?,
                )
                .with_context(|| format!("{}: not a valid [trust] table", p.display()))?,
                None => TrustRoots::default(),
            };
            let b = bundle.build(trust)?;
            println!("mrenclave {}", b.mr_enclave);
            println!("mrsigner  {}", b.mr_signer);
            Ok(ExitCode::SUCCESS)
        }
    }
}

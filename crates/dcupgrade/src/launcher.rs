//! Starting and stopping node enclaves.
//!
//! [`Launcher`] is the seam for platforms: [`SimLauncher`] runs `dctee-sim launch`; a Gramine
//! launcher runs `gramine-sgx` the same way. A started node is a [`NodeProcess`]: the agent
//! waits for its readiness line and stops it gracefully. Stopping returns only once the
//! enclave has exited, so the old and new node never serve at once.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{info, warn};

/// The line a node prints on stdout once it serves.
pub const READY_PREFIX: &str = "dcnode ready";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the node exited before it was ready ({0})")]
    ExitedEarly(String),
    #[error("the node was not ready within {0:?}")]
    NotReady(Duration),
}

pub trait Launcher: Send + Sync {
    /// Starts the bundle as an enclave with extra (unmeasured) arguments.
    fn launch(&self, bundle: &Path, args: &[String]) -> Result<NodeProcess, LaunchError>;
}

/// The software TEE platform's launcher.
pub struct SimLauncher {
    pub sim_bin: PathBuf,
    pub platform_state: PathBuf,
    /// `KEY=VALUE` environment for the node (its manifest must allow each variable).
    pub env: Vec<String>,
}

impl Launcher for SimLauncher {
    fn launch(&self, bundle: &Path, args: &[String]) -> Result<NodeProcess, LaunchError> {
        let mut cmd = Command::new(&self.sim_bin);
        cmd.arg("launch")
            .arg("--state")
            .arg(&self.platform_state)
            .args(self.env.iter().flat_map(|e| ["--env", e.as_str()]))
            .arg(bundle)
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| LaunchError::Spawn {
            what: format!("{} launch {}", self.sim_bin.display(), bundle.display()),
            source,
        })?;
        Ok(NodeProcess::watch(child))
    }
}

pub struct NodeProcess {
    child: Child,
    ready: watch::Receiver<bool>,
}

impl NodeProcess {
    /// Wraps a child whose stdout carries the node's output.
    pub fn watch(mut child: Child) -> Self {
        let (tx, rx) = watch::channel(false);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with(READY_PREFIX) {
                        let _ = tx.send(true);
                    }
                    info!(target: "node", "{line}");
                }
            });
        }
        Self { child, ready: rx }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the readiness line; fails if the node exits first or the deadline passes.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<(), LaunchError> {
        let mut ready = self.ready.clone();
        let wait = async {
            loop {
                if *ready.borrow() {
                    return Ok(());
                }
                tokio::select! {
                    changed = ready.changed() => {
                        if changed.is_err() && !*ready.borrow() {
                            let status = self.child.wait().await.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                            return Err(LaunchError::ExitedEarly(status));
                        }
                    }
                    status = self.child.wait() => {
                        if *ready.borrow() { return Ok(()); }
                        return Err(LaunchError::ExitedEarly(status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())));
                    }
                }
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| LaunchError::NotReady(deadline))?
    }

    /// `Some` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then waits up to `grace` for the exit (the launcher returns only after the
    /// enclave is gone); SIGKILL after that.
    pub async fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child process.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                warn!("node did not stop within {grace:?}; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}

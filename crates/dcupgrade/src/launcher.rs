//! Starting and stopping node enclaves.
//!
//! [`Launcher`] is the seam for platforms: [`SimLauncher`] runs `dctee-sim launch`;
//! [`GramineLauncher`] runs `gramine-sgx` the same way. A started node is a [`NodeProcess`]: the agent
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

/// Gramine-SGX: runs `gramine-sgx APP ARGS…` in the bundle directory, where `APP` is the
/// bundle's signed manifest name (`APP.manifest.sgx`). Configuration reaches the enclave as
/// arguments, which the Gramine manifest must allow (`loader.argv`/passthrough); trust roots
/// never travel this way, they are in the measured manifest.
pub struct GramineLauncher {
    pub gramine_bin: PathBuf,
}

impl Launcher for GramineLauncher {
    fn launch(&self, bundle: &Path, args: &[String]) -> Result<NodeProcess, LaunchError> {
        let spawn_err = |source| LaunchError::Spawn {
            what: format!("{} in {}", self.gramine_bin.display(), bundle.display()),
            source,
        };
        let b = dc_bundle::Bundle::open(bundle).map_err(|e| spawn_err(std::io::Error::other(e.to_string())))?;
        let app = b
            .manifest
            .gramine
            .as_ref()
            .and_then(|g| g.manifest_sgx.strip_suffix(".manifest.sgx"))
            .ok_or_else(|| spawn_err(std::io::Error::other("not a Gramine bundle (no [gramine] table)")))?
            .to_string();
        let child = Command::new(&self.gramine_bin)
            .arg(&app)
            .args(args)
            .current_dir(bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A Gramine bundle and a fake `gramine-sgx` that records how it was called, prints the
    /// readiness line, and exits on SIGTERM.
    fn setup(dir: &Path) -> (PathBuf, PathBuf) {
        use dc_tee::sgx::{Attributes, Measurement};
        use dc_tee::sigstruct::Sigstruct;
        let b = dir.join("bundle");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("dcnode"), b"binary").unwrap();
        std::fs::write(b.join("dcnode.manifest.sgx"), b"manifest").unwrap();
        let sig = Sigstruct {
            vendor: 0,
            date: 0,
            modulus: [1; 384],
            misc_select: 0,
            misc_mask: 0,
            attributes: Attributes { flags: Attributes::INIT | Attributes::MODE64BIT, xfrm: 3 },
            attribute_mask: Attributes::default(),
            enclave_hash: Measurement([2; 32]),
            isv_prod_id: 1,
            isv_svn: 1,
        };
        std::fs::write(b.join("dcnode.sig"), sig.encode_unsigned()).unwrap();
        let h = |p: &str| hex::encode(dc_bundle::sha256_file(&b.join(p), 1 << 20).unwrap());
        std::fs::write(
            b.join("enclave.toml"),
            format!(
                "name = \"dcnode\"\nversion = \"1.0.0\"\nisv_prod_id = 1\nisv_svn = 1\nentrypoint = \"dcnode\"\n\
                 [gramine]\nmanifest_sgx = \"dcnode.manifest.sgx\"\nsigstruct = \"dcnode.sig\"\n\
                 [[files]]\npath = \"dcnode\"\nsha256 = \"{}\"\n[[files]]\npath = \"dcnode.manifest.sgx\"\nsha256 = \"{}\"\n\
                 [[files]]\npath = \"dcnode.sig\"\nsha256 = \"{}\"\n",
                h("dcnode"),
                h("dcnode.manifest.sgx"),
                h("dcnode.sig")
            ),
        )
        .unwrap();
        let fake = dir.join("gramine-sgx");
        let log = dir.join("calls");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$PWD $*\" > {}\ntrap 'echo stopped >> {}; exit 0' TERM\necho \"dcnode ready 1.0.0 x\"\nwhile true; do sleep 0.05; done\n",
                log.display(),
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        (b, fake)
    }

    #[tokio::test]
    async fn gramine_launcher_runs_the_signed_manifest_in_the_bundle_and_stops_it() {
        let t = tempfile::tempdir().unwrap();
        let (bundle, fake) = setup(t.path());
        let l = GramineLauncher { gramine_bin: fake };
        let mut p = l.launch(&bundle, &["--data".into(), "/var/lib/dcnode".into()]).unwrap();
        p.wait_ready(Duration::from_secs(10)).await.unwrap();
        let calls = std::fs::read_to_string(t.path().join("calls")).unwrap();
        assert_eq!(calls.trim(), format!("{} dcnode --data /var/lib/dcnode", bundle.display()));
        p.stop(Duration::from_secs(5)).await;
        assert!(p.exited().is_some());
        assert!(std::fs::read_to_string(t.path().join("calls")).unwrap().contains("stopped"), "SIGTERM first, gracefully");
    }

    #[tokio::test]
    async fn gramine_launcher_refuses_a_bundle_that_is_not_gramine_or_does_not_verify() {
        let t = tempfile::tempdir().unwrap();
        let (bundle, fake) = setup(t.path());
        std::fs::write(bundle.join("dcnode"), b"swapped binary").unwrap();
        let l = GramineLauncher { gramine_bin: fake };
        assert!(l.launch(&bundle, &[]).is_err());
        assert!(!t.path().join("calls").exists(), "nothing was started");
    }
}

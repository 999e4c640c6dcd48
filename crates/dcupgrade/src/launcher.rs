//! Starting and stopping node enclaves.
//!
//! [`Launcher`] is the seam for platforms: [`SimLauncher`] runs `dctee-sim launch`;
//! [`GramineLauncher`] runs `gramine-sgx` the same way. A started node is a [`NodeProcess`]: the agent
//! waits for its readiness line and stops it gracefully. Stopping returns only once the
//! enclave has exited, so the old and new node never serve at once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{info, warn};

/// How much longer than its own grace the agent waits for the broker to report a stop.
pub const REMOTE_STOP_MARGIN: Duration = Duration::from_secs(15);

/// The line a node prints on stdout once it serves.
pub const READY_PREFIX: &str = "dcnode ready";
/// The line a standby prints once it sealed the keys (it serves nothing yet).
pub const STANDBY_PREFIX: &str = "dcnode standby";

/// Readiness levels a node reports on stdout.
const LEVEL_STANDBY: u8 = 1;
const LEVEL_READY: u8 = 2;

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

    /// Starts it with listening sockets the agent owns (`name`, fd), passed by the systemd
    /// socket-activation convention, so that connections wait in the socket's queue while
    /// node versions change. Launchers that cannot pass sockets refuse.
    fn launch_with_listeners(
        &self,
        bundle: &Path,
        args: &[String],
        listeners: &[(String, std::os::fd::RawFd)],
    ) -> Result<NodeProcess, LaunchError> {
        let _ = (args, listeners);
        Err(LaunchError::Spawn {
            what: format!("{} with listening sockets", bundle.display()),
            source: std::io::Error::other(
                "this launcher cannot pass listening sockets; use --switch break-before-make",
            ),
        })
    }
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
        self.launch_with_listeners(bundle, args, &[])
    }

    fn launch_with_listeners(
        &self,
        bundle: &Path,
        args: &[String],
        listeners: &[(String, std::os::fd::RawFd)],
    ) -> Result<NodeProcess, LaunchError> {
        let mut cmd = Command::new(&self.sim_bin);
        cmd.arg("launch")
            .arg("--state")
            .arg(&self.platform_state)
            .args(self.env.iter().flat_map(|e| ["--env", e.as_str()]));
        // Each socket goes to fd 3, 4, … of `dctee-sim launch`, which hands it to the
        // platform; the agent keeps its own copy, so the socket outlives every node.
        let fds: Vec<std::os::fd::RawFd> = listeners.iter().map(|(_, fd)| *fd).collect();
        for (i, (name, _)) in listeners.iter().enumerate() {
            cmd.arg("--listen-fd").arg(format!("{name}={}", 3 + i));
        }
        if !fds.is_empty() {
            // SAFETY: only dup2(2) and fcntl(2), which are async-signal-safe, between fork
            // and exec; `fds` is moved into the closure before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    for (i, fd) in fds.iter().enumerate() {
                        let to = 3 + i as i32;
                        if *fd == to {
                            if libc::fcntl(to, libc::F_SETFD, 0) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                        } else if libc::dup2(*fd, to) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        cmd.arg(bundle)
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

/// The Gramine application name of a verified Gramine bundle (`APP` of `APP.manifest.sgx`).
pub fn gramine_app(bundle: &Path) -> Result<String, LaunchError> {
    let err = |m: String| LaunchError::Spawn {
        what: format!("Gramine bundle {}", bundle.display()),
        source: std::io::Error::other(m),
    };
    let b = dc_bundle::Bundle::open(bundle).map_err(|e| err(e.to_string()))?;
    b.manifest
        .gramine
        .as_ref()
        .and_then(|g| g.manifest_sgx.strip_suffix(".manifest.sgx"))
        .map(str::to_string)
        .ok_or_else(|| err("not a Gramine bundle (no [gramine] table)".into()))
}

impl Launcher for GramineLauncher {
    fn launch(&self, bundle: &Path, args: &[String]) -> Result<NodeProcess, LaunchError> {
        let app = gramine_app(bundle)?;
        let mut cmd = Command::new(&self.gramine_bin);
        cmd.arg(&app)
            .args(args)
            .current_dir(bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .process_group(0);
        // If the agent dies (even by SIGKILL), its node is told to stop: never a node left
        // running that a restarted agent does not know about.
        // SAFETY: prctl(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| LaunchError::Spawn {
            what: format!("{} in {}", self.gramine_bin.display(), bundle.display()),
            source,
        })?;
        Ok(NodeProcess::watch(child))
    }
}

/// Nodes started by the host-side launch broker ([`crate::broker`]), reached over loopback
/// TCP: what the agent uses inside a Gramine enclave.
pub struct BrokerLauncher {
    pub addr: std::net::SocketAddr,
}

impl Launcher for BrokerLauncher {
    fn launch(&self, bundle: &Path, args: &[String]) -> Result<NodeProcess, LaunchError> {
        use std::io::Write;
        let spawn_err = |source| LaunchError::Spawn {
            what: format!("launch broker {} for {}", self.addr, bundle.display()),
            source,
        };
        let mut conn = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(3))
            .map_err(spawn_err)?;
        let req = dc_tee::sim::control::LaunchRequest {
            bundle: bundle.display().to_string(),
            cwd: bundle.display().to_string(),
            args: args.to_vec(),
            env: vec![],
        }
        .encode();
        conn.write_all(&[&(req.len() as u32).to_le_bytes()[..], &req].concat())
            .map_err(spawn_err)?;
        conn.set_nonblocking(true).map_err(spawn_err)?;
        let conn = tokio::net::TcpStream::from_std(conn).map_err(spawn_err)?;
        Ok(NodeProcess::remote(conn))
    }
}

enum Proc {
    Local(Child),
    /// Behind the broker: the write half closes to request a stop; the exit code arrives as
    /// an event.
    Remote {
        stop: Option<tokio::net::tcp::OwnedWriteHalf>,
        /// `Ok(code)`: the broker reported the exit; `Err`: the connection was lost, so the
        /// node's fate is unknown.
        exit: watch::Receiver<Option<Result<i32, String>>>,
    },
}

pub struct NodeProcess {
    proc: Proc,
    /// 0: nothing yet; [`LEVEL_STANDBY`]; [`LEVEL_READY`].
    ready: watch::Receiver<u8>,
}

fn forward_line(line: &str, ready: &watch::Sender<u8>) {
    let level = if line.starts_with(READY_PREFIX) {
        LEVEL_READY
    } else if line.starts_with(STANDBY_PREFIX) {
        LEVEL_STANDBY
    } else {
        0
    };
    if level > 0 {
        ready.send_if_modified(|l| {
            let up = level > *l;
            *l = (*l).max(level);
            up
        });
    }
    info!(target: "node", "{line}");
}

impl NodeProcess {
    /// Wraps a child whose stdout carries the node's output.
    pub fn watch(mut child: Child) -> Self {
        let (tx, rx) = watch::channel(0u8);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    forward_line(&line, &tx);
                }
            });
        }
        Self {
            proc: Proc::Local(child),
            ready: rx,
        }
    }

    /// A node behind the launch broker: reads its events from `conn`.
    pub fn remote(conn: tokio::net::TcpStream) -> Self {
        use dc_tee::sim::control::{Event, MAX_CONTROL_FRAME};
        let (mut rd, wr) = conn.into_split();
        let (ready_tx, ready_rx) = watch::channel(0u8);
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            let mut pending = String::new();
            let code = loop {
                match crate::control_frames::read_frame(&mut rd, MAX_CONTROL_FRAME).await {
                    Ok(Some(f)) => match Event::decode(&f) {
                        Ok(Event::Stdout(d)) => {
                            pending.push_str(&String::from_utf8_lossy(&d));
                            while let Some(i) = pending.find('\n') {
                                let line: String = pending.drain(..=i).collect();
                                forward_line(line.trim_end(), &ready_tx);
                            }
                        }
                        Ok(Event::Stderr(d)) => {
                            info!(target: "node", "{}", String::from_utf8_lossy(&d).trim_end())
                        }
                        Ok(Event::Started { pid, .. }) => info!(pid, "the broker started the node"),
                        Ok(Event::Exited(c)) => break Ok(c),
                        Ok(Event::Error(m)) => {
                            warn!("the launch broker refused: {m}");
                            break Err(format!("the broker refused: {m}"));
                        }
                        Err(e) => {
                            warn!("garbage from the launch broker: {e}");
                            break Err(format!("garbage from the broker: {e}"));
                        }
                    },
                    Ok(None) | Err(_) => {
                        break Err("lost the connection to the launch broker".into())
                    }
                }
            };
            let _ = exit_tx.send(Some(code));
        });
        Self {
            proc: Proc::Remote {
                stop: Some(wr),
                exit: exit_rx,
            },
            ready: ready_rx,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match &self.proc {
            Proc::Local(c) => c.id(),
            Proc::Remote { .. } => None,
        }
    }

    /// Waits until the node has exited; describes how.
    async fn wait_exit(&mut self) -> String {
        match &mut self.proc {
            Proc::Local(c) => c
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string()),
            Proc::Remote { exit, .. } => loop {
                if let Some(r) = exit.borrow().clone() {
                    return match r {
                        Ok(code) => format!("exit code {code}"),
                        Err(e) => e,
                    };
                }
                if exit.changed().await.is_err() {
                    return "lost the launch broker".into();
                }
            },
        }
    }

    /// Waits for the readiness line; fails if the node exits first or the deadline passes.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<(), LaunchError> {
        self.wait_level(LEVEL_READY, deadline).await
    }

    /// Waits for a standby's line: it sealed the keys and waits for the data directory.
    pub async fn wait_standby(&mut self, deadline: Duration) -> Result<(), LaunchError> {
        self.wait_level(LEVEL_STANDBY, deadline).await
    }

    async fn wait_level(&mut self, level: u8, deadline: Duration) -> Result<(), LaunchError> {
        let mut ready = self.ready.clone();
        let seen = self.ready.clone();
        let wait = async {
            if *ready.borrow() >= level {
                return Ok(());
            }
            tokio::select! {
                r = ready.wait_for(|r| *r >= level) => match r {
                    Ok(_) => Ok(()),
                    Err(_) => Err(LaunchError::ExitedEarly(self.wait_exit().await)),
                },
                status = self.wait_exit() => {
                    if *seen.borrow() >= level { Ok(()) } else { Err(LaunchError::ExitedEarly(status)) }
                }
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| LaunchError::NotReady(deadline))?
    }

    /// Whether the node has exited.
    pub fn exited(&mut self) -> Option<String> {
        match &mut self.proc {
            Proc::Local(c) => c.try_wait().ok().flatten().map(|s| s.to_string()),
            Proc::Remote { exit, .. } => exit.borrow().clone().map(|r| match r {
                Ok(c) => format!("exit code {c}"),
                Err(e) => e,
            }),
        }
    }

    /// Asks the node to stop and waits for its exit: `grace`, then a kill (local), or the
    /// broker's own stop deadline (remote). Returns whether the exit is *confirmed*; `false`
    /// means the node may still run, and nothing may be started in its place.
    pub async fn stop(&mut self, grace: Duration) -> bool {
        if let Proc::Remote { exit, .. } = &self.proc {
            if let Some(r) = exit.borrow().clone() {
                return r.is_ok();
            }
        } else if self.exited().is_some() {
            return true;
        }
        match &mut self.proc {
            Proc::Local(c) => {
                if let Some(pid) = c.id() {
                    // SAFETY: kill(2) on our own child process.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                if tokio::time::timeout(grace, c.wait()).await.is_err() {
                    warn!("node did not stop within {grace:?}; killing it");
                    let _ = c.kill().await;
                }
                true
            }
            Proc::Remote { stop, exit } => {
                if let Some(mut w) = stop.take() {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
                    drop(w);
                }
                // The broker gives the node its own grace, then kills it and reports the exit.
                let confirmed = tokio::time::timeout(
                    grace + REMOTE_STOP_MARGIN,
                    exit.wait_for(|e| e.is_some()),
                )
                .await;
                matches!(confirmed, Ok(Ok(r)) if matches!(*r, Some(Ok(_))))
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
            attributes: Attributes {
                flags: Attributes::INIT | Attributes::MODE64BIT,
                xfrm: 3,
            },
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
        let mut p = l
            .launch(&bundle, &["--data".into(), "/var/lib/dcnode".into()])
            .unwrap();
        p.wait_ready(Duration::from_secs(10)).await.unwrap();
        let calls = std::fs::read_to_string(t.path().join("calls")).unwrap();
        assert_eq!(
            calls.trim(),
            format!("{} dcnode --data /var/lib/dcnode", bundle.display())
        );
        p.stop(Duration::from_secs(5)).await;
        assert!(p.exited().is_some());
        assert!(
            std::fs::read_to_string(t.path().join("calls"))
                .unwrap()
                .contains("stopped"),
            "SIGTERM first, gracefully"
        );
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

    async fn broker(root: &Path, fake: PathBuf) -> std::net::SocketAddr {
        broker_for(root, fake, vec![]).await
    }

    async fn broker_for(
        root: &Path,
        fake: PathBuf,
        allowed_uids: Vec<u32>,
    ) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let cfg = crate::broker::BrokerConfig {
            listen: addr,
            gramine_bin: fake,
            bundles_root: root.to_path_buf(),
            stop_grace: Duration::from_secs(5),
            allowed_uids,
        };
        tokio::spawn(crate::broker::serve(cfg, l));
        addr
    }

    #[tokio::test]
    async fn broker_launches_streams_readiness_and_stops_gracefully() {
        let t = tempfile::tempdir().unwrap();
        let (bundle, fake) = setup(t.path());
        let addr = broker(t.path(), fake).await;
        let l = BrokerLauncher { addr };
        let mut p = l
            .launch(&bundle, &["--listen".into(), "127.0.0.1:7000".into()])
            .unwrap();
        p.wait_ready(Duration::from_secs(10)).await.unwrap();
        let calls = std::fs::read_to_string(t.path().join("calls")).unwrap();
        assert_eq!(
            calls.trim(),
            format!(
                "{} dcnode --listen 127.0.0.1:7000",
                bundle.canonicalize().unwrap().display()
            )
        );
        assert!(p.exited().is_none());
        p.stop(Duration::from_secs(10)).await;
        assert_eq!(
            p.exited().as_deref(),
            Some("exit code 0"),
            "stopped gracefully, exit reported"
        );
        assert!(std::fs::read_to_string(t.path().join("calls"))
            .unwrap()
            .contains("stopped"));
    }

    #[tokio::test]
    async fn broker_refuses_bundles_outside_its_root_and_stops_nodes_of_a_vanished_agent() {
        let t = tempfile::tempdir().unwrap();
        let (bundle, fake) = setup(t.path());
        let elsewhere = tempfile::tempdir().unwrap();
        let addr = broker(elsewhere.path(), fake.clone()).await;
        let mut p = BrokerLauncher { addr }.launch(&bundle, &[]).unwrap();
        let e = p.wait_ready(Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(e, LaunchError::ExitedEarly(_)), "{e}");
        assert!(!t.path().join("calls").exists(), "nothing was started");

        let addr = broker(t.path(), fake).await;
        let mut p = BrokerLauncher { addr }.launch(&bundle, &[]).unwrap();
        p.wait_ready(Duration::from_secs(10)).await.unwrap();
        drop(p); // the agent dies
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(t.path().join("calls"))
            .unwrap()
            .contains("stopped")
        {
            assert!(
                std::time::Instant::now() < end,
                "the node outlived its agent"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn broker_serves_only_allowed_users() {
        let t = tempfile::tempdir().unwrap();
        let (bundle, fake) = setup(t.path());
        // SAFETY: getuid(2) cannot fail.
        let me = unsafe { libc::getuid() };
        let addr = broker_for(t.path(), fake, vec![me.wrapping_add(1)]).await;
        let mut p = BrokerLauncher { addr }.launch(&bundle, &[]).unwrap();
        let e = p.wait_ready(Duration::from_secs(10)).await.unwrap_err();
        assert!(
            e.to_string().contains("may not use the launch broker"),
            "{e}"
        );
        assert!(!t.path().join("calls").exists(), "nothing was started");
    }
}

//! The host-side launch broker for Gramine-SGX deployments.
//!
//! Inside a Gramine enclave the agent cannot start a host `gramine-sgx` (`execve` is emulated
//! inside the enclave, Unix sockets are enclave-internal). The broker runs on the host — as
//! untrusted as every launcher — and starts nodes for the agent, which reaches it over
//! loopback TCP ([`crate::launcher::BrokerLauncher`]). It speaks the launch protocol of
//! `dctee-sim launch` ([`dc_tee::sim::control`], in [`crate::control_frames`]): one launch
//! request, then `Started`, the node's output, and `Exited`; when the agent closes its side,
//! the node is stopped (SIGTERM, then SIGKILL).
//!
//! Nothing the broker does is trusted: the node is an enclave whose identity the CPU measures,
//! and keys reach it only by attested handover. The broker still refuses bundles outside its
//! configured root, so a local process cannot make it run arbitrary programs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use dc_tee::sim::control::{Event, LaunchRequest, MAX_CONTROL_FRAME};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tracing::{info, warn};

use crate::control_frames::{read_frame, write_frame};
use crate::launcher::gramine_app;

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub gramine_bin: PathBuf,
    /// Only bundles under this directory are launched.
    pub bundles_root: PathBuf,
    pub stop_grace: Duration,
    /// Local users allowed to use the broker (the agent's). Empty: only the broker's own user.
    pub allowed_uids: Vec<u32>,
}

/// The uid owning the TCP socket at `peer` connected to `local`, from `/proc/net/tcp`
/// (IPv4 loopback only).
pub fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let hex = |a: SocketAddr| -> Option<String> {
        let std::net::SocketAddr::V4(v4) = a else {
            return None;
        };
        Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ))
    };
    let (p, l) = (hex(peer)?, hex(local)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 7 && f[1] == p && f[2] == l)
            .then(|| f[7].parse().ok())
            .flatten()
    })
}

/// Serves launch requests until the process is stopped.
pub async fn serve(cfg: BrokerConfig, listener: TcpListener) {
    info!(listen = %cfg.listen, root = %cfg.bundles_root.display(), "launch broker running");
    loop {
        let Ok((conn, peer)) = listener.accept().await else {
            continue;
        };
        if !peer.ip().is_loopback() {
            warn!(%peer, "refused a non-loopback connection");
            continue;
        }
        // Only the agent's user may start and stop nodes.
        let allowed = if cfg.allowed_uids.is_empty() {
            // SAFETY: getuid(2) cannot fail.
            vec![unsafe { libc::getuid() }]
        } else {
            cfg.allowed_uids.clone()
        };
        let uid = conn.local_addr().ok().and_then(|l| peer_uid(peer, l));
        if !uid.is_some_and(|u| allowed.contains(&u)) {
            warn!(%peer, ?uid, "refused a connection from a user that may not launch nodes");
            let mut conn = conn;
            let _ = write_frame(
                &mut conn,
                &Event::Error("this user may not use the launch broker".into()).encode(),
            )
            .await;
            continue;
        }
        let cfg = cfg.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(&cfg, conn).await {
                warn!("launch refused: {e}");
            }
        });
    }
}

async fn handle(cfg: &BrokerConfig, conn: TcpStream) -> Result<(), String> {
    let (mut rd, mut wr) = conn.into_split();
    let req = tokio::time::timeout(
        Duration::from_secs(10),
        read_frame(&mut rd, MAX_CONTROL_FRAME),
    )
    .await
    .map_err(|_| "no launch request within 10 s".to_string())?
    .map_err(|e| e.to_string())?
    .ok_or("connection closed before a request")?;
    let req = LaunchRequest::decode(&req).map_err(|e| e.to_string())?;
    let bundle = match checked_bundle(&cfg.bundles_root, Path::new(&req.bundle)) {
        Ok(b) => b,
        Err(e) => {
            let _ = write_frame(&mut wr, &Event::Error(e.clone()).encode()).await;
            return Err(e);
        }
    };
    let app = gramine_app(&bundle).map_err(|e| e.to_string())?;
    let mut child = Command::new(&cfg.gramine_bin)
        .arg(&app)
        .args(&req.args)
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", cfg.gramine_bin.display()))?;
    let pid = child
        .id()
        .ok_or("the node exited before it could be tracked")?;
    info!(bundle = %bundle.display(), pid, "launched");
    let (tx, mut events) = tokio::sync::mpsc::channel::<Event>(64);
    let _ = tx
        .send(Event::Started {
            mr_enclave: dc_tee::Measurement::ZERO,
            mr_signer: dc_tee::Measurement::ZERO,
            pid,
        })
        .await;
    for (pipe, is_out) in [
        (
            child
                .stdout
                .take()
                .map(Box::new)
                .map(|b| b as Box<dyn AsyncRead + Send + Unpin>),
            true,
        ),
        (
            child
                .stderr
                .take()
                .map(Box::new)
                .map(|b| b as Box<dyn AsyncRead + Send + Unpin>),
            false,
        ),
    ] {
        if let Some(mut p) = pipe {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = p.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let d = buf[..n].to_vec();
                    let ev = if is_out {
                        Event::Stdout(d)
                    } else {
                        Event::Stderr(d)
                    };
                    if tx.send(ev).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
    drop(tx);
    let mut gone = [0u8; 1];
    let status = loop {
        tokio::select! {
            // `Some` only: once both pipes are closed, this branch is disabled (no busy loop).
            Some(ev) = events.recv() => {
                let _ = write_frame(&mut wr, &ev.encode()).await;
            },
            // The agent closed its side (stop requested, or it died): stop the node.
            r = rd.read(&mut gone) => {
                if matches!(r, Ok(0) | Err(_)) {
                    break stop(&mut child, pid, cfg.stop_grace).await;
                }
            },
            s = child.wait() => break s.ok(),
        }
    };
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), events.recv()).await {
        let _ = write_frame(&mut wr, &ev.encode()).await;
    }
    // Whatever the node left in its process group goes with it.
    // SAFETY: kill(2) on the group our child led; pid is non-zero here.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    let code = status.and_then(|s| s.code()).unwrap_or(137);
    info!(pid, code, "node exited");
    let _ = write_frame(&mut wr, &Event::Exited(code).encode()).await;
    Ok(())
}

async fn stop(
    child: &mut tokio::process::Child,
    pid: u32,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) on our own child's process group.
    unsafe { libc::kill(-(pid as i32), libc::SIGTERM) };
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s.ok(),
        Err(_) => {
            // SAFETY: as above.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            child.wait().await.ok()
        }
    }
}

/// The bundle directory, if it lies under `root` (after resolving links and `..`).
fn checked_bundle(root: &Path, bundle: &Path) -> Result<PathBuf, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let b = bundle
        .canonicalize()
        .map_err(|e| format!("{}: {e}", bundle.display()))?;
    if !b.starts_with(&root) {
        return Err(format!(
            "{} is outside the broker's bundle root {}",
            b.display(),
            root.display()
        ));
    }
    Ok(b)
}

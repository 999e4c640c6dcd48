//! Host-side preflight probes for `dcupgrade doctor`: each looks at one thing an agent needs
//! before upgrades are enabled and says PASS, WARN or FAIL with what to do. Nothing here acts
//! on what it finds; the agent makes every trust decision again inside its enclave.
//!
//! Paths (device directory, state directories, programs) are parameters, so that each probe
//! can be tested against a directory a test made.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dc_bundle::{Bundle, BundleError};
use dc_release::{Committee, ReleaseError, Role, SignedRecord, VerifiedRecord};
use serde::Serialize;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the doctor's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about a WARN or FAIL.
    pub advice: Option<String>,
}

impl Check {
    pub fn pass(check: &str, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            status: Status::Pass,
            detail: detail.into(),
            advice: None,
        }
    }
    pub fn warn(check: &str, detail: impl Into<String>, advice: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            status: Status::Warn,
            detail: detail.into(),
            advice: Some(advice.into()),
        }
    }
    pub fn fail(check: &str, detail: impl Into<String>, advice: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            status: Status::Fail,
            detail: detail.into(),
            advice: Some(advice.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("record {path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: ReleaseError,
    },
    #[error("bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("{0}")]
    Mismatch(String),
}

/// Opens and fully verifies a bundle (file hashes, signature, measurement).
pub fn open_bundle(dir: &Path) -> Result<Bundle, PreflightError> {
    Bundle::open(dir).map_err(|source| PreflightError::Bundle {
        path: dir.to_path_buf(),
        source,
    })
}

/// Reads `record_path`, checks its committee signatures (threshold and expiry at `now_secs`)
/// and its role, and that it names `bundle`'s MRENCLAVE and version. Returns the record as
/// read (to keep exactly what was verified) and what it verified to. The agent adopts its
/// installed node with this; the doctor checks with it.
pub fn verify_record_for(
    bundle: &Bundle,
    committee: &Committee,
    record_path: &Path,
    role: Role,
    now_secs: u64,
) -> Result<(SignedRecord, VerifiedRecord), PreflightError> {
    let bytes = dc_tee::read_limited(record_path, dc_release::record::MAX_RECORD_BYTES as u64)
        .map_err(|source| PreflightError::Io {
            path: record_path.to_path_buf(),
            source,
        })?;
    let rec = |source| PreflightError::Record {
        path: record_path.to_path_buf(),
        source,
    };
    let signed = SignedRecord::parse(&bytes).map_err(rec)?;
    let v = signed.verify(committee, now_secs).map_err(rec)?;
    if v.record.role != role {
        return Err(PreflightError::Mismatch(format!(
            "record {} is a {:?} record, not a {role:?} record",
            record_path.display(),
            v.record.role
        )));
    }
    if v.mr_enclave != bundle.mr_enclave {
        return Err(PreflightError::Mismatch(format!(
            "the bundle {} measures {}, but its record {} is signed for {}",
            bundle.dir.display(),
            bundle.mr_enclave,
            record_path.display(),
            v.mr_enclave
        )));
    }
    if v.record.version != bundle.manifest.version {
        return Err(PreflightError::Mismatch(format!(
            "the bundle {} is version {}, its record {} names {}",
            bundle.dir.display(),
            bundle.manifest.version,
            record_path.display(),
            v.record.version
        )));
    }
    Ok((signed, v))
}

// ---------------------------------------------------------------------------------------
// TEE platform

/// The software platform: its program, its state directory and its control socket, which
/// must answer. A deliberately malformed launch request is sent; the platform refuses it with
/// an error event (nothing is launched), which proves that it serves.
pub fn sim_platform(sim_bin: &Path, state: &Path, timeout: Duration) -> Check {
    const NAME: &str = "platform";
    let Some(sim_bin) = find_program(sim_bin) else {
        return Check::fail(
            NAME,
            format!(
                "the software platform's program {} is missing or not executable",
                sim_bin.display()
            ),
            "set `sim_bin` (--sim-bin) to the dctee-sim binary",
        );
    };
    let meta = match std::fs::metadata(state) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            return Check::fail(
                NAME,
                format!("{} is not a directory", state.display()),
                "set `platform_state` (--platform-state) to the directory `dctee-sim serve --state` uses",
            )
        }
        Err(e) => {
            return Check::fail(
                NAME,
                format!("platform state {}: {e}", state.display()),
                "start the platform (`dctee-sim serve --state DIR`) and set `platform_state` to its DIR",
            )
        }
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Check::fail(
            NAME,
            format!(
                "platform state {} is writable by others (mode {mode:o})",
                state.display()
            ),
            format!("chmod 700 {}", state.display()),
        );
    }
    let socket = state.join("control.sock");
    match probe_sim_socket(&socket, timeout) {
        Ok(()) => Check::pass(
            NAME,
            format!(
                "software TEE platform answers on {} (development only: not a security boundary)",
                socket.display()
            ),
        ),
        Err(e) => Check::fail(
            NAME,
            format!("the software platform at {}: {e}", socket.display()),
            format!(
                "start it: `{} serve --state {}` (or check `platform_state`)",
                sim_bin.display(),
                state.display()
            ),
        ),
    }
}

fn probe_sim_socket(socket: &Path, timeout: Duration) -> Result<(), String> {
    use dc_tee::sim::control::{Event, MAX_CONTROL_FRAME};
    use dc_tee::sim::wire;
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .and_then(|_| s.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    // Operation 0 does not exist: the platform answers with an error and launches nothing.
    wire::write_frame(&mut s, &[0u8]).map_err(|e| format!("sending a probe: {e}"))?;
    let frame = wire::read_frame(&mut s, MAX_CONTROL_FRAME)
        .map_err(|e| format!("no answer: {e}"))?
        .ok_or("it closed the connection without an answer")?;
    match Event::decode(&frame) {
        Ok(Event::Error(_)) => Ok(()),
        Ok(other) => Err(format!("unexpected answer to a probe: {other:?}")),
        Err(e) => Err(format!("not a software TEE platform: {e}")),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds a program as `Command` would: a path with a `/` as is, else on `PATH`.
pub fn find_program(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 || p.is_absolute() {
        return is_executable(p).then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(p))
            .find(|c| is_executable(c))
    })
}

/// Intel SGX on this host: the in-kernel driver's device nodes under `dev` (`/dev` in the
/// program) and the Gramine version `gramine_bin --version` reports.
pub fn sgx_platform(dev: &Path, gramine_bin: &Path, timeout: Duration) -> Vec<Check> {
    let mut out = Vec::new();
    let enclave = dev.join("sgx_enclave");
    let legacy = dev.join("sgx").join("enclave");
    out.push(if enclave.exists() {
        Check::pass("sgx_enclave", format!("{} present", enclave.display()))
    } else if legacy.exists() {
        Check::fail(
            "sgx_enclave",
            format!(
                "only the legacy out-of-tree driver's {} exists",
                legacy.display()
            ),
            "Gramine needs the in-kernel SGX driver: Linux 5.11 or later (sgx_enclave)",
        )
    } else {
        Check::fail(
            "sgx_enclave",
            format!("{} does not exist: no SGX driver", enclave.display()),
            "enable SGX (and Flexible Launch Control) in the firmware and run Linux 5.11 or later; check `dmesg | grep -i sgx`",
        )
    });
    let provision = dev.join("sgx_provision");
    out.push(if provision.exists() {
        Check::pass("sgx_provision", format!("{} present", provision.display()))
    } else {
        Check::warn(
            "sgx_provision",
            format!("{} does not exist", provision.display()),
            "remote attestation (DCAP quotes) needs it; local attestation between agent and node does not. Load the in-kernel driver with provisioning support",
        )
    });
    out.push(gramine_version(gramine_bin, timeout));
    out
}

/// The oldest Gramine the deployment guide was written for.
pub const MIN_GRAMINE: (u32, u32) = (1, 4);

fn gramine_version(bin: &Path, timeout: Duration) -> Check {
    const NAME: &str = "gramine";
    let Some(path) = find_program(bin) else {
        return Check::fail(
            NAME,
            format!("{} not found", bin.display()),
            "install Gramine (https://gramine.readthedocs.io) or set `gramine_bin`",
        );
    };
    let out = match run_with_timeout(&path, &["--version"], timeout) {
        Ok(o) => o,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("`{} --version`: {e}", path.display()),
                "check the Gramine installation",
            )
        }
    };
    match parse_gramine_version(&out) {
        Some((maj, min)) if (maj, min) >= MIN_GRAMINE => {
            Check::pass(NAME, format!("{} is Gramine {maj}.{min}", path.display()))
        }
        Some((maj, min)) => Check::warn(
            NAME,
            format!("{} is Gramine {maj}.{min}", path.display()),
            format!(
                "upgrade to Gramine {}.{} or later",
                MIN_GRAMINE.0, MIN_GRAMINE.1
            ),
        ),
        None => Check::warn(
            NAME,
            format!(
                "`{} --version` printed no Gramine version: {:?}",
                path.display(),
                out.lines().next().unwrap_or("")
            ),
            "check that this is Gramine's gramine-sgx",
        ),
    }
}

/// `Gramine 1.7 (…)` or `gramine-sgx 1.7` → (1, 7).
pub fn parse_gramine_version(text: &str) -> Option<(u32, u32)> {
    text.lines()
        .filter(|l| l.to_ascii_lowercase().contains("gramine"))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ','))
        .map(|w| w.trim_start_matches(['v', 'V']))
        .find_map(|w| {
            let mut it = w.split('.');
            let maj = it.next()?.parse().ok()?;
            let min = it
                .next()?
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()?;
            Some((maj, min))
        })
}

/// Runs a program, returning stdout and stderr; killed after `timeout`.
fn run_with_timeout(bin: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let end = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {}s", timeout.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut text = String::new();
    for r in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut b = Vec::new();
        let _ = r.take(64 * 1024).read_to_end(&mut b);
        text.push_str(&String::from_utf8_lossy(&b));
    }
    Ok(text)
}

// ---------------------------------------------------------------------------------------
// Disk

/// Free bytes for an unprivileged user on the file system of `path` (or of its nearest
/// existing ancestor, when the directory is not created yet).
pub fn free_bytes(path: &Path) -> Result<u64, PreflightError> {
    let existing = path
        .ancestors()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
        .unwrap_or(Path::new("."));
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
        .map_err(|_| PreflightError::Mismatch(format!("{} contains a NUL byte", path.display())))?;
    // SAFETY: statvfs is a plain C struct of integers, for which all-zero bytes are valid.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs(3) with a valid C string and a struct we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(PreflightError::Io {
            path: existing.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Enough room in the state directory for the largest artifact the agent may download: FAIL
/// below one artifact, WARN below two (the archive and its unpacked bundle).
pub fn disk(state: &Path, free: u64, largest: u64, why: &str) -> Check {
    const NAME: &str = "disk";
    let detail = format!(
        "{} free in {}; the largest allowed artifact is {} ({why})",
        crate::download::format_bytes(free),
        state.display(),
        crate::download::format_bytes(largest)
    );
    if free < largest {
        Check::fail(
            NAME,
            detail,
            "free space on that file system or move `state` to a larger one; a download stops when the disk is full",
        )
    } else if free / 2 < largest {
        Check::warn(
            NAME,
            detail,
            "an upgrade keeps the archive and its unpacked bundle: free twice the artifact size",
        )
    } else {
        Check::pass(NAME, detail)
    }
}

/// The state directory exists (or can be created) and is writable.
pub fn state_dir(state: &Path) -> Check {
    const NAME: &str = "state_dir";
    if !state.exists() {
        let parent = state
            .ancestors()
            .skip(1)
            .find(|p| !p.as_os_str().is_empty() && p.exists());
        return match parent {
            Some(p) if writable_dir(p) => Check::pass(
                NAME,
                format!(
                    "{} does not exist yet; the agent creates it in {}",
                    state.display(),
                    p.display()
                ),
            ),
            _ => Check::fail(
                NAME,
                format!(
                    "{} does not exist and cannot be created here",
                    state.display()
                ),
                format!(
                    "create it for the agent's user: install -d -m 700 {}",
                    state.display()
                ),
            ),
        };
    }
    if !state.is_dir() {
        return Check::fail(
            NAME,
            format!("{} is not a directory", state.display()),
            "point `state` at a directory",
        );
    }
    if writable_dir(state) {
        Check::pass(NAME, format!("{} is writable", state.display()))
    } else {
        Check::fail(
            NAME,
            format!("{} is not writable by this user", state.display()),
            "run the doctor as the agent's user, or fix the directory's owner",
        )
    }
}

fn writable_dir(d: &Path) -> bool {
    let c = match std::ffi::CString::new(d.as_os_str().as_encoded_bytes()) {
        Ok(c) => c,
        Err(_) => return false,
    };
    // SAFETY: access(2) with a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

// ---------------------------------------------------------------------------------------
// Ports

/// A process listening on a TCP port: its pid and command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub cmdline: Vec<String>,
}

impl Holder {
    /// The program's file name.
    pub fn program(&self) -> String {
        self.cmdline
            .first()
            .map(|a| {
                Path::new(a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| a.clone())
            })
            .unwrap_or_default()
    }

    pub fn describe(&self) -> String {
        let mut s = format!("pid {} ({}", self.pid, self.program());
        for a in self.cmdline.iter().skip(1).take(3) {
            s.push(' ');
            s.push_str(a);
        }
        if self.cmdline.len() > 4 {
            s.push_str(" …");
        }
        s.push(')');
        s
    }
}

/// The socket inodes of TCP listeners on `port` (any address), from `proc/net/tcp{,6}`.
pub fn listening_inodes(proc_root: &Path, port: u16) -> Vec<u64> {
    let mut out = Vec::new();
    for f in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(proc_root.join(f)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let p = cols[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if p == Some(port) {
                if let Ok(inode) = cols[9].parse() {
                    out.push(inode);
                }
            }
        }
    }
    out
}

/// The processes (that this user may inspect) holding a listening socket on `port`.
pub fn port_holders(proc_root: &Path, port: u16) -> Vec<Holder> {
    let inodes = listening_inodes(proc_root, port);
    if inodes.is_empty() {
        return Vec::new();
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(proc_root) else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| targets.iter().any(|t| l.as_os_str() == t.as_str()))
        });
        if holds {
            let cmdline = std::fs::read(e.path().join("cmdline"))
                .map(|b| {
                    b.split(|&c| c == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            out.push(Holder { pid, cmdline });
        }
    }
    out.sort_by_key(|h| h.pid);
    out
}

/// Whether `addr` can be bound now (`Ok(true)`), is in use (`Ok(false)`), or cannot be bound
/// at all (the error: an address not on this host, a privileged port).
pub fn port_free(addr: std::net::SocketAddr) -> Result<bool, std::io::Error> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(false),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------
// Clock

/// 2024-01-01T00:00:00Z: no clock of a machine running this is earlier.
pub const CLOCK_FLOOR_SECS: u64 = 1_704_067_200;
/// How far ahead of the clock a file written by the agent may be before it is suspicious.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// How far the clock may be from DCChain's finalized block time: block timestamps follow
/// slots, and finality lags the best block by a few of them.
pub const CHAIN_SKEW: Duration = Duration::from_secs(600);

/// The time a chain endpoint's finalized block carries (`Timestamp.Now`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainTime {
    pub endpoint: String,
    pub block: u64,
    pub at: SystemTime,
    /// The finalized head advanced while it was watched (the time is current, not stale).
    pub advancing: bool,
}

/// The clock is plausible: not before 2024, not behind the last time the agent wrote its
/// journal (`last_write`), and close to DCChain's finalized block time if known. A block
/// time ahead of the clock always means a slow clock; the clock ahead of the block time only
/// counts when the chain was seen finalizing (a stalled chain's time is old).
pub fn clock(now: SystemTime, last_write: Option<SystemTime>, chain: Option<&ChainTime>) -> Check {
    const NAME: &str = "clock";
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    const NTP: &str = "check time synchronization (`timedatectl status`; enable NTP with `timedatectl set-ntp true`)";
    if secs < CLOCK_FLOOR_SECS {
        return Check::fail(
            NAME,
            format!("the system clock says {secs} s since 1970, before 2024"),
            format!("set the clock: record expiry and TLS certificates depend on it; {NTP}"),
        );
    }
    if let Some(w) = last_write {
        if let Ok(ahead) = w.duration_since(now) {
            if ahead > CLOCK_SKEW {
                return Check::warn(
                    NAME,
                    format!(
                        "the agent's journal was written {} s in the future of this clock",
                        ahead.as_secs()
                    ),
                    format!("the clock went backwards: {NTP}"),
                );
            }
        }
    }
    let mut detail = format!("{secs} s since 1970 (UTC)");
    if let Some(c) = chain {
        let what = format!("{} block #{}", c.endpoint, c.block);
        match c.at.duration_since(now) {
            Ok(behind) if behind > CHAIN_SKEW => {
                return Check::warn(
                    NAME,
                    format!(
                        "this clock is {} s behind the time of {what}",
                        behind.as_secs()
                    ),
                    NTP,
                )
            }
            Ok(d) => detail.push_str(&format!("; {} s before {what}", d.as_secs())),
            Err(e) => {
                let ahead = e.duration();
                if ahead > CHAIN_SKEW && c.advancing {
                    return Check::warn(
                        NAME,
                        format!(
                            "this clock is {} s ahead of the time of {what}",
                            ahead.as_secs()
                        ),
                        NTP,
                    );
                }
                detail.push_str(&format!("; {} s after {what}", ahead.as_secs()));
            }
        }
    }
    Check::pass(NAME, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gramine_versions() {
        assert_eq!(
            parse_gramine_version("Gramine 1.7 (e5e3ac2)\n"),
            Some((1, 7))
        );
        assert_eq!(parse_gramine_version("gramine-sgx v1.4.1"), Some((1, 4)));
        assert_eq!(parse_gramine_version("usage: gramine-sgx <app>"), None);
        assert_eq!(parse_gramine_version("something 2.0"), None);
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn status_of(cs: &[Check], name: &str) -> Status {
        cs.iter()
            .find(|c| c.check == name)
            .unwrap_or_else(|| panic!("no {name} in {cs:?}"))
            .status
    }

    #[test]
    fn sgx_probe_with_devices_and_gramine() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        std::fs::write(dev.join("sgx_enclave"), b"").unwrap();
        std::fs::write(dev.join("sgx_provision"), b"").unwrap();
        let g = script(d.path(), "gramine-sgx", "echo 'Gramine 1.8 (abc)'");
        let cs = sgx_platform(&dev, &g, Duration::from_secs(30));
        assert!(cs.iter().all(|c| c.status == Status::Pass), "{cs:?}");
    }

    #[test]
    fn sgx_probe_failures() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        // No driver, no gramine.
        let cs = sgx_platform(&dev, &d.path().join("nope"), Duration::from_secs(30));
        assert_eq!(status_of(&cs, "sgx_enclave"), Status::Fail);
        assert_eq!(status_of(&cs, "sgx_provision"), Status::Warn);
        assert_eq!(status_of(&cs, "gramine"), Status::Fail);
        // The legacy driver only; an old Gramine; a program that is not Gramine.
        std::fs::create_dir(dev.join("sgx")).unwrap();
        std::fs::write(dev.join("sgx").join("enclave"), b"").unwrap();
        let old = script(d.path(), "old", "echo 'Gramine 1.2'");
        let cs = sgx_platform(&dev, &old, Duration::from_secs(30));
        assert_eq!(status_of(&cs, "sgx_enclave"), Status::Fail);
        assert!(cs[0].detail.contains("legacy"), "{cs:?}");
        assert_eq!(status_of(&cs, "gramine"), Status::Warn);
        let other = script(d.path(), "other", "echo hello");
        let cs = sgx_platform(&dev, &other, Duration::from_secs(30));
        assert_eq!(status_of(&cs, "gramine"), Status::Warn);
        let failing = script(d.path(), "failing", "exit 3");
        let cs = sgx_platform(&dev, &failing, Duration::from_secs(30));
        assert_eq!(status_of(&cs, "gramine"), Status::Warn);
    }

    #[test]
    fn disk_thresholds() {
        let p = Path::new("/s");
        assert_eq!(disk(p, 99, 100, "x").status, Status::Fail);
        assert_eq!(disk(p, 150, 100, "x").status, Status::Warn);
        assert_eq!(disk(p, 200, 100, "x").status, Status::Pass);
        let d = tempfile::tempdir().unwrap();
        let free = free_bytes(&d.path().join("not/yet")).unwrap();
        assert!(free > 0);
    }

    #[test]
    fn clock_checks() {
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let now = 1_800_000_000;
        assert_eq!(clock(t(1_000_000_000), None, None).status, Status::Fail);
        assert_eq!(clock(t(now), None, None).status, Status::Pass);
        assert_eq!(
            clock(t(now), Some(t(now + 3600)), None).status,
            Status::Warn
        );
        assert_eq!(
            clock(t(now), Some(t(now - 3600)), None).status,
            Status::Pass
        );
        let chain = |at, advancing| ChainTime {
            endpoint: "ws://x".into(),
            block: 7,
            at: t(at),
            advancing,
        };
        // Near the chain, behind it, ahead of it (only counted when it finalizes).
        for (at, advancing, want) in [
            (now - 30, true, Status::Pass),
            (now + 30, false, Status::Pass),
            (now + 3600, false, Status::Warn),
            (now + 3600, true, Status::Warn),
            (now - 3600, true, Status::Warn),
            (now - 3600, false, Status::Pass),
        ] {
            let c = clock(t(now), None, Some(&chain(at, advancing)));
            assert_eq!(c.status, want, "{at} {advancing}: {c:?}");
        }
    }

    #[test]
    fn port_holder_found_in_proc() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!port_free(l.local_addr().unwrap()).unwrap());
        let hs = port_holders(Path::new("/proc"), port);
        assert!(
            hs.iter().any(|h| h.pid == std::process::id()),
            "{hs:?} should include this test process"
        );
        drop(l);
        assert!(port_holders(Path::new("/proc"), port).is_empty());
    }

    #[test]
    fn state_dir_checks() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(state_dir(d.path()).status, Status::Pass);
        assert_eq!(state_dir(&d.path().join("new")).status, Status::Pass);
        let f = d.path().join("file");
        std::fs::write(&f, b"").unwrap();
        assert_eq!(state_dir(&f).status, Status::Fail);
    }

    #[test]
    fn sim_platform_answers() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("platform");
        let server = dc_tee_sim::server::Server::bind(&state, None).unwrap();
        std::thread::spawn(move || server.run());
        let sim = script(d.path(), "dctee-sim", "true");
        let c = sim_platform(&sim, &state, Duration::from_secs(30));
        assert_eq!(c.status, Status::Pass, "{c:?}");
        // Something else listening on the socket path is not a platform.
        let other = d.path().join("other");
        std::fs::create_dir(&other).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
        let l = std::os::unix::net::UnixListener::bind(other.join("control.sock")).unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                drop(c);
            }
        });
        let c = sim_platform(&sim, &other, Duration::from_secs(30));
        assert_eq!(c.status, Status::Fail, "{c:?}");
    }

    #[test]
    fn sim_platform_missing() {
        let d = tempfile::tempdir().unwrap();
        let sim = script(d.path(), "dctee-sim", "true");
        let c = sim_platform(&sim, &d.path().join("none"), Duration::from_secs(5));
        assert_eq!(c.status, Status::Fail);
        let c = sim_platform(&d.path().join("x"), d.path(), Duration::from_secs(5));
        assert_eq!(c.status, Status::Fail);
        // A state directory without a serving platform.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let c = sim_platform(&sim, d.path(), Duration::from_secs(5));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.detail.contains("control.sock"), "{c:?}");
    }
}

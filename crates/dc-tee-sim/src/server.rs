//! `dctee-sim serve`: accepts launch requests on a private Unix socket, measures and starts
//! enclaves, and serves each one's private channel.
//!
//! One thread per enclave channel and per launch; a misbehaving enclave (garbage, oversized
//! frames) loses only its own channel.
//!
//! A launch may pass listening TCP sockets ([`dc_tee::sim::control::LaunchWithListeners`]):
//! the enclave gets them at fds 3, 4, … with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`
//! (systemd socket activation, [`dc_tee::sim::listen`]) and its channel right after them, at
//! the fd `DCTEE_SIM_FD` names (3 when no socket is passed). The platform keeps no copy.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dc_bundle::{Bundle, BundleKind};
use dc_tee::sgx::{ConfigId, EgetkeyError};
use dc_tee::sim::control::{Event, LaunchRequest, LaunchWithListeners, MAX_CONTROL_FRAME};
use dc_tee::sim::listen::{
    check_listening_tcp, LISTEN_FDNAMES_ENV, LISTEN_FDS_ENV, LISTEN_FDS_START, LISTEN_PID_ENV,
    MAX_LISTEN_FDS,
};
use dc_tee::sim::{wire, CHANNEL_FD_ENV};
use dc_tee::{CpuSvn, EnclaveIdentity, KeyId, KeyRequest, ReportData, TargetInfo};

use crate::platform::Platform;
use crate::state::{StateDir, StateError};

/// How long a stopped enclave gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("another platform is already serving on {0}; stop it first or use another --state directory")]
    AlreadyRunning(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

pub struct Server {
    platform: Arc<Platform>,
    enclaves_dir: PathBuf,
    listener: UnixListener,
    socket: PathBuf,
}

impl Server {
    /// Loads (or creates) the platform state and binds the control socket.
    pub fn bind(state_dir: &Path, new_cpu_svn: Option<CpuSvn>) -> Result<Self, ServeError> {
        let state = StateDir::open(state_dir)?;
        let root = state.root_secret()?;
        if let Some(svn) = new_cpu_svn {
            state.set_cpu_svn(svn)?;
        }
        let cpu_svn = state.cpu_svn()?;
        let mut key_id = [0u8; 32];
        getrandom::getrandom(&mut key_id)
            .map_err(|e| io_err("randomness")(std::io::Error::other(e.to_string())))?;
        let socket = state.control_socket();
        if socket.exists() {
            if UnixStream::connect(&socket).is_ok() {
                return Err(ServeError::AlreadyRunning(socket));
            }
            std::fs::remove_file(&socket)
                .map_err(io_err(format!("removing stale {}", socket.display())))?;
        }
        let enclaves_dir = state.enclaves_dir();
        // Copies left by a previous run (crash) are stale: no enclave runs from them any more.
        let _ = std::fs::remove_dir_all(&enclaves_dir);
        std::fs::create_dir_all(&enclaves_dir)
            .map_err(io_err(enclaves_dir.display().to_string()))?;
        std::fs::set_permissions(&enclaves_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(enclaves_dir.display().to_string()))?;
        // Nothing the platform creates may exist with looser permissions, not even briefly.
        // SAFETY: umask(2) has no memory-safety preconditions.
        unsafe { libc::umask(0o077) };
        let listener =
            UnixListener::bind(&socket).map_err(io_err(format!("binding {}", socket.display())))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(socket.display().to_string()))?;
        Ok(Self {
            platform: Arc::new(Platform::new(root, cpu_svn, KeyId(key_id))),
            enclaves_dir,
            listener,
            socket,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn cpu_svn(&self) -> CpuSvn {
        self.platform.cpu_svn()
    }

    /// Serves until the process is killed.
    pub fn run(self) -> Result<(), ServeError> {
        let seq = Arc::new(AtomicU64::new(0));
        for conn in self.listener.incoming() {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("dctee-sim: accept failed: {e}");
                    continue;
                }
            };
            let platform = self.platform.clone();
            let dir = self
                .enclaves_dir
                .join(format!("{}", seq.fetch_add(1, Ordering::Relaxed)));
            std::thread::spawn(move || handle_control(platform, dir, conn));
        }
        Ok(())
    }
}

fn handle_control(platform: Arc<Platform>, dir: PathBuf, mut conn: UnixStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    let req = match wire::read_frame(&mut conn, MAX_CONTROL_FRAME)
        .and_then(|f| f.ok_or_else(|| std::io::Error::other("no request")))
        .and_then(|f| LaunchWithListeners::decode(&f))
    {
        Ok(r) => r,
        Err(e) => {
            let _ = wire::write_frame(
                &mut conn,
                &Event::Error(format!("bad launch request: {e}")).encode(),
            );
            return;
        }
    };
    let listeners = match receive_listeners(&conn, &req.listener_names) {
        Ok(l) => l,
        Err(msg) => {
            eprintln!("dctee-sim: launch of {} refused: {msg}", req.request.bundle);
            let _ = wire::write_frame(&mut conn, &Event::Error(msg).encode());
            return;
        }
    };
    if let Err(msg) = launch(&platform, &dir, conn.try_clone(), &req.request, listeners) {
        eprintln!("dctee-sim: launch of {} refused: {msg}", req.request.bundle);
        let _ = wire::write_frame(&mut conn, &Event::Error(msg).encode());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Listening sockets passed to one enclave, with their names.
struct Listeners {
    names: Vec<String>,
    fds: Vec<OwnedFd>,
}

impl Listeners {
    fn none() -> Self {
        Self {
            names: Vec::new(),
            fds: Vec::new(),
        }
    }
}

/// Takes the sockets that follow a launch request naming `names`: exactly one per name, and
/// every one a listening TCP socket. Whatever is refused is closed here.
fn receive_listeners(conn: &UnixStream, names: &[String]) -> Result<Listeners, String> {
    if names.is_empty() {
        return Ok(Listeners::none());
    }
    let fds = crate::fds::recv_fds(conn, MAX_LISTEN_FDS)
        .map_err(|e| format!("receiving the listening sockets: {e}"))?;
    if fds.len() != names.len() {
        return Err(format!(
            "the request names {} listening sockets but {} descriptors came with it",
            names.len(),
            fds.len()
        ));
    }
    for (name, fd) in names.iter().zip(&fds) {
        check_listening_tcp(fd.as_fd()).map_err(|e| {
            format!("listening socket {name:?}: only listening TCP sockets can be passed to an enclave; {e}")
        })?;
    }
    Ok(Listeners {
        names: names.to_vec(),
        fds,
    })
}

/// The identity the platform gives an enclave of `bundle`.
pub fn identity_of(bundle: &Bundle) -> EnclaveIdentity {
    EnclaveIdentity {
        mr_enclave: bundle.mr_enclave,
        mr_signer: bundle.mr_signer,
        isv_prod_id: bundle.manifest.isv_prod_id,
        isv_svn: bundle.manifest.isv_svn,
        attributes: bundle.manifest.attributes(),
        misc_select: 0,
        config_id: ConfigId::ZERO,
        config_svn: 0,
        cet_attributes: 0,
    }
}

/// The platform assigns identities it computes from a bundle's own files. A Gramine bundle's
/// MRENCLAVE is whatever its SIGSTRUCT says: on SGX the CPU checks that at EINIT, here nothing
/// would, so any bundle could claim any identity.
fn refuse_unmeasurable(src: &Path, bundle: &Bundle) -> Result<(), String> {
    match bundle.kind {
        BundleKind::Sim => Ok(()),
        BundleKind::Gramine(_) => Err(format!(
            "bundle {}: the software platform runs only software-platform bundles; a Gramine bundle's identity comes from its SIGSTRUCT, which this platform cannot verify. Run it with gramine-sgx on an SGX machine, or build a software-platform bundle (dctee-sim bundle)",
            src.display()
        )),
    }
}

/// Variables only the platform sets; a launcher may not, whatever the manifest lists.
const RESERVED_ENV: [&str; 4] = [
    CHANNEL_FD_ENV,
    LISTEN_FDS_ENV,
    LISTEN_FDNAMES_ENV,
    LISTEN_PID_ENV,
];

fn launch(
    platform: &Arc<Platform>,
    dir: &Path,
    conn: std::io::Result<UnixStream>,
    req: &LaunchRequest,
    listeners: Listeners,
) -> Result<(), String> {
    let conn = conn.map_err(|e| e.to_string())?;
    let src = Path::new(&req.bundle);
    if !src.is_absolute() || !Path::new(&req.cwd).is_absolute() {
        return Err("bundle and working directory must be absolute paths".into());
    }
    // Measure a private copy and run that copy, so the files cannot change between
    // measurement and execution.
    let opened = Bundle::open(src).map_err(|e| format!("bundle {}: {e}", src.display()))?;
    refuse_unmeasurable(src, &opened)?;
    // The copy is what runs; `copy_verified` refuses a copy whose identity (measurement,
    // signer, kind, manifest) differs from what was checked here.
    let bundle = opened
        .copy_verified(dir)
        .map_err(|e| format!("bundle {}: {e}", src.display()))?;
    let identity = identity_of(&bundle);
    let (platform_end, enclave_end) = UnixStream::pair().map_err(|e| e.to_string())?;

    // What the enclave process is started with: nothing of the platform's own environment.
    let mut env = vec![(
        "PATH".to_string(),
        "/usr/local/bin:/usr/bin:/bin".to_string(),
    )];
    for kv in &req.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("environment entry {kv:?} is not KEY=VALUE"))?;
        if RESERVED_ENV.contains(&k) {
            return Err(format!(
                "environment variable {k:?} may not be set by the launcher: only the platform sets it"
            ));
        }
        let listed = bundle.manifest.env_passthrough.iter().any(|p| p == k);
        if k.starts_with("LD_") || !listed {
            return Err(format!(
                "environment variable {k:?} may not be set by the launcher: the measured manifest does not list it in env_passthrough"
            ));
        }
        env.push((k.to_string(), v.to_string()));
    }
    // The passed sockets at 3, 4, … (the socket-activation convention), the channel after them.
    let n = listeners.fds.len();
    let channel_fd = LISTEN_FDS_START + n as libc::c_int;
    env.push((CHANNEL_FD_ENV.to_string(), channel_fd.to_string()));
    if n > 0 {
        env.push((LISTEN_FDS_ENV.to_string(), n.to_string()));
        env.push((LISTEN_FDNAMES_ENV.to_string(), listeners.names.join(":")));
    }
    let entrypoint = bundle.entrypoint();
    let mut args: Vec<&[u8]> = vec![entrypoint.as_os_str().as_bytes()];
    args.extend(bundle.manifest.args.iter().map(|a| a.as_bytes()));
    args.extend(req.args.iter().map(|a| a.as_bytes()));
    let mut sources: Vec<libc::c_int> = listeners.fds.iter().map(|f| f.as_raw_fd()).collect();
    sources.push(enclave_end.as_raw_fd());
    let mut image = ExecImage::new(&args, &env, n > 0, sources)?;

    let mut cmd = Command::new(&entrypoint);
    cmd.current_dir(&req.cwd)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let max_fd = fd_limit();
    // SAFETY: only async-signal-safe calls between fork and exec (fcntl, dup2, close_range,
    // getpid, execve), on memory prepared before the fork; see `ExecImage::exec`.
    unsafe {
        cmd.pre_exec(move || image.exec(max_fd));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", bundle.entrypoint().display()))?;
    drop(enclave_end);
    // The enclave has its own copies; the platform keeps none.
    drop(listeners);
    let pid = child.id();
    eprintln!(
        "dctee-sim: launched {} {} pid {pid} mrenclave {}{}",
        bundle.manifest.name,
        bundle.manifest.version,
        bundle.mr_enclave,
        if identity.is_debug() { " (DEBUG)" } else { "" }
    );

    let writer = Arc::new(Mutex::new(conn.try_clone().map_err(|e| e.to_string())?));
    let send = {
        let writer = writer.clone();
        move |ev: Event| -> bool {
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            wire::write_frame(&mut *w, &ev.encode()).is_ok()
        }
    };
    send(Event::Started {
        mr_enclave: bundle.mr_enclave,
        mr_signer: bundle.mr_signer,
        pid,
    });

    {
        let platform = platform.clone();
        let manifest = bundle.manifest_bytes.clone();
        std::thread::spawn(move || serve_channel(&platform, &identity, &manifest, platform_end));
    }
    let mut relays = Vec::new();
    if let Some(out) = child.stdout.take() {
        let send = send.clone();
        relays.push(std::thread::spawn(move || {
            pump(out, |d| send(Event::Stdout(d.to_vec())))
        }));
    }
    if let Some(err) = child.stderr.take() {
        let send = send.clone();
        relays.push(std::thread::spawn(move || {
            pump(err, |d| send(Event::Stderr(d.to_vec())))
        }));
    }

    // The launcher going away (killed, or closed its connection) stops the enclave.
    let exited = Arc::new(AtomicBool::new(false));
    {
        let exited = exited.clone();
        let mut conn = conn;
        let _ = conn.set_read_timeout(None);
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            while matches!(conn.read(&mut b), Ok(n) if n > 0) {}
            terminate(pid, &exited);
        });
    }

    let status = child.wait().map_err(|e| e.to_string())?;
    exited.store(true, Ordering::SeqCst);
    // Whatever the enclave left behind in its process group dies with it.
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    for r in relays {
        let _ = r.join();
    }
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    eprintln!(
        "dctee-sim: {} pid {pid} exited with {code}",
        bundle.manifest.name
    );
    send(Event::Exited(code));
    Ok(())
}

/// The enclave's `execve(2)`, prepared before the fork so that the child only copies bytes
/// and makes async-signal-safe calls. It replaces std's own exec (the last thing `pre_exec`
/// hooks run before): std cannot set `LISTEN_PID`, which only the child knows.
struct ExecImage {
    path: CString,
    _args: Vec<CString>,
    _env: Vec<Vec<u8>>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// `LISTEN_PID=` and room for the digits, written in the child; null if not passed.
    pid_slot: *mut u8,
    /// Descriptors to place at 3, 4, … in this order.
    sources: Vec<libc::c_int>,
}

// SAFETY: the raw pointers point into heap buffers the struct owns (moving it does not move
// them); it is used by one thread at a time (the spawning one, then the child's only thread).
unsafe impl Send for ExecImage {}
// SAFETY: as above; `exec` takes `&mut self`.
unsafe impl Sync for ExecImage {}

const PID_PREFIX: &[u8] = b"LISTEN_PID=";
const PID_DIGITS: usize = 10;

impl ExecImage {
    fn new(
        args: &[&[u8]],
        env: &[(String, String)],
        listen_pid: bool,
        sources: Vec<libc::c_int>,
    ) -> Result<Self, String> {
        let cstr = |b: &[u8]| {
            CString::new(b).map_err(|_| "a NUL byte in an argument or variable".to_string())
        };
        let args: Vec<CString> = args.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
        let mut envs: Vec<Vec<u8>> = env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()).map(CString::into_bytes_with_nul))
            .collect::<Result<_, _>>()?;
        if listen_pid {
            let mut slot = PID_PREFIX.to_vec();
            slot.resize(PID_PREFIX.len() + PID_DIGITS + 1, 0);
            envs.push(slot);
        }
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = envs.iter().map(|e| e.as_ptr().cast()).collect();
        envp.push(std::ptr::null());
        let pid_slot = if listen_pid {
            envs.last_mut().expect("pushed above").as_mut_ptr()
        } else {
            std::ptr::null_mut()
        };
        if sources.len() > MAX_LISTEN_FDS + 1 {
            return Err("too many descriptors for an enclave".into());
        }
        Ok(Self {
            path: args[0].clone(),
            _args: args,
            _env: envs,
            argv,
            envp,
            pid_slot,
            sources,
        })
    }

    /// In the child, between fork and exec: places the descriptors, marks everything above
    /// them close-on-exec, fills in `LISTEN_PID`, and executes the enclave. Returns only on
    /// failure.
    fn exec(&mut self, max_fd: libc::c_int) -> std::io::Result<()> {
        let os_err = std::io::Error::last_os_error;
        let n = self.sources.len() as libc::c_int;
        let first = LISTEN_FDS_START;
        let above = first + n;
        // SAFETY: fcntl, dup2, close_range, getpid and execve are async-signal-safe; the only
        // memory touched is this struct's, allocated before the fork.
        unsafe {
            // First out of the way (a source may sit where another belongs), then into place;
            // dup2 clears close-on-exec on the placed copy, the temporaries keep it.
            let mut tmp = [0 as libc::c_int; MAX_LISTEN_FDS + 1];
            for (i, &src) in self.sources.iter().enumerate() {
                tmp[i] = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, above);
                if tmp[i] < 0 {
                    return Err(os_err());
                }
            }
            for (i, &t) in tmp[..self.sources.len()].iter().enumerate() {
                if libc::dup2(t, first + i as libc::c_int) < 0 {
                    return Err(os_err());
                }
            }
            close_on_exec_from(above, max_fd);
            if !self.pid_slot.is_null() {
                let mut pid = libc::getpid() as u32;
                let mut digits = [0u8; PID_DIGITS];
                let mut len = 0;
                loop {
                    digits[len] = b'0' + (pid % 10) as u8;
                    len += 1;
                    pid /= 10;
                    if pid == 0 || len == PID_DIGITS {
                        break;
                    }
                }
                let out = self.pid_slot.add(PID_PREFIX.len());
                for i in 0..len {
                    *out.add(i) = digits[len - 1 - i];
                }
                *out.add(len) = 0;
            }
            libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
        }
        Err(os_err())
    }
}

/// One past the highest fd this process can have open.
fn fd_limit() -> libc::c_int {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    // Linux caps RLIMIT_NOFILE at fs.nr_open (1Mi by default); bound the fallback loop.
    libc::c_int::try_from(r.rlim_cur.min(1 << 20)).unwrap_or(1 << 20)
}

/// Marks every fd from `first` on close-on-exec, in the child between fork and exec: the
/// enclave gets its channel, the sockets passed to it and its standard streams, and nothing
/// else the platform happened to inherit or hold (std's exec-error pipe is already
/// close-on-exec, so it keeps working).
///
/// # Safety
/// Async-signal-safe calls only; for use in `pre_exec`.
unsafe fn close_on_exec_from(first: libc::c_int, limit: libc::c_int) {
    let done = libc::syscall(
        libc::SYS_close_range,
        first as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    ) == 0;
    if !done {
        // Kernels before 5.11: one fcntl per possible fd.
        for fd in first..limit {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

fn terminate(pid: u32, exited: &AtomicBool) {
    if exited.load(Ordering::SeqCst) {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions. The negative pid targets the
    // enclave's own process group, which it leads until it exits.
    unsafe { libc::kill(-(pid as i32), libc::SIGTERM) };
    let deadline = std::time::Instant::now() + STOP_GRACE;
    while std::time::Instant::now() < deadline {
        if exited.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if !exited.load(Ordering::SeqCst) {
        // SAFETY: as above.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    }
}

/// Serves one enclave's channel until it closes or violates the protocol.
pub fn serve_channel(
    platform: &Platform,
    me: &EnclaveIdentity,
    manifest: &[u8],
    mut ch: UnixStream,
) {
    let _ = ch.set_write_timeout(Some(Duration::from_secs(10)));
    loop {
        let frame = match wire::read_frame(&mut ch, wire::MAX_REQUEST) {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                eprintln!("dctee-sim: enclave {} channel closed: {e}", me.mr_enclave);
                let _ = wire::write_frame(&mut ch, &refusal(&e.to_string()));
                return;
            }
        };
        if wire::write_frame(&mut ch, &handle_request(platform, me, manifest, &frame)).is_err() {
            return;
        }
    }
}

fn refusal(msg: &str) -> Vec<u8> {
    [&wire::STATUS_BAD_REQUEST.to_le_bytes()[..], msg.as_bytes()].concat()
}

fn ok(payload: &[u8]) -> Vec<u8> {
    [&wire::STATUS_OK.to_le_bytes()[..], payload].concat()
}

/// One request on an enclave channel → its response. Pure.
pub fn handle_request(
    platform: &Platform,
    me: &EnclaveIdentity,
    manifest: &[u8],
    req: &[u8],
) -> Vec<u8> {
    let Some((&op, payload)) = req.split_first() else {
        return refusal("empty request");
    };
    let expect = |n: usize| {
        if payload.len() == n {
            Ok(())
        } else {
            Err(refusal(&format!(
                "operation {op} takes {n} payload bytes, got {}",
                payload.len()
            )))
        }
    };
    let result = match op {
        wire::OP_TARGET_INFO => expect(0).map(|_| ok(&me.target_info().to_bytes())),
        wire::OP_REPORT => expect(TargetInfo::LEN + ReportData::LEN).and_then(|_| {
            let target = TargetInfo::from_bytes(&payload[..TargetInfo::LEN])
                .map_err(|e| refusal(&e.to_string()))?;
            let data = ReportData::from_slice(&payload[TargetInfo::LEN..]).expect("64 bytes");
            Ok(ok(&platform.ereport(me, &target, &data).to_bytes()))
        }),
        wire::OP_GET_KEY => expect(KeyRequest::LEN).and_then(|_| {
            let kr = KeyRequest::from_bytes(payload)
                .map_err(|_| EgetkeyError::InvalidAttribute.code().to_le_bytes().to_vec())?;
            match platform.egetkey(me, &kr) {
                Ok(k) => Ok(ok(k.expose())),
                Err(e) => Err(e.code().to_le_bytes().to_vec()),
            }
        }),
        wire::OP_MANIFEST => expect(0).map(|_| ok(manifest)),
        _ => Err(refusal(&format!("unknown operation {op}"))),
    };
    result.unwrap_or_else(|e| e)
}

/// Reads everything from `r` in chunks, calling `f` for each.
fn pump(mut r: impl Read, mut f: impl FnMut(&[u8]) -> bool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !f(&buf[..n]) {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_tee::sim::SimTee;
    use dc_tee::Tee;
    use zeroize::Zeroizing;

    fn me(mre: u8) -> EnclaveIdentity {
        let mut id = EnclaveIdentity {
            mr_enclave: dc_tee::Measurement([mre; 32]),
            mr_signer: dc_tee::Measurement([9; 32]),
            isv_prod_id: 1,
            isv_svn: 1,
            attributes: Default::default(),
            misc_select: 0,
            config_id: ConfigId::ZERO,
            config_svn: 0,
            cet_attributes: 0,
        };
        id.attributes.flags = dc_tee::Attributes::INIT;
        id
    }

    /// The sim client against the channel server, in-process over a socketpair.
    #[test]
    fn sim_client_and_channel_server_agree() {
        let p = Arc::new(Platform::new(
            Zeroizing::new([1; 32]),
            CpuSvn([1; 16]),
            KeyId([2; 32]),
        ));
        let (a, b) = (me(1), me(2));
        let connect = |id: EnclaveIdentity| {
            let (x, y) = UnixStream::pair().unwrap();
            let p = p.clone();
            std::thread::spawn(move || serve_channel(&p, &id, b"manifest", y));
            SimTee::from_stream(x).unwrap()
        };
        let (ta, tb) = (connect(a), connect(b));
        assert_eq!(ta.identity().unwrap(), a);
        let r = ta
            .report(&tb.target_info().unwrap(), &ReportData([3; 64]))
            .unwrap();
        let v = tb.verify_report(&r).unwrap();
        assert_eq!(v.identity.mr_enclave, a.mr_enclave);
        assert!(matches!(
            ta.verify_report(&r),
            Err(dc_tee::TeeError::ReportMac)
        ));
        let blob = ta
            .seal(dc_tee::SealPolicy::MrEnclave, b"", b"hello")
            .unwrap();
        let policy = dc_tee::SealPolicy::MrEnclave;
        assert_eq!(&ta.unseal(policy, &blob.0, b"").unwrap()[..], b"hello");
        assert!(tb.unseal(policy, &blob.0, b"").is_err());
        assert_eq!(ta.measured_manifest().unwrap(), b"manifest");
    }

    #[test]
    fn malformed_requests_get_refusals_not_panics() {
        let p = Platform::new(Zeroizing::new([1; 32]), CpuSvn([1; 16]), KeyId([2; 32]));
        let status = |r: &[u8]| {
            u32::from_le_bytes(handle_request(&p, &me(1), b"", r)[..4].try_into().unwrap())
        };
        assert_eq!(status(&[]), wire::STATUS_BAD_REQUEST);
        assert_eq!(status(&[99]), wire::STATUS_BAD_REQUEST);
        assert_eq!(
            status(&[wire::OP_REPORT, 1, 2, 3]),
            wire::STATUS_BAD_REQUEST
        );
        assert_eq!(status(&[wire::OP_TARGET_INFO, 0]), wire::STATUS_BAD_REQUEST);
        let mut kr = vec![wire::OP_GET_KEY];
        kr.extend_from_slice(&[0xFF; 512]);
        assert_eq!(status(&kr), EgetkeyError::InvalidAttribute.code());
        let mut unknown = vec![wire::OP_GET_KEY];
        let mut req = KeyRequest::report_key(KeyId::ZERO);
        req.key_name = 7;
        unknown.extend_from_slice(&req.to_bytes());
        assert_eq!(status(&unknown), EgetkeyError::InvalidKeyName.code());
        let mut bad_ti = vec![wire::OP_REPORT];
        bad_ti.extend_from_slice(&[0xFF; 576]);
        assert_eq!(status(&bad_ti), wire::STATUS_BAD_REQUEST);
    }
}

//! The client of `dctee-sim launch`: sends one launch request on the platform's control
//! socket and relays the enclave's output and exit code (the protocol is
//! [`dc_tee::sim::control`]).

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use dc_tee::sim::control::{Event, LaunchRequest, LaunchWithListeners, MAX_CONTROL_FRAME};
use dc_tee::sim::listen::{check_listening_tcp, check_name, MAX_LISTEN_FDS};
use dc_tee::Measurement;

/// Sends a launch request and forwards the enclave's output to `stdout`/`stderr`.
/// Returns the enclave's exit code. `on_started` sees the identity the platform assigned.
pub fn run_launch(
    socket: &Path,
    req: &LaunchRequest,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
    on_started: impl FnMut(&Measurement, &Measurement, u32),
) -> Result<i32, String> {
    run_launch_with_listeners(socket, req, &[], stdout, stderr, on_started)
}

/// [`run_launch`], passing listening sockets this process holds to the enclave, each under
/// its name (see [`Launch::start`]). SIGTERM/SIGINT to this process stop the enclave.
pub fn run_launch_with_listeners(
    socket: &Path,
    req: &LaunchRequest,
    listeners: &[(&str, BorrowedFd<'_>)],
    stdout: &mut impl Write,
    stderr: &mut impl Write,
    on_started: impl FnMut(&Measurement, &Measurement, u32),
) -> Result<i32, String> {
    let launch = Launch::start(socket, req, listeners)?;
    forward_termination(&launch);
    launch.relay(stdout, stderr, on_started)
}

/// A launch under way: the request (and the sockets) went out on the control connection;
/// the platform's events come back on it.
pub struct Launch {
    conn: UnixStream,
}

impl Launch {
    /// Connects to the platform at `socket` and sends the request. `listeners` (at most
    /// [`MAX_LISTEN_FDS`], each a listening TCP socket, names valid by [`check_name`]) go with
    /// it: the enclave finds them at fds 3, 4, … in this order, announced by `LISTEN_FDS`,
    /// `LISTEN_FDNAMES` and `LISTEN_PID` ([`dc_tee::sim::listen`]). The platform and the
    /// enclave get copies of the sockets; the caller's own stay open and untouched.
    pub fn start(
        socket: &Path,
        req: &LaunchRequest,
        listeners: &[(&str, BorrowedFd<'_>)],
    ) -> Result<Self, String> {
        if listeners.len() > MAX_LISTEN_FDS {
            return Err(format!(
                "at most {MAX_LISTEN_FDS} listening sockets can be passed to an enclave"
            ));
        }
        for (name, fd) in listeners {
            check_name(name).map_err(|e| e.to_string())?;
            check_listening_tcp(*fd).map_err(|e| {
                format!("listening socket {name:?}: only listening TCP sockets can be passed; {e}")
            })?;
        }
        let mut conn = UnixStream::connect(socket).map_err(|e| {
            format!(
                "cannot reach the software TEE platform at {}: {e}; start it with `dctee-sim serve --state DIR`",
                socket.display()
            )
        })?;
        let frame = LaunchWithListeners {
            request: req.clone(),
            listener_names: listeners.iter().map(|(n, _)| n.to_string()).collect(),
        }
        .encode();
        dc_tee::sim::wire::write_frame(&mut conn, &frame).map_err(|e| e.to_string())?;
        if !listeners.is_empty() {
            let fds: Vec<BorrowedFd<'_>> = listeners.iter().map(|(_, fd)| *fd).collect();
            crate::fds::send_fds(&conn, &fds)
                .map_err(|e| format!("passing the listening sockets: {e}"))?;
        }
        Ok(Self { conn })
    }

    /// The next event from the platform; an error if the connection ends before `Exited` or
    /// `Error`.
    pub fn next_event(&mut self) -> Result<Event, String> {
        let frame = dc_tee::sim::wire::read_frame(&mut self.conn, MAX_CONTROL_FRAME)
            .map_err(|e| format!("platform connection: {e}"))?
            .ok_or("the platform closed the connection before the enclave exited")?;
        Event::decode(&frame).map_err(|e| e.to_string())
    }

    /// Asks the platform to stop the enclave (SIGTERM to it, SIGKILL after the platform's
    /// grace); its `Exited` event follows.
    pub fn stop(&self) {
        let _ = self.conn.shutdown(std::net::Shutdown::Write);
    }

    /// Forwards the enclave's output until it exits; returns its exit code.
    pub fn relay(
        mut self,
        stdout: &mut impl Write,
        stderr: &mut impl Write,
        mut on_started: impl FnMut(&Measurement, &Measurement, u32),
    ) -> Result<i32, String> {
        loop {
            match self.next_event()? {
                Event::Started {
                    mr_enclave,
                    mr_signer,
                    pid,
                } => on_started(&mr_enclave, &mr_signer, pid),
                Event::Stdout(d) => {
                    let _ = stdout.write_all(&d).and_then(|_| stdout.flush());
                }
                Event::Stderr(d) => {
                    let _ = stderr.write_all(&d).and_then(|_| stderr.flush());
                }
                Event::Exited(code) => return Ok(code),
                Event::Error(m) => return Err(m),
            }
        }
    }
}

/// Turns SIGTERM/SIGINT to this client into a request to stop the enclave: the write half of
/// the control connection is closed, the platform terminates the enclave, and this client
/// exits only once the enclave has exited (with its code). So whoever stops the launcher knows
/// that when it is gone, so is the enclave.
pub fn forward_termination(launch: &Launch) {
    let Ok(conn) = launch.conn.try_clone() else {
        return;
    };
    // SAFETY: plain libc signal-mask calls on a zeroed sigset_t; done before the waiting
    // thread starts, and threads spawned later inherit the mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        std::thread::spawn(move || {
            let mut sig = 0;
            if libc::sigwait(&set, &mut sig) == 0 {
                let _ = conn.shutdown(std::net::Shutdown::Write);
            }
        });
    }
}

//! The client of `dctee-sim launch`: sends one launch request on the platform's control
//! socket and relays the enclave's output and exit code (the protocol is
//! [`dc_tee::sim::control`]).

use std::io::Write;

use dc_tee::sim::control::{Event, LaunchRequest, MAX_CONTROL_FRAME};
use dc_tee::Measurement;

/// Sends a launch request and forwards the enclave's output to `stdout`/`stderr`.
/// Returns the enclave's exit code. `on_started` sees the identity the platform assigned.
pub fn run_launch(
    socket: &std::path::Path,
    req: &LaunchRequest,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
    mut on_started: impl FnMut(&Measurement, &Measurement, u32),
) -> Result<i32, String> {
    let mut conn = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the software TEE platform at {}: {e}; start it with `dctee-sim serve --state DIR`",
            socket.display()
        )
    })?;
    dc_tee::sim::wire::write_frame(&mut conn, &req.encode()).map_err(|e| e.to_string())?;
    forward_termination(&conn);
    loop {
        let frame = dc_tee::sim::wire::read_frame(&mut conn, MAX_CONTROL_FRAME)
            .map_err(|e| format!("platform connection: {e}"))?
            .ok_or("the platform closed the connection before the enclave exited")?;
        match Event::decode(&frame).map_err(|e| e.to_string())? {
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

/// Turns SIGTERM/SIGINT to this client into a request to stop the enclave: the write half of
/// the control connection is closed, the platform terminates the enclave, and this client
/// exits only once the enclave has exited (with its code). So whoever stops the launcher knows
/// that when it is gone, so is the enclave.
fn forward_termination(conn: &std::os::unix::net::UnixStream) {
    let Ok(conn) = conn.try_clone() else { return };
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

//! The `sim` backend: the client side of the private channel the software TEE platform
//! (`dctee-sim`) gives every enclave it launches.
//!
//! The platform, not the enclave, decides which identity answers on a channel: it measured
//! the bundle before starting the process and serves EREPORT/EGETKEY for that identity only.
//! The wire format is in [`wire`]; the platform's control protocol (launch requests and
//! their events) in [`control`]; listening sockets passed at launch (`LISTEN_FDS`) in
//! [`listen`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use crate::sgx::{EgetkeyError, KeyRequest, Report, ReportData, TargetInfo};
use crate::{Key128, Tee, TeeError};

pub mod control;
pub mod listen;

pub use listen::listen_fds_from_env;

/// Environment variable through which the platform names the inherited channel's fd.
pub const CHANNEL_FD_ENV: &str = "DCTEE_SIM_FD";

/// Framing and message codes of the enclave ↔ platform channel.
///
/// Every message is a frame: `u32` little-endian length, then that many bytes.
/// Request: `op u8 | payload`. Response: `status u32 LE | payload`; status 0 is success,
/// an SGX error code (2, 32, 64, 256) is an EGETKEY failure, [`STATUS_BAD_REQUEST`] a
/// malformed request. A frame longer than the limit is a protocol violation: the platform
/// closes that channel (it cannot resynchronise) and goes on serving every other enclave.
pub mod wire {
    use std::io::{self, Read, Write};

    pub const OP_TARGET_INFO: u8 = 1;
    /// payload: TARGETINFO (512) | REPORTDATA (64)
    pub const OP_REPORT: u8 = 2;
    /// payload: KEYREQUEST (512)
    pub const OP_GET_KEY: u8 = 3;
    /// The measured `enclave.toml` of the calling enclave (its trust roots live there).
    pub const OP_MANIFEST: u8 = 4;

    pub const STATUS_OK: u32 = 0;
    pub const STATUS_BAD_REQUEST: u32 = 0xFFFF_0001;

    pub const MAX_REQUEST: usize = 1024;
    pub const MAX_RESPONSE: usize = 128 * 1024;

    pub fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
        let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame too large"))?;
        let mut buf = Vec::with_capacity(4 + body.len());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(body);
        w.write_all(&buf)?;
        w.flush()
    }

    /// Reads one frame of at most `max` bytes. `Ok(None)` on a clean end of stream.
    pub fn read_frame(r: &mut impl Read, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes exceeds the {max}-byte limit"),
            ));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        Ok(Some(body))
    }
}

/// A connection to the software TEE platform.
pub struct SimTee {
    channel: Mutex<UnixStream>,
}

impl SimTee {
    /// Takes the channel the platform passed to this process. Call once, early in `main`.
    pub fn from_env() -> Result<Self, TeeError> {
        Self::from_stream(take_channel_from_env()?)
    }

    /// Uses an already-connected channel (tests, or a platform that hands over a stream).
    pub fn from_stream(stream: UnixStream) -> Result<Self, TeeError> {
        let t = Some(Duration::from_secs(30));
        stream.set_read_timeout(t).map_err(unavailable)?;
        stream.set_write_timeout(t).map_err(unavailable)?;
        Ok(Self {
            channel: Mutex::new(stream),
        })
    }

    fn call(&self, op: u8, payload: &[u8]) -> Result<Vec<u8>, TeeError> {
        let mut req = Vec::with_capacity(1 + payload.len());
        req.push(op);
        req.extend_from_slice(payload);
        let mut ch = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        wire::write_frame(&mut *ch, &req).map_err(unavailable)?;
        let resp = wire::read_frame(&mut *ch, wire::MAX_RESPONSE)
            .map_err(unavailable)?
            .ok_or_else(|| TeeError::Unavailable("the platform closed the channel".into()))?;
        drop(ch);
        if resp.len() < 4 {
            return Err(TeeError::Protocol(format!("{}-byte response", resp.len())));
        }
        let status = u32::from_le_bytes(resp[..4].try_into().expect("4 bytes"));
        match status {
            wire::STATUS_OK => Ok(resp[4..].to_vec()),
            wire::STATUS_BAD_REQUEST => Err(TeeError::Refused(
                String::from_utf8_lossy(&resp[4..]).into_owned(),
            )),
            code => Err(EgetkeyError::from_code(code)
                .map(TeeError::Egetkey)
                .unwrap_or_else(|| TeeError::Protocol(format!("unknown status {code:#x}")))),
        }
    }

    /// The `enclave.toml` the platform measured for this enclave: the only place an enclave
    /// may read its trust roots from.
    pub fn measured_manifest(&self) -> Result<Vec<u8>, TeeError> {
        self.call(wire::OP_MANIFEST, &[])
    }
}

/// Takes the raw channel named by [`CHANNEL_FD_ENV`]; succeeds at most once per process.
pub fn take_channel_from_env() -> Result<UnixStream, TeeError> {
    let fd: i32 = std::env::var(CHANNEL_FD_ENV)
        .map_err(|_| {
            TeeError::Unavailable(format!(
                "{CHANNEL_FD_ENV} is not set: this process was not launched by the software TEE platform (dctee-sim launch)"
            ))
        })?
        .parse()
        .map_err(|_| TeeError::Unavailable(format!("{CHANNEL_FD_ENV} is not a file descriptor number")))?;
    if fd < 3 {
        return Err(TeeError::Unavailable(format!(
            "{CHANNEL_FD_ENV}={fd} names a standard stream"
        )));
    }
    // SAFETY: the platform opened this fd for us and nothing else in the process owns it;
    // the variable is removed below so it cannot be taken twice.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    std::env::remove_var(CHANNEL_FD_ENV);
    stream
        .peer_addr()
        .map_err(|e| TeeError::Unavailable(format!("fd {fd} is not the platform channel: {e}")))?;
    // The platform answers on this fd as the enclave. Processes the enclave starts (the agent
    // spawns launchers) are not measured as it is, so they must not inherit it.
    set_cloexec(stream.as_raw_fd())
        .map_err(|e| TeeError::Unavailable(format!("fd {fd}: setting FD_CLOEXEC: {e}")))?;
    Ok(stream)
}

/// Marks `fd` close-on-exec: what an enclave inherits from the platform is not passed on to
/// the programs it starts.
pub(crate) fn set_cloexec(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) on a descriptor number; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn unavailable(e: io::Error) -> TeeError {
    TeeError::Unavailable(e.to_string())
}

impl Tee for SimTee {
    fn target_info(&self) -> Result<TargetInfo, TeeError> {
        Ok(TargetInfo::from_bytes(
            &self.call(wire::OP_TARGET_INFO, &[])?,
        )?)
    }

    fn report(&self, target: &TargetInfo, report_data: &ReportData) -> Result<Report, TeeError> {
        let mut p = Vec::with_capacity(TargetInfo::LEN + ReportData::LEN);
        p.extend_from_slice(&target.to_bytes());
        p.extend_from_slice(&report_data.0);
        Ok(Report::from_bytes(&self.call(wire::OP_REPORT, &p)?)?)
    }

    fn get_key(&self, request: &KeyRequest) -> Result<Key128, TeeError> {
        let mut k = self.call(wire::OP_GET_KEY, &request.to_bytes())?;
        let key: [u8; 16] = k
            .as_slice()
            .try_into()
            .map_err(|_| TeeError::Protocol(format!("{}-byte key", k.len())))?;
        zeroize::Zeroize::zeroize(&mut k);
        Ok(Key128::new(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this crate touching [`CHANNEL_FD_ENV`], so no other test races it.
    #[test]
    fn the_taken_channel_is_not_inherited_across_exec() {
        let (ours, _platform) = UnixStream::pair().unwrap();
        // As the platform passes it: an fd without FD_CLOEXEC.
        // SAFETY: dup(2) of an fd we own; the new fd is owned by `from_raw_fd` below.
        let fd = unsafe { libc::dup(ours.as_raw_fd()) };
        assert!(fd > 2);
        let flags = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags(fd) & libc::FD_CLOEXEC, 0);
        std::env::set_var(CHANNEL_FD_ENV, fd.to_string());
        let taken = take_channel_from_env().unwrap();
        assert_eq!(taken.as_raw_fd(), fd);
        assert_ne!(flags(fd) & libc::FD_CLOEXEC, 0);
        assert!(std::env::var(CHANNEL_FD_ENV).is_err(), "taken at most once");
    }
}

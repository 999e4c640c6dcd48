//! Listening sockets handed to an enclave at launch, by the systemd socket-activation
//! convention (`sd_listen_fds(3)`), so that a socket can outlive every process that serves it.
//!
//! The process starting an enclave passes `n` listening TCP sockets as fds
//! [`LISTEN_FDS_START`]`..LISTEN_FDS_START + n` and sets
//!
//! - `LISTEN_FDS=n`,
//! - `LISTEN_FDNAMES=name1:name2:…` (one name per fd, in order; optional, `unknown` each if
//!   absent, as systemd does),
//! - `LISTEN_PID=<pid of the enclave process>` (optional here: if set it must name this
//!   process, or the variables were meant for another one and are ignored).
//!
//! The software platform (`dctee-sim launch --listen-fd NAME=FD`) does exactly this; the
//! enclave's channel then follows the sockets, at the fd `DCTEE_SIM_FD` names.
//!
//! Everything here is a check or a take of what the process already holds: nothing opens,
//! binds or listens. The sockets are shared with whoever passed them (same open file
//! description): closing the enclave's copy leaves the socket and its accept queue open in the
//! others; `shutdown(2)` on it would not, so never call it on a passed socket.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};

/// Number of passed sockets.
pub const LISTEN_FDS_ENV: &str = "LISTEN_FDS";
/// Their names, `:`-separated.
pub const LISTEN_FDNAMES_ENV: &str = "LISTEN_FDNAMES";
/// The process they are meant for.
pub const LISTEN_PID_ENV: &str = "LISTEN_PID";
/// The first passed socket's fd (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;
/// At most this many sockets are passed to one enclave.
pub const MAX_LISTEN_FDS: usize = 8;
/// Longest socket name.
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ListenFdsError {
    #[error("{LISTEN_FDS_ENV}={0:?} is not a number of sockets from 1 to {MAX_LISTEN_FDS}")]
    BadCount(String),
    #[error("{LISTEN_FDNAMES_ENV} names {names} sockets but {LISTEN_FDS_ENV} is {count}")]
    NamesMismatch { names: usize, count: usize },
    #[error("socket name {0:?}: {1}")]
    BadName(String, &'static str),
    #[error("fd {fd}: {reason}")]
    NotListeningTcp { fd: RawFd, reason: String },
}

/// Whether `name` may name a passed socket: 1 to [`MAX_NAME_LEN`] printable ASCII characters
/// other than `:` (the separator) and `=` (which would make `NAME=FD` ambiguous).
pub fn check_name(name: &str) -> Result<(), ListenFdsError> {
    let bad = |why| Err(ListenFdsError::BadName(name.into(), why));
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b':' && b != b'=')
    {
        return bad("only printable ASCII characters other than ':' and '=' are allowed");
    }
    Ok(())
}

fn sockopt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `v`, which is that large.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Accepts only a listening TCP socket (IPv4 or IPv6): `SO_ACCEPTCONN` set, `SO_TYPE`
/// `SOCK_STREAM`, `SO_DOMAIN` `AF_INET`/`AF_INET6`, `SO_PROTOCOL` TCP.
pub fn check_listening_tcp(fd: BorrowedFd<'_>) -> Result<(), ListenFdsError> {
    let raw = fd.as_raw_fd();
    let fail = |reason: String| ListenFdsError::NotListeningTcp { fd: raw, reason };
    let get = |level, name, what: &str| {
        sockopt(raw, level, name).map_err(|e| fail(format!("not a socket ({what}: {e})")))
    };
    let ty = get(libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE")?;
    if ty != libc::SOCK_STREAM {
        return Err(fail(format!("socket type {ty} is not SOCK_STREAM")));
    }
    let domain = get(libc::SOL_SOCKET, libc::SO_DOMAIN, "SO_DOMAIN")?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(fail(format!(
            "address family {domain} is not AF_INET or AF_INET6"
        )));
    }
    let proto = get(libc::SOL_SOCKET, libc::SO_PROTOCOL, "SO_PROTOCOL")?;
    if proto != libc::IPPROTO_TCP {
        return Err(fail(format!("protocol {proto} is not TCP")));
    }
    if get(libc::SOL_SOCKET, libc::SO_ACCEPTCONN, "SO_ACCEPTCONN")? == 0 {
        return Err(fail("a TCP socket that is not listening".into()));
    }
    Ok(())
}

/// The variables as read from the environment (`None`: unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenVars {
    pub fds: Option<String>,
    pub names: Option<String>,
    pub pid: Option<String>,
}

impl ListenVars {
    fn from_env() -> Self {
        let get = |k| std::env::var(k).ok();
        Self {
            fds: get(LISTEN_FDS_ENV),
            names: get(LISTEN_FDNAMES_ENV),
            pid: get(LISTEN_PID_ENV),
        }
    }
}

/// What the variables say: the names of the sockets at `start..start + names.len()`, or
/// nothing if they are unset or meant for another process (`LISTEN_PID` is not `my_pid`).
pub fn parse_vars(vars: &ListenVars, my_pid: u32) -> Result<Vec<String>, ListenFdsError> {
    let Some(count) = &vars.fds else {
        return Ok(Vec::new());
    };
    if let Some(pid) = &vars.pid {
        if pid.parse::<u32>().ok() != Some(my_pid) {
            return Ok(Vec::new());
        }
    }
    let n: usize = match count.parse() {
        Ok(n) if (1..=MAX_LISTEN_FDS).contains(&n) && !count.starts_with('+') => n,
        _ => return Err(ListenFdsError::BadCount(count.clone())),
    };
    let names: Vec<String> = match &vars.names {
        None => vec!["unknown".into(); n],
        Some(s) => s.split(':').map(String::from).collect(),
    };
    if names.len() != n {
        return Err(ListenFdsError::NamesMismatch {
            names: names.len(),
            count: n,
        });
    }
    names.iter().try_for_each(|n| check_name(n))?;
    Ok(names)
}

/// Takes the sockets named by `vars`, found at `start`, `start + 1`, …: every one is checked
/// first (a listening TCP socket) and marked close-on-exec, so processes this one starts do not
/// inherit them; on any error none is taken.
///
/// # Safety
/// The descriptors `start..start + n` must have been passed to this process for this purpose
/// and be owned by nothing else in it: they become [`TcpListener`]s that close them on drop.
pub unsafe fn take_listen_fds(
    vars: &ListenVars,
    my_pid: u32,
    start: RawFd,
) -> Result<Vec<(String, TcpListener)>, ListenFdsError> {
    let names = parse_vars(vars, my_pid)?;
    let fds: Vec<RawFd> = (start..).take(names.len()).collect();
    for &fd in &fds {
        // Whatever they turn out to be, children must not inherit them.
        let _ = super::set_cloexec(fd);
    }
    for &fd in &fds {
        // SAFETY: only borrowed for the checks; `fcntl`/`getsockopt` fail cleanly on a closed fd.
        check_listening_tcp(unsafe { BorrowedFd::borrow_raw(fd) })?;
    }
    Ok(names
        .into_iter()
        .zip(fds)
        // SAFETY: the caller guarantees these fds are ours to own; each is taken once.
        .map(|(name, fd)| (name, unsafe { TcpListener::from_raw_fd(fd) }))
        .collect())
}

/// Takes the listening sockets passed to this process by the socket-activation convention
/// (see the module documentation): `(name, listener)` pairs in fd order, empty if none were
/// passed. The variables are removed whatever the outcome, so children do not inherit them;
/// the sockets are close-on-exec. Takes them at most once: call it early in `main`, before
/// other threads start (it changes the environment).
///
/// The listeners are left blocking: a caller that wants non-blocking I/O sets it, knowing
/// that `O_NONBLOCK` is shared with every other holder of the socket.
pub fn listen_fds_from_env() -> Result<Vec<(String, TcpListener)>, ListenFdsError> {
    let vars = ListenVars::from_env();
    for k in [LISTEN_FDS_ENV, LISTEN_FDNAMES_ENV, LISTEN_PID_ENV] {
        std::env::remove_var(k);
    }
    // SAFETY: by the convention these fds were passed to this process for this purpose, and
    // the variables are gone, so nothing else in it takes them again.
    unsafe { take_listen_fds(&vars, std::process::id(), LISTEN_FDS_START) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    fn vars(fds: Option<&str>, names: Option<&str>, pid: Option<&str>) -> ListenVars {
        ListenVars {
            fds: fds.map(String::from),
            names: names.map(String::from),
            pid: pid.map(String::from),
        }
    }

    #[test]
    fn variables_are_validated() {
        let me = 4242;
        let ok = |v: &ListenVars| parse_vars(v, me).unwrap();
        assert!(ok(&vars(None, Some("data"), Some("4242"))).is_empty());
        assert_eq!(ok(&vars(Some("1"), Some("data"), Some("4242"))), ["data"]);
        assert_eq!(ok(&vars(Some("2"), Some("a:b"), None)), ["a", "b"]);
        assert_eq!(ok(&vars(Some("2"), None, None)), ["unknown", "unknown"]);
        // Meant for another process: not ours, nothing taken.
        assert!(ok(&vars(Some("1"), Some("data"), Some("4243"))).is_empty());
        assert!(ok(&vars(Some("1"), Some("data"), Some("x"))).is_empty());
        for bad in ["0", "9", "-1", "+1", "", "one", "99999999999999999999"] {
            assert!(
                matches!(
                    parse_vars(&vars(Some(bad), None, None), me),
                    Err(ListenFdsError::BadCount(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_vars(&vars(Some("2"), Some("data"), None), me),
            Err(ListenFdsError::NamesMismatch { names: 1, count: 2 })
        ));
        for bad in ["a:", "a:b c", "a:b=c", &format!("a:{}", "x".repeat(65))] {
            assert!(
                matches!(
                    parse_vars(&vars(Some("2"), Some(bad), None), me),
                    Err(ListenFdsError::BadName(..))
                ),
                "{bad:?}"
            );
        }
    }

    /// Moves `fds` to consecutive descriptors from `start` (high, so free in a test process).
    fn place(fds: Vec<RawFd>, start: RawFd) {
        for (i, fd) in fds.into_iter().enumerate() {
            let to = start + i as RawFd;
            // SAFETY: dup2/close on descriptors this test owns.
            unsafe {
                assert_eq!(libc::dup2(fd, to), to);
                libc::close(fd);
            }
        }
    }

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only queries.
        unsafe { libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0 }
    }

    #[test]
    fn only_listening_tcp_sockets_are_taken_and_none_on_error() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("[::1]:0")
            .or_else(|_| TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let start = 900;
        place(vec![a.into_raw_fd(), b.into_raw_fd()], start);
        // The fds arrive inheritable, as across exec.
        // SAFETY: clearing FD_CLOEXEC on our own descriptors.
        unsafe {
            libc::fcntl(start, libc::F_SETFD, 0);
            libc::fcntl(start + 1, libc::F_SETFD, 0);
        }
        let v = vars(Some("2"), Some("data:admin"), Some("7"));
        // SAFETY: the fds at 900, 901 were placed by this test and are owned by nothing else.
        let taken = unsafe { take_listen_fds(&v, 7, start) }.unwrap();
        let got: Vec<_> = taken
            .iter()
            .map(|(n, l)| (n.as_str(), l.local_addr().unwrap(), l.as_raw_fd()))
            .collect();
        assert_eq!(got, [("data", addr_a, start), ("admin", addr_b, start + 1)]);
        assert!(cloexec(start) && cloexec(start + 1));
        drop(taken);

        // Refused: a connected TCP socket, a UDP socket, a Unix listener, a pipe, a closed fd.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let connected = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        let mut pipe = [0; 2];
        // SAFETY: pipe(2) writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        // SAFETY: closing the write end we own.
        unsafe { libc::close(pipe[1]) };
        let good = TcpListener::bind("127.0.0.1:0").unwrap();
        for (what, bad) in [
            ("connected", connected.into_raw_fd()),
            ("udp", udp.into_raw_fd()),
            ("unix", unix.into_raw_fd()),
            ("pipe", pipe[0]),
        ] {
            let g = good.try_clone().unwrap().into_raw_fd();
            place(vec![g, bad], start);
            let v = vars(Some("2"), Some("good:bad"), None);
            // SAFETY: as above.
            let r = unsafe { take_listen_fds(&v, 1, start) };
            assert!(
                matches!(r, Err(ListenFdsError::NotListeningTcp { fd, .. }) if fd == start + 1),
                "{what}: {r:?}"
            );
            // Nothing was taken: both fds are still open (and close-on-exec).
            assert!(cloexec(start) && cloexec(start + 1), "{what}");
            // SAFETY: closing the test's own fds.
            unsafe {
                libc::close(start);
                libc::close(start + 1);
            }
        }
        let v = vars(Some("1"), Some("gone"), None);
        // SAFETY: fd 900 is closed; the check fails before anything is owned.
        assert!(unsafe { take_listen_fds(&v, 1, start) }.is_err());
    }

    /// The only test in this crate touching the `LISTEN_*` variables.
    #[test]
    fn the_variables_are_removed_even_when_nothing_is_taken() {
        std::env::set_var(LISTEN_FDS_ENV, "1");
        std::env::set_var(LISTEN_FDNAMES_ENV, "data");
        std::env::set_var(LISTEN_PID_ENV, "1");
        // Meant for pid 1, not this test: nothing is taken, and the variables are gone.
        assert!(listen_fds_from_env().unwrap().is_empty());
        for k in [LISTEN_FDS_ENV, LISTEN_FDNAMES_ENV, LISTEN_PID_ENV] {
            assert!(std::env::var(k).is_err(), "{k} still set");
        }
        assert!(listen_fds_from_env().unwrap().is_empty());
    }
}

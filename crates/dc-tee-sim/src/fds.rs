//! Passing descriptors over the platform's control socket (`SCM_RIGHTS`), for launches that
//! hand listening sockets to an enclave ([`dc_tee::sim::control::LaunchWithListeners`]).
//!
//! One message carries them all: a single [`LISTENERS_MARKER`] byte with the descriptors as
//! ancillary data. The receiver takes at most a fixed number; every descriptor it receives is
//! owned at once (closed on drop), close-on-exec from the moment it arrives, and a message
//! with more descriptors than room for them is refused whole.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use dc_tee::sim::control::LISTENERS_MARKER;

/// Bytes of ancillary buffer for `n` descriptors.
fn space_for(n: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE((n * size_of::<RawFd>()) as u32) as usize }
}

/// Sends `fds` (at least one) as one marker byte with `SCM_RIGHTS`.
pub fn send_fds(sock: &UnixStream, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() {
        return Err(io::Error::other("no descriptors to send"));
    }
    let mut byte = [LISTENERS_MARKER];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 elements: aligned for cmsghdr.
    let mut control = vec![0u64; space_for(fds.len()).div_ceil(8)];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the sendmsg call, and
    // the ancillary buffer has CMSG_SPACE(len) bytes for CMSG_FIRSTHDR/CMSG_DATA to write into.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space_for(fds.len()) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * size_of::<RawFd>()) as u32) as _;
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, fd) in fds.iter().enumerate() {
            data.add(i).write_unaligned(fd.as_raw_fd());
        }
        loop {
            let n = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if n == 1 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(if n < 0 {
                e
            } else {
                io::Error::other("the descriptors were not sent")
            });
        }
    }
}

/// Receives one marker byte and the descriptors it carries: at most `max` of them, else
/// nothing (every one that arrived is closed). Blocks like a read (`SO_RCVTIMEO` applies).
pub fn recv_fds(sock: &UnixStream, max: usize) -> io::Result<Vec<OwnedFd>> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one more than allowed, so that too many is told apart from exactly `max`.
    let room = space_for(max + 1);
    let mut control = vec![0u64; room.div_ceil(8)];
    let mut received = Vec::new();
    // SAFETY: as in `send_fds`; the kernel writes at most `msg_controllen` bytes of ancillary
    // data, and every header walked below lies within what it reported.
    let (n, flags) = unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = room as _;
        let n = loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        // Own whatever arrived before judging it, so that every path closes it.
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / size_of::<RawFd>() {
                    received.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        (n, msg.msg_flags)
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed before the listening sockets arrived",
        ));
    }
    if byte[0] != LISTENERS_MARKER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected the listening sockets, got other data",
        ));
    }
    if flags & libc::MSG_CTRUNC != 0 || received.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("more than {max} descriptors passed"),
        ));
    }
    Ok(received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn descriptors_cross_and_too_many_are_all_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        send_fds(&a, &[l.as_fd(), u.as_fd()]).unwrap();
        let got = recv_fds(&b, 8).unwrap();
        assert_eq!(got.len(), 2);
        let back = std::net::TcpListener::from(got.into_iter().next().unwrap());
        assert_eq!(back.local_addr().unwrap(), l.local_addr().unwrap());
        // SAFETY: F_GETFD only queries.
        let flags = unsafe { libc::fcntl(back.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received descriptors are close-on-exec"
        );
        drop(back);

        // Too many: the write end of a pipe, five times. Once the receiver has closed every
        // copy it got, and this test its own, the read end sees end of file.
        let mut p = [0; 2];
        // SAFETY: pipe2(2) writes two descriptors, owned right below.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors from pipe2, owned once each.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        let many: Vec<_> = (0..5).map(|_| wr.as_fd()).collect();
        send_fds(&a, &many).unwrap();
        drop(wr);
        let e = recv_fds(&b, 3).unwrap_err();
        assert!(e.to_string().contains("more than 3"), "{e}");
        let mut buf = [0u8; 1];
        // SAFETY: read(2) into a 1-byte buffer we own. Blocks only if a copy is still open.
        let n = unsafe { libc::read(rd.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
        assert_eq!(n, 0, "refused descriptors are closed");

        // Plain data where the sockets were expected.
        std::io::Write::write_all(&mut &a, b"x").unwrap();
        assert!(recv_fds(&b, 3).is_err());
        drop(a);
        assert_eq!(
            recv_fds(&b, 3).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }
}

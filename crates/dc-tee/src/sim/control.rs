//! The control protocol of the software TEE platform: what `dctee-sim launch` (or the
//! agent's launch broker client) and the platform (or the broker) say to each other.
//!
//! Only the messages live here, so that both sides need nothing more than this crate: the
//! platform's server and its `launch` client are in `dc-tee-sim`, the agent's broker client
//! and the host-side broker in `dcupgrade`.
//!
//! Frames as on the enclave channel ([`super::wire`]). The client sends one
//! [`LaunchRequest`] (operation 1) or [`LaunchWithListeners`] (operation 2); the server
//! answers with a stream of [`Event`]s ending in `Exited` or `Error`. When the client's
//! connection closes, the server terminates the enclave, so stopping the client stops the
//! enclave.
//!
//! Operation 2 passes listening sockets: right after its frame the client sends one byte,
//! [`LISTENERS_MARKER`], carrying the sockets as `SCM_RIGHTS` ancillary data, one per name and
//! in the names' order (so only over a Unix socket; the platform's control socket is one). A
//! server that cannot pass sockets on (the host-side launch broker) refuses operation 2 as an
//! unknown operation: [`LaunchRequest::decode`] accepts operation 1 only.

use std::io;

use crate::Measurement;

pub const MAX_CONTROL_FRAME: usize = 256 * 1024;
const MAX_STRINGS: usize = 512;

const OP_LAUNCH: u8 = 1;
const OP_LAUNCH_WITH_LISTENERS: u8 = 2;
/// The byte that carries the sockets of a [`LaunchWithListeners`].
pub const LISTENERS_MARKER: u8 = b'L';
const EV_STARTED: u8 = 1;
const EV_STDOUT: u8 = 2;
const EV_STDERR: u8 = 3;
const EV_EXITED: u8 = 4;
const EV_ERROR: u8 = 5;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchRequest {
    /// Absolute path of the bundle directory.
    pub bundle: String,
    /// Working directory for the enclave process.
    pub cwd: String,
    /// Appended after the manifest's own (measured) arguments. Untrusted input to the enclave.
    pub args: Vec<String>,
    /// `KEY=VALUE` environment. Untrusted input to the enclave.
    pub env: Vec<String>,
}

/// A launch that also passes listening sockets (operation 2; see the module documentation).
/// The platform puts them at fds 3, 4, … of the enclave, by the socket-activation convention
/// ([`super::listen`]), each under its name in `LISTEN_FDNAMES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchWithListeners {
    pub request: LaunchRequest,
    /// One name per passed socket, 1 to [`super::listen::MAX_LISTEN_FDS`] of them, each valid
    /// by [`super::listen::check_name`]. Empty: a plain launch (encoded as operation 1).
    pub listener_names: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Started {
        mr_enclave: Measurement,
        mr_signer: Measurement,
        pid: u32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Exit code, or 128 + signal number.
    Exited(i32),
    Error(String),
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(bad("truncated control message"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn string(&mut self) -> io::Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("string is not UTF-8"))
    }
    fn strings(&mut self) -> io::Result<Vec<String>> {
        let n = self.u32()? as usize;
        if n > MAX_STRINGS {
            return Err(bad(format!("more than {MAX_STRINGS} strings")));
        }
        (0..n).map(|_| self.string()).collect()
    }
}

fn put_strings(out: &mut Vec<u8>, list: &[String]) {
    out.extend_from_slice(&(list.len() as u32).to_le_bytes());
    list.iter().for_each(|s| put_str(out, s));
}

impl LaunchRequest {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(OP_LAUNCH)
    }

    fn encode_as(&self, op: u8) -> Vec<u8> {
        let mut o = vec![op];
        put_str(&mut o, &self.bundle);
        put_str(&mut o, &self.cwd);
        put_strings(&mut o, &self.args);
        put_strings(&mut o, &self.env);
        o
    }

    fn read(r: &mut Reader<'_>) -> io::Result<Self> {
        Ok(Self {
            bundle: r.string()?,
            cwd: r.string()?,
            args: r.strings()?,
            env: r.strings()?,
        })
    }

    /// Operation 1 only: a launch that passes sockets is refused as an unknown operation.
    pub fn decode(b: &[u8]) -> io::Result<Self> {
        let mut r = Reader(b);
        if r.take(1)? != [OP_LAUNCH] {
            return Err(bad("unknown control operation"));
        }
        let req = Self::read(&mut r)?;
        if !r.0.is_empty() {
            return Err(bad("trailing bytes after launch request"));
        }
        Ok(req)
    }
}

impl LaunchWithListeners {
    /// Operation 2, or operation 1 when no socket is passed.
    pub fn encode(&self) -> Vec<u8> {
        if self.listener_names.is_empty() {
            return self.request.encode();
        }
        let mut o = self.request.encode_as(OP_LAUNCH_WITH_LISTENERS);
        put_strings(&mut o, &self.listener_names);
        o
    }

    /// Either operation; for operation 1 `listener_names` is empty.
    pub fn decode(b: &[u8]) -> io::Result<Self> {
        let mut r = Reader(b);
        let op = r.take(1)?[0];
        let request = match op {
            OP_LAUNCH | OP_LAUNCH_WITH_LISTENERS => LaunchRequest::read(&mut r)?,
            _ => return Err(bad("unknown control operation")),
        };
        let listener_names = if op == OP_LAUNCH_WITH_LISTENERS {
            let names = r.strings()?;
            if names.is_empty() || names.len() > super::listen::MAX_LISTEN_FDS {
                return Err(bad(format!(
                    "a launch passes 1 to {} listening sockets, not {}",
                    super::listen::MAX_LISTEN_FDS,
                    names.len()
                )));
            }
            for n in &names {
                super::listen::check_name(n).map_err(|e| bad(e.to_string()))?;
            }
            names
        } else {
            Vec::new()
        };
        if !r.0.is_empty() {
            return Err(bad("trailing bytes after launch request"));
        }
        Ok(Self {
            request,
            listener_names,
        })
    }
}

impl Event {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Event::Started {
                mr_enclave,
                mr_signer,
                pid,
            } => [
                &[EV_STARTED][..],
                &mr_enclave.0,
                &mr_signer.0,
                &pid.to_le_bytes(),
            ]
            .concat(),
            Event::Stdout(d) => [&[EV_STDOUT][..], d].concat(),
            Event::Stderr(d) => [&[EV_STDERR][..], d].concat(),
            Event::Exited(c) => [&[EV_EXITED][..], &c.to_le_bytes()].concat(),
            Event::Error(m) => [&[EV_ERROR][..], m.as_bytes()].concat(),
        }
    }

    pub fn decode(b: &[u8]) -> io::Result<Self> {
        let (&kind, rest) = b.split_first().ok_or_else(|| bad("empty event"))?;
        let mut r = Reader(rest);
        Ok(match kind {
            EV_STARTED => Event::Started {
                mr_enclave: Measurement::from_slice(r.take(32)?).expect("32"),
                mr_signer: Measurement::from_slice(r.take(32)?).expect("32"),
                pid: r.u32()?,
            },
            EV_STDOUT => Event::Stdout(rest.to_vec()),
            EV_STDERR => Event::Stderr(rest.to_vec()),
            EV_EXITED => Event::Exited(r.u32()? as i32),
            EV_ERROR => Event::Error(String::from_utf8_lossy(rest).into_owned()),
            k => return Err(bad(format!("unknown event {k}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_request_roundtrip_and_rejects_garbage() {
        let r = LaunchRequest {
            bundle: "/b".into(),
            cwd: "/".into(),
            args: vec!["a".into(), "".into()],
            env: vec!["K=V".into()],
        };
        assert_eq!(LaunchRequest::decode(&r.encode()).unwrap(), r);
        let e = r.encode();
        for n in 0..e.len() {
            assert!(LaunchRequest::decode(&e[..n]).is_err(), "prefix {n}");
        }
        let mut huge = vec![OP_LAUNCH];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(LaunchRequest::decode(&huge).is_err());
    }

    #[test]
    fn launch_with_listeners_roundtrip_and_limits() {
        let request = LaunchRequest {
            bundle: "/b".into(),
            cwd: "/".into(),
            args: vec!["--data".into(), "/d".into()],
            env: vec![],
        };
        let l = LaunchWithListeners {
            request: request.clone(),
            listener_names: vec!["data".into(), "admin".into()],
        };
        let e = l.encode();
        assert_eq!(LaunchWithListeners::decode(&e).unwrap(), l);
        for n in 0..e.len() {
            assert!(LaunchWithListeners::decode(&e[..n]).is_err(), "prefix {n}");
        }
        // A server that cannot pass sockets refuses the operation instead of dropping them.
        assert!(LaunchRequest::decode(&e)
            .unwrap_err()
            .to_string()
            .contains("unknown control operation"));
        // No sockets: a plain launch, understood by both decoders.
        let plain = LaunchWithListeners {
            request: request.clone(),
            listener_names: vec![],
        };
        assert_eq!(plain.encode(), request.encode());
        assert_eq!(
            LaunchWithListeners::decode(&request.encode()).unwrap(),
            plain
        );
        // Bounds and names are checked when decoding.
        let bad = |names: Vec<String>| {
            let mut o = request.encode_as(OP_LAUNCH_WITH_LISTENERS);
            put_strings(&mut o, &names);
            LaunchWithListeners::decode(&o).is_err()
        };
        assert!(bad(vec![]));
        assert!(bad(vec!["x".into(); 9]));
        assert!(!bad(vec!["x".into(); 8]));
        assert!(bad(vec!["a:b".into()]));
        assert!(bad(vec!["".into()]));
    }

    #[test]
    fn events_roundtrip() {
        for e in [
            Event::Started {
                mr_enclave: Measurement([1; 32]),
                mr_signer: Measurement([2; 32]),
                pid: 77,
            },
            Event::Stdout(b"out".to_vec()),
            Event::Stderr(vec![]),
            Event::Exited(-1),
            Event::Error("nope".into()),
        ] {
            assert_eq!(Event::decode(&e.encode()).unwrap(), e);
        }
        assert!(Event::decode(&[99]).is_err());
        assert!(Event::decode(&[]).is_err());
    }
}

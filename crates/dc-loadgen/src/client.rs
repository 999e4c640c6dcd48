//! A minimal HTTP/1.1 client on a tokio `TcpStream`: one request at a time on one
//! connection, no pool, no retries. Errors are plain `io::Error`s with their real kind.

use std::error::Error;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use socket2::SockRef;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::{Outcome, VERSION_HEADER};

const MAX_LINE: u64 = 8 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY: u64 = 64 * 1024 * 1024;

pub(crate) struct Response {
    pub status: u16,
    pub version: Option<String>,
    pub body: Vec<u8>,
    /// The connection must not be reused after this response.
    pub close: bool,
}

pub(crate) struct Conn {
    io: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            io: BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    /// Whether the peer already closed (or broke) this idle connection. Checked before
    /// reusing it, as any HTTP client pool does: the request is then sent on a new connection
    /// instead. Nothing has been sent on the old one, so this is not a retry. A non-blocking
    /// `recv(MSG_PEEK)` asks the kernel itself (not tokio's cached readiness).
    pub fn is_closed(&self) -> bool {
        if !self.io.buffer().is_empty() {
            return true; // bytes nobody asked for: the connection is out of step
        }
        let mut byte = [MaybeUninit::uninit(); 1];
        !matches!(SockRef::from(self.io.get_ref()).peek(&mut byte),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends one request and reads its whole response. `close` asks the server to close the
    /// connection after answering (and marks the response as closing).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
        close: bool,
    ) -> io::Result<Response> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", self.host);
        if method != "GET" || !body.is_empty() {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        if close {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut msg = head.into_bytes();
        msg.extend_from_slice(body);
        self.io.get_mut().write_all(&msg).await?;
        let mut response = read_response(&mut self.io).await?;
        response.close |= close;
        Ok(response)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One line without its CRLF; empty at end of stream.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *r).take(MAX_LINE).read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if (n as u64) < MAX_LINE {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line")
        } else {
            invalid("header line too long".into())
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| invalid("non-UTF-8 header line".into()))
}

async fn read_line_required<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<String> {
    read_line(r).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        )
    })
}

/// Reads one HTTP/1.x response (skipping interim 1xx answers).
pub(crate) async fn read_response<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Response> {
    loop {
        let status_line = read_line_required(r).await?;
        let mut parts = status_line.splitn(3, ' ');
        let proto = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| (100..=999).contains(s))
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        if !proto.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut close = proto == "HTTP/1.0";
        let mut version = None;
        for i in 0.. {
            let line = read_line_required(r).await?;
            if line.is_empty() {
                break;
            }
            if i == MAX_HEADERS {
                return Err(invalid("too many headers".into()));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    let n = value
                        .parse()
                        .map_err(|_| invalid(format!("bad content-length {value:?}")))?;
                    content_length = Some(n);
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let v = value.to_ascii_lowercase();
                    if v.split(',').any(|t| t.trim() == "close") {
                        close = true;
                    } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                        close = false;
                    }
                }
                n if n == VERSION_HEADER => version = Some(value.to_string()),
                _ => {}
            }
        }
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            read_chunked(r).await?
        } else if let Some(n) = content_length {
            if n > MAX_BODY {
                return Err(invalid(format!("body of {n} bytes is too large")));
            }
            let mut body = vec![0; n as usize];
            r.read_exact(&mut body).await?;
            body
        } else {
            close = true; // the body ends with the connection
            let mut body = Vec::new();
            (&mut *r).take(MAX_BODY).read_to_end(&mut body).await?;
            body
        };
        return Ok(Response {
            status,
            version,
            body,
            close,
        });
    }
}

async fn read_chunked<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line_required(r).await?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            while !read_line_required(r).await?.is_empty() {} // trailers
            return Ok(body);
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(invalid("chunked body too large".into()));
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        r.read_exact(&mut body[start..]).await?;
        if !read_line_required(r).await?.is_empty() {
            return Err(invalid("chunk not followed by CRLF".into()));
        }
    }
}

/// Failure class of an error, from the first `io::Error` in its source chain whose kind says
/// refused, reset/closed, or timed out; anything else is `Other` with the error's text.
pub fn classify(err: &(dyn Error + 'static)) -> Outcome {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return Outcome::Refused,
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => {
                    return Outcome::Reset
                }
                TimedOut => return Outcome::Timeout,
                _ => {}
            }
        }
        current = e.source();
    }
    Outcome::Other(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "request failed")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn classifies_through_the_error_chain() {
        let kinds = [
            (io::ErrorKind::ConnectionRefused, Outcome::Refused),
            (io::ErrorKind::ConnectionReset, Outcome::Reset),
            (io::ErrorKind::BrokenPipe, Outcome::Reset),
            (io::ErrorKind::UnexpectedEof, Outcome::Reset),
            (io::ErrorKind::TimedOut, Outcome::Timeout),
        ];
        for (kind, outcome) in kinds {
            let wrapped = Wrapper(io::Error::from(kind));
            assert_eq!(classify(&wrapped), outcome, "{kind:?}");
        }
        let other = Wrapper(io::Error::new(io::ErrorKind::InvalidData, "garbage"));
        assert_eq!(classify(&other), Outcome::Other("request failed".into()));
    }

    #[tokio::test]
    async fn reads_length_chunked_and_eof_bodies() {
        let mut raw: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-DCNode-Version: 1.2.0\r\n\r\nabc";
        let r = read_response(&mut raw).await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (200, &b"abc"[..], false)
        );
        assert_eq!(r.version.as_deref(), Some("1.2.0"));

        let mut raw: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2;x=y\r\nab\r\n1\r\nc\r\n0\r\nt: 1\r\n\r\n";
        let r = read_response(&mut raw).await.unwrap();
        assert_eq!((r.body.as_slice(), r.close), (&b"abc"[..], true));

        let mut raw: &[u8] = b"HTTP/1.0 500 Oops\r\n\r\nxyz";
        let r = read_response(&mut raw).await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close),
            (500, &b"xyz"[..], true)
        );
    }

    #[tokio::test]
    async fn truncated_responses_are_resets() {
        for raw in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab",
        ] {
            let mut raw = raw;
            let err = read_response(&mut raw).await.err().unwrap();
            assert_eq!(classify(&err), Outcome::Reset, "{err}");
        }
        let mut raw: &[u8] = b"SSH-2.0-OpenSSH\r\n\r\n";
        let err = read_response(&mut raw).await.err().unwrap();
        assert!(matches!(classify(&err), Outcome::Other(_)));
    }
}

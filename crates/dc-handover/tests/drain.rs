//! `serve_draining` over real loopback connections: what a client sees while a server that
//! shares its listening socket with another process winds down.

use std::io::ErrorKind;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::{get, put};
use axum::Router;
use dc_handover::http::{serve_draining, Drain, DrainReport, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn app() -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/echo", put(|b: Bytes| async move { b }))
}

fn limits() -> ServeLimits {
    ServeLimits {
        header_timeout: Duration::from_secs(5),
        max_connections: 16,
        max_connection_life: Duration::from_secs(60),
    }
}

/// Reads one response (headers and a `content-length` body); `None` at end of stream.
async fn response(c: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match c.read(&mut b).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => buf.push(b[0]),
        }
    }
    let head = String::from_utf8(buf).unwrap().to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).await.unwrap();
    Some((head, String::from_utf8(body).unwrap()))
}

async fn closed(c: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(30), c.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

const GET_OK: &[u8] = b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n";

/// A server on its own copy of a listening socket the test also holds (as a node holds the
/// agent's socket), stopped through the returned sender.
async fn start(
    drain: Drain,
) -> (
    std::net::TcpListener,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<DrainReport>,
) {
    let shared = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = shared.try_clone().unwrap();
    ours.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(ours).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_draining(
        listener,
        app(),
        limits(),
        drain,
        async move {
            let _ = rx.await;
        },
    ));
    (shared, tx, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_answers_what_it_has_with_connection_close_and_leaves_the_socket_listening() {
    // A linger long enough for a slow machine to do the steps below inside it.
    let drain = Drain {
        linger: Duration::from_secs(5),
        deadline: Duration::from_secs(10),
    };
    let (shared, stop, server) = start(drain).await;
    let addr = shared.local_addr().unwrap();

    // A keep-alive connection, served normally.
    let mut keep = TcpStream::connect(addr).await.unwrap();
    keep.write_all(GET_OK).await.unwrap();
    let (head, body) = response(&mut keep).await.unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, "ok");
    // A request in progress: headers sent, body not yet.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"PUT /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhe")
        .await
        .unwrap();
    // An idle keep-alive connection that sends nothing more.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(GET_OK).await.unwrap();
    response(&mut idle).await.unwrap();

    stop.send(()).unwrap();
    // Within the linger, the keep-alive client's requests are answered; once the server has
    // stopped accepting (it says so by `connection: close`), the client is told to go.
    let head = loop {
        keep.write_all(GET_OK).await.unwrap();
        let (head, body) = response(&mut keep).await.unwrap();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, "ok");
        if head.contains("connection: close") {
            break head;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed(&mut keep).await, "closed after its answer");

    // No longer accepted by the server, but not refused either: it waits in the queue of the
    // socket the test still holds.
    let mut queued = TcpStream::connect(addr).await.unwrap();
    queued.write_all(GET_OK).await.unwrap();

    // The request in progress completes, also with `connection: close`.
    slow.write_all(b"llo").await.unwrap();
    let (head, body) = response(&mut slow).await.unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "hello");

    // After the linger the idle connection is closed, and the drain ends.
    assert!(closed(&mut idle).await);
    let report = tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.open_at_shutdown, 3, "{report:?}");
    assert_eq!(report.cut, 0, "{report:?}");
    assert!(report.took >= drain.linger, "{report:?}");

    // The queued connection is still there for whoever serves the socket next.
    shared.set_nonblocking(true).unwrap();
    let waiting = std::time::Instant::now();
    let (mut next, _) = loop {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the queued connection is gone"
        );
        match shared.accept() {
            Ok(c) => break c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut req = [0u8; GET_OK.len()];
    std::io::Read::read_exact(&mut next, &mut req).unwrap();
    assert_eq!(&req[..], GET_OK);
    drop(queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_linger_idle_connections_close_at_once_and_the_deadline_cuts_the_rest() {
    let drain = Drain {
        linger: Duration::ZERO,
        deadline: Duration::from_secs(10),
    };
    let (shared, stop, server) = start(drain).await;
    let addr = shared.local_addr().unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(GET_OK).await.unwrap();
    response(&mut idle).await.unwrap();
    // A request whose body never completes. An exchange first proves the server accepted
    // the connection; `100 Continue` proves the handler is reading the body (a request in
    // progress, not an idle connection) — no sleep to guess either.
    let mut stuck = TcpStream::connect(addr).await.unwrap();
    stuck.write_all(GET_OK).await.unwrap();
    response(&mut stuck).await.unwrap();
    stuck
        .write_all(
            b"PUT /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, _) = response(&mut stuck).await.unwrap();
    assert!(head.starts_with("http/1.1 100"), "{head}");
    stuck.write_all(b"he").await.unwrap();

    let t = std::time::Instant::now();
    stop.send(()).unwrap();
    assert!(closed(&mut idle).await);
    // Well before the 10 s deadline, with room for a slow machine.
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "idle closed at once, not at the deadline"
    );
    let report = tokio::time::timeout(Duration::from_secs(60), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.open_at_shutdown, 2, "{report:?}");
    assert_eq!(report.cut, 1, "{report:?}");
    assert!(closed(&mut stuck).await, "cut at the deadline");
    drop(shared);
}

//! Test servers: an in-memory imitation of the node API (optionally faulty), a server that
//! closes every connection, and one that never answers.

#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use dc_loadgen::VERSION_HEADER;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

pub const VERSION: &str = "test-1.0.0";

/// Bounds every test in time.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test step took over 60 s")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every third PUT is acknowledged but not stored.
    DropEveryThirdWrite,
    /// Every third PUT is stored with its first byte flipped.
    AlterEveryThirdWrite,
    /// Every request is answered 500.
    Always500,
}

pub struct Node {
    fault: Fault,
    objects: Mutex<HashMap<String, Vec<u8>>>,
    /// PUT requests received.
    pub puts: AtomicU64,
    /// Names of the writes acknowledged but dropped or altered.
    pub damaged: Mutex<Vec<String>>,
    /// TCP connections accepted.
    pub connections: AtomicU64,
}

fn versioned(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(VERSION_HEADER, VERSION)], body).into_response()
}

async fn put_object(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if node.fault == Fault::Always500 {
        return versioned(StatusCode::INTERNAL_SERVER_ERROR, b"boom".to_vec());
    }
    let third = node.puts.fetch_add(1, Ordering::SeqCst) % 3 == 2;
    let mut body = body.to_vec();
    match node.fault {
        Fault::DropEveryThirdWrite if third => {
            node.damaged.lock().unwrap().push(name);
            return versioned(StatusCode::NO_CONTENT, Vec::new());
        }
        Fault::AlterEveryThirdWrite if third && !body.is_empty() => {
            body[0] ^= 1;
            node.damaged.lock().unwrap().push(name.clone());
        }
        _ => {}
    }
    node.objects.lock().unwrap().insert(name, body);
    versioned(StatusCode::NO_CONTENT, Vec::new())
}

async fn get_object(State(node): State<Arc<Node>>, Path(name): Path<String>) -> Response {
    if node.fault == Fault::Always500 {
        return versioned(StatusCode::INTERNAL_SERVER_ERROR, b"boom".to_vec());
    }
    match node.objects.lock().unwrap().get(&name) {
        Some(data) => versioned(StatusCode::OK, data.clone()),
        None => versioned(StatusCode::NOT_FOUND, b"no such object".to_vec()),
    }
}

/// Serves `PUT/GET /v1/objects/{name}` on 127.0.0.1 (an ephemeral port) until the test ends.
pub async fn start_node(fault: Fault) -> (SocketAddr, Arc<Node>) {
    let node = Arc::new(Node {
        fault,
        objects: Mutex::default(),
        puts: AtomicU64::new(0),
        damaged: Mutex::default(),
        connections: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/v1/objects/{name}", get(get_object).put(put_object))
        .with_state(node.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = node.clone();
    let listener = listener.tap_io(move |_| {
        counted.connections.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, node)
}

/// Accepts connections, reads a little of the request and closes (at most 10 000 times).
pub async fn closing_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..10_000 {
            let Ok((mut stream, _)) = listener.accept().await else {
                break;
            };
            let mut buf = [0u8; 16];
            let _ = stream.read(&mut buf).await;
        }
    });
    addr
}

/// Accepts connections (at most 1 000) and never answers.
pub async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..1_000 {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            held.push(stream);
        }
    });
    addr
}

/// A port nothing listens on, for as long as the returned socket lives: bound but not
/// listening, so connections to it are refused and no other test can take it meanwhile.
pub async fn closed_port() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

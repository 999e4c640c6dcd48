//! The node's data API: `PUT/GET /v1/objects/{name}`, `/livez`, `/readyz`, `/v1/status`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::store::{ObjectStore, StoreError, MAX_OBJECT_BYTES};
use crate::VERSION_HEADER;

/// What `/v1/status` reports. Never key bytes: the fingerprint identifies the keyring.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub product: String,
    pub version: String,
    pub mr_enclave: String,
    pub keyring_fingerprint: String,
    pub keyring_epoch: u64,
    /// The keyring as this process received it by handover (the fingerprint its
    /// acknowledgement attested), before it minted its own data-key generation.
    pub received_fingerprint: Option<String>,
    /// The data-key generation new objects are written under.
    pub data_generation: u32,
    /// The highest release version that ever held these keys.
    pub keyring_floor: String,
    /// MRENCLAVEs the committee revoked, as this node's sealed custody state records them.
    pub revoked: Vec<String>,
}

pub struct Node {
    pub store: ObjectStore,
    pub status: std::sync::RwLock<Status>,
    pub ready: AtomicBool,
    /// Test-only fault: every object read answers 404.
    pub fail_reads: bool,
}

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/v1/objects/{name}", get(get_object).put(put_object))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .layer(DefaultBodyLimit::max(MAX_OBJECT_BYTES))
        .layer(axum::middleware::from_fn(dc_handover::http::deadline))
        .with_state(node)
}

fn versioned(node: &Node, mut r: Response) -> Response {
    let version = node
        .status
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .version
        .clone();
    if let Ok(v) = HeaderValue::from_str(&version) {
        r.headers_mut().insert(VERSION_HEADER, v);
    }
    r
}

fn error(e: &StoreError) -> Response {
    let status = match e {
        StoreError::BadName | StoreError::TooLarge => StatusCode::BAD_REQUEST,
        StoreError::NotFound => StatusCode::NOT_FOUND,
        StoreError::Corrupt(_) | StoreError::UnknownGeneration { .. } | StoreError::Io(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    (status, e.to_string()).into_response()
}

async fn get_object(State(node): State<Arc<Node>>, Path(name): Path<String>) -> Response {
    let n = node.clone();
    let r = tokio::task::spawn_blocking(move || {
        if n.fail_reads {
            return Err(StoreError::NotFound);
        }
        n.store.get(&name)
    })
    .await;
    let resp = match r {
        Ok(Ok(data)) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response()
        }
        Ok(Err(e)) => error(&e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    versioned(&node, resp)
}

async fn put_object(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let n = node.clone();
    let r = tokio::task::spawn_blocking(move || n.store.put(&name, &body)).await;
    let resp = match r {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(e)) => error(&e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    versioned(&node, resp)
}

async fn readyz(State(node): State<Arc<Node>>) -> Response {
    if node.ready.load(Ordering::SeqCst) {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response()
    }
}

async fn status(State(node): State<Arc<Node>>) -> Json<Status> {
    Json(
        node.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    )
}

//! The HTTP/1.1 + JSON transport (loopback). A thin layer: it reads the clock and randomness,
//! applies size limits and deadlines, and feeds the sans-IO core.
//!
//! | method, path                | body → answer          |
//! |-----------------------------|------------------------|
//! | `POST /v1/handover/hello`    | `Hello` → `Challenge`  |
//! | `POST /v1/handover/response` | `Response` → `Keys`    |
//! | `POST /v1/handover/ack`      | `Ack` → `Delivered`    |
//!
//! Refusals are `ErrorBody` JSON with a 4xx/5xx status.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use axum::Router;
use dc_tee::Tee;
use rand_core::{OsRng, TryRngCore};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::messages::{Ack, Challenge, Delivered, ErrorBody, Hello, Keys, Response};
use crate::{
    printable, Authorizer, Delivery, HandoverError, Holder, Keyring, Received, Receiver,
    ReceiverConfig,
};

pub const PATH_HELLO: &str = "/v1/handover/hello";
pub const PATH_RESPONSE: &str = "/v1/handover/response";
pub const PATH_ACK: &str = "/v1/handover/ack";
/// Largest request or response body.
/// Largest request body a holder accepts (`Hello`, `Response`, `Ack`: a response carries at
/// most two 16 KiB evidence fields in base64).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest answer a receiver reads (`Keys` carries a keyring of up to
/// [`crate::keyring::MAX_ENCODED_LEN`] bytes in base64).
pub const MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// Deadline for a whole request, body included (slow senders are cut off).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Called once per completed handover (the receiver acknowledged durable storage).
pub type OnDelivery = Arc<dyn Fn(&Delivery) + Send + Sync>;

/// Where the holder reads its keyring at each release: a node's keyring changes while it
/// runs (revocations are added to its custody state).
pub type KeyringSource = Arc<dyn Fn() -> Arc<Keyring> + Send + Sync>;

/// Called for every refused handover step (a security event when the code is e.g.
/// `unauthorized`, `report_mac` or `revoked`), so the owner can report the real reason.
pub type OnRefusal = Arc<dyn Fn(&HandoverError) + Send + Sync>;

/// A keyring that never changes, as a [`KeyringSource`].
pub fn fixed_keyring(ring: Keyring) -> KeyringSource {
    let ring = Arc::new(ring);
    Arc::new(move || ring.clone())
}

struct HolderState<A> {
    holder: Mutex<Holder<A>>,
    tee: Arc<dyn Tee>,
    keyring: KeyringSource,
    on_delivery: OnDelivery,
    on_refusal: OnRefusal,
}

/// The holder's endpoints, to mount on a node's upgrade port.
pub fn holder_router<A: Authorizer + 'static>(
    holder: Holder<A>,
    tee: Arc<dyn Tee>,
    keyring: KeyringSource,
    on_delivery: OnDelivery,
) -> Router {
    holder_router_observed(holder, tee, keyring, on_delivery, Arc::new(|_| {}))
}

/// [`holder_router`], also reporting every refusal to `on_refusal`.
pub fn holder_router_observed<A: Authorizer + 'static>(
    holder: Holder<A>,
    tee: Arc<dyn Tee>,
    keyring: KeyringSource,
    on_delivery: OnDelivery,
    on_refusal: OnRefusal,
) -> Router {
    let state = Arc::new(HolderState {
        holder: Mutex::new(holder),
        tee,
        keyring,
        on_delivery,
        on_refusal,
    });
    Router::new()
        .route(PATH_HELLO, post(hello::<A>))
        .route(PATH_RESPONSE, post(response::<A>))
        .route(PATH_ACK, post(ack::<A>))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(deadline))
}

/// Middleware: a whole request (body included) must finish within [`REQUEST_DEADLINE`].
pub async fn deadline(req: Request, next: Next) -> HttpResponse {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refusal(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "request not completed within the deadline",
        ),
    }
}

fn refusal(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    let body = ErrorBody {
        error: code.into(),
        message: message.into(),
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response()
}

fn status_of(e: &HandoverError) -> StatusCode {
    use HandoverError::*;
    match e {
        Malformed(_) | MalformedReport(_) | DecryptFailed => StatusCode::BAD_REQUEST,
        UnknownSession | Expired | WrongState(_) => StatusCode::CONFLICT,
        Busy => StatusCode::SERVICE_UNAVAILABLE,
        Tee(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::FORBIDDEN,
    }
}

fn handover_refusal(e: &HandoverError) -> HttpResponse {
    refusal(status_of(e), e.code(), &e.to_string())
}

fn json<T: Serialize>(v: &T) -> HttpResponse {
    match serde_json::to_vec(v) {
        Ok(b) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            b,
        )
            .into_response(),
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    }
}

/// Parses the message, then runs the protocol step off the async threads (TEE calls may block
/// on the platform) under the holder's lock.
async fn step<A, M, T>(
    state: Arc<HolderState<A>>,
    body: Bytes,
    f: impl FnOnce(&HolderState<A>, &mut Holder<A>, M) -> Result<T, HandoverError> + Send + 'static,
) -> HttpResponse
where
    A: Authorizer + 'static,
    M: DeserializeOwned + Send + 'static,
    T: Serialize + Send + 'static,
{
    let msg: M = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            let e = HandoverError::Malformed(format!("invalid JSON message: {e}"));
            tracing::warn!(code = e.code(), "handover step refused: {e}");
            (state.on_refusal)(&e);
            return handover_refusal(&e);
        }
    };
    let observer = state.clone();
    let r = tokio::task::spawn_blocking(move || {
        let mut h = state.holder.lock().unwrap_or_else(|p| p.into_inner());
        f(&state, &mut h, msg)
    })
    .await;
    match r {
        Ok(Ok(v)) => json(&v),
        Ok(Err(e)) => {
            // A refused handover is a security event: never silent.
            tracing::warn!(code = e.code(), "handover step refused: {e}");
            (observer.on_refusal)(&e);
            handover_refusal(&e)
        }
        Err(_) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "handover step failed",
        ),
    }
}

async fn hello<A: Authorizer + 'static>(
    State(s): State<Arc<HolderState<A>>>,
    body: Bytes,
) -> HttpResponse {
    step(s, body, |st, h, m: Hello| {
        h.on_hello(&*st.tee, &m, now_ms(), &mut OsRng.unwrap_err())
    })
    .await
}

async fn response<A: Authorizer + 'static>(
    State(s): State<Arc<HolderState<A>>>,
    body: Bytes,
) -> HttpResponse {
    step(s, body, |st, h, m: Response| {
        h.on_response(
            &*st.tee,
            &m,
            &(st.keyring)(),
            now_ms(),
            &mut OsRng.unwrap_err(),
        )
    })
    .await
}

async fn ack<A: Authorizer + 'static>(
    State(s): State<Arc<HolderState<A>>>,
    body: Bytes,
) -> HttpResponse {
    step(s, body, |st, h, m: Ack| {
        let d = h.on_ack(&*st.tee, &m, now_ms())?;
        (st.on_delivery)(&d);
        Ok(d.reply)
    })
    .await
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the holder at {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the holder refused ({status}, {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the holder's answer is larger than {MAX_RESPONSE_BODY} bytes")]
    TooLarge,
    #[error("the holder's answer is not a valid message: {0}")]
    BadAnswer(String),
    #[error(transparent)]
    Handover(#[from] HandoverError),
    #[error("storing the received keys failed, so they were not acknowledged: {0}")]
    Store(String),
}

/// Refusal codes ([`HandoverError::code`]) that point at a wrong or hostile peer: a security
/// event wherever they occur. `other` stands for a code a peer sent that we do not know;
/// `answer_too_large` and `bad_answer` are the receiver's refusals of what a holder sent.
pub const REFUSAL_CODES: &[&str] = &[
    "malformed_report",
    "report_mac",
    "tee_failure",
    "transcript_mismatch",
    "revoked",
    "unauthorized",
    "debug_peer",
    "lower_version",
    "wrong_role",
    "below_floor",
    "no_destination",
    "unexpected_destination",
    "not_released_for_peer",
    "not_released_for_me",
    "peer_changed",
    "decrypt_failed",
    "malformed",
    "ack_mismatch",
    "answer_too_large",
    "bad_answer",
    "other",
];

/// Refusal codes of ordinary protocol life (a late or repeated step, a crowded holder): a
/// retry, not an attack.
pub const ROUTINE_CODES: &[&str] = &["unknown_session", "expired", "busy", "wrong_state"];

/// Codes of failures to talk or to store, not refusals.
pub const FAILURE_CODES: &[&str] = &["unreachable", "store_failed", "timeout"];

/// The longest message from a peer that is kept (logs, journal, status).
const MAX_PEER_MESSAGE: usize = 300;

impl ClientError {
    /// A stable code for metrics and logs: the protocol code of a refusal (ours or the
    /// holder's), else what failed.
    pub fn code(&self) -> String {
        match self {
            Self::Http { .. } => "unreachable".into(),
            Self::Refused { code, .. } => code.clone(),
            Self::TooLarge => "answer_too_large".into(),
            Self::BadAnswer(_) => "bad_answer".into(),
            Self::Handover(e) => e.code().into(),
            Self::Store(_) => "store_failed".into(),
        }
    }

    /// A refusal — by the holder, or by us of what the holder sent — rather than a failure
    /// to talk or to store: a security-relevant event.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Refused { .. } | Self::Handover(_) | Self::BadAnswer(_) | Self::TooLarge
        )
    }
}

/// A client for a holder's endpoints.
#[derive(Clone)]
pub struct HolderClient {
    http: reqwest::Client,
    base: String,
}

impl HolderClient {
    /// `base` like `http://127.0.0.1:6667`.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_DEADLINE)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|source| ClientError::Http {
                url: base.into(),
                source,
            })?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<R, ClientError> {
        let url = format!("{}{path}", self.base);
        let http_err = |source| ClientError::Http {
            url: url.clone(),
            source,
        };
        let body = serde_json::to_vec(body).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
        let mut resp = self
            .http
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(http_err)?;
        let status = resp.status();
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            if buf.len() + chunk.len() > MAX_RESPONSE_BODY {
                return Err(ClientError::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let e: ErrorBody = serde_json::from_slice(&buf).unwrap_or(ErrorBody {
                error: "unknown".into(),
                message: String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned(),
            });
            // The holder's words end up in logs, the journal and metrics: a code we know, and
            // a short message without control characters.
            let code = REFUSAL_CODES
                .iter()
                .chain(ROUTINE_CODES)
                .find(|c| **c == e.error)
                .map_or("other", |c| *c);
            return Err(ClientError::Refused {
                status: status.as_u16(),
                code: code.into(),
                message: printable(&e.message, MAX_PEER_MESSAGE),
            });
        }
        serde_json::from_slice(&buf).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    pub async fn hello(&self, m: &Hello) -> Result<Challenge, ClientError> {
        self.call(PATH_HELLO, m).await
    }
    pub async fn response(&self, m: &Response) -> Result<Keys, ClientError> {
        self.call(PATH_RESPONSE, m).await
    }
    pub async fn ack(&self, m: &Ack) -> Result<Delivered, ClientError> {
        self.call(PATH_ACK, m).await
    }
}

/// A whole handover, receiver side: obtains the keyring from the holder at `client`, calls
/// `store` to make it durable (e.g. seal it and fsync), and only then acknowledges.
///
/// TEE calls run inline: on the software platform they are local socket round trips of
/// microseconds, and a receiver runs one handover at a time.
pub async fn receive_keys<A: Authorizer>(
    client: &HolderClient,
    tee: &dyn Tee,
    cfg: ReceiverConfig,
    authz: A,
    store: impl FnOnce(&Keyring) -> Result<(), String>,
) -> Result<Received, ClientError> {
    let (mut receiver, hello) = Receiver::start(tee, cfg, authz, &mut OsRng.unwrap_err())?;
    let challenge = client.hello(&hello).await?;
    let response = receiver.on_challenge(tee, &challenge, now_ms())?;
    let keys = client.response(&response).await?;
    let received = receiver.on_keys(tee, &keys)?;
    store(&received.keyring).map_err(ClientError::Store)?;
    let ack = receiver.ack(tee)?;
    let delivered = client.ack(&ack).await?;
    if delivered.keyring_fingerprint != received.keyring.fingerprint() {
        return Err(ClientError::BadAnswer(
            "the holder confirmed another keyring".into(),
        ));
    }
    Ok(received)
}

/// Limits of [`serve`].
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// A client must send a request's complete headers within this time (slow-loris).
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Longest life of one connection, however busy.
    pub max_connection_life: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            max_connections: 64,
            max_connection_life: Duration::from_secs(120),
        }
    }
}

/// How [`serve_draining`] winds down once its shutdown future resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    /// For this long after shutdown, open connections stay open and every response carries
    /// `Connection: close`: a keep-alive client's next request is still answered, and the
    /// client then moves to a new connection instead of writing into one being closed. Then
    /// idle connections are closed. Zero: idle connections close at once.
    pub linger: Duration,
    /// Requests still in progress this long after shutdown are cut (their connections
    /// dropped).
    pub deadline: Duration,
}

impl Drain {
    /// What [`serve`] does: idle connections close at once, a second for the rest.
    pub const QUICK: Drain = Drain {
        linger: Duration::ZERO,
        deadline: Duration::from_secs(1),
    };
}

/// What a drain found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections open when shutdown came.
    pub open_at_shutdown: usize,
    /// Connections still open at the deadline, cut.
    pub cut: usize,
    /// From shutdown to the last connection closed (or cut).
    pub took: Duration,
}

/// Serves `router` on `listener` with the limits every port of ours needs — which
/// `axum::serve` does not set: a header-read deadline, a connection cap, a connection
/// lifetime. (Body size and request deadlines are layers on the router.) Returns when
/// `shutdown` resolves, after giving open connections a second to finish
/// ([`Drain::QUICK`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_draining(listener, router, limits, Drain::QUICK, shutdown).await;
}

/// [`serve`], winding down by `drain` once `shutdown` resolves:
///
/// 1. stop accepting at once and close this process's descriptor of the listening socket —
///    only this one: a socket shared with other processes (passed by socket activation) stays
///    open in them, with its accept queue, and connections arriving meanwhile wait there for
///    the next server;
/// 2. for [`Drain::linger`], keep serving the open connections, every response with
///    `Connection: close`;
/// 3. then close idle connections and let requests in progress finish (with `Connection:
///    close`), until [`Drain::deadline`] after shutdown, when whatever is left is cut.
pub async fn serve_draining(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServeLimits,
    drain: Drain,
    shutdown: impl std::future::Future<Output = ()>,
) -> DrainReport {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use std::sync::atomic::{AtomicBool, Ordering};

    let draining = Arc::new(AtomicBool::new(false));
    let router = if drain.linger.is_zero() {
        router
    } else {
        let draining = draining.clone();
        router.layer(middleware::from_fn(move |req: Request, next: Next| {
            let draining = draining.clone();
            async move {
                let mut resp = next.run(req).await;
                if draining.load(Ordering::SeqCst) {
                    resp.headers_mut().insert(
                        header::CONNECTION,
                        header::HeaderValue::from_static("close"),
                    );
                }
                resp
            }
        }))
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = &mut conn => {}
                _ = tokio::time::sleep(limits.max_connection_life) => {}
                _ = stop.changed() => {
                    // Idle keep-alive connections close now; a request in flight finishes,
                    // unless the drain's deadline cuts it first (below, `abort_all`).
                    conn.as_mut().graceful_shutdown();
                    let _ = (&mut conn).await;
                }
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Stop accepting: free the port (or our copy of a shared socket) at once.
    let started = tokio::time::Instant::now();
    drop(listener);
    draining.store(true, Ordering::SeqCst);
    while tasks.try_join_next().is_some() {}
    let open_at_shutdown = tasks.len();
    if !drain.linger.is_zero() {
        let _ = tokio::time::timeout(drain.linger, join_all(&mut tasks)).await;
    }
    let _ = stop_tx.send(true);
    let rest = drain.deadline.saturating_sub(started.elapsed());
    let _ = tokio::time::timeout(rest, join_all(&mut tasks)).await;
    let cut = tasks.len();
    tasks.abort_all();
    DrainReport {
        open_at_shutdown,
        cut,
        took: started.elapsed(),
    }
}

async fn join_all(tasks: &mut tokio::task::JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuthzError;
    use dc_tee::Measurement;

    #[test]
    fn every_protocol_code_is_classified() {
        let m = Measurement([1; 32]);
        let v: crate::Version = "1.0.0".parse().unwrap();
        let all = [
            HandoverError::ReportMac,
            HandoverError::Tee(dc_tee::TeeError::Unavailable("x".into())),
            HandoverError::TranscriptMismatch,
            HandoverError::Unauthorized(AuthzError::Revoked(m)),
            HandoverError::Unauthorized(AuthzError::NotAuthorized(m)),
            HandoverError::DebugPeer(m),
            HandoverError::LowerVersion {
                peer: m,
                peer_version: v,
                minimum: v,
            },
            HandoverError::WrongRole(m),
            HandoverError::BelowFloor {
                peer: m,
                version: v,
                floor: v,
                floor_isv_svn: 1,
            },
            HandoverError::NoDestination,
            HandoverError::UnexpectedDestination,
            HandoverError::NotReleasedForPeer {
                peer: m,
                released_to: String::new(),
            },
            HandoverError::NotReleasedForMe {
                me: String::new(),
                released_to: String::new(),
            },
            HandoverError::UnknownSession,
            HandoverError::Expired,
            HandoverError::Busy,
            HandoverError::PeerChanged,
            HandoverError::DecryptFailed,
            HandoverError::Malformed(String::new()),
            HandoverError::WrongState("x"),
            HandoverError::AckMismatch,
        ];
        for e in &all {
            let c = e.code();
            assert!(
                REFUSAL_CODES.contains(&c) != ROUTINE_CODES.contains(&c),
                "{c} must be in exactly one list"
            );
        }
        assert!(REFUSAL_CODES.contains(&"malformed_report"));
    }

    #[test]
    fn a_peer_message_is_cut_and_made_printable() {
        let m = printable(&format!("a\nb\u{1b}[31m{}", "x".repeat(1000)), 300);
        assert_eq!(m.chars().count(), 300);
        assert!(!m.chars().any(char::is_control), "{m:?}");
        assert!(m.starts_with("a\u{fffd}b\u{fffd}[31m"));
        let m = printable("ok\u{202e}kcatta\u{200b}", 300);
        assert_eq!(
            m, "ok\u{fffd}kcatta\u{fffd}",
            "bidi and zero-width marks hidden"
        );
    }
}

//! Load generator for a DC storage node (`PUT/GET /v1/objects/{name}` over HTTP/1.1).
//!
//! Closed-loop clients on tokio: some keep one connection alive, the others open a new
//! connection per request. Every request is recorded as a [`Sample`] (start time relative to
//! the run start, latency, outcome). Nothing is ever retried: a request sent once is counted
//! once, so a failure during an upgrade cannot hide behind a retry.
//!
//! ```no_run
//! # async fn example() {
//! use dc_loadgen::{start, LoadConfig, Report};
//! let handle = start(LoadConfig::new("127.0.0.1:8080".parse().unwrap())).unwrap();
//! let t0 = handle.now_us();
//! // ... switch node versions here ...
//! let windows = vec![(t0, handle.now_us())];
//! let run = handle.stop_and_join().await;
//! let verification = run.verify_writes().await;
//! let report = Report::new(&run.samples, &windows, Some(&verification));
//! println!("{report}");
//! # }
//! ```

mod chart;
mod client;
mod run;
mod stats;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use chart::{around, svg_chart};
pub use client::classify;
pub use run::{object_content, run, start, LoadHandle, Run, StopSignal, Verification};
pub use stats::{Latency, Phase, Report};

/// Header naming the node version that served a request.
pub const VERSION_HEADER: &str = "x-dcnode-version";

/// What to run. Stop conditions: `duration`, `max_requests_per_client`, or
/// [`LoadHandle::stop`]; whichever comes first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadConfig {
    pub target: SocketAddr,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// Fraction of clients that reuse one keep-alive connection; the others open a new
    /// connection (and send `Connection: close`) for every request.
    pub keep_alive_fraction: f64,
    /// Probability that a request is a PUT of a new object (otherwise a GET of an object this
    /// client already wrote; a client with no acknowledged write yet always PUTs).
    pub put_fraction: f64,
    /// Bytes per object.
    pub object_size: usize,
    pub max_requests_per_client: Option<u64>,
    pub duration: Option<Duration>,
    /// Whole-request timeout (connect, send, answer). Generous, so that a slow but correct
    /// answer is not counted as a failure.
    pub request_timeout: Duration,
    /// Seeds each client's choice of operations (runs are reproducible in their choices).
    pub seed: u64,
}

impl LoadConfig {
    /// Defaults: 32 clients, half keep-alive, 20 % PUTs of 4 KiB, 10 s timeout, no bound
    /// (set `duration` or `max_requests_per_client`, or stop through the handle).
    pub fn new(target: SocketAddr) -> Self {
        LoadConfig {
            target,
            clients: 32,
            keep_alive_fraction: 0.5,
            put_fraction: 0.2,
            object_size: 4096,
            max_requests_per_client: None,
            duration: None,
            request_timeout: Duration::from_secs(10),
            seed: 1,
        }
    }

    /// Number of clients that keep their connection alive (the first ones by index).
    pub fn keep_alive_clients(&self) -> usize {
        (self.clients as f64 * self.keep_alive_fraction).round() as usize
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 {
            return Err("clients must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.keep_alive_fraction) {
            return Err("keep_alive_fraction must be within 0..=1".into());
        }
        if !(0.0..=1.0).contains(&self.put_fraction) {
            return Err("put_fraction must be within 0..=1".into());
        }
        if self.request_timeout.is_zero() {
            return Err("request_timeout must be positive".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get,
    Put,
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Outcome {
    /// A 2xx answer (for a GET: with the content that was written).
    Ok {
        version: String,
    },
    /// Connection refused: nothing listened on the port.
    Refused,
    /// Connection reset, aborted, closed before a complete response, or broken pipe.
    Reset,
    /// No complete answer within the request timeout.
    Timeout,
    Http5xx(u16),
    /// Anything else: a 4xx, a GET with different content, a malformed response, ...
    Other(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok { .. })
    }

    /// Stable name of the failure class (`"ok"` for success): `refused`, `reset`,
    /// `timeout`, `http_503`, `other: <detail>`.
    pub fn class(&self) -> String {
        match self {
            Outcome::Ok { .. } => "ok".into(),
            Outcome::Refused => "refused".into(),
            Outcome::Reset => "reset".into(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Http5xx(s) => format!("http_{s}"),
            Outcome::Other(d) => format!("other: {d}"),
        }
    }
}

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When the request started (before connecting, for new-connection clients), in µs since
    /// the run started.
    pub start_us: u64,
    /// Until the outcome was known, in µs.
    pub latency_us: u64,
    pub op: Op,
    pub client: u32,
    pub keep_alive: bool,
    pub outcome: Outcome,
}

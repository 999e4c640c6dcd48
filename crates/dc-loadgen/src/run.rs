//! Runs the clients, and reads every acknowledged write back afterwards.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::task::{JoinHandle, JoinSet};

use crate::client::{classify, Conn, Response};
use crate::{LoadConfig, Op, Outcome, Sample};

/// Clonable stop flag: clients finish the request they are in and stop.
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A run in progress (see [`start`]).
pub struct LoadHandle {
    config: LoadConfig,
    started: Instant,
    stop: StopSignal,
    tasks: Vec<JoinHandle<ClientResult>>,
}

struct ClientResult {
    samples: Vec<Sample>,
    writes: Vec<String>,
}

/// Starts the clients on the current tokio runtime (panics outside one) and returns at once.
pub fn start(config: LoadConfig) -> Result<LoadHandle, String> {
    config.validate()?;
    let started = Instant::now();
    let stop = StopSignal::new();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let prefix: Arc<str> = format!("lg-{:x}-{:x}", std::process::id(), nanos).into();
    let keep_alive = config.keep_alive_clients();
    let tasks = (0..config.clients)
        .map(|id| {
            let client = Client {
                id: id as u32,
                keep_alive: id < keep_alive,
                config: config.clone(),
                started,
                stop: stop.clone(),
                prefix: prefix.clone(),
            };
            tokio::spawn(client.run())
        })
        .collect();
    Ok(LoadHandle {
        config,
        started,
        stop,
        tasks,
    })
}

/// Runs until `duration` or `max_requests_per_client` ends it (one of them must be set).
pub async fn run(config: LoadConfig) -> Result<Run, String> {
    if config.duration.is_none() && config.max_requests_per_client.is_none() {
        return Err("set duration or max_requests_per_client (or use start() and stop())".into());
    }
    Ok(start(config)?.join().await)
}

impl LoadHandle {
    /// The instant sample times are measured from.
    pub fn started(&self) -> Instant {
        self.started
    }
    /// Now, in µs since the run started: the clock for switch windows.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }
    pub fn stop(&self) {
        self.stop.stop();
    }
    /// Waits until every client has stopped (by duration, request count or stop signal).
    pub async fn join(self) -> Run {
        let mut samples = Vec::new();
        let mut writes = Vec::new();
        for task in self.tasks {
            match task.await {
                Ok(r) => {
                    samples.extend(r.samples);
                    writes.extend(r.writes);
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("load client task: {e}"),
            }
        }
        samples.sort_by_key(|s| (s.start_us, s.client));
        Run {
            target: self.config.target,
            object_size: self.config.object_size,
            request_timeout: self.config.request_timeout,
            elapsed_us: self.started.elapsed().as_micros() as u64,
            samples,
            writes,
        }
    }
    pub async fn stop_and_join(self) -> Run {
        self.stop();
        self.join().await
    }
}

/// A finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    pub target: SocketAddr,
    pub object_size: usize,
    pub request_timeout: Duration,
    pub elapsed_us: u64,
    /// Every request, ordered by start time.
    pub samples: Vec<Sample>,
    /// Names of the objects whose PUT was acknowledged (2xx).
    pub writes: Vec<String>,
}

/// Result of reading every acknowledged write back.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub checked: u64,
    /// Acknowledged, but the node answers 404.
    pub missing: Vec<String>,
    /// Acknowledged, but the node answers other content.
    pub different: Vec<String>,
    /// The read itself failed (no conclusion about the object).
    pub unreadable: Vec<(String, Outcome)>,
}

impl Verification {
    /// Lost writes: missing or different.
    pub fn lost(&self) -> u64 {
        (self.missing.len() + self.different.len()) as u64
    }
}

impl Run {
    /// Reads every acknowledged write back (a few keep-alive connections, no retries) and
    /// compares it with the content its name determines.
    pub async fn verify_writes(&self) -> Verification {
        const WORKERS: usize = 8;
        let names: Arc<[String]> = self.writes.clone().into();
        let next = Arc::new(AtomicUsize::new(0));
        let mut set = JoinSet::new();
        for _ in 0..WORKERS.min(names.len()) {
            let (names, next) = (names.clone(), next.clone());
            let (addr, size, timeout) = (self.target, self.object_size, self.request_timeout);
            set.spawn(async move {
                let mut v = Verification::default();
                let mut conn = None;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(name) = names.get(i) else { break v };
                    v.checked += 1;
                    let r = exchange(&mut conn, addr, "GET", name, &[], true, timeout).await;
                    match r {
                        Ok(r) if r.status == 404 => v.missing.push(name.clone()),
                        Ok(r) if r.status == 200 && r.body == object_content(name, size) => {}
                        Ok(r) if r.status == 200 => v.different.push(name.clone()),
                        Ok(r) => v
                            .unreadable
                            .push((name.clone(), judge(Op::Get, name, size, r))),
                        Err(outcome) => v.unreadable.push((name.clone(), outcome)),
                    }
                }
            });
        }
        let mut all = Verification::default();
        while let Some(r) = set.join_next().await {
            let v = r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            all.checked += v.checked;
            all.missing.extend(v.missing);
            all.different.extend(v.different);
            all.unreadable.extend(v.unreadable);
        }
        all
    }
}

struct Client {
    id: u32,
    keep_alive: bool,
    config: LoadConfig,
    started: Instant,
    stop: StopSignal,
    prefix: Arc<str>,
}

impl Client {
    async fn run(self) -> ClientResult {
        let cfg = &self.config;
        let deadline = cfg.duration.map(|d| self.started + d);
        let mut rng = SplitMix(cfg.seed ^ (u64::from(self.id) + 1).wrapping_mul(0x9E37_79B9));
        let mut conn = None;
        let mut samples = Vec::new();
        let mut writes: Vec<String> = Vec::new();
        for seq in 0.. {
            if self.stop.is_stopped()
                || deadline.is_some_and(|d| Instant::now() >= d)
                || cfg.max_requests_per_client.is_some_and(|m| seq >= m)
            {
                break;
            }
            let put = writes.is_empty() || rng.unit() < cfg.put_fraction;
            let (op, name, body) = if put {
                let name = format!("{}-c{}-{seq}", self.prefix, self.id);
                let body = object_content(&name, cfg.object_size);
                (Op::Put, name, body)
            } else {
                let name = writes[(rng.next() % writes.len() as u64) as usize].clone();
                (Op::Get, name, Vec::new())
            };
            let method = if put { "PUT" } else { "GET" };
            let t0 = Instant::now();
            let r = exchange(
                &mut conn,
                cfg.target,
                method,
                &name,
                &body,
                self.keep_alive,
                cfg.request_timeout,
            )
            .await;
            let latency_us = t0.elapsed().as_micros() as u64;
            let outcome = match r {
                Ok(r) => judge(op, &name, cfg.object_size, r),
                Err(outcome) => outcome,
            };
            if put && outcome.is_ok() {
                writes.push(name);
            }
            samples.push(Sample {
                start_us: t0.duration_since(self.started).as_micros() as u64,
                latency_us,
                op,
                client: self.id,
                keep_alive: self.keep_alive,
                outcome,
            });
        }
        ClientResult { samples, writes }
    }
}

/// One request on `conn` (opened, or reopened if the peer closed it while idle), within
/// `timeout`. Never retried. Leaves `conn` empty when it must not be reused.
async fn exchange(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    method: &str,
    name: &str,
    body: &[u8],
    keep_alive: bool,
    timeout: Duration,
) -> Result<Response, Outcome> {
    let path = format!("/v1/objects/{name}");
    let attempt = async {
        let c = match conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => Conn::connect(addr).await?,
        };
        conn.insert(c)
            .request(method, &path, body, !keep_alive)
            .await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => {
            *conn = None;
            Err(Outcome::Timeout)
        }
        Ok(Err(e)) => {
            *conn = None;
            Err(classify(&e))
        }
        Ok(Ok(r)) => {
            if r.close {
                *conn = None;
            }
            Ok(r)
        }
    }
}

/// Outcome of an answered request. A 2xx without the version header is `Ok` with an empty
/// version.
fn judge(op: Op, name: &str, size: usize, r: Response) -> Outcome {
    match r.status {
        200..=299 if op == Op::Get && r.body != object_content(name, size) => {
            Outcome::Other("GET answered different content".into())
        }
        200..=299 => Outcome::Ok {
            version: r.version.unwrap_or_default(),
        },
        s @ 500..=599 => Outcome::Http5xx(s),
        s => Outcome::Other(format!("HTTP {s}")),
    }
}

/// The content of object `name`: `size` pseudo-random bytes determined by the name.
pub fn object_content(name: &str, size: usize) -> Vec<u8> {
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut rng = SplitMix(seed);
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(size);
    out
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

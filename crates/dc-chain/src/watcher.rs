//! Following DCChain's finalized blocks.
//!
//! One task per watcher. It connects to the endpoints in order (the next on failure, with
//! exponential backoff), and per connection: `chain_getFinalizedHead` first, then a
//! `chain_subscribeFinalizedHeads` subscription plus a periodic poll in case notifications are
//! lost. For each new finalized hash it checks `system_health` (nothing is reported while the
//! node syncs) and reads `DcNode.DcProgram` and `DcNode.EnclaveIds` with `state_getStorage` at
//! that hash. Undecodable, oversized or absent values are reported in the observation; they
//! never stop the watcher.

use std::time::{Duration, Instant};

use jsonrpsee_core::client::{ClientT, SubscriptionClientT};
use jsonrpsee_core::rpc_params;
use jsonrpsee_ws_client::{WsClient, WsClientBuilder};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use crate::storage::{self, DcProgramInfo, EnclaveIdEntry, MAX_VALUE_BYTES};
use crate::tls;
use crate::ChainError;

#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// WebSocket endpoints (`ws://host:port` or `wss://host[:port][/path]`), tried in order.
    pub endpoints: Vec<String>,
    /// Extra root certificates for `wss://` endpoints, each entry the contents of one PEM
    /// file (`--chain-ca`), trusted beside the public web roots. Unused for `ws://`.
    pub extra_roots_pem: Vec<Vec<u8>>,
    /// Re-read the finalized head this often even without notifications.
    pub poll_interval: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub request_timeout: Duration,
    /// Lower bound between two observations (a flood of notifications is coalesced).
    pub min_interval: Duration,
}

impl WatcherConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            extra_roots_pem: Vec::new(),
            poll_interval: Duration::from_secs(6),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            min_interval: Duration::from_millis(20),
        }
    }

    /// Checks what can be checked before connecting: every endpoint is a `ws://` or `wss://`
    /// URL and every extra root is a PEM certificate. The watcher runs without this call too
    /// (and reports such problems as [`Event::Disconnected`] reasons), but a caller that
    /// wants a bad `--chain-ca` file to stop start-up calls it first.
    pub fn check(&self) -> Result<(), String> {
        for e in &self.endpoints {
            let lower = e.to_ascii_lowercase();
            if !(lower.starts_with("ws://") || lower.starts_with("wss://")) {
                return Err(format!("chain endpoint {e:?}: expected ws:// or wss://"));
            }
        }
        tls::connector(&self.extra_roots_pem).map(|_| ())
    }
}

/// What the watcher saw at one finalized block.
#[derive(Clone, Debug)]
pub struct Observation {
    pub endpoint: String,
    pub block_hash: String,
    pub block_number: u64,
    /// `Ok(None)`: no value stored.
    pub program: Result<Option<DcProgramInfo>, ChainError>,
    pub enclave_ids: Result<Option<Vec<EnclaveIdEntry>>, ChainError>,
    pub at: Instant,
}

#[derive(Clone, Debug)]
pub enum Event {
    Connected { endpoint: String },
    Disconnected { endpoint: String, reason: String },
    Syncing { endpoint: String },
    Observed(Box<Observation>),
}

/// Starts the watcher; events arrive on the returned channel until it is dropped.
pub fn spawn(cfg: WatcherConfig) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(run(cfg, tx));
    rx
}

async fn run(cfg: WatcherConfig, tx: mpsc::Sender<Event>) {
    if cfg.endpoints.is_empty() {
        warn!("chain watcher has no endpoints");
        return;
    }
    // Built once (parsing the roots is not free); only when some endpoint needs it.
    let tls = cfg
        .endpoints
        .iter()
        .any(|e| tls::is_wss(e))
        .then(|| tls::connector(&cfg.extra_roots_pem));
    if let Some(Err(e)) = &tls {
        warn!("chain watcher cannot use its wss:// endpoints: {e}");
    }
    let mut backoff = cfg.reconnect_min;
    let mut i = 0usize;
    let mut last_hash = String::new();
    loop {
        let endpoint = cfg.endpoints[i % cfg.endpoints.len()].clone();
        i += 1;
        let started = Instant::now();
        let reason = match session(&cfg, tls.as_ref(), &endpoint, &tx, &mut last_hash).await {
            Ok(()) => return, // the receiver is gone
            Err(e) => e,
        };
        if tx
            .send(Event::Disconnected {
                endpoint: endpoint.clone(),
                reason,
            })
            .await
            .is_err()
        {
            return;
        }
        // A connection that lived a while resets the backoff.
        if started.elapsed() > cfg.reconnect_max {
            backoff = cfg.reconnect_min;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

/// One connection. `Ok(())` only when the event receiver is gone.
async fn session(
    cfg: &WatcherConfig,
    tls: Option<&Result<TlsConnector, String>>,
    endpoint: &str,
    tx: &mpsc::Sender<Event>,
    last_hash: &mut String,
) -> Result<(), String> {
    let builder = WsClientBuilder::default()
        .request_timeout(cfg.request_timeout)
        .connection_timeout(cfg.request_timeout)
        .max_response_size((MAX_VALUE_BYTES * 2 + 4096) as u32)
        .max_request_size(64 * 1024)
        .max_buffer_capacity_per_subscription(16);
    let client = if tls::is_wss(endpoint) {
        let connector = match tls {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(format!("connect: {e}")),
            None => return Err("connect: no TLS configuration".into()),
        };
        // TCP and TLS within one deadline; the WebSocket handshake over the stream has its
        // own (`connection_timeout`).
        let (ws_url, stream) = tls::connect(connector, endpoint, cfg.request_timeout)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        builder
            .build_with_stream(ws_url, stream)
            .await
            .map_err(|e| format!("connect: WebSocket over TLS: {e}"))?
    } else {
        builder
            .build(endpoint)
            .await
            .map_err(|e| format!("connect: {e}"))?
    };
    if tx
        .send(Event::Connected {
            endpoint: endpoint.into(),
        })
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut sub = client
        .subscribe::<Value, _>(
            "chain_subscribeFinalizedHeads",
            rpc_params![],
            "chain_unsubscribeFinalizedHeads",
        )
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    let mut last_observed = Instant::now() - cfg.min_interval;
    // The current finalized state first (start and every reconnect).
    if !observe(&client, endpoint, tx, last_hash).await? {
        return Ok(());
    }
    // An interval, not a sleep re-created every loop: notifications (even undecodable ones)
    // arriving faster than the poll period must not starve the fallback poll.
    let mut poll = tokio::time::interval(cfg.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        tokio::select! {
            n = sub.next() => match n {
                Some(Ok(_header)) => {}
                Some(Err(e)) => {
                    warn!(endpoint, "undecodable finalized-head notification ignored: {e}");
                    continue;
                }
                None => return Err(format!("subscription ended: {:?}", sub.close_reason())),
            },
            _ = poll.tick() => debug!(endpoint, "periodic poll"),
        }
        let since = last_observed.elapsed();
        if since < cfg.min_interval {
            tokio::time::sleep(cfg.min_interval - since).await;
        }
        last_observed = Instant::now();
        if !observe(&client, endpoint, tx, last_hash).await? {
            return Ok(());
        }
    }
}

/// Reads the finalized state if it is new. `Ok(false)` when the receiver is gone.
async fn observe(
    client: &WsClient,
    endpoint: &str,
    tx: &mpsc::Sender<Event>,
    last_hash: &mut String,
) -> Result<bool, String> {
    let health: Value = client
        .request("system_health", rpc_params![])
        .await
        .map_err(|e| format!("system_health: {e}"))?;
    if health
        .get("isSyncing")
        .and_then(Value::as_bool)
        .unwrap_or(true)
    {
        return Ok(tx
            .send(Event::Syncing {
                endpoint: endpoint.into(),
            })
            .await
            .is_ok());
    }
    let hash: String = client
        .request("chain_getFinalizedHead", rpc_params![])
        .await
        .map_err(|e| format!("chain_getFinalizedHead: {e}"))?;
    if !is_hash(&hash) {
        return Err(format!(
            "chain_getFinalizedHead answered {hash:?}, not a block hash"
        ));
    }
    if hash == *last_hash {
        return Ok(true);
    }
    let header: Value = client
        .request("chain_getHeader", rpc_params![&hash])
        .await
        .map_err(|e| format!("chain_getHeader: {e}"))?;
    let block_number = header
        .get("number")
        .and_then(Value::as_str)
        .and_then(|n| u64::from_str_radix(n.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| "chain_getHeader: no block number".to_string())?;
    let program = read(client, &storage::dc_program_key(), &hash)
        .await
        .and_then(|v| v.map(|b| DcProgramInfo::decode(&b)).transpose());
    let enclave_ids = read(client, &storage::enclave_ids_key(), &hash)
        .await
        .and_then(|v| v.map(|b| EnclaveIdEntry::decode_set(&b)).transpose());
    // A transient RPC failure leaves the block unseen, so the next notification or poll
    // reads it again; undecodable values are final for that block.
    let rpc_failed = matches!(&program, Err(ChainError::Rpc(_)))
        || matches!(&enclave_ids, Err(ChainError::Rpc(_)));
    if !rpc_failed {
        *last_hash = hash.clone();
    }
    let obs = Observation {
        endpoint: endpoint.into(),
        block_hash: hash,
        block_number,
        program,
        enclave_ids,
        at: Instant::now(),
    };
    Ok(tx.send(Event::Observed(Box::new(obs))).await.is_ok())
}

fn is_hash(h: &str) -> bool {
    h.len() == 66 && h.starts_with("0x") && h[2..].bytes().all(|c| c.is_ascii_hexdigit())
}

/// `state_getStorage(key, at)`: `Ok(None)` when nothing is stored.
async fn read(client: &WsClient, key: &[u8], at: &str) -> Result<Option<Vec<u8>>, ChainError> {
    let v: Option<String> = client
        .request(
            "state_getStorage",
            rpc_params![format!("0x{}", hex::encode(key)), at],
        )
        .await
        .map_err(|e| ChainError::Rpc(format!("state_getStorage: {e}")))?;
    let Some(v) = v else { return Ok(None) };
    let h = v
        .strip_prefix("0x")
        .ok_or_else(|| ChainError::Decode("storage value is not 0x-hex".into()))?;
    if h.len() / 2 > MAX_VALUE_BYTES {
        return Err(ChainError::TooLarge {
            got: h.len() / 2,
            limit: MAX_VALUE_BYTES,
        });
    }
    hex::decode(h)
        .map(Some)
        .map_err(|e| ChainError::Decode(format!("storage value hex: {e}")))
}

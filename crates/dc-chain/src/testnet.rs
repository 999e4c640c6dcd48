//! A real Substrate runtime for tests: chopsticks (installed by `npm ci` from the repository's
//! `package.json`) running the offline chain spec in `../shared/fixtures/substrate/`, on a
//! loopback port. Storage is written with `dev_setStorage` and blocks are made with
//! `dev_newBlock`; every block is finalized at once.
//!
//! Nothing here may depend on how fast the machine is: chopsticks builds a block in about
//! 0.4 s on an idle machine but many times slower on a loaded 2-core one with a cold cache, so
//! the limits below are hang guards (minutes), and many blocks are made in several short calls.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee_core::client::ClientT;
use jsonrpsee_core::rpc_params;
use jsonrpsee_ws_client::{WsClient, WsClientBuilder};
use serde_json::Value;

/// How long a dev-chain control call (`dev_setStorage`, `dev_newBlock`) may take: only a
/// guard against a hung node, never a performance expectation.
const CONTROL_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one readiness probe may take while chopsticks starts (it is retried).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long chopsticks may take to start answering (a hang guard).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// Blocks made per `dev_newBlock` call by [`Testnet::new_blocks`]: one call stays short
/// (seconds even on a slow machine) instead of growing with the number of blocks.
const BLOCKS_PER_CALL: u32 = 4;

pub struct Testnet {
    child: Option<Child>,
    pub port: u16,
    root: PathBuf,
    log: PathBuf,
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free loopback port for a process a test starts later. Not one the kernel picked (`bind(:0)`): the
/// kernel hands that same ephemeral range out again, to another test's `:0` listener or
/// outgoing connection, before our process binds it. Ports below the ephemeral range are
/// never handed out that way; each lab process walks them from its own offset and keeps
/// the first that binds now.
pub fn free_port() -> Result<u16, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const LOW: u32 = 10_000;
    if ephemeral_low <= LOW + 1000 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        return Ok(l.local_addr().map_err(|e| e.to_string())?.port());
    }
    let span = ephemeral_low - LOW;
    // u64: a pid times the stride overflows u32 on hosts with a large pid_max.
    let offset = u32::try_from(u64::from(std::process::id()) * 7919 % u64::from(span))
        .map_err(|e| e.to_string())?;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (offset + n) % span;
        let port = u16::try_from(port).map_err(|e| e.to_string())?;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!("no free port in {LOW}..{ephemeral_low}"))
}

impl Testnet {
    /// Starts chopsticks on a free port and waits until it answers.
    pub async fn start(log_dir: &Path) -> Result<Self, String> {
        let mut t = Self {
            child: None,
            port: free_port()?,
            root: repo_root(),
            log: log_dir.join("chopsticks.log"),
        };
        t.spawn().await?;
        Ok(t)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let bin = self.root.join("node_modules/.bin/chopsticks");
        if !bin.exists() {
            return Err(format!(
                "{} is missing: run `npm ci` in the repository (scripts/test does)",
                bin.display()
            ));
        }
        let genesis = self
            .root
            .join("../shared/fixtures/substrate/asset-hub-kusama-local.json");
        if !genesis.exists() {
            return Err(format!("chain spec {} is missing", genesis.display()));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .arg("--genesis")
            .arg(&genesis)
            .args(["--port", &self.port.to_string()])
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting chopsticks: {e}"))?;
        self.child = Some(child);
        let end = Instant::now() + START_TIMEOUT;
        while Instant::now() < end {
            if let Ok(c) = self.client_with_timeout(PROBE_TIMEOUT).await {
                if c.request::<String, _>("chain_getFinalizedHead", rpc_params![])
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!(
            "chopsticks did not answer within {START_TIMEOUT:?}; see {}",
            self.log.display()
        ))
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// A client for dev-chain control calls (generous request timeout: a hang guard only).
    pub async fn client(&self) -> Result<WsClient, String> {
        self.client_with_timeout(CONTROL_REQUEST_TIMEOUT).await
    }

    async fn client_with_timeout(&self, request_timeout: Duration) -> Result<WsClient, String> {
        WsClientBuilder::default()
            .request_timeout(request_timeout)
            .connection_timeout(request_timeout)
            .build(self.url())
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes raw storage values (`None` deletes) and makes one new block; returns its hash.
    pub async fn set_storage_and_new_block(
        &self,
        items: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<String, String> {
        let c = self.client().await?;
        let pairs: Vec<Value> = items
            .iter()
            .map(|(k, v)| {
                Value::Array(vec![
                    Value::String(format!("0x{}", hex::encode(k))),
                    v.as_ref().map_or(Value::Null, |v| {
                        Value::String(format!("0x{}", hex::encode(v)))
                    }),
                ])
            })
            .collect();
        let _: Value = c
            .request("dev_setStorage", rpc_params![pairs])
            .await
            .map_err(|e| e.to_string())?;
        self.new_block().await
    }

    pub async fn new_block(&self) -> Result<String, String> {
        let c = self.client().await?;
        c.request::<String, _>("dev_newBlock", rpc_params![])
            .await
            .map_err(|e| e.to_string())
    }

    /// Makes `n` blocks (each finalized at once) and returns the hash of the last one. The
    /// blocks are made back to back in calls of at most [`BLOCKS_PER_CALL`] blocks, so they
    /// still arrive as a burst, but no single call's duration grows with `n`: one call for
    /// 40 blocks takes 15 s on an idle machine and over 30 s on a loaded one.
    pub async fn new_blocks(&self, n: u32) -> Result<String, String> {
        if n == 0 {
            return Err("new_blocks(0) makes no block".into());
        }
        let c = self.client().await?;
        let mut left = n;
        let mut last = String::new();
        while left > 0 {
            let count = left.min(BLOCKS_PER_CALL);
            let params = serde_json::json!({ "count": count });
            last = c
                .request::<String, _>("dev_newBlock", rpc_params![params])
                .await
                .map_err(|e| format!("dev_newBlock (count {count}, {left} of {n} left): {e}"))?;
            left -= count;
        }
        Ok(last)
    }

    /// Kills the node (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (fresh genesis state).
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn().await
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        self.kill();
    }
}

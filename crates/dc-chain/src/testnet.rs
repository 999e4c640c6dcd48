//! A real Substrate runtime for tests: chopsticks (installed by `npm ci` from the repository's
//! `package.json`) running the offline chain spec in `../shared/fixtures/substrate/`, on a
//! loopback port. Storage is written with `dev_setStorage` and blocks are made with
//! `dev_newBlock`; every block is finalized at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee_core::client::ClientT;
use jsonrpsee_core::rpc_params;
use jsonrpsee_ws_client::{WsClient, WsClientBuilder};
use serde_json::Value;

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Testnet {
    /// Starts chopsticks on a free port and waits until it answers.
    pub async fn start(log_dir: &Path) -> Result<Self, String> {
        let mut t = Self {
            child: None,
            port: free_port(),
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
        let end = Instant::now() + Duration::from_secs(90);
        while Instant::now() < end {
            if let Ok(c) = self.client().await {
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
            "chopsticks did not answer within 90 s; see {}",
            self.log.display()
        ))
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> Result<WsClient, String> {
        WsClientBuilder::default()
            .request_timeout(Duration::from_secs(30))
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

    /// Makes `n` blocks in one call (each finalized at once).
    pub async fn new_blocks(&self, n: u32) -> Result<String, String> {
        let c = self.client().await?;
        let params = serde_json::json!({ "count": n });
        c.request::<String, _>("dev_newBlock", rpc_params![params])
            .await
            .map_err(|e| e.to_string())
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

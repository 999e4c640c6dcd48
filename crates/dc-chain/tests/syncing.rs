//! "Never act while syncing": a fake Substrate RPC node (jsonrpsee server on loopback) that
//! reports `isSyncing` until told otherwise. Chopsticks is never syncing, hence this stand-in.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dc_chain::storage::{self, encode, DcProgramInfo};
use dc_chain::watcher::{spawn, Event, WatcherConfig};
use jsonrpsee::server::{RpcModule, Server};
use serde_json::json;

struct FakeChain {
    syncing: AtomicBool,
    block: AtomicU64,
    heads: tokio::sync::broadcast::Sender<u64>,
}

fn program() -> DcProgramInfo {
    DcProgramInfo {
        origin_url: b"http://127.0.0.1:1/a.tar".to_vec(),
        mirror_url: vec![],
        enclave_id: b"ab".repeat(32),
        version: b"7.0.0".to_vec(),
        mirror_cids: None,
    }
}

fn header(n: u64) -> serde_json::Value {
    json!({ "number": format!("0x{n:x}"), "parentHash": format!("0x{:064x}", n.saturating_sub(1)),
            "stateRoot": format!("0x{:064x}", 0), "extrinsicsRoot": format!("0x{:064x}", 0), "digest": { "logs": [] } })
}

async fn start(chain: Arc<FakeChain>) -> (String, jsonrpsee::server::ServerHandle) {
    let server = Server::builder().build("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let mut m = RpcModule::from_arc(chain);
    m.register_method("system_health", |_, c, _| json!({ "peers": 1, "isSyncing": c.syncing.load(Ordering::SeqCst), "shouldHavePeers": true }))
        .unwrap();
    m.register_method("chain_getFinalizedHead", |_, c, _| {
        format!("0x{:064x}", c.block.load(Ordering::SeqCst))
    })
    .unwrap();
    m.register_method("chain_getHeader", |_, c, _| {
        header(c.block.load(Ordering::SeqCst))
    })
    .unwrap();
    m.register_method("state_getStorage", |p, _, _| {
        let (key, _at): (String, String) = p.parse().unwrap_or_default();
        if key == format!("0x{}", hex::encode(storage::dc_program_key())) {
            Some(format!("0x{}", hex::encode(encode::dc_program(&program()))))
        } else {
            None
        }
    })
    .unwrap();
    m.register_subscription(
        "chain_subscribeFinalizedHeads",
        "chain_finalizedHead",
        "chain_unsubscribeFinalizedHeads",
        |_, pending, c, _| async move {
            let mut rx = c.heads.subscribe();
            let sink = pending.accept().await?;
            while let Ok(n) = rx.recv().await {
                sink.send(serde_json::value::to_raw_value(&header(n))?)
                    .await?;
            }
            Ok(())
        },
    )
    .unwrap();
    (format!("ws://{addr}"), server.start(m))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_reported_while_the_node_syncs() {
    let chain = Arc::new(FakeChain {
        syncing: AtomicBool::new(true),
        block: AtomicU64::new(10),
        heads: tokio::sync::broadcast::channel(16).0,
    });
    let (url, _server) = start(chain.clone()).await;
    let mut cfg = WatcherConfig::new(vec![url]);
    cfg.poll_interval = Duration::from_millis(200);
    let mut rx = spawn(cfg);

    // New finalized heads keep coming while the node syncs: each is only reported as syncing.
    let mut syncing = 0;
    for n in 11..16 {
        chain.block.store(n, Ordering::SeqCst);
        let _ = chain.heads.send(n);
        let end = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
            match ev {
                Event::Observed(o) => panic!(
                    "acted on block #{} while the node was syncing",
                    o.block_number
                ),
                Event::Syncing { .. } => syncing += 1,
                _ => {}
            }
        }
    }
    assert!(syncing >= 5, "{syncing} syncing reports");

    // Synced: the next head is read and reported, at the finalized hash.
    chain.syncing.store(false, Ordering::SeqCst);
    chain.block.store(16, Ordering::SeqCst);
    let _ = chain.heads.send(16);
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(end, rx.recv())
            .await
            .expect("an observation")
            .expect("watcher")
        {
            Event::Observed(o) => {
                assert_eq!(o.block_number, 16);
                assert_eq!(o.block_hash, format!("0x{:064x}", 16));
                assert_eq!(o.program, Ok(Some(program())));
                assert_eq!(o.enclave_ids, Ok(None));
                break;
            }
            _ => continue,
        }
    }
}

//! The watcher against a real Substrate runtime (chopsticks, offline chain spec).

use std::time::{Duration, Instant};

use dc_chain::storage::{self, encode, DcProgramInfo, EnclaveIdEntry};
use dc_chain::testnet::Testnet;
use dc_chain::watcher::{spawn, Event, Observation, WatcherConfig};
use tokio::sync::mpsc::Receiver;

/// How long a test waits for something that must happen: a guard against a hang, never a
/// performance expectation (chopsticks is many times slower on a loaded 2-core machine with a
/// cold cache than on an idle one).
const HANG_GUARD: Duration = Duration::from_secs(300);

async fn next_observation(rx: &mut Receiver<Event>, within: Duration) -> Observation {
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(Event::Observed(o))) => return *o,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("watcher stopped"),
            Err(_) => panic!("no observation within {within:?}"),
        }
    }
}

fn program(version: &str) -> DcProgramInfo {
    DcProgramInfo {
        origin_url: b"http://127.0.0.1:1/dcnode.tar".to_vec(),
        mirror_url: b"http://127.0.0.1:2/dcnode.tar".to_vec(),
        enclave_id: b"ab".repeat(32),
        version: version.as_bytes().to_vec(),
        mirror_cids: Some(vec![b"bafyexample".to_vec()]),
    }
}

fn config(t: &Testnet) -> WatcherConfig {
    let mut c = WatcherConfig::new(vec![t.url()]);
    c.poll_interval = Duration::from_secs(2);
    c.reconnect_max = Duration::from_secs(1);
    // A read must not fail only because chopsticks is busy building blocks on a slow machine
    // (a failed read is reported as an RPC error and would fail the assertions below).
    c.request_timeout = HANG_GUARD;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_reports_a_new_release_within_one_block_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = Testnet::start(dir.path()).await.unwrap();
    let mut rx = spawn(config(&net));
    let first = next_observation(&mut rx, HANG_GUARD).await;
    assert_eq!(first.program, Ok(None), "nothing stored at genesis");
    assert_eq!(first.enclave_ids, Ok(None));

    let ids = vec![EnclaveIdEntry {
        block: 1,
        enclave_id: b"ab".repeat(32),
        signature: b"bsignature".to_vec(),
    }];
    let hash = net
        .set_storage_and_new_block(&[
            (
                storage::dc_program_key(),
                Some(encode::dc_program(&program("0.2.1"))),
            ),
            (storage::enclave_ids_key(), Some(encode::enclave_ids(&ids))),
        ])
        .await
        .unwrap();
    let made = Instant::now();
    let o = next_observation(&mut rx, HANG_GUARD).await;
    assert_eq!(
        o.block_hash, hash,
        "reported at the very block that carried the change"
    );
    assert_eq!(o.block_number, first.block_number + 1);
    assert_eq!(o.program, Ok(Some(program("0.2.1"))));
    assert_eq!(o.enclave_ids, Ok(Some(ids)));
    eprintln!(
        "detection latency after dev_newBlock: {:?}",
        o.at.saturating_duration_since(made)
    );

    // The node crashes and comes back: the watcher reconnects and reads the state again.
    net.kill();
    let mut saw_disconnect = false;
    let end = tokio::time::Instant::now() + HANG_GUARD;
    while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
        if let Event::Disconnected { .. } = ev {
            saw_disconnect = true;
            break;
        }
    }
    assert!(
        saw_disconnect,
        "the watcher did not notice the node going away"
    );
    net.restart().await.unwrap();
    let again = next_observation(&mut rx, HANG_GUARD).await;
    assert_eq!(again.program, Ok(None), "fresh chain after restart");
    let hash = net
        .set_storage_and_new_block(&[(
            storage::dc_program_key(),
            Some(encode::dc_program(&program("0.3.0"))),
        )])
        .await
        .unwrap();
    let o = next_observation(&mut rx, HANG_GUARD).await;
    assert_eq!(o.block_hash, hash);
    assert_eq!(o.program, Ok(Some(program("0.3.0"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_and_oversized_values_are_reported_and_do_not_stop_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start(dir.path()).await.unwrap();
    let mut rx = spawn(config(&net));
    next_observation(&mut rx, HANG_GUARD).await;

    net.set_storage_and_new_block(&[
        (storage::dc_program_key(), Some(vec![0xFF, 0x01, 0x02])),
        (storage::enclave_ids_key(), Some(vec![0x08, 0, 0])),
    ])
    .await
    .unwrap();
    let o = next_observation(&mut rx, HANG_GUARD).await;
    assert!(o.program.is_err(), "{:?}", o.program);
    assert!(o.enclave_ids.is_err(), "{:?}", o.enclave_ids);

    net.set_storage_and_new_block(&[(
        storage::dc_program_key(),
        Some(vec![0u8; storage::MAX_VALUE_BYTES + 10]),
    )])
    .await
    .unwrap();
    let o = next_observation(&mut rx, HANG_GUARD).await;
    assert!(o.program.is_err(), "oversized value accepted");

    net.set_storage_and_new_block(&[(
        storage::dc_program_key(),
        Some(encode::dc_program(&program("1.0.0"))),
    )])
    .await
    .unwrap();
    let o = next_observation(&mut rx, HANG_GUARD).await;
    assert_eq!(o.program, Ok(Some(program("1.0.0"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_are_tried_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start(dir.path()).await.unwrap();
    // The first endpoint refuses connections; the watcher moves on to the second.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("ws://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut c = config(&net);
    c.endpoints = vec![dead_url.clone(), net.url()];
    let mut rx = spawn(c);
    let mut disconnected_from_dead = false;
    let end = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        match tokio::time::timeout_at(end, rx.recv())
            .await
            .expect("events")
            .expect("watcher")
        {
            Event::Disconnected { endpoint, .. } if endpoint == dead_url => {
                disconnected_from_dead = true
            }
            Event::Observed(o) => {
                assert_eq!(o.endpoint, net.url());
                break;
            }
            _ => {}
        }
    }
    assert!(disconnected_from_dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_blocks_is_coalesced_and_the_latest_state_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start(dir.path()).await.unwrap();
    let mut rx = spawn(config(&net));
    let first = next_observation(&mut rx, HANG_GUARD).await;
    net.set_storage_and_new_block(&[(
        storage::dc_program_key(),
        Some(encode::dc_program(&program("5.0.0"))),
    )])
    .await
    .unwrap();
    // 40 more blocks back to back (in several short `dev_newBlock` calls, so no single
    // request's duration depends on the machine's speed).
    let latest = net.new_blocks(40).await.unwrap();
    let target = first.block_number + 41;
    let mut seen = 0;
    let end = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let o = next_observation(
            &mut rx,
            end.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await;
        seen += 1;
        assert_eq!(o.program, Ok(Some(program("5.0.0"))));
        if o.block_number == target {
            assert_eq!(o.block_hash, latest, "the latest block is reported");
            break;
        }
        assert!(o.block_number < target);
    }
    assert!(seen <= 41, "{seen} observations for 41 blocks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_speaking_garbage_is_retried_with_growing_backoff() {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", l.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\n\r\n\xff\xfe garbage \x00\x01")
                .await;
        }
    });
    let mut c = WatcherConfig::new(vec![url]);
    c.reconnect_min = Duration::from_millis(50);
    c.reconnect_max = Duration::from_millis(800);
    let mut rx = spawn(c);
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut disconnects = 0;
    while let Ok(Some(ev)) = tokio::time::timeout_at(end, rx.recv()).await {
        match ev {
            Event::Disconnected { .. } => disconnects += 1,
            Event::Observed(_) => panic!("garbage produced an observation"),
            _ => {}
        }
    }
    // 50, 100, 200, 400, 800, 800… ms: a handful of attempts in 3 s, not a tight loop.
    assert!(
        (3..=10).contains(&disconnects),
        "{disconnects} reconnects in 3 s"
    );
    // Every attempt the server saw was reported, but the one the window may have cut short.
    let accepted = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        accepted == disconnects || accepted == disconnects + 1,
        "{accepted} connections, {disconnects} reported"
    );
}

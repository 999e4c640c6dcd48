//! Handovers over real HTTP on loopback between two sim enclaves.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dc_handover::http::{
    holder_router, receive_keys, serve, ClientError, HolderClient, ServeLimits, MAX_BODY,
    PATH_HELLO, PATH_RESPONSE,
};
use dc_handover::{
    Holder, HolderConfig, Keyring, PeerRole, ReceiverConfig, StaticAllowList, Version,
};
use dc_tee::{EnclaveIdentity, Tee};
use dc_tee_sim::platform::{test_identity, InProcessTee, Platform};
use rand_core::{OsRng, TryRngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

fn node() -> EnclaveIdentity {
    test_identity(0x11, 0xAA, 1, false)
}
fn agent() -> EnclaveIdentity {
    test_identity(0x33, 0xBB, 1, false)
}
fn rogue() -> EnclaveIdentity {
    test_identity(0x99, 0xEE, 1, false)
}

fn allow() -> StaticAllowList {
    StaticAllowList::new()
        .allow(node().mr_enclave, PeerRole::Node(Version::new(1, 0, 0)))
        .allow(agent().mr_enclave, PeerRole::Upgrader)
        .allow_destination(DEST, dest())
}

/// The release the agent collects the keys for, as the holder's allow-list knows it.
const DEST: &[u8] = b"destination: node 2.0.0";

fn dest() -> dc_handover::Destination {
    dc_handover::Destination {
        mr_enclave: dc_tee::Measurement([0x77; 32]),
        version: Version::new(2, 0, 0),
        isv_svn: 2,
    }
}

struct Server {
    url: String,
    platform: Arc<Platform>,
    ring: Arc<Keyring>,
    deliveries: Arc<Mutex<Vec<[u8; 32]>>>,
}

async fn start_holder(max_pending: usize) -> Server {
    let platform = Arc::new(Platform::new(
        Zeroizing::new([4; 32]),
        dc_tee::CpuSvn([1; 16]),
        dc_tee::KeyId([5; 32]),
    ));
    let tee: Arc<dyn Tee> = Arc::new(InProcessTee::new(platform.clone(), node()));
    let cfg = HolderConfig {
        allow_debug_peers: false,
        min_node_version: Version::new(1, 0, 0),
        allow_upgrader: true,
        challenge_ttl_ms: 10_000,
        max_pending,
        authorization: vec![],
    };
    let ring =
        Arc::new(Keyring::generate(&["node-identity", "data"], &mut OsRng.unwrap_err()).unwrap());
    let deliveries = Arc::new(Mutex::new(Vec::new()));
    let d = deliveries.clone();
    let holder = Holder::new(&*tee, cfg, allow()).unwrap();
    let app = holder_router(
        holder,
        tee,
        {
            let ring = ring.clone();
            Arc::new(move || ring.clone())
        },
        Arc::new(move |x| d.lock().unwrap().push(x.keyring_fingerprint)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let limits = ServeLimits {
        header_timeout: Duration::from_millis(300),
        max_connections: 8,
        max_connection_life: Duration::from_secs(30),
    };
    tokio::spawn(serve(listener, app, limits, std::future::pending()));
    Server {
        url,
        platform,
        ring,
        deliveries,
    }
}

fn rcfg() -> ReceiverConfig {
    ReceiverConfig {
        allow_debug_peers: false,
        authorization: vec![],
        destination: DEST.to_vec(),
        expect_released_to: Some(dest()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_over_http_delivers_an_equal_keyring() {
    let s = start_holder(8).await;
    let tee = InProcessTee::new(s.platform.clone(), agent());
    let client = HolderClient::new(&s.url).unwrap();
    let stored = Arc::new(Mutex::new(None));
    let st = stored.clone();
    let got = receive_keys(&client, &tee, rcfg(), allow(), move |k| {
        *st.lock().unwrap() = Some(k.fingerprint());
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(got.keyring.fingerprint(), s.ring.fingerprint());
    assert_eq!(got.keyring.custody().released_to, Some(dest()));
    assert_eq!(*stored.lock().unwrap(), Some(s.ring.fingerprint()));
    assert_eq!(*s.deliveries.lock().unwrap(), vec![s.ring.fingerprint()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_storage_is_never_acknowledged() {
    let s = start_holder(8).await;
    let tee = InProcessTee::new(s.platform.clone(), agent());
    let client = HolderClient::new(&s.url).unwrap();
    let e = receive_keys(&client, &tee, rcfg(), allow(), |_| Err("disk full".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Store(_)), "{e}");
    assert!(s.deliveries.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_receiver_gets_a_403_and_nothing_else() {
    let s = start_holder(8).await;
    let tee = InProcessTee::new(s.platform.clone(), rogue());
    let client = HolderClient::new(&s.url).unwrap();
    let e = receive_keys(&client, &tee, rcfg(), allow(), |_| Ok(()))
        .await
        .unwrap_err();
    match e {
        ClientError::Refused { status, code, .. } => {
            assert_eq!(status, 403);
            assert_eq!(code, "unauthorized");
        }
        e => panic!("{e}"),
    }
    assert!(s.deliveries.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sessions_all_succeed() {
    let s = start_holder(64).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (url, platform) = (s.url.clone(), s.platform.clone());
        tasks.push(tokio::spawn(async move {
            let tee = InProcessTee::new(platform, agent());
            let client = HolderClient::new(&url).unwrap();
            receive_keys(&client, &tee, rcfg(), allow(), |_| Ok(()))
                .await
                .map(|r| r.keyring.fingerprint())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), s.ring.fingerprint());
    }
    assert_eq!(s.deliveries.lock().unwrap().len(), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_challenge_cap_answers_busy() {
    let s = start_holder(2).await;
    let client = HolderClient::new(&s.url).unwrap();
    let hello = dc_handover::messages::Hello {
        target_info: agent().target_info().to_bytes(),
    };
    client.hello(&hello).await.unwrap();
    client.hello(&hello).await.unwrap();
    match client.hello(&hello).await.unwrap_err() {
        ClientError::Refused { status, code, .. } => {
            assert_eq!((status, code.as_str()), (503, "busy"))
        }
        e => panic!("{e}"),
    }
}

async fn post(url: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_json_is_refused() {
    let s = start_holder(8).await;
    let hello = format!("{}{PATH_HELLO}", s.url);
    for bad in [
        &b"not json"[..],
        b"{}",
        b"{\"target_info\": 5}",
        b"{\"target_info\": \"AAAA\"}",
        b"{\"target_info\": \"!!!\"}",
    ] {
        let (status, text) = post(&hello, bad.to_vec()).await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(bad));
        assert!(text.contains("\"error\":\"malformed\""), "{text}");
    }
    // Unknown fields are refused too.
    let ti = base64_of(&agent().target_info().to_bytes());
    let (status, _) = post(
        &hello,
        format!("{{\"target_info\":\"{ti}\",\"x\":1}}").into_bytes(),
    )
    .await;
    assert_eq!(status, 400);
    // A TARGETINFO with non-zero reserved bytes.
    let mut raw = agent().target_info().to_bytes();
    raw[500] = 1;
    let (status, text) = post(
        &hello,
        format!("{{\"target_info\":\"{}\"}}", base64_of(&raw)).into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    // Oversized.
    let (status, _) = post(
        &format!("{}{PATH_RESPONSE}", s.url),
        vec![b' '; MAX_BODY + 1],
    )
    .await;
    assert_eq!(status, 413);
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Reads until the server closes the connection; returns how long that took.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(start + limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_is_cut_off_and_others_are_still_served() {
    let s = start_holder(8).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut loris = tokio::net::TcpStream::connect(&addr).await.unwrap();
    loris
        .write_all(b"POST /v1/handover/hello HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // While the slow client dawdles, a normal handover goes through.
    let tee = InProcessTee::new(s.platform.clone(), agent());
    let client = HolderClient::new(&s.url).unwrap();
    receive_keys(&client, &tee, rcfg(), allow(), |_| Ok(()))
        .await
        .unwrap();
    // And the slow one is disconnected at the header deadline (300 ms here).
    let t = closed_within(&mut loris, Duration::from_secs(5))
        .await
        .expect("the slow client was never cut off");
    assert!(t < Duration::from_secs(3), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_idle_connections_than_the_cap_do_not_lock_the_port_for_long() {
    let s = start_holder(8).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    // Twice the connection cap, each sending half a request line and nothing more.
    let mut idle = Vec::new();
    for _ in 0..16 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"POST /v1/han").await.unwrap();
        idle.push(c);
    }
    // They are dropped at the header deadline; a real client gets through afterwards.
    let tee = InProcessTee::new(s.platform.clone(), agent());
    let client = HolderClient::new(&s.url).unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(8),
        receive_keys(&client, &tee, rcfg(), allow(), |_| Ok(())),
    )
    .await
    .expect("the port stayed locked")
    .unwrap();
    assert_eq!(got.keyring.fingerprint(), s.ring.fingerprint());
    assert_eq!(got.keyring.custody().released_to, Some(dest()));
    for mut c in idle {
        assert!(closed_within(&mut c, Duration::from_secs(5))
            .await
            .is_some());
    }
}

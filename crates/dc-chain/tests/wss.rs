//! `wss://` endpoints: the watcher against the test chain behind a local TLS terminator whose
//! certificate is issued by a CA made for the test (as a public RPC endpoint sits behind a
//! TLS proxy in front of the node's plain WebSocket port).

use std::sync::Arc;
use std::time::Duration;

use dc_chain::testnet::Testnet;
use dc_chain::watcher::{spawn, Event, Observation, WatcherConfig};
use jsonrpsee_core::client::ClientT;
use jsonrpsee_core::rpc_params;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;
use tokio_rustls::rustls;

/// A guard against a hang, never a performance expectation (chopsticks is slow on a loaded
/// 2-core machine).
const HANG_GUARD: Duration = Duration::from_secs(300);

/// A test CA (PEM) and a TLS acceptor for `localhost` with a certificate it issued.
fn test_pki() -> (Vec<u8>, tokio_rustls::TlsAcceptor) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "dc-chain test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();

    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf_cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    (
        ca_cert.pem().into_bytes(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

/// A TLS terminator on a loopback port: each connection's TLS is accepted and its bytes are
/// copied to and from `upstream` (the chain's plain WebSocket port). Returns the port.
async fn tls_terminator(acceptor: tokio_rustls::TlsAcceptor, upstream: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(Ok(mut tls)) =
                    tokio::time::timeout(Duration::from_secs(30), acceptor.accept(s)).await
                else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    port
}

fn config(endpoint: String, extra_roots_pem: Vec<Vec<u8>>) -> WatcherConfig {
    let mut c = WatcherConfig::new(vec![endpoint]);
    c.extra_roots_pem = extra_roots_pem;
    c.poll_interval = Duration::from_secs(2);
    c.reconnect_min = Duration::from_millis(100);
    c.reconnect_max = Duration::from_millis(500);
    c.request_timeout = HANG_GUARD;
    c
}

async fn next_event(rx: &mut Receiver<Event>, within: Duration) -> Event {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("watcher stopped"),
        Err(_) => panic!("no event within {within:?}"),
    }
}

async fn next_observation(rx: &mut Receiver<Event>, within: Duration) -> Observation {
    let end = tokio::time::Instant::now() + within;
    loop {
        match next_event(rx, end - tokio::time::Instant::now()).await {
            Event::Observed(o) => return *o,
            Event::Disconnected { reason, .. } => panic!("disconnected: {reason}"),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_endpoint_with_the_test_ca_observes_the_finalized_head() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start(dir.path()).await.unwrap();
    let (ca_pem, acceptor) = test_pki();
    let port = tls_terminator(acceptor, net.port).await;
    let endpoint = format!("wss://localhost:{port}");

    let cfg = config(endpoint.clone(), vec![ca_pem]);
    cfg.check().unwrap();
    let mut rx = spawn(cfg);
    match next_event(&mut rx, HANG_GUARD).await {
        Event::Connected { endpoint: e } => assert_eq!(e, endpoint),
        other => panic!("expected Connected, got {other:?}"),
    }
    let first = next_observation(&mut rx, HANG_GUARD).await;
    let head: String = net
        .client()
        .await
        .unwrap()
        .request("chain_getFinalizedHead", rpc_params![])
        .await
        .unwrap();
    assert_eq!(first.endpoint, endpoint);
    assert_eq!(first.block_hash, head, "the finalized head, read over wss");
    assert_eq!(first.program, Ok(None), "nothing stored at genesis");

    // The subscription works over TLS too: a new finalized block is reported.
    let hash = net.new_block().await.unwrap();
    let next = next_observation(&mut rx, HANG_GUARD).await;
    assert_eq!(next.block_hash, hash);
    assert_eq!(next.block_number, first.block_number + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_endpoint_without_the_ca_is_refused_with_a_certificate_error() {
    // No chain behind it: the TLS handshake fails before anything is proxied.
    let (_ca_pem, acceptor) = test_pki();
    let port = tls_terminator(acceptor, 1).await;
    let endpoint = format!("wss://localhost:{port}");
    let mut rx = spawn(config(endpoint.clone(), Vec::new()));
    // Reported, and reported again on the retry: the watcher neither panics nor gives up.
    for _ in 0..2 {
        match next_event(&mut rx, Duration::from_secs(60)).await {
            Event::Disconnected {
                endpoint: e,
                reason,
            } => {
                assert_eq!(e, endpoint);
                eprintln!("refused: {reason}");
                assert!(
                    reason.contains("invalid peer certificate") && reason.contains("UnknownIssuer"),
                    "a clear certificate error: {reason}"
                );
                assert!(reason.contains("--chain-ca"), "says what to do: {reason}");
            }
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chain_ca_is_reported_not_panicked_on() {
    let cfg = config(
        "wss://localhost:1".into(),
        vec![b"no certificate here".to_vec()],
    );
    let e = cfg.check().unwrap_err();
    assert!(e.contains("extra chain CA #1"), "{e}");
    let mut rx = spawn(cfg);
    match next_event(&mut rx, Duration::from_secs(60)).await {
        Event::Disconnected { reason, .. } => {
            assert!(reason.contains("extra chain CA #1"), "{reason}")
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(WatcherConfig::new(vec!["http://x".into()]).check().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_certificate_for_another_name_is_refused() {
    // The certificate names `localhost`; the endpoint is addressed by IP.
    let (ca_pem, acceptor) = test_pki();
    let port = tls_terminator(acceptor, 1).await;
    let mut rx = spawn(config(format!("wss://127.0.0.1:{port}"), vec![ca_pem]));
    match next_event(&mut rx, Duration::from_secs(60)).await {
        Event::Disconnected { reason, .. } => assert!(
            reason.contains("invalid peer certificate") && reason.contains("not for this host"),
            "{reason}"
        ),
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_server_is_given_up_on_after_the_deadline() {
    // Accepts TCP and never answers the ClientHello.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let mut cfg = config(format!("wss://localhost:{port}"), Vec::new());
    cfg.request_timeout = Duration::from_secs(1);
    let mut rx = spawn(cfg);
    match next_event(&mut rx, Duration::from_secs(60)).await {
        Event::Disconnected { reason, .. } => {
            assert!(
                reason.contains("TLS handshake") && reason.contains("took over"),
                "{reason}"
            )
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

//! Resource limits on everything the outside can feed the agent and the node: slow and
//! oversized requests on both HTTP ports, downloads that never end, exceed the signed size or
//! stall.

mod common;

use std::time::Duration;

use dcupgrade::download::Downloader;
use dcupgrade::source::Fetch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn cut_off_within(addr: &str, limit: Duration) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /v1/handover/hello HTTP/1.1\r\nHost: x\r\nContent-Le")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let end = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_http_ports_cut_off_slow_clients_and_refuse_oversized_bodies() {
    let w = common::world().await;
    let agent = format!("127.0.0.1:{}", w.lab.agent_port);
    let node_upgrade = format!("127.0.0.1:{}", w.lab.node_upgrade_port);
    let (a, n) = tokio::join!(
        cut_off_within(&agent, Duration::from_secs(15)),
        cut_off_within(&node_upgrade, Duration::from_secs(15))
    );
    assert!(a, "the agent port kept a slow client");
    assert!(n, "the node upgrade port kept a slow client");
    let http = reqwest::Client::new();
    for base in [&agent, &node_upgrade] {
        let r = http
            .post(format!("http://{base}/v1/handover/hello"))
            .header("content-type", "application/json")
            .body(vec![b'x'; 200 * 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 413, "{base}");
    }
    // Both still serve.
    w.v1_untouched().await;
}

/// A tiny HTTP server with misbehaving answers.
async fn bad_server() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                if req.starts_with("GET /endless") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .await;
                    let chunk = [b"1000\r\n".as_slice(), &[7u8; 4096], b"\r\n"].concat();
                    while s.write_all(&chunk).await.is_ok() {}
                } else if req.starts_with("GET /stall") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
                        .await;
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                } else if req.starts_with("GET /announces-too-much") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n")
                        .await;
                } else {
                    // Head and body in one write: no gap a short stall limit could catch.
                    let body = vec![1u8; 1000];
                    let mut answer =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .into_bytes();
                    answer.extend_from_slice(&body);
                    let _ = s.write_all(&answer).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

fn fetch(urls: &[String], sha: Option<[u8; 32]>, size: u64, exact: bool) -> Fetch {
    Fetch {
        urls: urls.to_vec(),
        sha256: sha,
        size,
        size_is_exact: exact,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_bounded_by_size_and_time_and_fail_over() {
    let base = bad_server().await;
    let dir = tempfile::tempdir().unwrap();
    // A short stall limit only where a stall is the point; elsewhere a hang guard.
    let quick = Downloader::new(dir.path())
        .unwrap()
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(60));
    let d = Downloader::new(dir.path())
        .unwrap()
        .with_timeouts(Duration::from_secs(30), Duration::from_secs(60));
    let good_sha: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest([1u8; 1000]).into()
    };

    let e = d
        .fetch(&fetch(&[format!("{base}/endless")], None, 100_000, false))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("more than the allowed 100000 bytes"),
        "{e}"
    );
    let e = d
        .fetch(&fetch(&[format!("{base}/endless")], None, 100_000, true))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than the signed"), "{e}");
    let e = d
        .fetch(&fetch(
            &[format!("{base}/announces-too-much")],
            None,
            1000,
            true,
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("announces more"), "{e}");
    let e = quick
        .fetch(&fetch(&[format!("{base}/stall")], None, 1000, true))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no data for"), "{e}");
    let e = d
        .fetch(&fetch(&[format!("{base}/ok")], Some([0; 32]), 1000, true))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("SHA-256"), "{e}");
    let e = d
        .fetch(&fetch(&[format!("{base}/ok")], Some(good_sha), 999, true))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("announces more than the 999 bytes"),
        "{e}"
    );

    // The origin stalls, the mirror answers: fail over, verify, store atomically.
    let p = quick
        .fetch(&fetch(
            &[format!("{base}/stall"), format!("{base}/ok")],
            Some(good_sha),
            1000,
            true,
        ))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), vec![1u8; 1000]);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "partial downloads left behind");
}

/// An https server on loopback with a certificate made for this test.
async fn tls_server(body: Vec<u8>) -> (String, Vec<u8>) {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca_pem = ck.cert.pem().into_bytes();
    let certs = vec![rustls::pki_types::CertificateDer::from(
        ck.cert.der().to_vec(),
    )];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}/dcnode.tar"), ca_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_downloads_verify_the_server_and_the_digest() {
    use sha2::Digest;
    let body = vec![5u8; 3000];
    let sha: [u8; 32] = sha2::Sha256::digest(&body).into();
    let (url, ca) = tls_server(body.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    // A server whose certificate chains to no trusted root is refused.
    let plain = Downloader::new(dir.path()).unwrap();
    let e = plain
        .fetch(&fetch(std::slice::from_ref(&url), Some(sha), 3000, true))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("UnknownIssuer"),
        "the cause must be shown: {e}"
    );
    // With the mirror's CA it downloads, and the digest is still checked.
    let d = Downloader::with_roots(dir.path(), &[ca]).unwrap();
    let p = d
        .fetch(&fetch(std::slice::from_ref(&url), Some(sha), 3000, true))
        .await
        .unwrap();
    assert_eq!(std::fs::read(p).unwrap(), body);
    assert!(d
        .fetch(&fetch(&[url], Some([0; 32]), 3000, true))
        .await
        .is_err());
}

//! `wss://` endpoints: the TLS stack of the downloads (rustls with the ring provider; the
//! public web roots of `webpki-roots` plus extra PEM roots such as a private node's CA).
//!
//! jsonrpsee's own `tls` feature would bring aws-lc-rs, so the watcher makes the connection
//! itself: TCP, then the TLS handshake (server name from the URL, both bounded by one
//! deadline), and hands the encrypted stream to jsonrpsee, which speaks WebSocket over it.
//! TLS protects the connection only: what is installed is still decided by committee
//! signatures inside the enclave, never by the certificate.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Whether `endpoint` is a TLS WebSocket URL.
pub fn is_wss(endpoint: &str) -> bool {
    endpoint
        .get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
}

/// A TLS client configuration trusting the public web roots and every certificate in
/// `extra_roots_pem` (each entry one PEM file, which may hold several certificates).
pub fn connector(extra_roots_pem: &[Vec<u8>]) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (i, pem) in extra_roots_pem.iter().enumerate() {
        let mut found = 0usize;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("extra chain CA #{}: PEM: {e}", i + 1))?;
            roots
                .add(cert)
                .map_err(|e| format!("extra chain CA #{}: certificate: {e}", i + 1))?;
            found += 1;
        }
        if found == 0 {
            return Err(format!(
                "extra chain CA #{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                i + 1
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Connects to a `wss://` endpoint: TCP, then the TLS handshake, both within `deadline`.
/// Returns the URL for the WebSocket handshake over the stream (the same URL with the `ws`
/// scheme: jsonrpsee builds the `Host` header and request path from it) and the stream.
pub async fn connect(
    tls: &TlsConnector,
    endpoint: &str,
    deadline: Duration,
) -> Result<(String, TlsStream<TcpStream>), String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("URL {endpoint:?}: {e}"))?;
    if url.scheme() != "wss" {
        return Err(format!("URL {endpoint:?}: not a wss:// URL"));
    }
    let host = url
        .host()
        .ok_or_else(|| format!("URL {endpoint:?}: no host"))?;
    let server_name = match host {
        url::Host::Domain(d) => ServerName::try_from(d.to_string())
            .map_err(|e| format!("URL {endpoint:?}: host {d:?}: {e}"))?,
        url::Host::Ipv4(ip) => ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
        url::Host::Ipv6(ip) => ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
    };
    let port = url.port_or_known_default().unwrap_or(443);
    // `host_str` keeps the brackets of an IPv6 literal, which the resolver does not want.
    let connect_host = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => url.host_str().unwrap_or_default().to_string(),
    };
    let peer = format!("{}:{port}", url.host_str().unwrap_or_default());
    let stream = tokio::time::timeout(deadline, async {
        let tcp = TcpStream::connect((connect_host.as_str(), port))
            .await
            .map_err(|e| format!("TCP connect to {peer}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        tls.connect(server_name, tcp)
            .await
            .map_err(|e| handshake_error(&peer, e))
    })
    .await
    .map_err(|_| format!("TCP connect and TLS handshake with {peer} took over {deadline:?}"))??;

    // Only the `Host` header and the request path come from this URL; an explicit port
    // stays (`host:port`), the default 443 stays implicit as the server expects.
    let mut ws_url = url.clone();
    ws_url
        .set_scheme("ws")
        .map_err(|()| format!("URL {endpoint:?}: cannot be rewritten for the WebSocket"))?;
    Ok((ws_url.to_string(), stream))
}

/// A readable handshake error; certificate problems say so plainly.
fn handshake_error(peer: &str, e: std::io::Error) -> String {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(c)) => {
            let hint = match c {
                rustls::CertificateError::UnknownIssuer => {
                    " (the server's certificate does not chain to a trusted root: the public \
                     web roots plus any extra chain CA configured, e.g. `--chain-ca`)"
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    " (the certificate is not for this host name)"
                }
                _ => "",
            };
            format!("TLS handshake with {peer}: invalid peer certificate: {c:?}{hint}")
        }
        Some(t) => format!("TLS handshake with {peer}: {t}"),
        None => format!("TLS handshake with {peer}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wss_is_recognized_case_insensitively() {
        assert!(is_wss("wss://rpc.example:443"));
        assert!(is_wss("WSS://rpc.example"));
        assert!(!is_wss("ws://127.0.0.1:9944"));
        assert!(!is_wss("wss:"));
    }

    #[test]
    fn roots_must_be_pem_certificates() {
        assert!(connector(&[]).is_ok());
        let e = connector(&[b"not a certificate".to_vec()]).err().unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
        let bad = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
        let e = connector(&[bad]).err().unwrap();
        assert!(e.contains("extra chain CA #1"), "{e}");
    }
}

//! Downloads release artifacts: origin first, then mirrors; streaming SHA-256; never more
//! bytes than the record declares; a stall deadline; atomic rename into a content-addressed
//! store (`STORE/<sha256>.tar`). `file:///`, `http://` and `https://` URLs (rustls, webpki
//! roots plus optional extra roots).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::source::Fetch;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

/// No byte for this long ends a download.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole download from one URL may take at most this long.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: {reason}")]
    Url { url: String, reason: String },
    #[error("every URL failed: {0}")]
    AllFailed(String),
    #[error("store {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct Downloader {
    http: reqwest::Client,
    store: PathBuf,
    stall: Duration,
    total: Duration,
}

impl Downloader {
    pub fn new(store: &Path) -> Result<Self, DownloadError> {
        Self::with_roots(store, &[])
    }

    /// Like [`Downloader::new`], also trusting these PEM root certificates for https (a
    /// private mirror's CA). TLS protects the transfer only: what is installed is decided by
    /// the signed digest and measurement, never by the certificate.
    pub fn with_roots(store: &Path, extra_roots_pem: &[Vec<u8>]) -> Result<Self, DownloadError> {
        std::fs::create_dir_all(store).map_err(|source| DownloadError::Store {
            path: store.to_path_buf(),
            source,
        })?;
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(10));
        for pem in extra_roots_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| DownloadError::Url {
                url: "-".into(),
                reason: format!("extra root certificate: {e}"),
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| DownloadError::Url {
            url: "-".into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            http,
            store: store.to_path_buf(),
            stall: STALL_TIMEOUT,
            total: TOTAL_TIMEOUT,
        })
    }

    /// Other deadlines than [`STALL_TIMEOUT`] and [`TOTAL_TIMEOUT`].
    pub fn with_timeouts(mut self, stall: Duration, total: Duration) -> Self {
        self.stall = stall;
        self.total = total;
        self
    }

    /// Returns the path of the verified artifact in the store (`<sha256>.tar`).
    pub async fn fetch(&self, f: &Fetch) -> Result<PathBuf, DownloadError> {
        if let Some(sha) = &f.sha256 {
            let dest = self.store.join(format!("{}.tar", hex::encode(sha)));
            if dest.exists() {
                if let Ok((got, size)) = dc_release::digest_file(&dest) {
                    if &got == sha && (!f.size_is_exact || size == f.size) {
                        return Ok(dest);
                    }
                }
                warn!(path = %dest.display(), "stored artifact does not verify; downloading again");
            }
        }
        let mut errors = Vec::new();
        for url in &f.urls {
            match self.fetch_one(url, f).await {
                Ok(p) => return Ok(p),
                Err(e) => {
                    warn!("download failed, trying the next URL: {e}");
                    errors.push(e.to_string());
                }
            }
        }
        Err(DownloadError::AllFailed(errors.join("; ")))
    }

    async fn fetch_one(&self, url: &str, f: &Fetch) -> Result<PathBuf, DownloadError> {
        let err = |reason: String| DownloadError::Url {
            url: url.into(),
            reason,
        };
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd).map_err(|e| err(e.to_string()))?;
        let tmp = self.store.join(format!(".partial-{}", hex::encode(rnd)));
        let result = tokio::time::timeout(self.total, self.stream_to(url, f, &tmp)).await;
        let outcome = match result {
            Ok(Ok(sha)) => match &f.sha256 {
                Some(want) if want != &sha => Err(err(format!(
                    "SHA-256 is {}, the signed record says {}",
                    hex::encode(sha),
                    hex::encode(want)
                ))),
                _ => Ok(sha),
            },
            Ok(Err(e)) => Err(err(e)),
            Err(_) => Err(err(format!("not complete within {:?}", self.total))),
        };
        let sha = match outcome {
            Ok(sha) => sha,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let dest = self.store.join(format!("{}.tar", hex::encode(sha)));
        let store = |source| DownloadError::Store {
            path: dest.clone(),
            source,
        };
        tokio::fs::rename(&tmp, &dest).await.map_err(store)?;
        std::fs::File::open(&self.store)
            .and_then(|d| d.sync_all())
            .map_err(store)?;
        info!(url, sha256 = %hex::encode(sha), "artifact downloaded and verified");
        Ok(dest)
    }

    /// Streams one URL into `tmp`, returning the SHA-256; refuses more than the declared size.
    async fn stream_to(&self, url: &str, a: &Fetch, tmp: &Path) -> Result<[u8; 32], String> {
        let mut out = tokio::fs::File::create(tmp)
            .await
            .map_err(|e| e.to_string())?;
        let mut h = Sha256::new();
        let mut total = 0u64;
        let progress = std::io::stderr().is_terminal();
        let mut on_chunk = |chunk: &[u8], h: &mut Sha256| -> Result<(), String> {
            total += chunk.len() as u64;
            if total > a.size {
                return Err(format!(
                    "more than the {} {} bytes",
                    if a.size_is_exact { "signed" } else { "allowed" },
                    a.size
                ));
            }
            h.update(chunk);
            if progress {
                eprint!("\rdownloading {url}: {total}/{} bytes", a.size);
            }
            Ok(())
        };
        if let Some(path) = url.strip_prefix("file://") {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = tokio::time::timeout(self.stall, f.read(&mut buf))
                    .await
                    .map_err(|_| "stalled".to_string())?
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                on_chunk(&buf[..n], &mut h)?;
                out.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
            }
        } else if url.starts_with("http://") || url.starts_with("https://") {
            let mut resp = self.http.get(url).send().await.map_err(|e| describe(&e))?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status()));
            }
            if resp.content_length().is_some_and(|l| l > a.size) {
                return Err(format!("announces more than the {} bytes allowed", a.size));
            }
            while let Some(chunk) = tokio::time::timeout(self.stall, resp.chunk())
                .await
                .map_err(|_| format!("no data for {:?}", self.stall))?
                .map_err(|e| describe(&e))?
            {
                on_chunk(&chunk, &mut h)?;
                out.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
        } else {
            return Err(
                "unsupported URL scheme (this build fetches file:/// and http:// URLs)".into(),
            );
        }
        if progress {
            eprintln!();
        }
        if a.size_is_exact && total != a.size {
            return Err(format!("{total} bytes, the signed record says {}", a.size));
        }
        out.sync_all().await.map_err(|e| e.to_string())?;
        Ok(h.finalize().into())
    }
}

/// An error with its causes (reqwest's own message hides e.g. the TLS certificate problem).
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

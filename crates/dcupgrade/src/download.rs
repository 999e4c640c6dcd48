//! Downloads release artifacts: origin first, then mirrors; streaming SHA-256; never more
//! bytes than the record declares; a stall deadline; atomic rename into a content-addressed
//! store (`STORE/<sha256>.tar`). `file:///`, `http://` and `https://` URLs (rustls, webpki
//! roots plus optional extra roots).
//!
//! Progress: [`Downloader::fetch_with_progress`] reports every chunk to an observer
//! ([`Progress`]: bytes, total, elapsed, rate, ETA); [`Downloader::fetch_logged`] turns that
//! into the agent's periodic log lines ([`ProgressLog`]); `dcupgrade check --download` draws a
//! progress bar from it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::source::{Candidate, Fetch};
use dc_bundle::Bundle;
use dc_release::{Committee, ReleaseEvidence};
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
        self.fetch_with_progress(f, &mut |_: &Progress<'_>| {})
            .await
    }

    /// [`Downloader::fetch`], logging progress at INFO: a line when a URL starts to answer,
    /// periodic lines while it streams ([`ProgressLog`]: at most every
    /// [`LOG_EVERY`] and every [`LOG_STEP`] of the total) and a final line when every byte is
    /// in, each with `bytes`, `total`, `rate`, `eta`, `elapsed_ms` and `url`. `received` is
    /// told of the bytes as they arrive (every URL tried, a failed transfer too; nothing for an
    /// artifact already in the store).
    pub async fn fetch_logged(
        &self,
        f: &Fetch,
        received: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PathBuf, DownloadError> {
        let mut log = ProgressLog::new(LOG_EVERY, LOG_STEP);
        let mut current = 0u64;
        self.fetch_with_progress(f, &mut |p: &Progress<'_>| {
            if p.stage == Stage::Started {
                current = 0;
            }
            received(p.bytes.saturating_sub(current));
            current = current.max(p.bytes);
            if log.due(p) {
                log_progress(p)
            }
        })
        .await
    }

    /// [`Downloader::fetch`], reporting progress to `on`: for each URL tried, one
    /// [`Stage::Started`] when it answers, [`Stage::Receiving`] after every chunk, and one
    /// [`Stage::Received`] when the stream ended within its limits (before the digest is
    /// compared). Nothing is reported for an artifact already in the store.
    pub async fn fetch_with_progress(
        &self,
        f: &Fetch,
        on: &mut (dyn FnMut(&Progress<'_>) + Send),
    ) -> Result<PathBuf, DownloadError> {
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
            match self.fetch_one(url, f, &mut *on).await {
                Ok(p) => return Ok(p),
                Err(e) => {
                    warn!("download failed, trying the next URL: {e}");
                    errors.push(e.to_string());
                }
            }
        }
        Err(DownloadError::AllFailed(errors.join("; ")))
    }

    async fn fetch_one(
        &self,
        url: &str,
        f: &Fetch,
        on: &mut (dyn FnMut(&Progress<'_>) + Send),
    ) -> Result<PathBuf, DownloadError> {
        let err = |reason: String| DownloadError::Url {
            url: url.into(),
            reason,
        };
        let mut rnd = [0u8; 8];
        getrandom::getrandom(&mut rnd).map_err(|e| err(e.to_string()))?;
        let tmp = self.store.join(format!(".partial-{}", hex::encode(rnd)));
        let result = tokio::time::timeout(self.total, self.stream_to(url, f, &tmp, on)).await;
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
    async fn stream_to(
        &self,
        url: &str,
        a: &Fetch,
        tmp: &Path,
        on: &mut (dyn FnMut(&Progress<'_>) + Send),
    ) -> Result<[u8; 32], String> {
        let started = Instant::now();
        let mut out = tokio::fs::File::create(tmp)
            .await
            .map_err(|e| e.to_string())?;
        let mut h = Sha256::new();
        let mut p = Progress {
            url,
            stage: Stage::Started,
            bytes: 0,
            total: a.size_is_exact.then_some(a.size),
            elapsed: Duration::ZERO,
        };
        // Counts, checks and hashes one chunk, then reports it.
        let on_chunk = |chunk: &[u8],
                        h: &mut Sha256,
                        p: &mut Progress<'_>,
                        on: &mut (dyn FnMut(&Progress<'_>) + Send)| {
            p.bytes += chunk.len() as u64;
            if p.bytes > a.size {
                return Err(format!(
                    "more than the {} {} bytes",
                    if a.size_is_exact { "signed" } else { "allowed" },
                    a.size
                ));
            }
            h.update(chunk);
            p.stage = Stage::Receiving;
            p.elapsed = started.elapsed();
            on(p);
            Ok(())
        };
        if let Some(path) = url.strip_prefix("file://") {
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| e.to_string())?;
            if p.total.is_none() {
                p.total = f
                    .metadata()
                    .await
                    .ok()
                    .map(|m| m.len())
                    .filter(|&l| l <= a.size);
            }
            p.elapsed = started.elapsed();
            on(&p);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = tokio::time::timeout(self.stall, f.read(&mut buf))
                    .await
                    .map_err(|_| "stalled".to_string())?
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                on_chunk(&buf[..n], &mut h, &mut p, &mut *on)?;
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
            if p.total.is_none() {
                p.total = resp.content_length();
            }
            p.elapsed = started.elapsed();
            on(&p);
            while let Some(chunk) = tokio::time::timeout(self.stall, resp.chunk())
                .await
                .map_err(|_| format!("no data for {:?}", self.stall))?
                .map_err(|e| describe(&e))?
            {
                on_chunk(&chunk, &mut h, &mut p, &mut *on)?;
                out.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
        } else {
            return Err(
                "unsupported URL scheme (this build fetches file:/// and http:// URLs)".into(),
            );
        }
        if a.size_is_exact && p.bytes != a.size {
            return Err(format!(
                "{} bytes, the signed record says {}",
                p.bytes, a.size
            ));
        }
        out.sync_all().await.map_err(|e| e.to_string())?;
        p.stage = Stage::Received;
        p.elapsed = started.elapsed();
        on(&p);
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

/// Where a download from one URL stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The URL answered (the total is known here if it will be); no byte yet.
    Started,
    /// A chunk arrived.
    Receiving,
    /// Every byte is in, within the size limits; the digest is compared next.
    Received,
}

/// A download's progress, as reported to the observer of
/// [`Downloader::fetch_with_progress`].
#[derive(Clone, Debug, PartialEq)]
pub struct Progress<'a> {
    pub url: &'a str,
    pub stage: Stage,
    /// Bytes received from this URL so far.
    pub bytes: u64,
    /// The signed size, else the size the server announced (or the file's), if any.
    pub total: Option<u64>,
    /// Since the request to this URL started.
    pub elapsed: Duration,
}

impl Progress<'_> {
    /// Mean bytes per second since the start; `None` before any time has passed.
    pub fn rate(&self) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64();
        (secs > 0.0).then(|| self.bytes as f64 / secs)
    }

    /// The time left at the mean rate so far; `None` without a total or a rate.
    pub fn eta(&self) -> Option<Duration> {
        let total = self.total?;
        if self.bytes >= total {
            return Some(Duration::ZERO);
        }
        let rate = self.rate().filter(|r| *r > 0.0)?;
        Duration::try_from_secs_f64((total - self.bytes) as f64 / rate).ok()
    }

    /// Whole percent of the total (at most 100); `None` without a total.
    pub fn percent(&self) -> Option<u64> {
        match self.total? {
            0 => Some(100),
            t => Some((u128::from(self.bytes.min(t)) * 100 / u128::from(t)) as u64),
        }
    }
}

/// The agent's progress lines: at most one every [`LOG_EVERY`]…
pub const LOG_EVERY: Duration = Duration::from_secs(2);
/// …and only after another [`LOG_STEP`] of the total (whichever is rarer). Without a known
/// total, one every five [`LOG_EVERY`]s.
pub const LOG_STEP: f64 = 0.10;

/// Decides which [`Progress`] reports become log lines: always the start and the end of a
/// URL's transfer; in between, only when both `every` has passed and another `step` (a
/// fraction) of the total has arrived since the last line — so a fast download logs two
/// lines and a slow one a line every `every`, at most about `1 / step` of them.
#[derive(Clone, Debug)]
pub struct ProgressLog {
    every: Duration,
    step: f64,
    /// Elapsed time and bytes at the last line.
    last: Option<(Duration, u64)>,
}

impl ProgressLog {
    pub fn new(every: Duration, step: f64) -> Self {
        Self {
            every,
            step,
            last: None,
        }
    }

    /// Whether `p` deserves a line (and if so, remembers it as the last one).
    pub fn due(&mut self, p: &Progress<'_>) -> bool {
        let due = match (p.stage, self.last) {
            (Stage::Started | Stage::Received, _) | (Stage::Receiving, None) => true,
            (Stage::Receiving, Some((at, bytes))) => {
                let waited = p.elapsed.saturating_sub(at);
                match p.total {
                    Some(t) if t > 0 => {
                        waited >= self.every
                            && p.bytes.saturating_sub(bytes) as f64 >= self.step * t as f64
                    }
                    _ => waited >= self.every.saturating_mul(5),
                }
            }
        };
        if due {
            self.last = Some((p.elapsed, p.bytes));
        }
        due
    }
}

/// One INFO line for `p` (see [`Downloader::fetch_logged`]).
fn log_progress(p: &Progress<'_>) {
    let (url, bytes, total, percent) = (p.url, p.bytes, p.total, p.percent());
    let (rate, eta) = (format_rate(p.rate()), format_eta(p.eta()));
    let elapsed_ms = u64::try_from(p.elapsed.as_millis()).unwrap_or(u64::MAX);
    match p.stage {
        Stage::Started => info!(url, bytes, total, "download started"),
        Stage::Receiving => info!(
            url,
            bytes, total, percent, rate, eta, elapsed_ms, "downloading"
        ),
        Stage::Received => info!(
            url,
            bytes, total, percent, rate, eta, elapsed_ms, "download received"
        ),
    }
}

/// The body of `resp`, refused past `max` bytes: for answers from whatever listens on a port
/// (another process may), never read without a bound.
pub async fn read_body_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `512 B`, `1.5 KiB`, `20.0 MiB`, … (binary units, one decimal).
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    // 1023.95 would print as "1024.0": the next unit reads better.
    while v >= 1023.95 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `1.5 MiB/s`, or `unknown`.
pub fn format_rate(bytes_per_sec: Option<f64>) -> String {
    match bytes_per_sec {
        Some(r) if r.is_finite() && r >= 0.0 => format!("{}/s", format_bytes(r as u64)),
        _ => "unknown".into(),
    }
}

/// `0s`, `42s`, `3m07s`, `2h05m` (rounded up to the second), or `unknown`.
pub fn format_eta(eta: Option<Duration>) -> String {
    let Some(d) = eta else {
        return "unknown".into();
    };
    let mut secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs = secs.saturating_add(1);
    }
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Unpacks the downloaded `archive` into `dest` (which must not exist) and checks the bundle
/// against the candidate the way the agent does before it touches the running node: the
/// measurement against the signed EnclaveID, the product, the version and ISVSVN against
/// the signed (feed) or claimed (chain) ones, a Gramine bundle only with a signed record, and
/// the release evidence as the node holding the keys will verify it, and no DEBUG enclave
/// unless `allow_debug`. What depends on the agent's journal (the ISVSVN floor) is left to
/// the caller. Returns the bundle and its release evidence ([`check_bundle`]); on failure
/// nothing is left at `dest`.
pub fn verify_artifact(
    archive: &Path,
    c: &Candidate,
    committee: &Committee,
    now_secs: u64,
    allow_debug: bool,
    dest: &Path,
) -> Result<(Bundle, Vec<u8>), String> {
    let f = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let bundle =
        dc_bundle::archive::unpack(std::io::BufReader::new(f), dest).map_err(|e| e.to_string());
    let checked = bundle.and_then(|b| {
        check_bundle(&b, c, committee, now_secs, allow_debug).map(|evidence| (b, evidence))
    });
    if checked.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    checked
}

/// The checks of [`verify_artifact`] on an unpacked bundle. Returns the release evidence the
/// node holding the keys will verify: the signed record, or for a chain release its
/// signatures and the measured manifest.
pub fn check_bundle(
    b: &Bundle,
    c: &Candidate,
    committee: &Committee,
    now_secs: u64,
    allow_debug: bool,
) -> Result<Vec<u8>, String> {
    if b.mr_enclave != c.mr_enclave {
        return Err(format!(
            "the bundle measures {} but the committee signed {}",
            b.mr_enclave, c.mr_enclave
        ));
    }
    if matches!(b.kind, dc_bundle::BundleKind::Gramine(_)) && c.record_json.is_none() {
        return Err("a Gramine bundle needs a committee-signed release record (its version is not measured); the chain's EnclaveIds entry alone is not enough".into());
    }
    if b.manifest.debug && !allow_debug {
        return Err(format!(
            "{} is a DEBUG enclave (its memory is readable by the host); this agent's measured policy refuses DEBUG peers",
            b.mr_enclave
        ));
    }
    if b.manifest.name != crate::agent::PRODUCT {
        return Err(format!(
            "the bundle is {:?}, not {}",
            b.manifest.name,
            crate::agent::PRODUCT
        ));
    }
    if b.manifest.version != c.version.to_string() {
        return Err(format!(
            "the measured bundle is version {}, the release says {}",
            b.manifest.version, c.version
        ));
    }
    if c.isv_svn.is_some_and(|s| s != b.manifest.isv_svn) {
        return Err(format!(
            "the measured bundle has ISVSVN {}, the record {:?}",
            b.manifest.isv_svn, c.isv_svn
        ));
    }
    let evidence = match &c.record_json {
        Some(json) => json.clone(),
        None => ReleaseEvidence::legacy(
            &c.mr_enclave,
            c.legacy_signatures.clone(),
            &b.manifest_bytes,
        )
        .to_json(),
    };
    let verified = ReleaseEvidence::parse(&evidence)
        .and_then(|e| e.verify(committee, now_secs))
        .map_err(|e| format!("release evidence: {e}"))?;
    if verified.mr_enclave != c.mr_enclave || verified.isv_svn != b.manifest.isv_svn {
        return Err("the release evidence names another enclave or ISVSVN".into());
    }
    Ok(evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(stage: Stage, bytes: u64, total: Option<u64>, ms: u64) -> Progress<'static> {
        Progress {
            url: "http://mirror/a.tar",
            stage,
            bytes,
            total,
            elapsed: Duration::from_millis(ms),
        }
    }

    #[test]
    fn rate_eta_and_percent() {
        let p = at(Stage::Receiving, 3 << 20, Some(10 << 20), 3000);
        assert_eq!(p.rate(), Some((1 << 20) as f64));
        assert_eq!(p.eta(), Some(Duration::from_secs(7)));
        assert_eq!(p.percent(), Some(30));
        // No time yet, no total, nothing received, everything received.
        assert_eq!(at(Stage::Started, 0, Some(10), 0).rate(), None);
        assert_eq!(at(Stage::Started, 0, Some(10), 0).eta(), None);
        assert_eq!(at(Stage::Receiving, 5, None, 1000).eta(), None);
        assert_eq!(at(Stage::Receiving, 5, None, 1000).percent(), None);
        assert_eq!(at(Stage::Receiving, 0, Some(10), 1000).eta(), None);
        assert_eq!(
            at(Stage::Received, 10, Some(10), 1000).eta(),
            Some(Duration::ZERO)
        );
        assert_eq!(at(Stage::Received, 0, Some(0), 0).percent(), Some(100));
        // Extremes do not panic: a byte in a very long time, totals near u64::MAX.
        let slow = at(Stage::Receiving, 1, Some(u64::MAX), u64::MAX);
        let _ = (slow.eta(), slow.rate(), format_eta(slow.eta()));
        assert_eq!(
            at(Stage::Receiving, u64::MAX / 2, Some(u64::MAX), 1).percent(),
            Some(49)
        );
    }

    #[test]
    fn formats() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(20 << 20), "20.0 MiB");
        assert_eq!(format_bytes((1 << 20) - 1), "1.0 MiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(format_rate(Some(1.5 * 1024.0 * 1024.0)), "1.5 MiB/s");
        assert_eq!(format_rate(Some(0.0)), "0 B/s");
        assert_eq!(format_rate(None), "unknown");
        assert_eq!(format_rate(Some(f64::NAN)), "unknown");
        assert_eq!(format_rate(Some(f64::INFINITY)), "unknown");
        assert_eq!(format_eta(None), "unknown");
        assert_eq!(format_eta(Some(Duration::ZERO)), "0s");
        assert_eq!(format_eta(Some(Duration::from_millis(1))), "1s");
        assert_eq!(format_eta(Some(Duration::from_secs(42))), "42s");
        assert_eq!(format_eta(Some(Duration::from_secs(187))), "3m07s");
        assert_eq!(format_eta(Some(Duration::from_secs(7500))), "2h05m");
        assert!(format_eta(Some(Duration::MAX)).ends_with('m'));
    }

    /// The lines a download of `total` bytes in `chunks` equal chunks over `secs` seconds
    /// would log.
    fn lines(total: Option<u64>, size: u64, chunks: u64, secs: u64) -> Vec<(Stage, u64)> {
        let mut log = ProgressLog::new(LOG_EVERY, LOG_STEP);
        let mut out = Vec::new();
        let mut see = |p: Progress<'_>| {
            if log.due(&p) {
                out.push((p.stage, p.bytes));
            }
        };
        see(at(Stage::Started, 0, total, 0));
        for i in 1..=chunks {
            see(at(
                Stage::Receiving,
                size * i / chunks,
                total,
                secs * 1000 * i / chunks,
            ));
        }
        see(at(Stage::Received, size, total, secs * 1000));
        out
    }

    #[test]
    fn a_fast_download_logs_its_start_and_end_only() {
        let l = lines(Some(1 << 30), 1 << 30, 10_000, 1);
        assert_eq!(l, vec![(Stage::Started, 0), (Stage::Received, 1 << 30)]);
    }

    #[test]
    fn a_slow_download_logs_every_ten_percent_at_most() {
        // 100 s for the whole: time is never the limit, the 10 % step is.
        let l = lines(Some(1000), 1000, 1000, 100);
        let middle: Vec<u64> = l
            .iter()
            .filter(|(s, _)| *s == Stage::Receiving)
            .map(|(_, b)| *b)
            .collect();
        assert_eq!(middle, (1..=10).map(|i| i * 100).collect::<Vec<_>>());
        assert_eq!(l.first(), Some(&(Stage::Started, 0)));
        assert_eq!(l.last(), Some(&(Stage::Received, 1000)));
    }

    #[test]
    fn a_long_download_logs_every_two_seconds_at_most() {
        // 20 s for the whole: each 10 % takes 2 s, both limits meet.
        let l = lines(Some(1000), 1000, 1000, 20);
        let n = l.iter().filter(|(s, _)| *s == Stage::Receiving).count();
        assert_eq!(n, 10, "{l:?}");
        // 4 s for the whole: the 2 s interval is the rarer one.
        let l = lines(Some(1000), 1000, 1000, 4);
        let middle: Vec<u64> = l
            .iter()
            .filter(|(s, _)| *s == Stage::Receiving)
            .map(|(_, b)| *b)
            .collect();
        assert_eq!(middle, vec![500, 1000], "{l:?}");
    }

    #[test]
    fn without_a_total_it_logs_every_ten_seconds() {
        let l = lines(None, 1000, 1000, 35);
        let middle: Vec<u64> = l
            .iter()
            .filter(|(s, _)| *s == Stage::Receiving)
            .map(|(_, b)| *b)
            .collect();
        // 35 s in 1000 chunks of 35 ms: lines at 10.01 s, 20.02 s, 30.03 s.
        assert_eq!(middle.len(), 3, "{l:?}");
    }

    #[test]
    fn a_retry_from_the_next_url_starts_its_own_lines() {
        let mut log = ProgressLog::new(LOG_EVERY, LOG_STEP);
        assert!(log.due(&at(Stage::Started, 0, Some(100), 0)));
        assert!(!log.due(&at(Stage::Receiving, 50, Some(100), 1000)));
        // The next URL: its clock and bytes start again.
        assert!(log.due(&at(Stage::Started, 0, Some(100), 0)));
        assert!(!log.due(&at(Stage::Receiving, 5, Some(100), 2500)));
        assert!(log.due(&at(Stage::Receiving, 20, Some(100), 2500)));
    }

    /// The hook reports a real download: start, chunks, end, with the file's size as total.
    #[tokio::test]
    async fn fetch_with_progress_reports_start_chunks_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.tar");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let sha: [u8; 32] = Sha256::digest(&data).into();
        let d = Downloader::new(&dir.path().join("store")).unwrap();
        let url = format!("file://{}", src.display());
        let mut seen = Vec::new();
        // The cap, not the size, is known (like a chain release): the total is the file's.
        let fetch = Fetch {
            urls: vec![url.clone()],
            sha256: Some(sha),
            size: 1 << 30,
            size_is_exact: false,
        };
        let got = d
            .fetch_with_progress(&fetch, &mut |p: &Progress<'_>| {
                seen.push((p.stage, p.bytes, p.total, p.url.to_string()))
            })
            .await
            .unwrap();
        assert_eq!(std::fs::read(got).unwrap(), data);
        let n = data.len() as u64;
        assert_eq!(
            seen.first(),
            Some(&(Stage::Started, 0, Some(n), url.clone()))
        );
        assert_eq!(
            seen.last(),
            Some(&(Stage::Received, n, Some(n), url.clone()))
        );
        let chunks: Vec<u64> = seen
            .iter()
            .filter(|s| s.0 == Stage::Receiving)
            .map(|s| s.1)
            .collect();
        assert!(chunks.len() >= 2, "{chunks:?}");
        assert!(chunks.windows(2).all(|w| w[0] < w[1]) && chunks.last() == Some(&n));

        // Already in the store: nothing to report. A wrong digest: reported, then refused.
        seen.clear();
        d.fetch_with_progress(&fetch, &mut |p: &Progress<'_>| {
            seen.push((p.stage, p.bytes, p.total, p.url.to_string()))
        })
        .await
        .unwrap();
        assert!(seen.is_empty());
        let mut got = 0;
        d.fetch_logged(&fetch, &mut |b| got += b).await.unwrap();
        assert_eq!(got, 0, "nothing transferred");
        let wrong = Fetch {
            sha256: Some([7; 32]),
            ..fetch
        };
        let mut got = 0;
        let e = d
            .fetch_logged(&wrong, &mut |b| got += b)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(got, n, "a transfer that fails its digest still counts");
        assert!(e.contains("SHA-256"), "{e}");
    }
}

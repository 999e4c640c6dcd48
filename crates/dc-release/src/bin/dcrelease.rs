//! `dcrelease`: the release committee's tool — keys, bundles, signed release records, the
//! local feed; and `verify --fetch`, which downloads a record's artifact from every URL it
//! names and checks each against the signed digest and size. Hashing and downloads show a
//! progress bar when stderr is a terminal.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dc_bundle::{SignerKey, TrustRoots};
use dc_release::committee::CommitteeSigner;
use dc_release::feed::LocalFeed;
use dc_release::{Artifact, Committee, CommitteeKey, ReleaseRecord, Role, SignedRecord};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

/// No byte for this long ends a download (as the agent's downloader).
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "dcrelease",
    version,
    about = "DC release committee tool: keys, bundles, signed release records, the local feed"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Node,
    Upgrader,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a committee member key (secret file mode 0600); prints the public key (multibase).
    Keygen { out: PathBuf },
    /// Create an enclave signer key (the MRSIGNER key).
    SignerKeygen { out: PathBuf },
    /// Build a signed bundle from files and pack it as a release artifact.
    Bundle {
        #[command(flatten)]
        bundle: dc_bundle::BundleArgs,
        /// Artifact (tar) to write.
        #[arg(long)]
        archive: PathBuf,
        /// Committee public key for the enclave's trust roots (repeatable).
        #[arg(long = "committee-key", required = true)]
        committee_keys: Vec<String>,
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        /// Let the enclave accept DEBUG peers (never in production).
        #[arg(long)]
        allow_debug_peers: bool,
    },
    /// Create a release record and sign it, or add a signature to an existing one.
    Sign {
        /// Committee member secret key.
        #[arg(long)]
        key: PathBuf,
        /// Add a signature to this record (threshold signing) instead of creating one.
        #[arg(long, conflicts_with_all = ["product", "version", "mr_enclave"])]
        record: Option<PathBuf>,
        #[arg(long, default_value = "dcnode")]
        product: Option<String>,
        #[arg(long, value_enum, default_value = "node")]
        role: RoleArg,
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        mr_enclave: Option<String>,
        #[arg(long, default_value_t = 1)]
        isv_svn: u16,
        /// The artifact file (its SHA-256 and size go into the record).
        #[arg(long)]
        artifact: Option<PathBuf>,
        /// Download URL, origin first (repeatable).
        #[arg(long = "url")]
        urls: Vec<String>,
        /// Unix time after which the record is no longer valid.
        #[arg(long)]
        expires_at: Option<u64>,
        /// Where to write the signed record (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the EnclaveIds signature text (DC's legacy format) for an enclave id.
    SignLegacy {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        mr_enclave: String,
    },
    /// Create (or add a signature to) a revocation of an enclave id.
    Revoke {
        #[arg(long)]
        key: PathBuf,
        #[arg(long, conflicts_with = "mr_enclave")]
        revocation: Option<PathBuf>,
        #[arg(long)]
        mr_enclave: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Put a signed record into a local feed directory.
    Publish {
        #[arg(long)]
        feed: PathBuf,
        record: PathBuf,
    },
    /// Verify a signed record (and optionally its artifact) against committee keys.
    Verify {
        #[arg(long = "committee-key", required = true)]
        committee_keys: Vec<String>,
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        /// A local copy of the artifact: its SHA-256 and size must be the signed ones.
        #[arg(long)]
        artifact: Option<PathBuf>,
        /// Download the artifact from every URL the record names (origin and mirrors:
        /// `file://`, `http://`, `https://`) and check each copy against the signed SHA-256
        /// and size; never more than the signed size is read. Fails if any URL does not serve
        /// the signed artifact.
        #[arg(long)]
        fetch: bool,
        /// Extra PEM root certificate for https URLs (repeatable; a private mirror's CA).
        #[arg(long = "download-ca", requires = "fetch")]
        download_ca: Vec<PathBuf>,
        record: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dcrelease: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn read_record(p: &PathBuf) -> Result<SignedRecord> {
    let b = std::fs::read(p).with_context(|| p.display().to_string())?;
    SignedRecord::parse(&b).with_context(|| p.display().to_string())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Keygen { out } => {
            let k = CommitteeSigner::generate()?;
            k.save(&out)?;
            println!("{}", k.public());
        }
        Cmd::SignerKeygen { out } => {
            let k = SignerKey::generate()?;
            k.save(&out)?;
            println!("mrsigner {}", k.mr_signer());
        }
        Cmd::Bundle {
            bundle,
            archive,
            committee_keys,
            threshold,
            allow_debug_peers,
        } => {
            for k in &committee_keys {
                CommitteeKey::parse(k)?;
            }
            let b = bundle.build(TrustRoots {
                committee_keys,
                threshold,
                allow_debug_peers,
                authorized_enclaves: vec![],
            })?;
            let f =
                std::fs::File::create(&archive).with_context(|| archive.display().to_string())?;
            dc_bundle::archive::pack(&b, std::io::BufWriter::new(f))?;
            let (sha, size) = digest_with_bar(&archive)?;
            println!("mrenclave {}", b.mr_enclave);
            println!("mrsigner  {}", b.mr_signer);
            println!("sha256    {}", hex::encode(sha));
            println!("size      {size}");
        }
        Cmd::Sign {
            key,
            record,
            product,
            role,
            version,
            mr_enclave,
            isv_svn,
            artifact,
            urls,
            expires_at,
            out,
        } => {
            let signer = CommitteeSigner::load(&key)?;
            let mut signed = match record {
                Some(p) => read_record(&p)?,
                None => {
                    let artifact = match artifact {
                        Some(a) => {
                            if urls.is_empty() {
                                bail!("--artifact needs at least one --url");
                            }
                            let (sha, size) = digest_with_bar(&a)?;
                            Some(Artifact {
                                sha256: hex::encode(sha),
                                size,
                                urls,
                            })
                        }
                        None => None,
                    };
                    SignedRecord::unsigned(ReleaseRecord {
                        product: product.unwrap_or_else(|| "dcnode".into()),
                        role: match role {
                            RoleArg::Node => Role::Node,
                            RoleArg::Upgrader => Role::Upgrader,
                        },
                        version: version.context("--version is required for a new record")?,
                        mr_enclave: mr_enclave
                            .context("--mr-enclave is required for a new record")?,
                        isv_svn,
                        artifact,
                        expires_at,
                    })
                }
            };
            signed.sign(&signer)?;
            match out {
                Some(p) => {
                    std::fs::write(&p, signed.to_json()).with_context(|| p.display().to_string())?
                }
                None => println!("{}", String::from_utf8_lossy(&signed.to_json())),
            }
        }
        Cmd::SignLegacy { key, mr_enclave } => {
            let m = dc_release::legacy::parse_enclave_id(mr_enclave.as_bytes())?;
            println!(
                "{}",
                dc_release::legacy::sign(&CommitteeSigner::load(&key)?, &m)
            );
        }
        Cmd::Revoke {
            key,
            revocation,
            mr_enclave,
            reason,
            out,
        } => {
            use dc_release::revocation::SignedRevocation;
            let mut r = match revocation {
                Some(p) => SignedRevocation::parse(
                    &std::fs::read(&p).with_context(|| p.display().to_string())?,
                )?,
                None => {
                    let m = mr_enclave.context("--mr-enclave is required for a new revocation")?;
                    SignedRevocation::new(
                        &dc_release::legacy::parse_enclave_id(m.as_bytes())?,
                        &reason,
                    )
                }
            };
            r.sign(&CommitteeSigner::load(&key)?)?;
            std::fs::write(&out, r.to_json()).with_context(|| out.display().to_string())?;
            println!(
                "revocation of {} written to {}",
                r.revocation.mr_enclave,
                out.display()
            );
        }
        Cmd::Publish { feed, record } => {
            let r = read_record(&record)?;
            let p = LocalFeed::new(&feed).publish(&r)?;
            println!(
                "published {} {} to {}",
                r.record.product,
                r.record.version,
                p.display()
            );
        }
        Cmd::Verify {
            committee_keys,
            threshold,
            artifact,
            fetch,
            download_ca,
            record,
        } => {
            let keys = committee_keys
                .iter()
                .map(|k| CommitteeKey::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            let committee = Committee::new(keys, threshold)?;
            let v = read_record(&record)?.verify(&committee, dc_release::authorizer::unix_now())?;
            if let Some(a) = artifact {
                let (sha, size) = digest_with_bar(&a)?;
                let want = v
                    .record
                    .artifact
                    .as_ref()
                    .context("the record names no artifact")?;
                if hex::encode(sha) != want.sha256 || size != want.size {
                    bail!(
                        "artifact {} does not match the record (sha256 {}, {size} bytes)",
                        a.display(),
                        hex::encode(sha)
                    );
                }
            }
            println!(
                "valid: {} {} ({:?}) mrenclave {}",
                v.record.product, v.version, v.record.role, v.mr_enclave
            );
            if fetch {
                let want = v
                    .record
                    .artifact
                    .as_ref()
                    .context("--fetch: the record names no artifact")?;
                let roots = download_ca
                    .iter()
                    .map(|p| std::fs::read(p).with_context(|| p.display().to_string()))
                    .collect::<Result<Vec<_>>>()?;
                fetch_all(want, &roots)?;
            }
        }
    }
    Ok(())
}

/// A bar on stderr if a person is watching it, else nothing at all (pipes stay clean).
fn progress_bar(len: Option<u64>, msg: String) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let template = if len.is_some() {
        "{msg}\n[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{msg}\n[{elapsed_precise}] {spinner} {bytes} {binary_bytes_per_sec}"
    };
    let bar = ProgressBar::with_draw_target(len, target);
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(msg);
    bar
}

/// SHA-256 and size of a file, with a progress bar (artifacts can be large).
fn digest_with_bar(path: &Path) -> Result<([u8; 32], u64)> {
    let what = || path.display().to_string();
    let mut f = std::fs::File::open(path).with_context(what)?;
    let len = f.metadata().with_context(what)?.len();
    let bar = progress_bar(Some(len), format!("hashing {}", path.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let result = loop {
        match f.read(&mut buf) {
            Ok(0) => break Ok((h.finalize().into(), size)),
            Ok(n) => {
                size += n as u64;
                h.update(&buf[..n]);
                bar.set_position(size);
            }
            Err(e) => break Err(anyhow!(e).context(what())),
        }
    };
    bar.finish_and_clear();
    result
}

/// Checks the copy of the artifact at every URL against the signed digest and size; prints
/// one line per URL.
fn fetch_all(want: &Artifact, roots: &[Vec<u8>]) -> Result<()> {
    let sha: [u8; 32] = hex::decode(&want.sha256)
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("the record's artifact SHA-256 is not 32 bytes of hex")?;
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10));
    for pem in roots {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(pem).context("--download-ca")?);
    }
    let http = builder.build()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut failed = 0;
    for url in &want.urls {
        let bar = progress_bar(Some(want.size), format!("downloading {url}"));
        let got = rt.block_on(fetch_digest(&http, url, want.size, &bar));
        bar.finish_and_clear();
        match got {
            Ok((got, size)) if got == sha && size == want.size => {
                println!("ok      {url} ({size} bytes, sha256 {})", want.sha256)
            }
            Ok((got, size)) => {
                failed += 1;
                println!(
                    "FAILED  {url}: {size} bytes with SHA-256 {}, the record signs {} bytes with SHA-256 {}",
                    hex::encode(got),
                    want.size,
                    want.sha256
                );
            }
            Err(e) => {
                failed += 1;
                println!("FAILED  {url}: {e:#}");
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} URL(s) do not serve the signed artifact",
            want.urls.len()
        );
    }
    Ok(())
}

/// Streams one URL through SHA-256, reading at most `max` bytes (one more is an error).
async fn fetch_digest(
    http: &reqwest::Client,
    url: &str,
    max: u64,
    bar: &ProgressBar,
) -> Result<([u8; 32], u64)> {
    let mut h = Sha256::new();
    let mut size = 0u64;
    let mut take = |chunk: &[u8]| -> Result<()> {
        size += chunk.len() as u64;
        if size > max {
            bail!("more than the signed {max} bytes");
        }
        h.update(chunk);
        bar.set_position(size);
        Ok(())
    };
    let stalled = || anyhow!("no data for {STALL_TIMEOUT:?}");
    if let Some(path) = url.strip_prefix("file://") {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::open(path)
            .await
            .context(path.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = tokio::time::timeout(STALL_TIMEOUT, f.read(&mut buf))
                .await
                .map_err(|_| stalled())?
                .context(path.to_string())?;
            if n == 0 {
                break;
            }
            take(&buf[..n])?;
        }
    } else if url.starts_with("http://") || url.starts_with("https://") {
        let mut resp = tokio::time::timeout(STALL_TIMEOUT, http.get(url).send())
            .await
            .map_err(|_| anyhow!("no answer for {STALL_TIMEOUT:?}"))?
            .map_err(describe)?;
        if !resp.status().is_success() {
            bail!("HTTP {}", resp.status());
        }
        if resp.content_length().is_some_and(|l| l > max) {
            bail!("announces more than the signed {max} bytes");
        }
        while let Some(chunk) = tokio::time::timeout(STALL_TIMEOUT, resp.chunk())
            .await
            .map_err(|_| stalled())?
            .map_err(describe)?
        {
            take(&chunk)?;
        }
    } else {
        bail!("unsupported URL scheme (file://, http:// and https:// are)");
    }
    Ok((h.finalize().into(), size))
}

/// An error with its causes (reqwest's own message hides e.g. the TLS certificate problem).
fn describe(e: reqwest::Error) -> anyhow::Error {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    anyhow!(out)
}

//! `dcrelease`: the release committee's tool — keys, bundles, signed release records, the
//! local feed.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use dc_bundle::{SignerKey, TrustRoots};
use dc_release::committee::CommitteeSigner;
use dc_release::feed::LocalFeed;
use dc_release::{
    digest_file, Artifact, Committee, CommitteeKey, ReleaseRecord, Role, SignedRecord,
};

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
        #[arg(long)]
        artifact: Option<PathBuf>,
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
            let (sha, size) = digest_file(&archive)?;
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
                            let (sha, size) = digest_file(&a)?;
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
            record,
        } => {
            let keys = committee_keys
                .iter()
                .map(|k| CommitteeKey::parse(k))
                .collect::<Result<Vec<_>, _>>()?;
            let committee = Committee::new(keys, threshold)?;
            let v = read_record(&record)?.verify(&committee, dc_release::authorizer::unix_now())?;
            if let Some(a) = artifact {
                let (sha, size) = digest_file(&a)?;
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
        }
    }
    Ok(())
}

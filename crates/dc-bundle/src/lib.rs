//! Enclave bundles: an `enclave.toml` manifest, the files it lists, and the signer's
//! signature (`enclave.sig`).
//!
//! In simulation the enclave identity comes from here, like SIGSTRUCT on SGX:
//! - MRENCLAVE = SHA-256(`"DCTEE-SIM-MRENCLAVE-V1\0"` ‖ the manifest file's bytes). The
//!   manifest pins the SHA-256 of every file it runs, so the measurement covers the code too;
//!   any changed byte of the manifest — version, argument, trust root — is another enclave.
//! - MRSIGNER = SHA-256(signer's Ed25519 public key); the signer signs
//!   `"DCTEE-SIM-SIGSTRUCT-V1\0"` ‖ MRENCLAVE.
//!
//! [`Bundle::open`] is the one way to read a bundle: it enforces size limits, refuses paths
//! that leave the bundle or pass through symlinks, checks the signature and every file hash.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use dc_tee::{Attributes, Measurement};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub mod archive;

pub const MANIFEST_FILE: &str = "enclave.toml";
pub const SIGNATURE_FILE: &str = "enclave.sig";
pub const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
pub const MAX_FILES: usize = 1024;
pub const MAX_FILE_BYTES: u64 = 1 << 30;
pub const MAX_ARGS: usize = 256;
pub const MAX_ARG_BYTES: usize = 4096;
const MRENCLAVE_DOMAIN: &[u8] = b"DCTEE-SIM-MRENCLAVE-V1\0";
const SIGSTRUCT_DOMAIN: &[u8] = b"DCTEE-SIM-SIGSTRUCT-V1\0";
const SIG_MAGIC: &[u8; 8] = b"DCSIGV01";
const SIG_LEN: usize = 8 + 32 + 64;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than the {limit}-byte limit")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: is a symlink or not a regular file; bundles may contain only regular files")]
    NotRegularFile { path: PathBuf },
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("file path {0:?} is not allowed: it must be relative, without '..', and name a file inside the bundle")]
    UnsafePath(String),
    #[error("{path}: SHA-256 is {actual}, the manifest says {expected}; the bundle was altered or is incomplete")]
    HashMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("enclave.sig: {0}")]
    Signature(String),
    #[error("signer key: {0}")]
    Key(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The `enclave.toml` manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    #[serde(default)]
    pub debug: bool,
    /// Path (inside the bundle) of the program to run.
    pub entrypoint: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Names of environment variables the launcher may set (untrusted input to the enclave,
    /// like Gramine's `loader.env.X = { passthrough = true }`). Anything else is refused, and
    /// `LD_*` loader variables always are.
    #[serde(default)]
    pub env_passthrough: Vec<String>,
    /// Trust roots: measured with the code, so the enclave can rely on them.
    #[serde(default)]
    pub trust: TrustRoots,
    /// For a Gramine-SGX bundle: its identity comes from the SIGSTRUCT, not the simulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gramine: Option<GramineFiles>,
    pub files: Vec<FileEntry>,
}

/// The Gramine files of an SGX bundle (both must be listed in `files`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GramineFiles {
    /// The signed manifest, e.g. `dcnode.manifest.sgx` (run as `gramine-sgx dcnode`).
    pub manifest_sgx: String,
    /// Its SIGSTRUCT, e.g. `dcnode.sig`.
    pub sigstruct: String,
}

/// Trust roots carried in the measured manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRoots {
    /// Committee public keys (encoding defined by the release crate).
    #[serde(default)]
    pub committee_keys: Vec<String>,
    /// How many committee signatures a release needs.
    #[serde(default)]
    pub threshold: u32,
    /// Whether peers with the DEBUG attribute may receive or send keys. Off in production.
    #[serde(default)]
    pub allow_debug_peers: bool,
    /// A static allow-list of peer MRENCLAVEs (hex), for tests and closed deployments.
    #[serde(default)]
    pub authorized_enclaves: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
}

impl Manifest {
    /// Parses and validates manifest bytes (size, paths, entrypoint, limits).
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(BundleError::Manifest(format!(
                "larger than {MAX_MANIFEST_BYTES} bytes"
            )));
        }
        let text =
            std::str::from_utf8(bytes).map_err(|_| BundleError::Manifest("not UTF-8".into()))?;
        let m: Manifest = toml::from_str(text).map_err(|e| BundleError::Manifest(e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), BundleError> {
        let bad = |s: String| Err(BundleError::Manifest(s));
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"._+-".contains(&c))
        };
        if !name_ok(&self.name) {
            return bad(format!(
                "name {:?}: 1-64 characters of [A-Za-z0-9._+-]",
                self.name
            ));
        }
        if !name_ok(&self.version) {
            return bad(format!(
                "version {:?}: 1-64 characters of [A-Za-z0-9._+-]",
                self.version
            ));
        }
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return bad(format!("must list 1 to {MAX_FILES} files"));
        }
        if self.args.len() > MAX_ARGS || self.args.iter().any(|a| a.len() > MAX_ARG_BYTES) {
            return bad(format!(
                "at most {MAX_ARGS} args of at most {MAX_ARG_BYTES} bytes"
            ));
        }
        for v in &self.env_passthrough {
            if v.is_empty()
                || v.len() > 128
                || v.starts_with("LD_")
                || !v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                return bad(format!(
                    "env_passthrough: {v:?} is not an allowed variable name (LD_* never is)"
                ));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            check_relative_path(&f.path)?;
            if f.path == MANIFEST_FILE || f.path == SIGNATURE_FILE {
                return bad(format!("{} is reserved", f.path));
            }
            if f.sha256.len() != 64
                || !f
                    .sha256
                    .bytes()
                    .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            {
                return bad(format!(
                    "{}: sha256 must be 64 lowercase hex characters",
                    f.path
                ));
            }
            if !seen.insert(f.path.as_str()) {
                return bad(format!("{} is listed twice", f.path));
            }
        }
        if !seen.contains(self.entrypoint.as_str()) {
            return bad(format!(
                "entrypoint {:?} is not one of the listed files",
                self.entrypoint
            ));
        }
        if let Some(g) = &self.gramine {
            // The identity checked before launch comes from these files: they must be bundle
            // files whose hashes the manifest pins, never a path outside or an unlisted file.
            for (key, path) in [
                ("manifest_sgx", &g.manifest_sgx),
                ("sigstruct", &g.sigstruct),
            ] {
                check_relative_path(path)?;
                if !seen.contains(path.as_str()) {
                    return bad(format!(
                        "gramine.{key} {path:?} is not one of the listed files; list it in [[files]] with its sha256"
                    ));
                }
            }
            // gramine-sgx APP loads APP.manifest.sgx and APP.sig: the SIGSTRUCT checked here
            // must be the one it will load.
            let app = g.manifest_sgx.strip_suffix(".manifest.sgx");
            if app.map(|a| format!("{a}.sig")).as_deref() != Some(g.sigstruct.as_str()) {
                return bad(format!(
                    "gramine: manifest_sgx must be APP.manifest.sgx and sigstruct APP.sig (what gramine-sgx APP loads), got {:?} and {:?}",
                    g.manifest_sgx, g.sigstruct
                ));
            }
        }
        for k in &self.trust.authorized_enclaves {
            Measurement::from_hex(k).map_err(|_| {
                BundleError::Manifest(format!(
                    "trust.authorized_enclaves: {k:?} is not 64 hex characters"
                ))
            })?;
        }
        Ok(())
    }

    /// The ATTRIBUTES an enclave of this manifest runs with.
    pub fn attributes(&self) -> Attributes {
        let mut flags = Attributes::INIT | Attributes::MODE64BIT;
        if self.debug {
            flags |= Attributes::DEBUG;
        }
        // x87 and SSE state, the minimum XFRM.
        Attributes { flags, xfrm: 0x3 }
    }
}

/// A path inside a bundle: relative, only normal components, no NUL, bounded length.
pub fn check_relative_path(p: &str) -> Result<(), BundleError> {
    let unsafe_path = || BundleError::UnsafePath(p.to_string());
    if p.is_empty() || p.len() > 512 || p.contains('\0') || p.contains('\\') {
        return Err(unsafe_path());
    }
    // Every '/'-separated part must be a plain name: this also refuses "a/./b" and "a//b",
    // which would name one file twice.
    if p.split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(unsafe_path());
    }
    if !Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(unsafe_path());
    }
    Ok(())
}

/// MRENCLAVE of a manifest (simulation measurement).
pub fn measure_manifest(manifest_bytes: &[u8]) -> Measurement {
    let mut h = Sha256::new();
    h.update(MRENCLAVE_DOMAIN);
    h.update(manifest_bytes);
    Measurement(h.finalize().into())
}

/// MRSIGNER of a signer public key.
pub fn mr_signer(public: &VerifyingKey) -> Measurement {
    Measurement(Sha256::digest(public.as_bytes()).into())
}

fn sigstruct_message(mr_enclave: &Measurement) -> Vec<u8> {
    [SIGSTRUCT_DOMAIN, &mr_enclave.0].concat()
}

/// Reads a secret key file: 64 hex characters of a 32-byte seed, refused if group or others
/// can read it. Shared by every key file of the project (signer and committee keys).
pub fn read_secret_seed(path: &Path) -> Result<Zeroizing<[u8; 32]>, BundleError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(BundleError::Key(format!(
            "{} is readable by group or others; run: chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut())
        .map_err(|_| BundleError::Key(format!("{}: expected 64 hex characters", path.display())))?;
    Ok(seed)
}

/// Writes a secret key file (hex seed) with mode 0600, fsync'd; never overwrites.
pub fn write_secret_seed(path: &Path, seed: &[u8; 32]) -> Result<(), BundleError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(Zeroizing::new(hex::encode(seed)).as_bytes())
        .map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// The enclave signer's key (the analogue of the RSA key that signs a SIGSTRUCT).
pub struct SignerKey(SigningKey);

impl SignerKey {
    pub fn generate() -> Result<Self, BundleError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut())
            .map_err(|e| BundleError::Key(format!("no randomness: {e}")))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// A deterministic key, for tests and fixtures only.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// Reads a key file (64 hex characters of the Ed25519 seed). Refuses a file that group or
    /// others can read.
    pub fn load(path: &Path) -> Result<Self, BundleError> {
        Ok(Self(SigningKey::from_bytes(&*read_secret_seed(path)?)))
    }

    /// Writes the key file with mode 0600; refuses to overwrite.
    pub fn save(&self, path: &Path) -> Result<(), BundleError> {
        write_secret_seed(path, &self.0.to_bytes())
    }

    pub fn public(&self) -> VerifyingKey {
        self.0.verifying_key()
    }

    pub fn mr_signer(&self) -> Measurement {
        mr_signer(&self.public())
    }

    /// The `enclave.sig` bytes for a manifest.
    pub fn sign_manifest(&self, manifest_bytes: &[u8]) -> Vec<u8> {
        let sig = self
            .0
            .sign(&sigstruct_message(&measure_manifest(manifest_bytes)));
        [
            SIG_MAGIC.as_slice(),
            self.public().as_bytes(),
            &sig.to_bytes(),
        ]
        .concat()
    }
}

/// Checks `enclave.sig` against a manifest; returns MRSIGNER.
pub fn verify_signature(
    sig_bytes: &[u8],
    mr_enclave: &Measurement,
) -> Result<Measurement, BundleError> {
    if sig_bytes.len() != SIG_LEN || &sig_bytes[..8] != SIG_MAGIC {
        return Err(BundleError::Signature(format!(
            "expected {SIG_LEN} bytes starting with {:?}",
            String::from_utf8_lossy(SIG_MAGIC)
        )));
    }
    let public = VerifyingKey::from_bytes(sig_bytes[8..40].try_into().expect("32 bytes"))
        .map_err(|_| BundleError::Signature("invalid signer public key".into()))?;
    let sig = Signature::from_bytes(sig_bytes[40..].try_into().expect("64 bytes"));
    public
        .verify_strict(&sigstruct_message(mr_enclave), &sig)
        .map_err(|_| {
            BundleError::Signature(
                "does not verify for this manifest: altered manifest or signature".into(),
            )
        })?;
    Ok(mr_signer(&public))
}

/// Where a bundle's identity comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleKind {
    /// The software platform: measurement of `enclave.toml`, signer from `enclave.sig`.
    Sim,
    /// Gramine-SGX: ENCLAVEHASH and the signer's modulus from the SIGSTRUCT.
    Gramine(Box<dc_tee::sigstruct::Sigstruct>),
}

/// A bundle whose manifest, signature and file hashes were all checked.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub mr_enclave: Measurement,
    pub mr_signer: Measurement,
    pub kind: BundleKind,
}

/// Reads a regular, non-symlink file of at most `limit` bytes.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, BundleError> {
    let f = open_regular(path)?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() as u64 > limit {
        return Err(BundleError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(buf)
}

/// Opens a regular file without following a symlink at its last component.
fn open_regular(path: &Path) -> Result<fs::File, BundleError> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                BundleError::NotRegularFile {
                    path: path.to_path_buf(),
                }
            } else {
                io_err(path)(e)
            }
        })?;
    if !f.metadata().map_err(io_err(path))?.is_file() {
        return Err(BundleError::NotRegularFile {
            path: path.to_path_buf(),
        });
    }
    Ok(f)
}

/// Refuses a bundle path whose directories are symlinks (which could point outside).
fn check_no_symlink_dirs(root: &Path, rel: &str) -> Result<(), BundleError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = Path::new(rel).components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        let meta = fs::symlink_metadata(&cur).map_err(io_err(&cur))?;
        if !meta.is_dir() {
            return Err(BundleError::NotRegularFile { path: cur });
        }
    }
    Ok(())
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path, limit: u64) -> Result<[u8; 32], BundleError> {
    let mut f = open_regular(path)?.take(limit + 1);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > limit {
            return Err(BundleError::TooLarge {
                path: path.to_path_buf(),
                limit,
            });
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

impl Bundle {
    /// Opens and fully verifies the bundle in `dir`.
    pub fn open(dir: &Path) -> Result<Self, BundleError> {
        let manifest_bytes = read_limited(&dir.join(MANIFEST_FILE), MAX_MANIFEST_BYTES)?;
        let manifest = Manifest::parse(&manifest_bytes)?;
        for f in &manifest.files {
            check_no_symlink_dirs(dir, &f.path)?;
            let actual = hex::encode(sha256_file(&dir.join(&f.path), MAX_FILE_BYTES)?);
            if actual != f.sha256 {
                return Err(BundleError::HashMismatch {
                    path: f.path.clone(),
                    expected: f.sha256.clone(),
                    actual,
                });
            }
        }
        let (mr_enclave, mr_signer, kind) = match &manifest.gramine {
            None => {
                let mr_enclave = measure_manifest(&manifest_bytes);
                let sig = read_limited(&dir.join(SIGNATURE_FILE), SIG_LEN as u64)?;
                (
                    mr_enclave,
                    verify_signature(&sig, &mr_enclave)?,
                    BundleKind::Sim,
                )
            }
            Some(g) => {
                let raw = read_limited(&dir.join(&g.sigstruct), dc_tee::sigstruct::LEN as u64)?;
                // The hash loop above read the file once; this is a second read, so the bytes
                // parsed are checked against the listing again (the file may have changed).
                let listed = manifest
                    .files
                    .iter()
                    .find(|f| f.path == g.sigstruct)
                    .ok_or_else(|| {
                        BundleError::Manifest(format!("{} is not a listed file", g.sigstruct))
                    })?;
                let actual = hex::encode(Sha256::digest(&raw));
                if actual != listed.sha256 {
                    return Err(BundleError::HashMismatch {
                        path: g.sigstruct.clone(),
                        expected: listed.sha256.clone(),
                        actual,
                    });
                }
                let sig = dc_tee::sigstruct::Sigstruct::parse(&raw)
                    .map_err(|e| BundleError::Signature(format!("{}: {e}", g.sigstruct)))?;
                if sig.isv_prod_id != manifest.isv_prod_id
                    || sig.isv_svn != manifest.isv_svn
                    || sig.allows_debug() != manifest.debug
                {
                    return Err(BundleError::Manifest(format!(
                        "the SIGSTRUCT says ISVPRODID {} ISVSVN {} debug {}, the manifest {} {} {}",
                        sig.isv_prod_id,
                        sig.isv_svn,
                        sig.allows_debug(),
                        manifest.isv_prod_id,
                        manifest.isv_svn,
                        manifest.debug
                    )));
                }
                (
                    sig.enclave_hash,
                    sig.mr_signer(),
                    BundleKind::Gramine(Box::new(sig)),
                )
            }
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            manifest_bytes,
            mr_enclave,
            mr_signer,
            kind,
        })
    }

    /// The files a copy or an archive of this bundle consists of.
    pub fn file_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = vec![MANIFEST_FILE];
        if self.kind == BundleKind::Sim {
            names.push(SIGNATURE_FILE);
        }
        names.extend(self.manifest.files.iter().map(|f| f.path.as_str()));
        names
    }

    pub fn entrypoint(&self) -> PathBuf {
        self.dir.join(&self.manifest.entrypoint)
    }

    /// Copies the bundle's manifest, signature and listed files (nothing else) to `dest`,
    /// then verifies the copy. Used by the platform so that what it measured is what it runs.
    pub fn copy_verified(&self, dest: &Path) -> Result<Bundle, BundleError> {
        fs::create_dir_all(dest).map_err(io_err(dest))?;
        for rel in self.file_names() {
            let to = dest.join(rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            check_no_symlink_dirs(&self.dir, rel)?;
            let mut src = open_regular(&self.dir.join(rel))?;
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if rel == self.manifest.entrypoint {
                    0o700
                } else {
                    0o600
                })
                .open(&to)
                .map_err(io_err(&to))?;
            let copied = std::io::copy(&mut (&mut src).take(MAX_FILE_BYTES + 1), &mut out)
                .map_err(io_err(&to))?;
            if copied > MAX_FILE_BYTES {
                return Err(BundleError::TooLarge {
                    path: self.dir.join(rel),
                    limit: MAX_FILE_BYTES,
                });
            }
        }
        let copy = Bundle::open(dest)?;
        // The whole identity, not only the measurement: the copy is what runs, so every
        // check made on the source (its kind above all) must hold for the copy unchanged.
        if copy.mr_enclave != self.mr_enclave
            || copy.mr_signer != self.mr_signer
            || copy.kind != self.kind
            || copy.manifest_bytes != self.manifest_bytes
        {
            return Err(BundleError::Manifest(
                "the bundle changed while it was being copied".into(),
            ));
        }
        Ok(copy)
    }
}

/// Parses command-line file arguments `SOURCE=PATH_IN_BUNDLE`.
pub fn parse_file_args(files: &[String]) -> Result<Vec<(PathBuf, String)>, BundleError> {
    files
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(src, rel)| (PathBuf::from(src), rel.to_string()))
                .ok_or_else(|| {
                    BundleError::Manifest(format!(
                        "file argument {f:?} must be SOURCE=PATH_IN_BUNDLE"
                    ))
                })
        })
        .collect()
}

/// The command-line arguments that describe a new bundle, shared by every tool that builds
/// one (`dctee-sim bundle`, `dcrelease bundle`); trust roots come separately.
#[cfg(feature = "cli")]
#[derive(clap::Args, Clone, Debug)]
pub struct BundleArgs {
    /// Enclave signer key file.
    #[arg(long)]
    pub signer: PathBuf,
    /// Bundle directory to create.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub version: String,
    #[arg(long, default_value_t = 1)]
    pub isv_prod_id: u16,
    #[arg(long, default_value_t = 1)]
    pub isv_svn: u16,
    #[arg(long)]
    pub debug: bool,
    /// Path inside the bundle of the program to run.
    #[arg(long)]
    pub entrypoint: String,
    /// A measured argument (repeatable).
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// An environment variable the launcher may set (repeatable).
    #[arg(long = "env-passthrough")]
    pub env_passthrough: Vec<String>,
    /// SOURCE=PATH_IN_BUNDLE (repeatable).
    #[arg(required = true)]
    pub files: Vec<String>,
}

#[cfg(feature = "cli")]
impl BundleArgs {
    /// Builds and signs the bundle these arguments describe, with `trust` as its trust roots.
    pub fn build(&self, trust: TrustRoots) -> Result<Bundle, BundleError> {
        let spec = BundleSpec {
            name: self.name.clone(),
            version: self.version.clone(),
            isv_prod_id: self.isv_prod_id,
            isv_svn: self.isv_svn,
            debug: self.debug,
            entrypoint: self.entrypoint.clone(),
            args: self.args.clone(),
            env_passthrough: self.env_passthrough.clone(),
            trust,
        };
        build(
            &self.out,
            &spec,
            &parse_file_args(&self.files)?,
            &SignerKey::load(&self.signer)?,
        )
    }
}

/// What a new bundle should say (everything but the file hashes, which are computed).
#[derive(Clone, Debug)]
pub struct BundleSpec {
    pub name: String,
    pub version: String,
    pub isv_prod_id: u16,
    pub isv_svn: u16,
    pub debug: bool,
    pub entrypoint: String,
    pub args: Vec<String>,
    pub env_passthrough: Vec<String>,
    pub trust: TrustRoots,
}

/// Builds a signed bundle in `out` (which must not exist) from `files`: (source, path in bundle).
pub fn build(
    out: &Path,
    spec: &BundleSpec,
    files: &[(PathBuf, String)],
    signer: &SignerKey,
) -> Result<Bundle, BundleError> {
    fs::create_dir(out).map_err(io_err(out))?;
    let mut entries = Vec::with_capacity(files.len());
    for (src, rel) in files {
        check_relative_path(rel)?;
        let to = out.join(rel);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        fs::copy(src, &to).map_err(io_err(src))?;
        let mode = if *rel == spec.entrypoint {
            0o755
        } else {
            0o644
        };
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).map_err(io_err(&to))?;
        entries.push(FileEntry {
            path: rel.clone(),
            sha256: hex::encode(sha256_file(&to, MAX_FILE_BYTES)?),
        });
    }
    let manifest = Manifest {
        name: spec.name.clone(),
        version: spec.version.clone(),
        isv_prod_id: spec.isv_prod_id,
        isv_svn: spec.isv_svn,
        debug: spec.debug,
        entrypoint: spec.entrypoint.clone(),
        args: spec.args.clone(),
        env_passthrough: spec.env_passthrough.clone(),
        trust: spec.trust.clone(),
        gramine: None,
        files: entries,
    };
    manifest.validate()?;
    let text = toml::to_string(&manifest).map_err(|e| BundleError::Manifest(e.to_string()))?;
    let mpath = out.join(MANIFEST_FILE);
    fs::write(&mpath, text.as_bytes()).map_err(io_err(&mpath))?;
    let spath = out.join(SIGNATURE_FILE);
    fs::write(&spath, signer.sign_manifest(text.as_bytes())).map_err(io_err(&spath))?;
    Bundle::open(out)
}

#[cfg(test)]
mod tests;

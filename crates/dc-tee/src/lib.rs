//! `dc-tee`: the trusted-execution layer of dcupgrade.
//!
//! - [`sgx`]: SGX REPORT, TARGETINFO and KEYREQUEST with byte-exact layouts.
//! - [`mac`]: the report MAC (AES-128-CMAC over bytes 0..384), checked in constant time.
//! - [`seal`]: sealed blobs that record their full KEYREQUEST and so survive CPUSVN increases.
//! - [`sigstruct`]: SIGSTRUCT parsing (a Gramine bundle's `.sig`: MRENCLAVE, MRSIGNER).
//! - [`Tee`]: what an enclave asks of its CPU; backends: [`gramine`] (SGX, ENCLU inside
//!   Gramine) and [`sim`] (the software platform). [`open`] picks one at run time.
//!
//! This crate does no async I/O and knows nothing about handovers, releases or HTTP.

pub mod gramine;
pub mod mac;
pub mod seal;
pub mod sgx;
pub mod sigstruct;
pub mod sim;
mod tee;

pub use seal::{SealPolicy, SealedBlob};
pub use sgx::{
    Attributes, CpuSvn, EnclaveIdentity, KeyId, KeyRequest, Measurement, Report, ReportData,
    TargetInfo,
};
pub use tee::{Tee, TeeError, VerifiedReport};

use zeroize::Zeroizing;

/// A 128-bit key as EGETKEY returns it. Zeroized on drop; its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct Key128(Zeroizing<[u8; 16]>);

impl Key128 {
    pub fn new(bytes: [u8; 16]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes, for feeding a cipher. Never log them.
    pub fn expose(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Debug for Key128 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key128(<redacted>)")
    }
}

/// A TEE chosen at run time, and the enclave's measured configuration (its `enclave.toml`,
/// where the trust roots are).
pub struct Opened {
    pub tee: std::sync::Arc<dyn Tee>,
    pub measured_config: Vec<u8>,
    pub backend: &'static str,
}

/// Environment variable (set in the Gramine manifest's measured `loader.env`) naming the
/// enclave's configuration file, which must be a Gramine *trusted file* so that its hash is
/// part of MRENCLAVE.
pub const MEASURED_CONFIG_ENV: &str = "DC_MEASURED_CONFIG";

/// Picks the backend: Gramine-SGX when `/dev/attestation` exists, the software platform when
/// this process was launched by `dctee-sim`; `DC_TEE=sgx|sim` forces one.
pub fn open() -> Result<Opened, TeeError> {
    let forced = std::env::var("DC_TEE").ok();
    let sgx_here = std::path::Path::new(gramine::ATTESTATION_DIR)
        .join("my_target_info")
        .exists();
    match forced.as_deref() {
        Some("sgx") => open_sgx(),
        Some("sim") => open_sim(),
        Some(other) => Err(TeeError::Unavailable(format!(
            "DC_TEE={other:?}: expected sgx or sim"
        ))),
        None if sgx_here => open_sgx(),
        None => open_sim(),
    }
}

fn open_sgx() -> Result<Opened, TeeError> {
    let tee = gramine::SgxTee::open()?;
    let path = std::env::var(MEASURED_CONFIG_ENV).map_err(|_| {
        TeeError::Unavailable(format!(
            "{MEASURED_CONFIG_ENV} is not set in the Gramine manifest's loader.env"
        ))
    })?;
    let measured_config = read_limited(std::path::Path::new(&path), 64 * 1024)
        .map_err(|e| TeeError::Unavailable(format!("{path}: {e}")))?;
    Ok(Opened {
        tee: std::sync::Arc::new(tee),
        measured_config,
        backend: "sgx",
    })
}

fn open_sim() -> Result<Opened, TeeError> {
    let tee = sim::SimTee::from_env()?;
    let measured_config = tee.measured_manifest()?;
    Ok(Opened {
        tee: std::sync::Arc::new(tee),
        measured_config,
        backend: "sim",
    })
}

/// Reads a regular file of at most `limit` bytes; a larger one is an `InvalidData` error,
/// never a large allocation, and anything but a regular file (FIFO, device, directory) is an
/// `InvalidInput` error. Every file the host can write (records, journals, sealed blobs,
/// configuration) is read through this.
pub fn read_limited(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO the host put where a record belongs must not block open(2) forever;
    // the type is then checked on the opened file itself, so it cannot be swapped after.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let mut b = Vec::new();
    f.take(limit + 1).read_to_end(&mut b)?;
    if b.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(b)
}

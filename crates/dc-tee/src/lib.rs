//! `dc-tee`: the trusted-execution layer of dcupgrade.
//!
//! - [`sgx`]: SGX REPORT, TARGETINFO and KEYREQUEST with byte-exact layouts.
//! - [`mac`]: the report MAC (AES-128-CMAC over bytes 0..384), checked in constant time.
//! - [`seal`]: sealed blobs that record their full KEYREQUEST and so survive CPUSVN increases.
//! - [`Tee`]: what an enclave asks of its CPU; backends: [`sim`] (the software platform).
//!
//! This crate does no async I/O and knows nothing about handovers, releases or HTTP.

pub mod mac;
pub mod seal;
pub mod sgx;
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

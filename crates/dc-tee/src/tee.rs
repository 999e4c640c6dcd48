//! The `Tee` trait: the three things an enclave asks its CPU for, and everything built on them.

use crate::mac::report_mac_matches;
use crate::seal::{self, SealPolicy, SealedBlob};
use crate::sgx::{
    EgetkeyError, EnclaveIdentity, KeyRequest, LayoutError, Report, ReportData, TargetInfo,
};
use crate::Key128;
use zeroize::Zeroizing;

/// Errors of a TEE backend.
#[derive(Debug, thiserror::Error)]
pub enum TeeError {
    #[error(transparent)]
    Egetkey(#[from] EgetkeyError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("report MAC does not verify: the report was not made for this enclave, comes from another platform or boot, or was altered")]
    ReportMac,
    #[error("the TEE platform is unreachable: {0}; check that the enclave was started by the platform (dctee-sim launch or gramine-sgx)")]
    Unavailable(String),
    #[error("the TEE platform answered with a malformed message: {0}")]
    Protocol(String),
    #[error("the TEE platform refused the request: {0}")]
    Refused(String),
    #[error(transparent)]
    Seal(#[from] seal::SealError),
}

/// A report whose MAC this enclave has checked: it was made by an enclave on this platform,
/// for this enclave, and says what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReport {
    pub identity: EnclaveIdentity,
    pub report_data: ReportData,
    pub report: Report,
}

/// An enclave's view of its trusted hardware.
///
/// Backends implement the three primitives (the equivalents of reading own TARGETINFO,
/// EREPORT and EGETKEY); report verification and sealing are provided on top so that every
/// backend shares the same MAC and sealing code.
pub trait Tee: Send + Sync {
    /// This enclave's own TARGETINFO.
    fn target_info(&self) -> Result<TargetInfo, TeeError>;

    /// EREPORT: a report of this enclave for `target`, binding `report_data`.
    fn report(&self, target: &TargetInfo, report_data: &ReportData) -> Result<Report, TeeError>;

    /// EGETKEY for this enclave.
    fn get_key(&self, request: &KeyRequest) -> Result<Key128, TeeError>;

    /// This enclave's identity as the platform reports it.
    fn identity(&self) -> Result<EnclaveIdentity, TeeError> {
        Ok(self.self_report()?.identity())
    }

    /// A report of this enclave for itself (its CPUSVN is the platform's current one).
    fn self_report(&self) -> Result<Report, TeeError> {
        let me = self.target_info()?;
        self.report(&me, &ReportData::ZERO)
    }

    /// Checks that `report` was made for this enclave by an enclave on this platform.
    fn verify_report(&self, report: &Report) -> Result<VerifiedReport, TeeError> {
        let key = self.get_key(&KeyRequest::report_key(report.key_id))?;
        if !report_mac_matches(&key, report) {
            return Err(TeeError::ReportMac);
        }
        Ok(VerifiedReport {
            identity: report.identity(),
            report_data: report.report_data,
            report: report.clone(),
        })
    }

    /// Parses and verifies a report received as bytes.
    fn verify_report_bytes(&self, bytes: &[u8]) -> Result<VerifiedReport, TeeError> {
        self.verify_report(&Report::from_bytes(bytes)?)
    }

    /// Seals `plaintext` to this enclave under `policy`; `aad` must be given again to unseal.
    fn seal(
        &self,
        policy: SealPolicy,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<SealedBlob, TeeError> {
        let me = self.self_report()?;
        let request = seal::seal_key_request(policy, &me, random_key_id()?);
        let key = self.get_key(&request)?;
        Ok(seal::seal_with_key(&request, &key, aad, plaintext)?)
    }

    /// Unseals a blob made by [`Tee::seal`] under `policy`. Never deletes or modifies anything:
    /// a blob that does not open stays where it is, and the error says why.
    ///
    /// The KEYREQUEST in the header must be exactly one [`Tee::seal`] writes for `policy` in
    /// this enclave ([`seal::check_key_request`]) before EGETKEY sees it: otherwise another
    /// enclave could derive a weaker key it also knows and plant a blob that opens here.
    fn unseal(
        &self,
        policy: SealPolicy,
        blob: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TeeError> {
        let parsed = seal::parse(blob)?;
        let me = self.self_report()?;
        seal::check_key_request(policy, &parsed.key_request, me.isv_svn)?;
        let key = self.get_key(&parsed.key_request)?;
        Ok(seal::open_with_key(&parsed, &key, aad)?)
    }
}

fn random_key_id() -> Result<crate::sgx::KeyId, TeeError> {
    let mut id = [0u8; 32];
    getrandom::getrandom(&mut id)
        .map_err(|e| TeeError::Unavailable(format!("no randomness: {e}")))?;
    Ok(crate::sgx::KeyId(id))
}

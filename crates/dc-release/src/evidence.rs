//! Release evidence: what an enclave presents (in a handover, bound into the attested
//! transcript) to prove which release an enclave identity is.
//!
//! Two forms, both checked against the committee in the verifier's *measured* trust roots:
//! - a committee-signed [`SignedRecord`] (JSON, as in the local feed): product, role,
//!   version, MRENCLAVE and ISVSVN are all signed;
//! - `{"legacy": {...}}`: DCChain's `EnclaveIds` signatures over the EnclaveID text, plus the
//!   enclave's measured manifest (`enclave.toml`). The signatures cover only the EnclaveID;
//!   the version, ISVSVN and product are authenticated because, on the software platform, the
//!   MRENCLAVE *is* the measurement of that manifest. A Gramine bundle's MRENCLAVE is not, so
//!   its releases need a signed record.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dc_handover::{Destination, Version};
use dc_tee::Measurement;
use serde::{Deserialize, Serialize};

use crate::record::{Role, SignedRecord, MAX_RECORD_BYTES};
use crate::{Committee, ReleaseError};

/// Largest manifest carried in legacy evidence (as `Bundle::open` allows).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Largest evidence of any form.
pub const MAX_EVIDENCE_BYTES: usize = MAX_RECORD_BYTES;
/// Signatures carried in legacy evidence.
pub const MAX_LEGACY_SIGNATURES: usize = 64;

/// DCChain-style authorization of a software-platform node release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyEvidence {
    /// The EnclaveID as the chain writes it: 64 lowercase hex characters.
    pub enclave_id: String,
    /// `EnclaveIds` signatures over `enclave_id` (multibase text), by committee keys.
    pub signatures: Vec<String>,
    /// The enclave's measured manifest, standard base64.
    pub manifest: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyWrapper {
    legacy: LegacyEvidence,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseEvidence {
    Record(SignedRecord),
    Legacy(LegacyEvidence),
}

/// Evidence that passed the committee check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRelease {
    pub product: String,
    pub role: Role,
    pub version: Version,
    pub mr_enclave: Measurement,
    pub isv_svn: u16,
    /// From the measured manifest (legacy form only; a signed record says nothing of it).
    pub debug: Option<bool>,
}

impl VerifiedRelease {
    pub fn destination(&self) -> Destination {
        Destination {
            mr_enclave: self.mr_enclave,
            version: self.version,
            isv_svn: self.isv_svn,
        }
    }
}

fn invalid(s: impl Into<String>) -> ReleaseError {
    ReleaseError::Invalid(s.into())
}

impl ReleaseEvidence {
    /// Legacy evidence for a software-platform bundle's manifest and its chain signatures.
    pub fn legacy(mr_enclave: &Measurement, signatures: Vec<String>, manifest: &[u8]) -> Self {
        Self::Legacy(LegacyEvidence {
            enclave_id: mr_enclave.to_string(),
            signatures,
            manifest: STANDARD.encode(manifest),
        })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ReleaseError> {
        if bytes.len() > MAX_EVIDENCE_BYTES {
            return Err(invalid(format!(
                "release evidence is larger than {MAX_EVIDENCE_BYTES} bytes"
            )));
        }
        let record_error = match SignedRecord::parse(bytes) {
            Ok(r) => return Ok(Self::Record(r)),
            Err(e) => e,
        };
        match serde_json::from_slice::<LegacyWrapper>(bytes) {
            Ok(w) => {
                if w.legacy.signatures.len() > MAX_LEGACY_SIGNATURES {
                    return Err(invalid("legacy evidence carries too many signatures"));
                }
                Ok(Self::Legacy(w.legacy))
            }
            Err(e) => Err(invalid(format!(
                "release evidence is neither a signed record ({record_error}) nor legacy chain evidence ({e})"
            ))),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        match self {
            Self::Record(r) => r.to_json(),
            Self::Legacy(l) => {
                serde_json::to_vec_pretty(&LegacyWrapper { legacy: l.clone() }).expect("serializes")
            }
        }
    }

    /// Checks the evidence against `committee` (and a record's expiry against `now_secs`).
    pub fn verify(
        &self,
        committee: &Committee,
        now_secs: u64,
    ) -> Result<VerifiedRelease, ReleaseError> {
        match self {
            Self::Record(r) => {
                let v = r.verify(committee, now_secs)?;
                Ok(VerifiedRelease {
                    product: v.record.product.clone(),
                    role: v.record.role,
                    version: v.version,
                    mr_enclave: v.mr_enclave,
                    isv_svn: v.record.isv_svn,
                    debug: None,
                })
            }
            Self::Legacy(l) => {
                let manifest_bytes = STANDARD
                    .decode(&l.manifest)
                    .map_err(|e| invalid(format!("legacy evidence manifest: {e}")))?;
                if manifest_bytes.len() > MAX_MANIFEST_BYTES {
                    return Err(invalid("legacy evidence manifest is too large"));
                }
                let (m, _) = crate::legacy::authorize(
                    committee,
                    l.enclave_id.as_bytes(),
                    l.signatures
                        .iter()
                        .map(|s| (l.enclave_id.as_bytes(), s.as_bytes())),
                )?;
                let measured = dc_bundle::measure_manifest(&manifest_bytes);
                if measured != m {
                    return Err(invalid(format!(
                        "the manifest measures {measured}, not the signed EnclaveID {m} (only software-platform bundles can use legacy evidence)"
                    )));
                }
                let manifest = dc_bundle::Manifest::parse(&manifest_bytes)
                    .map_err(|e| invalid(format!("legacy evidence manifest: {e}")))?;
                if manifest.gramine.is_some() {
                    return Err(invalid(
                        "a Gramine bundle's identity is not its manifest's measurement; it needs a signed record",
                    ));
                }
                let version: Version = manifest.version.parse().map_err(invalid)?;
                Ok(VerifiedRelease {
                    product: manifest.name,
                    role: Role::Node,
                    version,
                    mr_enclave: m,
                    isv_svn: manifest.isv_svn,
                    debug: Some(manifest.debug),
                })
            }
        }
    }
}

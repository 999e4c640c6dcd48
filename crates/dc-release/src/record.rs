//! Release records.
//!
//! JSON on disk and on the wire; signatures are over canonical bytes, never over JSON text:
//! ```text
//! "dc-release/record/v1\0" | var(product) | role u8 (1 node, 2 upgrader) | var(version)
//!   | mr_enclave (32) | isv_svn u16
//!   | artifact?  u8 0 | u8 1, sha256 (32), size u64, url count u8, var(url)…
//!   | expires_at? u8 0 | u8 1, u64 (Unix seconds)
//! ```
//! (`var(x)` = u32 length ‖ x; integers little-endian.)

use dc_handover::Version;
use dc_tee::Measurement;
use serde::{Deserialize, Serialize};

use crate::committee::{Committee, CommitteeKey, CommitteeSigner};
use crate::{multibase, ReleaseError};

pub const MAX_RECORD_BYTES: usize = 16 * 1024;
pub const MAX_SIGNATURES: usize = 64;
pub const MAX_URLS: usize = 4;
pub const MAX_ARTIFACT_BYTES: u64 = 2 << 30;
const DOMAIN: &[u8] = b"dc-release/record/v1\0";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A DC node release: receives keys, serves data.
    Node,
    /// The upgrade agent: holds keys in transit between node versions.
    Upgrader,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// SHA-256 of the bundle archive, hex.
    pub sha256: String,
    /// Exact size in bytes; downloads stop beyond it.
    pub size: u64,
    /// Origin first, then mirrors (`http://` or `file://`).
    pub urls: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRecord {
    pub product: String,
    pub role: Role,
    pub version: String,
    /// MRENCLAVE, 64 lowercase hex characters (the EnclaveID).
    pub mr_enclave: String,
    pub isv_svn: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSignature {
    /// The committee member's public key, multibase.
    pub key: String,
    /// Ed25519 signature over the record's signing bytes, multibase.
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRecord {
    pub record: ReleaseRecord,
    pub signatures: Vec<RecordSignature>,
}

/// A record that passed validation and the committee threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRecord {
    pub record: ReleaseRecord,
    pub version: Version,
    pub mr_enclave: Measurement,
    pub artifact_sha256: Option<[u8; 32]>,
}

fn invalid(s: impl Into<String>) -> ReleaseError {
    ReleaseError::Invalid(s.into())
}

fn var(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

impl ReleaseRecord {
    /// Checks every field; returns the parsed version and measurement.
    pub fn validate(&self) -> Result<(Version, Measurement), ReleaseError> {
        let p = &self.product;
        if p.is_empty()
            || p.len() > 64
            || !p
                .bytes()
                .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        {
            return Err(invalid(format!("product {p:?} must be 1-64 of [a-z0-9-]")));
        }
        let version: Version = self.version.parse().map_err(invalid)?;
        if self.mr_enclave.len() != 64
            || !self
                .mr_enclave
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid("mr_enclave must be 64 lowercase hex characters"));
        }
        let m = Measurement::from_hex(&self.mr_enclave).map_err(|e| invalid(e.to_string()))?;
        match (&self.artifact, self.role) {
            (None, Role::Node) => return Err(invalid("a node release must name its artifact")),
            (Some(a), _) => {
                if a.sha256.len() != 64
                    || !a
                        .sha256
                        .bytes()
                        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
                {
                    return Err(invalid(
                        "artifact.sha256 must be 64 lowercase hex characters",
                    ));
                }
                if a.size == 0 || a.size > MAX_ARTIFACT_BYTES {
                    return Err(invalid(format!(
                        "artifact.size must be 1..={MAX_ARTIFACT_BYTES}"
                    )));
                }
                if a.urls.is_empty() || a.urls.len() > MAX_URLS {
                    return Err(invalid(format!(
                        "artifact.urls must list 1 to {MAX_URLS} URLs"
                    )));
                }
                for u in &a.urls {
                    if u.len() > 2048
                        || !(u.starts_with("http://")
                            || u.starts_with("https://")
                            || u.starts_with("file:///"))
                    {
                        return Err(invalid(format!(
                            "artifact URL {u:?} must be http(s):// or file:///, at most 2048 bytes"
                        )));
                    }
                }
            }
            (None, Role::Upgrader) => {}
        }
        Ok((version, m))
    }

    /// The canonical bytes committee members sign.
    pub fn signing_bytes(&self) -> Result<Vec<u8>, ReleaseError> {
        let (_, m) = self.validate()?;
        let mut o = Vec::with_capacity(256);
        o.extend_from_slice(DOMAIN);
        var(&mut o, self.product.as_bytes());
        o.push(match self.role {
            Role::Node => 1,
            Role::Upgrader => 2,
        });
        var(&mut o, self.version.as_bytes());
        o.extend_from_slice(&m.0);
        o.extend_from_slice(&self.isv_svn.to_le_bytes());
        match &self.artifact {
            None => o.push(0),
            Some(a) => {
                o.push(1);
                let mut sha = [0u8; 32];
                hex::decode_to_slice(&a.sha256, &mut sha)
                    .map_err(|_| invalid("artifact.sha256"))?;
                o.extend_from_slice(&sha);
                o.extend_from_slice(&a.size.to_le_bytes());
                o.push(a.urls.len() as u8);
                for u in &a.urls {
                    var(&mut o, u.as_bytes());
                }
            }
        }
        match self.expires_at {
            None => o.push(0),
            Some(t) => {
                o.push(1);
                o.extend_from_slice(&t.to_le_bytes());
            }
        }
        Ok(o)
    }
}

/// Adds (or replaces) `signer`'s signature over `msg` to a list of committee signatures.
pub(crate) fn add_signature(
    signatures: &mut Vec<RecordSignature>,
    signer: &CommitteeSigner,
    msg: &[u8],
) {
    let key = signer.public().to_text();
    signatures.retain(|s| s.key != key);
    signatures.push(RecordSignature {
        key,
        signature: multibase::encode(&signer.sign(msg)),
    });
}

/// Checks a list of committee signatures over `msg` against the committee threshold;
/// unparsable entries count for nothing.
pub(crate) fn check_signatures(
    committee: &Committee,
    msg: &[u8],
    signatures: &[RecordSignature],
) -> Result<(), ReleaseError> {
    let decoded: Vec<(CommitteeKey, Vec<u8>)> = signatures
        .iter()
        .take(MAX_SIGNATURES)
        .filter_map(|s| {
            Some((
                CommitteeKey::parse(&s.key).ok()?,
                multibase::decode(&s.signature).ok()?,
            ))
        })
        .collect();
    committee.check(msg, decoded.iter().map(|(k, s)| (k, s.as_slice())))
}

impl SignedRecord {
    pub fn unsigned(record: ReleaseRecord) -> Self {
        Self {
            record,
            signatures: vec![],
        }
    }

    /// Parses JSON with a size limit.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReleaseError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(invalid(format!("larger than {MAX_RECORD_BYTES} bytes")));
        }
        let s: Self = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if s.signatures.len() > MAX_SIGNATURES {
            return Err(invalid(format!("more than {MAX_SIGNATURES} signatures")));
        }
        s.record.validate()?;
        Ok(s)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("records serialize")
    }

    /// Adds (or replaces) the signature of `signer`.
    pub fn sign(&mut self, signer: &CommitteeSigner) -> Result<(), ReleaseError> {
        add_signature(&mut self.signatures, signer, &self.record.signing_bytes()?);
        Ok(())
    }

    /// Validates the record and checks the committee threshold and expiry.
    pub fn verify(
        &self,
        committee: &Committee,
        now_secs: u64,
    ) -> Result<VerifiedRecord, ReleaseError> {
        let (version, mr_enclave) = self.record.validate()?;
        check_signatures(committee, &self.record.signing_bytes()?, &self.signatures)?;
        if let Some(t) = self.record.expires_at {
            if now_secs >= t {
                return Err(ReleaseError::Expired {
                    expires_at: t,
                    now: now_secs,
                });
            }
        }
        let artifact_sha256 = match &self.record.artifact {
            Some(a) => {
                let mut d = [0u8; 32];
                hex::decode_to_slice(&a.sha256, &mut d).map_err(|_| invalid("artifact.sha256"))?;
                Some(d)
            }
            None => None,
        };
        Ok(VerifiedRecord {
            record: self.record.clone(),
            version,
            mr_enclave,
            artifact_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record() -> ReleaseRecord {
        ReleaseRecord {
            product: "dcnode".into(),
            role: Role::Node,
            version: "1.2.3".into(),
            mr_enclave: "ab".repeat(32),
            isv_svn: 2,
            artifact: Some(Artifact {
                sha256: "cd".repeat(32),
                size: 1000,
                urls: vec![
                    "file:///tmp/a.tar".into(),
                    "http://127.0.0.1:1/a.tar".into(),
                ],
            }),
            expires_at: None,
        }
    }

    fn signers(n: u8) -> Vec<CommitteeSigner> {
        (1..=n)
            .map(|i| CommitteeSigner::from_seed([i; 32]))
            .collect()
    }

    #[test]
    fn threshold_counts_distinct_committee_keys_only() {
        let s = signers(4);
        let committee = Committee::new(s[..3].iter().map(|k| k.public()), 2).unwrap();
        let mut r = SignedRecord::unsigned(record());
        r.sign(&s[0]).unwrap();
        assert!(matches!(
            r.verify(&committee, 0),
            Err(ReleaseError::Threshold {
                valid: 1,
                threshold: 2
            })
        ));
        // The same signature again does not count twice.
        r.signatures.push(r.signatures[0].clone());
        assert!(matches!(
            r.verify(&committee, 0),
            Err(ReleaseError::Threshold { valid: 1, .. })
        ));
        // A non-member's signature does not count.
        r.sign(&s[3]).unwrap();
        assert!(r.verify(&committee, 0).is_err());
        r.sign(&s[1]).unwrap();
        let v = r.verify(&committee, 0).unwrap();
        assert_eq!(v.version, Version::new(1, 2, 3));
        assert_eq!(v.artifact_sha256, Some([0xcd; 32]));
    }

    #[test]
    fn any_change_to_a_signed_field_breaks_the_signature() {
        let s = signers(1);
        let committee = Committee::new([s[0].public()], 1).unwrap();
        let mut r = SignedRecord::unsigned(record());
        r.sign(&s[0]).unwrap();
        assert!(r.verify(&committee, 0).is_ok());
        type Edit = Box<dyn Fn(&mut ReleaseRecord)>;
        let edits: Vec<Edit> = vec![
            Box::new(|r| r.version = "1.2.4".into()),
            Box::new(|r| r.mr_enclave = "ac".repeat(32)),
            Box::new(|r| r.isv_svn = 3),
            Box::new(|r| r.role = Role::Upgrader),
            Box::new(|r| r.product = "other".into()),
            Box::new(|r| r.artifact.as_mut().unwrap().urls.reverse()),
            Box::new(|r| r.artifact.as_mut().unwrap().size = 1001),
            Box::new(|r| r.expires_at = Some(5)),
        ];
        for (i, e) in edits.iter().enumerate() {
            let mut t = r.clone();
            e(&mut t.record);
            assert!(t.verify(&committee, 0).is_err(), "edit {i}");
        }
    }

    #[test]
    fn invalid_records_and_expiry_are_refused() {
        let s = CommitteeSigner::from_seed([1; 32]);
        let committee = Committee::new([s.public()], 1).unwrap();
        for bad in [
            ReleaseRecord {
                version: "1.2".into(),
                ..record()
            },
            ReleaseRecord {
                mr_enclave: "AB".repeat(32),
                ..record()
            },
            ReleaseRecord {
                artifact: None,
                ..record()
            },
            ReleaseRecord {
                product: "Bad".into(),
                ..record()
            },
        ] {
            assert!(SignedRecord::unsigned(bad).sign(&s).is_err());
        }
        let mut r = SignedRecord::unsigned(ReleaseRecord {
            expires_at: Some(100),
            ..record()
        });
        r.sign(&s).unwrap();
        assert!(r.verify(&committee, 99).is_ok());
        assert!(matches!(
            r.verify(&committee, 100),
            Err(ReleaseError::Expired { .. })
        ));
        assert!(SignedRecord::parse(&vec![b' '; MAX_RECORD_BYTES + 1]).is_err());
        assert!(SignedRecord::parse(b"{\"record\":1}").is_err());
        let json = r.to_json();
        assert_eq!(SignedRecord::parse(&json).unwrap(), r);
    }

    #[test]
    fn committee_configuration_is_checked() {
        let k = CommitteeSigner::from_seed([1; 32]).public();
        assert!(Committee::new([k], 0).is_err());
        assert!(Committee::new([k], 2).is_err());
        assert!(Committee::new([], 1).is_err());
        assert_eq!(CommitteeKey::parse(&k.to_text()).unwrap(), k);
        assert!(CommitteeKey::parse("bmzxw6ytboi").is_err());
    }
}

//! Committee-signed revocations: an EnclaveID that must never again receive keys or be
//! upgraded to. Signed over canonical bytes like records:
//! `"dc-release/revocation/v1\0" | mr_enclave (32) | var(reason)`.

use dc_tee::Measurement;
use serde::{Deserialize, Serialize};

use crate::committee::{Committee, CommitteeSigner};
use crate::record::{
    add_signature, check_signatures, RecordSignature, MAX_RECORD_BYTES, MAX_SIGNATURES,
};
use crate::ReleaseError;

const DOMAIN: &[u8] = b"dc-release/revocation/v1\0";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub mr_enclave: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRevocation {
    pub revocation: Revocation,
    pub signatures: Vec<RecordSignature>,
}

impl Revocation {
    fn signing_bytes(&self) -> Result<Vec<u8>, ReleaseError> {
        let m = crate::legacy::parse_enclave_id(self.mr_enclave.as_bytes())?;
        if self.reason.len() > 1024 {
            return Err(ReleaseError::Invalid(
                "revocation reason longer than 1024 bytes".into(),
            ));
        }
        let mut o = DOMAIN.to_vec();
        o.extend_from_slice(&m.0);
        o.extend_from_slice(&(self.reason.len() as u32).to_le_bytes());
        o.extend_from_slice(self.reason.as_bytes());
        Ok(o)
    }
}

impl SignedRevocation {
    pub fn new(mr_enclave: &Measurement, reason: &str) -> Self {
        Self {
            revocation: Revocation {
                mr_enclave: mr_enclave.to_string(),
                reason: reason.into(),
            },
            signatures: vec![],
        }
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ReleaseError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(ReleaseError::Invalid("revocation too large".into()));
        }
        let s: Self =
            serde_json::from_slice(bytes).map_err(|e| ReleaseError::Invalid(e.to_string()))?;
        if s.signatures.len() > MAX_SIGNATURES {
            return Err(ReleaseError::Invalid("too many signatures".into()));
        }
        Ok(s)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("serializes")
    }

    pub fn sign(&mut self, signer: &CommitteeSigner) -> Result<(), ReleaseError> {
        add_signature(
            &mut self.signatures,
            signer,
            &self.revocation.signing_bytes()?,
        );
        Ok(())
    }

    /// The revoked MRENCLAVE, if the committee threshold signed this.
    pub fn verify(&self, committee: &Committee) -> Result<Measurement, ReleaseError> {
        check_signatures(
            committee,
            &self.revocation.signing_bytes()?,
            &self.signatures,
        )?;
        crate::legacy::parse_enclave_id(self.revocation.mr_enclave.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_committee_signed_revocation_counts() {
        let s = CommitteeSigner::from_seed([1; 32]);
        let c = Committee::new([s.public()], 1).unwrap();
        let m = Measurement([9; 32]);
        let mut r = SignedRevocation::new(&m, "key leak in 1.2.0");
        assert!(r.verify(&c).is_err(), "unsigned");
        r.sign(&CommitteeSigner::from_seed([2; 32])).unwrap();
        assert!(r.verify(&c).is_err(), "foreign key");
        r.sign(&s).unwrap();
        assert_eq!(r.verify(&c).unwrap(), m);
        let mut altered = r.clone();
        altered.revocation.reason = "other".into();
        assert!(altered.verify(&c).is_err());
        assert_eq!(SignedRevocation::parse(&r.to_json()).unwrap(), r);
    }
}

//! The handover authorizer backed by committee-signed records.
//!
//! A peer proves what it is by presenting, as handover evidence, the committee-signed record
//! naming its own MRENCLAVE. The evidence is bound into the attested transcript; the committee
//! keys come from this enclave's measured manifest.

use std::collections::BTreeSet;

use dc_handover::{Authorizer, AuthzError, PeerRole};
use dc_tee::{EnclaveIdentity, Measurement};

use crate::record::{Role, SignedRecord};
use crate::Committee;

pub struct CommitteeAuthorizer {
    committee: Committee,
    /// The product a record of each role must name (node, upgrader), if pinned.
    products: Option<(String, String)>,
    /// EnclaveIDs revoked by the committee.
    revoked: BTreeSet<Measurement>,
    now_secs: fn() -> u64,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CommitteeAuthorizer {
    pub fn new(committee: Committee) -> Self {
        Self {
            committee,
            products: None,
            revoked: BTreeSet::new(),
            now_secs: unix_now,
        }
    }

    /// Requires node records to name `node` and upgrader records to name `upgrader` as their
    /// product, so a signed record of another product is not mistaken for ours.
    pub fn with_products(mut self, node: &str, upgrader: &str) -> Self {
        self.products = Some((node.into(), upgrader.into()));
        self
    }

    pub fn with_revoked(mut self, revoked: impl IntoIterator<Item = Measurement>) -> Self {
        self.revoked.extend(revoked);
        self
    }
}

impl Authorizer for CommitteeAuthorizer {
    fn authorize(&self, peer: &EnclaveIdentity, evidence: &[u8]) -> Result<PeerRole, AuthzError> {
        if self.revoked.contains(&peer.mr_enclave) {
            return Err(AuthzError::Revoked(peer.mr_enclave));
        }
        let bad = |reason: String| AuthzError::BadEvidence {
            mr_enclave: peer.mr_enclave,
            reason,
        };
        if evidence.is_empty() {
            return Err(AuthzError::NotAuthorized(peer.mr_enclave));
        }
        let signed = SignedRecord::parse(evidence).map_err(|e| bad(e.to_string()))?;
        let v = signed
            .verify(&self.committee, (self.now_secs)())
            .map_err(|e| bad(e.to_string()))?;
        if v.mr_enclave != peer.mr_enclave {
            return Err(bad(format!(
                "the record is for {}, not for this enclave",
                v.mr_enclave
            )));
        }
        if v.record.isv_svn != peer.isv_svn {
            return Err(bad(format!(
                "the record says ISVSVN {}, the enclave has {}",
                v.record.isv_svn, peer.isv_svn
            )));
        }
        if let Some((node, upgrader)) = &self.products {
            let want = match v.record.role {
                Role::Node => node,
                Role::Upgrader => upgrader,
            };
            if &v.record.product != want {
                return Err(bad(format!(
                    "the record is for product {:?}, expected {want:?}",
                    v.record.product
                )));
            }
        }
        Ok(match v.record.role {
            Role::Node => PeerRole::Node(v.version),
            Role::Upgrader => PeerRole::Upgrader,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committee::CommitteeSigner;
    use crate::record::{Artifact, ReleaseRecord};

    fn identity(mre: u8, svn: u16) -> EnclaveIdentity {
        let r = dc_tee::Report::from_bytes(&[0u8; 432]).unwrap();
        let mut id = r.identity();
        id.mr_enclave = Measurement([mre; 32]);
        id.isv_svn = svn;
        id
    }

    fn evidence(signer: &CommitteeSigner, mre: u8, svn: u16, role: Role) -> Vec<u8> {
        let mut r = SignedRecord::unsigned(ReleaseRecord {
            product: "dcnode".into(),
            role,
            version: "2.0.0".into(),
            mr_enclave: hex::encode([mre; 32]),
            isv_svn: svn,
            artifact: Some(Artifact {
                sha256: "00".repeat(32),
                size: 1,
                urls: vec!["file:///x".into()],
            }),
            expires_at: None,
        });
        r.sign(signer).unwrap();
        r.to_json()
    }

    #[test]
    fn evidence_must_be_signed_and_name_the_attested_enclave() {
        let s = CommitteeSigner::from_seed([1; 32]);
        let a = CommitteeAuthorizer::new(Committee::new([s.public()], 1).unwrap());
        assert_eq!(
            a.authorize(&identity(7, 2), &evidence(&s, 7, 2, Role::Node))
                .unwrap(),
            PeerRole::Node(dc_handover::Version::new(2, 0, 0))
        );
        assert_eq!(
            a.authorize(&identity(7, 2), &evidence(&s, 7, 2, Role::Upgrader))
                .unwrap(),
            PeerRole::Upgrader
        );
        // Someone else's record, a wrong ISVSVN, a foreign signer, nothing at all.
        assert!(matches!(
            a.authorize(&identity(8, 2), &evidence(&s, 7, 2, Role::Node)),
            Err(AuthzError::BadEvidence { .. })
        ));
        assert!(a
            .authorize(&identity(7, 3), &evidence(&s, 7, 2, Role::Node))
            .is_err());
        let rogue = CommitteeSigner::from_seed([2; 32]);
        assert!(a
            .authorize(&identity(7, 2), &evidence(&rogue, 7, 2, Role::Node))
            .is_err());
        assert!(matches!(
            a.authorize(&identity(7, 2), b""),
            Err(AuthzError::NotAuthorized(_))
        ));
        assert!(a.authorize(&identity(7, 2), b"garbage").is_err());
        // Pinned products: the test record says "dcnode" for both roles.
        let pinned = CommitteeAuthorizer::new(Committee::new([s.public()], 1).unwrap())
            .with_products("dcnode", "dcupgrade");
        assert!(pinned
            .authorize(&identity(7, 2), &evidence(&s, 7, 2, Role::Node))
            .is_ok());
        assert!(matches!(
            pinned.authorize(&identity(7, 2), &evidence(&s, 7, 2, Role::Upgrader)),
            Err(AuthzError::BadEvidence { .. })
        ));
        // Revoked.
        let a = a.with_revoked([Measurement([7; 32])]);
        assert!(matches!(
            a.authorize(&identity(7, 2), &evidence(&s, 7, 2, Role::Node)),
            Err(AuthzError::Revoked(_))
        ));
    }
}

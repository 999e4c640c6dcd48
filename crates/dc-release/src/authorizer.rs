//! The handover authorizer backed by committee-signed records.
//!
//! A peer proves what it is by presenting, as handover evidence, the committee-signed record
//! naming its own MRENCLAVE. The evidence is bound into the attested transcript; the committee
//! keys come from this enclave's measured manifest.

use std::collections::BTreeSet;

use dc_handover::{Authorizer, AuthzError, Destination, PeerRole};
use dc_tee::{EnclaveIdentity, Measurement};

use crate::evidence::{ReleaseEvidence, VerifiedRelease};
use crate::record::Role;
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

impl CommitteeAuthorizer {
    /// Parses and verifies evidence; checks revocation and the product pinned for its role.
    fn verified(&self, evidence: &[u8]) -> Result<VerifiedRelease, String> {
        let v = ReleaseEvidence::parse(evidence)
            .and_then(|e| e.verify(&self.committee, (self.now_secs)()))
            .map_err(|e| e.to_string())?;
        if let Some((node, upgrader)) = &self.products {
            let want = match v.role {
                Role::Node => node,
                Role::Upgrader => upgrader,
            };
            if &v.product != want {
                return Err(format!(
                    "the record is for product {:?}, expected {want:?}",
                    v.product
                ));
            }
        }
        Ok(v)
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
        let v = self.verified(evidence).map_err(bad)?;
        if v.mr_enclave != peer.mr_enclave {
            return Err(bad(format!(
                "the record is for {}, not for this enclave",
                v.mr_enclave
            )));
        }
        if v.isv_svn != peer.isv_svn {
            return Err(bad(format!(
                "the record says ISVSVN {}, the enclave has {}",
                v.isv_svn, peer.isv_svn
            )));
        }
        Ok(match v.role {
            Role::Node => PeerRole::Node(v.version),
            Role::Upgrader => PeerRole::Upgrader,
        })
    }

    /// A destination is a committee-signed *node* release (of the pinned product), not
    /// revoked. The holder applies its version and floor rules on top.
    fn authorize_destination(&self, evidence: &[u8]) -> Result<Destination, AuthzError> {
        let v = self
            .verified(evidence)
            .map_err(AuthzError::BadDestination)?;
        if v.role != Role::Node {
            return Err(AuthzError::BadDestination(format!(
                "{} is not a node release",
                v.mr_enclave
            )));
        }
        if v.debug == Some(true) {
            return Err(AuthzError::BadDestination(format!(
                "{} is a DEBUG build (its memory is readable by the host)",
                v.mr_enclave
            )));
        }
        if self.revoked.contains(&v.mr_enclave) {
            return Err(AuthzError::Revoked(v.mr_enclave));
        }
        Ok(v.destination())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committee::CommitteeSigner;
    use crate::record::{Artifact, ReleaseRecord, SignedRecord};

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

#[cfg(test)]
mod destination_tests {
    use super::*;
    use crate::committee::CommitteeSigner;
    use crate::record::{Artifact, ReleaseRecord, SignedRecord};

    fn record(signer: &CommitteeSigner, role: Role, product: &str) -> Vec<u8> {
        let mut r = SignedRecord::unsigned(ReleaseRecord {
            product: product.into(),
            role,
            version: "3.1.0".into(),
            mr_enclave: hex::encode([7; 32]),
            isv_svn: 3,
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

    fn manifest(version: &str, debug: bool) -> Vec<u8> {
        format!(
            "name = \"dcnode\"\nversion = \"{version}\"\nisv_prod_id = 1\nisv_svn = 4\ndebug = {debug}\nentrypoint = \"bin/dcnode\"\n\n[[files]]\npath = \"bin/dcnode\"\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        )
        .into_bytes()
    }

    #[test]
    fn a_destination_is_a_committee_signed_node_release() {
        let s = CommitteeSigner::from_seed([1; 32]);
        let a = CommitteeAuthorizer::new(Committee::new([s.public()], 1).unwrap())
            .with_products("dcnode", "dcupgrade");
        let d = a
            .authorize_destination(&record(&s, Role::Node, "dcnode"))
            .unwrap();
        assert_eq!(d.mr_enclave, Measurement([7; 32]));
        assert_eq!(d.version, dc_handover::Version::new(3, 1, 0));
        assert_eq!(d.isv_svn, 3);
        // An upgrader record, another product, a foreign signer, garbage, nothing.
        let rogue = CommitteeSigner::from_seed([2; 32]);
        for bad in [
            record(&s, Role::Upgrader, "dcupgrade"),
            record(&s, Role::Node, "othernode"),
            record(&rogue, Role::Node, "dcnode"),
            b"garbage".to_vec(),
            vec![],
        ] {
            assert!(matches!(
                a.authorize_destination(&bad),
                Err(AuthzError::BadDestination(_))
            ));
        }
        let a = a.with_revoked([Measurement([7; 32])]);
        assert!(matches!(
            a.authorize_destination(&record(&s, Role::Node, "dcnode")),
            Err(AuthzError::Revoked(_))
        ));
    }

    #[test]
    fn legacy_evidence_binds_version_and_isvsvn_through_the_measurement() {
        let s = CommitteeSigner::from_seed([1; 32]);
        let a = CommitteeAuthorizer::new(Committee::new([s.public()], 1).unwrap())
            .with_products("dcnode", "dcupgrade");
        let m = manifest("2.5.0", false);
        let mre = dc_bundle::measure_manifest(&m);
        let sig = crate::legacy::sign(&s, &mre);
        let ev = ReleaseEvidence::legacy(&mre, vec![sig.clone()], &m).to_json();
        let d = a.authorize_destination(&ev).unwrap();
        assert_eq!(
            (d.mr_enclave, d.version, d.isv_svn),
            (mre, dc_handover::Version::new(2, 5, 0), 4)
        );
        assert_eq!(
            ReleaseEvidence::parse(&ev).unwrap().to_json(),
            ev,
            "roundtrip"
        );
        // The host swaps in a manifest claiming another version: it measures differently.
        let forged = ReleaseEvidence::legacy(&mre, vec![sig.clone()], &manifest("9.0.0", false));
        assert!(a.authorize_destination(&forged.to_json()).is_err());
        // Unsigned, and a DEBUG build.
        assert!(a
            .authorize_destination(&ReleaseEvidence::legacy(&mre, vec![], &m).to_json())
            .is_err());
        let dm = manifest("2.5.0", true);
        let dmre = dc_bundle::measure_manifest(&dm);
        let dev =
            ReleaseEvidence::legacy(&dmre, vec![crate::legacy::sign(&s, &dmre)], &dm).to_json();
        let e = a.authorize_destination(&dev).unwrap_err();
        assert!(e.to_string().contains("DEBUG"), "{e}");
    }
}

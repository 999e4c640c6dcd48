//! What a node does with the custody state that travels with its keyring (pure functions).
//!
//! - Keys received by handover must have been released for exactly this release (the
//!   receiver already checked the stamp); the stamp is cleared, the floor raised to this
//!   release, and a new data-key generation minted — unless this release already holds a
//!   keyring that extends the received one (a retry after a rolled-back attempt), whose
//!   generation is kept so nothing it wrote becomes unreadable.
//! - A committee-signed revocation is verified against the measured committee and added to
//!   the custody state; the node re-seals it and refuses that MRENCLAVE from then on.

use dc_handover::keyring::RevocationEntry;
use dc_handover::{Destination, Keyring};
use dc_release::revocation::SignedRevocation;
use dc_release::Committee;
use dc_tee::Measurement;

use crate::KEY_DATA;

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error("this release's own sealed keyring holds other keys than the ones received (it does not extend them); it was left untouched and the received keys were not stored. Move the blob aside only if you are sure it is not needed")]
    Conflict,
    #[error("keyring: {0}")]
    Keyring(#[from] dc_handover::keyring::KeyringError),
    #[error("revocation refused: {0}")]
    Revocation(String),
}

/// The keyring a node keeps after receiving `received` by handover. `own` is the keyring this
/// release already sealed, if any.
pub fn adopt_received(
    received: &Keyring,
    own: Option<Keyring>,
    me: &Destination,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<Keyring, CustodyError> {
    let mut ring = match own {
        Some(mut own) if own.extends(received) => {
            own.custody_mut().merge(received.custody())?;
            own
        }
        Some(_) => return Err(CustodyError::Conflict),
        None => {
            let mut ring = received.clone();
            ring.mint_generation(KEY_DATA, rng)?;
            ring
        }
    };
    ring.custody_mut().released_to = None;
    ring.custody_mut().raise_floor(me.version, me.isv_svn);
    Ok(ring)
}

/// Verifies a signed revocation against the committee. Returns the keyring with it added,
/// or `None` if it was already known.
pub fn apply_revocation(
    ring: &Keyring,
    evidence: &[u8],
    committee: &Committee,
) -> Result<(Measurement, Option<Keyring>), CustodyError> {
    let signed =
        SignedRevocation::parse(evidence).map_err(|e| CustodyError::Revocation(e.to_string()))?;
    let m = signed
        .verify(committee)
        .map_err(|e| CustodyError::Revocation(e.to_string()))?;
    if ring.custody().is_revoked(&m) {
        return Ok((m, None));
    }
    let mut next = ring.clone();
    next.custody_mut().add_revocation(RevocationEntry {
        mr_enclave: m,
        evidence: evidence.to_vec(),
    })?;
    Ok((m, Some(next)))
}

/// How many revocations in the custody state do not verify against this release's committee
/// (e.g. signed by an earlier committee). They are kept: they can only restrict.
pub fn unverified_revocations(ring: &Keyring, committee: &Committee) -> usize {
    ring.custody()
        .revocations()
        .iter()
        .filter(|r| {
            SignedRevocation::parse(&r.evidence)
                .and_then(|s| s.verify(committee))
                .map_or(true, |m| m != r.mr_enclave)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_handover::Version;
    use dc_release::committee::CommitteeSigner;
    use rand_core::TryRngCore;

    fn me() -> Destination {
        Destination {
            mr_enclave: Measurement([2; 32]),
            version: Version::new(2, 0, 0),
            isv_svn: 2,
        }
    }

    fn received() -> Keyring {
        let mut r = Keyring::generate(
            &["data", "node-identity"],
            &mut rand_core::OsRng.unwrap_err(),
        )
        .unwrap();
        r.custody_mut().raise_floor(Version::new(1, 0, 0), 1);
        r.custody_mut().released_to = Some(me());
        r
    }

    #[test]
    fn a_received_keyring_gets_a_new_generation_a_raised_floor_and_no_stamp() {
        let got = received();
        let ring = adopt_received(&got, None, &me(), &mut rand_core::OsRng.unwrap_err()).unwrap();
        assert_eq!(ring.get(KEY_DATA).unwrap().version(), 2);
        assert!(ring.extends(&got));
        assert_eq!(ring.custody().floor, Version::new(2, 0, 0));
        assert_eq!(ring.custody().floor_isv_svn, 2);
        assert_eq!(ring.custody().released_to, None);
        // A retry after a rolled-back attempt keeps the generation minted the first time.
        let again = adopt_received(
            &got,
            Some(ring.clone()),
            &me(),
            &mut rand_core::OsRng.unwrap_err(),
        )
        .unwrap();
        assert_eq!(again.fingerprint(), ring.fingerprint());
        // An own keyring of another lineage is never overwritten.
        let foreign = received();
        assert!(matches!(
            adopt_received(
                &got,
                Some(foreign),
                &me(),
                &mut rand_core::OsRng.unwrap_err()
            ),
            Err(CustodyError::Conflict)
        ));
    }

    #[test]
    fn only_committee_signed_revocations_are_added_once() {
        let s = CommitteeSigner::from_seed([1; 32]);
        let c = Committee::new([s.public()], 1).unwrap();
        let ring = received();
        let m = Measurement([9; 32]);
        let mut rev = SignedRevocation::new(&m, "key leak");
        assert!(
            apply_revocation(&ring, &rev.to_json(), &c).is_err(),
            "unsigned"
        );
        rev.sign(&CommitteeSigner::from_seed([3; 32])).unwrap();
        assert!(
            apply_revocation(&ring, &rev.to_json(), &c).is_err(),
            "foreign"
        );
        rev.sign(&s).unwrap();
        let (got, next) = apply_revocation(&ring, &rev.to_json(), &c).unwrap();
        assert_eq!(got, m);
        let next = next.unwrap();
        assert!(next.custody().is_revoked(&m));
        assert_eq!(unverified_revocations(&next, &c), 0);
        assert!(apply_revocation(&next, &rev.to_json(), &c)
            .unwrap()
            .1
            .is_none());
        assert_eq!(next.fingerprint(), ring.fingerprint(), "keys unchanged");
    }
}

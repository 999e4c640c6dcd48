//! DC's existing on-chain authorization format (`DcNode.EnclaveIds`), checked exactly as DC's
//! tools check it: an entry's signature is multibase text (`b` + base32 lowercase, no
//! padding) of an Ed25519 signature over the enclave id as 64 lowercase ASCII hex characters
//! (the text itself, not the decoded bytes), by a committee key.
//!
//! An entry carries no key id, so each signature is tried against each committee key. With a
//! threshold above one, several entries for the same enclave id signed by distinct committee
//! keys add up; a key counts once however many entries it signed.

use std::collections::{BTreeMap, BTreeSet};

use dc_tee::Measurement;

use crate::committee::{Committee, CommitteeKey, CommitteeSigner};
use crate::{multibase, ReleaseError};

/// An enclave id as the chain writes it: 64 lowercase hex characters.
pub fn parse_enclave_id(id: &[u8]) -> Result<Measurement, ReleaseError> {
    if id.len() != 64 || !id.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ReleaseError::Invalid(format!(
            "enclave id {:?} is not 64 lowercase hex characters",
            String::from_utf8_lossy(&id[..id.len().min(80)])
        )));
    }
    let text = std::str::from_utf8(id).expect("ASCII checked above");
    Measurement::from_hex(text).map_err(|e| ReleaseError::Invalid(e.to_string()))
}

/// The committee key that made `signature_text` over `enclave_id`, if any.
pub fn signer_of(
    committee: &Committee,
    enclave_id: &[u8],
    signature_text: &[u8],
) -> Option<CommitteeKey> {
    let text = std::str::from_utf8(signature_text).ok()?;
    let sig = multibase::decode(text.trim()).ok()?;
    committee
        .keys()
        .find(|k| k.verify(enclave_id, &sig))
        .copied()
}

/// Checks that `enclave_id` is authorized by at least the committee threshold of distinct keys
/// among `entries` (enclave id, signature). Returns the measurement and the signing keys.
pub fn authorize<'a>(
    committee: &Committee,
    enclave_id: &[u8],
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<(Measurement, BTreeSet<CommitteeKey>), ReleaseError> {
    let (m, signed) = authorize_with_signatures(committee, enclave_id, entries)?;
    Ok((m, signed.into_keys().collect()))
}

/// [`authorize`], also returning one valid signature per committee member (the first seen):
/// the evidence to pass on, with no member counted twice however often the chain repeats it.
pub fn authorize_with_signatures<'a>(
    committee: &Committee,
    enclave_id: &[u8],
    entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<(Measurement, BTreeMap<CommitteeKey, &'a [u8]>), ReleaseError> {
    let m = parse_enclave_id(enclave_id)?;
    let mut signed = BTreeMap::new();
    for (id, sig) in entries {
        if id == enclave_id {
            if let Some(k) = signer_of(committee, enclave_id, sig) {
                signed.entry(k).or_insert(sig);
            }
        }
    }
    if signed.len() < committee.threshold() {
        return Err(ReleaseError::Threshold {
            valid: signed.len(),
            threshold: committee.threshold(),
        });
    }
    Ok((m, signed))
}

/// The signature text a committee member publishes for `mr_enclave`.
pub fn sign(signer: &CommitteeSigner, mr_enclave: &Measurement) -> String {
    multibase::encode(&signer.sign(mr_enclave.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_over_the_ascii_hex_text_by_a_committee_key() {
        let s = CommitteeSigner::from_seed([1; 32]);
        let c = Committee::new([s.public()], 1).unwrap();
        let m = Measurement([0xab; 32]);
        let id = m.to_string();
        let sig = sign(&s, &m);
        assert!(
            sig.starts_with('b')
                && sig[1..]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_eq!(
            authorize(&c, id.as_bytes(), [(id.as_bytes(), sig.as_bytes())])
                .unwrap()
                .0,
            m
        );
        // Not over the decoded bytes.
        let wrong = multibase::encode(&s.sign(&m.0));
        assert!(authorize(&c, id.as_bytes(), [(id.as_bytes(), wrong.as_bytes())]).is_err());
        // Another key, another id's entry, uppercase hex, garbage.
        let rogue = sign(&CommitteeSigner::from_seed([2; 32]), &m);
        assert!(authorize(&c, id.as_bytes(), [(id.as_bytes(), rogue.as_bytes())]).is_err());
        let other = Measurement([0xcd; 32]).to_string();
        assert!(authorize(&c, id.as_bytes(), [(other.as_bytes(), sig.as_bytes())]).is_err());
        let upper = id.to_uppercase();
        assert!(authorize(&c, upper.as_bytes(), [(upper.as_bytes(), sig.as_bytes())]).is_err());
        assert!(authorize(&c, id.as_bytes(), [(id.as_bytes(), &b"\xff\xfe"[..])]).is_err());
    }

    #[test]
    fn threshold_counts_distinct_keys_across_entries() {
        let s: Vec<_> = (1..=3)
            .map(|i| CommitteeSigner::from_seed([i; 32]))
            .collect();
        let c = Committee::new(s.iter().map(|k| k.public()), 2).unwrap();
        let m = Measurement([7; 32]);
        let id = m.to_string();
        let (a, b) = (sign(&s[0], &m), sign(&s[1], &m));
        assert!(matches!(
            authorize(
                &c,
                id.as_bytes(),
                [(id.as_bytes(), a.as_bytes()), (id.as_bytes(), a.as_bytes())]
            ),
            Err(ReleaseError::Threshold {
                valid: 1,
                threshold: 2
            })
        ));
        let (_, signers) = authorize(
            &c,
            id.as_bytes(),
            [(id.as_bytes(), a.as_bytes()), (id.as_bytes(), b.as_bytes())],
        )
        .unwrap();
        assert_eq!(signers.len(), 2);
    }
}

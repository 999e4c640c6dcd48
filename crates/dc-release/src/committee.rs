//! Committee keys and threshold verification.

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::{multibase, ReleaseError};

/// Most committee keys we accept in a trust root (bounds verification work).
pub const MAX_KEYS: usize = 64;

/// A committee member's public key, written as multibase base32 of the raw 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitteeKey(pub [u8; 32]);

impl CommitteeKey {
    pub fn parse(text: &str) -> Result<Self, ReleaseError> {
        let b = multibase::decode(text.trim()).map_err(ReleaseError::Key)?;
        let a: [u8; 32] = b.as_slice().try_into().map_err(|_| {
            ReleaseError::Key(format!(
                "committee key must be 32 bytes, {text:?} has {}",
                b.len()
            ))
        })?;
        VerifyingKey::from_bytes(&a)
            .map_err(|_| ReleaseError::Key(format!("{text:?} is not an Ed25519 public key")))?;
        Ok(Self(a))
    }

    pub fn to_text(&self) -> String {
        multibase::encode(&self.0)
    }

    /// Verifies `sig` over `msg` (strict: no malleable or small-order forms).
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let (Ok(vk), Ok(sig)) = (VerifyingKey::from_bytes(&self.0), <[u8; 64]>::try_from(sig))
        else {
            return false;
        };
        vk.verify_strict(msg, &Signature::from_bytes(&sig)).is_ok()
    }
}

impl std::fmt::Display for CommitteeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A committee member's signing key (held by the member, never by an enclave).
pub struct CommitteeSigner(SigningKey);

impl CommitteeSigner {
    pub fn generate() -> Result<Self, ReleaseError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut())
            .map_err(|e| ReleaseError::Key(format!("no randomness: {e}")))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// Reads a secret key file (64 hex characters); refuses one readable by group or others.
    pub fn load(path: &std::path::Path) -> Result<Self, ReleaseError> {
        let seed =
            dc_bundle::read_secret_seed(path).map_err(|e| ReleaseError::Key(e.to_string()))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// Writes the secret key (mode 0600, never overwriting).
    pub fn save(&self, path: &std::path::Path) -> Result<(), ReleaseError> {
        dc_bundle::write_secret_seed(path, &self.0.to_bytes())
            .map_err(|e| ReleaseError::Key(e.to_string()))
    }

    pub fn public(&self) -> CommitteeKey {
        CommitteeKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

/// The committee as an enclave's measured trust roots describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committee {
    keys: BTreeSet<CommitteeKey>,
    threshold: usize,
}

impl Committee {
    pub fn new(
        keys: impl IntoIterator<Item = CommitteeKey>,
        threshold: usize,
    ) -> Result<Self, ReleaseError> {
        let keys: BTreeSet<_> = keys.into_iter().collect();
        if keys.is_empty() || keys.len() > MAX_KEYS {
            return Err(ReleaseError::Committee(format!(
                "needs 1 to {MAX_KEYS} distinct keys"
            )));
        }
        if threshold == 0 || threshold > keys.len() {
            return Err(ReleaseError::Committee(format!(
                "threshold {threshold} must be between 1 and the number of keys ({})",
                keys.len()
            )));
        }
        Ok(Self { keys, threshold })
    }

    /// From a manifest's `[trust]` table.
    pub fn from_trust_roots(t: &dc_bundle::TrustRoots) -> Result<Self, ReleaseError> {
        let keys = t
            .committee_keys
            .iter()
            .map(|k| CommitteeKey::parse(k))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys, t.threshold as usize)
    }

    pub fn keys(&self) -> impl Iterator<Item = &CommitteeKey> {
        self.keys.iter()
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    pub fn contains(&self, k: &CommitteeKey) -> bool {
        self.keys.contains(k)
    }

    /// Counts distinct committee keys with a valid signature over `msg`; keys outside the
    /// committee and repeated keys count for nothing.
    pub fn count_valid<'a>(
        &self,
        msg: &[u8],
        sigs: impl IntoIterator<Item = (&'a CommitteeKey, &'a [u8])>,
    ) -> usize {
        let mut seen = BTreeSet::new();
        for (k, s) in sigs {
            if self.keys.contains(k) && !seen.contains(k) && k.verify(msg, s) {
                seen.insert(*k);
            }
        }
        seen.len()
    }

    pub fn check<'a>(
        &self,
        msg: &[u8],
        sigs: impl IntoIterator<Item = (&'a CommitteeKey, &'a [u8])>,
    ) -> Result<(), ReleaseError> {
        let valid = self.count_valid(msg, sigs);
        if valid < self.threshold {
            return Err(ReleaseError::Threshold {
                valid,
                threshold: self.threshold,
            });
        }
        Ok(())
    }
}

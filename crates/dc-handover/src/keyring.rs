//! The keyring: a node's application keys, named and versioned, with an epoch, and the
//! custody state that travels with them.
//!
//! Encoding (all integers little-endian), canonical so that its fingerprint is well defined:
//! ```text
//! "DCKR" | format u8 = 2 | epoch u64 | count u16 |
//!   count × ( name_len u8 | name | key_version u32 | secret_len u16 | secret )
//! custody:
//!   floor_version 3 × u64 (major, minor, patch) | floor_isv_svn u16 |
//!   released_to   u8 0 | u8 1, mr_enclave [32], version 3 × u64, isv_svn u16 |
//!   revocations   count u16 | count × ( mr_enclave [32] | evidence_len u16 | evidence )
//! ```
//! Keys are sorted by (name, version), each pair unique, names `[a-z0-9._-]{1,64}`, secrets
//! 1..=256 bytes, at most [`MAX_KEYS`] keys. A name with several versions is a key with
//! *generations* (the node's `data` key gains one at every upgrade). Revocations are sorted by
//! MRENCLAVE, unique, at most [`MAX_REVOCATIONS`], each evidence 1..=[`MAX_REVOCATION_LEN`]
//! bytes (a committee-signed revocation, verified by every enclave that accepts it).
//!
//! Secrets are zeroized on drop, and neither `Debug` nor any error ever shows them; the
//! fingerprint (SHA-256 over a domain string, the epoch and the keys — not the custody state,
//! which holders update) is safe to show.

use std::fmt;

use dc_tee::Measurement;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::authz::{Destination, Version};

/// Enough for a thousand upgrades: each mints one data-key generation.
pub const MAX_KEYS: usize = 1024;
pub const MAX_SECRET_LEN: usize = 256;
pub const MAX_NAME_LEN: usize = 64;
/// Revocations a keyring carries.
pub const MAX_REVOCATIONS: usize = 32;
/// Largest evidence of one revocation (a signed revocation record).
pub const MAX_REVOCATION_LEN: usize = 4096;
const CUSTODY_MAX_LEN: usize =
    24 + 2 + 1 + 32 + 24 + 2 + 2 + MAX_REVOCATIONS * (32 + 2 + MAX_REVOCATION_LEN);
/// Upper bound of an encoded keyring.
pub const MAX_ENCODED_LEN: usize =
    4 + 1 + 8 + 2 + MAX_KEYS * (1 + MAX_NAME_LEN + 4 + 2 + MAX_SECRET_LEN) + CUSTODY_MAX_LEN;
const MAGIC: &[u8; 4] = b"DCKR";
const FORMAT: u8 = 2;
const FINGERPRINT_DOMAIN: &[u8] = b"dc-keyring/v2/fingerprint\0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("keyring encoding is malformed: {0}")]
    Malformed(&'static str),
    #[error("keyring: {0}")]
    Invalid(String),
}

/// One application key.
#[derive(Clone)]
pub struct NamedKey {
    name: String,
    version: u32,
    secret: Zeroizing<Vec<u8>>,
}

impl NamedKey {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The key bytes. Never log them.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// A revocation the keyring's holders have seen: keys never go to `mr_enclave`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationEntry {
    pub mr_enclave: Measurement,
    /// The committee-signed revocation, so that every later holder can verify it.
    pub evidence: Vec<u8>,
}

/// Custody state: travels with the keys, inside enclaves only (sealed or under HPKE), so the
/// host can neither read nor lower it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Custody {
    /// The highest release version that ever held these keys; keys never go below it.
    pub floor: Version,
    /// The highest ISVSVN that ever held these keys.
    pub floor_isv_svn: u16,
    /// Set by a node when it releases the keys to the upgrade agent: the only release the
    /// agent may deliver them to. A receiving node checks it names itself, then clears it.
    pub released_to: Option<Destination>,
    revocations: Vec<RevocationEntry>,
}

impl Default for Custody {
    fn default() -> Self {
        Self {
            floor: Version::new(0, 0, 0),
            floor_isv_svn: 0,
            released_to: None,
            revocations: Vec::new(),
        }
    }
}

impl Custody {
    /// Raises the floor to a release that holds the keys (never lowers it).
    pub fn raise_floor(&mut self, version: Version, isv_svn: u16) {
        self.floor = self.floor.max(version);
        self.floor_isv_svn = self.floor_isv_svn.max(isv_svn);
    }

    pub fn revocations(&self) -> &[RevocationEntry] {
        &self.revocations
    }

    pub fn is_revoked(&self, m: &Measurement) -> bool {
        self.revocations.iter().any(|r| &r.mr_enclave == m)
    }

    /// Adds a revocation (the caller has verified the evidence). `Ok(false)` if already known.
    pub fn add_revocation(&mut self, entry: RevocationEntry) -> Result<bool, KeyringError> {
        if self.is_revoked(&entry.mr_enclave) {
            return Ok(false);
        }
        if entry.evidence.is_empty() || entry.evidence.len() > MAX_REVOCATION_LEN {
            return Err(KeyringError::Invalid(format!(
                "revocation evidence must be 1-{MAX_REVOCATION_LEN} bytes"
            )));
        }
        if self.revocations.len() >= MAX_REVOCATIONS {
            return Err(KeyringError::Invalid(format!(
                "a keyring carries at most {MAX_REVOCATIONS} revocations"
            )));
        }
        self.revocations.push(entry);
        self.revocations.sort_by_key(|r| r.mr_enclave.0);
        Ok(true)
    }

    /// Takes the higher floors and every revocation of `other` (as far as room allows; an
    /// error names the first that did not fit).
    pub fn merge(&mut self, other: &Custody) -> Result<(), KeyringError> {
        self.raise_floor(other.floor, other.floor_isv_svn);
        for r in &other.revocations {
            self.add_revocation(r.clone())?;
        }
        Ok(())
    }

    fn encode(&self, o: &mut Vec<u8>) {
        put_version(o, self.floor);
        o.extend_from_slice(&self.floor_isv_svn.to_le_bytes());
        match &self.released_to {
            None => o.push(0),
            Some(d) => {
                o.push(1);
                o.extend_from_slice(&d.mr_enclave.0);
                put_version(o, d.version);
                o.extend_from_slice(&d.isv_svn.to_le_bytes());
            }
        }
        o.extend_from_slice(&(self.revocations.len() as u16).to_le_bytes());
        for r in &self.revocations {
            o.extend_from_slice(&r.mr_enclave.0);
            o.extend_from_slice(&(r.evidence.len() as u16).to_le_bytes());
            o.extend_from_slice(&r.evidence);
        }
    }
}

fn put_version(o: &mut Vec<u8>, v: Version) {
    for n in [v.major, v.minor, v.patch] {
        o.extend_from_slice(&n.to_le_bytes());
    }
}

/// A set of application keys and their custody state.
#[derive(Clone)]
pub struct Keyring {
    epoch: u64,
    keys: Vec<NamedKey>,
    custody: Custody,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && n.bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

impl Keyring {
    /// Builds a keyring; validates names, sizes and uniqueness of (name, version).
    pub fn new(
        epoch: u64,
        keys: Vec<(String, u32, Zeroizing<Vec<u8>>)>,
    ) -> Result<Self, KeyringError> {
        if keys.is_empty() || keys.len() > MAX_KEYS {
            return Err(KeyringError::Invalid(format!(
                "must hold 1 to {MAX_KEYS} keys"
            )));
        }
        let mut out: Vec<NamedKey> = Vec::with_capacity(keys.len());
        for (name, version, secret) in keys {
            if !valid_name(&name) {
                return Err(KeyringError::Invalid(format!(
                    "key name {name:?} must be 1-64 of [a-z0-9._-]"
                )));
            }
            if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
                return Err(KeyringError::Invalid(format!(
                    "key {name}: secret must be 1-{MAX_SECRET_LEN} bytes"
                )));
            }
            out.push(NamedKey {
                name,
                version,
                secret,
            });
        }
        out.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        if out
            .windows(2)
            .any(|w| w[0].name == w[1].name && w[0].version == w[1].version)
        {
            return Err(KeyringError::Invalid(
                "duplicate key name and version".into(),
            ));
        }
        Ok(Self {
            epoch,
            keys: out,
            custody: Custody::default(),
        })
    }

    /// A fresh keyring of 32-byte random keys, version 1, epoch 1.
    pub fn generate(
        names: &[&str],
        rng: &mut impl rand_core::CryptoRng,
    ) -> Result<Self, KeyringError> {
        let keys = names
            .iter()
            .map(|n| {
                let mut s = Zeroizing::new(vec![0u8; 32]);
                rng.fill_bytes(&mut s);
                (n.to_string(), 1, s)
            })
            .collect();
        Self::new(1, keys)
    }

    /// Adds the next generation of `name` (32 random bytes, version = highest + 1) and
    /// advances the epoch. Earlier generations stay, so older data still opens.
    pub fn mint_generation(
        &mut self,
        name: &str,
        rng: &mut impl rand_core::CryptoRng,
    ) -> Result<u32, KeyringError> {
        let next = self
            .get(name)
            .map_or(Some(1), |k| k.version.checked_add(1))
            .ok_or_else(|| KeyringError::Invalid(format!("key {name}: no further generation")))?;
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyringError::Invalid(format!(
                "the keyring already holds {MAX_KEYS} keys; no further generation of {name}"
            )));
        }
        if !valid_name(name) {
            return Err(KeyringError::Invalid(format!(
                "key name {name:?} is invalid"
            )));
        }
        let mut s = Zeroizing::new(vec![0u8; 32]);
        rng.fill_bytes(&mut s);
        self.keys.push(NamedKey {
            name: name.into(),
            version: next,
            secret: s,
        });
        self.keys
            .sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
        self.epoch = self.epoch.saturating_add(1);
        Ok(next)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn keys(&self) -> &[NamedKey] {
        &self.keys
    }

    /// The newest generation of `name`.
    pub fn get(&self, name: &str) -> Option<&NamedKey> {
        self.keys.iter().rev().find(|k| k.name == name)
    }

    /// One generation of `name`.
    pub fn get_version(&self, name: &str, version: u32) -> Option<&NamedKey> {
        self.keys
            .iter()
            .find(|k| k.name == name && k.version == version)
    }

    pub fn custody(&self) -> &Custody {
        &self.custody
    }

    pub fn custody_mut(&mut self) -> &mut Custody {
        &mut self.custody
    }

    /// Whether every key of `other` is in this keyring with the same secret (this keyring
    /// descends from `other`). Constant time in the secrets.
    pub fn extends(&self, other: &Keyring) -> bool {
        other.keys.iter().all(|k| {
            self.get_version(&k.name, k.version).is_some_and(|m| {
                m.secret.len() == k.secret.len() && bool::from(m.secret.ct_eq(&k.secret))
            })
        })
    }

    fn encode_keys(&self, o: &mut Vec<u8>) {
        o.extend_from_slice(&self.epoch.to_le_bytes());
        o.extend_from_slice(&(self.keys.len() as u16).to_le_bytes());
        for k in &self.keys {
            o.push(k.name.len() as u8);
            o.extend_from_slice(k.name.as_bytes());
            o.extend_from_slice(&k.version.to_le_bytes());
            o.extend_from_slice(&(k.secret.len() as u16).to_le_bytes());
            o.extend_from_slice(&k.secret);
        }
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut o = Zeroizing::new(Vec::with_capacity(128 + self.keys.len() * 80));
        o.extend_from_slice(MAGIC);
        o.push(FORMAT);
        self.encode_keys(&mut o);
        self.custody.encode(&mut o);
        o
    }

    /// Decodes and validates; rejects anything that would not re-encode to the same bytes.
    pub fn decode(b: &[u8]) -> Result<Self, KeyringError> {
        if b.len() > MAX_ENCODED_LEN {
            return Err(KeyringError::Malformed("too long"));
        }
        let mut r = b;
        let mut take = |n: usize| -> Result<&[u8], KeyringError> {
            if r.len() < n {
                return Err(KeyringError::Malformed("truncated"));
            }
            let (a, rest) = r.split_at(n);
            r = rest;
            Ok(a)
        };
        if take(4)? != MAGIC || take(1)? != [FORMAT] {
            return Err(KeyringError::Malformed("bad magic or format version"));
        }
        let u16_of = |b: &[u8]| u16::from_le_bytes(b.try_into().expect("2"));
        let u64_of = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8"));
        let epoch = u64_of(take(8)?);
        let count = u16_of(take(2)?) as usize;
        if count == 0 || count > MAX_KEYS {
            return Err(KeyringError::Malformed("key count out of range"));
        }
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            let nlen = take(1)?[0] as usize;
            let name = std::str::from_utf8(take(nlen)?)
                .map_err(|_| KeyringError::Malformed("name not UTF-8"))?
                .to_string();
            let version = u32::from_le_bytes(take(4)?.try_into().expect("4"));
            let slen = u16_of(take(2)?) as usize;
            let secret = Zeroizing::new(take(slen)?.to_vec());
            keys.push((name, version, secret));
        }
        let version = |b: &[u8]| Version::new(u64_of(&b[..8]), u64_of(&b[8..16]), u64_of(&b[16..]));
        let floor = version(take(24)?);
        let floor_isv_svn = u16_of(take(2)?);
        let released_to = match take(1)?[0] {
            0 => None,
            1 => {
                let m = Measurement(take(32)?.try_into().expect("32"));
                let v = version(take(24)?);
                Some(Destination {
                    mr_enclave: m,
                    version: v,
                    isv_svn: u16_of(take(2)?),
                })
            }
            _ => return Err(KeyringError::Malformed("released_to flag must be 0 or 1")),
        };
        let rcount = u16_of(take(2)?) as usize;
        if rcount > MAX_REVOCATIONS {
            return Err(KeyringError::Malformed("too many revocations"));
        }
        let mut revocations = Vec::with_capacity(rcount);
        for _ in 0..rcount {
            let m = Measurement(take(32)?.try_into().expect("32"));
            let len = u16_of(take(2)?) as usize;
            if len == 0 || len > MAX_REVOCATION_LEN {
                return Err(KeyringError::Malformed("revocation evidence length"));
            }
            revocations.push(RevocationEntry {
                mr_enclave: m,
                evidence: take(len)?.to_vec(),
            });
        }
        if !r.is_empty() {
            return Err(KeyringError::Malformed("trailing bytes"));
        }
        let mut ring =
            Self::new(epoch, keys).map_err(|_| KeyringError::Malformed("invalid key entry"))?;
        ring.custody = Custody {
            floor,
            floor_isv_svn,
            released_to,
            revocations,
        };
        // Canonical form: sorted keys, sorted and unique revocations.
        if ring.encode().as_slice() != b
            || ring
                .custody
                .revocations
                .windows(2)
                .any(|w| w[0].mr_enclave.0 >= w[1].mr_enclave.0)
        {
            return Err(KeyringError::Malformed("not in canonical order"));
        }
        Ok(ring)
    }

    /// SHA-256 over a domain string, the epoch and the keys; identifies a keyring's key
    /// material without revealing it. The custody state is not covered: holders update it.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut buf = Zeroizing::new(Vec::with_capacity(64 + self.keys.len() * 80));
        self.encode_keys(&mut buf);
        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        h.update(buf.as_slice());
        h.finalize().into()
    }

    /// Constant-time equality of two keyrings (keys and custody).
    pub fn ct_eq(&self, other: &Keyring) -> bool {
        let (a, b) = (self.encode(), other.encode());
        a.len() == b.len() && bool::from(a.as_slice().ct_eq(b.as_slice()))
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{}@v{}", k.name, k.version))
            .collect();
        f.debug_struct("Keyring")
            .field("epoch", &self.epoch)
            .field("keys", &names)
            .field("fingerprint", &hex::encode(self.fingerprint()))
            .field("floor", &self.custody.floor.to_string())
            .field("revocations", &self.custody.revocations.len())
            .finish()
    }
}

impl fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamedKey({}@v{}, <redacted>)", self.name, self.version)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(
            3,
            vec![
                ("node-identity".into(), 1, Zeroizing::new(vec![0xAB; 32])),
                ("data".into(), 2, Zeroizing::new(vec![0xCD; 32])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn roundtrip_sorted_and_fingerprinted() {
        let r = ring();
        assert_eq!(r.keys()[0].name(), "data");
        let d = Keyring::decode(&r.encode()).unwrap();
        assert!(d.ct_eq(&r));
        assert_eq!(d.fingerprint(), r.fingerprint());
        assert_eq!(d.get("data").unwrap().version(), 2);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let s = format!("{:?} {:?}", ring(), ring().keys()[0]);
        assert!(
            !s.to_lowercase().contains("abab") && !s.to_lowercase().contains("cdcd"),
            "{s}"
        );
        assert!(s.contains("node-identity@v1"));
    }

    #[test]
    fn every_truncation_and_garbage_is_rejected() {
        let e = ring().encode();
        for n in 0..e.len() {
            assert!(Keyring::decode(&e[..n]).is_err(), "prefix {n}");
        }
        assert!(Keyring::decode(&[e.as_slice(), &[0]].concat()).is_err());
        // The format-1 encoding (no custody state) is not accepted as format 2.
        let mut bad = ring().encode().to_vec();
        bad[4] = 1;
        assert!(Keyring::decode(&bad).is_err());
        assert!(Keyring::new(1, vec![]).is_err());
        assert!(Keyring::new(1, vec![("A".into(), 1, Zeroizing::new(vec![1]))]).is_err());
        assert!(Keyring::new(1, vec![("a".into(), 1, Zeroizing::new(vec![]))]).is_err());
    }

    fn entry(b: u8) -> RevocationEntry {
        RevocationEntry {
            mr_enclave: Measurement([b; 32]),
            evidence: vec![b'{', b, b'}'],
        }
    }

    #[test]
    fn custody_roundtrips_and_is_not_in_the_fingerprint() {
        let plain = ring();
        let mut r = ring();
        r.custody_mut().raise_floor(Version::new(2, 0, 0), 3);
        r.custody_mut().raise_floor(Version::new(1, 9, 0), 1);
        assert_eq!(
            r.custody().floor,
            Version::new(2, 0, 0),
            "floors never go down"
        );
        assert_eq!(r.custody().floor_isv_svn, 3);
        r.custody_mut().released_to = Some(Destination {
            mr_enclave: Measurement([5; 32]),
            version: Version::new(3, 1, 4),
            isv_svn: 4,
        });
        assert!(r.custody_mut().add_revocation(entry(9)).unwrap());
        assert!(r.custody_mut().add_revocation(entry(2)).unwrap());
        assert!(!r.custody_mut().add_revocation(entry(9)).unwrap(), "known");
        assert!(r.custody().is_revoked(&Measurement([2; 32])));
        let d = Keyring::decode(&r.encode()).unwrap();
        assert!(d.ct_eq(&r));
        assert_eq!(d.custody(), r.custody());
        assert_eq!(d.fingerprint(), plain.fingerprint());
        assert!(!d.ct_eq(&plain));
        let e = r.encode();
        for n in 0..e.len() {
            assert!(Keyring::decode(&e[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn revocations_must_be_canonical_and_bounded() {
        let mut r = ring();
        r.custody_mut().add_revocation(entry(1)).unwrap();
        r.custody_mut().add_revocation(entry(2)).unwrap();
        let mut e = r.encode().to_vec();
        // Swap the two MRENCLAVEs in place (both entries have 3-byte evidence).
        let n = e.len();
        let (first, second) = (n - 2 * (32 + 2 + 3), n - (32 + 2 + 3));
        e[first..first + 32].copy_from_slice(&[2; 32]);
        e[second..second + 32].copy_from_slice(&[1; 32]);
        assert!(Keyring::decode(&e).is_err(), "unsorted revocations");
        let mut c = Custody::default();
        for i in 0..MAX_REVOCATIONS {
            c.add_revocation(entry(i as u8)).unwrap();
        }
        assert!(c.add_revocation(entry(200)).is_err());
        assert!(c
            .add_revocation(RevocationEntry {
                mr_enclave: Measurement([201; 32]),
                evidence: vec![],
            })
            .is_err());
    }

    #[test]
    fn generations_are_minted_kept_and_extend_the_original() {
        let original = ring();
        let mut r = original.clone();
        let mut rng = rand_core::TryRngCore::unwrap_err(rand_core::OsRng);
        assert_eq!(r.mint_generation("data", &mut rng).unwrap(), 3);
        assert_eq!(r.get("data").unwrap().version(), 3);
        assert_eq!(r.get_version("data", 2).unwrap().secret(), &[0xCD; 32]);
        assert_eq!(r.epoch(), original.epoch() + 1);
        assert_ne!(r.fingerprint(), original.fingerprint());
        assert!(r.extends(&original));
        assert!(!original.extends(&r));
        let d = Keyring::decode(&r.encode()).unwrap();
        assert!(d.ct_eq(&r));
        // A keyring with another secret under the same name and version does not extend.
        let other =
            Keyring::new(3, vec![("data".into(), 2, Zeroizing::new(vec![0xEE; 32]))]).unwrap();
        assert!(!r.extends(&other));
    }
}

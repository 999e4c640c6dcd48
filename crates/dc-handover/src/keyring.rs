//! The keyring: a node's application keys, named and versioned, with an epoch.
//!
//! Encoding (all integers little-endian), canonical so that its fingerprint is well defined:
//! ```text
//! "DCKR" | format u8 = 1 | epoch u64 | count u16 |
//!   count × ( name_len u8 | name | key_version u32 | secret_len u16 | secret )
//! ```
//! Keys are sorted by name, names unique, `[a-z0-9._-]{1,64}`, secrets 1..=256 bytes, at
//! most 64 keys. Secrets are zeroized on drop, and neither `Debug` nor any error ever shows
//! them; the fingerprint (SHA-256 over a domain string and the encoding) is safe to show.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const MAX_KEYS: usize = 64;
pub const MAX_SECRET_LEN: usize = 256;
pub const MAX_NAME_LEN: usize = 64;
/// Upper bound of an encoded keyring.
pub const MAX_ENCODED_LEN: usize =
    4 + 1 + 8 + 2 + MAX_KEYS * (1 + MAX_NAME_LEN + 4 + 2 + MAX_SECRET_LEN);
const MAGIC: &[u8; 4] = b"DCKR";
const FORMAT: u8 = 1;
const FINGERPRINT_DOMAIN: &[u8] = b"dc-keyring/v1/fingerprint\0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("keyring encoding is malformed: {0}")]
    Malformed(&'static str),
    #[error("keyring: {0}")]
    Invalid(String),
}

/// One application key.
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

/// A set of application keys.
pub struct Keyring {
    epoch: u64,
    keys: Vec<NamedKey>,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && n.bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

impl Keyring {
    /// Builds a keyring; validates names, sizes and uniqueness.
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
        out.sort_by(|a, b| a.name.cmp(&b.name));
        if out.windows(2).any(|w| w[0].name == w[1].name) {
            return Err(KeyringError::Invalid("duplicate key name".into()));
        }
        Ok(Self { epoch, keys: out })
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

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn keys(&self) -> &[NamedKey] {
        &self.keys
    }

    pub fn get(&self, name: &str) -> Option<&NamedKey> {
        self.keys.iter().find(|k| k.name == name)
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut o = Zeroizing::new(Vec::with_capacity(64 + self.keys.len() * 80));
        o.extend_from_slice(MAGIC);
        o.push(FORMAT);
        o.extend_from_slice(&self.epoch.to_le_bytes());
        o.extend_from_slice(&(self.keys.len() as u16).to_le_bytes());
        for k in &self.keys {
            o.push(k.name.len() as u8);
            o.extend_from_slice(k.name.as_bytes());
            o.extend_from_slice(&k.version.to_le_bytes());
            o.extend_from_slice(&(k.secret.len() as u16).to_le_bytes());
            o.extend_from_slice(&k.secret);
        }
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
        let epoch = u64::from_le_bytes(take(8)?.try_into().expect("8"));
        let count = u16::from_le_bytes(take(2)?.try_into().expect("2")) as usize;
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
            let slen = u16::from_le_bytes(take(2)?.try_into().expect("2")) as usize;
            let secret = Zeroizing::new(take(slen)?.to_vec());
            keys.push((name, version, secret));
        }
        if !r.is_empty() {
            return Err(KeyringError::Malformed("trailing bytes"));
        }
        let ring =
            Self::new(epoch, keys).map_err(|_| KeyringError::Malformed("invalid key entry"))?;
        if ring.encode().as_slice() != b {
            return Err(KeyringError::Malformed("not in canonical order"));
        }
        Ok(ring)
    }

    /// SHA-256 over a domain string and the encoding; identifies a keyring without revealing it.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(FINGERPRINT_DOMAIN);
        h.update(self.encode().as_slice());
        h.finalize().into()
    }

    /// Constant-time equality of two keyrings.
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
        // Non-canonical order: swap the two entries.
        let mut bad = ring().encode().to_vec();
        bad[4] = 2;
        assert!(Keyring::decode(&bad).is_err());
        assert!(Keyring::new(1, vec![]).is_err());
        assert!(Keyring::new(1, vec![("A".into(), 1, Zeroizing::new(vec![1]))]).is_err());
        assert!(Keyring::new(1, vec![("a".into(), 1, Zeroizing::new(vec![]))]).is_err());
    }
}

//! Objects encrypted at rest under a generation of the keyring's data key:
//! `DATA/objects/<name>` = `"DCO2"` ‖ generation u32 LE ‖ nonce (12) ‖ AES-256-GCM(ciphertext ‖
//! tag), associated data = domain ‖ generation ‖ name (an object cannot be swapped for
//! another, nor relabelled with another generation).
//!
//! New objects are written under the newest generation. Each upgrade mints a new one inside
//! the new node, so an old version restarted from its old sealed keyring reads only what was
//! written before it was retired.

use std::fs;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::keystore::write_atomic;

pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;
pub const MAX_NAME_LEN: usize = 128;
const AAD_DOMAIN: &[u8] = b"dcnode object v2\0";
const MAGIC: &[u8; 4] = b"DCO2";
const HEADER_LEN: usize = 4 + 4 + 12;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "object name must be 1-{MAX_NAME_LEN} characters of [A-Za-z0-9._-] and not start with '.'"
    )]
    BadName,
    #[error("object larger than {MAX_OBJECT_BYTES} bytes")]
    TooLarge,
    #[error("no such object")]
    NotFound,
    #[error("object {0} does not decrypt: it was altered, or written under other keys")]
    Corrupt(String),
    #[error("object {name} was written under data-key generation {generation}, which this node does not hold (it was written by a newer version; this version was retired before it)")]
    UnknownGeneration { name: String, generation: u32 },
    #[error("storage: {0}")]
    Io(String),
}

pub struct ObjectStore {
    dir: PathBuf,
    /// Every generation of the data key this node holds, oldest first.
    keys: Vec<(u32, Zeroizing<[u8; 32]>)>,
}

pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && !n.starts_with('.')
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

impl ObjectStore {
    /// Opens the store with every generation of the keyring's `key_name` key (32 bytes each).
    pub fn open(
        data_dir: &Path,
        ring: &dc_handover::Keyring,
        key_name: &str,
    ) -> Result<Self, StoreError> {
        let mut keys = Vec::new();
        for k in ring.keys().iter().filter(|k| k.name() == key_name) {
            let key: [u8; 32] = k
                .secret()
                .try_into()
                .map_err(|_| StoreError::Io("data keys must be 32 bytes".into()))?;
            keys.push((k.version(), Zeroizing::new(key)));
        }
        if keys.is_empty() {
            return Err(StoreError::Io(format!("the keyring has no {key_name} key")));
        }
        let dir = data_dir.join("objects");
        fs::create_dir_all(&dir).map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        Ok(Self { dir, keys })
    }

    /// The generation new objects are written under.
    pub fn current_generation(&self) -> u32 {
        self.keys.last().expect("at least one key").0
    }

    /// Whether a data directory holds any object.
    pub fn has_objects(data_dir: &Path) -> bool {
        fs::read_dir(data_dir.join("objects")).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.')))
        })
    }

    fn cipher(&self, generation: u32) -> Option<Aes256Gcm> {
        self.keys
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, k)| Aes256Gcm::new_from_slice(k.as_ref()).expect("32-byte key"))
    }

    fn aad(generation: u32, name: &str) -> Vec<u8> {
        [AAD_DOMAIN, &generation.to_le_bytes(), name.as_bytes()].concat()
    }

    pub fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::BadName);
        }
        if data.len() > MAX_OBJECT_BYTES {
            return Err(StoreError::TooLarge);
        }
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|e| StoreError::Io(e.to_string()))?;
        let generation = self.current_generation();
        let aad = Self::aad(generation, name);
        let ct = self
            .cipher(generation)
            .expect("the current generation is held")
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: data,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Io("encryption failed".into()))?;
        write_atomic(
            &self.dir.join(name),
            &[&MAGIC[..], &generation.to_le_bytes(), &nonce[..], &ct].concat(),
        )
        .map_err(|e| StoreError::Io(e.to_string()))
    }

    pub fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::BadName);
        }
        let raw = match dc_tee::read_limited(
            &self.dir.join(name),
            (MAX_OBJECT_BYTES + HEADER_LEN + 16) as u64,
        ) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(StoreError::Corrupt(name.into()))
            }
            Err(e) => return Err(StoreError::Io(e.to_string())),
        };
        if raw.len() < HEADER_LEN + 16 || &raw[..4] != MAGIC {
            return Err(StoreError::Corrupt(name.into()));
        }
        let generation = u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes"));
        let Some(cipher) = self.cipher(generation) else {
            return Err(StoreError::UnknownGeneration {
                name: name.into(),
                generation,
            });
        };
        let aad = Self::aad(generation, name);
        cipher
            .decrypt(
                Nonce::from_slice(&raw[8..HEADER_LEN]),
                Payload {
                    msg: &raw[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Corrupt(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyring whose `data` key has the given generations, each key = `fill` ‖ generation.
    fn ring(fill: u8, generations: &[u32]) -> dc_handover::Keyring {
        let keys = generations
            .iter()
            .map(|g| {
                let mut k = vec![fill; 32];
                k[0] = *g as u8;
                ("data".to_string(), *g, Zeroizing::new(k))
            })
            .collect();
        dc_handover::Keyring::new(1, keys).unwrap()
    }

    #[test]
    fn objects_name_their_generation_and_old_generations_cannot_read_newer_ones() {
        let t = tempfile::tempdir().unwrap();
        let old = ObjectStore::open(t.path(), &ring(1, &[1]), "data").unwrap();
        old.put("before", b"written by the old version").unwrap();
        let new = ObjectStore::open(t.path(), &ring(1, &[1, 2]), "data").unwrap();
        assert_eq!(new.current_generation(), 2);
        assert_eq!(new.get("before").unwrap(), b"written by the old version");
        new.put("after", b"written after the upgrade").unwrap();
        let raw = fs::read(t.path().join("objects/after")).unwrap();
        assert_eq!(&raw[..8], b"DCO2\x02\0\0\0", "names generation 2");
        // The old version, restarted from its old keyring, cannot read the newer object.
        assert!(matches!(
            old.get("after"),
            Err(StoreError::UnknownGeneration { generation: 2, .. })
        ));
        // Relabelling the object with generation 1 does not help: the generation is in the AAD.
        let mut relabelled = raw.clone();
        relabelled[4] = 1;
        fs::write(t.path().join("objects/after"), &relabelled).unwrap();
        assert!(matches!(old.get("after"), Err(StoreError::Corrupt(_))));
        assert!(matches!(new.get("after"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn roundtrip_tamper_and_wrong_key() {
        let t = tempfile::tempdir().unwrap();
        let s = ObjectStore::open(t.path(), &ring(1, &[1]), "data").unwrap();
        s.put("a.txt", b"hello").unwrap();
        assert_eq!(s.get("a.txt").unwrap(), b"hello");
        let on_disk = fs::read(t.path().join("objects/a.txt")).unwrap();
        assert!(
            !on_disk.windows(5).any(|w| w == b"hello"),
            "stored in clear"
        );
        // Swapping one object's file for another's is detected.
        s.put("b.txt", b"other").unwrap();
        fs::copy(
            t.path().join("objects/b.txt"),
            t.path().join("objects/a.txt"),
        )
        .unwrap();
        assert!(matches!(s.get("a.txt"), Err(StoreError::Corrupt(_))));
        let other = ObjectStore::open(t.path(), &ring(2, &[1]), "data").unwrap();
        assert!(matches!(other.get("b.txt"), Err(StoreError::Corrupt(_))));
        assert!(matches!(s.get("nope"), Err(StoreError::NotFound)));
        for bad in ["", "../x", ".hidden", "a/b", &"x".repeat(129)] {
            assert!(matches!(s.put(bad, b""), Err(StoreError::BadName)), "{bad}");
        }
        assert!(matches!(
            s.put("big", &vec![0; MAX_OBJECT_BYTES + 1]),
            Err(StoreError::TooLarge)
        ));
        assert!(ObjectStore::has_objects(t.path()));
    }
}

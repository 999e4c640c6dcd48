//! Objects encrypted at rest: `DATA/objects/<name>` = nonce (12) ‖ AES-256-GCM(ciphertext ‖
//! tag), associated data = domain ‖ name (an object cannot be swapped for another).

use std::fs;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::keystore::write_atomic;

pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;
pub const MAX_NAME_LEN: usize = 128;
const AAD_DOMAIN: &[u8] = b"dcnode object v1\0";

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
    #[error("storage: {0}")]
    Io(String),
}

pub struct ObjectStore {
    dir: PathBuf,
    key: Zeroizing<[u8; 32]>,
}

pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME_LEN
        && !n.starts_with('.')
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

impl ObjectStore {
    /// `data_key` must be 32 bytes (the keyring's data key).
    pub fn open(data_dir: &Path, data_key: &[u8]) -> Result<Self, StoreError> {
        let key: [u8; 32] = data_key
            .try_into()
            .map_err(|_| StoreError::Io("the data key must be 32 bytes".into()))?;
        let dir = data_dir.join("objects");
        fs::create_dir_all(&dir).map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        Ok(Self {
            dir,
            key: Zeroizing::new(key),
        })
    }

    /// Whether a data directory holds any object.
    pub fn has_objects(data_dir: &Path) -> bool {
        fs::read_dir(data_dir.join("objects")).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.')))
        })
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.key.as_ref()).expect("32-byte key")
    }

    fn aad(name: &str) -> Vec<u8> {
        [AAD_DOMAIN, name.as_bytes()].concat()
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
        let aad = Self::aad(name);
        let ct = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: data,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Io("encryption failed".into()))?;
        write_atomic(&self.dir.join(name), &[&nonce[..], &ct].concat())
            .map_err(|e| StoreError::Io(e.to_string()))
    }

    pub fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::BadName);
        }
        let raw =
            match dc_tee::read_limited(&self.dir.join(name), (MAX_OBJECT_BYTES + 12 + 16) as u64) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::NotFound)
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(StoreError::Corrupt(name.into()))
                }
                Err(e) => return Err(StoreError::Io(e.to_string())),
            };
        if raw.len() < 12 + 16 {
            return Err(StoreError::Corrupt(name.into()));
        }
        let aad = Self::aad(name);
        self.cipher()
            .decrypt(
                Nonce::from_slice(&raw[..12]),
                Payload {
                    msg: &raw[12..],
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Corrupt(name.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_tamper_and_wrong_key() {
        let t = tempfile::tempdir().unwrap();
        let s = ObjectStore::open(t.path(), &[1; 32]).unwrap();
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
        let other = ObjectStore::open(t.path(), &[2; 32]).unwrap();
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

//! The sealed keyring on disk: `DATA/keys/<mrenclave>.sealed`.
//!
//! Each enclave identity has its own file, sealed with the MRENCLAVE policy: a new version
//! never overwrites the old version's blob, so a rollback finds it intact. Writes are atomic
//! (temporary file, fsync, rename, fsync of the directory). Nothing here deletes a blob; one
//! that fails to unseal is reported and left where it is.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use dc_handover::Keyring;
use dc_tee::{Measurement, SealPolicy, Tee};

/// Associated data for keyring blobs: a blob of another kind cannot be substituted.
const AAD: &[u8] = b"dcnode keyring v1";

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} does not unseal: {reason}. The file was left untouched; restore the matching enclave version or its platform to recover it")]
    Unseal { path: PathBuf, reason: String },
    #[error("{path} unsealed but is not a keyring: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("sealing the keyring failed: {0}")]
    Seal(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Keystore {
    dir: PathBuf,
}

impl Keystore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("keys"),
        }
    }

    pub fn path_for(&self, mr_enclave: &Measurement) -> PathBuf {
        self.dir.join(format!("{mr_enclave}.sealed"))
    }

    /// Whether any sealed keyring (of any version) exists.
    pub fn any(&self) -> bool {
        fs::read_dir(&self.dir).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sealed")))
        })
    }

    /// Unseals this enclave's own keyring, if it has one.
    pub fn load(&self, tee: &dyn Tee, me: &Measurement) -> Result<Option<Keyring>, KeystoreError> {
        let path = self.path_for(me);
        // A keyring blob is small; a larger file is not ours and is not read into memory.
        let limit = (dc_handover::keyring::MAX_ENCODED_LEN
            + dc_tee::seal::HEADER_LEN
            + dc_tee::seal::TAG_LEN) as u64;
        let blob = match dc_tee::read_limited(&path, limit) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let plain =
            tee.unseal(SealPolicy::MrEnclave, &blob, AAD)
                .map_err(|e| KeystoreError::Unseal {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
        Keyring::decode(&plain)
            .map(Some)
            .map_err(|e| KeystoreError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// Seals and durably stores the keyring for this enclave.
    pub fn store(
        &self,
        tee: &dyn Tee,
        me: &Measurement,
        ring: &Keyring,
    ) -> Result<PathBuf, KeystoreError> {
        let blob = tee
            .seal(SealPolicy::MrEnclave, AAD, &ring.encode())
            .map_err(|e| KeystoreError::Seal(e.to_string()))?;
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.path_for(me);
        write_atomic(&path, &blob.0)?;
        Ok(path)
    }
}

/// Temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let dir = path.parent().expect("a file in a directory");
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// An exclusive lock on a data directory, held for the life of the node: two nodes must
/// never run on one data directory (two enclaves with one identity serving at once), and only
/// the holder opens the object store, so there is never more than one writer.
///
/// A `flock(2)` on `DATA/.lock`: the kernel releases it when the holding process is gone
/// (after all its threads, so after any write in progress), including after `kill -9`.
pub struct DataDirLock(#[allow(dead_code)] fs::File);

impl DataDirLock {
    fn open(data_dir: &Path) -> Result<(fs::File, PathBuf), KeystoreError> {
        let path = data_dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok((f, path))
    }

    /// Takes the lock, or fails at once if another node holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self, KeystoreError> {
        use std::os::fd::AsRawFd;
        let (f, path) = Self::open(data_dir)?;
        // SAFETY: flock(2) on a file descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(KeystoreError::Io {
                path,
                source: std::io::Error::other("another node is running on this data directory"),
            });
        }
        Ok(Self(f))
    }

    /// Takes the lock, waiting as long as it takes for the node that holds it to exit: a
    /// standby's way in. Blocks the calling thread; the lock is granted the moment it is free.
    pub fn wait(data_dir: &Path) -> Result<Self, KeystoreError> {
        use std::os::fd::AsRawFd;
        let (f, path) = Self::open(data_dir)?;
        loop {
            // SAFETY: flock(2) on a file descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(KeystoreError::Io { path, source: e });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_takes_one_node_at_a_time() {
        let t = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(t.path()).unwrap();
        let second = DataDirLock::acquire(t.path());
        assert!(second.is_err(), "two nodes on one data directory");
        assert!(second
            .err()
            .unwrap()
            .to_string()
            .contains("another node is running"));
        drop(first);
        assert!(
            DataDirLock::acquire(t.path()).is_ok(),
            "the lock goes with the node"
        );
    }

    #[test]
    fn a_standby_waits_for_the_lock_and_gets_it_when_the_holder_lets_go() {
        let t = tempfile::tempdir().unwrap();
        let serving = DataDirLock::acquire(t.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = t.path().to_path_buf();
        std::thread::spawn(move || {
            let lock = DataDirLock::wait(&dir);
            tx.send(lock.map(|_| ())).unwrap();
        });
        // Not while the serving node holds it...
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err());
        drop(serving);
        // ...and at once when it lets go.
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the lock was not handed on")
            .unwrap();
    }
}

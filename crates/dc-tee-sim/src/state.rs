//! The platform's persistent state: the root secret (the "fuses") and the current CPUSVN.
//!
//! INSECURE BY DESIGN: the root secret is an ordinary file. Anyone who can read it — root, and
//! any process running as the platform's user, including every enclave it launches — can
//! derive every enclave's seal and report keys. It is protected only by file permissions, and
//! the platform refuses to use it if group or others can read it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dc_tee::CpuSvn;
use zeroize::Zeroizing;

pub const ROOT_SECRET_FILE: &str = "root.secret";
pub const CPUSVN_FILE: &str = "cpusvn";
pub const CONTROL_SOCKET: &str = "control.sock";
pub const ENCLAVES_DIR: &str = "enclaves";
pub const DEFAULT_CPUSVN: CpuSvn = CpuSvn([1; 16]);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is accessible by group or others (mode {mode:o}); the root secret must be private: run `chmod 600 {path}` if you trust it, or delete the state directory to start a new platform (all sealed data is then lost)")]
    InsecureSecret { path: PathBuf, mode: u32 },
    #[error("state directory {path} is writable by group or others (mode {mode:o}); run `chmod 700 {path}`")]
    InsecureDir { path: PathBuf, mode: u32 },
    #[error("{path} is {len} bytes, not 32: corrupted root secret; restore it from backup (sealed data cannot be opened without it)")]
    BadSecret { path: PathBuf, len: u64 },
    #[error("{path}: not a valid CPUSVN (32 hex characters)")]
    BadCpuSvn { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct StateDir {
    pub path: PathBuf,
}

impl StateDir {
    /// Opens (creating with mode 0700 if needed) a state directory.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if !path.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io(path))?;
        }
        let mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(StateError::InsecureDir {
                path: path.to_path_buf(),
                mode,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    pub fn control_socket(&self) -> PathBuf {
        self.path.join(CONTROL_SOCKET)
    }

    pub fn enclaves_dir(&self) -> PathBuf {
        self.path.join(ENCLAVES_DIR)
    }

    /// Loads the root secret, creating it (exclusively, mode 0600, fsync'd) on first start.
    pub fn root_secret(&self) -> Result<Zeroizing<[u8; 32]>, StateError> {
        let p = self.path.join(ROOT_SECRET_FILE);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
        {
            Ok(mut f) => {
                let mut s = Zeroizing::new([0u8; 32]);
                getrandom::getrandom(s.as_mut())
                    .map_err(|e| io(&p)(std::io::Error::other(e.to_string())))?;
                f.write_all(s.as_ref()).map_err(io(&p))?;
                f.sync_all().map_err(io(&p))?;
                fs::File::open(&self.path)
                    .and_then(|d| d.sync_all())
                    .map_err(io(&self.path))?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(&p)(e)),
        }
        let meta = fs::symlink_metadata(&p).map_err(io(&p))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 || !meta.is_file() {
            return Err(StateError::InsecureSecret {
                path: p,
                mode: mode & 0o7777,
            });
        }
        let bytes = Zeroizing::new(fs::read(&p).map_err(io(&p))?);
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| StateError::BadSecret {
                path: p.clone(),
                len: meta.len(),
            })?;
        Ok(Zeroizing::new(arr))
    }

    /// The persisted CPUSVN, or the default for a new platform.
    pub fn cpu_svn(&self) -> Result<CpuSvn, StateError> {
        let p = self.path.join(CPUSVN_FILE);
        match fs::read_to_string(&p) {
            Ok(s) => CpuSvn::from_hex(&s).map_err(|_| StateError::BadCpuSvn { path: p }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DEFAULT_CPUSVN),
            Err(e) => Err(io(&p)(e)),
        }
    }

    /// Persists a new CPUSVN (a "microcode update"), atomically.
    pub fn set_cpu_svn(&self, svn: CpuSvn) -> Result<(), StateError> {
        let p = self.path.join(CPUSVN_FILE);
        let tmp = self.path.join(".cpusvn.tmp");
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(svn.to_string().as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &p).map_err(io(&p))?;
        fs::File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_secret_is_created_once_private_and_stable() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(&t.path().join("st")).unwrap();
        let a = s.root_secret().unwrap();
        let p = s.path.join(ROOT_SECRET_FILE);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&s.path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(*s.root_secret().unwrap(), *a);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = s.root_secret().unwrap_err();
        assert!(matches!(err, StateError::InsecureSecret { .. }), "{err}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&p, b"short").unwrap();
        fs::set_permissions(&s.path, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            StateDir::open(&s.path),
            Err(StateError::InsecureDir { .. })
        ));
        fs::set_permissions(&s.path, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            s.root_secret().unwrap_err(),
            StateError::BadSecret { .. }
        ));
    }

    #[test]
    fn cpusvn_defaults_and_persists() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(t.path()).unwrap();
        assert_eq!(s.cpu_svn().unwrap(), DEFAULT_CPUSVN);
        s.set_cpu_svn(CpuSvn([2; 16])).unwrap();
        assert_eq!(s.cpu_svn().unwrap(), CpuSvn([2; 16]));
        fs::write(s.path.join(CPUSVN_FILE), "zz").unwrap();
        assert!(s.cpu_svn().is_err());
    }
}

//! The local release feed: a directory of signed records (`*.json`).

use std::path::{Path, PathBuf};

use crate::record::{Role, SignedRecord, VerifiedRecord};
use crate::{Committee, ReleaseError};

/// Most records a feed directory may hold before the rest are ignored (and reported).
pub const MAX_FEED_ENTRIES: usize = 1000;

pub struct LocalFeed {
    dir: PathBuf,
}

/// A valid record, the file it is in, and the file's bytes as signed (what a node presents
/// as evidence).
#[derive(Debug, Clone)]
pub struct FeedEntry {
    pub record: VerifiedRecord,
    pub path: PathBuf,
    pub json: Vec<u8>,
}

/// What a scan of the feed found.
#[derive(Debug, Default)]
pub struct FeedScan {
    /// Every valid node release of the product, highest version first.
    pub valid: Vec<FeedEntry>,
    /// EnclaveIDs the committee revoked, with the signed revocation (verified), so that it
    /// can be passed on to enclaves that verify it themselves.
    pub revoked: Vec<(dc_tee::Measurement, Vec<u8>)>,
    /// Records that were refused, with the reason (reported, never acted on).
    pub refused: Vec<(PathBuf, String)>,
}

impl LocalFeed {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a signed record into the feed atomically (`<product>-<version>.json`).
    pub fn publish(&self, record: &SignedRecord) -> Result<PathBuf, ReleaseError> {
        record.record.validate()?;
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ReleaseError::Io { path: p, source }
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let name = format!("{}-{}.json", record.record.product, record.record.version);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&record.to_json()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(path)
    }

    /// Reads every record, verifies it against the committee, and returns the valid releases
    /// of `product` with role node, highest first. Unreadable or invalid records are reported.
    pub fn scan(
        &self,
        committee: &Committee,
        product: &str,
        now_secs: u64,
    ) -> Result<FeedScan, ReleaseError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|source| ReleaseError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut scan = FeedScan::default();
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        paths.sort();
        if paths.len() > MAX_FEED_ENTRIES {
            for p in paths.drain(MAX_FEED_ENTRIES..) {
                scan.refused.push((
                    p,
                    format!("feed holds more than {MAX_FEED_ENTRIES} records"),
                ));
            }
        }
        for p in paths {
            let bytes = match read_limited(&p) {
                Ok(b) => b,
                Err(e) => {
                    scan.refused.push((p, e.to_string()));
                    continue;
                }
            };
            if let Ok(rev) = crate::revocation::SignedRevocation::parse(&bytes) {
                match rev.verify(committee) {
                    Ok(m) => scan.revoked.push((m, bytes)),
                    Err(e) => scan.refused.push((p, format!("revocation: {e}"))),
                }
                continue;
            }
            let checked = SignedRecord::parse(&bytes).and_then(|r| r.verify(committee, now_secs));
            match checked {
                Ok(v) if v.record.product == product && v.record.role == Role::Node => {
                    scan.valid.push(FeedEntry {
                        record: v,
                        path: p,
                        json: bytes.clone(),
                    })
                }
                Ok(_) => {}
                Err(e) => scan.refused.push((p, e.to_string())),
            }
        }
        scan.valid
            .sort_by_key(|v| std::cmp::Reverse(v.record.version));
        Ok(scan)
    }
}

fn read_limited(p: &Path) -> Result<Vec<u8>, ReleaseError> {
    dc_tee::read_limited(p, crate::record::MAX_RECORD_BYTES as u64).map_err(|source| {
        ReleaseError::Io {
            path: p.to_path_buf(),
            source,
        }
    })
}

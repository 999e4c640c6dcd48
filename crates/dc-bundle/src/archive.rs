//! Bundle archives: the release artifact. A plain tar (ustar) of `enclave.toml`,
//! `enclave.sig` and the listed files, written deterministically (sorted, mtime 0, uid/gid 0),
//! so the same bundle always gives the same artifact digest.
//!
//! Unpacking trusts nothing about the archive: only regular files, paths checked like manifest
//! paths (no `..`, no absolute paths, no links of any kind), bounded entry count and sizes, and
//! the result is then opened with [`Bundle::open`], which checks signature and hashes.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use crate::{check_relative_path, Bundle, BundleError, MAX_FILES, MAX_FILE_BYTES};

/// Upper bound of an unpacked bundle.
pub const MAX_UNPACKED_BYTES: u64 = 2 * MAX_FILE_BYTES;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the archive of a verified bundle to `out`.
pub fn pack(bundle: &Bundle, out: impl Write) -> Result<(), BundleError> {
    let mut names = bundle.file_names();
    names.sort_unstable();
    let mut tar = tar::Builder::new(out);
    for rel in names {
        let path = bundle.dir.join(rel);
        let data = fs::read(&path).map_err(io(&path))?;
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(if rel == bundle.manifest.entrypoint {
            0o755
        } else {
            0o644
        });
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, rel, data.as_slice())
            .map_err(io(&path))?;
    }
    tar.into_inner()
        .map_err(io(&bundle.dir))?
        .flush()
        .map_err(io(&bundle.dir))
}

fn refuse(why: impl Into<String>) -> BundleError {
    BundleError::Manifest(format!("archive refused: {}", why.into()))
}

/// Unpacks an archive into `dest` (which must not exist) and verifies the bundle.
pub fn unpack(archive: impl Read, dest: &Path) -> Result<Bundle, BundleError> {
    fs::create_dir(dest).map_err(io(dest))?;
    let mut ar = tar::Archive::new(archive);
    let mut total = 0u64;
    let mut count = 0usize;
    for entry in ar.entries().map_err(io(dest))? {
        let mut entry = entry.map_err(io(dest))?;
        count += 1;
        if count > MAX_FILES + 2 {
            return Err(refuse(format!("more than {} entries", MAX_FILES + 2)));
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|_| refuse("a path is not UTF-8"))?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            let d = name.trim_end_matches('/');
            check_relative_path(d)?;
            continue;
        }
        if !kind.is_file() {
            return Err(refuse(format!(
                "{name:?} is a link or special file; only regular files are allowed"
            )));
        }
        check_relative_path(&name)?;
        let size = entry.header().size().map_err(io(dest))?;
        total = total.saturating_add(size);
        if size > MAX_FILE_BYTES || total > MAX_UNPACKED_BYTES {
            return Err(refuse("too large"));
        }
        let to = dest.join(&name);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&to)
            .map_err(io(&to))?;
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut f).map_err(io(&to))?;
        if copied != size {
            return Err(refuse(format!("{name} is truncated")));
        }
        f.sync_all().map_err(io(&to))?;
    }
    let b = Bundle::open(dest)?;
    // Nothing but the manifest, the signature and the listed files may be in an archive.
    let expected = b.file_names().len();
    if count != expected {
        return Err(refuse(format!(
            "{count} entries, the manifest accounts for {expected}"
        )));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build, BundleSpec, SignerKey, TrustRoots};

    fn bundle(dir: &Path) -> Bundle {
        let src = dir.join("prog");
        fs::write(&src, b"#!/bin/sh\necho hi\n").unwrap();
        let spec = BundleSpec {
            name: "n".into(),
            version: "1.0.0".into(),
            isv_prod_id: 1,
            isv_svn: 1,
            debug: false,
            entrypoint: "bin/prog".into(),
            args: vec![],
            env_passthrough: vec![],
            trust: TrustRoots::default(),
        };
        build(
            &dir.join("b"),
            &spec,
            &[(src, "bin/prog".into())],
            &SignerKey::from_seed([3; 32]),
        )
        .unwrap()
    }

    #[test]
    fn pack_is_deterministic_and_unpacks_to_the_same_identity() {
        let t = tempfile::tempdir().unwrap();
        let b = bundle(t.path());
        let (mut a1, mut a2) = (Vec::new(), Vec::new());
        pack(&b, &mut a1).unwrap();
        pack(&b, &mut a2).unwrap();
        assert_eq!(a1, a2);
        let u = unpack(a1.as_slice(), &t.path().join("u")).unwrap();
        assert_eq!(u.mr_enclave, b.mr_enclave);
    }

    fn archive_with(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name("/etc/passwd").unwrap();
            }
            // Write the raw name so that the tar crate's own checks do not hide ours.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            tar.append(&h, *data).unwrap();
        }
        tar.into_inner().unwrap()
    }

    #[test]
    fn traversal_absolute_paths_and_links_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let cases: [(&str, tar::EntryType); 5] = [
            ("../escape", tar::EntryType::Regular),
            ("/abs", tar::EntryType::Regular),
            ("a/../../b", tar::EntryType::Regular),
            ("link", tar::EntryType::Symlink),
            ("hard", tar::EntryType::Link),
        ];
        for (i, (name, kind)) in cases.iter().enumerate() {
            let ar = archive_with(&[(name, *kind, b"x")]);
            let dest = t.path().join(format!("d{i}"));
            assert!(unpack(ar.as_slice(), &dest).is_err(), "{name}");
            assert!(!t.path().join("escape").exists() && !t.path().join("b").exists());
        }
    }

    #[test]
    fn extra_files_and_garbage_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let b = bundle(t.path());
        let mut ar = Vec::new();
        pack(&b, &mut ar).unwrap();
        // Append an extra, unlisted file before the end-of-archive blocks.
        let mut tar = tar::Builder::new(Vec::new());
        let mut inner = tar::Archive::new(ar.as_slice());
        for e in inner.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            tar.append(&h, data.as_slice()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        tar.append_data(&mut h, "extra", &b"x"[..]).unwrap();
        let extra = tar.into_inner().unwrap();
        assert!(unpack(extra.as_slice(), &t.path().join("x")).is_err());
        assert!(unpack(&b"garbage"[..], &t.path().join("g")).is_err());
        assert!(unpack(&ar[..ar.len() / 2], &t.path().join("h")).is_err());
    }
}

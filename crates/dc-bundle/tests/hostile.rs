//! Hostile manifests and archives: refused or accepted, never a panic, never a file written
//! outside the destination. Longer runs: `PROPTEST_CASES=20000 cargo test -p dc-bundle --test hostile`.

use dc_bundle::{archive, Manifest};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}(/[a-z]{1,8}){0,2}",
        Just("../escape".to_string()),
        Just("/abs/escape".to_string()),
        Just("a/../../escape".to_string()),
        Just("./a".to_string()),
        Just("a//b".to_string()),
        Just("enclave.toml".to_string()),
        ".{0,40}",
    ]
}

fn entry_type() -> impl Strategy<Value = tar::EntryType> {
    prop_oneof![
        Just(tar::EntryType::Regular),
        Just(tar::EntryType::Directory),
        Just(tar::EntryType::Symlink),
        Just(tar::EntryType::Link),
        Just(tar::EntryType::Fifo),
        Just(tar::EntryType::Char),
    ]
}

proptest! {
    #[test]
    fn manifest_text(text in ".{0,600}") {
        let _ = Manifest::parse(text.as_bytes());
    }

    #[test]
    fn manifest_structured(name in ".{0,20}", version in ".{0,20}", entry in name(), path in name(), sha in "[0-9a-f]{0,70}", svn in any::<i64>()) {
        let text = format!(
            "name = {name:?}\nversion = {version:?}\nisv_prod_id = 1\nisv_svn = {svn}\nentrypoint = {entry:?}\nfiles = [{{ path = {path:?}, sha256 = {sha:?} }}]\n"
        );
        if let Ok(m) = Manifest::parse(text.as_bytes()) {
            // Accepted manifests name only safe paths.
            for f in &m.files {
                prop_assert!(dc_bundle::check_relative_path(&f.path).is_ok());
            }
        }
    }

    #[test]
    fn archive_bytes(b in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let t = tempfile::tempdir().unwrap();
        prop_assert!(archive::unpack(b.as_slice(), &t.path().join("d")).is_err());
    }

    #[test]
    fn archive_entries(entries in proptest::collection::vec((name(), entry_type(), proptest::collection::vec(any::<u8>(), 0..64)), 0..6)) {
        let t = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        for (n, kind, data) in &entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(if kind.is_file() { data.len() as u64 } else { 0 });
            h.set_mode(0o644);
            if kind.is_symlink() || kind.is_hard_link() {
                let _ = h.set_link_name("../../outside");
            }
            let bytes = n.as_bytes();
            let len = bytes.len().min(99);
            h.as_old_mut().name[..len].copy_from_slice(&bytes[..len]);
            h.set_cksum();
            let body: &[u8] = if kind.is_file() { data } else { &[] };
            tar.append(&h, body).unwrap();
        }
        let ar = tar.into_inner().unwrap();
        let dest = t.path().join("inside").join("d");
        std::fs::create_dir_all(t.path().join("inside")).unwrap();
        // No manifest or signature: always refused; and nothing may appear outside `dest`.
        prop_assert!(archive::unpack(ar.as_slice(), &dest).is_err());
        let outside: Vec<_> = std::fs::read_dir(t.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        prop_assert_eq!(outside, vec![std::ffi::OsString::from("inside")]);
        let inside: Vec<_> = std::fs::read_dir(t.path().join("inside")).unwrap().flatten().map(|e| e.file_name()).collect();
        prop_assert!(inside.iter().all(|n| n == "d"));
    }
}

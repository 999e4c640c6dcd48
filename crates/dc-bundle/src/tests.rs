use super::*;
use sha2::Digest;

fn spec() -> BundleSpec {
    BundleSpec {
        name: "demo".into(),
        version: "1.0.0".into(),
        isv_prod_id: 7,
        isv_svn: 1,
        debug: false,
        entrypoint: "bin/prog".into(),
        args: vec!["--x".into()],
        env_passthrough: vec![],
        trust: TrustRoots::default(),
    }
}

fn make(dir: &Path, name: &str) -> Bundle {
    let src = dir.join("prog-src");
    if !src.exists() {
        fs::write(&src, b"#!/bin/sh\necho hi\n").unwrap();
    }
    build(
        &dir.join(name),
        &spec(),
        &[(src, "bin/prog".into())],
        &SignerKey::from_seed([1; 32]),
    )
    .unwrap()
}

#[test]
fn build_open_measure_roundtrip() {
    let t = tempfile::tempdir().unwrap();
    let b = make(t.path(), "b");
    let again = Bundle::open(&b.dir).unwrap();
    assert_eq!(again.mr_enclave, b.mr_enclave);
    assert_eq!(b.mr_enclave, measure_manifest(&b.manifest_bytes));
    assert_eq!(b.mr_signer, SignerKey::from_seed([1; 32]).mr_signer());
    assert_eq!(
        b.manifest.attributes().flags,
        Attributes::INIT | Attributes::MODE64BIT
    );
}

#[test]
fn any_manifest_byte_changes_mrenclave_and_breaks_signature() {
    let t = tempfile::tempdir().unwrap();
    let b = make(t.path(), "b");
    let mut m = b.manifest_bytes.clone();
    let i = m.iter().position(|&c| c == b'1').unwrap();
    m[i] = b'2';
    assert_ne!(measure_manifest(&m), b.mr_enclave);
    fs::write(b.dir.join(MANIFEST_FILE), &m).unwrap();
    assert!(matches!(
        Bundle::open(&b.dir),
        Err(BundleError::Signature(_))
    ));
}

#[test]
fn changed_file_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let b = make(t.path(), "b");
    fs::write(b.dir.join("bin/prog"), b"#!/bin/sh\necho evil\n").unwrap();
    assert!(matches!(
        Bundle::open(&b.dir),
        Err(BundleError::HashMismatch { .. })
    ));
}

#[test]
fn symlinked_file_and_directory_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let b = make(t.path(), "b");
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::rename(b.dir.join("bin/prog"), outside.join("prog")).unwrap();
    std::os::unix::fs::symlink(outside.join("prog"), b.dir.join("bin/prog")).unwrap();
    assert!(
        matches!(
            Bundle::open(&b.dir),
            Err(BundleError::NotRegularFile { .. })
        ),
        "file symlink"
    );
    fs::remove_file(b.dir.join("bin/prog")).unwrap();
    fs::remove_dir(b.dir.join("bin")).unwrap();
    std::os::unix::fs::symlink(&outside, b.dir.join("bin")).unwrap();
    assert!(
        matches!(
            Bundle::open(&b.dir),
            Err(BundleError::NotRegularFile { .. })
        ),
        "dir symlink"
    );
}

#[test]
fn unsafe_paths_are_refused() {
    for p in [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "a/./b",
        "a//b",
        "a/",
        "",
        "./a",
        "a\\b",
        "a\0b",
    ] {
        assert!(check_relative_path(p).is_err(), "{p:?}");
    }
    assert!(check_relative_path("bin/dcnode").is_ok());
}

#[test]
fn manifest_validation() {
    let ok = r#"
name = "n"
version = "1.0.0"
isv_prod_id = 1
isv_svn = 1
entrypoint = "p"
files = [{ path = "p", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }]
"#;
    Manifest::parse(ok.as_bytes()).unwrap();
    for (from, to) in [
        ("entrypoint = \"p\"", "entrypoint = \"q\""),
        ("path = \"p\"", "path = \"../p\""),
        ("isv_svn = 1", "isv_svn = 1\nunknown = 2"),
        ("isv_svn = 1", "isv_svn = 70000"),
        ("name = \"n\"", "name = \"\""),
        ("sha256 = \"0000", "sha256 = \"000"),
        (
            "isv_svn = 1",
            "isv_svn = 1\nenv_passthrough = [\"LD_PRELOAD\"]",
        ),
    ] {
        let bad = ok.replace(from, to);
        assert!(Manifest::parse(bad.as_bytes()).is_err(), "{to}");
    }
    assert!(Manifest::parse(&vec![b' '; 70_000]).is_err());

    // The [gramine] files are where the identity comes from: listed bundle files only.
    let zero = "0".repeat(64);
    let gramine = format!(
        r#"
name = "n"
version = "1.0.0"
isv_prod_id = 1
isv_svn = 1
entrypoint = "p"
[gramine]
manifest_sgx = "n.manifest.sgx"
sigstruct = "n.sig"
[[files]]
path = "p"
sha256 = "{zero}"
[[files]]
path = "n.manifest.sgx"
sha256 = "{zero}"
[[files]]
path = "n.sig"
sha256 = "{zero}"
[[files]]
path = "other.sig"
sha256 = "{zero}"
[[files]]
path = "sub/n.manifest.sgx"
sha256 = "{zero}"
[[files]]
path = "sub/n.sig"
sha256 = "{zero}"
"#
    );
    Manifest::parse(gramine.as_bytes()).unwrap();
    let subdir = gramine
        .replace(
            "\"n.manifest.sgx\"\nsigstruct",
            "\"sub/n.manifest.sgx\"\nsigstruct",
        )
        .replace("sigstruct = \"n.sig\"", "sigstruct = \"sub/n.sig\"");
    Manifest::parse(subdir.as_bytes()).unwrap();
    for (from, to, why) in [
        (
            "sigstruct = \"n.sig\"",
            "sigstruct = \"/tmp/n.sig\"",
            "is not allowed",
        ),
        (
            "sigstruct = \"n.sig\"",
            "sigstruct = \"../n.sig\"",
            "is not allowed",
        ),
        (
            "sigstruct = \"n.sig\"",
            "sigstruct = \"sub/../n.sig\"",
            "is not allowed",
        ),
        (
            "manifest_sgx = \"n.manifest.sgx\"",
            "manifest_sgx = \"/tmp/n.manifest.sgx\"",
            "is not allowed",
        ),
        (
            "manifest_sgx = \"n.manifest.sgx\"",
            "manifest_sgx = \"../g/n.manifest.sgx\"",
            "is not allowed",
        ),
        // Well-formed but unlisted: its hash would not be checked.
        (
            "manifest_sgx = \"n.manifest.sgx\"\nsigstruct = \"n.sig\"",
            "manifest_sgx = \"m.manifest.sgx\"\nsigstruct = \"m.sig\"",
            "gramine.manifest_sgx \"m.manifest.sgx\" is not one of the listed files",
        ),
        (
            "path = \"n.sig\"",
            "path = \"n2.sig\"",
            "gramine.sigstruct \"n.sig\" is not one of the listed files",
        ),
        (
            "path = \"n.manifest.sgx\"",
            "path = \"n2.manifest.sgx\"",
            "gramine.manifest_sgx \"n.manifest.sgx\" is not one of the listed files",
        ),
        // Listed, but not the SIGSTRUCT gramine-sgx would load for this manifest.
        (
            "sigstruct = \"n.sig\"",
            "sigstruct = \"other.sig\"",
            "APP.sig",
        ),
        ("sigstruct = \"n.sig\"", "sigstruct = \"p\"", "APP.sig"),
        (
            "manifest_sgx = \"n.manifest.sgx\"\nsigstruct = \"n.sig\"",
            "manifest_sgx = \"p\"\nsigstruct = \"n.sig\"",
            "APP.manifest.sgx",
        ),
    ] {
        let bad = gramine.replacen(from, to, 1);
        assert_ne!(bad, gramine, "{from} not in the fixture");
        let e = Manifest::parse(bad.as_bytes()).expect_err(to).to_string();
        assert!(e.contains(why), "{to}: {e}");
    }
}

#[test]
fn signer_key_file_permissions() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("k");
    let k = SignerKey::generate().unwrap();
    k.save(&p).unwrap();
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(SignerKey::load(&p).unwrap().mr_signer(), k.mr_signer());
    assert!(k.save(&p).is_err(), "must not overwrite a key");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(SignerKey::load(&p), Err(BundleError::Key(_))));
}

#[test]
fn copy_verified_copies_only_listed_files() {
    let t = tempfile::tempdir().unwrap();
    let b = make(t.path(), "b");
    fs::write(b.dir.join("extra"), b"not listed").unwrap();
    let c = b.copy_verified(&t.path().join("copy")).unwrap();
    assert_eq!(c.mr_enclave, b.mr_enclave);
    assert!(!c.dir.join("extra").exists());
}

/// A Gramine bundle made by hand: the entrypoint, a `.manifest.sgx` and a SIGSTRUCT.
fn gramine_bundle(dir: &Path, svn_in_sig: u16) -> PathBuf {
    use dc_tee::sigstruct::Sigstruct;
    let b = dir.join("g");
    fs::create_dir_all(b.join("bin")).unwrap();
    fs::write(b.join("bin/dcnode"), b"ELF...").unwrap();
    fs::write(
        b.join("dcnode.manifest.sgx"),
        b"[loader]\nentrypoint = \"file:/gramine/libsysdb.so\"\n",
    )
    .unwrap();
    let sig = Sigstruct {
        vendor: 0,
        date: 0x2026_1126,
        modulus: [0x11; 384],
        misc_select: 0,
        misc_mask: 0xFFFF_FFFF,
        attributes: Attributes {
            flags: Attributes::INIT | Attributes::MODE64BIT,
            xfrm: 3,
        },
        attribute_mask: Attributes {
            flags: !0,
            xfrm: !0,
        },
        enclave_hash: Measurement([0xE1; 32]),
        isv_prod_id: 7,
        isv_svn: svn_in_sig,
    };
    fs::write(b.join("dcnode.sig"), sig.encode_unsigned()).unwrap();
    let h = |p: &str| hex::encode(sha256_file(&b.join(p), MAX_FILE_BYTES).unwrap());
    let manifest = format!(
        "name = \"dcnode\"\nversion = \"1.0.0\"\nisv_prod_id = 7\nisv_svn = 1\nentrypoint = \"bin/dcnode\"\n\
         [gramine]\nmanifest_sgx = \"dcnode.manifest.sgx\"\nsigstruct = \"dcnode.sig\"\n\
         [[files]]\npath = \"bin/dcnode\"\nsha256 = \"{}\"\n[[files]]\npath = \"dcnode.manifest.sgx\"\nsha256 = \"{}\"\n\
         [[files]]\npath = \"dcnode.sig\"\nsha256 = \"{}\"\n",
        h("bin/dcnode"),
        h("dcnode.manifest.sgx"),
        h("dcnode.sig")
    );
    fs::write(b.join(MANIFEST_FILE), manifest).unwrap();
    b
}

#[test]
fn gramine_bundle_identity_comes_from_its_sigstruct() {
    let t = tempfile::tempdir().unwrap();
    let dir = gramine_bundle(t.path(), 1);
    let b = Bundle::open(&dir).unwrap();
    assert_eq!(b.mr_enclave, Measurement([0xE1; 32]));
    assert_eq!(
        b.mr_signer,
        Measurement(sha2::Sha256::digest([0x11u8; 384]).into())
    );
    assert!(matches!(b.kind, BundleKind::Gramine(_)));
    assert!(!b.file_names().contains(&SIGNATURE_FILE));
    // It packs and unpacks like any bundle, to the same identity.
    let mut ar = Vec::new();
    archive::pack(&b, &mut ar).unwrap();
    assert_eq!(
        archive::unpack(ar.as_slice(), &t.path().join("u"))
            .unwrap()
            .mr_enclave,
        b.mr_enclave
    );
    // An altered SIGSTRUCT no longer matches the manifest's file hash.
    let mut sig = fs::read(dir.join("dcnode.sig")).unwrap();
    sig[960] ^= 1;
    fs::write(dir.join("dcnode.sig"), &sig).unwrap();
    assert!(matches!(
        Bundle::open(&dir),
        Err(BundleError::HashMismatch { .. })
    ));
}

#[test]
fn gramine_bundle_reads_its_sigstruct_only_from_the_listed_file() {
    let t = tempfile::tempdir().unwrap();
    let dir = gramine_bundle(t.path(), 1);
    let manifest = fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
    // A SIGSTRUCT outside the bundle, claiming another identity.
    let outside = t.path().join("evil.sig");
    let mut evil = fs::read(dir.join("dcnode.sig")).unwrap();
    evil[960] ^= 1;
    fs::write(&outside, &evil).unwrap();
    let pointed = manifest.replace(
        "sigstruct = \"dcnode.sig\"",
        &format!("sigstruct = \"{}\"", outside.display()),
    );
    fs::write(dir.join(MANIFEST_FILE), pointed).unwrap();
    assert!(matches!(
        Bundle::open(&dir),
        Err(BundleError::UnsafePath(_))
    ));
    // The listed file, and only it, is read.
    fs::write(dir.join(MANIFEST_FILE), &manifest).unwrap();
    assert_eq!(
        Bundle::open(&dir).unwrap().mr_enclave,
        Measurement([0xE1; 32])
    );
}

#[test]
fn gramine_bundle_whose_sigstruct_disagrees_with_the_manifest_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let dir = gramine_bundle(t.path(), 2);
    assert!(matches!(Bundle::open(&dir), Err(BundleError::Manifest(_))));
}

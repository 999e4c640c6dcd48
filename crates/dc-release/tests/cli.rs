//! The committee's tool end to end: keys, a bundle, a record signed by two of three members,
//! publication, verification, legacy signatures and revocations.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dcrelease");

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(args: &[&str]) -> String {
    let (success, text) = run(args);
    assert!(success, "{args:?}: {text}");
    text
}

#[test]
fn threshold_release_from_keys_to_a_verified_feed_entry() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).display().to_string();
    let keys: Vec<String> = (0..3)
        .map(|i| ok(&["keygen", &p(&format!("k{i}"))]).trim().to_string())
        .collect();
    ok(&["signer-keygen", &p("signer")]);
    std::fs::write(p("prog"), b"#!/bin/sh\nexit 0\n").unwrap();
    let (signer, out, archive) = (p("signer"), p("b"), p("b.tar"));
    let mut args = vec![
        "bundle",
        "--signer",
        &signer,
        "--out",
        &out,
        "--archive",
        &archive,
    ];
    args.extend([
        "--name",
        "dcnode",
        "--version",
        "1.2.0",
        "--isv-svn",
        "3",
        "--entrypoint",
        "bin/prog",
        "--threshold",
        "2",
    ]);
    for k in &keys {
        args.extend(["--committee-key", k]);
    }
    let prog = format!("{}=bin/prog", p("prog"));
    args.push(&prog);
    let built = ok(&args);
    let mre = built
        .lines()
        .find_map(|l| l.strip_prefix("mrenclave "))
        .unwrap()
        .trim()
        .to_string();

    let url = format!("file://{}", p("b.tar"));
    ok(&[
        "sign",
        "--key",
        &p("k0"),
        "--version",
        "1.2.0",
        "--mr-enclave",
        &mre,
        "--isv-svn",
        "3",
        "--artifact",
        &p("b.tar"),
        "--url",
        &url,
        "--out",
        &p("r.json"),
    ]);
    let verify = |extra: &[&str]| {
        let mut a = vec!["verify", "--threshold", "2", "--artifact"];
        let art = p("b.tar");
        a.push(&art);
        for k in &keys {
            a.extend(["--committee-key", k]);
        }
        a.extend(extra);
        let r = p("r.json");
        a.push(&r);
        run(&a)
    };
    let (good, text) = verify(&[]);
    assert!(!good && text.contains("1 of the required 2"), "{text}");
    ok(&[
        "sign",
        "--key",
        &p("k1"),
        "--record",
        &p("r.json"),
        "--out",
        &p("r.json"),
    ]);
    let (good, text) = verify(&[]);
    assert!(good, "{text}");
    ok(&["publish", "--feed", &p("feed"), &p("r.json")]);
    assert!(t.path().join("feed/dcnode-1.2.0.json").exists());

    // Legacy EnclaveIds signature and a revocation, both checked by the library.
    let sig = ok(&["sign-legacy", "--key", &p("k0"), "--mr-enclave", &mre])
        .trim()
        .to_string();
    let committee = dc_release::Committee::new(
        keys.iter()
            .map(|k| dc_release::CommitteeKey::parse(k).unwrap()),
        1,
    )
    .unwrap();
    assert!(dc_release::legacy::signer_of(&committee, mre.as_bytes(), sig.as_bytes()).is_some());
    ok(&[
        "revoke",
        "--key",
        &p("k0"),
        "--mr-enclave",
        &mre,
        "--reason",
        "test",
        "--out",
        &p("rev.json"),
    ]);
    let rev =
        dc_release::revocation::SignedRevocation::parse(&std::fs::read(p("rev.json")).unwrap())
            .unwrap();
    assert_eq!(rev.verify(&committee).unwrap().to_string(), mre);
}

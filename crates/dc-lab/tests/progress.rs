//! Download progress with real processes: the agent's progress log lines during an upgrade
//! whose artifact arrives slowly; `dcupgrade check --download` fetching and verifying what
//! DCChain announces; `dcrelease verify --fetch` checking every URL of a record. Progress
//! bars are for terminals only: with stderr a pipe, as here, nothing of them is printed.
//!
//! Nothing here depends on how fast the machine is: the start and end lines are always
//! logged, and the one periodic line asserted comes from a pause in the transfer that is
//! longer than the logging interval.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{bins, world, AGENT, T};
use dc_chain::storage::{self, encode};
use dc_chain::testnet::Testnet;
use dc_lab::Lab;
use dc_release::committee::CommitteeSigner;
use dc_release::{Artifact, ReleaseRecord, Role, SignedRecord};
use sha2::{Digest, Sha256};

/// Serves `file` at any path over HTTP/1.0: the first half at once, then — after `pause` —
/// the second half. The first half is larger than what the sockets between server and client
/// can buffer, so the client has started reading before the pause begins, and the second
/// half reaches it at least `pause` after its download started.
fn serve_with_a_pause(file: PathBuf, pause: Duration) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let file = file.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 2048];
                let _ = conn.read(&mut buf);
                let Ok(b) = std::fs::read(&file) else {
                    let _ = conn.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                    return;
                };
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", b.len());
                let (first, second) = b.split_at(b.len() / 2);
                let _ = conn
                    .write_all(head.as_bytes())
                    .and_then(|_| conn.write_all(first))
                    .map(|_| std::thread::sleep(pause))
                    .and_then(|_| conn.write_all(second));
            });
        }
    });
    port
}

/// The value of `name=` in a text log line (quoted strings unquoted).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[at..];
    match rest.strip_prefix('"') {
        Some(q) => q.split('"').next(),
        None => rest.split_whitespace().next(),
    }
}

fn num(line: &str, name: &str) -> u64 {
    field(line, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_logs_download_progress_during_an_upgrade() {
    let w = world().await;
    let v2 = w.lab.build_node("2.0.0", 2, "", &[]).unwrap();
    let size = std::fs::metadata(&v2.archive).unwrap().len();
    // Half of the artifact must exceed what the loopback sockets buffer before the agent
    // reads (the send buffer, at most 4 MiB by default, and the initial receive window) for
    // the pause to fall inside the agent's download; a dcnode bundle is tens of MiB.
    assert!(size > 16 << 20, "artifact of {size} bytes is too small");
    let port = serve_with_a_pause(v2.archive.clone(), Duration::from_secs(3));
    let url = format!("http://127.0.0.1:{port}/dcnode-2.0.0.tar");
    let mut r = v2.record.record.clone();
    r.artifact.as_mut().unwrap().urls = vec![url.clone()];
    w.lab.publish(&w.lab.sign(r).unwrap()).unwrap();
    w.lab
        .wait_serving("2.0.0", T)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", w.lab.agent_log()));

    let log = w.lab.agent_log();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| field(l, "url") == Some(url.as_str()))
        .collect();
    let with = |msg: &str| -> Vec<(usize, &str)> {
        ours.iter()
            .enumerate()
            .filter(|(_, l)| l.contains(&format!(" {msg} ")))
            .map(|(i, l)| (i, *l))
            .collect()
    };
    let (started, middle, received) = (
        with("download started"),
        with("downloading"),
        with("download received"),
    );
    assert_eq!(started.len(), 1, "one start line:\n{log}");
    assert_eq!(received.len(), 1, "one final line:\n{log}");
    assert!(
        !middle.is_empty(),
        "a progress line during the pause:\n{log}"
    );
    let (s, f) = (started[0], received[0]);
    assert_eq!((num(s.1, "bytes"), num(s.1, "total")), (0, size), "{}", s.1);
    assert_eq!(
        (num(f.1, "bytes"), num(f.1, "total")),
        (size, size),
        "{}",
        f.1
    );
    assert_eq!(num(f.1, "percent"), 100);
    assert_eq!(field(f.1, "eta"), Some("0s"), "{}", f.1);
    assert!(
        field(f.1, "rate").is_some_and(|r| r.ends_with("/s")),
        "{}",
        f.1
    );
    let mut last = 0;
    for (i, l) in &middle {
        assert!(s.0 < *i && *i < f.0, "lines out of order:\n{log}");
        let bytes = num(l, "bytes");
        assert!(bytes > last && bytes <= size, "{l}");
        assert_eq!(num(l, "total"), size, "{l}");
        assert!(num(l, "percent") <= 100, "{l}");
        assert!(field(l, "rate").is_some_and(|r| r.ends_with("/s")), "{l}");
        assert!(field(l, "eta").is_some(), "{l}");
        // At most one line per 2 s and per 10 %.
        assert!(num(l, "elapsed_ms") >= 2000, "{l}");
        last = bytes;
    }
    assert!(middle.len() <= 10, "{middle:?}");
    w.all_readable_from("2.0.0").await;
}

fn tars(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "tar"))
                .collect()
        })
        .unwrap_or_default()
}

/// No progress bar, no carriage returns or escape sequences, when stderr is not a terminal.
fn no_bar(stderr: &str) {
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "terminal output on a pipe: {stderr:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_download_fetches_and_verifies_the_announced_release() {
    let dir = tempfile::tempdir().unwrap();
    let net = Testnet::start(dir.path()).await.unwrap();
    let lab = Lab::start(&dir.path().join("lab"), bins()).unwrap();
    let v2 = lab.build_node("2.0.0", 2, "", &[]).unwrap();
    // The same version with another identity: what a compromised mirror might serve.
    let other = lab
        .build_node("2.0.0", 2, "-other", &["--listen", "127.0.0.1:1"])
        .unwrap();
    let manifest = v2.bundle_dir.join("enclave.toml");
    lab.announce_on_chain(&net, &v2, "2.0.0", 1).await.unwrap();
    let check = |store: &Path, json: bool| {
        let mut c = Command::new(&*AGENT);
        c.args(["check", "--chain", &net.url(), "--current", "1.0.0"])
            .arg("--manifest")
            .arg(&manifest)
            .arg("--download")
            .arg(store);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };

    let store = dir.path().join("store");
    let (ok, out, err) = check(&store, true);
    assert!(ok, "{out}\n{err}");
    no_bar(&err);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["decision"]
            .as_str()
            .unwrap()
            .starts_with("upgrade to 2.0.0"),
        "{v}"
    );
    let d = &v["download"];
    assert_eq!(d["verified"], true, "{v}");
    assert_eq!(d["url"], lab.artifact_url(&v2).as_str());
    assert_eq!(d["version"], "2.0.0");
    assert_eq!(d["isv_svn"], 2);
    let archive = PathBuf::from(d["artifact"].as_str().unwrap());
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&v2.archive).unwrap()
    );
    assert_eq!(d["size"], std::fs::metadata(&v2.archive).unwrap().len());
    let bundle = store.join(v2.mr_enclave.to_string());
    assert_eq!(d["bundle"], bundle.display().to_string().as_str());
    assert_eq!(
        dc_bundle::Bundle::open(&bundle).unwrap().mr_enclave,
        v2.mr_enclave
    );
    // Again, in text (a chain release has no signed digest: downloaded and verified again).
    let (ok, out, err) = check(&store, false);
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(
            "  verified    measures the committee-signed EnclaveID; dcnode 2.0.0, ISVSVN 2"
        ),
        "{out}"
    );

    // The chain names v2's EnclaveID but the URL serves another enclave: refused, and the
    // artifact is not kept.
    let mut wrong = lab.chain_program(&v2, "2.0.0");
    wrong.origin_url = lab.artifact_url(&other).into_bytes();
    net.set_storage_and_new_block(&[(storage::dc_program_key(), Some(encode::dc_program(&wrong)))])
        .await
        .unwrap();
    let store2 = dir.path().join("store2");
    let (ok, out, err) = check(&store2, true);
    assert!(!ok, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["download"]["verified"], false, "{v}");
    let e = v["download"]["error"].as_str().unwrap();
    assert!(
        e.contains(&format!(
            "measures {} but the committee signed {}",
            other.mr_enclave, v2.mr_enclave
        )),
        "{e}"
    );
    assert!(err.contains("measures"), "{err}");
    assert!(tars(&store2).is_empty(), "{:?}", tars(&store2));
    assert!(!store2.join(v2.mr_enclave.to_string()).exists());

    // Nothing authorized to download: an error, not an empty success.
    net.set_storage_and_new_block(&[(storage::enclave_ids_key(), None)])
        .await
        .unwrap();
    let (ok, out, err) = check(&dir.path().join("store3"), false);
    assert!(!ok, "{out}\n{err}");
    assert!(err.contains("nothing to download"), "{err}");
}

/// `dcrelease`, next to the test's executable like the lab's programs.
fn dcrelease() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("dcrelease"))
        .find(|p| p.is_file())
        .expect("dcrelease not found: cargo build --workspace --bins")
}

#[test]
fn dcrelease_verify_fetch_checks_every_url_against_the_signed_digest() {
    let dir = tempfile::tempdir().unwrap();
    let committee = CommitteeSigner::generate().unwrap();
    let key = committee.public().to_text();
    let artifact = dir.path().join("a.tar");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(&artifact, &data).unwrap();
    let impostor = dir.path().join("b.tar");
    let mut bad = data.clone();
    bad[1_234_567] ^= 1;
    std::fs::write(&impostor, &bad).unwrap();
    let http = format!(
        "http://127.0.0.1:{}/a.tar",
        serve_with_a_pause(artifact.clone(), Duration::ZERO)
    );
    let http_bad = format!(
        "http://127.0.0.1:{}/a.tar",
        serve_with_a_pause(impostor.clone(), Duration::ZERO)
    );
    let file = format!("file://{}", artifact.display());
    let record = |urls: Vec<String>, sha: [u8; 32]| {
        let mut r = SignedRecord::unsigned(ReleaseRecord {
            product: "dcnode".into(),
            role: Role::Node,
            version: "2.0.0".into(),
            mr_enclave: "ab".repeat(32),
            isv_svn: 2,
            artifact: Some(Artifact {
                sha256: hex::encode(sha),
                size: data.len() as u64,
                urls,
            }),
            expires_at: None,
        });
        r.sign(&committee).unwrap();
        let p = dir.path().join(format!("r-{}.json", rand_name()));
        std::fs::write(&p, r.to_json()).unwrap();
        p
    };
    let verify = |record: &Path, extra: &[&str]| {
        let out = Command::new(dcrelease())
            .args(["verify", "--committee-key", &key])
            .args(extra)
            .arg(record)
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        no_bar(&err);
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            err,
        )
    };
    let sha: [u8; 32] = Sha256::digest(&data).into();

    // Every URL serves the signed artifact.
    let good = record(vec![http.clone(), file.clone()], sha);
    let (ok, out, err) = verify(&good, &["--fetch"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.starts_with("valid: dcnode 2.0.0"), "{out}");
    for u in [&http, &file] {
        assert!(
            out.contains(&format!(
                "ok      {u} ({} bytes, sha256 {})",
                data.len(),
                hex::encode(sha)
            )),
            "{out}"
        );
    }
    // A local copy, hashed.
    let (ok, out, err) = verify(&good, &["--artifact", artifact.to_str().unwrap()]);
    assert!(ok, "{out}\n{err}");
    let (ok, _, err) = verify(&good, &["--artifact", impostor.to_str().unwrap()]);
    assert!(!ok && err.contains("does not match the record"), "{err}");

    // A mirror serving other bytes, a missing file, a wrong signed digest: each URL is named.
    let mixed = record(
        vec![
            http.clone(),
            http_bad.clone(),
            format!("file://{}", dir.path().join("missing.tar").display()),
        ],
        sha,
    );
    let (ok, out, err) = verify(&mixed, &["--fetch"]);
    assert!(!ok, "{out}\n{err}");
    assert!(out.contains(&format!("ok      {http} ")), "{out}");
    let bad_sha = hex::encode(Sha256::digest(&bad));
    assert!(
        out.contains(&format!(
            "FAILED  {http_bad}: {} bytes with SHA-256 {bad_sha}",
            bad.len()
        )),
        "{out}"
    );
    assert!(out.contains("FAILED  file://"), "{out}");
    assert!(
        err.contains("2 of 3 URL(s) do not serve the signed artifact"),
        "{err}"
    );
    let wrong = record(vec![file.clone()], [0x11; 32]);
    let (ok, out, _) = verify(&wrong, &["--fetch"]);
    assert!(!ok && out.contains("FAILED  file://"), "{out}");

    // Larger than signed: refused without reading on.
    let big = dir.path().join("big.tar");
    std::fs::write(&big, [data.as_slice(), b"more"].concat()).unwrap();
    let over = record(vec![format!("file://{}", big.display())], sha);
    let (ok, out, _) = verify(&over, &["--fetch"]);
    assert!(!ok && out.contains("more than the signed"), "{out}");
}

fn rand_name() -> String {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    hex::encode(b)
}

//! The software TEE platform as real processes: `dctee-sim serve`, enclaves started with
//! `dctee-sim launch`, the `dctee-probe` enclave exercising EREPORT/EGETKEY/sealing.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use dc_bundle::{BundleSpec, SignerKey, TrustRoots};

const SIM: &str = env!("CARGO_BIN_EXE_dctee-sim");
const PROBE: &str = env!("CARGO_BIN_EXE_dctee-probe");

struct Platform {
    child: Child,
    state: PathBuf,
}

impl Platform {
    fn start(state: &Path, cpusvn: Option<&str>) -> Self {
        Self::try_start(state, cpusvn).unwrap_or_else(|e| panic!("platform did not start: {e}"))
    }

    fn try_start(state: &Path, cpusvn: Option<&str>) -> Result<Self, String> {
        let mut cmd = Command::new(SIM);
        cmd.arg("serve")
            .arg("--state")
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(s) = cpusvn {
            cmd.args(["--cpusvn", s]);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if !line.contains("serving on") {
            let out = child.wait_with_output().unwrap();
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        // Keep draining stderr so the platform never blocks on a full pipe.
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || std::io::copy(&mut BufReader::new(err), &mut std::io::sink()));
        Ok(Self {
            child,
            state: state.to_path_buf(),
        })
    }

    fn launch(&self, bundle: &Path, cwd: &Path, args: &[&str]) -> (i32, String) {
        let out = Command::new(SIM)
            .arg("launch")
            .arg("--state")
            .arg(&self.state)
            .arg(bundle)
            .arg("--")
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Runs and asserts success; returns stdout+stderr.
    fn ok(&self, bundle: &Path, cwd: &Path, args: &[&str]) -> String {
        let (code, out) = self.launch(bundle, cwd, args);
        assert_eq!(code, 0, "{args:?} failed: {out}");
        out
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A probe bundle; `variant` is a measured argument, so different variants are different
    /// enclaves of otherwise identical code.
    fn bundle(&self, name: &str, signer: u8, isv_svn: u16, debug: bool, variant: &str) -> PathBuf {
        self.bundle_with_env(name, signer, isv_svn, debug, variant, &["PROBE_MODE"])
    }

    /// [`Fixture::bundle`] whose measured manifest lets the launcher set `env_passthrough`.
    fn bundle_with_env(
        &self,
        name: &str,
        signer: u8,
        isv_svn: u16,
        debug: bool,
        variant: &str,
        env_passthrough: &[&str],
    ) -> PathBuf {
        let out = self.path().join(name);
        let spec = BundleSpec {
            name: "probe".into(),
            version: format!("1.0.{isv_svn}"),
            isv_prod_id: 7,
            isv_svn,
            debug,
            entrypoint: "bin/dctee-probe".into(),
            args: vec![],
            env_passthrough: env_passthrough.iter().map(|s| s.to_string()).collect(),
            trust: TrustRoots {
                authorized_enclaves: vec![],
                committee_keys: vec![variant.to_string()],
                threshold: 0,
                allow_debug_peers: false,
            },
        };
        dc_bundle::build(
            &out,
            &spec,
            &[(PROBE.into(), "bin/dctee-probe".into())],
            &SignerKey::from_seed([signer; 32]),
        )
        .unwrap();
        out
    }
}

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {out}"))
}

fn measured(bundle: &Path) -> String {
    let out = Command::new(SIM)
        .arg("measure")
        .arg(bundle)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("mrenclave  "))
        .unwrap()
        .to_string()
}

#[test]
fn identity_is_assigned_by_the_platform_from_the_measurement() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let a = f.bundle("a", 1, 1, false, "a");
    let out = p.ok(&a, f.path(), &["identity"]);
    assert_eq!(field(&out, "mrenclave"), measured(&a));
    assert_eq!(
        field(&out, "mrsigner"),
        SignerKey::from_seed([1; 32]).mr_signer().to_string()
    );
    assert_eq!(field(&out, "isvsvn"), "1");
    assert_eq!(field(&out, "debug"), "false");
    // The measured manifest is what the enclave can read its trust roots from.
    assert!(p
        .ok(&a, f.path(), &["manifest"])
        .contains("committee_keys = [\"a\"]"));
    // The launcher cannot hand the enclave another channel.
    let out = Command::new(SIM)
        .args(["launch", "--state"])
        .arg(&p.state)
        .args(["--env", "DCTEE_SIM_FD=4"])
        .arg(&a)
        .args(["--", "identity"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("may not be set"));
    // Nor preload code into it, nor set variables its manifest does not list.
    for env in ["LD_PRELOAD=/tmp/evil.so", "OTHER=1"] {
        let out = Command::new(SIM)
            .args(["launch", "--state"])
            .arg(&p.state)
            .args(["--env", env])
            .arg(&a)
            .args(["--", "identity"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{env}");
    }
    let out = Command::new(SIM)
        .args(["launch", "--state"])
        .arg(&p.state)
        .args(["--env", "PROBE_MODE=x"])
        .arg(&a)
        .args(["--", "identity"])
        .output()
        .unwrap();
    assert!(out.status.success(), "a listed variable is passed");
}

#[test]
fn report_for_b_verifies_in_b_only_and_not_after_a_bit_flip() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let (a, b, c) = (
        f.bundle("a", 1, 1, false, "a"),
        f.bundle("b", 1, 1, false, "b"),
        f.bundle("c", 1, 1, false, "c"),
    );
    p.ok(&b, f.path(), &["target-info", "b.ti"]);
    let data = "ab".repeat(64);
    p.ok(&a, f.path(), &["report", "b.ti", &data, "a-for-b.rep"]);
    let out = p.ok(&b, f.path(), &["verify", "a-for-b.rep"]);
    assert!(
        out.contains(&format!("verified mrenclave={}", measured(&a))),
        "{out}"
    );
    assert!(out.contains(&format!("report_data={data}")));

    let (code, out) = p.launch(&c, f.path(), &["verify", "a-for-b.rep"]);
    assert_eq!(code, 1);
    assert!(out.contains("report MAC does not verify"), "{out}");

    // One bit in each field, MAC'd body and MAC alike (the exhaustive flip is a unit test).
    let report = std::fs::read(f.path().join("a-for-b.rep")).unwrap();
    for byte in [0, 16, 48, 64, 128, 192, 256, 258, 320, 383, 384, 416, 431] {
        let mut flipped = report.clone();
        flipped[byte] ^= 0x01;
        std::fs::write(f.path().join("flip.rep"), &flipped).unwrap();
        let (code, out) = p.launch(&b, f.path(), &["verify", "flip.rep"]);
        assert_eq!(code, 1, "flip at byte {byte} verified: {out}");
    }
    // Truncated report: a clear parse error.
    std::fs::write(f.path().join("short.rep"), &report[..431]).unwrap();
    let (code, out) = p.launch(&b, f.path(), &["verify", "short.rep"]);
    assert_eq!(code, 1);
    assert!(out.contains("must be exactly 432 bytes"), "{out}");
}

#[test]
fn mrenclave_and_mrsigner_sealing_policies() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let v1 = f.bundle("v1", 1, 1, false, "x");
    let v1_other_byte = f.bundle("v1b", 1, 1, false, "y");
    let v2 = f.bundle("v2", 1, 2, false, "x");
    let foreign = f.bundle("foreign", 2, 5, false, "x");

    p.ok(&v1, f.path(), &["seal", "mrenclave", "only-v1", "e.blob"]);
    assert!(p
        .ok(&v1, f.path(), &["unseal", "mrenclave", "e.blob"])
        .contains("unsealed=only-v1"));
    let (code, out) = p.launch(&v1_other_byte, f.path(), &["unseal", "mrenclave", "e.blob"]);
    assert_eq!(code, 1);
    assert!(out.contains("does not open"), "{out}");

    p.ok(&v1, f.path(), &["seal", "mrsigner", "family", "s.blob"]);
    assert!(p
        .ok(&v2, f.path(), &["unseal", "mrsigner", "s.blob"])
        .contains("unsealed=family"));
    assert_eq!(
        p.launch(&foreign, f.path(), &["unseal", "mrsigner", "s.blob"])
            .0,
        1
    );

    p.ok(&v2, f.path(), &["seal", "mrsigner", "newer", "s2.blob"]);
    let (code, out) = p.launch(&v1, f.path(), &["unseal", "mrsigner", "s2.blob"]);
    assert_eq!(code, 1);
    assert!(out.contains("ISVSVN is 2, above this enclave's 1"), "{out}");
    // EGETKEY itself refuses it too, had the request reached it.
    let (code, out) = p.launch(&v1, f.path(), &["unseal-unchecked", "s2.blob"]);
    assert_eq!(code, 1);
    assert!(out.contains("SGX_INVALID_ISVSVN"), "{out}");
    // A blob is opened only under the policy it was sealed with.
    let (code, out) = p.launch(&v1, f.path(), &["unseal", "mrsigner", "e.blob"]);
    assert_eq!(code, 1);
    assert!(out.contains("KEYPOLICY is 0x0001"), "{out}");
}

#[test]
fn sealed_data_survives_a_cpusvn_increase_across_a_restart_and_is_never_deleted() {
    let f = Fixture::new();
    let state = f.path().join("state");
    let a = f.bundle("a", 1, 1, false, "a");
    let p = Platform::start(&state, None);
    p.ok(&a, f.path(), &["seal", "mrenclave", "keys", "k.blob"]);
    p.ok(&a, f.path(), &["seal", "mrsigner", "keys2", "k2.blob"]);
    p.stop();

    // Microcode update: CPUSVN rises, platform restarts.
    let newer = "02".repeat(16);
    let p = Platform::start(&state, Some(&newer));
    let out = p.ok(&a, f.path(), &["identity"]);
    assert_eq!(field(&out, "cpusvn"), newer);
    assert!(p
        .ok(&a, f.path(), &["unseal", "mrenclave", "k.blob"])
        .contains("unsealed=keys"));
    assert!(p
        .ok(&a, f.path(), &["unseal", "mrsigner", "k2.blob"])
        .contains("unsealed=keys2"));
    // Something sealed on the newer TCB...
    p.ok(&a, f.path(), &["seal", "mrenclave", "new", "new.blob"]);
    p.stop();

    // ...does not open after a microcode rollback, and the blob is left exactly as it was.
    let before = std::fs::read(f.path().join("new.blob")).unwrap();
    let p = Platform::start(&state, Some(&"01".repeat(16)));
    let (code, out) = p.launch(&a, f.path(), &["unseal", "mrenclave", "new.blob"]);
    assert_eq!(code, 1);
    assert!(out.contains("SGX_INVALID_CPUSVN"), "{out}");
    assert_eq!(std::fs::read(f.path().join("new.blob")).unwrap(), before);
}

#[test]
fn debug_enclaves_are_marked_and_get_different_seal_keys() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let prod = f.bundle("prod", 1, 1, false, "x");
    let dbg = f.bundle("dbg", 1, 1, true, "x");
    let out = p.ok(&dbg, f.path(), &["identity"]);
    assert_eq!(field(&out, "debug"), "true");
    assert_eq!(field(&out, "attributes"), "0x7");

    p.ok(&prod, f.path(), &["target-info", "prod.ti"]);
    p.ok(
        &dbg,
        f.path(),
        &["report", "prod.ti", &"00".repeat(64), "dbg.rep"],
    );
    assert!(p
        .ok(&prod, f.path(), &["verify", "dbg.rep"])
        .contains("debug=true"));

    // Same signer, product and ISVSVN: only the DEBUG bit differs, and the keys differ.
    p.ok(&dbg, f.path(), &["seal", "mrsigner", "d", "d.blob"]);
    assert_eq!(
        p.launch(&prod, f.path(), &["unseal", "mrsigner", "d.blob"])
            .0,
        1
    );
    p.ok(&prod, f.path(), &["seal", "mrsigner", "p", "p.blob"]);
    assert_eq!(
        p.launch(&dbg, f.path(), &["unseal", "mrsigner", "p.blob"])
            .0,
        1
    );
}

#[test]
fn bad_input_is_rejected_and_the_platform_keeps_serving_others() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let a = f.bundle("a", 1, 1, false, "a");

    // A long-running enclave keeps being served while others misbehave.
    let mut holder = Command::new(SIM)
        .args(["launch", "--state"])
        .arg(&p.state)
        .arg(&a)
        .args(["--", "hold", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut holder_out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    holder_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "holding");

    assert!(p.ok(&a, f.path(), &["garbage"]).contains("channel closed"));
    assert!(p
        .ok(&a, f.path(), &["oversized"])
        .contains("channel closed"));
    assert!(p
        .ok(&a, f.path(), &["getkey-bad-name"])
        .contains("SGX_INVALID_KEYNAME"));

    // Garbage and an oversized frame on the control socket.
    let sock = p.state.join("control.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(&[7; 100]).unwrap();
    drop(s);
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    drop(s);

    // A bundle whose file no longer matches its manifest is refused at launch.
    let tampered = f.bundle("t", 1, 1, false, "t");
    let exe = tampered.join("bin/dctee-probe");
    let mut bytes = std::fs::read(&exe).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&exe, bytes).unwrap();
    let (code, out) = p.launch(&tampered, f.path(), &["identity"]);
    assert_eq!(code, 125);
    assert!(out.contains("SHA-256"), "{out}");

    let mut rest = String::new();
    std::io::Read::read_to_string(&mut holder_out, &mut rest).unwrap();
    assert!(
        holder.wait().unwrap().success(),
        "the holding enclave failed: {rest}"
    );
    assert!(rest.contains("served"), "{rest}");
    // And new enclaves still start.
    p.ok(&a, f.path(), &["identity"]);
}

#[test]
fn stopping_the_launcher_stops_the_enclave() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let a = f.bundle("a", 1, 1, false, "a");
    let mut launcher = Command::new(SIM)
        .args(["launch", "--state"])
        .arg(&p.state)
        .arg(&a)
        .args(["--", "hold", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(launcher.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let copies = p.state.join("enclaves");
    assert_eq!(std::fs::read_dir(&copies).unwrap().count(), 1);
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // The platform terminates the enclave (5 s grace) and removes its private copy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&copies).unwrap().count() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "enclave still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn platform_refuses_a_readable_root_secret() {
    let f = Fixture::new();
    let state = f.path().join("state");
    Platform::start(&state, None).stop();
    let secret = state.join("root.secret");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Platform::try_start(&state, None)
        .err()
        .expect("must refuse");
    assert!(err.contains("accessible by group or others"), "{err}");
}

#[test]
fn sigterm_to_the_launcher_returns_only_after_the_enclave_exited() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let a = f.bundle("a", 1, 1, false, "a");
    let mut launcher = Command::new(SIM)
        .args(["launch", "--verbose", "--state"])
        .arg(&p.state)
        .arg(&a)
        .args(["--", "hold", "60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(launcher.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let pid: u32 = line
        .split_whitespace()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let mut out = BufReader::new(launcher.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(launcher.id() as i32, libc::SIGTERM) };
    let status = launcher.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "the enclave's own exit code is passed on"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "enclave {pid} still running after its launcher exited"
    );
}

#[test]
fn a_blob_planted_under_keypolicy_0_is_refused_before_egetkey() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    // A: an enclave the host built and signed itself, claiming the product's ISVPRODID.
    // B: the genuine enclave whose keyring the host wants to replace.
    let a = f.bundle("host-built", 2, 1, false, "host");
    let b = f.bundle("genuine", 1, 1, false, "genuine");
    assert_ne!(measured(&a), measured(&b));
    std::fs::write(f.path().join("planted.txt"), "attacker keys").unwrap();
    p.ok(
        &a,
        f.path(),
        &["seal-raw", "0", "0", "probe", "planted.txt", "keyring.blob"],
    );
    // The attack is real: KEYPOLICY 0 and no attribute binding leave neither identity in the
    // key, so B's EGETKEY for the recorded request gives A's key.
    assert!(p
        .ok(&b, f.path(), &["unseal-unchecked", "keyring.blob"])
        .contains("unsealed=attacker keys"));
    let before = std::fs::read(f.path().join("keyring.blob")).unwrap();
    for policy in ["mrenclave", "mrsigner"] {
        let (code, out) = p.launch(&b, f.path(), &["unseal", policy, "keyring.blob"]);
        assert_eq!(code, 1, "{policy}: {out}");
        assert!(!out.contains("unsealed="), "{policy}: {out}");
        assert!(out.contains("KEYPOLICY is 0x0000"), "{policy}: {out}");
        assert!(
            out.contains("not given to EGETKEY") && out.contains("left untouched"),
            "{policy}: {out}"
        );
    }
    // The same with the KEYPOLICY right but the attribute mask cleared.
    p.ok(
        &a,
        f.path(),
        &["seal-raw", "1", "0", "probe", "planted.txt", "masked.blob"],
    );
    let (code, out) = p.launch(&b, f.path(), &["unseal", "mrenclave", "masked.blob"]);
    assert_eq!(code, 1);
    assert!(out.contains("ATTRIBUTEMASK is flags 0x0"), "{out}");
    assert_eq!(
        std::fs::read(f.path().join("keyring.blob")).unwrap(),
        before
    );
    // B's own blobs still open.
    p.ok(
        &b,
        f.path(),
        &["seal", "mrenclave", "genuine keys", "own.blob"],
    );
    assert!(p
        .ok(&b, f.path(), &["unseal", "mrenclave", "own.blob"])
        .contains("unsealed=genuine keys"));
}

#[test]
fn gramine_bundles_are_refused_by_the_software_platform() {
    use dc_tee::sigstruct::Sigstruct;
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let genuine = f.bundle("genuine", 1, 1, false, "genuine");
    // A Gramine-format bundle whose SIGSTRUCT claims the genuine enclave's MRENCLAVE: the
    // software platform has no EINIT to check that claim.
    let g = f.path().join("g");
    std::fs::create_dir_all(g.join("bin")).unwrap();
    std::fs::copy(PROBE, g.join("bin/dctee-probe")).unwrap();
    std::fs::write(g.join("probe.manifest.sgx"), "[loader]\n").unwrap();
    let sig = Sigstruct {
        vendor: 0,
        date: 0x2026_0101,
        modulus: [0x11; 384],
        misc_select: 0,
        misc_mask: 0xFFFF_FFFF,
        attributes: dc_tee::Attributes {
            flags: dc_tee::Attributes::INIT | dc_tee::Attributes::MODE64BIT,
            xfrm: 3,
        },
        attribute_mask: dc_tee::Attributes {
            flags: !0,
            xfrm: !0,
        },
        enclave_hash: dc_tee::Measurement::from_hex(&measured(&genuine)).unwrap(),
        isv_prod_id: 7,
        isv_svn: 1,
    };
    std::fs::write(g.join("probe.sig"), sig.encode_unsigned()).unwrap();
    let h = |rel: &str| {
        hex::encode(dc_bundle::sha256_file(&g.join(rel), dc_bundle::MAX_FILE_BYTES).unwrap())
    };
    let manifest = format!(
        "name = \"probe\"\nversion = \"1.0.1\"\nisv_prod_id = 7\nisv_svn = 1\nentrypoint = \"bin/dctee-probe\"\n\
         [gramine]\nmanifest_sgx = \"probe.manifest.sgx\"\nsigstruct = \"probe.sig\"\n\
         [[files]]\npath = \"bin/dctee-probe\"\nsha256 = \"{}\"\n[[files]]\npath = \"probe.manifest.sgx\"\nsha256 = \"{}\"\n\
         [[files]]\npath = \"probe.sig\"\nsha256 = \"{}\"\n",
        h("bin/dctee-probe"),
        h("probe.manifest.sgx"),
        h("probe.sig")
    );
    std::fs::write(g.join(dc_bundle::MANIFEST_FILE), manifest).unwrap();
    // A well-formed bundle, claiming the genuine identity...
    let opened = dc_bundle::Bundle::open(&g).unwrap();
    assert!(matches!(opened.kind, dc_bundle::BundleKind::Gramine(_)));
    assert_eq!(opened.mr_enclave.to_string(), measured(&genuine));
    // ...that the software platform does not run.
    let (code, out) = p.launch(&g, f.path(), &["identity"]);
    assert_eq!(code, 125, "{out}");
    assert!(
        out.contains("the software platform runs only software-platform bundles")
            && out.contains("SIGSTRUCT, which this platform cannot verify"),
        "{out}"
    );
    assert!(!out.contains("mrenclave="), "the enclave ran: {out}");
    // Real bundles are still launched.
    p.ok(&genuine, f.path(), &["identity"]);
}

#[test]
fn only_the_enclave_holds_its_channel_not_the_processes_it_starts() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let a = f.bundle("a", 1, 1, false, "a");
    // Another enclave runs meanwhile: its channel must not reach this one either.
    let mut holder = Command::new(SIM)
        .args(["launch", "--state"])
        .arg(&p.state)
        .arg(&a)
        .args(["--", "hold", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "holding");

    // The platform passes the enclave its channel as fd 3 and nothing else.
    let out = p.ok(&a, f.path(), &["open-fds"]);
    assert_eq!(field(&out, "fds"), "0,1,2,3", "{out}");
    // Processes the enclave starts do not get the channel.
    let out = p.ok(&a, f.path(), &["spawn-child-check"]);
    assert!(field(&out, "channel").starts_with("socket:["), "{out}");
    assert_eq!(field(&out, "child-has-channel"), "false", "{out}");
    assert_eq!(field(&out, "channel-still-served"), "true", "{out}");

    let _ = holder.kill();
    let _ = holder.wait();
}

/// `dctee-sim launch` with `fds` inherited at the given descriptor numbers (as an agent
/// passes the sockets it owns), `--listen-fd` options included in `opts`.
fn launch_inheriting(
    p: &Platform,
    bundle: &Path,
    cwd: &Path,
    fds: &[(RawFd, RawFd)],
    opts: &[&str],
    args: &[&str],
) -> (i32, String) {
    let mut cmd = Command::new(SIM);
    cmd.arg("launch")
        .arg("--state")
        .arg(&p.state)
        .args(opts)
        .arg(bundle)
        .arg("--")
        .args(args)
        .current_dir(cwd);
    let fds = fds.to_vec();
    // SAFETY: fcntl and dup2 only, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // All out of the way first, then to the numbers the launcher is told (dup2 leaves
            // them inheritable).
            let mut tmp = [0; 8];
            for (i, &(src, _)) in fds.iter().enumerate() {
                tmp[i] = libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 600);
                if tmp[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &(_, to)) in fds.iter().enumerate() {
                if libc::dup2(tmp[i], to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn env_of(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("env:"))
        .map(String::from)
        .collect()
}

#[test]
fn passed_listening_sockets_reach_the_enclave_by_socket_activation() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let a = f.bundle("a", 1, 1, false, "a");

    // Without sockets the enclave's environment is what it always was.
    let out = p.ok(&a, f.path(), &["env"]);
    assert_eq!(
        env_of(&out),
        ["DCTEE_SIM_FD=3", "PATH=/usr/local/bin:/usr/bin:/bin"],
        "{out}"
    );

    let data = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let pass = [(data.as_raw_fd(), 7), (admin.as_raw_fd(), 12)];
    let opts = ["--listen-fd", "data=7", "--listen-fd", "admin=12"];

    // The sockets at 3 and 4, the channel after them; only the platform's variables.
    let (code, out) = launch_inheriting(&p, &a, f.path(), &pass, &opts, &["env"]);
    assert_eq!(code, 0, "{out}");
    let pid = field(&out, "pid");
    assert_eq!(
        env_of(&out),
        [
            "DCTEE_SIM_FD=5".to_string(),
            "LISTEN_FDNAMES=data:admin".into(),
            "LISTEN_FDS=2".into(),
            format!("LISTEN_PID={pid}"),
            "PATH=/usr/local/bin:/usr/bin:/bin".into(),
        ],
        "{out}"
    );
    let (code, out) = launch_inheriting(&p, &a, f.path(), &pass, &opts, &["open-fds"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(field(&out, "fds"), "0,1,2,3,4,5", "{out}");

    // The enclave serves a connection made before it even started: it waited in the queue of
    // a socket the test owns.
    let mut early = std::net::TcpStream::connect(admin.local_addr().unwrap()).unwrap();
    let (code, out) = launch_inheriting(&p, &a, f.path(), &pass, &opts, &["accept-once", "admin"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(field(&out, "listeners"), "data,admin", "{out}");
    assert_eq!(field(&out, "fds"), "3,4", "{out}");
    assert_eq!(field(&out, "accepted"), "admin", "{out}");
    let mut line = String::new();
    early.read_to_string(&mut line).unwrap();
    assert_eq!(line, "hello from the enclave on admin\n");

    // The enclave is gone and so is the launcher; the socket is still the test's, listening.
    let c = std::net::TcpStream::connect(data.local_addr().unwrap()).unwrap();
    let (served, _) = data.accept().unwrap();
    assert_eq!(served.peer_addr().unwrap(), c.local_addr().unwrap());
}

#[test]
fn only_listening_tcp_sockets_can_be_passed() {
    use dc_tee::sim::control::{Event, LaunchRequest, LaunchWithListeners, MAX_CONTROL_FRAME};
    use std::os::fd::AsFd;
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    let a = f.bundle("a", 1, 1, false, "a");

    // The launcher refuses before anything reaches the platform...
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let not_listening = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let file = std::fs::File::open(PROBE).unwrap();
    for (what, fd) in [
        ("connected", not_listening.as_raw_fd()),
        ("udp", udp.as_raw_fd()),
        ("file", file.as_raw_fd()),
    ] {
        let (code, out) = launch_inheriting(
            &p,
            &a,
            f.path(),
            &[(fd, 9)],
            &["--listen-fd", "data=9"],
            &["identity"],
        );
        assert_eq!(code, 125, "{what}: {out}");
        assert!(out.contains("only listening TCP sockets"), "{what}: {out}");
        assert!(
            !out.contains("mrenclave="),
            "{what}: the enclave ran: {out}"
        );
    }
    let (code, out) = launch_inheriting(
        &p,
        &a,
        f.path(),
        &[],
        &["--listen-fd", "data=9"],
        &["identity"],
    );
    assert_eq!(code, 125, "a descriptor that is not open: {out}");
    for bad in ["data", "=9", "a:b=9", "data=2", "data=x"] {
        let (code, out) =
            launch_inheriting(&p, &a, f.path(), &[], &["--listen-fd", bad], &["identity"]);
        assert_eq!(code, 125, "{bad}: {out}");
    }

    // ...and the platform refuses on its own, whatever a client sends.
    let request = LaunchRequest {
        bundle: a.display().to_string(),
        cwd: f.path().display().to_string(),
        args: vec!["identity".into()],
        env: vec![],
    };
    let refusal = |names: &[&str], fds: &[std::os::fd::BorrowedFd<'_>]| {
        let mut conn =
            std::os::unix::net::UnixStream::connect(p.state.join("control.sock")).unwrap();
        let req = LaunchWithListeners {
            request: request.clone(),
            listener_names: names.iter().map(|s| s.to_string()).collect(),
        };
        dc_tee::sim::wire::write_frame(&mut conn, &req.encode()).unwrap();
        if fds.is_empty() {
            let _ = conn.shutdown(std::net::Shutdown::Write);
        } else {
            dc_tee_sim::fds::send_fds(&conn, fds).unwrap();
        }
        let mut events = Vec::new();
        while let Ok(Some(frame)) = dc_tee::sim::wire::read_frame(&mut conn, MAX_CONTROL_FRAME) {
            events.push(Event::decode(&frame).unwrap());
        }
        match events.as_slice() {
            [Event::Error(m)] => m.clone(),
            other => panic!("{names:?}: expected one refusal, got {other:?}"),
        }
    };
    let m = refusal(&["data"], &[udp.as_fd()]);
    assert!(m.contains("only listening TCP sockets"), "{m}");
    let m = refusal(&["data"], &[not_listening.as_fd()]);
    assert!(m.contains("not listening"), "{m}");
    let m = refusal(&["data", "admin"], &[l.as_fd()]);
    assert!(m.contains("names 2 listening sockets but 1"), "{m}");
    let m = refusal(&["data"], &[]);
    assert!(m.contains("receiving the listening sockets"), "{m}");
    let nine: Vec<_> = (0..9).map(|_| l.as_fd()).collect();
    let m = refusal(&["data"], &nine);
    assert!(m.contains("more than 8"), "{m}");
    // The platform kept none of them and still launches.
    p.ok(&a, f.path(), &["identity"]);
}

#[test]
fn the_launcher_cannot_set_the_socket_activation_variables() {
    let f = Fixture::new();
    let p = Platform::start(&f.path().join("state"), None);
    // Even listed in the measured manifest, these are the platform's to set.
    let reserved = ["LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID", "DCTEE_SIM_FD"];
    let mut listed = reserved.to_vec();
    listed.push("PROBE_MODE");
    let a = f.bundle_with_env("a", 1, 1, false, "a", &listed);
    for (k, v) in [
        ("LISTEN_FDS", "9"),
        ("LISTEN_FDNAMES", "data"),
        ("LISTEN_PID", "1"),
        ("DCTEE_SIM_FD", "0"),
    ] {
        let out = Command::new(SIM)
            .args(["launch", "--state"])
            .arg(&p.state)
            .args(["--env", &format!("{k}={v}")])
            .arg(&a)
            .args(["--", "env"])
            .current_dir(f.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(125), "{k}: {text}");
        assert!(text.contains("only the platform sets it"), "{k}: {text}");
        assert!(!text.contains("env:"), "{k}: the enclave ran: {text}");
    }
    // A listed, unreserved variable still passes.
    let out = Command::new(SIM)
        .args(["launch", "--state"])
        .arg(&p.state)
        .args(["--env", "PROBE_MODE=x"])
        .arg(&a)
        .args(["--", "env"])
        .current_dir(f.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("env:PROBE_MODE=x"));
}

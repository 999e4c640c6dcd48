//! `dcupgrade config check` on the real binary: the README's example and the deploy example
//! are valid, the environment overrides the file, an unknown key is refused by name.

mod common;

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The ```toml block of README's "Configuration" section.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Configuration section");
    section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("a ```toml block in README's Configuration section")
        .to_string()
}

fn check(file: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(&*common::AGENT);
    c.args(["config", "check"]).arg(file);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn readme_and_deploy_examples_pass_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let readme = dir.path().join("readme.toml");
    std::fs::write(&readme, readme_example()).unwrap();
    for f in [readme, root().join("deploy/systemd/dcupgrade.toml")] {
        let (ok, out, err) = check(&f, &[]);
        assert!(ok, "{}: {err}", f.display());
        assert!(out.contains("node_listen = \"127.0.0.1:7000\""), "{out}");
        // The printed configuration is itself a valid file.
        let again = dir.path().join("again.toml");
        std::fs::write(&again, &out).unwrap();
        let (ok2, out2, err2) = check(&again, &[]);
        assert!(ok2, "{err2}");
        assert_eq!(out, out2);
    }
}

#[test]
fn environment_overrides_the_file_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = root().join("deploy/systemd/dcupgrade.toml");
    let (ok, out, err) = check(
        &f,
        &[
            ("DCUPGRADE_NODE_LISTEN", "127.0.0.1:7100"),
            ("DCUPGRADE_LOG_FORMAT", "json"),
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("node_listen = \"127.0.0.1:7100\""), "{out}");
    assert!(out.contains("log_format = \"json\""), "{out}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&f).unwrap() + "node_lisen = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let (ok, _, err) = check(&bad, &[]);
    assert!(!ok);
    assert!(err.contains("unknown field `node_lisen`"), "{err}");

    std::fs::write(&bad, "state = \"/x\"\nhealth_ms = \"soon\"\n").unwrap();
    let (ok, _, err) = check(&bad, &[]);
    assert!(!ok);
    assert!(err.contains("health_ms") && err.contains("u64"), "{err}");
}

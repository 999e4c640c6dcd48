//! `dc-lab`: a complete local deployment on the software TEE platform, for the demo upgrade
//! (`dcupgrade-demo`) and the end-to-end tests: a platform, a dev committee, node and agent
//! bundles, a local feed, and the agent (which supervises the node). Everything runs as real
//! processes on loopback, under one directory; dropping the lab stops them.
//!
//! Nothing here is part of the agent: the lab drives the `dctee-sim`, `dcnode` and `dcupgrade`
//! binaries from outside and reads the agent's state through its HTTP API and journal file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use dc_bundle::{BundleSpec, SignerKey, TrustRoots};
use dc_chain::storage::{self, encode, DcProgramInfo, EnclaveIdEntry};
use dc_chain::testnet::Testnet;
use dc_release::committee::CommitteeSigner;
use dc_release::feed::LocalFeed;
use dc_release::{digest_file, Artifact, ReleaseRecord, Role, SignedRecord};
use dc_tee::Measurement;

use dcupgrade::agent::StatusView;

/// The three programs a lab runs.
#[derive(Clone, Debug)]
pub struct Bins {
    pub sim: PathBuf,
    pub node: PathBuf,
    pub agent: PathBuf,
}

impl Bins {
    /// Finds the binaries next to `near` (the running executable, or a test binary in
    /// `target/*/deps`).
    pub fn locate(near: &Path) -> Result<Self, String> {
        let dirs: Vec<PathBuf> = near
            .ancestors()
            .skip(1)
            .take(2)
            .map(Path::to_path_buf)
            .collect();
        let find = |name: &str| {
            dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()).ok_or_else(|| {
                format!("{name} not found next to {}; build everything first: cargo build --workspace --bins", near.display())
            })
        };
        Ok(Self {
            sim: find("dctee-sim")?,
            node: find("dcnode")?,
            agent: find("dcupgrade")?,
        })
    }
}

/// How the lab starts the agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub retry_backoff: Duration,
    /// Watch the lab's feed.
    pub feed: bool,
    /// DCChain endpoints to follow.
    pub chain: Vec<String>,
    /// Test builds: the crash-injection point to exit at.
    pub crash_at: Option<String>,
    /// Log filter for the agent and its nodes (`DCUPGRADE_LOG`, `DCNODE_LOG`).
    pub log: String,
    /// The agent's `--switch`: `make-before-break` (default) or `break-before-make`.
    pub switch: String,
    /// The agent's `--poll-ms` (the feed): 100 in tests, for quick reactions; the agent's
    /// own default is 500.
    pub poll_ms: u64,
    /// The agent's `--health-ms`: how long a new node may take to pass its health check. The
    /// agent's default (15 s), so a busy machine does not turn a healthy node into a rollback.
    pub health_ms: u64,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            retry_backoff: Duration::from_secs(3600),
            feed: true,
            chain: Vec::new(),
            crash_at: None,
            log: "info".into(),
            switch: "make-before-break".into(),
            poll_ms: 100,
            health_ms: 15_000,
        }
    }
}

/// A node release built by the lab: bundle, artifact and signed record.
#[derive(Clone, Debug)]
pub struct NodeRelease {
    pub version: String,
    pub bundle_dir: PathBuf,
    pub archive: PathBuf,
    pub record: SignedRecord,
    pub record_path: PathBuf,
    pub mr_enclave: Measurement,
}

pub struct Lab {
    pub dir: PathBuf,
    pub bins: Bins,
    committee: CommitteeSigner,
    signer: SignerKey,
    platform: Option<Child>,
    agent: Option<Child>,
    pub agent_port: u16,
    pub node_port: u16,
    pub node_upgrade_port: u16,
    pub feed: PathBuf,
    http: reqwest::Client,
    /// Port of the lab's artifact server (serves `DIR/artifacts` over HTTP on loopback).
    pub artifact_port: u16,
}

/// Serves the files of `dir` (flat, no subdirectories) over HTTP/1.0 on loopback, on a
/// thread, for as long as the process lives: the lab's stand-in for a release mirror.
fn serve_artifacts(dir: PathBuf) -> Result<u16, String> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 2048];
                let n = conn.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let name = req
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .trim_start_matches('/');
                let file = (!name.is_empty() && !name.contains('/') && !name.contains(".."))
                    .then(|| std::fs::read(dir.join(name)).ok())
                    .flatten();
                let _ = match file {
                    Some(b) => conn
                        .write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", b.len())
                                .as_bytes(),
                        )
                        .and_then(|_| conn.write_all(&b)),
                    None => conn.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
                };
            });
        }
    });
    Ok(port)
}

fn free_port() -> Result<u16, String> {
    dc_chain::testnet::free_port()
}

fn err(what: &str) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Lab {
    /// Starts a platform under `dir` and creates a committee and an enclave signer.
    pub fn start(dir: &Path, bins: Bins) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(err("lab directory"))?;
        let dir = std::path::absolute(dir).map_err(err("lab directory"))?;
        for d in ["feed", "bundles", "artifacts", "records"] {
            std::fs::create_dir_all(dir.join(d)).map_err(err(d))?;
        }
        let log = std::fs::File::create(dir.join("platform.log")).map_err(err("platform log"))?;
        let mut platform = Command::new(&bins.sim)
            .arg("serve")
            .arg("--state")
            .arg(dir.join("platform"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(err("starting dctee-sim"))?;
        let mut line = String::new();
        BufReader::new(platform.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(err("platform"))?;
        if !line.contains("serving on") {
            let _ = platform.kill();
            return Err(format!(
                "the platform did not start; see {}",
                dir.join("platform.log").display()
            ));
        }
        // A hang guard, not a performance bound (a PUT fsyncs twice; a busy disk takes
        // seconds). New connections each time: a kept-alive one the server closed at its idle
        // limit can fail a request that never reached it.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| e.to_string())?;
        let artifact_port = serve_artifacts(dir.join("artifacts"))?;
        Ok(Self {
            artifact_port,
            feed: dir.join("feed"),
            committee: CommitteeSigner::generate().map_err(|e| e.to_string())?,
            signer: SignerKey::generate().map_err(|e| e.to_string())?,
            platform: Some(platform),
            agent: None,
            agent_port: free_port()?,
            node_port: free_port()?,
            node_upgrade_port: free_port()?,
            http,
            bins,
            dir,
        })
    }

    fn trust(&self) -> TrustRoots {
        TrustRoots {
            committee_keys: vec![self.committee.public().to_text()],
            threshold: 1,
            allow_debug_peers: false,
            authorized_enclaves: vec![],
        }
    }

    /// Builds a dcnode bundle of `version`, its artifact, and a record signed by the committee.
    /// `measured_args` become part of the enclave identity (the test faults use this).
    pub fn build_node(
        &self,
        version: &str,
        isv_svn: u16,
        tag: &str,
        measured_args: &[&str],
    ) -> Result<NodeRelease, String> {
        self.build_node_with(version, isv_svn, tag, measured_args, false)
    }

    /// [`Lab::build_node`], choosing the DEBUG attribute.
    pub fn build_node_with(
        &self,
        version: &str,
        isv_svn: u16,
        tag: &str,
        measured_args: &[&str],
        debug: bool,
    ) -> Result<NodeRelease, String> {
        let name = format!("dcnode-{version}{tag}");
        let spec = BundleSpec {
            name: "dcnode".into(),
            version: version.into(),
            isv_prod_id: 1,
            isv_svn,
            debug,
            entrypoint: "bin/dcnode".into(),
            args: measured_args.iter().map(|s| s.to_string()).collect(),
            env_passthrough: vec!["DCNODE_LOG".into(), "DCNODE_LOG_FORMAT".into()],
            trust: self.trust(),
        };
        let bundle_dir = self.dir.join("bundles").join(&name);
        let b = dc_bundle::build(
            &bundle_dir,
            &spec,
            &[(self.bins.node.clone(), "bin/dcnode".into())],
            &self.signer,
        )
        .map_err(|e| e.to_string())?;
        let archive = self.dir.join("artifacts").join(format!("{name}.tar"));
        let f = std::fs::File::create(&archive).map_err(err("artifact"))?;
        dc_bundle::archive::pack(&b, std::io::BufWriter::new(f)).map_err(|e| e.to_string())?;
        let (sha, size) = digest_file(&archive).map_err(|e| e.to_string())?;
        let mut record = SignedRecord::unsigned(ReleaseRecord {
            product: "dcnode".into(),
            role: Role::Node,
            version: version.into(),
            mr_enclave: b.mr_enclave.to_string(),
            isv_svn,
            artifact: Some(Artifact {
                sha256: hex::encode(sha),
                size,
                urls: vec![format!("file://{}", archive.display())],
            }),
            expires_at: None,
        });
        record.sign(&self.committee).map_err(|e| e.to_string())?;
        let record_path = self.dir.join("records").join(format!("{name}.json"));
        std::fs::write(&record_path, record.to_json()).map_err(err("record"))?;
        Ok(NodeRelease {
            version: version.into(),
            bundle_dir,
            archive,
            record,
            record_path,
            mr_enclave: b.mr_enclave,
        })
    }

    /// The lab's HTTP URL of a release's artifact (what a DCChain `DcProgram` names).
    pub fn artifact_url(&self, r: &NodeRelease) -> String {
        let name = r
            .archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("http://127.0.0.1:{}/{name}", self.artifact_port)
    }

    /// Re-signs a (possibly altered) record with the committee key.
    pub fn sign(&self, record: ReleaseRecord) -> Result<SignedRecord, String> {
        let mut s = SignedRecord::unsigned(record);
        s.sign(&self.committee).map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// Publishes a committee-signed revocation of `m` into the feed.
    pub fn revoke(&self, m: &Measurement, reason: &str) -> Result<(), String> {
        let mut r = dc_release::revocation::SignedRevocation::new(m, reason);
        r.sign(&self.committee).map_err(|e| e.to_string())?;
        std::fs::write(self.feed.join(format!("revoke-{m}.json")), r.to_json()).map_err(err("feed"))
    }

    /// Puts a record into the feed the agent watches.
    pub fn publish(&self, r: &SignedRecord) -> Result<(), String> {
        LocalFeed::new(&self.feed)
            .publish(r)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Writes a record into the feed under a free-form file name, bypassing validation (for
    /// tests of what the agent refuses).
    pub fn publish_raw(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        std::fs::write(self.feed.join(name), bytes).map_err(err("feed"))
    }

    /// The DcProgram value naming `r` as `version` (what the chain claims; the agent checks
    /// it against the measured bundle), its artifact on the lab's server.
    pub fn chain_program(&self, r: &NodeRelease, version: &str) -> DcProgramInfo {
        DcProgramInfo {
            origin_url: self.artifact_url(r).into_bytes(),
            mirror_url: Vec::new(),
            enclave_id: r.mr_enclave.to_string().into_bytes(),
            version: version.as_bytes().to_vec(),
            mirror_cids: Some(vec![]),
        }
    }

    /// An EnclaveIds entry for `r` with the committee's legacy signature.
    pub fn signed_enclave_id(&self, r: &NodeRelease, block: u32) -> EnclaveIdEntry {
        EnclaveIdEntry {
            block,
            enclave_id: r.mr_enclave.to_string().into_bytes(),
            signature: self.legacy_signature(&r.mr_enclave).into_bytes(),
        }
    }

    /// Announces `r` on `net` as `version` in a new block: DcProgram names it and EnclaveIds
    /// carries the committee's signature over its EnclaveID. Returns the block hash.
    pub async fn announce_on_chain(
        &self,
        net: &Testnet,
        r: &NodeRelease,
        version: &str,
        block: u32,
    ) -> Result<String, String> {
        net.set_storage_and_new_block(&[
            (
                storage::dc_program_key(),
                Some(encode::dc_program(&self.chain_program(r, version))),
            ),
            (
                storage::enclave_ids_key(),
                Some(encode::enclave_ids(&[self.signed_enclave_id(r, block)])),
            ),
        ])
        .await
    }

    /// The committee's signature text for an `EnclaveIds` entry (DC's legacy format).
    pub fn legacy_signature(&self, m: &Measurement) -> String {
        dc_release::legacy::sign(&self.committee, m)
    }

    /// Builds the agent's bundle and upgrader record, and starts the agent enclave, which
    /// starts the `initial` node. The agent watches the lab's feed.
    pub fn start_agent(
        &mut self,
        initial: &NodeRelease,
        retry_backoff: Duration,
    ) -> Result<(), String> {
        self.start_agent_opts(
            initial,
            &AgentOptions {
                retry_backoff,
                ..AgentOptions::default()
            },
        )
    }

    /// Like [`Lab::start_agent`], choosing the release sources: the feed and/or DCChain
    /// endpoints.
    pub fn start_agent_with(
        &mut self,
        initial: &NodeRelease,
        retry_backoff: Duration,
        feed: bool,
        chain: &[String],
    ) -> Result<(), String> {
        self.start_agent_opts(
            initial,
            &AgentOptions {
                retry_backoff,
                feed,
                chain: chain.to_vec(),
                ..AgentOptions::default()
            },
        )
    }

    /// Starts the agent with every option.
    pub fn start_agent_opts(
        &mut self,
        initial: &NodeRelease,
        o: &AgentOptions,
    ) -> Result<(), String> {
        let (retry_backoff, feed, chain) = (o.retry_backoff, o.feed, o.chain.as_slice());
        let agent_dir = self.dir.join("bundles").join("dcupgrade");
        let agent_record = self.dir.join("records").join("dcupgrade.json");
        if !agent_dir.exists() {
            let spec = BundleSpec {
                name: "dcupgrade".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                isv_prod_id: 2,
                isv_svn: 1,
                debug: false,
                entrypoint: "bin/dcupgrade".into(),
                args: vec![],
                env_passthrough: vec!["DCUPGRADE_LOG".into(), "DCNODE_LOG".into()],
                trust: self.trust(),
            };
            let b = dc_bundle::build(
                &agent_dir,
                &spec,
                &[(self.bins.agent.clone(), "bin/dcupgrade".into())],
                &self.signer,
            )
            .map_err(|e| e.to_string())?;
            let r = self.sign(ReleaseRecord {
                product: "dcupgrade".into(),
                role: Role::Upgrader,
                version: env!("CARGO_PKG_VERSION").into(),
                mr_enclave: b.mr_enclave.to_string(),
                isv_svn: 1,
                artifact: None,
                expires_at: None,
            })?;
            std::fs::write(&agent_record, r.to_json()).map_err(err("agent record"))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .map_err(err("agent log"))?;
        let child = Command::new(&self.bins.sim)
            .arg("launch")
            .arg("--state")
            .arg(self.dir.join("platform"))
            .args(["--env", &format!("DCUPGRADE_LOG={}", o.log)])
            .args(["--env", &format!("DCNODE_LOG={}", o.log)])
            .arg(&agent_dir)
            .arg("--")
            .arg("run")
            .arg("--state")
            .arg(self.dir.join("agent"))
            .args(if feed {
                vec!["--feed".to_string(), self.feed.display().to_string()]
            } else {
                vec![]
            })
            .args(
                chain
                    .iter()
                    .flat_map(|c| ["--chain".to_string(), c.clone()]),
            )
            .args(["--chain-poll-ms", "2000"])
            .args(["--listen", &format!("127.0.0.1:{}", self.agent_port)])
            .arg("--node-data")
            .arg(self.dir.join("node-data"))
            .args(["--node-listen", &format!("127.0.0.1:{}", self.node_port)])
            .args([
                "--node-upgrade",
                &format!("127.0.0.1:{}", self.node_upgrade_port),
            ])
            .arg("--sim-bin")
            .arg(&self.bins.sim)
            .arg("--platform-state")
            .arg(self.dir.join("platform"))
            .arg("--initial-bundle")
            .arg(&initial.bundle_dir)
            .arg("--initial-record")
            .arg(&initial.record_path)
            .arg("--agent-record")
            .arg(&agent_record)
            .args(["--poll-ms", &o.poll_ms.to_string()])
            .args(["--switch", &o.switch])
            .args(["--health-ms", &o.health_ms.to_string()])
            .args(["--retry-backoff-ms", &retry_backoff.as_millis().to_string()])
            .args(
                o.crash_at
                    .iter()
                    .flat_map(|p| ["--crash-at".to_string(), p.clone()]),
            )
            .stdout(log.try_clone().map_err(err("agent log"))?)
            .stderr(log)
            .spawn()
            .map_err(err("starting the agent"))?;
        self.agent = Some(child);
        Ok(())
    }

    /// Waits for the agent process to exit by itself (a crash); returns its exit code.
    pub fn wait_agent_exit(&mut self, timeout: Duration) -> Option<i32> {
        let a = self.agent.as_mut()?;
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            if let Ok(Some(st)) = a.try_wait() {
                self.agent = None;
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Node enclave processes of this lab now running (read from /proc).
    pub fn running_nodes(&self) -> usize {
        self.enclave_pids("/bin/dcnode").len()
    }

    /// The agent enclave's process id, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.enclave_pids("/bin/dcupgrade").first().copied()
    }

    /// Processes of this lab's platform whose program ends with `suffix` (read from /proc).
    fn enclave_pids(&self, suffix: &str) -> Vec<u32> {
        let copies = self.dir.join("platform").join("enclaves");
        let needle = copies.display().to_string();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let c = std::fs::read(e.path().join("cmdline")).ok()?;
                let first = c.split(|&b| b == 0).next().unwrap_or_default();
                let exe = String::from_utf8_lossy(first);
                (exe.starts_with(&needle) && exe.ends_with(suffix)).then_some(pid)
            })
            .collect()
    }

    /// The agent's journal as it stands on disk.
    pub fn journal(&self) -> Result<Option<dcupgrade::journal::State>, String> {
        dcupgrade::journal::UnauthenticatedJournal::new(&self.dir.join("agent").join("journal"))
            .load()
            .map_err(|e| e.to_string())
    }

    /// Stops the agent (and with it the node it supervises), waiting for both to exit.
    pub fn stop_agent(&mut self) {
        if let Some(mut a) = self.agent.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while std::time::Instant::now() < deadline {
                if a.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    pub fn agent_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.agent_port)
    }

    pub fn node_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.node_port)
    }

    /// A scrape of `base`'s `/metrics` in the classic Prometheus text format (what
    /// `promtool check metrics` reads), on a new connection: scrapes are seconds apart, and a
    /// kept-alive connection the server closed meanwhile (its idle limit) may be reused by
    /// the client just as the close arrives, failing a request that never reached it.
    pub async fn metrics(&self, base: &str) -> Result<String, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let r = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .map_err(|e| format!("scraping {base}/metrics: {e:?}"))?;
        if !r.status().is_success() {
            return Err(format!("scraping {base}/metrics: HTTP {}", r.status()));
        }
        r.text().await.map_err(|e| e.to_string())
    }

    /// Scrapes `base`'s `/metrics` until `pred` holds (the agent publishes its status before
    /// it counts the step that led there), and returns that scrape.
    pub async fn wait_metrics(
        &self,
        base: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let m = self.metrics(base).await?;
            if pred(&m) {
                return Ok(m);
            }
            if std::time::Instant::now() >= end {
                return Err(format!("the metrics never showed it:\n{m}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn status(&self) -> Result<StatusView, String> {
        self.http
            .get(format!("{}/v1/status", self.agent_url()))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }

    /// Polls the agent's status until `pred` holds.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&StatusView) -> bool,
    ) -> Result<StatusView, String> {
        let end = tokio::time::Instant::now() + timeout;
        let mut last = Err("no status yet".to_string());
        while tokio::time::Instant::now() < end {
            last = self.status().await;
            if let Ok(s) = &last {
                if pred(s) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "timed out waiting for {what}; last status: {last:?}; agent log: {}",
            self.dir.join("agent.log").display()
        ))
    }

    /// Waits until the agent reports the node of `version` running and idle.
    pub async fn wait_serving(
        &self,
        version: &str,
        timeout: Duration,
    ) -> Result<StatusView, String> {
        let v = version.to_string();
        self.wait_for(timeout, &format!("node {version} serving"), move |s| {
            s.node_running
                && s.state.as_ref().is_some_and(|st| {
                    st.current.version == v && st.phase == dcupgrade::journal::Phase::Idle
                })
        })
        .await
    }

    pub async fn put(&self, name: &str, data: &[u8]) -> Result<(), String> {
        let r = self
            .http
            .put(format!("{}/v1/objects/{name}", self.node_url()))
            .body(data.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("PUT {name}: HTTP {}", r.status()));
        }
        Ok(())
    }

    /// Reads an object; returns the serving node's version and the bytes.
    pub async fn get(&self, name: &str) -> Result<(String, Vec<u8>), String> {
        let r = self
            .http
            .get(format!("{}/v1/objects/{name}", self.node_url()))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("GET {name}: HTTP {}", r.status()));
        }
        let v = r
            .headers()
            .get(dcnode_version_header())
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        Ok((v, r.bytes().await.map_err(|e| e.to_string())?.to_vec()))
    }

    /// The agent's log so far (for test failure messages).
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Waits until the agent's log (with its nodes' lines) satisfies `pred`, and returns it:
    /// a node's lines reach the file through relays, after the state change that caused them
    /// may already be visible.
    pub async fn wait_log(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        self.wait_log_since(0, timeout, pred).await
    }

    /// [`Lab::wait_log`] on the part of the log after byte `from` (what a step wrote, when
    /// earlier steps wrote the same lines).
    pub async fn wait_log_since(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let all = self.agent_log();
            let log = all.get(from..).unwrap_or_default().to_string();
            if pred(&log) {
                return Ok(log);
            }
            if std::time::Instant::now() >= end {
                return Err(format!("the log never showed it:\n{log}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn dcnode_version_header() -> &'static str {
    "x-dcnode-version"
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_agent();
        if let Some(mut p) = self.platform.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

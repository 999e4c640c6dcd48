//! The orchestrator: the journaled upgrade state machine of DESIGN §7.
//!
//! ```text
//! Idle → Candidate → Downloaded → KeysAcquired → OldStopped → NewLaunched → KeysDelivered
//!      → Healthy → (commit) Idle;      any failure after OldStopped → RollingBack → Idle
//! ```
//! Every phase is written to the journal before the action it names. Before `OldStopped`
//! nothing has touched the running node, so a failure (or a crash) simply abandons the
//! release, with backoff. From `OldStopped` on, a failure — or a restart of the agent —
//! rolls back: the new node is stopped and the old one relaunched; it unseals its own keyring,
//! which nothing ever overwrote. Only `Healthy` (the new node proved the identity and the old
//! data) is committed after a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dc_bundle::Bundle;
use dc_handover::http::{holder_router, receive_keys, HolderClient};
use dc_handover::{
    Authorizer, AuthzError, Holder, HolderConfig, Keyring, PeerRole, ReceiverConfig, Version,
};
use dc_release::feed::LocalFeed;
use dc_release::{Committee, CommitteeAuthorizer, SignedRecord, VerifiedRecord};
use dc_tee::{EnclaveIdentity, Measurement, SealPolicy, Tee};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::download::Downloader;
use crate::journal::{Failure, Journal, Phase, Release, State, Upgrade};
use crate::launcher::{Launcher, NodeProcess};

pub const PRODUCT: &str = "dcnode";
pub const PROBE_OBJECT: &str = "dcupgrade-probe";
const TRANSIT_AAD: &[u8] = b"dcupgrade transit keyring v1";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    pub feed: PathBuf,
    pub listen: SocketAddr,
    pub node_data: PathBuf,
    pub node_listen: SocketAddr,
    pub node_upgrade: SocketAddr,
    pub poll: Duration,
    pub node_ready_deadline: Duration,
    pub handover_deadline: Duration,
    pub health_deadline: Duration,
    pub stop_grace: Duration,
    pub retry_backoff: Duration,
    /// The agent's own committee-signed upgrader record (handover evidence).
    pub agent_record: Option<PathBuf>,
    /// The node release installed before the agent first ran: (bundle directory, record).
    pub initial: Option<(PathBuf, PathBuf)>,
}

/// What `/v1/status` shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusView {
    pub agent_version: String,
    pub agent_mr_enclave: String,
    pub state: Option<State>,
    pub node_running: bool,
    pub last_error: Option<String>,
    /// Feed records refused, with the reason.
    pub refused: Vec<String>,
}

/// State shared with the HTTP API.
#[derive(Default)]
pub struct Shared {
    pub status: RwLock<StatusView>,
    /// The holder endpoints while a new node is being given the keys.
    pub handover: Mutex<Option<axum::Router>>,
    pub pause_requested: Mutex<Option<bool>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("setup: {0}")]
    Setup(String),
}

/// Accepts only the one enclave this upgrade targets, on top of the committee check.
struct Pinned<A> {
    inner: A,
    expected: Measurement,
}

impl<A: Authorizer> Authorizer for Pinned<A> {
    fn authorize(&self, peer: &EnclaveIdentity, evidence: &[u8]) -> Result<PeerRole, AuthzError> {
        if peer.mr_enclave != self.expected {
            return Err(AuthzError::NotAuthorized(peer.mr_enclave));
        }
        self.inner.authorize(peer, evidence)
    }
}

pub struct Agent {
    cfg: AgentConfig,
    tee: Arc<dyn Tee>,
    committee: Committee,
    allow_debug: bool,
    evidence: Vec<u8>,
    journal: Journal,
    state: State,
    launcher: Arc<dyn Launcher>,
    node: Option<NodeProcess>,
    /// The node printed its readiness line (it serves).
    node_ready: bool,
    downloader: Downloader,
    shared: Arc<Shared>,
    http: reqwest::Client,
    reported: std::collections::BTreeSet<String>,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let dir = path.parent().ok_or("no parent directory")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io(tmp.display()))?;
    f.write_all(bytes).map_err(io(tmp.display()))?;
    f.sync_all().map_err(io(tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(io(path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir.display()))
}

impl Agent {
    /// Opens (or initializes) the journal and recovers from an interrupted upgrade.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        cfg: AgentConfig,
        tee: Arc<dyn Tee>,
        committee: Committee,
        allow_debug: bool,
        launcher: Arc<dyn Launcher>,
        shared: Arc<Shared>,
        agent_version: &str,
    ) -> Result<Self, AgentError> {
        let setup = |e: String| AgentError::Setup(e);
        for d in ["bundles", "records", "keys", "store"] {
            std::fs::create_dir_all(cfg.state_dir.join(d))
                .map_err(io(cfg.state_dir.join(d).display()))
                .map_err(setup)?;
        }
        let evidence = match &cfg.agent_record {
            Some(p) => std::fs::read(p).map_err(io(p.display())).map_err(setup)?,
            None => Vec::new(),
        };
        let journal = Journal::new(&cfg.state_dir.join("journal"));
        let state = match journal.load()? {
            Some(s) => s,
            None => {
                let (bundle, record) = cfg
                    .initial
                    .clone()
                    .ok_or_else(|| setup("no journal yet: give the installed node release with --initial-bundle and --initial-record".into()))?;
                let s = State::new(
                    Self::adopt_initial(&cfg, &committee, &bundle, &record).map_err(setup)?,
                );
                journal.save(&s)?;
                s
            }
        };
        let me = tee.identity().map_err(|e| setup(e.to_string()))?;
        {
            let mut st = shared.status.write().unwrap_or_else(|p| p.into_inner());
            st.agent_version = agent_version.into();
            st.agent_mr_enclave = me.mr_enclave.to_string();
        }
        let downloader =
            Downloader::new(&cfg.state_dir.join("store")).map_err(|e| setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| setup(e.to_string()))?;
        let mut agent = Self {
            cfg,
            tee,
            committee,
            allow_debug,
            evidence,
            journal,
            state,
            launcher,
            node: None,
            node_ready: false,
            downloader,
            shared,
            http,
            reported: Default::default(),
        };
        agent.publish_status();
        Ok(agent)
    }

    /// Verifies the release installed before the agent's first run.
    fn adopt_initial(
        cfg: &AgentConfig,
        committee: &Committee,
        bundle: &Path,
        record: &Path,
    ) -> Result<Release, String> {
        let signed = SignedRecord::parse(&std::fs::read(record).map_err(io(record.display()))?)
            .map_err(|e| e.to_string())?;
        let v = signed
            .verify(committee, now_ms() / 1000)
            .map_err(|e| format!("initial record: {e}"))?;
        let b = Bundle::open(bundle).map_err(|e| format!("initial bundle: {e}"))?;
        if b.mr_enclave != v.mr_enclave || b.manifest.version != v.record.version {
            return Err(format!(
                "initial bundle {} (mrenclave {}, version {}) is not the release the record names ({} {})",
                bundle.display(),
                b.mr_enclave,
                b.manifest.version,
                v.mr_enclave,
                v.record.version
            ));
        }
        let rec_path = cfg
            .state_dir
            .join("records")
            .join(format!("{}.json", v.mr_enclave));
        write_atomic(&rec_path, &signed.to_json())?;
        Ok(Release {
            version: v.record.version.clone(),
            mr_enclave: v.mr_enclave.to_string(),
            bundle_dir: std::path::absolute(bundle).map_err(io(bundle.display()))?,
            record: rec_path,
        })
    }

    fn save(&mut self) {
        if let Err(e) = self.journal.save(&self.state) {
            // Without a durable journal, acting further would be unsafe.
            error!("{e}");
            self.set_error(e.to_string());
        }
        self.publish_status();
    }

    fn publish_status(&mut self) {
        let running = self.node_ready && self.node.as_mut().is_some_and(|n| n.exited().is_none());
        let mut st = self
            .shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner());
        st.state = Some(self.state.clone());
        st.node_running = running;
    }

    fn set_error(&self, e: String) {
        self.shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .last_error = Some(e);
    }

    fn enter(&mut self, phase: Phase, note: impl Into<String>) {
        self.state.phase = phase;
        let name = serde_json::to_value(phase)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        self.state.mark(&name, now_ms(), note);
        self.save();
    }

    /// Brings the journal back to a safe state after a restart.
    pub async fn recover(&mut self) {
        let phase = self.state.phase;
        match phase {
            Phase::Idle => {}
            Phase::Healthy => {
                info!("resuming: the new node was verified healthy before the restart; committing");
                self.commit();
            }
            p if p.old_node_may_be_stopped() => {
                warn!(
                    ?p,
                    "resuming an interrupted upgrade after the old node was stopped: rolling back"
                );
                self.rollback("the agent restarted during the upgrade".into())
                    .await;
            }
            p => {
                warn!(
                    ?p,
                    "abandoning an upgrade interrupted before the old node was touched"
                );
                self.give_up("the agent restarted during the upgrade".into());
            }
        }
    }

    fn node_args(&self, release: &Release, upgrader: bool) -> Vec<String> {
        let mut a = vec![
            "--data".into(),
            self.cfg.node_data.display().to_string(),
            "--listen".into(),
            self.cfg.node_listen.to_string(),
            "--upgrade-listen".into(),
            self.cfg.node_upgrade.to_string(),
            "--release-record".into(),
            release.record.display().to_string(),
        ];
        if upgrader {
            a.push("--upgrader".into());
            a.push(format!("http://{}", self.cfg.listen));
        }
        a
    }

    async fn start_node(&mut self, release: &Release, upgrader: bool) -> Result<(), String> {
        let args = self.node_args(release, upgrader);
        let p = self
            .launcher
            .launch(&release.bundle_dir, &args)
            .map_err(|e| e.to_string())?;
        self.node = Some(p);
        self.node_ready = false;
        self.publish_status();
        Ok(())
    }

    async fn stop_node(&mut self) {
        self.node_ready = false;
        if let Some(mut n) = self.node.take() {
            n.stop(self.cfg.stop_grace).await;
        }
        self.publish_status();
    }

    /// Starts the current node and waits until it serves.
    pub async fn start_current(&mut self) -> Result<(), String> {
        let current = self.state.current.clone();
        self.start_node(&current, false).await?;
        let deadline = self.cfg.node_ready_deadline;
        self.node
            .as_mut()
            .expect("just started")
            .wait_ready(deadline)
            .await
            .map_err(|e| e.to_string())?;
        self.node_ready = true;
        info!(version = %current.version, "node serving");
        self.publish_status();
        Ok(())
    }

    /// The agent's main loop, until `shutdown` changes; then the node is stopped gracefully.
    /// (An upgrade in progress is finished or rolled back first.)
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        self.recover().await;
        let mut restart_delay = Duration::from_millis(200);
        loop {
            if *shutdown.borrow() {
                info!("stopping: the node first");
                self.stop_node().await;
                return;
            }
            let running = self.node.as_mut().is_some_and(|n| n.exited().is_none());
            if !running {
                if self.node.is_some() {
                    warn!("the node exited; restarting it");
                }
                match self.start_current().await {
                    Ok(()) => restart_delay = Duration::from_millis(200),
                    Err(e) => {
                        error!("the node does not start: {e}");
                        self.set_error(format!("node does not start: {e}"));
                        self.node = None;
                        tokio::select! {
                            _ = tokio::time::sleep(restart_delay) => {}
                            _ = shutdown.changed() => {}
                        }
                        restart_delay = (restart_delay * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
            self.apply_pause_request();
            if !self.state.paused {
                if let Some(candidate) = self.next_candidate() {
                    self.upgrade(candidate).await;
                    continue;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    fn apply_pause_request(&mut self) {
        let req = self
            .shared
            .pause_requested
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(p) = req {
            if p != self.state.paused {
                self.state.paused = p;
                info!(paused = p, "operator request");
                self.save();
            }
        }
    }

    /// The highest valid release above the current one that is not in backoff.
    fn next_candidate(&mut self) -> Option<VerifiedRecord> {
        let scan =
            match LocalFeed::new(&self.cfg.feed).scan(&self.committee, PRODUCT, now_ms() / 1000) {
                Ok(s) => s,
                Err(e) => {
                    self.report(format!("feed unreadable: {e}"));
                    return None;
                }
            };
        for (p, why) in &scan.refused {
            self.report(format!("{}: {why}", p.display()));
        }
        let current: Version = self.state.current.version.parse().ok()?;
        let highest: Version = self.state.highest_trusted.parse().unwrap_or(current);
        let now = now_ms();
        let mut candidate = None;
        for v in scan.valid {
            if v.version < highest {
                self.report(format!(
                    "release {} ({}) refused: lower than the highest version ever trusted ({highest}); keys never go to a lower version",
                    v.version, v.mr_enclave
                ));
                continue;
            }
            if v.version <= current || candidate.is_some() {
                continue;
            }
            let backing_off = self
                .state
                .failed
                .get(&v.mr_enclave.to_string())
                .is_some_and(|f| now < f.retry_after_ms);
            if !backing_off {
                // The feed lists the highest version first.
                candidate = Some(v);
            }
        }
        candidate
    }

    /// Records a refusal once (status and log), never acting on it.
    fn report(&mut self, msg: String) {
        if self.reported.insert(msg.clone()) {
            warn!("{msg}");
            let mut st = self
                .shared
                .status
                .write()
                .unwrap_or_else(|p| p.into_inner());
            st.refused.push(msg);
            let n = st.refused.len();
            if n > 100 {
                st.refused.drain(..n - 100);
            }
        }
    }

    /// One whole upgrade to `rec`.
    pub async fn upgrade(&mut self, rec: VerifiedRecord) {
        info!(version = %rec.version, mrenclave = %rec.mr_enclave, "new release");
        self.state.timeline.clear();
        self.state.upgrade = Some(Upgrade {
            target_version: rec.record.version.clone(),
            target_mr_enclave: rec.mr_enclave.to_string(),
            target: None,
            keyring_fingerprint: None,
            probe_sha256: None,
            started_at_ms: now_ms(),
        });
        self.enter(
            Phase::Candidate,
            format!("{} {}", rec.record.version, rec.mr_enclave),
        );

        let target = match self.fetch_and_verify(&rec).await {
            Ok(t) => t,
            Err(e) => return self.give_up(format!("release {} refused: {e}", rec.record.version)),
        };
        self.upgrade_mut().target = Some(target.clone());
        self.enter(Phase::Downloaded, "digest and measurement verified");

        let (ring, probe) = match self.acquire_keys().await {
            Ok(x) => x,
            Err(e) => {
                return self.give_up(format!("taking the keys from the running node failed: {e}"))
            }
        };
        let fp = hex::encode(ring.fingerprint());
        self.upgrade_mut().keyring_fingerprint = Some(fp.clone());
        self.upgrade_mut().probe_sha256 = Some(probe.clone());
        self.enter(
            Phase::KeysAcquired,
            format!("keyring {} sealed in the agent", &fp[..16]),
        );

        // From here on the old node may be down: every failure rolls back.
        self.enter(Phase::OldStopped, "stopping the old node");
        self.stop_node().await;
        self.state.mark("old_node_exited", now_ms(), "");

        let mut deliveries = self.arm_handover(ring, &rec);
        self.enter(Phase::NewLaunched, "");
        if let Err(e) = self.start_node(&target, true).await {
            return self
                .rollback(format!("launching the new node failed: {e}"))
                .await;
        }
        let delivered = tokio::select! {
            d = tokio::time::timeout(self.cfg.handover_deadline, deliveries.recv()) => d.ok().flatten(),
            _ = wait_exit(self.node.as_mut()) => None,
        };
        let Some(receiver) = delivered else {
            return self
                .rollback("the new node did not take the keys in time (crashed or refused)".into())
                .await;
        };
        self.disarm_handover();
        self.enter(
            Phase::KeysDelivered,
            format!("attested receiver {receiver}"),
        );

        let deadline = self.cfg.node_ready_deadline;
        if let Err(e) = self
            .node
            .as_mut()
            .expect("launched")
            .wait_ready(deadline)
            .await
        {
            return self
                .rollback(format!("the new node did not become ready: {e}"))
                .await;
        }
        self.node_ready = true;
        self.state.mark("new_node_serving", now_ms(), "");
        if let Err(e) = self.health_check(&target, &fp, &probe).await {
            return self.rollback(format!("health check failed: {e}")).await;
        }
        self.enter(Phase::Healthy, "identity and old data verified");
        self.commit();
    }

    fn upgrade_mut(&mut self) -> &mut Upgrade {
        self.state
            .upgrade
            .as_mut()
            .expect("an upgrade is in progress")
    }

    fn commit(&mut self) {
        let Some(target) = self.state.upgrade.as_ref().and_then(|u| u.target.clone()) else {
            error!("commit without a verified target; rolling state back to idle");
            self.state.phase = Phase::Idle;
            self.state.upgrade = None;
            return self.save();
        };
        let newer = match (
            target.version.parse::<Version>(),
            self.state.highest_trusted.parse::<Version>(),
        ) {
            (Ok(t), Ok(h)) => t > h,
            _ => true,
        };
        if newer {
            self.state.highest_trusted = target.version.clone();
        }
        self.state.failed.remove(&target.mr_enclave);
        info!(version = %target.version, "upgrade committed");
        self.state.current = target;
        self.state.upgrades_completed += 1;
        self.state.upgrade = None;
        self.enter(Phase::Idle, "committed");
        self.shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .last_error = None;
    }

    /// Abandons the release before the old node was touched, with backoff.
    fn give_up(&mut self, reason: String) {
        error!("{reason}");
        self.record_failure(&reason);
        self.state.upgrade = None;
        self.enter(Phase::Idle, reason.clone());
        self.set_error(reason);
    }

    fn record_failure(&mut self, reason: &str) {
        let Some(u) = &self.state.upgrade else { return };
        let (mre, version) = (u.target_mr_enclave.clone(), u.target_version.clone());
        let attempts = self.state.failed.get(&mre).map_or(0, |f| f.attempts) + 1;
        let backoff = self
            .cfg
            .retry_backoff
            .saturating_mul(1 << attempts.min(10))
            .min(Duration::from_secs(24 * 3600));
        self.state.failed.insert(
            mre,
            Failure {
                version,
                attempts,
                retry_after_ms: now_ms() + backoff.as_millis() as u64,
                reason: reason.into(),
            },
        );
    }

    /// Stops the new node, relaunches the old one, records the failure.
    async fn rollback(&mut self, reason: String) {
        error!("{reason}; rolling back");
        self.record_failure(&reason);
        self.enter(Phase::RollingBack, reason.clone());
        self.disarm_handover();
        self.stop_node().await;
        match self.start_current().await {
            Ok(()) => info!("rolled back: the previous node serves again"),
            Err(e) => {
                error!("the previous node does not start after rollback: {e}; retrying");
                self.node = None;
            }
        }
        self.state.upgrade = None;
        self.enter(Phase::Idle, "rolled back");
        self.set_error(reason);
    }

    async fn fetch_and_verify(&mut self, rec: &VerifiedRecord) -> Result<Release, String> {
        let artifact = rec
            .record
            .artifact
            .as_ref()
            .ok_or("the record names no artifact")?;
        let archive = self
            .downloader
            .fetch(artifact)
            .await
            .map_err(|e| e.to_string())?;
        let mre = rec.mr_enclave.to_string();
        let final_dir = self.cfg.state_dir.join("bundles").join(&mre);
        let bundle = if final_dir.exists() {
            Bundle::open(&final_dir).map_err(|e| e.to_string())?
        } else {
            let tmp = self
                .cfg
                .state_dir
                .join("bundles")
                .join(format!(".unpack-{}", now_ms()));
            let f = std::fs::File::open(&archive).map_err(io(archive.display()))?;
            let b = dc_bundle::archive::unpack(std::io::BufReader::new(f), &tmp).map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                e.to_string()
            })?;
            if b.mr_enclave != rec.mr_enclave {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(format!(
                    "the bundle measures {} but the committee signed {}",
                    b.mr_enclave, rec.mr_enclave
                ));
            }
            std::fs::rename(&tmp, &final_dir).map_err(io(final_dir.display()))?;
            Bundle::open(&final_dir).map_err(|e| e.to_string())?
        };
        if bundle.mr_enclave != rec.mr_enclave {
            return Err(format!(
                "the bundle measures {} but the committee signed {}",
                bundle.mr_enclave, rec.mr_enclave
            ));
        }
        if bundle.manifest.version != rec.record.version
            || bundle.manifest.isv_svn != rec.record.isv_svn
        {
            return Err(format!(
                "the bundle says version {} ISVSVN {}, the record {} {}",
                bundle.manifest.version,
                bundle.manifest.isv_svn,
                rec.record.version,
                rec.record.isv_svn
            ));
        }
        let record = self
            .cfg
            .state_dir
            .join("records")
            .join(format!("{mre}.json"));
        write_atomic(&record, &self.signed_record_json(rec)?)?;
        Ok(Release {
            version: rec.record.version.clone(),
            mr_enclave: mre,
            bundle_dir: final_dir,
            record,
        })
    }

    /// The signed record as it stands in the feed (the node presents it as evidence).
    fn signed_record_json(&self, rec: &VerifiedRecord) -> Result<Vec<u8>, String> {
        let rd = std::fs::read_dir(&self.cfg.feed).map_err(io(self.cfg.feed.display()))?;
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read(e.path()) {
                if let Ok(s) = SignedRecord::parse(&b) {
                    if s.record == rec.record && s.verify(&self.committee, now_ms() / 1000).is_ok()
                    {
                        return Ok(s.to_json());
                    }
                }
            }
        }
        Err("the signed record vanished from the feed".into())
    }

    /// Writes the probe through the old node, then takes its keyring by attested handover and
    /// seals it inside the agent before acknowledging.
    async fn acquire_keys(&mut self) -> Result<(Keyring, String), String> {
        let mut probe = [0u8; 32];
        getrandom::getrandom(&mut probe).map_err(|e| e.to_string())?;
        let probe = hex::encode(probe);
        let url = format!("http://{}/v1/objects/{PROBE_OBJECT}", self.cfg.node_listen);
        let r = self
            .http
            .put(&url)
            .body(probe.clone())
            .send()
            .await
            .map_err(|e| format!("writing the probe: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("writing the probe: HTTP {}", r.status()));
        }
        let client = HolderClient::new(&format!("http://{}", self.cfg.node_upgrade))
            .map_err(|e| e.to_string())?;
        let cfg = ReceiverConfig {
            allow_debug_peers: self.allow_debug,
            authorization: self.evidence.clone(),
        };
        let keys_dir = self.cfg.state_dir.join("keys");
        let tee = self.tee.clone();
        let received = tokio::time::timeout(
            self.cfg.handover_deadline,
            receive_keys(
                &client,
                &*self.tee,
                cfg,
                CommitteeAuthorizer::new(self.committee.clone()),
                move |ring| {
                    let blob = tee
                        .seal(SealPolicy::MrEnclave, TRANSIT_AAD, &ring.encode())
                        .map_err(|e| e.to_string())?;
                    write_atomic(
                        &keys_dir.join(format!("{}.sealed", hex::encode(ring.fingerprint()))),
                        &blob.0,
                    )
                },
            ),
        )
        .await
        .map_err(|_| "the handover did not complete in time".to_string())?
        .map_err(|e| e.to_string())?;
        let current = &self.state.current;
        if received.holder.mr_enclave.to_string() != current.mr_enclave {
            return Err(format!(
                "the keys came from {}, not from the installed node {}",
                received.holder.mr_enclave, current.mr_enclave
            ));
        }
        match received.holder_role {
            PeerRole::Node(v) if v.to_string() == current.version => {}
            r => return Err(format!("the holder is {r:?}, not node {}", current.version)),
        }
        Ok((
            received.keyring,
            hex::encode(Sha256::digest(probe.as_bytes())),
        ))
    }

    /// Serves the keyring to the new node (and only to it) on the agent's port.
    fn arm_handover(
        &mut self,
        ring: Keyring,
        rec: &VerifiedRecord,
    ) -> mpsc::UnboundedReceiver<Measurement> {
        let (tx, rx) = mpsc::unbounded_channel();
        let holder = Holder::new(
            &*self.tee,
            HolderConfig {
                allow_debug_peers: self.allow_debug,
                min_node_version: rec.version,
                allow_upgrader: false,
                challenge_ttl_ms: 30_000,
                max_pending: 4,
                authorization: self.evidence.clone(),
            },
            Pinned {
                inner: CommitteeAuthorizer::new(self.committee.clone()),
                expected: rec.mr_enclave,
            },
        );
        match holder {
            Ok(h) => {
                let router = holder_router(
                    h,
                    self.tee.clone(),
                    Arc::new(ring),
                    Arc::new(move |d| {
                        let _ = tx.send(d.receiver.mr_enclave);
                    }),
                );
                *self
                    .shared
                    .handover
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(router);
            }
            Err(e) => error!("cannot serve the handover: {e}"),
        }
        rx
    }

    fn disarm_handover(&self) {
        *self
            .shared
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The new node reports the expected identity and keyring and serves the probe the old
    /// node stored.
    async fn health_check(
        &self,
        target: &Release,
        fp: &str,
        probe_sha: &str,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + self.cfg.health_deadline;
        let mut last = String::from("no answer");
        while tokio::time::Instant::now() < deadline {
            match self.check_once(target, fp, probe_sha).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(last)
    }

    async fn check_once(&self, target: &Release, fp: &str, probe_sha: &str) -> Result<(), String> {
        let base = format!("http://{}", self.cfg.node_listen);
        let status: serde_json::Value = self
            .http
            .get(format!("{base}/v1/status"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let field = |k: &str| {
            status
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        if field("version") != target.version
            || field("mr_enclave") != target.mr_enclave
            || field("keyring_fingerprint") != fp
        {
            return Err(format!(
                "the node reports {status}, expected version {} with keyring {fp}",
                target.version
            ));
        }
        let r = self
            .http
            .get(format!("{base}/v1/objects/{PROBE_OBJECT}"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!(
                "the probe written through the old node reads as HTTP {}",
                r.status()
            ));
        }
        let body = r.bytes().await.map_err(|e| e.to_string())?;
        if hex::encode(Sha256::digest(&body)) != probe_sha {
            return Err("the probe written through the old node reads back different".into());
        }
        Ok(())
    }
}

async fn wait_exit(node: Option<&mut NodeProcess>) {
    let Some(n) = node else {
        return std::future::pending().await;
    };
    loop {
        if n.exited().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! The agent's driver: the I/O around the orchestrator core (`dc_orchestrator::core`).
//!
//! Every upgrade decision — which release, write-ahead journaling, abandon or roll back,
//! confirmed stops, recovery after a restart, commit and floors — is the core's. This module
//! carries out the one action the core asks for at a time (journal writes, downloads, the two
//! handovers, process control, the health check) and feeds the outcome back. It also
//! supervises the node, follows the release sources, passes revocations to the node and
//! serves the status.
//!
//! Keys are taken only from a committee-signed node release that is the installed one, for a
//! destination that node checks itself, and given only to the MRENCLAVE this agent verified
//! for the release (committee evidence and bundle measurement), never to a revoked one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dc_bundle::Bundle;
use dc_chain::{Event as ChainEvent, Observation};
use dc_handover::http::{fixed_keyring, holder_router_observed, receive_keys, HolderClient};
use dc_handover::{
    Authorizer, AuthzError, Destination, Holder, HolderConfig, Keyring, PeerRole, ReceiverConfig,
    Version,
};
use dc_release::feed::LocalFeed;
use dc_release::{Committee, CommitteeAuthorizer};
use dc_tee::{EnclaveIdentity, Measurement, SealPolicy, Tee};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::download::Downloader;
use crate::journal::{Journal, Phase, Release, State};
use crate::launcher::{Launcher, NodeProcess};
use crate::source::{evaluate_chain, Candidate};
use dc_orchestrator::core::{
    Action, Event, Offer, Orchestrator, Outcome, Policy, StepError, SwitchMode,
};
use dc_orchestrator::{Taken, Verified};

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
    /// Local feed directory, if that source is used.
    pub feed: Option<PathBuf>,
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
    /// The agent's own committee-signed upgrader record (handover evidence for nodes).
    pub agent_record: Option<PathBuf>,
    /// The node release installed before the agent first ran: (bundle directory, record).
    pub initial: Option<(PathBuf, PathBuf)>,
    /// Extra PEM root certificates for https downloads (a private mirror's CA).
    pub download_roots: Vec<Vec<u8>>,
    /// Make-before-break (the agent owns the data socket and passes it to every node) or
    /// break-before-make.
    pub switch: SwitchMode,
}

/// The chain source as operators see it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ChainView {
    pub endpoint: Option<String>,
    pub connected: bool,
    pub syncing: bool,
    pub finalized_block: Option<u64>,
    pub finalized_hash: Option<String>,
    /// When the last new finalized head was seen (ms since the Unix epoch): its age is the
    /// finalized-head lag as the agent sees it.
    #[serde(default)]
    pub finalized_at_ms: Option<u64>,
    pub last_problem: Option<String>,
}

/// What `/v1/status` shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StatusView {
    pub agent_version: String,
    pub agent_mr_enclave: String,
    pub state: Option<State>,
    pub node_running: bool,
    pub last_error: Option<String>,
    /// Releases refused, with the reason (most recent last).
    pub refused: Vec<String>,
    pub chain: Option<ChainView>,
    /// The local feed directory the agent watches, if any.
    #[serde(default)]
    pub feed: Option<String>,
}

/// State shared with the HTTP API.
#[derive(Default)]
pub struct Shared {
    pub status: RwLock<StatusView>,
    /// The holder endpoints while a new node is being given the keys.
    pub handover: Mutex<Option<axum::Router>>,
    pub pause_requested: Mutex<Option<bool>>,
    /// Prometheus metrics, served at `/metrics`.
    pub metrics: crate::metrics::AgentMetrics,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("setup: {0}")]
    Setup(String),
}

/// Accepts exactly one enclave, in a fixed role, unless revoked. The agent verified that
/// enclave itself (committee signature and measurement), so no further evidence is needed.
struct Pinned {
    expected: Measurement,
    role: PeerRole,
    revoked: Vec<Measurement>,
}

impl Authorizer for Pinned {
    fn authorize(&self, peer: &EnclaveIdentity, _evidence: &[u8]) -> Result<PeerRole, AuthzError> {
        if self.revoked.contains(&peer.mr_enclave) {
            return Err(AuthzError::Revoked(peer.mr_enclave));
        }
        if peer.mr_enclave != self.expected {
            return Err(AuthzError::NotAuthorized(peer.mr_enclave));
        }
        Ok(self.role)
    }
}

/// The agent takes keys only from a holder that proves, with committee-signed evidence bound
/// into the attested transcript, that it is a node release — never because a file names it.
/// The journal's `current` is checked on top: it can only make a handover fail.
struct CommitteeNode {
    committee: CommitteeAuthorizer,
    expected: Measurement,
}

impl Authorizer for CommitteeNode {
    fn authorize(&self, peer: &EnclaveIdentity, evidence: &[u8]) -> Result<PeerRole, AuthzError> {
        match self.committee.authorize(peer, evidence)? {
            PeerRole::Node(v) if peer.mr_enclave == self.expected => Ok(PeerRole::Node(v)),
            PeerRole::Node(_) => Err(AuthzError::BadEvidence {
                mr_enclave: peer.mr_enclave,
                reason: format!(
                    "a committee-signed node release, but not the installed one ({})",
                    self.expected
                ),
            }),
            PeerRole::Upgrader => Err(AuthzError::BadEvidence {
                mr_enclave: peer.mr_enclave,
                reason: "an upgrader record; keys are taken only from a node release".into(),
            }),
        }
    }
}

/// What an upgrade carries between the core's actions that is not journaled: the release's
/// download details, its evidence, and the keys in transit.
#[derive(Default)]
struct Transit {
    candidate: Option<Candidate>,
    evidence: Vec<u8>,
    ring: Option<Keyring>,
}

fn offer_of(c: &Candidate) -> Offer {
    Offer {
        version: c.version,
        mr_enclave: c.mr_enclave.to_string(),
        isv_svn: c.isv_svn,
        source: c.source.clone(),
    }
}

/// Binds the node data port for the agent's whole life, with a deep accept queue: during a
/// switch, new connections wait there for the next node.
/// Binds the node data port, waiting while it is in use: after an agent restart the nodes of
/// the agent before it (told to stop when it died) may still be draining their copy of the
/// socket, for up to their drain deadline and the launcher's stop grace. Anything holding the
/// port longer is a misconfiguration, reported with the address.
fn bind_data_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    const PATIENCE: Duration = Duration::from_secs(120);
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    let mut warned = false;
    loop {
        match try_bind_data_listener(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && started.elapsed() < PATIENCE => {
                if !warned {
                    tracing::warn!(
                        %addr,
                        "the node data port is in use (a node of the previous agent still draining?); waiting up to {}s for it",
                        PATIENCE.as_secs()
                    );
                    warned = true;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; still in use after {}s: stop whatever else listens there, or set node_listen to a free port",
                        PATIENCE.as_secs()
                    ),
                ));
            }
            r => return r,
        }
    }
}

fn try_bind_data_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    Ok(sock.into())
}

fn retry_backoff_ms(d: &Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub struct Agent {
    /// Exclusive lock on the state directory: one agent per state directory.
    _lock: std::fs::File,
    cfg: AgentConfig,
    tee: Arc<dyn Tee>,
    committee: Committee,
    allow_debug: bool,
    evidence: Vec<u8>,
    journal: Journal,
    /// Every upgrade decision, and the state the journal persists.
    core: Orchestrator,
    launcher: Arc<dyn Launcher>,
    node: Option<NodeProcess>,
    /// Make-before-break: the new node while it is a standby (keys sealed, serving nothing).
    standby: Option<NodeProcess>,
    /// Make-before-break: the node data port's listening socket. The agent owns it for its
    /// whole life and never accepts on it; each node serves a copy, and connections that
    /// arrive while the data directory changes hands wait in its queue.
    data_listener: Option<std::net::TcpListener>,
    /// The node printed its readiness line (it serves).
    node_ready: bool,
    downloader: Downloader,
    shared: Arc<Shared>,
    http: reqwest::Client,
    reported: Reported,
    chain: Option<mpsc::Receiver<ChainEvent>>,
    chain_latest: Option<Observation>,
    runtime: Runtime,
}

/// Refusals already reported, bounded: a hostile source (a chain RPC node, a feed) can make
/// up endless distinct refusals; only the most recent [`Reported::CAP`] are remembered.
#[derive(Default)]
struct Reported {
    order: std::collections::VecDeque<String>,
    set: std::collections::HashSet<String>,
}

impl Reported {
    const CAP: usize = 256;

    /// `true` if `msg` is new.
    fn insert(&mut self, msg: &str) -> bool {
        if self.set.contains(msg) {
            return false;
        }
        if self.order.len() >= Self::CAP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(msg.to_string());
        self.set.insert(msg.to_string());
        true
    }
}

/// In-memory state of the running agent (not journaled).
#[derive(Default)]
struct Runtime {
    /// The chain block evaluated last, whether its storage was read in full (no RPC error),
    /// and the outcome: each finalized block is checked once, unless a read failed.
    chain_evaluated: Option<(String, bool, Result<Option<Candidate>, String>)>,
    /// Signed revocations seen in the feed, to pass on to the node, which verifies them.
    revocation_evidence: std::collections::BTreeMap<Measurement, Vec<u8>>,
    /// Revocations the running node has confirmed; cleared when the node restarts.
    pushed: std::collections::BTreeSet<Measurement>,
    /// The last refusal the agent's holder gave the new node, for the rollback reason.
    handover_refusal: Arc<Mutex<Option<String>>>,
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::journal::write_atomic(path, bytes).map_err(|e| e.to_string())
}

impl Agent {
    /// Opens (or initializes) the journal. `chain` is the DCChain watcher's event stream, if
    /// that source is used.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        cfg: AgentConfig,
        tee: Arc<dyn Tee>,
        committee: Committee,
        allow_debug: bool,
        launcher: Arc<dyn Launcher>,
        shared: Arc<Shared>,
        agent_version: &str,
        chain: Option<mpsc::Receiver<ChainEvent>>,
    ) -> Result<Self, AgentError> {
        let setup = AgentError::Setup;
        for d in ["bundles", "records", "keys", "store"] {
            std::fs::create_dir_all(cfg.state_dir.join(d))
                .map_err(io(cfg.state_dir.join(d).display()))
                .map_err(setup)?;
        }
        let lock = {
            use std::os::fd::AsRawFd;
            let path = cfg.state_dir.join(".lock");
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io(path.display()))
                .map_err(setup)?;
            // SAFETY: flock(2) on a file descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                return Err(setup(format!(
                    "another agent is running on {}",
                    cfg.state_dir.display()
                )));
            }
            f
        };
        let evidence = match &cfg.agent_record {
            Some(p) => dc_tee::read_limited(p, dc_release::record::MAX_RECORD_BYTES as u64)
                .map_err(io(p.display()))
                .map_err(setup)?,
            None => Vec::new(),
        };
        // The journal is MACed under a key sealed to this agent build; a journal without its
        // key, or a key that does not unseal here, stops the agent before anything moves.
        let journal_key = crate::journal::JournalKey::open(&*tee, &cfg.state_dir)?;
        let journal = Journal::with_key(
            &cfg.state_dir.join(crate::journal::JOURNAL_FILE),
            journal_key,
        );
        let state = match journal.load()? {
            Some(s) => s,
            None => {
                let (bundle, record) = cfg
                    .initial
                    .clone()
                    .ok_or_else(|| setup("no journal yet: give the installed node release with --initial-bundle and --initial-record".into()))?;
                let (release, isv_svn) =
                    Self::adopt_initial(&cfg, &committee, &bundle, &record).map_err(setup)?;
                let mut s = State::new(release);
                s.highest_isv_svn = isv_svn;
                journal.save(&s)?;
                s
            }
        };
        let me = tee.identity().map_err(|e| setup(e.to_string()))?;
        {
            let mut st = shared.status.write().unwrap_or_else(|p| p.into_inner());
            st.agent_version = agent_version.into();
            st.agent_mr_enclave = me.mr_enclave.to_string();
            st.chain = chain.as_ref().map(|_| ChainView::default());
            st.feed = cfg.feed.as_ref().map(|f| f.display().to_string());
        }
        let downloader = Downloader::with_roots(&cfg.state_dir.join("store"), &cfg.download_roots)
            .map_err(|e| setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| setup(e.to_string()))?;
        let cfg_backoff = cfg.retry_backoff;
        let cfg_switch = cfg.switch;
        let data_listener = match cfg.switch {
            SwitchMode::MakeBeforeBreak => {
                Some(bind_data_listener(cfg.node_listen).map_err(|e| {
                    setup(format!(
                        "binding the node data port {}: {e}",
                        cfg.node_listen
                    ))
                })?)
            }
            SwitchMode::BreakBeforeMake => None,
        };
        let mut agent = Self {
            _lock: lock,
            cfg,
            tee,
            committee,
            allow_debug,
            evidence,
            journal,
            core: Orchestrator::new(
                state,
                Policy {
                    retry_backoff_ms: retry_backoff_ms(&cfg_backoff),
                    mode: cfg_switch,
                },
            ),
            launcher,
            node: None,
            standby: None,
            data_listener,
            node_ready: false,
            downloader,
            shared,
            http,
            reported: Default::default(),
            chain,
            chain_latest: None,
            runtime: Runtime::default(),
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
    ) -> Result<(Release, u16), String> {
        // The same check the doctor makes: a committee-signed *node* record for exactly this
        // bundle's measurement and version.
        let b =
            crate::preflight::open_bundle(bundle).map_err(|e| format!("initial bundle: {e}"))?;
        let (signed, v) = crate::preflight::verify_record_for(
            &b,
            committee,
            record,
            dc_release::Role::Node,
            now_ms() / 1000,
        )
        .map_err(|e| format!("initial record: {e}"))?;
        let rec_path = cfg
            .state_dir
            .join("records")
            .join(format!("{}.json", v.mr_enclave));
        write_atomic(&rec_path, &signed.to_json())?;
        Ok((
            Release {
                version: v.record.version.clone(),
                mr_enclave: v.mr_enclave.to_string(),
                bundle_dir: std::path::absolute(bundle).map_err(io(bundle.display()))?,
                record: Some(rec_path),
            },
            b.manifest.isv_svn,
        ))
    }

    /// Writes the journal. An error means the next side effect must not happen.
    fn save(&mut self) -> Result<(), String> {
        let r = self
            .journal
            .save(self.core.state())
            .map_err(|e| e.to_string());
        if let Err(e) = &r {
            error!("{e}");
            self.set_error(format!(
                "journal write failed, no further action taken: {e}"
            ));
        }
        self.publish_status();
        r
    }

    fn publish_status(&mut self) {
        let running = self.node_ready && self.node.as_mut().is_some_and(|n| n.exited().is_none());
        let mut st = self
            .shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner());
        st.state = Some(self.core.state().clone());
        st.node_running = running;
        self.shared.metrics.set_phase(self.core.state().phase);
    }

    fn set_error(&self, e: String) {
        self.shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .last_error = Some(e);
    }

    fn update_chain_view(&self, f: impl FnOnce(&mut ChainView)) {
        let mut st = self
            .shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner());
        f(st.chain.get_or_insert_with(ChainView::default));
    }

    /// Every EnclaveID the committee revoked, as far as this agent has seen.
    fn revoked(&self) -> Vec<Measurement> {
        self.core
            .state()
            .revoked
            .iter()
            .filter_map(|m| Measurement::from_hex(m).ok())
            .collect()
    }

    fn node_args(&self, release: &Release, upgrader: bool) -> Vec<String> {
        let mut a = vec![
            "--data".into(),
            self.cfg.node_data.display().to_string(),
            "--listen".into(),
            self.cfg.node_listen.to_string(),
            "--upgrade-listen".into(),
            self.cfg.node_upgrade.to_string(),
        ];
        if let Some(r) = &release.record {
            a.push("--release-record".into());
            a.push(r.display().to_string());
        }
        if upgrader {
            a.push("--upgrader".into());
            a.push(format!("http://{}", self.cfg.listen));
        }
        a
    }

    async fn start_node(&mut self, release: &Release, upgrader: bool) -> Result<(), String> {
        let p = self.launch(release, upgrader, false)?;
        self.node = Some(p);
        self.node_ready = false;
        self.publish_status();
        Ok(())
    }

    /// Launches a node, with the data socket when the agent owns one.
    fn launch(
        &self,
        release: &Release,
        upgrader: bool,
        standby: bool,
    ) -> Result<NodeProcess, String> {
        use std::os::fd::AsRawFd;
        let mut args = self.node_args(release, upgrader);
        if standby {
            args.push("--standby".into());
        }
        match &self.data_listener {
            Some(l) => self.launcher.launch_with_listeners(
                &release.bundle_dir,
                &args,
                &[("data".to_string(), l.as_raw_fd())],
            ),
            None => self.launcher.launch(&release.bundle_dir, &args),
        }
        .map_err(|e| e.to_string())
    }

    /// Stops the standby; `false` if its exit could not be confirmed (it stays tracked).
    async fn stop_standby(&mut self) -> bool {
        let Some(mut n) = self.standby.take() else {
            return true;
        };
        let confirmed = n.stop(self.cfg.stop_grace).await;
        if !confirmed {
            error!("the standby's exit could not be confirmed");
            self.standby = Some(n);
        }
        confirmed
    }

    /// Launches the target as a standby beside the serving node, serves it the keys, and
    /// waits for its attested acknowledgement and its standby line.
    async fn launch_standby(&mut self, t: &mut Transit) -> Result<String, StepError> {
        let receiver = self.launch_and_serve_keys(t, true).await?;
        let deadline = self.cfg.node_ready_deadline;
        let standby = self.standby.as_mut().expect("launched");
        standby
            .wait_standby(deadline)
            .await
            .map_err(|e| StepError::Delivery(format!("the standby did not report ready: {e}")))?;
        Ok(receiver)
    }

    /// Arms the holder for the verified target, launches it (as a standby, or as the node),
    /// and waits for its attested acknowledgement, its exit, or the deadline.
    async fn launch_and_serve_keys(
        &mut self,
        t: &mut Transit,
        standby: bool,
    ) -> Result<String, StepError> {
        let target = self
            .core
            .state()
            .upgrade
            .as_ref()
            .and_then(|u| u.target.clone())
            .ok_or_else(|| StepError::Launch("no verified target".into()))?;
        let ring = t
            .ring
            .take()
            .ok_or_else(|| StepError::Launch("no keys in transit".into()))?;
        let version: Version = target
            .version
            .parse()
            .map_err(|e: String| StepError::Launch(e))?;
        let mre = Measurement::from_hex(&target.mr_enclave)
            .map_err(|e| StepError::Launch(e.to_string()))?;
        let mut deliveries = self
            .arm_handover(ring, version, mre)
            .map_err(|e| StepError::Launch(format!("cannot serve the handover: {e}")))?;
        let launched = if standby {
            self.launch(&target, true, true)
                .map(|p| self.standby = Some(p))
        } else {
            self.start_node(&target, true).await
        };
        if let Err(e) = launched {
            self.disarm_handover();
            return Err(StepError::Launch(e));
        }
        crate::crash::point(if standby {
            "after-effect:standby-launched"
        } else {
            "after-effect:new-node-launched"
        });
        let (who, proc) = if standby {
            ("standby", &mut self.standby)
        } else {
            ("new node", &mut self.node)
        };
        let delivered = tokio::select! {
            d = tokio::time::timeout(self.cfg.handover_deadline, deliveries.recv()) => d.ok().flatten(),
            _ = wait_exit(proc.as_mut()) => None,
        };
        let exited = proc.as_mut().and_then(|n| n.exited());
        self.disarm_handover();
        let Some(receiver) = delivered else {
            let why = self
                .runtime
                .handover_refusal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            return Err(StepError::Delivery(match (why, exited) {
                (Some(why), _) => format!("the agent refused the {who} the keys: {why}"),
                (None, Some(code)) => format!(
                    "the {who} exited ({code}) before taking the keys; it refused them or crashed (see its log)"
                ),
                (None, None) => format!(
                    "the {who} did not take the keys within {:?}",
                    self.cfg.handover_deadline
                ),
            }));
        };
        crate::crash::point("after-effect:keys-delivered");
        Ok(receiver.to_string())
    }

    /// The switch: drains and stops the old node; once its exit is confirmed the standby,
    /// which waits for the data directory's lock, takes over.
    async fn switch_over(&mut self) -> bool {
        let confirmed = self.stop_node().await;
        if confirmed {
            crate::crash::point("after-effect:old-node-stopped");
            self.node = self.standby.take();
            self.node_ready = false;
            self.publish_status();
        }
        confirmed
    }

    /// Stops the node; `false` if its exit could not be confirmed (it is then still tracked).
    async fn stop_node(&mut self) -> bool {
        self.node_ready = false;
        let mut confirmed = true;
        if let Some(mut n) = self.node.take() {
            confirmed = n.stop(self.cfg.stop_grace).await;
            if !confirmed {
                error!("the node's exit could not be confirmed");
                self.node = Some(n);
            }
        }
        self.publish_status();
        confirmed
    }

    /// Passes every signed revocation the running node has not confirmed yet to it; the node
    /// verifies it against its own measured committee and seals it with its keys.
    async fn push_revocations(&mut self) {
        if !self.node_ready {
            return;
        }
        let todo: Vec<(Measurement, Vec<u8>)> = self
            .runtime
            .revocation_evidence
            .iter()
            .filter(|(m, _)| !self.runtime.pushed.contains(m))
            .map(|(m, e)| (*m, e.clone()))
            .collect();
        let url = format!("http://{}/v1/revocations", self.cfg.node_upgrade);
        for (m, ev) in todo {
            let r = self.http.post(&url).body(ev).send().await;
            match r {
                Ok(r) if r.status().is_success() => {
                    info!(revoked = %m, "the node recorded the revocation");
                    self.runtime.pushed.insert(m);
                }
                Ok(r) => {
                    let status = r.status();
                    let body = crate::download::read_body_capped(r, 64 * 1024)
                        .await
                        .unwrap_or_default();
                    // Once per node process: a refusal is not retried at every poll.
                    self.runtime.pushed.insert(m);
                    self.report(
                        None,
                        format!(
                            "the node refused revocation {m}: HTTP {status} {}",
                            dc_handover::printable(&String::from_utf8_lossy(&body), 300)
                        ),
                    );
                }
                Err(e) => {
                    warn!(revoked = %m, "passing the revocation to the node failed: {e}; retrying later")
                }
            }
        }
    }

    /// Starts the current node and waits until it serves.
    pub async fn start_current(&mut self) -> Result<(), String> {
        // A new node process: it confirms the revocations again.
        self.runtime.pushed.clear();
        let current = self.core.state().current.clone();
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
            // Keep `/v1/status` true to the node's process, not only to transitions.
            self.publish_status();
            if self.core.is_halted() {
                // A stop whose exit was not confirmed: retried until it is.
                self.drive(Event::Tick, None).await;
                if self.core.is_halted() {
                    tokio::select! {
                        _ = tokio::time::sleep(self.cfg.poll) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                continue;
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
            if !self.core.state().paused && self.core.is_idle() {
                let candidate = self.next_candidate();
                // Revocations reach the running node at once, not only at the next upgrade.
                self.push_revocations().await;
                if let Some(candidate) = candidate {
                    self.upgrade(candidate).await;
                    continue;
                }
            }
            let poll = self.cfg.poll;
            let event = {
                let chain = self.chain.as_mut();
                async move {
                    match chain {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => {}
                ev = event => match ev {
                    Some(ev) => self.on_chain_event(ev),
                    None => {
                        warn!("the chain watcher stopped");
                        self.chain = None;
                    }
                },
            }
        }
    }

    fn on_chain_event(&mut self, ev: ChainEvent) {
        match ev {
            ChainEvent::Connected { endpoint } => {
                info!(%endpoint, "connected to DCChain");
                self.shared.metrics.chain_connected(&endpoint, true);
                self.update_chain_view(|c| {
                    c.endpoint = Some(endpoint);
                    c.connected = true;
                });
            }
            ChainEvent::Disconnected { endpoint, reason } => {
                warn!(%endpoint, "DCChain connection lost: {reason}");
                self.shared.metrics.chain_connected(&endpoint, false);
                self.update_chain_view(|c| {
                    c.connected = false;
                    c.last_problem = Some(format!("{endpoint}: {reason}"));
                });
            }
            ChainEvent::Syncing { endpoint } => {
                // Never act on chain data while the node syncs, not even on older data.
                self.chain_latest = None;
                self.shared.metrics.chain_syncing(&endpoint);
                self.update_chain_view(|c| c.syncing = true);
                warn!(%endpoint, "DCChain node is syncing; waiting");
            }
            ChainEvent::Observed(o) => {
                self.shared
                    .metrics
                    .chain_finalized(&o.endpoint, o.block_number, o.at);
                self.update_chain_view(|c| {
                    c.syncing = false;
                    c.connected = true;
                    // The lag counts from a new finalized block, not from a re-read of one.
                    if c.finalized_hash.as_deref() != Some(o.block_hash.as_str()) {
                        c.finalized_at_ms = Some(now_ms());
                    }
                    c.finalized_block = Some(o.block_number);
                    c.finalized_hash = Some(o.block_hash.clone());
                });
                self.chain_latest = Some(*o);
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
            if self.core.set_paused(p) {
                info!(paused = p, "operator request");
                let _ = self.save();
            }
        }
    }

    /// All candidates the sources offer right now (refusals are reported).
    fn offered(&mut self) -> Vec<Candidate> {
        let mut out = Vec::new();
        if let Some(feed) = self.cfg.feed.clone() {
            match LocalFeed::new(&feed).scan(&self.committee, PRODUCT, now_ms() / 1000) {
                Ok(scan) => {
                    for (p, why) in &scan.refused {
                        self.report(
                            Some("feed_record_invalid"),
                            format!("{}: {why}", p.display()),
                        );
                    }
                    for (m, ev) in &scan.revoked {
                        self.runtime
                            .revocation_evidence
                            .entry(*m)
                            .or_insert_with(|| ev.clone());
                    }
                    let new: Vec<String> = scan
                        .revoked
                        .iter()
                        .map(|(m, _)| m.to_string())
                        .filter(|m| !self.core.state().revoked.contains(m))
                        .collect();
                    if !new.is_empty() {
                        warn!(?new, "committee revocations");
                        for m in &new {
                            self.core.note_revoked(m);
                        }
                        let _ = self.save();
                    }
                    for v in scan.valid {
                        // The bytes the scan verified, not a second read of the file.
                        if let Some(c) = Candidate::from_record(
                            &v.record,
                            v.json,
                            format!("feed {}", v.path.display()),
                        ) {
                            out.push(c);
                        }
                    }
                }
                Err(e) => self.report(Some("feed_unreadable"), format!("feed unreadable: {e}")),
            }
        }
        if let Some(obs) = &self.chain_latest {
            // Each finalized block is evaluated once (its EnclaveIds signatures verified once),
            // however often the loop polls — unless reading its storage failed (a slow or
            // lost RPC answer), which the watcher's next read of the block may not repeat.
            let fresh = self
                .runtime
                .chain_evaluated
                .as_ref()
                .is_none_or(|(hash, complete, _)| hash != &obs.block_hash || !complete);
            if fresh {
                let complete = !matches!(obs.program, Err(dc_chain::ChainError::Rpc(_)))
                    && !matches!(obs.enclave_ids, Err(dc_chain::ChainError::Rpc(_)));
                let r = evaluate_chain(obs, &self.committee, &self.revoked())
                    .map_err(|e| format!("DCChain block #{}: {e}", obs.block_number));
                self.runtime.chain_evaluated = Some((obs.block_hash.clone(), complete, r));
            }
            match self
                .runtime
                .chain_evaluated
                .as_ref()
                .map(|(_, complete, r)| (*complete, r.clone()))
            {
                Some((_, Ok(Some(c)))) => out.push(c),
                Some((true, Err(msg))) => self.report(Some("chain_record_invalid"), msg),
                Some((false, Err(msg))) => self.report(Some("chain_unreadable"), msg),
                _ => {}
            }
        }
        out
    }

    /// The release the core picks among those offered (refusals are reported).
    fn next_candidate(&mut self) -> Option<Candidate> {
        let offered = self.offered();
        let offers: Vec<Offer> = offered.iter().map(offer_of).collect();
        let sel = self.core.select(&offers, now_ms());
        for (why, r) in sel.refused {
            self.report(Some(why.code()), r);
        }
        let pick = sel.pick?;
        offered
            .into_iter()
            .find(|c| c.mr_enclave.to_string() == pick.mr_enclave && c.version == pick.version)
    }

    /// Records a refusal once (status and log; a refused release also in the decision
    /// metric, by `reason`), never acting on it.
    fn report(&mut self, release_refused: Option<&'static str>, msg: String) {
        if self.reported.insert(&msg) {
            warn!("{msg}");
            if let Some(reason) = release_refused {
                self.shared.metrics.decision("refused", reason);
            }
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

    /// Carries out the orchestrator core's actions, feeding each outcome back, until the
    /// core is idle again. All decisions are the core's; this only does the I/O.
    async fn drive(&mut self, first: Event, candidate: Option<Candidate>) {
        let mut transit = Transit {
            candidate,
            ..Transit::default()
        };
        let mut event = first;
        // The core appends a history entry (duration, downtime) when an upgrade ends.
        let last_entry = self.core.state().history.last().cloned();
        loop {
            let action = match self.core.handle(event, now_ms()) {
                Ok(a) => a,
                Err(e) => {
                    error!("orchestrator: {e}");
                    return;
                }
            };
            event = match action {
                Action::Idle => return,
                Action::Finished(outcome) => {
                    let entry = self
                        .core
                        .state()
                        .history
                        .last()
                        .filter(|e| Some(*e) != last_entry.as_ref());
                    let duration = entry.map(|e| Duration::from_millis(e.duration_ms));
                    let downtime = entry
                        .filter(|_| matches!(outcome, Outcome::Committed { .. }))
                        .and_then(|e| e.downtime_ms)
                        .map(Duration::from_millis);
                    self.shared
                        .metrics
                        .upgrade_finished(&outcome, duration, downtime);
                    return self.finished(outcome);
                }
                Action::Persist => Event::Persisted(self.persist()),
                Action::Download(_) => self.download(&mut transit).await,
                Action::TakeKeys => self.take_keys(&mut transit).await,
                Action::StopNode => {
                    let old = self.core.state().phase == Phase::OldStopped;
                    let confirmed = self.stop_node().await;
                    if old && confirmed {
                        crate::crash::point("after-effect:old-node-stopped");
                    }
                    Event::Stopped { confirmed }
                }
                Action::LaunchNew => Event::Delivered(self.launch_and_deliver(&mut transit).await),
                Action::StopStandby => Event::Stopped {
                    confirmed: self.stop_standby().await,
                },
                Action::LaunchStandby => Event::Delivered(self.launch_standby(&mut transit).await),
                Action::Switch => Event::Stopped {
                    confirmed: self.switch_over().await,
                },
                Action::AwaitReady => {
                    let deadline = self.cfg.node_ready_deadline;
                    let r = match self.node.as_mut() {
                        Some(n) => n.wait_ready(deadline).await.map_err(|e| e.to_string()),
                        None => Err("the new node is gone".into()),
                    };
                    if r.is_ok() {
                        self.node_ready = true;
                        self.publish_status();
                        crate::crash::point("after-effect:new-node-ready");
                    }
                    Event::Ready(r.map_err(StepError::NotReady))
                }
                Action::CheckHealth => {
                    let r = self.check_health().await;
                    if r.is_ok() {
                        crate::crash::point("after-effect:health-checked");
                    }
                    Event::Health(r.map_err(StepError::Health))
                }
                Action::StartCurrent => match self.start_current().await {
                    Ok(()) => {
                        info!("rolled back: the previous node serves again");
                        Event::Started(Ok(()))
                    }
                    Err(e) => {
                        error!("the previous node does not start after rollback: {e}; retrying");
                        self.node = None;
                        Event::Started(Err(StepError::Launch(e)))
                    }
                },
            };
        }
    }

    /// Writes the core's state to the journal (the crash points around it are where a
    /// `kill -9` between a phase and its side effect lands).
    fn persist(&mut self) -> Result<(), String> {
        let name = Orchestrator::phase_name(self.core.state().phase);
        crate::crash::point(&format!("before:{name}"));
        self.save()?;
        crate::crash::point(&format!("after:{name}"));
        Ok(())
    }

    fn finished(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Committed { version } => {
                info!(%version, "upgrade committed");
                self.shared
                    .status
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_error = None;
            }
            Outcome::Abandoned(StepError::NodeExitedDuringDownload) => {
                warn!("{}", StepError::NodeExitedDuringDownload)
            }
            Outcome::Abandoned(e) => {
                error!("{e}");
                self.set_error(e.to_string());
            }
            Outcome::RolledBack(e) => {
                error!("{e}; rolled back");
                self.set_error(e.to_string());
            }
            Outcome::RollbackHalted(e) => {
                let msg = format!(
                    "{e}; rollback halted: the new node's exit could not be confirmed, so the previous node was not started beside it. Stop the node process by hand; the agent retries the rollback"
                );
                error!("{msg}");
                self.set_error(msg);
            }
            Outcome::StandbyStopHalted(e) => {
                let msg = format!(
                    "{e}; the standby's exit could not be confirmed; the old node keeps serving and the agent retries stopping the standby"
                );
                error!("{msg}");
                self.set_error(msg);
            }
            Outcome::Nothing => {}
        }
        self.publish_status();
    }

    /// Brings the journal back to a safe state after a restart.
    pub async fn recover(&mut self) {
        match self.core.state().phase {
            Phase::Idle => {}
            Phase::Healthy => {
                info!("resuming: the new node was verified healthy before the restart; committing")
            }
            p if p.old_node_may_be_stopped() => warn!(
                ?p,
                "resuming an interrupted upgrade after the old node was stopped: rolling back"
            ),
            p => warn!(
                ?p,
                "abandoning an upgrade interrupted before the old node was touched"
            ),
        }
        self.drive(Event::Start, None).await;
    }

    /// One whole upgrade to `c`.
    pub async fn upgrade(&mut self, c: Candidate) {
        info!(version = %c.version, mrenclave = %c.mr_enclave, source = %c.source, "new release");
        self.shared.metrics.decision("upgrade", "newer_release");
        let offer = offer_of(&c);
        self.drive(Event::Begin(offer), Some(c)).await;
    }

    async fn download(&mut self, t: &mut Transit) -> Event {
        let Some(c) = t.candidate.clone() else {
            return Event::Downloaded(Err(StepError::Refused {
                version: String::new(),
                reason: "no candidate to download".into(),
            }));
        };
        let started = std::time::Instant::now();
        let r = self.fetch_and_verify(&c).await;
        let result = match &r {
            Ok(_) => "ok",
            Err(StepError::NodeExitedDuringDownload) => "interrupted",
            Err(_) => "refused",
        };
        self.shared.metrics.download(result, started.elapsed());
        match r {
            Ok((target, isv_svn, evidence)) => {
                crate::crash::point("after-effect:download");
                t.evidence = evidence;
                Event::Downloaded(Ok(Verified { target, isv_svn }))
            }
            Err(e) => Event::Downloaded(Err(e)),
        }
    }

    async fn take_keys(&mut self, t: &mut Transit) -> Event {
        let Some(u) = self.core.state().upgrade.clone() else {
            return Event::KeysTaken(Err(StepError::TakeKeys("no upgrade in progress".into())));
        };
        let destination = match (
            Measurement::from_hex(&u.target_mr_enclave),
            u.target_version.parse::<Version>(),
            u.target_isv_svn,
        ) {
            (Ok(mr_enclave), Ok(version), Some(isv_svn)) => Destination {
                mr_enclave,
                version,
                isv_svn,
            },
            _ => {
                return Event::KeysTaken(Err(StepError::TakeKeys(
                    "the journaled target is incomplete".into(),
                )))
            }
        };
        let evidence = std::mem::take(&mut t.evidence);
        match self.acquire_keys(&evidence, destination).await {
            Ok((ring, probe)) => {
                crate::crash::point("after-effect:keys-acknowledged");
                let taken = Taken {
                    fingerprint: hex::encode(ring.fingerprint()),
                    probe_sha256: probe,
                };
                t.ring = Some(ring);
                Event::KeysTaken(Ok(taken))
            }
            Err(e) => Event::KeysTaken(Err(StepError::TakeKeys(e))),
        }
    }

    /// Serves the keys to the verified target only, launches it, and waits for its attested
    /// acknowledgement (or its exit, or the deadline).
    async fn launch_and_deliver(&mut self, t: &mut Transit) -> Result<String, StepError> {
        self.launch_and_serve_keys(t, false).await
    }

    async fn check_health(&self) -> Result<(), String> {
        let u = self
            .core
            .state()
            .upgrade
            .clone()
            .ok_or("no upgrade in progress")?;
        let target = u.target.ok_or("no verified target")?;
        let fp = u.keyring_fingerprint.ok_or("no keyring fingerprint")?;
        let probe = u.probe_sha256.ok_or("no probe")?;
        self.health_check(&target, &fp, &probe).await
    }

    /// Downloads and unpacks the artifact and checks the bundle against the candidate: the
    /// measurement against the signed EnclaveID; version and ISVSVN against the signed (feed)
    /// or claimed (chain) ones. Everything that can be checked before the running node is
    /// touched is checked here. Returns the release, its ISVSVN and its evidence (the signed
    /// record, or for a chain release its signatures and measured manifest) — what the node
    /// holding the keys will verify itself before releasing them.
    async fn fetch_and_verify(
        &mut self,
        c: &Candidate,
    ) -> Result<(Release, u16, Vec<u8>), StepError> {
        let refused = |reason: String| StepError::Refused {
            version: c.version.to_string(),
            reason,
        };
        // A slow source never keeps the agent from supervising the node: if the node exits
        // during the download, the download is dropped and the node restarted first.
        let archive = {
            let metrics = self.shared.metrics.clone();
            let mut received = move |b| metrics.downloaded_bytes(b);
            let fetch = self.downloader.fetch_logged(&c.fetch, &mut received);
            tokio::select! {
                r = fetch => r.map_err(|e| refused(e.to_string()))?,
                _ = wait_exit(self.node.as_mut()) => return Err(StepError::NodeExitedDuringDownload),
            }
        };
        self.install_verified(c, &archive).map_err(refused)
    }

    /// Unpacks (or finds unpacked) and checks the downloaded `archive` for `c`, and records its
    /// evidence: see [`Agent::fetch_and_verify`].
    fn install_verified(
        &mut self,
        c: &Candidate,
        archive: &Path,
    ) -> Result<(Release, u16, Vec<u8>), String> {
        let mre = c.mr_enclave.to_string();
        let final_dir = self.cfg.state_dir.join("bundles").join(&mre);
        let now = now_ms() / 1000;
        // Measurement, product, version, ISVSVN, the Gramine rule, DEBUG policy and the
        // evidence checked as the node will check it, so a refusal is reported here and names
        // its reason — on the bundle unpacked before, or on a fresh unpacking.
        let (bundle, evidence) = match Bundle::open(&final_dir) {
            Ok(b) if b.mr_enclave == c.mr_enclave => {
                let evidence =
                    crate::download::check_bundle(&b, c, &self.committee, now, self.allow_debug)?;
                (b, evidence)
            }
            _ => {
                if final_dir.exists() {
                    warn!(dir = %final_dir.display(), "stored bundle no longer verifies; unpacking it again");
                    std::fs::remove_dir_all(&final_dir).map_err(io(final_dir.display()))?;
                }
                // Unverified content is unpacked outside `bundles/`, where launchers run from.
                let tmp = self
                    .cfg
                    .state_dir
                    .join("store")
                    .join(format!(".unpack-{}", now_ms()));
                match crate::download::verify_artifact(
                    archive,
                    c,
                    &self.committee,
                    now,
                    self.allow_debug,
                    &tmp,
                ) {
                    Ok(checked) => {
                        std::fs::rename(&tmp, &final_dir).map_err(io(final_dir.display()))?;
                        checked
                    }
                    Err(e) => {
                        // An artifact that does not verify is not kept.
                        let _ = std::fs::remove_file(archive);
                        return Err(e);
                    }
                }
            }
        };
        if bundle.manifest.isv_svn < self.core.state().highest_isv_svn {
            return Err(format!(
                "ISVSVN {} is lower than the highest ever trusted ({})",
                bundle.manifest.isv_svn,
                self.core.state().highest_isv_svn
            ));
        }
        let p = self
            .cfg
            .state_dir
            .join("records")
            .join(format!("{mre}.json"));
        write_atomic(&p, &evidence)?;
        Ok((
            Release {
                version: c.version.to_string(),
                mr_enclave: mre,
                bundle_dir: final_dir,
                record: Some(p),
            },
            bundle.manifest.isv_svn,
            evidence,
        ))
    }

    /// Writes the probe through the old node, then takes its keyring by attested handover —
    /// only from a committee-signed node release that is the installed one, presenting the
    /// target release's evidence, which that node checks itself before it releases the keys
    /// for exactly that target — and seals it inside the agent before acknowledging.
    async fn acquire_keys(
        &mut self,
        target_evidence: &[u8],
        destination: Destination,
    ) -> Result<(Keyring, String), String> {
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
        crate::crash::point("after-effect:probe");
        let client = HolderClient::new(&format!("http://{}", self.cfg.node_upgrade))
            .map_err(|e| e.to_string())?;
        let cfg = ReceiverConfig {
            allow_debug_peers: self.allow_debug,
            authorization: self.evidence.clone(),
            destination: target_evidence.to_vec(),
            expect_released_to: Some(destination),
        };
        let pinned = CommitteeNode {
            committee: CommitteeAuthorizer::new(self.committee.clone())
                .with_products(PRODUCT, "dcupgrade")
                .with_revoked(self.revoked()),
            expected: Measurement::from_hex(&self.core.state().current.mr_enclave)
                .map_err(|e| e.to_string())?,
        };
        let keys_dir = self.cfg.state_dir.join("keys");
        let tee = self.tee.clone();
        let received = tokio::time::timeout(
            self.cfg.handover_deadline,
            receive_keys(&client, &*self.tee, cfg, pinned, move |ring| {
                let blob = tee
                    .seal(SealPolicy::MrEnclave, TRANSIT_AAD, &ring.encode())
                    .map_err(|e| e.to_string())?;
                write_atomic(
                    &keys_dir.join(format!("{}.sealed", hex::encode(ring.fingerprint()))),
                    &blob.0,
                )?;
                crate::crash::point("after-effect:keys-sealed");
                Ok(())
            }),
        )
        .await;
        self.shared.metrics.received(&match &received {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err((e.is_refusal(), e.code(), e.to_string())),
            Err(_) => Err((false, "timeout".into(), String::new())),
        });
        let received = received
            .map_err(|_| "the handover did not complete in time".to_string())?
            .map_err(|e| e.to_string())?;
        Ok((
            received.keyring,
            hex::encode(Sha256::digest(probe.as_bytes())),
        ))
    }

    /// Serves the keyring on the agent's port to the verified new MRENCLAVE only.
    fn arm_handover(
        &mut self,
        ring: Keyring,
        version: Version,
        mr_enclave: Measurement,
    ) -> Result<mpsc::UnboundedReceiver<Measurement>, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let holder = Holder::new(
            &*self.tee,
            HolderConfig {
                allow_debug_peers: self.allow_debug,
                min_node_version: version,
                allow_upgrader: false,
                challenge_ttl_ms: 30_000,
                max_pending: 4,
                authorization: self.evidence.clone(),
            },
            Pinned {
                expected: mr_enclave,
                role: PeerRole::Node(version),
                revoked: self.revoked(),
            },
        )
        .map_err(|e| e.to_string())?;
        let refusal = self.runtime.handover_refusal.clone();
        *refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let (on_delivery, on_refusal) = (self.shared.metrics.clone(), self.shared.metrics.clone());
        let router = holder_router_observed(
            holder,
            self.tee.clone(),
            fixed_keyring(ring),
            Arc::new(move |d| {
                on_delivery.handover.delivered("holder");
                let _ = tx.send(d.receiver.mr_enclave);
            }),
            Arc::new(move |e| {
                on_refusal.holder_refused(e);
                *refusal.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("{} ({})", e, e.code()));
            }),
        );
        *self
            .shared
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(router);
        Ok(rx)
    }

    fn disarm_handover(&self) {
        *self
            .shared
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The new node reports the expected identity and keyring (both already attested in the
    /// handover) and serves the probe the old node stored.
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
        // The node attested the received keyring in its acknowledgement; it then minted its
        // own data-key generation, so its current fingerprint differs by design.
        if field("version") != target.version
            || field("mr_enclave") != target.mr_enclave
            || field("received_fingerprint") != fp
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

#[cfg(test)]
mod tests {
    use super::*;
    use dc_handover::messages::Challenge;
    use dc_handover::{HandoverError, Receiver};
    use dc_release::committee::CommitteeSigner;
    use dc_release::{ReleaseRecord, Role, SignedRecord};
    use dc_tee_sim::platform::{test_identity, InProcessTee, Platform};
    use rand_core::TryRngCore;

    fn record(s: &CommitteeSigner, id: &EnclaveIdentity, role: Role, product: &str) -> Vec<u8> {
        let mut r = SignedRecord::unsigned(ReleaseRecord {
            product: product.into(),
            role,
            version: "1.0.0".into(),
            mr_enclave: id.mr_enclave.to_string(),
            isv_svn: id.isv_svn,
            artifact: (role == Role::Node).then(|| dc_release::Artifact {
                sha256: "00".repeat(32),
                size: 1,
                urls: vec!["file:///x".into()],
            }),
            expires_at: None,
        });
        r.sign(s).unwrap();
        r.to_json()
    }

    /// The challenge of a holder `holder` presenting `evidence`, as the agent verifies it.
    fn agent_verdict(
        holder: EnclaveIdentity,
        evidence: Vec<u8>,
        journal_current: Measurement,
        committee: &Committee,
    ) -> Result<(), HandoverError> {
        let platform = Arc::new(Platform::new(
            zeroize::Zeroizing::new([9; 32]),
            dc_tee::CpuSvn([1; 16]),
            dc_tee::KeyId([1; 32]),
        ));
        let agent = InProcessTee::new(platform.clone(), test_identity(0x33, 0xBB, 1, false));
        let htee = InProcessTee::new(platform, holder);
        let authz = CommitteeNode {
            committee: CommitteeAuthorizer::new(committee.clone())
                .with_products(PRODUCT, "dcupgrade"),
            expected: journal_current,
        };
        let cfg = ReceiverConfig {
            allow_debug_peers: false,
            authorization: vec![],
            destination: b"target".to_vec(),
            expect_released_to: None,
        };
        let mut rng = rand_core::OsRng.unwrap_err();
        let (mut r, hello) = Receiver::start(&agent, cfg, authz, &mut rng).unwrap();
        let mut h = Holder::new(
            &htee,
            HolderConfig {
                allow_debug_peers: false,
                min_node_version: Version::new(1, 0, 0),
                allow_upgrader: true,
                challenge_ttl_ms: 10_000,
                max_pending: 4,
                authorization: evidence,
            },
            dc_handover::StaticAllowList::new(),
        )
        .unwrap();
        let ch: Challenge = h.on_hello(&htee, &hello, 1, &mut rng).unwrap();
        r.on_challenge(&agent, &ch, 2).map(|_| ())
    }

    /// Key injection through the agent: whatever the journal names as the installed node, the
    /// agent takes keys only from a holder whose attested identity has a committee-signed
    /// node record.
    #[test]
    fn keys_are_taken_only_from_a_committee_signed_node_holder() {
        let s = CommitteeSigner::from_seed([5; 32]);
        let committee = Committee::new([s.public()], 1).unwrap();
        let node = test_identity(0x11, 0xAA, 1, false);
        let host = test_identity(0x66, 0x66, 1, false);
        // The genuine node with its record.
        assert!(agent_verdict(
            node,
            record(&s, &node, Role::Node, PRODUCT),
            node.mr_enclave,
            &committee
        )
        .is_ok());
        // A host enclave that the (rewritten) journal names as current: no record at all, a
        // record the host signed itself, or the genuine node's record.
        let rogue = CommitteeSigner::from_seed([6; 32]);
        for evidence in [
            vec![],
            record(&rogue, &host, Role::Node, PRODUCT),
            record(&s, &node, Role::Node, PRODUCT),
        ] {
            let e = agent_verdict(host, evidence, host.mr_enclave, &committee).unwrap_err();
            assert!(matches!(e, HandoverError::Unauthorized(_)), "{e}");
        }
        // A committee-signed upgrader is not a node, and a committee-signed node that is not
        // the installed one is refused too.
        let e = agent_verdict(
            host,
            record(&s, &host, Role::Upgrader, "dcupgrade"),
            host.mr_enclave,
            &committee,
        )
        .unwrap_err();
        assert!(e.to_string().contains("only from a node release"), "{e}");
        let e = agent_verdict(
            node,
            record(&s, &node, Role::Node, PRODUCT),
            host.mr_enclave,
            &committee,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not the installed one"), "{e}");
    }

    #[test]
    fn reported_refusals_are_bounded() {
        let mut r = Reported::default();
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        for i in 0..10 * Reported::CAP {
            r.insert(&format!("chain block {i}: garbage"));
        }
        assert_eq!(r.order.len(), Reported::CAP);
        assert_eq!(r.set.len(), Reported::CAP);
        assert!(r.insert("a"), "the oldest were forgotten");
    }
}

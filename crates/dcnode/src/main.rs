//! `dcnode`: the reference DC storage node. Runs as an enclave (under `dctee-sim launch` on
//! the software platform).
//!
//! Data API socket: a listening socket passed by socket activation under the name `data`
//! (`LISTEN_FDS`/`LISTEN_FDNAMES`, e.g. `dctee-sim launch --listen-fd data=FD`) if there is
//! one, else `--listen`. On SIGTERM the node drains: it stops accepting at once (closing only
//! its own copy of a passed socket, whose queue keeps new connections for the next node),
//! answers open connections with `Connection: close` for `--drain-linger-ms`, then closes idle
//! ones and lets requests in progress finish until `--drain-deadline-ms`, and exits; the
//! data-directory lock goes with the process.
//!
//! Standby (`--standby --upgrader URL`): receives and seals the keys while another node still
//! serves the data directory, prints `dcnode standby VERSION MRENCLAVE`, waits for the
//! data-directory lock, and only then opens the store, binds the upgrade port, serves and
//! prints `dcnode ready VERSION MRENCLAVE`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use dc_bundle::Manifest;
use dc_handover::http::{holder_router_observed, receive_keys, HolderClient};
use dc_handover::{Destination, Holder, HolderConfig, Keyring, ReceiverConfig, Version};
use dc_release::{Committee, CommitteeAuthorizer};
use dcnode::api::{self, Node, Status};
use dcnode::keystore::Keystore;
use dcnode::startup::{decide, KeySource, Situation};
use dcnode::store::ObjectStore;
use dcnode::{KEY_DATA, KEY_IDENTITY};
use rand_core::{OsRng, TryRngCore};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "dcnode",
    version,
    about = "Reference DC storage node (runs as an enclave)"
)]
struct Args {
    /// Data directory (sealed keyrings and encrypted objects).
    #[arg(long)]
    data: PathBuf,
    /// Data API address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// Upgrade port: the holder side of the key handover.
    #[arg(long, default_value = "127.0.0.1:6667")]
    upgrade_listen: SocketAddr,
    /// DCUpgrade to receive keys from when this version has none of its own.
    #[arg(long)]
    upgrader: Option<String>,
    /// Start as a standby while another node serves this data directory: receive the keys by
    /// handover from --upgrader and seal them without taking the data-directory lock, print
    /// `dcnode standby VERSION MRENCLAVE`, then wait (no deadline) for the lock, which the
    /// serving node releases when it exits. Only then open the store, bind the upgrade port,
    /// serve, and print `dcnode ready VERSION MRENCLAVE`.
    #[arg(long, requires = "upgrader")]
    standby: bool,
    /// Drain on SIGTERM: for this long open connections are still answered, each response
    /// with `Connection: close`; then idle connections are closed. New connections wait in
    /// the shared socket's queue for the next node meanwhile, so this adds to their latency:
    /// long enough for busy keep-alive clients to receive their `Connection: close`, no more.
    #[arg(long, default_value_t = 5, value_name = "MS")]
    drain_linger_ms: u64,
    /// Drain on SIGTERM: requests still in progress this long after it are cut. Keep it below
    /// the launcher's stop grace (the software platform's is 5 s).
    #[arg(long, default_value_t = 4000, value_name = "MS")]
    drain_deadline_ms: u64,
    /// This release's committee-signed record, presented to handover peers as evidence.
    #[arg(long)]
    release_record: Option<PathBuf>,
    /// Test-only fault (`crash-at-start`, `unhealthy`). Honored only when it comes from the
    /// measured manifest arguments, i.e. is part of the enclave identity; a launcher cannot
    /// turn it on.
    #[arg(long, hide = true)]
    fault: Option<Fault>,
    /// Test-only: exit abruptly at a handover step (`holder:after-challenge`,
    /// `holder:after-keys`, `holder:after-ack`, `receiver:before-seal`, `receiver:after-seal`,
    /// `receiver:after-ack`). Like `--fault`, honored only from the measured manifest.
    #[arg(long, hide = true)]
    crash_at: Option<String>,
    /// Test-only: derive a new keyring from this seed (hex) instead of randomness, so a test
    /// can look for the key bytes in every output. Honored only from the measured manifest.
    #[arg(long, hide = true)]
    test_key_seed: Option<String>,
    /// Log format (stderr): `text`, or `json` (one object per line: time, level, target,
    /// message, span and event fields). Filtered by `DCNODE_LOG` (default `info`).
    #[arg(long, value_enum, env = "DCNODE_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logging to stderr in the chosen format, filtered by `DCNODE_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    dc_log::init("DCNODE_LOG", format == LogFormat::Json);
}

/// The value following `flag` in the measured manifest arguments, if any: test-only flags
/// count only when the measured manifest itself carries them with exactly this value (under
/// Gramine the host supplies argv, so presence alone would let it pick the value).
fn measured_value<'a>(manifest_args: &'a [String], flag: &str) -> Option<&'a str> {
    manifest_args
        .iter()
        .position(|a| a == flag)
        .and_then(|i| manifest_args.get(i + 1))
        .map(String::as_str)
}

/// Exits abruptly (as `kill -9` would) if `point` is the armed crash point.
fn crash_point(armed: &Option<String>, point: &str) {
    if armed.as_deref() == Some(point) {
        eprintln!("dcnode: crash injection at {point}");
        // SAFETY: _exit(2) ends the process at once; that is the point.
        unsafe { libc::_exit(86) };
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Fault {
    /// Exit right after obtaining the keys, before serving.
    CrashAtStart,
    /// Serve, but answer every object read with 404.
    Unhealthy,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    // Before any thread starts: this edits the environment (the variables are removed so
    // processes the node starts do not inherit them).
    let passed = match dc_tee::sim::listen_fds_from_env() {
        Ok(p) => p,
        Err(e) => {
            error!("listening sockets passed to this node: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(args, passed));
    // Whatever is still running (a request cut at the drain deadline) ends with the process.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(lock) => {
            // Released by the kernel once every thread of this process is gone, so no write
            // of ours can follow the next node's opening of the store.
            std::mem::forget(lock);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The passed socket named `data`, if any; others are closed (with a warning).
fn data_socket(
    passed: Vec<(String, std::net::TcpListener)>,
) -> Result<Option<std::net::TcpListener>> {
    let mut data = None;
    for (name, l) in passed {
        if name == "data" {
            if data.is_some() {
                bail!("two listening sockets named data were passed");
            }
            data = Some(l);
        } else {
            warn!(name = %name, "a listening socket this node has no use for was passed; closing it");
        }
    }
    Ok(data)
}

/// Waits for the data-directory lock without holding up the runtime; no deadline (the agent
/// stops a standby it gives up on, which ends the wait with the process).
async fn wait_for_lock(data: &std::path::Path) -> Result<dcnode::keystore::DataDirLock> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let dir = data.to_path_buf();
    // A thread of its own, not the blocking pool: it may wait for ever, and the runtime must
    // not wait for it at shutdown.
    std::thread::Builder::new()
        .name("data-dir-lock".into())
        .spawn(move || {
            let _ = tx.send(dcnode::keystore::DataDirLock::wait(&dir));
        })
        .context("starting the lock waiter")?;
    Ok(rx.await.context("the lock waiter ended")??)
}

async fn run(
    args: Args,
    passed: Vec<(String, std::net::TcpListener)>,
) -> Result<dcnode::keystore::DataDirLock> {
    let data_socket = data_socket(passed)?;
    let opened =
        dc_tee::open().context("no TEE: run under Gramine-SGX or the software platform")?;
    let tee = opened.tee;
    let manifest = Manifest::parse(&opened.measured_config).context("measured manifest")?;
    let version: Version = manifest
        .version
        .parse()
        .map_err(anyhow::Error::msg)
        .context("manifest version")?;
    let committee = Committee::from_trust_roots(&manifest.trust)
        .context("trust roots in the measured manifest")?;
    let me = tee.identity()?;
    let evidence = match &args.release_record {
        Some(p) => dc_tee::read_limited(p, dc_release::record::MAX_RECORD_BYTES as u64)
            .with_context(|| format!("release record {}", p.display()))?,
        None => Vec::new(),
    };
    info!(version = %version, mrenclave = %me.mr_enclave, "dcnode starting");
    let (metrics, registry) = dcnode::metrics::NodeMetrics::new();
    tracing::trace!("dcnode trace logging is on");
    let fault = args.fault.filter(|f| {
        measured_value(&manifest.args, "--fault")
            == clap::ValueEnum::to_possible_value(f)
                .as_ref()
                .map(|v| v.get_name())
    });
    if args.fault.is_some() && fault.is_none() {
        bail!("--fault is only accepted from the measured manifest");
    }
    let key_seed = args
        .test_key_seed
        .clone()
        .filter(|v| measured_value(&manifest.args, "--test-key-seed") == Some(v.as_str()));
    if args.test_key_seed.is_some() && key_seed.is_none() {
        bail!("--test-key-seed is only accepted from the measured manifest");
    }
    let crash_at = args
        .crash_at
        .clone()
        .filter(|v| measured_value(&manifest.args, "--crash-at") == Some(v.as_str()));
    if args.crash_at.is_some() && crash_at.is_none() {
        bail!("--crash-at is only accepted from the measured manifest");
    }

    std::fs::create_dir_all(&args.data).with_context(|| args.data.display().to_string())?;
    // Held until exit: no second node on this data directory, whatever a launcher does. A
    // standby takes it only after its keys are sealed (its own blob, which the serving node
    // never touches), and opens nothing else before.
    let mut lock = if args.standby {
        None
    } else {
        Some(dcnode::keystore::DataDirLock::acquire(&args.data)?)
    };
    let keystore = Keystore::new(&args.data);
    let situation = Situation {
        own_sealed: keystore.path_for(&me.mr_enclave).exists(),
        other_state: keystore.any() || ObjectStore::has_objects(&args.data),
        upgrader: args.upgrader.is_some(),
    };
    // This release, as the custody rules see it: keys are released for it by name.
    let me_release = Destination {
        mr_enclave: me.mr_enclave,
        version,
        isv_svn: me.isv_svn,
    };
    let mut received_fingerprint = None;
    let ring = match decide(situation) {
        KeySource::Unseal => {
            let mut ring = keystore.load(&*tee, &me.mr_enclave)?.context("sealed keyring vanished")?;
            ring.custody_mut().raise_floor(version, me.isv_svn);
            ring
        }
        KeySource::Generate => {
            let mut ring = match &key_seed {
                None => Keyring::generate(&[KEY_IDENTITY, KEY_DATA], &mut OsRng.unwrap_err())?,
                Some(seed) => dcnode::test_keyring(seed)?,
            };
            ring.custody_mut().raise_floor(version, me.isv_svn);
            keystore.store(&*tee, &me.mr_enclave, &ring)?;
            info!(fingerprint = %hex::encode(ring.fingerprint()), "new node: generated a keyring");
            ring
        }
        KeySource::Handover => {
            let url = args.upgrader.as_deref().expect("decided on handover");
            let client = HolderClient::new(url)?;
            let cfg = ReceiverConfig {
                allow_debug_peers: manifest.trust.allow_debug_peers,
                authorization: evidence.clone(),
                destination: Vec::new(),
                // Keys are taken only if a node holder released them for exactly this release.
                expect_released_to: Some(me_release),
            };
            // A keyring this release sealed before (a retry after a rolled back attempt):
            // its data-key generation is kept. One that does not open is reported and left
            // untouched: the node refuses rather than seal other keys over it.
            let own = keystore
                .load(&*tee, &me.mr_enclave)
                .context("this release's own sealed keyring; it was left untouched and no keys were taken")?;
            let (ks, tee2, mre) = (&keystore, tee.clone(), me.mr_enclave);
            let only_upgrader = OnlyUpgrader(CommitteeAuthorizer::new(committee.clone()).with_products(&manifest.name, "dcupgrade"));
            let armed = crash_at.clone();
            let mut adopted = None;
            let slot = &mut adopted;
            let received = receive_keys(&client, &*tee, cfg, only_upgrader, move |ring| {
                let ring = dcnode::custody::adopt_received(ring, own, &me_release, &mut OsRng.unwrap_err())
                    .map_err(|e| e.to_string())?;
                crash_point(&armed, "receiver:before-seal");
                ks.store(&*tee2, &mre, &ring).map(|_| ()).map_err(|e| e.to_string())?;
                crash_point(&armed, "receiver:after-seal");
                *slot = Some(ring);
                Ok(())
            })
            .await;
            metrics.received(&received);
            let received = received.with_context(|| format!("receiving keys from {url}"))?;
            let ring = adopted.context("the received keyring was not stored")?;
            info!(
                received = %hex::encode(received.keyring.fingerprint()),
                fingerprint = %hex::encode(ring.fingerprint()),
                data_generation = ring.get(KEY_DATA).map_or(0, |k| k.version()),
                holder = %received.holder.mr_enclave,
                "received the keyring by attested handover and sealed it with a new data-key generation"
            );
            crash_point(&crash_at, "receiver:after-ack");
            received_fingerprint = Some(hex::encode(received.keyring.fingerprint()));
            ring
        }
        KeySource::Refuse => bail!(
            "{} holds data or other versions' sealed keys but this version has no keys of its own and no upgrader is configured; \
             refusing to generate new keys, which would make the stored data unreadable. Start it with --upgrader, or run the version that owns the keys",
            args.data.display()
        ),
    };
    if fault == Some(Fault::CrashAtStart) {
        bail!("fault injection: crashing at start");
    }
    let lock = match lock.take() {
        Some(l) => l,
        None => {
            // The agent waits for this line: keys held and sealed, nothing served.
            println!("dcnode standby {} {}", version, me.mr_enclave);
            let _ = std::io::Write::flush(&mut std::io::stdout());
            info!(
                "standby: keys sealed; waiting for the serving node to release the data directory"
            );
            let waited = std::time::Instant::now();
            let l = wait_for_lock(&args.data).await?;
            info!(
                waited_ms = waited.elapsed().as_millis() as u64,
                "the data directory is ours"
            );
            // A standby sealed before it held the lock: another standby of this release may
            // have sealed over its blob meanwhile. Serve only the keyring that is on disk, or
            // objects written now would be unreadable after a restart.
            let sealed = keystore
                .load(&*tee, &me.mr_enclave)
                .context("re-reading this release's sealed keyring")?;
            if sealed.as_ref().map(|r| r.fingerprint()) != Some(ring.fingerprint()) {
                bail!(
                    "this release's sealed keyring changed while the standby waited (another node of the same release sealed over it); refusing to serve keys that are not on disk. Start one standby at a time"
                );
            }
            l
        }
    };
    let unverified = dcnode::custody::unverified_revocations(&ring, &committee);
    if unverified > 0 {
        warn!(unverified, "revocations in the keyring that this committee cannot verify are kept (they only restrict)");
    }
    if ring.custody().is_revoked(&me.mr_enclave) {
        error!("the committee revoked this release; it serves, but upgrade to a newer release now");
    }
    let store = ObjectStore::open(&args.data, &ring, KEY_DATA)?;
    let node = Arc::new(Node {
        status: std::sync::RwLock::new(Status {
            product: manifest.name.clone(),
            version: version.to_string(),
            mr_enclave: me.mr_enclave.to_string(),
            keyring_fingerprint: hex::encode(ring.fingerprint()),
            keyring_epoch: ring.epoch(),
            received_fingerprint,
            data_generation: store.current_generation(),
            keyring_floor: ring.custody().floor.to_string(),
            revoked: revoked_list(&ring),
        }),
        store,
        ready: AtomicBool::new(true),
        fail_reads: fault == Some(Fault::Unhealthy),
    });
    {
        let st = node.status.read().unwrap_or_else(|p| p.into_inner());
        metrics.set_release(&st.version, &st.mr_enclave, st.data_generation);
    }
    // The keyring the holder releases; revocations pushed by the agent replace it.
    let current = Arc::new(std::sync::RwLock::new(Arc::new(ring)));

    let committee_for_revocations = committee.clone();
    // Holder side: hand the keyring to the upgrade agent, for a destination it authorizes.
    let holder = Holder::new(
        &*tee,
        HolderConfig {
            allow_debug_peers: manifest.trust.allow_debug_peers,
            min_node_version: version,
            allow_upgrader: true,
            challenge_ttl_ms: 30_000,
            max_pending: 16,
            authorization: evidence,
        },
        // Keys go only to the upgrade agent, never directly to another node, and only for a
        // committee-signed destination this node checks itself.
        OnlyUpgrader(
            CommitteeAuthorizer::new(committee.clone()).with_products(&manifest.name, "dcupgrade"),
        ),
    )?;
    let source = {
        let current = current.clone();
        Arc::new(move || current.read().unwrap_or_else(|p| p.into_inner()).clone())
    };
    let (on_delivery, on_refusal) = (metrics.clone(), metrics.clone());
    let upgrade_app = holder_router_observed(
        holder,
        tee.clone(),
        source,
        Arc::new(move |d| {
            on_delivery.handover.delivered("holder");
            info!(
                receiver = %d.receiver.mr_enclave,
                released_to = %d.released_to.map_or("-".into(), |r| r.to_string()),
                "keyring handed over; the receiver confirmed durable storage"
            )
        }),
        Arc::new(move |e| on_refusal.holder_refused(e)),
    )
    .merge(revocation_router(RevocationState {
        current,
        committee: committee_for_revocations,
        tee: tee.clone(),
        data: args.data.clone(),
        node: node.clone(),
    }));
    // Test-only crash points after each holder step: the step's response is sent, then the
    // node dies at the next handover request (or shortly after, if none comes).
    let upgrade_app = match crash_at.clone().filter(|p| p.starts_with("holder:")) {
        None => upgrade_app,
        Some(point) => {
            let tripped = Arc::new(AtomicBool::new(false));
            upgrade_app.layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let (point, tripped) = (point.clone(), tripped.clone());
                    async move {
                        let armed = Some(point.clone());
                        if tripped.load(Ordering::SeqCst) {
                            crash_point(&armed, &point);
                        }
                        let step = match req.uri().path() {
                            dc_handover::http::PATH_HELLO => "holder:after-challenge",
                            dc_handover::http::PATH_RESPONSE => "holder:after-keys",
                            dc_handover::http::PATH_ACK => "holder:after-ack",
                            _ => "",
                        };
                        let resp = next.run(req).await;
                        if step == point {
                            tripped.store(true, Ordering::SeqCst);
                            tokio::spawn(async move {
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                crash_point(&armed, step);
                            });
                        }
                        resp
                    }
                },
            ))
        }
    };

    let (data_listener, data_addr) = match data_socket {
        Some(l) => {
            // O_NONBLOCK is shared with every holder of the socket; all of ours use it so.
            l.set_nonblocking(true).context("the passed data socket")?;
            let l = tokio::net::TcpListener::from_std(l).context("the passed data socket")?;
            let addr = l.local_addr().context("the passed data socket")?;
            (l, format!("{addr} (passed)"))
        }
        None => {
            let l = bind(args.listen).await?;
            let addr = l
                .local_addr()
                .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
            (l, addr)
        }
    };
    let upgrade_listener = bind(args.upgrade_listen).await?;
    let upgrade_addr = upgrade_listener
        .local_addr()
        .map_or_else(|_| args.upgrade_listen.to_string(), |a| a.to_string());
    // From here SIGTERM drains instead of killing.
    let shutdown = shutdown_signal(node.clone(), metrics.clone())?;
    info!(data = %data_addr, upgrade = %upgrade_addr, "serving");
    // Tests and the agent wait for this line on stdout.
    println!("dcnode ready {} {}", version, me.mr_enclave);
    let _ = std::io::Write::flush(&mut std::io::stdout());

    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut rx2 = rx.clone();
    let mut rx1 = rx;
    let limits = dc_handover::http::ServeLimits::default();
    let drain = dc_handover::http::Drain {
        linger: std::time::Duration::from_millis(args.drain_linger_ms),
        deadline: std::time::Duration::from_millis(args.drain_deadline_ms),
    };
    metrics.set_ready(true);
    let data_app = api::router(node).merge(dc_metrics::router(registry)).layer(
        axum::middleware::from_fn_with_state(metrics.http.clone(), dc_metrics::HttpMetrics::track),
    );
    let data =
        dc_handover::http::serve_draining(data_listener, data_app, limits, drain, async move {
            let _ = rx1.changed().await;
        });
    let upgrade = dc_handover::http::serve(upgrade_listener, upgrade_app, limits, async move {
        let _ = rx2.changed().await;
    });
    let servers = tokio::spawn(async move { tokio::join!(data, upgrade) });
    shutdown.await;
    let _ = tx.send(true);
    let grace = drain.deadline + std::time::Duration::from_secs(1);
    match tokio::time::timeout(grace, servers).await {
        Ok(Ok((report, ()))) => info!(
            open = report.open_at_shutdown,
            cut = report.cut,
            took_ms = report.took.as_millis() as u64,
            "drained"
        ),
        _ => warn!("the servers did not stop within the drain deadline"),
    }
    info!("stopped");
    Ok(lock)
}

/// A node exchanges keys only with the upgrade agent (committee-signed upgrader record),
/// never directly with another node: as receiver it refuses any other holder before anything
/// is stored; as holder it gives keys to no one else.
struct OnlyUpgrader(CommitteeAuthorizer);

impl dc_handover::Authorizer for OnlyUpgrader {
    fn authorize(
        &self,
        peer: &dc_tee::EnclaveIdentity,
        evidence: &[u8],
    ) -> Result<dc_handover::PeerRole, dc_handover::AuthzError> {
        match self.0.authorize(peer, evidence)? {
            dc_handover::PeerRole::Upgrader => Ok(dc_handover::PeerRole::Upgrader),
            _ => Err(dc_handover::AuthzError::NotAuthorized(peer.mr_enclave)),
        }
    }

    fn authorize_destination(
        &self,
        evidence: &[u8],
    ) -> Result<Destination, dc_handover::AuthzError> {
        self.0.authorize_destination(evidence)
    }
}

fn revoked_list(ring: &Keyring) -> Vec<String> {
    ring.custody()
        .revocations()
        .iter()
        .map(|r| r.mr_enclave.to_string())
        .collect()
}

/// `POST /v1/revocations` on the upgrade port: a committee-signed revocation, verified here
/// against the measured committee, kept in the sealed custody state at once.
struct RevocationState {
    current: Arc<std::sync::RwLock<Arc<Keyring>>>,
    committee: Committee,
    tee: Arc<dyn dc_tee::Tee>,
    data: PathBuf,
    node: Arc<Node>,
}

pub const PATH_REVOCATIONS: &str = "/v1/revocations";

fn revocation_router(state: RevocationState) -> axum::Router {
    axum::Router::new()
        .route(PATH_REVOCATIONS, axum::routing::post(post_revocation))
        .with_state(Arc::new(state))
        .layer(axum::extract::DefaultBodyLimit::max(
            dc_release::record::MAX_RECORD_BYTES,
        ))
        .layer(axum::middleware::from_fn(dc_handover::http::deadline))
}

async fn post_revocation(
    axum::extract::State(st): axum::extract::State<Arc<RevocationState>>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let reply = |code: StatusCode, v: serde_json::Value| (code, axum::Json(v)).into_response();
    let st2 = st.clone();
    // Sealing talks to the platform: off the async threads, one change at a time.
    let r = tokio::task::spawn_blocking(move || {
        let mut cur = st2.current.write().unwrap_or_else(|p| p.into_inner());
        let (m, next) = dcnode::custody::apply_revocation(&cur, &body, &st2.committee)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let Some(next) = next else {
            return Ok((m, false));
        };
        let me = st2
            .tee
            .identity()
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Keystore::new(&st2.data)
            .store(&*st2.tee, &me.mr_enclave, &next)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        st2.node
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .revoked = revoked_list(&next);
        *cur = Arc::new(next);
        Ok((m, true))
    })
    .await;
    match r {
        Ok(Ok((m, added))) => {
            if added {
                warn!(revoked = %m, "committee revocation recorded in the sealed keyring; keys never go to it");
            }
            reply(
                StatusCode::OK,
                serde_json::json!({ "revoked": m.to_string(), "added": added }),
            )
        }
        Ok(Err((code, e))) => {
            warn!("revocation refused: {e}");
            reply(
                code,
                serde_json::json!({ "error": "revocation_refused", "message": e }),
            )
        }
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": "internal", "message": "revocation step failed" }),
        ),
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Installs the SIGTERM/SIGINT handlers now (until then the default action, ending the
/// process at once, applies: right for a standby, which serves nothing and holds no lock);
/// the future resolves on the first signal.
fn shutdown_signal(
    node: Arc<Node>,
    metrics: dcnode::metrics::NodeMetrics,
) -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        node.ready.store(false, Ordering::SeqCst);
        metrics.set_ready(false);
        info!("stopping: draining the data API");
    })
}

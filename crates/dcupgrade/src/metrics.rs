//! The agent's Prometheus metrics, served at `GET /metrics` on its API port: the upgrade
//! phase, upgrades by outcome and reason with their duration and downtime, release decisions,
//! the chain endpoints' connection and finalized-head lag, downloads, and key-handover
//! attempts on both of the agent's sides (receiver from the old node, holder for the new one;
//! a refusal is a security event, counted by code and logged at WARN).
//!
//! Labels take values from fixed sets (phases, outcome and reason codes) or from the
//! operator's configuration (chain endpoints): never from a release file or a peer.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dc_metrics::HandoverMetrics;
use dc_orchestrator::state::Phase;
use dc_orchestrator::{Orchestrator, Outcome, StepError};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Upgrade durations: 10 ms to ~40 min.
fn upgrade_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 18))
}

/// Downtime: 1 ms to ~65 s (make-before-break is a few ms; break-before-make tens).
fn downtime_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Downloads: 10 ms to ~20 min.
fn download_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

/// What the agent knows of one chain endpoint; the lag is computed at each scrape.
#[derive(Debug, Default)]
struct Endpoint {
    connected: bool,
    syncing: bool,
    finalized_block: Option<u64>,
    finalized_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct ChainEndpoints(Mutex<HashMap<String, Endpoint>>);

impl Collector for ChainEndpoints {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let connected = Family::<EndpointLabels, Gauge>::default();
        let syncing = Family::<EndpointLabels, Gauge>::default();
        let block = Family::<EndpointLabels, Gauge>::default();
        let lag = Family::<EndpointLabels, Gauge<f64, AtomicU64>>::default();
        {
            let eps = self.0.lock().unwrap_or_else(|p| p.into_inner());
            for (name, ep) in eps.iter() {
                let l = EndpointLabels {
                    endpoint: name.clone(),
                };
                connected.get_or_create(&l).set(i64::from(ep.connected));
                syncing.get_or_create(&l).set(i64::from(ep.syncing));
                if let Some(n) = ep.finalized_block {
                    block
                        .get_or_create(&l)
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                if let Some(at) = ep.finalized_at {
                    lag.get_or_create(&l).set(at.elapsed().as_secs_f64());
                }
            }
        }
        let m = encoder.encode_descriptor(
            "dcupgrade_chain_connected",
            "1 while the agent holds a connection to this DCChain endpoint",
            None,
            connected.metric_type(),
        )?;
        connected.encode(m)?;
        let m = encoder.encode_descriptor(
            "dcupgrade_chain_syncing",
            "1 while this endpoint reports that its node is syncing (the agent does not act on it)",
            None,
            syncing.metric_type(),
        )?;
        syncing.encode(m)?;
        let m = encoder.encode_descriptor(
            "dcupgrade_chain_finalized_block",
            "The latest finalized block number seen from this endpoint",
            None,
            block.metric_type(),
        )?;
        block.encode(m)?;
        let m = encoder.encode_descriptor(
            "dcupgrade_chain_finalized_lag_seconds",
            "Seconds since this endpoint last announced a new finalized block (a stalled chain or a stuck connection grows it)",
            None,
            lag.metric_type(),
        )?;
        lag.encode(m)
    }
}

/// Every metric of the agent; cheap to clone.
#[derive(Clone)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
    phase: Family<PhaseLabels, Gauge>,
    upgrades: Family<OutcomeLabels, Counter>,
    duration: Histograms<DurationLabels>,
    downtime: Histogram,
    decisions: Family<DecisionLabels, Counter>,
    chain: Arc<ChainEndpoints>,
    download_bytes: Counter,
    download_duration: Histograms<ResultLabels>,
    halted: Gauge,
    pub handover: HandoverMetrics,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let phase = Family::<PhaseLabels, Gauge>::default();
        r.register(
            "dcupgrade_phase",
            "1 for the phase the agent's journal is in, 0 for the others",
            phase.clone(),
        );
        for p in Phase::ALL {
            phase
                .get_or_create(&PhaseLabels {
                    phase: Orchestrator::phase_name(p),
                })
                .set(i64::from(p == Phase::Idle));
        }
        let upgrades = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "dcupgrade_upgrades",
            "Finished upgrades by outcome (committed, rolled_back, abandoned, refused) and reason",
            upgrades.clone(),
        );
        let duration: Histograms<DurationLabels> =
            Family::new_with_constructor(upgrade_histogram as fn() -> Histogram);
        r.register(
            "dcupgrade_upgrade_duration_seconds",
            "From a release's selection to the upgrade's end, by outcome",
            duration.clone(),
        );
        let downtime = downtime_histogram();
        r.register(
            "dcupgrade_upgrade_downtime_seconds",
            "Committed upgrades, from the agent's timeline: from stopping (break-before-make) or draining (make-before-break) the old node until the new one serves; in make-before-break connections wait in the open socket meanwhile rather than fail",
            downtime.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        r.register(
            "dcupgrade_release_decisions",
            "Release decisions: upgrade (a newer committee-signed release was selected) or refused, by reason; each distinct refusal counts once",
            decisions.clone(),
        );
        let chain = Arc::new(ChainEndpoints::default());
        r.register_collector(Box::new(chain.clone()));
        let download_bytes = Counter::default();
        r.register(
            "dcupgrade_download_bytes",
            "Bytes of release artifacts received (every URL tried; an artifact already stored costs none)",
            download_bytes.clone(),
        );
        let download_duration: Histograms<ResultLabels> =
            Family::new_with_constructor(download_histogram as fn() -> Histogram);
        r.register(
            "dcupgrade_download_duration_seconds",
            "Release downloads (fetch, digest, unpack and bundle checks), by result (ok, refused, interrupted)",
            download_duration.clone(),
        );
        let halted = Gauge::default();
        r.register(
            "dcupgrade_stop_halted",
            "1 while a node's exit cannot be confirmed (a rollback or a standby stop is halted and retried): stop the process by hand",
            halted.clone(),
        );
        let handover = HandoverMetrics::register(
            &mut r,
            "dcupgrade",
            dc_metrics::HandoverCodes {
                refusal: dc_handover::http::REFUSAL_CODES,
                routine: dc_handover::http::ROUTINE_CODES,
                failure: dc_handover::http::FAILURE_CODES,
            },
        );
        Self {
            registry: Arc::new(r),
            phase,
            upgrades,
            duration,
            downtime,
            decisions,
            chain,
            download_bytes,
            download_duration,
            halted,
            handover,
        }
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The OpenMetrics exposition, as a Prometheus server would scrape it.
    pub fn scrape(&self) -> String {
        dc_metrics::encode_openmetrics(&self.registry)
    }

    pub fn set_phase(&self, phase: Phase) {
        for p in Phase::ALL {
            self.phase
                .get_or_create(&PhaseLabels {
                    phase: Orchestrator::phase_name(p),
                })
                .set(i64::from(p == phase));
        }
    }

    /// Counts a finished upgrade; `downtime` only for a committed one.
    pub fn upgrade_finished(
        &self,
        outcome: &Outcome,
        duration: Option<Duration>,
        downtime: Option<Duration>,
    ) {
        match outcome {
            Outcome::Nothing => return,
            // Not an end: the same upgrade finishes (is counted) once the stop is confirmed.
            Outcome::RollbackHalted(_) | Outcome::StandbyStopHalted(_) => {
                self.halted.set(1);
                return;
            }
            _ => {
                self.halted.set(0);
            }
        }
        let Some((outcome, reason)) = outcome_labels(outcome) else {
            return;
        };
        self.upgrades
            .get_or_create(&OutcomeLabels { outcome, reason })
            .inc();
        if let Some(d) = duration {
            self.duration
                .get_or_create(&DurationLabels { outcome })
                .observe(d.as_secs_f64());
        }
        if let Some(d) = downtime {
            self.downtime.observe(d.as_secs_f64());
        }
    }

    pub fn decision(&self, decision: &'static str, reason: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { decision, reason })
            .inc();
    }

    /// Bytes received for a release artifact.
    pub fn downloaded_bytes(&self, bytes: u64) {
        self.download_bytes.inc_by(bytes);
    }

    /// A download step ended: `ok`, `refused` (fetch or verification failed) or
    /// `interrupted` (the node exited meanwhile).
    pub fn download(&self, result: &'static str, took: Duration) {
        self.download_duration
            .get_or_create(&ResultLabels { result })
            .observe(took.as_secs_f64());
    }

    fn endpoint(&self, endpoint: &str, f: impl FnOnce(&mut Endpoint)) {
        let label = endpoint_label(endpoint);
        let mut eps = self.chain.0.lock().unwrap_or_else(|p| p.into_inner());
        // Endpoints come from the operator's configuration; the cap only guards memory.
        if eps.len() >= 64 && !eps.contains_key(&label) {
            return;
        }
        f(eps.entry(label).or_default());
    }

    /// The configured endpoints, each with its series from the start (not connected yet), so
    /// an alert on `connected == 0` sees an endpoint that never answered.
    pub fn chain_endpoints(&self, endpoints: &[String]) {
        for e in endpoints {
            self.endpoint(e, |_| {});
        }
    }

    pub fn chain_connected(&self, endpoint: &str, connected: bool) {
        self.endpoint(endpoint, |e| {
            e.connected = connected;
            if !connected {
                e.syncing = false;
            }
        });
    }

    pub fn chain_syncing(&self, endpoint: &str) {
        self.endpoint(endpoint, |e| e.syncing = true);
    }

    pub fn chain_finalized(&self, endpoint: &str, block: u64, at: Instant) {
        self.endpoint(endpoint, |e| {
            e.connected = true;
            e.syncing = false;
            if e.finalized_block != Some(block) {
                e.finalized_block = Some(block);
                e.finalized_at = Some(at);
            }
        });
    }

    /// The outcome of taking keys from the running node (the agent as receiver).
    pub fn received(&self, r: &Result<(), (bool, String, String)>) {
        match r {
            Ok(()) => self.handover.delivered("receiver"),
            Err((true, code, msg)) => {
                self.handover.refused("receiver", code);
                tracing::warn!(code = %code, "key handover refused: {msg}");
            }
            Err((false, code, _)) => self.handover.failed("receiver", code),
        }
    }

    /// A handover step the agent refused as holder (serving the new node its keys).
    pub fn holder_refused(&self, e: &dc_handover::HandoverError) {
        // The handover layer has logged it at WARN with its code.
        self.handover.refused("holder", e.code());
    }
}

/// The label of a chain endpoint: `scheme://host:port` of its URL, nothing else — no
/// credentials, path or query (API keys live there), and only characters that need no
/// escaping in the exposition (the encoder does not escape label values).
fn endpoint_label(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let keep = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(*c))
            .take(100)
            .collect()
    };
    format!("{}://{}", keep(scheme), keep(host))
}

/// `(outcome, reason)` labels of a finished upgrade; `None` when nothing happened.
fn outcome_labels(o: &Outcome) -> Option<(&'static str, &'static str)> {
    Some(match o {
        Outcome::Committed { .. } => ("committed", "none"),
        Outcome::Abandoned(StepError::Refused { .. }) => ("refused", "verification"),
        Outcome::Abandoned(e) => ("abandoned", step_error_code(e)),
        Outcome::RolledBack(e) => ("rolled_back", step_error_code(e)),
        Outcome::RollbackHalted(_) | Outcome::StandbyStopHalted(_) | Outcome::Nothing => {
            return None
        }
    })
}

/// A stable code per step error, for labels.
pub fn step_error_code(e: &StepError) -> &'static str {
    match e {
        StepError::Journal(_) => "journal",
        StepError::Refused { .. } => "verification",
        StepError::NodeExitedDuringDownload => "node_exited_during_download",
        StepError::TakeKeys(_) => "take_keys",
        StepError::OldNodeNotStopped => "old_node_not_stopped",
        StepError::Launch(_) => "launch",
        StepError::Delivery(_) => "delivery",
        StepError::NotReady(_) => "not_ready",
        StepError::Health(_) => "health",
        StepError::AgentRestarted => "agent_restarted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &AgentMetrics) -> String {
        dc_metrics::openmetrics_to_prometheus(&m.scrape())
    }

    #[test]
    fn exactly_one_phase_is_set() {
        let m = AgentMetrics::new();
        m.set_phase(Phase::KeysAcquired);
        let t = text(&m);
        let ones: Vec<_> = t
            .lines()
            .filter(|l| l.starts_with("dcupgrade_phase{") && l.ends_with(" 1"))
            .collect();
        assert_eq!(ones, ["dcupgrade_phase{phase=\"keys_acquired\"} 1"], "{t}");
    }

    #[test]
    fn outcomes_and_lag_are_exposed() {
        let m = AgentMetrics::new();
        m.upgrade_finished(
            &Outcome::RolledBack(StepError::Health("x".into())),
            Some(Duration::from_millis(300)),
            None,
        );
        m.upgrade_finished(&Outcome::Nothing, None, None);
        m.chain_finalized("ws://127.0.0.1:9944", 7, Instant::now());
        let t = text(&m);
        assert!(
            t.contains("dcupgrade_upgrades_total{outcome=\"rolled_back\",reason=\"health\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("dcupgrade_chain_finalized_block{endpoint=\"ws://127.0.0.1:9944\"} 7"),
            "{t}"
        );
        assert!(
            t.contains("dcupgrade_chain_finalized_lag_seconds{endpoint=\"ws://127.0.0.1:9944\"}"),
            "{t}"
        );
        assert!(
            t.contains("dcupgrade_chain_connected{endpoint=\"ws://127.0.0.1:9944\"} 1"),
            "{t}"
        );
    }

    #[test]
    fn a_halt_is_a_state_not_an_outcome() {
        let m = AgentMetrics::new();
        let halted = Outcome::RollbackHalted(StepError::Health("x".into()));
        m.upgrade_finished(&halted, None, None);
        m.upgrade_finished(&halted, None, None);
        let t = text(&m);
        assert!(t.contains("dcupgrade_stop_halted 1"), "{t}");
        assert!(!t.contains("dcupgrade_upgrades_total{"), "{t}");
        m.upgrade_finished(
            &Outcome::RolledBack(StepError::Health("x".into())),
            None,
            None,
        );
        let t = text(&m);
        assert!(t.contains("dcupgrade_stop_halted 0"), "{t}");
        assert!(
            t.contains("dcupgrade_upgrades_total{outcome=\"rolled_back\",reason=\"health\"} 1"),
            "{t}"
        );
    }

    #[test]
    fn endpoint_labels_keep_scheme_host_and_port_only() {
        assert_eq!(
            endpoint_label("wss://user:secret@rpc.example.org:443/v1/KEY123?x=1"),
            "wss://rpc.example.org:443"
        );
        assert_eq!(endpoint_label("ws://127.0.0.1:9944"), "ws://127.0.0.1:9944");
        assert_eq!(endpoint_label("ws://[::1]:9944/"), "ws://[::1]:9944");
        assert_eq!(endpoint_label("ws://a\"b\\c\nd:1"), "ws://abcd:1");
        let m = AgentMetrics::new();
        m.chain_endpoints(&["wss://u:p@h:1/key".to_string()]);
        let t = text(&m);
        assert!(
            t.contains("dcupgrade_chain_connected{endpoint=\"wss://h:1\"} 0"),
            "{t}"
        );
        assert!(!t.contains("h:1/key") && !t.contains("u:p@"), "{t}");
    }
}

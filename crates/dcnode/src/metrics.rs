//! The node's Prometheus metrics, served on its data port at `GET /metrics`: requests by
//! route and status with latency, key-handover attempts on both sides (a refusal is a security
//! event: counted by code and logged at WARN), readiness and the running release.

use std::sync::Arc;

use dc_metrics::{HandoverMetrics, HttpMetrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReleaseLabels {
    version: String,
    mrenclave: String,
}

/// Every metric of one node process; cheap to clone (the families are shared).
#[derive(Clone)]
pub struct NodeMetrics {
    pub http: HttpMetrics,
    pub handover: HandoverMetrics,
    ready: Gauge,
    data_generation: Gauge,
    release: Family<ReleaseLabels, Gauge>,
}

impl NodeMetrics {
    /// The metrics and the registry that serves them.
    pub fn new() -> (Self, Arc<Registry>) {
        let mut r = Registry::default();
        let http = HttpMetrics::register(&mut r, "dcnode");
        let handover = HandoverMetrics::register(
            &mut r,
            "dcnode",
            dc_metrics::HandoverCodes {
                refusal: dc_handover::http::REFUSAL_CODES,
                routine: dc_handover::http::ROUTINE_CODES,
                failure: dc_handover::http::FAILURE_CODES,
            },
        );
        let ready = Gauge::default();
        r.register(
            "dcnode_ready",
            "1 while the node serves its data API, 0 while it starts or drains",
            ready.clone(),
        );
        let data_generation = Gauge::default();
        r.register(
            "dcnode_data_key_generation",
            "The data-key generation new objects are written under (one more per upgrade)",
            data_generation.clone(),
        );
        let release = Family::<ReleaseLabels, Gauge>::default();
        r.register(
            "dcnode_release",
            "The running release (value 1), labelled with its version and MRENCLAVE",
            release.clone(),
        );
        (
            Self {
                http,
                handover,
                ready,
                data_generation,
                release,
            },
            Arc::new(r),
        )
    }

    pub fn set_release(&self, version: &str, mrenclave: &str, data_generation: u32) {
        self.release
            .get_or_create(&ReleaseLabels {
                version: version.into(),
                mrenclave: mrenclave.into(),
            })
            .set(1);
        self.data_generation.set(i64::from(data_generation));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// A handover step this node refused as holder.
    pub fn holder_refused(&self, e: &dc_handover::HandoverError) {
        // The handover layer has logged it at WARN with its code.
        self.handover.refused("holder", e.code());
    }

    /// The outcome of taking keys as receiver.
    pub fn received(&self, r: &Result<dc_handover::Received, dc_handover::http::ClientError>) {
        match r {
            Ok(_) => self.handover.delivered("receiver"),
            Err(e) if e.is_refusal() => {
                let code = e.code();
                self.handover.refused("receiver", &code);
                tracing::warn!(code = %code, "key handover refused: {e}");
            }
            Err(e) => self.handover.failed("receiver", &e.code()),
        }
    }
}

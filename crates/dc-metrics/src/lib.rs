//! The Prometheus exposition the agent and the node serve on `GET /metrics`, and the metric
//! families both of them have: HTTP requests by route and status with a latency histogram,
//! and key-handover attempts by role, result and error code.
//!
//! `prometheus-client` encodes OpenMetrics text only. Prometheus servers ask for OpenMetrics
//! (`Accept: application/openmetrics-text`) and get it unchanged; every other client (curl,
//! `promtool check metrics`, older scrapers) gets the classic text format 0.0.4, which differs
//! in three ways that [`openmetrics_to_prometheus`] translates: a counter's family is named
//! with its `_total` suffix, there are no `# UNIT` lines, and no `# EOF`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use prometheus_client;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The whole registry in OpenMetrics text, `# EOF` included.
pub fn encode_openmetrics(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a metric.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!("encoding metrics failed: {e}");
    }
    out
}

/// OpenMetrics text (as `prometheus-client` writes it) in the Prometheus text format 0.0.4.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    use std::collections::HashMap;
    // Family name → the name and type the classic format gives it.
    let mut families: HashMap<&str, (String, &str)> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.splitn(2, ' ');
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let renamed = match kind.trim() {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" => (name.to_string(), "gauge"),
                "histogram" => (name.to_string(), "histogram"),
                "summary" => (name.to_string(), "summary"),
                _ => (name.to_string(), "untyped"),
            };
            families.insert(name, renamed);
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if let Some((renamed, kind)) = families.get(name) {
                out.push_str(&format!("# TYPE {renamed} {kind}\n"));
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some((renamed, _)) = families.get(name) {
                out.push_str(&format!("# HELP {renamed} {help}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The exposition for a scraper that sent `accept`: OpenMetrics if it asks for it, else the
/// classic text format. Returns the content type and the body.
pub fn render(registry: &Registry, accept: Option<&str>) -> (&'static str, String) {
    let open = encode_openmetrics(registry);
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        (OPENMETRICS_CONTENT_TYPE, open)
    } else {
        (PROMETHEUS_CONTENT_TYPE, openmetrics_to_prometheus(&open))
    }
}

/// `GET /metrics` serving `registry`, to merge into a service's router.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry)
}

async fn scrape(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = render(&registry, accept);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern (`/v1/objects/{name}`), never the raw path: bounded cardinality.
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latency buckets: 100 µs to ~13 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

/// Requests served, by route, method and status, and their latency.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabels>,
}

impl HttpMetrics {
    /// Registers `{prefix}_http_requests_total` and `{prefix}_http_request_duration_seconds`.
    pub fn register(registry: &mut Registry, prefix: &str) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            format!("{prefix}_http_requests"),
            "HTTP requests answered, by route pattern, method and status code",
            requests.clone(),
        );
        registry.register(
            format!("{prefix}_http_request_duration_seconds"),
            "Time from a request's headers to its response's headers, by route pattern and method",
            latency.clone(),
        );
        Self { requests, latency }
    }

    /// Counts one answered request.
    pub fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.into(),
                method: method.into(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                route: route.into(),
                method: method.into(),
            })
            .observe(seconds);
    }

    /// Middleware for `Router::layer(axum::middleware::from_fn_with_state(metrics, HttpMetrics::track))`.
    /// Requests that match no route count under the route `unmatched`.
    pub async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
        let method = known_method(req.method().as_str());
        let started = Instant::now();
        let resp = next.run(req).await;
        m.observe(
            &route,
            method,
            resp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        resp
    }
}

/// Methods as labels, with anything unusual folded into one value (bounded cardinality).
fn known_method(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoverLabels {
    /// `holder` (gives keys) or `receiver` (takes them).
    pub role: &'static str,
    /// `delivered`; `refused`: a wrong or hostile peer (forged report, unauthorized or revoked
    /// enclave, …), a security event; `rejected`: ordinary protocol life (a late or repeated
    /// step, a crowded holder); `failed`: the peer could not be reached, or storing failed.
    pub result: &'static str,
    /// The protocol code (`unauthorized`, `report_mac`, …; `other` for one we do not know),
    /// `none` when delivered.
    pub code: &'static str,
}

/// The codes the handover protocol uses, by class (`dc_handover::http::REFUSAL_CODES`,
/// `ROUTINE_CODES`, `FAILURE_CODES`): labels only ever take these values.
#[derive(Clone, Copy, Debug)]
pub struct HandoverCodes {
    pub refusal: &'static [&'static str],
    pub routine: &'static [&'static str],
    pub failure: &'static [&'static str],
}

/// Key-handover attempts on one side of the protocol.
#[derive(Clone)]
pub struct HandoverMetrics {
    attempts: Family<HandoverLabels, Counter>,
    codes: HandoverCodes,
}

const ROLES: [&str; 2] = ["holder", "receiver"];

impl HandoverMetrics {
    /// Registers `{prefix}_handover_attempts_total`. Every `refused` series starts at 0, so
    /// an alert on its increase fires at the first refusal.
    pub fn register(registry: &mut Registry, prefix: &str, codes: HandoverCodes) -> Self {
        let attempts = Family::<HandoverLabels, Counter>::default();
        registry.register(
            format!("{prefix}_handover_attempts"),
            "Key handover attempts by role, result (delivered; refused: a security event; rejected: routine; failed) and protocol code",
            attempts.clone(),
        );
        for role in ROLES {
            for code in codes.refusal {
                let _ = attempts.get_or_create(&HandoverLabels {
                    role,
                    result: "refused",
                    code,
                });
            }
        }
        Self { attempts, codes }
    }

    pub fn delivered(&self, role: &'static str) {
        self.count(role, "delivered", "none");
    }

    /// A refusal with its protocol code: `refused`, or `rejected` for a routine code. The
    /// caller logs it (at WARN).
    pub fn refused(&self, role: &'static str, code: &str) {
        match self.codes.routine.iter().find(|c| **c == code) {
            Some(c) => self.count(role, "rejected", c),
            None => {
                let c = self
                    .codes
                    .refusal
                    .iter()
                    .find(|c| **c == code)
                    .map_or("other", |c| *c);
                self.count(role, "refused", c)
            }
        }
    }

    pub fn failed(&self, role: &'static str, code: &str) {
        let c = self
            .codes
            .failure
            .iter()
            .find(|c| **c == code)
            .map_or("other", |c| *c);
        self.count(role, "failed", c);
    }

    fn count(&self, role: &'static str, result: &'static str, code: &'static str) {
        self.attempts
            .get_or_create(&HandoverLabels { role, result, code })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::gauge::Gauge;

    const CODES: HandoverCodes = HandoverCodes {
        refusal: &["report_mac", "unauthorized", "other"],
        routine: &["busy"],
        failure: &["timeout"],
    };

    fn sample_registry() -> Registry {
        let mut r = Registry::default();
        let h = HttpMetrics::register(&mut r, "t");
        h.observe("/v1/objects/{name}", "GET", 200, 0.003);
        let ho = HandoverMetrics::register(&mut r, "t", CODES);
        ho.refused("holder", "unauthorized");
        let g = Gauge::<i64>::default();
        r.register_with_unit(
            "t_lag",
            "A lag",
            prometheus_client::registry::Unit::Seconds,
            g.clone(),
        );
        g.set(3);
        r
    }

    #[test]
    fn classic_text_names_counter_families_with_total_and_drops_unit_and_eof() {
        let open = encode_openmetrics(&sample_registry());
        assert!(open.contains("# TYPE t_http_requests counter"), "{open}");
        assert!(open.ends_with("# EOF\n"));
        let text = openmetrics_to_prometheus(&open);
        assert!(
            text.contains("# TYPE t_http_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP t_http_requests_total HTTP requests"),
            "{text}"
        );
        assert!(text.contains(
            "t_http_requests_total{route=\"/v1/objects/{name}\",method=\"GET\",status=\"200\"} 1\n"
        ));
        assert!(text.contains(
            "t_handover_attempts_total{role=\"holder\",result=\"refused\",code=\"unauthorized\"} 1"
        ));
        assert!(text.contains("# TYPE t_http_request_duration_seconds histogram\n"));
        assert!(
            text.contains("# TYPE t_lag_seconds gauge\nt_lag_seconds 3\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
        // Every sample line belongs to a family declared just before it.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_string();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&family), "{line} outside {family}");
            }
        }
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let r = sample_registry();
        let (ct, body) = render(
            &r,
            Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
        );
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(body.ends_with("# EOF\n"));
        let (ct, body) = render(&r, Some("*/*"));
        assert_eq!(ct, PROMETHEUS_CONTENT_TYPE);
        assert!(!body.contains("# EOF"));
        let (ct, _) = render(&r, None);
        assert_eq!(ct, PROMETHEUS_CONTENT_TYPE);
    }

    #[test]
    fn handover_labels_take_only_known_codes_and_refusals_start_at_zero() {
        let mut r = Registry::default();
        let m = HandoverMetrics::register(&mut r, "t", CODES);
        let before = openmetrics_to_prometheus(&encode_openmetrics(&r));
        assert!(before.contains(
            "t_handover_attempts_total{role=\"receiver\",result=\"refused\",code=\"report_mac\"} 0"
        ), "{before}");
        m.refused("holder", &format!("x\"}} 1\n{}", "a".repeat(500)));
        m.refused("holder", "busy");
        m.failed("receiver", "timeout");
        m.failed("receiver", "anything else");
        let text = openmetrics_to_prometheus(&encode_openmetrics(&r));
        for series in [
            "{role=\"holder\",result=\"refused\",code=\"other\"} 1",
            "{role=\"holder\",result=\"rejected\",code=\"busy\"} 1",
            "{role=\"receiver\",result=\"failed\",code=\"timeout\"} 1",
            "{role=\"receiver\",result=\"failed\",code=\"other\"} 1",
        ] {
            assert!(
                text.contains(&format!("t_handover_attempts_total{series}")),
                "{series}\n{text}"
            );
        }
        assert!(!text.contains("aaaa"));
    }

    #[tokio::test]
    async fn the_middleware_counts_route_patterns_not_paths() {
        use tower::ServiceExt;
        let mut r = Registry::default();
        let m = HttpMetrics::register(&mut r, "t");
        let app = Router::new()
            .route(
                "/v1/objects/{name}",
                get(|| async { StatusCode::NOT_FOUND }),
            )
            .layer(axum::middleware::from_fn_with_state(
                m.clone(),
                HttpMetrics::track,
            ));
        for p in ["/v1/objects/a", "/v1/objects/b", "/elsewhere"] {
            let req = Request::builder()
                .uri(p)
                .body(axum::body::Body::empty())
                .unwrap();
            app.clone().oneshot(req).await.unwrap();
        }
        let text = openmetrics_to_prometheus(&encode_openmetrics(&r));
        assert!(text.contains(
            "t_http_requests_total{route=\"/v1/objects/{name}\",method=\"GET\",status=\"404\"} 2"
        ), "{text}");
        assert!(text.contains("route=\"unmatched\""), "{text}");
        assert!(!text.contains("/v1/objects/a"));
    }
}

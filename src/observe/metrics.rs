//! Prometheus metrics. One registry per process, handed to the proxy and the admin service.
//! Names follow Prometheus conventions: `portcullis_` prefix, base units, `_total` counters.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The gateway's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by route, method and status; counted through `count_request`, which keeps the
    /// labels bounded.
    pub requests: IntCounterVec,
    /// End-to-end request latency by route.
    pub request_duration: HistogramVec,
    /// Time spent waiting on the upstream by route.
    pub upstream_duration: HistogramVec,
    /// 1 when a peer passes its health checks, else 0.
    pub peer_healthy: IntGaugeVec,
    /// Config reloads by result.
    pub reloads: IntCounterVec,
    /// Access-log lines dropped because the writer could not keep up.
    pub access_log_dropped: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    /// Only if two metrics are given the same name, which is a bug in this function.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests handled, by route, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_request_duration_seconds",
                "Time from request received to response finished, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_upstream_duration_seconds",
                "Time from upstream peer selected to response header received, by route.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let peer_healthy = IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_peer_healthy",
                "1 when the peer passes its health checks.",
            ),
            &["upstream", "peer"],
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "portcullis_config_reloads_total",
                "Config reloads, by result (ok or error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let access_log_dropped = IntCounter::new(
            "portcullis_access_log_dropped_total",
            "Access-log lines dropped because the log writer fell behind.",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(peer_healthy.clone()),
            Box::new(reloads.clone()),
            Box::new(access_log_dropped.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Both results exist from the start so dashboards and tests see zeros, not absence.
        reloads.with_label_values(&["ok"]);
        reloads.with_label_values(&["error"]);
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            peer_healthy,
            reloads,
            access_log_dropped,
        }
    }

    /// Counts one finished request. The labels are bounded whatever the client sends: the
    /// route comes from the config, the method is one of the standard ones or `OTHER`, and the
    /// status is a real status code, `0` (no response) or `other`.
    pub fn count_request(
        &self,
        route: &str,
        method: &http::Method,
        status: Option<http::StatusCode>,
    ) {
        self.requests
            .with_label_values(&[route, method_label(method), status_label(status.as_ref())])
            .inc();
    }

    /// The registry, for collectors added by other modules.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail on I/O; a failure would mean a malformed family.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            log::error!("metrics encoding failed: {e}");
        }
        out
    }
}

/// The `method` label: a client may send any token as a method, and each distinct label value
/// is a series kept forever, so only the standard methods keep their name.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "OTHER",
    }
}

/// The `status` label: `100`–`599` as written, `0` when no response was sent, `other` for the
/// codes `http` also accepts (600–999) that no client understands, so an upstream cannot
/// inflate the series either.
pub(crate) fn status_label(status: Option<&http::StatusCode>) -> &str {
    match status {
        None => "0",
        Some(s) if (100..600).contains(&s.as_u16()) => s.as_str(),
        Some(_) => "other",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_methods_share_one_label() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            let method = http::Method::from_bytes(m.as_bytes()).expect("standard method");
            assert_eq!(method_label(&method), m);
        }
        for m in ["X1", "X300", "get", "PROPFIND", "BREW", "GETX"] {
            let method = http::Method::from_bytes(m.as_bytes()).expect("extension method");
            assert_eq!(method_label(&method), "OTHER", "{m}");
        }
    }

    #[test]
    fn status_labels_are_real_codes_or_a_fixed_word() {
        let code = |n: u16| http::StatusCode::from_u16(n).expect("valid code");
        assert_eq!(status_label(None), "0");
        assert_eq!(status_label(Some(&code(100))), "100");
        assert_eq!(status_label(Some(&code(200))), "200");
        assert_eq!(status_label(Some(&code(599))), "599");
        assert_eq!(status_label(Some(&code(600))), "other");
        assert_eq!(status_label(Some(&code(999))), "other");
    }

    #[test]
    fn hundreds_of_extension_methods_make_one_series() {
        let metrics = Metrics::new();
        for i in 0..300 {
            let method = http::Method::from_bytes(format!("X{i}").as_bytes()).expect("token");
            metrics.count_request("main", &method, http::StatusCode::from_u16(200).ok());
        }
        metrics.count_request("main", &http::Method::GET, None);
        let text = String::from_utf8(metrics.render()).expect("utf-8 exposition");
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("portcullis_requests_total{"))
            .collect();
        assert_eq!(series.len(), 2, "{series:?}");
        assert!(
            series
                .iter()
                .any(|l| l.contains("method=\"OTHER\"") && l.ends_with(" 300")),
            "{series:?}"
        );
    }
}

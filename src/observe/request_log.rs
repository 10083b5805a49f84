//! What one finished request leaves behind: its request count, its route's latency
//! histograms and its access-log line, all assembled here from the facts the proxy hands over,
//! so the proxy's `logging` phase only gathers them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::request::Parts;
use http::StatusCode;
use prometheus::Histogram;

use super::{AccessLog, AccessRecord, Metrics, Redactor};

/// The latency histograms of one route, resolved once when the config is compiled so a
/// request never looks its labels up.
#[derive(Clone)]
pub struct RouteMetrics {
    request_duration: Histogram,
    upstream_duration: Histogram,
}

impl Metrics {
    /// The histograms of the route called `route`.
    pub(crate) fn route_metrics(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            request_duration: self.request_duration.with_label_values(&[route]),
            upstream_duration: self.upstream_duration.with_label_values(&[route]),
        }
    }
}

/// A finished request as the proxy saw it.
pub(crate) struct Finished<'a> {
    /// The request id sent back to the client.
    pub(crate) request_id: &'a str,
    /// The route's name and histograms, when one matched.
    pub(crate) route: Option<(&'a str, &'a RouteMetrics)>,
    /// The request as received (method, target, headers).
    pub(crate) request: &'a Parts,
    /// The status sent to the client, if a response was sent.
    pub(crate) status: Option<StatusCode>,
    /// Request body bytes read from the client.
    pub(crate) bytes_in: usize,
    /// Response body bytes sent to the client.
    pub(crate) bytes_out: usize,
    /// Total time in the gateway.
    pub(crate) duration: Duration,
    /// Time waiting on the upstream, if one was contacted.
    pub(crate) upstream_duration: Option<Duration>,
    /// The last peer tried.
    pub(crate) upstream: Option<SocketAddr>,
    /// The real client.
    pub(crate) client_ip: Option<IpAddr>,
}

/// Counts `f` in the metrics and writes its access-log line through `redactor`.
pub(crate) fn record_finished(
    metrics: &Metrics,
    access_log: &AccessLog,
    redactor: &Redactor,
    f: &Finished<'_>,
) {
    let route_name = f.route.map_or("-", |(name, _)| name);
    let req = f.request;
    metrics.count_request(route_name, &req.method, f.status);
    if let Some((_, route)) = f.route {
        route.request_duration.observe(f.duration.as_secs_f64());
        if let Some(d) = f.upstream_duration {
            route.upstream_duration.observe(d.as_secs_f64());
        }
    }
    access_log.record(
        redactor,
        &AccessRecord {
            request_id: f.request_id,
            route: route_name,
            method: req.method.as_str(),
            path: path_and_query(&req.uri),
            status: f.status.map_or(0, |s| s.as_u16()),
            bytes_in: f.bytes_in,
            bytes_out: f.bytes_out,
            duration: f.duration,
            upstream_duration: f.upstream_duration,
            upstream: f.upstream,
            client_ip: f.client_ip,
            headers: &req.headers,
        },
    );
}

/// The path and query as received; logs show it only through the `Redactor`.
pub(crate) fn path_and_query(uri: &http::Uri) -> &str {
    uri.path_and_query()
        .map_or_else(|| uri.path(), |p| p.as_str())
}

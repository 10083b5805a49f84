//! Fixtures for the integration tests, in the style of linkerd2-proxy's and mini-redis's test
//! support: real processes and servers on free 127.0.0.1 ports that clean up on drop.
//!
//! - `upstream::Upstream`: an HTTP/1.1 echo server the gateway proxies to;
//! - `gateway::Gateway`: the `portcullis` binary running a config template;
//! - `redis::Redis`: a throwaway `redis-server`;
//! - `jwks::JwksServer`: an identity provider's JWKS endpoint, with RSA keys and token signing;
//! - `client::Client`: a ureq client that returns 4xx/5xx as responses;
//! - `raw`: hand-written HTTP/1.1 over a `TcpStream`;
//! - `config`: the pieces of config templates (`Preamble`, `store`, `upstream`, `route`), so that
//!   no test file keeps its own copy of a section.
//!
//! Each test binary compiles this module on its own and uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod client;
pub mod config;
pub mod gateway;
pub mod jwks;
pub mod raw;
pub mod redis;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use client::{assert_error, Client, Echo, Response};
pub use gateway::{run_to_exit, Gateway};
pub use raw::{RawConn, RawResponse};
pub use redis::Redis;
pub use upstream::Upstream;

/// A port that was free a moment ago (bound to 127.0.0.1:0 and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// An address where nothing listens, so connecting is refused: a privileged port on loopback.
/// (A released free port can be taken by another test's listener in the meantime.)
pub fn dead_addr(n: u16) -> String {
    assert!((1..=9).contains(&n), "dead_addr takes 1..=9");
    format!("127.0.0.1:{n}")
}

/// Polls `condition` every 25 ms until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`/`_sum`/`_count` suffixes as written).
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Parses the samples of a Prometheus text exposition (comments skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(parts) => parts,
            None => continue,
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
            None => (series, BTreeMap::new()),
        };
        samples.push(Sample {
            name: name.trim().to_string(),
            labels,
            value,
        });
    }
    samples
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim().trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Sum of the samples named `name` whose labels include all of `labels`; `None` if there are none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = parse_metrics(text)
        .into_iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    if matching.is_empty() {
        None
    } else {
        Some(matching.iter().sum())
    }
}

/// The `portcullis_upstream_peer_healthy` value of the peer listening on `port` in `upstream`.
pub fn peer_health(metrics: &str, upstream: &str, port: u16) -> Option<f64> {
    let suffix = format!(":{port}");
    parse_metrics(metrics)
        .into_iter()
        .find(|s| {
            s.name == "portcullis_upstream_peer_healthy"
                && s.labels.get("upstream").map(String::as_str) == Some(upstream)
                && s.labels.get("peer").is_some_and(|p| p.ends_with(&suffix))
        })
        .map(|s| s.value)
}

/// Runs `f`; its result and how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// `portcullis_auth_decisions_total` for a route, method and result (0 when never recorded).
pub fn auth_decisions(gw: &Gateway, route: &str, method: &str, result: &str) -> f64 {
    metric(
        &gw.metrics(),
        "portcullis_auth_decisions_total",
        &[("route", route), ("method", method), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// Local-tier hits of the auth decision cache (0 when never recorded).
pub fn local_hits(gw: &Gateway) -> f64 {
    metric(
        &gw.metrics(),
        "portcullis_auth_cache_lookups_total",
        &[("tier", "local"), ("result", "hit")],
    )
    .unwrap_or(0.0)
}

/// `tcp_proxy::TcpProxy`: a TCP forwarder with a black-hole switch (a path that goes silent).
pub mod tcp_proxy;

/// `normalizing`: an upstream that resolves paths the way Go, Express or Tomcat do.
pub mod normalizing;

/// An admin API request to `gw` with `Authorization: Bearer <token>` and
/// `Content-Type: application/json`, and `body` when given.
pub fn admin_json(
    client: &Client,
    gw: &Gateway,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Response {
    let authorization = format!("Bearer {token}");
    client.send(
        method,
        &gw.admin_url(path),
        &[
            ("authorization", &authorization),
            ("content-type", "application/json"),
        ],
        body.map(str::as_bytes),
    )
}

/// Waits (at most 5 s) until the JWKS `server` has answered at least `n` requests.
pub fn wait_fetches(server: &jwks::JwksServer, n: usize) {
    assert!(
        eventually(Duration::from_secs(5), || server.requests() >= n),
        "the JWKS server got {} requests, want {n}",
        server.requests()
    );
}

/// `tls`: self-signed certificates for the HTTPS listener tests.
pub mod tls;

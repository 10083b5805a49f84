//! Metric labels stay bounded whatever clients and upstreams send: neither a request's method
//! nor a response's status can create series without limit.

mod support;

use std::collections::BTreeSet;

use support::config::{route, upstream, PREAMBLE};
use support::{eventually, parse_metrics, Client, Gateway, Sample, Upstream};

/// How many distinct extension methods the test sends.
const METHODS: usize = 300;

/// The `portcullis_requests_total` samples once `requests` requests are counted. A request is
/// counted in its logging phase, after the client has its response, so the last one may
/// still be on its way when the client asks for the metrics.
fn request_samples(gw: &Gateway, requests: usize) -> Vec<Sample> {
    let read = || -> Vec<Sample> {
        parse_metrics(&gw.metrics())
            .into_iter()
            .filter(|s| s.name == "portcullis_requests_total")
            .collect()
    };
    let counted = |samples: &[Sample]| samples.iter().map(|s| s.value).sum::<f64>();
    eventually(std::time::Duration::from_secs(5), || {
        counted(&read()) >= requests as f64
    });
    read()
}

#[test]
fn extension_methods_do_not_create_request_series() {
    let svc = Upstream::spawn("svc");
    let template = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("main", "svc", r#"path = "/things""#),
        route("get_only", "svc", "path = \"/reads\"\nmethods = [\"GET\"]"),
    ]
    .concat();
    let gw = Gateway::start(&template);
    let client = Client::new();
    // Routed and proxied, refused with 405 by a route's method list, and matching no route.
    for i in 0..METHODS {
        let method = format!("X{i}");
        let path = ["/things/a", "/reads/a", "/nowhere"][i % 3];
        let response = client.send(&method, &gw.url(path), &[], None);
        assert!(
            [200, 404, 405].contains(&response.status),
            "{method} {path}: {} {}",
            response.status,
            response.body
        );
    }
    assert_eq!(client.get(&gw.url("/things/a")).status, 200);

    let samples = request_samples(&gw, METHODS + 1);
    let methods: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.labels.get("method").map(String::as_str))
        .collect();
    assert_eq!(
        methods,
        BTreeSet::from(["GET", "OTHER"]),
        "only standard methods keep their name: {samples:?}"
    );
    assert!(
        samples.len() <= 4,
        "{} series from {METHODS} methods: {samples:?}",
        samples.len()
    );
    let other: f64 = samples
        .iter()
        .filter(|s| s.labels.get("method").map(String::as_str) == Some("OTHER"))
        .map(|s| s.value)
        .sum();
    assert_eq!(other, METHODS as f64, "every extension method is counted");
    let statuses: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.labels.get("status").map(String::as_str))
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["200", "404", "405"]),
        "{samples:?}"
    );
}

#[test]
fn upstream_statuses_past_599_share_one_label() {
    let svc = Upstream::spawn("svc");
    let template = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("main", "svc", r#"path = "/things""#),
    ]
    .concat();
    let gw = Gateway::start(&template);
    let client = Client::new();
    let odd: Vec<u16> = (600..620).chain([799, 999]).collect();
    for code in &odd {
        let code = code.to_string();
        let response = client.get_with(&gw.url("/things/a"), &[("x-test-status", &code)]);
        assert_eq!(response.status.to_string(), code, "{}", response.body);
    }
    let response = client.get_with(&gw.url("/things/a"), &[("x-test-status", "503")]);
    assert_eq!(response.status, 503);

    let samples = request_samples(&gw, odd.len() + 1);
    let statuses: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.labels.get("status").map(String::as_str))
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["503", "other"]),
        "real codes keep their number, the rest share one label: {samples:?}"
    );
    let other: f64 = samples
        .iter()
        .filter(|s| s.labels.get("status").map(String::as_str) == Some("other"))
        .map(|s| s.value)
        .sum();
    assert_eq!(other, odd.len() as f64);
}

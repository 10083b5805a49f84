//! Upstream pools: peer selection, active health checks, failures, timeouts and retries.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::config::{route, upstream, upstream_addrs, PREAMBLE};
use support::{assert_error, dead_addr, eventually, peer_health, Client, Gateway, Upstream};

/// A fast HTTP health check on `/healthz`: a peer is ejected or restored within ~0.5 s.
const FAST_HTTP_CHECK: &str = r#"
[upstreams.health_check]
kind = "http"
path = "/healthz"
interval = "150ms"
timeout = "150ms"
healthy_threshold = 2
unhealthy_threshold = 2
"#;

/// Sends `n` GETs to `path` and counts answers by upstream name; every answer must be 200.
fn spread(gw: &Gateway, path: &str, n: usize) -> HashMap<String, usize> {
    let client = Client::new();
    let mut counts = HashMap::new();
    for i in 0..n {
        let response = client.get(&gw.url(path));
        assert_eq!(response.status, 200, "request {i}: {}", response.body);
        *counts
            .entry(response.echo().upstream().to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Waits until the health gauge of `peer` in `upstream` is `want`, panicking after 5 s.
fn wait_peer_health(gw: &Gateway, upstream: &str, peer: &Upstream, want: f64) {
    let mut last = None;
    let reached = eventually(Duration::from_secs(5), || {
        last = peer_health(&gw.metrics(), upstream, peer.port());
        last == Some(want)
    });
    assert!(
        reached,
        "portcullis_upstream_peer_healthy for {} ({}) is {last:?}, want {want}\n{}",
        peer.name(),
        peer.addr(),
        gw.metrics()
    );
}

#[test]
fn round_robin_spreads_requests_evenly_across_peers() {
    let a = Upstream::spawn("a");
    let b = Upstream::spawn("b");
    let c = Upstream::spawn("c");
    let config = [
        PREAMBLE.to_string(),
        upstream("pool", &[&a, &b, &c], ""),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let counts = spread(&gw, "/rr", 150);
    for name in ["a", "b", "c"] {
        let n = counts.get(name).copied().unwrap_or(0);
        assert!(
            (35..=65).contains(&n),
            "{name} got {n} of 150 requests: {counts:?}"
        );
    }
}

#[test]
fn weighted_round_robin_follows_the_weights() {
    let heavy = Upstream::spawn("heavy");
    let light = Upstream::spawn("light");
    let pool = format!(
        "\n[[upstreams]]\nname = \"pool\"\npeers = [{{ addr = \"{}\", weight = 3 }}, {{ addr = \"{}\", weight = 1 }}]\n",
        heavy.addr(),
        light.addr()
    );
    let config = [PREAMBLE.to_string(), pool, route("all", "pool", "")].concat();
    let gw = Gateway::start(&config);

    let counts = spread(&gw, "/w", 200);
    let heavy_n = counts.get("heavy").copied().unwrap_or(0);
    let light_n = counts.get("light").copied().unwrap_or(0);
    assert!(
        (130..=170).contains(&heavy_n),
        "3:1 weights gave {counts:?}"
    );
    assert!((30..=70).contains(&light_n), "3:1 weights gave {counts:?}");
}

#[test]
fn consistent_hash_on_a_header_keeps_each_key_on_one_peer_and_spreads_keys() {
    let a = Upstream::spawn("a");
    let b = Upstream::spawn("b");
    let c = Upstream::spawn("c");
    let config = [
        PREAMBLE.to_string(),
        upstream(
            "pool",
            &[&a, &b, &c],
            "selection = \"consistent_hash\"\nhash_key = \"header:x-user\"",
        ),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let client = Client::new();

    let mut peers_used = HashMap::new();
    for key in 0..30 {
        let user = format!("user-{key}");
        let mut seen = Vec::new();
        for _ in 0..5 {
            let response = client.get_with(&gw.url("/ch"), &[("x-user", &user)]);
            assert_eq!(response.status, 200, "{}", response.body);
            seen.push(response.echo().upstream().to_string());
        }
        assert!(
            seen.iter().all(|p| *p == seen[0]),
            "key {user} moved between peers: {seen:?}"
        );
        *peers_used.entry(seen[0].clone()).or_insert(0) += 1;
    }
    assert!(
        peers_used.len() >= 2,
        "30 keys all hashed to one peer: {peers_used:?}"
    );
}

#[test]
fn consistent_hash_on_client_ip_keeps_one_client_on_one_peer() {
    let a = Upstream::spawn("a");
    let b = Upstream::spawn("b");
    let c = Upstream::spawn("c");
    let config = [
        PREAMBLE.to_string(),
        upstream(
            "pool",
            &[&a, &b, &c],
            "selection = \"consistent_hash\"\nhash_key = \"client_ip\"",
        ),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let counts = spread(&gw, "/ip", 20);
    assert_eq!(
        counts.len(),
        1,
        "one client ip must stay on one peer: {counts:?}"
    );
}

#[test]
fn killed_peer_is_ejected_without_failed_requests_and_restored_when_back() {
    let a = Upstream::spawn("a");
    let b = Upstream::spawn("b");
    let c = Upstream::spawn("c");
    let config = [
        PREAMBLE.to_string(),
        upstream("pool", &[&a, &b, &c], FAST_HTTP_CHECK),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    for peer in [&a, &b, &c] {
        wait_peer_health(&gw, "pool", peer, 1.0);
    }
    let client = Client::new();

    b.stop();
    // Traffic keeps flowing while the health check notices: failed connects are retried elsewhere.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut statuses = Vec::new();
    let ejected = loop {
        let response = client.get(&gw.url("/during"));
        statuses.push(response.status);
        assert_eq!(
            response.status,
            200,
            "request while {} was down: {}",
            b.addr(),
            response.body
        );
        if peer_health(&gw.metrics(), "pool", b.port()) == Some(0.0) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(
        ejected,
        "{} was not ejected within 5 s\n{}",
        b.addr(),
        gw.metrics()
    );

    let after = spread(&gw, "/ejected", 30);
    assert!(
        !after.contains_key("b"),
        "an ejected peer answered: {after:?}"
    );

    let hits_before = b.hits();
    b.start();
    wait_peer_health(&gw, "pool", &b, 1.0);
    let back = spread(&gw, "/restored", 30);
    assert!(
        back.get("b").copied().unwrap_or(0) > 0,
        "restored peer gets no traffic: {back:?}"
    );
    assert!(b.hits() > hits_before);
}

#[test]
fn failing_health_check_ejects_a_peer_that_still_accepts_connections() {
    let a = Upstream::spawn("a");
    let b = Upstream::spawn("b");
    let config = [
        PREAMBLE.to_string(),
        upstream("pool", &[&a, &b], FAST_HTTP_CHECK),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    wait_peer_health(&gw, "pool", &a, 1.0);
    wait_peer_health(&gw, "pool", &b, 1.0);

    b.set_health(false);
    wait_peer_health(&gw, "pool", &b, 0.0);
    let hits = b.hits();
    let counts = spread(&gw, "/unhealthy", 20);
    assert_eq!(counts.get("a"), Some(&20), "{counts:?}");
    assert_eq!(b.hits(), hits, "an ejected peer must get no requests");

    b.set_health(true);
    wait_peer_health(&gw, "pool", &b, 1.0);
    let counts = spread(&gw, "/healthy-again", 20);
    assert!(
        counts.get("b").copied().unwrap_or(0) > 0,
        "restored peer gets no traffic: {counts:?}"
    );
}

#[test]
fn tcp_health_check_ejects_a_peer_that_refuses_connections() {
    let a = Upstream::spawn("a");
    let b = Upstream::spawn("b");
    let check = FAST_HTTP_CHECK.replace("kind = \"http\"", "kind = \"tcp\"");
    let config = [
        PREAMBLE.to_string(),
        upstream("pool", &[&a, &b], &check),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    wait_peer_health(&gw, "pool", &b, 1.0);

    b.stop();
    wait_peer_health(&gw, "pool", &b, 0.0);
    assert_eq!(spread(&gw, "/tcp", 10).get("a"), Some(&10));
    b.start();
    wait_peer_health(&gw, "pool", &b, 1.0);
}

#[test]
fn all_peers_refusing_gives_502_json() {
    let dead = vec![dead_addr(1), dead_addr(2)];
    let config = [
        PREAMBLE.to_string(),
        upstream_addrs("pool", &dead, ""),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let response = Client::new().get(&gw.url("/down"));
    assert_error(&response, 502, "bad_gateway");
}

#[test]
fn all_peers_ejected_gives_502_json() {
    let a = Upstream::spawn("a");
    let b = Upstream::spawn("b");
    let config = [
        PREAMBLE.to_string(),
        upstream("pool", &[&a, &b], FAST_HTTP_CHECK),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    wait_peer_health(&gw, "pool", &a, 1.0);
    wait_peer_health(&gw, "pool", &b, 1.0);

    a.stop();
    b.stop();
    wait_peer_health(&gw, "pool", &a, 0.0);
    wait_peer_health(&gw, "pool", &b, 0.0);
    let response = Client::new().get(&gw.url("/none"));
    assert_eq!(response.status, 502, "{}", response.body);
    let code = response.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        code == "no_healthy_upstream" || code == "bad_gateway",
        "error code {code:?}"
    );
    assert_error(&response, 502, &code);
}

#[test]
fn peer_closing_without_a_response_gives_502_json() {
    let a = Upstream::spawn("a");
    let config = [
        PREAMBLE.to_string(),
        upstream("pool", &[&a], ""),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let response = Client::new().get_with(&gw.url("/close"), &[("x-test-close", "1")]);
    assert_error(&response, 502, "bad_gateway");
}

#[test]
fn slow_peer_beyond_the_route_read_timeout_gives_504_json() {
    let slow = Upstream::spawn("slow");
    let config = [
        PREAMBLE.to_string(),
        upstream("pool", &[&slow], ""),
        route("all", "pool", "read_timeout = \"300ms\""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let start = Instant::now();
    let response = Client::new().get_with(&gw.url("/slow"), &[("x-test-delay-ms", "2500")]);
    let elapsed = start.elapsed();
    assert_error(&response, 504, "upstream_timeout");
    assert!(
        elapsed < Duration::from_millis(2000),
        "timed out after {elapsed:?}, want ~300ms"
    );

    let fast = Client::new().get_with(&gw.url("/fast"), &[("x-test-delay-ms", "50")]);
    assert_eq!(fast.status, 200, "{}", fast.body);
}

#[test]
fn connect_failure_is_retried_on_another_peer() {
    let live = Upstream::spawn("live");
    let dead = dead_addr(1);
    let config = [
        PREAMBLE.to_string(),
        upstream_addrs("pool", &[dead, live.addr()], ""),
        route(
            "all",
            "pool",
            "retries = 1\nretry_on = [\"connect_failure\"]",
        ),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let counts = spread(&gw, "/retry", 20);
    assert_eq!(counts.get("live"), Some(&20), "{counts:?}");
}

#[test]
fn without_retries_round_robin_over_a_dead_peer_fails_about_half_the_requests() {
    let live = Upstream::spawn("live");
    let dead = dead_addr(1);
    let config = [
        PREAMBLE.to_string(),
        upstream_addrs("pool", &[dead, live.addr()], ""),
        route("all", "pool", "retries = 0"),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let client = Client::new();
    let statuses: Vec<u16> = (0..20)
        .map(|_| client.get(&gw.url("/noretry")).status)
        .collect();
    let failed = statuses.iter().filter(|s| **s == 502).count();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(failed + ok, 20, "only 200 or 502 expected: {statuses:?}");
    // Strict alternation gives 10 and 10; a failed connect must not skew the rotation.
    assert!(
        (5..=15).contains(&failed),
        "round robin over one dead and one live peer without retries: {failed} of 20 failed: {statuses:?}"
    );
}

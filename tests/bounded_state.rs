//! State stays bounded under hostile traffic, end to end on the real gateway (and a real
//! `redis-server` where the store matters): in-process counters hold at most
//! `local_max_counters` and count their evictions; a hammered `count_denied` sliding log never
//! holds more than `limit` members in Redis; IPv6 clients are counted by network; a flood of
//! bogus credentials stops reaching Redis once its client is over `[rate_limit.failed_auth]`;
//! the admin API and `check` refuse numbers that would overflow.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::config::{route, store, upstream, Preamble};
use support::gateway::run_to_exit;
use support::redis::command_calls;
use support::{admin_json, assert_error, metric, Client, Gateway, Redis, Response, Upstream};

const ADMIN_TOKEN: &str = "admin-token-bounded-6e1f0a2b9c8d";
const PREFIX: &str = "bounded:";

/// `[server]`, `[admin]` with a token, `[log]` off; `listen` extra addresses after the proxy's.
fn base(extra_listen: &str) -> String {
    Preamble::new()
        .extra_listen(extra_listen)
        .admin_token_env("ADMIN_TOKEN")
        .render()
}

fn start(template: &str) -> Gateway {
    Gateway::builder(template)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .start()
}

fn admin_post(client: &Client, gw: &Gateway, path: &str, body: &str) -> Response {
    admin_json(client, gw, ADMIN_TOKEN, "POST", path, Some(body))
}

fn metric_or_zero(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&gw.metrics(), name, labels).unwrap_or(0.0)
}

/// `RateLimit: "<rule>";r=<remaining>;t=<reset>` → remaining.
fn remaining(response: &Response) -> u64 {
    let value = response.header("ratelimit").unwrap_or_default();
    value
        .split(';')
        .find_map(|part| part.trim().strip_prefix("r="))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no remaining in RateLimit {value:?}"))
}

// === in-process counters ===

#[test]
fn local_counters_stay_within_local_max_counters_and_count_evictions() {
    let svc = Upstream::spawn("svc");
    let template = [
        base(""),
        "\n[rate_limit]\nlocal_max_counters = 50\n".to_string(),
        upstream("svc", &[&svc], ""),
        route(
            "per-client",
            "svc",
            "path = \"/c\"\nrate_limits = [{ name = \"c\", by = \"header:x-client\", limit = 1000, window = \"1h\" }]",
        ),
    ]
    .concat();
    let gw = start(&template);
    let client = Client::new();
    let url = gw.url("/c");
    for i in 0..500 {
        // One subject in steady use between 500 one-off subjects.
        let hot = client.get_with(&url, &[("x-client", "hot")]);
        assert_eq!(hot.status, 200, "hot request {i}: {}", hot.body);
        let cold = client.get_with(&url, &[("x-client", &format!("cold-{i}"))]);
        assert_eq!(cold.status, 200, "cold request {i}: {}", cold.body);
    }
    let evicted = metric_or_zero(
        &gw,
        "portcullis_ratelimit_local_evictions_total",
        &[("counters", "limits")],
    );
    // 501 subjects into 50 slots: at least 451 had to go.
    assert!(
        (451.0..=501.0).contains(&evicted),
        "evictions counted: {evicted}"
    );
    // The subject in use kept its count: the one-off ones were evicted first.
    let hot = client.get_with(&url, &[("x-client", "hot")]);
    assert_eq!(remaining(&hot), 1000 - 501, "{:?}", hot.header("ratelimit"));
    println!("bounded counters: {evicted} evictions for 501 subjects in 50 slots");
}

// === Redis: sliding log ===

#[test]
fn a_hammered_count_denied_sliding_log_never_holds_more_than_limit_members() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let template = [
        base(""),
        store(&redis.url(), PREFIX, ""),
        upstream("svc", &[&svc], ""),
        route(
            "strict",
            "svc",
            "path = \"/s\"\nrate_limits = [{ name = \"s\", by = \"header:x-client\", limit = 5, window = \"1h\", algorithm = \"sliding_log\", count_denied = true }]",
        ),
    ]
    .concat();
    let gw = start(&template);
    let client = Client::new();
    let key = format!("{PREFIX}rl:{{strict}}:s:l:h:hammer");
    let mut statuses = Vec::new();
    for _ in 0..200 {
        let r = client.get_with(&gw.url("/s"), &[("x-client", "hammer")]);
        statuses.push(r.status);
        let card = redis
            .query(&["ZCARD", &key])
            .expect("ZCARD")
            .integer()
            .expect("integer reply");
        assert!(card <= 5, "ZCARD {card} after {} requests", statuses.len());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 195);
    let card = redis.query(&["ZCARD", &key]).expect("ZCARD").integer();
    assert_eq!(card, Some(5), "the newest 5 units are kept");
    let ttl = redis.pttl(&key).expect("PTTL");
    assert!(ttl > 0, "the log keeps its TTL: {ttl}");
}

/// One call of `limit.lua` on `con`, as the gateway makes it.
fn script_call(
    con: &mut redis::Connection,
    checks: &[portcullis::store::limits::RuleCheck],
    nonce: &str,
) -> portcullis::store::limits::Decision {
    use portcullis::store::limits::script::{parse_reply, script_args, SCRIPT};
    let (keys, argv) = script_args(checks, nonce);
    let script = redis::Script::new(SCRIPT);
    let mut call = script.prepare_invoke();
    for key in &keys {
        call.key(key);
    }
    for arg in &argv {
        call.arg(arg);
    }
    let reply: Vec<i64> = call.invoke(con).expect("script call");
    parse_reply(&reply, checks.len()).expect("well-formed reply")
}

#[test]
fn a_hammered_shadow_sliding_log_keeps_at_most_10000_members_in_redis() {
    use portcullis::store::limits::{Algorithm, RuleCheck};
    let redis = Redis::start();
    let mut con = redis::Client::open(redis.url())
        .expect("redis url")
        .get_connection()
        .expect("connect to redis");
    let shadow = RuleCheck {
        key: "rl:{shadow}:s:l:h:x".to_string(),
        algorithm: Algorithm::SlidingLog,
        limit: 5_000,
        window_ms: 3_600_000,
        cost: 5_000,
        shadow: true,
        count_denied: false,
    };
    for i in 0..3 {
        let d = script_call(&mut con, std::slice::from_ref(&shadow), &format!("n{i}"));
        assert!(d.admitted, "a shadow rule never denies");
        let card = redis
            .query(&["ZCARD", &shadow.key])
            .expect("ZCARD")
            .integer()
            .expect("integer");
        assert_eq!(card, (5_000 * (i + 1)).min(10_000), "after call {i}");
    }
    // The kept members still deny when enforced at the largest limit config allows.
    let enforced = RuleCheck {
        limit: 10_000,
        cost: 1,
        shadow: false,
        ..shadow
    };
    assert!(!script_call(&mut con, &[enforced], "enforced").admitted);
}

// === IPv6 ===

/// A free port on `[::1]`, or a loud failure when this machine has no IPv6 loopback.
fn free_v6_port() -> u16 {
    TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the IPv6 loopback ::1 is needed (enable IPv6 on lo)")
}

#[test]
fn an_ipv6_client_is_counted_by_its_64_network() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let port = free_v6_port();
    let template = [
        base(&format!(", \"[::1]:{port}\"")),
        store(&redis.url(), PREFIX, ""),
        upstream("svc", &[&svc], ""),
        route(
            "by-ip",
            "svc",
            "path = \"/ip\"\nrate_limits = [{ name = \"ip\", by = \"ip\", limit = 10, window = \"1h\" }]",
        ),
    ]
    .concat();
    let gw = start(&template);
    let client = Client::new();
    let v6 = client.get(&format!("http://[::1]:{port}/ip"));
    assert_eq!(v6.status, 200, "{}", v6.body);
    let v4 = client.get(&gw.url("/ip"));
    assert_eq!(v4.status, 200, "{}", v4.body);
    let keys = redis.all_keys().expect("KEYS");
    let network = format!("{PREFIX}rl:{{by-ip}}:ip:w:ip:::/64");
    let address = format!("{PREFIX}rl:{{by-ip}}:ip:w:ip:127.0.0.1");
    assert!(keys.contains(&network), "no /64 counter in {keys:?}");
    assert!(keys.contains(&address), "IPv4 stays per address: {keys:?}");
    assert!(
        !keys.iter().any(|k| k.ends_with("ip:::1")),
        "an IPv6 address has a counter of its own: {keys:?}"
    );
}

// === failed authentication ===

#[test]
fn a_flood_of_random_api_keys_stops_reaching_redis_once_over_the_failed_auth_limit() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let template = [
        base(""),
        store(&redis.url(), PREFIX, ""),
        "\n[auth.api_key]\nheader = \"x-api-key\"\n".to_string(),
        "\n[rate_limit.failed_auth]\nlimit = 10\nwindow = \"1h\"\n".to_string(),
        upstream("svc", &[&svc], ""),
        route("open", "svc", "path = \"/open\""),
        route("keyed", "svc", "path = \"/k\"\nauth = [\"api_key\"]"),
    ]
    .concat();
    let gw = start(&template);
    let client = Client::new();
    let random_key = |i: usize| format!("pk_bogus_{i:04}_{:016x}", fastrand::u64(..));

    // Credentials missing are not counted: they never reach the store.
    for _ in 0..20 {
        assert_error(&client.get(&gw.url("/k")), 401, "credentials_missing");
    }
    for i in 0..10 {
        let r = client.get_with(&gw.url("/k"), &[("x-api-key", &random_key(i))]);
        assert_error(&r, 401, "invalid_api_key");
    }
    let lookups_before = command_calls(&redis, "get");
    assert!(
        lookups_before >= 10,
        "the 10 keys were looked up: {lookups_before}"
    );
    let start = Instant::now();
    for i in 10..60 {
        let r = client.get_with(&gw.url("/k"), &[("x-api-key", &random_key(i))]);
        assert_error(&r, 429, "too_many_failed_attempts");
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After seconds");
        assert!((1..=7200).contains(&retry), "Retry-After {retry}");
    }
    let flood = start.elapsed();
    assert_eq!(
        command_calls(&redis, "get"),
        lookups_before,
        "a blocked credential was looked up in Redis"
    );
    let blocked = metric_or_zero(&gw, "portcullis_auth_failed_attempts_blocked_total", &[]);
    assert!(blocked >= 50.0, "blocked attempts counted: {blocked}");
    // Public routes are not affected.
    assert_eq!(client.get(&gw.url("/open")).status, 200);
    println!("failed auth: 50 blocked in {flood:?}, no store lookup");
}

#[test]
fn bogus_jwts_count_as_failed_attempts_and_are_refused_before_verification() {
    let svc = Upstream::spawn("svc");
    let template = [
        base(""),
        "\n[auth.jwt]\n[[auth.jwt.keys]]\nalgorithm = \"HS256\"\nsecret_env = \"JWT_SECRET\"\n"
            .to_string(),
        "\n[rate_limit.failed_auth]\nlimit = 5\nwindow = \"1h\"\n".to_string(),
        upstream("svc", &[&svc], ""),
        route("jwt", "svc", "path = \"/j\"\nauth = [\"jwt\"]"),
    ]
    .concat();
    let gw = Gateway::builder(&template)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("JWT_SECRET", "a-jwt-secret-of-more-than-32-bytes-0b9e7c1d")
        .start();
    let client = Client::new();
    let bogus = [(
        "Authorization",
        "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    )];
    for _ in 0..5 {
        assert_error(
            &client.get_with(&gw.url("/j"), &bogus),
            401,
            "invalid_token",
        );
    }
    let before = metric_or_zero(
        &gw,
        "portcullis_auth_decisions_total",
        &[("route", "jwt"), ("method", "jwt")],
    );
    for _ in 0..5 {
        let r = client.get_with(&gw.url("/j"), &bogus);
        assert_error(&r, 429, "too_many_failed_attempts");
        assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    }
    let after = metric_or_zero(
        &gw,
        "portcullis_auth_decisions_total",
        &[("route", "jwt"), ("method", "jwt")],
    );
    assert_eq!(before, after, "a refused token was still verified");
}

#[test]
fn failed_auth_limiting_can_be_turned_off() {
    let svc = Upstream::spawn("svc");
    let template = [
        base(""),
        "\n[auth.api_key]\nheader = \"x-api-key\"\n".to_string(),
        "\n[rate_limit.failed_auth]\nenabled = false\nlimit = 1\n".to_string(),
        upstream("svc", &[&svc], ""),
        route("keyed", "svc", "path = \"/k\"\nauth = [\"api_key\"]"),
    ]
    .concat();
    let gw = start(&template);
    let client = Client::new();
    for i in 0..5 {
        let r = client.get_with(&gw.url("/k"), &[("x-api-key", &format!("nope-{i}"))]);
        assert_error(&r, 401, "invalid_api_key");
    }
}

// === admin API numbers ===

#[test]
fn admin_refuses_out_of_range_ttls_and_exps_with_400_and_stays_alive() {
    let svc = Upstream::spawn("svc");
    let template = [
        base(""),
        "\n[auth.api_key]\nheader = \"x-api-key\"\n".to_string(),
        upstream("svc", &[&svc], ""),
        route("keyed", "svc", "path = \"/k\"\nauth = [\"api_key\"]"),
    ]
    .concat();
    let gw = start(&template);
    let client = Client::new();
    let bogus_keys: Vec<Value> = vec![
        json!({"consumer": "c", "ttl": "1e30s"}),
        json!({"consumer": "c", "ttl": "3651d"}),
        json!({"consumer": "c", "ttl": "584942417356y"}),
        json!({"consumer": "c", "ttl": "18446744073709551615s"}),
        json!({"consumer": "c", "ttl": "-5s"}),
        json!({"consumer": "c", "ttl": "NaN"}),
        json!({"consumer": "c", "ttl": 1e30}),
        json!({"consumer": "c", "ttl": -1}),
        json!({"consumer": "c", "expires_at": 18446744073709551615u64}),
    ];
    for body in &bogus_keys {
        let r = admin_post(&client, &gw, "/keys", &body.to_string());
        assert_eq!(r.status, 400, "POST /keys {body}: {}", r.body);
        assert!(r.json()["error"].as_str().is_some(), "{}", r.body);
    }
    let bogus_revocations = [
        r#"{"jti": "t1", "exp": 18446744073709551615}"#.to_string(),
        r#"{"jti": "t1", "exp": 9223372036854775808}"#.to_string(),
        r#"{"jti": "t1", "exp": 1e30}"#.to_string(),
        r#"{"jti": "t1", "exp": -1}"#.to_string(),
        r#"{"jti": "t1", "exp": "NaN"}"#.to_string(),
        r#"{"jti": "t1", "exp": 18446744073709551616}"#.to_string(),
        r#"{"jti": "t1", "ttl": 60}"#.to_string(),
        format!(
            r#"{{"jti": "t1", "exp": {}}}"#,
            support::unix_now() + 3651 * 86_400
        ),
    ];
    for body in &bogus_revocations {
        let r = admin_post(&client, &gw, "/revocations", body);
        assert_eq!(r.status, 400, "POST /revocations {body}: {}", r.body);
        assert!(r.json()["error"].as_str().is_some(), "{}", r.body);
    }
    // Still alive, and in-range values still work.
    assert_eq!(client.get(&gw.admin_url("/healthz")).status, 200);
    let ok = admin_post(
        &client,
        &gw,
        "/keys",
        r#"{"consumer": "c", "ttl": "3650d"}"#,
    );
    assert_eq!(ok.status, 201, "{}", ok.body);
    let in_range = format!(r#"{{"jti": "t2", "exp": {}}}"#, support::unix_now() + 3600);
    let ok = admin_post(&client, &gw, "/revocations", &in_range);
    assert_eq!(ok.status, 201, "{}", ok.body);
    assert_eq!(client.get(&gw.url("/k")).status, 401);
}

// === check ===

#[test]
fn check_refuses_a_weak_config_key_naming_its_field_but_never_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let weak = "batch-job-key-1";
    let text = r#"
[[upstreams]]
name = "svc"
peers = [{ addr = "127.0.0.1:3000" }]

[auth.api_key]
keys = [
  { id = "strong", consumer = "a", key_env = "STRONG_KEY" },
  { id = "weak", consumer = "b", key_env = "WEAK_KEY" },
]

[rate_limit.failed_auth]
window = "2d"
"#;
    let path = dir.path().join("weak.toml");
    std::fs::write(&path, text).expect("write config");
    let finished = run_to_exit(
        &["check", "-c", path.to_str().expect("utf-8 path")],
        &[
            ("STRONG_KEY", "pk_Yc2vQ8mZ1xT4bN7rK0wE3sL6uH9aJ5dF"),
            ("WEAK_KEY", weak),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(finished.code(), Some(1), "{}", finished.stderr);
    let lines: Vec<&str> = finished.stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("auth.api_key.keys[1].key_env: the key is too weak")),
        "{}",
        finished.stderr
    );
    assert!(
        !lines.iter().any(|l| l.contains("keys[0]")),
        "{}",
        finished.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("rate_limit.failed_auth.window: must be whole seconds")),
        "{}",
        finished.stderr
    );
    assert!(!finished.stderr.contains(weak), "{}", finished.stderr);
}

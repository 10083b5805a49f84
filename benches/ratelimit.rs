//! The rate-limit hot path without the network: building the counter keys and deciding two
//! rules in process (what a single node without Redis pays per request), encoding a Redis call
//! and parsing its reply, rendering the response headers, and the `[rate_limit.failed_auth]`
//! check every request to an authenticated route pays (one atomic load while no network is
//! blocked; a counter lookup once one is).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::config;
use portcullis::ratelimit::{
    ClaimHeader, Limiter, LimiterSettings, PolicySettings, Quota, RateMetrics, RequestFacts,
    RoutePolicy, Verdict,
};
use portcullis::store::limits::{script, Algorithm, RuleCheck};
use portcullis::store::Store;

fn policy_config() -> config::Config {
    let toml = r#"
[[upstreams]]
name = "u"
peers = [{ addr = "127.0.0.1:1" }]
[[routes]]
name = "orders"
upstream = "u"
[[routes.rate_limits]]
name = "per-ip"
by = "ip"
limit = 1000000000
window = "60s"
[[routes.rate_limits]]
name = "per-tenant"
by = "header:x-tenant"
limit = 1000000000
window = "1h"
"#;
    let c = config::parse(toml).expect("bench config parses");
    portcullis::setup::check_config(c.clone()).expect("bench config is valid");
    c
}

fn bench_rate_limit(c: &mut Criterion) {
    let registry = prometheus::Registry::new();
    let store = Store::from_config(None, &registry).expect("memory store");
    let cfg = policy_config();
    let mut issues = config::Issues::default();
    let settings = LimiterSettings::compile(&cfg.rate_limit, &mut issues).expect("compiles");
    let limiter = Limiter::new(store.clone(), &settings, RateMetrics::new(&registry));
    let shared = PolicySettings::compile(&cfg.rate_limit, &mut issues);
    let policy = RoutePolicy::compile(
        0,
        &cfg.routes[0],
        shared.as_ref(),
        &store,
        limiter.metrics(),
        |_| ClaimHeader::Unlisted,
        &mut issues,
    )
    .expect("policy compiles");
    let mut headers = http::HeaderMap::new();
    headers.insert("x-tenant", "acme-corp".parse().expect("header"));
    let facts = RequestFacts {
        client_ip: Some("203.0.113.9".parse().expect("ip")),
        principal: None,
        headers: &headers,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    let mut group = c.benchmark_group("rate_limit");
    group.bench_function("two_rules_in_process", |b| {
        b.iter(|| {
            let v = rt.block_on(limiter.check(black_box(&policy), black_box(&facts)));
            assert!(matches!(v, Verdict::Admitted(Some(_))));
        })
    });
    let checks = vec![
        RuleCheck {
            key: "portcullis:rl:{orders}:per-ip:ip:203.0.113.9".into(),
            algorithm: Algorithm::SlidingWindow,
            limit: 100,
            window_ms: 60_000,
            cost: 1,
            shadow: false,
            count_denied: false,
        },
        RuleCheck {
            key: "portcullis:rl:{orders}:per-tenant:h:acme-corp".into(),
            algorithm: Algorithm::SlidingLog,
            limit: 50,
            window_ms: 3_600_000,
            cost: 1,
            shadow: false,
            count_denied: false,
        },
    ];
    group.bench_function("encode_script_call", |b| {
        b.iter(|| script::script_args(black_box(&checks), black_box("5f3a.17")))
    });
    let reply = [1i64, 1, 99, 120_000, 0, 1, 49, 3_600_000, 0];
    group.bench_function("parse_script_reply", |b| {
        b.iter(|| script::parse_reply(black_box(&reply), 2))
    });
    let quota = Quota {
        rule: 0,
        limit: 100,
        remaining: 42,
        reset_secs: 75,
        policy: None,
    };
    group.bench_function("render_headers", |b| {
        b.iter(|| {
            let mut n = 0;
            policy.write_headers(black_box(&quota), |_, v| n += v.len());
            n
        })
    });
    let client = Some("203.0.113.9".parse().expect("ip"));
    group.bench_function("failed_auth_check_none_blocked", |b| {
        b.iter(|| {
            let blocked = limiter.failed_auth_retry_after(black_box(&policy), black_box(client));
            assert!(blocked.is_none());
        })
    });
    // Another network over the limit (100 by default) turns the lookup on for everyone.
    let attacker = Some("198.51.100.1".parse().expect("ip"));
    for _ in 0..100 {
        limiter.record_failed_auth(&policy, attacker);
    }
    assert!(limiter.failed_auth_retry_after(&policy, attacker).is_some());
    group.bench_function("failed_auth_check_other_network_blocked", |b| {
        b.iter(|| {
            let blocked = limiter.failed_auth_retry_after(black_box(&policy), black_box(client));
            assert!(blocked.is_none());
        })
    });
    group.finish();
}

criterion_group!(benches, bench_rate_limit);
criterion_main!(benches);

//! The response cache's per-request rules without I/O: the primary key of a typical API
//! request (host, path, a sorted query, one keyed header, the consumer), the Vary secondary
//! key, and the storage decision for a typical cacheable response. Every cached request pays
//! the key; every miss pays the decision; so both should stay a few microseconds at most.

use std::time::{Duration, SystemTime};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use portcullis::cache::directives::RequestDirectives;
use portcullis::cache::freshness::ResponseTiming;
use portcullis::cache::key::{primary_key, KeyParts, KeyRequest, QueryKey};
use portcullis::cache::policy::{
    decide_storage, CacheMethods, CacheRules, RequestView, ResponseView, RouteCachePolicy,
};
use portcullis::cache::vary::{secondary_key, Vary};

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, deflate, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("x-api-key", "pk_live_0123456789abcdef"),
        ("x-request-id", "01HZX3J4K5M6N7P8Q9R0S1T2U3"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    h
}

fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "2048"),
        (
            "cache-control",
            "public, max-age=300, stale-while-revalidate=30",
        ),
        ("date", "Fri, 04 Dec 2026 18:00:00 GMT"),
        ("etag", "\"33a64df551425fcc55e4d42a148795d9f25f89d4\""),
        ("last-modified", "Fri, 04 Dec 2026 17:00:00 GMT"),
        ("vary", "Accept-Encoding"),
        ("x-upstream-time", "12ms"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    h
}

fn route() -> RouteCachePolicy {
    RouteCachePolicy {
        methods: CacheMethods {
            get: true,
            head: true,
        },
        key: KeyParts {
            host: true,
            query: QueryKey::Sorted,
            headers: vec![HeaderName::from_static("accept-language")],
            by_consumer: true,
        },
        default_ttl: None,
        ttl_override: None,
        ttl_cap: Some(Duration::from_secs(3600)),
        allow_set_cookie: false,
        vary_allow: None,
    }
}

fn bench_key(c: &mut Criterion) {
    let headers = request_headers();
    let route = route();
    let request = KeyRequest {
        route: "catalogue",
        host: "api.example.com",
        path: "/v1/products/12345/reviews",
        query: Some("sort=recent&page=2&lang=en&limit=20"),
        headers: &headers,
        consumer: Some("consumer-7f3a"),
    };
    let mut group = c.benchmark_group("cache_key");
    group.bench_function("primary_sorted_query_header_consumer", |b| {
        b.iter(|| primary_key(black_box(&route.key), black_box(&request)))
    });
    let whole = KeyParts {
        query: QueryKey::Whole,
        headers: Vec::new(),
        by_consumer: false,
        host: true,
    };
    group.bench_function("primary_whole_query", |b| {
        b.iter(|| primary_key(black_box(&whole), black_box(&request)))
    });
    let vary = Vary::Headers(vec![HeaderName::from_static("accept-encoding")]);
    group.bench_function("secondary_accept_encoding", |b| {
        b.iter(|| secondary_key(black_box(vary.names()), black_box(&headers)))
    });
    group.finish();
}

fn bench_policy(c: &mut Criterion) {
    let rules = CacheRules {
        max_object_bytes: 8 << 20,
        default_ttl: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::from_secs(300),
    };
    let route = route();
    let req_headers = request_headers();
    let resp_headers = response_headers();
    let now = SystemTime::now();
    let timing = ResponseTiming {
        request_time: now - Duration::from_millis(12),
        response_time: now,
    };
    let mut group = c.benchmark_group("cache_policy");
    group.bench_function("request_directives", |b| {
        b.iter(|| RequestDirectives::from_headers(black_box(&req_headers)))
    });
    let directives = RequestDirectives::from_headers(&req_headers);
    group.bench_function("decide_storage_typical_response", |b| {
        b.iter(|| {
            let request = RequestView {
                method: &Method::GET,
                directives: &directives,
                credentialed: true,
                consumer_keyed: false,
            };
            let response = ResponseView {
                status: 200,
                headers: black_box(&resp_headers),
                timing,
            };
            decide_storage(&rules, &route, &request, &response)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_key, bench_policy);
criterion_main!(benches);

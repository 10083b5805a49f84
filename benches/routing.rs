//! Route matching on a table shaped like a real edge config: exact hosts, wildcards, catch-all
//! routes, exact paths and many prefixes. Matching must not allocate and should stay well under
//! a microsecond even at a few hundred routes.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::config;
use portcullis::proxy::canonical::{canonicalize, PathOptions};
use portcullis::proxy::router::Router;

fn table(services: usize) -> Router {
    let mut toml =
        String::from("[[upstreams]]\nname = \"u\"\npeers = [{ addr = \"127.0.0.1:1\" }]\n");
    for i in 0..services {
        toml.push_str(&format!(
            "[[routes]]\nname = \"svc{i}\"\nhosts = [\"svc{i}.example.com\"]\npath = \"/v1/svc{i}\"\nupstream = \"u\"\n\
             [[routes]]\nname = \"svc{i}-exact\"\npath = \"/v1/svc{i}/status\"\npath_match = \"exact\"\nmethods = [\"GET\"]\nupstream = \"u\"\n\
             [[routes]]\nname = \"svc{i}-any\"\npath = \"/api/svc{i}\"\nupstream = \"u\"\n"
        ));
    }
    toml.push_str("[[routes]]\nname = \"wild\"\nhosts = [\"*.tenants.example.com\"]\npath = \"/\"\nupstream = \"u\"\n");
    let config = config::parse(&toml).expect("bench config parses");
    portcullis::setup::check_config(config.clone()).expect("bench config is valid");
    Router::compile(&config.routes, &mut config::Issues::default()).expect("bench routes compile")
}

fn bench_routing(c: &mut Criterion) {
    for services in [10, 100] {
        let router = table(services);
        let mut group = c.benchmark_group(format!("route_match/{}_routes", services * 3 + 1));
        group.bench_function("exact_host_prefix", |b| {
            b.iter(|| {
                router.find(
                    black_box("svc5.example.com"),
                    black_box("/v1/svc5/items/42"),
                    black_box("GET"),
                )
            })
        });
        group.bench_function("any_host_exact_path", |b| {
            b.iter(|| {
                router.find(
                    black_box("other.org"),
                    black_box("/v1/svc7/status"),
                    black_box("GET"),
                )
            })
        });
        group.bench_function("any_host_deep_prefix", |b| {
            b.iter(|| {
                router.find(
                    black_box("other.org"),
                    black_box("/api/svc9/a/b/c"),
                    black_box("POST"),
                )
            })
        });
        group.bench_function("wildcard_host", |b| {
            b.iter(|| {
                router.find(
                    black_box("Acme.Tenants.Example.com:443"),
                    black_box("/x"),
                    black_box("GET"),
                )
            })
        });
        group.bench_function("not_found", |b| {
            b.iter(|| {
                router.find(
                    black_box("other.org"),
                    black_box("/nothing/here"),
                    black_box("GET"),
                )
            })
        });
        group.finish();
    }
}

/// Canonicalizing a request path before routing: a clean path must cost one scan and no
/// allocation; a dirty one (escapes, dot segments, repeated slashes) is rebuilt.
fn bench_canonical_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("canonical_path");
    let opts = PathOptions::default();
    group.bench_function("clean", |b| {
        b.iter(|| canonicalize(black_box(b"/api/v1/users/42/orders/7.json"), opts))
    });
    group.bench_function("dirty", |b| {
        b.iter(|| {
            canonicalize(
                black_box(b"/api//v1/./users/%34%32/../42/%7eorders/x%2e%2E/7"),
                opts,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_routing, bench_canonical_path);
criterion_main!(benches);

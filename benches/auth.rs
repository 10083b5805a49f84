//! The API-key hot path: hashing the presented key and answering from the local tier, which is
//! what every request with a hot key costs (no store round trip).

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::auth::{CacheMetrics, Cached, Credential, DecisionCache, KeyHasher, Principal};

fn principal() -> Arc<Principal> {
    Arc::new(Principal {
        consumer: "alice".into(),
        plan: Some("gold".into()),
        scopes: vec!["orders:read".into()],
        credential: Credential::ApiKey {
            id: "0123456789abcdef".into(),
        },
        expires_at: None,
        headers: Vec::new(),
    })
}

fn bench_key_lookup(c: &mut Criterion) {
    let cache = DecisionCache::new(
        100_000,
        Duration::from_secs(300),
        10_000,
        Duration::from_secs(5),
        CacheMetrics::new(&prometheus::Registry::new()),
    );
    let key = "pc_u8HFUMNpFeX5MJVFdsqPip9goi37C-3IfbJVcwWCGW8";
    let plain = KeyHasher::new(None);
    let keyed = KeyHasher::new(Some(b"server-side pepper".to_vec()));
    // A realistically full cache, so the lookup is not into a near-empty table.
    for i in 0..50_000u32 {
        cache.put_known(plain.hash(&format!("pc_filler_{i}")), principal());
    }
    cache.put_known(plain.hash(key), principal());
    cache.put_known(keyed.hash(key), principal());

    let mut group = c.benchmark_group("api_key");
    group.bench_function("hash_sha256", |b| b.iter(|| plain.hash(black_box(key))));
    group.bench_function("hash_hmac_sha256", |b| {
        b.iter(|| keyed.hash(black_box(key)))
    });
    group.bench_function("local_hit_sha256", |b| {
        b.iter(|| {
            let h = plain.hash(black_box(key));
            assert!(matches!(cache.get(&h), Cached::Known(_)));
        })
    });
    group.bench_function("local_hit_hmac", |b| {
        b.iter(|| {
            let h = keyed.hash(black_box(key));
            assert!(matches!(cache.get(&h), Cached::Known(_)));
        })
    });
    group.bench_function("local_negative_miss", |b| {
        b.iter(|| cache.get(black_box(&[7u8; 32])))
    });
    group.finish();
}

criterion_group!(benches, bench_key_lookup);
criterion_main!(benches);

//! The store contract: every operation of the shared-state seam behaves the same on the
//! in-process backend and on Redis. Each body below is written once against a `Store` and runs
//! on both, concurrently: `Store::from_config(None, ..)` and a store on a real `redis-server`
//! (no mocks). Where a body returns a transcript of what it saw, both backends must produce the
//! expected one, so they also agree with each other.
//!
//! A new backend (Redis Cluster) joins by running these bodies on it too.

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis::config::StoreConfig;
use portcullis::store::limits::{Algorithm, Decision, RuleCheck};
use portcullis::store::{EntryRevocation, Invalidation, Store, StoreError};
use support::Redis;
use tokio::sync::broadcast;

/// `[store] prefix` of the Redis backend; the in-process backend's is fixed.
const PREFIX: &str = "contract:";
const MEMORY_PREFIX: &str = "portcullis:";

/// Short TTLs keep the suite fast; the waits past them leave a margin for a loaded host.
const SHORT_TTL: Duration = Duration::from_millis(250);
const PAST_SHORT_TTL: Duration = Duration::from_millis(400);

/// Both backends, and the `redis-server` behind one of them.
struct Backends {
    redis: Redis,
    memory: Arc<Store>,
    on_redis: Arc<Store>,
}

impl Backends {
    fn start() -> Backends {
        let redis = Redis::start();
        let on_redis = redis_store(&redis, PREFIX);
        let memory = Store::from_config(None, &prometheus::Registry::new()).expect("in-process");
        Backends {
            redis,
            memory,
            on_redis,
        }
    }

    /// Runs `body` on both backends at once; what it returned on memory, then on Redis.
    async fn run<T, F, Fut>(&self, body: F) -> (T, T)
    where
        F: Fn(Arc<Store>) -> Fut,
        Fut: Future<Output = T>,
    {
        tokio::join!(body(self.memory.clone()), body(self.on_redis.clone()))
    }

    /// Runs a transcript `body` on both backends and checks each gave `expected`.
    async fn expect<F, Fut>(&self, expected: &[&str], body: F)
    where
        F: Fn(Arc<Store>) -> Fut,
        Fut: Future<Output = Vec<String>>,
    {
        let (memory, redis) = self.run(body).await;
        assert_eq!(memory, expected, "in-process store");
        assert_eq!(redis, expected, "redis store");
    }
}

/// Another store on `redis` (another gateway node, when `prefix` is the same).
fn redis_store(redis: &Redis, prefix: &str) -> Arc<Store> {
    let config: StoreConfig = toml::from_str(&format!(
        "url = \"{}\"\nprefix = \"{prefix}\"\noperation_timeout = \"2s\"",
        redis.url()
    ))
    .expect("store config");
    Store::from_config(Some(&config), &prometheus::Registry::new()).expect("redis store")
}

/// `Ok(value)` or `Err(<kind>)`, for transcripts.
fn shown<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("Err({})", e.kind()),
    }
}

async fn members(store: &Store, key: &str) -> Vec<String> {
    let mut m = store.set_members(key).await.expect("set_members");
    m.sort();
    m
}

// === key/value ===

async fn key_value_transcript(store: Arc<Store>) -> Vec<String> {
    let key = store.key("kv", "a", "");
    let mut log = Vec::new();
    log.push(format!("get absent: {}", shown(store.get(&key).await)));
    log.push(format!(
        "exists absent: {}",
        shown(store.exists(&key).await)
    ));
    store.set(&key, b"one", SHORT_TTL).await.expect("set");
    log.push(format!("get: {}", shown(store.get(&key).await)));
    log.push(format!("exists: {}", shown(store.exists(&key).await)));
    // Values are bytes, not text.
    store
        .set(&key, &[0, 159, 255], Duration::from_secs(60))
        .await
        .expect("overwrite");
    log.push(format!("get overwritten: {}", shown(store.get(&key).await)));
    log.push(format!("delete: {}", shown(store.delete(&key).await)));
    log.push(format!("delete again: {}", shown(store.delete(&key).await)));
    log.push(format!("get deleted: {}", shown(store.get(&key).await)));

    let short = store.key("kv", "b", "short");
    store.set(&short, b"x", SHORT_TTL).await.expect("set");
    tokio::time::sleep(PAST_SHORT_TTL).await;
    log.push(format!("get expired: {}", shown(store.get(&short).await)));
    log.push(format!(
        "exists expired: {}",
        shown(store.exists(&short).await)
    ));
    log.push(format!(
        "delete expired: {}",
        shown(store.delete(&short).await)
    ));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_live_for_their_ttl_and_delete_says_whether_they_existed() {
    let backends = Backends::start();
    backends
        .expect(
            &[
                "get absent: None",
                "exists absent: false",
                "get: Some([111, 110, 101])",
                "exists: true",
                "get overwritten: Some([0, 159, 255])",
                "delete: true",
                "delete again: false",
                "get deleted: None",
                "get expired: None",
                "exists expired: false",
                "delete expired: false",
            ],
            key_value_transcript,
        )
        .await;
}

// === sets ===

async fn sets_transcript(store: Arc<Store>) -> Vec<String> {
    let ttl = Duration::from_secs(60);
    let set = store.key("set", "a", "");
    let mut log = Vec::new();
    log.push(format!("absent: {:?}", members(&store, &set).await));
    for member in ["x", "y", "x"] {
        store.set_add(&set, member, ttl).await.expect("set_add");
    }
    log.push(format!("added x, y, x: {:?}", members(&store, &set).await));
    store.set_remove(&set, "x").await.expect("set_remove");
    store.set_remove(&set, "never").await.expect("set_remove");
    log.push(format!("removed x: {:?}", members(&store, &set).await));
    store.set_remove(&set, "y").await.expect("set_remove");
    // Like a Redis set, a set goes with its last member.
    log.push(format!(
        "last removed, exists: {}",
        shown(store.exists(&set).await)
    ));
    let absent = store.key("set", "none", "");
    log.push(format!(
        "remove from absent: {}",
        shown(store.set_remove(&absent, "x").await)
    ));

    // A member with a longer TTL extends the set's; one with a shorter TTL never shortens it.
    let extended = store.key("set", "b", "extended");
    store.set_add(&extended, "x", SHORT_TTL).await.expect("add");
    store.set_add(&extended, "y", ttl).await.expect("add");
    let kept = store.key("set", "c", "kept");
    store.set_add(&kept, "x", ttl).await.expect("add");
    store.set_add(&kept, "y", SHORT_TTL).await.expect("add");
    let expiring = store.key("set", "d", "expiring");
    store.set_add(&expiring, "x", SHORT_TTL).await.expect("add");
    tokio::time::sleep(PAST_SHORT_TTL).await;
    log.push(format!("extended: {:?}", members(&store, &extended).await));
    log.push(format!("kept: {:?}", members(&store, &kept).await));
    log.push(format!("expired: {:?}", members(&store, &expiring).await));

    // A key holds one type: reading it as the other is a protocol error.
    let text = store.key("set", "e", "text");
    store.set(&text, b"v", ttl).await.expect("set");
    log.push(format!(
        "set_add on a value: {}",
        shown(store.set_add(&text, "x", ttl).await)
    ));
    log.push(format!("get of a set: {}", shown(store.get(&kept).await)));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_add_remove_and_list_members_and_their_ttl_only_grows() {
    let backends = Backends::start();
    backends
        .expect(
            &[
                "absent: []",
                "added x, y, x: [\"x\", \"y\"]",
                "removed x: [\"y\"]",
                "last removed, exists: false",
                "remove from absent: ()",
                "extended: [\"x\", \"y\"]",
                "kept: [\"x\", \"y\"]",
                "expired: []",
                "set_add on a value: Err(protocol)",
                "get of a set: Err(protocol)",
            ],
            sets_transcript,
        )
        .await;
}

// === invalidations ===

/// A subscription to `store`'s invalidations that is known to be live: probes are published
/// until one comes back (the Redis subscriber connects in the background); at most 50 of
/// 200 ms each.
async fn live_subscription(store: &Store) -> broadcast::Receiver<Invalidation> {
    let mut rx = store.invalidations();
    for i in 0..50 {
        let probe = format!("probe:{i}");
        store.publish_invalidation(&probe).await.expect("publish");
        let wait = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Ok(Invalidation::Key(k)) if k == probe => return rx,
                    Ok(_) => continue,
                    Err(e) => panic!("subscription failed: {e}"),
                },
                _ = &mut wait => break,
            }
        }
    }
    panic!("the store's invalidation subscription never delivered a probe");
}

/// The next invalidated key that is not a probe, waiting at most 5 s.
async fn next_key(rx: &mut broadcast::Receiver<Invalidation>) -> Option<String> {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(Invalidation::Key(k)) if !k.starts_with("probe:") => return Some(k),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(None)
}

/// Publishes on `publisher`; what each subscriber of `nodes` received, in order.
async fn invalidation_transcript(publisher: Arc<Store>, nodes: Vec<Arc<Store>>) -> Vec<String> {
    let mut subscriptions = Vec::new();
    for node in &nodes {
        subscriptions.push(live_subscription(node).await);
    }
    for key in ["apikey:one", "jti:two", "apikey:three"] {
        publisher.publish_invalidation(key).await.expect("publish");
    }
    let mut log = Vec::new();
    for (i, rx) in subscriptions.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(next_key(rx).await.unwrap_or_else(|| "nothing".into()));
        }
        log.push(format!("node {i}: {got:?}"));
    }
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_reaches_every_subscriber_the_publishers_own_included() {
    let backends = Backends::start();
    let expected = "[\"apikey:one\", \"jti:two\", \"apikey:three\"]";
    // In process there is one node: the publisher's own subscribers.
    let memory = invalidation_transcript(
        backends.memory.clone(),
        vec![backends.memory.clone(), backends.memory.clone()],
    )
    .await;
    assert_eq!(
        memory,
        [format!("node 0: {expected}"), format!("node 1: {expected}")]
    );
    // On Redis, the publisher and another node on the same Redis and prefix.
    let other_node = redis_store(&backends.redis, PREFIX);
    let redis = invalidation_transcript(
        backends.on_redis.clone(),
        vec![backends.on_redis.clone(), other_node],
    )
    .await;
    assert_eq!(
        redis,
        [format!("node 0: {expected}"), format!("node 1: {expected}")]
    );
}

// === revocations ===

async fn revocation_transcript(store: Arc<Store>) -> Vec<String> {
    let ttl = Duration::from_secs(60);
    let mut rx = live_subscription(&store).await;
    let pointer = store.key("apikey-id", "id-1", "");
    let entry = store.key("apikey", "hash-1", "");
    let index = store.key("consumer-keys", "ann", "");
    store.set(&pointer, b"hash-1", ttl).await.expect("set");
    store.set(&entry, b"record", ttl).await.expect("set");
    store.set_add(&index, "id-1", ttl).await.expect("set_add");
    store.set_add(&index, "id-2", ttl).await.expect("set_add");
    let revocation = |pointer_value| EntryRevocation {
        pointer: &pointer,
        pointer_value,
        entry: &entry,
        index: Some((index.as_str(), "id-1")),
        invalidation: "apikey:hash-1",
    };
    let state = |step: &'static str| {
        let store = store.clone();
        let (pointer, entry, index) = (pointer.clone(), entry.clone(), index.clone());
        async move {
            format!(
                "{step}: pointer {}, entry {}, index {:?}",
                shown(store.exists(&pointer).await),
                shown(store.exists(&entry).await),
                members(&store, &index).await
            )
        }
    };
    let mut log = Vec::new();

    log.push(format!(
        "mismatched pointer revokes: {}",
        shown(store.revoke_entry(&revocation("hash-other")).await)
    ));
    log.push(state("after mismatch").await);
    // Nothing was published: the next message is one published after it.
    store
        .publish_invalidation("after-mismatch")
        .await
        .expect("publish");
    log.push(format!("next published: {:?}", next_key(&mut rx).await));

    log.push(format!(
        "revoke: {}",
        shown(store.revoke_entry(&revocation("hash-1")).await)
    ));
    log.push(state("after revoke").await);
    log.push(format!("next published: {:?}", next_key(&mut rx).await));
    log.push(format!(
        "revoke again: {}",
        shown(store.revoke_entry(&revocation("hash-1")).await)
    ));

    // The last member of an index goes with its set; an entry without an index revokes too.
    let only_pointer = store.key("apikey-id", "id-2", "");
    let only_entry = store.key("apikey", "hash-2", "");
    store.set(&only_pointer, b"hash-2", ttl).await.expect("set");
    store.set(&only_entry, b"record", ttl).await.expect("set");
    let last = EntryRevocation {
        pointer: &only_pointer,
        pointer_value: "hash-2",
        entry: &only_entry,
        index: Some((index.as_str(), "id-2")),
        invalidation: "apikey:hash-2",
    };
    log.push(format!(
        "revoke the last indexed: {}, index exists: {}",
        shown(store.revoke_entry(&last).await),
        shown(store.exists(&index).await)
    ));
    log.push(format!("next published: {:?}", next_key(&mut rx).await));
    let bare_pointer = store.key("apikey-id", "id-3", "");
    let bare_entry = store.key("apikey", "hash-3", "");
    store.set(&bare_pointer, b"hash-3", ttl).await.expect("set");
    store.set(&bare_entry, b"record", ttl).await.expect("set");
    let unindexed = EntryRevocation {
        pointer: &bare_pointer,
        pointer_value: "hash-3",
        entry: &bare_entry,
        index: None,
        invalidation: "apikey:hash-3",
    };
    log.push(format!(
        "revoke unindexed: {}, entry exists: {}",
        shown(store.revoke_entry(&unindexed).await),
        shown(store.exists(&bare_entry).await)
    ));
    log.push(format!("next published: {:?}", next_key(&mut rx).await));

    // A marker lives its TTL and is announced in the same step.
    let marker = store.key("revoked-jti", "t-1", "");
    log.push(format!(
        "mark: {}",
        shown(store.mark_revoked(&marker, SHORT_TTL, "jti:t-1").await)
    ));
    log.push(format!(
        "marker exists: {}",
        shown(store.exists(&marker).await)
    ));
    log.push(format!("next published: {:?}", next_key(&mut rx).await));
    tokio::time::sleep(PAST_SHORT_TTL).await;
    log.push(format!(
        "marker after its ttl: {}",
        shown(store.exists(&marker).await)
    ));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_changes_everything_or_nothing_and_is_announced() {
    let backends = Backends::start();
    backends
        .expect(
            &[
                "mismatched pointer revokes: false",
                "after mismatch: pointer true, entry true, index [\"id-1\", \"id-2\"]",
                "next published: Some(\"after-mismatch\")",
                "revoke: true",
                "after revoke: pointer false, entry false, index [\"id-2\"]",
                "next published: Some(\"apikey:hash-1\")",
                "revoke again: false",
                "revoke the last indexed: true, index exists: false",
                "next published: Some(\"apikey:hash-2\")",
                "revoke unindexed: true, entry exists: false",
                "next published: Some(\"apikey:hash-3\")",
                "mark: ()",
                "marker exists: true",
                "next published: Some(\"jti:t-1\")",
                "marker after its ttl: false",
            ],
            revocation_transcript,
        )
        .await;
}

// === rate-limit decisions ===

/// A window (about an hour) whose current aligned window has at least 60 s left on this host's
/// clock, which Redis shares: no sliding window rolls over during a test.
fn window_with_room() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    (0..100)
        .map(|i| 3_600_000 + i * 7_001)
        .find(|w| w - now % w > 60_000)
        .expect("one of 100 windows has room")
}

fn check(store: &Store, name: &str, algorithm: Algorithm, limit: u64, window_ms: u64) -> RuleCheck {
    RuleCheck {
        key: store.key("rl", "contract", name),
        algorithm,
        limit,
        window_ms,
        cost: 1,
        shadow: false,
        count_denied: false,
    }
}

/// `admitted` and, per rule, `allowed/remaining`, plus `retry` when the request was denied
/// (its exact value depends on the milliseconds between calls, so only its sign is shown).
fn decision(d: &Decision) -> String {
    let rules: Vec<String> = d
        .rules
        .iter()
        .map(|r| {
            let retry = if r.allowed {
                String::new()
            } else {
                format!(" retry>0={}", r.retry_after_ms > 0)
            };
            format!("{}/{}{retry}", u8::from(r.allowed), r.remaining)
        })
        .collect();
    format!("{} [{}]", u8::from(d.admitted), rules.join(", "))
}

async fn decide(store: &Store, checks: &[RuleCheck]) -> String {
    decision(&store.decide_limits(checks).await.expect("decide_limits"))
}

async fn limits_transcript(store: Arc<Store>, algorithm: Algorithm, window: u64) -> Vec<String> {
    let tag = match algorithm {
        Algorithm::SlidingWindow => "w",
        Algorithm::SlidingLog => "l",
    };
    let rule =
        |name: &str, limit| check(&store, &format!("{tag}:{name}"), algorithm, limit, window);
    let mut log = Vec::new();

    let plain = [rule("plain", 3)];
    for i in 0..5 {
        log.push(format!("plain {i}: {}", decide(&store, &plain).await));
    }

    let mut costly = rule("cost", 10);
    costly.cost = 4;
    for i in 0..3 {
        log.push(format!(
            "cost 4 of 10, {i}: {}",
            decide(&store, std::slice::from_ref(&costly)).await
        ));
    }
    let mut too_costly = rule("too-costly", 3);
    too_costly.cost = 4;
    let d = store
        .decide_limits(std::slice::from_ref(&too_costly))
        .await
        .expect("decide_limits");
    log.push(format!(
        "cost above the limit: {}, retry is one window: {}",
        decision(&d),
        d.rules[0].retry_after_ms == window
    ));

    // Two rules decide together: the tighter denies and neither counts the denied request.
    let tight = rule("tight", 2);
    let loose = rule("loose", 10);
    let both = [tight, loose.clone()];
    for i in 0..3 {
        log.push(format!(
            "tight and loose {i}: {}",
            decide(&store, &both).await
        ));
    }
    log.push(format!(
        "loose alone: {}",
        decide(&store, std::slice::from_ref(&loose)).await
    ));

    // A shadow rule reports and counts, never denies.
    let mut shadow = rule("shadow", 1);
    shadow.shadow = true;
    let with_shadow = [shadow.clone(), rule("enforced", 10)];
    for i in 0..3 {
        log.push(format!(
            "shadow {i}: {}",
            decide(&store, &with_shadow).await
        ));
    }
    shadow.shadow = false;
    shadow.limit = 4;
    log.push(format!(
        "shadow's counter enforced at 4: {}",
        decide(&store, std::slice::from_ref(&shadow)).await
    ));

    // count_denied counts denied requests on its own rule only.
    let mut strict = rule("strict", 2);
    strict.count_denied = true;
    let lenient = rule("lenient", 100);
    let pair = [strict.clone(), lenient.clone()];
    for i in 0..4 {
        log.push(format!("count_denied {i}: {}", decide(&store, &pair).await));
    }
    strict.count_denied = false;
    strict.limit = 7;
    log.push(format!(
        "strict's counter at 7: {}",
        decide(&store, std::slice::from_ref(&strict)).await
    ));
    log.push(format!(
        "lenient alone: {}",
        decide(&store, std::slice::from_ref(&lenient)).await
    ));
    log
}

/// What both algorithms answer alike (no rule here sees a window roll over or a unit leave).
const COMMON_DECISIONS: &[&str] = &[
    "plain 0: 1 [1/2]",
    "plain 1: 1 [1/1]",
    "plain 2: 1 [1/0]",
    "plain 3: 0 [0/0 retry>0=true]",
    "plain 4: 0 [0/0 retry>0=true]",
    "cost 4 of 10, 0: 1 [1/6]",
    "cost 4 of 10, 1: 1 [1/2]",
    "cost 4 of 10, 2: 0 [0/0 retry>0=true]",
    "cost above the limit: 0 [0/0 retry>0=true], retry is one window: true",
    "tight and loose 0: 1 [1/1, 1/9]",
    "tight and loose 1: 1 [1/0, 1/8]",
    "tight and loose 2: 0 [0/0 retry>0=true, 1/8]",
    "loose alone: 1 [1/7]",
    "shadow 0: 1 [1/0, 1/9]",
    "shadow 1: 1 [0/0 retry>0=true, 1/8]",
    "shadow 2: 1 [0/0 retry>0=true, 1/7]",
    "shadow's counter enforced at 4: 1 [1/0]",
    "count_denied 0: 1 [1/1, 1/99]",
    "count_denied 1: 1 [1/0, 1/98]",
    "count_denied 2: 0 [0/0 retry>0=true, 1/98]",
    "count_denied 3: 0 [0/0 retry>0=true, 1/98]",
];

fn expected_decisions(strict_at_7: &str) -> Vec<String> {
    let mut expected: Vec<String> = COMMON_DECISIONS.iter().map(|s| s.to_string()).collect();
    expected.push(format!("strict's counter at 7: {strict_at_7}"));
    expected.push("lenient alone: 1 [1/97]".into());
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_window_decisions_are_the_same_on_both_backends() {
    let backends = Backends::start();
    let window = window_with_room();
    let (memory, redis) = backends
        .run(|store| limits_transcript(store, Algorithm::SlidingWindow, window))
        .await;
    // The strict rule counted all 4 requests: 7 - 4 - 1 left.
    let expected = expected_decisions("1 [1/2]");
    assert_eq!(memory, expected, "in-process store");
    assert_eq!(redis, expected, "redis store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_log_decisions_are_the_same_on_both_backends() {
    let backends = Backends::start();
    let (memory, redis) = backends
        .run(|store| limits_transcript(store, Algorithm::SlidingLog, 3_600_000))
        .await;
    // A count_denied log keeps only the newest `limit` (2) units: 7 - 2 - 1 left.
    let expected = expected_decisions("1 [1/4]");
    assert_eq!(memory, expected, "in-process store");
    assert_eq!(redis, expected, "redis store");
}

// === keys ===

/// Writes through every kind of operation; the keys it used.
async fn write_everything(store: Arc<Store>) -> Vec<String> {
    let ttl = Duration::from_secs(60);
    let value = store.key("kv", "tag", "rest");
    let set = store.key("set", "tag", "");
    let counter = store.key("rl", "route", "rule:w:ip:192.0.2.1");
    let log = store.key("rl", "route", "rule:l:ip:192.0.2.1");
    let marker = store.key("revoked-jti", "jti", "");
    store.set(&value, b"v", ttl).await.expect("set");
    store.set_add(&set, "m", ttl).await.expect("set_add");
    let window = check(&store, "unused", Algorithm::SlidingWindow, 5, 60_000);
    let checks = [
        RuleCheck {
            key: counter.clone(),
            ..window.clone()
        },
        RuleCheck {
            key: log.clone(),
            algorithm: Algorithm::SlidingLog,
            ..window
        },
    ];
    store.decide_limits(&checks).await.expect("decide_limits");
    store
        .mark_revoked(&marker, ttl, "jti:jti")
        .await
        .expect("mark_revoked");
    let mut keys = vec![value, set, counter, log, marker];
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_carries_the_configured_prefix_and_a_ttl() {
    let backends = Backends::start();
    let (memory, redis) = backends.run(write_everything).await;
    let expected = |prefix: &str| {
        let mut keys: Vec<String> = [
            "kv:{tag}:rest",
            "set:{tag}",
            "rl:{route}:rule:w:ip:192.0.2.1",
            "rl:{route}:rule:l:ip:192.0.2.1",
            "revoked-jti:{jti}",
        ]
        .iter()
        .map(|k| format!("{prefix}{k}"))
        .collect();
        keys.sort();
        keys
    };
    assert_eq!(memory, expected(MEMORY_PREFIX), "in-process store");
    assert_eq!(redis, expected(PREFIX), "redis store");
    // Redis holds exactly these keys, each with a TTL.
    let mut stored = backends.redis.all_keys().expect("SCAN");
    stored.sort();
    assert_eq!(stored, expected(PREFIX));
    for key in &stored {
        let ttl = backends.redis.pttl(key).expect("PTTL");
        assert!(ttl > 0, "{key} has no TTL: {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_say_what_they_are_and_answer_ping() {
    let backends = Backends::start();
    assert_eq!(backends.memory.kind(), "memory");
    assert_eq!(backends.on_redis.kind(), "redis");
    let (memory, redis) = backends
        .run(|store| async move { store.ping(Duration::from_secs(2)).await })
        .await;
    assert_eq!(memory, Ok(()));
    assert_eq!(redis, Ok(()));
    assert!(backends.memory.is_healthy());
    // The Redis health probe runs once a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !backends.on_redis.is_healthy() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis store never reported healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! Revocations that cannot be half-done, on a real `redis-server` shared by two real gateway
//! processes: a revocation is one store command (its deletes and its PUBLISH run inside one
//! script), the in-process and Redis stores give the same results, and a node whose
//! invalidation subscription went silent notices, resubscribes and drops what it may have
//! missed.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::auth::{KeyHasher, KeyStore, NewKey};
use portcullis::config::StoreConfig;
use portcullis::store::{EntryRevocation, Invalidation, Store};
use serde_json::{json, Value};
use support::config::{route, store, upstream, Preamble};
use support::gateway::GatewayBuilder;
use support::tcp_proxy::TcpProxy;
use support::{admin_json, assert_error, eventually, local_hits, timed, unix_now};
use support::{Client, Gateway, Redis, Response, Upstream};

/// Bearer token of the admin API (given to the gateway as `ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "admin-token-revocation-5d1e8c";
/// Server secret the keys are hashed under (given as `KEY_PEPPER`).
const PEPPER: &str = "pepper-revocation-tests-93ab";
/// `[store] prefix` of every test config.
const PREFIX: &str = "rv:";

/// A dead subscription must be noticed within the subscriber's PING interval (1 s) plus its
/// deadline (2 s); the rest is slack for a loaded test machine.
const DETECTION_BOUND: Duration = Duration::from_millis(4500);
/// Once the path is back, resubscribing (a connect, up to 2 s of backoff) and the reset of the
/// local tier must make the node refuse a key revoked meanwhile within this.
const RECOVERY_BOUND: Duration = Duration::from_secs(6);

/// A two-route config on the Redis at `store_url`: `/keyed` needs an API key, `/public` none.
fn template(svc: &Upstream, store_url: &str) -> String {
    [
        Preamble::new().admin_token_env("ADMIN_TOKEN").render(),
        store(store_url, PREFIX, "operation_timeout = \"250ms\""),
        "\n[auth.api_key]\nheader = \"x-api-key\"\nhash_secret_env = \"KEY_PEPPER\"\n".to_string(),
        upstream("svc", &[svc], ""),
        route("keyed", "svc", "path = \"/keyed\"\nauth = [\"api_key\"]"),
        route("public", "svc", "path = \"/public\""),
    ]
    .concat()
}

/// A gateway on `template` with the admin token and the hash secret in its environment.
fn node(template: &str) -> GatewayBuilder {
    Gateway::builder(template)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEY_PEPPER", PEPPER)
}

/// An admin API request with the bearer token (and a JSON body when given).
fn admin(client: &Client, gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> Response {
    let body = body.map(|b| b.to_string());
    admin_json(client, gw, ADMIN_TOKEN, method, path, body.as_deref())
}

/// Creates a key for `consumer` on `gw`; returns the key and its id.
fn create_key(client: &Client, gw: &Gateway, consumer: &str) -> (String, String) {
    let response = admin(
        client,
        gw,
        "POST",
        "/keys",
        Some(json!({"consumer": consumer})),
    );
    assert_eq!(response.status, 201, "POST /keys: {}", response.body);
    let json = response.json();
    let key = json["key"].as_str().unwrap_or_default().to_string();
    let id = json["record"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        key.starts_with("pc_") && !id.is_empty(),
        "{}",
        response.body
    );
    (key, id)
}

/// `DELETE /keys/{id}` on `gw`, which must answer 200.
fn revoke(client: &Client, gw: &Gateway, id: &str) {
    let response = admin(client, gw, "DELETE", &format!("/keys/{id}"), None);
    assert_eq!(response.status, 200, "DELETE /keys/{id}: {}", response.body);
}

/// `GET /keyed` on the proxy with the key in `x-api-key`.
fn with_key(client: &Client, gw: &Gateway, key: &str) -> Response {
    client.get_with(&gw.url("/keyed"), &[("x-api-key", key)])
}

/// Sends `key` to `gw` until it is served from the local tier (at most 10 requests).
fn warm(client: &Client, gw: &Gateway, key: &str) {
    let before = local_hits(gw);
    for _ in 0..10 {
        let response = with_key(client, gw, key);
        assert_eq!(response.status, 200, "warming: {}", response.body);
        if local_hits(gw) > before {
            return;
        }
    }
    panic!("the key never came from the local tier");
}

/// One command Redis executed, as `MONITOR` shows it.
#[derive(Debug)]
struct Seen {
    /// Run by a script (`[0 lua]`) rather than sent by a client.
    by_script: bool,
    /// The command name, lower case.
    name: String,
    /// The whole line, for failure messages.
    line: String,
}

/// A `MONITOR` connection: every command Redis executes from now on.
struct Monitor {
    reader: BufReader<TcpStream>,
}

impl Monitor {
    fn start(redis: &Redis) -> Monitor {
        let mut stream = TcpStream::connect(redis.addr()).expect("connect for MONITOR");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        stream
            .write_all(b"*1\r\n$7\r\nMONITOR\r\n")
            .expect("MONITOR");
        let mut reader = BufReader::new(stream);
        let mut ok = String::new();
        reader.read_line(&mut ok).expect("MONITOR reply");
        assert_eq!(ok.trim_end(), "+OK", "MONITOR answered {ok:?}");
        Monitor { reader }
    }

    /// The commands executed until `ECHO <marker>` (sent now on another connection) shows up;
    /// at most 100 000 lines, each within the read timeout.
    fn commands_until_marker(mut self, redis: &Redis, marker: &str) -> Vec<Seen> {
        redis.query(&["ECHO", marker]).expect("ECHO marker");
        let mut seen = Vec::new();
        for _ in 0..100_000 {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("MONITOR line");
            assert!(n > 0, "MONITOR connection closed");
            let line = line.trim_end().to_string();
            if line.contains(marker) {
                return seen;
            }
            // `<time> [<db> <client>] "<command>" "<arg>" ...`
            let Some((client, rest)) = line
                .split_once(" [")
                .and_then(|(_, after)| after.split_once("] "))
            else {
                continue;
            };
            let name = rest
                .split('"')
                .nth(1)
                .unwrap_or_default()
                .to_ascii_lowercase();
            seen.push(Seen {
                by_script: client.ends_with(" lua"),
                name,
                line: line.clone(),
            });
        }
        panic!("no ECHO marker in 100000 MONITOR lines");
    }
}

/// Commands that write or publish, or run a script. A revocation sent as separate commands
/// shows several of them; the background traffic of the nodes (PINGs, key reads, a
/// reconnection's CLIENT SETINFO) shows none.
const WRITES: [&str; 12] = [
    "evalsha", "eval", "del", "unlink", "srem", "sadd", "set", "setex", "expire", "pexpire",
    "publish", "multi",
];

/// The client-sent (not script-run) writes among `seen`.
fn client_writes(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter()
        .filter(|s| !s.by_script && WRITES.contains(&s.name.as_str()))
        .collect()
}

/// Names of the commands scripts ran.
fn script_commands(seen: &[Seen]) -> Vec<&str> {
    seen.iter()
        .filter(|s| s.by_script)
        .map(|s| s.name.as_str())
        .collect()
}

// === Tests ===

#[test]
fn key_revocation_is_one_script_call_whose_invalidation_reaches_the_other_node() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let config = template(&svc, &redis.url());
    let a = node(&config).start();
    let b = node(&config).start();
    let client = Client::new();

    // A first revocation loads the script into Redis, so the one measured below is a single
    // EVALSHA (the first one on a fresh Redis is EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA).
    let (_, warmup) = create_key(&client, &a, "warmup");
    revoke(&client, &a, &warmup);

    let (key, id) = create_key(&client, &a, "erin");
    let (other_key, _) = create_key(&client, &a, "erin");
    warm(&client, &b, &key);

    let monitor = Monitor::start(&redis);
    revoke(&client, &a, &id);
    let seen = monitor.commands_until_marker(&redis, "revocation-monitor-end");

    let writes = client_writes(&seen);
    assert_eq!(
        writes.len(),
        1,
        "a revocation must be one client command besides reads; saw {writes:#?}"
    );
    assert_eq!(writes[0].name, "evalsha", "{:#?}", writes[0]);
    assert!(
        writes[0]
            .line
            .contains(&format!("{PREFIX}apikey-id:{{{id}}}")),
        "the script call names the key's id pointer: {}",
        writes[0].line
    );
    let by_script = script_commands(&seen);
    for expected in ["del", "srem", "publish"] {
        assert!(
            by_script.contains(&expected),
            "the script did not run {expected}: {by_script:?}"
        );
    }

    // B had the key in its local tier; the script's PUBLISH must make it forget it.
    let (rejected, took) = timed(|| {
        eventually(Duration::from_secs(2), || {
            with_key(&client, &b, &key).status == 401
        })
    });
    assert!(rejected, "B still accepts the key 2 s after the revocation");
    println!("revocation A->B through the script: B refused the key within {took:?}");
    assert_error(&with_key(&client, &b, &key), 401, "invalid_api_key");
    // The consumer's other key is untouched, and listed alone.
    assert_eq!(with_key(&client, &b, &other_key).status, 200);
    let listed = admin(&client, &b, "GET", "/keys?consumer=erin", None);
    assert_eq!(
        listed.json()["keys"].as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.body
    );
    let keys = redis.all_keys().expect("SCAN");
    assert!(
        !keys.iter().any(|k| k.contains(&format!("{{{id}}}"))),
        "the id pointer of the revoked key is left: {keys:?}"
    );
    for k in &keys {
        assert!(k.starts_with(PREFIX), "{k:?} lacks the prefix");
        assert!(redis.pttl(k).expect("PTTL") > 0, "{k:?} has no TTL");
    }
}

#[test]
fn token_revocation_is_one_script_call_that_writes_the_marker_and_publishes() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let a = node(&template(&svc, &redis.url())).start();
    let client = Client::new();
    let revoke_token = |jti: &str| {
        let response = admin(
            &client,
            &a,
            "POST",
            "/revocations",
            Some(json!({"jti": jti, "exp": unix_now() + 600})),
        );
        assert_eq!(response.status, 201, "POST /revocations: {}", response.body);
    };
    revoke_token("warmup-token");

    // Another node's view: a subscriber on the invalidation channel.
    let mut subscriber = TcpStream::connect(redis.addr()).expect("connect");
    subscriber
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let channel = format!("{PREFIX}invalidations");
    subscriber
        .write_all(
            format!(
                "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{channel}\r\n",
                channel.len()
            )
            .as_bytes(),
        )
        .expect("SUBSCRIBE");
    let mut subscriber = BufReader::new(subscriber);
    // The subscribe confirmation: *3, $9, subscribe, $n, channel, :1.
    for _ in 0..6 {
        let mut line = String::new();
        subscriber.read_line(&mut line).expect("SUBSCRIBE reply");
    }

    let monitor = Monitor::start(&redis);
    revoke_token("token-77");
    let seen = monitor.commands_until_marker(&redis, "token-monitor-end");
    let writes = client_writes(&seen);
    assert_eq!(
        writes.len(),
        1,
        "a token revocation must be one client command; saw {writes:#?}"
    );
    assert_eq!(writes[0].name, "evalsha", "{:#?}", writes[0]);
    let by_script = script_commands(&seen);
    assert!(
        by_script.contains(&"set") && by_script.contains(&"publish"),
        "the script did not write the marker and publish: {by_script:?}"
    );

    let mut message = Vec::new();
    for _ in 0..7 {
        let mut line = String::new();
        subscriber
            .read_line(&mut line)
            .expect("invalidation message");
        message.push(line.trim_end().to_string());
    }
    assert!(
        message.contains(&"jti:token-77".to_string()),
        "the subscriber got {message:?}"
    );
    let marker = format!("{PREFIX}revoked-jti:{{token-77}}");
    let pttl = redis.pttl(&marker).expect("PTTL");
    assert!(
        pttl > 590_000 && pttl <= 600_000,
        "{marker} has PTTL {pttl}, not the token's remaining life"
    );
}

#[test]
fn revocation_missed_by_a_silent_subscription_is_applied_after_the_path_recovers() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let path = TcpProxy::start(&redis.addr());
    // A talks to Redis directly; B through the path that will go silent.
    let a = node(&template(&svc, &redis.url())).start();
    let b = node(&template(&svc, &path.redis_url())).start();
    let client = Client::new();

    let (key, id) = create_key(&client, &a, "frank");
    warm(&client, &b, &key);

    // B's connections are all open before the path goes silent (`server.threads + 2`: its
    // thread's own, the shared one, the subscriber), so a new one can only be a redial.
    assert!(
        eventually(Duration::from_secs(5), || path.connections_accepted() >= 3),
        "B opened {} connections, not 3",
        path.connections_accepted()
    );
    std::thread::sleep(Duration::from_millis(300));
    let connections_before = path.connections_accepted();
    assert_eq!(connections_before, 3, "B keeps opening connections");
    path.set_black_hole(true);
    let silenced = Instant::now();
    // The invalidation is published while B's subscription hears nothing.
    revoke(&client, &a, &id);
    assert_error(&with_key(&client, &a, &key), 401, "invalid_api_key");

    // B's subscriber notices the silence (its PING goes unanswered) and dials again.
    let detected = eventually(DETECTION_BOUND, || {
        path.connections_accepted() > connections_before
    });
    let detection = silenced.elapsed();
    assert!(
        detected,
        "B did not give up on its silent subscription within {DETECTION_BOUND:?}"
    );
    println!("silent subscription: B redialled {detection:?} after the path went silent");

    path.set_black_hole(false);
    let restored = Instant::now();
    let rejected = eventually(RECOVERY_BOUND, || with_key(&client, &b, &key).status == 401);
    let recovery = restored.elapsed();
    assert!(
        rejected,
        "B still accepts a key revoked while its subscription was silent, {RECOVERY_BOUND:?} \
         after the path came back:\n{}",
        b.stderr()
    );
    println!(
        "silent subscription: B refused the revoked key {recovery:?} after the path came back"
    );
    assert_error(&with_key(&client, &b, &key), 401, "invalid_api_key");
    assert!(
        b.stderr().contains("invalidation subscription"),
        "B did not log the lost subscription:\n{}",
        b.stderr()
    );
    // And B works normally again: a new key authenticates there.
    let (fresh, _) = create_key(&client, &a, "frank");
    assert!(
        eventually(Duration::from_secs(2), || with_key(&client, &b, &fresh)
            .status
            == 200),
        "B does not serve a new key after recovery"
    );
}

// === The store contract: in-process and Redis revoke alike ===

/// What a revocation scenario observed, step by step.
async fn revocation_transcript(store: Arc<Store>) -> Vec<String> {
    let mut rx = store.invalidations();
    wait_until_subscribed(&store, &mut rx).await;
    let keys = KeyStore::new(
        store.clone(),
        KeyHasher::new(None),
        Duration::from_secs(3600),
    );
    let new = |consumer: &str| NewKey {
        consumer: consumer.into(),
        ..NewKey::default()
    };
    let (one, secret_one) = keys.create(new("gina")).await.expect("create");
    let (two, _) = keys.create(new("gina")).await.expect("create");
    let (only, _) = keys.create(new("hugo")).await.expect("create");
    let hash_one = hex::encode(keys.hasher().hash(&secret_one));
    let mut log = Vec::new();

    let revoked = keys.revoke(&one.id).await.expect("revoke");
    log.push(format!("revoke one: {revoked}"));
    log.push(format!(
        "apikey:<hash one> published: {}",
        published(&mut rx, &format!("apikey:{hash_one}")).await
    ));
    let found = keys
        .lookup(&keys.hasher().hash(&secret_one))
        .await
        .expect("lookup");
    log.push(format!("lookup one: {}", found.is_some()));
    let listed: Vec<bool> = keys
        .list("gina")
        .await
        .expect("list")
        .iter()
        .map(|r| r.id == two.id)
        .collect();
    log.push(format!("gina lists only two: {listed:?}"));
    log.push(format!(
        "revoke one again: {}",
        keys.revoke(&one.id).await.expect("revoke")
    ));
    log.push(format!(
        "revoke hugo's only key: {}",
        keys.revoke(&only.id).await.expect("revoke")
    ));
    let hugo_set = store.key("consumer-keys", "hugo", "");
    log.push(format!(
        "hugo's set exists: {}",
        store.exists(&hugo_set).await.expect("exists")
    ));
    let pointer_one = store.key("apikey-id", &one.id, "");
    log.push(format!(
        "pointer one exists: {}",
        store.exists(&pointer_one).await.expect("exists")
    ));

    // A revocation whose pointer names another entry changes nothing.
    let pointer_two = store.key("apikey-id", &two.id, "");
    let not_two = EntryRevocation {
        pointer: &pointer_two,
        pointer_value: "not-the-hash",
        entry: &pointer_two,
        index: None,
        invalidation: "apikey:none",
    };
    log.push(format!(
        "mismatched pointer revokes: {}",
        store.revoke_entry(&not_two).await.expect("revoke_entry")
    ));
    log.push(format!(
        "pointer two exists: {}",
        store.exists(&pointer_two).await.expect("exists")
    ));

    let marker = store.key("revoked-jti", "t-1", "");
    store
        .mark_revoked(&marker, Duration::from_secs(60), "jti:t-1")
        .await
        .expect("mark_revoked");
    log.push(format!(
        "marker exists: {}",
        store.exists(&marker).await.expect("exists")
    ));
    log.push(format!(
        "jti:t-1 published: {}",
        published(&mut rx, "jti:t-1").await
    ));
    log
}

/// Publishes probes until one comes back, so nothing published later can be missed (the Redis
/// subscriber connects in the background); at most 50 tries of 200 ms.
async fn wait_until_subscribed(
    store: &Store,
    rx: &mut tokio::sync::broadcast::Receiver<Invalidation>,
) {
    for _ in 0..50 {
        store.publish_invalidation("probe").await.expect("publish");
        let deadline = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                got = rx.recv() => {
                    if got == Ok(Invalidation::Key("probe".into())) {
                        return;
                    }
                }
                _ = &mut deadline => break,
            }
        }
    }
    panic!("the store's invalidation subscription never delivered a probe");
}

/// Whether `Invalidation::Key(expected)` arrives within 5 s (other messages are skipped: key
/// creation publishes too).
async fn published(
    rx: &mut tokio::sync::broadcast::Receiver<Invalidation>,
    expected: &str,
) -> bool {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(Invalidation::Key(k)) if k == expected => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_and_redis_stores_revoke_with_the_same_results() {
    let redis = Redis::start();
    let config: StoreConfig = toml::from_str(&format!(
        "url = \"{}\"\nprefix = \"contract:\"\noperation_timeout = \"2s\"",
        redis.url()
    ))
    .expect("store config");
    let registry = prometheus::Registry::new();
    let on_redis = Store::from_config(Some(&config), &registry).expect("redis store");
    let in_process =
        Store::from_config(None, &prometheus::Registry::new()).expect("in-process store");

    let expected = [
        "revoke one: true",
        "apikey:<hash one> published: true",
        "lookup one: false",
        "gina lists only two: [true]",
        "revoke one again: false",
        "revoke hugo's only key: true",
        "hugo's set exists: false",
        "pointer one exists: false",
        "mismatched pointer revokes: false",
        "pointer two exists: true",
        "marker exists: true",
        "jti:t-1 published: true",
    ];
    let memory = revocation_transcript(in_process).await;
    assert_eq!(memory, expected, "in-process store");
    let shared = revocation_transcript(on_redis).await;
    assert_eq!(shared, expected, "redis store");
}

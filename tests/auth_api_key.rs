//! API keys end to end, on a real `redis-server` shared by real gateway processes: keys created
//! or revoked through one node's admin API or the `keys` CLI take effect on every node, expire,
//! carry scopes, keep working from the local tier when Redis is gone, and never reach a log.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::config::{route, store, upstream, Preamble};
use support::gateway::{run_to_exit, GatewayBuilder};
use support::raw;
use support::{admin_json, auth_decisions as decisions, local_hits, timed, unix_now};
use support::{assert_error, eventually, metric, Client, Gateway, Redis, Response, Upstream};

/// Bearer token of the admin API (given to the gateway as `ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "admin-token-7f3c9e1d5b2a4c68";
/// Server secret the keys are hashed under (given as `KEY_PEPPER`).
const PEPPER: &str = "pepper-for-key-hashes-4e8a9b1c";
/// `[store] prefix` of every test config.
const PREFIX: &str = "test:";
/// How fast a revocation on one node must be seen by another.
const PROPAGATION_TARGET: Duration = Duration::from_millis(100);

/// `[server]`, `[admin]` with a token, and `[log]`; `${ACCESS_LOG}` is "off" or "stdout".
/// The access log is asked for the credential headers on purpose: redaction must still hold.
fn base() -> String {
    Preamble::new()
        .admin_token_env("ADMIN_TOKEN")
        .access_log("${ACCESS_LOG}")
        .log_extra(r#"log_headers = ["user-agent", "x-api-key", "authorization"]"#)
        .render()
}

/// A config with `[store]` on `redis` (in-process when `None`), `[auth.api_key]` plus
/// `api_key_extra` lines, and these routes to `svc`:
///
/// - `/keyed`: needs an API key;
/// - `/scoped`: needs a key with scope `orders:write`;
/// - `/forward`: needs a key and forwards it upstream;
/// - `/lenient`: needs a key, but lets requests through anonymously when the store is down;
/// - `/public`: no authentication.
fn template(svc: &Upstream, redis: Option<&Redis>, api_key_extra: &str) -> String {
    let store = match redis {
        Some(r) => store(&r.url(), PREFIX, ""),
        None => String::new(),
    };
    let auth = format!(
        "\n[auth.api_key]\nheader = \"x-api-key\"\nquery_param = \"api_key\"\n\
         hash_secret_env = \"KEY_PEPPER\"\n{api_key_extra}\n"
    );
    [
        base(),
        store,
        auth,
        upstream("svc", &[svc], ""),
        route("keyed", "svc", "path = \"/keyed\"\nauth = [\"api_key\"]"),
        route(
            "scoped",
            "svc",
            "path = \"/scoped\"\nauth = [\"api_key\"]\nrequired_scopes = [\"orders:write\"]",
        ),
        route(
            "forward",
            "svc",
            "path = \"/forward\"\nauth = [\"api_key\"]\nforward_credentials = true",
        ),
        route(
            "lenient",
            "svc",
            "path = \"/lenient\"\nauth = [\"api_key\"]\nauth_on_store_error = \"allow\"",
        ),
        route("public", "svc", "path = \"/public\""),
    ]
    .concat()
}

/// A gateway on `template` with the admin token and the hash secret in its environment.
fn node(template: &str, access_log: &str) -> GatewayBuilder {
    Gateway::builder(template)
        .var("ACCESS_LOG", access_log)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("KEY_PEPPER", PEPPER)
}

/// An admin API request with the bearer token (and a JSON body when given).
fn admin(client: &Client, gw: &Gateway, method: &str, path: &str, body: Option<Value>) -> Response {
    let body = body.map(|b| b.to_string());
    admin_json(client, gw, ADMIN_TOKEN, method, path, body.as_deref())
}

/// Creates a key with `POST /keys` on `gw`; returns the key and its record.
fn create_key(client: &Client, gw: &Gateway, body: Value) -> (String, Value) {
    let response = admin(client, gw, "POST", "/keys", Some(body));
    assert_eq!(response.status, 201, "POST /keys: {}", response.body);
    let json = response.json();
    let key = json["key"]
        .as_str()
        .unwrap_or_else(|| panic!("POST /keys answered no key: {}", response.body))
        .to_string();
    assert!(key.starts_with("pc_"), "generated key {key:?}");
    (key, json["record"].clone())
}

/// `record["id"]` as text.
fn id_of(record: &Value) -> String {
    record["id"]
        .as_str()
        .unwrap_or_else(|| panic!("key record without an id: {record}"))
        .to_string()
}

/// `GET path` on the proxy with the key in `x-api-key`.
fn with_key(client: &Client, gw: &Gateway, path: &str, key: &str) -> Response {
    client.get_with(&gw.url(path), &[("x-api-key", key)])
}

/// `"store": {"kind", "state"}` of `GET /readyz`.
fn store_status(client: &Client, gw: &Gateway) -> (String, String) {
    let response = client.get(&gw.admin_url("/readyz"));
    let json = response.json();
    let field = |name: &str| json["store"][name].as_str().unwrap_or_default().to_string();
    (field("kind"), field("state"))
}

// === Tests ===

#[test]
fn key_created_on_one_node_authenticates_on_another() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let config = template(&svc, Some(&redis), "");
    let a = node(&config, "off").start();
    let b = node(&config, "off").start();
    let client = Client::new();
    assert_eq!(
        store_status(&client, &b),
        ("redis".to_string(), "ok".to_string())
    );

    let (key, record) = create_key(
        &client,
        &a,
        json!({"consumer": "alice", "plan": "gold", "scopes": ["orders:read"],
               "labels": {"team": "web"}}),
    );
    assert_eq!(record["consumer"], "alice", "{record}");
    assert_eq!(record["plan"], "gold", "{record}");
    assert_eq!(record["scopes"], json!(["orders:read"]), "{record}");
    assert_eq!(record["labels"], json!({"team": "web"}), "{record}");
    let lifetime =
        record["expires_at"].as_u64().unwrap_or(0) - record["created_at"].as_u64().unwrap_or(0);
    assert_eq!(lifetime, 365 * 86_400, "default key_ttl; record {record}");

    // A client-sent X-Consumer-Id must be replaced by the authenticated one.
    let response = client.get_with(
        &b.url("/keyed/orders?page=2"),
        &[("x-api-key", &key), ("x-consumer-id", "mallory")],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let echo = response.echo();
    assert_eq!(echo.header("x-consumer-id"), Some("alice"));
    assert_eq!(echo.header_count("x-consumer-id"), 1);
    assert_eq!(
        echo.header("x-api-key"),
        None,
        "the key reached the upstream"
    );
    assert_eq!(echo.path(), "/keyed/orders?page=2");
    assert_eq!(with_key(&client, &a, "/keyed", &key).status, 200);

    // Public routes never pass a client's identity header on either.
    let public = client.get_with(&b.url("/public"), &[("x-consumer-id", "mallory")]);
    assert_eq!(public.echo().header("x-consumer-id"), None);

    let missing = client.get(&b.url("/keyed"));
    assert_error(&missing, 401, "credentials_missing");
    assert_eq!(missing.header("www-authenticate"), Some("ApiKey"));
    let unknown = with_key(
        &client,
        &b,
        "/keyed",
        "pc_thisKeyWasNeverIssuedByAnyNode0000000000000",
    );
    assert_error(&unknown, 401, "invalid_api_key");
    assert_eq!(unknown.header("www-authenticate"), Some("ApiKey"));

    // B lists the key A created, without the key itself.
    let listed = admin(&client, &b, "GET", "/keys?consumer=alice", None);
    assert_eq!(listed.status, 200, "{}", listed.body);
    let keys = listed.json()["keys"].clone();
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{}", listed.body);
    assert_eq!(keys[0]["id"], record["id"]);
    assert!(!listed.body.contains(&key), "GET /keys shows the key");

    // Key endpoints need the token.
    let anonymous = client.post(
        &a.admin_url("/keys"),
        &[("content-type", "application/json")],
        br#"{"consumer":"eve"}"#,
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let wrong = client.get_with(
        &a.admin_url("/keys?consumer=alice"),
        &[("authorization", "Bearer not-the-token")],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);

    // Decisions are recorded in the request path, store latency by operation.
    assert!(
        eventually(Duration::from_secs(5), || {
            decisions(&b, "keyed", "api_key", "ok") >= 1.0
                && decisions(&b, "keyed", "api_key", "invalid") >= 1.0
                && decisions(&b, "keyed", "none", "missing") >= 1.0
        }),
        "\n{}",
        b.metrics()
    );
    let text = b.metrics();
    assert!(
        metric(
            &text,
            "portcullis_store_operation_duration_seconds_count",
            &[("operation", "get")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "no store get latency recorded\n{text}"
    );
}

#[test]
fn revoked_key_is_rejected_on_every_node_within_100ms() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let config = template(&svc, Some(&redis), "");
    let a = node(&config, "off").start();
    let b = node(&config, "off").start();
    let client = Client::new();
    // A keep-alive connection of its own, so the polling loop measures the gateway, not connects.
    let poller = Client::with_timeout(Duration::from_secs(2));

    // Control: B really answers from its local tier. Remove a warm key's record behind the
    // gateways' backs (no invalidation published) and B must go on accepting it, so the 401s
    // measured below come from the invalidation, not from B re-reading Redis.
    let (key, record) = create_key(&client, &a, json!({"consumer": "control"}));
    assert_eq!(with_key(&poller, &b, "/keyed", &key).status, 200);
    let id_key = format!("{PREFIX}apikey-id:{{{}}}", id_of(&record));
    let hash = redis
        .query(&["GET", &id_key])
        .expect("GET")
        .text()
        .unwrap_or_else(|| panic!("no {id_key} in Redis"));
    let record_key = format!("{PREFIX}apikey:{{{hash}}}");
    assert_eq!(
        redis.query(&["DEL", &record_key]).expect("DEL").integer(),
        Some(1)
    );
    let response = with_key(&poller, &b, "/keyed", &key);
    assert_eq!(
        response.status, 200,
        "B does not cache keys: {}",
        response.body
    );
    assert_error(
        &with_key(&client, &a, "/keyed", &key),
        401,
        "invalid_api_key",
    );

    let mut measured = Vec::new();
    for round in 0..5 {
        let (key, record) = create_key(&client, &a, json!({"consumer": format!("bob{round}")}));
        let id = id_of(&record);

        // Warm B's local tier: after the first request the key must come from there.
        let hits_before = local_hits(&b);
        for _ in 0..4 {
            let response = with_key(&poller, &b, "/keyed", &key);
            assert_eq!(response.status, 200, "{}", response.body);
        }
        let hits = local_hits(&b) - hits_before;
        assert!(
            hits >= 3.0,
            "B served the key from its local tier {hits} times of 4"
        );

        let sent = Instant::now();
        let revoked = admin(&client, &a, "DELETE", &format!("/keys/{id}"), None);
        let answered = Instant::now();
        assert_eq!(revoked.status, 200, "DELETE /keys/{id}: {}", revoked.body);

        let mut polls = 0;
        let rejected_at = loop {
            let response = with_key(&poller, &b, "/keyed", &key);
            polls += 1;
            if response.status != 200 {
                let at = Instant::now();
                assert_error(&response, 401, "invalid_api_key");
                break at;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(5),
                "B still accepts the key 5 s after A revoked it"
            );
        };
        let propagation = rejected_at - answered;
        println!(
            "revocation A->B, round {round}: first 401 on B {propagation:?} after A's DELETE \
             response ({:?} after it was sent, {polls} polls)",
            rejected_at - sent
        );
        measured.push(propagation);

        assert_error(
            &with_key(&client, &a, "/keyed", &key),
            401,
            "invalid_api_key",
        );
        let again = admin(&client, &a, "DELETE", &format!("/keys/{id}"), None);
        assert_eq!(again.status, 404, "second DELETE: {}", again.body);
    }
    let worst = measured.iter().max().copied().unwrap_or_default();
    println!("revocation propagation: worst {worst:?} of {measured:?}");
    assert!(
        worst < PROPAGATION_TARGET,
        "revocation took {worst:?} to reach B (target {PROPAGATION_TARGET:?}); all: {measured:?}"
    );
}

#[test]
fn expired_key_is_rejected_and_its_records_leave_redis() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, Some(&redis), ""), "off").start();
    let client = Client::new();

    // `expires_at` is whole unix seconds (now truncated + ttl), so a "1s" key created late in a
    // second is refused at the next second boundary. Start early in a second so the check that
    // the fresh key works does not race that rounding.
    let ms_in_second = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_millis())
    };
    while ms_in_second(SystemTime::now()) > 100 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (key, record) = create_key(&client, &gw, json!({"consumer": "ttl-user", "ttl": "1s"}));
    let lifetime =
        record["expires_at"].as_u64().unwrap_or(0) - record["created_at"].as_u64().unwrap_or(0);
    assert_eq!(lifetime, 1, "record {record}");
    for _ in 0..3 {
        let response = with_key(&client, &gw, "/keyed", &key);
        assert_eq!(response.status, 200, "fresh 1s key: {}", response.body);
    }

    std::thread::sleep(Duration::from_millis(1500));
    let response = with_key(&client, &gw, "/keyed", &key);
    assert_eq!(response.status, 401, "expired key: {}", response.body);
    let code = response.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        code == "expired_api_key" || code == "invalid_api_key",
        "expired key answered {code:?}: {}",
        response.body
    );
    assert_error(&response, 401, &code);

    // Every record of the key had the key's TTL.
    let left = redis.all_keys().expect("SCAN");
    assert!(left.is_empty(), "records outlived the 1s key: {left:?}");
}

#[test]
fn cli_creates_lists_and_revokes_keys_in_the_shared_store() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, Some(&redis), ""), "off").start();
    let client = Client::new();
    let config = gw.config_path().to_str().expect("utf-8 path").to_string();
    let env = [("KEY_PEPPER", PEPPER), ("ADMIN_TOKEN", ADMIN_TOKEN)];
    let cli = |args: &[&str]| {
        let mut all = vec!["keys"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-c", &config]);
        run_to_exit(&all, &env, Duration::from_secs(15))
    };

    let created = cli(&[
        "create",
        "--consumer",
        "carol",
        "--plan",
        "silver",
        "--scope",
        "orders:read",
        "--scope",
        "orders:write",
        "--label",
        "team=data",
        "--ttl",
        "30d",
    ]);
    assert_eq!(created.code(), Some(0), "keys create: {}", created.stderr);
    let out: Value = serde_json::from_str(created.stdout.trim())
        .unwrap_or_else(|e| panic!("keys create printed no JSON ({e}): {:?}", created.stdout));
    let key = out["key"].as_str().unwrap_or_default().to_string();
    let record = out["record"].clone();
    let id = id_of(&record);
    assert!(key.starts_with("pc_"), "{out}");
    assert_eq!(record["consumer"], "carol");
    assert_eq!(record["plan"], "silver");
    assert_eq!(record["scopes"], json!(["orders:read", "orders:write"]));
    assert_eq!(record["labels"], json!({"team": "data"}));
    let lifetime =
        record["expires_at"].as_u64().unwrap_or(0) - record["created_at"].as_u64().unwrap_or(0);
    assert_eq!(lifetime, 30 * 86_400, "{record}");

    let response = with_key(&client, &gw, "/scoped/x", &key);
    assert_eq!(
        response.status, 200,
        "CLI key on the gateway: {}",
        response.body
    );
    assert_eq!(response.echo().header("x-consumer-id"), Some("carol"));

    let listed = cli(&["list", "--consumer", "carol"]);
    assert_eq!(listed.code(), Some(0), "keys list: {}", listed.stderr);
    let list: Value = serde_json::from_str(listed.stdout.trim())
        .unwrap_or_else(|e| panic!("keys list printed no JSON ({e}): {:?}", listed.stdout));
    assert_eq!(list["keys"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["keys"][0]["id"], id.as_str());
    assert!(!listed.stdout.contains(&key), "keys list shows the key");
    // The gateway's admin API sees the same store.
    let via_admin = admin(&client, &gw, "GET", "/keys?consumer=carol", None);
    assert_eq!(
        via_admin.json()["keys"][0]["id"],
        id.as_str(),
        "{}",
        via_admin.body
    );

    let revoked = cli(&["revoke", &id]);
    assert_eq!(revoked.code(), Some(0), "keys revoke: {}", revoked.stderr);
    // The gateway had the key in its local tier; the CLI's invalidation must reach it.
    let (rejected, took) = timed(|| {
        eventually(Duration::from_secs(2), || {
            with_key(&client, &gw, "/scoped/x", &key).status == 401
        })
    });
    assert!(rejected, "key still accepted 2 s after `keys revoke`");
    println!("revocation CLI->gateway: rejected within {took:?}");
    assert_error(
        &with_key(&client, &gw, "/scoped/x", &key),
        401,
        "invalid_api_key",
    );

    let unknown = cli(&["revoke", &id]);
    assert_eq!(
        unknown.code(),
        Some(1),
        "revoking an unknown id: {}",
        unknown.stdout
    );
    assert!(unknown.stderr.contains(&id), "stderr: {}", unknown.stderr);
    let listed = cli(&["list", "--consumer", "carol"]);
    assert_eq!(listed.code(), Some(0), "keys list: {}", listed.stderr);
    assert!(
        listed.stdout.contains(r#""keys":[]"#),
        "after revoke: {}",
        listed.stdout
    );

    // Without the hash secret the CLI would store keys no gateway can match: it must refuse.
    let no_pepper = run_to_exit(
        &["keys", "create", "--consumer", "carol", "-c", &config],
        &[("ADMIN_TOKEN", ADMIN_TOKEN)],
        Duration::from_secs(15),
    );
    assert_eq!(
        no_pepper.code(),
        Some(1),
        "create without KEY_PEPPER: {}",
        no_pepper.stdout
    );
    assert!(
        no_pepper.stderr.contains("KEY_PEPPER"),
        "stderr: {}",
        no_pepper.stderr
    );
}

#[test]
fn cli_refuses_a_config_without_a_store() {
    let svc = Upstream::spawn("svc");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("memory.toml");
    let text = support::gateway::fill(
        &template(&svc, None, ""),
        &[
            ("PROXY_ADDR".into(), "127.0.0.1:1".into()),
            ("ADMIN_ADDR".into(), "127.0.0.1:2".into()),
            ("ACCESS_LOG".into(), "off".into()),
        ],
    );
    std::fs::write(&path, text).expect("write config");
    let finished = run_to_exit(
        &[
            "keys",
            "create",
            "--consumer",
            "carol",
            "-c",
            path.to_str().expect("utf-8"),
        ],
        &[("KEY_PEPPER", PEPPER), ("ADMIN_TOKEN", ADMIN_TOKEN)],
        Duration::from_secs(15),
    );
    assert_eq!(finished.code(), Some(1), "stdout: {}", finished.stdout);
    assert!(
        finished.stdout.trim().is_empty(),
        "printed a key: {}",
        finished.stdout
    );
    assert!(
        finished.stderr.contains("[store]"),
        "stderr: {}",
        finished.stderr
    );
}

#[test]
fn query_param_key_is_stripped_and_forward_credentials_keeps_it() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, Some(&redis), ""), "off").start();
    let client = Client::new();
    let (key, _) = create_key(&client, &gw, json!({"consumer": "dave"}));

    let response = client.get(&gw.url(&format!("/keyed/items?a=1&api_key={key}&b=2")));
    assert_eq!(response.status, 200, "{}", response.body);
    let echo = response.echo();
    assert_eq!(echo.path(), "/keyed/items?a=1&b=2");
    assert_eq!(echo.header("x-consumer-id"), Some("dave"));
    assert_eq!(echo.header("x-api-key"), None);

    let response = client.get(&gw.url(&format!("/keyed/items?api_key={key}")));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.echo().path(), "/keyed/items");

    // Both places at once: the header decides and both are stripped.
    let response = client.get_with(
        &gw.url(&format!("/keyed/items?api_key={key}")),
        &[("x-api-key", &key)],
    );
    let echo = response.echo();
    assert_eq!(echo.path(), "/keyed/items");
    assert_eq!(echo.header("x-api-key"), None);

    let response = with_key(&client, &gw, "/forward/items", &key);
    assert_eq!(response.status, 200, "{}", response.body);
    let echo = response.echo();
    assert_eq!(echo.header("x-api-key"), Some(key.as_str()));
    assert_eq!(echo.header("x-consumer-id"), Some("dave"));

    let response = client.get(&gw.url(&format!("/forward/items?api_key={key}")));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.echo().path(),
        format!("/forward/items?api_key={key}")
    );

    // An unknown key in the query is refused like one in the header.
    let response = client.get(&gw.url("/keyed/items?api_key=pc_notAKeyAnyoneWasGiven"));
    assert_error(&response, 401, "invalid_api_key");
}

#[test]
fn key_without_required_scope_gets_403() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, Some(&redis), ""), "off").start();
    let client = Client::new();
    let (reader, _) = create_key(
        &client,
        &gw,
        json!({"consumer": "erin", "scopes": ["orders:read"]}),
    );
    let (bare, _) = create_key(&client, &gw, json!({"consumer": "gina"}));
    let (writer, _) = create_key(
        &client,
        &gw,
        json!({"consumer": "frank", "scopes": ["orders:read", "orders:write"]}),
    );

    // Twice each: from the store, then from the local tier.
    for _ in 0..2 {
        assert_error(
            &with_key(&client, &gw, "/scoped", &reader),
            403,
            "insufficient_scope",
        );
        assert_error(
            &with_key(&client, &gw, "/scoped", &bare),
            403,
            "insufficient_scope",
        );
        let response = with_key(&client, &gw, "/scoped", &writer);
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.echo().header("x-consumer-id"), Some("frank"));
    }
    // Routes without required scopes take any valid key.
    assert_eq!(with_key(&client, &gw, "/keyed", &reader).status, 200);
    assert_eq!(with_key(&client, &gw, "/keyed", &bare).status, 200);

    assert!(
        eventually(Duration::from_secs(5), || {
            decisions(&gw, "scoped", "api_key", "insufficient_scope") == 4.0
                && decisions(&gw, "scoped", "api_key", "ok") == 2.0
        }),
        "\n{}",
        gw.metrics()
    );
}

/// A gateway on a fresh Redis with one key it has served (so it is in the local tier) and one
/// it has never seen; Redis is then killed and the gateway has noticed.
struct Outage {
    gw: Gateway,
    /// Bind it (not `..`) when destructuring, or the upstream stops at once.
    _svc: Upstream,
    client: Client,
    cached: String,
    uncached: String,
}

fn outage() -> Outage {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, Some(&redis), ""), "off").start();
    let client = Client::new();
    let (cached, _) = create_key(&client, &gw, json!({"consumer": "henry"}));
    // Created while Redis was up, but never presented to this node before the outage.
    let (uncached, _) = create_key(&client, &gw, json!({"consumer": "ivy"}));
    let hits_before = local_hits(&gw);
    for _ in 0..3 {
        assert_eq!(with_key(&client, &gw, "/keyed", &cached).status, 200);
    }
    assert!(
        local_hits(&gw) - hits_before >= 2.0,
        "the key never came from the local tier"
    );

    drop(redis);
    let noticed = eventually(Duration::from_secs(5), || {
        store_status(&client, &gw).1 == "unreachable"
    });
    assert!(
        noticed,
        "readyz still reports the store ok 5 s after Redis died"
    );
    Outage {
        gw,
        _svc: svc,
        client,
        cached,
        uncached,
    }
}

const NEVER_ISSUED: &str = "pc_neverIssuedKeyDuringTheOutage000000000000000";

#[test]
fn store_outage_answers_unknown_keys_503_fast_and_fail_open_routes_pass() {
    let Outage {
        gw,
        _svc: _upstream,
        client,
        uncached,
        ..
    } = outage();

    for round in 0..3 {
        for key in [uncached.as_str(), NEVER_ISSUED] {
            let (response, took) = timed(|| with_key(&client, &gw, "/keyed", key));
            println!(
                "store down, round {round}: uncached key {} in {took:?}",
                response.status
            );
            assert_error(&response, 503, "store_unavailable");
            // The deadline is 20 ms; the rest is ordinary latency.
            assert!(
                took < Duration::from_millis(500),
                "store_unavailable took {took:?}"
            );
        }
    }

    // Without a credential there is nothing to look up: still 401.
    assert_error(&client.get(&gw.url("/keyed")), 401, "credentials_missing");

    // A fail-open route lets unknown keys through, anonymously and without the key.
    let (response, took) = timed(|| {
        client.get_with(
            &gw.url("/lenient/x"),
            &[("x-api-key", NEVER_ISSUED), ("x-consumer-id", "mallory")],
        )
    });
    assert_eq!(response.status, 200, "fail-open route: {}", response.body);
    assert!(took < Duration::from_millis(500), "fail-open took {took:?}");
    let echo = response.echo();
    assert_eq!(
        echo.header("x-consumer-id"),
        None,
        "anonymous request got an identity"
    );
    assert_eq!(echo.header("x-api-key"), None);

    assert!(
        eventually(Duration::from_secs(5), || {
            decisions(&gw, "keyed", "api_key", "store_error") >= 6.0
                && decisions(&gw, "lenient", "api_key", "store_error") >= 1.0
        }),
        "\n{}",
        gw.metrics()
    );
    let text = gw.metrics();
    assert!(
        metric(&text, "portcullis_store_errors_total", &[]).unwrap_or(0.0) >= 1.0,
        "no store errors counted\n{text}"
    );
}

#[test]
fn store_outage_keeps_locally_cached_keys_working() {
    let Outage {
        gw,
        _svc: _upstream,
        client,
        cached,
        ..
    } = outage();

    for round in 0..3 {
        let (response, took) = timed(|| with_key(&client, &gw, "/keyed", &cached));
        println!(
            "store down, round {round}: cached key {} in {took:?}",
            response.status
        );
        assert_eq!(
            response.status, 200,
            "a key in the local tier must survive a store outage: {}",
            response.body
        );
        assert_eq!(response.echo().header("x-consumer-id"), Some("henry"));
        assert!(
            took < Duration::from_millis(500),
            "cached key took {took:?}"
        );
    }
    // On a fail-open route the cached key still carries its identity.
    let response = with_key(&client, &gw, "/lenient/x", &cached);
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.echo().header("x-consumer-id"), Some("henry"));
}

#[test]
fn in_process_store_serves_config_and_admin_keys() {
    const STATIC_KEY: &str = "static-key-value-for-batch-job-93b1";
    let svc = Upstream::spawn("svc");
    let extra = r#"keys = [{ id = "static-1", consumer = "batch-job", key_env = "STATIC_KEY", plan = "gold", scopes = ["orders:write"] }]"#;
    let gw = node(&template(&svc, None, extra), "off")
        .env("STATIC_KEY", STATIC_KEY)
        .start();
    let client = Client::new();
    assert_eq!(
        store_status(&client, &gw),
        ("memory".to_string(), "ok".to_string())
    );

    let response = with_key(&client, &gw, "/scoped/jobs", STATIC_KEY);
    assert_eq!(
        response.status, 200,
        "config-declared key: {}",
        response.body
    );
    assert_eq!(response.echo().header("x-consumer-id"), Some("batch-job"));

    let (key, record) = create_key(&client, &gw, json!({"consumer": "jack"}));
    let response = with_key(&client, &gw, "/keyed", &key);
    assert_eq!(response.status, 200, "admin-created key: {}", response.body);
    assert_eq!(response.echo().header("x-consumer-id"), Some("jack"));
    let listed = admin(&client, &gw, "GET", "/keys?consumer=jack", None);
    assert_eq!(
        listed.json()["keys"][0]["id"],
        record["id"],
        "{}",
        listed.body
    );

    // A config-declared key is not revocable by id (the next reload would install it again):
    // 409, and it keeps working. Remove it from the config and reload instead.
    let refused = admin(&client, &gw, "DELETE", "/keys/static-1", None);
    assert_eq!(
        refused.status, 409,
        "DELETE /keys/static-1: {}",
        refused.body
    );
    assert_eq!(refused.json()["error"], "config_key", "{}", refused.body);
    assert_eq!(with_key(&client, &gw, "/keyed", STATIC_KEY).status, 200);

    let (id, secret) = (id_of(&record), key.as_str());
    assert_eq!(with_key(&client, &gw, "/keyed", secret).status, 200);
    let revoked = admin(&client, &gw, "DELETE", &format!("/keys/{id}"), None);
    assert_eq!(revoked.status, 200, "DELETE /keys/{id}: {}", revoked.body);
    let (rejected, took) = timed(|| {
        eventually(Duration::from_secs(2), || {
            with_key(&client, &gw, "/keyed", secret).status == 401
        })
    });
    assert!(rejected, "key {id} still accepted 2 s after DELETE");
    println!("in-process revocation of {id}: rejected within {took:?}");
    assert_error(
        &with_key(&client, &gw, "/keyed", secret),
        401,
        "invalid_api_key",
    );
    let unknown = admin(&client, &gw, "DELETE", "/keys/0123456789abcdef", None);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

#[test]
fn keys_and_admin_token_never_reach_logs() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, Some(&redis), ""), "stdout").start();
    let client = Client::new();
    let (key, record) = create_key(&client, &gw, json!({"consumer": "kate"}));
    let (other, _) = create_key(&client, &gw, json!({"consumer": "liam", "ttl": "1h"}));
    let wrong_header = "pc_wrongKeyInTheHeader4d2f8a9c1b7e";
    let wrong_query = "wrong-key-in-the-query-7c3e9d";
    let wrong_token = "wrong-admin-token-5a1b";
    let bearer = format!("Bearer {ADMIN_TOKEN}");

    let requests: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/keyed/a".into(), vec![("x-api-key", key.as_str())]),
        (format!("/keyed/b?x=1&api_key={key}"), vec![]),
        ("/forward/c".into(), vec![("x-api-key", other.as_str())]),
        (format!("/forward/d?api_key={other}&y=2"), vec![]),
        ("/scoped/e".into(), vec![("x-api-key", key.as_str())]),
        ("/keyed/f".into(), vec![("x-api-key", wrong_header)]),
        (format!("/keyed/g?api_key={wrong_query}"), vec![]),
        (format!("/public/h?api_key={key}"), vec![]),
        ("/public/i".into(), vec![("authorization", bearer.as_str())]),
    ];
    for (path, headers) in &requests {
        let response = client.get_with(&gw.url(path), headers);
        assert!(
            response.status < 500,
            "{path}: {} {}",
            response.status,
            response.body
        );
    }
    let denied = client.get_with(
        &gw.admin_url("/keys?consumer=kate"),
        &[("authorization", &format!("Bearer {wrong_token}"))],
    );
    assert_eq!(denied.status, 401);
    let revoked = admin(
        &client,
        &gw,
        "DELETE",
        &format!("/keys/{}", id_of(&record)),
        None,
    );
    assert_eq!(revoked.status, 200);
    assert_eq!(with_key(&client, &gw, "/keyed/j", &key).status, 401);

    // Access-log lines are written after the response; wait for all of them.
    let expected = requests.len() + 1;
    assert!(
        eventually(Duration::from_secs(5), || gw.stdout_lines().len()
            >= expected),
        "{} access-log lines, want {expected}:\n{}",
        gw.stdout_lines().len(),
        gw.stdout()
    );
    let stdout = gw.stdout();
    let stderr = gw.stderr();
    for (what, secret) in [
        ("created key", key.as_str()),
        ("second created key", other.as_str()),
        ("wrong header key", wrong_header),
        ("wrong query key", wrong_query),
        ("admin token", ADMIN_TOKEN),
        ("wrong admin token", wrong_token),
        ("hash secret", PEPPER),
    ] {
        assert!(
            !stdout.contains(secret),
            "{what} in the access log:\n{stdout}"
        );
        assert!(!stderr.contains(secret), "{what} on stderr:\n{stderr}");
    }
    assert!(stdout.contains("[REDACTED]"), "nothing redacted?\n{stdout}");
    for line in gw.stdout_lines() {
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|e| panic!("access-log line is not JSON ({e}): {line}"));
    }

    // The CLI prints the key it creates on stdout, once, and nowhere else.
    let config = gw.config_path().to_str().expect("utf-8").to_string();
    let created = run_to_exit(
        &["keys", "create", "--consumer", "kate", "-c", &config],
        &[("KEY_PEPPER", PEPPER), ("ADMIN_TOKEN", ADMIN_TOKEN)],
        Duration::from_secs(15),
    );
    assert_eq!(created.code(), Some(0), "{}", created.stderr);
    let cli_key = serde_json::from_str::<Value>(created.stdout.trim()).expect("JSON")["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        created.stdout.matches(&cli_key).count(),
        1,
        "{}",
        created.stdout
    );
    assert!(
        !created.stderr.contains(&cli_key),
        "CLI stderr: {}",
        created.stderr
    );
    assert!(
        !gw.stderr().contains(&cli_key),
        "gateway stderr has the CLI's key"
    );
}

#[test]
fn every_redis_key_has_the_prefix_and_a_ttl() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let config = template(&svc, Some(&redis), "");
    let a = node(&config, "off").start();
    let b = node(&config, "off").start();
    let client = Client::new();

    let (k1, r1) = create_key(
        &client,
        &a,
        json!({"consumer": "mia", "labels": {"env": "test"}}),
    );
    let (k2, _) = create_key(&client, &b, json!({"consumer": "mia", "ttl": "1h"}));
    let (_, r3) = create_key(&client, &a, json!({"consumer": "noah", "ttl": "10m"}));
    let (k4, _) = create_key(&client, &a, json!({"consumer": "olivia", "ttl": "2h"}));
    let cli = run_to_exit(
        &[
            "keys",
            "create",
            "--consumer",
            "mia",
            "--ttl",
            "7d",
            "-c",
            a.config_path().to_str().expect("utf-8"),
        ],
        &[("KEY_PEPPER", PEPPER), ("ADMIN_TOKEN", ADMIN_TOKEN)],
        Duration::from_secs(15),
    );
    assert_eq!(cli.code(), Some(0), "{}", cli.stderr);
    for (gw, key) in [(&a, &k1), (&b, &k1), (&b, &k2), (&a, &k4)] {
        assert_eq!(with_key(&client, gw, "/keyed", key).status, 200);
    }
    assert_eq!(
        with_key(&client, &b, "/keyed", "pc_unknownKey0000").status,
        401
    );
    // Revoke one key of a consumer with several, and a consumer's only key.
    for (gw, record) in [(&b, &r1), (&a, &r3)] {
        let r = admin(
            &client,
            gw,
            "DELETE",
            &format!("/keys/{}", id_of(record)),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let jti = admin(
        &client,
        &a,
        "POST",
        "/revocations",
        Some(json!({"jti": "token-42", "exp": unix_now() + 600})),
    );
    assert_eq!(jti.status, 201, "POST /revocations: {}", jti.body);

    let keys = redis.all_keys().expect("SCAN");
    assert!(!keys.is_empty(), "nothing in Redis");
    println!("redis keys after the run: {keys:#?}");
    for kind in ["apikey:", "apikey-id:", "consumer-keys:", "revoked-jti:"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("{PREFIX}{kind}"))),
            "no {PREFIX}{kind}* key in {keys:?}"
        );
    }
    for key in &keys {
        assert!(
            key.starts_with(PREFIX),
            "key {key:?} lacks the prefix {PREFIX:?}"
        );
        let pttl = redis.pttl(key).expect("PTTL");
        assert!(pttl > 0, "key {key:?} has PTTL {pttl} (no expiry)");
    }
    // Three keys are live (k2, k4, the CLI's): one record and one id entry each.
    let records = keys
        .iter()
        .filter(|k| k.starts_with(&format!("{PREFIX}apikey:")))
        .count();
    assert_eq!(records, 3, "{keys:?}");
    // noah's only key was revoked: his set must not linger.
    assert!(
        !keys.iter().any(|k| k.contains("consumer-keys:{noah}")),
        "{keys:?}"
    );
}

#[test]
fn malformed_keys_get_401_never_5xx() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, Some(&redis), ""), "off").start();
    let client = Client::new();
    let (good, _) = create_key(&client, &gw, json!({"consumer": "pat"}));

    let huge = "k".repeat(10 * 1024);
    assert_error(
        &with_key(&client, &gw, "/keyed", &huge),
        401,
        "invalid_api_key",
    );
    let huge_query = client.get(&gw.url(&format!("/keyed?api_key={huge}")));
    assert_error(&huge_query, 401, "invalid_api_key");
    let encoded = client.get(&gw.url("/keyed?api_key=%FF%FE%00pc_"));
    assert_error(&encoded, 401, "invalid_api_key");

    let raw_requests: [(&str, &[u8]); 4] = [
        (
            "non-ASCII bytes",
            b"x-api-key: \xff\xfe\xe2\x82\xac pc_\xc3\x28\r\n",
        ),
        ("empty value", b"x-api-key:\r\n"),
        ("whitespace value", b"x-api-key:    \r\n"),
        (
            "key header twice, first empty",
            b"x-api-key: \r\nx-api-key: pc_x\r\n",
        ),
    ];
    for (what, header) in raw_requests {
        let mut request = b"GET /keyed HTTP/1.1\r\nHost: gw\r\n".to_vec();
        request.extend_from_slice(header);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        let response = raw::request(gw.proxy_addr(), &request).into_response();
        assert_eq!(response.status, 401, "{what}: {}", response.body);
        let code = response.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            code == "invalid_api_key" || code == "credentials_missing",
            "{what}: error {code:?}"
        );
        assert_error(&response, 401, &code);
    }

    // Raw non-ASCII in the request target may be refused by the HTTP parser, but never as 5xx.
    let response = raw::request(
        gw.proxy_addr(),
        b"GET /keyed?api_key=\xff\xfe HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    );
    assert!(
        (400..500).contains(&response.status),
        "raw bytes in the query: {} {}",
        response.status,
        response.text()
    );

    // None of that hurt the gateway or the valid key.
    assert_eq!(with_key(&client, &gw, "/keyed", &good).status, 200);
}

#[test]
fn stalled_redis_never_holds_a_request_past_the_deadline() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, Some(&redis), ""), "off").start();
    let client = Client::new();
    let (cached, _) = create_key(&client, &gw, json!({"consumer": "jack"}));
    let (fresh, _) = create_key(&client, &gw, json!({"consumer": "kate"}));
    assert_eq!(with_key(&client, &gw, "/keyed", &cached).status, 200);

    // Frozen, not dead: the TCP connection stays up and simply never answers.
    redis.set_frozen(true);
    for round in 0..3 {
        let (response, took) = timed(|| with_key(&client, &gw, "/keyed", &fresh));
        println!(
            "redis frozen, round {round}: unknown key {} in {took:?}",
            response.status
        );
        assert_error(&response, 503, "store_unavailable");
        assert!(
            took < Duration::from_millis(300),
            "a stalled store held the request {took:?}"
        );
        let (response, took) = timed(|| with_key(&client, &gw, "/keyed", &cached));
        assert_eq!(
            response.status, 200,
            "cached key while frozen: {}",
            response.body
        );
        assert!(
            took < Duration::from_millis(300),
            "cached key took {took:?}"
        );
    }
    redis.set_frozen(false);
    let recovered = eventually(Duration::from_secs(5), || {
        with_key(&client, &gw, "/keyed", &fresh).status == 200
    });
    assert!(recovered, "the key never worked again after Redis thawed");
}

//! `[rate_limit.failed_auth]` blocks the attacker, not the network it shares: end to end on the
//! real gateway (and a real `redis-server` where lookups matter), once a client network is over
//! the limit, credentials this node already holds as valid in its local tier still pass (with
//! their scopes checked), while every credential that would need a Redis lookup or a signature
//! check, valid or not, gets 429 and never reaches Redis.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::config::{route, store, upstream, Preamble};
use support::jwks::sign;
use support::redis::command_calls;
use support::{admin_json, assert_error, metric, unix_now};
use support::{Client, Gateway, Redis, Response, Upstream};

const ADMIN_TOKEN: &str = "admin-token-failed-auth-3c8e5a1f7d2b";
const PREFIX: &str = "failedauth:";
/// The HS256 secret of the static key `hs1` (given as `JWT_SECRET`).
const JWT_SECRET: &str = "hs256-secret-for-the-failed-auth-tests-9a4d2e7c";
/// Attempts a flood makes at most before the limit must have blocked it.
const FLOOD_BOUND: usize = 50;

/// `[server]`, `[admin]` with a token, `[log]` off.
fn base() -> String {
    Preamble::new().admin_token_env("ADMIN_TOKEN").render()
}

fn start(template: &str) -> Gateway {
    Gateway::builder(template)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("JWT_SECRET", JWT_SECRET)
        .start()
}

/// Creates a key with `POST /keys`; returns the key.
fn create_key(client: &Client, gw: &Gateway, body: &Value) -> String {
    let body = body.to_string();
    let r = admin_json(client, gw, ADMIN_TOKEN, "POST", "/keys", Some(&body));
    assert_eq!(r.status, 201, "POST /keys: {}", r.body);
    r.json()["key"]
        .as_str()
        .unwrap_or_else(|| panic!("POST /keys answered no key: {}", r.body))
        .to_string()
}

fn blocked_total(gw: &Gateway) -> f64 {
    metric(
        &gw.metrics(),
        "portcullis_auth_failed_attempts_blocked_total",
        &[],
    )
    .unwrap_or(0.0)
}

/// Sends `bogus(i)` until the gateway answers 429 (at most `FLOOD_BOUND` times); every
/// answer before is the 401 `code`. Returns how many were sent.
fn flood_until_blocked(mut send: impl FnMut(usize) -> Response, code: &str) -> usize {
    for i in 0..FLOOD_BOUND {
        let r = send(i);
        if r.status == 429 {
            assert_error(&r, 429, "too_many_failed_attempts");
            return i + 1;
        }
        assert_error(&r, 401, code);
    }
    panic!("{FLOOD_BOUND} rejected credentials and the network is still not blocked");
}

fn random_key(i: usize) -> String {
    format!("pc_bogus_{i:04}_{:016x}", fastrand::u64(..))
}

#[test]
fn a_cached_valid_key_still_passes_while_its_network_is_blocked_and_redis_sees_no_lookup() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let template = [
        base(),
        store(&redis.url(), PREFIX, ""),
        "\n[auth.api_key]\nheader = \"x-api-key\"\n".to_string(),
        "\n[rate_limit.failed_auth]\nlimit = 10\nwindow = \"1h\"\n".to_string(),
        upstream("svc", &[&svc], ""),
        route("keyed", "svc", "path = \"/k\"\nauth = [\"api_key\"]"),
        route(
            "scoped",
            "svc",
            "path = \"/s\"\nauth = [\"api_key\"]\nrequired_scopes = [\"orders:write\"]",
        ),
    ]
    .concat();
    let gw = start(&template);
    let client = Client::new();
    let good = create_key(
        &client,
        &gw,
        &json!({"consumer": "alice", "scopes": ["orders:read"]}),
    );
    // Valid, but never used on this node: only the store could say so.
    let fresh = create_key(&client, &gw, &json!({"consumer": "bob"}));
    let get = |path: &str, key: &str| client.get_with(&gw.url(path), &[("x-api-key", key)]);

    // Used once, so this node's local tier holds it as valid (lacking `orders:write`).
    assert_eq!(get("/k", &good).status, 200);
    assert_error(&get("/s", &good), 403, "insufficient_scope");

    let sent = flood_until_blocked(|i| get("/k", &random_key(i)), "invalid_api_key");
    assert_eq!(
        sent, 11,
        "10 rejected keys are allowed, the 11th is refused"
    );
    let lookups = command_calls(&redis, "get");

    let r = get("/k", &good);
    assert_eq!(
        r.status, 200,
        "the cached valid key is locked out: {}",
        r.body
    );
    assert_eq!(r.echo().header("x-consumer-id"), Some("alice"));
    // Scopes still apply to a key admitted from the local tier.
    assert_error(&get("/s", &good), 403, "insufficient_scope");
    assert_error(
        &get("/k", &random_key(999)),
        429,
        "too_many_failed_attempts",
    );
    let r = get("/k", &fresh);
    assert_error(&r, 429, "too_many_failed_attempts");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    assert_eq!(
        command_calls(&redis, "get"),
        lookups,
        "a request from the blocked network was looked up in Redis"
    );
    // Only refusals count as blocked: the flood's last attempt, the random key, the fresh one.
    assert_eq!(blocked_total(&gw), 3.0, "\n{}", gw.metrics());
}

/// An HS256 token under the static key `hs1` with a unique `jti`-free claim set.
fn token(sub: &str, scope: &str) -> String {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let claims = json!({
        "sub": sub,
        "scope": scope,
        "exp": unix_now() + 600,
        "nonce": NONCE.fetch_add(1, Ordering::Relaxed),
    });
    sign(
        Algorithm::HS256,
        "hs1",
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
}

#[test]
fn a_cached_valid_token_still_passes_while_its_network_is_blocked_and_new_ones_are_not_verified() {
    let svc = Upstream::spawn("svc");
    let template = [
        base(),
        "\n[auth.jwt]\n[[auth.jwt.keys]]\nkid = \"hs1\"\nalgorithm = \"HS256\"\n\
         secret_env = \"JWT_SECRET\"\n"
            .to_string(),
        "\n[rate_limit.failed_auth]\nlimit = 5\nwindow = \"1h\"\n".to_string(),
        upstream("svc", &[&svc], ""),
        route("jwt", "svc", "path = \"/j\"\nauth = [\"jwt\"]"),
        route(
            "scoped",
            "svc",
            "path = \"/s\"\nauth = [\"jwt\"]\nrequired_scopes = [\"orders:write\"]",
        ),
    ]
    .concat();
    let gw = start(&template);
    let client = Client::new();
    let bearer = |t: &str| format!("Bearer {t}");
    let get = |path: &str, t: &str| {
        client.get_with(&gw.url(path), &[("authorization", bearer(t).as_str())])
    };
    let good = token("alice", "orders:read");
    let writer = token("carol", "orders:read orders:write");
    assert_eq!(get("/j", &good).status, 200);
    assert_eq!(get("/s", &writer).status, 200);

    let bogus = |i: usize| format!("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4{i}In0.c2ln");
    let sent = flood_until_blocked(|i| get("/j", &bogus(i)), "invalid_token");
    assert_eq!(sent, 6, "5 rejected tokens are allowed, the 6th is refused");

    let r = get("/j", &good);
    assert_eq!(
        r.status, 200,
        "the cached valid token is locked out: {}",
        r.body
    );
    assert_eq!(r.echo().header("x-consumer-id"), Some("alice"));
    assert_eq!(get("/s", &writer).status, 200);
    assert_error(&get("/s", &good), 403, "insufficient_scope");
    // A valid token never seen here would need a signature check: refused like a bogus one.
    assert_error(
        &get("/j", &token("dave", "orders:read")),
        429,
        "too_many_failed_attempts",
    );
    assert_error(&get("/j", &bogus(999)), 429, "too_many_failed_attempts");
}

//! Credential rotation on reload, on real gateway processes: a config-declared API key that is
//! removed or whose file changes stops at once; a rotated HMAC secret or PEM file takes effect
//! even when the TOML text is unchanged; reloads never add JWKS refresh loops; a new
//! `jwks_url` keeps serving the last good keys until its own set arrives; a JWKS that never
//! loaded answers 503; and JWT decisions stay cached across refetches that change nothing.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::config::{route, upstream, Preamble};
use support::gateway::GatewayBuilder;
use support::jwks::{jwks_document, sign, JwksServer, RsaKey};
use support::{assert_error, dead_addr, eventually, local_hits, unix_now, wait_fetches};
use support::{Client, Gateway, Response, Upstream};

/// Bearer token of the admin API (given to the gateway as `ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "rotation-admin-token-7f3a91c2";

/// `[server]`, `[admin]` with a token, `[log]` with the access log off.
fn base() -> String {
    Preamble::new().admin_token_env("ADMIN_TOKEN").render()
}

/// `base()`, `auth` (the `[auth.*]` sections) and the routes `/keyed` (API key), `/jwt` (JWT)
/// and `/public` to `svc`; `extra_route` adds one more public route (to vary a config).
fn config(svc: &Upstream, auth: &str, extra_route: bool) -> String {
    let mut parts = vec![base(), auth.to_string(), upstream("svc", &[svc], "")];
    if auth.contains("[auth.api_key]") {
        parts.push(route(
            "keyed",
            "svc",
            "path = \"/keyed\"\nauth = [\"api_key\"]",
        ));
    }
    if auth.contains("[auth.jwt]") {
        parts.push(route("jwt", "svc", "path = \"/jwt\"\nauth = [\"jwt\"]"));
    }
    parts.push(route("public", "svc", "path = \"/public\""));
    if extra_route {
        parts.push(route("extra", "svc", "path = \"/extra\""));
    }
    parts.concat()
}

/// A gateway on `template` with the admin token in its environment and `${KEYS}` = `keys`.
fn node(template: &str, keys: &Path) -> GatewayBuilder {
    Gateway::builder(template)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .var("KEYS", keys.to_str().expect("utf-8 temp dir"))
}

/// A directory for key files, removed at the end of the test.
fn key_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temp dir for key files")
}

/// `POST /reload`; asserts it was applied.
fn reload(gw: &Gateway) {
    let response = Client::new().post(
        &gw.admin_url("/reload"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        b"",
    );
    assert_eq!(response.status, 200, "POST /reload: {}", response.body);
}

fn with_key(client: &Client, gw: &Gateway, key: &str) -> Response {
    client.get_with(&gw.url("/keyed"), &[("x-api-key", key)])
}

fn bearer(client: &Client, gw: &Gateway, token: &str) -> Response {
    client.get_with(
        &gw.url("/jwt"),
        &[("authorization", &format!("Bearer {token}"))],
    )
}

/// Ten minutes of validity for `sub`, with a nonce so that no two tokens are equal.
fn claims(sub: &str) -> Value {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let now = unix_now();
    json!({
        "sub": sub,
        "iat": now,
        "exp": now + 600,
        "nonce": NONCE.fetch_add(1, Ordering::Relaxed),
    })
}

fn hs_token(secret: &str, sub: &str) -> String {
    sign(
        Algorithm::HS256,
        "hs1",
        &claims(sub),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn rs_token(key: &RsaKey, kid: &str, sub: &str) -> String {
    sign(Algorithm::RS256, kid, &claims(sub), &key.encoding())
}

/// A `kid` no provider publishes.
fn unknown_kid(i: usize) -> String {
    format!("unknown-{i}-{:08x}", fastrand::u32(..))
}

/// Asserts `response` is 200 from the upstream with `X-Consumer-Id: consumer`.
fn assert_consumer(response: &Response, consumer: &str, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.body);
    assert_eq!(
        response.echo().header("x-consumer-id"),
        Some(consumer),
        "{what}"
    );
}

// === API keys ===

const ALPHA_KEY: &str = "alpha-static-key-value-0a1b2c3d4e5f";
const BETA_KEY: &str = "beta-static-key-value-6a7b8c9d0e1f";
const GAMMA_KEY: &str = "gamma-static-key-value-2a3b4c5d6e7f";

fn static_keys(ids: &[&str]) -> String {
    let entries: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                "{{ id = \"{id}\", consumer = \"{id}-job\", key_env = \"{}_KEY\" }}",
                id.to_uppercase()
            )
        })
        .collect();
    format!(
        "\n[auth.api_key]\nheader = \"x-api-key\"\nkeys = [{}]\n",
        entries.join(", ")
    )
}

#[test]
fn config_key_removed_on_reload_is_rejected_at_once_and_an_added_key_works_at_once() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let gw = node(
        &config(&svc, &static_keys(&["alpha", "beta"]), false),
        dir.path(),
    )
    .env("ALPHA_KEY", ALPHA_KEY)
    .env("BETA_KEY", BETA_KEY)
    .env("GAMMA_KEY", GAMMA_KEY)
    .start();
    let client = Client::new();
    assert_consumer(&with_key(&client, &gw, ALPHA_KEY), "alpha-job", "alpha");
    let hits = local_hits(&gw);
    assert_consumer(&with_key(&client, &gw, ALPHA_KEY), "alpha-job", "alpha");
    assert_eq!(local_hits(&gw), hits + 1.0, "alpha's decision is cached");
    assert_error(&with_key(&client, &gw, GAMMA_KEY), 401, "invalid_api_key");

    gw.rewrite_config(&config(&svc, &static_keys(&["beta", "gamma"]), false));
    reload(&gw);
    assert_error(&with_key(&client, &gw, ALPHA_KEY), 401, "invalid_api_key");
    assert_consumer(&with_key(&client, &gw, BETA_KEY), "beta-job", "kept key");
    assert_consumer(&with_key(&client, &gw, GAMMA_KEY), "gamma-job", "added key");
    let listed = client.get_with(
        &gw.admin_url("/keys?consumer=alpha-job"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    );
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        listed.json()["keys"],
        json!([]),
        "the removed key is still listed"
    );
}

#[test]
fn config_key_file_rotated_with_unchanged_toml_stops_the_old_value_on_reload() {
    const OLD: &str = "delta-key-before-rotation-55aa01";
    const NEW: &str = "delta-key-after-rotation-66bb02";
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let file = dir.path().join("delta.key");
    std::fs::write(&file, OLD).expect("write key file");
    let auth = "\n[auth.api_key]\nheader = \"x-api-key\"\n\
                keys = [{ id = \"delta\", consumer = \"delta-job\", key_file = \"${KEYS}/delta.key\" }]\n";
    let gw = node(&config(&svc, auth, false), dir.path()).start();
    let client = Client::new();
    for _ in 0..2 {
        assert_consumer(&with_key(&client, &gw, OLD), "delta-job", "old value");
    }
    assert_error(&with_key(&client, &gw, NEW), 401, "invalid_api_key");

    // The TOML stays byte for byte the same; only the file's content changes.
    std::fs::write(&file, NEW).expect("rotate key file");
    reload(&gw);
    assert_error(&with_key(&client, &gw, OLD), 401, "invalid_api_key");
    assert_consumer(&with_key(&client, &gw, NEW), "delta-job", "new value");
}

// === Configured JWT keys ===

const OLD_SECRET: &str = "hs256-secret-before-rotation-1f2e3d4c5b6a";
const NEW_SECRET: &str = "hs256-secret-after-rotation-a6b5c4d3e2f1";

#[test]
fn hmac_secret_file_rotated_with_unchanged_toml_takes_effect_on_reload() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let file = dir.path().join("hs.secret");
    std::fs::write(&file, OLD_SECRET).expect("write secret file");
    let auth = "\n[auth.jwt]\n\n[[auth.jwt.keys]]\nkid = \"hs1\"\nalgorithm = \"HS256\"\n\
                secret_file = \"${KEYS}/hs.secret\"\n";
    let gw = node(&config(&svc, auth, false), dir.path()).start();
    let client = Client::new();
    let old = hs_token(OLD_SECRET, "olga");
    for _ in 0..2 {
        assert_consumer(&bearer(&client, &gw, &old), "olga", "old secret");
    }
    let new = hs_token(NEW_SECRET, "nina");
    assert_error(&bearer(&client, &gw, &new), 401, "invalid_token");

    std::fs::write(&file, NEW_SECRET).expect("rotate secret file");
    reload(&gw);
    // `old` was cached: the cached decision must not outlive the secret.
    assert_error(&bearer(&client, &gw, &old), 401, "invalid_token");
    assert_error(
        &bearer(&client, &gw, &hs_token(OLD_SECRET, "olga")),
        401,
        "invalid_token",
    );
    assert_consumer(&bearer(&client, &gw, &new), "nina", "new secret");
}

#[test]
fn pem_key_file_rotated_with_unchanged_toml_takes_effect_on_reload() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let (before, after) = (RsaKey::generate(), RsaKey::generate());
    before.write_public(dir.path(), "rs1.pem");
    let auth = "\n[auth.jwt]\n\n[[auth.jwt.keys]]\nkid = \"rs1\"\nalgorithm = \"RS256\"\n\
                public_key_file = \"${KEYS}/rs1.pem\"\n";
    let gw = node(&config(&svc, auth, false), dir.path()).start();
    let client = Client::new();
    let old = rs_token(&before, "rs1", "olga");
    for _ in 0..2 {
        assert_consumer(&bearer(&client, &gw, &old), "olga", "old PEM");
    }

    after.write_public(dir.path(), "rs1.pem");
    reload(&gw);
    assert_error(&bearer(&client, &gw, &old), 401, "invalid_token");
    assert_consumer(
        &bearer(&client, &gw, &rs_token(&after, "rs1", "nina")),
        "nina",
        "new PEM",
    );
}

// === JWKS ===

fn jwks_auth(url: &str, min_refetch: &str) -> String {
    format!(
        "\n[auth.jwt]\njwks_url = \"{url}\"\njwks_min_refetch_interval = \"{min_refetch}\"\n\
         jwks_timeout = \"1s\"\n"
    )
}

#[test]
fn reloads_that_keep_auth_jwt_start_no_further_jwks_refresh_loop() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let k1 = RsaKey::generate();
    // max-age=300: a running loop stays quiet, so every extra request is an extra loop.
    let provider = JwksServer::start(jwks_document(&[k1.jwk("k1")]));
    let auth = jwks_auth(&provider.url(), "30s");
    let gw = node(&config(&svc, &auth, false), dir.path()).start();
    wait_fetches(&provider, 1);
    let client = Client::new();
    assert_consumer(
        &bearer(&client, &gw, &rs_token(&k1, "k1", "amy")),
        "amy",
        "k1",
    );

    let reloads = 6;
    for i in 0..reloads {
        // Alternate an identical file and one with another route: [auth.jwt] stays the same.
        gw.rewrite_config(&config(&svc, &auth, i % 2 == 0));
        reload(&gw);
        // The health-check tick (100 ms) is where a new runtime's refresh loop would start.
        thread::sleep(Duration::from_millis(250));
    }
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        provider.requests(),
        1,
        "{reloads} reloads with an unchanged [auth.jwt] fetched the JWKS again"
    );
    assert_consumer(
        &bearer(&client, &gw, &rs_token(&k1, "k1", "amy")),
        "amy",
        "k1 after the reloads",
    );
}

#[test]
fn new_jwks_url_serves_the_last_good_keys_until_its_set_loads_and_the_old_loop_stops() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let (k1, k2) = (RsaKey::generate(), RsaKey::generate());
    let old = JwksServer::start(jwks_document(&[k1.jwk("k1")]));
    // The old provider's set expires every second, so its loop would keep fetching.
    old.set_cache_control(Some("max-age=1"));
    let new = JwksServer::start(jwks_document(&[k2.jwk("k2")]));
    new.set_status(503);
    let gw = node(
        &config(&svc, &jwks_auth(&old.url(), "1s"), false),
        dir.path(),
    )
    .start();
    wait_fetches(&old, 2);
    let client = Client::new();
    assert_consumer(
        &bearer(&client, &gw, &rs_token(&k1, "k1", "amy")),
        "amy",
        "k1",
    );

    gw.rewrite_config(&config(&svc, &jwks_auth(&new.url(), "1s"), false));
    reload(&gw);
    // Fresh tokens, so nothing comes from the decision cache.
    for i in 0..3 {
        assert_consumer(
            &bearer(&client, &gw, &rs_token(&k1, "k1", "amy")),
            "amy",
            &format!("k1 right after the reload, new provider failing, round {i}"),
        );
    }
    wait_fetches(&new, 1);
    thread::sleep(Duration::from_millis(200));
    let old_fetches = old.requests();

    new.set_document(jwks_document(&[k2.jwk("k2")]));
    let k2_token = rs_token(&k2, "k2", "bea");
    assert!(
        eventually(Duration::from_secs(5), || bearer(&client, &gw, &k2_token)
            .status
            == 200),
        "the new provider's key k2 was never accepted"
    );
    assert_consumer(&bearer(&client, &gw, &k2_token), "bea", "k2");
    // The new provider's set replaced the old one.
    let response = bearer(&client, &gw, &rs_token(&k1, "k1", "amy"));
    assert_error(&response, 401, "invalid_token");

    thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        old.requests(),
        old_fetches,
        "the replaced client's refresh loop kept fetching the old jwks_url"
    );
}

#[test]
fn jwks_down_from_the_start_answers_503_jwks_unavailable_not_401() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let k1 = RsaKey::generate();
    let url = format!("http://{}/jwks.json", dead_addr(1));
    let auth = format!(
        "{}\n[[auth.jwt.keys]]\nkid = \"hs1\"\nalgorithm = \"HS256\"\nsecret_env = \"HS_SECRET\"\n",
        jwks_auth(&url, "1s")
    );
    let gw = node(&config(&svc, &auth, false), dir.path())
        .env("HS_SECRET", OLD_SECRET)
        .start();
    let client = Client::new();
    for i in 0..3 {
        let response = bearer(&client, &gw, &rs_token(&k1, "k1", "amy"));
        assert_error(&response, 503, "jwks_unavailable");
        assert_eq!(response.header("retry-after"), Some("1"), "round {i}");
        assert!(
            response.header("www-authenticate").is_none(),
            "round {i}: a 503 is no challenge"
        );
        thread::sleep(Duration::from_millis(600));
    }
    // Configured keys do not depend on the provider, and bad tokens are still the client's fault.
    assert_consumer(
        &bearer(&client, &gw, &hs_token(OLD_SECRET, "hana")),
        "hana",
        "configured key",
    );
    assert_error(&bearer(&client, &gw, "not.a.token"), 401, "invalid_token");
}

#[test]
fn unknown_kid_and_failed_refetches_keep_cached_jwt_decisions_and_are_rate_limited() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let k1 = RsaKey::generate();
    let provider = JwksServer::start(jwks_document(&[k1.jwk("k1")]));
    let interval = Duration::from_secs(1);
    let gw = node(
        &config(&svc, &jwks_auth(&provider.url(), "1s"), false),
        dir.path(),
    )
    .start();
    wait_fetches(&provider, 1);
    let client = Client::new();
    let token = rs_token(&k1, "k1", "amy");
    assert_consumer(&bearer(&client, &gw, &token), "amy", "first use");
    let is_local_hit = |what: &str| {
        let hits = local_hits(&gw);
        assert_consumer(&bearer(&client, &gw, &token), "amy", what);
        assert_eq!(local_hits(&gw), hits + 1.0, "{what}: not a local hit");
    };
    is_local_hit("second use");

    // An attacker's unknown kid refetches an unchanged document.
    thread::sleep(interval + Duration::from_millis(300));
    let before = provider.requests();
    let response = bearer(&client, &gw, &rs_token(&k1, &unknown_kid(0), "eve"));
    assert_error(&response, 401, "invalid_token");
    assert_eq!(provider.requests(), before + 1, "the unknown kid refetched");
    is_local_hit("after an unchanged refetch");

    // More unknown kids inside the interval cost no fetch.
    for i in 1..=10 {
        let response = bearer(&client, &gw, &rs_token(&k1, &unknown_kid(i), "eve"));
        assert_error(&response, 401, "invalid_token");
    }
    assert_eq!(
        provider.requests(),
        before + 1,
        "unknown-kid refetches were not rate-limited"
    );

    // A failed refetch keeps the set, and with it the cached decision.
    provider.set_status(500);
    thread::sleep(interval + Duration::from_millis(300));
    let response = bearer(&client, &gw, &rs_token(&k1, &unknown_kid(99), "eve"));
    assert_error(&response, 401, "invalid_token");
    assert_eq!(
        provider.requests(),
        before + 2,
        "the failed refetch happened"
    );
    is_local_hit("after a failed refetch");
}

/// `jwks_auth` with `jwks_refresh` (which bounds how long a new client serves its
/// predecessor's keys) and an optional `issuer`.
fn jwks_auth_with(url: &str, refresh: &str, issuer: Option<&str>) -> String {
    let issuer = issuer.map_or(String::new(), |i| format!("issuer = \"{i}\"\n"));
    format!(
        "{}jwks_refresh = \"{refresh}\"\n{issuer}",
        jwks_auth(url, "1s")
    )
}

#[test]
fn new_jwks_url_that_stays_down_stops_trusting_the_old_keys_after_the_grace() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let (k1, k2) = (RsaKey::generate(), RsaKey::generate());
    let old = JwksServer::start(jwks_document(&[k1.jwk("k1")]));
    let new = JwksServer::start(jwks_document(&[k2.jwk("k2")]));
    new.set_status(503);
    // jwks_refresh = 3s: the old keys are served for at most 3s after the reload.
    let gw = node(
        &config(&svc, &jwks_auth_with(&old.url(), "3s", None), false),
        dir.path(),
    )
    .start();
    wait_fetches(&old, 1);
    let client = Client::new();
    assert_consumer(
        &bearer(&client, &gw, &rs_token(&k1, "k1", "amy")),
        "amy",
        "k1 before the reload",
    );

    gw.rewrite_config(&config(
        &svc,
        &jwks_auth_with(&new.url(), "3s", None),
        false,
    ));
    // Taken before the reload: the grace cannot have started earlier.
    let reloading = std::time::Instant::now();
    reload(&gw);
    assert_consumer(
        &bearer(&client, &gw, &rs_token(&k1, "k1", "amy")),
        "amy",
        "k1 right after the reload, within the grace",
    );
    // Fresh tokens each round, so nothing comes from the decision cache.
    assert!(
        eventually(Duration::from_secs(10), || bearer(
            &client,
            &gw,
            &rs_token(&k1, "k1", "amy")
        )
        .status
            == 503),
        "the old provider's key k1 was still trusted 10s after the reload, the new one down"
    );
    assert!(
        reloading.elapsed() >= Duration::from_secs(3),
        "the grace ended after {:?}, before jwks_refresh",
        reloading.elapsed()
    );
    let response = bearer(&client, &gw, &rs_token(&k1, "k1", "amy"));
    assert_error(&response, 503, "jwks_unavailable");
    assert!(
        gw.stderr().contains("previous jwks_url's"),
        "no warning that the previous keys were served:\n{}",
        gw.stderr()
    );

    // Once the new provider answers, its keys work and the old ones stay refused.
    new.set_document(jwks_document(&[k2.jwk("k2")]));
    assert!(
        eventually(Duration::from_secs(6), || bearer(
            &client,
            &gw,
            &rs_token(&k2, "k2", "bea")
        )
        .status
            == 200),
        "the new provider's key k2 was never accepted"
    );
    let response = bearer(&client, &gw, &rs_token(&k1, "k1", "amy"));
    assert_error(&response, 401, "invalid_token");
}

#[test]
fn new_jwks_url_with_another_issuer_does_not_carry_the_old_keys_over() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let k1 = RsaKey::generate();
    let old = JwksServer::start(jwks_document(&[k1.jwk("k1")]));
    let new = JwksServer::start(jwks_document(&[k1.jwk("unused")]));
    new.set_status(503);
    let (old_iss, new_iss) = ("https://old-idp.example", "https://new-idp.example");
    let token = |iss: &str| {
        let mut claims = claims("amy");
        claims["iss"] = json!(iss);
        sign(Algorithm::RS256, "k1", &claims, &k1.encoding())
    };
    let gw = node(
        &config(
            &svc,
            &jwks_auth_with(&old.url(), "5m", Some(old_iss)),
            false,
        ),
        dir.path(),
    )
    .start();
    wait_fetches(&old, 1);
    let client = Client::new();
    assert_consumer(&bearer(&client, &gw, &token(old_iss)), "amy", "old issuer");

    gw.rewrite_config(&config(
        &svc,
        &jwks_auth_with(&new.url(), "5m", Some(new_iss)),
        false,
    ));
    reload(&gw);
    // A token the old provider's key signs for the new issuer: the old key must not vouch
    // for another issuer's tokens, even during a grace.
    let response = bearer(&client, &gw, &token(new_iss));
    assert_error(&response, 503, "jwks_unavailable");
}

#[test]
fn config_declared_key_cannot_be_revoked_through_the_admin_api_and_keeps_working() {
    let svc = Upstream::spawn("svc");
    let dir = key_dir();
    let gw = node(&config(&svc, &static_keys(&["alpha"]), false), dir.path())
        .env("ALPHA_KEY", ALPHA_KEY)
        .start();
    let client = Client::new();
    let admin = [("authorization", format!("Bearer {ADMIN_TOKEN}"))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_consumer(&with_key(&client, &gw, ALPHA_KEY), "alpha-job", "alpha");

    let refused = client.send("DELETE", &gw.admin_url("/keys/alpha"), &admin, None);
    assert_eq!(refused.status, 409, "{}", refused.body);
    let body = refused.json();
    assert_eq!(body["error"], "config_key", "{}", refused.body);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("remove it from") && message.contains("reload"),
        "{message}"
    );
    assert_consumer(
        &with_key(&client, &gw, ALPHA_KEY),
        "alpha-job",
        "alpha after the refused revocation",
    );
    // An unrelated reload neither revokes nor resurrects anything.
    gw.rewrite_config(&config(&svc, &static_keys(&["alpha"]), true));
    reload(&gw);
    assert_consumer(
        &with_key(&client, &gw, ALPHA_KEY),
        "alpha-job",
        "alpha after a reload",
    );

    // Keys created through the API are still revoked through it.
    let created = client.post(
        &gw.admin_url("/keys"),
        &admin,
        br#"{"consumer": "dyn-job"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let created = created.json();
    let (id, key) = (
        created["record"]["id"].as_str().expect("id"),
        created["key"].as_str().expect("key"),
    );
    assert_consumer(&with_key(&client, &gw, key), "dyn-job", "created key");
    let revoked = client.send(
        "DELETE",
        &gw.admin_url(&format!("/keys/{id}")),
        &admin,
        None,
    );
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert_error(&with_key(&client, &gw, key), 401, "invalid_api_key");
}

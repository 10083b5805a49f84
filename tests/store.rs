//! The Redis store's connection settings: an ACL user with a password read from the
//! environment is used for every operation, and wrong credentials make the store unreachable
//! (readiness says so, unknown keys get 503) without taking the gateway down. Over TLS
//! (`rediss://`) the server is verified against `tls_ca_file` and the gateway can present a
//! client certificate; an untrusted server certificate fails the same safe way.

mod support;

use std::time::{Duration, Instant};

use support::config::{route, upstream, Preamble};
use support::redis::{make_certificates, ClientAuth, TlsRedis};
use support::{eventually, Client, Gateway, Redis, Upstream};

const TOKEN: &str = "admin-token-for-store-tests";

fn template(svc: &Upstream, redis: &Redis) -> String {
    [
        Preamble::new().admin_token_env("ADMIN_TOKEN").render(),
        format!(
            "\n[store]\nurl = \"{}\"\nusername = \"portcullis\"\npassword_env = \"REDIS_PASSWORD\"\nprefix = \"acl:\"\n\n[auth.api_key]\n",
            redis.url()
        ),
        upstream("svc", &[svc], ""),
        route("keyed", "svc", "auth = [\"api_key\"]"),
    ]
    .concat()
}

fn readiness(client: &Client, gw: &Gateway) -> String {
    let r = client.get(&gw.admin_url("/readyz"));
    r.json()["store"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn acl_user_and_password_from_the_environment_are_used_and_wrong_ones_fail_safely() {
    let redis = Redis::start();
    let reply = redis
        .command(&[
            "ACL",
            "SETUSER",
            "portcullis",
            "on",
            ">s3cret-pw",
            "~acl:*",
            "&acl:*",
            "+@all",
        ])
        .expect("ACL SETUSER");
    assert_eq!(reply, "+OK");
    // The default user may do nothing, so only the ACL user's credentials can work.
    assert_eq!(
        redis
            .command(&["ACL", "SETUSER", "default", "off"])
            .expect("ACL"),
        "+OK"
    );
    let svc = Upstream::spawn("svc");
    let client = Client::new();

    let good = Gateway::builder(&template(&svc, &redis))
        .env("ADMIN_TOKEN", TOKEN)
        .env("REDIS_PASSWORD", "s3cret-pw")
        .start();
    assert!(
        eventually(Duration::from_secs(5), || readiness(&client, &good) == "ok"),
        "the store never became reachable with the right credentials"
    );
    let created = client.post(
        &good.admin_url("/keys"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        br#"{"consumer":"acl-user"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.json()["key"].as_str().unwrap_or("").to_string();
    let ok = client.get_with(&good.url("/keyed"), &[("x-api-key", &key)]);
    assert_eq!(ok.status, 200, "{}", ok.body);

    let bad = Gateway::builder(&template(&svc, &redis))
        .env("ADMIN_TOKEN", TOKEN)
        .env("REDIS_PASSWORD", "wrong-password")
        .start();
    assert!(
        eventually(Duration::from_secs(5), || readiness(&client, &bad)
            == "unreachable"),
        "wrong credentials must show as an unreachable store"
    );
    let refused = client.get_with(&bad.url("/keyed"), &[("x-api-key", &key)]);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"], "store_unavailable");
    for output in [good.stderr(), bad.stderr(), good.stdout(), bad.stdout()] {
        assert!(
            !output.contains("s3cret-pw") && !output.contains("wrong-password"),
            "a Redis password reached the logs"
        );
    }
}

#[test]
fn a_password_in_the_url_is_refused_at_check_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[store]\nurl = \"redis://user:hunter2@127.0.0.1:6379\"\n[[upstreams]]\nname = \"u\"\npeers = [{ addr = \"127.0.0.1:1\" }]\n",
    )
    .expect("write config");
    let out = std::process::Command::new(support::gateway::binary())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("store.url: must not contain a password"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password was echoed: {stderr}"
    );
}

// === Redis over TLS (`rediss://`) with a private CA ===

/// `[store]` prefix of the TLS tests.
const TLS_PREFIX: &str = "tls:";

/// A gateway config on `redis` over TLS, with `tls` lines added to `[store]` (e.g.
/// `tls_ca_file = "…"`), and a route that needs an API key.
///
/// `operation_timeout` is raised from 20 ms because a proxy thread's first store call also
/// makes that thread's connection, TLS handshake included, and on a loaded test machine that
/// can take longer than 20 ms.
fn tls_template(svc: &Upstream, redis: &TlsRedis, tls: &str) -> String {
    [
        Preamble::new().admin_token_env("ADMIN_TOKEN").render(),
        format!(
            "\n[store]\nurl = \"{}\"\nprefix = \"{TLS_PREFIX}\"\n\
             operation_timeout = \"500ms\"\nconnect_timeout = \"2s\"\n{tls}\n\n[auth.api_key]\n",
            redis.url()
        ),
        upstream("svc", &[svc], ""),
        route("keyed", "svc", "auth = [\"api_key\"]"),
    ]
    .concat()
}

/// `tls_ca_file = "<the private CA>"`.
fn trust(redis: &TlsRedis) -> String {
    format!("tls_ca_file = {:?}", redis.ca_file())
}

fn tls_gateway(template: &str) -> Gateway {
    Gateway::builder(template).env("ADMIN_TOKEN", TOKEN).start()
}

/// Creates a key with `POST /keys`; returns the key and its id.
fn create_key(client: &Client, gw: &Gateway, consumer: &str) -> (String, String) {
    let created = client.post(
        &gw.admin_url("/keys"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        format!("{{\"consumer\":\"{consumer}\"}}").as_bytes(),
    );
    assert_eq!(created.status, 201, "POST /keys: {}", created.body);
    let json = created.json();
    let field = |name: &str| json[name].as_str().unwrap_or("").to_string();
    let id = json["record"]["id"].as_str().unwrap_or("").to_string();
    (field("key"), id)
}

/// Waits up to 10 s for `/readyz` to report the store `ok`. The probe runs once a second; a
/// TLS handshake that misses `connect_timeout` on a loaded machine costs a probe round or two
/// (seen once in CI: not ready within 5 s).
fn becomes_ready(client: &Client, gw: &Gateway) -> bool {
    eventually(Duration::from_secs(10), || readiness(client, gw) == "ok")
}

/// True when `/readyz` reports the store unreachable and goes on doing so for 2 s (two health
/// probes at least), i.e. the store never worked.
fn stays_unreachable(client: &Client, gw: &Gateway) -> bool {
    readiness(client, gw) == "unreachable"
        && !eventually(Duration::from_secs(2), || {
            readiness(client, gw) != "unreachable"
        })
}

#[test]
fn rediss_with_a_private_ca_carries_keys_and_invalidations() {
    let redis = TlsRedis::start(ClientAuth::Off);
    let svc = Upstream::spawn("svc");
    let client = Client::new();
    let config = tls_template(&svc, &redis, &trust(&redis));
    let a = tls_gateway(&config);
    let b = tls_gateway(&config);
    for gw in [&a, &b] {
        assert!(
            becomes_ready(&client, gw),
            "the store never became reachable over TLS with tls_ca_file"
        );
    }

    // A key made on A is stored in Redis over TLS and read from there by B.
    let (key, id) = create_key(&client, &a, "tls-user");
    for gw in [&a, &b] {
        let ok = client.get_with(&gw.url("/keyed"), &[("x-api-key", &key)]);
        assert_eq!(ok.status, 200, "{}", ok.body);
    }
    let keys = redis.all_keys().expect("SCAN over TLS");
    assert!(
        keys.contains(&format!("{TLS_PREFIX}apikey-id:{{{id}}}"))
            && keys
                .iter()
                .any(|k| k.starts_with(&format!("{TLS_PREFIX}apikey:{{"))),
        "the key's records are not in the TLS Redis: {keys:?}"
    );

    // Both invalidation subscribers are connected over TLS too, so a revocation on A reaches B.
    let subscribers = redis
        .cli(&["PUBSUB", "NUMSUB", &format!("{TLS_PREFIX}invalidations")])
        .expect("PUBSUB NUMSUB");
    assert_eq!(
        subscribers.lines().nth(1),
        Some("2"),
        "PUBSUB NUMSUB: {subscribers:?}"
    );
    let revoked = client.send(
        "DELETE",
        &a.admin_url(&format!("/keys/{id}")),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    );
    assert_eq!(revoked.status, 200, "DELETE /keys/{id}: {}", revoked.body);
    assert!(
        eventually(Duration::from_secs(2), || client
            .get_with(&b.url("/keyed"), &[("x-api-key", &key)])
            .status
            == 401),
        "B still accepts the key 2 s after A revoked it"
    );
}

#[test]
fn rediss_without_the_private_ca_is_not_trusted_and_fails_safely() {
    let redis = TlsRedis::start(ClientAuth::Off);
    let svc = Upstream::spawn("svc");
    let client = Client::new();
    // Control: the same Redis works for a gateway that trusts the CA, so the other one fails on
    // the certificate alone.
    let trusted = tls_gateway(&tls_template(&svc, &redis, &trust(&redis)));
    assert!(
        becomes_ready(&client, &trusted),
        "control gateway not ready"
    );
    let (key, _) = create_key(&client, &trusted, "known-key");

    let untrusted = tls_gateway(&tls_template(&svc, &redis, ""));
    assert!(
        stays_unreachable(&client, &untrusted),
        "a server certificate from a CA outside the system roots was accepted"
    );
    // The key exists, but this gateway cannot read Redis: 503, never 401, and quickly.
    let started = Instant::now();
    let refused = client.get_with(&untrusted.url("/keyed"), &[("x-api-key", &key)]);
    let took = started.elapsed();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"], "store_unavailable");
    assert!(took < Duration::from_secs(2), "the 503 took {took:?}");
    assert!(
        untrusted.try_wait().is_none(),
        "the gateway exited on an untrusted Redis certificate"
    );
}

#[test]
fn mutual_tls_uses_the_client_certificate() {
    let redis = TlsRedis::start(ClientAuth::Required);
    let svc = Upstream::spawn("svc");
    let client = Client::new();
    let mtls = format!(
        "{}\ntls_cert_file = {:?}\ntls_key_file = {:?}",
        trust(&redis),
        redis.client_cert_file(),
        redis.client_key_file()
    );
    let gw = tls_gateway(&tls_template(&svc, &redis, &mtls));
    assert!(
        becomes_ready(&client, &gw),
        "the store never became reachable with a client certificate"
    );
    let (key, id) = create_key(&client, &gw, "mtls-user");
    let ok = client.get_with(&gw.url("/keyed"), &[("x-api-key", &key)]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let keys = redis.all_keys().expect("SCAN over TLS");
    assert!(
        keys.contains(&format!("{TLS_PREFIX}apikey-id:{{{id}}}")),
        "the key is not in the mTLS Redis: {keys:?}"
    );

    // Control: this Redis refuses a client without a certificate.
    let no_cert = tls_gateway(&tls_template(&svc, &redis, &trust(&redis)));
    assert!(
        stays_unreachable(&client, &no_cert),
        "Redis with tls-auth-clients yes accepted a client without a certificate"
    );
}

#[test]
fn a_tls_file_with_a_redis_url_is_refused_at_check_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    make_certificates(dir.path());
    let ca = dir.path().join("ca.pem");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"redis://127.0.0.1:6379\"\ntls_ca_file = {ca:?}\n\
             [[upstreams]]\nname = \"u\"\npeers = [{{ addr = \"127.0.0.1:1\" }}]\n"
        ),
    )
    .expect("write config");
    let out = std::process::Command::new(support::gateway::binary())
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("store.tls_ca_file: only with a rediss:// url"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

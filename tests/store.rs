//! The Redis store's connection settings: an ACL user with a password read from the
//! environment is used for every operation, and wrong credentials make the store unreachable
//! (readiness says so, unknown keys get 503) without taking the gateway down.

mod support;

use std::time::Duration;

use support::config::{route, upstream, PREAMBLE};
use support::{eventually, Client, Gateway, Redis, Upstream};

const TOKEN: &str = "admin-token-for-store-tests";

fn template(svc: &Upstream, redis: &Redis) -> String {
    [
        PREAMBLE.replace(
            "listen = \"${ADMIN_ADDR}\"",
            "listen = \"${ADMIN_ADDR}\"\ntoken_env = \"ADMIN_TOKEN\"",
        ),
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

//! A JWKS URL may carry credentials: `check` refuses userinfo in `jwks_url` without repeating
//! it, and the running gateway's log lines name the JWKS without its query.

mod support;

use std::time::Duration;

use support::config::{route, upstream, Preamble};
use support::jwks::{jwks_document, sign, JwksServer, RsaKey};
use support::{assert_error, eventually, run_to_exit, unix_now, wait_fetches};
use support::{Client, Gateway, Upstream};

/// A token in the query, as some providers take it.
const QUERY_SECRET: &str = "q-s3cr3t-7781d0";

#[test]
fn jwks_url_query_never_appears_in_the_process_log() {
    let svc = Upstream::spawn("svc");
    let k1 = RsaKey::generate();
    let provider = JwksServer::start(jwks_document(&[k1.jwk("k1")]));
    let url = format!("{}?access_token={QUERY_SECRET}", provider.url());
    let config = [
        Preamble::new().render(),
        format!(
            "\n[auth.jwt]\njwks_url = \"{url}\"\njwks_min_refetch_interval = \"1s\"\n\
             jwks_timeout = \"1s\"\n"
        ),
        upstream("svc", &[&svc], ""),
        route("jwt", "svc", "path = \"/jwt\"\nauth = [\"jwt\"]"),
    ]
    .concat();
    let gw = Gateway::start(&config);
    wait_fetches(&provider, 1);
    let logged = provider.url();
    assert!(
        eventually(Duration::from_secs(5), || gw
            .stderr()
            .contains(&format!("JWKS from {logged} loaded"))),
        "no load line naming {logged}:\n{}",
        gw.stderr()
    );

    // A failed refetch logs a warning; it must not carry the query either.
    provider.set_status(500);
    std::thread::sleep(Duration::from_millis(1100));
    let now = unix_now();
    let claims = serde_json::json!({ "sub": "eve", "iat": now, "exp": now + 600 });
    let token = sign(
        jsonwebtoken::Algorithm::RS256,
        "unknown-kid",
        &claims,
        &k1.encoding(),
    );
    let response = Client::new().get_with(
        &gw.url("/jwt"),
        &[("authorization", &format!("Bearer {token}"))],
    );
    assert_error(&response, 401, "invalid_token");
    assert!(
        eventually(Duration::from_secs(5), || gw
            .stderr()
            .contains(&format!("JWKS refetch from {logged} failed"))),
        "no refetch warning naming {logged}:\n{}",
        gw.stderr()
    );
    let stderr = gw.stderr();
    assert!(
        !stderr.contains(QUERY_SECRET),
        "the jwks_url query reached the log:\n{stderr}"
    );
}

#[test]
fn check_refuses_userinfo_in_jwks_url_without_repeating_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portcullis.toml");
    let text = [
        Preamble::new().render(),
        "\n[auth.jwt]\njwks_url = \"https://svc:pa55-s3cr3t@idp.example.com/jwks.json\"\n"
            .to_string(),
        "\n[[upstreams]]\nname = \"svc\"\npeers = [{ addr = \"127.0.0.1:3000\" }]\n".to_string(),
        route("jwt", "svc", "path = \"/jwt\"\nauth = [\"jwt\"]"),
    ]
    .concat();
    let text = support::gateway::fill(
        &text,
        &[
            ("PROXY_ADDR".into(), "127.0.0.1:18080".into()),
            ("ADMIN_ADDR".into(), "127.0.0.1:19901".into()),
            ("DIR".into(), dir.path().display().to_string()),
        ],
    );
    std::fs::write(&path, text).expect("write config");
    let finished = run_to_exit(
        &["check", "-c", path.to_str().expect("utf-8 path")],
        &[],
        Duration::from_secs(20),
    );
    assert_eq!(finished.code(), Some(1), "stderr:\n{}", finished.stderr);
    let line = finished
        .stderr
        .lines()
        .find(|l| l.contains("auth.jwt.jwks_url"))
        .unwrap_or_else(|| panic!("no auth.jwt.jwks_url issue:\n{}", finished.stderr));
    assert!(line.contains("user:password@"), "{line}");
    assert!(
        !finished.stderr.contains("pa55-s3cr3t") && !finished.stdout.contains("pa55-s3cr3t"),
        "check repeated the password:\n{}",
        finished.stderr
    );
}

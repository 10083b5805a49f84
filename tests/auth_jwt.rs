//! JWTs end to end, on real gateway processes: valid tokens reach the upstream as an identity
//! (never as the token), every kind of bad token gets a 401 with an RFC 6750 challenge, keys
//! come from static config or a provider's JWKS that is refetched sparingly and survives the
//! provider's outages, revoked token ids are refused on every node within 100 ms, scopes are
//! enforced, and no token reaches a log.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::config::{route, store, upstream, Preamble};
use support::gateway::GatewayBuilder;
use support::jwks::{b64, jwks_document, sign, sign_raw, JwksServer, RsaKey};
use support::raw;
use support::{admin_json, auth_decisions as decisions, local_hits, timed, unix_now, wait_fetches};
use support::{assert_error, eventually, Client, Gateway, Redis, Response, Upstream};

/// Bearer token of the admin API (given to the gateway as `ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "admin-token-3b9d0f6a2c1e4857";
/// The HS256 secret of the static key `hs1` (given as `JWT_SECRET`).
const JWT_SECRET: &str = "hs256-secret-for-the-jwt-tests-6c2f1a9e8d7b";
/// A config-declared API key (given as `STATIC_KEY`).
const STATIC_KEY: &str = "static-api-key-for-the-jwt-tests-51c7";
/// `[auth.jwt] issuer`.
const ISSUER: &str = "https://idp.test";
/// `[auth.jwt] audiences`.
const AUDIENCE: &str = "api";
/// `[store] prefix` of every Redis-backed config.
const PREFIX: &str = "jwt-test:";
/// How fast a revocation on one node must be seen by another.
const PROPAGATION_TARGET: Duration = Duration::from_millis(100);
/// How fast a gateway must answer when the store is down.
const OUTAGE_TARGET: Duration = Duration::from_millis(500);

/// `[server]`, `[admin]` with a token, and `[log]`; `${ACCESS_LOG}` is "off" or "stdout".
/// The access log is asked for the credential header on purpose: redaction must still hold.
fn base() -> String {
    Preamble::new()
        .admin_token_env("ADMIN_TOKEN")
        .access_log("${ACCESS_LOG}")
        .log_extra(r#"log_headers = ["user-agent", "authorization", "x-user-email"]"#)
        .render()
}

/// What a test's gateway has beyond the JWT settings every config shares.
#[derive(Default)]
struct Setup<'a> {
    /// `[store]` on this Redis; the in-process store when `None`.
    redis: Option<&'a Redis>,
    /// `jwks_url` of this server, with this `jwks_min_refetch_interval`.
    jwks: Option<(&'a JwksServer, &'a str)>,
    /// A static RS256 key `rs1` with this public key file.
    rsa_pem: Option<&'a Path>,
    /// `[auth.api_key]` with the config-declared key `STATIC_KEY`, and the `/either` route.
    api_key: bool,
}

/// A config with the static HS256 key `hs1` and these routes to `svc`:
///
/// - `/jwt`: needs a JWT;
/// - `/scoped`: needs a JWT with scope `orders:write`;
/// - `/forward`: needs a JWT and forwards it upstream;
/// - `/public`: no authentication;
/// - `/either`: an API key or a JWT (with `Setup::api_key`).
fn template(svc: &Upstream, setup: &Setup) -> String {
    let mut parts = vec![base()];
    if let Some(redis) = setup.redis {
        parts.push(store(&redis.url(), PREFIX, ""));
    }
    let mut jwt = format!(
        "\n[auth.jwt]\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\nleeway = \"60s\"\n\
         consumer_claim = \"sub\"\nscopes_claim = \"scope\"\n\
         claims_to_headers = {{ email = \"x-user-email\" }}\n"
    );
    if let Some((server, min_refetch)) = setup.jwks {
        jwt.push_str(&format!(
            "jwks_url = \"{}\"\njwks_min_refetch_interval = \"{min_refetch}\"\n",
            server.url()
        ));
    }
    jwt.push_str(
        "\n[[auth.jwt.keys]]\nkid = \"hs1\"\nalgorithm = \"HS256\"\nsecret_env = \"JWT_SECRET\"\n",
    );
    if let Some(pem) = setup.rsa_pem {
        jwt.push_str(&format!(
            "\n[[auth.jwt.keys]]\nkid = \"rs1\"\nalgorithm = \"RS256\"\npublic_key_file = {:?}\n",
            pem.to_str().expect("utf-8 key path")
        ));
    }
    parts.push(jwt);
    if setup.api_key {
        parts.push(
            "\n[auth.api_key]\nheader = \"x-api-key\"\nkeys = [{ id = \"static-1\", \
             consumer = \"batch-job\", key_env = \"STATIC_KEY\" }]\n"
                .to_string(),
        );
    }
    parts.push(upstream("svc", &[svc], ""));
    parts.push(route("jwt", "svc", "path = \"/jwt\"\nauth = [\"jwt\"]"));
    parts.push(route(
        "scoped",
        "svc",
        "path = \"/scoped\"\nauth = [\"jwt\"]\nrequired_scopes = [\"orders:write\"]",
    ));
    parts.push(route(
        "forward",
        "svc",
        "path = \"/forward\"\nauth = [\"jwt\"]\nforward_credentials = true",
    ));
    parts.push(route("public", "svc", "path = \"/public\""));
    if setup.api_key {
        parts.push(route(
            "either",
            "svc",
            "path = \"/either\"\nauth = [\"api_key\", \"jwt\"]",
        ));
    }
    parts.concat()
}

/// A gateway on `template` with the admin token and the secrets in its environment.
fn node(template: &str, access_log: &str) -> GatewayBuilder {
    Gateway::builder(template)
        .var("ACCESS_LOG", access_log)
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("JWT_SECRET", JWT_SECRET)
        .env("STATIC_KEY", STATIC_KEY)
}

// === Tokens ===

/// The RSA keys of the test run, generated once with `openssl`.
struct Keys {
    /// The static `rs1` key and the JWKS key `k1`.
    main: RsaKey,
    /// A key nobody trusts at first: "foreign" signatures, and the rotated-in JWKS key `k2`.
    other: RsaKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        main: RsaKey::generate(),
        other: RsaKey::generate(),
    })
}

/// Valid claims for `sub`: ten minutes of validity, issuer and audience as configured, and a
/// nonce so that no two tokens are equal (each one is verified, not found in the cache).
fn claims(sub: &str) -> Value {
    static NONCE: AtomicU64 = AtomicU64::new(0);
    let now = unix_now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "iat": now,
        "exp": now + 600,
        "nonce": NONCE.fetch_add(1, Ordering::Relaxed),
    })
}

/// `claims` with `name` set to `value` (removed when `value` is null).
fn with(mut claims: Value, name: &str, value: Value) -> Value {
    let map = claims.as_object_mut().expect("claims are an object");
    if value.is_null() {
        map.remove(name);
    } else {
        map.insert(name.to_string(), value);
    }
    claims
}

/// An HS256 token under the static key `hs1`.
fn hs_token(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        "hs1",
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
}

/// An RS256 token signed by `key` naming `kid`.
fn rs_token(key: &RsaKey, kid: &str, claims: &Value) -> String {
    sign(Algorithm::RS256, kid, claims, &key.encoding())
}

/// A `kid` no provider has ever published.
fn random_kid(i: usize) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("unknown-{i}-{nanos:08x}-{:04x}", fastrand::u16(..))
}

// === Requests ===

/// `GET path` on the proxy with `Authorization: Bearer <token>` and `extra` headers.
fn bearer(client: &Client, gw: &Gateway, path: &str, token: &str) -> Response {
    bearer_with(client, gw, path, token, &[])
}

fn bearer_with(
    client: &Client,
    gw: &Gateway,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
) -> Response {
    let authorization = format!("Bearer {token}");
    let mut headers = vec![("authorization", authorization.as_str())];
    headers.extend_from_slice(extra);
    client.get_with(&gw.url(path), &headers)
}

/// Asserts a 401 `invalid_token` with a JSON body and an RFC 6750 challenge whose
/// `error_description` is `description`.
fn assert_invalid_token(response: &Response, what: &str, description: &str) {
    assert_eq!(
        response.status, 401,
        "{what}: want 401, got {} {}",
        response.status, response.body
    );
    assert_error(response, 401, "invalid_token");
    let challenge = response.header("www-authenticate").unwrap_or_default();
    let expected = format!("Bearer error=\"invalid_token\", error_description=\"{description}\"");
    assert_eq!(challenge, expected, "{what}: WWW-Authenticate");
}

/// An admin API request with the bearer token and a JSON body.
fn admin_post(client: &Client, gw: &Gateway, path: &str, body: &Value) -> Response {
    admin_json(
        client,
        gw,
        ADMIN_TOKEN,
        "POST",
        path,
        Some(&body.to_string()),
    )
}

// === Tests ===

#[test]
fn valid_hs256_token_reaches_upstream_as_identity_and_claim_headers() {
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, &Setup::default()), "off").start();
    let client = Client::new();

    // Client-sent identity headers must be replaced by the token's.
    let token = hs_token(&with(claims("alice"), "email", json!("alice@example.com")));
    for round in 0..2 {
        let response = bearer_with(
            &client,
            &gw,
            "/jwt/orders?page=2",
            &token,
            &[
                ("x-user-email", "mallory@evil.test"),
                ("x-consumer-id", "mallory"),
            ],
        );
        assert_eq!(response.status, 200, "round {round}: {}", response.body);
        let echo = response.echo();
        assert_eq!(echo.header("x-consumer-id"), Some("alice"), "round {round}");
        assert_eq!(echo.header_count("x-consumer-id"), 1);
        assert_eq!(echo.header("x-user-email"), Some("alice@example.com"));
        assert_eq!(echo.header_count("x-user-email"), 1);
        assert_eq!(
            echo.header("authorization"),
            None,
            "the token reached the upstream"
        );
        assert_eq!(echo.path(), "/jwt/orders?page=2");
    }

    // Without the claim, a client's x-user-email is dropped, not passed through.
    let no_email = hs_token(&claims("bob"));
    let response = bearer_with(
        &client,
        &gw,
        "/jwt",
        &no_email,
        &[("x-user-email", "admin@example.com")],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let echo = response.echo();
    assert_eq!(echo.header("x-consumer-id"), Some("bob"));
    assert_eq!(
        echo.header("x-user-email"),
        None,
        "a client-sent x-user-email reached the upstream"
    );
    assert_eq!(echo.header("authorization"), None);

    // Nor on public routes, where no token is looked at.
    let public = client.get_with(
        &gw.url("/public"),
        &[
            ("x-user-email", "admin@example.com"),
            ("x-consumer-id", "mallory"),
        ],
    );
    let echo = public.echo();
    assert_eq!(echo.header("x-user-email"), None);
    assert_eq!(echo.header("x-consumer-id"), None);

    // forward_credentials keeps the token for the upstream.
    let response = bearer(&client, &gw, "/forward/x", &no_email);
    assert_eq!(response.status, 200, "{}", response.body);
    let echo = response.echo();
    let expected = format!("Bearer {no_email}");
    assert_eq!(echo.header("authorization"), Some(expected.as_str()));
    assert_eq!(echo.header("x-consumer-id"), Some("bob"));

    // No token: 401 with a bare Bearer challenge.
    let missing = client.get(&gw.url("/jwt"));
    assert_error(&missing, 401, "credentials_missing");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));

    assert!(
        eventually(Duration::from_secs(5), || {
            decisions(&gw, "jwt", "jwt", "ok") >= 3.0
                && decisions(&gw, "jwt", "none", "missing") >= 1.0
        }),
        "\n{}",
        gw.metrics()
    );
}

#[test]
fn invalid_tokens_get_401_invalid_token_with_a_bearer_challenge() {
    let svc = Upstream::spawn("svc");
    let dir = tempfile::tempdir().expect("temp dir");
    let pem = keys().main.write_public(dir.path(), "rs1.pem");
    let setup = Setup {
        rsa_pem: Some(&pem),
        ..Setup::default()
    };
    let gw = node(&template(&svc, &setup), "off").start();
    let client = Client::new();
    let now = unix_now();

    // Controls: both static keys accept their own tokens.
    let good = hs_token(&claims("alice"));
    assert_eq!(bearer(&client, &gw, "/jwt", &good).status, 200);
    let rs = rs_token(&keys().main, "rs1", &claims("alice"));
    let response = bearer(&client, &gw, "/jwt", &rs);
    assert_eq!(response.status, 200, "RS256 control: {}", response.body);

    let (good_head, rest) = good.split_once('.').expect("three segments");
    let (_, good_signature) = rest.split_once('.').expect("three segments");
    let forged_payload = b64(with(claims("alice"), "sub", json!("admin"))
        .to_string()
        .as_bytes());
    let tampered = format!("{good_head}.{forged_payload}.{good_signature}");

    let none_header = b64(br#"{"alg":"none"}"#);
    let none_kid_header = b64(br#"{"alg":"none","typ":"JWT","kid":"hs1"}"#);
    let admin_payload = b64(with(claims("admin"), "scope", json!("orders:write"))
        .to_string()
        .as_bytes());

    // The classic confusion attack: the RSA public key (which is public) as an HMAC secret.
    let rsa_as_secret = EncodingKey::from_secret(&keys().main.public_pem);
    let confused = sign(Algorithm::HS256, "rs1", &claims("admin"), &rsa_as_secret);
    let confused_no_kid = sign_raw(
        &json!({ "alg": "HS256", "typ": "JWT" }),
        &claims("admin"),
        &rsa_as_secret,
        Algorithm::HS256,
    );

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            hs_token(&with(claims("alice"), "exp", json!(now - 3600))),
            "token expired",
        ),
        (
            "not yet valid (nbf)",
            hs_token(&with(claims("alice"), "nbf", json!(now + 3600))),
            "token not yet valid",
        ),
        (
            "issued in the future (iat)",
            hs_token(&with(claims("alice"), "iat", json!(now + 3600))),
            "token issued in the future",
        ),
        (
            "wrong issuer",
            hs_token(&with(claims("alice"), "iss", json!("https://evil.test"))),
            "issuer not accepted",
        ),
        (
            "no issuer",
            hs_token(&with(claims("alice"), "iss", Value::Null)),
            "issuer not accepted",
        ),
        (
            "wrong audience",
            hs_token(&with(claims("alice"), "aud", json!("other-api"))),
            "audience not accepted",
        ),
        (
            "wrong audience list",
            hs_token(&with(claims("alice"), "aud", json!(["a", "b"]))),
            "audience not accepted",
        ),
        ("tampered payload", tampered, "invalid signature"),
        (
            "HS256 signed with a foreign secret",
            sign(
                Algorithm::HS256,
                "hs1",
                &claims("alice"),
                &EncodingKey::from_secret(b"not-the-configured-secret"),
            ),
            "invalid signature",
        ),
        (
            "RS256 signed with a foreign key",
            rs_token(&keys().other, "rs1", &claims("alice")),
            "invalid signature",
        ),
        (
            "alg none, empty signature",
            format!("{none_header}.{admin_payload}."),
            "algorithm not allowed",
        ),
        (
            "alg none with a kid, empty signature",
            format!("{none_kid_header}.{admin_payload}."),
            "algorithm not allowed",
        ),
        (
            "RSA public key PEM as HS256 secret, kid of the RS256 key",
            confused,
            "algorithm not allowed",
        ),
        (
            "RSA public key PEM as HS256 secret, no kid",
            confused_no_kid,
            "unknown signing key",
        ),
        (
            "HS256 token naming an unknown kid",
            sign(
                Algorithm::HS256,
                "hs9",
                &claims("alice"),
                &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
            ),
            "unknown signing key",
        ),
    ];
    for (what, token, description) in &cases {
        // Twice: a rejection must not be cached as anything else.
        for _ in 0..2 {
            let response = bearer(&client, &gw, "/jwt", token);
            assert!(
                response.status < 500,
                "{what}: {} {}",
                response.status,
                response.body
            );
            assert_invalid_token(&response, what, description);
        }
    }

    // The good tokens still work after all that.
    assert_eq!(bearer(&client, &gw, "/jwt", &good).status, 200);
    assert_eq!(bearer(&client, &gw, "/jwt", &rs).status, 200);
    assert!(
        eventually(Duration::from_secs(5), || {
            decisions(&gw, "jwt", "jwt", "expired") >= 2.0
                && decisions(&gw, "jwt", "jwt", "invalid") >= 2.0 * (cases.len() - 1) as f64
        }),
        "\n{}",
        gw.metrics()
    );
}

#[test]
fn malformed_tokens_get_401_never_5xx() {
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, &Setup::default()), "off").start();
    let client = Client::new();
    let good = hs_token(&claims("alice"));
    let (h, rest) = good.split_once('.').expect("three segments");
    let (p, s) = rest.split_once('.').expect("three segments");

    let cases: Vec<(&str, String)> = vec![
        ("bad base64", "!!!notbase64.@@@.###".to_string()),
        ("bad base64 in the header only", format!("{h}*.{p}.{s}")),
        ("two segments", format!("{h}.{p}")),
        ("four segments", format!("{h}.{p}.{s}.{s}")),
        ("one segment", "justonesegment".to_string()),
        ("empty segments", "..".to_string()),
        ("header not JSON", format!("{}.{p}.{s}", b64(b"not json"))),
        ("payload an array", format!("{h}.{}.{s}", b64(b"[1,2,3]"))),
        (
            "100 KB token",
            format!("{h}.{}.{s}", "A".repeat(100 * 1024)),
        ),
    ];
    for (what, token) in &cases {
        let response = bearer(&client, &gw, "/jwt", token);
        assert!(
            response.status < 500,
            "{what}: {} {}",
            response.status,
            response.body
        );
        assert_invalid_token(&response, what, "malformed token");
    }

    // Other schemes and empty bearer values carry no token at all.
    let basic = client.get_with(&gw.url("/jwt"), &[("authorization", "Basic eHl6")]);
    assert_error(&basic, 401, "credentials_missing");
    assert_eq!(basic.header("www-authenticate"), Some("Bearer"));
    let basic = client.get_with(&gw.url("/jwt"), &[("authorization", "Basic xyz")]);
    assert_error(&basic, 401, "credentials_missing");

    // What a client library would not send: raw bytes on the wire.
    let raw_requests: [(&str, &[u8]); 6] = [
        (
            "non-ASCII bytes",
            b"Authorization: Bearer \xff\xfe\xe2\x82\xac.\xc3\x28.abc\r\n",
        ),
        (
            "non-ASCII after a valid-looking start",
            b"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.\xe2\x82\xac.sig\r\n",
        ),
        ("Bearer with nothing", b"Authorization: Bearer\r\n"),
        ("Bearer and spaces", b"Authorization: Bearer    \r\n"),
        ("empty Authorization", b"Authorization:\r\n"),
        (
            "Authorization twice, first empty",
            b"Authorization: \r\nAuthorization: Bearer x.y.z\r\n",
        ),
    ];
    for (what, header) in raw_requests {
        let mut request = b"GET /jwt HTTP/1.1\r\nHost: gw\r\n".to_vec();
        request.extend_from_slice(header);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        let response = raw::request(gw.proxy_addr(), &request).into_response();
        assert_eq!(response.status, 401, "{what}: {}", response.body);
        let code = response.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            code == "invalid_token" || code == "credentials_missing",
            "{what}: error {code:?}"
        );
        assert_error(&response, 401, &code);
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer"),
            "{what}: WWW-Authenticate {challenge:?}"
        );
        println!("{what}: 401 {code}, WWW-Authenticate: {challenge}");
    }

    // None of that hurt the gateway.
    assert_eq!(bearer(&client, &gw, "/jwt", &good).status, 200);
    assert!(gw.try_wait().is_none(), "the gateway exited");
}

#[test]
fn burst_of_unknown_kids_costs_one_jwks_fetch() {
    let svc = Upstream::spawn("svc");
    let provider = JwksServer::start(jwks_document(&[keys().main.jwk("k1")]));
    let interval = Duration::from_secs(2);
    let setup = Setup {
        jwks: Some((&provider, "2s")),
        ..Setup::default()
    };
    let gw = node(&template(&svc, &setup), "off").start();
    let client = Client::new();

    // The background refresh fetches once at start; max-age=300 keeps it quiet afterwards.
    wait_fetches(&provider, 1);
    let started = Instant::now();
    let response = bearer(
        &client,
        &gw,
        "/jwt",
        &rs_token(&keys().main, "k1", &claims("amy")),
    );
    assert_eq!(response.status, 200, "JWKS key k1: {}", response.body);
    assert_eq!(response.echo().header("x-consumer-id"), Some("amy"));
    assert_eq!(provider.requests(), 1, "a known kid caused a fetch");

    // Past the refetch interval, so the burst is allowed exactly one fetch.
    thread::sleep((interval + Duration::from_millis(300)).saturating_sub(started.elapsed()));
    let before = provider.requests();
    let burst = 20;
    let barrier = Arc::new(Barrier::new(burst));
    let url = gw.url("/jwt");
    // Signed up front, so the threads start the burst together once the barrier opens.
    let tokens: Vec<String> = (0..burst)
        .map(|i| rs_token(&keys().main, &random_kid(i), &claims("eve")))
        .collect();
    let handles: Vec<_> = tokens
        .into_iter()
        .map(|token| {
            let barrier = Arc::clone(&barrier);
            let url = url.clone();
            thread::spawn(move || {
                let client = Client::new();
                let authorization = format!("Bearer {token}");
                barrier.wait();
                timed(|| client.get_with(&url, &[("authorization", &authorization)]))
            })
        })
        .collect();
    let (responses, took): (Vec<Response>, Vec<Duration>) = handles
        .into_iter()
        .map(|h| h.join().expect("burst thread"))
        .unzip();
    let took = took.iter().max().copied().unwrap_or_default();
    for response in &responses {
        assert_invalid_token(response, "unknown kid in a burst", "unknown signing key");
    }
    thread::sleep(Duration::from_millis(300));
    let fetched = provider.requests() - before;
    println!(
        "{burst} unknown kids at once, slowest answered in {took:?}: {fetched} JWKS fetch(es)"
    );
    assert_eq!(
        fetched, 1,
        "{burst} tokens with unknown kids caused {fetched} JWKS fetches"
    );

    // Within the interval, more unknown kids cost nothing.
    for i in 0..10 {
        let response = bearer(
            &client,
            &gw,
            "/jwt",
            &rs_token(&keys().main, &random_kid(100 + i), &claims("eve")),
        );
        assert_invalid_token(
            &response,
            "unknown kid after the burst",
            "unknown signing key",
        );
    }
    assert_eq!(
        provider.requests(),
        before + 1,
        "refetches were not rate-limited"
    );
    let response = bearer(
        &client,
        &gw,
        "/jwt",
        &rs_token(&keys().main, "k1", &claims("amy")),
    );
    assert_eq!(response.status, 200, "{}", response.body);
}

#[test]
fn rotated_key_is_fetched_once_after_the_min_refetch_interval() {
    let svc = Upstream::spawn("svc");
    let (k1, k2) = (&keys().main, &keys().other);
    let provider = JwksServer::start(jwks_document(&[k1.jwk("k1")]));
    let interval = Duration::from_secs(1);
    let setup = Setup {
        jwks: Some((&provider, "1s")),
        ..Setup::default()
    };
    let gw = node(&template(&svc, &setup), "off").start();
    let client = Client::new();
    wait_fetches(&provider, 1);
    let response = bearer(&client, &gw, "/jwt", &rs_token(k1, "k1", &claims("amy")));
    assert_eq!(response.status, 200, "{}", response.body);

    // An unknown kid past the interval refetches; that fetch starts a new interval.
    thread::sleep(interval + Duration::from_millis(300));
    let unknown = rs_token(k1, &random_kid(0), &claims("x"));
    let new_kid = rs_token(k2, "k2", &claims("bea"));
    let before = provider.requests();
    let fetched_at = Instant::now();
    let response = bearer(&client, &gw, "/jwt", &unknown);
    assert_invalid_token(&response, "unknown kid", "unknown signing key");
    assert_eq!(
        provider.requests(),
        before + 1,
        "unknown kid did not refetch"
    );

    // The provider rotates in k2. Inside the interval the gateway does not look again.
    provider.set_document(jwks_document(&[k1.jwk("k1"), k2.jwk("k2")]));
    let response = bearer(&client, &gw, "/jwt", &new_kid);
    let inside = fetched_at.elapsed();
    assert!(
        inside < interval,
        "the machine is too slow for this check: {inside:?} passed"
    );
    assert_invalid_token(
        &response,
        "new kid inside the interval",
        "unknown signing key",
    );
    assert_eq!(
        provider.requests(),
        before + 1,
        "refetched within jwks_min_refetch_interval"
    );

    // Past it, the new kid triggers exactly one refetch and is accepted.
    thread::sleep((interval + Duration::from_millis(200)).saturating_sub(fetched_at.elapsed()));
    let response = bearer(&client, &gw, "/jwt", &new_kid);
    assert_eq!(response.status, 200, "rotated key k2: {}", response.body);
    assert_eq!(response.echo().header("x-consumer-id"), Some("bea"));
    assert_eq!(
        provider.requests(),
        before + 2,
        "one refetch for the new kid"
    );

    // Both keys now verify without further fetches.
    for (key, kid) in [(k2, "k2"), (k1, "k1"), (k2, "k2")] {
        let response = bearer(&client, &gw, "/jwt", &rs_token(key, kid, &claims("cal")));
        assert_eq!(response.status, 200, "{kid}: {}", response.body);
    }
    assert_eq!(provider.requests(), before + 2, "known kids caused fetches");
}

#[test]
fn cached_jwks_keeps_known_keys_working_while_the_provider_is_down() {
    let svc = Upstream::spawn("svc");
    let k1 = &keys().main;
    let provider = JwksServer::start(jwks_document(&[k1.jwk("k1")]));
    let interval = Duration::from_secs(1);
    let setup = Setup {
        jwks: Some((&provider, "1s")),
        ..Setup::default()
    };
    let gw = node(&template(&svc, &setup), "off").start();
    let client = Client::new();
    wait_fetches(&provider, 1);
    let response = bearer(&client, &gw, "/jwt", &rs_token(k1, "k1", &claims("amy")));
    assert_eq!(response.status, 200, "{}", response.body);

    // The provider fails: a refetch is attempted (and fails), the cached set stays.
    provider.set_status(500);
    thread::sleep(interval + Duration::from_millis(300));
    let before = provider.requests();
    let response = bearer(
        &client,
        &gw,
        "/jwt",
        &rs_token(k1, &random_kid(0), &claims("x")),
    );
    assert_invalid_token(
        &response,
        "unknown kid, provider 500",
        "unknown signing key",
    );
    assert_eq!(provider.requests(), before + 1, "no refetch attempt");
    // A failed attempt counts against the interval too: no hammering a failing provider.
    let again = rs_token(k1, &random_kid(1), &claims("x"));
    assert_invalid_token(
        &bearer(&client, &gw, "/jwt", &again),
        "unknown kid again, provider 500",
        "unknown signing key",
    );
    assert_eq!(
        provider.requests(),
        before + 1,
        "refetched a failing provider within the interval"
    );
    for round in 0..3 {
        let token = rs_token(k1, "k1", &claims("amy"));
        let (response, took) = timed(|| bearer(&client, &gw, "/jwt", &token));
        println!(
            "provider answering 500, round {round}: known kid {} in {took:?}",
            response.status
        );
        assert_eq!(
            response.status, 200,
            "known kid, provider 500: {}",
            response.body
        );
        assert_eq!(response.echo().header("x-consumer-id"), Some("amy"));
    }

    // The provider is gone altogether.
    provider.stop();
    thread::sleep(interval + Duration::from_millis(300));
    let unknown = rs_token(k1, &random_kid(2), &claims("x"));
    let (response, took) = timed(|| bearer(&client, &gw, "/jwt", &unknown));
    assert_invalid_token(
        &response,
        "unknown kid, provider down",
        "unknown signing key",
    );
    assert!(
        took < Duration::from_secs(2),
        "unknown kid took {took:?} with the provider down"
    );
    for round in 0..3 {
        let token = rs_token(k1, "k1", &claims("amy"));
        let (response, took) = timed(|| bearer(&client, &gw, "/jwt", &token));
        println!(
            "provider stopped, round {round}: known kid {} in {took:?}",
            response.status
        );
        assert_eq!(
            response.status, 200,
            "known kid, provider down: {}",
            response.body
        );
    }
}

#[test]
fn revoked_jti_is_rejected_on_every_node_within_100ms() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let setup = Setup {
        redis: Some(&redis),
        ..Setup::default()
    };
    let config = template(&svc, &setup);
    let a = node(&config, "off").start();
    let b = node(&config, "off").start();
    let client = Client::new();
    // A keep-alive connection of its own, so the polling loop measures the gateway, not connects.
    let poller = Client::with_timeout(Duration::from_secs(2));

    // Control: B really answers a warm token from its local tier. Revoke one behind the
    // gateways' backs (written to Redis, no invalidation published): B goes on accepting it,
    // while A, which never saw it, reads Redis and refuses it. So the 401s measured below
    // come from the invalidation, not from B re-reading Redis.
    let control_jti = format!("control-{}", unix_now());
    let control = hs_token(&with(claims("carl"), "jti", json!(control_jti)));
    for _ in 0..2 {
        let response = bearer(&poller, &b, "/jwt", &control);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let key = format!("{PREFIX}revoked-jti:{{{control_jti}}}");
    let set = redis
        .command(&["SET", &key, "1", "EX", "600"])
        .expect("SET");
    assert_eq!(set, "+OK");
    let response = bearer(&poller, &b, "/jwt", &control);
    assert_eq!(
        response.status, 200,
        "B does not cache tokens: {}",
        response.body
    );
    let response = bearer(&client, &a, "/jwt", &control);
    assert_error(&response, 401, "credentials_revoked");

    let mut measured = Vec::new();
    for round in 0..5 {
        let jti = format!("tok-{round}-{}", unix_now());
        let exp = unix_now() + 600;
        let token = hs_token(&with(
            with(claims(&format!("dan{round}")), "jti", json!(jti)),
            "exp",
            json!(exp),
        ));
        assert_eq!(bearer(&client, &a, "/jwt", &token).status, 200);
        let hits_before = local_hits(&b);
        for _ in 0..4 {
            let response = bearer(&poller, &b, "/jwt", &token);
            assert_eq!(response.status, 200, "{}", response.body);
        }
        let hits = local_hits(&b) - hits_before;
        assert!(
            hits >= 3.0,
            "B served the token from its local tier {hits} times of 4"
        );

        let sent = Instant::now();
        let revoked = admin_post(
            &client,
            &a,
            "/revocations",
            &json!({"jti": jti, "exp": exp}),
        );
        let answered = Instant::now();
        assert_eq!(revoked.status, 201, "POST /revocations: {}", revoked.body);

        let mut polls = 0;
        let rejected_at = loop {
            let response = bearer(&poller, &b, "/jwt", &token);
            polls += 1;
            if response.status != 200 {
                let at = Instant::now();
                assert_error(&response, 401, "credentials_revoked");
                let challenge = response.header("www-authenticate").unwrap_or_default();
                assert!(
                    challenge.starts_with("Bearer error=\"invalid_token\""),
                    "revoked: WWW-Authenticate {challenge:?}"
                );
                break at;
            }
            assert!(
                answered.elapsed() < Duration::from_secs(5),
                "B still accepts the token 5 s after A revoked its jti"
            );
        };
        let propagation = rejected_at - answered;
        println!(
            "jti revocation A->B, round {round}: first 401 on B {propagation:?} after A's \
             response ({:?} after it was sent, {polls} polls)",
            rejected_at - sent
        );
        measured.push(propagation);
        assert_error(
            &bearer(&client, &a, "/jwt", &token),
            401,
            "credentials_revoked",
        );
        assert_error(
            &bearer(&poller, &b, "/jwt", &token),
            401,
            "credentials_revoked",
        );
    }
    let worst = measured.iter().max().copied().unwrap_or_default();
    println!("jti revocation propagation: worst {worst:?} of {measured:?}");
    assert!(
        worst < PROPAGATION_TARGET,
        "revocation took {worst:?} to reach B (target {PROPAGATION_TARGET:?}); all: {measured:?}"
    );

    // The revocation needs the admin token.
    let anonymous = client.post(
        &a.admin_url("/revocations"),
        &[("content-type", "application/json")],
        json!({"jti": "x", "exp": unix_now() + 60})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
}

#[test]
fn token_without_the_required_scope_gets_403_insufficient_scope() {
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, &Setup::default()), "off").start();
    let client = Client::new();
    let denied = [
        ("read only", json!("orders:read")),
        ("read only, array", json!(["orders:read"])),
        ("similar name", json!("orders:writer orders:wr")),
        ("no scope", Value::Null),
    ];
    let granted = [
        ("read and write", json!("orders:read orders:write")),
        ("write, array", json!(["orders:write"])),
    ];
    // Twice each: verified, then from the local tier.
    for (what, scope) in &denied {
        let token = hs_token(&with(claims("erin"), "scope", scope.clone()));
        for _ in 0..2 {
            let response = bearer(&client, &gw, "/scoped", &token);
            assert_eq!(response.status, 403, "{what}: {}", response.body);
            assert_error(&response, 403, "insufficient_scope");
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer error=\"insufficient_scope\""),
                "{what}"
            );
        }
        // The same token is fine where no scope is required.
        assert_eq!(bearer(&client, &gw, "/jwt", &token).status, 200, "{what}");
    }
    for (what, scope) in &granted {
        let token = hs_token(&with(claims("frank"), "scope", scope.clone()));
        for _ in 0..2 {
            let response = bearer(&client, &gw, "/scoped", &token);
            assert_eq!(response.status, 200, "{what}: {}", response.body);
            assert_eq!(response.echo().header("x-consumer-id"), Some("frank"));
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            decisions(&gw, "scoped", "jwt", "insufficient_scope") == 8.0
                && decisions(&gw, "scoped", "jwt", "ok") == 4.0
        }),
        "\n{}",
        gw.metrics()
    );
}

#[test]
fn route_with_api_key_and_jwt_accepts_either() {
    let svc = Upstream::spawn("svc");
    let setup = Setup {
        api_key: true,
        ..Setup::default()
    };
    let gw = node(&template(&svc, &setup), "off").start();
    let client = Client::new();
    let token = hs_token(&with(claims("alice"), "email", json!("alice@example.com")));

    let response = client.get_with(&gw.url("/either/a"), &[("x-api-key", STATIC_KEY)]);
    assert_eq!(response.status, 200, "API key: {}", response.body);
    let echo = response.echo();
    assert_eq!(echo.header("x-consumer-id"), Some("batch-job"));
    assert_eq!(
        echo.header("x-api-key"),
        None,
        "the key reached the upstream"
    );

    let response = bearer(&client, &gw, "/either/b", &token);
    assert_eq!(response.status, 200, "JWT: {}", response.body);
    let echo = response.echo();
    assert_eq!(echo.header("x-consumer-id"), Some("alice"));
    assert_eq!(echo.header("x-user-email"), Some("alice@example.com"));
    assert_eq!(
        echo.header("authorization"),
        None,
        "the token reached the upstream"
    );

    // Neither: the challenge names the route's first method.
    let missing = client.get(&gw.url("/either"));
    assert_error(&missing, 401, "credentials_missing");
    assert_eq!(missing.header("www-authenticate"), Some("ApiKey"));

    // A bad credential of either kind is refused as that kind.
    let bad_key = client.get_with(&gw.url("/either"), &[("x-api-key", "pc_notAKey")]);
    assert_error(&bad_key, 401, "invalid_api_key");
    let expired = hs_token(&with(claims("alice"), "exp", json!(unix_now() - 3600)));
    assert_invalid_token(
        &bearer(&client, &gw, "/either", &expired),
        "expired token on /either",
        "token expired",
    );

    // Both present: the first method listed (api_key) decides, and both are stripped.
    let response = bearer_with(
        &client,
        &gw,
        "/either/c",
        &expired,
        &[("x-api-key", STATIC_KEY)],
    );
    assert_eq!(response.status, 200, "key + bad token: {}", response.body);
    let echo = response.echo();
    assert_eq!(echo.header("x-consumer-id"), Some("batch-job"));
    assert_eq!(echo.header("x-api-key"), None);
    assert_eq!(echo.header("authorization"), None);
    assert_eq!(echo.header("x-user-email"), None);
}

#[test]
fn tokens_never_reach_logs() {
    let svc = Upstream::spawn("svc");
    let gw = node(&template(&svc, &Setup::default()), "stdout").start();
    let client = Client::new();
    let valid = hs_token(&with(claims("kate"), "email", json!("kate@example.com")));
    let forwarded = hs_token(&claims("liam"));
    let expired = hs_token(&with(claims("kate"), "exp", json!(unix_now() - 3600)));
    let foreign = sign(
        Algorithm::HS256,
        "hs1",
        &claims("kate"),
        &EncodingKey::from_secret(b"a-secret-the-gateway-does-not-have"),
    );
    let unknown_kid = rs_token(&keys().main, "nobody", &claims("kate"));
    let (h, rest) = valid.split_once('.').expect("segments");
    let malformed = format!("{h}.{rest}.extra");
    let in_query = hs_token(&claims("mia"));

    let requests: Vec<(String, &str, u16)> = vec![
        ("/jwt/a".into(), valid.as_str(), 200),
        ("/forward/b".into(), forwarded.as_str(), 200),
        ("/jwt/c".into(), expired.as_str(), 401),
        ("/jwt/d".into(), foreign.as_str(), 401),
        ("/jwt/e".into(), unknown_kid.as_str(), 401),
        ("/jwt/f".into(), malformed.as_str(), 401),
        ("/scoped/g".into(), valid.as_str(), 403),
        (
            format!("/public/h?access_token={in_query}"),
            valid.as_str(),
            200,
        ),
    ];
    for (path, token, status) in &requests {
        let response = bearer(&client, &gw, path, token);
        assert_eq!(response.status, *status, "{path}: {}", response.body);
    }

    // Access-log lines are written after the response; wait for all of them.
    let expected = requests.len();
    assert!(
        eventually(Duration::from_secs(5), || gw.stdout_lines().len()
            >= expected),
        "{} access-log lines, want {expected}:\n{}",
        gw.stdout_lines().len(),
        gw.stdout()
    );
    let stdout = gw.stdout();
    let stderr = gw.stderr();
    let tokens = [
        ("valid token", valid.as_str()),
        ("forwarded token", forwarded.as_str()),
        ("expired token", expired.as_str()),
        ("foreign-key token", foreign.as_str()),
        ("unknown-kid token", unknown_kid.as_str()),
        ("malformed token", malformed.as_str()),
        ("token in the query", in_query.as_str()),
    ];
    for (what, token) in tokens {
        // The signature alone is as good as the token for matching it in a log.
        let signature = token.rsplit('.').next().unwrap_or(token);
        for (part, needle) in [("token", token), ("signature", signature)] {
            assert!(
                !stdout.contains(needle),
                "{what} ({part}) in the access log:\n{stdout}"
            );
            assert!(
                !stderr.contains(needle),
                "{what} ({part}) on stderr:\n{stderr}"
            );
        }
    }
    for (what, secret) in [("HS256 secret", JWT_SECRET), ("admin token", ADMIN_TOKEN)] {
        assert!(!stdout.contains(secret), "{what} in the access log");
        assert!(!stderr.contains(secret), "{what} on stderr");
    }
    assert!(stdout.contains("[REDACTED]"), "nothing redacted?\n{stdout}");
    for line in gw.stdout_lines() {
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|e| panic!("access-log line is not JSON ({e}): {line}"));
    }
}

#[test]
fn store_outage_keeps_cached_tokens_and_answers_new_jti_tokens_503_fast() {
    let redis = Redis::start();
    let svc = Upstream::spawn("svc");
    let setup = Setup {
        redis: Some(&redis),
        ..Setup::default()
    };
    let gw = node(&template(&svc, &setup), "off").start();
    let client = Client::new();

    let cached = hs_token(&with(claims("henry"), "jti", json!("cached-jti-1")));
    let hits_before = local_hits(&gw);
    for _ in 0..3 {
        assert_eq!(bearer(&client, &gw, "/jwt", &cached).status, 200);
    }
    assert!(
        local_hits(&gw) - hits_before >= 2.0,
        "the token never came from the local tier"
    );

    drop(redis);
    let noticed = eventually(Duration::from_secs(5), || {
        let readyz = client.get(&gw.admin_url("/readyz")).json();
        readyz["store"]["state"].as_str() == Some("unreachable")
    });
    assert!(
        noticed,
        "readyz still reports the store ok 5 s after Redis died"
    );

    for round in 0..3 {
        let (response, took) = timed(|| bearer(&client, &gw, "/jwt", &cached));
        println!(
            "store down, round {round}: cached token {} in {took:?}",
            response.status
        );
        assert_eq!(
            response.status, 200,
            "a token in the local tier must survive a store outage: {}",
            response.body
        );
        assert_eq!(response.echo().header("x-consumer-id"), Some("henry"));
        assert!(took < OUTAGE_TARGET, "cached token took {took:?}");

        let fresh = hs_token(&with(
            claims("ivy"),
            "jti",
            json!(format!("new-jti-{round}")),
        ));
        let (response, took) = timed(|| bearer(&client, &gw, "/jwt", &fresh));
        println!(
            "store down, round {round}: new jti token {} in {took:?}",
            response.status
        );
        assert_error(&response, 503, "store_unavailable");
        assert!(took < OUTAGE_TARGET, "store_unavailable took {took:?}");
    }

    // A token without a jti has nothing to look up in the store.
    let stateless = hs_token(&claims("jack"));
    let (response, took) = timed(|| bearer(&client, &gw, "/jwt", &stateless));
    println!(
        "store down: token without jti {} in {took:?}",
        response.status
    );
    assert_eq!(response.status, 200, "token without jti: {}", response.body);
    // An invalid token is still refused as invalid, not as a store problem.
    let expired = hs_token(&with(
        with(claims("ivy"), "jti", json!("expired-jti")),
        "exp",
        json!(unix_now() - 3600),
    ));
    assert_invalid_token(
        &bearer(&client, &gw, "/jwt", &expired),
        "expired token, store down",
        "token expired",
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            decisions(&gw, "jwt", "jwt", "store_error") >= 3.0
        }),
        "\n{}",
        gw.metrics()
    );
}

#[test]
fn key_removed_from_the_jwks_stops_cached_tokens_after_the_next_fetch() {
    let svc = Upstream::spawn("svc");
    let k1 = &keys().main;
    let k2 = RsaKey::generate();
    let provider = JwksServer::start(jwks_document(&[k1.jwk("k1"), k2.jwk("k2")]));
    provider.set_cache_control(Some("max-age=1"));
    let setup = Setup {
        jwks: Some((&provider, "1s")),
        ..Setup::default()
    };
    let gw = node(&template(&svc, &setup), "off").start();
    let client = Client::new();
    wait_fetches(&provider, 1);
    let token = rs_token(&k2, "k2", &claims("kim"));
    for _ in 0..3 {
        let response = bearer(&client, &gw, "/jwt", &token);
        assert_eq!(response.status, 200, "{}", response.body);
    }

    // The provider pulls k2 (say it leaked); the next scheduled fetch must end its tokens,
    // even those whose decision is cached.
    let fetched = provider.requests();
    provider.set_document(jwks_document(&[k1.jwk("k1")]));
    wait_fetches(&provider, fetched + 1);
    let rejected = eventually(Duration::from_secs(3), || {
        bearer(&client, &gw, "/jwt", &token).status == 401
    });
    assert!(
        rejected,
        "a token signed by a removed key was still accepted from the cache"
    );
    let response = bearer(&client, &gw, "/jwt", &rs_token(k1, "k1", &claims("kim")));
    assert_eq!(response.status, 200, "{}", response.body);
}

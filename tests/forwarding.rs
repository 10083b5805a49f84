//! What a client may say about itself, and what only a trusted proxy may say about the client:
//! forwarding headers from untrusted peers are dropped or replaced, from trusted proxies kept;
//! identity headers never pass in any spelling an upstream folds to the same name; an upstream's
//! `host_header` beats `preserve_host`; and `by = "ip"` limits and the access log see the real
//! client behind a trusted proxy, never an address the client picked.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::config::{route, upstream, Preamble};
use support::jwks::sign;
use support::{assert_error, eventually, unix_now, Client, Echo, Gateway, Response, Upstream};

/// `server.trusted_proxies` making the test client (on loopback) a trusted proxy.
const TRUSTED: &str = "trusted_proxies = [\"127.0.0.1/32\"]";
/// The config-declared API key of consumer `alice` (given to the gateway as `STATIC_KEY`).
const STATIC_KEY: &str = "static-key-for-the-forwarding-tests-93a1";
/// HS256 secret of the JWT key `hs1` (given as `JWT_SECRET`).
const JWT_SECRET: &str = "hs256-secret-for-the-forwarding-tests-7d0e";

/// Headers that claim something about the client or the original request, each with a value a
/// client would forge, in the spellings a client would send.
const FORGED: [(&str, &str); 19] = [
    ("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Original-URL", "/admin/users"),
    ("X-Rewrite-URL", "/admin/users"),
    ("X-Forwarded-Server", "evil.example"),
    ("X-Forwarded-Ssl", "on"),
    ("X-Forwarded-Scheme", "https"),
    ("X-Url-Scheme", "https"),
    ("Front-End-Https", "on"),
    ("X-Client-IP", "6.6.6.6"),
    ("True-Client-IP", "6.6.6.6"),
    ("CF-Connecting-IP", "6.6.6.6"),
    ("X-Cluster-Client-IP", "6.6.6.6"),
    ("Client-IP", "6.6.6.6"),
    ("X-Forwarded-Uri", "/admin"),
    ("X-Original-Host", "evil.example"),
    ("X-Forwarded-Host", "evil.example"),
];

/// `_` spellings that CGI/WSGI/PHP upstreams read as the `-` header of the same name.
const UNDERSCORED: [(&str, &str); 3] = [
    ("X_Forwarded_For", "6.6.6.6"),
    ("X_Real_IP", "6.6.6.6"),
    ("X-Forwarded_Proto", "https"),
];

/// The preamble with `server_extra` lines in `[server]` and the access log on stdout if `log`.
fn preamble(server_extra: &str, log: bool) -> String {
    Preamble::new()
        .server_extra(server_extra)
        .access_log(if log { "stdout" } else { "off" })
        .render()
}

/// A gateway with `server_extra` in `[server]` and one route `/` to `svc`.
fn plain_gateway(svc: &Upstream, server_extra: &str) -> Gateway {
    let config = [
        preamble(server_extra, false),
        upstream("svc", &[svc], ""),
        route("svc", "svc", ""),
    ]
    .concat();
    Gateway::start(&config)
}

/// Headers of the upstream's request whose names fold (case, `_` as `-`) to `name`.
fn folded_names(echo: &Echo, name: &str) -> Vec<String> {
    echo.0["header_list"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|pair| pair[0].as_str())
                .filter(|n| n.replace('_', "-").eq_ignore_ascii_case(name))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The port of `host:port`.
fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or_default()
}

#[test]
fn forwarding_headers_from_an_untrusted_peer_are_dropped_or_replaced() {
    let svc = Upstream::spawn("svc");
    let gw = plain_gateway(&svc, "");
    let mut headers = vec![("Host", "svc.example.com"), ("X-Forwarded-For", "6.6.6.6")];
    headers.extend(FORGED);
    headers.extend(UNDERSCORED);
    let echo = Client::new().get_with(&gw.url("/fwd"), &headers).echo();

    for (name, _) in FORGED.iter().chain(&UNDERSCORED) {
        let name = name.replace('_', "-");
        let expected: &[&str] = match name.to_ascii_lowercase().as_str() {
            "x-real-ip" => &["x-real-ip"],
            "x-forwarded-port" => &["x-forwarded-port"],
            "x-forwarded-host" => &["x-forwarded-host"],
            "x-forwarded-for" => &["x-forwarded-for"],
            "x-forwarded-proto" => &["x-forwarded-proto"],
            _ => &[],
        };
        assert_eq!(
            folded_names(&echo, &name),
            expected,
            "{name}: only the gateway's own spelling may arrive; echo {:?}",
            echo.0
        );
    }
    assert_eq!(echo.header("x-real-ip"), Some("127.0.0.1"), "the TCP peer");
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echo.header("x-forwarded-host"), Some("svc.example.com"));
    assert_eq!(
        echo.header("x-forwarded-port"),
        Some(port_of(gw.proxy_addr())),
        "the port the client connected to"
    );
}

#[test]
fn forwarding_headers_from_a_trusted_proxy_are_kept_but_not_their_underscore_spellings() {
    let svc = Upstream::spawn("svc");
    let gw = plain_gateway(&svc, TRUSTED);
    let mut headers = vec![
        ("Host", "svc.example.com"),
        ("X-Forwarded-For", "6.6.6.6, 198.51.100.7"),
    ];
    headers.extend(FORGED);
    headers.extend(UNDERSCORED);
    let echo = Client::new().get_with(&gw.url("/fwd"), &headers).echo();

    for (name, value) in FORGED {
        if name.eq_ignore_ascii_case("x-real-ip") {
            continue;
        }
        assert_eq!(
            echo.header(name),
            Some(value),
            "{name} from a trusted proxy is kept"
        );
        assert_eq!(folded_names(&echo, name).len(), 1, "{name} once");
    }
    assert_eq!(
        echo.header("x-forwarded-for"),
        Some("6.6.6.6, 198.51.100.7, 127.0.0.1"),
        "the proxy's chain with the gateway's peer appended"
    );
    assert_eq!(
        echo.header("x-real-ip"),
        Some("198.51.100.7"),
        "X-Real-IP is the right-most untrusted hop, not what was sent"
    );
    for (name, _) in UNDERSCORED {
        assert!(
            echo.header(&name.to_ascii_lowercase()).is_none(),
            "{name} is not a spelling the trusted proxy vouches for; echo {:?}",
            echo.0
        );
    }
    assert_eq!(folded_names(&echo, "x-forwarded-for").len(), 1);
    assert_eq!(folded_names(&echo, "x-real-ip").len(), 1);
}

/// A config with a config-declared API key of `alice`, the JWT key `hs1` mapping the `email`
/// claim to `x-user-email`, and routes `/keyed` (API key), `/jwt` (JWT) and `/public`.
fn identity_config(svc: &Upstream) -> String {
    [
        preamble("", false),
        "\n[auth.api_key]\nheader = \"x-api-key\"\nkeys = [{ id = \"k1\", consumer = \"alice\", \
         key_env = \"STATIC_KEY\" }]\n"
            .to_string(),
        "\n[auth.jwt]\nissuer = \"https://idp.test\"\naudiences = [\"api\"]\n\
         consumer_claim = \"sub\"\nclaims_to_headers = { email = \"x-user-email\" }\n\
         \n[[auth.jwt.keys]]\nkid = \"hs1\"\nalgorithm = \"HS256\"\nsecret_env = \"JWT_SECRET\"\n"
            .to_string(),
        upstream("svc", &[svc], ""),
        route("keyed", "svc", "path = \"/keyed\"\nauth = [\"api_key\"]"),
        route("jwt", "svc", "path = \"/jwt\"\nauth = [\"jwt\"]"),
        route("public", "svc", "path = \"/public\""),
    ]
    .concat()
}

fn identity_gateway(svc: &Upstream) -> Gateway {
    Gateway::builder(&identity_config(svc))
        .env("STATIC_KEY", STATIC_KEY)
        .env("JWT_SECRET", JWT_SECRET)
        .start()
}

/// A valid HS256 token for `sub`, with `extra` claims.
fn token(sub: &str, extra: Value) -> String {
    let now = unix_now();
    let mut claims = json!({"iss": "https://idp.test", "aud": "api", "sub": sub,
                            "iat": now, "exp": now + 600});
    if let (Some(map), Some(more)) = (claims.as_object_mut(), extra.as_object()) {
        map.extend(more.clone());
    }
    sign(
        Algorithm::HS256,
        "hs1",
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
}

/// The spellings of `X-Consumer-Id: admin` a client would try.
const SPOOFED_CONSUMER: [(&str, &str); 3] = [
    ("X_Consumer_Id", "admin"),
    ("x-consumer-id", "admin"),
    ("X-CONSUMER_ID", "admin"),
];

#[test]
fn spoofed_consumer_id_in_any_spelling_is_dropped_on_authenticated_and_public_routes() {
    let svc = Upstream::spawn("svc");
    let gw = identity_gateway(&svc);
    let client = Client::new();

    let mut keyed = vec![("x-api-key", STATIC_KEY)];
    keyed.extend(SPOOFED_CONSUMER);
    let response = client.get_with(&gw.url("/keyed"), &keyed);
    assert_eq!(response.status, 200, "{}", response.body);
    let echo = response.echo();
    assert_eq!(echo.header("x-consumer-id"), Some("alice"));
    assert_eq!(
        folded_names(&echo, "x-consumer-id"),
        ["x-consumer-id"],
        "only the gateway's header; echo {:?}",
        echo.0
    );

    let public = client
        .get_with(&gw.url("/public"), &SPOOFED_CONSUMER)
        .echo();
    assert!(
        folded_names(&public, "x-consumer-id").is_empty(),
        "no consumer header on an anonymous request; echo {:?}",
        public.0
    );

    let refused = client.get_with(&gw.url("/keyed"), &SPOOFED_CONSUMER);
    assert_error(&refused, 401, "credentials_missing");
}

#[test]
fn spoofed_claim_headers_in_any_spelling_are_dropped() {
    let svc = Upstream::spawn("svc");
    let gw = identity_gateway(&svc);
    let client = Client::new();
    let spoofed = [
        ("X_User_Email", "boss@example.com"),
        ("x-user-email", "boss@example.com"),
    ];

    let with_email = format!(
        "Bearer {}",
        token("amy", json!({"email": "amy@example.com"}))
    );
    let mut headers = vec![("authorization", with_email.as_str())];
    headers.extend(spoofed);
    let response = client.get_with(&gw.url("/jwt"), &headers);
    assert_eq!(response.status, 200, "{}", response.body);
    let echo = response.echo();
    assert_eq!(echo.header("x-user-email"), Some("amy@example.com"));
    assert_eq!(folded_names(&echo, "x-user-email"), ["x-user-email"]);
    assert_eq!(echo.header("x-consumer-id"), Some("amy"));

    let without_email = format!("Bearer {}", token("amy", json!({})));
    let mut headers = vec![("authorization", without_email.as_str())];
    headers.extend(spoofed);
    let echo = client.get_with(&gw.url("/jwt"), &headers).echo();
    assert!(
        folded_names(&echo, "x-user-email").is_empty(),
        "a token without the claim sets no header, and the client's go; echo {:?}",
        echo.0
    );

    let public = client.get_with(&gw.url("/public"), &spoofed).echo();
    assert!(folded_names(&public, "x-user-email").is_empty());
}

#[test]
fn upstream_host_header_wins_over_preserve_host() {
    let svc = Upstream::spawn("svc");
    let config = [
        preamble("", false),
        upstream("named", &[&svc], r#"host_header = "backend.internal""#),
        upstream("plain", &[&svc], ""),
        route("named", "named", "path = \"/named\"\npreserve_host = true"),
        route(
            "preserved",
            "plain",
            "path = \"/preserved\"\npreserve_host = true",
        ),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let client = Client::new();
    let host = [("Host", "client.example.com")];

    let named = client.get_with(&gw.url("/named"), &host).echo();
    assert_eq!(named.header("host"), Some("backend.internal"));
    assert_eq!(
        named.header("x-forwarded-host"),
        Some("client.example.com"),
        "the client's host is still told in X-Forwarded-Host"
    );
    let preserved = client.get_with(&gw.url("/preserved"), &host).echo();
    assert_eq!(preserved.header("host"), Some("client.example.com"));
}

/// A gateway (access log on stdout) with `server_extra` and a route `/limited` allowing two
/// requests a minute per client IP.
fn limited_gateway(svc: &Upstream, server_extra: &str) -> Gateway {
    let config = [
        preamble(server_extra, true),
        upstream("svc", &[svc], ""),
        route(
            "limited",
            "svc",
            "path = \"/limited\"\nrate_limits = [{ name = \"per-ip\", by = \"ip\", limit = 2, \
             window = \"60s\" }]",
        ),
    ]
    .concat();
    Gateway::start(&config)
}

/// `GET /limited` with request id `id` and, if given, that `X-Forwarded-For`.
fn hit(gw: &Gateway, id: &str, xff: Option<&str>) -> Response {
    let mut headers = vec![("x-request-id", id)];
    if let Some(xff) = xff {
        headers.push(("x-forwarded-for", xff));
    }
    Client::new().get_with(&gw.url("/limited"), &headers)
}

/// The `client_ip` of the access-log line of request `id`, waiting up to 5 s for it.
fn logged_client_ip(gw: &Gateway, id: &str) -> String {
    let find = || {
        gw.stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["request_id"].as_str() == Some(id))
    };
    eventually(Duration::from_secs(5), || find().is_some());
    let entry = find().unwrap_or_else(|| panic!("no access-log line for {id}:\n{}", gw.stdout()));
    entry["client_ip"].as_str().unwrap_or("null").to_string()
}

#[test]
fn clients_behind_a_trusted_proxy_get_their_own_ip_buckets_and_log_lines() {
    let svc = Upstream::spawn("svc");
    let gw = limited_gateway(&svc, TRUSTED);
    let a = Some("198.51.100.1");

    assert_eq!(hit(&gw, "a-1", a).status, 200);
    assert_eq!(hit(&gw, "a-2", a).status, 200);
    assert_error(&hit(&gw, "a-3", a), 429, "rate_limited");
    let b = hit(&gw, "b-1", Some("198.51.100.2"));
    assert_eq!(
        b.status, 200,
        "another client has its own bucket: {}",
        b.body
    );
    // A spoofed left-most entry does not move a client into another bucket.
    let spoofed = hit(&gw, "a-spoof", Some("198.51.100.2, 198.51.100.1"));
    assert_error(&spoofed, 429, "rate_limited");
    assert_error(
        &hit(&gw, "a-spoof-2", Some("6.6.6.6, 198.51.100.1")),
        429,
        "rate_limited",
    );
    // Hops appended by trusted proxies are skipped to find the client.
    assert_error(
        &hit(&gw, "a-via", Some("198.51.100.1, 127.0.0.1")),
        429,
        "rate_limited",
    );

    for (id, ip) in [
        ("a-1", "198.51.100.1"),
        ("b-1", "198.51.100.2"),
        ("a-spoof", "198.51.100.1"),
        ("a-via", "198.51.100.1"),
    ] {
        assert_eq!(logged_client_ip(&gw, id), ip, "access log of {id}");
    }
}

#[test]
fn malformed_xff_from_a_trusted_proxy_counts_against_the_proxy_itself() {
    let svc = Upstream::spawn("svc");
    let gw = limited_gateway(&svc, TRUSTED);

    assert_eq!(hit(&gw, "bad-1", Some("unknown")).status, 200);
    assert_eq!(
        hit(&gw, "bad-2", Some("6.6.6.6, 198.51.100.9:4711")).status,
        200
    );
    assert_error(
        &hit(&gw, "bad-3", Some("[2001:db8::1]")),
        429,
        "rate_limited",
    );
    assert_error(&hit(&gw, "none", None), 429, "rate_limited");
    assert_eq!(
        hit(&gw, "good", Some("198.51.100.9")).status,
        200,
        "a well-formed client address has its own bucket"
    );
    for id in ["bad-1", "bad-2", "bad-3", "none"] {
        assert_eq!(logged_client_ip(&gw, id), "127.0.0.1", "access log of {id}");
    }
    assert_eq!(logged_client_ip(&gw, "good"), "198.51.100.9");
}

#[test]
fn ip_limits_ignore_xff_from_an_untrusted_peer() {
    let svc = Upstream::spawn("svc");
    let gw = limited_gateway(&svc, "");

    assert_eq!(hit(&gw, "u-1", Some("198.51.100.1")).status, 200);
    assert_eq!(hit(&gw, "u-2", Some("198.51.100.2")).status, 200);
    assert_error(&hit(&gw, "u-3", Some("198.51.100.3")), 429, "rate_limited");
    assert_eq!(logged_client_ip(&gw, "u-2"), "127.0.0.1");
}

#[test]
fn consistent_hash_on_client_ip_uses_the_client_behind_a_trusted_proxy() {
    let a = Upstream::spawn("a");
    let b = Upstream::spawn("b");
    let c = Upstream::spawn("c");
    let config = [
        preamble(TRUSTED, false),
        upstream(
            "pool",
            &[&a, &b, &c],
            "selection = \"consistent_hash\"\nhash_key = \"client_ip\"",
        ),
        route("all", "pool", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let client = Client::new();

    let mut clients_per_peer: HashMap<String, usize> = HashMap::new();
    for i in 1..=24 {
        let xff = format!("6.6.6.6, 198.51.100.{i}");
        let spoofed = format!("203.0.113.{i}, 198.51.100.{i}");
        let first = client
            .get_with(&gw.url("/ch"), &[("x-forwarded-for", &xff)])
            .echo();
        let again = client
            .get_with(&gw.url("/ch"), &[("x-forwarded-for", &spoofed)])
            .echo();
        assert_eq!(
            first.upstream(),
            again.upstream(),
            "client 198.51.100.{i} moved when its left-most entry changed"
        );
        *clients_per_peer
            .entry(first.upstream().to_string())
            .or_insert(0) += 1;
    }
    assert!(
        clients_per_peer.len() >= 2,
        "24 clients behind one proxy all hashed to one peer: {clients_per_peer:?}"
    );
}

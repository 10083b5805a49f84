//! Routing: which route takes a request, what reaches the upstream, and the error responses
//! when nothing does.

mod support;

use support::config::{route, upstream, Preamble, PREAMBLE};
use support::{assert_error, raw, Client, Gateway, Response, Upstream};

/// Sends `GET path` with `Host: host` through the gateway.
fn get_host(gw: &Gateway, host: &str, path: &str) -> Response {
    Client::new().get_with(&gw.url(path), &[("Host", host)])
}

/// The upstream that answered `GET path` with `Host: host`.
fn routed_to(gw: &Gateway, host: &str, path: &str) -> String {
    let response = get_host(gw, host, path);
    assert_eq!(
        response.status, 200,
        "GET {path} (Host: {host}): {}",
        response.body
    );
    response.echo().upstream().to_string()
}

/// A 32-character lowercase hex id, as the gateway generates.
fn is_generated_id(id: &str) -> bool {
    id.len() == 32
        && id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

#[test]
fn exact_host_beats_longest_wildcard_which_beats_any_host() {
    let exact = Upstream::spawn("exact");
    let wild = Upstream::spawn("wild");
    let wild_long = Upstream::spawn("wild-long");
    let any = Upstream::spawn("any");
    let config = [
        PREAMBLE.to_string(),
        upstream("exact", &[&exact], ""),
        upstream("wild", &[&wild], ""),
        upstream("wild-long", &[&wild_long], ""),
        upstream("any", &[&any], ""),
        route("any-host", "any", ""),
        route("wildcard", "wild", r#"hosts = ["*.example.com"]"#),
        route(
            "longer-wildcard",
            "wild-long",
            r#"hosts = ["*.api.example.com"]"#,
        ),
        route("exact-host", "exact", r#"hosts = ["api.example.com"]"#),
    ]
    .concat();
    let gw = Gateway::start(&config);

    assert_eq!(routed_to(&gw, "api.example.com", "/"), "exact");
    assert_eq!(routed_to(&gw, "www.example.com", "/"), "wild");
    assert_eq!(
        routed_to(&gw, "a.b.example.com", "/x"),
        "wild",
        "a wildcard covers several labels"
    );
    assert_eq!(
        routed_to(&gw, "v1.api.example.com", "/"),
        "wild-long",
        "the longest wildcard wins"
    );
    assert_eq!(routed_to(&gw, "x.y.api.example.com", "/"), "wild-long");
    assert_eq!(
        routed_to(&gw, "example.com", "/"),
        "any",
        "a wildcard does not cover its apex"
    );
    assert_eq!(routed_to(&gw, "other.org", "/"), "any");
}

#[test]
fn wildcard_host_does_not_match_its_apex() {
    let wild = Upstream::spawn("wild");
    let config = [
        PREAMBLE.to_string(),
        upstream("wild", &[&wild], ""),
        route("wildcard", "wild", r#"hosts = ["*.example.com"]"#),
    ]
    .concat();
    let gw = Gateway::start(&config);

    assert_eq!(routed_to(&gw, "shop.example.com", "/"), "wild");
    assert_error(&get_host(&gw, "example.com", "/"), 404, "route_not_found");
    assert_error(
        &get_host(&gw, "notexample.com", "/"),
        404,
        "route_not_found",
    );
    assert_eq!(wild.hits(), 1);
}

#[test]
fn exact_path_beats_longest_prefix() {
    let root = Upstream::spawn("root");
    let api = Upstream::spawn("api");
    let v1 = Upstream::spawn("v1");
    let status = Upstream::spawn("status");
    let config = [
        PREAMBLE.to_string(),
        upstream("root", &[&root], ""),
        upstream("api", &[&api], ""),
        upstream("v1", &[&v1], ""),
        upstream("status", &[&status], ""),
        route("root", "root", r#"path = "/""#),
        route("api", "api", r#"path = "/api""#),
        route("v1", "v1", r#"path = "/api/v1""#),
        route(
            "status",
            "status",
            "path = \"/api/v1/status\"\npath_match = \"exact\"",
        ),
    ]
    .concat();
    let gw = Gateway::start(&config);

    assert_eq!(routed_to(&gw, "h", "/api/v1/status"), "status");
    assert_eq!(
        routed_to(&gw, "h", "/api/v1/status?verbose=1"),
        "status",
        "the query is not part of the path"
    );
    assert_eq!(
        routed_to(&gw, "h", "/api/v1/status/deep"),
        "v1",
        "an exact path does not cover sub-paths"
    );
    assert_eq!(routed_to(&gw, "h", "/api/v1/users"), "v1");
    assert_eq!(routed_to(&gw, "h", "/api/v2/users"), "api");
    assert_eq!(routed_to(&gw, "h", "/elsewhere"), "root");
}

#[test]
fn prefix_match_is_segment_aware() {
    let root = Upstream::spawn("root");
    let api = Upstream::spawn("api");
    let config = [
        PREAMBLE.to_string(),
        upstream("root", &[&root], ""),
        upstream("api", &[&api], ""),
        route("root", "root", r#"path = "/""#),
        route("api", "api", r#"path = "/api""#),
    ]
    .concat();
    let gw = Gateway::start(&config);

    assert_eq!(routed_to(&gw, "h", "/api"), "api");
    assert_eq!(routed_to(&gw, "h", "/api/"), "api");
    assert_eq!(routed_to(&gw, "h", "/api/x"), "api");
    assert_eq!(routed_to(&gw, "h", "/api?q=1"), "api");
    assert_eq!(
        routed_to(&gw, "h", "/apix"),
        "root",
        "/api must not match /apix"
    );
    assert_eq!(routed_to(&gw, "h", "/apix/y"), "root");
}

#[test]
fn method_specific_route_beats_any_method_route() {
    let writes = Upstream::spawn("writes");
    let anything = Upstream::spawn("anything");
    let config = [
        PREAMBLE.to_string(),
        upstream("writes", &[&writes], ""),
        upstream("anything", &[&anything], ""),
        route("things-any", "anything", r#"path = "/things""#),
        route(
            "things-write",
            "writes",
            "path = \"/things\"\nmethods = [\"POST\", \"PUT\"]",
        ),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let client = Client::new();

    let post = client.post(&gw.url("/things"), &[], b"{}");
    assert_eq!(post.status, 200, "{}", post.body);
    assert_eq!(post.echo().upstream(), "writes");
    assert_eq!(
        client
            .send("PUT", &gw.url("/things/1"), &[], Some(b"{}"))
            .echo()
            .upstream(),
        "writes"
    );
    assert_eq!(client.get(&gw.url("/things")).echo().upstream(), "anything");
    assert_eq!(
        client
            .send("DELETE", &gw.url("/things/1"), &[], None)
            .echo()
            .upstream(),
        "anything"
    );
}

#[test]
fn unmatched_request_gets_404_json() {
    let api = Upstream::spawn("api");
    let config = [
        PREAMBLE.to_string(),
        upstream("api", &[&api], ""),
        route(
            "api",
            "api",
            "path = \"/api\"\nhosts = [\"api.example.com\"]",
        ),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let wrong_path = get_host(&gw, "api.example.com", "/nothing/here");
    assert_error(&wrong_path, 404, "route_not_found");
    let wrong_host = get_host(&gw, "www.example.com", "/api");
    assert_error(&wrong_host, 404, "route_not_found");
    assert_eq!(api.hits(), 0, "a 404 never reaches an upstream");
}

#[test]
fn wrong_method_gets_405_json_with_allow_header() {
    let items = Upstream::spawn("items");
    let config = [
        PREAMBLE.to_string(),
        upstream("items", &[&items], ""),
        route(
            "items",
            "items",
            "path = \"/items\"\nmethods = [\"GET\", \"POST\"]",
        ),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let response = Client::new().send("DELETE", &gw.url("/items/7"), &[], None);
    assert_error(&response, 405, "method_not_allowed");
    let allow = response
        .header("allow")
        .unwrap_or_else(|| panic!("405 without Allow: {:?}", response.headers));
    let allowed: Vec<String> = allow
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .collect();
    assert!(allowed.contains(&"GET".to_string()), "Allow: {allow}");
    assert!(allowed.contains(&"POST".to_string()), "Allow: {allow}");
    assert!(!allowed.contains(&"DELETE".to_string()), "Allow: {allow}");
    assert_eq!(items.hits(), 0);

    assert_eq!(Client::new().get(&gw.url("/items/7")).status, 200);
}

#[test]
fn strip_prefix_removes_the_matched_prefix_and_keeps_the_query() {
    let users = Upstream::spawn("users");
    let config = [
        PREAMBLE.to_string(),
        upstream("users", &[&users], ""),
        route("api", "users", "path = \"/api\"\nstrip_prefix = true"),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let client = Client::new();

    assert_eq!(
        client.get(&gw.url("/api/users?x=1")).echo().path(),
        "/users?x=1"
    );
    assert_eq!(
        client.get(&gw.url("/api/users/7/orders")).echo().path(),
        "/users/7/orders"
    );
    assert_eq!(client.get(&gw.url("/api")).echo().path(), "/");
    assert_eq!(client.get(&gw.url("/api/")).echo().path(), "/");
    assert_eq!(
        client.get(&gw.url("/api?x=1&y=2")).echo().path(),
        "/?x=1&y=2"
    );
}

#[test]
fn without_strip_prefix_the_path_is_forwarded_unchanged() {
    let users = Upstream::spawn("users");
    let config = [
        PREAMBLE.to_string(),
        upstream("users", &[&users], ""),
        route("api", "users", "path = \"/api\""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    assert_eq!(
        Client::new().get(&gw.url("/api/users?x=1")).echo().path(),
        "/api/users?x=1"
    );
}

#[test]
fn header_rules_add_and_remove_request_and_response_headers() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route(
            "svc",
            "svc",
            r#"path = "/"

[routes.request_headers]
add = { "x-added" = "by-gateway", "x-env" = "test" }
remove = ["x-remove-me"]

[routes.response_headers]
add = { "x-resp-added" = "yes" }
remove = ["x-upstream"]
"#,
        ),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let response = Client::new().get_with(
        &gw.url("/h"),
        &[
            ("X-Remove-Me", "gone"),
            ("X-Added", "from-client"),
            ("X-Untouched", "kept"),
        ],
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let echo = response.echo();
    assert_eq!(
        echo.header("x-added"),
        Some("by-gateway"),
        "add replaces a client value"
    );
    assert_eq!(echo.header_count("x-added"), 1);
    assert_eq!(echo.header("x-env"), Some("test"));
    assert_eq!(echo.header("x-remove-me"), None);
    assert_eq!(echo.header("x-untouched"), Some("kept"));

    assert_eq!(response.header("x-resp-added"), Some("yes"));
    assert_eq!(
        response.header("x-upstream"),
        None,
        "x-upstream was to be removed"
    );
}

#[test]
fn upstream_host_header_is_host_header_else_client_host_when_preserved_else_peer_address() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("named", &[&svc], r#"host_header = "backend.internal""#),
        upstream("plain", &[&svc], ""),
        route("named", "named", r#"path = "/named""#),
        route(
            "preserved",
            "plain",
            "path = \"/preserved\"\npreserve_host = true",
        ),
        route("plain", "plain", r#"path = "/plain""#),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let named = get_host(&gw, "client.example.com", "/named").echo();
    assert_eq!(named.header("host"), Some("backend.internal"));
    let preserved = get_host(&gw, "client.example.com", "/preserved").echo();
    assert_eq!(preserved.header("host"), Some("client.example.com"));
    let plain = get_host(&gw, "client.example.com", "/plain").echo();
    assert_eq!(plain.header("host"), Some(svc.addr().as_str()));
}

#[test]
fn well_formed_client_request_id_is_kept_forwarded_and_echoed() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("svc", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    for id in ["abc-123.DEF:4_5", "x", &"a".repeat(128)] {
        let response = Client::new().get_with(&gw.url("/id"), &[("X-Request-Id", id)]);
        assert_eq!(
            response.header("x-request-id"),
            Some(id),
            "response id for sent {id:?}"
        );
        assert_eq!(
            response.echo().header("x-request-id"),
            Some(id),
            "forwarded id for sent {id:?}"
        );
        assert_eq!(response.echo().header_count("x-request-id"), 1);
    }
}

#[test]
fn missing_or_malformed_request_id_is_replaced_by_a_generated_one() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("svc", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let client = Client::new();

    let first = client.get(&gw.url("/id"));
    let first_id = first
        .header("x-request-id")
        .expect("generated X-Request-Id")
        .to_string();
    assert!(
        is_generated_id(&first_id),
        "generated id {first_id:?} is not 32 lowercase hex chars"
    );
    assert_eq!(
        first.echo().header("x-request-id"),
        Some(first_id.as_str()),
        "upstream gets the same id"
    );
    let second_id = client
        .get(&gw.url("/id"))
        .header("x-request-id")
        .unwrap_or_default()
        .to_string();
    assert_ne!(first_id, second_id, "ids are unique");

    let too_long = "a".repeat(129);
    for bad in ["has space", "semi;colon", "slash/y", "", too_long.as_str()] {
        let response = client.get_with(&gw.url("/id"), &[("X-Request-Id", bad)]);
        let id = response
            .header("x-request-id")
            .unwrap_or_default()
            .to_string();
        assert!(
            is_generated_id(&id),
            "sent {bad:?}, got {id:?}; want a generated id"
        );
        assert_eq!(
            response.echo().header("x-request-id"),
            Some(id.as_str()),
            "sent {bad:?}"
        );
    }
}

#[test]
fn error_responses_carry_the_request_id() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("svc", "svc", r#"path = "/only""#),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let response = Client::new().get_with(&gw.url("/missing"), &[("X-Request-Id", "err-id-1")]);
    assert_error(&response, 404, "route_not_found");
    assert_eq!(response.header("x-request-id"), Some("err-id-1"));
}

#[test]
fn forwarded_headers_replace_what_an_untrusted_client_sent() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("svc", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let response = Client::new().get_with(
        &gw.url("/fwd"),
        &[
            ("Host", "svc.example.com"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
        ],
    );
    let echo = response.echo();
    assert_eq!(
        echo.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "untrusted XFF is replaced by the peer ip"
    );
    assert_eq!(echo.header_count("x-forwarded-for"), 1);
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echo.header("x-forwarded-host"), Some("svc.example.com"));
    assert_eq!(echo.header_count("x-forwarded-host"), 1);
}

#[test]
fn trusted_proxy_xff_is_appended_to() {
    let svc = Upstream::spawn("svc");
    let preamble = Preamble::new()
        .server_extra("trusted_proxies = [\"127.0.0.1/32\"]")
        .render();
    let config = [
        preamble,
        upstream("svc", &[&svc], ""),
        route("svc", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let client = Client::new();

    let with_xff = client.get_with(
        &gw.url("/fwd"),
        &[
            ("Host", "svc.example.com"),
            ("X-Forwarded-For", "203.0.113.9"),
        ],
    );
    let echo = with_xff.echo();
    assert_eq!(
        echo.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(echo.header_count("x-forwarded-for"), 1);
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echo.header("x-forwarded-host"), Some("svc.example.com"));

    let without_xff = client
        .get_with(&gw.url("/fwd"), &[("Host", "svc.example.com")])
        .echo();
    assert_eq!(without_xff.header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("svc", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let response = raw::request(
        gw.proxy_addr(),
        b"GET /hop HTTP/1.1\r\n\
          Host: svc.example.com\r\n\
          Connection: keep-alive, X-Custom-Hop\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          TE: trailers\r\n\
          Trailer: X-Foo\r\n\
          X-Custom-Hop: secret\r\n\
          X-Keep: yes\r\n\
          \r\n",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = svc.last_request();
    for name in [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "x-custom-hop",
    ] {
        assert_eq!(
            seen.header(name),
            None,
            "hop-by-hop header {name} reached the upstream: {:?}",
            seen.headers
        );
    }
    if let Some(connection) = seen.header("connection") {
        let connection = connection.to_ascii_lowercase();
        assert!(
            connection == "keep-alive" || connection == "close",
            "the client's Connection header was forwarded: {connection:?}"
        );
    }
    assert_eq!(seen.header("x-keep"), Some("yes"));
}

#[test]
fn non_websocket_upgrade_header_is_not_forwarded() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("svc", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let response = raw::request(
        gw.proxy_addr(),
        b"GET /up HTTP/1.1\r\nHost: svc.example.com\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = svc.last_request();
    assert_eq!(
        seen.header("upgrade"),
        None,
        "Upgrade reached the upstream: {:?}",
        seen.headers
    );
    assert_eq!(
        seen.header("http2-settings"),
        None,
        "a header named in Connection reached the upstream"
    );
}

#[test]
fn declared_body_over_max_body_size_gets_413_json() {
    let svc = Upstream::spawn("svc");
    let preamble = Preamble::new()
        .server_extra("max_body_size = \"1KiB\"")
        .render();
    let config = [
        preamble,
        upstream("svc", &[&svc], ""),
        route("svc", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    // Only the head is sent: the declared length alone must be enough to refuse.
    let mut conn = raw::RawConn::connect(gw.proxy_addr());
    conn.send(b"POST /upload HTTP/1.1\r\nHost: svc\r\nContent-Type: application/octet-stream\r\nContent-Length: 4096\r\n\r\n")
        .expect("send head");
    let response = conn
        .read_response()
        .expect("a response before the body was sent")
        .into_response();
    assert_error(&response, 413, "payload_too_large");
    assert_eq!(svc.hits(), 0, "a refused body never reaches the upstream");

    let small = Client::new().post(&gw.url("/upload"), &[], &[b'x'; 512]);
    assert_eq!(small.status, 200, "{}", small.body);
    assert_eq!(small.echo().0["body_len"], 512);
}

#[test]
fn chunked_body_growing_over_max_body_size_gets_413_json() {
    let svc = Upstream::spawn("svc");
    let preamble = Preamble::new()
        .server_extra("max_body_size = \"1KiB\"")
        .render();
    let config = [
        preamble,
        upstream("svc", &[&svc], ""),
        route("svc", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    // No length is declared: the gateway must count the chunks as they arrive.
    let mut conn = raw::RawConn::connect(gw.proxy_addr());
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend_from_slice(&[b'x'; 512]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    conn.send(&request).expect("send request");
    let response = conn.read_response().expect("a response").into_response();
    assert_error(&response, 413, "payload_too_large");

    let small = Client::new().post(&gw.url("/upload"), &[], &[b'x'; 512]);
    assert_eq!(small.status, 200, "{}", small.body);
}

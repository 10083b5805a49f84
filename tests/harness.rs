//! The test fixtures themselves: each one does what the other test files rely on.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::config::{store, Preamble, PREAMBLE};
use support::{raw, Client, Redis, Upstream};

#[test]
fn redis_fixture_starts_a_server_that_answers_ping() {
    let redis = Redis::start();
    assert_eq!(redis.ping().expect("PING"), "+PONG");
    assert_eq!(redis.command(&["SET", "k", "v"]).expect("SET"), "+OK");
}

#[test]
fn upstream_echoes_method_path_and_headers() {
    let upstream = Upstream::spawn("echo");
    let response = Client::new().send(
        "PUT",
        &format!("http://{}/a/b?x=1&y=2", upstream.addr()),
        &[("X-Thing", "one")],
        Some(b"hello"),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-upstream"), Some("echo"));
    let echo = response.echo();
    assert_eq!(echo.upstream(), "echo");
    assert_eq!(echo.method(), "PUT");
    assert_eq!(echo.path(), "/a/b?x=1&y=2");
    assert_eq!(echo.header("x-thing"), Some("one"));
    assert_eq!(echo.0["body_len"], 5);
    assert_eq!(upstream.hits(), 1);
    assert_eq!(upstream.last_request().body, b"hello");
}

#[test]
fn upstream_honours_status_delay_header_and_close_controls() {
    let upstream = Upstream::spawn("ctl");
    let client = Client::new();
    let url = format!("http://{}/", upstream.addr());

    let response = client.get_with(
        &url,
        &[
            ("x-test-status", "418"),
            ("x-test-set-header", "Set-Cookie=a=b"),
        ],
    );
    assert_eq!(response.status, 418);
    assert_eq!(response.header("set-cookie"), Some("a=b"));

    let start = Instant::now();
    assert_eq!(
        client.get_with(&url, &[("x-test-delay-ms", "300")]).status,
        200
    );
    assert!(start.elapsed() >= Duration::from_millis(300));

    let mut conn = raw::RawConn::connect(&upstream.addr());
    conn.send(b"GET / HTTP/1.1\r\nhost: x\r\nx-test-close: 1\r\n\r\n")
        .expect("send");
    assert!(
        conn.read_response().is_err(),
        "x-test-close must close without a response"
    );
}

#[test]
fn upstream_keeps_connections_alive() {
    let upstream = Upstream::spawn("ka");
    let mut conn = raw::RawConn::connect(&upstream.addr());
    for _ in 0..3 {
        conn.send(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("send");
        assert_eq!(conn.read_response().expect("response").status, 200);
    }
    assert_eq!(upstream.connections_accepted(), 1);
    assert_eq!(upstream.hits(), 3);
}

#[test]
fn upstream_health_endpoint_follows_set_health_and_is_not_a_hit() {
    let upstream = Upstream::spawn("hc");
    let client = Client::new();
    let url = format!("http://{}/healthz", upstream.addr());
    assert_eq!(client.get(&url).status, 200);
    upstream.set_health(false);
    assert_eq!(client.get(&url).status, 503);
    upstream.set_health(true);
    assert_eq!(client.get(&url).status, 200);
    assert_eq!(upstream.hits(), 0);
    assert_eq!(upstream.health_checks(), 3);
}

#[test]
fn upstream_stop_refuses_connects_and_start_listens_on_the_same_port() {
    let upstream = Upstream::spawn("cycle");
    let addr = upstream.addr();
    let mut open = raw::RawConn::connect(&addr);
    open.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("send");
    open.read_response().expect("response");

    upstream.stop();
    assert!(
        TcpStream::connect(&addr).is_err(),
        "connect after stop() must be refused"
    );
    assert!(
        open.wait_closed(Duration::from_secs(2)).is_some(),
        "stop() must close open connections"
    );

    upstream.start();
    assert_eq!(upstream.addr(), addr);
    assert_eq!(
        Client::new().get(&format!("http://{addr}/again")).status,
        200
    );
}

#[test]
fn client_returns_error_statuses_as_responses() {
    let upstream = Upstream::spawn("err");
    let response = Client::new().get_with(
        &format!("http://{}/", upstream.addr()),
        &[("x-test-status", "503")],
    );
    assert_eq!(response.status, 503);
    assert_eq!(response.echo().upstream(), "err");
}

#[test]
fn metrics_parser_reads_names_labels_and_values() {
    let text = "# HELP x y\n# TYPE portcullis_requests_total counter\n\
        portcullis_requests_total{route=\"a\",method=\"GET\",status=\"200\"} 3\n\
        portcullis_requests_total{route=\"a\",method=\"POST\",status=\"200\"} 2\n\
        portcullis_upstream_peer_healthy{upstream=\"u\",peer=\"127.0.0.1:4000\"} 1\n";
    assert_eq!(
        support::metric(text, "portcullis_requests_total", &[("route", "a")]),
        Some(5.0)
    );
    assert_eq!(
        support::metric(text, "portcullis_requests_total", &[("method", "PUT")]),
        None
    );
    assert_eq!(support::peer_health(text, "u", 4000), Some(1.0));
}

#[test]
fn preamble_builder_defaults_render_the_shared_preamble() {
    assert_eq!(Preamble::new().render(), PREAMBLE);
}

#[test]
fn preamble_builder_puts_each_variation_in_its_section() {
    // What tests/auth_api_key.rs wrote out by hand before it used the builder.
    let auth_api_key_base = r#"
[server]
listen = ["${PROXY_ADDR}"]
threads = 1
grace_period = "1s"

[admin]
listen = "${ADMIN_ADDR}"
token_env = "ADMIN_TOKEN"

[log]
access_log = "${ACCESS_LOG}"
log_headers = ["user-agent", "x-api-key", "authorization"]
"#;
    assert_eq!(
        Preamble::new()
            .admin_token_env("ADMIN_TOKEN")
            .access_log("${ACCESS_LOG}")
            .log_extra(r#"log_headers = ["user-agent", "x-api-key", "authorization"]"#)
            .render(),
        auth_api_key_base
    );

    let every_variation = Preamble::new()
        .extra_listen(", \"[::1]:8081\"")
        .grace_period("3s")
        .server_extra("keepalive_timeout = \"1s\"\nmax_body_size = \"1KiB\"\n")
        .admin_token_env("TOKEN")
        .access_log("stdout")
        .log_extra("sensitive_headers = [\"x-secret\"]")
        .render();
    assert_eq!(
        every_variation,
        "\n[server]\nlisten = [\"${PROXY_ADDR}\", \"[::1]:8081\"]\nthreads = 1\ngrace_period = \"3s\"\n\
         keepalive_timeout = \"1s\"\nmax_body_size = \"1KiB\"\n\
         \n[admin]\nlisten = \"${ADMIN_ADDR}\"\ntoken_env = \"TOKEN\"\n\
         \n[log]\naccess_log = \"stdout\"\nsensitive_headers = [\"x-secret\"]\n"
    );
}

#[test]
fn store_section_names_url_prefix_and_extra_lines() {
    assert_eq!(
        store("redis://127.0.0.1:6379", "t:", ""),
        "\n[store]\nurl = \"redis://127.0.0.1:6379\"\nprefix = \"t:\"\n"
    );
    assert_eq!(
        store("redis://127.0.0.1:6379", "t:", "operation_timeout = \"250ms\""),
        "\n[store]\nurl = \"redis://127.0.0.1:6379\"\nprefix = \"t:\"\noperation_timeout = \"250ms\"\n"
    );
}

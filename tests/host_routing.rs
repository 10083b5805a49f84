//! Host confusion end to end: the gateway routes on the one host the upstream will see, so a
//! protected virtual host cannot be reached through a host-less catch-all by spelling (or
//! leaving out) the host differently. Requests go over a raw socket: client libraries always
//! send one well-formed `Host`. Also: `check` refuses route paths no request could match.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::config::{route, upstream, PREAMBLE};
use support::tls::self_signed;
use support::upstream::SeenRequest;
use support::{assert_error, free_port, raw, run_to_exit, Gateway, RawResponse, Upstream};

/// The config-declared API key of consumer `ops` (given to the gateway as `HOST_TEST_KEY`).
const KEY: &str = "ht_Q8vX2mK7pLr4ZwB9nC3yJ6dTs1hE";

/// `admin.internal` needs a key and goes to `admin`; everything else goes, unauthenticated and
/// with the client's Host, to `public`.
fn template(preamble: &str, admin: &Upstream, public: &Upstream) -> String {
    [
        preamble.to_string(),
        "\n[auth.api_key]\nheader = \"x-api-key\"\n\
         keys = [{ id = \"k1\", consumer = \"ops\", key_env = \"HOST_TEST_KEY\" }]\n"
            .to_string(),
        upstream("admin", &[admin], ""),
        upstream("public", &[public], ""),
        route(
            "admin",
            "admin",
            "path = \"/\"\nhosts = [\"admin.internal\"]\nauth = [\"api_key\"]\npreserve_host = true",
        ),
        route("public", "public", "path = \"/\"\npreserve_host = true"),
    ]
    .concat()
}

struct Setup {
    gw: Gateway,
    admin: Upstream,
    public: Upstream,
}

fn start_with(preamble: &str) -> Setup {
    let (admin, public) = (Upstream::spawn("admin"), Upstream::spawn("public"));
    let gw = Gateway::builder(&template(preamble, &admin, &public))
        .env("HOST_TEST_KEY", KEY)
        .start();
    Setup { gw, admin, public }
}

fn start() -> Setup {
    start_with(PREAMBLE)
}

/// Sends `GET target version` with exactly the given header lines, on a fresh connection.
fn send(gw: &Gateway, target: &str, version: &str, headers: &[&str]) -> RawResponse {
    let mut bytes = format!("GET {target} {version}\r\nConnection: close\r\n");
    for h in headers {
        bytes.push_str(h);
        bytes.push_str("\r\n");
    }
    bytes.push_str("\r\n");
    raw::request(gw.proxy_addr(), bytes.as_bytes())
}

fn assert_refused(response: RawResponse, code: &str, what: &str) {
    let text = response.text();
    let response = response.into_response();
    assert_eq!(response.status, 400, "{what}: {text}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{what}: {text}"
    );
    assert_error(&response, 400, code);
}

/// The only request `up` received.
fn only_request(up: &Upstream, what: &str) -> SeenRequest {
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{what}: {seen:?}");
    seen.into_iter().next().expect("one request")
}

#[test]
fn absolute_form_without_host_is_routed_by_its_authority_and_meets_its_auth() {
    let s = start();
    let key = format!("x-api-key: {KEY}");

    let response = send(&s.gw, "http://admin.internal/secret", "HTTP/1.1", &[]);
    let text = response.text();
    let response = response.into_response();
    assert_error(&response, 401, "credentials_missing");
    assert!(
        s.public.requests().is_empty() && s.admin.requests().is_empty(),
        "nothing may be proxied without a key: {text}"
    );

    let response = send(
        &s.gw,
        "http://admin.internal/secret?a=1",
        "HTTP/1.1",
        &[&key],
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = only_request(&s.admin, "the admin vhost with a key");
    assert_eq!(seen.path, "/secret?a=1", "sent upstream in origin-form");
    assert_eq!(seen.header("host"), Some("admin.internal"));
    assert_eq!(seen.header("x-forwarded-host"), Some("admin.internal"));
    assert!(s.public.requests().is_empty());
}

#[test]
fn https_absolute_form_is_forwarded_in_origin_form_with_its_authority_as_host() {
    let s = start();
    let response = send(&s.gw, "https://other.example:8443", "HTTP/1.1", &[]);
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = only_request(&s.public, "the catch-all");
    assert_eq!(seen.path, "/", "never absolute-form over the plain hop");
    assert_eq!(seen.header("host"), Some("other.example:8443"));

    let response = send(
        &s.gw,
        "ftp://admin.internal/secret",
        "HTTP/1.1",
        &["Host: admin.internal"],
    );
    assert_refused(response, "invalid_host", "a non-http scheme");
    assert_eq!(s.public.requests().len(), 1, "nothing more was proxied");
}

#[test]
fn hosts_that_are_not_strictly_a_host_and_port_get_400_invalid_host() {
    let s = start();
    for host in [
        "admin.internal:1:2",
        "admin.internal:",
        "admin.internal:99999",
        "admin.internal:80x",
        "admin%2Einternal",
        "admin..internal",
        "[::1",
        "[::1]:1:2",
    ] {
        let response = send(&s.gw, "/secret", "HTTP/1.1", &[&format!("Host: {host}")]);
        assert_refused(response, "invalid_host", host);
        let response = send(&s.gw, &format!("http://{host}/secret"), "HTTP/1.1", &[]);
        assert_eq!(
            response.status,
            400,
            "absolute-form {host}: {}",
            response.text()
        );
    }
    // Pingora's request parser already refuses userinfo in Host, with a bare 400.
    for host in ["user@admin.internal", "admin.internal@other.example"] {
        let response = send(&s.gw, "/secret", "HTTP/1.1", &[&format!("Host: {host}")]);
        assert_eq!(response.status, 400, "{host}: {}", response.text());
        let response = send(&s.gw, &format!("http://{host}/secret"), "HTTP/1.1", &[]);
        assert_eq!(
            response.status,
            400,
            "absolute-form {host}: {}",
            response.text()
        );
    }
    assert!(
        s.public.requests().is_empty() && s.admin.requests().is_empty(),
        "no lax host reached an upstream: {:?}",
        s.public.requests()
    );
}

#[test]
fn http_1_1_without_a_host_is_refused_and_http_1_0_without_one_is_served() {
    let s = start();
    let response = send(&s.gw, "/page", "HTTP/1.1", &[]);
    assert_refused(response, "invalid_host", "HTTP/1.1 without Host");
    let response = send(&s.gw, "/page", "HTTP/1.1", &["Host:"]);
    assert_refused(response, "invalid_host", "HTTP/1.1 with an empty Host");
    assert!(s.public.requests().is_empty(), "{:?}", s.public.requests());

    let response = send(&s.gw, "/page", "HTTP/1.0", &[]);
    assert_eq!(response.status, 200, "HTTP/1.0: {}", response.text());
    let seen = only_request(&s.public, "HTTP/1.0 goes to the host-less route");
    assert_eq!(seen.path, "/page");
    assert!(s.admin.requests().is_empty());
}

#[test]
fn well_formed_host_spellings_still_reach_their_virtual_host() {
    let s = start();
    let key = format!("x-api-key: {KEY}");
    for host in ["admin.internal", "ADMIN.Internal:8080", "admin.internal."] {
        let response = send(&s.gw, "/x", "HTTP/1.1", &[&format!("Host: {host}"), &key]);
        assert_eq!(response.status, 200, "{host}: {}", response.text());
    }
    assert_eq!(s.admin.requests().len(), 3);
    let response = send(&s.gw, "/x", "HTTP/1.1", &["Host: [::1]:8080"]);
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        only_request(&s.public, "an IPv6 literal").header("host"),
        Some("[::1]:8080")
    );
}

#[test]
fn http2_requests_get_x_forwarded_host_from_their_authority() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed(dir.path());
    let tls_addr = format!("127.0.0.1:{}", free_port());
    let preamble = format!(
        "{PREAMBLE}\n[server.tls]\nlisten = \"{tls_addr}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
    );
    let s = start_with(&preamble);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2", "--cacert", &cert])
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://{tls_addr}/h2"))
        .output()
        .expect("the curl command is needed for this test (Debian package curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.ends_with("\n2 200"), "HTTP/2 request: {text}");
    let seen = only_request(&s.public, "the catch-all over HTTP/2");
    assert_eq!(seen.header("x-forwarded-host"), Some(tls_addr.as_str()));
    assert_eq!(seen.header("host"), Some(tls_addr.as_str()));
}

/// A config that passes `check` apart from the route paths it is given.
fn config_with_paths(server_extra: &str, paths: &[&str]) -> String {
    let mut text = format!(
        "[server]\nlisten = [\"127.0.0.1:18080\"]\n{server_extra}\n\n[admin]\nlisten = \"127.0.0.1:19901\"\n\n\
         [[upstreams]]\nname = \"api\"\npeers = [{{ addr = \"127.0.0.1:3001\" }}]\n"
    );
    for (i, p) in paths.iter().enumerate() {
        text.push_str(&format!(
            "\n[[routes]]\nname = \"r{i}\"\nupstream = \"api\"\npath = {p:?}\n"
        ));
    }
    text
}

fn check(dir: &Path, name: &str, text: &str) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    let finished = run_to_exit(
        &["check", "-c", path.to_str().expect("utf-8 path")],
        &[],
        Duration::from_secs(20),
    );
    (finished.code().unwrap_or(-1), finished.stderr.clone())
}

#[test]
fn check_refuses_route_paths_not_in_canonical_form_and_names_the_spelling_to_use() {
    let dir = tempfile::tempdir().expect("temp dir");
    let paths = [
        "/caf%c3%a9/admin",
        "/%7Euser",
        "/api/./v1",
        "/a//b",
        "/ok/caf%C3%A9",
        "/x/../admin",
    ];
    let (code, stderr) = check(dir.path(), "paths.toml", &config_with_paths("", &paths));
    assert_eq!(code, 1, "{stderr}");
    for (field, spelling) in [
        ("routes[0].path", "\"/caf%C3%A9/admin\""),
        ("routes[1].path", "\"/~user\""),
        ("routes[2].path", "\"/api/v1\""),
        ("routes[3].path", "\"/a/b\""),
        ("routes[5].path", "\"/admin\""),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(&format!("paths.toml: {field}: ")))
            .unwrap_or_else(|| panic!("no issue for {field}: {stderr}"));
        assert!(
            line.contains("canonical") && line.ends_with(spelling),
            "{field}: {line}"
        );
    }
    assert!(!stderr.contains("routes[4]"), "a canonical path: {stderr}");

    let (code, stderr) = check(
        dir.path(),
        "keep.toml",
        &config_with_paths("merge_slashes = false", &["/a//b", "/ok"]),
    );
    assert_eq!(code, 0, "`//` is canonical without merge_slashes: {stderr}");
}

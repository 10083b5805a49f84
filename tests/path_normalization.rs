//! Path confusion end to end: the gateway routes on the canonical path and sends the upstream
//! exactly that path, so a protected `/secure` cannot be reached through the public `/` route by
//! spelling its path differently. The upstream here resolves paths like a lenient server
//! (decodes every escape, `\` as `/`, drops `;params`, removes dot segments, merges slashes);
//! each tricky spelling is either refused with 400 `invalid_path` or meets `/secure`'s auth.
//! Requests go over a raw socket: client libraries would normalize the paths themselves.

mod support;

use std::process::Command;

use support::config::{route, upstream_addrs, PREAMBLE};
use support::normalizing::{resolve_path, NormalizingUpstream, Resolved};
use support::raw::{self, RawResponse};
use support::tls::self_signed;
use support::{assert_error, free_port, Gateway};

/// The config-declared API key of consumer `alice` (given to the gateway as `PATH_TEST_KEY`).
const KEY: &str = "pt_9fK2xQ7mLw4ZrB8vN3cYh6TdJ1sE";

/// `/secure` needs a key; `/` is public; `/strip` strips its prefix; `/files` allows `%2F`.
fn template(preamble: &str, svc: &NormalizingUpstream) -> String {
    [
        preamble.to_string(),
        "\n[auth.api_key]\nheader = \"x-api-key\"\nquery_param = \"api_key\"\n\
         keys = [{ id = \"k1\", consumer = \"alice\", key_env = \"PATH_TEST_KEY\" }]\n"
            .to_string(),
        upstream_addrs("norm", &[svc.addr()], ""),
        route("secure", "norm", "path = \"/secure\"\nauth = [\"api_key\"]"),
        route("public", "norm", "path = \"/\""),
        route("strip", "norm", "path = \"/strip\"\nstrip_prefix = true"),
        route(
            "files",
            "norm",
            "path = \"/files\"\nallow_encoded_slashes = true",
        ),
    ]
    .concat()
}

fn start(preamble: &str, svc: &NormalizingUpstream) -> Gateway {
    Gateway::builder(&template(preamble, svc))
        .env("PATH_TEST_KEY", KEY)
        .start()
}

/// Sends `METHOD target` (raw bytes, as given) on a fresh connection, with the key if asked.
fn send_raw(gw: &Gateway, method: &str, target: &[u8], key: Option<&str>) -> RawResponse {
    let mut bytes = format!("{method} ").into_bytes();
    bytes.extend_from_slice(target);
    bytes.extend_from_slice(b" HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n");
    if let Some(key) = key {
        bytes.extend_from_slice(format!("x-api-key: {key}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    raw::request(gw.proxy_addr(), &bytes)
}

fn get(gw: &Gateway, target: &str, key: Option<&str>) -> RawResponse {
    send_raw(gw, "GET", target.as_bytes(), key)
}

/// The request the upstream received for the response just read (it answers with it).
fn seen(response: &RawResponse, what: &str) -> Resolved {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    let json = response.json();
    let text = |field: &str| json[field].as_str().map(str::to_string);
    Resolved {
        target: text("target").unwrap_or_default(),
        path: text("path").unwrap_or_default(),
        query: text("query"),
        resolved: text("resolved").unwrap_or_default(),
    }
}

/// What the gateway must do with one spelling.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 400 `invalid_path`, nothing sent upstream.
    Refused,
    /// `/secure`'s auth applies; with the key, the upstream receives this canonical path.
    Protected(&'static str),
    /// The public route; the upstream receives this canonical path.
    Public(&'static str),
}

use Expect::{Protected, Public, Refused};

/// Spellings of `/secure/a` (and neighbours) that lenient servers resolve alike.
const TRICKY: &[(&str, Expect)] = &[
    ("/x/../secure/a", Protected("/secure/a")),
    ("/%2e%2e/secure/a", Refused),
    ("/%2E%2E/secure/a", Refused),
    ("/.%2e/secure/a", Refused),
    ("/%2e./secure/a", Refused),
    ("//secure/a", Protected("/secure/a")),
    ("///secure//a", Protected("/secure/a")),
    ("/./secure/a", Protected("/secure/a")),
    ("/%2e/secure/a", Protected("/secure/a")),
    ("/secure/./a", Protected("/secure/a")),
    ("/public/..%2Fsecure/a", Refused),
    ("/public/..%2fsecure/a", Refused),
    ("/%2fsecure/a", Refused),
    ("/%2F%2Fsecure/a", Refused),
    ("/secure%2Fa", Refused),
    ("/%73ecure/a", Protected("/secure/a")),
    ("/%73%65%63%75%72%65/%61", Protected("/secure/a")),
    ("/SECURE/a", Public("/SECURE/a")),
    ("/secure;x/a", Refused),
    ("/..;/secure/a", Refused),
    ("/public/..;/secure/a", Refused),
    ("\\secure", Refused),
    ("/\\secure/a", Refused),
    ("/secure\\a", Refused),
    ("/%5csecure", Refused),
    ("/%5Csecure/a", Refused),
    ("/secure%00/a", Refused),
    ("/secure%09/a", Refused),
    ("/secure%0d%0a/a", Refused),
    ("/..", Refused),
    ("/../secure/a", Refused),
    ("/x/../../secure/a", Refused),
    ("/%C0%AE%C0%AE/secure/a", Refused),
    ("/%c0%ae/secure/a", Refused),
    ("/x/%2e%2e/secure/a", Protected("/secure/a")),
    ("/x/.%2E/secure/a", Protected("/secure/a")),
    ("/x/%2E./secure/a", Protected("/secure/a")),
    ("/x/y/../../secure/a", Protected("/secure/a")),
    ("/x//..//secure/a", Protected("/secure/a")),
    ("/public/%2e%2e/secure/a", Protected("/secure/a")),
    ("/%7e/../secure/a", Protected("/secure/a")),
    ("/secure/a/..", Protected("/secure/")),
    ("/secure/b/../a", Protected("/secure/a")),
    ("/files/..%2Fsecure/a", Refused),
    ("/files/..%2F..%2Fsecure/a", Refused),
    ("/files/%2F..%2Fsecure", Refused),
    ("http://gw.test/x/../secure/a", Protected("/secure/a")),
    ("http://gw.test//secure/a", Protected("/secure/a")),
    ("http://gw.test/../secure/a", Refused),
    ("http://gw.test/%2fsecure/a", Refused),
];

#[test]
fn tricky_spellings_of_a_protected_path_are_refused_or_meet_its_auth() {
    assert!(TRICKY.len() >= 25, "at least 25 spellings");
    let svc = NormalizingUpstream::spawn();
    let gw = start(PREAMBLE, &svc);
    for &(target, expect) in TRICKY {
        let before = svc.requests().len();
        let anonymous = get(&gw, target, None);
        match expect {
            Refused => {
                assert_error(&anonymous.into_response(), 400, "invalid_path");
                let with_key = get(&gw, target, Some(KEY));
                assert_error(&with_key.into_response(), 400, "invalid_path");
                assert_eq!(
                    svc.requests().len(),
                    before,
                    "{target:?} reached the upstream"
                );
            }
            Protected(canonical) => {
                assert_eq!(
                    anonymous.status,
                    401,
                    "{target:?} without a key: {}",
                    anonymous.text()
                );
                assert_eq!(
                    svc.requests().len(),
                    before,
                    "{target:?} reached the upstream"
                );
                let with_key = get(&gw, target, Some(KEY));
                let got = seen(&with_key, target);
                assert_eq!(
                    got.path, canonical,
                    "{target:?}: what the upstream received"
                );
                assert_eq!(got.query, None, "{target:?}");
                assert_eq!(
                    got.resolved,
                    resolve_path(canonical),
                    "{target:?}: the upstream's view"
                );
                assert_eq!(with_key.json()["consumer"], "alice", "{target:?}");
            }
            Public(canonical) => {
                let got = seen(&anonymous, target);
                assert_eq!(
                    got.path, canonical,
                    "{target:?}: what the upstream received"
                );
            }
        }
    }
    // Whatever got through: the lenient upstream never served /secure to an anonymous client.
    for request in svc.requests() {
        let secure = request.resolved == "/secure" || request.resolved.starts_with("/secure/");
        let via_public = !request.path.starts_with("/secure");
        assert!(!(secure && via_public), "{request:?} served /secure");
    }
}

#[test]
fn raw_non_ascii_targets_get_400_and_never_reach_the_upstream() {
    let svc = NormalizingUpstream::spawn();
    let gw = start(PREAMBLE, &svc);
    // Pingora's request parser refuses these before any gateway phase runs, so the body is
    // Pingora's own (no JSON); the canonicalizer refuses them too (unit tests), for HTTP/2.
    for target in [&b"/secure\xc3\xa9/a"[..], b"/\xff/../secure/a"] {
        let response = send_raw(&gw, "GET", target, Some(KEY));
        assert_eq!(
            response.status,
            400,
            "{:?}",
            String::from_utf8_lossy(target)
        );
    }
    assert!(svc.requests().is_empty(), "{:?}", svc.requests());
}

#[test]
fn asterisk_target_gets_400_invalid_path() {
    let svc = NormalizingUpstream::spawn();
    let gw = start(PREAMBLE, &svc);
    let response = send_raw(&gw, "OPTIONS", b"*", None);
    assert_error(&response.into_response(), 400, "invalid_path");
    assert!(svc.requests().is_empty(), "{:?}", svc.requests());
}

#[test]
fn clean_paths_and_every_query_reach_the_upstream_byte_for_byte() {
    let svc = NormalizingUpstream::spawn();
    let gw = start(PREAMBLE, &svc);
    for target in [
        "/",
        "/api/v1/items/42",
        "/api/v1/items/42/",
        "/caf%C3%A9/x~y_z-1.json",
        "/a%20b/:@!$&'()*+,=",
        "/.well-known/openid-configuration",
        "/a/..b/.c/d.",
        "/q?a=1&b=%2e%2E&c=%zz&d=/../x&e=%2F&f=%5c",
        "/q?",
        "/q?x=%00;y&&z",
    ] {
        let got = seen(&get(&gw, target, None), target);
        assert_eq!(got.target, target, "{target:?}");
    }
    // A rewritten path keeps its query exactly.
    let got = seen(
        &get(&gw, "/x/../q/%61?k=%2e%2e/../&a=%7E", None),
        "rewritten",
    );
    assert_eq!(got.target, "/q/a?k=%2e%2e/../&a=%7E");
    // Raw characters a path may not hold are percent-encoded, so both spellings are one path.
    let got = seen(&get(&gw, "/a{b}|c", None), "encoded");
    assert_eq!(got.target, "/a%7Bb%7D%7Cc");
    // The API-key parameter is the one thing removed from a query, after canonicalization.
    let target = format!("/x/../secure/a?api_key={KEY}&keep=%2e%2E");
    let response = get(&gw, &target, None);
    let got = seen(&response, "key in query");
    assert_eq!(got.target, "/secure/a?keep=%2e%2E");
    assert_eq!(response.json()["consumer"], "alice");
}

#[test]
fn strip_prefix_removes_the_prefix_of_the_canonical_path() {
    let svc = NormalizingUpstream::spawn();
    let gw = start(PREAMBLE, &svc);
    for (target, upstream) in [
        ("/strip/x/../y?q=1", "/y?q=1"),
        ("/x/../strip/%61/b", "/a/b"),
        ("//strip//a", "/a"),
        ("/strip/.", "/"),
        ("/%73trip/a", "/a"),
        // Dots that leave the prefix leave the route: "/" is public and not stripped.
        ("/strip/..", "/"),
        ("/strip/../other", "/other"),
    ] {
        let got = seen(&get(&gw, target, None), target);
        assert_eq!(got.target, upstream, "{target:?}");
    }
    let response = get(&gw, "/strip/../secure/a", None);
    assert_eq!(response.status, 401, "{}", response.text());
}

#[test]
fn encoded_slashes_pass_only_where_allowed_and_only_if_decoding_keeps_the_route() {
    let svc = NormalizingUpstream::spawn();
    let gw = start(PREAMBLE, &svc);
    let got = seen(&get(&gw, "/files/a%2fb.txt", None), "allowed");
    assert_eq!(
        got.target, "/files/a%2Fb.txt",
        "kept encoded, hex uppercased"
    );
    assert_eq!(got.resolved, "/files/a/b.txt");
    let got = seen(&get(&gw, "/files/./dir%2F%2Fx?q=%2F", None), "allowed");
    assert_eq!(got.target, "/files/dir%2F%2Fx?q=%2F");
    for refused in [
        "/files/..%2Fsecure/a",
        "/files%2F..%2Fsecure",
        "/other/a%2Fb",
        "/%2Ffiles/a",
    ] {
        assert_error(
            &get(&gw, refused, Some(KEY)).into_response(),
            400,
            "invalid_path",
        );
    }
}

#[test]
fn merge_slashes_off_keeps_repeated_slashes_but_still_removes_dots() {
    let svc = NormalizingUpstream::spawn();
    let preamble = PREAMBLE.replace("threads = 1", "threads = 1\nmerge_slashes = false");
    assert_ne!(preamble, PREAMBLE, "the preamble sets merge_slashes");
    let gw = start(&preamble, &svc);
    let got = seen(&get(&gw, "/api//x/./y//?q=//", None), "merge off");
    assert_eq!(got.target, "/api//x/y//?q=//");
    let response = get(&gw, "/x/../secure//a", None);
    assert_eq!(response.status, 401, "{}", response.text());
    let got = seen(&get(&gw, "/x/../secure//a", Some(KEY)), "merge off, key");
    assert_eq!(got.target, "/secure//a");
    assert_error(
        &get(&gw, "/a/../../secure", None).into_response(),
        400,
        "invalid_path",
    );
}

/// `curl --http2 --path-as-is` (so curl sends the path unchanged); (status, body).
fn curl_h2(url: &str, ca: &str, headers: &[&str]) -> (String, String) {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "--max-time",
        "10",
        "--http2",
        "--path-as-is",
        "--cacert",
        ca,
    ]);
    for h in headers {
        command.args(["-H", h]);
    }
    let out = command
        .args(["-w", "\n%{http_version} %{http_code}", url])
        .output()
        .expect("the curl command is needed for this test (Debian package curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().to_string(), body.to_string())
}

#[test]
fn http2_requests_are_routed_and_forwarded_on_the_canonical_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = self_signed(dir.path());
    let svc = NormalizingUpstream::spawn();
    let tls_addr = format!("127.0.0.1:{}", free_port());
    let preamble = format!(
        "{PREAMBLE}\n[server.tls]\nlisten = \"{tls_addr}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
    );
    let _gw = start(&preamble, &svc);
    let url = format!("https://{tls_addr}/x/%2e%2e/secure/%61?q=%2e%2e");
    assert_eq!(curl_h2(&url, &cert, &[]).0, "2 401", "HTTP/2 without a key");
    assert!(svc.requests().is_empty(), "{:?}", svc.requests());
    let key_header = format!("x-api-key: {KEY}");
    let (status, body) = curl_h2(&url, &cert, &[&key_header]);
    assert_eq!(status, "2 200", "{body}");
    let got = svc.requests().pop().expect("the upstream got the request");
    assert_eq!(
        (got.path.as_str(), got.query.as_deref()),
        ("/secure/a", Some("q=%2e%2e"))
    );
    let refused = format!("https://{tls_addr}/%2e%2e/secure/a");
    let (status, body) = curl_h2(&refused, &cert, &[&key_header]);
    assert_eq!(status, "2 400", "{body}");
    assert!(body.contains("\"invalid_path\""), "{body}");
}

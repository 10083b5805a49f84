//! The access log: one JSON line per request, and never a secret in any output.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::config::{route, upstream, Preamble};
use support::{eventually, Client, Gateway, Upstream};

const SECRETS: [&str; 7] = [
    "SECRETTOKEN123",
    "pc_SECRET456",
    "COOKIESECRET789",
    "INTERNALSECRET000",
    "SIGSECRET111",
    "SETCOOKIESECRET222",
    "PROXYAUTHSECRET333",
];

/// A gateway config whose access log goes to `destination` ("stdout" or a path).
fn config(destination: &str, svc: &Upstream) -> String {
    let preamble = Preamble::new()
        .access_log(destination)
        .log_extra(
            r#"log_headers = ["user-agent", "authorization", "x-api-key", "cookie", "x-internal-secret"]
sensitive_headers = ["x-internal-secret"]
sensitive_query_params = ["signature", "token"]"#,
        )
        .render();
    [
        preamble,
        upstream("svc", &[svc], ""),
        route("main", "svc", r#"path = "/things""#),
    ]
    .concat()
}

/// Access-log entries among `lines`: JSON objects with a `request_id`.
fn entries(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("request_id").is_some())
        .collect()
}

/// The entries logged for `request_id`, waiting up to 5 s for at least one.
fn entries_for(lines: impl Fn() -> Vec<String>, request_id: &str) -> Vec<Value> {
    let find = || -> Vec<Value> {
        entries(&lines())
            .into_iter()
            .filter(|e| e["request_id"].as_str() == Some(request_id))
            .collect()
    };
    eventually(Duration::from_secs(5), || !find().is_empty());
    find()
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A number field, whether logged as a number or a numeric string.
fn number(entry: &Value, field: &str) -> f64 {
    match &entry[field] {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{field} is not numeric: {entry}")),
        other => panic!("{field} is {other} in {entry}"),
    }
}

/// Sends requests that carry every kind of secret, to a route, to no route, and with a
/// secret-bearing response header; returns their request ids.
fn send_secrets(gw: &Gateway) -> Vec<String> {
    let client = Client::new();
    let headers = [
        ("Authorization", "Bearer SECRETTOKEN123"),
        ("X-Api-Key", "pc_SECRET456"),
        ("Cookie", "session=COOKIESECRET789; theme=dark"),
        ("X-Internal-Secret", "INTERNALSECRET000"),
        ("Proxy-Authorization", "Basic PROXYAUTHSECRET333"),
        ("x-test-set-header", "Set-Cookie=sid=SETCOOKIESECRET222"),
    ];
    let mut ids = Vec::new();
    for (n, path) in [
        "/things/1?signature=SIGSECRET111&keep=visible",
        "/nowhere?signature=SIGSECRET111&keep=visible",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("secret-req-{n}");
        let mut all = headers.to_vec();
        all.push(("X-Request-Id", id.as_str()));
        let response = client.get_with(&gw.url(path), &all);
        assert!(
            response.status == 200 || response.status == 404,
            "{}",
            response.body
        );
        ids.push(id);
    }
    ids
}

fn assert_no_secrets(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{secret} appears in {what}:\n{text}"
        );
    }
}

#[test]
fn each_request_writes_one_json_line_with_the_required_fields() {
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config("stdout", &svc));
    let client = Client::new();

    let post = client.send(
        "POST",
        &gw.url("/things?a=1"),
        &[
            ("X-Request-Id", "log-post-1"),
            ("User-Agent", "portcullis-log-test/1.0"),
        ],
        Some(b"hello"),
    );
    assert_eq!(post.status, 200);
    assert_eq!(
        client
            .get_with(&gw.url("/things/2"), &[("X-Request-Id", "log-get-2")])
            .status,
        200
    );
    assert_eq!(
        client
            .get_with(&gw.url("/missing"), &[("X-Request-Id", "log-404-3")])
            .status,
        404
    );

    let lines = || gw.stdout_lines();
    let posts = entries_for(lines, "log-post-1");
    assert_eq!(
        posts.len(),
        1,
        "want one line for the request, got {posts:?}\n{}",
        gw.stdout()
    );
    let entry = &posts[0];
    for field in [
        "time",
        "request_id",
        "route",
        "method",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "upstream_ms",
        "upstream",
        "client_ip",
    ] {
        assert!(
            entry.get(field).is_some(),
            "field {field} missing from {entry}"
        );
    }
    assert_eq!(entry["route"], "main", "{entry}");
    assert_eq!(entry["method"], "POST", "{entry}");
    assert_eq!(entry["path"], "/things?a=1", "{entry}");
    assert_eq!(number(entry, "status"), 200.0, "{entry}");
    assert!(
        number(entry, "bytes_in") >= 5.0,
        "bytes_in counts the 5-byte body: {entry}"
    );
    assert!(number(entry, "bytes_out") > 0.0, "{entry}");
    assert!(number(entry, "duration_ms") >= 0.0, "{entry}");
    assert!(number(entry, "upstream_ms") >= 0.0, "{entry}");
    assert!(
        entry["upstream"]
            .as_str()
            .is_some_and(|u| u.contains(&svc.port().to_string())),
        "{entry}"
    );
    assert_eq!(entry["client_ip"], "127.0.0.1", "{entry}");
    assert!(
        entry.to_string().contains("portcullis-log-test/1.0"),
        "user-agent is in log_headers: {entry}"
    );

    let gets = entries_for(lines, "log-get-2");
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0]["method"], "GET");

    let not_found = entries_for(lines, "log-404-3");
    assert_eq!(not_found.len(), 1, "a 404 is logged too: {not_found:?}");
    assert_eq!(number(&not_found[0], "status"), 404.0);

    // Nothing more shows up for these requests later.
    std::thread::sleep(Duration::from_millis(300));
    for id in ["log-post-1", "log-get-2", "log-404-3"] {
        let n = entries(&gw.stdout_lines())
            .iter()
            .filter(|e| e["request_id"] == id)
            .count();
        assert_eq!(n, 1, "{id} logged {n} times");
    }
}

#[test]
fn secrets_never_appear_in_stdout_or_stderr() {
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config("stdout", &svc));
    let ids = send_secrets(&gw);
    for id in &ids {
        let logged = entries_for(|| gw.stdout_lines(), id);
        assert_eq!(
            logged.len(),
            1,
            "no access-log line for {id}\n{}",
            gw.stdout()
        );
        let path = logged[0]["path"].as_str().unwrap_or_default();
        assert!(
            path.contains("signature=[REDACTED]"),
            "sensitive query value not redacted: {path}"
        );
        assert!(
            path.contains("keep=visible"),
            "other query values are kept: {path}"
        );
    }
    assert_eq!(svc.hits(), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_no_secrets("stdout", &gw.stdout());
    assert_no_secrets("stderr", &gw.stderr());
}

#[test]
fn access_log_file_gets_one_line_per_request_and_no_secrets() {
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config("${DIR}/access.log", &svc));
    let log = gw.dir().join("access.log");
    let ids = send_secrets(&gw);
    for id in &ids {
        let logged = entries_for(|| file_lines(&log), id);
        assert_eq!(
            logged.len(),
            1,
            "want one line for {id} in {}:\n{:?}",
            log.display(),
            file_lines(&log)
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).expect("read access log");
    assert_no_secrets("the access log file", &text);
    assert!(
        !entries(&gw.stdout_lines())
            .iter()
            .any(|e| ids.iter().any(|id| e["request_id"] == id.as_str())),
        "a file access log must not also go to stdout"
    );
    assert_no_secrets("stdout", &gw.stdout());
    assert_no_secrets("stderr", &gw.stderr());
}

#[test]
fn lines_of_the_last_requests_are_written_before_the_process_exits() {
    // Lines are buffered for up to 50 ms; SIGTERM right after the last response must not lose
    // them. grace_period = "0s" makes the exit as quick as it can be.
    let svc = Upstream::spawn("svc");
    let cfg = config("${DIR}/access.log", &svc)
        .replace(r#"grace_period = "1s""#, r#"grace_period = "0s""#);
    let gw = Gateway::start(&cfg);
    let log = gw.dir().join("access.log");
    let client = Client::new();
    let sent = 200;
    for i in 0..sent {
        let resp = client.get(&gw.url(&format!("/things/{i}")));
        assert_eq!(resp.status, 200);
    }
    gw.sigterm();
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("gateway exits");
    assert!(status.success(), "exit status {status:?}");
    let logged = entries(&file_lines(&log))
        .iter()
        .filter(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/things/"))
        })
        .count();
    assert_eq!(logged, sent, "one line per request, none lost at exit");
}

#[test]
fn lines_a_full_disk_refuses_are_counted_as_dropped() {
    // /dev/full fails every write with ENOSPC, like a full disk: requests go on, and the lost
    // lines are counted.
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config("/dev/full", &svc));
    let client = Client::new();
    let sent = 20;
    for i in 0..sent {
        assert_eq!(client.get(&gw.url(&format!("/things/{i}"))).status, 200);
    }
    let counted = eventually(Duration::from_secs(5), || {
        support::metric(&gw.metrics(), "portcullis_access_log_dropped_total", &[])
            .is_some_and(|n| n >= f64::from(sent))
    });
    assert!(counted, "dropped lines not counted:\n{}", gw.metrics());
}

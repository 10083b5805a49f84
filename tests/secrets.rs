//! Credentials never leave the gateway through its own outputs: wherever a client puts a key,
//! token, password or cookie, none of it shows in stdout, stderr (Pingora's error lines
//! included), the access log, `/metrics`, `/readyz`, an error body or `check` output, for a
//! healthy upstream, a dead one (502) and one that times out (504).

mod support;

use std::time::Duration;

use support::config::{route, upstream, upstream_addrs, Preamble};
use support::gateway::run_to_exit;
use support::{dead_addr, eventually, Client, Gateway, Redis, Upstream};

/// One credential a client sends, and where.
struct Secret {
    /// Where it goes, for failure messages.
    place: &'static str,
    /// The value: unique and recognizable, so any copy of it anywhere is found.
    value: String,
}

/// Every place a client can put a credential: the two `Authorization` schemes go in separate
/// requests (a request has one), everything else in each request.
struct Credentials {
    bearer: Secret,
    basic: Secret,
    default_key_header: Secret,
    custom_key_header: Secret,
    api_key_param: Secret,
    access_token_param: Secret,
    token_param: Secret,
    custom_param: Secret,
    cookie: Secret,
    proxy_authorization: Secret,
}

impl Credentials {
    fn new() -> Credentials {
        let secret = |place: &'static str| Secret {
            place,
            value: format!(
                "{}SeCrEt{:016x}",
                place.replace(['-', ' ', '_'], ""),
                fastrand::u64(..)
            ),
        };
        Credentials {
            bearer: secret("bearer"),
            basic: secret("basic"),
            default_key_header: secret("x-api-key"),
            custom_key_header: secret("x-custom-key"),
            api_key_param: secret("api_key"),
            access_token_param: secret("access_token"),
            token_param: secret("token"),
            custom_param: secret("key"),
            cookie: secret("cookie"),
            proxy_authorization: secret("proxy-authorization"),
        }
    }

    fn all(&self) -> [&Secret; 10] {
        [
            &self.bearer,
            &self.basic,
            &self.default_key_header,
            &self.custom_key_header,
            &self.api_key_param,
            &self.access_token_param,
            &self.token_param,
            &self.custom_param,
            &self.cookie,
            &self.proxy_authorization,
        ]
    }

    /// `path` with every credential-bearing query parameter and one harmless one.
    fn path(&self, path: &str) -> String {
        format!(
            "{path}?api_key={}&access_token={}&keep=visible&token={}&key={}",
            self.api_key_param.value,
            self.access_token_param.value,
            self.token_param.value,
            self.custom_param.value
        )
    }

    /// The credential headers, with `Authorization` of the given scheme.
    fn headers(&self, bearer: bool) -> Vec<(&'static str, String)> {
        let authorization = if bearer {
            format!("Bearer {}", self.bearer.value)
        } else {
            format!("Basic {}", self.basic.value)
        };
        vec![
            ("Authorization", authorization),
            ("X-Api-Key", self.default_key_header.value.clone()),
            ("X-Custom-Key", self.custom_key_header.value.clone()),
            (
                "Cookie",
                format!("session={}; theme=dark", self.cookie.value),
            ),
            (
                "Proxy-Authorization",
                format!("Basic {}", self.proxy_authorization.value),
            ),
        ]
    }

    /// Fails naming the credential and the output it leaked into.
    fn assert_absent(&self, what: &str, text: &str) {
        for s in self.all() {
            assert!(
                !text.contains(&s.value),
                "the {} credential {} appears in {what}:\n{text}",
                s.place,
                s.value
            );
        }
    }
}

/// A gateway whose access log goes to `access_log`, with `[auth.api_key]` reading keys from
/// `X-Custom-Key` and `?key=`, asked to log every credential header, and these routes:
///
/// - `/live` (no authentication, so nothing is stripped) and `/slow` (300 ms read timeout) to `svc`;
/// - `/dead` to a peer where nothing listens;
/// - `/keyed`, which needs an API key.
fn config(access_log: &str, svc: &Upstream) -> String {
    let preamble = Preamble::new()
        .access_log(access_log)
        .log_extra(
            r#"log_headers = ["user-agent", "authorization", "x-api-key", "x-custom-key", "cookie", "proxy-authorization"]"#,
        )
        .render()
        + "\n[auth.api_key]\nheader = \"X-Custom-Key\"\nquery_param = \"key\"\n";
    [
        preamble,
        upstream("svc", &[svc], ""),
        upstream_addrs("dead", &[dead_addr(1)], ""),
        route("live", "svc", r#"path = "/live""#),
        route("slow", "svc", "path = \"/slow\"\nread_timeout = \"300ms\""),
        route("dead", "dead", r#"path = "/dead""#),
        route("keyed", "svc", "path = \"/keyed\"\nauth = [\"api_key\"]"),
    ]
    .concat()
}

/// One request the test sends and the status it must get.
struct Sent {
    request_id: String,
    status: u16,
    body: String,
    /// Whether the gateway wrote the body itself (an upstream's echo repeats the headers).
    gateway_body: bool,
}

/// Sends the credentials, once with a bearer token and once with Basic, to each route and to
/// a path no route matches.
fn send_credentials(gw: &Gateway, creds: &Credentials, tag: &str) -> Vec<Sent> {
    let client = Client::new();
    let mut sent = Vec::new();
    for (path, status) in [
        ("/live/a", 200),
        ("/dead/a", 502),
        ("/slow/a", 504),
        ("/keyed/a", 401),
        ("/nowhere", 404),
    ] {
        for bearer in [true, false] {
            let request_id = format!("{tag}-{}-{bearer}", path.replace('/', "_"));
            let mut headers = creds.headers(bearer);
            headers.push(("X-Request-Id", request_id.clone()));
            if path.starts_with("/slow") {
                headers.push(("x-test-delay-ms", "2000".to_string()));
            }
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let response = client.get_with(&gw.url(&creds.path(path)), &headers);
            assert_eq!(
                response.status, status,
                "{path} (bearer: {bearer}): {}",
                response.body
            );
            sent.push(Sent {
                request_id,
                status,
                body: response.body,
                gateway_body: status != 200,
            });
        }
    }
    sent
}

/// Waits until `text()` mentions every request id; fails naming the first one missing.
fn wait_for_ids(what: &str, sent: &[Sent], text: impl Fn() -> String) -> String {
    let all_there = || sent.iter().all(|s| text().contains(&s.request_id));
    eventually(Duration::from_secs(5), all_there);
    let found = text();
    for s in sent {
        assert!(
            found.contains(&s.request_id),
            "no line for {} ({}) in {what}:\n{found}",
            s.request_id,
            s.status
        );
    }
    found
}

/// Pingora's error line about the request `request_id` (the gateway's summary carries the id).
fn error_line<'a>(stderr: &'a str, request_id: &str) -> Option<&'a str> {
    stderr
        .lines()
        .find(|l| l.contains("Fail to proxy") && l.contains(request_id))
}

#[test]
fn credentials_never_reach_logs_metrics_or_error_bodies() {
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config("${DIR}/access.log", &svc));
    let log = gw.dir().join("access.log");
    let creds = Credentials::new();
    let sent = send_credentials(&gw, &creds, "file");

    // The credentials really were sent: the unauthenticated route passes them on untouched.
    let seen = svc.requests();
    let live = seen
        .iter()
        .find(|r| r.path.starts_with("/live"))
        .expect("the live upstream got the request");
    assert!(
        live.path.contains(&creds.custom_param.value),
        "{}",
        live.path
    );
    assert_eq!(
        live.header("x-custom-key"),
        Some(creds.custom_key_header.value.as_str())
    );

    for s in sent.iter().filter(|s| s.gateway_body) {
        creds.assert_absent(
            &format!("the {} body of {}", s.status, s.request_id),
            &s.body,
        );
    }

    let access_log = wait_for_ids("the access log", &sent, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    creds.assert_absent("the access log", &access_log);
    assert!(
        access_log.contains("key=[REDACTED]") && access_log.contains("keep=visible"),
        "the configured parameter is redacted, others kept:\n{access_log}"
    );
    assert!(
        access_log.contains(r#""x-custom-key":"[REDACTED]""#),
        "the configured key header is redacted although only log_headers names it:\n{access_log}"
    );

    // Pingora logs an error line for each failed upstream request; wait for both kinds.
    let failed: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.status == 502 || s.status == 504)
        .collect();
    eventually(Duration::from_secs(5), || {
        let stderr = gw.stderr();
        failed
            .iter()
            .all(|s| error_line(&stderr, &s.request_id).is_some())
    });
    let stderr = gw.stderr();
    for s in &failed {
        let line = error_line(&stderr, &s.request_id).unwrap_or_else(|| {
            panic!(
                "no Pingora error line for the {} of {}:\n{stderr}",
                s.status, s.request_id
            )
        });
        assert!(
            line.contains("api_key=[REDACTED]")
                && line.contains("key=[REDACTED]")
                && line.contains("keep=visible"),
            "the error line shows the redacted request: {line}"
        );
    }
    creds.assert_absent("stderr", &stderr);
    creds.assert_absent("stdout", &gw.stdout());
    creds.assert_absent("/metrics", &gw.metrics());
}

#[test]
fn debug_logging_never_prints_credentials() {
    // At debug level Pingora prints every request header it sends upstream; the access log on
    // stdout must stay clean too.
    let svc = Upstream::spawn("svc");
    let gw = Gateway::builder(&config("stdout", &svc))
        .env("RUST_LOG", "debug")
        .start();
    let creds = Credentials::new();
    let sent = send_credentials(&gw, &creds, "debug");
    let stdout = wait_for_ids("stdout", &sent, || gw.stdout());
    creds.assert_absent("stdout", &stdout);

    let dead = sent
        .iter()
        .find(|s| s.status == 502)
        .expect("a request to the dead upstream");
    eventually(Duration::from_secs(5), || {
        error_line(&gw.stderr(), &dead.request_id).is_some()
    });
    let stderr = gw.stderr();
    assert!(
        error_line(&stderr, &dead.request_id).is_some(),
        "error lines are still written at debug level:\n{stderr}"
    );
    assert!(
        stderr.contains("DEBUG portcullis") && stderr.contains("Pingora lines above info"),
        "RUST_LOG=debug took effect (the gateway's own debug lines are written):\n{stderr}"
    );
    creds.assert_absent("stderr at RUST_LOG=debug", &stderr);
}

#[test]
fn store_password_never_shows_in_logs_readyz_or_metrics() {
    let redis = Redis::start();
    let password = format!("RedisPwSeCrEt{:016x}", fastrand::u64(..));
    let wrong = format!("WrongPwSeCrEt{:016x}", fastrand::u64(..));
    let reply = redis
        .command(&["CONFIG", "SET", "requirepass", &password])
        .expect("CONFIG SET requirepass");
    assert_eq!(reply, "+OK");
    let svc = Upstream::spawn("svc");
    let template = [
        support::config::PREAMBLE.to_string(),
        format!(
            "\n[store]\nurl = \"{}\"\npassword_env = \"REDIS_PASSWORD\"\n",
            redis.url()
        ),
        upstream("svc", &[&svc], ""),
        route("live", "svc", r#"path = "/live""#),
    ]
    .concat();
    let secrets = [password.as_str(), wrong.as_str()];
    let assert_absent = |what: &str, text: &str| {
        for s in secrets {
            assert!(
                !text.contains(s),
                "the Redis password appears in {what}:\n{text}"
            );
        }
    };

    let good = Gateway::builder(&template)
        .env("REDIS_PASSWORD", &password)
        .start();
    let client = Client::new();
    let ready = || client.get(&good.admin_url("/readyz")).body;
    assert!(
        eventually(Duration::from_secs(5), || ready()
            .contains(r#""state":"ok""#)),
        "the gateway authenticates to Redis: {}",
        ready()
    );
    assert_absent("/readyz", &ready());
    assert_absent("/metrics", &good.metrics());
    assert_absent("stderr", &good.stderr());
    assert_absent("stdout", &good.stdout());

    // A wrong password is refused by Redis and reported, without the password.
    let bad = Gateway::builder(&template)
        .env("REDIS_PASSWORD", &wrong)
        .start();
    let reported = eventually(Duration::from_secs(10), || {
        bad.stderr().contains("store: redis is not answering")
    });
    assert!(
        reported,
        "the refused password is reported:\n{}",
        bad.stderr()
    );
    let bad_ready = client.get(&bad.admin_url("/readyz")).body;
    assert!(bad_ready.contains("unreachable"), "{bad_ready}");
    assert_absent("/readyz", &bad_ready);
    assert_absent("stderr", &bad.stderr());
    assert_absent("/metrics", &bad.metrics());
}

#[test]
fn check_never_quotes_a_password_written_inline_in_the_config() {
    // `password` is not a field (secrets come from env or file), so this is a parse error;
    // the error names the field and its line but never quotes the line.
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = format!("InlinePwSeCrEt{:016x}", fastrand::u64(..));
    let path = dir.path().join("portcullis.toml");
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:1\"]\n\n[admin]\nlisten = \"127.0.0.1:2\"\n\n\
         [store]\nurl = \"redis://127.0.0.1:6379\"\npassword = \"{secret}\"\n"
    );
    std::fs::write(&path, text).expect("write config");
    let path = path.to_str().expect("utf-8 path");
    let done = run_to_exit(&["check", "-c", path], &[], Duration::from_secs(20));
    let output = format!("{}{}", done.stdout, done.stderr);
    assert_eq!(done.code(), Some(1), "{output}");
    assert!(
        output.contains("password") && output.contains("line 9"),
        "the error names the field and the line:\n{output}"
    );
    assert!(
        !output.contains(&secret),
        "check quotes the password:\n{output}"
    );
}

#[test]
fn check_never_prints_a_password_given_in_the_store_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = format!("UrlPwSeCrEt{:016x}", fastrand::u64(..));
    for (url, issue) in [
        (
            format!("http://user:{secret}@127.0.0.1:6379"),
            "is not a redis:// or rediss:// URL",
        ),
        (
            format!("redis://user:{secret}@127.0.0.1:6379"),
            "must not contain a password",
        ),
        (
            format!("redis://user:pa/{secret}@127.0.0.1:6379"),
            "must not contain a password",
        ),
    ] {
        let path = dir.path().join("portcullis.toml");
        let text = format!(
            "{}\n[store]\nurl = \"{url}\"\n",
            support::config::PREAMBLE
                .replace("${PROXY_ADDR}", "127.0.0.1:1")
                .replace("${ADMIN_ADDR}", "127.0.0.1:2")
        );
        std::fs::write(&path, text).expect("write config");
        let path = path.to_str().expect("utf-8 path");
        let done = run_to_exit(&["check", "-c", path], &[], Duration::from_secs(20));
        let output = format!("{}{}", done.stdout, done.stderr);
        assert_eq!(done.code(), Some(1), "{url}: {output}");
        assert!(
            output.contains("store.url") && output.contains(issue),
            "{url}: {output}"
        );
        assert!(
            !output.contains(&secret),
            "check prints the password of {url}:\n{output}"
        );
    }
}

//! Config reload: by `POST /reload` and SIGHUP, without dropping a request, and never onto a
//! broken config.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::config::{route, upstream, Preamble};
use support::{eventually, metric, Client, Gateway, Response, Upstream};

const TOKEN_ENV: &str = "PORTCULLIS_TEST_ADMIN_TOKEN";
const TOKEN: &str = "reload-test-token-42";

/// A config with upstreams "blue" and "green" whose one route sends everything to `target`.
fn config(target: &str, blue: &Upstream, green: &Upstream) -> String {
    let preamble = Preamble::new().admin_token_env(TOKEN_ENV).render();
    [
        preamble,
        upstream("blue", &[blue], ""),
        upstream("green", &[green], ""),
        route("main", target, ""),
    ]
    .concat()
}

fn start(target: &str, blue: &Upstream, green: &Upstream) -> Gateway {
    Gateway::builder(&config(target, blue, green))
        .env(TOKEN_ENV, TOKEN)
        .start()
}

fn reload(gw: &Gateway, authorization: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    Client::new().post(&gw.admin_url("/reload"), &headers, b"")
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// The upstream that answers `GET /` now.
fn serving(gw: &Gateway) -> String {
    let response = Client::new().get(&gw.url("/"));
    assert_eq!(response.status, 200, "{}", response.body);
    response.echo().upstream().to_string()
}

fn reloads(gw: &Gateway, result: &str) -> f64 {
    metric(
        &gw.metrics(),
        "portcullis_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

/// One request made by a load thread.
struct Outcome {
    started: Instant,
    result: Result<(u16, String), String>,
}

#[test]
fn reload_under_load_switches_upstream_without_failing_a_request() {
    let blue = Upstream::spawn("blue");
    let green = Upstream::spawn("green");
    let gw = start("blue", &blue, &green);
    let url = gw.url("/load");

    let stop = Arc::new(AtomicBool::new(false));
    let hard_deadline = Instant::now() + Duration::from_secs(8);
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let url = url.clone();
            thread::spawn(move || {
                let client = Client::with_timeout(Duration::from_secs(5));
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::SeqCst) && Instant::now() < hard_deadline {
                    let started = Instant::now();
                    let result = client.try_send("GET", &url, &[], None).map(|r| {
                        let upstream = serde_json::from_str::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|j| j["upstream"].as_str().map(str::to_string))
                            .unwrap_or_else(|| format!("<not an echo: {}>", r.body));
                        (r.status, upstream)
                    });
                    outcomes.push(Outcome { started, result });
                }
                outcomes
            })
        })
        .collect();

    thread::sleep(Duration::from_millis(1000));
    gw.rewrite_config(&config("green", &blue, &green));
    let response = reload(&gw, Some(&bearer()));
    let reloaded_at = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<Outcome> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("load thread"))
        .collect();

    assert_eq!(response.status, 200, "reload: {}", response.body);
    let _ = response.json();
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.result {
            Ok((200..=299, _)) => None,
            Ok((status, body)) => Some(format!("status {status}: {body}")),
            Err(e) => Some(format!("transport error: {e}")),
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        outcomes.len(),
        failures
    );

    let before = outcomes.iter().filter(|o| o.started < reloaded_at).count();
    let after: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.started >= reloaded_at)
        .filter_map(|o| o.result.as_ref().ok().map(|(_, u)| u.as_str()))
        .collect();
    assert!(
        before > 10 && after.len() > 10,
        "too little load: {before} before, {} after",
        after.len()
    );
    assert!(
        after.iter().all(|u| *u == "green"),
        "requests after the reload went to {after:?}"
    );
    assert!(blue.hits() > 0);
    assert_eq!(reloads(&gw, "ok"), 1.0);
}

#[test]
fn broken_config_is_refused_on_reload_and_the_old_one_keeps_serving() {
    let blue = Upstream::spawn("blue");
    let green = Upstream::spawn("green");
    let gw = start("blue", &blue, &green);
    let errors_before = reloads(&gw, "error");

    gw.rewrite_config(&config("nope", &blue, &green));
    let response = reload(&gw, Some(&bearer()));
    assert!(
        (400..500).contains(&response.status),
        "reload of a broken file: {} {}",
        response.status,
        response.body
    );
    let json = response.json();
    let message = json["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("nope") || message.contains("routes[0].upstream"),
        "the reload error does not name the problem: {}",
        response.body
    );

    assert_eq!(serving(&gw), "blue");
    assert_eq!(reloads(&gw, "error"), errors_before + 1.0);
    assert_eq!(reloads(&gw, "ok"), 0.0);
    assert_eq!(Client::new().get(&gw.admin_url("/readyz")).status, 200);
}

#[test]
fn unparsable_config_is_refused_on_reload_and_the_old_one_keeps_serving() {
    let blue = Upstream::spawn("blue");
    let green = Upstream::spawn("green");
    let gw = start("blue", &blue, &green);

    gw.rewrite_config(&format!(
        "{}\n[[routes]\nname = ",
        config("green", &blue, &green)
    ));
    let response = reload(&gw, Some(&bearer()));
    assert!(
        (400..500).contains(&response.status),
        "reload of bad TOML: {} {}",
        response.status,
        response.body
    );
    assert!(
        response.json()["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        response.body
    );
    assert_eq!(serving(&gw), "blue");
    assert_eq!(reloads(&gw, "error"), 1.0);
}

#[test]
fn sighup_reloads_the_config() {
    let blue = Upstream::spawn("blue");
    let green = Upstream::spawn("green");
    let gw = start("blue", &blue, &green);
    assert_eq!(serving(&gw), "blue");

    gw.rewrite_config(&config("green", &blue, &green));
    gw.sighup();
    assert!(
        eventually(Duration::from_secs(5), || serving(&gw) == "green"),
        "SIGHUP did not switch the route to green\n{}",
        gw.stderr()
    );
    assert!(gw.try_wait().is_none(), "SIGHUP must not stop the gateway");
    assert!(
        eventually(Duration::from_secs(2), || reloads(&gw, "ok") == 1.0),
        "{}",
        gw.metrics()
    );
}

#[test]
fn reload_without_the_right_token_is_401_and_changes_nothing() {
    let blue = Upstream::spawn("blue");
    let green = Upstream::spawn("green");
    let gw = start("blue", &blue, &green);
    gw.rewrite_config(&config("green", &blue, &green));

    for authorization in [
        None,
        Some("Bearer wrong-token"),
        Some(TOKEN),
        Some("Basic cmVsb2FkOnRlc3Q="),
    ] {
        let response = reload(&gw, authorization);
        assert_eq!(
            response.status, 401,
            "Authorization {authorization:?}: {}",
            response.body
        );
        assert!(
            response
                .header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"),
            "401 is not JSON: {:?}",
            response.headers
        );
        assert!(response.json()["error"].is_string(), "{}", response.body);
    }
    assert_eq!(
        serving(&gw),
        "blue",
        "an unauthorized reload must not apply the new file"
    );

    let response = reload(&gw, Some(&bearer()));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(serving(&gw), "green");
}

//! The admin service: health, readiness, metrics, and the token that guards mutations.

mod support;

use std::time::Duration;

use support::config::{route, upstream, Preamble, PREAMBLE};
use support::gateway::run_to_exit;
use support::{eventually, free_port, metric, peer_health, Client, Gateway, Upstream};

#[test]
fn healthz_and_readyz_answer_200() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("main", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let client = Client::new();
    assert_eq!(client.get(&gw.admin_url("/healthz")).status, 200);
    assert_eq!(client.get(&gw.admin_url("/readyz")).status, 200);
}

#[test]
fn metrics_count_requests_by_route_method_and_status() {
    let svc = Upstream::spawn("svc");
    let check = "\n[upstreams.health_check]\nkind = \"tcp\"\ninterval = \"200ms\"\n";
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], check),
        route("main", "svc", "path = \"/main\""),
        route("other", "svc", "path = \"/other\""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(client.get(&gw.url("/main/x")).status, 200);
    }
    assert_eq!(
        client
            .post(&gw.url("/main/x"), &[("x-test-status", "201")], b"{}")
            .status,
        201
    );
    assert_eq!(client.get(&gw.url("/other")).status, 200);

    let response = client.get(&gw.admin_url("/metrics"));
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "metrics content-type {:?}",
        response.header("content-type")
    );

    // Metrics are recorded in the logging phase, which may end just after the client has its
    // response: wait for the last request to be counted.
    let requests = |text: &str, route: &str, method: &str, status: &str| {
        metric(
            text,
            "portcullis_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    let mut text = String::new();
    eventually(Duration::from_secs(5), || {
        text = gw.metrics();
        requests(&text, "other", "GET", "200").is_some()
    });
    assert_eq!(requests(&text, "main", "GET", "200"), Some(3.0), "\n{text}");
    assert_eq!(
        requests(&text, "main", "POST", "201"),
        Some(1.0),
        "\n{text}"
    );
    assert_eq!(
        requests(&text, "other", "GET", "200"),
        Some(1.0),
        "\n{text}"
    );

    assert!(
        text.contains("# TYPE portcullis_request_duration_seconds histogram"),
        "\n{text}"
    );
    let count = metric(
        &text,
        "portcullis_request_duration_seconds_count",
        &[("route", "main")],
    )
    .or_else(|| metric(&text, "portcullis_request_duration_seconds_count", &[]));
    assert!(
        count.is_some_and(|c| c >= 4.0),
        "duration histogram count {count:?}\n{text}"
    );
    assert!(
        metric(
            &text,
            "portcullis_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        )
        .is_some(),
        "no +Inf bucket\n{text}"
    );

    assert!(
        eventually(Duration::from_secs(5), || peer_health(
            &gw.metrics(),
            "svc",
            svc.port()
        ) == Some(1.0)),
        "no portcullis_upstream_peer_healthy{{upstream=\"svc\"}} = 1\n{}",
        gw.metrics()
    );
}

#[test]
fn reload_without_a_token_is_401() {
    let svc = Upstream::spawn("svc");
    let preamble = Preamble::new().admin_token_env("ADMIN_TEST_TOKEN").render();
    let config = [
        preamble,
        upstream("svc", &[&svc], ""),
        route("main", "svc", ""),
    ]
    .concat();
    let gw = Gateway::builder(&config)
        .env("ADMIN_TEST_TOKEN", "s3cr3t-admin")
        .start();

    let response = Client::new().post(&gw.admin_url("/reload"), &[], b"");
    assert_eq!(response.status, 401, "{}", response.body);
    assert!(response
        .header("content-type")
        .unwrap_or_default()
        .starts_with("application/json"));
    assert!(response.json()["error"].is_string(), "{}", response.body);

    let ok = Client::new().post(
        &gw.admin_url("/reload"),
        &[("Authorization", "Bearer s3cr3t-admin")],
        b"",
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[test]
fn mutating_endpoints_are_refused_when_no_token_is_configured() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("main", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);

    let response = Client::new().post(
        &gw.admin_url("/reload"),
        &[("Authorization", "Bearer anything")],
        b"",
    );
    assert!(
        (400..500).contains(&response.status),
        "POST /reload without a configured token: {}",
        response.status
    );
}

#[test]
fn gateway_refuses_to_start_with_admin_on_a_public_address_and_no_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[server]\nlisten = [\"127.0.0.1:{}\"]\n\n[admin]\nlisten = \"0.0.0.0:{}\"\n\n[log]\naccess_log = \"off\"\n\n\
         [[upstreams]]\nname = \"svc\"\npeers = [{{ addr = \"127.0.0.1:{}\" }}]\n\n\
         [[routes]]\nname = \"main\"\nupstream = \"svc\"\n",
        free_port(),
        free_port(),
        free_port()
    );
    let path = dir.path().join("public-admin.toml");
    std::fs::write(&path, config).expect("write config");

    let finished = run_to_exit(
        &["run", "-c", path.to_str().expect("utf-8 path")],
        &[],
        Duration::from_secs(10),
    );
    assert!(
        finished.status.is_some(),
        "the gateway started (still running after 10 s)"
    );
    assert_ne!(
        finished.code(),
        Some(0),
        "exit status {:?}",
        finished.status
    );
    let output = format!("{}{}", finished.stderr, finished.stdout);
    assert!(
        output.contains("admin") && output.contains("token"),
        "the refusal does not say why (admin needs a token):\n{output}"
    );
}

#[test]
fn unknown_admin_path_is_404() {
    let svc = Upstream::spawn("svc");
    let config = [
        PREAMBLE.to_string(),
        upstream("svc", &[&svc], ""),
        route("main", "svc", ""),
    ]
    .concat();
    let gw = Gateway::start(&config);
    assert_eq!(
        Client::new().get(&gw.admin_url("/no-such-endpoint")).status,
        404
    );
}

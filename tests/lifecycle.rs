//! Process lifecycle: graceful shutdown on SIGTERM and idle keep-alive connections.

mod support;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::config::{route, upstream, Preamble};
use support::{eventually, Client, Gateway, RawConn, Upstream};

fn config(preamble: Preamble, svc: &Upstream) -> String {
    [
        preamble.render(),
        upstream("svc", &[svc], ""),
        route("main", "svc", ""),
    ]
    .concat()
}

const GET: &[u8] = b"GET /ka HTTP/1.1\r\nHost: svc.example.com\r\n\r\n";

#[test]
fn sigterm_lets_an_in_flight_request_finish_and_exits_0() {
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config(Preamble::new().grace_period("3s"), &svc));

    let url = gw.url("/slow");
    let in_flight = thread::spawn(move || {
        Client::with_timeout(Duration::from_secs(10)).try_send(
            "GET",
            &url,
            &[("x-test-delay-ms", "1000")],
            None,
        )
    });
    assert!(
        eventually(Duration::from_secs(5), || svc.hits() == 1),
        "the slow request never reached the upstream"
    );
    gw.sigterm();

    let response = in_flight.join().expect("client thread");
    let response = response
        .unwrap_or_else(|e| panic!("in-flight request failed on SIGTERM: {e}\n{}", gw.stderr()));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.echo().upstream(), "svc");

    let status = gw.wait_exit(Duration::from_secs(15));
    let status =
        status.unwrap_or_else(|| panic!("still running 15 s after SIGTERM\n{}", gw.stderr()));
    assert!(
        status.success(),
        "exit status {status} after SIGTERM\n{}",
        gw.stderr()
    );
}

#[test]
fn sigterm_stops_accepting_new_connections() {
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config(Preamble::new().grace_period("3s"), &svc));

    // Keep a request in flight so the process is still inside its grace period.
    let url = gw.url("/slow");
    let in_flight = thread::spawn(move || {
        Client::with_timeout(Duration::from_secs(10)).try_send(
            "GET",
            &url,
            &[("x-test-delay-ms", "2000")],
            None,
        )
    });
    assert!(eventually(Duration::from_secs(5), || svc.hits() == 1));
    gw.sigterm();

    let addr = gw.proxy_addr().parse().expect("proxy addr");
    let refused = eventually(Duration::from_secs(1), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    });
    assert!(refused, "new connections are still accepted after SIGTERM");
    assert!(
        gw.try_wait().is_none() || in_flight.is_finished(),
        "exited before the in-flight request finished"
    );
    let response = in_flight
        .join()
        .expect("client thread")
        .expect("in-flight request");
    assert_eq!(response.status, 200);
    let status = gw
        .wait_exit(Duration::from_secs(15))
        .expect("exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn sigterm_with_no_traffic_exits_0() {
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config(Preamble::new(), &svc));
    let start = Instant::now();
    gw.sigterm();
    let status = gw.wait_exit(Duration::from_secs(10));
    let status =
        status.unwrap_or_else(|| panic!("still running 10 s after SIGTERM\n{}", gw.stderr()));
    assert!(status.success(), "exit status {status}\n{}", gw.stderr());
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?} to exit",
        start.elapsed()
    );
}

#[test]
fn idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config(
        Preamble::new().server_extra("keepalive_timeout = \"1s\""),
        &svc,
    ));

    let mut conn = RawConn::connect(gw.proxy_addr());
    conn.send(GET).expect("send");
    assert_eq!(conn.read_response().expect("first response").status, 200);
    thread::sleep(Duration::from_millis(200));
    conn.send(GET).expect("send again");
    assert_eq!(
        conn.read_response()
            .expect("second response on the same connection")
            .status,
        200
    );

    let closed_after = conn.wait_closed(Duration::from_secs(5));
    let closed_after = closed_after
        .expect("idle keep-alive connection still open 5 s after keepalive_timeout = 1s");
    assert!(
        closed_after >= Duration::from_millis(500),
        "closed after {closed_after:?}, before the 1 s timeout"
    );
    assert!(
        closed_after <= Duration::from_secs(3),
        "closed after {closed_after:?}, want ~1 s"
    );
}

#[test]
fn busy_keepalive_connection_stays_open_past_keepalive_timeout() {
    let svc = Upstream::spawn("svc");
    let gw = Gateway::start(&config(
        Preamble::new().server_extra("keepalive_timeout = \"1s\""),
        &svc,
    ));

    let mut conn = RawConn::connect(gw.proxy_addr());
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        conn.send(GET).expect("send");
        let response = conn.read_response();
        assert!(
            response.as_ref().is_ok_and(|r| r.status == 200),
            "request at {:?} on a busy connection: {response:?}",
            start.elapsed()
        );
        thread::sleep(Duration::from_millis(400));
    }
}

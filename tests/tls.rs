//! TLS on both sides: the HTTPS listener (with HTTP/2 by ALPN) and HTTPS upstreams whose
//! certificates are verified by default. Certificates are made per test with the `openssl`
//! command; the HTTPS upstream is `openssl s_server -www`, a real TLS server.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::config::{route, upstream, upstream_addrs, PREAMBLE};
use support::{eventually, free_port, Gateway, Upstream};

/// A self-signed certificate for `localhost` / 127.0.0.1 in a temp dir.
struct Cert {
    dir: tempfile::TempDir,
}

impl Cert {
    fn new() -> Cert {
        let dir = tempfile::tempdir().expect("temp dir");
        support::tls::self_signed(dir.path());
        Cert { dir }
    }
    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// `openssl s_server -www` on a free port; killed on drop.
struct TlsUpstream {
    child: Child,
    port: u16,
}

impl TlsUpstream {
    fn start(cert: &Cert) -> TlsUpstream {
        let port = free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-www", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert.cert())
            .arg("-key")
            .arg(cert.key())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_server");
        let up = TlsUpstream { child, port };
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "openssl s_server did not listen"
        );
        up
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("the curl command is needed for TLS tests (Debian package curl)");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn https_listener_serves_http2_and_tells_the_upstream_it_was_https() {
    let cert = Cert::new();
    let up = Upstream::spawn("app");
    let tls_addr = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "{PREAMBLE}\n[server.tls]\nlisten = \"${{TLS_ADDR}}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n{}{}",
        path(&cert.cert()),
        path(&cert.key()),
        upstream("app", &[&up], ""),
        route("all", "app", "")
    );
    let _gw = Gateway::builder(&config)
        .var("TLS_ADDR", tls_addr.clone())
        .start();
    let url = format!("https://{tls_addr}/hello");

    let version = curl(&[
        "--cacert",
        &path(&cert.cert()),
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &url,
    ]);
    assert_eq!(version.trim(), "2 200", "HTTP/2 over TLS expected");

    let body = curl(&["--cacert", &path(&cert.cert()), "--http1.1", &url]);
    let echo: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(echo["path"], "/hello");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
}

fn https_upstream_config(port: u16, extra: &str) -> String {
    format!(
        "{PREAMBLE}{}{}",
        upstream_addrs(
            "secure",
            &[format!("127.0.0.1:{port}")],
            &format!("tls = true\nsni = \"localhost\"\n{extra}")
        ),
        route("all", "secure", "")
    )
}

#[test]
fn https_upstream_is_verified_against_the_configured_ca() {
    let cert = Cert::new();
    let tls_up = TlsUpstream::start(&cert);
    let gw = Gateway::start(&https_upstream_config(
        tls_up.port,
        &format!("ca_file = \"{}\"", path(&cert.cert())),
    ));
    let r = support::Client::new().get(&gw.url("/"));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn https_upstream_with_an_untrusted_certificate_is_refused_by_default() {
    let cert = Cert::new();
    let tls_up = TlsUpstream::start(&cert);
    let gw = Gateway::start(&https_upstream_config(tls_up.port, ""));
    let r = support::Client::new().get(&gw.url("/"));
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"], "bad_gateway");
}

#[test]
fn https_upstream_verification_can_be_switched_off_explicitly() {
    let cert = Cert::new();
    let tls_up = TlsUpstream::start(&cert);
    let gw = Gateway::start(&https_upstream_config(tls_up.port, "verify_cert = false"));
    let r = support::Client::new().get(&gw.url("/"));
    assert_eq!(r.status, 200, "{}", r.body);
}

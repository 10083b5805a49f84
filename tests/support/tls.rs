//! Certificates for the HTTPS listener tests, made per test with the `openssl` command.

use std::path::Path;
use std::process::{Command, Stdio};

/// Writes a self-signed certificate for `localhost` / 127.0.0.1 into `dir`; returns the
/// (cert, key) paths as text, ready for a config.
pub fn self_signed(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command is needed for TLS tests (Debian package openssl)");
    assert!(status.success(), "openssl req failed");
    let text = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    (text(&cert), text(&key))
}

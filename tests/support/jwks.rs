//! An identity provider for the JWT tests: RSA key pairs generated with the `openssl` command,
//! JWKS documents built from them, token signing, and `JwksServer`, a JWKS endpoint on a free
//! 127.0.0.1 port that counts the requests it gets and can be switched to another key set, to
//! an error status, or stopped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

/// `Cache-Control` of a JWKS answer unless a test changes it: long enough that the gateway's
/// background refresh never runs during a test, so every fetch after the first is on demand.
pub const DEFAULT_CACHE_CONTROL: &str = "max-age=300";

// === impl RsaKey ===

/// A 2048-bit RSA key pair in PEM.
pub struct RsaKey {
    /// PKCS#8 private key.
    pub private_pem: Vec<u8>,
    /// SPKI public key.
    pub public_pem: Vec<u8>,
}

impl RsaKey {
    /// Generates a key pair with `openssl genpkey`.
    ///
    /// # Panics
    /// When the `openssl` command is missing or fails.
    pub fn generate() -> RsaKey {
        let private_pem = openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            None,
        );
        let public_pem = openssl(&["pkey", "-pubout"], Some(&private_pem));
        RsaKey {
            private_pem,
            public_pem,
        }
    }

    /// The private key, for signing.
    ///
    /// # Panics
    /// When the generated PEM does not load (an `openssl` output change).
    pub fn encoding(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(&self.private_pem).expect("generated RSA key loads")
    }

    /// The public JWK for RS256 with `kid`, `alg` and `use: sig`.
    ///
    /// # Panics
    /// When the key cannot be expressed as a JWK.
    pub fn jwk(&self, kid: &str) -> Value {
        let jwk = Jwk::from_encoding_key(&self.encoding(), Algorithm::RS256).expect("jwk from key");
        let mut value = serde_json::to_value(jwk).expect("jwk serializes");
        value["kid"] = json!(kid);
        value["alg"] = json!("RS256");
        value["use"] = json!("sig");
        value
    }

    /// Writes the public key to `dir/name` and returns the path.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write_public(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.public_pem).expect("write public key");
        path
    }
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command is installed");
    let mut input = child.stdin.take().expect("openssl stdin");
    input
        .write_all(stdin.unwrap_or_default())
        .expect("write to openssl");
    drop(input);
    let out = child.wait_with_output().expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A JWKS document holding `keys`.
pub fn jwks_document(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Base64url without padding, as in a JWS.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS with any header, signed with `key` under `alg` whatever the header says.
///
/// # Panics
/// When the key cannot sign under `alg`.
pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
    format!("{message}.{signature}")
}

/// A compact JWS with the header `{"alg", "typ": "JWT", "kid"}`.
///
/// # Panics
/// When the key cannot sign under `alg`.
pub fn sign(alg: Algorithm, kid: &str, claims: &Value, key: &EncodingKey) -> String {
    sign_raw(
        &json!({ "alg": alg, "typ": "JWT", "kid": kid }),
        claims,
        key,
        alg,
    )
}

// === impl JwksServer ===

/// What the server answers every request with.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    cache_control: Option<String>,
}

/// State shared by the handle and the accept thread.
struct Shared {
    /// The current answer; tests switch it between requests.
    answer: Mutex<Answer>,
    /// Requests answered, so tests can count the gateway's fetches.
    requests: AtomicUsize,
}

/// The running listener.
struct Listening {
    /// Tells the accept loop to exit.
    stop: Arc<AtomicBool>,
    /// The accept loop.
    thread: JoinHandle<()>,
}

/// A JWKS endpoint on 127.0.0.1; stops on drop.
pub struct JwksServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listening: Mutex<Option<Listening>>,
}

impl JwksServer {
    /// Serves `document` with status 200 and [`DEFAULT_CACHE_CONTROL`] on a free port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn start(document: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a JWKS server");
        let addr = listener.local_addr().expect("JWKS server local addr");
        let shared = Arc::new(Shared {
            answer: Mutex::new(Answer {
                status: 200,
                body: document,
                cache_control: Some(DEFAULT_CACHE_CONTROL.to_string()),
            }),
            requests: AtomicUsize::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            thread::Builder::new()
                .name("jwks-server".into())
                .spawn(move || accept_loop(listener, &shared, &stop))
                .expect("spawn JWKS server thread")
        };
        JwksServer {
            addr,
            shared,
            listening: Mutex::new(Some(Listening { stop, thread })),
        }
    }

    /// `http://127.0.0.1:port/jwks.json`.
    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// Requests answered so far (a stopped server answers none).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Serves `document` with status 200 from now on.
    pub fn set_document(&self, document: String) {
        let mut answer = self.shared.answer.lock().expect("answer lock");
        answer.status = 200;
        answer.body = document;
    }

    /// Answers `status` with a small JSON error body from now on (200 restores the last
    /// document only through `set_document`).
    pub fn set_status(&self, status: u16) {
        let mut answer = self.shared.answer.lock().expect("answer lock");
        answer.status = status;
        if status != 200 {
            answer.body = r#"{"error":"provider failure"}"#.to_string();
        }
    }

    /// Sets the `Cache-Control` header of later answers (`None` leaves it out).
    pub fn set_cache_control(&self, value: Option<&str>) {
        self.shared
            .answer
            .lock()
            .expect("answer lock")
            .cache_control = value.map(str::to_string);
    }

    /// Closes the listener: connections are refused from now on.
    pub fn stop(&self) {
        let listening = self.listening.lock().expect("listening lock").take();
        if let Some(listening) = listening {
            listening.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept so the loop sees the flag and drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = listening.thread.join();
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: &Shared, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(stream) = stream {
            serve(stream, shared);
        }
    }
}

/// Reads one request head and answers it; one request per connection.
fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 64 * 1024 {
            return;
        }
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let answer = shared.answer.lock().expect("answer lock").clone();
    let cache = answer
        .cache_control
        .map(|c| format!("Cache-Control: {c}\r\n"))
        .unwrap_or_default();
    let response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{cache}\
         Connection: close\r\n\r\n{}",
        answer.status,
        if answer.status == 200 { "OK" } else { "Error" },
        answer.body.len(),
        answer.body
    );
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

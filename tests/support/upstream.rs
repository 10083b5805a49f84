//! `Upstream`: a real HTTP/1.1 echo server on 127.0.0.1 that the gateway proxies to.
//!
//! Every request except the health check is answered with JSON describing what arrived:
//! `{"upstream", "method", "path", "headers", "header_list", "body_len"}`. Request headers steer
//! one response:
//!
//! - `x-test-delay-ms: N`: sleep N ms before answering;
//! - `x-test-status: N`: answer with status N;
//! - `x-test-close: 1`: close the connection without answering;
//! - `x-test-set-header: Name=Value` (repeatable): add that header to the response.
//!
//! `GET /healthz` answers 200 or 503 as set by `set_health` and is counted apart from `hits()`.
//! Every response carries `X-Upstream: <name>`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::raw::{body_kind, header, read_body, read_head};

/// The path answered by the health endpoint.
pub const HEALTH_PATH: &str = "/healthz";

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Request method.
    pub method: String,
    /// Path with query, as on the request line.
    pub path: String,
    /// Headers in order, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Decoded body.
    pub body: Vec<u8>,
}

impl SeenRequest {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// State shared by the fixture handle, its accept thread and connection threads.
struct Shared {
    /// Name echoed in every response, to tell peers apart.
    name: String,
    /// What `GET /healthz` answers.
    healthy: AtomicBool,
    /// Requests answered (or deliberately dropped), health checks excluded.
    hits: AtomicUsize,
    /// Health checks answered.
    health_checks: AtomicUsize,
    /// Open connections, so `stop()` can close them.
    conns: Mutex<HashMap<u64, TcpStream>>,
    /// Id for the next connection in `conns`.
    next_conn: AtomicU64,
    /// Every non-health request, in arrival order.
    seen: Mutex<Vec<SeenRequest>>,
    /// Connections accepted since start (health checks included).
    accepted: AtomicUsize,
}

/// The running listener.
struct Listening {
    /// Tells the accept loop to exit.
    stop: Arc<AtomicBool>,
    /// The accept loop.
    thread: JoinHandle<()>,
}

/// An HTTP echo server on a fixed 127.0.0.1 port that can be stopped and started again.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listening: Mutex<Option<Listening>>,
}

// === impl Upstream ===

impl Upstream {
    /// Starts a server named `name` on a free port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn spawn(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an upstream on 127.0.0.1:0");
        let addr = listener.local_addr().expect("upstream local addr");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
            health_checks: AtomicUsize::new(0),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
        });
        let upstream = Upstream {
            addr,
            shared,
            listening: Mutex::new(None),
        };
        upstream.listen_on(listener);
        upstream
    }

    /// Its name, as echoed in responses.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// "127.0.0.1:port".
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Makes `GET /healthz` answer 200 (`true`) or 503 (`false`).
    pub fn set_health(&self, healthy: bool) {
        self.shared.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests received, health checks excluded.
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Health checks received.
    pub fn health_checks(&self) -> usize {
        self.shared.health_checks.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Every request received so far, health checks excluded.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.seen.lock().expect("seen lock").clone()
    }

    /// The most recent request received.
    ///
    /// # Panics
    /// When none has arrived.
    pub fn last_request(&self) -> SeenRequest {
        self.requests()
            .pop()
            .unwrap_or_else(|| panic!("upstream {} has received no request", self.name()))
    }

    /// Closes the listener and every open connection: connects are refused until `start()`.
    /// Does nothing if already stopped.
    pub fn stop(&self) {
        let listening = self.listening.lock().expect("listening lock").take();
        if let Some(listening) = listening {
            listening.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept so the loop sees the flag and drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = listening.thread.join();
        }
        let conns: Vec<TcpStream> = self
            .shared
            .conns
            .lock()
            .expect("conns lock")
            .drain()
            .map(|(_, c)| c)
            .collect();
        for conn in conns {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Listens again on the same port after `stop()`; does nothing if already listening.
    ///
    /// # Panics
    /// When the port cannot be bound again within a few seconds.
    pub fn start(&self) {
        if self.listening.lock().expect("listening lock").is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!(
                    "upstream {} cannot listen on {} again: {e}",
                    self.name(),
                    self.addr
                ),
            }
        };
        self.listen_on(listener);
    }

    fn listen_on(&self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&self.shared);
        let stop_flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name(format!("upstream-{}-accept", self.shared.name))
            .spawn(move || accept_loop(listener, shared, stop_flag))
            .expect("spawn accept thread");
        *self.listening.lock().expect("listening lock") = Some(Listening { stop, thread });
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let id = shared.next_conn.fetch_add(1, Ordering::SeqCst);
        match stream.try_clone() {
            Ok(clone) => {
                shared.conns.lock().expect("conns lock").insert(id, clone);
            }
            Err(_) => continue,
        }
        let shared = Arc::clone(&shared);
        let _ = thread::Builder::new()
            .name(format!("upstream-{}-conn", shared.name))
            .spawn(move || {
                serve_connection(&shared, stream);
                shared.conns.lock().expect("conns lock").remove(&id);
            });
    }
}

/// Answers requests on one connection until either side closes it.
fn serve_connection(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(head)) => head,
            _ => return,
        };
        let mut parsed_headers = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut parsed_headers);
        if parsed.parse(&head).is_err() {
            let _ = writer.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        }
        let method = parsed.method.unwrap_or("").to_string();
        let path = parsed.path.unwrap_or("").to_string();
        let http10 = parsed.version == Some(0);
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let body = match read_body(&mut reader, body_kind(&headers, true)) {
            Ok(body) => body,
            Err(_) => return,
        };
        let connection = header(&headers, "connection")
            .unwrap_or("")
            .to_ascii_lowercase();
        let keep_alive = if http10 {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };

        let path_only = path.split('?').next().unwrap_or("");
        let (status, mut extra, payload) = if method == "GET" && path_only == HEALTH_PATH {
            shared.health_checks.fetch_add(1, Ordering::SeqCst);
            if shared.healthy.load(Ordering::SeqCst) {
                (200, Vec::new(), b"ok".to_vec())
            } else {
                (503, Vec::new(), b"unhealthy".to_vec())
            }
        } else {
            shared.hits.fetch_add(1, Ordering::SeqCst);
            let seen = SeenRequest {
                method: method.clone(),
                path: path.clone(),
                headers: headers.clone(),
                body,
            };
            let body_len = seen.body.len();
            shared.seen.lock().expect("seen lock").push(seen);

            if let Some(ms) =
                header(&headers, "x-test-delay-ms").and_then(|v| v.trim().parse::<u64>().ok())
            {
                thread::sleep(Duration::from_millis(ms));
            }
            if header(&headers, "x-test-close").is_some_and(|v| v.trim() == "1") {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
            let status = header(&headers, "x-test-status")
                .and_then(|v| v.trim().parse::<u16>().ok())
                .unwrap_or(200);
            let extra: Vec<(String, String)> = headers
                .iter()
                .filter(|(n, _)| n == "x-test-set-header")
                .filter_map(|(_, v)| {
                    v.split_once('=')
                        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                })
                .collect();
            let echo = echo_json(&shared.name, &method, &path, &headers, body_len);
            (status, extra, echo.into_bytes())
        };

        extra.push(("X-Upstream".to_string(), shared.name.clone()));
        let no_body =
            status == 204 || status == 304 || (100..200).contains(&status) || method == "HEAD";
        let mut response = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        if !no_body || method == "HEAD" {
            response.push_str(&format!("Content-Length: {}\r\n", payload.len()));
        }
        if !no_body {
            response.push_str("Content-Type: application/json\r\n");
        }
        for (name, value) in &extra {
            response.push_str(&format!("{name}: {value}\r\n"));
        }
        if !keep_alive {
            response.push_str("Connection: close\r\n");
        }
        response.push_str("\r\n");
        let mut bytes = response.into_bytes();
        if !no_body {
            bytes.extend_from_slice(&payload);
        }
        if writer
            .write_all(&bytes)
            .and_then(|_| writer.flush())
            .is_err()
            || !keep_alive
        {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn echo_json(
    name: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body_len: usize,
) -> String {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    for (n, v) in headers {
        joined
            .entry(n.clone())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    let list: Vec<[&str; 2]> = headers
        .iter()
        .map(|(n, v)| [n.as_str(), v.as_str()])
        .collect();
    serde_json::json!({
        "upstream": name,
        "method": method,
        "path": path,
        "headers": joined,
        "header_list": list,
        "body_len": body_len,
    })
    .to_string()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

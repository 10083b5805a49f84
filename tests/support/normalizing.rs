//! `NormalizingUpstream`: an HTTP/1.1 server on 127.0.0.1 that resolves request paths the way
//! lenient application servers do, to show what an upstream would really serve.
//!
//! It decodes every percent-escape (`%2F` included, as Tomcat with encoded slashes allowed,
//! many Express/Node stacks and naive Go handlers that route on `URL.Path` do), reads `\` as
//! `/` (IIS, some Windows stacks), drops `;params` from segments (Tomcat, Jetty), then removes
//! dot segments without climbing above the root and merges repeated slashes (Go `path.Clean`,
//! nginx `merge_slashes`). Every request is answered 200 with JSON:
//! `{"target", "path", "query", "resolved", "consumer"}`: the request-target as received, its
//! path and query as received, the resolved path, and the `x-consumer-id` header if any.

use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::raw::{body_kind, header, read_body, read_head};

/// A request as the normalizing upstream saw and resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The request-target as on the request line.
    pub target: String,
    /// Its path, as received.
    pub path: String,
    /// Its query (after `?`), as received.
    pub query: Option<String>,
    /// The path this server would serve.
    pub resolved: String,
}

/// The running server; stops on drop.
pub struct NormalizingUpstream {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Resolved>>>,
    thread: Option<JoinHandle<()>>,
}

impl NormalizingUpstream {
    /// Starts the server on a free port.
    ///
    /// # Panics
    /// When no port can be bound.
    pub fn spawn() -> NormalizingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, log) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = thread::Builder::new()
            .name("normalizing-upstream".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stop_flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let log = Arc::clone(&log);
                    let _ = thread::Builder::new()
                        .name("normalizing-conn".into())
                        .spawn(move || serve(stream, &log));
                }
            })
            .expect("spawn accept thread");
        NormalizingUpstream {
            addr,
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// "127.0.0.1:port".
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Resolved> {
        self.seen.lock().expect("seen lock").clone()
    }
}

impl Drop for NormalizingUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers requests on one connection until the peer closes it.
fn serve(stream: TcpStream, log: &Mutex<Vec<Resolved>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Ok(Some(head)) = read_head(&mut reader) {
        let mut parsed_headers = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut parsed_headers);
        if parsed.parse(&head).is_err() {
            let _ = writer.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        }
        let target = parsed.path.unwrap_or("").to_string();
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
        if read_body(&mut reader, body_kind(&headers, true)).is_err() {
            return;
        }
        let seen = resolve_target(&target);
        log.lock().expect("seen lock").push(seen.clone());
        let body = serde_json::json!({
            "target": seen.target,
            "path": seen.path,
            "query": seen.query,
            "resolved": seen.resolved,
            "consumer": header(&headers, "x-consumer-id"),
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Splits a request-target and resolves its path the lenient way (see the module docs).
pub fn resolve_target(target: &str) -> Resolved {
    // Absolute-form: drop "scheme://authority".
    let origin = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => {
            rest.find(['/', '?']).map_or("/", |at| &rest[at..])
        }
        _ => target,
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (origin, None),
    };
    Resolved {
        target: target.to_string(),
        path: path.to_string(),
        query,
        resolved: resolve_path(path),
    }
}

/// Decodes every escape, reads `\` as `/`, drops `;params`, removes dot segments (clamped at
/// the root) and merges slashes.
pub fn resolve_path(path: &str) -> String {
    let decoded = percent_decode(path.as_bytes());
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, segment) in segments.iter().enumerate() {
        let segment = segment.split(';').next().unwrap_or("");
        trailing = i == last && i > 0 && matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut resolved = format!("/{}", out.join("/"));
    if trailing && resolved != "/" {
        resolved.push('/');
    }
    resolved
}

fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

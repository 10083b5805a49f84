//! HTTP/1.1 over a bare `TcpStream`: for what a well-behaved client library will not send
//! (hop-by-hop headers, a `Content-Length` the body never reaches) and for watching a single
//! keep-alive connection. The message parsing here is shared with the `Upstream` fixture.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Longest message head either side accepts; protects the fixtures from a runaway peer.
const MAX_HEAD: usize = 64 * 1024;

/// Reads one message head (start line and headers, up to and including the blank line).
///
/// Returns `Ok(None)` on a clean end of stream before the first byte, which is how a
/// keep-alive peer says it is done.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of stream inside a message head",
            ));
        }
        let line = &head[before..];
        // Tolerate blank lines before a request line (RFC 9112 §2.2).
        if before == 0 && (line == b"\r\n" || line == b"\n") {
            head.clear();
            continue;
        }
        if line == b"\r\n" || line == b"\n" {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message head too large",
            ));
        }
    }
}

/// How the length of a message body is known.
pub enum BodyKind {
    /// No body at all (e.g. 204, 304, a response to HEAD, a request without length headers).
    None,
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response body delimited by the connection closing.
    UntilClose,
}

/// Decides how a body is framed from its headers (RFC 9112 §6.3).
pub fn body_kind(headers: &[(String, String)], is_request: bool) -> BodyKind {
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        return BodyKind::Chunked;
    }
    match header(headers, "content-length").and_then(|v| v.trim().parse().ok()) {
        Some(n) => BodyKind::Length(n),
        None if is_request => BodyKind::None,
        None => BodyKind::UntilClose,
    }
}

/// Reads a body framed as `kind`.
pub fn read_body(reader: &mut impl BufRead, kind: BodyKind) -> io::Result<Vec<u8>> {
    match kind {
        BodyKind::None => Ok(Vec::new()),
        BodyKind::Length(n) => {
            let mut body = vec![0; n];
            reader.read_exact(&mut body)?;
            Ok(body)
        }
        BodyKind::UntilClose => {
            let mut body = Vec::new();
            reader.read_to_end(&mut body)?;
            Ok(body)
        }
        BodyKind::Chunked => {
            let mut body = Vec::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line)?;
                let size = line.trim().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size, 16).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
                if size == 0 {
                    // Trailers, if any, end with a blank line.
                    loop {
                        let mut trailer = String::new();
                        if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                            return Ok(body);
                        }
                    }
                }
                let start = body.len();
                body.resize(start + size, 0);
                reader.read_exact(&mut body[start..])?;
                let mut crlf = String::new();
                reader.read_line(&mut crlf)?;
            }
        }
    }
}

/// First value of a header, by case-insensitive name.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }

    /// The same response in the `client::Response` shape (header names lowercased).
    pub fn into_response(self) -> super::client::Response {
        super::client::Response {
            status: self.status,
            headers: self
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect(),
            body: String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

/// One client connection driven by hand.
pub struct RawConn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RawConn {
    /// Connects to `addr` ("127.0.0.1:port").
    ///
    /// # Panics
    /// When the connection cannot be made.
    pub fn connect(addr: &str) -> RawConn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set read timeout");
        stream.set_nodelay(true).expect("set nodelay");
        let reader = BufReader::new(stream.try_clone().expect("clone stream"));
        RawConn { stream, reader }
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one response (not for responses to HEAD).
    pub fn read_response(&mut self) -> io::Result<RawResponse> {
        let head = read_head(&mut self.reader)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            )
        })?;
        let mut parsed_headers = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Response::new(&mut parsed_headers);
        parsed.parse(&head).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad response head: {e}"),
            )
        })?;
        let status = parsed.code.unwrap_or(0);
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let kind = if (100..200).contains(&status) || status == 204 || status == 304 {
            BodyKind::None
        } else {
            body_kind(&headers, false)
        };
        let body = read_body(&mut self.reader, kind)?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Waits for the peer to close the connection, reading and discarding anything it sends.
    ///
    /// Returns how long that took, or `None` if it was still open after `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        while start.elapsed() < timeout {
            let left = timeout
                .saturating_sub(start.elapsed())
                .max(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .ok()?;
            match self.reader.read(&mut buf) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                // A reset is a close too.
                Err(_) => return Some(start.elapsed()),
            }
        }
        None
    }

    /// Half-closes the sending side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Sends one request on a fresh connection and reads its response.
///
/// # Panics
/// When the connection fails or no response comes back.
pub fn request(addr: &str, bytes: &[u8]) -> RawResponse {
    let mut conn = RawConn::connect(addr);
    conn.send(bytes)
        .unwrap_or_else(|e| panic!("send to {addr}: {e}"));
    conn.read_response()
        .unwrap_or_else(|e| panic!("response from {addr}: {e}"))
}

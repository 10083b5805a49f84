//! `portcullis-loadgen`: the HTTP/1.1 keep-alive load generator behind `load-tests/run`.
//!
//! It opens `--connections` keep-alive connections (spread round-robin over the `--url`s) on one
//! tokio thread, so pinning it to a CPU pins all of it, and sends one request at a time on each
//! connection. Two modes:
//!
//! - **max throughput** (no `--rate`): every connection sends its next request as soon as the
//!   previous response is in (a closed loop, like `wrk`);
//! - **fixed rate** (`--rate R`): request *i* is due at `start + i / R`, spread evenly over the
//!   connections (an open loop, like `wrk2`). A request that is due while its connection still
//!   waits for an earlier response is charged from its due time, so a stall shows up in the
//!   latency of every request it held back (no coordinated omission). A request whose
//!   connection was idle is timed from when it was really written, so the timer wheel's 1 ms
//!   granularity is not charged to the server.
//!
//! A run ends at `--duration` or after `--max-requests`, whichever comes first; requests in
//! flight then get at most `--timeout`. Only loopback targets are accepted. The result is one
//! JSON line on stdout: counts, statuses, requests per second and latency percentiles (µs, from
//! an HDR histogram with 3 significant digits).
//!
//! Responses are parsed just enough for a benchmark: the status line, `Content-Length`,
//! `Transfer-Encoding: chunked` and `Connection: close`.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Largest response head accepted; a longer one is a parse error, not a reason to buffer more.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted; these benchmarks use tiny bodies, so a larger one is a broken peer.
const MAX_BODY: u64 = 64 * 1024 * 1024;
/// Highest latency the histogram tracks (µs); slower samples are recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Bounds on the arguments, so a typo cannot start an unbounded or absurd run.
const MAX_CONNECTIONS: usize = 10_000;
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Width of one `--timeline` slot.
const TIMELINE_SLOT: Duration = Duration::from_millis(100);
/// Shortest sleep of the fixed-rate pacer between two releases.
const PACER_QUANTUM: Duration = Duration::from_micros(200);
/// Pause after a failed connect, so a dead target costs a bounded number of attempts.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// A loopback-only HTTP/1.1 load generator; prints one JSON line.
#[derive(Parser, Debug)]
#[command(name = "portcullis-loadgen", version, about)]
struct Args {
    /// Target, e.g. http://127.0.0.1:8080/path (repeatable: connections are spread round-robin).
    /// Only 127.0.0.1, localhost and [::1] are accepted.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// How long to send, e.g. "10s", "500ms".
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Stop after this many requests even if the duration has not passed.
    #[arg(long, default_value_t = 100_000_000)]
    max_requests: u64,
    /// Fixed-rate mode: requests per second over all connections, timed from their due time.
    #[arg(long)]
    rate: Option<f64>,
    /// A request header, "Name: value" (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Longest wait for one response (and for one connect).
    #[arg(long, default_value = "5s")]
    timeout: String,
    /// Also print the worst latency of each 100 ms of the run (by send time), to find stalls.
    #[arg(long)]
    timeline: bool,
}

/// Why the arguments were refused.
#[derive(Debug, thiserror::Error, PartialEq)]
enum ArgError {
    #[error("--url {0:?}: only http:// URLs are supported")]
    Scheme(String),
    #[error("--url {0:?}: host must be 127.0.0.1, localhost or [::1] (loopback only)")]
    NotLoopback(String),
    #[error("--url {0:?}: {1}")]
    BadUrl(String, &'static str),
    #[error("--header {0:?}: expected \"Name: value\" with a token name and no line breaks")]
    BadHeader(String),
    #[error("--{0}: {1}")]
    BadValue(&'static str, String),
}

/// One target: where to connect and the exact bytes of its request, rendered once.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    /// Address to connect to.
    addr: SocketAddr,
    /// The whole request head, sent unchanged every time.
    request: Vec<u8>,
}

/// The validated run.
#[derive(Debug)]
struct Plan {
    /// Targets, assigned to connections round-robin.
    targets: Vec<Target>,
    /// Number of connections.
    connections: usize,
    /// Sending stops at this offset from the start.
    duration: Duration,
    /// Sending stops after this many requests.
    max_requests: u64,
    /// Requests per second over all connections, in fixed-rate mode.
    rate: Option<f64>,
    /// Bound on one connect and on one response.
    timeout: Duration,
    /// Record the worst latency per `TIMELINE_SLOT`.
    timeline: bool,
}

// === impl Plan ===

impl Plan {
    /// Checks every argument and renders the requests.
    fn from_args(args: &Args) -> Result<Plan, ArgError> {
        let mut headers = Vec::with_capacity(args.headers.len());
        for header in &args.headers {
            headers.push(parse_header(header)?);
        }
        let targets = args
            .urls
            .iter()
            .map(|url| {
                let (addr, host, path) = parse_url(url)?;
                Ok(Target {
                    addr,
                    request: render_request(&host, &path, &headers),
                })
            })
            .collect::<Result<Vec<_>, ArgError>>()?;
        if args.connections == 0 || args.connections > MAX_CONNECTIONS {
            return Err(ArgError::BadValue(
                "connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        let duration = parse_duration("duration", &args.duration)?;
        if duration > MAX_DURATION {
            return Err(ArgError::BadValue("duration", "must be at most 1h".into()));
        }
        let timeout = parse_duration("timeout", &args.timeout)?;
        if args.max_requests == 0 {
            return Err(ArgError::BadValue(
                "max-requests",
                "must be at least 1".into(),
            ));
        }
        if let Some(rate) = args.rate {
            if !(rate.is_finite() && (1.0..=10_000_000.0).contains(&rate)) {
                return Err(ArgError::BadValue(
                    "rate",
                    "must be between 1 and 10000000 requests per second".into(),
                ));
            }
        }
        Ok(Plan {
            targets,
            connections: args.connections,
            duration,
            max_requests: args.max_requests,
            rate: args.rate,
            timeout,
            timeline: args.timeline,
        })
    }
}

fn parse_duration(flag: &'static str, text: &str) -> Result<Duration, ArgError> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| ArgError::BadValue(flag, format!("{text:?}: {e}")))?;
    if duration.is_zero() {
        return Err(ArgError::BadValue(flag, "must be more than zero".into()));
    }
    Ok(duration)
}

/// Splits `http://host[:port][/path]` and refuses anything but a loopback host.
/// Returns the address, the `Host` header value and the request target.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), ArgError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ArgError::Scheme(url.to_string()))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err(ArgError::BadUrl(
            url.to_string(),
            "user info is not supported",
        ));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#') {
        return Err(ArgError::BadUrl(
            url.to_string(),
            "path must not contain spaces, control characters or a fragment",
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| ArgError::BadUrl(url.to_string(), "unclosed [ in host"))?;
        (&v6[..end], &v6[end + 1..])
    } else {
        match authority.rfind(':') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    let port: u16 = match port {
        "" => 80,
        p => p
            .strip_prefix(':')
            .and_then(|digits| digits.parse().ok())
            .filter(|&p: &u16| p != 0)
            .ok_or_else(|| ArgError::BadUrl(url.to_string(), "port must be 1-65535"))?,
    };
    let ip: IpAddr = match host.to_ascii_lowercase().as_str() {
        "localhost" | "127.0.0.1" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        "::1" => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => return Err(ArgError::NotLoopback(url.to_string())),
    };
    Ok((SocketAddr::new(ip, port), authority.to_string(), path))
}

/// Checks one `Name: value` header and returns it in canonical `Name: value` form.
fn parse_header(header: &str) -> Result<String, ArgError> {
    let bad = || ArgError::BadHeader(header.to_string());
    let (name, value) = header.split_once(':').ok_or_else(bad)?;
    let is_token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_token) {
        return Err(bad());
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(bad());
    }
    Ok(format!("{name}: {value}"))
}

fn render_request(host: &str, path: &str, headers: &[String]) -> Vec<u8> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    let has = |name: &str| {
        headers.iter().any(|h| {
            h.split(':')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    };
    if !has("user-agent") {
        request.push_str("User-Agent: portcullis-loadgen\r\n");
    }
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

// === response parsing ===

/// One complete response at the start of a buffer.
#[derive(Debug, PartialEq)]
struct Response {
    /// Status code.
    status: u16,
    /// Bytes of the buffer it takes, head and body.
    len: usize,
    /// The server will close the connection after it.
    close: bool,
}

/// Why a response could not be understood.
#[derive(Debug, thiserror::Error, PartialEq)]
enum ParseError {
    #[error("bad status line")]
    StatusLine,
    #[error("bad header line")]
    HeaderLine,
    #[error("response head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("bad Content-Length")]
    ContentLength,
    #[error("bad chunk")]
    Chunk,
    #[error("interim (1xx) responses are not supported")]
    Interim,
    #[error("response without Content-Length or chunked encoding")]
    NoLength,
}

/// Parses the response at the start of `buf`: `Ok(None)` while it is incomplete.
fn parse_response(buf: &[u8]) -> Result<Option<Response>, ParseError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(ParseError::HeadTooLong)
        } else {
            Ok(None)
        };
    };
    if head_end > MAX_HEAD {
        return Err(ParseError::HeadTooLong);
    }
    let head = &buf[..head_end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().ok_or(ParseError::StatusLine)?;
    let (http10, status) = parse_status_line(status_line)?;
    if (100..200).contains(&status) {
        return Err(ParseError::Interim);
    }
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut close = http10;
    for line in lines {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::HeaderLine)?;
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(ParseError::HeaderLine);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(ParseError::ContentLength)?;
            if content_length.is_some_and(|old| old != n) || n > MAX_BODY {
                return Err(ParseError::ContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Chunked is what matters when it is the last coding.
            chunked = value
                .split(|&b| b == b',')
                .next_back()
                .is_some_and(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    close = false;
                }
            }
        }
    }
    let body_start = head_end + 4;
    let len = if status == 204 || status == 304 {
        Some(body_start)
    } else if chunked {
        chunked_end(buf, body_start)?
    } else if let Some(n) = content_length {
        let end = body_start + n as usize;
        (buf.len() >= end).then_some(end)
    } else {
        return Err(ParseError::NoLength);
    };
    Ok(len.map(|len| Response { status, len, close }))
}

/// `HTTP/1.x NNN reason` → (is HTTP/1.0, status).
fn parse_status_line(line: &[u8]) -> Result<(bool, u16), ParseError> {
    let http10 = match line.get(..9) {
        Some(b"HTTP/1.1 ") => false,
        Some(b"HTTP/1.0 ") => true,
        _ => return Err(ParseError::StatusLine),
    };
    let code = line.get(9..12).ok_or(ParseError::StatusLine)?;
    if !code.iter().all(u8::is_ascii_digit) || line.get(12).is_some_and(|&b| b != b' ') {
        return Err(ParseError::StatusLine);
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(ParseError::StatusLine);
    }
    Ok((http10, status))
}

/// End of a chunked body starting at `pos` (after the trailers), or `None` while incomplete.
fn chunked_end(buf: &[u8], mut pos: usize) -> Result<Option<usize>, ParseError> {
    loop {
        let Some(line_len) = find(&buf[pos..], b"\r\n") else {
            return if buf.len() - pos > 1024 {
                Err(ParseError::Chunk)
            } else {
                Ok(None)
            };
        };
        let line = &buf[pos..pos + line_len];
        let size_text = line
            .split(|&b| b == b';')
            .next()
            .map(trim)
            .unwrap_or_default();
        let size = std::str::from_utf8(size_text)
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= 15)
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .filter(|&n| n <= MAX_BODY)
            .ok_or(ParseError::Chunk)?;
        pos += line_len + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let Some(line_len) = find(&buf[pos..], b"\r\n") else {
                    return Ok(None);
                };
                pos += line_len + 2;
                if line_len == 0 {
                    return Ok(Some(pos));
                }
            }
        }
        let data_end = pos + size as usize;
        if buf.len() < data_end + 2 {
            return Ok(None);
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(ParseError::Chunk);
        }
        pos = data_end + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

// === the run ===

/// State shared by the connections.
struct Shared {
    /// The run's plan.
    plan: Plan,
    /// When sending started; fixed-rate due times are offsets from it.
    start: Instant,
    /// Sending stops at this instant.
    deadline: Instant,
    /// Requests claimed so far, to stop at `max_requests` over all connections (max mode).
    claimed: AtomicU64,
    /// Releases requests at their due times (fixed-rate mode).
    pacer: Option<Pacer>,
}

/// Releases fixed-rate requests at their due times from a thread of its own.
///
/// Tokio's timer has 1 ms granularity: sleeping on it would send requests in 1 ms bursts,
/// and at half the server's capacity a burst alone adds up to half a millisecond of queueing.
/// A plain thread sleeping to the next due time wakes within tens of microseconds; it wakes at
/// most once per `PACER_QUANTUM` and then releases every request due by then.
struct Pacer {
    /// Requests released so far: request `i` may be sent once `released > i`.
    released: AtomicU64,
    /// No more requests will be released.
    finished: AtomicBool,
    /// One per connection; connection `c` sends requests `c`, `c + n`, `c + 2n`, …
    wakers: Vec<Notify>,
}

// === impl Pacer ===

impl Pacer {
    fn new(connections: usize) -> Pacer {
        Pacer {
            released: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            wakers: (0..connections).map(|_| Notify::new()).collect(),
        }
    }

    /// Waits until request `request` of connection `conn` is released; false when the run is over.
    async fn wait_for(&self, request: u64, conn: usize) -> bool {
        loop {
            if self.released.load(Ordering::Acquire) > request {
                return true;
            }
            if self.finished.load(Ordering::Acquire) {
                return false;
            }
            // `notify_one` keeps a permit, so a release between the checks and here is not lost.
            self.wakers[conn].notified().await;
        }
    }

    /// Releases `total` requests at `rate` per second from `start`, stopping at `duration`.
    fn release(&self, start: std::time::Instant, rate: f64, duration: Duration, total: u64) {
        let connections = self.wakers.len() as u64;
        let mut released = 0u64;
        loop {
            let elapsed = start.elapsed();
            if elapsed >= duration || released >= total {
                break;
            }
            let due = ((elapsed.as_secs_f64() * rate) as u64 + 1).min(total);
            if due > released {
                self.released.store(due, Ordering::Release);
                for request in released..due.min(released + connections) {
                    self.wakers[(request % connections) as usize].notify_one();
                }
                released = due;
            }
            // Waking for every request would cost the shared CPU more than the requests do;
            // at most one release per quantum keeps bursts to `rate × quantum` requests.
            let next = (start + Duration::from_secs_f64(released as f64 / rate))
                .max(start + elapsed + PACER_QUANTUM);
            std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
        }
        self.finished.store(true, Ordering::Release);
        for waker in &self.wakers {
            waker.notify_one();
        }
    }
}

/// What one connection measured.
struct Tally {
    /// Latencies in µs.
    latency: Histogram<u64>,
    /// Responses by status.
    statuses: BTreeMap<u16, u64>,
    /// Connects, writes and reads that failed or timed out, and unparseable responses.
    errors: u64,
    /// First error seen, for the summary.
    first_error: Option<String>,
    /// When the last response arrived.
    last_done: Option<Instant>,
    /// Worst latency (µs) of the requests sent in each `TIMELINE_SLOT`, with `--timeline`.
    worst_by_slot: Vec<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .expect("constant histogram bounds are valid"),
            statuses: BTreeMap::new(),
            errors: 0,
            first_error: None,
            last_done: None,
            worst_by_slot: Vec::new(),
        }
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        self.first_error.get_or_insert(what);
    }

    fn merge(&mut self, other: Tally) {
        self.latency
            .add(&other.latency)
            .expect("histograms with equal bounds merge");
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.last_done = self.last_done.max(other.last_done);
        if self.worst_by_slot.len() < other.worst_by_slot.len() {
            self.worst_by_slot.resize(other.worst_by_slot.len(), 0);
        }
        for (mine, theirs) in self.worst_by_slot.iter_mut().zip(other.worst_by_slot) {
            *mine = (*mine).max(theirs);
        }
    }
}

/// Sends requests on one connection until the deadline or the request budget is reached.
async fn drive(shared: Arc<Shared>, index: usize, mut stream: Option<TcpStream>) -> Tally {
    let plan = &shared.plan;
    let target = &plan.targets[index % plan.targets.len()];
    let mut tally = Tally::new();
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut sent: u64 = 0;
    let mut free_since = shared.start;
    loop {
        let due = match (&shared.pacer, plan.rate) {
            (Some(pacer), Some(rate)) => {
                let request = index as u64 + sent * plan.connections as u64;
                if !pacer.wait_for(request, index).await {
                    break;
                }
                shared.start + Duration::from_secs_f64(request as f64 / rate)
            }
            _ => {
                if Instant::now() >= shared.deadline
                    || shared.claimed.fetch_add(1, Ordering::Relaxed) >= plan.max_requests
                {
                    break;
                }
                Instant::now()
            }
        };
        sent += 1;
        if stream.is_none() {
            match tokio::time::timeout(plan.timeout, TcpStream::connect(target.addr)).await {
                Ok(Ok(s)) => {
                    // Small requests and responses: never wait to coalesce them.
                    let _ = s.set_nodelay(true);
                    stream = Some(s);
                }
                Ok(Err(e)) => {
                    tally.error(format!("connect {}: {e}", target.addr));
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    continue;
                }
                Err(_) => {
                    tally.error(format!("connect {}: timed out", target.addr));
                    continue;
                }
            }
        }
        let Some(conn) = stream.as_mut() else {
            continue;
        };
        // Held back by an earlier response: charge from the due time. Idle: from now.
        let now = Instant::now();
        let from = if free_since > due { due } else { now };
        buf.clear();
        let outcome =
            tokio::time::timeout(plan.timeout, exchange(conn, &target.request, &mut buf)).await;
        let done = Instant::now();
        free_since = done;
        match outcome {
            Ok(Ok(response)) => {
                let micros = u64::try_from(done.duration_since(from).as_micros())
                    .unwrap_or(MAX_LATENCY_US)
                    .clamp(1, MAX_LATENCY_US);
                tally.latency.saturating_record(micros);
                if plan.timeline {
                    let slot = (from.duration_since(shared.start).as_micros()
                        / TIMELINE_SLOT.as_micros()) as usize;
                    if tally.worst_by_slot.len() <= slot {
                        tally.worst_by_slot.resize(slot + 1, 0);
                    }
                    tally.worst_by_slot[slot] = tally.worst_by_slot[slot].max(micros);
                }
                *tally.statuses.entry(response.status).or_default() += 1;
                tally.last_done = Some(done);
                if response.close || response.len != buf.len() {
                    stream = None;
                }
            }
            Ok(Err(e)) => {
                tally.error(e);
                stream = None;
            }
            Err(_) => {
                tally.error("response timed out".into());
                stream = None;
            }
        }
    }
    tally
}

/// Writes one request and reads its response into `buf`.
async fn exchange(
    conn: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<Response, String> {
    conn.write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let n = conn.read_buf(buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a complete response".into());
        }
        if let Some(response) = parse_response(buf).map_err(|e| format!("response: {e}"))? {
            return Ok(response);
        }
    }
}

/// Runs the plan on the current thread and returns the merged tally and the elapsed time.
async fn run(plan: Plan) -> (Tally, Duration) {
    // Connect first, like wrk: the accept path and the proxy's first request on a connection
    // are not what the run measures. A connection that fails here is retried (and counted) by
    // its task.
    let streams = futures::future::join_all((0..plan.connections).map(|i| {
        let addr = plan.targets[i % plan.targets.len()].addr;
        let timeout = plan.timeout;
        async move {
            match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    Some(s)
                }
                _ => None,
            }
        }
    }))
    .await;
    let start = Instant::now();
    let pacer = plan.rate.map(|_| Pacer::new(plan.connections));
    let shared = Arc::new(Shared {
        deadline: start + plan.duration,
        start,
        claimed: AtomicU64::new(0),
        pacer,
        plan,
    });
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| tokio::spawn(drive(Arc::clone(&shared), i, stream)))
        .collect();
    let pacer = shared.plan.rate.map(|rate| {
        let shared = Arc::clone(&shared);
        let duration = shared.plan.duration;
        let total = shared
            .plan
            .max_requests
            .min((duration.as_secs_f64() * rate).ceil() as u64);
        std::thread::spawn(move || {
            if let Some(pacer) = &shared.pacer {
                pacer.release(shared.start.into_std(), rate, duration, total);
            }
        })
    });
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(e) => total.error(format!("connection task failed: {e}")),
        }
    }
    if let Some(pacer) = pacer {
        if pacer.join().is_err() {
            total.error("pacer thread panicked".into());
        }
    }
    let end = total.last_done.unwrap_or_else(Instant::now).max(start);
    (total, end.duration_since(start))
}

fn summary(
    plan_rate: Option<f64>,
    connections: usize,
    tally: &Tally,
    elapsed: Duration,
) -> serde_json::Value {
    let requests: u64 = tally.statuses.values().sum();
    let secs = elapsed.as_secs_f64();
    let rps = if secs > 0.0 {
        requests as f64 / secs
    } else {
        0.0
    };
    let h = &tally.latency;
    let pct = |q: f64| {
        if requests == 0 {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    let statuses: serde_json::Map<String, serde_json::Value> = tally
        .statuses
        .iter()
        .map(|(s, n)| (s.to_string(), (*n).into()))
        .collect();
    let mut out = serde_json::json!({
        "mode": if plan_rate.is_some() { "rate" } else { "max" },
        "target_rate": plan_rate,
        "connections": connections,
        "requests": requests,
        "errors": tally.errors,
        "first_error": tally.first_error,
        "status": statuses,
        "elapsed_s": (secs * 1000.0).round() / 1000.0,
        "rps": rps.round(),
        "latency_us": {
            "min": if requests == 0 { 0 } else { h.min() },
            "mean": h.mean().round(),
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "p999": pct(0.999),
            "max": if requests == 0 { 0 } else { h.max() },
        },
    });
    if !tally.worst_by_slot.is_empty() {
        out["timeline_slot_ms"] = (TIMELINE_SLOT.as_millis() as u64).into();
        out["timeline_worst_us"] = tally.worst_by_slot.clone().into();
    }
    out
}

fn main() -> ExitCode {
    let args = Args::parse();
    let plan = match Plan::from_args(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("portcullis-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("portcullis-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (rate, connections) = (plan.rate, plan.connections);
    let (tally, elapsed) = runtime.block_on(run(plan));
    println!("{}", summary(rate, connections, &tally, elapsed));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Plan, ArgError> {
        let mut argv = vec!["portcullis-loadgen"];
        argv.extend_from_slice(extra);
        Plan::from_args(&Args::try_parse_from(argv).expect("clap accepts the flags"))
    }

    #[test]
    fn loopback_urls_are_accepted() {
        let (addr, host, path) = parse_url("http://127.0.0.1:8080/orders?page=2").expect("ok");
        assert_eq!(addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(
            (host.as_str(), path.as_str()),
            ("127.0.0.1:8080", "/orders?page=2")
        );
        let (addr, host, path) = parse_url("http://LOCALHOST").expect("ok");
        assert_eq!(addr, "127.0.0.1:80".parse().expect("addr"));
        assert_eq!((host.as_str(), path.as_str()), ("LOCALHOST", "/"));
        let (addr, _, path) = parse_url("http://[::1]:9000?x=1").expect("ok");
        assert_eq!(addr, "[::1]:9000".parse().expect("addr"));
        assert_eq!(path, "/?x=1");
    }

    #[test]
    fn non_loopback_hosts_are_refused() {
        for url in [
            "http://10.0.0.1:80/",
            "http://example.com/",
            "http://127.0.0.2:80/",
            "http://0.0.0.0:80/",
            "http://localhost.example.com/",
            "http://[::2]:80/",
            "http://127.0.0.1@example.com/",
        ] {
            assert!(
                matches!(
                    parse_url(url),
                    Err(ArgError::NotLoopback(_)) | Err(ArgError::BadUrl(..))
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn other_schemes_and_bad_ports_are_refused() {
        assert_eq!(
            parse_url("https://127.0.0.1/"),
            Err(ArgError::Scheme("https://127.0.0.1/".into()))
        );
        assert!(matches!(
            parse_url("127.0.0.1:80"),
            Err(ArgError::Scheme(_))
        ));
        for url in [
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:x/",
        ] {
            assert!(matches!(parse_url(url), Err(ArgError::BadUrl(..))), "{url}");
        }
        assert!(matches!(
            parse_url("http://127.0.0.1/a b"),
            Err(ArgError::BadUrl(..))
        ));
    }

    #[test]
    fn headers_must_be_name_colon_value() {
        assert_eq!(
            parse_header("X-Api-Key:  pc_abc ").expect("ok"),
            "X-Api-Key: pc_abc"
        );
        assert_eq!(
            parse_header("Authorization: Bearer a.b.c").expect("ok"),
            "Authorization: Bearer a.b.c"
        );
        for bad in ["no colon", ": value", "Bad Name: v", "X: a\r\nInjected: 1"] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_is_rendered_once_with_host_and_headers() {
        let plan =
            args(&["--url", "http://127.0.0.1:81/p", "--header", "X-Api-Key: k"]).expect("ok");
        assert_eq!(
            String::from_utf8(plan.targets[0].request.clone()).expect("utf8"),
            "GET /p HTTP/1.1\r\nHost: 127.0.0.1:81\r\nUser-Agent: portcullis-loadgen\r\nX-Api-Key: k\r\n\r\n"
        );
    }

    #[test]
    fn run_bounds_are_checked() {
        let url = ["--url", "http://127.0.0.1:81/"];
        let with = |extra: &[&str]| args(&[&url[..], extra].concat());
        assert!(with(&[]).is_ok());
        assert!(matches!(
            with(&["--connections", "0"]),
            Err(ArgError::BadValue("connections", _))
        ));
        assert!(matches!(
            with(&["--duration", "0s"]),
            Err(ArgError::BadValue("duration", _))
        ));
        assert!(matches!(
            with(&["--duration", "2h"]),
            Err(ArgError::BadValue("duration", _))
        ));
        assert!(matches!(
            with(&["--duration", "10"]),
            Err(ArgError::BadValue("duration", _))
        ));
        assert!(matches!(
            with(&["--max-requests", "0"]),
            Err(ArgError::BadValue("max-requests", _))
        ));
        assert!(matches!(
            with(&["--rate", "0"]),
            Err(ArgError::BadValue("rate", _))
        ));
        assert!(matches!(
            with(&["--rate", "NaN"]),
            Err(ArgError::BadValue("rate", _))
        ));
        let plan = with(&[
            "--rate",
            "5000",
            "--duration",
            "500ms",
            "--connections",
            "4",
        ])
        .expect("ok");
        assert_eq!(
            (plan.rate, plan.duration, plan.connections),
            (Some(5000.0), Duration::from_millis(500), 4)
        );
        assert!(matches!(
            args(&["--url", "http://192.168.1.1/"]),
            Err(ArgError::NotLoopback(_))
        ));
    }

    #[test]
    fn content_length_response_is_parsed_when_complete() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-Id: a\r\n\r\nhello";
        for cut in 0..response.len() {
            assert_eq!(parse_response(&response[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse_response(response),
            Ok(Some(Response {
                status: 200,
                len: response.len(),
                close: false
            }))
        );
        // A following response in the same buffer is left alone.
        let mut two = response.to_vec();
        two.extend_from_slice(b"HTTP/1.1 404 Not Found\r\n");
        assert_eq!(
            parse_response(&two).map(|r| r.map(|r| r.len)),
            Ok(Some(response.len()))
        );
    }

    #[test]
    fn chunked_response_is_parsed_with_extensions_and_trailers() {
        let response =
            b"HTTP/1.1 429 Too Many\r\ntransfer-encoding: chunked\r\n\r\n4;x=y\r\nabcd\r\n2\r\nef\r\n0\r\nT: 1\r\n\r\n";
        for cut in 0..response.len() {
            assert_eq!(parse_response(&response[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse_response(response),
            Ok(Some(Response {
                status: 429,
                len: response.len(),
                close: false
            }))
        );
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(parse_response(bad), Err(ParseError::Chunk));
        let bad_crlf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY";
        assert_eq!(parse_response(bad_crlf), Err(ParseError::Chunk));
    }

    #[test]
    fn connection_close_and_http10_end_keepalive() {
        let close = b"HTTP/1.1 503 Service Unavailable\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_response(close).map(|r| r.map(|r| (r.status, r.close))),
            Ok(Some((503, true)))
        );
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_response(old).map(|r| r.map(|r| r.close)),
            Ok(Some(true))
        );
        let old_ka = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_response(old_ka).map(|r| r.map(|r| r.close)),
            Ok(Some(false))
        );
        let no_body = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            parse_response(no_body).map(|r| r.map(|r| r.len)),
            Ok(Some(no_body.len()))
        );
    }

    /// A keep-alive server on 127.0.0.1:0 answering every request with a 200.
    async fn tiny_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = find(&buf, b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if conn.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        format!("http://127.0.0.1:{port}/")
    }

    #[tokio::test]
    async fn max_mode_stops_at_the_request_budget() {
        let url = tiny_server().await;
        let plan =
            args(&["--url", &url, "--connections", "8", "--max-requests", "500"]).expect("ok");
        let (tally, _) = run(plan).await;
        assert_eq!(tally.statuses.get(&200), Some(&500));
        assert_eq!(tally.errors, 0);
    }

    #[tokio::test]
    async fn rate_mode_sends_rate_times_duration() {
        let url = tiny_server().await;
        let plan = args(&[
            "--url",
            &url,
            "--connections",
            "4",
            "--rate",
            "2000",
            "--duration",
            "250ms",
        ])
        .expect("ok");
        let (tally, elapsed) = run(plan).await;
        let sent = tally.statuses.get(&200).copied().unwrap_or(0);
        assert!((250..=500).contains(&sent), "sent {sent}");
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
        assert_eq!(tally.errors, 0);
    }

    #[tokio::test]
    async fn a_dead_target_counts_errors_and_still_ends() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = format!("http://127.0.0.1:{port}/");
        let plan = args(&["--url", &url, "--connections", "2", "--duration", "100ms"]).expect("ok");
        let (tally, _) = run(plan).await;
        assert!(tally.statuses.is_empty());
        assert!(tally.errors > 0);
    }

    #[test]
    fn malformed_responses_are_errors() {
        let cases: [(&[u8], ParseError); 6] = [
            (b"HTTP/2 200 OK\r\n\r\n", ParseError::StatusLine),
            (b"HTTP/1.1 20x OK\r\n\r\n", ParseError::StatusLine),
            (
                b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
                ParseError::HeaderLine,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                ParseError::ContentLength,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                ParseError::ContentLength,
            ),
            (b"HTTP/1.1 100 Continue\r\n\r\n", ParseError::Interim),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse_response(bytes),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ParseError::NoLength)
        );
        let endless = vec![b'a'; MAX_HEAD + 1];
        assert_eq!(parse_response(&endless), Err(ParseError::HeadTooLong));
    }
}

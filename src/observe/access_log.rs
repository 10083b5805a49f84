//! The JSON access log: one line per request, written by a dedicated thread so a slow disk or
//! pipe never stalls a proxy worker. Lines that cannot be queued are dropped and counted.
//!
//! Secrets never reach a line: credentials headers are not logged at all unless named in
//! `log_headers`, and then only as `[REDACTED]`; sensitive query values are replaced likewise.
//! The same [`Redactor`] writes the request summary of Pingora's own error lines, so the
//! process log on stderr follows the same rules.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use prometheus::IntCounter;

use crate::config::{AuthConfig, Issues, LogConfig};

const REDACTED: &str = "[REDACTED]";

/// Headers that always carry credentials.
const BUILTIN_SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Query parameters that commonly carry credentials.
const BUILTIN_SENSITIVE_PARAMS: &[&str] = &[
    "api_key",
    "apikey",
    "access_token",
    "id_token",
    "token",
    "client_secret",
    "password",
];

/// Decides what of a request may be written to the log.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (header name, is sensitive) for each header to log.
    log_headers: Vec<(http::HeaderName, bool)>,
    sensitive_params: Vec<String>,
}

impl Redactor {
    /// Compiles the redaction rules from `[log]` and from where `[auth]` reads credentials:
    /// the configured API-key header and query parameter are sensitive whether or not a route
    /// uses API keys, since a client may send a key anywhere. A header name that is not one is
    /// pushed into `issues` (at `log.log_headers[i]`, `log.sensitive_headers[i]`), and `None`
    /// returned.
    pub fn compile(log: &LogConfig, auth: &AuthConfig, issues: &mut Issues) -> Option<Redactor> {
        let log_headers = header_names("log.log_headers", &log.log_headers, issues);
        let sensitive = header_names("log.sensitive_headers", &log.sensitive_headers, issues);
        let (log_headers, sensitive) = (log_headers?, sensitive?);
        let api_key = auth.api_key.as_ref();
        // The API-key header is auth's to judge; it is compared as written, lowercased.
        let sensitive_headers: Vec<String> = BUILTIN_SENSITIVE_HEADERS
            .iter()
            .map(|s| s.to_string())
            .chain(sensitive.iter().map(|h| h.as_str().to_string()))
            .chain(api_key.map(|k| k.header.trim().to_ascii_lowercase()))
            .collect();
        let log_headers = log_headers
            .into_iter()
            .map(|h| {
                let sensitive = sensitive_headers.iter().any(|s| s == h.as_str());
                (h, sensitive)
            })
            .collect();
        let sensitive_params = BUILTIN_SENSITIVE_PARAMS
            .iter()
            .map(|s| s.to_string())
            .chain(log.sensitive_query_params.iter().cloned())
            .chain(api_key.and_then(|k| k.query_param.clone()))
            .collect();
        Some(Redactor {
            log_headers,
            sensitive_params,
        })
    }

    /// Writes the path with the values of sensitive query parameters replaced. Both `&` and
    /// `;` separate parameters, since some upstream frameworks accept either.
    pub fn write_path(&self, out: &mut String, path_and_query: &str) {
        let Some((path, query)) = path_and_query.split_once('?') else {
            json_escape_into(out, path_and_query);
            return;
        };
        json_escape_into(out, path);
        out.push('?');
        let mut rest = query;
        loop {
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            self.write_param(out, &rest[..end]);
            let Some(separator) = rest[end..].chars().next() else {
                return;
            };
            out.push(separator);
            rest = &rest[end + 1..];
        }
    }

    /// Writes one `name=value` pair, the value replaced when the name is sensitive.
    fn write_param(&self, out: &mut String, pair: &str) {
        let (name, _) = pair.split_once('=').unwrap_or((pair, ""));
        let sensitive = self
            .sensitive_params
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name) || percent_decoded_eq(name, p));
        if sensitive {
            json_escape_into(out, name);
            out.push('=');
            out.push_str(REDACTED);
        } else {
            json_escape_into(out, pair);
        }
    }

    /// The one-line description of a request that Pingora puts in its error and warning lines
    /// (`ProxyHttp::request_summary`): method, redacted path and query, host and request id.
    /// Pingora's own summary prints the raw query, credentials included.
    pub fn request_summary(
        &self,
        method: &str,
        path_and_query: &str,
        host: &str,
        request_id: &str,
    ) -> String {
        let mut s = String::with_capacity(48 + path_and_query.len() + host.len());
        json_escape_into(&mut s, method);
        s.push(' ');
        self.write_path(&mut s, path_and_query);
        s.push_str(", Host: ");
        json_escape_into(&mut s, host);
        s.push_str(", request_id: ");
        json_escape_into(&mut s, request_id);
        s
    }
}

/// The header names of a `[log]` list at `at`; `None` after pushing each one that is not a
/// header name into `issues`.
fn header_names(at: &str, names: &[String], issues: &mut Issues) -> Option<Vec<http::HeaderName>> {
    let mut out = Some(Vec::with_capacity(names.len()));
    for (i, name) in names.iter().enumerate() {
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => {
                if let Some(out) = &mut out {
                    out.push(h);
                }
            }
            Err(_) => {
                issues.push(
                    format!("{at}[{i}]"),
                    format!("{name:?} is not a valid header name"),
                );
                out = None;
            }
        }
    }
    out
}

/// Compares a possibly percent-encoded parameter name with a plain one, ASCII case-insensitively,
/// so `%61pi_key` cannot smuggle a key past redaction. Decodes on the fly: no allocation.
fn percent_decoded_eq(encoded: &str, plain: &str) -> bool {
    if !encoded.contains(['%', '+']) {
        return false;
    }
    let mut decoded = PercentDecoded {
        bytes: encoded.as_bytes(),
    };
    let mut expected = plain.bytes();
    loop {
        match (decoded.next(), expected.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(&b) => {}
            _ => return false,
        }
    }
}

/// The bytes of a form-encoded name: `%XX` decoded, `+` as a space, a stray `%` kept.
struct PercentDecoded<'a> {
    bytes: &'a [u8],
}

impl Iterator for PercentDecoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        let (byte, consumed) = match (first, rest) {
            (b'%', [hi, lo, ..]) => match (hex_digit(*hi), hex_digit(*lo)) {
                (Some(hi), Some(lo)) => ((hi << 4) | lo, 3),
                _ => (b'%', 1),
            },
            (b'+', _) => (b' ', 1),
            (b, _) => (b, 1),
        };
        self.bytes = &self.bytes[consumed..];
        Some(byte)
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// What one access-log line says about a request.
pub struct AccessRecord<'a> {
    /// Request id (sent back to the client too).
    pub request_id: &'a str,
    /// Route name, or "-" when none matched.
    pub route: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Path and query as received.
    pub path: &'a str,
    /// Response status (0 when no response was sent).
    pub status: u16,
    /// Request body bytes read from the client.
    pub bytes_in: usize,
    /// Response body bytes sent to the client.
    pub bytes_out: usize,
    /// Total time in the gateway.
    pub duration: std::time::Duration,
    /// Time waiting on the upstream, if one was contacted.
    pub upstream_duration: Option<std::time::Duration>,
    /// The peer that served the request.
    pub upstream: Option<std::net::SocketAddr>,
    /// The client's address as the gateway saw it.
    pub client_ip: Option<std::net::IpAddr>,
    /// Request headers, for the configured `log_headers`.
    pub headers: &'a http::HeaderMap,
}

/// Lines queue in one shared buffer; the writer thread takes the whole buffer when it passes
/// this size, or every `FLUSH_EVERY`, whichever comes first.
const FLUSH_AT: usize = 64 * 1024;
/// The longest a line waits in memory before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Past this many bytes waiting (a stuck disk or pipe), new lines are dropped and counted.
const MAX_PENDING: usize = 8 * 1024 * 1024;

/// Where access-log lines go.
pub struct AccessLog {
    pending: Option<Arc<Pending>>,
    dropped: IntCounter,
}

/// The lines formatted but not yet written. A proxy thread appends under the lock (a memcpy);
/// it never wakes the writer except when the buffer passes `FLUSH_AT`, so under load the
/// writer costs a few wakeups a second instead of one per request.
struct Pending {
    buf: Mutex<Vec<u8>>,
    full: Condvar,
    /// Held while a batch is taken and written, so the final `flush` cannot overtake the
    /// writer thread and reorder lines.
    sink: Mutex<Sink>,
    /// Lines dropped: queued past `MAX_PENDING`, or lost with a batch the sink refused.
    dropped: IntCounter,
}

/// Where access-log lines go (`[log] access_log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Nowhere: no line is formatted.
    Off,
    /// A file, appended to (created if absent).
    File(String),
}

impl AccessLogTarget {
    /// Compiles `log.access_log`: "stdout", "off" or a file path; `None` after pushing why not.
    pub fn compile(destination: &str, issues: &mut Issues) -> Option<AccessLogTarget> {
        match destination {
            "stdout" => Some(AccessLogTarget::Stdout),
            "off" => Some(AccessLogTarget::Off),
            path if path.trim().is_empty() => {
                issues.push("log.access_log", "give \"stdout\", \"off\" or a file path");
                None
            }
            path => Some(AccessLogTarget::File(path.to_string())),
        }
    }

    /// The destination as configured, for messages.
    pub fn describe(&self) -> &str {
        match self {
            AccessLogTarget::Stdout => "stdout",
            AccessLogTarget::Off => "off",
            AccessLogTarget::File(path) => path,
        }
    }
}

/// The destination, and whether the last write failed part-way (a line may be cut short).
struct Sink {
    out: Box<dyn Write + Send>,
    broken: bool,
}

impl AccessLog {
    /// Starts the writer for `target`.
    pub fn start(target: &AccessLogTarget, dropped: IntCounter) -> std::io::Result<AccessLog> {
        let sink: Box<dyn Write + Send> = match target {
            AccessLogTarget::Off => {
                return Ok(AccessLog {
                    pending: None,
                    dropped,
                })
            }
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let pending = Arc::new(Pending {
            buf: Mutex::new(Vec::with_capacity(FLUSH_AT * 2)),
            full: Condvar::new(),
            sink: Mutex::new(Sink {
                out: sink,
                broken: false,
            }),
            dropped: dropped.clone(),
        });
        let writer = pending.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&writer))?;
        Ok(AccessLog {
            pending: Some(pending),
            dropped,
        })
    }

    /// Formats and queues one line; never blocks on I/O.
    pub fn record(&self, redactor: &Redactor, r: &AccessRecord<'_>) {
        let Some(pending) = &self.pending else {
            return;
        };
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            format_line_into(&mut line, redactor, r);
            let mut buf = pending.buf.lock().unwrap_or_else(PoisonError::into_inner);
            if buf.len() + line.len() > MAX_PENDING {
                drop(buf);
                self.dropped.inc();
                return;
            }
            let was_below = buf.len() < FLUSH_AT;
            buf.extend_from_slice(line.as_bytes());
            if was_below && buf.len() >= FLUSH_AT {
                pending.full.notify_one();
            }
        });
    }
}

impl AccessLog {
    /// Writes every line queued so far; called once the server has stopped, before the process
    /// exits, so the last requests' lines are not lost with the buffer.
    pub fn flush(&self) {
        if let Some(pending) = &self.pending {
            let mut batch = Vec::new();
            write_batch(pending, &mut batch);
        }
    }
}

thread_local! {
    /// Each proxy thread formats into its own reused buffer, outside the shared lock.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

/// The writer thread: takes the pending lines when the buffer fills or every `FLUSH_EVERY`,
/// writes them in one call, and flushes.
fn write_lines(pending: &Pending) {
    let mut batch = Vec::with_capacity(FLUSH_AT * 2);
    loop {
        {
            let buf = pending.buf.lock().unwrap_or_else(PoisonError::into_inner);
            if buf.len() < FLUSH_AT {
                drop(
                    pending
                        .full
                        .wait_timeout(buf, FLUSH_EVERY)
                        .unwrap_or_else(PoisonError::into_inner),
                );
            }
        }
        write_batch(pending, &mut batch);
    }
}

/// Takes what is pending and writes it. The sink lock is taken first, so batches reach the
/// sink in the order they were taken.
fn write_batch(pending: &Pending, batch: &mut Vec<u8>) {
    let mut sink = pending.sink.lock().unwrap_or_else(PoisonError::into_inner);
    {
        let mut buf = pending.buf.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *buf, batch);
    }
    if batch.is_empty() {
        return;
    }
    // After a failed write the file may end in a cut line: start on a fresh line.
    let newline: &[u8] = if sink.broken { b"\n" } else { b"" };
    let written = sink
        .out
        .write_all(newline)
        .and_then(|()| sink.out.write_all(batch))
        .and_then(|()| sink.out.flush());
    sink.broken = written.is_err();
    if written.is_err() {
        // A failing sink (disk full, closed pipe) loses these lines; the proxy goes on.
        let lines = batch.iter().filter(|&&b| b == b'\n').count();
        pending.dropped.inc_by(lines as u64);
    }
    batch.clear();
}

#[cfg(test)]
fn format_line(redactor: &Redactor, r: &AccessRecord<'_>) -> String {
    let mut s = String::new();
    format_line_into(&mut s, redactor, r);
    s
}

/// Writes the current UTC time as `2026-01-02T03:04:05.678Z`. The part up to the seconds is
/// computed once a second per thread, not per line.
fn write_time(s: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            cached.1.clear();
            let _ = write!(
                cached.1,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            );
            cached.0 = secs;
        }
        s.push_str(&cached.1);
    });
    let _ = write!(s, ".{:03}Z", since_epoch.subsec_millis());
}

fn format_line_into(s: &mut String, redactor: &Redactor, r: &AccessRecord<'_>) {
    s.push_str("{\"time\":\"");
    write_time(s);
    s.push_str("\",\"request_id\":\"");
    json_escape_into(s, r.request_id);
    s.push_str("\",\"route\":\"");
    json_escape_into(s, r.route);
    s.push_str("\",\"method\":\"");
    json_escape_into(s, r.method);
    s.push_str("\",\"path\":\"");
    redactor.write_path(s, r.path);
    let _ = write!(
        s,
        "\",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{:.3}",
        r.status,
        r.bytes_in,
        r.bytes_out,
        r.duration.as_secs_f64() * 1000.0
    );
    match r.upstream_duration {
        Some(d) => {
            let _ = write!(s, ",\"upstream_ms\":{:.3}", d.as_secs_f64() * 1000.0);
        }
        None => s.push_str(",\"upstream_ms\":null"),
    }
    match r.upstream {
        Some(a) => {
            let _ = write!(s, ",\"upstream\":\"{a}\"");
        }
        None => s.push_str(",\"upstream\":null"),
    }
    match r.client_ip {
        Some(ip) => {
            let _ = write!(s, ",\"client_ip\":\"{ip}\"");
        }
        None => s.push_str(",\"client_ip\":null"),
    }
    s.push_str(",\"headers\":{");
    let mut first = true;
    for (name, sensitive) in &redactor.log_headers {
        if let Some(value) = r.headers.get(name) {
            if !first {
                s.push(',');
            }
            first = false;
            s.push('"');
            s.push_str(name.as_str());
            s.push_str("\":\"");
            if *sensitive {
                s.push_str(REDACTED);
            } else {
                json_escape_into(s, &String::from_utf8_lossy(value.as_bytes()));
            }
            s.push('"');
        }
    }
    s.push_str("}}\n");
}

/// Appends `value` as the inside of a JSON string.
pub fn json_escape_into(out: &mut String, value: &str) {
    // Almost every path, host and header needs no escaping: one scan and one copy instead of
    // a push per character (about half the cost of a redacted path).
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_redactor(log: &LogConfig, auth: &AuthConfig) -> Redactor {
        Redactor::compile(log, auth, &mut Issues::default()).expect("test [log] compiles")
    }

    fn log_config(params: &[&str], log_headers: &[&str]) -> LogConfig {
        LogConfig {
            access_log: "off".into(),
            log_headers: log_headers.iter().map(|s| s.to_string()).collect(),
            sensitive_headers: vec!["x-secret".into()],
            sensitive_query_params: params.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn redactor(params: &[&str], log_headers: &[&str]) -> Redactor {
        compile_redactor(&log_config(params, log_headers), &AuthConfig::default())
    }

    /// `[auth.api_key]` reading keys from `X-Custom-Key` and `?key=`.
    fn custom_api_key_auth() -> AuthConfig {
        toml::from_str("[api_key]\nheader = \"X-Custom-Key\"\nquery_param = \"key\"\n")
            .expect("valid [auth] table")
    }

    fn record<'a>(headers: &'a http::HeaderMap) -> AccessRecord<'a> {
        AccessRecord {
            request_id: "id",
            route: "r",
            method: "GET",
            path: "/",
            status: 200,
            bytes_in: 0,
            bytes_out: 2,
            duration: std::time::Duration::from_millis(3),
            upstream_duration: None,
            upstream: None,
            client_ip: None,
            headers,
        }
    }

    fn path(r: &Redactor, p: &str) -> String {
        let mut s = String::new();
        r.write_path(&mut s, p);
        s
    }

    #[test]
    fn sensitive_query_values_are_replaced() {
        let r = redactor(&["sig"], &[]);
        assert_eq!(
            path(&r, "/a?x=1&sig=abc&api_key=k1"),
            "/a?x=1&sig=[REDACTED]&api_key=[REDACTED]"
        );
        assert_eq!(path(&r, "/a?%61pi_key=k2"), "/a?%61pi_key=[REDACTED]");
        assert_eq!(path(&r, "/a?SIG=zz"), "/a?SIG=[REDACTED]");
        assert_eq!(path(&r, "/a"), "/a");
        assert_eq!(path(&r, "/a?%"), "/a?%");
        assert_eq!(path(&r, "/a?%6"), "/a?%6");
    }

    #[test]
    fn sensitive_headers_are_redacted_even_when_asked_for() {
        let r = redactor(&[], &["user-agent", "authorization", "x-secret"]);
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", "curl/8".parse().unwrap());
        headers.insert("authorization", "Bearer hunter2".parse().unwrap());
        headers.insert("x-secret", "s3cr3t".parse().unwrap());
        let line = format_line(
            &r,
            &AccessRecord {
                request_id: "id",
                route: "r",
                method: "GET",
                path: "/",
                status: 200,
                bytes_in: 0,
                bytes_out: 2,
                duration: std::time::Duration::from_millis(3),
                upstream_duration: None,
                upstream: None,
                client_ip: None,
                headers: &headers,
            },
        );
        assert!(
            !line.contains("hunter2") && !line.contains("s3cr3t"),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid json");
        assert_eq!(v["headers"]["user-agent"], "curl/8");
        assert_eq!(v["headers"]["authorization"], "[REDACTED]");
        assert_eq!(v["status"], 200);
    }

    #[test]
    fn configured_api_key_parameter_is_redacted_without_any_log_setting() {
        let r = compile_redactor(&log_config(&[], &[]), &custom_api_key_auth());
        assert_eq!(
            path(&r, "/a?key=k1&keep=1&KEY=k2&%6Bey=k3"),
            "/a?key=[REDACTED]&keep=1&KEY=[REDACTED]&%6Bey=[REDACTED]"
        );
        let plain = redactor(&[], &[]);
        assert_eq!(path(&plain, "/a?key=k1"), "/a?key=k1");
    }

    #[test]
    fn configured_api_key_header_is_redacted_when_asked_for() {
        let r = compile_redactor(
            &log_config(&[], &["x-custom-key", "user-agent"]),
            &custom_api_key_auth(),
        );
        let mut headers = http::HeaderMap::new();
        headers.insert("x-custom-key", "pc_CUSTOMKEY1".parse().unwrap());
        headers.insert("user-agent", "curl/8".parse().unwrap());
        let line = format_line(&r, &record(&headers));
        assert!(!line.contains("pc_CUSTOMKEY1"), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).expect("valid json");
        assert_eq!(v["headers"]["x-custom-key"], "[REDACTED]");
        assert_eq!(v["headers"]["user-agent"], "curl/8");
    }

    #[test]
    fn json_escaping_covers_quotes_backslashes_and_controls() {
        let mut out = String::new();
        json_escape_into(&mut out, "plain/ü?x=1");
        json_escape_into(&mut out, "|a\"b\\c\nd\te\u{1}|");
        assert_eq!(out, "plain/ü?x=1|a\\\"b\\\\c\\nd\\te\\u0001|");
    }

    #[test]
    fn semicolons_separate_parameters_too() {
        let r = redactor(&[], &[]);
        assert_eq!(
            path(&r, "/a?x=1;api_key=k1&y=2;token=t"),
            "/a?x=1;api_key=[REDACTED]&y=2;token=[REDACTED]"
        );
        assert_eq!(path(&r, "/a?"), "/a?");
        assert_eq!(path(&r, "/a?x=1&"), "/a?x=1&");
    }

    #[test]
    fn percent_decoding_handles_broken_escapes_and_plus() {
        assert!(percent_decoded_eq("%61pi_key", "api_key"));
        assert!(percent_decoded_eq("%41PI%5fKEY", "api_key"));
        assert!(percent_decoded_eq("a+b", "a b"));
        assert!(!percent_decoded_eq("%6", "api_key"));
        assert!(!percent_decoded_eq("%zzpi_key", "api_key"));
        assert!(!percent_decoded_eq("%61pi_key_x", "api_key"));
        assert!(!percent_decoded_eq("%61pi", "api_key"));
        assert!(
            !percent_decoded_eq("api_key", "api_key"),
            "plain names compare elsewhere"
        );
    }

    #[test]
    fn request_summary_redacts_like_the_access_log() {
        let r = compile_redactor(&log_config(&["sig"], &[]), &custom_api_key_auth());
        let summary = r.request_summary(
            "GET",
            "/a?api_key=S1&access_token=S2&key=S3&sig=S4&keep=visible",
            "example.com",
            "req-1",
        );
        assert_eq!(
            summary,
            "GET /a?api_key=[REDACTED]&access_token=[REDACTED]&key=[REDACTED]&sig=[REDACTED]\
             &keep=visible, Host: example.com, request_id: req-1"
        );
    }

    #[test]
    fn log_settings_that_are_not_header_names_or_a_target_are_issues() {
        let mut issues = Issues::default();
        let mut log = log_config(&[], &["user-agent", "bad header"]);
        log.sensitive_headers = vec!["X-Secret".into(), "also bad".into()];
        assert!(Redactor::compile(&log, &AuthConfig::default(), &mut issues).is_none());
        assert_eq!(AccessLogTarget::compile(" ", &mut issues), None);
        assert_eq!(
            AccessLogTarget::compile("/var/log/p.log", &mut issues),
            Some(AccessLogTarget::File("/var/log/p.log".into()))
        );
        let found: Vec<String> = issues.into_vec().iter().map(|i| i.to_string()).collect();
        assert_eq!(
            found,
            [
                "log.log_headers[1]: \"bad header\" is not a valid header name",
                "log.sensitive_headers[1]: \"also bad\" is not a valid header name",
                "log.access_log: give \"stdout\", \"off\" or a file path",
            ]
        );
    }
}

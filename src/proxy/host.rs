//! The request's host, parsed strictly and settled once before routing.
//!
//! Routing on one idea of the host while the upstream reads another is a vhost bypass: a
//! lenient parser that keeps `admin.example.com:1` from `Host: admin.example.com:1:2` misses
//! the protected `admin.example.com` routes here, while Express and friends split at the first
//! colon and serve the admin vhost. So a Host that is not exactly a host name or IP literal
//! with an optional port is refused, and an absolute-form target (RFC 9112 §3.2.2, whose
//! authority *is* the host) is rewritten to origin-form with `Host` set from that authority,
//! so routing, the upstream request and the logs all see the same host.

use std::net::Ipv6Addr;

use http::header::HOST;
use http::{HeaderValue, Version};
use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;

/// DNS caps a name at 253 bytes; one more for a trailing dot.
const MAX_NAME: usize = 254;

/// DNS caps a label at 63 bytes.
const MAX_LABEL: usize = 63;

/// Why a request's host was refused; every variant is a 400 `invalid_host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub(crate) enum HostError {
    /// An HTTP/1.1 (or later) request with no host, or an empty one (RFC 9112 §3.2).
    Missing,
    /// More than one `Host` header (RFC 9112 §3.2).
    Repeated,
    /// Not a host name or IP literal with an optional numeric port (userinfo included).
    Malformed,
    /// An absolute-form target whose scheme is neither `http` nor `https`.
    UnsupportedScheme,
    /// The origin-form target could not be stored back into the request.
    Unrepresentable,
}

impl HostError {
    /// The `message` of the error body: fixed ASCII, no request data, no quotes.
    pub(crate) fn message(&self) -> &'static str {
        match self {
            HostError::Missing => "the request has no host",
            HostError::Repeated => "the request has more than one Host header",
            HostError::Malformed => {
                "the request host is not a host name or IP address with an optional port"
            }
            HostError::UnsupportedScheme => "the request target's scheme must be http or https",
            HostError::Unrepresentable => "the request target cannot be represented",
        }
    }
}

/// A host split from its port, borrowed from the header or authority it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostPort<'a> {
    /// A host name as sent (any case, maybe a trailing dot), or an IPv6 address without its
    /// brackets.
    pub host: &'a str,
    /// The port, if one was given.
    pub port: Option<u16>,
}

/// Parses `host [":" port]` strictly: a DNS-style name (letters, digits, `-`, `_`, dots
/// between non-empty labels, one trailing dot allowed) or a bracketed IPv6 literal, then an
/// optional port of 1 to 5 digits up to 65535. Userinfo, percent-escapes, empty ports and
/// anything else are refused. Never allocates.
///
/// # Errors
/// [`HostError::Malformed`], or [`HostError::Missing`] for an empty input.
pub(crate) fn parse_host(raw: &[u8]) -> Result<HostPort<'_>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Missing);
    }
    let (host, rest) = if raw.first() == Some(&b'[') {
        let close = raw
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::Malformed)?;
        let inside = std::str::from_utf8(&raw[1..close]).map_err(|_| HostError::Malformed)?;
        inside
            .parse::<Ipv6Addr>()
            .map_err(|_| HostError::Malformed)?;
        (inside, &raw[close + 1..])
    } else {
        let end = raw.iter().position(|&b| b == b':').unwrap_or(raw.len());
        let name = &raw[..end];
        if !is_host_name(name) {
            return Err(HostError::Malformed);
        }
        // Only ASCII passed `is_host_name`.
        let name = std::str::from_utf8(name).map_err(|_| HostError::Malformed)?;
        (name, &raw[end..])
    };
    let port = match rest {
        [] => None,
        [b':', digits @ ..] => Some(parse_port(digits)?),
        _ => return Err(HostError::Malformed),
    };
    Ok(HostPort { host, port })
}

/// Whether `name` is a DNS-style host name (IPv4 addresses included).
fn is_host_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME {
        return false;
    }
    let name = name.strip_suffix(b".").unwrap_or(name);
    name.split(|&b| b == b'.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && label
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn parse_port(digits: &[u8]) -> Result<u16, HostError> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HostError::Malformed);
    }
    let value = digits
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(value).map_err(|_| HostError::Malformed)
}

/// Settles the request's host before routing: the URI authority (HTTP/2) or the Host header
/// must parse strictly ([`parse_host`]); an HTTP/1.1 request must carry exactly one non-empty
/// Host (HTTP/1.0 may carry none); an absolute-form target becomes origin-form with `Host`
/// set from its authority, so no later phase or upstream can read a different host, and an
/// `https://` target is never forwarded as absolute-form over a plain hop.
///
/// Targets whose authority is ambiguous are left for the path check to refuse.
///
/// # Errors
/// A [`HostError`]; the request is then left as it came.
pub(crate) fn settle_host(req: &mut RequestHeader) -> Result<(), HostError> {
    if let Some(authority) = req.uri.authority() {
        parse_host(authority.as_str().as_bytes())?;
        return Ok(());
    }
    let (host, origin) = match raw_target_authority(req.raw_path()) {
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } => {
            if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
                return Err(HostError::UnsupportedScheme);
            }
            parse_host(authority)?;
            let host = HeaderValue::from_bytes(authority).map_err(|_| HostError::Malformed)?;
            (host, origin_form(path_and_query))
        }
        RawTargetAuthority::None | RawTargetAuthority::AmbiguousAuthority => {
            return check_host_header(req)
        }
    };
    req.set_raw_path(&origin)
        .map_err(|_| HostError::Unrepresentable)?;
    req.insert_header(HOST, host)
        .map_err(|_| HostError::Unrepresentable)
}

/// The origin-form of an absolute-form target's path and query: `http://h` and `http://h?q`
/// have an empty path, which stands for `/`.
fn origin_form(path_and_query: &[u8]) -> Vec<u8> {
    if path_and_query.first() == Some(&b'/') {
        return path_and_query.to_vec();
    }
    let mut origin = Vec::with_capacity(path_and_query.len() + 1);
    origin.push(b'/');
    origin.extend_from_slice(path_and_query);
    origin
}

/// Checks the Host header of a target without authority (origin-form and the forms the path
/// check refuses anyway).
fn check_host_header(req: &RequestHeader) -> Result<(), HostError> {
    let mut hosts = req.headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(HostError::Repeated),
        (Some(host), None) if !host.is_empty() => parse_host(host.as_bytes()).map(|_| ()),
        // HTTP/1.0 predates Host; without one only host-less routes can match.
        _ if matches!(req.version, Version::HTTP_09 | Version::HTTP_10) => Ok(()),
        _ => Err(HostError::Missing),
    }
}

/// The request's host, with its port: the URI authority (HTTP/2) or the Host header, which
/// [`settle_host`] set from the target's authority for absolute-form requests.
pub(crate) fn request_host(req: &RequestHeader) -> &str {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_of(raw: &str) -> Result<(&str, Option<u16>), HostError> {
        parse_host(raw.as_bytes()).map(|h| (h.host, h.port))
    }

    #[test]
    fn names_and_ip_literals_with_optional_ports_parse() {
        assert_eq!(
            host_of("admin.example.com"),
            Ok(("admin.example.com", None))
        );
        assert_eq!(
            host_of("Admin.Example.com."),
            Ok(("Admin.Example.com.", None))
        );
        assert_eq!(host_of("svc_1-a:8080"), Ok(("svc_1-a", Some(8080))));
        assert_eq!(host_of("127.0.0.1:65535"), Ok(("127.0.0.1", Some(65535))));
        assert_eq!(host_of("[::1]"), Ok(("::1", None)));
        assert_eq!(host_of("[2001:db8::1]:443"), Ok(("2001:db8::1", Some(443))));
    }

    #[test]
    fn lax_hosts_are_refused() {
        for bad in [
            "admin.example.com:1:2",
            "admin.example.com:",
            "admin.example.com:65536",
            "admin.example.com:123456",
            "admin.example.com:+80",
            "user@admin.example.com",
            "admin.example.com@evil",
            "admin%2eexample.com",
            "admin..example.com",
            ".example.com",
            "a b",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[v1.x]",
            "[fe80::1%25eth0]",
            "[::1]:1:2",
            "\u{e9}.example.com",
            "admin.example.com/x",
        ] {
            assert_eq!(host_of(bad), Err(HostError::Malformed), "{bad:?}");
        }
        assert_eq!(host_of(""), Err(HostError::Missing));
        let long = format!("{}.com", "a".repeat(64));
        assert_eq!(host_of(&long), Err(HostError::Malformed));
    }

    fn request(version: Version, target: &[u8], hosts: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target, None).expect("request");
        req.set_version(version);
        for h in hosts {
            req.append_header(HOST, *h).expect("header");
        }
        req
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_the_authority_as_host() {
        let mut req = request(Version::HTTP_11, b"http://admin.internal/secret?x=1", &[]);
        assert_eq!(settle_host(&mut req), Ok(()));
        assert_eq!(req.raw_path(), b"/secret?x=1");
        assert_eq!(req.headers[HOST], "admin.internal");
        assert_eq!(req.headers.get_all(HOST).iter().count(), 1);

        let mut req = request(Version::HTTP_11, b"HTTPS://admin.internal:8443?q", &[]);
        assert_eq!(settle_host(&mut req), Ok(()));
        assert_eq!(req.raw_path(), b"/?q");
        assert_eq!(req.headers[HOST], "admin.internal:8443");
    }

    #[test]
    fn absolute_form_with_a_bad_authority_or_scheme_is_refused_and_left_alone() {
        for (target, want) in [
            (&b"http://admin.internal:1:2/x"[..], HostError::Malformed),
            (b"http://u@admin.internal/x", HostError::Malformed),
            (b"ftp://admin.internal/x", HostError::UnsupportedScheme),
        ] {
            let mut req = request(Version::HTTP_11, target, &[]);
            assert_eq!(settle_host(&mut req), Err(want));
            assert_eq!(req.raw_path(), target);
            assert!(!req.headers.contains_key(HOST));
        }
    }

    #[test]
    fn origin_form_needs_exactly_one_valid_host_from_http_1_1_on() {
        let ok = |v, hosts: &[&str]| settle_host(&mut request(v, b"/x", hosts));
        assert_eq!(ok(Version::HTTP_11, &["svc.example.com:80"]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, &[]), Err(HostError::Missing));
        assert_eq!(ok(Version::HTTP_11, &[""]), Err(HostError::Missing));
        assert_eq!(ok(Version::HTTP_11, &["a", "b"]), Err(HostError::Repeated));
        assert_eq!(ok(Version::HTTP_11, &["a:1:2"]), Err(HostError::Malformed));
        assert_eq!(ok(Version::HTTP_10, &[]), Ok(()));
        assert_eq!(ok(Version::HTTP_10, &[""]), Ok(()));
        assert_eq!(ok(Version::HTTP_10, &["a:1:2"]), Err(HostError::Malformed));
    }
}

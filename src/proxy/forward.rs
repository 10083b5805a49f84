//! What changes on a request's way upstream: forwarding headers, hop-by-hop headers, Host.

use std::net::IpAddr;

use http::header::{CONNECTION, HOST, TE, TRAILER, UPGRADE};
use http::HeaderValue;
use pingora::http::RequestHeader;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), plus the
/// non-standard ones that proxies in the wild still send.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "proxy-authenticate",
];

/// Whether the request asks to switch protocols (e.g. WebSocket), which must keep `Upgrade`.
pub fn is_upgrade(req: &RequestHeader) -> bool {
    req.headers.contains_key(UPGRADE)
        && req.headers.get_all(CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Whether a header is hop-by-hop by itself (without being named in `Connection`).
fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    *name == CONNECTION
        || *name == TE
        || *name == TRAILER
        || *name == UPGRADE
        || HOP_BY_HOP.contains(&name.as_str())
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(req: &mut RequestHeader) {
    // Most requests carry none: one pass over the names spares a removal (a hash lookup in
    // two maps) per hop-by-hop name.
    if !req.headers.keys().any(is_hop_by_hop) {
        return;
    }
    let upgrade = is_upgrade(req);
    let named: Vec<String> = req
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !(t.is_empty() || upgrade && t == "upgrade"))
        .collect();
    for name in &named {
        // Never let Connection strip what the gateway itself relies on.
        if name != "host" && name != "x-request-id" {
            req.remove_header(name.as_str());
        }
    }
    for name in HOP_BY_HOP {
        req.remove_header(*name);
    }
    req.remove_header(&TE);
    req.remove_header(&TRAILER);
    if upgrade {
        let _ = req.insert_header(CONNECTION, "upgrade");
    } else {
        req.remove_header(&CONNECTION);
        req.remove_header(&UPGRADE);
    }
}

/// Hop-by-hop headers an upstream response may carry that Pingora does not remove itself.
const RESPONSE_HOP_BY_HOP: [&str; 3] = ["keep-alive", "proxy-connection", "trailer"];

/// Removes hop-by-hop headers from an upstream response; most carry none, so one pass over the
/// names decides whether any removal (a hash lookup in two maps each) is needed.
pub fn remove_response_hop_by_hop(resp: &mut pingora::http::ResponseHeader) {
    if !resp
        .headers
        .keys()
        .any(|k| RESPONSE_HOP_BY_HOP.contains(&k.as_str()))
    {
        return;
    }
    for name in RESPONSE_HOP_BY_HOP {
        resp.remove_header(name);
    }
}

/// Sets `X-Forwarded-For/-Proto/-Host`. A client's own values are kept only when the TCP peer
/// is a trusted proxy; otherwise they are replaced, so clients cannot spoof their address.
pub fn set_forwarded_headers(
    req: &mut RequestHeader,
    client_ip: Option<IpAddr>,
    trusted: bool,
    https: bool,
    original_host: Option<&HeaderValue>,
) -> pingora::Result<()> {
    let existing_xff = if trusted {
        joined(req, X_FORWARDED_FOR)
    } else {
        None
    };
    match (existing_xff, client_ip) {
        (Some(prev), Some(c)) => req.insert_header(X_FORWARDED_FOR, format!("{prev}, {c}"))?,
        (Some(prev), None) => req.insert_header(X_FORWARDED_FOR, prev)?,
        (None, Some(c)) => req.insert_header(X_FORWARDED_FOR, ip_header_value(c))?,
        (None, None) => {
            req.remove_header(X_FORWARDED_FOR);
        }
    }
    if !(trusted && req.headers.contains_key(X_FORWARDED_PROTO)) {
        let proto = HeaderValue::from_static(if https { "https" } else { "http" });
        req.insert_header(X_FORWARDED_PROTO, proto)?;
    }
    if !(trusted && req.headers.contains_key(X_FORWARDED_HOST)) {
        match original_host {
            Some(h) => req.insert_header(X_FORWARDED_HOST, h.clone())?,
            None => {
                req.remove_header(X_FORWARDED_HOST);
            }
        }
    }
    Ok(())
}

/// An IP address as a header value, formatted on the stack (no intermediate `String`).
fn ip_header_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write as _;
    // The longest textual IPv6 address (IPv4-mapped, full form) is 45 bytes.
    let mut buf = [0u8; 48];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = write!(cursor, "{ip}").is_ok();
    let len = cursor.position() as usize;
    match HeaderValue::from_bytes(&buf[..len]) {
        Ok(v) if written => v,
        // Unreachable for an IpAddr's Display, but never panic on the hot path.
        _ => HeaderValue::from_static("unknown"),
    }
}

/// All values of a header joined with ", ", if any are valid text.
fn joined(req: &RequestHeader, name: &str) -> Option<String> {
    let values: Vec<&str> = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Sets the Host header sent upstream.
pub fn set_host(req: &mut RequestHeader, host: HeaderValue) -> pingora::Result<()> {
    req.insert_header(HOST, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn connection_named_and_standard_hop_headers_are_removed() {
        let mut r = req(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ]);
        remove_hop_by_hop(&mut r);
        for h in ["connection", "keep-alive", "x-private", "te"] {
            assert!(!r.headers.contains_key(h), "{h} should be gone");
        }
        assert!(r.headers.contains_key("x-kept"));
    }

    #[test]
    fn websocket_upgrade_keeps_upgrade() {
        let mut r = req(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        remove_hop_by_hop(&mut r);
        assert_eq!(
            r.headers.get("upgrade").map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            r.headers.get("connection").map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
    }

    #[test]
    fn requests_without_hop_by_hop_headers_are_left_alone() {
        let mut r = req(&[("host", "a"), ("x-kept", "1"), ("accept", "*/*")]);
        remove_hop_by_hop(&mut r);
        assert_eq!(r.headers.len(), 3);
        let mut r = req(&[("host", "a"), ("upgrade", "h2c")]);
        remove_hop_by_hop(&mut r);
        assert!(
            !r.headers.contains_key("upgrade"),
            "upgrade without Connection goes"
        );
    }

    #[test]
    fn response_hop_by_hop_headers_are_removed_and_others_kept() {
        let mut r = pingora::http::ResponseHeader::build(200, None).expect("response");
        for (k, v) in [
            ("keep-alive", "timeout=5"),
            ("trailer", "x"),
            ("x-kept", "1"),
        ] {
            r.append_header(k.to_string(), v).expect("header");
        }
        remove_response_hop_by_hop(&mut r);
        assert!(!r.headers.contains_key("keep-alive") && !r.headers.contains_key("trailer"));
        assert!(r.headers.contains_key("x-kept"));
    }

    #[test]
    fn ip_values_render_both_families() {
        let v6: IpAddr = "2001:db8::ffff:1.2.3.4".parse().expect("ip");
        assert_eq!(ip_header_value(v6), "2001:db8::ffff:102:304");
        let v4: IpAddr = "255.255.255.255".parse().expect("ip");
        assert_eq!(ip_header_value(v4), "255.255.255.255");
        let long: IpAddr = "::ffff:255.255.255.255".parse().expect("ip");
        assert_eq!(ip_header_value(long), long.to_string().as_str());
    }

    #[test]
    fn untrusted_clients_cannot_spoof_forwarded_for() {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut r = req(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded_headers(&mut r, Some(ip), false, false, None).expect("set");
        assert_eq!(r.headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(r.headers["x-forwarded-proto"], "http");

        let mut r = req(&[("x-forwarded-for", "203.0.113.1")]);
        set_forwarded_headers(&mut r, Some(ip), true, false, None).expect("set");
        assert_eq!(r.headers["x-forwarded-for"], "203.0.113.1, 192.0.2.7");
    }
}

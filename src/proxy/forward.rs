//! What changes on a request's way upstream: forwarding headers, hop-by-hop headers, Host,
//! the headers a client may not set itself, and who the client really is.

use std::net::IpAddr;

use http::header::{CONNECTION, HOST, TE, TRAILER, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::{Error, ErrorType};

use crate::auth::X_CONSUMER_ID;
use crate::observe::X_REQUEST_ID;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
const X_FORWARDED_PORT: &str = "x-forwarded-port";
const X_REAL_IP: &str = "x-real-ip";

/// What forwarding needs to know of a request's hop that the upstream request does not say.
pub(crate) struct Hop<'a> {
    /// The TCP peer.
    pub(crate) peer: Option<IpAddr>,
    /// Whether the peer is a trusted proxy, whose forwarding headers are kept.
    pub(crate) peer_trusted: bool,
    /// The real client (see [`real_client_ip`]).
    pub(crate) client_ip: Option<IpAddr>,
    /// Whether the client connected over TLS.
    pub(crate) https: bool,
    /// The port the client connected to.
    pub(crate) local_port: Option<u16>,
    /// The host the client asked for, for `X-Forwarded-Host`.
    pub(crate) original_host: Option<HeaderValue>,
    /// The Host to send, or `None` to keep the client's.
    pub(crate) host: Option<HeaderValue>,
    /// The request id.
    pub(crate) request_id: Option<&'a HeaderValue>,
}

/// Makes the upstream request say where it came from: hop-by-hop headers out, headers the
/// client may not set out (see [`SpoofGuard`]), then the gateway's own `X-Forwarded-*`,
/// `X-Real-IP`, `Host` and `X-Request-Id`.
pub(crate) fn forward_request(
    upstream: &mut RequestHeader,
    guard: &SpoofGuard,
    hop: &Hop<'_>,
) -> pingora::Result<()> {
    remove_hop_by_hop(upstream);
    let trusted = hop.peer_trusted;
    guard.strip(upstream, trusted);
    let original_host = hop.original_host.as_ref();
    set_forwarded_headers(upstream, hop.peer, trusted, hop.https, original_host)?;
    set_client_headers(upstream, hop.client_ip, trusted, hop.local_port)?;
    if let Some(h) = &hop.host {
        set_host(upstream, h.clone())?;
    }
    if let Some(id) = hop.request_id {
        upstream.insert_header(X_REQUEST_ID, id.clone())?;
    }
    Ok(())
}

/// Removes the first `matched_len` bytes of the path (the route's prefix), keeping the query.
pub(crate) fn strip_prefix(
    upstream: &mut RequestHeader,
    matched_len: usize,
) -> pingora::Result<()> {
    let path = super::router::strip_prefix(upstream.uri.path(), matched_len).to_string();
    let query = upstream.uri.query().map(str::to_string);
    let uri = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    match uri.parse::<http::Uri>() {
        Ok(uri) => {
            upstream.set_uri(uri);
            Ok(())
        }
        Err(_) => Error::e_explain(ErrorType::InvalidHTTPHeader, "path after strip_prefix"),
    }
}

/// The host the client asked for, for `X-Forwarded-Host`: the one routing used (see
/// `host::request_host`), so an HTTP/2 request without a Host header still has one.
pub(crate) fn original_host(req: &RequestHeader) -> Option<HeaderValue> {
    match req.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers.get(HOST).cloned(),
    }
}

/// Headers in which a proxy in front tells what it saw of the client or the original request
/// (its address, scheme, host, port, path). Only a trusted proxy may say so: from any other peer
/// they are removed, and the gateway sets `X-Forwarded-For/-Proto/-Host/-Port` and `X-Real-IP`
/// itself. Lowercase, with `-`: the form an upstream folds every spelling to.
const FORWARDING: &[&str] = &[
    "forwarded",
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_FORWARDED_PORT,
    X_REAL_IP,
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded",
    "forwarded-for",
    "x-url-scheme",
    "front-end-https",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
    "x-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "client-ip",
];

/// How many `X-Forwarded-For` entries are looked at, from the right, at most: no real chain of
/// proxies is longer, and a client must not make the gateway walk an arbitrarily long list.
const MAX_FORWARDED_HOPS: usize = 16;

// === impl SpoofGuard ===

/// The request headers a client may not set itself, compiled once per config.
///
/// Upstreams fold header names: case always, and CGI, WSGI, PHP and Rack servers also map `_`
/// to `-` (`X_Consumer_Id` and `X-Consumer-Id` both become `HTTP_X_CONSUMER_ID`). So every
/// request header whose name folds to a guarded one is removed, not only the exact spelling.
#[derive(Debug, Clone)]
pub(crate) struct SpoofGuard {
    /// Headers the gateway sets from the principal (`X-Consumer-Id`, `claims_to_headers`
    /// targets), folded: removed from every request, from any peer.
    identity: Vec<Box<[u8]>>,
}

impl SpoofGuard {
    /// A guard for `X-Consumer-Id` and the given identity headers (e.g. claim headers).
    pub(crate) fn new<'a>(identity: impl IntoIterator<Item = &'a HeaderName>) -> SpoofGuard {
        let mut folded: Vec<Box<[u8]>> = vec![X_CONSUMER_ID.as_bytes().into()];
        for name in identity {
            let f: Box<[u8]> = name.as_str().bytes().map(fold).collect();
            if !folded.contains(&f) {
                folded.push(f);
            }
        }
        SpoofGuard { identity: folded }
    }

    /// Removes what the client may not say: identity headers in every spelling, and unless
    /// the TCP peer is a trusted proxy the forwarding headers too. A trusted proxy vouches only
    /// for the spelling it sets, so `_` spellings of forwarding headers go even from one.
    ///
    /// One pass over the request's header names, no allocation, when none of them is guarded.
    pub(crate) fn strip(&self, req: &mut RequestHeader, trusted_peer: bool) {
        if !req.headers.keys().any(|n| self.is_guarded(n, trusted_peer)) {
            return;
        }
        let guarded: Vec<HeaderName> = req
            .headers
            .keys()
            .filter(|n| self.is_guarded(n, trusted_peer))
            .cloned()
            .collect();
        for name in &guarded {
            req.remove_header(name);
        }
    }

    /// Whether a request header must not reach the upstream as the client sent it.
    fn is_guarded(&self, name: &HeaderName, trusted_peer: bool) -> bool {
        let raw = name.as_str().as_bytes();
        if self.identity.iter().any(|g| folds_to(raw, g)) {
            return true;
        }
        (!trusted_peer || raw.contains(&b'_'))
            && FORWARDING.iter().any(|g| folds_to(raw, g.as_bytes()))
    }
}

/// A header name byte as upstreams compare it (`HeaderName`s are lowercase already).
fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b
    }
}

/// Whether `name` folds to `folded`; comparing in place spares a folded copy per header.
fn folds_to(name: &[u8], folded: &[u8]) -> bool {
    name.len() == folded.len() && name.iter().zip(folded).all(|(&a, &b)| fold(a) == b)
}

/// The client a request is from.
///
/// From an untrusted TCP peer, the peer itself. From a trusted proxy, `X-Forwarded-For` is read
/// from the right (the entries trusted proxies appended): the first address not inside a
/// trusted network is the client; when all are trusted, the left-most. The walk stops at the
/// first entry that is not a bare IP address (`unknown`, a port, brackets, garbage, a value
/// that is not text) or after [`MAX_FORWARDED_HOPS`] entries, and the client is the last address
/// that was verified: whatever stands further left was written by someone no trusted proxy
/// vouches for, so a client can never pick an arbitrary address this way.
///
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`, how a `[::]` listener sees an IPv4 peer, and
/// how some proxies write `X-Forwarded-For`) count as the IPv4 address they map, both for the
/// trust decision and as the client.
pub(crate) fn real_client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let mut hops = 0;
    // The last header line holds the right-most entries.
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(client);
        };
        for entry in text.rsplit(',').map(str::trim).filter(|e| !e.is_empty()) {
            hops += 1;
            if hops > MAX_FORWARDED_HOPS {
                return Some(client);
            }
            let Ok(ip) = entry.parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
                return Some(client);
            };
            if !is_trusted(ip) {
                return Some(ip);
            }
            client = ip;
        }
    }
    Some(client)
}

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
pub(crate) fn is_upgrade(req: &RequestHeader) -> bool {
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
pub(crate) fn remove_hop_by_hop(req: &mut RequestHeader) {
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
pub(crate) fn remove_response_hop_by_hop(resp: &mut pingora::http::ResponseHeader) {
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
pub(crate) fn set_forwarded_headers(
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

/// Sets `X-Real-IP` to the real client (see [`real_client_ip`]) and `X-Forwarded-Port` to the
/// port the client connected to, unless a trusted proxy sent one. `X-Real-IP` is always the
/// gateway's: the address it derived from the trusted hops already is what a trusted proxy
/// would say, and proxies in front often pass a client's `X-Real-IP` through untouched.
pub(crate) fn set_client_headers(
    req: &mut RequestHeader,
    client_ip: Option<IpAddr>,
    trusted: bool,
    local_port: Option<u16>,
) -> pingora::Result<()> {
    match client_ip {
        Some(ip) => req.insert_header(X_REAL_IP, ip_header_value(ip))?,
        None => {
            req.remove_header(X_REAL_IP);
        }
    }
    if !(trusted && req.headers.contains_key(X_FORWARDED_PORT)) {
        match local_port {
            Some(port) => req.insert_header(X_FORWARDED_PORT, HeaderValue::from(port))?,
            None => {
                req.remove_header(X_FORWARDED_PORT);
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
pub(crate) fn set_host(req: &mut RequestHeader, host: HeaderValue) -> pingora::Result<()> {
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

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// Trusted: 10.0.0.0/8 (the load balancers) and 127.0.0.1.
    fn trusted(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.octets()[0] == 10 || v4.is_loopback(),
            IpAddr::V6(_) => false,
        }
    }

    fn client_of(peer: &str, xff: &[&str]) -> Option<IpAddr> {
        let pairs: Vec<(&str, &str)> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
        real_client_ip(Some(ip(peer)), &req(&pairs).headers, trusted)
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_xff_says() {
        assert_eq!(client_of("192.0.2.7", &["6.6.6.6"]), Some(ip("192.0.2.7")));
        assert_eq!(client_of("192.0.2.7", &[]), Some(ip("192.0.2.7")));
        assert_eq!(real_client_ip(None, &HeaderMap::new(), trusted), None);
    }

    #[test]
    fn trusted_peer_gives_the_right_most_untrusted_xff_hop() {
        assert_eq!(
            client_of("10.0.0.1", &["198.51.100.1"]),
            Some(ip("198.51.100.1"))
        );
        // A client-chosen left-most entry never wins over what the proxy appended.
        assert_eq!(
            client_of("10.0.0.1", &["6.6.6.6, 198.51.100.1, 10.0.0.9"]),
            Some(ip("198.51.100.1"))
        );
        // Several header lines: the last one holds the right-most entries.
        assert_eq!(
            client_of("10.0.0.1", &["6.6.6.6", "198.51.100.2 , 10.0.0.9"]),
            Some(ip("198.51.100.2"))
        );
        assert_eq!(
            client_of("10.0.0.1", &["2001:db8::1"]),
            Some(ip("2001:db8::1"))
        );
    }

    #[test]
    fn all_trusted_hops_give_the_left_most_and_no_xff_gives_the_peer() {
        assert_eq!(
            client_of("10.0.0.1", &["10.0.0.3, 10.0.0.2"]),
            Some(ip("10.0.0.3"))
        );
        assert_eq!(client_of("10.0.0.1", &[]), Some(ip("10.0.0.1")));
        assert_eq!(client_of("10.0.0.1", &[" , "]), Some(ip("10.0.0.1")));
    }

    #[test]
    fn malformed_xff_entries_stop_the_walk_at_the_last_verified_address() {
        for bad in [
            "unknown",
            "198.51.100.1:4711",
            "[2001:db8::1]",
            "[2001:db8::1]:80",
            "not an address",
            "fe80::1%eth0",
            "1.2.3",
        ] {
            let header = format!("6.6.6.6, {bad}");
            assert_eq!(
                client_of("10.0.0.1", &[&header]),
                Some(ip("10.0.0.1")),
                "{bad}: the peer"
            );
            let header = format!("6.6.6.6, {bad}, 10.0.0.7");
            assert_eq!(
                client_of("10.0.0.1", &[&header]),
                Some(ip("10.0.0.7")),
                "{bad}: the last trusted hop"
            );
        }
        let mut r = req(&[]);
        r.append_header(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff1.2.3.4").expect("value"),
        )
        .expect("header");
        assert_eq!(
            real_client_ip(Some(ip("10.0.0.1")), &r.headers, trusted),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn ipv4_mapped_peers_and_hops_count_as_their_ipv4_address() {
        // A `[::]` listener sees the IPv4 load balancer 10.0.0.1 as ::ffff:10.0.0.1.
        assert_eq!(
            client_of("::ffff:10.0.0.1", &["198.51.100.1"]),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            client_of(
                "::ffff:10.0.0.1",
                &["6.6.6.6, ::ffff:198.51.100.1, ::ffff:10.0.0.9"]
            ),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            client_of("::ffff:192.0.2.7", &["6.6.6.6"]),
            Some(ip("192.0.2.7"))
        );
    }

    #[test]
    fn xff_walk_is_bounded_in_hops() {
        let mut chain = vec!["6.6.6.6".to_string()];
        chain.extend((0..MAX_FORWARDED_HOPS + 4).map(|i| format!("10.0.0.{i}")));
        let header = chain.join(", ");
        let found = client_of("10.0.0.200", &[&header]).expect("an address");
        assert!(trusted(found), "stops at a trusted hop, got {found}");
    }

    fn guard() -> SpoofGuard {
        let claims = [
            HeaderName::from_static("x-user-email"),
            HeaderName::from_static("x_tenant"),
        ];
        SpoofGuard::new(&claims)
    }

    /// The request's header names, sorted (removal may reorder them).
    fn names(r: &RequestHeader) -> Vec<&str> {
        let mut names: Vec<&str> = r.headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn identity_headers_go_in_every_spelling_from_every_peer() {
        for trusted_peer in [false, true] {
            let mut r = req(&[
                ("X-Consumer-Id", "admin"),
                ("X_Consumer_Id", "admin"),
                ("x-consumer_ID", "admin"),
                ("X_USER_EMAIL", "boss@example.com"),
                ("x-tenant", "other"),
                ("x_tenant", "other"),
                ("x-consumer-idx", "kept"),
                ("accept", "*/*"),
            ]);
            guard().strip(&mut r, trusted_peer);
            assert_eq!(names(&r), ["accept", "x-consumer-idx"], "{trusted_peer}");
        }
    }

    #[test]
    fn forwarding_headers_go_from_untrusted_peers_and_stay_from_trusted_ones() {
        let sent: Vec<(&str, &str)> = FORWARDING.iter().map(|n| (*n, "spoof")).collect();
        let mut r = req(&sent);
        r.append_header("X_Forwarded_For", "6.6.6.6")
            .expect("header");
        r.append_header("accept", "*/*").expect("header");
        guard().strip(&mut r, false);
        assert_eq!(names(&r), ["accept"]);

        let mut r = req(&sent);
        r.append_header("X_Forwarded_For", "6.6.6.6")
            .expect("header");
        r.append_header("true_client_ip", "6.6.6.6")
            .expect("header");
        guard().strip(&mut r, true);
        let mut expected = FORWARDING.to_vec();
        expected.sort_unstable();
        assert_eq!(
            names(&r),
            expected,
            "a trusted proxy's headers stay, `_` ones go"
        );
    }

    #[test]
    fn requests_with_nothing_guarded_are_left_alone() {
        let mut r = req(&[("host", "a"), ("x_custom", "1"), ("accept", "*/*")]);
        guard().strip(&mut r, false);
        assert_eq!(names(&r), ["accept", "host", "x_custom"]);
    }

    #[test]
    fn real_ip_is_always_the_gateways_and_the_port_kept_only_from_a_trusted_proxy() {
        let client = ip("198.51.100.1");
        let mut r = req(&[("x-real-ip", "6.6.6.6"), ("x-forwarded-port", "1")]);
        set_client_headers(&mut r, Some(client), true, Some(8080)).expect("set");
        assert_eq!(r.headers["x-real-ip"], "198.51.100.1");
        assert_eq!(r.headers["x-forwarded-port"], "1");

        let mut r = req(&[("x-forwarded-port", "1")]);
        set_client_headers(&mut r, Some(client), false, Some(8080)).expect("set");
        assert_eq!(r.headers["x-forwarded-port"], "8080");

        let mut r = req(&[("x-real-ip", "6.6.6.6"), ("x-forwarded-port", "1")]);
        set_client_headers(&mut r, None, false, None).expect("set");
        assert!(
            r.headers.get("x-real-ip").is_none() && r.headers.get("x-forwarded-port").is_none()
        );
    }
}

//! The primary cache key: which request parts address an entry, hashed so no client bytes can
//! imitate another part.
//!
//! # Layout, version 1
//!
//! The key is SHA-256 over
//!
//! ```text
//! "portcullis-cache-key" ‖ 0x00 ‖ version (1 byte, = 1) ‖ part*
//! part = tag (1 byte) ‖ length (u64, big-endian) ‖ bytes
//! ```
//!
//! with the parts in this order:
//!
//! | tag | part | when |
//! |---|---|---|
//! | `R` | route name | always, so two routes never share an entry |
//! | `H` | host, ASCII-lowercased (as routed, port included if the client sent one) | route keys by host |
//! | `P` | canonical path | always |
//! | `Q` | the whole query, bytes as received (empty if none) | query mode `whole` |
//! | `q` | one `name=value` pair as received, in order (see below) | query modes `sorted`, `allow` |
//! | `N`, then `V` or `A` | a keyed header's name, then its normalised value or "absent" | each named header, in the route's order |
//! | `C` or `U` | the authenticated consumer's id, or "anonymous" (empty bytes) | route keys by consumer |
//!
//! Every part is length-framed, so `?a=1&b=2` can never collide with a path or a header that
//! contains those bytes. The digest is 32 bytes; its lowercase hex is what a shared (Redis) tier
//! stores under, so every node and every tier must compute it the same way: change anything in
//! this layout and bump [`KEY_LAYOUT_VERSION`], which changes every key (old entries then simply
//! expire). The pingora wiring passes the digest as the `CacheKey` primary.
//!
//! Query pairs (`sorted` and `allow`): the query is split on `&`, empty pairs dropped, and pairs
//! ordered by their *decoded* name with a stable sort, so repeated parameters keep the order
//! the upstream sees (`a=1&a=2` and `a=2&a=1` stay different entries: an upstream that reads the
//! first value would otherwise answer one with the other's content). An allow-list compares
//! decoded names (`%61` is `a`, `+` is a space), so an encoded spelling cannot slip a parameter
//! past the key while the upstream decodes and uses it. Values stay as received: two spellings
//! of one value are two entries, which costs a miss, never a wrong answer.

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

/// The version of the key layout above; part of every key.
pub const KEY_LAYOUT_VERSION: u8 = 1;

/// Which parts of the query address an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKey {
    /// The whole query string, byte for byte.
    Whole,
    /// Every parameter, ordered by name, so `?b=2&a=1` and `?a=1&b=2` share an entry.
    Sorted,
    /// Only these parameters (decoded names, compared exactly), ordered by name; an empty list
    /// ignores the query altogether.
    Allow(Vec<String>),
}

/// The parts of a request that make up a route's primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParts {
    /// Include the host (off only when several hosts of one route serve the same content).
    pub host: bool,
    /// How the query takes part.
    pub query: QueryKey,
    /// Request headers that select different content (lowercase names, route order).
    pub headers: Vec<HeaderName>,
    /// Include the authenticated consumer, so one consumer's entry is never another's.
    pub by_consumer: bool,
}

impl Default for KeyParts {
    /// Host, path and the whole query; no headers; not per consumer.
    fn default() -> Self {
        KeyParts {
            host: true,
            query: QueryKey::Whole,
            headers: Vec::new(),
            by_consumer: false,
        }
    }
}

/// The request parts the key is computed from, as the proxy has them after routing.
#[derive(Debug, Clone, Copy)]
pub struct KeyRequest<'a> {
    /// The matched route's name.
    pub route: &'a str,
    /// The request's host as routed (validated by the proxy).
    pub host: &'a str,
    /// The canonical path.
    pub path: &'a str,
    /// The query without its `?`, if any.
    pub query: Option<&'a str>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The authenticated consumer's id, if the request has one.
    pub consumer: Option<&'a str>,
}

/// A primary key: the SHA-256 of the layout in the module documentation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PrimaryKey([u8; 32]);

impl PrimaryKey {
    /// The digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits, the form a shared tier stores under.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for PrimaryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrimaryKey({})", self.to_hex())
    }
}

/// Computes a request's primary key for a route's key parts.
pub fn primary_key(parts: &KeyParts, request: &KeyRequest<'_>) -> PrimaryKey {
    let mut key = FramedHash::new(b"portcullis-cache-key");
    key.part(b'R', request.route.as_bytes());
    if parts.host {
        key.part(b'H', lowercase_host(request.host).as_bytes());
    }
    key.part(b'P', request.path.as_bytes());
    hash_query(&mut key, &parts.query, request.query.unwrap_or(""));
    for name in &parts.headers {
        key.header(request.headers, name);
    }
    if parts.by_consumer {
        match request.consumer {
            Some(consumer) => key.part(b'C', consumer.as_bytes()),
            None => key.part(b'U', b""),
        }
    }
    PrimaryKey(key.finish())
}

fn lowercase_host(host: &str) -> Cow<'_, str> {
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

fn hash_query(key: &mut FramedHash, mode: &QueryKey, query: &str) {
    match mode {
        QueryKey::Whole => key.part(b'Q', query.as_bytes()),
        QueryKey::Sorted => {
            for pair in ordered_pairs(query, |_| true) {
                key.part(b'q', pair.as_bytes());
            }
        }
        QueryKey::Allow(allowed) => {
            let keep = |name: &[u8]| allowed.iter().any(|a| a.as_bytes() == name);
            for pair in ordered_pairs(query, keep) {
                key.part(b'q', pair.as_bytes());
            }
        }
    }
}

/// The query's non-empty pairs whose decoded name passes `keep`, stably sorted by that name.
fn ordered_pairs<'q>(query: &'q str, keep: impl Fn(&[u8]) -> bool) -> Vec<&'q str> {
    let mut pairs: Vec<(Cow<'q, [u8]>, &'q str)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| (decoded_name(pair), pair))
        .filter(|(name, _)| keep(name))
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.into_iter().map(|(_, pair)| pair).collect()
}

/// The name of a `name=value` pair with `+` and percent-escapes decoded (form encoding), the
/// way upstream frameworks read it; a malformed escape stays as written.
fn decoded_name(pair: &str) -> Cow<'_, [u8]> {
    let name = pair
        .split_once('=')
        .map_or(pair, |(name, _)| name)
        .as_bytes();
    if !name.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(name);
    }
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (name.get(i + 1), name.get(i + 2)) {
                (Some(&hi), Some(&lo)) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => {
                    out.push((hex_value(hi) << 4) | hex_value(lo));
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// The values of `name` in `headers`, joined by `,`, each trimmed with whitespace runs folded
/// to one space; `None` when the header is absent (distinct from present but empty). Bytes are
/// kept as they are, so two distinct values never fold to the same bytes.
fn normalized_header(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let mut out = Vec::new();
    for (n, value) in values.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        push_folded(&mut out, value.as_bytes());
    }
    Some(out)
}

/// Appends `value` trimmed, with whitespace runs folded to one space.
fn push_folded(out: &mut Vec<u8>, value: &[u8]) {
    let mut pending_space = false;
    for &b in value {
        if b == b' ' || b == b'\t' {
            pending_space = true;
            continue;
        }
        if pending_space && b != b',' && out.last().is_some_and(|&last| last != b',') {
            out.push(b' ');
        }
        pending_space = false;
        out.push(b);
    }
}

/// SHA-256 over length-framed, tagged parts, with a domain and the layout version first.
pub(crate) struct FramedHash(Sha256);

impl FramedHash {
    pub(crate) fn new(domain: &[u8]) -> FramedHash {
        let mut hash = Sha256::new();
        hash.update(domain);
        hash.update([0, KEY_LAYOUT_VERSION]);
        FramedHash(hash)
    }

    /// The part of request header `name`: its name, then its normalized value or that it is
    /// absent. The primary key's named headers and the `Vary` secondary key both hash headers
    /// this one way.
    pub(crate) fn header(&mut self, headers: &HeaderMap, name: &HeaderName) {
        self.part(b'N', name.as_str().as_bytes());
        match normalized_header(headers, name) {
            Some(value) => self.part(b'V', &value),
            None => self.part(b'A', b""),
        }
    }

    pub(crate) fn part(&mut self, tag: u8, bytes: &[u8]) {
        self.0.update([tag]);
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn request<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> KeyRequest<'a> {
        KeyRequest {
            route: "api",
            host: "api.example.com",
            path: "/v1/items",
            query,
            headers,
            consumer: None,
        }
    }

    fn key(parts: &KeyParts, req: &KeyRequest<'_>) -> PrimaryKey {
        primary_key(parts, req)
    }

    fn with_query(mode: QueryKey) -> KeyParts {
        KeyParts {
            query: mode,
            ..KeyParts::default()
        }
    }

    // RFC 9111 §2: the primary key is the target URI (host, path, query); the same URI, the same key.
    #[test]
    fn same_request_same_key_and_stable_hex() {
        let h = HeaderMap::new();
        let a = key(&KeyParts::default(), &request(&h, Some("a=1")));
        let b = key(&KeyParts::default(), &request(&h, Some("a=1")));
        assert_eq!(a, b);
        assert_eq!(a.to_hex().len(), 64);
        assert!(a
            .to_hex()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    // Layout version 1 is a contract with the shared tier: this digest must never change silently.
    #[test]
    fn layout_version_one_is_pinned() {
        let h = HeaderMap::new();
        let k = key(&KeyParts::default(), &request(&h, Some("a=1")));
        let mut expected = Sha256::new();
        expected.update(b"portcullis-cache-key\x00\x01");
        for (tag, bytes) in [
            (b'R', &b"api"[..]),
            (b'H', b"api.example.com"),
            (b'P', b"/v1/items"),
            (b'Q', b"a=1"),
        ] {
            expected.update([tag]);
            expected.update((bytes.len() as u64).to_be_bytes());
            expected.update(bytes);
        }
        let expected: [u8; 32] = expected.finalize().into();
        assert_eq!(k.as_bytes(), &expected);
    }

    // RFC 9111 §2: different host, path, query or route → different entries.
    #[test]
    fn each_keyed_part_changes_the_key() {
        let h = HeaderMap::new();
        let base = request(&h, Some("a=1"));
        let parts = KeyParts::default();
        let k = key(&parts, &base);
        assert_ne!(
            k,
            key(
                &parts,
                &KeyRequest {
                    host: "other.example.com",
                    ..base
                }
            )
        );
        assert_ne!(
            k,
            key(
                &parts,
                &KeyRequest {
                    path: "/v1/other",
                    ..base
                }
            )
        );
        assert_ne!(
            k,
            key(
                &parts,
                &KeyRequest {
                    query: Some("a=2"),
                    ..base
                }
            )
        );
        assert_ne!(
            k,
            key(
                &parts,
                &KeyRequest {
                    route: "admin",
                    ..base
                }
            )
        );
    }

    // RFC 9110 §4.2.3: the host is case-insensitive.
    #[test]
    fn host_case_does_not_matter_and_can_be_left_out() {
        let h = HeaderMap::new();
        let base = request(&h, None);
        let parts = KeyParts::default();
        let upper = KeyRequest {
            host: "API.Example.COM",
            ..base
        };
        assert_eq!(key(&parts, &base), key(&parts, &upper));
        let hostless = KeyParts {
            host: false,
            ..KeyParts::default()
        };
        let other = KeyRequest {
            host: "other.example.com",
            ..base
        };
        assert_eq!(key(&hostless, &base), key(&hostless, &other));
    }

    // Framing: bytes of one part can never be read as another (no key-syntax injection).
    #[test]
    fn parts_cannot_bleed_into_each_other() {
        let h = HeaderMap::new();
        let parts = KeyParts::default();
        let a = KeyRequest {
            path: "/a",
            query: Some("b"),
            ..request(&h, None)
        };
        let b = KeyRequest {
            path: "/a?b",
            query: None,
            ..request(&h, None)
        };
        let c = KeyRequest {
            path: "/a\u{0}Qb",
            query: None,
            ..request(&h, None)
        };
        assert_ne!(key(&parts, &a), key(&parts, &b));
        assert_ne!(key(&parts, &a), key(&parts, &c));
        let sorted = with_query(QueryKey::Sorted);
        let one = request(&h, Some("a=1&b=2"));
        let joined = request(&h, Some("a=1%26b=2"));
        assert_ne!(key(&sorted, &one), key(&sorted, &joined));
    }

    // RFC 9111 §2 leaves the key to the cache: whole mode keeps the query byte for byte.
    #[test]
    fn whole_query_is_order_sensitive_and_none_equals_empty() {
        let h = HeaderMap::new();
        let parts = KeyParts::default();
        assert_ne!(
            key(&parts, &request(&h, Some("a=1&b=2"))),
            key(&parts, &request(&h, Some("b=2&a=1")))
        );
        assert_eq!(
            key(&parts, &request(&h, None)),
            key(&parts, &request(&h, Some("")))
        );
    }

    // Sorted mode: parameter order does not matter, empty pairs are dropped.
    #[test]
    fn sorted_query_ignores_order() {
        let h = HeaderMap::new();
        let parts = with_query(QueryKey::Sorted);
        assert_eq!(
            key(&parts, &request(&h, Some("b=2&a=1&&c"))),
            key(&parts, &request(&h, Some("c&a=1&b=2")))
        );
        assert_ne!(
            key(&parts, &request(&h, Some("a=1&b=2"))),
            key(&parts, &request(&h, Some("a=1&b=3")))
        );
    }

    // Sorted mode keeps repeated parameters in the order the upstream sees them.
    #[test]
    fn sorted_query_keeps_the_order_of_repeats() {
        let h = HeaderMap::new();
        let parts = with_query(QueryKey::Sorted);
        assert_ne!(
            key(&parts, &request(&h, Some("a=1&a=2"))),
            key(&parts, &request(&h, Some("a=2&a=1")))
        );
        assert_eq!(
            key(&parts, &request(&h, Some("z=0&a=1&a=2"))),
            key(&parts, &request(&h, Some("a=1&z=0&a=2")))
        );
    }

    // Allow-list mode: only the listed parameters count; others are ignored.
    #[test]
    fn allow_list_keeps_only_listed_parameters() {
        let h = HeaderMap::new();
        let parts = with_query(QueryKey::Allow(vec!["page".into(), "lang".into()]));
        assert_eq!(
            key(&parts, &request(&h, Some("utm_source=x&page=2&lang=en"))),
            key(&parts, &request(&h, Some("lang=en&page=2")))
        );
        assert_ne!(
            key(&parts, &request(&h, Some("page=2"))),
            key(&parts, &request(&h, Some("page=3")))
        );
        let none = with_query(QueryKey::Allow(Vec::new()));
        assert_eq!(
            key(&none, &request(&h, Some("anything=1"))),
            key(&none, &request(&h, None))
        );
    }

    // An encoded parameter name is the parameter the upstream decodes: it cannot dodge the list.
    #[test]
    fn allow_list_matches_decoded_names() {
        let h = HeaderMap::new();
        let parts = with_query(QueryKey::Allow(vec!["page".into(), "sort by".into()]));
        let plain = key(&parts, &request(&h, None));
        assert_ne!(plain, key(&parts, &request(&h, Some("%70age=evil"))));
        assert_ne!(plain, key(&parts, &request(&h, Some("sort+by=x"))));
        assert_ne!(plain, key(&parts, &request(&h, Some("sort%20by=x"))));
        // A malformed escape stays literal and does not panic.
        assert_eq!(plain, key(&parts, &request(&h, Some("%zzpage=1&%=2&%7"))));
    }

    // RFC 9111 §4.1-style normalisation for keyed headers: trimmed, whitespace folded, absent ≠ empty.
    #[test]
    fn keyed_headers_are_normalised_and_absence_counts() {
        let parts = KeyParts {
            headers: vec![HeaderName::from_static("accept-language")],
            ..KeyParts::default()
        };
        let mut a = HeaderMap::new();
        a.insert(
            "accept-language",
            HeaderValue::from_static("  en-GB,   en;q=0.8 "),
        );
        let mut b = HeaderMap::new();
        b.insert(
            "accept-language",
            HeaderValue::from_static("en-GB, en;q=0.8"),
        );
        let mut empty = HeaderMap::new();
        empty.insert("accept-language", HeaderValue::from_static(""));
        let absent = HeaderMap::new();
        assert_eq!(
            key(&parts, &request(&a, None)),
            key(&parts, &request(&b, None))
        );
        assert_ne!(
            key(&parts, &request(&empty, None)),
            key(&parts, &request(&absent, None))
        );
        assert_ne!(
            key(&parts, &request(&a, None)),
            key(&parts, &request(&absent, None))
        );
    }

    // Header values that are not ASCII stay distinct.
    #[test]
    fn non_ascii_header_values_stay_distinct() {
        let parts = KeyParts {
            headers: vec![HeaderName::from_static("x-tenant")],
            ..KeyParts::default()
        };
        let mut a = HeaderMap::new();
        a.insert("x-tenant", HeaderValue::from_bytes(b"\xe9").unwrap());
        let mut b = HeaderMap::new();
        b.insert("x-tenant", HeaderValue::from_bytes(b"\xe8").unwrap());
        assert_ne!(
            key(&parts, &request(&a, None)),
            key(&parts, &request(&b, None))
        );
        // A client cannot spell a non-ASCII byte in ASCII to share its key.
        let mut spelled = HeaderMap::new();
        spelled.insert("x-tenant", HeaderValue::from_static("\\xe9"));
        assert_ne!(
            key(&parts, &request(&a, None)),
            key(&parts, &request(&spelled, None))
        );
    }

    // RFC 9111 §3.5: per-consumer keys keep consumers apart, and apart from anonymous requests.
    #[test]
    fn consumer_keying_separates_consumers() {
        let h = HeaderMap::new();
        let parts = KeyParts {
            by_consumer: true,
            ..KeyParts::default()
        };
        let alice = KeyRequest {
            consumer: Some("alice"),
            ..request(&h, None)
        };
        let bob = KeyRequest {
            consumer: Some("bob"),
            ..request(&h, None)
        };
        let anonymous = KeyRequest {
            consumer: None,
            ..request(&h, None)
        };
        let empty_id = KeyRequest {
            consumer: Some(""),
            ..request(&h, None)
        };
        assert_ne!(key(&parts, &alice), key(&parts, &bob));
        assert_ne!(key(&parts, &alice), key(&parts, &anonymous));
        assert_ne!(key(&parts, &empty_id), key(&parts, &anonymous));
        // Without consumer keying the consumer is not part of the key.
        let shared = KeyParts::default();
        assert_eq!(key(&shared, &alice), key(&shared, &bob));
    }

    // Query keying works on any query text (escapes, separators, non-ASCII) without panicking,
    // and sorting is deterministic.
    #[test]
    fn any_query_keys_without_panicking() {
        const ALPHABET: &[char] = &['a', 'b', '=', '&', '%', '+', '2', 'F', 'z', ';', 'é', ' '];
        let h = HeaderMap::new();
        let modes = [
            with_query(QueryKey::Whole),
            with_query(QueryKey::Sorted),
            with_query(QueryKey::Allow(vec!["a".into(), "b ".into()])),
        ];
        let mut rng = fastrand::Rng::with_seed(91_112);
        for _ in 0..2_000 {
            let len = rng.usize(0..24);
            let query: String = (0..len)
                .map(|_| ALPHABET[rng.usize(0..ALPHABET.len())])
                .collect();
            for parts in &modes {
                let once = key(parts, &request(&h, Some(&query)));
                assert_eq!(once, key(parts, &request(&h, Some(&query))));
            }
        }
    }
}

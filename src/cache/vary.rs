//! `Vary` (RFC 9111 §4.1): which request headers a stored response was selected by, and the
//! secondary key that tells its variants apart.
//!
//! The secondary key is SHA-256, framed like the primary key (`crate::cache::key`), over the
//! nominated header names in sorted order, each followed by its normalised value (lines joined
//! with `,`, trimmed, whitespace folded) or an "absent" marker: §4.1 allows normalising values,
//! and an absent header must not match an empty one. `Vary: *` never matches (§4.1), so such
//! a response is never stored.

use http::header::{HeaderMap, HeaderName, VARY};

use super::directives::trim;
use super::key::FramedHash;

/// What a response's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vary {
    /// No `Vary`: one variant per primary key.
    None,
    /// The nominated request headers, lowercase, sorted and deduplicated.
    Headers(Vec<HeaderName>),
    /// `Vary: *`: no later request can match.
    Any,
    /// A member that is not a field name: no request can be matched against it either.
    Unparsable,
}

impl Vary {
    /// The `Vary` of a response, over all its field lines.
    pub fn from_response(headers: &HeaderMap) -> Vary {
        let mut names: Vec<HeaderName> = Vec::new();
        let mut unparsable = false;
        for value in headers.get_all(VARY) {
            for member in value.as_bytes().split(|&b| b == b',') {
                let member = trim(member);
                if member.is_empty() {
                    continue;
                }
                if member == b"*" {
                    return Vary::Any;
                }
                match HeaderName::from_bytes(member) {
                    Ok(name) => names.push(name),
                    Err(_) => unparsable = true,
                }
            }
        }
        if unparsable {
            return Vary::Unparsable;
        }
        if names.is_empty() {
            return Vary::None;
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Vary::Headers(names)
    }

    /// The nominated headers (empty unless [`Vary::Headers`]).
    pub fn names(&self) -> &[HeaderName] {
        match self {
            Vary::Headers(names) => names,
            Vary::None | Vary::Any | Vary::Unparsable => &[],
        }
    }
}

/// The key of one variant among the responses stored under a primary key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecondaryKey([u8; 32]);

impl SecondaryKey {
    /// The digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for SecondaryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecondaryKey({})", self.to_hex())
    }
}

/// The secondary key of a request for a response that varies on `names` (sorted, as
/// [`Vary::from_response`] gives them); `None` when the response does not vary.
pub fn secondary_key(names: &[HeaderName], request: &HeaderMap) -> Option<SecondaryKey> {
    if names.is_empty() {
        return None;
    }
    let mut key = FramedHash::new(b"portcullis-cache-vary");
    for name in names {
        key.header(request, name);
    }
    Some(SecondaryKey(key.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn response(vary: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in vary {
            h.append(VARY, HeaderValue::from_static(v));
        }
        h
    }

    fn req(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    // RFC 9111 §4.1: Vary names are case-insensitive field names; lines and lists combine.
    #[test]
    fn names_are_lowercased_sorted_and_deduplicated() {
        let vary = Vary::from_response(&response(&[
            "Accept-Encoding, Accept-Language",
            "accept-encoding",
        ]));
        assert_eq!(
            vary,
            Vary::Headers(vec![
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("accept-language"),
            ])
        );
        assert_eq!(Vary::from_response(&response(&[" , "])), Vary::None);
        assert_eq!(Vary::from_response(&HeaderMap::new()), Vary::None);
    }

    // RFC 9111 §4.1: "*" always fails to match, wherever it appears.
    #[test]
    fn star_is_any() {
        assert_eq!(Vary::from_response(&response(&["accept", "*"])), Vary::Any);
        assert_eq!(Vary::from_response(&response(&["accept, * "])), Vary::Any);
    }

    // RFC 9111 §4.1: a member that is not a field name cannot be matched.
    #[test]
    fn invalid_member_is_unparsable() {
        assert_eq!(
            Vary::from_response(&response(&["accept, bad name"])),
            Vary::Unparsable
        );
    }

    // RFC 9111 §4.1: values may be normalised (whitespace); otherwise they must match.
    #[test]
    fn secondary_key_normalises_whitespace_only() {
        let names = [HeaderName::from_static("accept-encoding")];
        let a = secondary_key(&names, &req(&[("accept-encoding", " gzip,   br ")]));
        let b = secondary_key(&names, &req(&[("accept-encoding", "gzip, br")]));
        let c = secondary_key(&names, &req(&[("accept-encoding", "br, gzip")]));
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    // RFC 9111 §4.1: a header absent from one request and present (even empty) in another differs.
    #[test]
    fn absent_and_empty_headers_differ() {
        let names = [HeaderName::from_static("accept")];
        let absent = secondary_key(&names, &HeaderMap::new());
        let empty = secondary_key(&names, &req(&[("accept", "")]));
        assert_ne!(absent, empty);
    }

    // RFC 9111 §4.1: headers the response does not nominate do not matter.
    #[test]
    fn only_nominated_headers_count() {
        let names = [HeaderName::from_static("accept")];
        let a = secondary_key(
            &names,
            &req(&[("accept", "text/html"), ("user-agent", "a")]),
        );
        let b = secondary_key(
            &names,
            &req(&[("accept", "text/html"), ("user-agent", "b")]),
        );
        assert_eq!(a, b);
        assert_eq!(secondary_key(&[], &req(&[("accept", "x")])), None);
    }

    // Framing: a value cannot pose as the next header's name.
    #[test]
    fn values_cannot_pose_as_names() {
        let names = [HeaderName::from_static("a"), HeaderName::from_static("b")];
        let one = secondary_key(&names, &req(&[("a", "x"), ("b", "y")]));
        let two = secondary_key(&names, &req(&[("a", "xby")]));
        assert_ne!(one, two);
    }

    // RFC 9111 §4.1: whatever bytes a Vary line holds, parsing returns a verdict (no panic).
    #[test]
    fn any_vary_bytes_parse_without_panicking() {
        const ALPHABET: &[u8] = b"*, \tabcXYZ-\"\x80\xff:;";
        let mut rng = fastrand::Rng::with_seed(41);
        for _ in 0..2_000 {
            let len = rng.usize(0..32);
            let bytes: Vec<u8> = (0..len)
                .map(|_| ALPHABET[rng.usize(0..ALPHABET.len())])
                .collect();
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                continue;
            };
            let mut h = HeaderMap::new();
            h.insert(VARY, value);
            let vary = Vary::from_response(&h);
            let key = secondary_key(vary.names(), &h);
            assert_eq!(key.is_some(), matches!(vary, Vary::Headers(_)));
        }
    }
}

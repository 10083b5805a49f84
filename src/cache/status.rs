//! The `Cache-Status` response header (RFC 9211): one list member naming this cache, with
//! parameters saying what it did.
//!
//! The header is a Structured Field list (RFC 8941); each cache appends its member, so the
//! gateway's member goes after any the upstream sent (§2: origin-side caches first). Values
//! are rendered as the grammar requires: `detail` as a token when it is one, else as a quoted
//! string with `\` and `"` escaped and anything outside printable ASCII replaced by `?`;
//! integers within the Structured Field range. `key` and `detail` can tell a client about the
//! cache's internals (§3), so the wiring decides when to send them.

use std::borrow::Cow;
use std::fmt::Write;

use http::HeaderValue;

/// The cache's name in its list member.
pub const CACHE_NAME: &str = "Portcullis";

/// The largest magnitude of a Structured Field integer (RFC 8941 §3.3.1).
const SF_INTEGER_MAX: i64 = 999_999_999_999_999;

/// Why a request went to the upstream (`fwd`, RFC 9211 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// The cache was configured not to handle this request.
    Bypass,
    /// The method is not cached.
    Method,
    /// Nothing stored under the URI.
    UriMiss,
    /// Something stored under the URI, but not for this request's `Vary` headers.
    VaryMiss,
    /// A miss the cache cannot classify further.
    Miss,
    /// The request's directives required going forward (e.g. `no-cache`).
    Request,
    /// The stored response was stale and needed revalidation.
    Stale,
    /// Only part of the response was stored.
    Partial,
}

impl Fwd {
    /// The registered token.
    pub fn token(&self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Miss => "miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
            Fwd::Partial => "partial",
        }
    }
}

/// Whether the cache answered or forwarded (`hit` and `fwd` exclude each other, §2.1-2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Hit,
    Forward(Fwd),
}

/// A `Cache-Status` member for one response, built then rendered once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheStatus {
    outcome: Outcome,
    fwd_status: Option<u16>,
    ttl: Option<i64>,
    stored: bool,
    collapsed: bool,
    key: Option<String>,
    detail: Option<Cow<'static, str>>,
}

impl CacheStatus {
    /// Answered from the cache without going forward (`hit`).
    pub fn hit() -> CacheStatus {
        CacheStatus::with(Outcome::Hit)
    }

    /// Went to the upstream, for this reason (`fwd=…`).
    pub fn forward(reason: Fwd) -> CacheStatus {
        CacheStatus::with(Outcome::Forward(reason))
    }

    fn with(outcome: Outcome) -> CacheStatus {
        CacheStatus {
            outcome,
            fwd_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            key: None,
            detail: None,
        }
    }

    /// The status the upstream answered with (`fwd-status`, e.g. 304 after revalidation).
    pub fn fwd_status(mut self, status: u16) -> CacheStatus {
        self.fwd_status = Some(status);
        self
    }

    /// Remaining freshness in seconds, negative when stale (`ttl`).
    pub fn ttl(mut self, seconds: i64) -> CacheStatus {
        self.ttl = Some(seconds.clamp(-SF_INTEGER_MAX, SF_INTEGER_MAX));
        self
    }

    /// The response was stored (`stored`).
    pub fn stored(mut self) -> CacheStatus {
        self.stored = true;
        self
    }

    /// The request was collapsed with another one going forward (`collapsed`).
    pub fn collapsed(mut self) -> CacheStatus {
        self.collapsed = true;
        self
    }

    /// The cache key (`key`); only for trusted clients.
    pub fn key(mut self, key: impl Into<String>) -> CacheStatus {
        self.key = Some(key.into());
        self
    }

    /// Implementation-specific detail (`detail`), such as the tier or why nothing was stored.
    pub fn detail(mut self, detail: impl Into<Cow<'static, str>>) -> CacheStatus {
        self.detail = Some(detail.into());
        self
    }

    /// The member as text, e.g. `Portcullis; fwd=uri-miss; stored`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(48);
        out.push_str(CACHE_NAME);
        match self.outcome {
            Outcome::Hit => out.push_str("; hit"),
            Outcome::Forward(reason) => {
                out.push_str("; fwd=");
                out.push_str(reason.token());
            }
        }
        // Writing to a String cannot fail.
        if let Some(status) = self.fwd_status {
            let _ = write!(out, "; fwd-status={status}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(out, "; ttl={ttl}");
        }
        if self.stored {
            out.push_str("; stored");
        }
        if self.collapsed {
            out.push_str("; collapsed");
        }
        if let Some(key) = &self.key {
            out.push_str("; key=");
            push_sf_string(&mut out, key);
        }
        if let Some(detail) = &self.detail {
            out.push_str("; detail=");
            if is_sf_token(detail) {
                out.push_str(detail);
            } else {
                push_sf_string(&mut out, detail);
            }
        }
        out
    }

    /// The header value with only this cache's member.
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.render())
            .expect("a rendered Cache-Status member is printable ASCII")
    }

    /// The header value with this member appended to what the upstream sent, if anything.
    pub fn append_to(&self, upstream: Option<&HeaderValue>) -> HeaderValue {
        let ours = self.render();
        match upstream {
            Some(existing) if !existing.as_bytes().iter().all(u8::is_ascii_whitespace) => {
                let mut joined = existing.as_bytes().to_vec();
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(ours.as_bytes());
                // Both halves are valid field values, so the join is too; should that ever
                // not hold, our member alone is still correct.
                HeaderValue::from_bytes(&joined).unwrap_or_else(|_| self.to_header_value())
            }
            _ => self.to_header_value(),
        }
    }
}

/// sf-token = ( ALPHA / "*" ) *( tchar / ":" / "/" ) (RFC 8941 §3.3.4).
fn is_sf_token(s: &str) -> bool {
    let mut bytes = s.bytes();
    let first_ok = matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'*');
    first_ok && bytes.all(|b| is_tchar(b) || b == b':' || b == b'/')
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// sf-string (RFC 8941 §3.3.3): printable ASCII in quotes, `"` and `\` escaped; other
/// characters cannot be represented and become `?`.
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 9211 §2.1, §2.4: a hit with its remaining freshness.
    #[test]
    fn hit_with_ttl() {
        assert_eq!(
            CacheStatus::hit().ttl(42).render(),
            "Portcullis; hit; ttl=42"
        );
    }

    // RFC 9211 §2.4: ttl is negative when the response is stale.
    #[test]
    fn stale_hit_has_negative_ttl() {
        assert_eq!(
            CacheStatus::hit()
                .ttl(-5)
                .detail("stale-while-revalidate")
                .render(),
            "Portcullis; hit; ttl=-5; detail=stale-while-revalidate"
        );
    }

    // RFC 9211 §2.2, §2.5: a miss that was stored.
    #[test]
    fn uri_miss_stored() {
        assert_eq!(
            CacheStatus::forward(Fwd::UriMiss).stored().render(),
            "Portcullis; fwd=uri-miss; stored"
        );
    }

    // RFC 9211 §2.2, §2.3: revalidation answered 304.
    #[test]
    fn stale_revalidated_with_fwd_status() {
        assert_eq!(
            CacheStatus::forward(Fwd::Stale).fwd_status(304).render(),
            "Portcullis; fwd=stale; fwd-status=304"
        );
    }

    // RFC 9211 §2.2: every registered fwd reason renders as its token.
    #[test]
    fn every_fwd_token() {
        let all = [
            (Fwd::Bypass, "bypass"),
            (Fwd::Method, "method"),
            (Fwd::UriMiss, "uri-miss"),
            (Fwd::VaryMiss, "vary-miss"),
            (Fwd::Miss, "miss"),
            (Fwd::Request, "request"),
            (Fwd::Stale, "stale"),
            (Fwd::Partial, "partial"),
        ];
        for (fwd, token) in all {
            assert_eq!(
                CacheStatus::forward(fwd).render(),
                format!("Portcullis; fwd={token}")
            );
        }
    }

    // RFC 9211 §2.6: collapsed is a boolean parameter (bare key when true).
    #[test]
    fn collapsed_and_all_parameters_in_order() {
        assert_eq!(
            CacheStatus::forward(Fwd::VaryMiss)
                .fwd_status(200)
                .ttl(60)
                .stored()
                .collapsed()
                .key("abc")
                .detail("local")
                .render(),
            "Portcullis; fwd=vary-miss; fwd-status=200; ttl=60; stored; collapsed; key=\"abc\"; detail=local"
        );
    }

    // RFC 9211 §2.8 with RFC 8941 §3.3.3-3.3.4: a detail that is not a token is a quoted string.
    #[test]
    fn detail_that_is_not_a_token_is_quoted_and_escaped() {
        assert_eq!(
            CacheStatus::forward(Fwd::Bypass)
                .detail("no store")
                .render(),
            "Portcullis; fwd=bypass; detail=\"no store\""
        );
        assert_eq!(
            CacheStatus::forward(Fwd::Bypass).detail("a\"b\\c").render(),
            "Portcullis; fwd=bypass; detail=\"a\\\"b\\\\c\""
        );
        assert_eq!(
            CacheStatus::forward(Fwd::Bypass).detail("1st").render(),
            "Portcullis; fwd=bypass; detail=\"1st\""
        );
        assert_eq!(
            CacheStatus::hit().detail("é\n").render(),
            "Portcullis; hit; detail=\"??\""
        );
        assert_eq!(
            CacheStatus::hit().detail("").render(),
            "Portcullis; hit; detail=\"\""
        );
    }

    // RFC 9211 §2.7 with RFC 8941 §3.3.3: the key is always a string, escaped.
    #[test]
    fn key_is_a_quoted_string() {
        assert_eq!(
            CacheStatus::hit().key("GET\"/x\u{7f}").render(),
            "Portcullis; hit; key=\"GET\\\"/x?\""
        );
    }

    // RFC 8941 §3.3.1: integers stay within ±999,999,999,999,999.
    #[test]
    fn ttl_is_clamped_to_sf_integer_range() {
        assert_eq!(
            CacheStatus::hit().ttl(i64::MIN).render(),
            "Portcullis; hit; ttl=-999999999999999"
        );
    }

    // RFC 9211 §2: caches append their member; the upstream's members come first.
    #[test]
    fn appends_after_upstream_members() {
        let ours = CacheStatus::hit().ttl(3);
        let upstream = HeaderValue::from_static("OriginCache; fwd=uri-miss; stored");
        assert_eq!(
            ours.append_to(Some(&upstream)),
            "OriginCache; fwd=uri-miss; stored, Portcullis; hit; ttl=3"
        );
        assert_eq!(ours.append_to(None), "Portcullis; hit; ttl=3");
        let blank = HeaderValue::from_static("  ");
        assert_eq!(ours.append_to(Some(&blank)), "Portcullis; hit; ttl=3");
        assert_eq!(ours.to_header_value(), "Portcullis; hit; ttl=3");
    }
}

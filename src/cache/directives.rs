//! `Cache-Control` directives of requests and responses (RFC 9111 §5.2), parsed once per message
//! into plain typed values so the policy never looks at header bytes again.
//!
//! The rules, where the RFC leaves a choice:
//! - directive names are case-insensitive; arguments may be tokens or quoted strings (§5.2:
//!   "recipients ought to accept both forms"), with `\` escapes inside quotes;
//! - every `Cache-Control` field line counts, and each is a comma-separated list; commas inside
//!   a quoted string belong to the argument;
//! - unknown directives (extensions) are ignored;
//! - a delta-seconds argument that is not all digits is *invalid*; in a response that means
//!   "no usable freshness", which the policy reads as stale (§4.2.1 encourages exactly that);
//!   a value too large for the cache is taken as 2^31 (§1.2.2);
//! - a directive repeated with different arguments in a response is invalid too (§4.2.1: "either
//!   the first occurrence should be used or the response should be considered stale"; stale is
//!   the choice that can never serve something too old);
//! - `private` and `no-cache` with a field list name the fields that must not be stored or reused;
//!   with an argument that lists no valid field name (or an unterminated quote) they count as
//!   unqualified, the stricter reading;
//! - in a request, a malformed numeric argument is ignored: the client's preference cannot be
//!   known, and the response's own rules still apply.
//!
//! Parsing works on raw bytes and never panics, whatever the header holds.

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, CACHE_CONTROL};

/// The largest delta-seconds a cache must represent (RFC 9111 §1.2.2): bigger values, and
/// calculations that overflow, are taken as this.
pub const DELTA_SECONDS_MAX: u32 = 1 << 31;

/// A delta-seconds argument of a response directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    /// A valid value, clamped to [`DELTA_SECONDS_MAX`].
    Seconds(u32),
    /// Missing, not all digits, or repeated with a different value: no usable freshness.
    Invalid,
}

impl Delta {
    /// The value in seconds, with an invalid one read as 0 (stale).
    pub fn seconds_or_zero(self) -> u32 {
        match self {
            Delta::Seconds(s) => s,
            Delta::Invalid => 0,
        }
    }
}

/// Which fields a `private` or `no-cache` response directive covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FieldScope {
    /// The directive is not present.
    #[default]
    Absent,
    /// Unqualified: the whole response.
    Whole,
    /// Qualified: only these fields (lowercase, deduplicated).
    Fields(Vec<HeaderName>),
}

impl FieldScope {
    /// Whether the directive applies to the whole response.
    pub fn is_whole(&self) -> bool {
        matches!(self, FieldScope::Whole)
    }

    /// The fields named by a qualified directive (empty otherwise).
    pub fn fields(&self) -> &[HeaderName] {
        match self {
            FieldScope::Fields(fields) => fields,
            FieldScope::Absent | FieldScope::Whole => &[],
        }
    }

    /// Adds one occurrence: unqualified wins over any field list, field lists are united.
    fn merge(&mut self, arg: &Arg<'_>) {
        let named = match arg {
            Arg::Value(value) => field_names(value),
            Arg::None | Arg::Malformed => Vec::new(),
        };
        if named.is_empty() {
            *self = FieldScope::Whole;
            return;
        }
        match self {
            FieldScope::Whole => {}
            FieldScope::Absent => *self = FieldScope::Fields(named),
            FieldScope::Fields(fields) => {
                for name in named {
                    if !fields.contains(&name) {
                        fields.push(name);
                    }
                }
            }
        }
    }
}

/// The `Cache-Control` directives of a response that a shared cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    /// `max-age` (§5.2.2.1).
    pub max_age: Option<Delta>,
    /// `s-maxage` (§5.2.2.10): overrides `max-age` in a shared cache.
    pub s_maxage: Option<Delta>,
    /// `no-store` (§5.2.2.5).
    pub no_store: bool,
    /// `no-cache` (§5.2.2.4): store, but revalidate before every reuse (or only for its fields).
    pub no_cache: FieldScope,
    /// `private` (§5.2.2.7): a shared cache must not store it (or only not its fields).
    pub private: FieldScope,
    /// `public` (§5.2.2.9).
    pub public: bool,
    /// `must-revalidate` (§5.2.2.2): never serve stale.
    pub must_revalidate: bool,
    /// `proxy-revalidate` (§5.2.2.8): `must-revalidate` for shared caches.
    pub proxy_revalidate: bool,
    /// `must-understand` (§5.2.2.3): store only if the status code's caching rules are known.
    pub must_understand: bool,
    /// `no-transform` (§5.2.2.6), kept so the stored copy is never altered.
    pub no_transform: bool,
    /// `stale-while-revalidate` (RFC 5861 §3).
    pub stale_while_revalidate: Option<Delta>,
    /// `stale-if-error` (RFC 5861 §4).
    pub stale_if_error: Option<Delta>,
}

impl ResponseDirectives {
    /// The directives of every `Cache-Control` line of a response.
    pub fn from_headers(headers: &HeaderMap) -> ResponseDirectives {
        ResponseDirectives::from_values(
            headers
                .get_all(CACHE_CONTROL)
                .iter()
                .map(|value| value.as_bytes()),
        )
    }

    /// The directives of raw field values, one per field line.
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> ResponseDirectives {
        let mut out = ResponseDirectives::default();
        for value in values {
            for (name, arg) in Elements::new(value) {
                out.apply(name, &arg);
            }
        }
        out
    }

    fn apply(&mut self, name: &[u8], arg: &Arg<'_>) {
        match lowercase_name(name).as_deref() {
            Some(b"max-age") => merge_delta(&mut self.max_age, arg),
            Some(b"s-maxage") => merge_delta(&mut self.s_maxage, arg),
            Some(b"no-store") => self.no_store = true,
            Some(b"no-cache") => self.no_cache.merge(arg),
            Some(b"private") => self.private.merge(arg),
            Some(b"public") => self.public = true,
            Some(b"must-revalidate") => self.must_revalidate = true,
            Some(b"proxy-revalidate") => self.proxy_revalidate = true,
            Some(b"must-understand") => self.must_understand = true,
            Some(b"no-transform") => self.no_transform = true,
            Some(b"stale-while-revalidate") => merge_delta(&mut self.stale_while_revalidate, arg),
            Some(b"stale-if-error") => merge_delta(&mut self.stale_if_error, arg),
            _ => {}
        }
    }
}

/// How much staleness a request's `max-stale` accepts (§5.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    /// `max-stale` without an argument: any staleness.
    Any,
    /// At most this many seconds past its freshness lifetime.
    Seconds(u32),
}

/// The `Cache-Control` directives of a request (§5.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `max-age` (§5.2.1.1): the client wants a response no older than this.
    pub max_age: Option<u32>,
    /// `max-stale` (§5.2.1.2).
    pub max_stale: Option<MaxStale>,
    /// `min-fresh` (§5.2.1.3): still fresh for at least this long.
    pub min_fresh: Option<u32>,
    /// `no-cache` (§5.2.1.4): revalidate before using a stored response.
    pub no_cache: bool,
    /// `no-store` (§5.2.1.5): do not store the response to this request.
    pub no_store: bool,
    /// `no-transform` (§5.2.1.6).
    pub no_transform: bool,
    /// `only-if-cached` (§5.2.1.7): a stored response or 504, never the origin.
    pub only_if_cached: bool,
    /// `stale-if-error` (RFC 5861 §4): the client accepts this much staleness on an error.
    pub stale_if_error: Option<u32>,
}

impl RequestDirectives {
    /// The directives of every `Cache-Control` line of a request.
    pub fn from_headers(headers: &HeaderMap) -> RequestDirectives {
        RequestDirectives::from_values(
            headers
                .get_all(CACHE_CONTROL)
                .iter()
                .map(|value| value.as_bytes()),
        )
    }

    /// The directives of raw field values, one per field line.
    pub fn from_values<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> RequestDirectives {
        let mut max_age = None;
        let mut min_fresh = None;
        let mut max_stale = None;
        let mut stale_if_error = None;
        let mut out = RequestDirectives::default();
        for value in values {
            for (name, arg) in Elements::new(value) {
                match lowercase_name(name).as_deref() {
                    Some(b"max-age") => merge_delta(&mut max_age, &arg),
                    Some(b"min-fresh") => merge_delta(&mut min_fresh, &arg),
                    Some(b"max-stale") => merge_max_stale(&mut max_stale, &arg),
                    Some(b"stale-if-error") => merge_delta(&mut stale_if_error, &arg),
                    Some(b"no-cache") => out.no_cache = true,
                    Some(b"no-store") => out.no_store = true,
                    Some(b"no-transform") => out.no_transform = true,
                    Some(b"only-if-cached") => out.only_if_cached = true,
                    _ => {}
                }
            }
        }
        out.max_age = valid_seconds(max_age);
        out.min_fresh = valid_seconds(min_fresh);
        out.stale_if_error = valid_seconds(stale_if_error);
        out.max_stale = match max_stale {
            Some(StaleArg::Any) => Some(MaxStale::Any),
            Some(StaleArg::Seconds(Delta::Seconds(s))) => Some(MaxStale::Seconds(s)),
            Some(StaleArg::Seconds(Delta::Invalid)) | None => None,
        };
        out
    }
}

/// A request's numeric argument, with an invalid one ignored.
fn valid_seconds(delta: Option<Delta>) -> Option<u32> {
    match delta {
        Some(Delta::Seconds(s)) => Some(s),
        Some(Delta::Invalid) | None => None,
    }
}

/// `max-stale` seen so far: `Any` without an argument, else a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StaleArg {
    Any,
    Seconds(Delta),
}

fn merge_max_stale(slot: &mut Option<StaleArg>, arg: &Arg<'_>) {
    let seen = match arg {
        Arg::None => StaleArg::Any,
        Arg::Value(_) | Arg::Malformed => StaleArg::Seconds(parse_delta(arg)),
    };
    *slot = match *slot {
        None => Some(seen),
        Some(old) if old == seen => Some(old),
        // Conflicting occurrences: the client's tolerance is unknown, so accept none.
        Some(_) => Some(StaleArg::Seconds(Delta::Invalid)),
    };
}

/// Records one occurrence of a delta directive; a different repeat makes it invalid.
fn merge_delta(slot: &mut Option<Delta>, arg: &Arg<'_>) {
    let seen = parse_delta(arg);
    *slot = match *slot {
        None => Some(seen),
        Some(old) if old == seen => Some(old),
        Some(_) => Some(Delta::Invalid),
    };
}

/// delta-seconds = 1*DIGIT (§1.2.2), clamped to [`DELTA_SECONDS_MAX`].
fn parse_delta(arg: &Arg<'_>) -> Delta {
    let digits: &[u8] = match arg {
        Arg::Value(value) => value,
        Arg::None | Arg::Malformed => return Delta::Invalid,
    };
    parse_delta_seconds(digits).map_or(Delta::Invalid, Delta::Seconds)
}

/// Parses delta-seconds (1*DIGIT), clamping an oversized value to [`DELTA_SECONDS_MAX`];
/// `None` for anything that is not all ASCII digits. Shared with `Age` (§5.1).
pub fn parse_delta_seconds(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().fold(0u64, |acc, d| {
        (acc * 10 + u64::from(d - b'0')).min(u64::from(DELTA_SECONDS_MAX))
    });
    // The fold never exceeds DELTA_SECONDS_MAX, which fits u32.
    Some(u32::try_from(value).unwrap_or(DELTA_SECONDS_MAX))
}

/// The field names of a qualified `private="…"` / `no-cache="…"`, lowercase and deduplicated;
/// members that are not valid field names are skipped.
fn field_names(list: &[u8]) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for member in list.split(|&b| b == b',') {
        let member = trim(member);
        if member.is_empty() {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(member) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// A directive name lowercased, or `None` if it is too long to be one we know (so a huge
/// unknown name costs no allocation).
fn lowercase_name(name: &[u8]) -> Option<Cow<'_, [u8]>> {
    const LONGEST_KNOWN: usize = "stale-while-revalidate".len();
    if name.is_empty() || name.len() > LONGEST_KNOWN {
        return None;
    }
    if name.iter().any(u8::is_ascii_uppercase) {
        Some(Cow::Owned(name.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(name))
    }
}

/// The argument of one directive.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg<'a> {
    /// No `=`.
    None,
    /// A token, or a quoted string with its escapes removed.
    Value(Cow<'a, [u8]>),
    /// A quoted string without its closing quote.
    Malformed,
}

/// The elements of one `Cache-Control` field value: `(name, argument)`, empty elements skipped.
struct Elements<'a> {
    rest: &'a [u8],
}

impl<'a> Elements<'a> {
    fn new(value: &'a [u8]) -> Elements<'a> {
        Elements { rest: value }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = (&'a [u8], Arg<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = trim_start(self.rest);
            match s.first() {
                None => {
                    self.rest = s;
                    return None;
                }
                Some(b',') => {
                    self.rest = &s[1..];
                    continue;
                }
                Some(_) => {}
            }
            let end = s
                .iter()
                .position(|&b| b == b'=' || b == b',')
                .unwrap_or(s.len());
            let name = trim_end(&s[..end]);
            let after = &s[end..];
            if after.first() != Some(&b'=') {
                self.rest = after;
                return Some((name, Arg::None));
            }
            let value = trim_start(&after[1..]);
            if let Some(quoted) = value.strip_prefix(b"\"") {
                let (arg, rest) = quoted_string(quoted);
                // Anything between the closing quote and the next comma is garbage; skip it.
                self.rest = &rest[rest.iter().position(|&b| b == b',').unwrap_or(rest.len())..];
                return Some((name, arg));
            }
            let vend = value.iter().position(|&b| b == b',').unwrap_or(value.len());
            self.rest = &value[vend..];
            return Some((name, Arg::Value(Cow::Borrowed(trim_end(&value[..vend])))));
        }
    }
}

/// The content of a quoted string that started just before `s` and what follows its closing
/// quote; escapes (`\x`) are removed, copying only when there is one.
fn quoted_string(s: &[u8]) -> (Arg<'_>, &[u8]) {
    let mut i = 0;
    let mut owned: Option<Vec<u8>> = None;
    while i < s.len() {
        match s[i] {
            b'"' => {
                let arg = match owned {
                    Some(bytes) => Cow::Owned(bytes),
                    None => Cow::Borrowed(&s[..i]),
                };
                return (Arg::Value(arg), &s[i + 1..]);
            }
            b'\\' if i + 1 < s.len() => {
                let bytes = owned.get_or_insert_with(|| s[..i].to_vec());
                bytes.push(s[i + 1]);
                i += 2;
            }
            b'\\' => return (Arg::Malformed, &[]),
            byte => {
                if let Some(bytes) = owned.as_mut() {
                    bytes.push(byte);
                }
                i += 1;
            }
        }
    }
    (Arg::Malformed, &[])
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    &s[start..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(0, |i| i + 1);
    &s[..end]
}

/// `s` without leading and trailing optional whitespace (RFC 9110 §5.6.3: SP and HTAB), the
/// one trim every header parser of the cache uses.
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    trim_end(trim_start(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn response(lines: &[&str]) -> ResponseDirectives {
        ResponseDirectives::from_values(lines.iter().map(|l| l.as_bytes()))
    }

    fn request(lines: &[&str]) -> RequestDirectives {
        RequestDirectives::from_values(lines.iter().map(|l| l.as_bytes()))
    }

    fn names(list: &[&str]) -> Vec<HeaderName> {
        list.iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
            .collect()
    }

    // RFC 9111 §5.2: directive names are compared case-insensitively.
    #[test]
    fn directive_names_are_case_insensitive() {
        let d = response(&["Max-Age=60, NO-STORE, Public, S-MaxAge=30"]);
        assert_eq!(d.max_age, Some(Delta::Seconds(60)));
        assert_eq!(d.s_maxage, Some(Delta::Seconds(30)));
        assert!(d.no_store);
        assert!(d.public);
    }

    // RFC 9111 §5.2: arguments may be tokens or quoted strings; recipients accept both.
    #[test]
    fn quoted_delta_seconds_are_accepted() {
        let d = response(&["max-age=\"120\""]);
        assert_eq!(d.max_age, Some(Delta::Seconds(120)));
    }

    // RFC 9111 §5.2 (list syntax, RFC 9110 §5.3): every field line counts and combines.
    #[test]
    fn repeated_header_lines_and_lists_combine() {
        let mut headers = HeaderMap::new();
        headers.append(CACHE_CONTROL, HeaderValue::from_static("public"));
        headers.append(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=10 , must-revalidate"),
        );
        let d = ResponseDirectives::from_headers(&headers);
        assert!(d.public);
        assert!(d.must_revalidate);
        assert_eq!(d.max_age, Some(Delta::Seconds(10)));
    }

    // RFC 9111 §5.2: empty list elements and surrounding whitespace are not directives.
    #[test]
    fn empty_elements_and_whitespace_are_skipped() {
        let d = response(&[" ,, \tno-cache ,,max-age=5,"]);
        assert_eq!(d.no_cache, FieldScope::Whole);
        assert_eq!(d.max_age, Some(Delta::Seconds(5)));
    }

    // RFC 9111 §4.2.1: invalid freshness information (non-integer max-age) → treat as stale.
    #[test]
    fn non_integer_max_age_is_invalid() {
        for bad in [
            "max-age=abc",
            "max-age=-1",
            "max-age=1.5",
            "max-age=",
            "max-age",
            "max-age=+5",
            "max-age=\"\"",
            "max-age=\"10",
        ] {
            assert_eq!(response(&[bad]).max_age, Some(Delta::Invalid), "{bad}");
        }
    }

    // RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
    #[test]
    fn overflowing_delta_seconds_clamp_to_two_pow_31() {
        let d = response(&["max-age=99999999999999999999999999, s-maxage=2147483649"]);
        assert_eq!(d.max_age, Some(Delta::Seconds(DELTA_SECONDS_MAX)));
        assert_eq!(d.s_maxage, Some(Delta::Seconds(DELTA_SECONDS_MAX)));
        assert_eq!(
            response(&["max-age=2147483647"]).max_age,
            Some(Delta::Seconds(2_147_483_647))
        );
    }

    // RFC 9111 §4.2.1: a directive repeated with different values → stale; the same value is fine.
    #[test]
    fn conflicting_repeats_are_invalid_and_identical_repeats_are_not() {
        assert_eq!(
            response(&["max-age=10", "max-age=20"]).max_age,
            Some(Delta::Invalid)
        );
        assert_eq!(
            response(&["max-age=10, max-age=10"]).max_age,
            Some(Delta::Seconds(10))
        );
    }

    // RFC 9111 §5.2.2.4: no-cache="field" qualifies only the named fields; quoted lists hold commas.
    #[test]
    fn qualified_no_cache_names_fields() {
        let d = response(&["no-cache=\"Set-Cookie, X-Debug\", max-age=60"]);
        assert_eq!(
            d.no_cache,
            FieldScope::Fields(names(&["set-cookie", "x-debug"]))
        );
        assert!(!d.no_cache.is_whole());
        assert_eq!(d.max_age, Some(Delta::Seconds(60)));
    }

    // RFC 9111 §5.2.2.7: private="field" qualifies only the named fields; repeats unite.
    #[test]
    fn qualified_private_names_fields_and_repeats_unite() {
        let d = response(&[
            "private=\"x-user\"",
            "private=X-Account, private=\"x-user\"",
        ]);
        assert_eq!(
            d.private,
            FieldScope::Fields(names(&["x-user", "x-account"]))
        );
    }

    // RFC 9111 §5.2.2.7: unqualified private wins over a field list (the stricter reading).
    #[test]
    fn unqualified_private_wins_over_field_list() {
        assert!(response(&["private=\"x-user\", private"])
            .private
            .is_whole());
        assert!(response(&["private, private=\"x-user\""])
            .private
            .is_whole());
    }

    // RFC 9111 §5.2.2.7: a field list with no valid name, or a broken quote, counts as unqualified.
    #[test]
    fn unusable_field_list_counts_as_unqualified() {
        assert!(response(&["private=\"\""]).private.is_whole());
        assert!(response(&["private=\" , \""]).private.is_whole());
        assert!(response(&["no-cache=\"x-a"]).no_cache.is_whole());
        assert!(response(&["private=\"bad name\""]).private.is_whole());
    }

    // RFC 9110 §5.6.4: a backslash escapes the next byte inside a quoted string.
    #[test]
    fn escapes_in_quoted_strings_are_removed() {
        let d = response(&[r#"private="x-\a\"b", max-age=7"#]);
        // `x-a"b` is not a valid field name, so the list is unusable → unqualified.
        assert!(d.private.is_whole());
        assert_eq!(d.max_age, Some(Delta::Seconds(7)));
        let d = response(&[r#"no-cache="x-\ab""#]);
        assert_eq!(d.no_cache, FieldScope::Fields(names(&["x-ab"])));
    }

    // RFC 9111 §5.2.3: unknown extension directives are ignored, with or without arguments.
    #[test]
    fn unknown_extensions_are_ignored() {
        let d = response(&["community=\"UCI, x\", immutable, foo=bar, max-age=3"]);
        assert_eq!(
            d,
            ResponseDirectives {
                max_age: Some(Delta::Seconds(3)),
                ..ResponseDirectives::default()
            }
        );
    }

    // RFC 9111 §5.2.2: garbage after a closing quote is skipped up to the next comma.
    #[test]
    fn garbage_after_a_quoted_argument_is_skipped() {
        let d = response(&["max-age=\"5\"junk, public"]);
        assert_eq!(d.max_age, Some(Delta::Seconds(5)));
        assert!(d.public);
    }

    // RFC 5861 §3, §4: stale-while-revalidate and stale-if-error take delta-seconds.
    #[test]
    fn stale_extensions_are_parsed() {
        let d = response(&["max-age=1, stale-while-revalidate=59, stale-if-error=oops"]);
        assert_eq!(d.stale_while_revalidate, Some(Delta::Seconds(59)));
        assert_eq!(d.stale_if_error, Some(Delta::Invalid));
    }

    // RFC 9111 §5.2.2.2, §5.2.2.3, §5.2.2.6, §5.2.2.8: the boolean response directives.
    #[test]
    fn boolean_response_directives() {
        let d = response(&["must-revalidate, proxy-revalidate, must-understand, no-transform"]);
        assert!(d.must_revalidate && d.proxy_revalidate && d.must_understand && d.no_transform);
    }

    // RFC 9111 §5.2.1: the request directives.
    #[test]
    fn request_directives() {
        let d = request(&[
            "No-Cache, no-store, max-age=0, min-fresh=20, only-if-cached, no-transform",
            "stale-if-error=30",
        ]);
        assert!(d.no_cache && d.no_store && d.only_if_cached && d.no_transform);
        assert_eq!(d.max_age, Some(0));
        assert_eq!(d.min_fresh, Some(20));
        assert_eq!(d.stale_if_error, Some(30));
        assert_eq!(d.max_stale, None);
    }

    // RFC 9111 §5.2.1.2: max-stale without a value accepts any staleness.
    #[test]
    fn max_stale_with_and_without_argument() {
        assert_eq!(request(&["max-stale"]).max_stale, Some(MaxStale::Any));
        assert_eq!(
            request(&["max-stale=30"]).max_stale,
            Some(MaxStale::Seconds(30))
        );
        assert_eq!(
            request(&["max-stale=\"30\""]).max_stale,
            Some(MaxStale::Seconds(30))
        );
    }

    // RFC 9111 §5.2.1: a malformed or conflicting request argument is ignored (unknown preference).
    #[test]
    fn malformed_request_arguments_are_ignored() {
        let d = request(&["max-age=soon, min-fresh=-3, max-stale=x"]);
        assert_eq!(d.max_age, None);
        assert_eq!(d.min_fresh, None);
        assert_eq!(d.max_stale, None);
        assert_eq!(request(&["max-stale, max-stale=5"]).max_stale, None);
        assert_eq!(request(&["max-age=1, max-age=2"]).max_age, None);
    }

    // RFC 9111 §1.2.2: request delta-seconds clamp like response ones.
    #[test]
    fn request_delta_seconds_clamp() {
        let d = request(&["max-age=184467440737095516160"]);
        assert_eq!(d.max_age, Some(DELTA_SECONDS_MAX));
    }

    // RFC 9111 §5.1 shares delta-seconds with Age.
    #[test]
    fn parse_delta_seconds_accepts_only_digits() {
        assert_eq!(parse_delta_seconds(b"0"), Some(0));
        assert_eq!(parse_delta_seconds(b"007"), Some(7));
        assert_eq!(parse_delta_seconds(b""), None);
        assert_eq!(parse_delta_seconds(b" 7"), None);
        assert_eq!(parse_delta_seconds(b"1e3"), None);
    }

    // RFC 9111 §5.2: whatever the bytes, parsing returns (never panics, never loops).
    #[test]
    fn any_bytes_parse_without_panicking() {
        const ALPHABET: &[u8] = b"=,\"\\ \t-aAmxsgepinorvtc0123456789\x00\xff\x80;";
        let mut rng = fastrand::Rng::with_seed(0x9111);
        for round in 0..5_000 {
            let len = rng.usize(0..48);
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    if round % 3 == 0 {
                        rng.u8(..)
                    } else {
                        ALPHABET[rng.usize(0..ALPHABET.len())]
                    }
                })
                .collect();
            let r = ResponseDirectives::from_values([bytes.as_slice()]);
            let q = RequestDirectives::from_values([bytes.as_slice(), bytes.as_slice()]);
            // Touch the results so the work is not optimised away.
            assert!(r.max_age.map_or(0, Delta::seconds_or_zero) <= DELTA_SECONDS_MAX);
            assert!(q.max_age.unwrap_or(0) <= DELTA_SECONDS_MAX);
        }
    }
}

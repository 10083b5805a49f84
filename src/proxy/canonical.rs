//! The one canonical form of a request path, decided before routing and sent upstream as is.
//!
//! A gateway that routes on one spelling of a path while the upstream resolves another can be
//! walked around: `/x/../secure` matches a public `/` route here and is `/secure` to nginx, Go
//! or Express. So the path is made canonical once (RFC 3986 §6.2.2), the router matches that,
//! and the downstream request is rewritten to it so every later phase and the upstream see the
//! same bytes. Spellings that no canonical form can make unambiguous are refused.
//!
//! The rules, in order:
//! - the path starts with `/` (absolute-form targets are split first, their path treated alike);
//! - raw control bytes, raw non-ASCII bytes, `\` and `;` are refused;
//! - a `%` is followed by two hex digits; an escape of an unreserved character
//!   (`A-Z a-z 0-9 - . _ ~`) is decoded, any other keeps its escape with uppercase hex;
//!   escapes of control bytes and `\` are refused, and escaped bytes of 0x80 and above must be
//!   well-formed UTF-8 (no overlong forms such as `%C0%AE`, which old decoders read as `.`);
//! - raw characters a path may not hold (`"`, `<`, `>`, `[`, `]`, `^`, `` ` ``, `{`, `|`, `}`,
//!   space) are percent-encoded;
//! - dot segments are removed (RFC 3986 §5.2.4) after decoding, so `%2e%2E` counts; a `..` that
//!   would climb above the root is refused;
//! - repeated slashes are merged unless `[server] merge_slashes = false`;
//! - `%2F` stays opaque inside its segment; routes refuse it unless they set
//!   `allow_encoded_slashes` (see [`check_encoded_slashes`]).
//!
//! A path that is already canonical, the common case, is checked in one pass and borrowed.

use std::borrow::Cow;

use pingora::http::authority::{raw_target_authority, RawTargetAuthority};
use pingora::http::RequestHeader;

use super::router::{RouteMatch, Router};
use crate::config::{Config, Issue, RouteConfig};

/// How paths are made canonical; from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    /// Merge `//` into `/` (`[server] merge_slashes`, on by default).
    pub merge_slashes: bool,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions {
            merge_slashes: true,
        }
    }
}

/// Why a path was refused; every variant is a 400 `invalid_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum PathError {
    /// The path does not start with `/` (including `*` and relative targets).
    NotAbsolute,
    /// A raw or percent-encoded control byte (0x00-0x1F, 0x7F).
    ControlByte,
    /// A raw byte of 0x80 or above.
    NonAscii,
    /// A raw or percent-encoded backslash, which some servers read as `/`.
    Backslash,
    /// A raw `;`, which servlet containers strip with what follows it in the segment.
    Semicolon,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// Percent-encoded bytes of 0x80 and above that are not well-formed UTF-8.
    BadUtf8,
    /// A `..` with no segment left to remove.
    AboveRoot,
    /// `%2F` on a route that does not allow encoded slashes.
    EncodedSlash,
    /// With `%2F` read as `/`, the path would go to another route (or nowhere).
    AmbiguousEncodedSlash,
    /// The canonical target could not be stored back into the request.
    Unrepresentable,
}

impl PathError {
    /// The `message` of the error body: fixed ASCII, no request data, no quotes.
    pub(crate) fn message(&self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with a slash",
            PathError::ControlByte => "the request path contains a control character",
            PathError::NonAscii => {
                "the request path contains a raw non-ASCII byte; percent-encode it"
            }
            PathError::Backslash => "the request path contains a backslash",
            PathError::Semicolon => {
                "the request path contains a semicolon (path parameters are ambiguous)"
            }
            PathError::BadEscape => {
                "the request path contains a percent sign not followed by two hex digits"
            }
            PathError::BadUtf8 => "percent-encoded bytes in the request path are not UTF-8",
            PathError::AboveRoot => "the request path climbs above the root",
            PathError::EncodedSlash => {
                "the request path contains an encoded slash (%2F), which this route refuses"
            }
            PathError::AmbiguousEncodedSlash => {
                "the request path routes differently when its encoded slashes are decoded"
            }
            PathError::Unrepresentable => "the canonical request path cannot be represented",
        }
    }
}

/// A path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    /// The canonical path; borrowed when the input already was canonical.
    pub path: Cow<'a, str>,
    /// Whether it holds `%2F`, which only routes with `allow_encoded_slashes` accept.
    pub encoded_slash: bool,
}

/// What a byte of a path is, raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Allowed as is: unreserved, sub-delims but `;`, `:`, `@`.
    Keep,
    Slash,
    Percent,
    /// Printable ASCII a path may not hold raw: percent-encoded in the canonical form.
    Encode,
    Control,
    NonAscii,
    Backslash,
    Semicolon,
}

const fn class_of(b: u8) -> Class {
    match b {
        b'/' => Class::Slash,
        b'%' => Class::Percent,
        b'\\' => Class::Backslash,
        b';' => Class::Semicolon,
        0x00..=0x1F | 0x7F => Class::Control,
        0x80..=0xFF => Class::NonAscii,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => Class::Keep,
        b'-' | b'.' | b'_' | b'~' => Class::Keep,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@' => {
            Class::Keep
        }
        _ => Class::Encode,
    }
}

static CLASS: [Class; 256] = {
    let mut table = [Class::Keep; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = class_of(i as u8);
        i += 1;
    }
    table
};

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// The byte of the escape at `path[at]` (`%` then two hex digits).
fn escape_at(path: &[u8], at: usize) -> Result<u8, PathError> {
    let hi = path.get(at + 1).copied().and_then(hex_digit);
    let lo = path.get(at + 2).copied().and_then(hex_digit);
    match (hi, lo) {
        (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
        _ => Err(PathError::BadEscape),
    }
}

/// Checks that percent-encoded bytes of 0x80 and above form well-formed UTF-8 (RFC 3629):
/// overlong forms, surrogates and stray continuation bytes are refused.
#[derive(Debug, Default)]
struct Utf8Check {
    /// Continuation bytes still expected.
    pending: u8,
    /// Allowed range of the next continuation byte (narrower right after some lead bytes).
    low: u8,
    high: u8,
}

impl Utf8Check {
    fn feed(&mut self, b: u8) -> Result<(), PathError> {
        if self.pending > 0 {
            if !(self.low..=self.high).contains(&b) {
                return Err(PathError::BadUtf8);
            }
            self.pending -= 1;
            (self.low, self.high) = (0x80, 0xBF);
            return Ok(());
        }
        (self.pending, self.low, self.high) = match b {
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err(PathError::BadUtf8),
        };
        Ok(())
    }

    /// Something other than an escaped high byte came: no sequence may be left open.
    fn end(&self) -> Result<(), PathError> {
        if self.pending > 0 {
            Err(PathError::BadUtf8)
        } else {
            Ok(())
        }
    }
}

/// What one validating pass found.
struct Scan {
    /// Something must change to reach the canonical form.
    dirty: bool,
    encoded_slash: bool,
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// Validates the whole path and finds whether it is already canonical, without allocating.
fn scan(path: &[u8], opts: PathOptions) -> Result<Scan, PathError> {
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut found = Scan {
        dirty: false,
        encoded_slash: false,
    };
    let mut utf8 = Utf8Check::default();
    let mut segment_start = 1;
    let mut i = 1;
    while i < path.len() {
        let b = path[i];
        let class = CLASS[b as usize];
        if class != Class::Percent {
            utf8.end()?;
        }
        match class {
            Class::Keep => {}
            Class::Slash => {
                let segment = &path[segment_start..i];
                if is_dot_segment(segment) || (segment.is_empty() && opts.merge_slashes) {
                    found.dirty = true;
                }
                segment_start = i + 1;
            }
            Class::Percent => {
                let v = escape_at(path, i)?;
                if v >= 0x80 {
                    utf8.feed(v)?;
                } else {
                    utf8.end()?;
                    match CLASS[v as usize] {
                        Class::Control => return Err(PathError::ControlByte),
                        Class::Backslash => return Err(PathError::Backslash),
                        Class::Slash => found.encoded_slash = true,
                        _ if is_unreserved(v) => found.dirty = true,
                        _ => {}
                    }
                }
                if path[i + 1].is_ascii_lowercase() || path[i + 2].is_ascii_lowercase() {
                    found.dirty = true;
                }
                i += 3;
                continue;
            }
            Class::Encode => found.dirty = true,
            Class::Control => return Err(PathError::ControlByte),
            Class::NonAscii => return Err(PathError::NonAscii),
            Class::Backslash => return Err(PathError::Backslash),
            Class::Semicolon => return Err(PathError::Semicolon),
        }
        i += 1;
    }
    utf8.end()?;
    if is_dot_segment(&path[segment_start.min(path.len())..]) {
        found.dirty = true;
    }
    Ok(found)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xF)]));
}

/// Decodes unreserved escapes, uppercases the others and encodes raw characters a path may not
/// hold. Runs only on a path `scan` accepted.
fn normalize_escapes(path: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len() + 8);
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        match CLASS[b as usize] {
            Class::Percent => {
                let v = escape_at(path, i)?;
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    push_escape(&mut out, v);
                }
                i += 3;
                continue;
            }
            Class::Encode => push_escape(&mut out, b),
            Class::Keep | Class::Slash => out.push(char::from(b)),
            // `scan` refused these already; refuse again rather than assume.
            Class::Control => return Err(PathError::ControlByte),
            Class::NonAscii => return Err(PathError::NonAscii),
            Class::Backslash => return Err(PathError::Backslash),
            Class::Semicolon => return Err(PathError::Semicolon),
        }
        i += 1;
    }
    Ok(out)
}

/// Removes dot segments (RFC 3986 §5.2.4) and, when asked, empty ones, from a path that starts
/// with `/` and whose escapes are already normalized.
fn remove_dot_segments(path: &str, opts: PathOptions) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        trailing_slash = false;
        match segment {
            "." => trailing_slash = true,
            ".." => {
                let Some(cut) = out.rfind('/') else {
                    return Err(PathError::AboveRoot);
                };
                out.truncate(cut);
                trailing_slash = true;
            }
            "" if opts.merge_slashes => trailing_slash = true,
            _ => {
                out.push('/');
                out.push_str(segment);
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The canonical form of `path` (the path of a request target, without its query).
///
/// # Errors
/// A [`PathError`] when the path is ambiguous in a way no canonical form can repair.
pub fn canonicalize(path: &[u8], opts: PathOptions) -> Result<CanonicalPath<'_>, PathError> {
    let found = scan(path, opts)?;
    if !found.dirty {
        // `scan` accepted only ASCII, so this cannot fail; refuse rather than panic if it did.
        let path = std::str::from_utf8(path).map_err(|_| PathError::NonAscii)?;
        return Ok(CanonicalPath {
            path: Cow::Borrowed(path),
            encoded_slash: found.encoded_slash,
        });
    }
    let normalized = normalize_escapes(path)?;
    let path = remove_dot_segments(&normalized, opts)?;
    // A removed segment may have held the only `%2F`.
    Ok(CanonicalPath {
        encoded_slash: found.encoded_slash && path.contains("%2F"),
        path: Cow::Owned(path),
    })
}

/// A request target split into what is kept verbatim and the path to make canonical.
struct Target<'a> {
    /// `scheme://authority` of an absolute-form target; empty for origin-form.
    head: &'a [u8],
    path: &'a [u8],
    /// What follows the `?`, kept byte for byte.
    query: Option<&'a [u8]>,
}

fn split_target(raw: &[u8]) -> Result<Target<'_>, PathError> {
    let (head, path_and_query) = if raw.first() == Some(&b'/') {
        (&raw[..0], raw)
    } else {
        match raw_target_authority(raw) {
            RawTargetAuthority::Absolute { path_and_query, .. } => {
                (&raw[..raw.len() - path_and_query.len()], path_and_query)
            }
            RawTargetAuthority::None | RawTargetAuthority::AmbiguousAuthority => {
                return Err(PathError::NotAbsolute)
            }
        }
    };
    let (path, query) = match path_and_query.iter().position(|&b| b == b'?') {
        Some(q) => (&path_and_query[..q], Some(&path_and_query[q + 1..])),
        None => (path_and_query, None),
    };
    // "http://host" and "http://host?q" have an empty path, which stands for "/".
    let path: &[u8] = if path.is_empty() && !head.is_empty() {
        b"/"
    } else {
        path
    };
    Ok(Target { head, path, query })
}

/// Makes the request's path canonical in place (query untouched, an absolute-form target kept
/// absolute; the proxy makes those origin-form first, see `host::settle_host`), so routing,
/// the later phases and the upstream request all see one path.
/// Returns whether the canonical path holds `%2F`, for [`check_encoded_slashes`].
///
/// # Errors
/// A [`PathError`] when the path is refused; the request is then left as it came.
pub(crate) fn canonicalize_request(
    req: &mut RequestHeader,
    opts: PathOptions,
) -> Result<bool, PathError> {
    let target = split_target(req.raw_path())?;
    let canonical = canonicalize(target.path, opts)?;
    let encoded_slash = canonical.encoded_slash;
    let Cow::Owned(path) = canonical.path else {
        return Ok(encoded_slash);
    };
    let query_len = target.query.map_or(0, |q| q.len() + 1);
    let mut rebuilt = Vec::with_capacity(target.head.len() + path.len() + query_len);
    rebuilt.extend_from_slice(target.head);
    rebuilt.extend_from_slice(path.as_bytes());
    if let Some(query) = target.query {
        rebuilt.push(b'?');
        rebuilt.extend_from_slice(query);
    }
    if req.uri.authority().is_some() {
        // HTTP/2: scheme and authority live in the URI and must survive the rewrite.
        let mut parts = http::uri::Parts::default();
        parts.scheme = req.uri.scheme().cloned();
        parts.authority = req.uri.authority().cloned();
        parts.path_and_query = Some(
            http::uri::PathAndQuery::try_from(rebuilt).map_err(|_| PathError::Unrepresentable)?,
        );
        let uri = http::Uri::from_parts(parts).map_err(|_| PathError::Unrepresentable)?;
        req.set_uri(uri);
    } else {
        req.set_raw_path(&rebuilt)
            .map_err(|_| PathError::Unrepresentable)?;
    }
    Ok(encoded_slash)
}

/// The route decision for a canonical path: `router.find`, plus the encoded-slash policy,
/// which can only be applied once the route is known.
///
/// A path with `%2F` is refused unless the matched route sets `allow_encoded_slashes`; even
/// then it is refused when reading each `%2F` as `/` (what a decoding upstream does) would
/// route it elsewhere, so `/%2Fsecure` cannot reach a protected `/secure` through a public
/// catch-all that allows encoded slashes.
///
/// # Errors
/// [`PathError::EncodedSlash`] or [`PathError::AmbiguousEncodedSlash`].
pub(crate) fn check_encoded_slashes(
    router: &Router,
    routes: &[RouteConfig],
    found: RouteMatch,
    request: (&str, &str, &str),
    opts: PathOptions,
) -> Result<RouteMatch, PathError> {
    let RouteMatch::Found { route, .. } = found else {
        return Ok(found);
    };
    if !routes.get(route).is_some_and(|r| r.allow_encoded_slashes) {
        return Err(PathError::EncodedSlash);
    }
    let (host, path, method) = request;
    let decoded = path.replace("%2F", "/");
    let decoded = canonicalize(decoded.as_bytes(), opts)?;
    match router.find(host, &decoded.path, method) {
        RouteMatch::Found { route: same, .. } if same == route => Ok(found),
        _ => Err(PathError::AmbiguousEncodedSlash),
    }
}

/// Config issues for route paths that are not canonical: requests are matched on their
/// canonical path, so a route spelled `/%7Euser`, `/api/./v1` or (with `merge_slashes`)
/// `/a//b` could never match, and a protected route would silently leave its paths to a
/// public catch-all. Each issue names `routes[i].path` and the spelling to write instead.
/// Paths that do not start with `/` are left to `config`'s own check.
pub(crate) fn route_path_issues(config: &Config) -> Vec<Issue> {
    let opts = PathOptions {
        merge_slashes: config.server.merge_slashes,
    };
    config
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.path.starts_with('/'))
        .filter_map(|(i, r)| {
            let reason = match canonicalize(r.path.as_bytes(), opts) {
                Ok(c) if c.path == r.path.as_str() => return None,
                Ok(c) => format!(
                    "{:?} is not in canonical form, so no request would ever match it; \
                     write {:?}",
                    r.path, c.path
                ),
                Err(e) => format!("{:?} can never match a request: {e}", r.path),
            };
            Some(Issue {
                path: format!("routes[{i}].path"),
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MERGE: PathOptions = PathOptions {
        merge_slashes: true,
    };
    const KEEP: PathOptions = PathOptions {
        merge_slashes: false,
    };

    fn canon(path: &str) -> Result<String, PathError> {
        canonicalize(path.as_bytes(), MERGE).map(|c| c.path.into_owned())
    }

    fn assert_canon(cases: &[(&str, &str)]) {
        for (input, expected) in cases {
            assert_eq!(canon(input).as_deref(), Ok(*expected), "{input:?}");
        }
    }

    #[test]
    fn route_paths_not_in_canonical_form_are_config_issues_with_the_spelling_to_use() {
        let mut config = crate::config::parse(
            "[[upstreams]]\nname = \"u\"\npeers = [{ addr = \"127.0.0.1:1\" }]\n",
        )
        .expect("parses");
        let paths = ["/ok", "/%7Euser", "/a//b", "/..", "relative"];
        for (i, path) in paths.iter().enumerate() {
            let mut route: RouteConfig = toml_route(i);
            route.path = path.to_string();
            config.routes.push(route);
        }
        let issues: Vec<String> = route_path_issues(&config)
            .iter()
            .map(|i| i.to_string())
            .collect();
        assert_eq!(issues.len(), 3, "{issues:?}");
        assert!(issues[0].starts_with("routes[1].path: ") && issues[0].ends_with("\"/~user\""));
        assert!(issues[1].starts_with("routes[2].path: ") && issues[1].ends_with("\"/a/b\""));
        assert!(issues[2].starts_with("routes[3].path: ") && issues[2].contains("above the root"));
        config.server.merge_slashes = false;
        assert_eq!(
            route_path_issues(&config).len(),
            2,
            "`//` is canonical then"
        );
    }

    fn toml_route(i: usize) -> RouteConfig {
        let config =
            crate::config::parse(&format!("[[routes]]\nname = \"r{i}\"\nupstream = \"u\"\n"))
                .expect("parses");
        config.routes.into_iter().next().expect("one route")
    }

    #[test]
    fn rfc3986_section_5_4_examples_resolve_as_paths() {
        // §5.4 references resolved against "/b/c/d;p?q", written as the merged paths (with
        // ';' left out, which the gateway refuses).
        assert_canon(&[
            ("/b/c/g", "/b/c/g"),
            ("/b/c/./g", "/b/c/g"),
            ("/b/c/g/", "/b/c/g/"),
            ("/g", "/g"),
            ("/b/c/.", "/b/c/"),
            ("/b/c/./", "/b/c/"),
            ("/b/c/..", "/b/"),
            ("/b/c/../", "/b/"),
            ("/b/c/../g", "/b/g"),
            ("/b/c/../..", "/"),
            ("/b/c/../../", "/"),
            ("/b/c/../../g", "/g"),
            ("/b/c/g.", "/b/c/g."),
            ("/b/c/.g", "/b/c/.g"),
            ("/b/c/g..", "/b/c/g.."),
            ("/b/c/..g", "/b/c/..g"),
            ("/b/c/./../g", "/b/g"),
            ("/b/c/./g/.", "/b/c/g/"),
            ("/b/c/g/./h", "/b/c/g/h"),
            ("/b/c/g/../h", "/b/c/h"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
        ]);
    }

    #[test]
    fn abnormal_examples_that_climb_above_the_root_are_refused() {
        for input in [
            "/..",
            "/../",
            "/../g",
            "/../../g",
            "/b/c/../../../g",
            "/a/../..",
            "/%2e%2e",
            "/%2E%2E/secure",
            "/.%2e/secure",
            "/x/../../secure",
        ] {
            assert_eq!(canon(input), Err(PathError::AboveRoot), "{input:?}");
        }
    }

    #[test]
    fn encoded_dots_in_any_case_and_mix_are_dot_segments() {
        assert_canon(&[
            ("/a/%2e/b", "/a/b"),
            ("/a/%2E/b", "/a/b"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E%2E/b", "/b"),
            ("/a/%2e%2E/b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("/a/%2e./b", "/b"),
            ("/a/%2E./b", "/b"),
            ("/x/%2e%2e/secure/a", "/secure/a"),
            ("/a/b/%2e%2e", "/a/"),
            ("/a/b/%2e", "/a/b/"),
        ]);
    }

    #[test]
    fn slashes_and_single_dots_collapse() {
        assert_canon(&[
            ("/", "/"),
            ("//", "/"),
            ("///", "/"),
            ("//secure/a", "/secure/a"),
            ("///secure//a", "/secure/a"),
            ("/./secure/a", "/secure/a"),
            ("/secure/./a", "/secure/a"),
            ("/a/./b/../c", "/a/c"),
            ("/a//", "/a/"),
            ("/.", "/"),
            ("/./", "/"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
        ]);
    }

    #[test]
    fn merge_slashes_off_keeps_empty_segments_but_still_removes_dots() {
        let keep = |p: &str| canonicalize(p.as_bytes(), KEEP).map(|c| c.path.into_owned());
        assert_eq!(keep("//secure//a").as_deref(), Ok("//secure//a"));
        assert_eq!(keep("/a//../b").as_deref(), Ok("/a/b"));
        assert_eq!(keep("/a//.").as_deref(), Ok("/a//"));
        assert_eq!(keep("/./secure").as_deref(), Ok("/secure"));
        assert!(matches!(
            canonicalize(b"//a", KEEP).map(|c| c.path),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_uppercased() {
        assert_canon(&[
            ("/%73ecure/a", "/secure/a"),
            ("/%7Euser", "/~user"),
            ("/%7euser", "/~user"),
            ("/a%2Db%5Fc%2e", "/a-b_c."),
            ("/%41%5a%30%39", "/AZ09"),
            ("/a%20b", "/a%20b"),
            ("/a%2cb", "/a%2Cb"),
            ("/a%3bb", "/a%3Bb"),
            ("/%25", "/%25"),
            ("/%252e", "/%252e"),
        ]);
    }

    #[test]
    fn utf8_escapes_stay_encoded_with_uppercase_hex() {
        assert_canon(&[
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/%e2%82%ac/x", "/%E2%82%AC/x"),
            ("/%F0%9F%98%80", "/%F0%9F%98%80"),
        ]);
    }

    #[test]
    fn overlong_and_malformed_utf8_escapes_are_refused() {
        for input in [
            "/%C0%AE%C0%AE/secure",
            "/%c0%ae",
            "/%C1%81",
            "/%E0%80%AE",
            "/%F0%80%80%AE",
            "/%ED%A0%80",
            "/%80",
            "/%C3",
            "/%C3/x",
            "/%C3x",
            "/%E2%82",
            "/%F5%80%80%80",
            "/%FF",
        ] {
            assert_eq!(canon(input), Err(PathError::BadUtf8), "{input:?}");
        }
    }

    #[test]
    fn raw_characters_a_path_may_not_hold_are_encoded() {
        assert_canon(&[
            ("/a{b}", "/a%7Bb%7D"),
            ("/a|b^c`d", "/a%7Cb%5Ec%60d"),
            ("/\"<>", "/%22%3C%3E"),
            ("/[x]", "/%5Bx%5D"),
        ]);
    }

    #[test]
    fn ambiguous_bytes_and_broken_escapes_are_refused() {
        let cases: &[(&[u8], PathError)] = &[
            (b"secure", PathError::NotAbsolute),
            (b"*", PathError::NotAbsolute),
            (b"", PathError::NotAbsolute),
            (b"\\secure", PathError::NotAbsolute),
            (b"/\\secure", PathError::Backslash),
            (b"/%5csecure", PathError::Backslash),
            (b"/%5Csecure", PathError::Backslash),
            (b"/secure%00/a", PathError::ControlByte),
            (b"/a%0a", PathError::ControlByte),
            (b"/a%1F", PathError::ControlByte),
            (b"/a%7f", PathError::ControlByte),
            (b"/a\x00", PathError::ControlByte),
            (b"/a\tb", PathError::ControlByte),
            (b"/a\x7f", PathError::ControlByte),
            (b"/caf\xc3\xa9", PathError::NonAscii),
            (b"/\xff", PathError::NonAscii),
            (b"/secure;x/a", PathError::Semicolon),
            (b"/..;/secure", PathError::Semicolon),
            (b"/%zz", PathError::BadEscape),
            (b"/%4", PathError::BadEscape),
            (b"/a%", PathError::BadEscape),
            (b"/%4g/x", PathError::BadEscape),
            (b"/%%41", PathError::BadEscape),
        ];
        for (input, expected) in cases {
            assert_eq!(
                canonicalize(input, MERGE).map(|c| c.path.into_owned()),
                Err(*expected),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn encoded_slashes_stay_opaque_and_are_flagged() {
        for (input, expected) in [
            ("/%2fsecure/a", "/%2Fsecure/a"),
            ("/secure%2Fa", "/secure%2Fa"),
            ("/public/..%2Fsecure/a", "/public/..%2Fsecure/a"),
            ("/a/%2f/./b", "/a/%2F/b"),
        ] {
            let c = canonicalize(input.as_bytes(), MERGE).expect(input);
            assert_eq!(c.path, expected, "{input:?}");
            assert!(c.encoded_slash, "{input:?} is flagged");
        }
        assert!(!canonicalize(b"/a/b", MERGE).expect("clean").encoded_slash);
        let removed = canonicalize(b"/a/%2F/../b", MERGE).expect("removed segment");
        assert_eq!(removed.path, "/a/b");
        assert!(
            !removed.encoded_slash,
            "the only %2F was in a removed segment"
        );
    }

    #[test]
    fn a_canonical_path_is_borrowed_not_copied() {
        for input in [
            "/",
            "/api/v1/users/42",
            "/a-b_c.d~e/x.json",
            "/caf%C3%A9",
            "/a%20b/",
            "/files/a%2Fb",
            "/x:y@z!$&'()*+,=",
            "/.well-known/x",
            "/a/..b/c.",
        ] {
            let c = canonicalize(input.as_bytes(), MERGE).expect(input);
            assert!(matches!(c.path, Cow::Borrowed(_)), "{input:?} allocated");
            assert_eq!(c.path, input);
        }
    }

    #[test]
    fn canonicalizing_twice_equals_canonicalizing_once() {
        // Every path of up to four symbols over an alphabet of the tricky pieces.
        let alphabet: [&str; 12] = [
            "/", ".", "..", "%2e", "%2E", "a", "%61", "%2F", "%2f", "%c3%a9", "{", "%7e",
        ];
        let mut checked = 0;
        let mut stack = vec![(String::from("/"), 0)];
        while let Some((path, depth)) = stack.pop() {
            for opts in [MERGE, KEEP] {
                if let Ok(once) = canonicalize(path.as_bytes(), opts) {
                    let twice = canonicalize(once.path.as_bytes(), opts)
                        .unwrap_or_else(|e| panic!("{path:?} → {:?} → {e}", once.path));
                    assert_eq!(twice.path, once.path, "{path:?}");
                    assert!(
                        matches!(twice.path, Cow::Borrowed(_)),
                        "{:?} (from {path:?}) is not recognised as canonical",
                        once.path
                    );
                    assert_eq!(twice.encoded_slash, once.encoded_slash, "{path:?}");
                    checked += 1;
                }
            }
            if depth < 4 {
                for piece in alphabet {
                    stack.push((format!("{path}{piece}"), depth + 1));
                }
            }
        }
        assert!(checked > 10_000, "only {checked} paths checked");
    }

    #[test]
    fn absolute_form_targets_split_into_authority_path_and_query() {
        let t = split_target(b"http://host:8080/../secure/a?x=%2e%2e").expect("absolute");
        assert_eq!(t.head, b"http://host:8080");
        assert_eq!(t.path, b"/../secure/a");
        assert_eq!(t.query, Some(&b"x=%2e%2e"[..]));
        let t = split_target(b"http://host?q").expect("no path");
        assert_eq!((t.path, t.query), (&b"/"[..], Some(&b"q"[..])));
        let t = split_target(b"/a?b?c").expect("origin");
        assert_eq!(
            (t.head, t.path, t.query),
            (&b""[..], &b"/a"[..], Some(&b"b?c"[..]))
        );
        assert!(split_target(b"*").is_err());
        assert!(split_target(b"relative/x").is_err());
    }

    #[test]
    fn requests_are_rewritten_only_in_the_path() {
        let mut req =
            RequestHeader::build("GET", b"/x/../Secure/%61?k=%2e%2e&b=%zz", None).expect("request");
        assert_eq!(canonicalize_request(&mut req, MERGE), Ok(false));
        assert_eq!(req.raw_path(), b"/Secure/a?k=%2e%2e&b=%zz");
        assert_eq!(req.uri.path(), "/Secure/a");

        let mut req = RequestHeader::build("GET", b"http://h.test/a/./b?q", None).expect("abs");
        assert_eq!(canonicalize_request(&mut req, MERGE), Ok(false));
        assert_eq!(req.raw_path(), b"http://h.test/a/b?q");
        assert_eq!(req.uri.path(), "/a/b");

        let mut req = RequestHeader::build("GET", b"/clean/path?q=1", None).expect("clean");
        assert_eq!(canonicalize_request(&mut req, MERGE), Ok(false));
        assert_eq!(req.raw_path(), b"/clean/path?q=1");

        let mut req = RequestHeader::build("GET", b"/a/%2f/b", None).expect("slash");
        assert_eq!(canonicalize_request(&mut req, MERGE), Ok(true));
        assert_eq!(req.raw_path(), b"/a/%2F/b");

        let mut req = RequestHeader::build("GET", b"/../x?q", None).expect("above root");
        assert_eq!(
            canonicalize_request(&mut req, MERGE),
            Err(PathError::AboveRoot)
        );
        assert_eq!(
            req.raw_path(),
            b"/../x?q",
            "a refused request is left as it came"
        );
    }

    fn routes(extra: &str) -> Vec<RouteConfig> {
        let toml = format!(
            "[[upstreams]]\nname = \"u\"\npeers = [{{ addr = \"127.0.0.1:1\" }}]\n\
             [[routes]]\nname = \"secure\"\npath = \"/secure\"\nupstream = \"u\"\n\
             [[routes]]\nname = \"files\"\npath = \"/files\"\nupstream = \"u\"\n{extra}\n\
             [[routes]]\nname = \"root\"\npath = \"/\"\nupstream = \"u\"\n"
        );
        crate::config::parse(&toml)
            .expect("test config parses")
            .routes
    }

    #[test]
    fn encoded_slash_needs_the_route_option_and_the_same_route_when_decoded() {
        let check = |routes: &[RouteConfig], path: &str| {
            let router = Router::compile(routes, &mut crate::config::Issues::default())
                .expect("test routes compile");
            let found = router.find("h", path, "GET");
            check_encoded_slashes(&router, routes, found, ("h", path, "GET"), MERGE)
        };
        let closed = routes("");
        assert!(!closed[1].allow_encoded_slashes, "off by default");
        assert_eq!(check(&closed, "/files/a%2Fb"), Err(PathError::EncodedSlash));
        let open = routes("allow_encoded_slashes = true");
        assert!(matches!(
            check(&open, "/files/a%2Fb"),
            Ok(RouteMatch::Found { route: 1, .. })
        ));
        assert!(matches!(
            check(&open, "/files/a%2F%2Fb%2F"),
            Ok(RouteMatch::Found { route: 1, .. })
        ));
        for (path, expected) in [
            ("/files/..%2Fsecure", PathError::AmbiguousEncodedSlash),
            ("/files/%2F..%2Fsecure/x", PathError::AmbiguousEncodedSlash),
            ("/files/..%2F..%2Fx", PathError::AboveRoot),
            ("/%2Ffiles/a", PathError::EncodedSlash),
        ] {
            assert_eq!(check(&open, path), Err(expected), "{path:?}");
        }
    }

    #[test]
    fn merge_slashes_is_on_unless_the_server_section_turns_it_off() {
        let base = "[[upstreams]]\nname = \"u\"\npeers = [{ addr = \"127.0.0.1:1\" }]\n";
        let default = crate::config::parse(base).expect("parses");
        assert!(default.server.merge_slashes);
        let off = crate::config::parse(&format!("[server]\nmerge_slashes = false\n{base}"))
            .expect("parses");
        assert!(!off.server.merge_slashes);
        let wrong = crate::config::parse(&format!("[server]\nmerge_slashes = \"no\"\n{base}"));
        assert!(wrong.is_err_and(|e| e.contains("merge_slashes") || e.contains("bool")));
    }

    #[test]
    fn error_messages_are_plain_ascii_without_quotes() {
        use PathError::*;
        for e in [
            NotAbsolute,
            ControlByte,
            NonAscii,
            Backslash,
            Semicolon,
            BadEscape,
            BadUtf8,
            AboveRoot,
            EncodedSlash,
            AmbiguousEncodedSlash,
            Unrepresentable,
        ] {
            let m = e.message();
            assert!(
                m.bytes()
                    .all(|b| (0x20..0x7F).contains(&b) && b != b'"' && b != b'\\'),
                "{m:?}"
            );
        }
    }
}

//! The routing table: compiled once per config load, matched without allocating.
//!
//! Precedence, most specific first: exact host, then wildcard hosts (longest suffix first), then
//! routes without hosts. Within each host group: the exact path, then prefixes, longest first.
//! At one host+path, a route that lists methods is tried before one that takes any method.
//! When some route matched host and path but none took the method, the answer is 405 with the
//! union of the methods that would have been accepted.
//!
//! [`Router::compile`] is the one judge of what a route matches (hosts, path, methods) and of
//! two routes matching the same requests; it reports every problem with its path.

use std::collections::{HashMap, HashSet};

use super::host::parse_host;
use crate::config::{Issues, PathMatch, RouteConfig};

/// A host to match: exact, or a `*.` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exact host name, lowercased.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches any name ending with it.
    Suffix(String),
}

/// Why a route's host is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host:?} is not a host; write \"api.example.com\" or \"*.example.com\" (no port, no scheme)"
)]
pub struct HostPatternError {
    /// The host as written.
    host: String,
}

impl HostPattern {
    /// Parses "api.example.com" or "*.example.com".
    pub fn parse(s: &str) -> Result<HostPattern, HostPatternError> {
        let lower = s.trim().to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
            && !name.starts_with('.')
            && !name.ends_with('.');
        if !valid {
            return Err(HostPatternError {
                host: s.to_string(),
            });
        }
        Ok(if wild {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_string())
        })
    }
}

/// What one route matches, compiled: the part of a route the router needs.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    /// Hosts; empty matches any host.
    hosts: Vec<HostPattern>,
    /// The path as written (it starts with '/').
    path: String,
    path_match: PathMatch,
    methods: MethodSet,
}

/// The methods a route may list (RFC 9110 plus PATCH).
const STANDARD_METHODS: &[&str] = &METHODS;

impl RouteMatcher {
    /// Compiles the hosts, path and methods of the route at `at` (e.g. `routes[3]`); `None`
    /// after pushing every problem into `issues`.
    pub fn compile(r: &RouteConfig, at: &str, issues: &mut Issues) -> Option<RouteMatcher> {
        let before = issues.len();
        let mut hosts = Vec::with_capacity(r.hosts.len());
        for (j, h) in r.hosts.iter().enumerate() {
            match HostPattern::parse(h) {
                Ok(host) => hosts.push(host),
                Err(e) => issues.push(format!("{at}.hosts[{j}]"), e.to_string()),
            }
        }
        if !r.path.starts_with('/') {
            issues.push(
                format!("{at}.path"),
                format!("{:?} must start with '/'", r.path),
            );
        }
        for (j, m) in r.methods.iter().enumerate() {
            let upper = m.to_ascii_uppercase();
            if STANDARD_METHODS.contains(&upper.as_str()) {
                continue;
            }
            let reason = if http::Method::from_bytes(upper.as_bytes()).is_ok() {
                format!("{m:?} is an extension method; only routes without `methods` take those")
            } else {
                format!("{m:?} is not an HTTP method")
            };
            issues.push(format!("{at}.methods[{j}]"), reason);
        }
        if issues.len() > before {
            return None;
        }
        Some(RouteMatcher {
            hosts,
            path: r.path.clone(),
            path_match: r.path_match,
            methods: MethodSet::from_names(&r.methods),
        })
    }
}

/// Reports, at `routes[i]`, each route that matches a host, path and method set an earlier
/// route already matches: the later one could never be reached. Judged on the text as written
/// (hosts lowercased, methods that are standard), so it is reported beside any other problem.
fn report_duplicate_matches(routes: &[RouteConfig], issues: &mut Issues) {
    let mut keys = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let mut methods: Vec<String> = r
            .methods
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .filter(|m| STANDARD_METHODS.contains(&m.as_str()))
            .collect();
        methods.sort();
        methods.dedup();
        // Trimmed and lowercased as `HostPattern::parse` stores them.
        let mut hosts: Vec<String> = r
            .hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        if hosts.is_empty() {
            hosts.push("*any*".into());
        }
        // The router stores prefixes without a trailing slash; compare the same way.
        let path = match r.path_match {
            PathMatch::Prefix => r.path.trim_end_matches('/').to_string(),
            PathMatch::Exact => r.path.clone(),
        };
        for host in hosts {
            let key = (host.clone(), path.clone(), r.path_match, methods.clone());
            if !keys.insert(key) {
                issues.push(
                    format!("routes[{i}]"),
                    format!(
                        "another route already matches host {host:?}, {:?} path {:?} and methods {:?}",
                        r.path_match, r.path, methods
                    ),
                );
            }
        }
    }
}

/// A set of HTTP methods as a bit mask; `ANY` also accepts extension methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MethodSet(u16);

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
const OTHER: u16 = 1 << 15;

impl MethodSet {
    /// Every method, including extension methods.
    pub const ANY: MethodSet = MethodSet(u16::MAX);

    /// The bit of one method; extension methods share one bit that only `ANY` holds.
    fn bit(method: &str) -> u16 {
        METHODS
            .iter()
            .position(|m| m.eq_ignore_ascii_case(method))
            .map_or(OTHER, |i| 1 << i)
    }

    /// Builds the set of a route's `methods` list; empty means any.
    pub(crate) fn from_names<S: AsRef<str>>(names: &[S]) -> MethodSet {
        if names.is_empty() {
            return MethodSet::ANY;
        }
        MethodSet(names.iter().fold(0, |acc, m| acc | Self::bit(m.as_ref())))
    }

    /// Whether the set accepts this method.
    pub(crate) fn contains(self, method: &str) -> bool {
        self.0 & Self::bit(method) != 0
    }

    fn is_any(self) -> bool {
        self == MethodSet::ANY
    }

    /// The value of an `Allow` header for this set.
    pub(crate) fn allow_header(self) -> String {
        let names: Vec<&str> = METHODS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, m)| *m)
            .collect();
        names.join(", ")
    }
}

/// The outcome of matching a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMatch {
    /// Route index, and how many leading bytes of the path the route's path matched.
    Found {
        /// Index into the runtime's routes.
        route: usize,
        /// Length of the matched path prefix (for `strip_prefix`).
        matched_len: usize,
    },
    /// Host and path matched but not the method; these methods would be accepted.
    MethodNotAllowed(MethodSet),
    /// Nothing matched host and path.
    NotFound,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    route: usize,
    methods: MethodSet,
}

#[derive(Debug, Default)]
struct HostTable {
    exact: HashMap<Box<str>, Vec<Candidate>>,
    /// (prefix without trailing slash, or "" for "/", candidates); longest first.
    prefixes: Vec<(Box<str>, Vec<Candidate>)>,
    /// Position in `prefixes` of each prefix, for tables with more than `SCAN_LIMIT` of them.
    prefix_index: HashMap<Box<str>, usize>,
}

/// Up to this many prefixes, a scan (longest first) beats hashing the path's segment
/// boundaries; above it, the lookups per request depend on the path's depth, not on the
/// number of routes.
const SCAN_LIMIT: usize = 8;

/// The compiled routing table.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, HostTable>,
    /// (".example.com", table), longest suffix first.
    wildcard_hosts: Vec<(Box<str>, HostTable)>,
    any_host: HostTable,
}

/// Longest host name we look up; longer names cannot match (DNS caps names at 253).
const MAX_HOST: usize = 256;

// === impl Router ===

impl Router {
    /// Compiles the table for `routes` (indices are positions in `routes`), pushing every
    /// problem of their hosts, paths and methods, and every unreachable route, into `issues`;
    /// `None` when there was one.
    pub fn compile(routes: &[RouteConfig], issues: &mut Issues) -> Option<Router> {
        let before = issues.len();
        let matchers: Vec<Option<RouteMatcher>> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteMatcher::compile(r, &format!("routes[{i}]"), issues))
            .collect();
        report_duplicate_matches(routes, issues);
        if issues.len() > before {
            return None;
        }
        let matchers: Vec<RouteMatcher> = matchers.into_iter().flatten().collect();
        Some(Router::new(&matchers))
    }

    /// Builds the table from compiled matchers (indices are positions in `matchers`).
    pub fn new(matchers: &[RouteMatcher]) -> Router {
        let mut router = Router::default();
        for (i, r) in matchers.iter().enumerate() {
            let candidate = Candidate {
                route: i,
                methods: r.methods,
            };
            if r.hosts.is_empty() {
                router.any_host.insert(r, candidate);
            }
            for h in &r.hosts {
                match h {
                    HostPattern::Exact(name) => router
                        .exact_hosts
                        .entry(name.as_str().into())
                        .or_default()
                        .insert(r, candidate),
                    HostPattern::Suffix(suffix) => {
                        match router
                            .wildcard_hosts
                            .iter_mut()
                            .find(|(s, _)| **s == **suffix)
                        {
                            Some((_, table)) => table.insert(r, candidate),
                            None => {
                                let mut table = HostTable::default();
                                table.insert(r, candidate);
                                router.wildcard_hosts.push((suffix.as_str().into(), table));
                            }
                        }
                    }
                }
            }
        }
        router
            .wildcard_hosts
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        for table in router
            .exact_hosts
            .values_mut()
            .chain(router.wildcard_hosts.iter_mut().map(|(_, t)| t))
            .chain(std::iter::once(&mut router.any_host))
        {
            table.finish();
        }
        router
    }

    /// Finds the route for a request. `host` may carry a port and any letter case; `path` is
    /// the path without the query string.
    pub fn find(&self, host: &str, path: &str, method: &str) -> RouteMatch {
        let mut buf = [0u8; MAX_HOST];
        let host = normalize_host(host, &mut buf);
        let mut allowed = MethodSet(0);
        if let Some(host) = host {
            if let Some(table) = self.exact_hosts.get(host) {
                if let Some(found) = table.find(path, method, &mut allowed) {
                    return found;
                }
            }
            for (suffix, table) in &self.wildcard_hosts {
                if host.len() > suffix.len() && host.ends_with(&**suffix) {
                    if let Some(found) = table.find(path, method, &mut allowed) {
                        return found;
                    }
                }
            }
        }
        if let Some(found) = self.any_host.find(path, method, &mut allowed) {
            return found;
        }
        if allowed.0 != 0 {
            RouteMatch::MethodNotAllowed(allowed)
        } else {
            RouteMatch::NotFound
        }
    }
}

/// Lowercases the host into `buf` and drops its port and a trailing dot; `None` when it is not
/// a host by the one strict parse the request was already checked with ([`parse_host`]), so a
/// lax spelling can never fall through to host-less routes while an upstream reads a host.
fn normalize_host<'a>(host: &str, buf: &'a mut [u8; MAX_HOST]) -> Option<&'a str> {
    let host = parse_host(host.as_bytes()).ok()?.host;
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.len() > MAX_HOST {
        return None;
    }
    let out = &mut buf[..host.len()];
    for (o, b) in out.iter_mut().zip(host.bytes()) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

// === impl HostTable ===

impl HostTable {
    fn insert(&mut self, route: &RouteMatcher, candidate: Candidate) {
        match route.path_match {
            PathMatch::Exact => self
                .exact
                .entry(route.path.clone().into_boxed_str())
                .or_default()
                .push(candidate),
            PathMatch::Prefix => {
                let prefix = route.path.trim_end_matches('/');
                match self.prefixes.iter_mut().find(|(p, _)| **p == *prefix) {
                    Some((_, list)) => list.push(candidate),
                    None => self.prefixes.push((prefix.into(), vec![candidate])),
                }
            }
        }
    }

    /// Orders prefixes longest first and, per path, method-specific routes before any-method.
    fn finish(&mut self) {
        self.prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        self.prefix_index = self
            .prefixes
            .iter()
            .enumerate()
            .map(|(i, (prefix, _))| (prefix.clone(), i))
            .collect();
        let lists = self
            .exact
            .values_mut()
            .chain(self.prefixes.iter_mut().map(|(_, l)| l));
        for list in lists {
            list.sort_by_key(|c| (c.methods.is_any(), c.route));
        }
    }

    fn find(&self, path: &str, method: &str, allowed: &mut MethodSet) -> Option<RouteMatch> {
        if let Some(list) = self.exact.get(path) {
            if let Some(route) = pick(list, method, allowed) {
                return Some(RouteMatch::Found {
                    route,
                    matched_len: path.len(),
                });
            }
        }
        if self.prefixes.len() <= SCAN_LIMIT {
            self.find_prefix_by_scan(path, method, allowed)
        } else {
            self.find_prefix_by_index(path, method, allowed)
        }
    }

    fn find_prefix_by_scan(
        &self,
        path: &str,
        method: &str,
        allowed: &mut MethodSet,
    ) -> Option<RouteMatch> {
        for (prefix, list) in &self.prefixes {
            if prefix_matches(prefix, path) {
                if let Some(found) = found_in(prefix, list, method, allowed) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The prefixes that can match `path` are the path itself and the path cut at each `/`
    /// (segment-aware matching), so looking those up from the longest down finds the same
    /// route as the scan.
    fn find_prefix_by_index(
        &self,
        path: &str,
        method: &str,
        allowed: &mut MethodSet,
    ) -> Option<RouteMatch> {
        let mut candidate = path;
        loop {
            if let Some((prefix, list)) = self
                .prefix_index
                .get(candidate)
                .and_then(|&i| self.prefixes.get(i))
            {
                if let Some(found) = found_in(prefix, list, method, allowed) {
                    return Some(found);
                }
            }
            // '/' is ASCII, so the cut is always at a character boundary.
            candidate = &candidate[..candidate.rfind('/')?];
        }
    }
}

/// The route of `list` that takes `method`, as a match of `prefix`.
fn found_in(
    prefix: &str,
    list: &[Candidate],
    method: &str,
    allowed: &mut MethodSet,
) -> Option<RouteMatch> {
    pick(list, method, allowed).map(|route| RouteMatch::Found {
        route,
        matched_len: prefix.len(),
    })
}

fn pick(list: &[Candidate], method: &str, allowed: &mut MethodSet) -> Option<usize> {
    for c in list {
        if c.methods.contains(method) {
            return Some(c.route);
        }
        allowed.0 |= c.methods.0;
    }
    None
}

/// Segment-aware prefix test: "/api" matches "/api", "/api/" and "/api/x", never "/apix".
/// The prefix is stored without its trailing slash, "" standing for "/".
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The path sent upstream when the route strips its prefix: the rest, or "/" when nothing is left.
pub(crate) fn strip_prefix(path: &str, matched_len: usize) -> &str {
    match path.get(matched_len..) {
        Some(rest) if rest.starts_with('/') => rest,
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, hosts: &[&str], path: &str, exact: bool, methods: &[&str]) -> RouteConfig {
        let toml = format!(
            "name = {name:?}\nhosts = {hosts:?}\npath = {path:?}\npath_match = {:?}\nmethods = {methods:?}\nupstream = \"u\"\n",
            if exact { "exact" } else { "prefix" }
        );
        toml::from_str(&toml).expect("test route parses")
    }

    fn build(routes: &[RouteConfig]) -> Router {
        Router::compile(routes, &mut Issues::default()).expect("test routes compile")
    }

    fn found(m: RouteMatch) -> usize {
        match m {
            RouteMatch::Found { route, .. } => route,
            other => panic!("expected a route, got {other:?}"),
        }
    }

    #[test]
    fn host_precedence_is_exact_then_longest_wildcard_then_any() {
        let r = build(&[
            route("any", &[], "/", false, &[]),
            route("wild", &["*.example.com"], "/", false, &[]),
            route("deep", &["*.eu.example.com"], "/", false, &[]),
            route("exact", &["api.example.com"], "/", false, &[]),
        ]);
        assert_eq!(found(r.find("api.example.com", "/x", "GET")), 3);
        assert_eq!(found(r.find("API.Example.com:8080", "/x", "GET")), 3);
        assert_eq!(found(r.find("a.eu.example.com", "/x", "GET")), 2);
        assert_eq!(found(r.find("b.example.com", "/x", "GET")), 1);
        assert_eq!(found(r.find("example.com", "/x", "GET")), 0);
        assert_eq!(found(r.find("other.org", "/x", "GET")), 0);
    }

    #[test]
    fn exact_path_beats_longest_prefix_and_prefixes_respect_segments() {
        let r = build(&[
            route("root", &[], "/", false, &[]),
            route("api", &[], "/api", false, &[]),
            route("users", &[], "/api/users/", false, &[]),
            route("exact", &[], "/api/users/me", true, &[]),
        ]);
        assert_eq!(found(r.find("h", "/api/users/me", "GET")), 3);
        assert_eq!(found(r.find("h", "/api/users/me/x", "GET")), 2);
        assert_eq!(found(r.find("h", "/api/users", "GET")), 2);
        assert_eq!(found(r.find("h", "/api", "GET")), 1);
        assert_eq!(found(r.find("h", "/apix", "GET")), 0);
        assert_eq!(found(r.find("h", "/", "GET")), 0);
    }

    #[test]
    fn method_specific_route_wins_and_mismatch_gives_405_with_allowed_methods() {
        let r = build(&[
            route("read", &["h"], "/items", false, &["GET", "HEAD"]),
            route("write", &["h"], "/items", false, &["POST"]),
            route("any", &["h"], "/other", false, &[]),
        ]);
        assert_eq!(found(r.find("h", "/items", "GET")), 0);
        assert_eq!(found(r.find("h", "/items", "POST")), 1);
        match r.find("h", "/items", "DELETE") {
            RouteMatch::MethodNotAllowed(set) => assert_eq!(set.allow_header(), "GET, HEAD, POST"),
            other => panic!("expected 405, got {other:?}"),
        }
        assert_eq!(r.find("h", "/nothing", "GET"), RouteMatch::NotFound);
        assert_eq!(found(r.find("h", "/other", "PROPFIND")), 2);
    }

    #[test]
    fn a_less_specific_route_takes_a_method_the_specific_one_refuses() {
        let r = build(&[
            route("catch", &[], "/", false, &[]),
            route("ro", &["h"], "/items", false, &["GET"]),
        ]);
        assert_eq!(found(r.find("h", "/items", "POST")), 0);
    }

    #[test]
    fn indexed_prefix_lookup_agrees_with_the_scan() {
        let prefixes = [
            "/",
            "/a",
            "/a/b",
            "/a/b/c",
            "/api",
            "/api/v1",
            "/api/v1/users",
            "/api/v2",
            "/apix",
            "/static",
            "/static/img",
            "/x/y/z",
            "/%2F",
            "/a b",
        ];
        let mut routes: Vec<RouteConfig> = prefixes
            .iter()
            .enumerate()
            .map(|(i, p)| route(&format!("r{i}"), &[], p, false, &[]))
            .collect();
        routes.push(route("posts", &[], "/api/v1", false, &["POST"]));
        let router = build(&routes);
        let table = &router.any_host;
        assert!(
            table.prefixes.len() > SCAN_LIMIT,
            "the test must exercise the index"
        );
        let paths = [
            "",
            "/",
            "//",
            "/a",
            "/a/",
            "/a/b",
            "/a/bc",
            "/a/b/c/d",
            "/api",
            "/api/",
            "/apix/1",
            "/api/v1/users/7",
            "/api/v1/usersx",
            "/api/v2/",
            "/api/v3",
            "/static/img/x.png",
            "/x/y",
            "/x/y/z/",
            "/%2F/x",
            "/a b/c",
            "*",
            "relative/path",
            "/ü/ß",
        ];
        for path in paths {
            for method in ["GET", "POST", "PURGE"] {
                let (mut a, mut b) = (MethodSet(0), MethodSet(0));
                assert_eq!(
                    table.find_prefix_by_index(path, method, &mut a),
                    table.find_prefix_by_scan(path, method, &mut b),
                    "{method} {path:?}"
                );
                assert_eq!(a, b, "allowed methods for {method} {path:?}");
            }
        }
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        assert_eq!(strip_prefix("/api/users", 4), "/users");
        assert_eq!(strip_prefix("/api", 4), "/");
        assert_eq!(strip_prefix("/api/", 4), "/");
    }

    #[test]
    fn host_routes_match_by_the_strict_parse_of_the_host() {
        let r = build(&[
            route("any", &[], "/", false, &[]),
            route("admin", &["admin.example.com"], "/", false, &[]),
        ]);
        for host in [
            "admin.example.com",
            "ADMIN.example.com:8080",
            "admin.example.com.",
        ] {
            assert_eq!(found(r.find(host, "/", "GET")), 1, "{host}");
        }
        // Refused before routing; were one to get here, it is no host at all, not `…:1`.
        for host in [
            "admin.example.com:1:2",
            "admin.example.com:",
            "u@admin.example.com",
        ] {
            assert_eq!(found(r.find(host, "/", "GET")), 0, "{host}");
        }
    }

    #[test]
    fn a_bad_host_or_method_is_an_issue_not_a_dropped_match() {
        let mut issues = Issues::default();
        let routes = [
            route("port", &["api.example.com:443"], "/", false, &[]),
            route("ext", &["h"], "/", false, &["PURGE", "G ET"]),
        ];
        assert!(Router::compile(&routes, &mut issues).is_none());
        let found: Vec<String> = issues.into_vec().iter().map(|i| i.to_string()).collect();
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].starts_with("routes[0].hosts[0]: \"api.example.com:443\" is not a host"),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with("routes[1].methods[0]: \"PURGE\" is an extension method"),
            "{found:#?}"
        );
        assert_eq!(
            found[2],
            "routes[1].methods[1]: \"G ET\" is not an HTTP method"
        );
    }

    #[test]
    fn host_patterns_are_lowercased_and_wildcards_kept_as_suffixes() {
        assert_eq!(
            HostPattern::parse(" API.Example.com "),
            Ok(HostPattern::Exact("api.example.com".into()))
        );
        assert_eq!(
            HostPattern::parse("*.Example.com"),
            Ok(HostPattern::Suffix(".example.com".into()))
        );
        for bad in ["", "*.", "a..b.", "https://a.com", "a.com/x"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostile_hosts_do_not_panic() {
        let r = build(&[route("any", &[], "/", false, &[])]);
        let long = "a".repeat(10_000);
        for host in ["", ":", "[", "[::1]:80", "é.com", long.as_str(), "a:b:c"] {
            assert_eq!(found(r.find(host, "/", "GET")), 0);
        }
    }
}

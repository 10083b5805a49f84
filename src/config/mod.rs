//! Configuration: the TOML model, the issue type every section's compiler reports into, the
//! validation of the sections not yet compiled by their owners, and secrets read from the
//! environment or files.
//!
//! Loading is two steps. Parsing turns the file into [`Config`] (serde, unknown fields denied);
//! then each section is compiled by the module that owns it (`[store]` by the store, `[auth]`
//! by auth, `[rate_limit]` and the routes' rate limits by ratelimit), and [`validate`] checks
//! the sections still judged here. Every problem is reported with the path of the field it
//! concerns, so one `portcullis check` run shows every mistake in a file.

mod issue;
mod lenient;
mod model;
mod secret;
pub mod strength;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use issue::{Issue, Issues};
pub use lenient::{ByteSize, Dur, Lenient, Parse};
pub use model::*;
pub use secret::{read_secret, SecretError};

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the model.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file parsed but failed validation.
    #[error("{}", render_issues(file, issues))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        issues: Vec<Issue>,
    },
}

fn render_issues(file: &Path, issues: &[Issue]) -> String {
    let mut out = String::new();
    for (i, issue) in issues.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{}: {issue}", file.display()));
    }
    out
}

/// Reads and parses a config file into the model. Nothing is judged here beyond TOML syntax
/// and the model's shape: each section's owner compiles it and reports its problems
/// (`setup::load` runs them all).
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Parse {
        file: file.to_path_buf(),
        message,
    })
}

/// Parses TOML text into the model without validating it.
pub fn parse(text: &str) -> Result<Config, String> {
    toml::from_str(text).map_err(|e| describe_parse_error(text, &e))
}

/// A parse error as line, column and message, without the source line `toml` would quote:
/// that line may hold a secret put inline by mistake (`password = "…"` under `[store]`), and
/// the error reaches `check` output and the log of a failed reload.
fn describe_parse_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', "\n  ");
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return format!("TOML parse error: {message}");
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("TOML parse error at line {line}, column {column}: {message}")
}

/// Checks the sections of a parsed config not yet compiled by their owners (server, admin,
/// log, upstreams, routes) and returns every problem found (empty when valid).
pub fn validate(config: &Config) -> Vec<Issue> {
    let mut v = Validator::default();
    v.server(&config.server);
    v.admin(&config.admin);
    v.log(&config.log);
    let upstreams = v.upstreams(&config.upstreams);
    v.routes(&config.routes, &upstreams);
    v.route_auth(&config.routes, &config.auth);
    v.issues
}

#[derive(Default)]
struct Validator {
    issues: Vec<Issue>,
}

// === impl Validator ===

impl Validator {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.issues.push(Issue {
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn lenient<T>(&mut self, path: impl Into<String>, value: &Lenient<T>) -> bool {
        match value.error() {
            Some(e) => {
                let e = e.to_string();
                self.push(path, e);
                false
            }
            None => true,
        }
    }

    fn positive_duration(&mut self, path: String, value: &Lenient<Dur>) {
        if self.lenient(path.clone(), value) && value.ok().is_some_and(|d| d.0.is_zero()) {
            self.push(path, "must be greater than zero");
        }
    }

    fn server(&mut self, s: &ServerConfig) {
        if s.listen.is_empty() && s.tls.is_none() {
            self.push(
                "server.listen",
                "no listener: give at least one address or [server.tls]",
            );
        }
        let mut seen = HashSet::new();
        for (i, addr) in s.listen.iter().enumerate() {
            let path = format!("server.listen[{i}]");
            if self.lenient(path.clone(), addr) && !seen.insert(addr.raw().trim().to_string()) {
                self.push(path, format!("address {:?} is listed twice", addr.raw()));
            }
        }
        if let Some(tls) = &s.tls {
            self.lenient("server.tls.listen", &tls.listen);
            if tls.listen.ok().is_some() && seen.contains(tls.listen.raw().trim()) {
                self.push("server.tls.listen", "already used by a plain HTTP listener");
            }
            for (field, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if !Path::new(file).is_file() {
                    self.push(
                        format!("server.tls.{field}"),
                        format!("no such file {file:?}"),
                    );
                }
            }
        }
        if s.threads == 0 || s.threads > 1024 {
            self.push("server.threads", "must be between 1 and 1024");
        }
        self.positive_duration("server.keepalive_timeout".into(), &s.keepalive_timeout);
        self.lenient("server.grace_period", &s.grace_period);
        for (i, net) in s.trusted_proxies.iter().enumerate() {
            self.lenient(format!("server.trusted_proxies[{i}]"), net);
        }
        self.lenient("server.max_body_size", &s.max_body_size);
    }

    fn admin(&mut self, a: &AdminConfig) {
        if !self.lenient("admin.listen", &a.listen) {
            return;
        }
        if a.token_env.is_some() && a.token_file.is_some() {
            self.push("admin", "give token_env or token_file, not both");
        }
        if let Some(file) = &a.token_file {
            if let Err(e) = read_secret(None, Some(file)) {
                self.push("admin.token_file", e.to_string());
            }
        }
        if let Some(var) = &a.token_env {
            if let Err(e) = read_secret(Some(var), None) {
                self.push("admin.token_env", e.to_string());
            }
        }
        let loopback = a.listen.ok().is_some_and(|addr| addr.ip().is_loopback());
        let token = read_secret(a.token_env.as_deref(), a.token_file.as_deref())
            .ok()
            .flatten();
        if !loopback && token.is_none() {
            self.push(
                "admin.listen",
                format!(
                    "{:?} is not a loopback address; the admin service refuses to listen there \
                     without a token (set token_env or token_file, with the variable or file present)",
                    a.listen.raw()
                ),
            );
        }
    }

    fn log(&mut self, l: &LogConfig) {
        if l.access_log.trim().is_empty() {
            self.push("log.access_log", "give \"stdout\", \"off\" or a file path");
        }
        for (field, names) in [
            ("log_headers", &l.log_headers),
            ("sensitive_headers", &l.sensitive_headers),
        ] {
            for (i, name) in names.iter().enumerate() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    self.push(
                        format!("log.{field}[{i}]"),
                        format!("{name:?} is not a valid header name"),
                    );
                }
            }
        }
    }

    fn route_auth(&mut self, routes: &[RouteConfig], auth: &AuthConfig) {
        for (i, r) in routes.iter().enumerate() {
            for (j, m) in r.auth.iter().enumerate() {
                let missing = match m {
                    AuthMethod::ApiKey => auth.api_key.is_none().then_some("[auth.api_key]"),
                    AuthMethod::Jwt => auth.jwt.is_none().then_some("[auth.jwt]"),
                };
                if let Some(section) = missing {
                    self.push(
                        format!("routes[{i}].auth[{j}]"),
                        format!("needs a {section} section"),
                    );
                }
            }
            if r.auth.is_empty() && !r.required_scopes.is_empty() {
                self.push(
                    format!("routes[{i}].required_scopes"),
                    "scopes need `auth` on the route",
                );
            }
        }
    }

    /// Checks upstreams and returns the set of valid names for route cross-checks.
    fn upstreams(&mut self, upstreams: &[UpstreamConfig]) -> HashSet<String> {
        let mut names = HashSet::new();
        for (i, u) in upstreams.iter().enumerate() {
            let at = format!("upstreams[{i}]");
            if u.name.trim().is_empty() {
                self.push(format!("{at}.name"), "must not be empty");
            } else if !names.insert(u.name.clone()) {
                self.push(
                    format!("{at}.name"),
                    format!("upstream name {:?} is used twice", u.name),
                );
            }
            if u.peers.is_empty() {
                self.push(format!("{at}.peers"), "needs at least one peer");
            }
            let mut addrs = HashSet::new();
            for (j, p) in u.peers.iter().enumerate() {
                if self.lenient(format!("{at}.peers[{j}].addr"), &p.addr)
                    && !addrs.insert(p.addr.ok().copied())
                {
                    self.push(
                        format!("{at}.peers[{j}].addr"),
                        format!("peer {:?} is listed twice", p.addr.raw()),
                    );
                }
                if p.weight == 0 || p.weight > 1000 {
                    self.push(
                        format!("{at}.peers[{j}].weight"),
                        "must be between 1 and 1000",
                    );
                }
            }
            if u.selection == Selection::ConsistentHash {
                if let Err(e) = HashKey::parse(&u.hash_key) {
                    self.push(format!("{at}.hash_key"), e);
                }
            }
            if u.tls && u.sni.is_none() && u.host_header.is_none() && u.verify_cert {
                self.push(
                    format!("{at}.sni"),
                    "an HTTPS upstream with certificate verification needs `sni` (or `host_header`) \
                     to check the certificate against",
                );
            }
            if let Some(file) = &u.ca_file {
                if !u.tls {
                    self.push(format!("{at}.ca_file"), "only applies with tls = true");
                }
                if let Err(e) = load_ca(file) {
                    self.push(format!("{at}.ca_file"), e);
                }
            }
            if let Some(h) = &u.host_header {
                if http::HeaderValue::from_str(h).is_err() {
                    self.push(
                        format!("{at}.host_header"),
                        format!("{h:?} is not a valid header value"),
                    );
                }
            }
            self.positive_duration(format!("{at}.connect_timeout"), &u.connect_timeout);
            self.positive_duration(format!("{at}.read_timeout"), &u.read_timeout);
            self.positive_duration(format!("{at}.write_timeout"), &u.write_timeout);
            self.positive_duration(format!("{at}.idle_timeout"), &u.idle_timeout);
            if let Some(hc) = &u.health_check {
                let at = format!("{at}.health_check");
                self.positive_duration(format!("{at}.interval"), &hc.interval);
                self.positive_duration(format!("{at}.timeout"), &hc.timeout);
                if !hc.path.starts_with('/') {
                    self.push(format!("{at}.path"), "must start with '/'");
                }
                for (field, n) in [
                    ("healthy_threshold", hc.healthy_threshold),
                    ("unhealthy_threshold", hc.unhealthy_threshold),
                ] {
                    if n == 0 || n > 100 {
                        self.push(format!("{at}.{field}"), "must be between 1 and 100");
                    }
                }
            }
        }
        names
    }

    fn routes(&mut self, routes: &[RouteConfig], upstreams: &HashSet<String>) {
        let mut names = HashSet::new();
        let mut keys = HashSet::new();
        for (i, r) in routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if r.name.trim().is_empty() {
                self.push(format!("{at}.name"), "must not be empty");
            } else if !names.insert(r.name.clone()) {
                self.push(
                    format!("{at}.name"),
                    format!("route name {:?} is used twice", r.name),
                );
            }
            if !upstreams.contains(&r.upstream) {
                self.push(
                    format!("{at}.upstream"),
                    format!("no upstream named {:?}", r.upstream),
                );
            }
            for (j, h) in r.hosts.iter().enumerate() {
                if let Err(e) = HostPattern::parse(h) {
                    self.push(format!("{at}.hosts[{j}]"), e);
                }
            }
            if !r.path.starts_with('/') {
                self.push(
                    format!("{at}.path"),
                    format!("{:?} must start with '/'", r.path),
                );
            }
            let mut methods = Vec::new();
            for (j, m) in r.methods.iter().enumerate() {
                let upper = m.to_ascii_uppercase();
                if STANDARD_METHODS.contains(&upper.as_str()) {
                    methods.push(upper);
                } else if http::Method::from_bytes(upper.as_bytes()).is_ok() {
                    self.push(
                        format!("{at}.methods[{j}]"),
                        format!("{m:?} is an extension method; only routes without `methods` take those"),
                    );
                } else {
                    self.push(
                        format!("{at}.methods[{j}]"),
                        format!("{m:?} is not an HTTP method"),
                    );
                }
            }
            methods.sort();
            methods.dedup();
            for (side, rules) in [
                ("request_headers", &r.request_headers),
                ("response_headers", &r.response_headers),
            ] {
                for (name, value) in &rules.add {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        self.push(
                            format!("{at}.{side}.add"),
                            format!("{name:?} is not a valid header name"),
                        );
                    }
                    if http::HeaderValue::from_str(value).is_err() {
                        self.push(
                            format!("{at}.{side}.add.{name}"),
                            "not a valid header value",
                        );
                    }
                }
                for (j, name) in rules.remove.iter().enumerate() {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        self.push(
                            format!("{at}.{side}.remove[{j}]"),
                            format!("{name:?} is not a valid header name"),
                        );
                    }
                }
            }
            for (field, d) in [
                ("connect_timeout", &r.connect_timeout),
                ("read_timeout", &r.read_timeout),
                ("write_timeout", &r.write_timeout),
            ] {
                if let Some(d) = d {
                    self.positive_duration(format!("{at}.{field}"), d);
                }
            }
            if r.retries > 10 {
                self.push(format!("{at}.retries"), "at most 10");
            }
            let mut hosts: Vec<String> = r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
            if hosts.is_empty() {
                hosts.push("*any*".into());
            }
            for host in hosts {
                // The router stores prefixes without a trailing slash; compare the same way.
                let path = match r.path_match {
                    PathMatch::Prefix => r.path.trim_end_matches('/').to_string(),
                    PathMatch::Exact => r.path.clone(),
                };
                let key = (host.clone(), path, r.path_match, methods.clone());
                if !keys.insert(key) {
                    self.push(
                        at.clone(),
                        format!(
                            "another route already matches host {host:?}, {:?} path {:?} and methods {:?}",
                            r.path_match, r.path, methods
                        ),
                    );
                }
            }
        }
    }
}

/// Longest lifetime of an API key (config `key_ttl`, admin `ttl`): keeps expiry arithmetic and
/// Redis `PEXPIRE` far from any overflow.
pub const MAX_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

/// Reads a PEM bundle of CA certificates.
pub fn load_ca(file: &str) -> Result<Box<[pingora::tls::x509::X509]>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {file:?}: {e}"))?;
    let certs = pingora::tls::x509::X509::stack_from_pem(&pem)
        .map_err(|e| format!("{file:?} is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{file:?} holds no certificate"));
    }
    Ok(certs.into_boxed_slice())
}

/// The methods a route may list (RFC 9110 plus PATCH).
const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// What a consistent-hash pool hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The request path (without query).
    Path,
    /// The value of a request header (lowercased name).
    Header(http::HeaderName),
}

impl HashKey {
    /// Parses "client_ip", "path" or "header:<name>".
    pub fn parse(s: &str) -> Result<HashKey, String> {
        match s {
            "client_ip" => Ok(HashKey::ClientIp),
            "path" => Ok(HashKey::Path),
            _ => match s.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.trim().as_bytes())
                    .map(HashKey::Header)
                    .map_err(|_| format!("{name:?} is not a valid header name")),
                None => Err(format!(
                    "{s:?} is not a hash key; use \"client_ip\", \"path\" or \"header:<name>\""
                )),
            },
        }
    }
}

/// A host to match: exact, or a `*.` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exact host name, lowercased.
    Exact(String),
    /// `*.example.com` stored as `.example.com`: matches any name ending with it.
    Suffix(String),
}

impl HostPattern {
    /// Parses "api.example.com" or "*.example.com".
    pub fn parse(s: &str) -> Result<HostPattern, String> {
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
            return Err(format!(
                "{s:?} is not a host; write \"api.example.com\" or \"*.example.com\" (no port, no scheme)"
            ));
        }
        Ok(if wild {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues(toml: &str) -> Vec<String> {
        let config = parse(toml).expect("test config parses");
        validate(&config).iter().map(|i| i.to_string()).collect()
    }

    const BASE: &str = r#"
[[upstreams]]
name = "api"
peers = [{ addr = "127.0.0.1:3000" }]
"#;

    #[test]
    fn a_minimal_config_is_valid() {
        let toml = format!("{BASE}\n[[routes]]\nname = \"r\"\nupstream = \"api\"\n");
        assert_eq!(issues(&toml), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let toml = format!(
            r#"{BASE}
[server]
listen = ["127.0.0.1:99999"]
keepalive_timeout = "0s"
trusted_proxies = ["10.0.0.0/33"]

[[routes]]
name = "a"
upstream = "billing"

[[routes]]
name = "a"
path = "nope"
upstream = "api"
read_timeout = "soon"
methods = ["G ET"]
"#
        );
        let found = issues(&toml);
        let expect = [
            "server.listen[0]: invalid address",
            "server.keepalive_timeout: must be greater than zero",
            "server.trusted_proxies[0]: invalid network",
            "routes[0].upstream: no upstream named \"billing\"",
            "routes[1].name: route name \"a\" is used twice",
            "routes[1].path: \"nope\" must start with '/'",
            "routes[1].read_timeout: invalid duration \"soon\"",
            "routes[1].methods[0]: \"G ET\" is not an HTTP method",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }

    #[test]
    fn two_routes_with_the_same_match_are_rejected() {
        let toml = format!(
            "{BASE}\n[[routes]]\nname = \"a\"\nhosts = [\"x.com\"]\npath = \"/p\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"api\"\n\
             [[routes]]\nname = \"b\"\nhosts = [\"X.com\"]\npath = \"/p\"\nmethods = [\"post\", \"get\"]\nupstream = \"api\"\n"
        );
        let found = issues(&toml);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("routes[1]: another route already matches"),
            "{found:#?}"
        );
    }

    #[test]
    fn admin_off_loopback_needs_a_token() {
        let found = issues(&format!("{BASE}\n[admin]\nlisten = \"0.0.0.0:9901\"\n"));
        assert!(
            found.iter().any(|f| f.starts_with("admin.listen:")),
            "{found:#?}"
        );
    }

    #[test]
    fn parse_errors_name_the_place_but_never_quote_the_line() {
        let err = parse("[store]\nurl = \"redis://h\"\npassword = \"TopSecretPw1\"\n")
            .expect_err("unknown field");
        assert!(!err.contains("TopSecretPw1"), "{err}");
        assert!(
            err.contains("line 3, column 1") && err.contains("password"),
            "{err}"
        );
        let err = parse("[server]\nthreads = \"Tw0Secret\n").expect_err("unterminated string");
        assert!(
            !err.contains("Tw0Secret") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_parse_errors_naming_the_field() {
        let err = parse("[server]\nlisten_on = [\"127.0.0.1:1\"]\n").expect_err("unknown field");
        assert!(err.contains("listen_on"), "{err}");
    }

    #[test]
    fn bad_upstream_settings_are_reported() {
        let found = issues(
            r#"
[[upstreams]]
name = "a"
peers = []
selection = "consistent_hash"
hash_key = "cookie"
tls = true

[[upstreams]]
name = "a"
peers = [{ addr = "localhost:80", weight = 0 }]
[upstreams.health_check]
kind = "http"
path = "healthz"
interval = "0ms"
"#,
        );
        let expect = [
            "upstreams[0].peers: needs at least one peer",
            "upstreams[0].hash_key:",
            "upstreams[0].sni:",
            "upstreams[1].name: upstream name \"a\" is used twice",
            "upstreams[1].peers[0].addr: invalid address",
            "upstreams[1].peers[0].weight:",
            "upstreams[1].health_check.interval: must be greater than zero",
            "upstreams[1].health_check.path: must start with '/'",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
    }
}

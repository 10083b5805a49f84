//! Configuration: the TOML model, its validation, and secrets read from the environment or files.
//!
//! Loading is two steps. Parsing turns the file into [`Config`] (serde, unknown fields denied);
//! [`validate`] then checks every cross-reference and value and reports *all* problems with the
//! path of the field they concern, so one `portcullis check` run shows every mistake in a file.

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

/// Checks the sections whose owners do not compile them yet (`[store]`, `[auth]`, rate limits)
/// and returns every problem found (empty when valid). `[server]`, `[admin]`, `[log]`,
/// upstreams and routes are judged by the compilers of their owners (`setup`).
pub fn validate(config: &Config) -> Vec<Issue> {
    let mut v = Validator::default();
    if let Some(store) = &config.store {
        v.store(store);
    }
    v.auth(&config.auth, config.store.is_some());
    v.rate_limits(config);
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

    fn store(&mut self, s: &StoreConfig) {
        let url = s.url.trim();
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match url.split_once("://") {
            Some(("redis" | "rediss", rest)) => {
                // The last `@` anywhere: a password may itself hold `/` (or `@`).
                if let Some((userinfo, _)) = rest.rsplit_once('@') {
                    if userinfo.contains(':') {
                        self.push(
                            "store.url",
                            "must not contain a password; use password_env or password_file",
                        );
                    }
                }
            }
            _ => self.push(
                "store.url",
                format!(
                    "{:?} is not a redis:// or rediss:// URL",
                    without_userinfo(url)
                ),
            ),
        }
        if s.password_env.is_some() && s.password_file.is_some() {
            self.push("store", "give password_env or password_file, not both");
        }
        if let Some(var) = &s.password_env {
            match read_secret(Some(var), None) {
                Ok(Some(_)) => {}
                Ok(None) => self.push(
                    "store.password_env",
                    format!("environment variable {var} is not set"),
                ),
                Err(e) => self.push("store.password_env", e.to_string()),
            }
        }
        if let Some(file) = &s.password_file {
            if let Err(e) = read_secret(None, Some(file)) {
                self.push("store.password_file", e.to_string());
            }
        }
        if s.prefix.is_empty() || s.prefix.contains(['{', '}', ' ']) {
            self.push(
                "store.prefix",
                "must be non-empty, without braces or spaces",
            );
        }
        self.positive_duration("store.operation_timeout".into(), &s.operation_timeout);
        self.positive_duration("store.connect_timeout".into(), &s.connect_timeout);
        self.store_tls(s, scheme);
    }

    /// `tls_ca_file`, `tls_cert_file`, `tls_key_file`: `rediss://` only, cert and key together,
    /// every file readable and of the right kind. Messages never quote a file's content.
    fn store_tls(&mut self, s: &StoreConfig, scheme: Option<&str>) {
        let fields = [
            ("tls_ca_file", &s.tls_ca_file),
            ("tls_cert_file", &s.tls_cert_file),
            ("tls_key_file", &s.tls_key_file),
        ];
        if scheme == Some("redis") {
            for (field, value) in fields {
                if value.is_some() {
                    self.push(
                        format!("store.{field}"),
                        "only with a rediss:// url (TLS); this url is redis://",
                    );
                }
            }
        }
        // redis-rs skips both the CA and the client certificate for `#insecure` URLs; a config
        // naming them would silently not use them.
        if scheme == Some("rediss") && s.url.contains("#insecure") {
            for (field, value) in fields {
                if value.is_some() {
                    self.push(
                        format!("store.{field}"),
                        "is ignored with an #insecure url; remove one of the two",
                    );
                }
            }
        }
        match (&s.tls_cert_file, &s.tls_key_file) {
            (Some(_), None) => self.push(
                "store.tls_cert_file",
                "needs tls_key_file (the client certificate's private key)",
            ),
            (None, Some(_)) => self.push(
                "store.tls_key_file",
                "needs tls_cert_file (the client certificate)",
            ),
            _ => {}
        }
        for (field, file) in [
            ("tls_ca_file", &s.tls_ca_file),
            ("tls_cert_file", &s.tls_cert_file),
        ] {
            if let Some(file) = file {
                if let Err(e) = load_ca(file) {
                    self.push(format!("store.{field}"), e);
                }
            }
        }
        if let Some(file) = &s.tls_key_file {
            match std::fs::read(file) {
                Err(e) => self.push("store.tls_key_file", format!("cannot read {file:?}: {e}")),
                Ok(pem) if !String::from_utf8_lossy(&pem).contains(PKCS8_KEY_BEGIN) => self.push(
                    "store.tls_key_file",
                    format!(
                        "{file:?} is not an unencrypted PKCS#8 PEM key (\"{PKCS8_KEY_BEGIN}\"); \
                         convert it with `openssl pkcs8 -topk8 -nocrypt`"
                    ),
                ),
                Ok(_) => {}
            }
        }
    }

    fn auth(&mut self, a: &AuthConfig, has_store: bool) {
        if let Some(k) = &a.api_key {
            if http::HeaderName::from_bytes(k.header.as_bytes()).is_err() {
                self.push(
                    "auth.api_key.header",
                    format!("{:?} is not a valid header name", k.header),
                );
            }
            if k.query_param
                .as_deref()
                .is_some_and(|q| q.is_empty() || q.contains(['&', '=', '#']))
            {
                self.push("auth.api_key.query_param", "must be a plain parameter name");
            }
            if k.hash_secret_env.is_some() && k.hash_secret_file.is_some() {
                self.push(
                    "auth.api_key",
                    "give hash_secret_env or hash_secret_file, not both",
                );
            }
            self.secret_ref(
                "auth.api_key.hash_secret",
                k.hash_secret_env.as_deref(),
                k.hash_secret_file.as_deref(),
            );
            self.positive_duration("auth.api_key.key_ttl".into(), &k.key_ttl);
            if k.key_ttl.ok().is_some_and(|d| d.0 > MAX_KEY_TTL) {
                self.push("auth.api_key.key_ttl", "must be at most 3650d (10 years)");
            }
            if has_store && !k.keys.is_empty() {
                self.push(
                    "auth.api_key.keys",
                    "keys are declared in the config only with the in-process store; with [store] create them with the admin API or `portcullis keys create`",
                );
            }
            let mut ids = HashSet::new();
            for (i, sk) in k.keys.iter().enumerate() {
                let at = format!("auth.api_key.keys[{i}]");
                // The id's syntax is auth's to judge (`auth::config_issues`).
                if !ids.insert(sk.id.clone()) {
                    self.push(
                        format!("{at}.id"),
                        format!("key id {:?} is used twice", sk.id),
                    );
                }
                if sk.consumer.is_empty() {
                    self.push(format!("{at}.consumer"), "must not be empty");
                }
                if sk.key_env.is_some() == sk.key_file.is_some() {
                    self.push(at.clone(), "give exactly one of key_env or key_file");
                } else {
                    self.secret_ref(
                        &format!("{at}.key"),
                        sk.key_env.as_deref(),
                        sk.key_file.as_deref(),
                    );
                    self.static_key_strength(&at, sk);
                }
            }
        }
        let c = &a.cache;
        if c.capacity == 0 || c.negative_capacity == 0 {
            self.push(
                "auth.cache",
                "capacity and negative_capacity must be greater than zero",
            );
        }
        self.positive_duration("auth.cache.ttl".into(), &c.ttl);
        self.positive_duration("auth.cache.negative_ttl".into(), &c.negative_ttl);
        // The cache library panics on lifetimes past 1000 years; a day is plenty for a cache.
        for (field, ttl) in [("ttl", &c.ttl), ("negative_ttl", &c.negative_ttl)] {
            if ttl
                .ok()
                .is_some_and(|d| d.0 > std::time::Duration::from_secs(86_400))
            {
                self.push(format!("auth.cache.{field}"), "must be at most 1d");
            }
        }
    }

    /// A config-declared key must carry at least 128 bits by [`strength::estimated_entropy_bits`].
    /// The message never quotes the key.
    fn static_key_strength(&mut self, at: &str, sk: &StaticKeyConfig) {
        let Ok(Some(key)) = read_secret(sk.key_env.as_deref(), sk.key_file.as_deref()) else {
            return;
        };
        let bits = strength::estimated_entropy_bits(&key);
        if bits < strength::MIN_API_KEY_BITS {
            let field = if sk.key_env.is_some() {
                "key_env"
            } else {
                "key_file"
            };
            self.push(
                format!("{at}.{field}"),
                format!(
                    "the key is too weak (about {bits:.0} bits; at least 128 needed): use 22 or \
                     more random base64url characters or 32 hex digits, e.g. from \
                     `portcullis keys create` or `openssl rand -base64 24`"
                ),
            );
        }
    }

    /// Checks a secret given by `<field>_env` / `<field>_file`: a named variable must be set.
    fn secret_ref(&mut self, field: &str, env: Option<&str>, file: Option<&str>) {
        match read_secret(env, file) {
            Ok(Some(_)) | Ok(None) if env.is_none() => {}
            Ok(Some(_)) => {}
            Ok(None) => self.push(
                format!("{field}_env"),
                format!("environment variable {} is not set", env.unwrap_or("")),
            ),
            Err(e) => {
                let which = if file.is_some() && env.is_none() {
                    "_file"
                } else {
                    "_env"
                };
                self.push(format!("{field}{which}"), e.to_string());
            }
        }
    }

    fn rate_limits(&mut self, config: &Config) {
        let rl = &config.rate_limit;
        if rl.node_count == 0 || rl.node_count > 10_000 {
            self.push("rate_limit.node_count", "must be between 1 and 10000");
        }
        if rl.breaker_failures == 0 {
            self.push("rate_limit.breaker_failures", "must be at least 1");
        }
        self.positive_duration("rate_limit.breaker_open_for".into(), &rl.breaker_open_for);
        self.rate_limit_bounds(rl);
        let claims: Vec<&String> = config
            .auth
            .jwt
            .iter()
            .flat_map(|j| j.claims_to_headers.keys())
            .collect();
        for (i, r) in config.routes.iter().enumerate() {
            if r.name.contains(['{', '}']) {
                self.push(
                    format!("routes[{i}].name"),
                    "must not contain braces (it is a Redis hash tag)",
                );
            }
            let mut names = HashSet::new();
            for (j, rule) in r.rate_limits.iter().enumerate() {
                self.rate_limit_rule(&format!("routes[{i}].rate_limits[{j}]"), rule, &claims);
                if !names.insert(rule.name.as_str()) {
                    self.push(
                        format!("routes[{i}].rate_limits[{j}].name"),
                        format!("rule name {:?} is used twice on this route", rule.name),
                    );
                }
            }
        }
    }

    /// `local_max_counters`, the client-IP prefixes and `failed_auth`.
    fn rate_limit_bounds(&mut self, rl: &RateLimitConfig) {
        if !(1..=10_000_000).contains(&rl.local_max_counters) {
            self.push(
                "rate_limit.local_max_counters",
                "must be between 1 and 10000000",
            );
        }
        if rl.ipv4_prefix > 32 {
            self.push("rate_limit.ipv4_prefix", "must be between 0 and 32");
        }
        if rl.ipv6_prefix > 128 {
            self.push("rate_limit.ipv6_prefix", "must be between 0 and 128");
        }
        let fa = &rl.failed_auth;
        if !(1..=1_000_000).contains(&fa.limit) {
            self.push(
                "rate_limit.failed_auth.limit",
                "must be between 1 and 1000000",
            );
        }
        if self.lenient("rate_limit.failed_auth.window", &fa.window) {
            let w = fa.window.ok().map_or(0, |d| d.0.as_millis());
            if !(1000..=86_400_000).contains(&w) || !w.is_multiple_of(1000) {
                self.push(
                    "rate_limit.failed_auth.window",
                    "must be whole seconds from 1s to 1d",
                );
            }
        }
    }

    fn rate_limit_rule(&mut self, at: &str, rule: &RateLimitRule, claims: &[&String]) {
        let name_ok = !rule.name.is_empty()
            && rule.name.len() <= 64
            && rule
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            self.push(
                format!("{at}.name"),
                "must be 1-64 characters of A-Z a-z 0-9 _ - .",
            );
        }
        let by_ok = match rule.by.as_str() {
            "ip" | "consumer" | "route" => Ok(()),
            by => match (by.strip_prefix("header:"), by.strip_prefix("claim:")) {
                (Some(h), _) => http::HeaderName::from_bytes(h.trim().as_bytes())
                    .map(|_| ())
                    .map_err(|_| format!("{h:?} is not a valid header name")),
                (_, Some(c)) if claims.iter().any(|k| k.as_str() == c.trim()) => Ok(()),
                (_, Some(c)) => Err(format!("claim {c:?} must be listed in [auth.jwt] claims_to_headers")),
                _ => Err(format!(
                    "{by:?}: use \"ip\", \"consumer\", \"route\", \"header:<name>\" or \"claim:<name>\""
                )),
            },
        };
        if let Err(e) = by_ok {
            self.push(format!("{at}.by"), e);
        }
        if rule.limit == 0 {
            self.push(format!("{at}.limit"), "must be at least 1");
        }
        if rule.cost == 0 || rule.cost > rule.limit.max(1) {
            self.push(format!("{at}.cost"), "must be between 1 and the limit");
        }
        if self.lenient(format!("{at}.window"), &rule.window) {
            let w = rule.window.ok().map_or(0, |d| d.0.as_millis());
            if !(1000..=30 * 86_400_000).contains(&w) || !w.is_multiple_of(1000) {
                self.push(
                    format!("{at}.window"),
                    "must be whole seconds from 1s to 30d",
                );
            } else {
                self.script_range(at, rule, w);
            }
        }
        if rule.algorithm == RateAlgorithm::SlidingLog
            && rule
                .plan_limits
                .values()
                .chain([&rule.limit])
                .any(|l| *l > 10_000)
        {
            self.push(
                format!("{at}.algorithm"),
                "sliding_log keeps one entry per request; use sliding_window for limits above 10000",
            );
        }
        for (plan, limit) in &rule.plan_limits {
            if *limit == 0 {
                self.push(format!("{at}.plan_limits.{plan}"), "must be at least 1");
            }
        }
    }

    /// The script computes `limit × window_ms` on doubles: past 2^53 its integers are no
    /// longer exact (and Redis' integer reply conversion would round), so such limits are
    /// refused rather than silently approximated.
    fn script_range(&mut self, at: &str, rule: &RateLimitRule, window_ms: u128) {
        let too_big = |limit: u64| u128::from(limit) * window_ms > strength::MAX_EXACT_SCRIPT_INT;
        let reason = "limit × window in ms must be at most 2^53 (e.g. at most 104249991 per day)";
        if too_big(rule.limit) {
            self.push(format!("{at}.limit"), reason);
        }
        for (plan, limit) in &rule.plan_limits {
            if too_big(*limit) {
                self.push(format!("{at}.plan_limits.{plan}"), reason);
            }
        }
    }
}

/// Longest lifetime of an API key (config `key_ttl`, admin `ttl`): keeps expiry arithmetic and
/// Redis `PEXPIRE` far from any overflow.
pub const MAX_KEY_TTL: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

/// First line of an unencrypted PKCS#8 PEM private key, the only kind `store.tls_key_file` takes.
pub const PKCS8_KEY_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";

/// A URL with everything before its last `@` (user and password) masked, so an issue about
/// the URL never echoes a password. The last `@` anywhere counts, since a password may hold
/// `/` or `@` itself; masking too much of an odd URL is the safe side.
fn without_userinfo(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    match rest.rfind('@') {
        Some(at) if scheme.is_empty() => format!("***{}", &rest[at..]),
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// Reads a PEM bundle of CA certificates, for `[store]`'s TLS files (upstreams' `ca_file` is
/// read by `proxy::pool`); it goes to the store when the store compiles its own section.
pub fn load_ca(file: &str) -> Result<Box<[pingora::tls::x509::X509]>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {file:?}: {e}"))?;
    let certs = pingora::tls::x509::X509::stack_from_pem(&pem)
        .map_err(|e| format!("{file:?} is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{file:?} holds no certificate"));
    }
    Ok(certs.into_boxed_slice())
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

    /// A self-signed certificate and its PKCS#8 key, made by the `openssl` command and written
    /// as `cert.pem` and `key.pem` in `dir`.
    fn write_cert_and_key(dir: &Path) -> (String, String) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let status = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command is needed (Debian package openssl)");
        assert!(status.success(), "openssl req failed");
        let text = |p: PathBuf| p.to_str().expect("utf-8 path").to_string();
        (text(cert), text(key))
    }

    fn store_issues(url: &str, tls: &str) -> Vec<String> {
        let found = issues(&format!("{BASE}\n[store]\nurl = \"{url}\"\n{tls}\n"));
        found
            .into_iter()
            .filter(|i| i.starts_with("store"))
            .collect()
    }

    #[test]
    fn store_url_issues_never_echo_a_password() {
        for url in [
            "http://user:PWSECRET1@127.0.0.1:6379",
            "user:PWSECRET1@127.0.0.1:6379",
            "redis://user:PWSECRET1@127.0.0.1:6379",
            "redis://user:PW/SECRET1@127.0.0.1:6379",
        ] {
            let found = store_issues(url, "");
            assert!(!found.is_empty(), "{url}: no issue");
            for issue in &found {
                assert!(
                    !issue.contains("PWSECRET1") && !issue.contains("SECRET1"),
                    "{url}: {issue}"
                );
            }
        }
        assert_eq!(
            without_userinfo("http://u:p@h:1/x"),
            "http://***@h:1/x",
            "the host stays, to say which URL is meant"
        );
        assert_eq!(without_userinfo("http://h:1/x"), "http://h:1/x");
    }

    #[test]
    fn store_tls_files_are_accepted_with_a_rediss_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert_and_key(dir.path());
        let tls =
            format!("tls_ca_file = {cert:?}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}");
        assert_eq!(
            store_issues("rediss://127.0.0.1:6380", &tls),
            Vec::<String>::new()
        );
        let ca_only = format!("tls_ca_file = {cert:?}");
        assert_eq!(
            store_issues("rediss://127.0.0.1:6380", &ca_only),
            Vec::<String>::new()
        );
    }

    #[test]
    fn store_tls_files_need_a_rediss_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert_and_key(dir.path());
        let tls =
            format!("tls_ca_file = {cert:?}\ntls_cert_file = {cert:?}\ntls_key_file = {key:?}");
        let found = store_issues("redis://127.0.0.1:6379", &tls);
        for field in ["tls_ca_file", "tls_cert_file", "tls_key_file"] {
            let expect = format!("store.{field}: only with a rediss:// url");
            assert!(
                found.iter().any(|f| f.starts_with(&expect)),
                "missing {expect:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), 3, "{found:#?}");
    }

    #[test]
    fn store_tls_files_are_refused_with_an_insecure_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, _) = write_cert_and_key(dir.path());
        let found = store_issues(
            "rediss://127.0.0.1:6380/#insecure",
            &format!("tls_ca_file = {cert:?}"),
        );
        assert!(
            found
                .iter()
                .any(|f| f.starts_with("store.tls_ca_file: is ignored with an #insecure url")),
            "{found:#?}"
        );
    }

    #[test]
    fn store_client_certificate_and_key_go_together() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert_and_key(dir.path());
        let url = "rediss://127.0.0.1:6380";
        let found = store_issues(url, &format!("tls_cert_file = {cert:?}"));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("store.tls_cert_file: needs tls_key_file"),
            "{found:#?}"
        );
        let found = store_issues(url, &format!("tls_key_file = {key:?}"));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("store.tls_key_file: needs tls_cert_file"),
            "{found:#?}"
        );
    }

    #[test]
    fn store_tls_files_must_be_readable_and_of_the_right_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_cert_and_key(dir.path());
        let rsa_key = dir.path().join("rsa.key");
        std::fs::write(
            &rsa_key,
            "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END RSA PRIVATE KEY-----\n",
        )
        .expect("write");
        let found = store_issues(
            "rediss://127.0.0.1:6380",
            "tls_ca_file = \"/nonexistent/ca.pem\"\ntls_cert_file = \"/nonexistent/c.pem\"\n\
             tls_key_file = \"/nonexistent/k.pem\"",
        );
        for field in ["tls_ca_file", "tls_cert_file", "tls_key_file"] {
            let expect = format!("store.{field}: cannot read \"/nonexistent/");
            assert!(
                found
                    .iter()
                    .any(|f| f.starts_with(&expect) && f.contains("No such file")),
                "missing {expect:?} with the OS error in {found:#?}"
            );
        }
        assert_eq!(found.len(), 3, "{found:#?}");

        let found = store_issues(
            "rediss://127.0.0.1:6380",
            &format!("tls_ca_file = {key:?}\ntls_cert_file = {cert:?}\ntls_key_file = {rsa_key:?}"),
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("store.tls_ca_file:"), "{found:#?}");
        assert!(
            found[1].starts_with("store.tls_key_file:") && found[1].contains("PKCS#8"),
            "{found:#?}"
        );
        assert!(
            !found.iter().any(|f| f.contains("c2VjcmV0")),
            "key content in a message: {found:#?}"
        );
    }

    #[test]
    fn out_of_range_bounds_and_weak_keys_are_reported_with_their_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let weak = dir.path().join("weak");
        std::fs::write(&weak, "short-key-1").expect("write");
        let strong = dir.path().join("strong");
        std::fs::write(&strong, "pk_4f1b0c9e2d7a8b3c6e5f1a2b3c4d5e6f").expect("write");
        let toml = format!(
            r#"{BASE}
[auth.cache]
negative_ttl = "2000y"

[rate_limit]
local_max_counters = 0
ipv4_prefix = 33
ipv6_prefix = 129
[rate_limit.failed_auth]
limit = 0
window = "500ms"

[auth.api_key]
key_ttl = "3651d"
keys = [
  {{ id = "weak", consumer = "c", key_file = {weak:?} }},
  {{ id = "strong", consumer = "c", key_file = {strong:?} }},
]

[[routes]]
name = "r"
upstream = "api"
rate_limits = [
  {{ name = "huge", by = "ip", limit = 104249992, window = "1d" }},
  {{ name = "fits", by = "ip", limit = 104249991, window = "1d" }},
  {{ name = "plans", by = "ip", limit = 10, window = "30d", plan_limits = {{ gold = 4000000 }} }},
]
"#
        );
        let found = issues(&toml);
        let expect = [
            "rate_limit.local_max_counters: must be between 1",
            "rate_limit.ipv4_prefix: must be between 0 and 32",
            "rate_limit.ipv6_prefix: must be between 0 and 128",
            "rate_limit.failed_auth.limit: must be between 1",
            "rate_limit.failed_auth.window: must be whole seconds",
            "auth.api_key.key_ttl: must be at most 3650d",
            "auth.cache.negative_ttl: must be at most 1d",
            "auth.api_key.keys[0].key_file: the key is too weak",
            "routes[0].rate_limits[0].limit: limit × window in ms must be at most 2^53",
            "routes[0].rate_limits[2].plan_limits.gold: limit × window in ms must be at most 2^53",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
        assert!(
            !found.iter().any(|f| f.contains("short-key-1")),
            "{found:#?}"
        );
    }
}

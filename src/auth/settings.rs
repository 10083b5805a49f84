//! `[auth]`, compiled once per load by auth itself: the API-key settings (header, query
//! parameter, the hash secret and the config-declared keys, each read once from its variable
//! or file and checked for strength), `[auth.jwt]` (keys loaded with the code the verifier
//! uses, so what compiles here verifies), and `[auth.cache]` (restart-only, compiled into the
//! process settings). Every problem is reported with its path in that one pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::AlgorithmFamily;

use super::api_key::{valid_key_id, StaticKey};
use super::jwks::{JwksSettings, PinnedKey};
use super::jwt::{claim_header, hmac_key, pem_key, supported_algorithm, JwtParts, JwtVerifier};
use super::{ApiKeySource, AuthShared, Authenticator, KeyHasher, KeyRecord, KeyStore};
use crate::config::strength::{self, MIN_HMAC_SECRET_BYTES};
use crate::config::{
    read_secret, ApiKeyConfig, AuthCacheConfig, AuthConfig, Issues, JwtConfig, JwtKeyConfig,
    StaticKeyConfig, MAX_KEY_TTL,
};
use crate::store::Store;

/// `[auth]` (but its cache), compiled: what an [`Authenticator`] is built from.
pub struct AuthSettings {
    /// `[auth.api_key]`, when configured.
    api_key: Option<ApiKeySettings>,
    /// The verifier of `[auth.jwt]`, when configured.
    jwt: Option<Arc<JwtVerifier>>,
    /// The targets of `claims_to_headers`.
    claim_headers: Vec<HeaderName>,
}

/// `[auth.api_key]`, compiled.
pub struct ApiKeySettings {
    /// Where keys are read from.
    source: ApiKeySource,
    /// How keys are hashed (HMAC under the hash secret, read once, or plain SHA-256).
    hasher: KeyHasher,
    /// Lifetime of keys created without one, and of config-declared keys.
    key_ttl: Duration,
    /// The config-declared keys, their values hashed (and not kept).
    static_keys: Vec<StaticKey>,
}

/// What `claims_to_headers` maps each listed claim to; `None` when its header is unusable
/// (reported under `auth.jwt.claims_to_headers`).
#[derive(Debug, Clone, Default)]
pub struct ClaimHeaders(BTreeMap<String, Option<HeaderName>>);

impl ClaimHeaders {
    /// `None`: the claim is not listed; `Some(None)`: listed with an unusable header.
    pub fn get(&self, claim: &str) -> Option<Option<&HeaderName>> {
        self.0.get(claim).map(Option::as_ref)
    }
}

/// `[auth.cache]`, compiled: the sizes and lifetimes of the local decision tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Known credentials kept.
    pub(crate) capacity: u64,
    /// Longest time a decision is kept.
    pub(crate) ttl: Duration,
    /// Unknown credentials kept.
    pub(crate) negative_capacity: u64,
    /// How long an unknown credential is remembered.
    pub(crate) negative_ttl: Duration,
}

/// The longest a cached decision may live: the cache library panics on lifetimes past 1000
/// years, and a day is plenty for a cache.
const MAX_CACHE_TTL: Duration = Duration::from_secs(86_400);

impl CacheSettings {
    /// Compiles `[auth.cache]`; `None` when anything is wrong (each problem is in `issues`).
    pub fn compile(c: &AuthCacheConfig, issues: &mut Issues) -> Option<CacheSettings> {
        let before = issues.len();
        if c.capacity == 0 || c.negative_capacity == 0 {
            issues.push(
                "auth.cache",
                "capacity and negative_capacity must be greater than zero",
            );
        }
        let ttl = issues.positive("auth.cache.ttl", &c.ttl);
        let negative_ttl = issues.positive("auth.cache.negative_ttl", &c.negative_ttl);
        for (field, ttl) in [("ttl", ttl), ("negative_ttl", negative_ttl)] {
            if ttl.is_some_and(|d| d > MAX_CACHE_TTL) {
                issues.push(format!("auth.cache.{field}"), "must be at most 1d");
            }
        }
        if issues.len() != before {
            return None;
        }
        Some(CacheSettings {
            capacity: c.capacity as u64,
            ttl: ttl?,
            negative_capacity: c.negative_capacity as u64,
            negative_ttl: negative_ttl?,
        })
    }
}

/// `[auth]` compiled, and what `claims_to_headers` says even when something else in `[auth]`
/// is wrong (the rate-limit rules of routes that count by a claim are checked against it).
pub struct CompiledAuth {
    /// The settings; `None` when `[auth]` had a problem.
    pub settings: Option<AuthSettings>,
    /// Claim → header.
    pub claims: ClaimHeaders,
}

impl AuthSettings {
    /// Compiles `[auth]` but its cache: `has_store` says whether `[store]` is configured
    /// (config-declared keys need the in-process store); `previous` is the running verifier,
    /// whose JWKS client an unchanged `[auth.jwt]` keeps. Secrets and key files are read here,
    /// once per compile, so a rotated file takes effect on reload.
    pub fn compile(
        config: &AuthConfig,
        has_store: bool,
        previous: Option<&JwtVerifier>,
        issues: &mut Issues,
    ) -> CompiledAuth {
        let before = issues.len();
        let api_key = config
            .api_key
            .as_ref()
            .and_then(|k| compile_api_key(k, has_store, issues));
        let (jwt, claims) = match &config.jwt {
            None => (None, ClaimHeaders::default()),
            Some(j) => {
                let (parts, claims) = compile_jwt(j, "auth.jwt", issues);
                let jwt = parts.and_then(|parts| {
                    JwtVerifier::from_parts(j, parts, previous)
                        .map_err(|e| issues.push(e.path(), e.reason()))
                        .ok()
                });
                (jwt.map(Arc::new), claims)
            }
        };
        let settings = (issues.len() == before).then(|| AuthSettings {
            api_key,
            jwt,
            claim_headers: claims.0.values().flatten().cloned().collect(),
        });
        CompiledAuth { settings, claims }
    }

    /// The authenticator over `shared` (its store holds the keys).
    pub fn into_authenticator(self, shared: &Arc<AuthShared>) -> Authenticator {
        let (api_key, static_keys) = match self.api_key {
            None => (None, Vec::new()),
            Some(k) => {
                let keys = k.key_store(shared.store());
                (Some((k.source, keys)), k.static_keys)
            }
        };
        Authenticator::new(shared.clone(), api_key, self.jwt, self.claim_headers)
            .with_static_keys(static_keys)
    }
}

impl ApiKeySettings {
    /// The API keys in `store`, hashed and living as configured.
    pub fn key_store(&self, store: &Arc<Store>) -> KeyStore {
        KeyStore::new(store.clone(), self.hasher.clone(), self.key_ttl)
    }
}

// === compile [auth.api_key] ===

fn compile_api_key(
    k: &ApiKeyConfig,
    has_store: bool,
    issues: &mut Issues,
) -> Option<ApiKeySettings> {
    let before = issues.len();
    let header = HeaderName::from_bytes(k.header.as_bytes())
        .map_err(|_| {
            issues.push(
                "auth.api_key.header",
                format!("{:?} is not a valid header name", k.header),
            )
        })
        .ok();
    if k.query_param
        .as_deref()
        .is_some_and(|q| q.is_empty() || q.contains(['&', '=', '#']))
    {
        issues.push("auth.api_key.query_param", "must be a plain parameter name");
    }
    if k.hash_secret_env.is_some() && k.hash_secret_file.is_some() {
        issues.push(
            "auth.api_key",
            "give hash_secret_env or hash_secret_file, not both",
        );
    }
    let hash_secret = secret(
        issues,
        "auth.api_key.hash_secret",
        k.hash_secret_env.as_deref(),
        k.hash_secret_file.as_deref(),
    );
    let key_ttl = issues.positive("auth.api_key.key_ttl", &k.key_ttl);
    if key_ttl.is_some_and(|d| d > MAX_KEY_TTL) {
        issues.push("auth.api_key.key_ttl", "must be at most 3650d (10 years)");
    }
    if has_store && !k.keys.is_empty() {
        issues.push(
            "auth.api_key.keys",
            "keys are declared in the config only with the in-process store; with [store] create them with the admin API or `portcullis keys create`",
        );
    }
    let values = declared_key_values(&k.keys, issues);
    if issues.len() != before {
        return None;
    }
    let hasher = KeyHasher::new(hash_secret.map(String::into_bytes));
    let key_ttl = key_ttl?;
    let now = crate::principal::unix_now();
    let static_keys = k
        .keys
        .iter()
        .zip(values)
        .map(|(sk, value)| StaticKey {
            record: KeyRecord {
                id: sk.id.clone(),
                consumer: sk.consumer.clone(),
                plan: sk.plan.clone(),
                scopes: sk.scopes.clone(),
                labels: Default::default(),
                created_at: now,
                expires_at: now + key_ttl.as_secs(),
            },
            hash: hasher.hash(&value),
        })
        .collect();
    Some(ApiKeySettings {
        source: ApiKeySource {
            header: header?,
            query_param: k.query_param.clone(),
        },
        hasher,
        key_ttl,
        static_keys,
    })
}

/// The value of every config-declared key, read once and checked; one per key when all are
/// good (otherwise the problems are in `issues` and the list is short).
fn declared_key_values(keys: &[StaticKeyConfig], issues: &mut Issues) -> Vec<String> {
    let mut ids = HashSet::new();
    let mut values = Vec::with_capacity(keys.len());
    for (i, sk) in keys.iter().enumerate() {
        let at = format!("auth.api_key.keys[{i}]");
        if !valid_key_id(&sk.id) {
            issues.push(
                format!("{at}.id"),
                "must be 1-64 characters of A-Z a-z 0-9 _ -",
            );
        }
        if !ids.insert(sk.id.as_str()) {
            issues.push(
                format!("{at}.id"),
                format!("key id {:?} is used twice", sk.id),
            );
        }
        if sk.consumer.is_empty() {
            issues.push(format!("{at}.consumer"), "must not be empty");
        }
        if sk.key_env.is_some() == sk.key_file.is_some() {
            issues.push(at.clone(), "give exactly one of key_env or key_file");
            continue;
        }
        let value = secret(
            issues,
            &format!("{at}.key"),
            sk.key_env.as_deref(),
            sk.key_file.as_deref(),
        );
        if let Some(value) = value.filter(|v| strong_enough(&at, sk, v, issues)) {
            values.push(value);
        }
    }
    values
}

/// A config-declared key must carry at least 128 bits by [`strength::estimated_entropy_bits`].
/// The message never quotes the key.
fn strong_enough(at: &str, sk: &StaticKeyConfig, key: &str, issues: &mut Issues) -> bool {
    let bits = strength::estimated_entropy_bits(key);
    if bits >= strength::MIN_API_KEY_BITS {
        return true;
    }
    let field = if sk.key_env.is_some() {
        "key_env"
    } else {
        "key_file"
    };
    issues.push(
        format!("{at}.{field}"),
        format!(
            "the key is too weak (about {bits:.0} bits; at least 128 needed): use 22 or \
             more random base64url characters or 32 hex digits, e.g. from \
             `portcullis keys create` or `openssl rand -base64 24`"
        ),
    );
    false
}

/// A secret given by `<field>_env` / `<field>_file`, read once: a named variable must be set.
fn secret(
    issues: &mut Issues,
    field: &str,
    env: Option<&str>,
    file: Option<&str>,
) -> Option<String> {
    match read_secret(env, file) {
        Ok(Some(value)) => Some(value),
        Ok(None) => {
            if let Some(var) = env {
                issues.push(
                    format!("{field}_env"),
                    format!("environment variable {var} is not set"),
                );
            }
            None
        }
        Err(e) => {
            let which = if file.is_some() && env.is_none() {
                "_file"
            } else {
                "_env"
            };
            issues.push(format!("{field}{which}"), e.to_string());
            None
        }
    }
}

// === compile [auth.jwt] ===

/// Compiles `[auth.jwt]` found at `at` (e.g. `auth.jwt`): the verifier's parts when nothing
/// is wrong, and what `claims_to_headers` maps each claim to in any case.
pub(crate) fn compile_jwt(
    cfg: &JwtConfig,
    at: &str,
    issues: &mut Issues,
) -> (Option<JwtParts>, ClaimHeaders) {
    let before = issues.len();
    let leeway = issues.value(format!("{at}.leeway"), &cfg.leeway);
    let refresh = issues.positive(format!("{at}.jwks_refresh"), &cfg.jwks_refresh);
    let min_refetch_interval = issues.positive(
        format!("{at}.jwks_min_refetch_interval"),
        &cfg.jwks_min_refetch_interval,
    );
    let timeout = issues.positive(format!("{at}.jwks_timeout"), &cfg.jwks_timeout);
    if cfg.keys.is_empty() && cfg.jwks_url.is_none() {
        issues.push(
            at,
            "no keys and no jwks_url: give [[auth.jwt.keys]] or jwks_url",
        );
    }
    if let Some(url) = &cfg.jwks_url {
        if let Some(reason) = jwks_url_problem(url) {
            issues.push(format!("{at}.jwks_url"), reason);
        }
    }
    for (field, claim) in [
        ("consumer_claim", &cfg.consumer_claim),
        ("scopes_claim", &cfg.scopes_claim),
    ] {
        if claim.trim().is_empty() {
            issues.push(format!("{at}.{field}"), "must not be empty");
        }
    }
    let mut claims = BTreeMap::new();
    let mut headers = Vec::with_capacity(cfg.claims_to_headers.len());
    for (claim, header) in &cfg.claims_to_headers {
        match claim_header(header) {
            Ok(name) => {
                headers.push((claim.clone(), name.clone()));
                claims.insert(claim.clone(), Some(name));
            }
            Err(reason) => {
                issues.push(format!("{at}.claims_to_headers.{claim}"), reason);
                claims.insert(claim.clone(), None);
            }
        }
    }
    let mut kids: HashMap<&str, usize> = HashMap::new();
    let mut keys = Vec::with_capacity(cfg.keys.len());
    for (i, key) in cfg.keys.iter().enumerate() {
        let key_at = format!("{at}.keys[{i}]");
        if let Some(kid) = &key.kid {
            if let Some(first) = kids.insert(kid, i) {
                issues.push(
                    format!("{key_at}.kid"),
                    format!("kid {kid:?} is already used by keys[{first}]"),
                );
            }
        }
        keys.extend(compile_key(key, &key_at, issues));
    }
    let claims = ClaimHeaders(claims);
    if issues.len() != before {
        return (None, claims);
    }
    let jwks = match (&cfg.jwks_url, refresh, min_refetch_interval, timeout) {
        (None, ..) => None,
        (Some(url), Some(refresh), Some(min_refetch_interval), Some(timeout)) => {
            Some(JwksSettings {
                url: url.clone(),
                refresh,
                min_refetch_interval,
                timeout,
            })
        }
        _ => return (None, claims),
    };
    let parts = leeway.map(|leeway| JwtParts {
        keys,
        leeway: leeway.0,
        headers,
        jwks,
    });
    (parts, claims)
}

/// Structure first (which fields a key of this algorithm takes), then loads the key, reading
/// its secret or file once.
fn compile_key(key: &JwtKeyConfig, at: &str, issues: &mut Issues) -> Option<PinnedKey> {
    let algorithm = match supported_algorithm(&key.algorithm) {
        Ok(a) => a,
        Err(e) => {
            issues.push(format!("{at}.algorithm"), e.to_string());
            return None;
        }
    };
    let before = issues.len();
    let secret_field = if key.secret_env.is_some() {
        "secret_env"
    } else {
        "secret_file"
    };
    let hmac = algorithm.family() == AlgorithmFamily::Hmac;
    if hmac {
        if key.public_key_file.is_some() {
            let reason =
                format!("{algorithm:?} keys are shared secrets: give secret_env or secret_file");
            issues.push(format!("{at}.public_key_file"), reason);
        }
        match (&key.secret_env, &key.secret_file) {
            (Some(_), Some(_)) => issues.push(at, "give secret_env or secret_file, not both"),
            (None, None) => {
                issues.push(at, format!("{algorithm:?} needs secret_env or secret_file"))
            }
            _ => {}
        }
    } else {
        if key.secret_env.is_some() || key.secret_file.is_some() {
            let reason = format!(
                "{algorithm:?} verifies with a public key: give public_key_file, not a secret"
            );
            issues.push(format!("{at}.{secret_field}"), reason);
        }
        if key.public_key_file.is_none() {
            issues.push(
                format!("{at}.public_key_file"),
                format!("required for {algorithm:?}"),
            );
        }
    }
    if issues.len() != before {
        return None;
    }
    let loaded = if hmac {
        let secret = read_secret(key.secret_env.as_deref(), key.secret_file.as_deref());
        // RFC 7518 §3.2: an HMAC key must be at least as long as the hash, 256 bits for
        // HS256; a shorter secret can be brute-forced from one token. The message never
        // quotes the secret.
        if let Ok(Some(s)) = &secret {
            if s.len() < MIN_HMAC_SECRET_BYTES {
                issues.push(
                    format!("{at}.{secret_field}"),
                    format!(
                        "the HMAC secret is {} bytes; RFC 7518 requires at least \
                         {MIN_HMAC_SECRET_BYTES} (256 bits), e.g. `openssl rand -base64 32`",
                        s.len()
                    ),
                );
                return None;
            }
        }
        hmac_key(key, algorithm, secret).map_err(|e| (secret_field, e))
    } else {
        let file = key.public_key_file.as_deref().unwrap_or_default();
        pem_key(key, algorithm, file).map_err(|e| ("public_key_file", e))
    };
    loaded
        .map_err(|(field, e)| issues.push(format!("{at}.{field}"), e.to_string()))
        .ok()
}

fn jwks_url_problem(url: &str) -> Option<String> {
    // Before anything that quotes the URL: the message must not repeat a password.
    if has_userinfo(url) {
        return Some(
            "must not contain user:password@ (the URL is shown in logs); \
             use a URL that needs no credentials"
                .into(),
        );
    }
    let hint = "write an absolute http:// or https:// URL, \
                e.g. \"https://idp.example.com/.well-known/jwks.json\"";
    let shown = without_query(url);
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Some(format!("{shown:?} is not a URL; {hint}"));
    };
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    if !scheme_ok || !host_ok {
        return Some(format!("{shown:?} is not an http(s) URL; {hint}"));
    }
    None
}

/// `url` with its query and fragment masked: a JWKS URL may carry a token there, and the
/// issue reaches `check` output and the log of a failed reload.
fn without_query(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(at) => format!("{}?***", &url[..at]),
        None => url.to_string(),
    }
}

/// Whether the authority of `url` (between `scheme://` and the first `/`, `?` or `#`) has a
/// userinfo part.
fn has_userinfo(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .split(['/', '?', '#'])
        .next()
        .is_some_and(|authority| authority.contains('@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_jwks_url_is_quoted_without_its_query() {
        let found = jwks_url_problem("ftp://idp.example.com/jwks?token=S3cretJwksToken")
            .expect("not http(s)");
        assert!(!found.contains("S3cretJwksToken"), "{found}");
        assert!(found.contains("ftp://idp.example.com/jwks?***"), "{found}");
    }
    use crate::auth::jwt::test_support::{config, keys};

    fn check(toml: &str) -> Vec<(String, String)> {
        let mut issues = Issues::default();
        let (parts, _) = compile_jwt(&config(toml), "auth.jwt", &mut issues);
        let found: Vec<(String, String)> = issues
            .into_vec()
            .into_iter()
            .map(|i| (i.path, i.reason))
            .collect();
        assert_eq!(parts.is_none(), !found.is_empty(), "{found:#?}");
        found
    }

    fn paths(issues: &[(String, String)]) -> Vec<&str> {
        issues.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn a_valid_config_has_no_issues() {
        let k = keys();
        let dir = tempfile::tempdir().expect("tempdir");
        let rsa = k.rsa.write_public(dir.path(), "rsa.pem");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret-s3cret-s3cret-s3cret-s3cret").expect("write");
        let toml = format!(
            "jwks_url = \"https://idp.example.com/.well-known/jwks.json\"\n\
             [claims_to_headers]\nemail = \"x-user-email\"\n\
             [[keys]]\nkid = \"a\"\nalgorithm = \"RS256\"\npublic_key_file = {rsa:?}\n\
             [[keys]]\nkid = \"b\"\nalgorithm = \"HS512\"\nsecret_file = {secret:?}\n"
        );
        assert_eq!(check(&toml), vec![]);
        assert_eq!(check("jwks_url = \"http://127.0.0.1:8000/jwks\""), vec![]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let k = keys();
        let dir = tempfile::tempdir().expect("tempdir");
        let rsa = k.rsa.write_public(dir.path(), "rsa.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
        )
        .expect("write");
        let toml = format!(
            "leeway = \"soon\"\njwks_timeout = \"0s\"\njwks_url = \"ftp://idp/jwks\"\n\
             [claims_to_headers]\nemail = \"bad header\"\ntenant = \"Host\"\n\
             [[keys]]\nkid = \"a\"\nalgorithm = \"HS999\"\n\
             [[keys]]\nkid = \"a\"\nalgorithm = \"HS256\"\n\
             [[keys]]\nalgorithm = \"HS256\"\nsecret_env = \"X\"\nsecret_file = \"/x\"\n\
             [[keys]]\nalgorithm = \"RS256\"\n\
             [[keys]]\nalgorithm = \"ES256\"\npublic_key_file = {rsa:?}\nsecret_env = \"X\"\n\
             [[keys]]\nalgorithm = \"RS256\"\npublic_key_file = {garbage:?}\n\
             [[keys]]\nalgorithm = \"RS256\"\npublic_key_file = \"/nonexistent.pem\"\n\
             [[keys]]\nalgorithm = \"HS256\"\nsecret_env = \"PORTCULLIS_TEST_SURELY_UNSET_VAR\"\n\
             [[keys]]\nalgorithm = \"ES256\"\npublic_key_file = {rsa:?}\n"
        );
        let found = check(&toml);
        let expect = [
            "auth.jwt.leeway",
            "auth.jwt.jwks_timeout",
            "auth.jwt.jwks_url",
            "auth.jwt.claims_to_headers.email",
            "auth.jwt.claims_to_headers.tenant",
            "auth.jwt.keys[0].algorithm",
            "auth.jwt.keys[1].kid",
            "auth.jwt.keys[1]",
            "auth.jwt.keys[2]",
            "auth.jwt.keys[3].public_key_file",
            "auth.jwt.keys[4].secret_env",
            "auth.jwt.keys[5].public_key_file",
            "auth.jwt.keys[6].public_key_file",
            "auth.jwt.keys[7].secret_env",
            "auth.jwt.keys[8].public_key_file",
        ];
        assert_eq!(paths(&found), expect, "{found:#?}");
        let reason = |path: &str| &found.iter().find(|(p, _)| p == path).expect("reported").1;
        assert!(reason("auth.jwt.keys[0].algorithm")
            .starts_with("\"HS999\" is not supported; use one of"));
        assert!(reason("auth.jwt.keys[1].kid").contains("keys[0]"));
        assert!(reason("auth.jwt.keys[7].secret_env").contains("is not set"));
        assert!(reason("auth.jwt.leeway").starts_with("invalid duration"));
    }

    #[test]
    fn an_hmac_secret_shorter_than_256_bits_is_reported_without_quoting_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = dir.path().join("short");
        std::fs::write(&short, "a-31-byte-secret-abcdefghijklmn").expect("write");
        let exact = dir.path().join("exact");
        std::fs::write(&exact, "a-32-byte-secret-abcdefghijklmno").expect("write");
        let toml = format!(
            "[[keys]]\nalgorithm = \"HS256\"\nsecret_file = {short:?}\n\
             [[keys]]\nalgorithm = \"HS512\"\nsecret_file = {exact:?}\n"
        );
        let found = check(&toml);
        assert_eq!(
            paths(&found),
            vec!["auth.jwt.keys[0].secret_file"],
            "{found:#?}"
        );
        assert!(found[0].1.contains("31 bytes") && found[0].1.contains("RFC 7518"));
        assert!(!found[0].1.contains("abcdefghijklmn"), "{found:#?}");
    }

    #[test]
    fn a_jwks_url_with_userinfo_is_refused_without_quoting_it() {
        for url in [
            "https://user:s3cr3t@idp.example.com/jwks.json",
            "https://s3cr3t@idp.example.com",
            "ftp://user:s3cr3t@idp/jwks",
        ] {
            let found = check(&format!("jwks_url = {url:?}"));
            assert_eq!(paths(&found), vec!["auth.jwt.jwks_url"], "{url}");
            assert!(found[0].1.contains("user:password@"), "{found:?}");
            assert!(!found[0].1.contains("s3cr3t"), "{found:?}");
        }
        assert_eq!(
            check("jwks_url = \"https://idp.example.com/jwks?owner=a@b.example\""),
            vec![],
            "an @ in the query is not userinfo"
        );
    }

    #[test]
    fn a_config_without_any_key_source_is_reported() {
        assert_eq!(paths(&check("")), vec!["auth.jwt"]);
        assert_eq!(
            paths(&check("jwks_url = \"idp.example.com/jwks\"")),
            vec!["auth.jwt.jwks_url"]
        );
        assert_eq!(
            paths(&check("jwks_url = \"https:///jwks\"")),
            vec!["auth.jwt.jwks_url"]
        );
    }
}

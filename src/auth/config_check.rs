//! The checks of `[auth]` that need auth's own code: `[auth.jwt]` (keys are loaded with the
//! same code the verifier uses, [`crate::auth::jwt::load_key`], so a config that passes here
//! builds a verifier) and the ids of config-declared API keys. `config` validates the rest of
//! the file and imports nothing of ours; [`config_issues`] runs in `setup::load`.

use std::collections::HashMap;

use jsonwebtoken::AlgorithmFamily;

use crate::auth::api_key::valid_key_id;
use crate::auth::jwt::{claim_header, load_key, supported_algorithm};
use crate::config::strength::MIN_HMAC_SECRET_BYTES;
use crate::config::{read_secret, Config, Dur, Issue, JwtConfig, JwtKeyConfig, Lenient};

/// Every problem of the config's `[auth]` section that only auth can judge, with its path.
pub fn config_issues(config: &Config) -> Vec<Issue> {
    let auth = &config.auth;
    let mut issues = Vec::new();
    if let Some(k) = &auth.api_key {
        for (i, sk) in k.keys.iter().enumerate() {
            if !valid_key_id(&sk.id) {
                issues.push(Issue {
                    path: format!("auth.api_key.keys[{i}].id"),
                    reason: "must be 1-64 characters of A-Z a-z 0-9 _ -".into(),
                });
            }
        }
    }
    if let Some(jwt) = &auth.jwt {
        issues.extend(
            check_jwt(jwt, "auth.jwt")
                .into_iter()
                .map(|(path, reason)| Issue { path, reason }),
        );
    }
    issues
}

/// Checks `[auth.jwt]` found at `at` (e.g. `auth.jwt`); returns (path, reason) per problem.
pub(crate) fn check_jwt(cfg: &JwtConfig, at: &str) -> Vec<(String, String)> {
    let mut issues = Vec::new();
    let mut push = |path: String, reason: String| issues.push((path, reason));

    if let Some(e) = cfg.leeway.error() {
        push(format!("{at}.leeway"), e.to_string());
    }
    for (field, value) in [
        ("jwks_refresh", &cfg.jwks_refresh),
        ("jwks_min_refetch_interval", &cfg.jwks_min_refetch_interval),
        ("jwks_timeout", &cfg.jwks_timeout),
    ] {
        if let Some(reason) = positive_duration(value) {
            push(format!("{at}.{field}"), reason);
        }
    }
    if cfg.keys.is_empty() && cfg.jwks_url.is_none() {
        push(
            at.to_string(),
            "no keys and no jwks_url: give [[auth.jwt.keys]] or jwks_url".into(),
        );
    }
    if let Some(url) = &cfg.jwks_url {
        if let Some(reason) = jwks_url_problem(url) {
            push(format!("{at}.jwks_url"), reason);
        }
    }
    for (field, claim) in [
        ("consumer_claim", &cfg.consumer_claim),
        ("scopes_claim", &cfg.scopes_claim),
    ] {
        if claim.trim().is_empty() {
            push(format!("{at}.{field}"), "must not be empty".into());
        }
    }
    for (claim, header) in &cfg.claims_to_headers {
        if let Err(reason) = claim_header(header) {
            push(format!("{at}.claims_to_headers.{claim}"), reason);
        }
    }
    let mut kids: HashMap<&str, usize> = HashMap::new();
    for (i, key) in cfg.keys.iter().enumerate() {
        let key_at = format!("{at}.keys[{i}]");
        if let Some(kid) = &key.kid {
            if let Some(first) = kids.insert(kid, i) {
                push(
                    format!("{key_at}.kid"),
                    format!("kid {kid:?} is already used by keys[{first}]"),
                );
            }
        }
        for (path, reason) in check_key(key, &key_at) {
            push(path, reason);
        }
    }
    issues
}

/// Structure first (which fields a key of this algorithm takes), then loads the key.
fn check_key(key: &JwtKeyConfig, at: &str) -> Vec<(String, String)> {
    let algorithm = match supported_algorithm(&key.algorithm) {
        Ok(a) => a,
        Err(e) => return vec![(format!("{at}.algorithm"), e.to_string())],
    };
    let mut issues = Vec::new();
    let secret_field = if key.secret_env.is_some() {
        "secret_env"
    } else {
        "secret_file"
    };
    if algorithm.family() == AlgorithmFamily::Hmac {
        if key.public_key_file.is_some() {
            let reason =
                format!("{algorithm:?} keys are shared secrets: give secret_env or secret_file");
            issues.push((format!("{at}.public_key_file"), reason));
        }
        match (&key.secret_env, &key.secret_file) {
            (Some(_), Some(_)) => issues.push((
                at.to_string(),
                "give secret_env or secret_file, not both".into(),
            )),
            (None, None) => issues.push((
                at.to_string(),
                format!("{algorithm:?} needs secret_env or secret_file"),
            )),
            _ => {}
        }
    } else {
        if key.secret_env.is_some() || key.secret_file.is_some() {
            let reason = format!(
                "{algorithm:?} verifies with a public key: give public_key_file, not a secret"
            );
            issues.push((format!("{at}.{secret_field}"), reason));
        }
        if key.public_key_file.is_none() {
            issues.push((
                format!("{at}.public_key_file"),
                format!("required for {algorithm:?}"),
            ));
        }
    }
    if issues.is_empty() && algorithm.family() == AlgorithmFamily::Hmac {
        if let Some(reason) = weak_hmac_secret(key) {
            issues.push((format!("{at}.{secret_field}"), reason));
        }
    }
    if issues.is_empty() {
        if let Err(e) = load_key(key) {
            let field = if algorithm.family() == AlgorithmFamily::Hmac {
                secret_field
            } else {
                "public_key_file"
            };
            issues.push((format!("{at}.{field}"), e.to_string()));
        }
    }
    issues
}

/// RFC 7518 §3.2: an HMAC key must be at least as long as the hash, 256 bits for HS256; a
/// shorter secret can be brute-forced from one token. The message never quotes the secret.
fn weak_hmac_secret(key: &JwtKeyConfig) -> Option<String> {
    let secret = read_secret(key.secret_env.as_deref(), key.secret_file.as_deref()).ok()??;
    (secret.len() < MIN_HMAC_SECRET_BYTES).then(|| {
        format!(
            "the HMAC secret is {} bytes; RFC 7518 requires at least {MIN_HMAC_SECRET_BYTES} \
             (256 bits), e.g. `openssl rand -base64 32`",
            secret.len()
        )
    })
}

fn positive_duration(value: &Lenient<Dur>) -> Option<String> {
    match (value.error(), value.ok()) {
        (Some(e), _) => Some(e.to_string()),
        (None, Some(d)) if d.0.is_zero() => Some("must be greater than zero".into()),
        _ => None,
    }
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
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Some(format!("{url:?} is not a URL; {hint}"));
    };
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    if !scheme_ok || !host_ok {
        return Some(format!("{url:?} is not an http(s) URL; {hint}"));
    }
    None
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
    use crate::auth::jwt::test_support::{config, keys};

    fn check(toml: &str) -> Vec<(String, String)> {
        check_jwt(&config(toml), "auth.jwt")
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

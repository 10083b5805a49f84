//! JWT cost per algorithm (HS256, RS256 2048-bit, ES256):
//! - `jwt_verify/<alg>`: the full `JwtVerifier::verify` path (parse, header checks, key
//!   lookup, signature, claims): what a token costs the first time it is seen;
//! - `jwt_authenticate/miss_<alg>`: `Authenticator::authenticate` for a request whose token is
//!   not in the local tier (verify, then cache the decision; the cache is cleared each time);
//! - `jwt_authenticate/hit_<alg>`: the same call once the decision is cached: what every later
//!   request with that token costs (no signature check, no store round trip).
//!
//! Keys are generated at start with the `openssl` command into a temporary directory.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pingora::http::RequestHeader;
use portcullis::auth::jwt::JwtVerifier;
use portcullis::auth::{
    AuthMetrics, AuthShared, Authenticator, CacheMetrics, DecisionCache, RouteAuth,
};
use portcullis::config::{AuthMethod, JwtConfig};
use portcullis::store::Store;

fn openssl(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the openssl command is installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write to openssl");
    let out = child.wait_with_output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

/// Generates a key pair; writes the public half to `dir/name` and returns the private PEM.
fn key_pair(dir: &Path, name: &str, genpkey: &[&str]) -> Vec<u8> {
    let private = openssl(&[&["genpkey"], genpkey].concat(), b"");
    std::fs::write(dir.join(name), openssl(&["pkey", "-pubout"], &private))
        .expect("write public key");
    private
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "sub": "bench-user", "iss": "https://idp.example", "aud": "api",
        "exp": now + 24 * 3600, "iat": now, "scope": "read write",
    });
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, key).expect("sign")
}

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = b"bench-secret-bench-secret-bench-secret-0123";
    std::fs::write(dir.path().join("secret"), secret).expect("write secret");
    let rsa = key_pair(
        dir.path(),
        "rsa.pem",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ec = key_pair(
        dir.path(),
        "ec.pem",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let d = dir.path();
    let toml = format!(
        "issuer = \"https://idp.example\"\naudiences = [\"api\"]\n\
         [[keys]]\nkid = \"hs\"\nalgorithm = \"HS256\"\nsecret_file = {:?}\n\
         [[keys]]\nkid = \"rs\"\nalgorithm = \"RS256\"\npublic_key_file = {:?}\n\
         [[keys]]\nkid = \"es\"\nalgorithm = \"ES256\"\npublic_key_file = {:?}\n",
        d.join("secret"),
        d.join("rsa.pem"),
        d.join("ec.pem"),
    );
    let cfg: JwtConfig = toml::from_str(&toml).expect("bench config");
    let verifier = Arc::new(JwtVerifier::new(&cfg).expect("verifier"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let cases = [
        (
            "hs256",
            token(Algorithm::HS256, "hs", &EncodingKey::from_secret(secret)),
        ),
        (
            "rs256",
            token(
                Algorithm::RS256,
                "rs",
                &EncodingKey::from_rsa_pem(&rsa).expect("rsa key"),
            ),
        ),
        (
            "es256",
            token(
                Algorithm::ES256,
                "es",
                &EncodingKey::from_ec_pem(&ec).expect("ec key"),
            ),
        ),
    ];
    let mut group = c.benchmark_group("jwt_verify");
    for (name, token) in &cases {
        runtime
            .block_on(verifier.verify(token))
            .expect("bench token verifies");
        group.bench_function(*name, |b| {
            b.iter(|| runtime.block_on(verifier.verify(token)))
        });
    }
    group.finish();

    let registry = prometheus::Registry::new();
    let shared = Arc::new(AuthShared::new(
        Store::from_config(None, &registry).expect("in-process store"),
        DecisionCache::new(
            100_000,
            Duration::from_secs(300),
            10_000,
            Duration::from_secs(5),
            CacheMetrics::new(&registry),
        ),
        AuthMetrics::new(&registry),
    ));
    let auth = Authenticator::new(shared.clone(), None, Some(verifier.clone()), Vec::new());
    let route = RouteAuth {
        methods: vec![AuthMethod::Jwt],
        ..RouteAuth::default()
    };
    let mut group = c.benchmark_group("jwt_authenticate");
    for (name, token) in &cases {
        let mut req = RequestHeader::build("GET", b"/orders", None).expect("request");
        req.insert_header("authorization", format!("Bearer {token}"))
            .expect("header");
        let authenticate = || {
            runtime
                .block_on(auth.authenticate(&req, "bench", &route))
                .expect("bench token authenticates")
                .expect("a principal")
        };
        group.bench_function(format!("miss_{name}"), |b| {
            b.iter(|| {
                shared.clear_decisions();
                authenticate()
            })
        });
        authenticate();
        group.bench_function(format!("hit_{name}"), |b| b.iter(authenticate));
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);

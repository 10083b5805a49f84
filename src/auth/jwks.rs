//! Verification keys: keys pinned to one algorithm, and the JWKS client that keeps an identity
//! provider's published key set.
//!
//! A [`PinnedKey`] is a public key or HMAC secret together with the single algorithm it may
//! verify; the algorithm comes from the config or from the JWK, never from a token.
//!
//! The [`JwksClient`] fetches `jwks_url`, keeps the last good [`KeySet`] in an `ArcSwap` (a
//! failed fetch keeps serving the old set), refreshes it in the background and refetches on
//! demand when a token names an unknown `kid`, at most once per `jwks_min_refetch_interval`.
//! Every key carries a content fingerprint, and so does the set: cached decisions are keyed on
//! it, so a refetch that changes nothing keeps them and a rotated key ends them. The refresh
//! loop runs once per client and ends when the client is dropped; a client that replaces
//! another (a reload with new JWKS settings, same issuer) may start from its last good set, but
//! only for a bounded grace ([`seed_grace`]): if the new URL stays down, the old keys stop
//! being trusted rather than living on indefinitely.
//!
//! Log lines and errors name the JWKS by [`url_for_logs`] (no userinfo, no query), since a
//! query may carry an access token.
//!
//! JWKS keys are loaded strictly:
//! - `use` other than `"sig"`: skipped (it is not a signing key).
//! - `RSA`: `alg` is required (RS256/384/512 or PS256/384/512). The same RSA key can sign with six
//!   algorithms, so a key without `alg` is skipped rather than guessed. Modulus 2048–4096 bits.
//! - `EC`: `crv` P-256 (ES256) or P-384 (ES384); `alg`, when present, must match the curve.
//! - `OKP`: `crv` Ed25519 (EdDSA); `alg`, when present, must be `EdDSA`.
//! - Anything else (`oct`, other curves, malformed members) is skipped with a warning.
//!
//! A JWKS never yields an HMAC key, so a provider's public key can never become a shared secret.
//! A document without a single usable key counts as a failed fetch: the old set is kept.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Largest JWKS document accepted; a bigger one is a failed fetch.
pub const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;

/// Keys read from one JWKS document; the rest are ignored with a warning.
pub const MAX_KEYS: usize = 100;

/// Longest time a `Cache-Control: max-age` may postpone the next refresh.
const MAX_CACHE_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// First wait after a failed background fetch; it doubles up to `jwks_refresh`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Longest a predecessor's key set is served by a client that has not fetched its own: a
/// changed `jwks_url` may mean the old provider or its keys were compromised.
pub(crate) const MAX_SEED_GRACE: Duration = Duration::from_secs(60);

/// RSA moduli accepted, in bits: below is weak, above is refused by the RSA verifier.
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// Base64url as JWKs write it; some providers pad, which is harmless here.
const JWK_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a key could not be loaded. Never contains key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl KeyError {
    /// Wraps a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        KeyError(reason.into())
    }
}

/// Why a JWKS fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the JWKS client: {0}")]
    Setup(String),
    /// The provider answered with an error status.
    #[error("JWKS endpoint answered {0}")]
    Status(u16),
    /// Connect, TLS, read or timeout failure.
    #[error("JWKS request failed: {0}")]
    Transport(String),
    /// The whole request did not finish within `jwks_timeout`.
    #[error("JWKS request timed out")]
    Timeout,
    /// The document exceeds [`MAX_DOCUMENT_BYTES`].
    #[error("JWKS document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    /// The document is not a JWKS.
    #[error("JWKS document is invalid: {0}")]
    Invalid(String),
    /// The document holds no key this gateway can use.
    #[error("JWKS document holds no usable signing key")]
    NoUsableKeys,
}

// === impl PinnedKey ===

/// A verification key and the one algorithm it verifies.
pub struct PinnedKey {
    /// The `kid` tokens name it by; `None` answers tokens without a `kid`.
    kid: Option<String>,
    /// Fixed at load; a token whose header names another algorithm is rejected.
    algorithm: Algorithm,
    /// Public key or HMAC secret, already in the form the verifier takes.
    key: DecodingKey,
    /// SHA-256 over algorithm, `kid` and the key material as loaded, so two loads of the same
    /// key compare equal and a rotated file or JWK does not (cached decisions are tied to it).
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl PinnedKey {
    /// An HMAC key (HS256/384/512) from its secret.
    pub fn from_secret(
        kid: Option<String>,
        algorithm: Algorithm,
        secret: &[u8],
    ) -> Result<Self, KeyError> {
        if algorithm.family() != AlgorithmFamily::Hmac {
            return Err(KeyError::new(format!(
                "{algorithm:?} takes a public key, not a secret"
            )));
        }
        if secret.is_empty() {
            return Err(KeyError::new("the HMAC secret is empty"));
        }
        let fingerprint = key_fingerprint(b"secret", algorithm, kid.as_deref(), secret);
        Ok(PinnedKey {
            kid,
            algorithm,
            key: DecodingKey::from_secret(secret),
            fingerprint,
        })
    }

    /// A public key from a PEM file's content (SPKI `PUBLIC KEY`, or `RSA PUBLIC KEY` for RSA).
    pub fn from_pem(
        kid: Option<String>,
        algorithm: Algorithm,
        pem: &[u8],
    ) -> Result<Self, KeyError> {
        if contains(pem, b"PRIVATE KEY") {
            return Err(KeyError::new(
                "this is a private key; give the public key (openssl pkey -in key.pem -pubout)",
            ));
        }
        let not_pem = |e: jsonwebtoken::errors::Error| {
            KeyError::new(format!("not a PEM public key for {algorithm:?}: {e}"))
        };
        let key = match algorithm.family() {
            AlgorithmFamily::Hmac => {
                return Err(KeyError::new(format!(
                    "{algorithm:?} takes a secret, not a PEM key"
                )))
            }
            AlgorithmFamily::Rsa => {
                let pkcs1 = DecodingKey::from_rsa_pem(pem).map_err(not_pem)?;
                let der = pkcs1.try_get_as_bytes().map_err(not_pem)?;
                let (n, e) =
                    rsa_public_der(der).ok_or_else(|| KeyError::new("malformed RSA public key"))?;
                rsa_key(n, e)?
            }
            AlgorithmFamily::Ec => {
                let key = DecodingKey::from_ec_pem(pem).map_err(not_pem)?;
                ec_point_key(algorithm, key.try_get_as_bytes().map_err(not_pem)?)?
            }
            AlgorithmFamily::Ed => {
                let key = DecodingKey::from_ed_pem(pem).map_err(not_pem)?;
                ed_key(key.try_get_as_bytes().map_err(not_pem)?)?
            }
        };
        let fingerprint = key_fingerprint(b"pem", algorithm, kid.as_deref(), pem);
        Self::checked(kid, algorithm, key, fingerprint)
    }

    /// A key from one JWK of a JWKS; `Ok(None)` for keys that are not for signatures.
    pub fn from_jwk(jwk: &Value) -> Result<Option<Self>, KeyError> {
        let obj = jwk
            .as_object()
            .ok_or_else(|| KeyError::new("not a JSON object"))?;
        if let Some(usage) = obj.get("use") {
            if usage.as_str() != Some("sig") {
                return Ok(None);
            }
        }
        let kid = optional_str(obj, "kid")?.map(str::to_string);
        let alg = optional_str(obj, "alg")?;
        let (algorithm, key) = match required_str(obj, "kty")? {
            "RSA" => rsa_jwk(obj, alg)?,
            "EC" => ec_jwk(obj, alg)?,
            "OKP" => okp_jwk(obj, alg)?,
            other => {
                return Err(KeyError::new(format!(
                    "key type {other:?} is not supported"
                )))
            }
        };
        // Written back from the parsed value, so an unchanged JWK in a refetched document gets
        // the same fingerprint whatever the whitespace around it.
        let fingerprint = key_fingerprint(
            b"jwk",
            algorithm,
            kid.as_deref(),
            jwk.to_string().as_bytes(),
        );
        Self::checked(kid, algorithm, key, fingerprint).map(Some)
    }

    /// Builds the verifier once so that a key the crypto backend refuses fails at load, not
    /// on every request.
    fn checked(
        kid: Option<String>,
        algorithm: Algorithm,
        key: DecodingKey,
        fingerprint: [u8; 32],
    ) -> Result<Self, KeyError> {
        jsonwebtoken::crypto::verify("", b"", &key, algorithm)
            .map_err(|e| KeyError::new(format!("unusable {algorithm:?} key: {e}")))?;
        Ok(PinnedKey {
            kid,
            algorithm,
            key,
            fingerprint,
        })
    }

    /// What this key is, as content: equal for two loads of the same key material.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// The `kid` this key answers to.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The only algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether `signature` (base64url, as in the token) signs `message` under this key.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        jsonwebtoken::crypto::verify(signature, message, &self.key, self.algorithm).unwrap_or(false)
    }
}

/// SHA-256 over the parts that make a key what it is, each length-prefixed so that no two
/// different keys can produce the same input.
fn key_fingerprint(
    source: &[u8],
    algorithm: Algorithm,
    kid: Option<&str>,
    material: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    let algorithm = format!("{algorithm:?}");
    let kid = match kid {
        None => vec![0u8],
        Some(kid) => [&[1u8][..], kid.as_bytes()].concat(),
    };
    for part in [source, algorithm.as_bytes(), &kid, material] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// One fingerprint for a sequence of keys (order matters: it decides which keys are tried).
pub fn keys_fingerprint<'a>(keys: impl IntoIterator<Item = &'a PinnedKey>) -> [u8; 32] {
    let mut h = Sha256::new();
    for key in keys {
        h.update(key.fingerprint);
    }
    h.finalize().into()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn optional_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, KeyError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyError::new(format!("\"{name}\" is not a string"))),
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, KeyError> {
    optional_str(obj, name)?.ok_or_else(|| KeyError::new(format!("\"{name}\" is missing")))
}

fn base64_member(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, KeyError> {
    JWK_BASE64
        .decode(required_str(obj, name)?)
        .map_err(|_| KeyError::new(format!("\"{name}\" is not base64url")))
}

fn rsa_jwk(
    obj: &Map<String, Value>,
    alg: Option<&str>,
) -> Result<(Algorithm, DecodingKey), KeyError> {
    let Some(alg) = alg else {
        return Err(KeyError::new(
            "RSA key without \"alg\" (it could be RS* or PS*; refusing to guess)",
        ));
    };
    let algorithm = alg
        .parse::<Algorithm>()
        .ok()
        .filter(|a| a.family() == AlgorithmFamily::Rsa)
        .ok_or_else(|| KeyError::new(format!("\"alg\" {alg:?} is not an RSA algorithm")))?;
    let n = base64_member(obj, "n")?;
    let e = base64_member(obj, "e")?;
    Ok((algorithm, rsa_key(&n, &e)?))
}

fn ec_jwk(
    obj: &Map<String, Value>,
    alg: Option<&str>,
) -> Result<(Algorithm, DecodingKey), KeyError> {
    let algorithm = match required_str(obj, "crv")? {
        "P-256" => Algorithm::ES256,
        "P-384" => Algorithm::ES384,
        other => return Err(KeyError::new(format!("curve {other:?} is not supported"))),
    };
    if alg.is_some_and(|a| a.parse::<Algorithm>().ok() != Some(algorithm)) {
        return Err(KeyError::new(format!(
            "\"alg\" does not match the curve (expected {algorithm:?})"
        )));
    }
    let x = base64_member(obj, "x")?;
    let y = base64_member(obj, "y")?;
    if x.len() != y.len() {
        return Err(KeyError::new("\"x\" and \"y\" differ in length"));
    }
    let point = [&[0x04][..], &x, &y].concat();
    Ok((algorithm, ec_point_key(algorithm, &point)?))
}

fn okp_jwk(
    obj: &Map<String, Value>,
    alg: Option<&str>,
) -> Result<(Algorithm, DecodingKey), KeyError> {
    let crv = required_str(obj, "crv")?;
    if crv != "Ed25519" {
        return Err(KeyError::new(format!("curve {crv:?} is not supported")));
    }
    if alg.is_some_and(|a| a != "EdDSA" && a != "Ed25519") {
        return Err(KeyError::new("\"alg\" does not match an Ed25519 key"));
    }
    Ok((Algorithm::EdDSA, ed_key(&base64_member(obj, "x")?)?))
}

/// Checks modulus size and exponent up front, where the RSA backend would only fail later.
fn rsa_key(n: &[u8], e: &[u8]) -> Result<DecodingKey, KeyError> {
    let n = strip_leading_zeros(n);
    let e = strip_leading_zeros(e);
    let bits = n
        .first()
        .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
    if !RSA_BITS.contains(&bits) {
        return Err(KeyError::new(format!(
            "RSA modulus has {bits} bits; {} to {} are accepted",
            RSA_BITS.start(),
            RSA_BITS.end()
        )));
    }
    let exponent = if e.len() <= 8 {
        e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    } else {
        0
    };
    if exponent < 3 || exponent % 2 == 0 || exponent >= 1 << 33 {
        return Err(KeyError::new("RSA public exponent is invalid"));
    }
    Ok(DecodingKey::from_rsa_raw_components(n, e))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// An uncompressed SEC1 point of the curve `algorithm` uses.
fn ec_point_key(algorithm: Algorithm, point: &[u8]) -> Result<DecodingKey, KeyError> {
    let expected = if algorithm == Algorithm::ES384 {
        97
    } else {
        65
    };
    if point.len() != expected || point.first() != Some(&0x04) {
        return Err(KeyError::new(format!(
            "not a public key of the curve {algorithm:?} uses"
        )));
    }
    Ok(DecodingKey::from_ec_der(point))
}

/// The Ed25519 verifier slices 32 bytes off the key, so the length is checked first.
fn ed_key(x: &[u8]) -> Result<DecodingKey, KeyError> {
    if x.len() != 32 {
        return Err(KeyError::new("an Ed25519 public key is 32 bytes"));
    }
    Ok(DecodingKey::from_ed_der(x))
}

/// Splits a PKCS#1 `RSAPublicKey` (`SEQUENCE { n INTEGER, e INTEGER }`) into `n` and `e`.
fn rsa_public_der(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (seq, rest) = der_element(der, 0x30)?;
    let (n, seq) = der_element(seq, 0x02)?;
    let (e, seq) = der_element(seq, 0x02)?;
    (rest.is_empty() && seq.is_empty()).then_some((n, e))
}

/// One DER element with tag `tag`: its content and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if found != tag {
        return None;
    }
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let width = usize::from(first & 0x7f);
        if width == 0 || width > 3 || rest.len() < width {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(width);
        (
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
            rest,
        )
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

// === impl KeySet ===

/// The keys of one JWKS document.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<PinnedKey>,
    /// [`keys_fingerprint`] of `keys`: the same for an unchanged refetch, different as soon
    /// as a key is added, removed or replaced.
    fingerprint: [u8; 32],
}

impl KeySet {
    /// Parses a JWKS document, skipping (with a warning) keys that cannot be used.
    pub fn parse(document: &[u8]) -> Result<KeySet, JwksError> {
        let doc: Value =
            serde_json::from_slice(document).map_err(|e| JwksError::Invalid(e.to_string()))?;
        let Some(jwks) = doc.get("keys").and_then(Value::as_array) else {
            return Err(JwksError::Invalid("no \"keys\" array".into()));
        };
        if jwks.len() > MAX_KEYS {
            log::warn!(
                "JWKS holds {} keys; only the first {MAX_KEYS} are used",
                jwks.len()
            );
        }
        let mut keys = Vec::new();
        for (i, jwk) in jwks.iter().take(MAX_KEYS).enumerate() {
            match PinnedKey::from_jwk(jwk) {
                Ok(Some(key)) => keys.push(key),
                Ok(None) => log::debug!("JWKS key {i} is not a signing key; skipped"),
                Err(e) => log::warn!("JWKS key {i} skipped: {e}"),
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoUsableKeys);
        }
        let fingerprint = keys_fingerprint(&keys);
        Ok(KeySet { keys, fingerprint })
    }

    /// The content of the set, as a hash (see [`keys_fingerprint`]).
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// The keys, in document order.
    pub fn iter(&self) -> std::slice::Iter<'_, PinnedKey> {
        self.keys.iter()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty (never fetched).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

// === impl JwksClient ===

/// Where and how often the JWKS is fetched.
#[derive(Clone, PartialEq, Eq)]
pub struct JwksSettings {
    /// `http://` or `https://` URL of the JWKS document.
    pub url: String,
    /// Time between background refreshes when the response gives no `max-age`.
    pub refresh: Duration,
    /// Least time between two fetches triggered by unknown `kid`s; also the floor of `max-age`.
    pub min_refetch_interval: Duration,
    /// Deadline of one whole fetch (DNS, connect, TLS, body).
    pub timeout: Duration,
}

impl std::fmt::Debug for JwksSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL as it may be logged: its userinfo or query could be a credential.
        f.debug_struct("JwksSettings")
            .field("url", &url_for_logs(&self.url))
            .field("refresh", &self.refresh)
            .field("min_refetch_interval", &self.min_refetch_interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Keeps an identity provider's key set fresh; shared by every request through an `Arc`.
pub struct JwksClient {
    /// Fetch schedule and target.
    settings: JwksSettings,
    /// Blocking HTTP client; requests run on the blocking pool.
    agent: ureq::Agent,
    /// The set served: the last good fetched set, or a predecessor's set for a bounded time;
    /// empty until then.
    served: ArcSwap<Served>,
    /// Returned instead of an expired seed, without allocating per request.
    empty: Arc<KeySet>,
    /// Set by the first [`seed_from`](Self::seed_from): a client is seeded at most once, so an
    /// ended grace is never renewed.
    seeded: AtomicBool,
    /// [`url_for_logs`] of the URL, the only form of it that is logged.
    log_url: String,
    /// Held for the whole of a fetch, so that callers arriving meanwhile wait for its result
    /// instead of starting another; holds the start time of the last attempt, which rate-limits
    /// fetches triggered by unknown `kid`s.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
    /// Bumped when a fetch replaces the key set, so a waiter knows the set changed.
    generation: AtomicU64,
    /// Fetch attempts, successful or not.
    fetches: AtomicU64,
    /// Set once the background refresh is running: one loop per client, however many
    /// snapshots (reloads) share the client.
    refresh_started: AtomicBool,
    /// Never sent on: dropped with the client, which ends every refresh loop's wait at once
    /// (a replaced client stops fetching now, not after its next sleep).
    stop: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for JwksClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksClient")
            .field("url", &self.log_url)
            .field("keys", &self.served.load().set.len())
            .field("fetches", &self.fetch_count())
            .finish_non_exhaustive()
    }
}

impl JwksClient {
    /// A client with an empty key set; nothing is fetched until asked.
    pub fn new(settings: JwksSettings) -> Result<JwksClient, JwksError> {
        let https = settings
            .url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let mut builder = ureq::AgentBuilder::new()
            .timeout(settings.timeout)
            .redirects(3)
            .https_only(https)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")));
        if https {
            let tls =
                native_tls::TlsConnector::new().map_err(|e| JwksError::Setup(e.to_string()))?;
            builder = builder.tls_connector(Arc::new(tls));
        }
        let empty = Arc::new(KeySet::default());
        Ok(JwksClient {
            log_url: url_for_logs(&settings.url),
            settings,
            agent: builder.build(),
            served: ArcSwap::from_pointee(Served {
                set: empty.clone(),
                seed_until: None,
            }),
            empty,
            seeded: AtomicBool::new(false),
            last_attempt: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
            refresh_started: AtomicBool::new(false),
            stop: tokio::sync::watch::Sender::new(()),
        })
    }

    /// The settings this client was built with (a reload with equal ones keeps the client).
    pub fn settings(&self) -> &JwksSettings {
        &self.settings
    }

    /// Serves `previous`'s current key set until the first successful fetch of this client
    /// replaces it, but for at most `grace` (and never past `previous`'s own seed deadline, so
    /// a chain of reloads cannot extend it); after that, with no fetch of its own, this client
    /// has no keys. Only the first call counts, and only on a client that has fetched nothing
    /// yet. Returns whether a set was handed over.
    pub fn seed_from(&self, previous: &JwksClient, grace: Duration) -> bool {
        if self.seeded.swap(true, Ordering::AcqRel) {
            return false;
        }
        let handed = previous.served.load();
        if handed.set.is_empty() || previous.seed_expired(&handed) {
            return false;
        }
        let mut until = Instant::now() + grace;
        if let Some(previous_until) = handed.seed_until {
            until = until.min(previous_until);
        }
        let current = self.served.load();
        if !current.set.is_empty() {
            return false;
        }
        let seed = Arc::new(Served {
            set: handed.set.clone(),
            seed_until: Some(until),
        });
        let swapped = self.served.compare_and_swap(&current, seed);
        if !Arc::ptr_eq(&swapped, &current) {
            return false;
        }
        log::warn!(
            "JWKS {} not loaded yet: serving the previous jwks_url's {} keys for at most {:.0?}, \
             then tokens get 503 until it loads",
            self.log_url,
            handed.set.len(),
            until.saturating_duration_since(Instant::now()),
        );
        true
    }

    /// Whether `served` is a seed past its deadline; the first caller to see it ends the seed
    /// (so later reads skip the clock) and says so once.
    fn seed_expired(&self, served: &Arc<Served>) -> bool {
        let Some(until) = served.seed_until else {
            return false;
        };
        if Instant::now() < until {
            return false;
        }
        let ended = Arc::new(Served {
            set: self.empty.clone(),
            seed_until: None,
        });
        let swapped = self.served.compare_and_swap(served, ended);
        if Arc::ptr_eq(&swapped, served) {
            log::warn!(
                "JWKS {}: the previous jwks_url's keys are no longer served; tokens get 503 \
                 until it loads",
                self.log_url
            );
        }
        true
    }

    /// The set to use now: an expired seed reads as empty.
    fn current(&self) -> arc_swap::Guard<Arc<Served>> {
        let served = self.served.load();
        if self.seed_expired(&served) {
            return self.served.load();
        }
        served
    }

    /// How long the predecessor's keys are still served, when they are.
    fn seed_remaining(&self) -> Option<Duration> {
        let until = self.current().seed_until?;
        Some(until.saturating_duration_since(Instant::now()))
    }

    /// Whether any key set is available (fetched, or seeded by a predecessor).
    pub fn has_keys(&self) -> bool {
        !self.current().set.is_empty()
    }

    /// Starts the background refresh unless it already runs for this client; call from inside
    /// a tokio runtime.
    pub fn ensure_refresh(self: &Arc<Self>) {
        if !self.refresh_started.swap(true, Ordering::AcqRel) {
            self.spawn_refresh();
        }
    }

    /// The current key set (empty until the first successful fetch, or once a seed expired).
    pub fn keys(&self) -> Arc<KeySet> {
        self.current().set.clone()
    }

    /// [`KeySet::fingerprint`] of [`keys`](Self::keys), read without cloning the set.
    pub fn fingerprint(&self) -> [u8; 32] {
        *self.current().set.fingerprint()
    }

    /// Fetch attempts so far, successful or not.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Called when a token names a `kid` no key has: fetches the JWKS again unless a fetch was
    /// attempted within `min_refetch_interval`, so a flood of random `kid`s costs at most one
    /// fetch per interval. A caller arriving while a fetch is in flight waits for it.
    ///
    /// Returns whether the key set was replaced, by this call or by the fetch it waited for.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        let seen = self.generation.load(Ordering::Acquire);
        let mut last = self.last_attempt.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return true;
        }
        if last.is_some_and(|at| at.elapsed() < self.settings.min_refetch_interval) {
            return false;
        }
        match self.fetch(&mut last).await {
            Ok(_) => true,
            Err(e) => {
                log::warn!(
                    "JWKS refetch from {} failed, keeping the old keys{}: {e}",
                    self.log_url,
                    self.seed_note()
                );
                false
            }
        }
    }

    /// Starts the background refresh: fetch, then wait for the response's `max-age` (kept
    /// between `min_refetch_interval` and 24h) or else `refresh`; after a failure, retry after
    /// 1s, doubling up to `refresh`. The task holds only a weak reference between fetches and ends once the
    /// client is dropped (e.g. replaced by a reload).
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(refresh_loop(Arc::downgrade(self), self.stop.subscribe()))
    }

    /// One background round; returns how long to wait before the next.
    async fn refresh_once(&self, backoff: &mut Duration) -> Duration {
        let mut last = self.last_attempt.lock().await;
        match self.fetch(&mut last).await {
            Ok(max_age) => {
                *backoff = FIRST_RETRY;
                match max_age {
                    Some(age) => age
                        .max(self.settings.min_refetch_interval)
                        .min(MAX_CACHE_LIFETIME),
                    None => self.settings.refresh,
                }
            }
            Err(e) => {
                log::warn!(
                    "JWKS refresh from {} failed, keeping the old keys{}: {e}",
                    self.log_url,
                    self.seed_note()
                );
                let wait = (*backoff).min(self.settings.refresh);
                *backoff = (wait * 2).min(self.settings.refresh);
                wait + wait.mul_f64(fastrand::f64() / 10.0)
            }
        }
    }

    /// Fetches and installs a new key set; the caller holds the fetch lock.
    async fn fetch(
        &self,
        last_attempt: &mut Option<Instant>,
    ) -> Result<Option<Duration>, JwksError> {
        *last_attempt = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let agent = self.agent.clone();
        let url = self.settings.url.clone();
        let request = tokio::task::spawn_blocking(move || fetch_document(&agent, &url));
        // ureq's own deadline does not cover DNS resolution; this one covers everything.
        let (document, max_age) = match tokio::time::timeout(self.settings.timeout, request).await {
            Err(_) => return Err(JwksError::Timeout),
            Ok(Err(join)) => return Err(JwksError::Transport(join.to_string())),
            Ok(Ok(result)) => result?,
        };
        let set = KeySet::parse(&document)?;
        log::info!("JWKS from {} loaded: {} keys", self.log_url, set.len());
        self.served.store(Arc::new(Served {
            set: Arc::new(set),
            seed_until: None,
        }));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(max_age)
    }
}

impl JwksClient {
    /// What a failure log line adds while a predecessor's keys are served.
    fn seed_note(&self) -> String {
        match self.seed_remaining() {
            Some(left) => format!(
                " (the previous jwks_url's keys, served for at most {}s more)",
                left.as_secs()
            ),
            None => String::new(),
        }
    }
}

/// What a client serves: the set and, for a predecessor's set, until when.
#[derive(Debug)]
struct Served {
    /// The keys.
    set: Arc<KeySet>,
    /// `Some` for a seed: served until then, unless a fetch replaces it first.
    seed_until: Option<Instant>,
}

async fn refresh_loop(client: Weak<JwksClient>, mut stop: tokio::sync::watch::Receiver<()>) {
    let mut backoff = FIRST_RETRY;
    loop {
        let Some(strong) = client.upgrade() else {
            return;
        };
        let wait = strong.refresh_once(&mut backoff).await;
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            // Only ever an error: the client, and with it the sender, is gone.
            _ = stop.changed() => return,
        }
    }
}

/// One blocking GET: the body (at most [`MAX_DOCUMENT_BYTES`]) and the `max-age`, if any.
fn fetch_document(
    agent: &ureq::Agent,
    url: &str,
) -> Result<(Vec<u8>, Option<Duration>), JwksError> {
    let response = agent
        .get(url)
        .set("accept", "application/json, application/jwk-set+json")
        .call()
        .map_err(|e| match e {
            ureq::Error::Status(code, _) => JwksError::Status(code),
            ureq::Error::Transport(t) => JwksError::Transport(transport_reason(&t)),
        })?;
    let max_age = response.header("cache-control").and_then(parse_max_age);
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| JwksError::Transport(e.to_string()))?;
    if body.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(JwksError::TooLarge);
    }
    Ok((body, max_age))
}

/// A transport failure without the URL ureq's own text starts with (it may carry a token).
fn transport_reason(t: &ureq::Transport) -> String {
    let mut reason = t.kind().to_string();
    if let Some(message) = t.message() {
        reason.push_str(": ");
        reason.push_str(message);
    }
    if let Some(source) = std::error::Error::source(t) {
        reason.push_str(": ");
        reason.push_str(&source.to_string());
    }
    reason
}

/// How a JWKS URL appears in logs and errors: `scheme://host[:port]/path`, without userinfo,
/// query or fragment, which may carry credentials.
pub(crate) fn url_for_logs(url: &str) -> String {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return "<unparsable jwks_url>".to_string();
    };
    let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return "<unparsable jwks_url>".to_string();
    };
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}{}", uri.path()),
        None => format!("{scheme}://{host}{}", uri.path()),
    }
}

/// How long a client may serve its predecessor's keys: `jwks_refresh` (the longest retry
/// interval of its own fetches), at most [`MAX_SEED_GRACE`].
pub(crate) fn seed_grace(settings: &JwksSettings) -> Duration {
    settings.refresh.min(MAX_SEED_GRACE)
}

/// The `max-age` directive of a `Cache-Control` value.
fn parse_max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        value
            .trim()
            .trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
pub(crate) mod test_server {
    //! A JWKS endpoint on 127.0.0.1:0 whose answer tests can change, counting requests.

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// What the server answers.
    #[derive(Clone)]
    pub struct Answer {
        pub status: u16,
        pub body: String,
        pub cache_control: Option<String>,
    }

    /// The running server; stops on drop.
    pub struct JwksServer {
        pub addr: SocketAddr,
        answer: Arc<Mutex<Answer>>,
        requests: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
    }

    impl JwksServer {
        pub fn start(body: String) -> JwksServer {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind test JWKS server");
            let addr = listener.local_addr().expect("local addr");
            let answer = Arc::new(Mutex::new(Answer {
                status: 200,
                body,
                cache_control: None,
            }));
            let requests = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let (a, r, s) = (answer.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(stream) = stream {
                        r.fetch_add(1, Ordering::SeqCst);
                        let answer = a.lock().expect("answer lock").clone();
                        serve(stream, &answer);
                    }
                }
            });
            JwksServer {
                addr,
                answer,
                requests,
                stop,
            }
        }

        pub fn url(&self) -> String {
            format!("http://{}/.well-known/jwks.json", self.addr)
        }

        pub fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }

        pub fn set(&self, f: impl FnOnce(&mut Answer)) {
            f(&mut self.answer.lock().expect("answer lock"));
        }
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
        }
    }

    fn serve(mut stream: TcpStream, answer: &Answer) {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let cache = answer
            .cache_control
            .as_ref()
            .map(|c| format!("cache-control: {c}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             {cache}connection: close\r\n\r\n",
            answer.status,
            answer.body.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(answer.body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::JwksServer;
    use super::*;
    use crate::auth::jwt::test_support::{claims, jwk, keys, sign, verifier};
    use crate::auth::jwt::JwtError;
    use serde_json::json;

    fn jwks(keys: &[Value]) -> String {
        json!({ "keys": keys }).to_string()
    }

    fn settings(url: &str, min_refetch: Duration) -> JwksSettings {
        JwksSettings {
            url: url.to_string(),
            refresh: Duration::from_secs(300),
            min_refetch_interval: min_refetch,
            timeout: Duration::from_secs(2),
        }
    }

    fn jwks_verifier(
        server: &JwksServer,
        min_refetch: &str,
        refresh: &str,
    ) -> Arc<crate::auth::jwt::JwtVerifier> {
        Arc::new(verifier(&format!(
            "jwks_url = {:?}\njwks_min_refetch_interval = {min_refetch:?}\n\
             jwks_refresh = {refresh:?}\n",
            server.url()
        )))
    }

    #[test]
    fn jwk_members_are_loaded_with_pinned_algorithms() {
        let k = keys();
        let rsa = PinnedKey::from_jwk(&jwk(&k.rsa, Algorithm::PS256, Some("r")))
            .expect("rsa jwk")
            .expect("signing key");
        assert_eq!((rsa.kid(), rsa.algorithm()), (Some("r"), Algorithm::PS256));

        let mut ec = jwk(&k.ec256, Algorithm::ES256, None);
        ec.as_object_mut().expect("object").remove("alg");
        let ec = PinnedKey::from_jwk(&ec)
            .expect("ec jwk")
            .expect("signing key");
        assert_eq!(
            ec.algorithm(),
            Algorithm::ES256,
            "P-256 without alg is ES256"
        );

        let mut ed = jwk(&k.ed25519, Algorithm::EdDSA, None);
        ed.as_object_mut().expect("object").remove("alg");
        let ed = PinnedKey::from_jwk(&ed)
            .expect("okp jwk")
            .expect("signing key");
        assert_eq!(ed.algorithm(), Algorithm::EdDSA);
    }

    #[test]
    fn unusable_jwks_are_refused_without_panicking() {
        let k = keys();
        let mut no_alg = jwk(&k.rsa, Algorithm::RS256, Some("a"));
        no_alg.as_object_mut().expect("object").remove("alg");
        assert!(PinnedKey::from_jwk(&no_alg).is_err(), "RSA without alg");

        let mut hs_on_rsa = jwk(&k.rsa, Algorithm::RS256, Some("a"));
        hs_on_rsa["alg"] = json!("HS256");
        assert!(
            PinnedKey::from_jwk(&hs_on_rsa).is_err(),
            "RSA key claiming HS256"
        );

        let mut wrong_curve_alg = jwk(&k.ec256, Algorithm::ES256, None);
        wrong_curve_alg["alg"] = json!("ES384");
        assert!(
            PinnedKey::from_jwk(&wrong_curve_alg).is_err(),
            "P-256 claiming ES384"
        );

        let mut off_curve = jwk(&k.ec256, Algorithm::ES256, None);
        off_curve["y"] = off_curve["x"].clone();
        assert!(
            PinnedKey::from_jwk(&off_curve).is_err(),
            "point not on the curve"
        );

        let bad = [
            json!("not an object"),
            json!({ "kty": "oct", "k": "c2VjcmV0", "alg": "HS256" }),
            json!({ "kty": "OKP", "crv": "Ed25519", "x": "AAAA" }),
            json!({ "kty": "OKP", "crv": "X25519", "x": "AAAA" }),
            json!({ "kty": "EC", "crv": "P-256", "x": "!!", "y": "AA" }),
            json!({ "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" }),
            json!({ "kty": "RSA", "alg": "RS256", "n": "AQAB", "e": "AQAB" }),
            json!({ "kty": "RSA", "alg": "RS256", "n": 5, "e": "AQAB" }),
            json!({ "kty": "EC", "crv": "P-256", "x": JWK_BASE64.encode([1; 33]), "y": JWK_BASE64.encode([1; 31]) }),
            json!({ "kty": 7 }),
            json!({ "kid": ["x"], "kty": "EC" }),
        ];
        for jwk in bad {
            assert!(PinnedKey::from_jwk(&jwk).is_err(), "{jwk}");
        }
        let enc = json!({ "kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB" });
        assert!(
            matches!(PinnedKey::from_jwk(&enc), Ok(None)),
            "encryption keys are skipped"
        );
    }

    #[test]
    fn a_document_keeps_its_good_keys_and_caps_their_number() {
        let k = keys();
        let good = jwk(&k.ec256, Algorithm::ES256, Some("good"));
        let doc = jwks(&[json!({ "kty": "oct" }), good.clone(), json!(null)]);
        let set = KeySet::parse(doc.as_bytes()).expect("one good key");
        assert_eq!(
            set.iter().map(PinnedKey::kid).collect::<Vec<_>>(),
            vec![Some("good")]
        );

        let many: Vec<Value> = (0..MAX_KEYS + 20).map(|_| good.clone()).collect();
        assert_eq!(
            KeySet::parse(jwks(&many).as_bytes()).expect("capped").len(),
            MAX_KEYS
        );

        assert!(matches!(
            KeySet::parse(b"{\"keys\": []}"),
            Err(JwksError::NoUsableKeys)
        ));
        assert!(matches!(
            KeySet::parse(b"[1,2]"),
            Err(JwksError::Invalid(_))
        ));
        assert!(matches!(
            KeySet::parse(b"\xff\xfe"),
            Err(JwksError::Invalid(_))
        ));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            parse_max_age("Max-Age = \"30\", must-revalidate"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("max-age=-1"), None);
        assert_eq!(parse_max_age("s-maxage=5"), None);
    }

    #[test]
    fn rsa_der_parsing_rejects_truncation() {
        assert_eq!(
            der_element(&[0x02, 0x01, 0x05], 0x02),
            Some((&[0x05][..], &[][..]))
        );
        assert_eq!(der_element(&[0x02, 0x82, 0x01], 0x02), None);
        assert_eq!(der_element(&[0x02, 0x05, 0x01], 0x02), None);
        assert_eq!(der_element(&[0x30, 0x80], 0x30), None);
        assert_eq!(rsa_public_der(&[]), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_request_fetches_the_jwks_and_a_new_kid_triggers_one_refetch() {
        let k = keys();
        let server = JwksServer::start(jwks(&[jwk(&k.rsa, Algorithm::RS256, Some("k1"))]));
        let v = jwks_verifier(&server, "200ms", "1h");
        let client = v.jwks().expect("jwks configured").clone();
        assert_eq!(
            client.fetch_count(),
            0,
            "nothing is fetched before it is needed"
        );

        let t1 = sign(
            Algorithm::RS256,
            Some("k1"),
            &claims(),
            &k.rsa.encoding(Algorithm::RS256),
        );
        v.verify(&t1)
            .await
            .expect("k1 verifies after the first fetch");
        assert_eq!(client.fetch_count(), 1);
        v.verify(&t1).await.expect("k1 again, from the cached set");
        assert_eq!(client.fetch_count(), 1);

        // The provider rotates: k2 is published next to k1.
        server.set(|a| {
            a.body = jwks(&[
                jwk(&k.rsa, Algorithm::RS256, Some("k1")),
                jwk(&k.rsa_other, Algorithm::RS256, Some("k2")),
            ])
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
        let t2 = sign(
            Algorithm::RS256,
            Some("k2"),
            &claims(),
            &k.rsa_other.encoding(Algorithm::RS256),
        );
        v.verify(&t2).await.expect("k2 verifies after one refetch");
        assert_eq!(client.fetch_count(), 2);
        assert_eq!(server.requests(), 2);
        v.verify(&t1).await.expect("k1 still verifies");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_unknown_kids_fetches_at_most_once_per_interval() {
        let k = keys();
        let server = JwksServer::start(jwks(&[jwk(&k.ec256, Algorithm::ES256, Some("real"))]));
        let v = jwks_verifier(&server, "2s", "1h");
        let client = v.jwks().expect("jwks configured").clone();
        let encoding = k.ec256.encoding(Algorithm::ES256);
        // Signed up front: signing is slow in debug builds and must not eat the interval.
        let mut tokens: Vec<String> = (0..150)
            .map(|i| {
                sign(
                    Algorithm::ES256,
                    Some(&format!("random-{i}-{}", fastrand::u64(..))),
                    &claims(),
                    &encoding,
                )
            })
            .collect();

        let flood = |v: &Arc<crate::auth::jwt::JwtVerifier>, tokens: Vec<String>| {
            let tasks: Vec<_> = tokens
                .into_iter()
                .map(|token| {
                    let v = v.clone();
                    tokio::spawn(async move { v.verify(&token).await })
                })
                .collect();
            futures::future::join_all(tasks)
        };
        for result in flood(&v, tokens.split_off(100)).await {
            assert!(matches!(result.expect("task"), Err(JwtError::UnknownKey)));
        }
        assert_eq!(
            client.fetch_count(),
            1,
            "50 concurrent unknown kids from cold: one fetch"
        );
        for result in flood(&v, tokens.split_off(50)).await {
            assert!(matches!(result.expect("task"), Err(JwtError::UnknownKey)));
        }
        assert_eq!(
            client.fetch_count(),
            1,
            "within the interval: no further fetch"
        );

        tokio::time::sleep(Duration::from_millis(2100)).await;
        flood(&v, tokens).await;
        assert_eq!(
            client.fetch_count(),
            2,
            "after the interval: exactly one more"
        );
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_provider_outage_keeps_the_cached_keys() {
        let k = keys();
        let server = JwksServer::start(jwks(&[jwk(&k.ed25519, Algorithm::EdDSA, Some("ed"))]));
        let v = jwks_verifier(&server, "100ms", "100ms");
        let client = v.jwks().expect("jwks configured").clone();
        let token = sign(
            Algorithm::EdDSA,
            Some("ed"),
            &claims(),
            &k.ed25519.encoding(Algorithm::EdDSA),
        );
        v.verify(&token).await.expect("first fetch");

        server.set(|a| a.status = 500);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let unknown = sign(
            Algorithm::EdDSA,
            Some("nope"),
            &claims(),
            &k.ed25519.encoding(Algorithm::EdDSA),
        );
        assert!(matches!(
            v.verify(&unknown).await,
            Err(JwtError::UnknownKey)
        ));
        assert_eq!(client.fetch_count(), 2, "the refetch was attempted");

        let refresh = client.spawn_refresh();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            client.fetch_count() >= 4,
            "background retries: {}",
            client.fetch_count()
        );
        v.verify(&token)
            .await
            .expect("still verifies with the cached set");
        assert_eq!(client.keys().len(), 1);

        server.set(|a| a.body = "{ not json".into());
        server.set(|a| a.status = 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        v.verify(&token)
            .await
            .expect("a broken document also keeps the cached set");
        refresh.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_refresh_follows_max_age_and_stops_when_the_client_is_dropped() {
        let k = keys();
        let server = JwksServer::start(jwks(&[jwk(&k.ec384, Algorithm::ES384, Some("a"))]));
        // max-age=0 is raised to the 300ms floor (min_refetch_interval), not a busy loop.
        server.set(|a| a.cache_control = Some("max-age=0".into()));
        let client = Arc::new(
            JwksClient::new(settings(&server.url(), Duration::from_millis(300))).expect("client"),
        );
        let task = client.spawn_refresh();
        tokio::time::sleep(Duration::from_millis(800)).await;
        let fetched = client.fetch_count();
        assert!(
            (2..=4).contains(&fetched),
            "fetched {fetched} times in 800ms"
        );
        assert_eq!(client.keys().len(), 1);

        drop(client);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            task.is_finished(),
            "the refresh task ends once the client is gone"
        );
    }

    #[test]
    fn a_key_set_fingerprint_follows_content_not_formatting() {
        let k = keys();
        let k1 = jwk(&k.rsa, Algorithm::RS256, Some("k1"));
        let k2 = jwk(&k.ec256, Algorithm::ES256, Some("k2"));
        let fp = |doc: &str| {
            *KeySet::parse(doc.as_bytes())
                .expect("valid set")
                .fingerprint()
        };
        let one = jwks(std::slice::from_ref(&k1));
        assert_eq!(fp(&one), fp(&one), "an unchanged document");
        let spaced = format!(
            "{{ \"keys\" : [ {} ] }}",
            serde_json::to_string_pretty(&k1).expect("json")
        );
        assert_eq!(fp(&one), fp(&spaced), "whitespace is not content");
        assert_ne!(
            fp(&one),
            fp(&jwks(&[k1.clone(), k2.clone()])),
            "a key was added"
        );
        assert_ne!(
            fp(&one),
            fp(&jwks(std::slice::from_ref(&k2))),
            "the key was replaced"
        );
        let mut renamed = k1.clone();
        renamed["kid"] = json!("other");
        assert_ne!(fp(&one), fp(&jwks(&[renamed])), "the kid changed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ensure_refresh_runs_one_loop_per_client_and_a_dropped_client_stops_it_at_once() {
        let k = keys();
        let server = JwksServer::start(jwks(&[jwk(&k.ec256, Algorithm::ES256, Some("a"))]));
        let client = Arc::new(
            JwksClient::new(settings(&server.url(), Duration::from_secs(60))).expect("client"),
        );
        for _ in 0..5 {
            client.ensure_refresh();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(server.requests(), 1, "five calls, one loop, one fetch");

        let task = client.spawn_refresh();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(client);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            task.is_finished(),
            "a dropped client's loop ends without waiting out its refresh interval"
        );
    }

    #[tokio::test]
    async fn a_seeded_client_serves_its_predecessors_keys_until_its_own_fetch() {
        let k = keys();
        let old = JwksServer::start(jwks(&[jwk(&k.ec256, Algorithm::ES256, Some("old"))]));
        let new = JwksServer::start(jwks(&[jwk(&k.ec384, Algorithm::ES384, Some("new"))]));
        let first =
            JwksClient::new(settings(&old.url(), Duration::from_millis(1))).expect("client");
        assert!(!first.has_keys());
        assert!(first.refetch_for_unknown_kid().await);
        let second =
            JwksClient::new(settings(&new.url(), Duration::from_millis(1))).expect("client");
        assert!(second.seed_from(&first, Duration::from_secs(60)));
        assert_eq!(second.keys().fingerprint(), first.keys().fingerprint());
        assert_eq!(second.fingerprint(), *first.keys().fingerprint());
        assert!(second.refetch_for_unknown_kid().await);
        let kids: Vec<_> = second
            .keys()
            .iter()
            .map(|k| k.kid().map(String::from))
            .collect();
        assert_eq!(
            kids,
            vec![Some("new".to_string())],
            "its own fetch replaced the seed"
        );
        assert!(!second.seed_from(&first, Duration::from_secs(60)));
        assert_eq!(second.keys().len(), 1);
        assert_ne!(
            second.keys().fingerprint(),
            first.keys().fingerprint(),
            "a seed never overwrites a fetched set"
        );
    }

    #[tokio::test]
    async fn a_seed_is_served_only_for_its_grace_when_the_new_url_never_loads() {
        let k = keys();
        let old = JwksServer::start(jwks(&[jwk(&k.ec256, Algorithm::ES256, Some("old"))]));
        let first =
            JwksClient::new(settings(&old.url(), Duration::from_millis(1))).expect("client");
        assert!(first.refetch_for_unknown_kid().await);
        let down = JwksServer::start(String::new());
        down.set(|a| a.status = 503);
        let second =
            JwksClient::new(settings(&down.url(), Duration::from_millis(1))).expect("client");
        assert!(second.seed_from(&first, Duration::from_millis(300)));
        assert!(second.has_keys(), "within the grace");
        assert!(
            !second.refetch_for_unknown_kid().await,
            "the new URL is down"
        );
        assert_eq!(second.keys().len(), 1, "a failed fetch keeps the seed");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!second.has_keys(), "the grace is over");
        assert!(second.keys().is_empty());
        assert_eq!(second.fingerprint(), *KeySet::default().fingerprint());
        assert!(
            !second.seed_from(&first, Duration::from_secs(60)),
            "an ended seed is not renewed"
        );
    }

    #[tokio::test]
    async fn a_chain_of_seeds_never_outlives_the_first_grace() {
        let k = keys();
        let old = JwksServer::start(jwks(&[jwk(&k.ec256, Algorithm::ES256, Some("old"))]));
        let first =
            JwksClient::new(settings(&old.url(), Duration::from_millis(1))).expect("client");
        assert!(first.refetch_for_unknown_kid().await);
        let url = |n: u16| format!("http://127.0.0.1:{n}/jwks");
        let second = JwksClient::new(settings(&url(1), Duration::from_secs(1))).expect("client");
        assert!(second.seed_from(&first, Duration::from_millis(300)));
        let third = JwksClient::new(settings(&url(2), Duration::from_secs(1))).expect("client");
        assert!(third.seed_from(&second, Duration::from_secs(60)));
        assert!(third.has_keys());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !third.has_keys(),
            "a second reload extended the first seed's deadline"
        );
    }

    #[test]
    fn urls_are_logged_without_userinfo_query_or_fragment() {
        let cases = [
            (
                "https://idp.example.com/.well-known/jwks.json?access_token=s3cr3t",
                "https://idp.example.com/.well-known/jwks.json",
            ),
            (
                "http://user:pa55@127.0.0.1:8080/keys?a=1&b=2",
                "http://127.0.0.1:8080/keys",
            ),
            ("https://idp.example.com", "https://idp.example.com/"),
            ("http://[::1]:9000/jwks", "http://[::1]:9000/jwks"),
            ("not a url at all s3cr3t", "<unparsable jwks_url>"),
        ];
        for (url, logged) in cases {
            assert_eq!(url_for_logs(url), logged, "{url}");
        }
        let client = JwksClient::new(settings(
            "http://127.0.0.1:1/jwks?token=s3cr3t",
            Duration::from_secs(1),
        ))
        .expect("client");
        let shown = format!("{client:?} {:?}", client.settings());
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[tokio::test]
    async fn a_failed_fetch_error_does_not_carry_the_url() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1))
            .build();
        let url = format!("http://{addr}/jwks?access_token=s3cr3t");
        let result = tokio::task::spawn_blocking(move || fetch_document(&agent, &url))
            .await
            .expect("task");
        let Err(e) = result else {
            panic!("nothing listens there");
        };
        let text = e.to_string();
        assert!(matches!(e, JwksError::Transport(_)), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_jwks_that_never_loaded_is_keys_unavailable_not_an_invalid_token() {
        let k = keys();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        drop(listener);
        let v = verifier(&format!(
            "jwks_url = {url:?}\njwks_min_refetch_interval = \"1ms\"\njwks_timeout = \"500ms\"\n"
        ));
        let token = sign(
            Algorithm::ES256,
            Some("k"),
            &claims(),
            &k.ec256.encoding(Algorithm::ES256),
        );
        assert_eq!(v.verify(&token).await, Err(JwtError::KeysUnavailable));
    }

    #[tokio::test]
    async fn an_oversized_document_is_a_failed_fetch() {
        let big = format!(
            "{{\"keys\": [], \"pad\": \"{}\"}}",
            "x".repeat(MAX_DOCUMENT_BYTES as usize)
        );
        let server = JwksServer::start(big);
        let client =
            JwksClient::new(settings(&server.url(), Duration::from_millis(1))).expect("client");
        assert!(!client.refetch_for_unknown_kid().await);
        assert_eq!(client.fetch_count(), 1);
        assert!(client.keys().is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_provider_fails_within_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        // Accepted by the kernel backlog but never answered.
        let mut s = settings(&url, Duration::from_millis(1));
        s.timeout = Duration::from_millis(300);
        let client = JwksClient::new(s).expect("client");
        let started = Instant::now();
        assert!(!client.refetch_for_unknown_kid().await);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(listener);
    }

    #[test]
    fn an_https_client_can_be_built() {
        let client = JwksClient::new(settings("https://idp.example/jwks", Duration::from_secs(1)));
        assert!(client.is_ok(), "{client:?}");
    }
}

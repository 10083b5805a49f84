//! JWT verification with algorithms pinned by the key.
//!
//! A token is checked in this order, and each step is bounded and never panics:
//!
//! 1. Shape: at most [`MAX_TOKEN_BYTES`], three base64url segments, JSON objects.
//! 2. Header: `alg: none` and unknown algorithms are refused; `jku`, `x5u`, `jwk`, `x5c` (keys
//!    supplied by the token itself) and `crit` are refused outright.
//! 3. Key: by `kid` (configured keys first, then the JWKS); a token without `kid` is tried
//!    against keys without one. Each key verifies exactly one algorithm, fixed by the config or
//!    the JWK, and the header's `alg` must equal it: an RSA key is never an HMAC secret, so the
//!    HS/RS confusion attack has nothing to work with. An unknown `kid` asks the JWKS client for
//!    one (rate-limited) refetch, then looks again.
//! 4. Claims: `exp`, `nbf`, `iat` with leeway, `iss`, `aud`, required claims, then the
//!    consumer, scopes and upstream headers are extracted.
//!
//! Errors never carry token content, so they can be logged and returned as they are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwks::{
    keys_fingerprint, seed_grace, JwksClient, JwksSettings, KeyError, KeySet, PinnedKey,
};
use crate::config::{read_secret, Dur, JwtConfig, JwtKeyConfig, Lenient, SecretError};
use crate::principal::unix_now;

/// Longest token accepted; longer ones are `Malformed` before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Header parameters that would let a token choose its own key, and `crit`, whose extensions
/// this verifier does not implement.
const FORBIDDEN_HEADERS: [&str; 5] = ["jku", "x5u", "jwk", "x5c", "crit"];

/// Keys tried for one token (several keys can share a `kid`, or lack one); bounds the
/// signature checks an attacker can cause per request.
const MAX_KEYS_TRIED: usize = 4;

/// Headers a claim may not set: they frame the message or belong to the hop.
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// The algorithms a key may be configured with.
pub const SUPPORTED_ALGORITHMS: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// Why a token was rejected. Messages never contain the token or its claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Too long, wrong number of segments, bad base64 or JSON, or a claim of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// `alg` is `none`, unknown, or not the algorithm of the key.
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The header carries a parameter this gateway refuses.
    #[error("token header parameter {0:?} is not allowed")]
    ForbiddenHeader(&'static str),
    /// No key answers to the token's `kid` (or, without `kid`, no key lacks one).
    #[error("no key for this token")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// `exp` has passed (beyond the leeway), or is missing where required.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `iss` is missing or not the configured issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` is missing or names none of the configured audiences.
    #[error("token audience not accepted")]
    WrongAudience,
    /// A required claim (named by the config) is missing.
    #[error("token lacks claim {0:?}")]
    MissingClaim(String),
    /// The token names no configured key and no JWKS key set has ever been loaded: the
    /// gateway cannot tell whether the token is good, so this is not the client's fault.
    #[error("no JWKS key set has been loaded yet")]
    KeysUnavailable,
}

// === impl JwtError ===

impl JwtError {
    /// Machine-readable code for logs, metrics and error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed_token",
            JwtError::AlgorithmNotAllowed => "algorithm_not_allowed",
            JwtError::ForbiddenHeader(_) => "forbidden_header",
            JwtError::UnknownKey => "unknown_key",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not_yet_valid",
            JwtError::IssuedInFuture => "issued_in_future",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::MissingClaim(_) => "missing_claim",
            JwtError::KeysUnavailable => "jwks_unavailable",
        }
    }

    /// The `WWW-Authenticate` value of the 401 (RFC 6750); fixed text, nothing from the token.
    pub fn www_authenticate(&self) -> &'static str {
        match self {
            JwtError::Malformed => {
                r#"Bearer error="invalid_token", error_description="malformed token""#
            }
            JwtError::AlgorithmNotAllowed => {
                r#"Bearer error="invalid_token", error_description="algorithm not allowed""#
            }
            JwtError::ForbiddenHeader(_) => {
                r#"Bearer error="invalid_token", error_description="header parameter not allowed""#
            }
            JwtError::UnknownKey => {
                r#"Bearer error="invalid_token", error_description="unknown signing key""#
            }
            JwtError::BadSignature => {
                r#"Bearer error="invalid_token", error_description="invalid signature""#
            }
            JwtError::Expired => {
                r#"Bearer error="invalid_token", error_description="token expired""#
            }
            JwtError::NotYetValid => {
                r#"Bearer error="invalid_token", error_description="token not yet valid""#
            }
            JwtError::IssuedInFuture => {
                r#"Bearer error="invalid_token", error_description="token issued in the future""#
            }
            JwtError::WrongIssuer => {
                r#"Bearer error="invalid_token", error_description="issuer not accepted""#
            }
            JwtError::WrongAudience => {
                r#"Bearer error="invalid_token", error_description="audience not accepted""#
            }
            JwtError::MissingClaim(_) => {
                r#"Bearer error="invalid_token", error_description="missing claim""#
            }
            // Answered with 503, where no challenge is sent; this is what one would say.
            JwtError::KeysUnavailable => "Bearer",
        }
    }
}

/// Why a verifier could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    /// A configured key could not be loaded.
    #[error("auth.jwt.keys[{index}]: {reason}")]
    Key {
        /// Position in `keys`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is invalid.
    #[error("auth.jwt.{field}: {reason}")]
    Setting {
        /// Field name under `[auth.jwt]`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither `keys` nor `jwks_url` is configured.
    #[error("auth.jwt: no keys and no jwks_url; nothing could verify a token")]
    NoKeys,
}

impl JwtSetupError {
    /// The config path the problem is at, e.g. `auth.jwt.keys[1]`.
    pub fn path(&self) -> String {
        match self {
            JwtSetupError::Key { index, .. } => format!("auth.jwt.keys[{index}]"),
            JwtSetupError::Setting { field, .. } => format!("auth.jwt.{field}"),
            JwtSetupError::NoKeys => "auth.jwt".to_string(),
        }
    }

    /// What is wrong there.
    pub fn reason(&self) -> String {
        match self {
            JwtSetupError::Key { reason, .. } | JwtSetupError::Setting { reason, .. } => {
                reason.clone()
            }
            JwtSetupError::NoKeys => "no keys and no jwks_url; nothing could verify a token".into(),
        }
    }
}

/// `[auth.jwt]` compiled: what a verifier is built from, every value already parsed (the keys
/// loaded from their files and variables once).
pub(crate) struct JwtParts {
    /// The configured keys, loaded.
    pub(crate) keys: Vec<PinnedKey>,
    /// Allowed clock skew.
    pub(crate) leeway: Duration,
    /// Claim → upstream header.
    pub(crate) headers: Vec<(String, HeaderName)>,
    /// Where and how often the JWKS is fetched, when `jwks_url` is set.
    pub(crate) jwks: Option<JwksSettings>,
}

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Value of the consumer claim (`sub` by default).
    pub consumer: String,
    /// Scopes from the scopes claim (space-separated string or array of strings).
    pub scopes: Vec<String>,
    /// `jti`, when present as a string (for revocation lists).
    pub jti: Option<String>,
    /// `exp` in Unix seconds; a cached decision must not outlive it.
    pub expires_at: Option<u64>,
    /// Upstream request headers from `claims_to_headers` (claims that are absent, or not a
    /// string, number or bool, or not a valid header value, are left out).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// SHA-256 of a token: the key of cached decisions, so tokens are never kept in memory.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Parses a configured algorithm name; `none` and unknown names are refused.
pub fn supported_algorithm(name: &str) -> Result<Algorithm, KeyError> {
    name.parse::<Algorithm>().map_err(|_| {
        KeyError::new(format!(
            "{name:?} is not supported; use one of {SUPPORTED_ALGORITHMS}"
        ))
    })
}

/// Parses a `claims_to_headers` target; framing and hop-by-hop headers are refused.
pub fn claim_header(name: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if RESERVED_HEADERS.contains(&header.as_str()) {
        return Err(format!("{name:?} cannot be set from a claim"));
    }
    Ok(header)
}

/// Loads one configured key: the HMAC secret from env/file, or the PEM public key file.
pub fn load_key(cfg: &JwtKeyConfig) -> Result<PinnedKey, KeyError> {
    let algorithm = supported_algorithm(&cfg.algorithm)?;
    if algorithm.family() == AlgorithmFamily::Hmac {
        let secret = read_secret(cfg.secret_env.as_deref(), cfg.secret_file.as_deref());
        return hmac_key(cfg, algorithm, secret);
    }
    let Some(file) = &cfg.public_key_file else {
        return Err(KeyError::new(format!(
            "a {algorithm:?} key needs public_key_file"
        )));
    };
    pem_key(cfg, algorithm, file)
}

/// An HMAC key from its secret as read from `secret_env`/`secret_file`.
pub(crate) fn hmac_key(
    cfg: &JwtKeyConfig,
    algorithm: Algorithm,
    secret: Result<Option<String>, SecretError>,
) -> Result<PinnedKey, KeyError> {
    let secret = secret.map_err(|e| KeyError::new(e.to_string()))?;
    let Some(secret) = secret else {
        return Err(KeyError::new(match &cfg.secret_env {
            Some(var) => format!("environment variable {var} is not set"),
            None => "an HS key needs secret_env or secret_file".to_string(),
        }));
    };
    PinnedKey::from_secret(cfg.kid.clone(), algorithm, secret.as_bytes())
}

/// A public key from the PEM file `file`, read here.
pub(crate) fn pem_key(
    cfg: &JwtKeyConfig,
    algorithm: Algorithm,
    file: &str,
) -> Result<PinnedKey, KeyError> {
    let pem =
        std::fs::read(file).map_err(|e| KeyError::new(format!("cannot read {file:?}: {e}")))?;
    PinnedKey::from_pem(cfg.kid.clone(), algorithm, &pem)
        .map_err(|e| KeyError::new(format!("{file:?}: {e}")))
}

// === impl JwtVerifier ===

/// Verifies bearer JWTs against configured keys and, optionally, a provider's JWKS.
pub struct JwtVerifier {
    /// Configured keys; looked at before the JWKS.
    keys: Vec<PinnedKey>,
    /// Hash of the content of `keys` as loaded (secrets and PEM files, not their names) and
    /// of `rules`: what decides a token besides the JWKS set, computed once here.
    static_fingerprint: [u8; 32],
    /// The provider's key set, when `jwks_url` is configured.
    jwks: Option<Arc<JwksClient>>,
    /// [`key_fingerprint`](Self::key_fingerprint) for the JWKS set last seen, so a request
    /// reads it without hashing; recomputed only when the set changes.
    combined: ArcSwap<CombinedFingerprint>,
    /// Claim checks and extraction, compiled from the config.
    rules: ClaimRules,
}

/// The fingerprint of a verifier together with one JWKS set.
struct CombinedFingerprint {
    /// [`KeySet::fingerprint`] of the set it was computed for.
    set: [u8; 32],
    /// Hash of the verifier's static fingerprint and `set`.
    value: [u8; 32],
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys)
            .field("jwks", &self.jwks)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds a verifier: loads the configured keys now; the JWKS stays empty until fetched
    /// (by [`JwksClient::spawn_refresh`] or by the first token with an unknown `kid`).
    pub fn new(cfg: &JwtConfig) -> Result<JwtVerifier, JwtSetupError> {
        Self::replacing(cfg, None)
    }

    /// Builds the verifier of a reloaded config. The configured keys are always read again,
    /// so a rotated secret or PEM file takes effect even when the TOML text is unchanged.
    /// `previous`'s JWKS client is kept when the JWKS settings are unchanged (with its key set
    /// and its one refresh loop). Otherwise, when the issuer is unchanged, the new client
    /// serves the old client's last good key set until its own first fetch replaces it, for at
    /// most [`seed_grace`] (the smaller of `jwks_refresh` and 60s): a changed `jwks_url` may
    /// mean the old keys were compromised, so they are not trusted indefinitely. With another
    /// issuer the old keys belong to another provider and are not carried over at all.
    pub fn replacing(
        cfg: &JwtConfig,
        previous: Option<&JwtVerifier>,
    ) -> Result<JwtVerifier, JwtSetupError> {
        let keys = cfg
            .keys
            .iter()
            .enumerate()
            .map(|(index, k)| {
                load_key(k).map_err(|e| JwtSetupError::Key {
                    index,
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let leeway = duration(&cfg.leeway, "leeway")?;
        let headers = header_map(&cfg.claims_to_headers)?;
        let jwks = match &cfg.jwks_url {
            Some(url) => Some(jwks_settings(cfg, url)?),
            None => None,
        };
        let parts = JwtParts {
            keys,
            leeway,
            headers,
            jwks,
        };
        Self::from_parts(cfg, parts, previous)
    }

    /// [`replacing`](Self::replacing) from `[auth.jwt]` already compiled (auth's one compile
    /// pass loads the keys and parses every value, reporting each problem with its path).
    pub(crate) fn from_parts(
        cfg: &JwtConfig,
        parts: JwtParts,
        previous: Option<&JwtVerifier>,
    ) -> Result<JwtVerifier, JwtSetupError> {
        let JwtParts {
            keys,
            leeway,
            headers,
            jwks,
        } = parts;
        let rules = ClaimRules::new(cfg, leeway, headers);
        let previous_jwks = previous.and_then(|p| p.jwks.as_ref());
        let same_issuer = previous.is_some_and(|p| p.rules.issuer == rules.issuer);
        let jwks = match jwks {
            Some(settings) => Some(jwks_client(settings, previous_jwks, same_issuer)?),
            None => None,
        };
        if keys.is_empty() && jwks.is_none() {
            return Err(JwtSetupError::NoKeys);
        }
        let mut h = Sha256::new();
        h.update(keys_fingerprint(&keys));
        h.update(rules.fingerprint());
        let static_fingerprint: [u8; 32] = h.finalize().into();
        let set = jwks.as_ref().map_or([0; 32], |c| c.fingerprint());
        let combined = ArcSwap::from_pointee(CombinedFingerprint {
            set,
            value: combine(&static_fingerprint, jwks.as_ref().map(|_| &set)),
        });
        Ok(JwtVerifier {
            keys,
            static_fingerprint,
            jwks,
            combined,
            rules,
        })
    }

    /// A hash of everything that decides a token: every key this verifier would try now
    /// (configured keys and the current JWKS key set, by content) and the claim rules (issuer,
    /// audiences, leeway, `require_exp`, required claims, consumer and scopes claims,
    /// `claims_to_headers`).
    /// Cached decisions are keyed on it: a rotated key or changed rule makes them unusable
    /// (decisions of two snapshots never mix), while a refetch that changes nothing (or fails)
    /// leaves them valid. Read per request: no hashing, no allocation unless the set changed.
    pub fn key_fingerprint(&self) -> [u8; 32] {
        match &self.jwks {
            None => self.static_fingerprint,
            Some(client) => self.combined_with(&client.fingerprint()),
        }
    }

    /// [`key_fingerprint`](Self::key_fingerprint) for the JWKS set `jwks` (`None` without a
    /// JWKS).
    fn fingerprint_of(&self, jwks: Option<&KeySet>) -> [u8; 32] {
        match jwks {
            None => self.static_fingerprint,
            Some(set) => self.combined_with(set.fingerprint()),
        }
    }

    /// The combined fingerprint for the JWKS set fingerprinted `set`: the remembered one when
    /// the set is the one last seen (nearly always), else computed once and remembered.
    fn combined_with(&self, set: &[u8; 32]) -> [u8; 32] {
        let remembered = self.combined.load();
        if remembered.set == *set {
            return remembered.value;
        }
        let value = combine(&self.static_fingerprint, Some(set));
        self.combined
            .store(Arc::new(CombinedFingerprint { set: *set, value }));
        value
    }

    /// The JWKS client, when `jwks_url` is configured (to start its background refresh).
    pub fn jwks(&self) -> Option<&Arc<JwksClient>> {
        self.jwks.as_ref()
    }

    /// Verifies a token (without the `Bearer ` prefix) and extracts what the gateway needs.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, JwtError> {
        self.verify_with_fingerprint(token).await.map(|(v, _)| v)
    }

    /// [`verify`](Self::verify), also returning the [`key_fingerprint`](Self::key_fingerprint)
    /// of the keys the signature was checked against (a refetch during the call may have
    /// changed them), under which the decision may be cached.
    pub async fn verify_with_fingerprint(
        &self,
        token: &str,
    ) -> Result<(VerifiedToken, [u8; 32]), JwtError> {
        let parts = TokenParts::parse(token)?;
        let fingerprint = self.check_signature(&parts).await?;
        let verified = self.rules.apply(&parts.claims, unix_now())?;
        Ok((verified, fingerprint))
    }

    /// Checks the signature; the fingerprint of the keys that decided.
    async fn check_signature(&self, parts: &TokenParts<'_>) -> Result<[u8; 32], JwtError> {
        let jwks_keys = self.jwks.as_ref().map(|c| c.keys());
        match self.try_keys(parts, jwks_keys.as_deref()) {
            Err(JwtError::UnknownKey) => {}
            decided => return decided.map(|()| self.fingerprint_of(jwks_keys.as_deref())),
        }
        let Some(client) = &self.jwks else {
            return Err(JwtError::UnknownKey);
        };
        // Look again even when this call did not fetch: a concurrent fetch may have finished
        // between the first lookup and now.
        client.refetch_for_unknown_kid().await;
        let jwks_keys = client.keys();
        match self.try_keys(parts, Some(&jwks_keys)) {
            Err(JwtError::UnknownKey) if jwks_keys.is_empty() => Err(JwtError::KeysUnavailable),
            decided => decided.map(|()| self.fingerprint_of(Some(&jwks_keys))),
        }
    }

    /// Tries the keys answering to the token's `kid` (or lack of one) whose algorithm is the
    /// header's; configured keys first.
    fn try_keys(&self, parts: &TokenParts<'_>, jwks: Option<&KeySet>) -> Result<(), JwtError> {
        let candidates = self
            .keys
            .iter()
            .chain(jwks.into_iter().flat_map(KeySet::iter));
        let mut known = false;
        let mut tried = 0;
        for key in candidates.filter(|k| k.kid() == parts.kid.as_deref()) {
            known = true;
            if key.algorithm() != parts.alg {
                continue;
            }
            if key.verify(parts.signed.as_bytes(), parts.signature) {
                return Ok(());
            }
            tried += 1;
            if tried == MAX_KEYS_TRIED {
                break;
            }
        }
        match (known, tried) {
            (false, _) => Err(JwtError::UnknownKey),
            (true, 0) => Err(JwtError::AlgorithmNotAllowed),
            _ => Err(JwtError::BadSignature),
        }
    }
}

/// The static fingerprint and a JWKS set's fingerprint, hashed together (`None`: no JWKS).
fn combine(static_fingerprint: &[u8; 32], set: Option<&[u8; 32]>) -> [u8; 32] {
    let Some(set) = set else {
        return *static_fingerprint;
    };
    let mut h = Sha256::new();
    h.update(static_fingerprint);
    h.update(set);
    h.finalize().into()
}

/// The JWKS settings of `cfg`, fetching from `url`.
fn jwks_settings(cfg: &JwtConfig, url: &str) -> Result<JwksSettings, JwtSetupError> {
    Ok(JwksSettings {
        url: url.to_string(),
        refresh: positive(&cfg.jwks_refresh, "jwks_refresh")?,
        min_refetch_interval: positive(
            &cfg.jwks_min_refetch_interval,
            "jwks_min_refetch_interval",
        )?,
        timeout: positive(&cfg.jwks_timeout, "jwks_timeout")?,
    })
}

/// The JWKS client for `settings`: `previous` itself when its settings are the same, else a new
/// client, seeded for a bounded grace with `previous`'s last good key set when `seed` (the
/// issuer is unchanged).
fn jwks_client(
    settings: JwksSettings,
    previous: Option<&Arc<JwksClient>>,
    seed: bool,
) -> Result<Arc<JwksClient>, JwtSetupError> {
    if let Some(previous) = previous.filter(|p| *p.settings() == settings) {
        return Ok(previous.clone());
    }
    let client = JwksClient::new(settings).map_err(|e| JwtSetupError::Setting {
        field: "jwks_url",
        reason: e.to_string(),
    })?;
    if let Some(previous) = previous.filter(|_| seed) {
        let grace = seed_grace(client.settings());
        client.seed_from(previous, grace);
    }
    Ok(Arc::new(client))
}

fn duration(value: &Lenient<Dur>, field: &'static str) -> Result<Duration, JwtSetupError> {
    match value.ok() {
        Some(d) => Ok(d.0),
        None => Err(JwtSetupError::Setting {
            field,
            reason: value.error().unwrap_or("invalid duration").to_string(),
        }),
    }
}

fn positive(value: &Lenient<Dur>, field: &'static str) -> Result<Duration, JwtSetupError> {
    let d = duration(value, field)?;
    if d.is_zero() {
        return Err(JwtSetupError::Setting {
            field,
            reason: "must be greater than zero".into(),
        });
    }
    Ok(d)
}

// === impl TokenParts ===

/// A token split and decoded, its header checked; the signature not yet verified.
struct TokenParts<'a> {
    /// The header's algorithm (never `none`).
    alg: Algorithm,
    /// The header's `kid`.
    kid: Option<String>,
    /// The payload.
    claims: Map<String, Value>,
    /// `header.payload`, the signed bytes.
    signed: &'a str,
    /// The signature segment, base64url.
    signature: &'a str,
}

impl<'a> TokenParts<'a> {
    fn parse(token: &'a str) -> Result<TokenParts<'a>, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed);
        }
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(JwtError::Malformed);
        };
        let header_json = decode_object(header)?;
        let alg = header_algorithm(&header_json)?;
        if let Some(name) = FORBIDDEN_HEADERS
            .into_iter()
            .find(|n| header_json.contains_key(*n))
        {
            return Err(JwtError::ForbiddenHeader(name));
        }
        let kid = match header_json.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(JwtError::Malformed),
        };
        let claims = decode_object(payload)?;
        match URL_SAFE_NO_PAD.decode(signature) {
            Ok(bytes) if !bytes.is_empty() => {}
            _ => return Err(JwtError::Malformed),
        }
        Ok(TokenParts {
            alg,
            kid,
            claims,
            signed: &token[..header.len() + 1 + payload.len()],
            signature,
        })
    }
}

fn decode_object(segment: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

fn header_algorithm(header: &Map<String, Value>) -> Result<Algorithm, JwtError> {
    match header.get("alg") {
        Some(Value::String(alg)) => alg.parse().map_err(|_| JwtError::AlgorithmNotAllowed),
        _ => Err(JwtError::Malformed),
    }
}

// === impl ClaimRules ===

/// The claim checks of a config, compiled once.
struct ClaimRules {
    /// Allowed clock skew, seconds.
    leeway: u64,
    /// Reject tokens without `exp`.
    require_exp: bool,
    /// Required `iss`.
    issuer: Option<String>,
    /// Accepted `aud` values; unchecked when empty.
    audiences: Vec<String>,
    /// Claims that must be present.
    required: Vec<String>,
    /// Claim naming the consumer.
    consumer_claim: String,
    /// Claim holding the scopes.
    scopes_claim: String,
    /// Claim → upstream header, names parsed at load.
    headers: Vec<(String, HeaderName)>,
}

impl ClaimRules {
    fn new(cfg: &JwtConfig, leeway: Duration, headers: Vec<(String, HeaderName)>) -> ClaimRules {
        ClaimRules {
            leeway: leeway.as_secs(),
            require_exp: cfg.require_exp,
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone(),
            required: cfg.required_claims.clone(),
            consumer_claim: cfg.consumer_claim.clone(),
            scopes_claim: cfg.scopes_claim.clone(),
            headers,
        }
    }

    /// A hash of every rule, each part length-prefixed so no two rule sets hash alike: the
    /// same token can be accepted under one set and refused (or give another principal)
    /// under another, so cached decisions must not cross rule sets.
    fn fingerprint(&self) -> [u8; 32] {
        fn part(h: &mut Sha256, bytes: &[u8]) {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        fn list<'a>(h: &mut Sha256, items: impl ExactSizeIterator<Item = &'a str>) {
            h.update((items.len() as u64).to_le_bytes());
            for item in items {
                part(h, item.as_bytes());
            }
        }
        let mut h = Sha256::new();
        part(&mut h, b"portcullis-claim-rules-v1");
        part(&mut h, &self.leeway.to_le_bytes());
        part(&mut h, &[u8::from(self.require_exp)]);
        match &self.issuer {
            None => part(&mut h, &[0]),
            Some(issuer) => {
                part(&mut h, &[1]);
                part(&mut h, issuer.as_bytes());
            }
        }
        list(&mut h, self.audiences.iter().map(String::as_str));
        list(&mut h, self.required.iter().map(String::as_str));
        part(&mut h, self.consumer_claim.as_bytes());
        part(&mut h, self.scopes_claim.as_bytes());
        h.update((self.headers.len() as u64).to_le_bytes());
        for (claim, header) in &self.headers {
            part(&mut h, claim.as_bytes());
            part(&mut h, header.as_str().as_bytes());
        }
        h.finalize().into()
    }

    /// Checks the claims of a token whose signature verified, at `now` (Unix seconds).
    fn apply(&self, claims: &Map<String, Value>, now: u64) -> Result<VerifiedToken, JwtError> {
        let expires_at = self.check_times(claims, now)?;
        self.check_issuer(claims)?;
        self.check_audience(claims)?;
        if let Some(missing) = self
            .required
            .iter()
            .find(|c| !claims.contains_key(c.as_str()))
        {
            return Err(JwtError::MissingClaim(missing.clone()));
        }
        let consumer = match claims.get(&self.consumer_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(JwtError::MissingClaim(self.consumer_claim.clone())),
        };
        // RFC 7519 makes `jti` a string; a token with another type could never be revoked.
        let jti = match claims.get("jti") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(JwtError::Malformed),
        };
        Ok(VerifiedToken {
            consumer,
            scopes: scopes(claims.get(&self.scopes_claim)),
            jti,
            expires_at,
            headers: self.upstream_headers(claims),
        })
    }

    /// Checks `exp`, `nbf` and `iat`; returns `exp`.
    fn check_times(&self, claims: &Map<String, Value>, now: u64) -> Result<Option<u64>, JwtError> {
        let exp = numeric_date(claims, "exp")?;
        match exp {
            Some(exp) if now >= exp.saturating_add(self.leeway) => return Err(JwtError::Expired),
            None if self.require_exp => return Err(JwtError::Expired),
            _ => {}
        }
        let late_now = now.saturating_add(self.leeway);
        if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > late_now) {
            return Err(JwtError::NotYetValid);
        }
        if numeric_date(claims, "iat")?.is_some_and(|iat| iat > late_now) {
            return Err(JwtError::IssuedInFuture);
        }
        Ok(exp)
    }

    fn check_issuer(&self, claims: &Map<String, Value>) -> Result<(), JwtError> {
        match &self.issuer {
            Some(issuer) if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) => {
                Err(JwtError::WrongIssuer)
            }
            _ => Ok(()),
        }
    }

    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), JwtError> {
        if self.audiences.is_empty() {
            return Ok(());
        }
        let accepted = |v: &Value| {
            v.as_str()
                .is_some_and(|a| self.audiences.iter().any(|x| x == a))
        };
        let ok = match claims.get("aud") {
            Some(Value::Array(auds)) => auds.iter().any(accepted),
            Some(aud) => accepted(aud),
            None => false,
        };
        if ok {
            Ok(())
        } else {
            Err(JwtError::WrongAudience)
        }
    }

    fn upstream_headers(&self, claims: &Map<String, Value>) -> Vec<(HeaderName, HeaderValue)> {
        self.headers
            .iter()
            .filter_map(|(claim, name)| {
                let value = match claims.get(claim)? {
                    Value::String(s) => HeaderValue::from_str(s).ok()?,
                    Value::Number(n) => HeaderValue::from_str(&n.to_string()).ok()?,
                    Value::Bool(b) => HeaderValue::from_static(if *b { "true" } else { "false" }),
                    _ => return None,
                };
                Some((name.clone(), value))
            })
            .collect()
    }
}

fn header_map(
    claims_to_headers: &BTreeMap<String, String>,
) -> Result<Vec<(String, HeaderName)>, JwtSetupError> {
    claims_to_headers
        .iter()
        .map(|(claim, header)| match claim_header(header) {
            Ok(name) => Ok((claim.clone(), name)),
            Err(reason) => Err(JwtSetupError::Setting {
                field: "claims_to_headers",
                reason,
            }),
        })
        .collect()
}

/// A NumericDate claim in whole seconds; fractions are truncated, negatives read as 0.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, JwtError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Some(n) = value.as_number() else {
        return Err(JwtError::Malformed);
    };
    if let Some(secs) = n.as_u64() {
        return Ok(Some(secs));
    }
    match n.as_f64() {
        // `as` saturates: huge values become u64::MAX, negatives 0.
        Some(f) if f.is_finite() => Ok(Some(f as u64)),
        _ => Err(JwtError::Malformed),
    }
}

fn scopes(claim: Option<&Value>) -> Vec<String> {
    match claim {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Keys generated once per test run with the `openssl` command, and token helpers.

    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;

    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::{json, Value};

    use super::JwtVerifier;
    use crate::config::JwtConfig;
    use crate::principal::unix_now;

    /// A generated key pair, in PEM.
    pub struct KeyPair {
        pub private_pem: Vec<u8>,
        pub public_pem: Vec<u8>,
    }

    impl KeyPair {
        fn generate(args: &[&str]) -> KeyPair {
            let private_pem = openssl(&[&["genpkey"], args].concat(), None);
            let public_pem = openssl(&["pkey", "-pubout"], Some(&private_pem));
            KeyPair {
                private_pem,
                public_pem,
            }
        }

        pub fn encoding(&self, alg: Algorithm) -> EncodingKey {
            match alg {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&self.private_pem),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&self.private_pem),
                _ => EncodingKey::from_rsa_pem(&self.private_pem),
            }
            .expect("generated key loads")
        }

        /// Writes the public key into `dir` and returns its path.
        pub fn write_public(&self, dir: &Path, name: &str) -> PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, &self.public_pem).expect("write public key");
            path
        }
    }

    /// Every key the tests use.
    pub struct TestKeys {
        pub rsa: KeyPair,
        pub rsa_other: KeyPair,
        pub ec256: KeyPair,
        pub ec384: KeyPair,
        pub ed25519: KeyPair,
    }

    fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the openssl command is installed");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.unwrap_or_default())
            .expect("write to openssl");
        drop(input);
        let out = child.wait_with_output().expect("openssl runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl {args:?} failed: {stderr}");
        out.stdout
    }

    /// The keys, generated on first use.
    pub fn keys() -> &'static TestKeys {
        static KEYS: OnceLock<TestKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let rsa = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
            TestKeys {
                rsa: KeyPair::generate(&rsa),
                rsa_other: KeyPair::generate(&rsa),
                ec256: KeyPair::generate(&[
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ]),
                ec384: KeyPair::generate(&[
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-384",
                ]),
                ed25519: KeyPair::generate(&["-algorithm", "ED25519"]),
            }
        })
    }

    /// The public JWK of a pair, with `alg` and optionally `kid`.
    pub fn jwk(pair: &KeyPair, alg: Algorithm, kid: Option<&str>) -> Value {
        let jwk = Jwk::from_encoding_key(&pair.encoding(alg), alg).expect("jwk from key");
        let mut value = serde_json::to_value(jwk).expect("jwk serializes");
        if let Some(kid) = kid {
            value["kid"] = json!(kid);
        }
        value["use"] = json!("sig");
        value
    }

    /// Valid claims: `sub`, an hour of validity, `iat` now.
    pub fn claims() -> Value {
        let now = unix_now();
        json!({ "sub": "alice", "exp": now + 3600, "iat": now, "scope": "read write" })
    }

    /// A token with a standard header.
    pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut header = json!({ "alg": alg, "typ": "JWT" });
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        sign_raw(&header, claims, key, alg)
    }

    /// A token with any header, signed with `key` under `alg` whatever the header says.
    pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
        let message = format!("{}.{}", b64(&header.to_string()), b64(&claims.to_string()));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("sign");
        format!("{message}.{signature}")
    }

    pub fn b64(text: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// A verifier from the TOML body of `[auth.jwt]`.
    pub fn verifier(toml_body: &str) -> JwtVerifier {
        JwtVerifier::new(&config(toml_body)).expect("verifier builds")
    }

    /// `[auth.jwt]` from its TOML body.
    pub fn config(toml_body: &str) -> JwtConfig {
        toml::from_str(toml_body).expect("test config parses")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    /// A verifier with one public key (kid `k`) for `alg`, and its key file's directory.
    fn pem_verifier(
        pair: &KeyPair,
        alg: Algorithm,
        extra: &str,
    ) -> (JwtVerifier, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = pair.write_public(dir.path(), "key.pem");
        let v = verifier(&format!(
            "{extra}\n[[keys]]\nkid = \"k\"\nalgorithm = \"{alg:?}\"\npublic_key_file = {path:?}\n"
        ));
        (v, dir)
    }

    /// A verifier with an HS256 secret (no kid) from a file.
    fn hs_verifier(secret: &str, extra: &str) -> (JwtVerifier, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, secret).expect("write secret");
        let v = verifier(&format!(
            "{extra}\n[[keys]]\nalgorithm = \"HS256\"\nsecret_file = {path:?}\n"
        ));
        (v, dir)
    }

    const SECRET: &str = "a-long-enough-test-secret-for-hs256-0123456789";

    fn hs(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            None,
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
    }

    async fn hs_verify(claims: &Value, extra: &str) -> Result<VerifiedToken, JwtError> {
        let (v, _dir) = hs_verifier(SECRET, extra);
        v.verify(&hs(claims)).await
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    #[tokio::test]
    async fn a_non_string_jti_is_malformed_so_no_token_escapes_revocation() {
        let ok = hs_verify(&with(claims(), "jti", json!("id-7")), "")
            .await
            .expect("string jti");
        assert_eq!(ok.jti.as_deref(), Some("id-7"));
        for bad in [json!(4242), json!(["a"]), json!({"id": 1}), json!(null)] {
            let r = hs_verify(&with(claims(), "jti", bad.clone()), "").await;
            assert_eq!(r, Err(JwtError::Malformed), "jti {bad}");
        }
    }

    #[tokio::test]
    async fn valid_tokens_of_every_algorithm_verify() {
        let k = keys();
        let cases = [
            (&k.rsa, Algorithm::RS256),
            (&k.rsa, Algorithm::RS512),
            (&k.rsa, Algorithm::PS256),
            (&k.ec256, Algorithm::ES256),
            (&k.ec384, Algorithm::ES384),
            (&k.ed25519, Algorithm::EdDSA),
        ];
        for (pair, alg) in cases {
            let (v, _dir) = pem_verifier(pair, alg, "");
            let token = sign(alg, Some("k"), &claims(), &pair.encoding(alg));
            let ok = v
                .verify(&token)
                .await
                .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
            assert_eq!(ok.consumer, "alice", "{alg:?}");
        }
        let ok = hs_verify(&claims(), "").await.expect("HS256");
        assert_eq!(ok.consumer, "alice");
        assert_eq!(ok.scopes, vec!["read", "write"]);
        assert!(ok.expires_at.is_some());
    }

    #[tokio::test]
    async fn time_claims_are_checked_with_leeway() {
        let now = unix_now();
        let expired = with(claims(), "exp", json!(now - 120));
        assert_eq!(hs_verify(&expired, "").await, Err(JwtError::Expired));
        let just_expired = with(claims(), "exp", json!(now - 30));
        assert!(
            hs_verify(&just_expired, "").await.is_ok(),
            "within the 60s leeway"
        );
        assert_eq!(
            hs_verify(&just_expired, "leeway = \"0s\"").await,
            Err(JwtError::Expired)
        );

        let future = with(claims(), "nbf", json!(now + 600));
        assert_eq!(hs_verify(&future, "").await, Err(JwtError::NotYetValid));
        let issued_later = with(claims(), "iat", json!(now + 600));
        assert_eq!(
            hs_verify(&issued_later, "").await,
            Err(JwtError::IssuedInFuture)
        );
        let fractional = with(claims(), "nbf", json!(now as f64 - 0.5));
        assert!(hs_verify(&fractional, "").await.is_ok());

        let mut no_exp = claims();
        no_exp.as_object_mut().expect("object").remove("exp");
        assert_eq!(hs_verify(&no_exp, "").await, Err(JwtError::Expired));
        let ok = hs_verify(&no_exp, "require_exp = false")
            .await
            .expect("exp optional");
        assert_eq!(ok.expires_at, None);

        let text_exp = with(claims(), "exp", json!("tomorrow"));
        assert_eq!(hs_verify(&text_exp, "").await, Err(JwtError::Malformed));
    }

    #[tokio::test]
    async fn issuer_audience_and_required_claims_are_enforced() {
        let rules = "issuer = \"https://idp\"\naudiences = [\"api\", \"admin\"]\n\
                     required_claims = [\"tenant\"]";
        let good = json!({ "iss": "https://idp", "aud": ["other", "api"], "tenant": "t1" });
        let base = |extra: &Value| {
            let mut c = claims();
            for (k, v) in extra.as_object().expect("object") {
                c[k] = v.clone();
            }
            c
        };
        assert!(hs_verify(&base(&good), rules).await.is_ok());
        assert!(
            hs_verify(&base(&with(good.clone(), "aud", json!("admin"))), rules)
                .await
                .is_ok()
        );
        let cases = [
            (
                with(good.clone(), "iss", json!("https://evil")),
                JwtError::WrongIssuer,
            ),
            (
                with(good.clone(), "iss", json!(null)),
                JwtError::WrongIssuer,
            ),
            (
                with(good.clone(), "aud", json!("other")),
                JwtError::WrongAudience,
            ),
            (
                with(good.clone(), "aud", json!(["x", 1])),
                JwtError::WrongAudience,
            ),
            (
                with(good.clone(), "aud", json!(null)),
                JwtError::WrongAudience,
            ),
        ];
        for (claims, expected) in cases {
            assert_eq!(
                hs_verify(&base(&claims), rules).await,
                Err(expected),
                "{claims}"
            );
        }
        let mut no_tenant = base(&good);
        no_tenant.as_object_mut().expect("object").remove("tenant");
        assert_eq!(
            hs_verify(&no_tenant, rules).await,
            Err(JwtError::MissingClaim("tenant".into()))
        );

        let mut no_sub = claims();
        no_sub.as_object_mut().expect("object").remove("sub");
        assert_eq!(
            hs_verify(&no_sub, "").await,
            Err(JwtError::MissingClaim("sub".into()))
        );
        let numeric_sub = with(claims(), "sub", json!(42));
        assert_eq!(
            hs_verify(&numeric_sub, "").await,
            Err(JwtError::MissingClaim("sub".into()))
        );
    }

    #[tokio::test]
    async fn tampering_and_foreign_keys_are_rejected() {
        let k = keys();
        let (v, _dir) = pem_verifier(&k.rsa, Algorithm::RS256, "");
        let token = sign(
            Algorithm::RS256,
            Some("k"),
            &claims(),
            &k.rsa.encoding(Algorithm::RS256),
        );
        let (head, rest) = token.split_once('.').expect("segments");
        let (_, signature) = rest.split_once('.').expect("segments");
        let forged_claims = with(claims(), "sub", json!("admin"));
        let tampered = format!("{head}.{}.{signature}", b64(&forged_claims.to_string()));
        assert_eq!(v.verify(&tampered).await, Err(JwtError::BadSignature));

        let foreign = sign(
            Algorithm::RS256,
            Some("k"),
            &claims(),
            &k.rsa_other.encoding(Algorithm::RS256),
        );
        assert_eq!(v.verify(&foreign).await, Err(JwtError::BadSignature));

        let unknown = sign(
            Algorithm::RS256,
            Some("who"),
            &claims(),
            &k.rsa.encoding(Algorithm::RS256),
        );
        assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKey));
        let no_kid = sign(
            Algorithm::RS256,
            None,
            &claims(),
            &k.rsa.encoding(Algorithm::RS256),
        );
        assert_eq!(
            v.verify(&no_kid).await,
            Err(JwtError::UnknownKey),
            "the only key has a kid"
        );

        let (hs, _dir) = hs_verifier(SECRET, "");
        let wrong_secret = sign(
            Algorithm::HS256,
            None,
            &claims(),
            &EncodingKey::from_secret(b"guess"),
        );
        assert_eq!(hs.verify(&wrong_secret).await, Err(JwtError::BadSignature));
    }

    #[tokio::test]
    async fn alg_none_and_algorithm_mismatch_are_rejected() {
        let k = keys();
        let (v, _dir) = pem_verifier(&k.rsa, Algorithm::RS256, "");
        for alg in ["none", "None", "NONE"] {
            let header = b64(&json!({ "alg": alg, "kid": "k" }).to_string());
            let payload = b64(&claims().to_string());
            assert_eq!(
                v.verify(&format!("{header}.{payload}.")).await,
                Err(JwtError::AlgorithmNotAllowed)
            );
            assert_eq!(
                v.verify(&format!("{header}.{payload}.c2ln")).await,
                Err(JwtError::AlgorithmNotAllowed)
            );
        }
        let ps = sign(
            Algorithm::PS256,
            Some("k"),
            &claims(),
            &k.rsa.encoding(Algorithm::PS256),
        );
        assert_eq!(
            v.verify(&ps).await,
            Err(JwtError::AlgorithmNotAllowed),
            "same key, other algorithm"
        );
        let rs512 = sign(
            Algorithm::RS512,
            Some("k"),
            &claims(),
            &k.rsa.encoding(Algorithm::RS512),
        );
        assert_eq!(v.verify(&rs512).await, Err(JwtError::AlgorithmNotAllowed));
        let unknown_alg = sign_raw(
            &json!({ "alg": "HS1024", "kid": "k" }),
            &claims(),
            &k.rsa.encoding(Algorithm::RS256),
            Algorithm::RS256,
        );
        assert_eq!(
            v.verify(&unknown_alg).await,
            Err(JwtError::AlgorithmNotAllowed)
        );
    }

    #[tokio::test]
    async fn an_rsa_public_key_used_as_hmac_secret_is_rejected() {
        let k = keys();
        let (v, _dir) = pem_verifier(&k.rsa, Algorithm::RS256, "");
        let attacker_key = EncodingKey::from_secret(&k.rsa.public_pem);
        for kid in [Some("k"), None] {
            let forged = sign(
                Algorithm::HS256,
                kid,
                &with(claims(), "sub", json!("admin")),
                &attacker_key,
            );
            let result = v.verify(&forged).await;
            assert!(
                matches!(
                    result,
                    Err(JwtError::AlgorithmNotAllowed | JwtError::UnknownKey)
                ),
                "kid {kid:?}: {result:?}"
            );
        }
        // Same with a key without kid: the HS256 token finds no HS256 key.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = k.rsa.write_public(dir.path(), "k.pem");
        let v = verifier(&format!(
            "[[keys]]\nalgorithm = \"RS256\"\npublic_key_file = {path:?}\n"
        ));
        let forged = sign(Algorithm::HS256, None, &claims(), &attacker_key);
        assert_eq!(v.verify(&forged).await, Err(JwtError::AlgorithmNotAllowed));
    }

    #[tokio::test]
    async fn header_supplied_keys_and_crit_are_forbidden() {
        let k = keys();
        let (v, _dir) = pem_verifier(&k.rsa, Algorithm::RS256, "");
        let key = k.rsa.encoding(Algorithm::RS256);
        let cases = [
            ("jku", json!("https://evil/jwks.json")),
            ("x5u", json!("https://evil/cert.pem")),
            ("jwk", json!({ "kty": "oct", "k": "c2VjcmV0" })),
            ("x5c", json!(["MIIB"])),
            ("crit", json!(["exp"])),
            ("crit", json!([])),
        ];
        for (name, value) in cases {
            let mut header = json!({ "alg": "RS256", "kid": "k" });
            header[name] = value;
            let token = sign_raw(&header, &claims(), &key, Algorithm::RS256);
            let result = v.verify(&token).await;
            assert!(
                matches!(result, Err(JwtError::ForbiddenHeader(n)) if n == name),
                "{name}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_tokens_are_rejected_without_panicking() {
        let (v, _dir) = hs_verifier(SECRET, "");
        let good = hs(&claims());
        let (h, rest) = good.split_once('.').expect("segments");
        let (p, s) = rest.split_once('.').expect("segments");
        let huge = format!("{h}.{}.{s}", "A".repeat(100 * 1024));
        let bad_json = format!("{}.{p}.{s}", b64("{\"alg\":"));
        let array_payload = format!("{h}.{}.{s}", b64("[1,2,3]"));
        let cases = [
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}.{p}.{s}."),
            format!("{h}!.{p}.{s}"),
            format!("{h}.{p}.{s}=="),
            format!("{h}.{p}.***"),
            format!("{h}.{p}."),
            format!("{h}=.{p}.{s}"),
            huge,
            bad_json,
            array_payload,
            format!("{}.{p}.{s}", b64("{\"alg\": 256}")),
            format!("{}.{p}.{s}", b64("{\"typ\": \"JWT\"}")),
            format!("{}.{p}.{s}", b64("{\"alg\": \"HS256\", \"kid\": 5}")),
            format!("{}.{p}.{s}", b64(&"[".repeat(5000))),
            "ключ.ключ.ключ".into(),
        ];
        for token in cases {
            let shown = &token[..token.len().min(40)];
            assert_eq!(v.verify(&token).await, Err(JwtError::Malformed), "{shown}");
        }
        assert_eq!(
            v.verify(&good).await.map(|t| t.consumer),
            Ok("alice".into())
        );
    }

    #[tokio::test]
    async fn scopes_come_from_a_string_or_an_array() {
        let array = with(claims(), "scope", json!(["a", 7, "b:c"]));
        assert_eq!(
            hs_verify(&array, "").await.expect("ok").scopes,
            vec!["a", "b:c"]
        );
        let spaced = with(claims(), "scope", json!("  one\ttwo  three "));
        assert_eq!(
            hs_verify(&spaced, "").await.expect("ok").scopes,
            vec!["one", "two", "three"]
        );
        let custom = with(claims(), "scp", json!(["x"]));
        assert_eq!(
            hs_verify(&custom, "scopes_claim = \"scp\"")
                .await
                .expect("ok")
                .scopes,
            vec!["x"]
        );
        let absent = with(claims(), "scope", json!(null));
        assert!(hs_verify(&absent, "").await.expect("ok").scopes.is_empty());
    }

    #[tokio::test]
    async fn claims_become_upstream_headers_when_they_fit() {
        let rules = "consumer_claim = \"email\"\n[claims_to_headers]\nemail = \"x-user-email\"\n\
                     tenant = \"x-tenant\"\n\
                     level = \"x-level\"\nadmin = \"x-admin\"\nnested = \"x-nested\"\n\
                     evil = \"x-evil\"\nabsent = \"x-absent\"";
        let mut c = claims();
        for (name, value) in [
            ("email", json!("a@example.com")),
            ("tenant", json!("t-1")),
            ("level", json!(3.5)),
            ("admin", json!(true)),
            ("nested", json!({ "a": 1 })),
            ("evil", json!("x\r\nset-cookie: pwned")),
            ("jti", json!("id-1")),
        ] {
            c[name] = value;
        }
        let ok = hs_verify(&c, rules).await.expect("ok");
        assert_eq!(ok.consumer, "a@example.com");
        assert_eq!(ok.jti.as_deref(), Some("id-1"));
        let headers: Vec<(&str, &str)> = ok
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
            .collect();
        assert_eq!(
            headers,
            vec![
                ("x-admin", "true"),
                ("x-user-email", "a@example.com"),
                ("x-level", "3.5"),
                ("x-tenant", "t-1"),
            ]
        );
    }

    #[tokio::test]
    async fn a_token_without_kid_tries_keys_without_kid_of_its_algorithm() {
        let k = keys();
        let dir = tempfile::tempdir().expect("tempdir");
        let rsa = k.rsa.write_public(dir.path(), "rsa.pem");
        let ec = k.ec256.write_public(dir.path(), "ec.pem");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, SECRET).expect("secret");
        let v = verifier(&format!(
            "[[keys]]\nalgorithm = \"HS256\"\nsecret_file = {secret:?}\n\
             [[keys]]\nalgorithm = \"RS256\"\npublic_key_file = {rsa:?}\n\
             [[keys]]\nkid = \"ec\"\nalgorithm = \"ES256\"\npublic_key_file = {ec:?}\n"
        ));
        let rs = sign(
            Algorithm::RS256,
            None,
            &claims(),
            &k.rsa.encoding(Algorithm::RS256),
        );
        assert!(v.verify(&rs).await.is_ok());
        assert!(v.verify(&hs(&claims())).await.is_ok());
        let es_no_kid = sign(
            Algorithm::ES256,
            None,
            &claims(),
            &k.ec256.encoding(Algorithm::ES256),
        );
        assert_eq!(
            v.verify(&es_no_kid).await,
            Err(JwtError::AlgorithmNotAllowed)
        );
        let es = sign(
            Algorithm::ES256,
            Some("ec"),
            &claims(),
            &k.ec256.encoding(Algorithm::ES256),
        );
        assert!(v.verify(&es).await.is_ok());
    }

    #[test]
    fn setup_refuses_bad_keys_with_their_index() {
        let k = keys();
        let dir = tempfile::tempdir().expect("tempdir");
        let rsa = k.rsa.write_public(dir.path(), "rsa.pem");
        let ec = k.ec256.write_public(dir.path(), "ec.pem");
        let private = dir.path().join("private.pem");
        std::fs::write(&private, &k.rsa.private_pem).expect("write");
        let cases = [
            format!("[[keys]]\nalgorithm = \"none\"\npublic_key_file = {rsa:?}"),
            format!("[[keys]]\nalgorithm = \"ES256\"\npublic_key_file = {rsa:?}"),
            format!("[[keys]]\nalgorithm = \"ES384\"\npublic_key_file = {ec:?}"),
            format!("[[keys]]\nalgorithm = \"RS256\"\npublic_key_file = {private:?}"),
            "[[keys]]\nalgorithm = \"RS256\"\npublic_key_file = \"/nonexistent/key.pem\"".into(),
            "[[keys]]\nalgorithm = \"HS256\"\nsecret_env = \"PORTCULLIS_TEST_SURELY_UNSET_VAR\""
                .into(),
        ];
        for toml in cases {
            let toml =
                format!("[[keys]]\nalgorithm = \"RS256\"\npublic_key_file = {rsa:?}\n{toml}");
            let err = JwtVerifier::new(&config(&toml)).expect_err(&toml);
            assert!(
                matches!(err, JwtSetupError::Key { index: 1, .. }),
                "{toml}: {err}"
            );
        }
        assert!(matches!(
            JwtVerifier::new(&config("")),
            Err(JwtSetupError::NoKeys)
        ));
        let bad_header = format!(
            "[[keys]]\nalgorithm = \"RS256\"\npublic_key_file = {rsa:?}\n\
             [claims_to_headers]\nsub = \"bad header\""
        );
        assert!(matches!(
            JwtVerifier::new(&config(&bad_header)),
            Err(JwtSetupError::Setting { .. })
        ));
    }

    #[test]
    fn errors_have_codes_and_fixed_challenges() {
        let all = [
            JwtError::Malformed,
            JwtError::AlgorithmNotAllowed,
            JwtError::ForbiddenHeader("jku"),
            JwtError::UnknownKey,
            JwtError::BadSignature,
            JwtError::Expired,
            JwtError::NotYetValid,
            JwtError::IssuedInFuture,
            JwtError::WrongIssuer,
            JwtError::WrongAudience,
            JwtError::MissingClaim("sub".into()),
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(JwtError::code).collect();
        assert_eq!(codes.len(), all.len(), "codes are distinct");
        assert_eq!(JwtError::Expired.code(), "expired");
        for e in &all {
            let challenge = e.www_authenticate();
            assert!(
                challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
                "{challenge}"
            );
            assert!(HeaderValue::from_str(challenge).is_ok());
        }
    }

    #[tokio::test]
    async fn a_rotated_secret_file_changes_the_fingerprint_and_the_verdict() {
        let (v, dir) = hs_verifier(SECRET, "");
        let token = hs(&claims());
        let (_, before) = v.verify_with_fingerprint(&token).await.expect("old secret");
        assert_eq!(before, v.key_fingerprint());
        let cfg = config(&format!(
            "[[keys]]\nalgorithm = \"HS256\"\nsecret_file = {:?}\n",
            dir.path().join("secret")
        ));
        let same = JwtVerifier::replacing(&cfg, Some(&v)).expect("same secret");
        assert_eq!(
            same.key_fingerprint(),
            before,
            "an unchanged secret keeps decisions"
        );

        std::fs::write(
            dir.path().join("secret"),
            "another-secret-of-enough-length-987654321",
        )
        .expect("rotate secret");
        let rotated = JwtVerifier::replacing(&cfg, Some(&v)).expect("rotated secret");
        assert_ne!(rotated.key_fingerprint(), before);
        assert_eq!(
            rotated.verify(&token).await,
            Err(JwtError::BadSignature),
            "same TOML, new secret: the old token no longer verifies"
        );
    }

    #[test]
    fn every_claim_rule_is_part_of_the_fingerprint() {
        let (base, _dir) = hs_verifier(SECRET, "");
        let (same, _same_dir) = hs_verifier(SECRET, "");
        assert_eq!(
            base.key_fingerprint(),
            same.key_fingerprint(),
            "equal keys and rules"
        );
        let changes = [
            "issuer = \"https://idp\"",
            "audiences = [\"api\"]",
            "leeway = \"5s\"",
            "require_exp = false",
            "required_claims = [\"tenant\"]",
            "consumer_claim = \"email\"",
            "scopes_claim = \"scp\"",
            "[claims_to_headers]\nemail = \"x-user-email\"",
        ];
        let mut seen = std::collections::HashSet::from([base.key_fingerprint()]);
        for rules in changes {
            let (v, _dir) = hs_verifier(SECRET, rules);
            assert!(
                seen.insert(v.key_fingerprint()),
                "{rules:?} left the fingerprint unchanged"
            );
        }
        let (a, _a) = hs_verifier(SECRET, "audiences = [\"ab\", \"c\"]");
        let (b, _b) = hs_verifier(SECRET, "audiences = [\"a\", \"bc\"]");
        assert_ne!(
            a.key_fingerprint(),
            b.key_fingerprint(),
            "parts are delimited"
        );
    }

    #[tokio::test]
    async fn the_fingerprint_a_verification_returns_is_the_one_read_per_request() {
        let (v, _dir) = hs_verifier(SECRET, "audiences = [\"api\"]");
        let token = hs(&with(claims(), "aud", json!("api")));
        let (_, fingerprint) = v.verify_with_fingerprint(&token).await.expect("valid");
        assert_eq!(fingerprint, v.key_fingerprint());
        assert_eq!(
            v.key_fingerprint(),
            v.key_fingerprint(),
            "stable across reads"
        );
    }

    /// Pingora's filters need `Send` futures; this fails to compile otherwise.
    #[allow(dead_code)]
    fn verify_future_is_send(v: &JwtVerifier) {
        fn send<T: Send>(_: &T) {}
        send(&v.verify(""));
    }

    #[test]
    fn token_hash_is_sha256() {
        let h = token_hash("abc");
        assert_eq!(h[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_ne!(token_hash("abd"), h);
    }
}

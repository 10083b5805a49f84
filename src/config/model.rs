//! The TOML file as typed structs. Every section denies unknown fields so that a typo is an
//! error, not a silently ignored setting. Defaults live next to the fields they fill.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::lenient::{ByteSize, Dur, Lenient};

/// The whole configuration file.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners and process-wide settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// The loopback admin service.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Access log and redaction.
    #[serde(default)]
    pub log: LogConfig,
    /// Named pools of upstream peers that routes send traffic to.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Request matching rules, each pointing at one upstream.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Shared state backend; absent means the in-process store (single node).
    pub store: Option<StoreConfig>,
    /// Authentication methods routes can require.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Rate-limit settings shared by every route.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// `[rate_limit]`: process-wide rate-limit settings.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Also send `X-RateLimit-Limit/-Remaining/-Reset` (the IETF `RateLimit` and
    /// `RateLimit-Policy` headers are always sent).
    pub legacy_headers: bool,
    /// Gateway nodes sharing the store; `on_store_error = "local"` enforces limit / nodes.
    pub node_count: u32,
    /// Consecutive store failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the open breaker skips the store before probing it again.
    pub breaker_open_for: Lenient<Dur>,
    /// Most in-process counters kept (per kind: single-node limits, the local fallback, failed
    /// authentication); the least recently used make room for new ones. Restart to change.
    pub local_max_counters: usize,
    /// `by = "ip"` counts IPv4 clients by this network prefix (32: each address).
    pub ipv4_prefix: u8,
    /// `by = "ip"` counts IPv6 clients by this network prefix (64: one customer network).
    pub ipv6_prefix: u8,
    /// Per-client-IP limit on rejected credentials, checked before any credential lookup.
    pub failed_auth: FailedAuthConfig,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            legacy_headers: true,
            node_count: 1,
            breaker_failures: 5,
            breaker_open_for: Lenient::new("1s"),
            local_max_counters: 100_000,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
            failed_auth: FailedAuthConfig::default(),
        }
    }
}

/// `[rate_limit.failed_auth]`: how many rejected credentials a client IP may present.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FailedAuthConfig {
    /// On by default: it keeps floods of bogus credentials away from the store.
    pub enabled: bool,
    /// Rejected credentials per window and client network.
    pub limit: u64,
    /// Window length, "1s" to "1d".
    pub window: Lenient<Dur>,
}

impl Default for FailedAuthConfig {
    fn default() -> Self {
        FailedAuthConfig {
            enabled: true,
            limit: 100,
            window: Lenient::new("10s"),
        }
    }
}

/// One rate-limit rule of a route.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    /// Name; counters are keyed by it, so changing `limit` keeps the counts.
    pub name: String,
    /// What is counted: "ip", "consumer" (falls back to ip when anonymous), "route",
    /// "header:<name>" or "claim:<name>" (a claim listed in `claims_to_headers`).
    pub by: String,
    /// Units per window.
    pub limit: u64,
    /// Window length, "1s" to "30d".
    pub window: Lenient<Dur>,
    /// Counting algorithm.
    #[serde(default)]
    pub algorithm: RateAlgorithm,
    /// Units each request costs.
    #[serde(default = "one_u64")]
    pub cost: u64,
    /// Decide and count but never deny (for rolling out a limit).
    #[serde(default)]
    pub shadow: bool,
    /// Count requests this rule (or another) denied, too.
    #[serde(default)]
    pub count_denied: bool,
    /// Limits by the principal's plan, replacing `limit` (e.g. `{ gold = 1000 }`).
    #[serde(default)]
    pub plan_limits: BTreeMap<String, u64>,
}

/// Rate-limit counting algorithm.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateAlgorithm {
    /// O(1) memory, weighted previous + current window.
    #[default]
    SlidingWindow,
    /// Exact, one entry per counted unit; for small limits.
    SlidingLog,
}

/// What a route does when the store cannot decide a rate limit.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitFailure {
    /// Admit the request.
    Allow,
    /// Refuse it (503 `rate_limiter_unavailable`).
    Deny,
    /// Enforce the limit in process, divided by `[rate_limit] node_count`.
    #[default]
    Local,
}

/// `[store]`: the Redis that gateway nodes share.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `redis://host:port/db` or `rediss://…` for TLS; must not contain a password.
    pub url: String,
    /// ACL user name.
    pub username: Option<String>,
    /// Environment variable holding the Redis password.
    pub password_env: Option<String>,
    /// File holding the Redis password.
    pub password_file: Option<String>,
    /// Prefix of every key the gateway writes (one per environment sharing a Redis).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Deadline of one store operation; a slower Redis is treated as failed.
    #[serde(default = "default_op_timeout")]
    pub operation_timeout: Lenient<Dur>,
    /// Deadline to establish the connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Lenient<Dur>,
    /// PEM bundle of the CA certificates that verify the Redis server's certificate, instead of
    /// the system trust store (`rediss://` only).
    pub tls_ca_file: Option<String>,
    /// PEM client certificate for Redis `tls-auth-clients` (`rediss://` only; with `tls_key_file`).
    pub tls_cert_file: Option<String>,
    /// PEM (PKCS#8) private key of `tls_cert_file`.
    pub tls_key_file: Option<String>,
}

/// `[auth]`: credentials the gateway can check.
#[derive(Debug, Deserialize, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys (`auth = ["api_key"]` on a route).
    pub api_key: Option<ApiKeyConfig>,
    /// JWTs (`auth = ["jwt"]` on a route).
    pub jwt: Option<JwtConfig>,
    /// The local tier of the decision cache.
    #[serde(default)]
    pub cache: AuthCacheConfig,
}

/// `[auth.api_key]`.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Request header carrying the key.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// Query parameter carrying the key (removed before proxying); off when absent.
    pub query_param: Option<String>,
    /// Environment variable with a server secret: keys are stored as HMAC-SHA256 under it
    /// (plain SHA-256 when absent).
    pub hash_secret_env: Option<String>,
    /// File with the server secret (instead of `hash_secret_env`).
    pub hash_secret_file: Option<String>,
    /// Lifetime of keys created without an explicit one (every stored key expires).
    #[serde(default = "default_key_ttl")]
    pub key_ttl: Lenient<Dur>,
    /// Keys declared in the config (in-process store only); the key itself comes from env/file.
    #[serde(default)]
    pub keys: Vec<StaticKeyConfig>,
}

/// A key declared in the config.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticKeyConfig {
    /// Key id (shown in listings and logs instead of the key).
    pub id: String,
    /// The consumer the key authenticates.
    pub consumer: String,
    /// Environment variable holding the key.
    pub key_env: Option<String>,
    /// File holding the key.
    pub key_file: Option<String>,
    /// Plan name (rate-limit overrides key on it).
    pub plan: Option<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `[auth.jwt]`.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`; any issuer when absent.
    pub issuer: Option<String>,
    /// Accepted `aud` values; `aud` is not checked when empty.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: Lenient<Dur>,
    /// Reject tokens without `exp`.
    #[serde(default = "yes")]
    pub require_exp: bool,
    /// Claims that must be present.
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Claim naming the consumer.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Claim with the scopes: a space-separated string or an array of strings.
    #[serde(default = "default_scopes_claim")]
    pub scopes_claim: String,
    /// Claim → upstream request header.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Keys configured directly.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// JWKS document URL of the identity provider.
    pub jwks_url: Option<String>,
    /// How often the JWKS is refreshed when its response gives no cache lifetime.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: Lenient<Dur>,
    /// An unknown `kid` refetches the JWKS at most once per this interval.
    #[serde(default = "default_jwks_min_refetch")]
    pub jwks_min_refetch_interval: Lenient<Dur>,
    /// Deadline of one JWKS fetch.
    #[serde(default = "default_jwks_timeout")]
    pub jwks_timeout: Lenient<Dur>,
}

/// One configured JWT verification key; its algorithm is pinned here, never taken from a token.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// `kid` this key answers to; a key without one is tried for tokens without a `kid`.
    pub kid: Option<String>,
    /// HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA.
    pub algorithm: String,
    /// Environment variable with the HMAC secret (HS*).
    pub secret_env: Option<String>,
    /// File with the HMAC secret (HS*).
    pub secret_file: Option<String>,
    /// PEM public key file (RS*, PS*, ES*, EdDSA).
    pub public_key_file: Option<String>,
}

/// `[auth.cache]`: the in-process tier in front of the store.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthCacheConfig {
    /// Entries of known credentials kept per node.
    pub capacity: usize,
    /// Longest time a decision is kept (never longer than the credential lives).
    pub ttl: Lenient<Dur>,
    /// Entries of unknown credentials kept, separately, so random keys cannot evict good ones.
    pub negative_capacity: usize,
    /// How long an unknown credential is remembered as unknown.
    pub negative_ttl: Lenient<Dur>,
}

impl Default for AuthCacheConfig {
    fn default() -> Self {
        AuthCacheConfig {
            capacity: 100_000,
            ttl: Lenient::new("5m"),
            negative_capacity: 10_000,
            negative_ttl: Lenient::new("5s"),
        }
    }
}

/// An authentication method a route can require.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `[auth.api_key]`.
    ApiKey,
    /// `[auth.jwt]`.
    Jwt,
}

/// What a route does when the store cannot answer for an unknown credential.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthStoreFailure {
    /// 503 `store_unavailable` (the client did nothing wrong).
    #[default]
    Unavailable,
    /// Let the request through without a consumer (fail open).
    Allow,
}

/// `[server]`: what the proxy listens on and how the process behaves.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Plain HTTP listen addresses (needs a restart to change).
    pub listen: Vec<Lenient<SocketAddr>>,
    /// Optional HTTPS listener (needs a restart to change).
    pub tls: Option<TlsListenerConfig>,
    /// Worker threads of the proxy service (needs a restart to change).
    pub threads: usize,
    /// Whether the proxy threads share one work-stealing runtime (true) or each run their own
    /// single-threaded runtime (false, faster: no cross-thread wakeups). Restart to change.
    pub work_stealing: bool,
    /// How long an idle HTTP/1.1 keep-alive connection is kept open.
    pub keepalive_timeout: Lenient<Dur>,
    /// On SIGTERM: Pingora stops accepting, then waits this long (whole seconds, rounded up)
    /// for in-flight requests before it exits; it always waits the full period.
    pub grace_period: Lenient<Dur>,
    /// Peers whose forwarding headers are kept and whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Lenient<IpNet>>,
    /// Requests whose declared `Content-Length` exceeds this get 413.
    pub max_body_size: Lenient<ByteSize>,
    /// Merge repeated slashes of request paths before routing and proxying ("Path
    /// normalization" in docs/config.md); off only for upstreams that give `//` a meaning.
    pub merge_slashes: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![Lenient::new("127.0.0.1:8080")],
            tls: None,
            threads: 1,
            work_stealing: false,
            keepalive_timeout: Lenient::new("60s"),
            grace_period: Lenient::new("5s"),
            trusted_proxies: Vec::new(),
            max_body_size: Lenient::new("10MiB"),
            merge_slashes: true,
        }
    }
}

/// `[server.tls]`: an HTTPS listener with HTTP/2.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// HTTPS listen address.
    pub listen: Lenient<SocketAddr>,
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
    /// Offer HTTP/2 by ALPN.
    #[serde(default = "yes")]
    pub h2: bool,
}

/// `[admin]`: the admin service (health, metrics, reload).
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address; must be loopback unless a token is configured.
    pub listen: Lenient<SocketAddr>,
    /// Environment variable that holds the bearer token for mutating endpoints.
    pub token_env: Option<String>,
    /// File that holds the bearer token (surrounding whitespace is trimmed).
    pub token_file: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Lenient::new("127.0.0.1:9901"),
            token_env: None,
            token_file: None,
        }
    }
}

/// `[log]`: access log destination and what is never written to it.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "stdout", "off", or a file path to append to.
    pub access_log: String,
    /// Request headers to include in each access-log line (sensitive ones are redacted).
    pub log_headers: Vec<String>,
    /// Extra header names that are sensitive, on top of the built-in ones.
    pub sensitive_headers: Vec<String>,
    /// Query parameters whose values are redacted in the logged path.
    pub sensitive_query_params: Vec<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            access_log: "stdout".to_string(),
            log_headers: vec!["user-agent".to_string()],
            sensitive_headers: Vec::new(),
            sensitive_query_params: Vec::new(),
        }
    }
}

/// `[[upstreams]]`: a named pool of peers.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name that routes refer to.
    pub name: String,
    /// The peers of the pool.
    pub peers: Vec<PeerConfig>,
    /// How a peer is picked for a request.
    #[serde(default)]
    pub selection: Selection,
    /// What is hashed for `consistent_hash`: "client_ip", "path" or "header:<name>".
    #[serde(default = "default_hash_key")]
    pub hash_key: String,
    /// Talk HTTPS to the peers.
    #[serde(default)]
    pub tls: bool,
    /// TLS server name (SNI and certificate check); defaults to `host_header`.
    pub sni: Option<String>,
    /// Verify the peer certificate and its host name (on by default).
    #[serde(default = "yes")]
    pub verify_cert: bool,
    /// PEM file of CA certificates to trust for this upstream instead of the system store
    /// (for private CAs and self-signed peers).
    pub ca_file: Option<String>,
    /// Host header sent upstream when the route does not preserve the client's.
    pub host_header: Option<String>,
    /// TCP (and TLS) connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Lenient<Dur>,
    /// Maximum wait for each read from the peer.
    #[serde(default = "default_io_timeout")]
    pub read_timeout: Lenient<Dur>,
    /// Maximum wait for each write to the peer.
    #[serde(default = "default_io_timeout")]
    pub write_timeout: Lenient<Dur>,
    /// How long an idle pooled connection to a peer is kept.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Lenient<Dur>,
    /// Active health checking; absent means every peer is always considered healthy.
    pub health_check: Option<HealthCheckConfig>,
}

/// One upstream peer.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// `ip:port` of the peer.
    pub addr: Lenient<SocketAddr>,
    /// Relative share of traffic.
    #[serde(default = "one")]
    pub weight: usize,
}

/// Peer selection algorithm.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Ketama consistent hashing on `hash_key`.
    ConsistentHash,
}

/// `[upstreams.health_check]`.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// "http" (expects a 2xx from `path`) or "tcp" (a connect succeeds).
    pub kind: HealthCheckKind,
    /// Path requested by HTTP checks.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between checks of a peer.
    #[serde(default = "default_health_interval")]
    pub interval: Lenient<Dur>,
    /// Connect and read timeout of one check.
    #[serde(default = "default_health_timeout")]
    pub timeout: Lenient<Dur>,
    /// Consecutive successes that restore an ejected peer.
    #[serde(default = "two")]
    pub healthy_threshold: usize,
    /// Consecutive failures that eject a peer.
    #[serde(default = "two")]
    pub unhealthy_threshold: usize,
}

/// Kind of active health check.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// HTTP GET of `path`, 2xx is healthy.
    Http,
    /// TCP connect.
    Tcp,
}

/// `[[routes]]`: which requests go where, and what happens on the way.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Hosts to match: exact ("api.example.com") or wildcard ("*.example.com"); empty = any.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path to match; see `path_match`.
    #[serde(default = "default_path")]
    pub path: String,
    /// "prefix" (segment-aware; longest prefix wins) or "exact".
    #[serde(default)]
    pub path_match: PathMatch,
    /// Allowed methods; empty = any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Name of the `[[upstreams]]` entry.
    pub upstream: String,
    /// Remove the matched prefix before proxying ("/api/users" → "/users").
    #[serde(default)]
    pub strip_prefix: bool,
    /// Send the client's Host header upstream instead of the upstream's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Headers changed on the way to the upstream.
    #[serde(default)]
    pub request_headers: HeaderRules,
    /// Headers changed on the way back to the client.
    #[serde(default)]
    pub response_headers: HeaderRules,
    /// Overrides the upstream's connect timeout.
    pub connect_timeout: Option<Lenient<Dur>>,
    /// Overrides the upstream's read timeout.
    pub read_timeout: Option<Lenient<Dur>>,
    /// Overrides the upstream's write timeout.
    pub write_timeout: Option<Lenient<Dur>>,
    /// Extra attempts on another peer after a failure listed in `retry_on`.
    #[serde(default = "one")]
    pub retries: usize,
    /// Failures that are retried: "connect_failure" (always safe), "upstream_error"
    /// (after the request was sent; idempotent methods only).
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<RetryOn>,
    /// Authentication methods, tried in order; empty = public route.
    #[serde(default)]
    pub auth: Vec<AuthMethod>,
    /// Scopes the principal must all hold (403 otherwise).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Send the credential upstream instead of stripping it.
    #[serde(default)]
    pub forward_credentials: bool,
    /// When the store is down and the credential is not cached locally.
    #[serde(default)]
    pub auth_on_store_error: AuthStoreFailure,
    /// Rate-limit rules, all decided in one store round trip.
    #[serde(default)]
    pub rate_limits: Vec<RateLimitRule>,
    /// When the store cannot decide the rate limits.
    #[serde(default)]
    pub rate_limit_on_store_error: RateLimitFailure,
    /// Accept `%2F` in request paths (kept encoded) instead of answering 400; for APIs whose
    /// identifiers contain slashes. Risky with upstreams that decode `%2F`.
    #[serde(default)]
    pub allow_encoded_slashes: bool,
}

/// How a route's path is compared.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// Matches the path and everything below it, on segment boundaries.
    #[default]
    Prefix,
    /// Matches only this path.
    Exact,
}

/// Failures a route may retry.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// The connection to the peer could not be made; the request was never sent.
    ConnectFailure,
    /// The peer failed after the request was sent (idempotent methods only).
    UpstreamError,
}

/// Header edits.
#[derive(Debug, Deserialize, Clone, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    /// Headers set (replacing any value of the same name).
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

fn default_prefix() -> String {
    "portcullis:".to_string()
}
fn default_op_timeout() -> Lenient<Dur> {
    Lenient::new("20ms")
}
fn default_api_key_header() -> String {
    "x-api-key".to_string()
}
fn default_key_ttl() -> Lenient<Dur> {
    Lenient::new("365d")
}
fn default_leeway() -> Lenient<Dur> {
    Lenient::new("60s")
}
fn default_consumer_claim() -> String {
    "sub".to_string()
}
fn default_scopes_claim() -> String {
    "scope".to_string()
}
fn default_jwks_refresh() -> Lenient<Dur> {
    Lenient::new("5m")
}
fn default_jwks_min_refetch() -> Lenient<Dur> {
    Lenient::new("30s")
}
fn default_jwks_timeout() -> Lenient<Dur> {
    Lenient::new("2s")
}
fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn two() -> usize {
    2
}
fn default_hash_key() -> String {
    "client_ip".to_string()
}
fn default_path() -> String {
    "/".to_string()
}
fn default_connect_timeout() -> Lenient<Dur> {
    Lenient::new("1s")
}
fn default_io_timeout() -> Lenient<Dur> {
    Lenient::new("30s")
}
fn default_idle_timeout() -> Lenient<Dur> {
    Lenient::new("60s")
}
fn default_health_path() -> String {
    "/".to_string()
}
fn default_health_interval() -> Lenient<Dur> {
    Lenient::new("5s")
}
fn default_health_timeout() -> Lenient<Dur> {
    Lenient::new("1s")
}
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure]
}

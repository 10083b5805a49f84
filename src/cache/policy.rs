//! The decisions of a shared cache (RFC 9111 as a shared cache, RFC 5861 for stale serving):
//! whether a request may use the cache, whether a response may be stored and for how long,
//! and whether a stored response may answer a request.
//!
//! Each decision is a small function over typed inputs that returns a typed result with its
//! reason, so `Cache-Status` (`detail=…`), metrics and tests see the same words.
//!
//! Choices where the RFC leaves room, all on the side of never serving what must not be:
//! - `no-store` in the request or the response is always honoured; `must-understand` (§5.2.2.3)
//!   is honoured as "store only a status whose rules we know", but never as a licence to
//!   ignore `no-store`;
//! - a status that is not heuristically cacheable (RFC 9110 §15.1) is stored only with explicit
//!   freshness (`s-maxage`, `max-age`, `Expires`); 206 and 304 are never stored (whole bodies
//!   only; a 304 refreshes an entry instead);
//! - without explicit freshness the route's default TTL, else `[cache]`'s, applies; 0 means
//!   none, and there is no other heuristic (§4.2.2);
//! - the route's TTL override replaces any lifetime, its cap bounds it; an unqualified
//!   `no-cache` still makes the lifetime 0 (revalidate every time), whatever the override;
//! - a response that would be stale on arrival, with no validator and no stale window, is not
//!   stored: it could never be reused;
//! - a credentialed request (Authorization, an API key, a session cookie — the caller decides
//!   what counts) is stored only if the response says `public`, `s-maxage` or
//!   `must-revalidate` (§3.5), or the route keys entries by consumer;
//! - `must-revalidate`, `proxy-revalidate`, `s-maxage` (§5.2.2.10) and unqualified `no-cache`
//!   forbid serving stale, whatever the stale-while-revalidate / stale-if-error windows or the
//!   request's `max-stale` say (§4.2.4);
//! - a request's `no-cache` is honoured: the entry is revalidated (a conditional request at
//!   worst, never an unconditional cache bypass).

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, CONTENT_LENGTH, ETAG, LAST_MODIFIED, SET_COOKIE};
use http::Method;

use super::directives::{Delta, MaxStale, RequestDirectives, ResponseDirectives};
use super::freshness::{explicit_lifetime, initial_age, LifetimeSource, ResponseTiming, LONGEST};
use super::key::KeyParts;
use super::vary::Vary;

/// The `[cache]` settings the policy needs, compiled by the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRules {
    /// The largest body stored, in bytes (a known `Content-Length` above it is refused here;
    /// the fill enforces it for bodies of unknown length).
    pub max_object_bytes: u64,
    /// The lifetime of a response that gives none; zero stores only what the response allows.
    pub default_ttl: Duration,
    /// stale-while-revalidate when the response names none (RFC 5861 §3).
    pub stale_while_revalidate: Duration,
    /// stale-if-error when the response names none (RFC 5861 §4).
    pub stale_if_error: Duration,
}

/// Which methods a route serves from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheMethods {
    /// GET requests use the cache.
    pub get: bool,
    /// HEAD requests use the cache (answered from a stored GET response).
    pub head: bool,
}

impl CacheMethods {
    /// Whether requests of `method` use the cache.
    pub fn allows(&self, method: &Method) -> bool {
        (self.get && method == Method::GET) || (self.head && method == Method::HEAD)
    }
}

/// A route's `cache = { … }`, compiled by the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCachePolicy {
    /// Methods that use the cache.
    pub methods: CacheMethods,
    /// The parts of the primary key.
    pub key: KeyParts,
    /// The lifetime of a response that gives none, instead of `[cache]`'s (zero = none).
    pub default_ttl: Option<Duration>,
    /// A lifetime that replaces whatever the response gives. Like any lifetime it counts from
    /// the response's generation, so its age on arrival (`Age`, `Date`) still counts.
    pub ttl_override: Option<Duration>,
    /// The longest lifetime stored.
    pub ttl_cap: Option<Duration>,
    /// Store responses that set cookies (off: a `Set-Cookie` is one client's).
    pub allow_set_cookie: bool,
    /// The request headers a response may vary on; `None` honours any. A response that
    /// varies on another header is not stored (e.g. `Vary: User-Agent` would store a copy
    /// per browser build).
    pub vary_allow: Option<Vec<HeaderName>>,
}

/// Why a request does not use the cache at all (`Cache-Status: fwd=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Bypass {
    /// The route does not cache this method (`fwd=method`).
    #[error("method not cached on this route")]
    Method,
}

/// Decides before the lookup whether a request uses the cache, and reads its directives.
pub fn plan_request(
    route: &RouteCachePolicy,
    method: &Method,
    headers: &HeaderMap,
) -> Result<RequestDirectives, Bypass> {
    if !route.methods.allows(method) {
        return Err(Bypass::Method);
    }
    Ok(RequestDirectives::from_headers(headers))
}

/// The request a response answers, as the storage decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The downstream request's method (pingora fetches a cacheable HEAD upstream as GET, so
    /// a stored response always has its body).
    pub method: &'a Method,
    /// Its `Cache-Control`.
    pub directives: &'a RequestDirectives,
    /// It carried credentials (Authorization, an API key, a session cookie).
    pub credentialed: bool,
    /// Its authenticated consumer is part of its primary key (the route keys by consumer and
    /// the request has one). Only then may a credentialed response be stored without being
    /// explicitly shareable: a credentialed request with no consumer would be stored under
    /// the anonymous key, for every anonymous client.
    pub consumer_keyed: bool,
}

/// The response as received from the upstream.
#[derive(Debug, Clone, Copy)]
pub struct ResponseView<'a> {
    /// The status code.
    pub status: u16,
    /// The header fields.
    pub headers: &'a HeaderMap,
    /// When the request went out and the response came back.
    pub timing: ResponseTiming,
}

/// Why a response is not stored; `detail()` is what `Cache-Status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotStorable {
    /// The route does not cache the request's method (§3: the method must be understood).
    #[error("method not cached")]
    Method,
    /// The request said `no-store` (§5.2.1.5).
    #[error("request no-store")]
    RequestNoStore,
    /// Not a final status this cache stores, or one that needs explicit freshness (§3).
    #[error("status not cacheable")]
    Status,
    /// The response said `no-store` (§5.2.2.5).
    #[error("no-store")]
    NoStore,
    /// The response said `private` (§5.2.2.7).
    #[error("private")]
    Private,
    /// `Vary: *` (§4.1).
    #[error("vary *")]
    VaryStar,
    /// `Vary` names a header the route does not vary on, or no valid field name.
    #[error("vary not allowed")]
    VaryNotAllowed,
    /// The response sets a cookie and the route does not allow storing that.
    #[error("set-cookie")]
    SetCookie,
    /// A credentialed request without an explicitly shareable response (§3.5).
    #[error("authorization")]
    Authorization,
    /// `Content-Length` above the largest stored object.
    #[error("too large")]
    TooLarge,
    /// No freshness from the response and no default TTL.
    #[error("no freshness")]
    NoFreshness,
    /// Stale on arrival, with no validator and no stale window: it could never be reused.
    #[error("stale on arrival")]
    StaleOnArrival,
}

impl NotStorable {
    /// The `Cache-Status` `detail` token and metric label.
    pub fn detail(&self) -> &'static str {
        match self {
            NotStorable::Method => "method",
            NotStorable::RequestNoStore => "request-no-store",
            NotStorable::Status => "status",
            NotStorable::NoStore => "no-store",
            NotStorable::Private => "private",
            NotStorable::VaryStar => "vary-star",
            NotStorable::VaryNotAllowed => "vary-not-allowed",
            NotStorable::SetCookie => "set-cookie",
            NotStorable::Authorization => "authorization",
            NotStorable::TooLarge => "too-large",
            NotStorable::NoFreshness => "no-freshness",
            NotStorable::StaleOnArrival => "stale-on-arrival",
        }
    }
}

/// How long a stored response stays fresh, how old it already was, and the stale windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The freshness lifetime (§4.2.1), after the route's override and cap.
    pub lifetime: Duration,
    /// Where the lifetime came from.
    pub source: LifetimeSource,
    /// The age on arrival (`corrected_initial_age`, §4.2.3).
    pub initial_age: Duration,
    /// When the response arrived.
    pub response_time: SystemTime,
    /// How long past its lifetime it may be served while one refresh runs (RFC 5861 §3).
    pub stale_while_revalidate: Duration,
    /// How long past its lifetime it may be served when the upstream fails (RFC 5861 §4).
    pub stale_if_error: Duration,
    /// A directive forbids serving it stale at all (§4.2.4).
    pub stale_forbidden: bool,
}

impl Freshness {
    /// When the response was generated, as far as the cache can tell: its arrival minus its
    /// age on arrival. The wiring stores this as the entry's creation time, so `Age` on a hit
    /// (now − created) includes the upstream's age.
    pub fn created(&self) -> SystemTime {
        self.response_time
            .checked_sub(self.initial_age)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// When it stops being fresh.
    pub fn fresh_until(&self) -> SystemTime {
        let created = self.created();
        created.checked_add(self.lifetime).unwrap_or(created)
    }

    /// Whether it may be served stale at all, for a while or on errors.
    pub fn has_stale_window(&self) -> bool {
        !self.stale_forbidden
            && (!self.stale_while_revalidate.is_zero() || !self.stale_if_error.is_zero())
    }

    /// Its state at `now`, for [`decide_reuse`].
    pub fn entry_at(&self, now: SystemTime) -> EntryState {
        let resident = now
            .duration_since(self.response_time)
            .unwrap_or(Duration::ZERO);
        EntryState {
            current_age: self.initial_age.saturating_add(resident).min(LONGEST),
            lifetime: self.lifetime,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            stale_forbidden: self.stale_forbidden,
        }
    }
}

/// A storable response: its freshness, its variants and what to leave out of the stored copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storable {
    /// Lifetime, age and stale windows.
    pub freshness: Freshness,
    /// The headers it varies on (the secondary key).
    pub vary: Vary,
    /// Fields named by `private="…"` / `no-cache="…"`: removed from the stored copy, so they
    /// are never sent to another client (§5.2.2.7) or without revalidation (§5.2.2.4).
    pub strip_fields: Vec<HeaderName>,
}

/// Decides whether a response may be stored, and if so for how long (§3, §3.5, §4.2).
pub fn decide_storage(
    rules: &CacheRules,
    route: &RouteCachePolicy,
    request: &RequestView<'_>,
    response: &ResponseView<'_>,
) -> Result<Storable, NotStorable> {
    if !route.methods.allows(request.method) {
        return Err(NotStorable::Method);
    }
    if request.directives.no_store {
        return Err(NotStorable::RequestNoStore);
    }
    let status = StatusClass::of(response.status);
    if status == StatusClass::Never {
        return Err(NotStorable::Status);
    }
    let directives = ResponseDirectives::from_headers(response.headers);
    check_directives(&directives, status)?;
    let vary = check_vary(route, response.headers)?;
    if !route.allow_set_cookie && response.headers.contains_key(SET_COOKIE) {
        return Err(NotStorable::SetCookie);
    }
    if request.credentialed && !request.consumer_keyed && !explicitly_shareable(&directives) {
        return Err(NotStorable::Authorization);
    }
    if content_length(response.headers).is_some_and(|len| len > rules.max_object_bytes) {
        return Err(NotStorable::TooLarge);
    }
    let freshness = freshness(rules, route, &directives, status, response)?;
    let reusable = freshness.lifetime > freshness.initial_age
        || has_validator(response.headers)
        || freshness.has_stale_window();
    if !reusable {
        return Err(NotStorable::StaleOnArrival);
    }
    Ok(Storable {
        freshness,
        vary,
        strip_fields: strip_fields(&directives),
    })
}

/// How the cache treats a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusClass {
    /// Heuristically cacheable (RFC 9110 §15.1): stored with a default TTL.
    Heuristic,
    /// A final status stored only with explicit freshness.
    ExplicitOnly,
    /// Never stored: informational, 206 (partial bodies), 304 (a revalidation answer), or
    /// outside 100-599.
    Never,
}

impl StatusClass {
    fn of(status: u16) -> StatusClass {
        match status {
            200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501 => {
                StatusClass::Heuristic
            }
            206 | 304 => StatusClass::Never,
            200..=599 => StatusClass::ExplicitOnly,
            _ => StatusClass::Never,
        }
    }
}

/// `no-store`, `private` and `must-understand` (§5.2.2.5, §5.2.2.7, §5.2.2.3).
fn check_directives(
    directives: &ResponseDirectives,
    status: StatusClass,
) -> Result<(), NotStorable> {
    if directives.no_store {
        return Err(NotStorable::NoStore);
    }
    if directives.private.is_whole() {
        return Err(NotStorable::Private);
    }
    if directives.must_understand && status != StatusClass::Heuristic {
        return Err(NotStorable::Status);
    }
    Ok(())
}

/// `Vary: *` is never stored (§4.1); a route's allow-list bounds the variants.
fn check_vary(route: &RouteCachePolicy, headers: &HeaderMap) -> Result<Vary, NotStorable> {
    let vary = Vary::from_response(headers);
    match &vary {
        Vary::Any => Err(NotStorable::VaryStar),
        Vary::Unparsable => Err(NotStorable::VaryNotAllowed),
        Vary::Headers(names) => match &route.vary_allow {
            Some(allowed) if names.iter().any(|n| !allowed.contains(n)) => {
                Err(NotStorable::VaryNotAllowed)
            }
            _ => Ok(vary),
        },
        Vary::None => Ok(vary),
    }
}

/// The directives that let a shared cache reuse a response to an authorized request (§3.5).
fn explicitly_shareable(directives: &ResponseDirectives) -> bool {
    directives.public
        || directives.must_revalidate
        || matches!(directives.s_maxage, Some(Delta::Seconds(_)))
}

/// `Content-Length` if every line agrees on one valid value.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter().map(|v| {
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    });
    let first = lengths.next()??;
    lengths.all(|l| l == Some(first)).then_some(first)
}

fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// Lifetime (§4.2.1, then default, override, cap, `no-cache`), age and stale windows.
fn freshness(
    rules: &CacheRules,
    route: &RouteCachePolicy,
    directives: &ResponseDirectives,
    status: StatusClass,
    response: &ResponseView<'_>,
) -> Result<Freshness, NotStorable> {
    let (lifetime, source) = lifetime(rules, route, directives, status, response)?;
    let stale_forbidden = stale_forbidden(directives);
    let window = |given: Option<Delta>, default: Duration| match (stale_forbidden, given) {
        (true, _) => Duration::ZERO,
        (false, Some(delta)) => Duration::from_secs(u64::from(delta.seconds_or_zero())),
        (false, None) => default,
    };
    Ok(Freshness {
        lifetime: lifetime.min(LONGEST),
        source,
        initial_age: initial_age(response.headers, &response.timing),
        response_time: response.timing.response_time,
        stale_while_revalidate: window(
            directives.stale_while_revalidate,
            rules.stale_while_revalidate,
        ),
        stale_if_error: window(directives.stale_if_error, rules.stale_if_error),
        stale_forbidden,
    })
}

/// The freshness lifetime: unqualified `no-cache` makes it 0 (the response is stored, so a
/// default TTL is not needed, but its status must still be storable); otherwise the explicit
/// lifetime or the default TTL, then the route's override, then its cap.
fn lifetime(
    rules: &CacheRules,
    route: &RouteCachePolicy,
    directives: &ResponseDirectives,
    status: StatusClass,
    response: &ResponseView<'_>,
) -> Result<(Duration, LifetimeSource), NotStorable> {
    let explicit = explicit_lifetime(directives, response.headers, response.timing.response_time);
    if explicit.is_none() && status != StatusClass::Heuristic {
        return Err(NotStorable::Status);
    }
    if directives.no_cache.is_whole() {
        return Ok((Duration::ZERO, LifetimeSource::NoCache));
    }
    let (mut lifetime, mut source) = match explicit {
        Some(found) => found,
        None => {
            let default = route.default_ttl.unwrap_or(rules.default_ttl);
            if default.is_zero() {
                return Err(NotStorable::NoFreshness);
            }
            (default, LifetimeSource::DefaultTtl)
        }
    };
    if let Some(ttl) = route.ttl_override {
        (lifetime, source) = (ttl, LifetimeSource::Override);
    }
    if let Some(cap) = route.ttl_cap {
        lifetime = lifetime.min(cap);
    }
    Ok((lifetime, source))
}

/// Whether a response's directives forbid serving it stale (§4.2.4): `must-revalidate`,
/// `proxy-revalidate`, `s-maxage` (which implies it, §5.2.2.10) or unqualified `no-cache`.
/// Public so the wiring can recompute it from a stored response's headers.
pub fn stale_forbidden(directives: &ResponseDirectives) -> bool {
    directives.must_revalidate
        || directives.proxy_revalidate
        || directives.s_maxage.is_some()
        || directives.no_cache.is_whole()
}

/// The fields of qualified `private` and `no-cache`, which the stored copy leaves out.
fn strip_fields(directives: &ResponseDirectives) -> Vec<HeaderName> {
    let mut fields = directives.private.fields().to_vec();
    for name in directives.no_cache.fields() {
        if !fields.contains(name) {
            fields.push(name.clone());
        }
    }
    fields
}

/// A stored response at the moment a request looks it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryState {
    /// Its current age (§4.2.3).
    pub current_age: Duration,
    /// Its freshness lifetime.
    pub lifetime: Duration,
    /// The stale-while-revalidate window.
    pub stale_while_revalidate: Duration,
    /// The stale-if-error window.
    pub stale_if_error: Duration,
    /// Serving it stale is forbidden (§4.2.4).
    pub stale_forbidden: bool,
}

impl EntryState {
    /// Fresh while the lifetime exceeds the age (§4.2).
    pub fn is_fresh(&self) -> bool {
        self.lifetime > self.current_age
    }

    /// How long it has been stale (zero while fresh).
    pub fn staleness(&self) -> Duration {
        self.current_age.saturating_sub(self.lifetime)
    }

    /// Remaining freshness in seconds, negative when stale: `Cache-Status` `ttl`.
    pub fn ttl_seconds(&self) -> i64 {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        if self.is_fresh() {
            secs(self.lifetime - self.current_age)
        } else {
            -secs(self.staleness())
        }
    }
}

/// What to do with a stored response for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it (`hit`).
    Fresh,
    /// Serve it stale because the request's `max-stale` accepts that (§4.2.4) (`hit`).
    StaleAccepted,
    /// Serve it stale and refresh it in the background (RFC 5861 §3) (`hit`,
    /// `detail=stale-while-revalidate`).
    StaleWhileRevalidate,
    /// Revalidate with the upstream before use (`fwd=stale` or `fwd=request`).
    Revalidate(RevalidateReason),
    /// `only-if-cached` and the entry cannot be used without the upstream: answer 504
    /// (§5.2.1.7).
    GatewayTimeout,
}

/// Why a stored response must be revalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevalidateReason {
    /// It is stale (`fwd=stale`).
    Stale,
    /// The request asks for something fresher (`no-cache`, `max-age`, `min-fresh`)
    /// (`fwd=request`).
    Request,
}

/// Decides whether a stored response may answer a request (§4, §4.2.4, §5.2.1).
pub fn decide_reuse(entry: &EntryState, request: &RequestDirectives) -> Reuse {
    let reuse = reuse_ignoring_only_if_cached(entry, request);
    match reuse {
        Reuse::Revalidate(_) if request.only_if_cached => Reuse::GatewayTimeout,
        other => other,
    }
}

fn reuse_ignoring_only_if_cached(entry: &EntryState, request: &RequestDirectives) -> Reuse {
    if request.no_cache {
        return Reuse::Revalidate(RevalidateReason::Request);
    }
    if let Some(max_age) = request.max_age {
        // §5.2.1.1: older than the client accepts, even with max-stale.
        if entry.current_age > seconds(max_age) {
            return Reuse::Revalidate(RevalidateReason::Request);
        }
    }
    if entry.is_fresh() {
        let remaining = entry.lifetime - entry.current_age;
        return match request.min_fresh {
            Some(min_fresh) if remaining < seconds(min_fresh) => {
                Reuse::Revalidate(RevalidateReason::Request)
            }
            _ => Reuse::Fresh,
        };
    }
    if entry.stale_forbidden {
        return Reuse::Revalidate(RevalidateReason::Stale);
    }
    let staleness = entry.staleness();
    if accepts_staleness(request.max_stale, staleness) {
        return Reuse::StaleAccepted;
    }
    if staleness <= entry.stale_while_revalidate && !entry.stale_while_revalidate.is_zero() {
        return Reuse::StaleWhileRevalidate;
    }
    Reuse::Revalidate(RevalidateReason::Stale)
}

fn accepts_staleness(max_stale: Option<MaxStale>, staleness: Duration) -> bool {
    match max_stale {
        Some(MaxStale::Any) => true,
        Some(MaxStale::Seconds(s)) => staleness <= seconds(s),
        None => false,
    }
}

/// Whether a stored response may answer when the upstream failed (RFC 5861 §4, §4.2.4):
/// fresh, or stale within the larger of the response's (or default) stale-if-error window and
/// what the request accepts (`stale-if-error`, `max-stale`); never when stale serving is
/// forbidden or the request said `no-cache`.
pub fn serve_stale_on_error(entry: &EntryState, request: &RequestDirectives) -> bool {
    if request.no_cache {
        return false;
    }
    if entry.is_fresh() {
        return true;
    }
    if entry.stale_forbidden {
        return false;
    }
    let staleness = entry.staleness();
    let window = entry
        .stale_if_error
        .max(request.stale_if_error.map_or(Duration::ZERO, seconds));
    (!window.is_zero() && staleness <= window) || accepts_staleness(request.max_stale, staleness)
}

/// What to do when nothing is stored for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Go to the upstream (`fwd=uri-miss` or `fwd=vary-miss`).
    Forward,
    /// `only-if-cached`: answer 504 without contacting the upstream (§5.2.1.7).
    GatewayTimeout,
}

/// Decides what a miss does.
pub fn on_miss(request: &RequestDirectives) -> Miss {
    if request.only_if_cached {
        Miss::GatewayTimeout
    } else {
        Miss::Forward
    }
}

/// Whether a response to an unsafe method invalidates the stored responses of its target URI
/// (§4.4): the method is unsafe and the status is not an error (2xx or 3xx).
pub fn invalidates_target(method: &Method, status: u16) -> bool {
    let unsafe_method = !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    unsafe_method && (200..400).contains(&status)
}

fn seconds(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::QueryKey;
    use http::HeaderValue;
    use std::time::UNIX_EPOCH;

    const T: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn rules() -> CacheRules {
        CacheRules {
            max_object_bytes: 1 << 20,
            default_ttl: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
        }
    }

    fn route() -> RouteCachePolicy {
        RouteCachePolicy {
            methods: CacheMethods {
                get: true,
                head: true,
            },
            key: KeyParts {
                host: true,
                query: QueryKey::Whole,
                headers: Vec::new(),
                by_consumer: false,
            },
            default_ttl: None,
            ttl_override: None,
            ttl_cap: None,
            allow_set_cookie: false,
            vary_allow: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn timing() -> ResponseTiming {
        ResponseTiming {
            request_time: at(T),
            response_time: at(T),
        }
    }

    /// Decides for a GET with the given request directives and credentials.
    fn decide_with(
        rules: &CacheRules,
        route: &RouteCachePolicy,
        req_cc: &str,
        credentialed: bool,
        status: u16,
        resp: &[(&str, &str)],
    ) -> Result<Storable, NotStorable> {
        let directives = RequestDirectives::from_values([req_cc.as_bytes()]);
        let request = RequestView {
            method: &Method::GET,
            directives: &directives,
            credentialed,
            // The harness's credentialed requests on a consumer-keyed route have a consumer.
            consumer_keyed: credentialed && route.key.by_consumer,
        };
        let resp = headers(resp);
        let response = ResponseView {
            status,
            headers: &resp,
            timing: timing(),
        };
        decide_storage(rules, route, &request, &response)
    }

    fn decide(status: u16, resp: &[(&str, &str)]) -> Result<Storable, NotStorable> {
        decide_with(&rules(), &route(), "", false, status, resp)
    }

    fn lifetime(result: Result<Storable, NotStorable>) -> Duration {
        result.expect("storable").freshness.lifetime
    }

    fn entry(age: u64, lifetime: u64) -> EntryState {
        EntryState {
            current_age: Duration::from_secs(age),
            lifetime: Duration::from_secs(lifetime),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            stale_forbidden: false,
        }
    }

    fn req(cc: &str) -> RequestDirectives {
        RequestDirectives::from_values([cc.as_bytes()])
    }

    // RFC 9111 §3: the method must be one the route caches.
    #[test]
    fn method_gates_the_cache() {
        let r = route();
        assert_eq!(
            plan_request(&r, &Method::POST, &HeaderMap::new()),
            Err(Bypass::Method)
        );
        assert!(plan_request(&r, &Method::GET, &HeaderMap::new()).is_ok());
        let get_only = RouteCachePolicy {
            methods: CacheMethods {
                get: true,
                head: false,
            },
            ..route()
        };
        assert_eq!(
            plan_request(&get_only, &Method::HEAD, &HeaderMap::new()),
            Err(Bypass::Method)
        );
        let d = RequestDirectives::default();
        let request = RequestView {
            method: &Method::DELETE,
            directives: &d,
            credentialed: false,
            consumer_keyed: false,
        };
        let h = headers(&[("cache-control", "max-age=60")]);
        let response = ResponseView {
            status: 200,
            headers: &h,
            timing: timing(),
        };
        assert_eq!(
            decide_storage(&rules(), &r, &request, &response),
            Err(NotStorable::Method)
        );
    }

    // RFC 9111 §5.2.1: plan_request reads the request's directives.
    #[test]
    fn plan_request_reads_directives() {
        let h = headers(&[("cache-control", "no-cache, max-age=5")]);
        let d = plan_request(&route(), &Method::GET, &h).unwrap();
        assert!(d.no_cache);
        assert_eq!(d.max_age, Some(5));
    }

    // RFC 9111 §3: a heuristically cacheable status may use the default TTL.
    #[test]
    fn heuristic_status_uses_the_default_ttl() {
        let rules = CacheRules {
            default_ttl: Duration::from_secs(30),
            ..rules()
        };
        let s = decide_with(&rules, &route(), "", false, 404, &[]).unwrap();
        assert_eq!(s.freshness.lifetime, Duration::from_secs(30));
        assert_eq!(s.freshness.source, LifetimeSource::DefaultTtl);
        let per_route = RouteCachePolicy {
            default_ttl: Some(Duration::from_secs(5)),
            ..route()
        };
        assert_eq!(
            lifetime(decide_with(&rules, &per_route, "", false, 200, &[])),
            Duration::from_secs(5)
        );
    }

    // RFC 9111 §3, §4.2.2: default TTL 0 → only what the response allows; no other heuristic.
    #[test]
    fn zero_default_ttl_means_no_heuristic() {
        assert_eq!(decide(200, &[]).unwrap_err(), NotStorable::NoFreshness);
        assert_eq!(
            decide(200, &[("cache-control", "public")]).unwrap_err(),
            NotStorable::NoFreshness
        );
        assert_eq!(
            decide(200, &[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")]).unwrap_err(),
            NotStorable::NoFreshness
        );
        let per_route_off = RouteCachePolicy {
            default_ttl: Some(Duration::ZERO),
            ..route()
        };
        let rules = CacheRules {
            default_ttl: Duration::from_secs(30),
            ..rules()
        };
        assert_eq!(
            decide_with(&rules, &per_route_off, "", false, 200, &[]).unwrap_err(),
            NotStorable::NoFreshness
        );
    }

    // RFC 9111 §3: other final statuses only with explicit freshness.
    #[test]
    fn other_statuses_need_explicit_freshness() {
        let rules = CacheRules {
            default_ttl: Duration::from_secs(30),
            ..rules()
        };
        assert_eq!(
            decide_with(&rules, &route(), "", false, 500, &[]).unwrap_err(),
            NotStorable::Status
        );
        assert_eq!(
            decide_with(
                &rules,
                &route(),
                "",
                false,
                302,
                &[("cache-control", "public")]
            )
            .unwrap_err(),
            NotStorable::Status
        );
        assert_eq!(
            lifetime(decide(302, &[("cache-control", "max-age=60")])),
            Duration::from_secs(60)
        );
        assert_eq!(
            lifetime(decide(503, &[("cache-control", "s-maxage=5")])),
            Duration::from_secs(5)
        );
    }

    // RFC 9111 §3: only final responses; 206 (partial) and 304 (validation) are not stored as such.
    #[test]
    fn non_final_partial_and_not_modified_are_never_stored() {
        for status in [100, 101, 206, 304, 600, 0] {
            assert_eq!(
                decide(status, &[("cache-control", "max-age=60")]).unwrap_err(),
                NotStorable::Status,
                "{status}"
            );
        }
    }

    // RFC 9111 §5.2.2.5 and §5.2.1.5: no-store in the response or the request.
    #[test]
    fn no_store_in_response_or_request() {
        assert_eq!(
            decide(200, &[("cache-control", "max-age=60, no-store")]).unwrap_err(),
            NotStorable::NoStore
        );
        assert_eq!(
            decide_with(
                &rules(),
                &route(),
                "no-store",
                false,
                200,
                &[("cache-control", "max-age=60")]
            )
            .unwrap_err(),
            NotStorable::RequestNoStore
        );
    }

    // RFC 9111 §5.2.2.3: must-understand stores only understood statuses and never overrides no-store.
    #[test]
    fn must_understand() {
        assert_eq!(
            decide(299, &[("cache-control", "max-age=60, must-understand")]).unwrap_err(),
            NotStorable::Status
        );
        assert!(decide(200, &[("cache-control", "max-age=60, must-understand")]).is_ok());
        assert_eq!(
            decide(
                200,
                &[("cache-control", "max-age=60, must-understand, no-store")]
            )
            .unwrap_err(),
            NotStorable::NoStore
        );
    }

    // RFC 9111 §5.2.2.7: unqualified private → never stored by a shared cache.
    #[test]
    fn private_is_never_stored() {
        assert_eq!(
            decide(200, &[("cache-control", "private, max-age=60")]).unwrap_err(),
            NotStorable::Private
        );
        // Even on a route that keys by consumer: it is still a shared cache.
        let per_consumer = RouteCachePolicy {
            key: KeyParts {
                by_consumer: true,
                ..route().key
            },
            ..route()
        };
        assert_eq!(
            decide_with(
                &rules(),
                &per_consumer,
                "",
                true,
                200,
                &[("cache-control", "private, max-age=60")]
            )
            .unwrap_err(),
            NotStorable::Private
        );
    }

    // RFC 9111 §5.2.2.7, §5.2.2.4: qualified private / no-cache strip their fields only.
    #[test]
    fn qualified_private_and_no_cache_strip_fields() {
        let s = decide(
            200,
            &[
                (
                    "cache-control",
                    "max-age=60, private=\"x-user\", no-cache=\"x-debug, x-user\"",
                ),
                ("x-user", "alice"),
            ],
        )
        .unwrap();
        assert_eq!(
            s.strip_fields,
            vec![
                HeaderName::from_static("x-user"),
                HeaderName::from_static("x-debug")
            ]
        );
        assert_eq!(s.freshness.lifetime, Duration::from_secs(60));
        assert!(!s.freshness.stale_forbidden);
    }

    // RFC 9111 §4.1: Vary: * is never stored; a route allow-list bounds the variants.
    #[test]
    fn vary_rules() {
        let cc = ("cache-control", "max-age=60");
        assert_eq!(
            decide(200, &[cc, ("vary", "*")]).unwrap_err(),
            NotStorable::VaryStar
        );
        assert_eq!(
            decide(200, &[cc, ("vary", "accept, bad name")]).unwrap_err(),
            NotStorable::VaryNotAllowed
        );
        let s = decide(200, &[cc, ("vary", "Accept-Encoding")]).unwrap();
        assert_eq!(
            s.vary.names(),
            &[HeaderName::from_static("accept-encoding")]
        );
        let bounded = RouteCachePolicy {
            vary_allow: Some(vec![HeaderName::from_static("accept-encoding")]),
            ..route()
        };
        let decide_bounded =
            |vary: &str| decide_with(&rules(), &bounded, "", false, 200, &[cc, ("vary", vary)]);
        assert!(decide_bounded("accept-encoding").is_ok());
        assert_eq!(
            decide_bounded("user-agent").unwrap_err(),
            NotStorable::VaryNotAllowed
        );
    }

    // Set-Cookie is one client's state: never stored unless the route allows it.
    #[test]
    fn set_cookie_is_not_stored_unless_allowed() {
        let resp = [
            ("cache-control", "public, max-age=60"),
            ("set-cookie", "sid=1"),
        ];
        assert_eq!(decide(200, &resp).unwrap_err(), NotStorable::SetCookie);
        let allowing = RouteCachePolicy {
            allow_set_cookie: true,
            ..route()
        };
        assert!(decide_with(&rules(), &allowing, "", false, 200, &resp).is_ok());
    }

    // RFC 9111 §3.5: a credentialed request is stored only with public, s-maxage or must-revalidate.
    #[test]
    fn credentialed_requests_need_an_explicitly_shareable_response() {
        let stored =
            |cc: &str| decide_with(&rules(), &route(), "", true, 200, &[("cache-control", cc)]);
        assert_eq!(
            stored("max-age=60").unwrap_err(),
            NotStorable::Authorization
        );
        assert_eq!(
            stored("s-maxage=bad").unwrap_err(),
            NotStorable::Authorization
        );
        assert!(stored("max-age=60, public").is_ok());
        assert!(stored("s-maxage=60").is_ok());
        assert!(stored("max-age=60, must-revalidate").is_ok());
    }

    // RFC 9111 §3.5: a route that keys by consumer may store them (one consumer's entry each).
    #[test]
    fn consumer_keyed_routes_store_credentialed_responses() {
        let per_consumer = RouteCachePolicy {
            key: KeyParts {
                by_consumer: true,
                ..route().key
            },
            ..route()
        };
        assert!(decide_with(
            &rules(),
            &per_consumer,
            "",
            true,
            200,
            &[("cache-control", "max-age=60")]
        )
        .is_ok());
    }

    // RFC 9111 §3.5: a credentialed request with no consumer to key by (a session cookie
    // before login, say) would land under the anonymous key: not stored on a consumer route.
    #[test]
    fn credentialed_requests_without_a_consumer_are_not_stored_under_the_anonymous_key() {
        let per_consumer = RouteCachePolicy {
            key: KeyParts {
                by_consumer: true,
                ..route().key
            },
            ..route()
        };
        let directives = RequestDirectives::default();
        let request = RequestView {
            method: &Method::GET,
            directives: &directives,
            credentialed: true,
            consumer_keyed: false,
        };
        let h = headers(&[("cache-control", "max-age=60")]);
        let response = ResponseView {
            status: 200,
            headers: &h,
            timing: timing(),
        };
        assert_eq!(
            decide_storage(&rules(), &per_consumer, &request, &response),
            Err(NotStorable::Authorization)
        );
    }

    // Size cap: a known Content-Length above the largest object is refused.
    #[test]
    fn content_length_above_the_cap_is_refused() {
        let small = CacheRules {
            max_object_bytes: 100,
            ..rules()
        };
        let cc = ("cache-control", "max-age=60");
        assert_eq!(
            decide_with(
                &small,
                &route(),
                "",
                false,
                200,
                &[cc, ("content-length", "101")]
            )
            .unwrap_err(),
            NotStorable::TooLarge
        );
        assert!(decide_with(
            &small,
            &route(),
            "",
            false,
            200,
            &[cc, ("content-length", "100")]
        )
        .is_ok());
        // Unknown or inconsistent length: the fill enforces the cap while streaming.
        assert!(decide_with(&small, &route(), "", false, 200, &[cc]).is_ok());
        assert!(decide_with(
            &small,
            &route(),
            "",
            false,
            200,
            &[cc, ("content-length", "5"), ("content-length", "500")]
        )
        .is_ok());
    }

    // RFC 9111 §4.2.1: s-maxage over max-age over Expires − Date.
    #[test]
    fn lifetime_precedence() {
        let date = httpdate::fmt_http_date(at(T));
        let expires = httpdate::fmt_http_date(at(T + 500));
        let s = decide(
            200,
            &[
                ("cache-control", "max-age=60, s-maxage=30"),
                ("expires", &expires),
                ("date", &date),
            ],
        )
        .unwrap();
        assert_eq!(
            (s.freshness.lifetime, s.freshness.source),
            (Duration::from_secs(30), LifetimeSource::SMaxAge)
        );
        let s = decide(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("expires", &expires),
                ("date", &date),
            ],
        )
        .unwrap();
        assert_eq!(
            (s.freshness.lifetime, s.freshness.source),
            (Duration::from_secs(60), LifetimeSource::MaxAge)
        );
        let s = decide(200, &[("expires", &expires), ("date", &date)]).unwrap();
        assert_eq!(
            (s.freshness.lifetime, s.freshness.source),
            (Duration::from_secs(500), LifetimeSource::Expires)
        );
    }

    // RFC 9111 §4.2.1 plus the route: override replaces, cap bounds, no-cache still forces 0.
    #[test]
    fn override_and_cap() {
        let overriding = RouteCachePolicy {
            ttl_override: Some(Duration::from_secs(10)),
            ..route()
        };
        let s = decide_with(
            &rules(),
            &overriding,
            "",
            false,
            200,
            &[("cache-control", "max-age=600")],
        )
        .unwrap();
        assert_eq!(
            (s.freshness.lifetime, s.freshness.source),
            (Duration::from_secs(10), LifetimeSource::Override)
        );
        let capped = RouteCachePolicy {
            ttl_cap: Some(Duration::from_secs(60)),
            ..route()
        };
        assert_eq!(
            lifetime(decide_with(
                &rules(),
                &capped,
                "",
                false,
                200,
                &[("cache-control", "max-age=86400")]
            )),
            Duration::from_secs(60)
        );
        let s = decide_with(
            &rules(),
            &overriding,
            "",
            false,
            200,
            &[
                ("cache-control", "max-age=600, no-cache"),
                ("etag", "\"v1\""),
            ],
        )
        .unwrap();
        assert_eq!(
            (s.freshness.lifetime, s.freshness.source),
            (Duration::ZERO, LifetimeSource::NoCache)
        );
    }

    // RFC 9111 §5.2.2.4: unqualified no-cache is stored (with a validator) and always revalidated.
    #[test]
    fn no_cache_is_stored_for_revalidation() {
        let s = decide(200, &[("cache-control", "no-cache"), ("etag", "\"v1\"")]).unwrap();
        assert_eq!(s.freshness.lifetime, Duration::ZERO);
        assert!(s.freshness.stale_forbidden);
        let state = s.freshness.entry_at(at(T));
        assert_eq!(
            decide_reuse(&state, &req("")),
            Reuse::Revalidate(RevalidateReason::Stale)
        );
        assert_eq!(
            decide_reuse(&state, &req("max-stale")),
            Reuse::Revalidate(RevalidateReason::Stale)
        );
    }

    // RFC 9111 §4.2.1: invalid max-age → stale; without a validator it is not worth storing.
    #[test]
    fn invalid_or_zero_max_age_without_validator_is_stale_on_arrival() {
        assert_eq!(
            decide(200, &[("cache-control", "max-age=abc")]).unwrap_err(),
            NotStorable::StaleOnArrival
        );
        assert_eq!(
            decide(200, &[("cache-control", "max-age=0")]).unwrap_err(),
            NotStorable::StaleOnArrival
        );
        assert!(decide(200, &[("cache-control", "max-age=0"), ("etag", "\"x\"")]).is_ok());
        // RFC 5861 §3: a stale-while-revalidate window makes it reusable.
        assert!(decide(
            200,
            &[("cache-control", "max-age=0, stale-while-revalidate=30")]
        )
        .is_ok());
    }

    // RFC 9111 §1.2.2: a huge max-age clamps to 2^31 seconds.
    #[test]
    fn huge_max_age_clamps() {
        assert_eq!(
            lifetime(decide(
                200,
                &[("cache-control", "max-age=999999999999999999999")]
            )),
            Duration::from_secs(1 << 31)
        );
    }

    // RFC 9111 §4.2.3: Age and Date make the entry older than its arrival.
    #[test]
    fn age_is_corrected_by_upstream_age_and_date() {
        let date = httpdate::fmt_http_date(at(T - 20));
        let s = decide(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "10"),
                ("date", &date),
            ],
        )
        .unwrap();
        assert_eq!(s.freshness.initial_age, Duration::from_secs(20));
        assert_eq!(s.freshness.created(), at(T - 20));
        assert_eq!(s.freshness.fresh_until(), at(T + 40));
        let later = s.freshness.entry_at(at(T + 30));
        assert_eq!(later.current_age, Duration::from_secs(50));
        assert!(later.is_fresh());
        assert_eq!(later.ttl_seconds(), 10);
        let stale = s.freshness.entry_at(at(T + 45));
        assert!(!stale.is_fresh());
        assert_eq!(stale.ttl_seconds(), -5);
        // An Age at or above the lifetime: stale on arrival, and with no validator not stored.
        assert_eq!(
            decide(200, &[("cache-control", "max-age=60"), ("age", "60")]).unwrap_err(),
            NotStorable::StaleOnArrival
        );
    }

    // RFC 9111 §4.2.3: without Date the receipt time is used (apparent age 0).
    #[test]
    fn age_without_date() {
        let s = decide(200, &[("cache-control", "max-age=60"), ("age", "15")]).unwrap();
        assert_eq!(s.freshness.initial_age, Duration::from_secs(15));
    }

    // RFC 5861 §3, §4: windows from the response, else the defaults; zero when stale is forbidden.
    #[test]
    fn stale_windows() {
        let defaults = CacheRules {
            stale_while_revalidate: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(300),
            ..rules()
        };
        let s = decide_with(
            &defaults,
            &route(),
            "",
            false,
            200,
            &[("cache-control", "max-age=60")],
        )
        .unwrap();
        assert_eq!(s.freshness.stale_while_revalidate, Duration::from_secs(10));
        assert_eq!(s.freshness.stale_if_error, Duration::from_secs(300));
        let s = decide_with(
            &defaults,
            &route(),
            "",
            false,
            200,
            &[(
                "cache-control",
                "max-age=60, stale-while-revalidate=30, stale-if-error=0",
            )],
        )
        .unwrap();
        assert_eq!(s.freshness.stale_while_revalidate, Duration::from_secs(30));
        assert_eq!(s.freshness.stale_if_error, Duration::ZERO);
        // RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.8, §5.2.2.10: these forbid stale serving outright.
        for cc in [
            "max-age=60, must-revalidate, stale-while-revalidate=30",
            "max-age=60, proxy-revalidate",
            "s-maxage=60, stale-if-error=30",
        ] {
            let s = decide_with(
                &defaults,
                &route(),
                "",
                false,
                200,
                &[("cache-control", cc)],
            )
            .unwrap();
            assert!(s.freshness.stale_forbidden, "{cc}");
            assert_eq!(s.freshness.stale_while_revalidate, Duration::ZERO, "{cc}");
            assert_eq!(s.freshness.stale_if_error, Duration::ZERO, "{cc}");
        }
    }

    // RFC 9111 §4.2: fresh while lifetime > current age.
    #[test]
    fn fresh_entries_are_served() {
        assert_eq!(decide_reuse(&entry(10, 60), &req("")), Reuse::Fresh);
        assert_eq!(
            decide_reuse(&entry(60, 60), &req("")),
            Reuse::Revalidate(RevalidateReason::Stale)
        );
    }

    // RFC 9111 §5.2.1.4: request no-cache → revalidate even a fresh entry.
    #[test]
    fn request_no_cache_revalidates() {
        assert_eq!(
            decide_reuse(&entry(1, 60), &req("no-cache")),
            Reuse::Revalidate(RevalidateReason::Request)
        );
    }

    // RFC 9111 §5.2.1.1: request max-age bounds the acceptable age, even with max-stale.
    #[test]
    fn request_max_age() {
        assert_eq!(
            decide_reuse(&entry(30, 60), &req("max-age=10")),
            Reuse::Revalidate(RevalidateReason::Request)
        );
        assert_eq!(
            decide_reuse(&entry(5, 60), &req("max-age=10")),
            Reuse::Fresh
        );
        assert_eq!(
            decide_reuse(&entry(70, 60), &req("max-age=65, max-stale")),
            Reuse::Revalidate(RevalidateReason::Request)
        );
        assert_eq!(decide_reuse(&entry(0, 60), &req("max-age=0")), Reuse::Fresh);
    }

    // RFC 9111 §5.2.1.3: min-fresh wants that much freshness left.
    #[test]
    fn request_min_fresh() {
        assert_eq!(
            decide_reuse(&entry(50, 60), &req("min-fresh=20")),
            Reuse::Revalidate(RevalidateReason::Request)
        );
        assert_eq!(
            decide_reuse(&entry(30, 60), &req("min-fresh=20")),
            Reuse::Fresh
        );
    }

    // RFC 9111 §5.2.1.2, §4.2.4: max-stale accepts staleness, unless the response forbids it.
    #[test]
    fn request_max_stale() {
        assert_eq!(
            decide_reuse(&entry(70, 60), &req("max-stale=10")),
            Reuse::StaleAccepted
        );
        assert_eq!(
            decide_reuse(&entry(71, 60), &req("max-stale=10")),
            Reuse::Revalidate(RevalidateReason::Stale)
        );
        assert_eq!(
            decide_reuse(&entry(9999, 60), &req("max-stale")),
            Reuse::StaleAccepted
        );
        let forbidden = EntryState {
            stale_forbidden: true,
            ..entry(70, 60)
        };
        assert_eq!(
            decide_reuse(&forbidden, &req("max-stale")),
            Reuse::Revalidate(RevalidateReason::Stale)
        );
    }

    // RFC 5861 §3: within the stale-while-revalidate window serve stale and refresh.
    #[test]
    fn stale_while_revalidate() {
        let e = EntryState {
            stale_while_revalidate: Duration::from_secs(30),
            ..entry(80, 60)
        };
        assert_eq!(decide_reuse(&e, &req("")), Reuse::StaleWhileRevalidate);
        let past = EntryState {
            current_age: Duration::from_secs(91),
            ..e
        };
        assert_eq!(
            decide_reuse(&past, &req("")),
            Reuse::Revalidate(RevalidateReason::Stale)
        );
        let forbidden = EntryState {
            stale_forbidden: true,
            ..e
        };
        assert_eq!(
            decide_reuse(&forbidden, &req("")),
            Reuse::Revalidate(RevalidateReason::Stale)
        );
    }

    // RFC 9111 §5.2.1.7: only-if-cached → 504 on a miss or when the entry needs the upstream.
    #[test]
    fn only_if_cached() {
        assert_eq!(on_miss(&req("only-if-cached")), Miss::GatewayTimeout);
        assert_eq!(on_miss(&req("")), Miss::Forward);
        assert_eq!(
            decide_reuse(&entry(1, 60), &req("only-if-cached")),
            Reuse::Fresh
        );
        assert_eq!(
            decide_reuse(&entry(61, 60), &req("only-if-cached")),
            Reuse::GatewayTimeout
        );
        assert_eq!(
            decide_reuse(&entry(1, 60), &req("only-if-cached, no-cache")),
            Reuse::GatewayTimeout
        );
        let swr = EntryState {
            stale_while_revalidate: Duration::from_secs(30),
            ..entry(61, 60)
        };
        assert_eq!(
            decide_reuse(&swr, &req("only-if-cached")),
            Reuse::StaleWhileRevalidate
        );
    }

    // RFC 5861 §4: stale-if-error from the response or the request, never when forbidden.
    #[test]
    fn stale_if_error() {
        let e = EntryState {
            stale_if_error: Duration::from_secs(300),
            ..entry(100, 60)
        };
        assert!(serve_stale_on_error(&e, &req("")));
        assert!(!serve_stale_on_error(
            &EntryState {
                current_age: Duration::from_secs(361),
                ..e
            },
            &req("")
        ));
        assert!(!serve_stale_on_error(&entry(100, 60), &req("")));
        assert!(serve_stale_on_error(
            &entry(100, 60),
            &req("stale-if-error=60")
        ));
        assert!(serve_stale_on_error(&entry(100, 60), &req("max-stale=40")));
        assert!(serve_stale_on_error(&entry(10, 60), &req("")));
        assert!(!serve_stale_on_error(
            &EntryState {
                stale_forbidden: true,
                ..e
            },
            &req("")
        ));
        assert!(!serve_stale_on_error(&e, &req("no-cache")));
    }

    // RFC 9111 §4.4: unsafe methods with a non-error status invalidate the target URI.
    #[test]
    fn unsafe_methods_invalidate_on_success() {
        assert!(invalidates_target(&Method::POST, 201));
        assert!(invalidates_target(&Method::DELETE, 204));
        assert!(invalidates_target(&Method::PUT, 303));
        assert!(invalidates_target(
            &Method::from_bytes(b"PURGE").unwrap(),
            200
        ));
        assert!(!invalidates_target(&Method::POST, 500));
        assert!(!invalidates_target(&Method::PATCH, 404));
        assert!(!invalidates_target(&Method::GET, 200));
        assert!(!invalidates_target(&Method::OPTIONS, 200));
    }

    // RFC 9211 §2.8: every reason has a token-safe detail.
    #[test]
    fn details_are_tokens() {
        for reason in [
            NotStorable::Method,
            NotStorable::RequestNoStore,
            NotStorable::Status,
            NotStorable::NoStore,
            NotStorable::Private,
            NotStorable::VaryStar,
            NotStorable::VaryNotAllowed,
            NotStorable::SetCookie,
            NotStorable::Authorization,
            NotStorable::TooLarge,
            NotStorable::NoFreshness,
            NotStorable::StaleOnArrival,
        ] {
            let d = reason.detail();
            assert!(
                d.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{d}"
            );
            assert!(!reason.to_string().is_empty());
        }
    }
}

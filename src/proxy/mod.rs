//! The Pingora `ProxyHttp` implementation. Deliberately thin: each phase calls one function of
//! the module that owns the concern, in the order of a request's path (see ARCHITECTURE.md).

pub mod canonical;
pub mod error;
pub mod forward;
pub(crate) mod host;
pub mod pool;
pub mod reload;
pub mod router;
pub mod snapshot;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use crate::auth::{consumer_header, query_value, query_without};
use crate::config::AuthMethod;
use crate::observe::{
    accept_request_id, new_request_id, AccessLog, AccessRecord, Metrics, Redactor, RequestId,
};
use crate::principal::Principal;
use crate::ratelimit::{Quota, RequestFacts, Verdict};
use error::GatewayError;
use forward::X_CONSUMER_ID;
use pool::HashKey;
use reload::SnapshotHandle;
use router::RouteMatch;
use snapshot::{Route, Snapshot};

/// Marks "no healthy peer" so `fail_to_proxy` can tell it from a failed connection.
const NO_HEALTHY_UPSTREAM: ErrorType = ErrorType::Custom("no_healthy_upstream");

/// The gateway's proxy logic.
pub struct Gateway {
    snapshots: Arc<SnapshotHandle>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
}

/// Per-request state shared across the proxy phases.
pub struct RequestCtx {
    start: Instant,
    request_id: RequestId,
    /// The same id as a header value, built once and shared with the upstream request and the
    /// response (a reference-count bump each, not a copy).
    request_id_header: Option<http::HeaderValue>,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<usize>,
    matched_len: usize,
    reject: Option<GatewayError>,
    /// Peers tried so far, so a retry goes elsewhere.
    tried: Vec<SocketAddr>,
    peer_host: Option<http::HeaderValue>,
    upstream_start: Option<Instant>,
    upstream_duration: Option<Duration>,
    /// The status of a response the gateway wrote itself.
    error_status: Option<u16>,
    /// Who the request is from, once authenticated.
    principal: Option<Arc<Principal>>,
    /// Rate-limit usage to report in the response headers.
    quota: Option<Quota>,
    /// Request body bytes seen so far, against `max_body_size` for bodies without a length.
    body_bytes: u64,
    /// The real client (see `forward::real_client_ip`), decided once for every consumer:
    /// rate limits, hashing, the access log, `X-Real-IP`.
    client_ip: Option<IpAddr>,
    /// Whether the TCP peer is a trusted proxy, whose forwarding headers are kept.
    peer_trusted: bool,
}

impl Gateway {
    /// Creates the proxy over a snapshot handle (swapped on reload), metrics and the access log.
    pub fn new(
        snapshots: Arc<SnapshotHandle>,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
    ) -> Gateway {
        Gateway {
            snapshots,
            metrics,
            access_log,
        }
    }
}

impl Gateway {
    /// Decides the route's rate limits; the quota goes into the context for the headers.
    async fn rate_limit(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), GatewayError> {
        let Some(route) = ctx.route() else {
            return Ok(());
        };
        if route.rate_limit.is_empty() {
            return Ok(());
        }
        let facts = RequestFacts {
            client_ip: ctx.client_ip,
            principal: ctx.principal.as_deref(),
            headers: &session.req_header().headers,
        };
        match self
            .snapshots
            .services()
            .limiter
            .check(&route.rate_limit, &facts)
            .await
        {
            Verdict::Admitted(quota) => {
                ctx.quota = quota;
                Ok(())
            }
            Verdict::Denied {
                quota,
                retry_after_secs,
            } => {
                ctx.quota = Some(quota);
                Err(GatewayError::RateLimited(retry_after_secs))
            }
            Verdict::Unavailable => Err(GatewayError::RateLimiterUnavailable),
        }
    }
}

impl RequestCtx {
    fn route(&self) -> Option<&Route> {
        let rt = self.snapshot.as_ref()?;
        rt.routes.get(self.route?)
    }
}

/// The TCP peer's IP; the client is `RequestCtx::client_ip`.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn is_https(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The request's host, with its port: the URI authority (HTTP/2) or the Host header, which
/// `host::settle_host` set from the target's authority for absolute-form requests.
fn request_host(req: &RequestHeader) -> &str {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// The host the client asked for, for `X-Forwarded-Host`: the one routing used (see
/// [`request_host`]), so an HTTP/2 request without a Host header still has one.
fn original_host(req: &RequestHeader) -> Option<http::HeaderValue> {
    match req.uri.authority() {
        Some(a) => http::HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers.get(http::header::HOST).cloned(),
    }
}

/// The path and query as received; logs show it only through the `Redactor`.
fn path_and_query(req: &RequestHeader) -> &str {
    req.uri
        .path_and_query()
        .map_or_else(|| req.uri.path(), |p| p.as_str())
}

/// Checks a declared body size against the limit.
fn check_body_size(req: &RequestHeader, max: u64) -> Option<GatewayError> {
    let value = req.headers.get(http::header::CONTENT_LENGTH)?;
    match value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        Some(n) if n > max => Some(GatewayError::PayloadTooLarge),
        Some(_) => None,
        None => Some(GatewayError::BadRequest("Content-Length is not a number")),
    }
}

/// Writes a JSON error response; the connection is closed after it when `close` is set.
async fn respond_error(
    session: &mut Session,
    err: &GatewayError,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let body = err.body(&ctx.request_id);
    let mut resp = err.response_header(&ctx.request_id, body.len())?;
    add_rate_limit_headers(&mut resp, ctx)?;
    ctx.error_status = Some(err.status());
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Adds the rate-limit headers of the request's quota, if it has one.
fn add_rate_limit_headers(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    let (Some(quota), Some(route)) = (ctx.quota.as_ref(), ctx.route()) else {
        return Ok(());
    };
    let mut result = Ok(());
    route.rate_limit.write_headers(quota, |name, value| {
        if result.is_ok() {
            result = resp.insert_header(name, value);
        }
    });
    result
}

/// Runs the route's authentication and stores the principal in the context. A client network
/// over `[rate_limit.failed_auth]` gets only what the local tier decides: a credential cached
/// as valid passes, anything needing the store or a signature check is refused with 429.
async fn authenticate(
    session: &Session,
    ctx: &mut RequestCtx,
    limiter: &crate::ratelimit::Limiter,
) -> std::result::Result<(), GatewayError> {
    let (Some(rt), Some(route)) = (ctx.snapshot.as_deref(), ctx.route()) else {
        return Ok(());
    };
    if route.auth.methods.is_empty() {
        return Ok(());
    }
    // The real client, so a flood through a trusted load balancer blocks the flooding client,
    // not everyone behind the balancer.
    let ip = ctx.client_ip;
    if let Some(secs) = limiter.failed_auth_retry_after(&route.rate_limit, ip) {
        // The network may be a NAT or an IPv6 /64 shared with the attacker: its clients with
        // credentials this node already knows as valid are not locked out.
        let cached = rt
            .auth
            .authenticate_cached(session.req_header(), &route.name, &route.auth);
        return match cached {
            Some(Ok(principal)) => {
                ctx.principal = Some(principal);
                Ok(())
            }
            Some(Err(failure)) => {
                let challenge = failure.challenge(&route.auth.methods);
                Err(GatewayError::Auth(failure, challenge))
            }
            None => {
                limiter.count_failed_auth_refusal();
                Err(GatewayError::TooManyFailedAttempts(secs))
            }
        };
    }
    match rt
        .auth
        .authenticate(session.req_header(), &route.name, &route.auth)
        .await
    {
        Ok(principal) => {
            ctx.principal = principal;
            Ok(())
        }
        Err(failure) => {
            if failure.is_rejected_credential() {
                limiter.record_failed_auth(&route.rate_limit, ip);
            }
            let challenge = failure.challenge(&route.auth.methods);
            Err(GatewayError::Auth(failure, challenge))
        }
    }
}

/// Sets identity headers and, unless the route forwards them, strips credentials.
fn apply_identity(
    upstream: &mut RequestHeader,
    rt: &Snapshot,
    route: &Route,
    principal: Option<&Principal>,
) -> Result<()> {
    // The client's own identity headers, in every spelling, went in `SpoofGuard::strip`.
    if let Some(p) = principal {
        if let Some(v) = consumer_header(p) {
            upstream.insert_header(X_CONSUMER_ID, v)?;
        }
        for (name, value) in &p.headers {
            upstream.insert_header(name.clone(), value.clone())?;
        }
    }
    if route.auth.methods.is_empty() || route.auth.forward_credentials {
        return Ok(());
    }
    if route.auth.methods.contains(&AuthMethod::Jwt) {
        upstream.remove_header(&http::header::AUTHORIZATION);
    }
    if let Some(source) = rt.auth.api_key_source() {
        upstream.remove_header(&source.header);
        if let (Some(param), Some(query)) = (&source.query_param, upstream.uri.query()) {
            if query_value(query, param).is_some() {
                let path = upstream.uri.path().to_string();
                let query = query_without(query, param);
                set_path_and_query(
                    upstream,
                    &path,
                    query.as_deref(),
                    "uri after stripping the key",
                )?;
            }
        }
    }
    Ok(())
}

const X_REQUEST_ID: &str = "x-request-id";

/// Replaces the upstream request's path and query; `what` names the rewrite in the error.
fn set_path_and_query(
    upstream: &mut RequestHeader,
    path: &str,
    query: Option<&str>,
    what: &'static str,
) -> Result<()> {
    let uri = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    match uri.parse::<http::Uri>() {
        Ok(uri) => {
            upstream.set_uri(uri);
            Ok(())
        }
        Err(_) => Error::e_explain(ErrorType::InvalidHTTPHeader, what),
    }
}

/// Settles the host and makes the request path canonical in place, then routes on both (see
/// `host` and `canonical`).
fn canonical_route(
    rt: &Snapshot,
    req: &mut RequestHeader,
) -> std::result::Result<RouteMatch, GatewayError> {
    let opts = canonical::PathOptions {
        merge_slashes: rt.config.server.merge_slashes,
    };
    host::settle_host(req).map_err(GatewayError::InvalidHost)?;
    let encoded_slash =
        canonical::canonicalize_request(req, opts).map_err(GatewayError::InvalidPath)?;
    let (host, path, method) = (request_host(req), req.uri.path(), req.method.as_str());
    let found = rt.router.find(host, path, method);
    if !encoded_slash {
        return Ok(found);
    }
    let routes = &rt.config.routes;
    canonical::check_encoded_slashes(&rt.router, routes, found, (host, path, method), opts)
        .map_err(GatewayError::InvalidPath)
}

fn hash_key_bytes<'a>(
    key: &HashKey,
    session: &'a Session,
    client_ip: Option<IpAddr>,
    ip_buf: &'a mut [u8; 16],
) -> &'a [u8] {
    let req = session.req_header();
    match key {
        HashKey::Path => req.uri.path().as_bytes(),
        HashKey::Header(name) => req.headers.get(name).map_or(&[][..], |v| v.as_bytes()),
        HashKey::ClientIp => match client_ip {
            Some(IpAddr::V4(v4)) => {
                ip_buf[..4].copy_from_slice(&v4.octets());
                &ip_buf[..4]
            }
            Some(IpAddr::V6(v6)) => {
                ip_buf.copy_from_slice(&v6.octets());
                &ip_buf[..]
            }
            None => &[],
        },
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {
        // Pingora's default adds a disabled compression module, which still costs every
        // request a module context and two filter calls. The gateway compresses nothing.
    }

    fn new_ctx(&self) -> RequestCtx {
        // Pingora calls this on the proxy thread that serves the request; its runtime lives as
        // long as the thread, so the store may give it a connection of its own.
        crate::store::mark_proxy_thread();
        RequestCtx {
            start: Instant::now(),
            request_id: RequestId::default(),
            request_id_header: None,
            snapshot: None,
            route: None,
            matched_len: 0,
            reject: None,
            tried: Vec::new(),
            peer_host: None,
            upstream_start: None,
            upstream_duration: None,
            error_status: None,
            principal: None,
            quota: None,
            body_bytes: 0,
            client_ip: None,
            peer_trusted: false,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let rt = self.snapshots.current();
        let req = session.req_header();
        let client_id = req
            .headers
            .get(X_REQUEST_ID)
            .and_then(|v| accept_request_id(v.as_bytes()).map(|id| (id, v.clone())));
        (ctx.request_id, ctx.request_id_header) = match client_id {
            Some((id, value)) => (id, Some(value)),
            None => {
                let id = new_request_id();
                (id, http::HeaderValue::from_str(id.as_str()).ok())
            }
        };
        match canonical_route(&rt, session.req_header_mut()) {
            Err(e) => ctx.reject = Some(e),
            Ok(RouteMatch::Found { route, matched_len }) => {
                ctx.route = Some(route);
                ctx.matched_len = matched_len;
                ctx.reject = check_body_size(session.req_header(), rt.max_body_size);
            }
            Ok(RouteMatch::MethodNotAllowed(allowed)) => {
                ctx.reject = Some(GatewayError::MethodNotAllowed(allowed))
            }
            Ok(RouteMatch::NotFound) => ctx.reject = Some(GatewayError::RouteNotFound),
        }
        // Pingora keeps HTTP/1.1 connections forever by default; bound idle ones.
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(rt.keepalive_secs));
        }
        let peer = peer_ip(session);
        ctx.peer_trusted = peer.is_some_and(|ip| rt.is_trusted(ip));
        ctx.client_ip =
            forward::real_client_ip(peer, &session.req_header().headers, |ip| rt.is_trusted(ip));
        ctx.snapshot = Some(rt);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(err) = ctx.reject.take() {
            respond_error(session, &err, ctx).await?;
            return Ok(true);
        }
        let limiter = &self.snapshots.services().limiter;
        if let Err(err) = authenticate(session, ctx, limiter).await {
            respond_error(session, &err, ctx).await?;
            return Ok(true);
        }
        if let Err(err) = self.rate_limit(session, ctx).await {
            respond_error(session, &err, ctx).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Content-Length was checked up front; this catches chunked bodies that grow too large.
        if let (Some(chunk), Some(rt)) = (body.as_ref(), ctx.snapshot.as_ref()) {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > rt.max_body_size {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    "request body over max_body_size",
                );
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let Some(route) = ctx.route() else {
            return Error::e_explain(ErrorType::InternalError, "no route in upstream_peer");
        };
        let pool = &route.pool;
        let mut ip_buf = [0u8; 16];
        let key = match pool.hash_key() {
            Some(k) => hash_key_bytes(k, session, ctx.client_ip, &mut ip_buf),
            None => &[],
        };
        let Some(chosen) = pool.select(key, &ctx.tried) else {
            return Error::e_explain(NO_HEALTHY_UPSTREAM, format!("upstream {:?}", pool.name));
        };
        let mut peer = chosen.peer.clone();
        if let Some(t) = route.connect_timeout {
            peer.options.connection_timeout = Some(t);
        }
        if let Some(t) = route.read_timeout {
            peer.options.read_timeout = Some(t);
        }
        if let Some(t) = route.write_timeout {
            peer.options.write_timeout = Some(t);
        }
        let addr = chosen.addr;
        let host = chosen.host.clone();
        ctx.tried.push(addr);
        ctx.peer_host = Some(host);
        ctx.upstream_start = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(rt), Some(route)) = (ctx.snapshot.as_deref(), ctx.route()) else {
            return Ok(());
        };
        if route.strip_prefix {
            let path = router::strip_prefix(upstream.uri.path(), ctx.matched_len).to_string();
            let query = upstream.uri.query().map(str::to_string);
            set_path_and_query(upstream, &path, query.as_deref(), "path after strip_prefix")?;
        }
        let original_host = original_host(session.req_header());
        forward::remove_hop_by_hop(upstream);
        let trusted = ctx.peer_trusted;
        rt.spoof_guard.strip(upstream, trusted);
        let https = is_https(session);
        let original_host = original_host.as_ref();
        forward::set_forwarded_headers(upstream, peer_ip(session), trusted, https, original_host)?;
        let local_port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port());
        forward::set_client_headers(upstream, ctx.client_ip, trusted, local_port)?;
        // An upstream's `host_header` wins over `preserve_host`: it names what the peers serve.
        let host = match &route.pool.host_header {
            Some(h) => Some(h.clone()),
            None if route.preserve_host => None,
            None => ctx.peer_host.clone(),
        };
        if let Some(h) = host {
            forward::set_host(upstream, h)?;
        }
        if let Some(id) = &ctx.request_id_header {
            upstream.insert_header(X_REQUEST_ID, id.clone())?;
        }
        apply_identity(upstream, rt, route, ctx.principal.as_deref())?;
        for name in &route.request_remove {
            upstream.remove_header(name);
        }
        for (name, value) in &route.request_add {
            upstream.insert_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            ctx.upstream_duration = Some(start.elapsed());
        }
        forward::remove_response_hop_by_hop(resp);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(id) = &ctx.request_id_header {
            resp.insert_header(X_REQUEST_ID, id.clone())?;
        }
        add_rate_limit_headers(resp, ctx)?;
        if let Some(route) = ctx.route() {
            for name in &route.response_remove {
                resp.remove_header(name);
            }
            for (name, value) in &route.response_add {
                resp.insert_header(name.clone(), value.clone())?;
            }
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(route) = ctx.route() {
            let attempts = ctx.tried.len();
            // With no other healthy peer a retry could only fail as "no healthy upstream" and
            // hide the real failure (refused, timed out) from the client.
            let elsewhere = route.pool.has_untried_healthy(&ctx.tried);
            if route.retry_connect_failure && attempts <= route.retries && elsewhere {
                e.set_retry(true);
            } else {
                e.set_retry(false);
            }
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let idempotent = session.req_header().method.is_idempotent();
        let safe = idempotent && !session.as_ref().retry_buffer_truncated();
        let attempts = ctx.tried.len();
        match ctx.route() {
            Some(route) if safe && route.retry_upstream_error && attempts <= route.retries => {
                e.set_retry(true);
            }
            // A reused pooled connection the peer had already closed: safe to retry once.
            _ if safe => e.retry.decide_reuse(client_reused),
            _ => e.set_retry(false),
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let err = if *e.etype() == NO_HEALTHY_UPSTREAM {
            GatewayError::NoHealthyUpstream
        } else {
            GatewayError::from_proxy_error(e)
        };
        let dead_downstream = matches!(e.esource(), pingora::ErrorSource::Downstream)
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
            );
        let mut code = 0;
        if !dead_downstream && session.response_written().is_none() {
            code = err.status();
            if let Err(write_err) = respond_error(session, &err, ctx).await {
                log::debug!("could not send error response: {write_err}");
            }
        } else if let Some(resp) = session.response_written() {
            code = resp.status.as_u16();
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        // Pingora's default prints the raw query (keys, tokens) in its error lines.
        let req = session.req_header();
        let summary = |redactor: &Redactor| {
            redactor.request_summary(
                req.method.as_str(),
                path_and_query(req),
                request_host(req),
                ctx.request_id.as_str(),
            )
        };
        match &ctx.snapshot {
            Some(rt) => summary(&rt.redactor),
            None => summary(&self.snapshots.current().redactor),
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, error: &Error) -> bool {
        // Client-caused failures are reported in the access log; the error log is for the gateway.
        matches!(error.esource(), pingora::ErrorSource::Downstream)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status).or_else(|| {
            ctx.error_status
                .and_then(|s| http::StatusCode::from_u16(s).ok())
        });
        let elapsed = ctx.start.elapsed();
        let route = ctx.route();
        let route_name = route.map_or("-", |r| r.name.as_str());
        let req = session.req_header();
        self.metrics.count_request(route_name, &req.method, status);
        if let Some(route) = route {
            route.request_duration.observe(elapsed.as_secs_f64());
            if let Some(d) = ctx.upstream_duration {
                route.upstream_duration.observe(d.as_secs_f64());
            }
        }
        let path = path_and_query(req);
        if let Some(rt) = &ctx.snapshot {
            self.access_log.record(
                &rt.redactor,
                &AccessRecord {
                    request_id: ctx.request_id.as_str(),
                    route: route_name,
                    method: req.method.as_str(),
                    path,
                    status: status.map_or(0, |s| s.as_u16()),
                    bytes_in: session.body_bytes_read(),
                    bytes_out: session.body_bytes_sent(),
                    duration: elapsed,
                    upstream_duration: ctx.upstream_duration,
                    upstream: ctx.tried.last().copied(),
                    client_ip: ctx.client_ip,
                    headers: &req.headers,
                },
            );
        }
    }
}

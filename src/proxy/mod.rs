//! The Pingora `ProxyHttp` implementation. Deliberately thin: each phase calls one function of
//! the module that owns the concern, in the order of a request's path (see ARCHITECTURE.md).

// Public only where the binary, the benches or an error type of the library's interface need
// them: `canonical` and `router` (benches), `snapshot` (`summary`, `SnapshotError`),
// `pool` (`PoolError`, a source of `SnapshotError`).
mod admit;
pub mod canonical;
pub(crate) mod error;
pub(crate) mod forward;
pub(crate) mod host;
pub mod pool;
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

use crate::observe::{
    path_and_query, record_finished, request_id_of, AccessLog, Finished, Metrics, RequestId,
    X_REQUEST_ID,
};
use crate::principal::Principal;
use crate::ratelimit::Quota;
use error::{GatewayError, NO_HEALTHY_UPSTREAM};
use router::RouteMatch;
use snapshot::{Live, Route, Snapshot};

/// The gateway's proxy logic.
pub(crate) struct Gateway {
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    access_log: Arc<AccessLog>,
}

/// Per-request state shared across the proxy phases.
pub(crate) struct RequestCtx {
    start: Instant,
    request_id: RequestId,
    /// The same id as a header value, built once and shared with the upstream request and the
    /// response (a reference-count bump each, not a copy).
    request_id_header: Option<http::HeaderValue>,
    /// The config this request runs against, loaded once when it arrives (one `ArcSwap`
    /// load), so a reload never changes the rules under a request in flight.
    snapshot: Arc<Snapshot>,
    /// The route routing found. `None` only when routing refused the request (`reject` says
    /// why), which `request_filter` answers: every phase after it has a route.
    route: Option<Routed>,
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

/// A request's route, held by reference count so a reload cannot take it away.
struct Routed {
    route: Arc<Route>,
    /// Bytes of the canonical path the route's prefix matched (for `strip_prefix`).
    matched_len: usize,
}

impl Gateway {
    /// Creates the proxy over the live snapshot (swapped on reload), metrics and the access log.
    pub(crate) fn new(
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        access_log: Arc<AccessLog>,
    ) -> Gateway {
        Gateway {
            live,
            metrics,
            access_log,
        }
    }
}

impl RequestCtx {
    /// The request's route, in the phases that only a routed request reaches.
    fn routed(&self) -> Result<&Routed> {
        match &self.route {
            Some(routed) => Ok(routed),
            None => Error::e_explain(ErrorType::InternalError, "request not routed"),
        }
    }
}

/// The TCP peer's IP; the client is `RequestCtx::client_ip`.
fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// What forwarding needs of the request's connection and context.
fn hop<'a>(session: &Session, ctx: &'a RequestCtx, route: &Route) -> forward::Hop<'a> {
    forward::Hop {
        peer: peer_ip(session),
        peer_trusted: ctx.peer_trusted,
        client_ip: ctx.client_ip,
        https: session.digest().is_some_and(|d| d.ssl_digest.is_some()),
        local_port: session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port()),
        original_host: forward::original_host(session.req_header()),
        host: route.upstream_host(ctx.peer_host.as_ref()),
        request_id: ctx.request_id_header.as_ref(),
    }
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
    let (Some(quota), Some(routed)) = (ctx.quota.as_ref(), ctx.route.as_ref()) else {
        return Ok(());
    };
    let mut result = Ok(());
    routed.route.rate_limit.write_headers(quota, |name, value| {
        if result.is_ok() {
            result = resp.insert_header(name, value);
        }
    });
    result
}

/// Settles the host and makes the request path canonical in place, then routes on both (see
/// `host` and `canonical`), and applies the cheap rejects of a found route (413).
fn route_request(
    rt: &Snapshot,
    req: &mut RequestHeader,
) -> std::result::Result<Routed, GatewayError> {
    let opts = canonical::PathOptions {
        merge_slashes: rt.config.server.merge_slashes,
    };
    host::settle_host(req).map_err(GatewayError::InvalidHost)?;
    let encoded_slash =
        canonical::canonicalize_request(req, opts).map_err(GatewayError::InvalidPath)?;
    let (host, path, method) = (host::request_host(req), req.uri.path(), req.method.as_str());
    let mut found = rt.router.find(host, path, method);
    if encoded_slash {
        let routes = &rt.config.routes;
        found =
            canonical::check_encoded_slashes(&rt.router, routes, found, (host, path, method), opts)
                .map_err(GatewayError::InvalidPath)?;
    }
    match found {
        RouteMatch::Found { route, matched_len } => match rt.routes.get(route) {
            Some(route) => Ok(Routed {
                route: route.clone(),
                matched_len,
            }),
            // The router is built from the same routes; an index past them is a bug.
            None => Err(GatewayError::Internal),
        },
        RouteMatch::MethodNotAllowed(allowed) => Err(GatewayError::MethodNotAllowed(allowed)),
        RouteMatch::NotFound => Err(GatewayError::RouteNotFound),
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
            // Pingora makes a context per request, once its header is read.
            snapshot: self.live.current(),
            route: None,
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
        (ctx.request_id, ctx.request_id_header) = request_id_of(&session.req_header().headers);
        let rt = &ctx.snapshot;
        match route_request(rt, session.req_header_mut()) {
            Ok(routed) => {
                ctx.reject = check_body_size(session.req_header(), rt.max_body_size);
                ctx.route = Some(routed);
            }
            Err(e) => ctx.reject = Some(e),
        }
        // Pingora keeps HTTP/1.1 connections forever by default; bound idle ones.
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(rt.keepalive_secs));
        }
        let peer = peer_ip(session);
        ctx.peer_trusted = peer.is_some_and(|ip| rt.is_trusted(ip));
        ctx.client_ip =
            forward::real_client_ip(peer, &session.req_header().headers, |ip| rt.is_trusted(ip));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let admitted = match ctx.reject.take() {
            Some(err) => Err(err),
            None => admit::admit(session, ctx, &self.live.services().limiter).await,
        };
        match admitted {
            Ok(()) => Ok(false),
            Err(err) => {
                respond_error(session, &err, ctx).await?;
                Ok(true)
            }
        }
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Content-Length was checked up front; this catches chunked bodies that grow too large.
        if let Some(chunk) = body.as_ref() {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > ctx.snapshot.max_body_size {
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
        let route = &ctx.routed()?.route;
        let pool = &route.pool;
        let mut buf = [0u8; 16];
        let key = pool.hash_key().map_or(&[][..], |k| {
            pool::hash_input(k, session.req_header(), ctx.client_ip, &mut buf)
        });
        let Some(chosen) = pool.select(key, &ctx.tried) else {
            return Error::e_explain(NO_HEALTHY_UPSTREAM, format!("upstream {:?}", pool.name));
        };
        let peer = route.peer(chosen);
        let (addr, host) = (chosen.addr, chosen.host.clone());
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
        let Routed { route, matched_len } = ctx.routed()?;
        if route.strip_prefix {
            forward::strip_prefix(upstream, *matched_len)?;
        }
        let auth = &ctx.snapshot.auth;
        forward::forward_request(
            upstream,
            &ctx.snapshot.spoof_guard,
            &hop(session, ctx, route),
        )?;
        crate::auth::apply_identity(upstream, ctx.principal.as_deref())?;
        auth.strip_credentials(upstream, &route.auth)?;
        route.rewrite_request_headers(upstream)
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
        match &ctx.route {
            Some(routed) => routed.route.rewrite_response_headers(resp),
            None => Ok(()),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(routed) = &ctx.route {
            e.set_retry(routed.route.retries_connect_failure(&ctx.tried));
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
        match &ctx.route {
            Some(r) if safe && r.route.retries_upstream_error(attempts) => e.set_retry(true),
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
        let err = GatewayError::from_proxy_error(e);
        let error_code = if !error::client_gone(e) && session.response_written().is_none() {
            if let Err(write_err) = respond_error(session, &err, ctx).await {
                log::debug!("could not send error response: {write_err}");
            }
            err.status()
        } else {
            session.response_written().map_or(0, |r| r.status.as_u16())
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        // Pingora's default prints the raw query (keys, tokens) in its error lines.
        let req = session.req_header();
        ctx.snapshot.redactor.request_summary(
            req.method.as_str(),
            path_and_query(&req.uri),
            host::request_host(req),
            ctx.request_id.as_str(),
        )
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
        let finished = Finished {
            request_id: ctx.request_id.as_str(),
            route: ctx
                .route
                .as_ref()
                .map(|r| (r.route.name.as_str(), &r.route.metrics)),
            request: session.req_header(),
            status,
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            duration: ctx.start.elapsed(),
            upstream_duration: ctx.upstream_duration,
            upstream: ctx.tried.last().copied(),
            client_ip: ctx.client_ip,
        };
        record_finished(
            &self.metrics,
            &self.access_log,
            &ctx.snapshot.redactor,
            &finished,
        );
    }
}

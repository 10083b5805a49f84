//! Admission of a routed request: who it is from (auth), then whether it is within its limits
//! (ratelimit). The proxy joins the two here because neither may name the other: limits read
//! the principal, never auth, and the failed-authentication limiter stands in front of
//! authentication.

use pingora::proxy::Session;

use super::error::GatewayError;
use super::snapshot::Route;
use super::RequestCtx;
use crate::ratelimit::{Limiter, RequestFacts, Verdict};

/// Authenticates the request and decides its rate limits; the principal and the quota (for the
/// response headers) go into the context.
pub(super) async fn admit(
    session: &Session,
    ctx: &mut RequestCtx,
    limiter: &Limiter,
) -> Result<(), GatewayError> {
    // Routing answered every request it found no route for, so this is a gateway bug.
    let Some(routed) = &ctx.route else {
        return Err(GatewayError::Internal);
    };
    let route = routed.route.clone();
    authenticate(session, ctx, &route, limiter).await?;
    rate_limit(session, ctx, &route, limiter).await
}

/// Runs the route's authentication and stores the principal in the context. A client network
/// over `[rate_limit.failed_auth]` gets only what the local tier decides: a credential cached
/// as valid passes, anything needing the store or a signature check is refused with 429.
async fn authenticate(
    session: &Session,
    ctx: &mut RequestCtx,
    route: &Route,
    limiter: &Limiter,
) -> Result<(), GatewayError> {
    if route.auth.methods.is_empty() {
        return Ok(());
    }
    let auth = &ctx.snapshot.auth;
    // The real client, so a flood through a trusted load balancer blocks the flooding client,
    // not everyone behind the balancer.
    let ip = ctx.client_ip;
    if let Some(secs) = limiter.failed_auth_retry_after(&route.rate_limit, ip) {
        // The network may be a NAT or an IPv6 /64 shared with the attacker: its clients with
        // credentials this node already knows as valid are not locked out.
        let cached = auth.authenticate_cached(session.req_header(), &route.name, &route.auth);
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
    match auth
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

/// Decides the route's rate limits; the quota goes into the context for the headers.
async fn rate_limit(
    session: &Session,
    ctx: &mut RequestCtx,
    route: &Route,
    limiter: &Limiter,
) -> Result<(), GatewayError> {
    if route.rate_limit.is_empty() {
        return Ok(());
    }
    let facts = RequestFacts {
        client_ip: ctx.client_ip,
        principal: ctx.principal.as_deref(),
        headers: &session.req_header().headers,
    };
    match limiter.check(&route.rate_limit, &facts).await {
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

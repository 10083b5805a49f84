//! Portcullis: an API gateway on Pingora whose shared state lives in Redis.
//!
//! Modules, one per concern; an arrow of `docs/architecture.md` points from a module to the
//! ones it may use, never back up:
//!
//! - `server`, `admin` (loopback health, readiness, metrics, reload, keys, revocations), and
//!   [`cli_keys`] (the `keys` subcommands against the configured store): assembly and edges.
//! - [`runtime`]: a validated config compiled into the immutable form requests run against
//!   (routing table, pools, redactor, spoof guard, authenticator), swapped atomically on
//!   reload; [`runtime::load_config`] is the one way in for a config file.
//! - [`proxy`]: the Pingora `ProxyHttp` implementation, the canonical request path, routing,
//!   upstream pools with health checks, forwarding headers and the real client IP, and the one
//!   error type that knows its HTTP status.
//! - [`auth`]: API keys and JWTs behind a two-tier decision cache, revocation, and the checks of
//!   `[auth]` that need auth's own code.
//! - [`ratelimit`]: rules compiled into counter keys and checks, one store decision per
//!   request, verdicts and headers, failure modes with the breaker and the local fallback,
//!   the failed-authentication limiter.
//! - [`principal`] and [`observe`]: leaves the features share: who a request is from; metrics
//!   with bounded labels, the redacting access log, the process log, request ids.
//! - [`store`]: the shared-state seam: one handle over the in-process and Redis backends, which
//!   implement the same operations (key/value with TTL, sets, invalidations, atomic
//!   revocations, rate-limit decisions with their vocabulary in [`store::limits`]); it owns
//!   every Redis type and script, and one contract suite tests both backends.
//! - [`config`]: the TOML model, validation that reports every problem with its path, secrets
//!   from environment variables or files. Imports nothing of ours.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod admin;
pub mod auth;
pub mod cli_keys;
pub mod config;
pub mod observe;
pub mod principal;
pub mod proxy;
pub mod ratelimit;
pub mod runtime;
pub mod server;
pub mod store;

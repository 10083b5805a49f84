//! Assembles the Pingora server from a config file: proxy listeners, the admin service and the
//! background tasks (health checks, SIGHUP reload). `main` only parses the command line.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::auth::{AuthMetrics, AuthShared, CacheMetrics, DecisionCache};
use crate::config::read_secret;
use crate::observe::{AccessLog, Metrics};
use crate::proxy::pool::run_health_checks;
use crate::proxy::Gateway;
use crate::ratelimit::{Limiter, RateMetrics};
use crate::runtime::{RuntimeHandle, Services};
use crate::store::Store;
use std::time::Duration;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config could not be loaded.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The admin token could not be read.
    #[error("admin token: {0}")]
    Secret(#[from] crate::config::SecretError),
    /// The access log could not be opened.
    #[error("access log {path:?}: {source}")]
    AccessLog {
        /// The destination.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store could not be set up.
    #[error(transparent)]
    Store(#[from] crate::store::StoreSetupError),
    /// The TLS listener could not be set up.
    #[error("tls listener: {0}")]
    Tls(String),
}

/// A built gateway, ready to run.
pub struct Built {
    server: Server,
    access_log: Arc<AccessLog>,
}

impl Built {
    /// Runs until SIGTERM/SIGINT has drained the server, writes out the access log's last
    /// lines, and exits 0.
    pub fn run_forever(self) -> ! {
        self.server.run(pingora::server::RunArgs::default());
        // A sink that does not drain (a stalled pipe reader) must not keep the process alive:
        // the last lines get a bounded time, then the process exits regardless.
        let (done, flushed) = std::sync::mpsc::channel();
        let log = self.access_log.clone();
        let flusher = std::thread::Builder::new()
            .name("access-log-flush".into())
            .spawn(move || {
                log.flush();
                let _ = done.send(());
            });
        if flusher.is_ok() && flushed.recv_timeout(FINAL_FLUSH_WITHIN).is_err() {
            log::warn!("access log: the last lines were not written within {FINAL_FLUSH_WITHIN:?}");
        }
        std::process::exit(0)
    }
}

/// How long the exit waits for the access log's last lines.
const FINAL_FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// Builds the server for a config file; call `run_forever` on the result.
pub fn build(config_path: &Path) -> Result<Built, StartError> {
    let config =
        crate::runtime::load_config(config_path).map_err(crate::runtime::RuntimeError::from)?;
    let services = services(&config)?;
    let metrics = services.metrics.clone();
    let runtime = Arc::new(RuntimeHandle::new(config_path, config, services)?);
    let rt = runtime.current();
    let config = &rt.config;

    let token = read_secret(
        config.admin.token_env.as_deref(),
        config.admin.token_file.as_deref(),
    )?;
    if token.is_none() {
        log::warn!("no admin token configured: POST /reload is disabled, reload with SIGHUP");
    }
    let access_log = Arc::new(
        AccessLog::start(&config.log.access_log, metrics.access_log_dropped.clone()).map_err(
            |source| StartError::AccessLog {
                path: config.log.access_log.clone(),
                source,
            },
        )?,
    );

    let mut conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(
            config
                .server
                .grace_period
                .ok()
                .map_or(5, |d| d.0.as_secs_f64().ceil() as u64),
        ),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    conf.upstream_keepalive_pool_size = 256;
    // Measured on 2 cores, 1 proxy thread: per-thread runtimes serve ~20 % more requests per
    // CPU second than tokio's work-stealing scheduler (load-tests/README.md).
    conf.work_stealing = config.server.work_stealing;
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let gateway = Gateway::new(runtime.clone(), metrics.clone(), access_log.clone());
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "proxy");
    for addr in &config.server.listen {
        proxy.add_tcp(addr.raw().trim());
    }
    if let Some(tls) = &config.server.tls {
        let mut settings =
            pingora::listeners::tls::TlsSettings::intermediate(&tls.cert_file, &tls.key_file)
                .map_err(|e| StartError::Tls(e.to_string()))?;
        if tls.h2 {
            settings.enable_h2();
        }
        proxy.add_tls_with_settings(tls.listen.raw().trim(), None, settings);
    }
    proxy.threads = Some(config.server.threads);

    let mut admin = Service::new(
        "admin".to_string(),
        AdminApp::new(runtime.clone(), metrics, token),
    );
    admin.add_tcp(config.admin.listen.raw().trim());
    admin.threads = Some(1);

    let mut background = background_service("health checks and reload", Background { runtime });
    background.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background);
    Ok(Built { server, access_log })
}

/// Creates the process-wide services a config needs: metrics, the store and the auth cache.
pub fn services(config: &crate::config::Config) -> Result<Services, StartError> {
    let metrics = Arc::new(Metrics::new());
    let rate_metrics = RateMetrics::new(metrics.registry());
    let store = Store::from_config_with_counters(
        config.store.as_ref(),
        metrics.registry(),
        Limiter::store_counters(&config.rate_limit, &rate_metrics),
    )?;
    let c = &config.auth.cache;
    let cache = DecisionCache::new(
        c.capacity as u64,
        c.ttl.ok().map_or(Duration::from_secs(300), |d| d.0),
        c.negative_capacity as u64,
        c.negative_ttl.ok().map_or(Duration::from_secs(5), |d| d.0),
        CacheMetrics::new(metrics.registry()),
    );
    let limiter = Arc::new(Limiter::new(
        store.clone(),
        &config.rate_limit,
        rate_metrics,
    ));
    let auth = Arc::new(AuthShared::new(
        store,
        cache,
        AuthMetrics::new(metrics.registry()),
    ));
    Ok(Services {
        metrics,
        auth,
        limiter,
    })
}

/// Runs health checks for the current pools and reloads the config on SIGHUP.
struct Background {
    runtime: Arc<RuntimeHandle>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let runtime = self.runtime.clone();
        let checks = tokio::spawn(async move {
            run_health_checks(|| {
                // Piggybacks on the health-check tick: a reload's new verifier starts refreshing.
                let rt = runtime.current();
                rt.auth.ensure_jwks_refresh();
                runtime.pools()
            })
            .await
        });
        let invalidations =
            tokio::spawn(self.runtime.services().auth.clone().follow_invalidations());
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload only through the admin API: {e}");
                None
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                    log::info!("SIGHUP received, reloading {}", self.runtime.path().display());
                    // The result is logged and counted by reload() itself.
                    let _ = self.runtime.reload();
                }
            }
        }
        checks.abort();
        invalidations.abort();
    }
}

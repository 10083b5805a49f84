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
use crate::observe::AccessLog;
use crate::proxy::pool::run_health_checks;
use crate::proxy::snapshot::SnapshotError;
use crate::proxy::Gateway;
use crate::reload::SnapshotHandle;
use crate::setup::{services, ProcessSettings};
use std::time::Duration;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config could not be loaded.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
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
    Tls(#[source] Box<pingora::Error>),
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
    let crate::setup::Loaded { config, process } = crate::setup::load(config_path)?;
    let services = services(&process)?;
    let metrics = services.metrics.clone();
    let snapshots = Arc::new(SnapshotHandle::new(config_path, config, services)?);
    let ProcessSettings {
        server: settings,
        admin: admin_settings,
        access_log: access_log_target,
        ..
    } = process;

    if admin_settings.token.is_none() {
        log::warn!("no admin token configured: POST /reload is disabled, reload with SIGHUP");
    }
    let access_log = Arc::new(
        AccessLog::start(&access_log_target, metrics.access_log_dropped.clone()).map_err(
            |source| StartError::AccessLog {
                path: access_log_target.describe().to_string(),
                source,
            },
        )?,
    );

    let mut conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.grace_period_secs),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    conf.upstream_keepalive_pool_size = 256;
    // Measured on 2 cores, 1 proxy thread: per-thread runtimes serve ~20 % more requests per
    // CPU second than tokio's work-stealing scheduler (load-tests/README.md).
    conf.work_stealing = settings.work_stealing;
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let gateway = Gateway::new(snapshots.live(), metrics.clone(), access_log.clone());
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "proxy");
    for addr in &settings.listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(tls) = &settings.tls {
        let mut tls_settings =
            pingora::listeners::tls::TlsSettings::intermediate(&tls.cert_file, &tls.key_file)
                .map_err(StartError::Tls)?;
        if tls.h2 {
            tls_settings.enable_h2();
        }
        proxy.add_tls_with_settings(&tls.listen.to_string(), None, tls_settings);
    }
    proxy.threads = Some(settings.threads);

    let mut admin = Service::new(
        "admin".to_string(),
        AdminApp::new(snapshots.clone(), metrics, admin_settings.token),
    );
    admin.add_tcp(&admin_settings.listen.to_string());
    admin.threads = Some(1);

    let mut background = background_service("health checks and reload", Background { snapshots });
    background.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(background);
    Ok(Built { server, access_log })
}

/// Runs health checks for the current pools and reloads the config on SIGHUP.
struct Background {
    snapshots: Arc<SnapshotHandle>,
}

#[async_trait]
impl BackgroundService for Background {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let snapshots = self.snapshots.clone();
        let checks = tokio::spawn(async move {
            run_health_checks(|| {
                // Piggybacks on the health-check tick: a reload's new verifier starts refreshing.
                let rt = snapshots.current();
                rt.auth.ensure_jwks_refresh();
                snapshots.pools()
            })
            .await
        });
        let invalidations = tokio::spawn(
            self.snapshots
                .services()
                .auth
                .clone()
                .follow_invalidations(),
        );
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
                    log::info!("SIGHUP received, reloading {}", self.snapshots.path().display());
                    // The result is logged and counted by reload() itself.
                    let _ = self.snapshots.reload();
                }
            }
        }
        checks.abort();
        invalidations.abort();
    }
}

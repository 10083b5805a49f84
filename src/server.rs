//! Assembles the Pingora server from a config file: proxy listeners, the admin service and the
//! background tasks (health checks, SIGHUP reload). `main` only parses the command line.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::auth::{AuthMetrics, AuthShared, CacheMetrics, DecisionCache};
use crate::config::{Issues, ServerConfig, TlsListenerConfig};
use crate::observe::{AccessLog, Metrics};
use crate::proxy::pool::run_health_checks;
use crate::proxy::reload::SnapshotHandle;
use crate::proxy::snapshot::{Services, SnapshotError};
use crate::proxy::Gateway;
use crate::ratelimit::{Limiter, RateMetrics};
use crate::setup::ProcessSettings;
use crate::store::Store;
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

/// `[server]`'s process-level part, compiled: what the listeners and the Pingora server are
/// built from. The rest of `[server]` is reloadable and compiled into the snapshot.
#[derive(Debug)]
pub(crate) struct ServerSettings {
    /// Plain HTTP listen addresses.
    listen: Vec<SocketAddr>,
    /// The HTTPS listener.
    tls: Option<TlsListener>,
    /// Proxy worker threads.
    threads: usize,
    /// One work-stealing runtime (true) or one runtime per thread.
    work_stealing: bool,
    /// Drain time on SIGTERM, in whole seconds (Pingora's unit), rounded up.
    grace_period_secs: u64,
}

/// `[server.tls]`, compiled.
#[derive(Debug)]
struct TlsListener {
    listen: SocketAddr,
    cert_file: String,
    key_file: String,
    h2: bool,
}

impl ServerSettings {
    /// Compiles the process-level part of `[server]`, pushing every problem into `issues`;
    /// `None` when there was one.
    pub(crate) fn compile(s: &ServerConfig, issues: &mut Issues) -> Option<ServerSettings> {
        let before = issues.len();
        if s.listen.is_empty() && s.tls.is_none() {
            issues.push(
                "server.listen",
                "no listener: give at least one address or [server.tls]",
            );
        }
        let mut listen = Vec::with_capacity(s.listen.len());
        let mut seen = HashSet::new();
        for (i, addr) in s.listen.iter().enumerate() {
            let path = format!("server.listen[{i}]");
            let Some(parsed) = issues.value(path.clone(), addr) else {
                continue;
            };
            // Compared as written, as Pingora is given them.
            if !seen.insert(addr.raw().trim().to_string()) {
                issues.push(path, format!("address {:?} is listed twice", addr.raw()));
            }
            listen.push(parsed);
        }
        let tls = s
            .tls
            .as_ref()
            .and_then(|tls| TlsListener::compile(tls, &seen, issues));
        if s.threads == 0 || s.threads > 1024 {
            issues.push("server.threads", "must be between 1 and 1024");
        }
        let grace_period = issues.value("server.grace_period", &s.grace_period);
        if issues.len() > before {
            return None;
        }
        Some(ServerSettings {
            listen,
            tls,
            threads: s.threads,
            work_stealing: s.work_stealing,
            grace_period_secs: grace_period?.0.as_secs_f64().ceil() as u64,
        })
    }
}

impl TlsListener {
    /// `plain` holds the plain listeners' addresses as written.
    fn compile(
        tls: &TlsListenerConfig,
        plain: &HashSet<String>,
        issues: &mut Issues,
    ) -> Option<TlsListener> {
        let listen = issues.value("server.tls.listen", &tls.listen);
        if listen.is_some() && plain.contains(tls.listen.raw().trim()) {
            issues.push("server.tls.listen", "already used by a plain HTTP listener");
        }
        for (field, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
            if !Path::new(file).is_file() {
                issues.push(
                    format!("server.tls.{field}"),
                    format!("no such file {file:?}"),
                );
            }
        }
        Some(TlsListener {
            listen: listen?,
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            h2: tls.h2,
        })
    }
}

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

    let gateway = Gateway::new(snapshots.clone(), metrics.clone(), access_log.clone());
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

/// Creates the process-wide services of compiled process settings: metrics, the store, the
/// auth cache and the limiter.
pub(crate) fn services(process: &ProcessSettings) -> Result<Services, StartError> {
    let metrics = Arc::new(Metrics::new());
    let store = Store::from_settings(process.store.as_ref(), metrics.registry())?;
    let c = &process.auth_cache;
    let cache = DecisionCache::new(
        c.capacity,
        c.ttl,
        c.negative_capacity,
        c.negative_ttl,
        CacheMetrics::new(metrics.registry()),
    );
    let limiter = Arc::new(Limiter::new(
        store.clone(),
        &process.limiter,
        RateMetrics::new(metrics.registry()),
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

/// Services for compiling a snapshot that will never serve (`check`, and gathering every
/// problem of a file that failed to load): an in-process store, a fresh registry, the model's
/// default cache sizes; nothing is connected or spawned.
pub(crate) fn offline_services() -> Services {
    let built = services(&ProcessSettings::offline());
    // Only the store's setup can fail, and the in-process store has none.
    built.unwrap_or_else(|e| unreachable!("in-process services: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(toml: &str) -> (Option<ServerSettings>, Vec<String>) {
        let s: ServerConfig = toml::from_str(toml).expect("test [server] parses");
        let mut issues = Issues::default();
        let settings = ServerSettings::compile(&s, &mut issues);
        let found = issues.into_vec().iter().map(|i| i.to_string()).collect();
        (settings, found)
    }

    #[test]
    fn defaults_compile_to_the_model_defaults() {
        let (settings, found) = compile("");
        assert_eq!(found, Vec::<String>::new());
        let settings = settings.expect("compiles");
        assert_eq!(settings.listen, ["127.0.0.1:8080".parse().expect("addr")]);
        assert_eq!((settings.threads, settings.grace_period_secs), (1, 5));
    }

    #[test]
    fn listeners_are_checked_against_each_other() {
        let (settings, found) = compile(
            "listen = [\"127.0.0.1:8080\", \" 127.0.0.1:8080\"]\nthreads = 0\n\
             [tls]\nlisten = \"127.0.0.1:8080\"\ncert_file = \"/nonexistent/c\"\nkey_file = \"/nonexistent/k\"\n",
        );
        assert!(settings.is_none());
        assert_eq!(
            found,
            [
                "server.listen[1]: address \" 127.0.0.1:8080\" is listed twice",
                "server.tls.listen: already used by a plain HTTP listener",
                "server.tls.cert_file: no such file \"/nonexistent/c\"",
                "server.tls.key_file: no such file \"/nonexistent/k\"",
                "server.threads: must be between 1 and 1024",
            ]
        );
    }
}

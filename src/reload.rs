//! The handle that holds the current [`Snapshot`] and replaces it on reload.
//!
//! A reload reads the file, compiles a whole new snapshot (reusing unchanged pools and JWKS
//! clients), installs the config-declared API keys, and only then swaps; on any error the
//! running snapshot stays.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::observe::Metrics;
use crate::proxy::pool::Pool;
use crate::proxy::snapshot::{install_static_keys, Live, Services, Snapshot, SnapshotError};

/// The current snapshot plus what is needed to replace it.
pub(crate) struct SnapshotHandle {
    live: Arc<Live>,
    path: PathBuf,
    metrics: Arc<Metrics>,
    /// Serializes reloads so two at once cannot interleave.
    reload_lock: std::sync::Mutex<()>,
}

/// The outcome of a successful reload.
#[derive(Debug)]
pub(crate) struct Reloaded {
    /// One-line summary of the new config.
    pub(crate) summary: String,
    /// Changed settings that only take effect after a restart.
    pub(crate) needs_restart: Vec<&'static str>,
}

impl SnapshotHandle {
    /// Compiles the first snapshot from `config`, loaded from `path` (which reloads re-read).
    pub(crate) fn new(
        path: &Path,
        config: Config,
        services: Services,
    ) -> Result<SnapshotHandle, SnapshotError> {
        let snapshot = Snapshot::compile(config, None, &services).map_err(|e| e.in_file(path))?;
        install_static_keys(&snapshot, None, &services.auth)?;
        Ok(SnapshotHandle {
            metrics: services.metrics.clone(),
            live: Arc::new(Live::new(snapshot, services)),
            path: path.to_path_buf(),
            reload_lock: std::sync::Mutex::new(()),
        })
    }

    /// The snapshot in force now.
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        self.live.current()
    }

    /// What the proxy reads per request: the snapshot in force and the services.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// The config file this handle reloads from.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The process-wide services.
    pub(crate) fn services(&self) -> &Services {
        self.live.services()
    }

    /// Re-reads the file and swaps in the new snapshot; on any error the old one stays.
    pub(crate) fn reload(&self) -> Result<Reloaded, SnapshotError> {
        let _serial = self
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let result = self.try_reload();
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics.reloads.with_label_values(&[label]).inc();
        match &result {
            Ok(r) => log::info!(
                "config reloaded from {}: {}{}",
                self.path.display(),
                r.summary,
                if r.needs_restart.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; changes to {} take effect after a restart",
                        r.needs_restart.join(", ")
                    )
                }
            ),
            Err(e) => log::error!("config reload failed, keeping the running config: {e}"),
        }
        result
    }

    fn try_reload(&self) -> Result<Reloaded, SnapshotError> {
        let mut config = crate::setup::load(&self.path)?.config;
        let old = self.live.current();
        let needs_restart = restart_only_changes(&old.config, &config);
        keep_restart_only(&old.config, &mut config);
        let snapshot = Snapshot::compile(config, Some(&old), self.live.services())
            .map_err(|e| e.in_file(&self.path))?;
        install_static_keys(&snapshot, Some(&old), &self.live.services().auth)?;
        if snapshot.config.auth != old.config.auth {
            // Keys may hash differently now; nothing cached under the old settings holds.
            self.live.services().auth.clear_decisions();
        }
        let summary = snapshot.summary();
        self.live.replace(snapshot);
        Ok(Reloaded {
            summary,
            needs_restart,
        })
    }

    /// Every pool of the current snapshot (for health checks and metrics).
    pub(crate) fn pools(&self) -> Vec<Arc<Pool>> {
        self.live.current().pools.values().cloned().collect()
    }

    /// Sets the peer-health gauge from the current pools; called before metrics are rendered.
    pub(crate) fn export_peer_health(&self) {
        self.metrics.peer_healthy.reset();
        for pool in self.pools() {
            for (addr, healthy) in pool.peer_health() {
                self.metrics
                    .peer_healthy
                    .with_label_values(&[&pool.name, &addr.to_string()])
                    .set(i64::from(healthy));
            }
        }
    }
}

/// Carries the settings a reload cannot apply over from the running config, so the snapshot
/// describes what is really in force and a later reload reports them again.
fn keep_restart_only(old: &Config, new: &mut Config) {
    new.server.listen = old.server.listen.clone();
    new.server.tls = old.server.tls.clone();
    new.server.threads = old.server.threads;
    new.server.work_stealing = old.server.work_stealing;
    new.server.grace_period = old.server.grace_period.clone();
    new.admin = old.admin.clone();
    new.log.access_log = old.log.access_log.clone();
    new.store = old.store.clone();
    new.auth.cache = old.auth.cache.clone();
    new.rate_limit.breaker_failures = old.rate_limit.breaker_failures;
    new.rate_limit.breaker_open_for = old.rate_limit.breaker_open_for.clone();
    new.rate_limit.local_max_counters = old.rate_limit.local_max_counters;
}

/// Settings that a running process cannot change; a reload that changes them says so.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let listen = |c: &Config| {
        c.server
            .listen
            .iter()
            .map(|l| l.ok().copied())
            .collect::<Vec<Option<SocketAddr>>>()
    };
    if listen(old) != listen(new) {
        out.push("server.listen");
    }
    if old.server.tls != new.server.tls {
        out.push("server.tls");
    }
    if old.server.threads != new.server.threads {
        out.push("server.threads");
    }
    if old.server.work_stealing != new.server.work_stealing {
        out.push("server.work_stealing");
    }
    if old.server.grace_period != new.server.grace_period {
        out.push("server.grace_period");
    }
    if old.admin != new.admin {
        out.push("admin");
    }
    if old.log.access_log != new.log.access_log {
        out.push("log.access_log");
    }
    if old.store != new.store {
        out.push("store");
    }
    if old.auth.cache != new.auth.cache {
        out.push("auth.cache");
    }
    if old.rate_limit.breaker_failures != new.rate_limit.breaker_failures
        || old.rate_limit.breaker_open_for != new.rate_limit.breaker_open_for
    {
        out.push("rate_limit.breaker_*");
    }
    if old.rate_limit.local_max_counters != new.rate_limit.local_max_counters {
        out.push("rate_limit.local_max_counters");
    }
    out
}

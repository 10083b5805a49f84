//! The Redis store: one multiplexed, auto-reconnecting connection shared by every request
//! (no pool, no connection per request), a subscriber for invalidations, and a health probe.
//!
//! The shared connection's background tasks run on a small runtime of the store's own, so the
//! store works the same from Pingora's per-service runtimes, the admin service and the CLI.
//!
//! Proxy threads (marked by `mark_proxy_thread`) each get a multiplexed connection of their
//! own, driven by their own runtime: a request's store call then never hops to another thread
//! and back (two wakeups and two context switches per call, a quarter of the CPU of a
//! rate-limited request when measured), while calls from one thread still share one pipeline.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, IntoConnectionInfo};
use tokio::sync::{broadcast, oneshot};

use super::{Invalidation, StoreError, StoreMetrics, StoreSetupError};
use crate::config::StoreConfig;

const SET_ADD: &str = include_str!("scripts/set_add.lua");

thread_local! {
    /// Whether this thread runs the proxy (a runtime that lives as long as the thread).
    static PROXY_THREAD: Cell<bool> = const { Cell::new(false) };
    /// This thread's own connections, one per store (by `RedisStore::id`).
    static THREAD_CONNS: RefCell<Vec<(u64, ConnectionManager)>> = const { RefCell::new(Vec::new()) };
}

/// Marks the calling thread as a proxy worker, whose tokio runtime lives as long as the thread,
/// so store calls made from it may use a connection driven by that runtime.
pub fn mark_proxy_thread() {
    PROXY_THREAD.with(|p| p.set(true));
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

/// A store on Redis.
pub struct RedisStore {
    id: u64,
    prefix: String,
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    /// The shared connection, for threads that are not proxy workers (admin, CLI, probes).
    conn: ConnectionManager,
    op_timeout: Duration,
    channel: String,
    healthy: Arc<AtomicBool>,
    invalidations: broadcast::Sender<Invalidation>,
    set_add_script: redis::Script,
    /// Dropping this ends the store's runtime thread.
    _stop: oneshot::Sender<()>,
    pub(super) metrics: StoreMetrics,
}

impl RedisStore {
    /// Sets up the connection (lazily: a Redis that is down at start does not stop the gateway).
    pub(super) fn connect(
        config: &StoreConfig,
        password: Option<String>,
        metrics: StoreMetrics,
    ) -> Result<RedisStore, StoreSetupError> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| StoreSetupError::Config(format!("url: {e}")))?;
        if info.redis_settings().password().is_some() {
            return Err(StoreSetupError::Config(
                "url must not contain a password; use password_env or password_file".into(),
            ));
        }
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(pw) = &password {
            settings = settings.set_password(pw);
        }
        let info = info.set_redis_settings(settings);
        let client =
            redis::Client::open(info).map_err(|e| StoreSetupError::Config(e.to_string()))?;
        let op_timeout = config
            .operation_timeout
            .ok()
            .map_or(Duration::from_millis(20), |d| d.0);
        let connect_timeout = config
            .connect_timeout
            .ok()
            .map_or(Duration::from_secs(1), |d| d.0);

        let (handle, stop) = spawn_runtime()?;
        let _enter = handle.enter();
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(op_timeout.max(Duration::from_millis(1))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone())
            .map_err(|e| StoreSetupError::Config(e.to_string()))?;

        let (invalidations, _) = broadcast::channel(4096);
        let channel = format!("{}invalidations", config.prefix);
        let healthy = Arc::new(AtomicBool::new(false));
        handle.spawn(probe_health(
            conn.clone(),
            healthy.clone(),
            op_timeout.max(Duration::from_millis(250)),
        ));
        handle.spawn(forward_invalidations(
            client.clone(),
            channel.clone(),
            invalidations.clone(),
            connect_timeout,
        ));
        Ok(RedisStore {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            prefix: config.prefix.clone(),
            client,
            manager_config,
            conn,
            op_timeout,
            channel,
            healthy,
            invalidations,
            set_add_script: redis::Script::new(SET_ADD),
            _stop: stop,
            metrics,
        })
    }

    /// Waits up to `deadline` for Redis to answer PING (connecting first if needed).
    pub(super) async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn();
        match tokio::time::timeout(
            deadline,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        {
            Err(_) => Err(StoreError::Timeout),
            Ok(r) => r.map(|_| ()).map_err(map_error),
        }
    }

    /// The connection for a call from this thread: the thread's own on a proxy worker (created
    /// on first use, connecting lazily), the shared one elsewhere.
    fn conn(&self) -> ConnectionManager {
        if !PROXY_THREAD.with(Cell::get) {
            return self.conn.clone();
        }
        THREAD_CONNS.with(|conns| {
            let mut conns = conns.borrow_mut();
            if let Some((_, c)) = conns.iter().find(|(id, _)| *id == self.id) {
                return c.clone();
            }
            match ConnectionManager::new_lazy_with_config(
                self.client.clone(),
                self.manager_config.clone(),
            ) {
                Ok(c) => {
                    conns.push((self.id, c.clone()));
                    c
                }
                Err(e) => {
                    log::warn!("store: no per-thread connection, using the shared one: {e}");
                    self.conn.clone()
                }
            }
        })
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn();
        match tokio::time::timeout(self.op_timeout, cmd.query_async(&mut conn)).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(result) => result.map_err(map_error),
        }
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.query(redis::cmd("EXISTS").arg(key)).await
    }

    pub(super) async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.query(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms(ttl)),
        )
        .await
    }

    pub(super) async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let n: i64 = self.query(redis::cmd("DEL").arg(key)).await?;
        Ok(n > 0)
    }

    pub(super) async fn set_add(
        &self,
        key: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut call = self.set_add_script.key(key);
        call.arg(member).arg(ttl_ms(ttl));
        match tokio::time::timeout(self.op_timeout, call.invoke_async::<i64>(&mut conn)).await {
            Err(_) => Err(StoreError::Timeout),
            Ok(r) => r.map(|_| ()).map_err(map_error),
        }
    }

    pub(super) async fn eval_ints(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.conn();
        let mut call = script.prepare_invoke();
        for k in keys {
            call.key(k);
        }
        for a in args {
            call.arg(a);
        }
        match tokio::time::timeout(self.op_timeout, call.invoke_async::<Vec<i64>>(&mut conn)).await
        {
            Err(_) => Err(StoreError::Timeout),
            Ok(r) => r.map_err(map_error),
        }
    }

    pub(super) async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        let _: i64 = self.query(redis::cmd("SREM").arg(key).arg(member)).await?;
        Ok(())
    }

    pub(super) async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.query(redis::cmd("SMEMBERS").arg(key)).await
    }

    pub(super) async fn publish(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(redis::cmd("PUBLISH").arg(&self.channel).arg(key))
            .await?;
        Ok(())
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.invalidations.subscribe()
    }
}

/// A TTL in milliseconds, at least 1 (Redis rejects 0).
fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

fn map_error(e: redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(e.category().to_string())
    } else {
        StoreError::Protocol(e.category().to_string())
    }
}

/// Starts the store's runtime on its own thread; it runs until the returned sender drops.
fn spawn_runtime() -> Result<(tokio::runtime::Handle, oneshot::Sender<()>), StoreSetupError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("store")
        .enable_all()
        .build()
        .map_err(|e| StoreSetupError::Config(format!("cannot start the store runtime: {e}")))?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("store-runtime".into())
        .spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
            runtime.shutdown_background();
        })
        .map_err(|e| StoreSetupError::Config(format!("cannot start the store thread: {e}")))?;
    Ok((handle, stop))
}

/// Pings Redis every second and records whether it answered in time.
async fn probe_health(conn: ConnectionManager, healthy: Arc<AtomicBool>, deadline: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut c = conn.clone();
        let ok = matches!(
            tokio::time::timeout(deadline, redis::cmd("PING").query_async::<String>(&mut c)).await,
            Ok(Ok(_))
        );
        if ok != healthy.swap(ok, Ordering::Relaxed) {
            if ok {
                log::info!("store: redis is reachable");
            } else {
                log::warn!("store: redis is not answering");
            }
        }
    }
}

/// Subscribes to the invalidation channel and forwards messages. Each (re)subscription sends
/// `Reset`, because messages published while unsubscribed were lost. Nothing is reset when the
/// subscription drops: while Redis is down, what nodes cached locally is all they can use.
async fn forward_invalidations(
    client: redis::Client,
    channel: String,
    tx: broadcast::Sender<Invalidation>,
    connect_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Ok(Ok(mut pubsub)) =
            tokio::time::timeout(connect_timeout, client.get_async_pubsub()).await
        {
            if pubsub.subscribe(&channel).await.is_ok() {
                backoff = Duration::from_millis(100);
                let _ = tx.send(Invalidation::Reset);
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(payload) = msg.get_payload::<String>() {
                        let _ = tx.send(Invalidation::parse(&payload));
                    }
                }
                log::warn!("store: invalidation subscription lost, resubscribing");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

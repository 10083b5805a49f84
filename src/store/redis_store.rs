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

use super::backend::{Backend, Invalidations, KeyValue, LimitDecisions, Revocations, Sets};
use super::limits::script::{parse_reply, LimitScript};
use super::limits::{Decision, RuleCheck};
use super::settings::{StoreSettings, StoreTls};
use super::{EntryRevocation, Invalidation, StoreError, StoreSetupError};

const SET_ADD: &str = include_str!("scripts/set_add.lua");
const REVOKE_ENTRY: &str = include_str!("scripts/revoke_entry.lua");
const REVOKE_MARKER: &str = include_str!("scripts/revoke_marker.lua");

/// How often the invalidation subscriber PINGs its connection. A subscriber only reads, so
/// without a probe a connection that died silently (a NAT or load-balancer entry dropped, a
/// peer gone without a reset) would look like a quiet channel for ever, and every
/// revocation published meanwhile would be missed.
const SUBSCRIBER_PING_EVERY: Duration = Duration::from_secs(1);

/// How long the subscriber waits for the answer to its PING (in RESP2 a subscribed connection
/// answers with a `pong` message). Redis answers in microseconds; the margin is for a loaded
/// host, where a false alarm costs only a resubscription and one clearing of the local tier.
/// A dead subscription is thus noticed within `SUBSCRIBER_PING_EVERY + SUBSCRIBER_PING_DEADLINE`.
const SUBSCRIBER_PING_DEADLINE: Duration = Duration::from_secs(2);

/// TCP keepalive on every store connection: the kernel probes an idle connection after this
/// long, so a dead peer is found even by a connection nothing is sent on.
const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between keepalive probes, and how many may go unanswered before the kernel gives up.
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const TCP_KEEPALIVE_RETRIES: u32 = 3;

thread_local! {
    /// Whether this thread runs the proxy (a runtime that lives as long as the thread).
    static PROXY_THREAD: Cell<bool> = const { Cell::new(false) };
    /// This thread's own connections, one per store.
    static THREAD_CONNS: RefCell<Vec<ThreadConn>> = const { RefCell::new(Vec::new()) };
}

/// A proxy thread's own connection. It is used while it is `ready`: once it has answered a
/// PING, until a call on it times out or finds it broken. Meanwhile the thread's calls go over
/// the shared connection, so no request pays a connect (or TLS handshake) inside its operation
/// deadline, and a connection that went bad silently (an expired NAT entry) is not used.
/// `keep_thread_conn` pings it every `THREAD_CONN_PING_EVERY`, which also keeps it from
/// idling out, and sets `ready` from the answer.
struct ThreadConn {
    store: u64,
    conn: ConnectionManager,
    ready: Arc<AtomicBool>,
}

/// Marks the calling thread as a proxy worker, whose tokio runtime lives as long as the thread,
/// so store calls made from it may use a connection driven by that runtime.
pub fn mark_proxy_thread() {
    PROXY_THREAD.with(|p| p.set(true));
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

/// How often a proxy thread's own connection is pinged while it answers (once a second while
/// it does not).
const THREAD_CONN_PING_EVERY: Duration = Duration::from_secs(10);

/// The connection one call uses; `thread_ready` is set when it is a proxy thread's own.
struct CallConn {
    manager: ConnectionManager,
    thread_ready: Option<Arc<AtomicBool>>,
}

impl CallConn {
    /// The store's view of a call's outcome. A timeout or a broken connection on a thread's
    /// own connection sends the thread back to the shared one until its keeper sees it answer.
    fn settle<T>(
        &self,
        outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        let result = match outcome {
            Err(_) => Err(StoreError::Timeout),
            Ok(r) => r.map_err(map_error),
        };
        if let (Err(StoreError::Timeout | StoreError::Unavailable(_)), Some(ready)) =
            (&result, &self.thread_ready)
        {
            ready.store(false, Ordering::Relaxed);
        }
        result
    }
}

/// A store on Redis.
pub(crate) struct RedisStore {
    id: u64,
    prefix: String,
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    /// The shared connection, for threads that are not proxy workers (admin, CLI, probes).
    conn: ConnectionManager,
    op_timeout: Duration,
    connect_timeout: Duration,
    channel: String,
    healthy: Arc<AtomicBool>,
    invalidations: broadcast::Sender<Invalidation>,
    set_add_script: redis::Script,
    /// Deletes an API key's records and publishes their invalidation in one call.
    revoke_entry_script: redis::Script,
    /// Writes a token revocation and publishes it in one call.
    revoke_marker_script: redis::Script,
    /// Decides a request's rate-limit rules in one call.
    limit_script: LimitScript,
    /// Dropping this ends the store's runtime thread.
    _stop: oneshot::Sender<()>,
    /// Proxy threads' connection keepers stop once this is gone.
    alive: Arc<()>,
}

impl RedisStore {
    /// Sets up the connection (lazily: a Redis that is down at start does not stop the gateway).
    pub(super) fn connect(config: &StoreSettings) -> Result<RedisStore, StoreSetupError> {
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
        if let Some(pw) = &config.password {
            settings = settings.set_password(pw);
        }
        let info = with_keepalive(info.set_redis_settings(settings));
        let client = build_client(info, config.tls.as_ref())?;
        let op_timeout = config.operation_timeout;
        let connect_timeout = config.connect_timeout;

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
            connect_timeout,
            channel,
            healthy,
            invalidations,
            set_add_script: redis::Script::new(SET_ADD),
            revoke_entry_script: redis::Script::new(REVOKE_ENTRY),
            revoke_marker_script: redis::Script::new(REVOKE_MARKER),
            limit_script: LimitScript::new(),
            _stop: stop,
            alive: Arc::new(()),
        })
    }

    /// The connection for a call from this thread: the thread's own on a proxy worker (created
    /// on first use, connecting lazily), the shared one elsewhere.
    fn conn(&self) -> CallConn {
        let shared = || CallConn {
            manager: self.conn.clone(),
            thread_ready: None,
        };
        if !PROXY_THREAD.with(Cell::get) {
            return shared();
        }
        THREAD_CONNS.with(|conns| {
            let mut conns = conns.borrow_mut();
            if let Some(t) = conns.iter().find(|t| t.store == self.id) {
                if t.ready.load(Ordering::Relaxed) {
                    return CallConn {
                        manager: t.conn.clone(),
                        thread_ready: Some(t.ready.clone()),
                    };
                }
                return shared();
            }
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return shared();
            };
            match ConnectionManager::new_lazy_with_config(
                self.client.clone(),
                self.manager_config.clone(),
            ) {
                Ok(conn) => {
                    let ready = Arc::new(AtomicBool::new(false));
                    runtime.spawn(keep_thread_conn(
                        conn.clone(),
                        ready.clone(),
                        self.connect_timeout,
                        Arc::downgrade(&self.alive),
                    ));
                    conns.push(ThreadConn {
                        store: self.id,
                        conn,
                        ready,
                    });
                }
                Err(e) => {
                    log::warn!("store: no per-thread connection, using the shared one: {e}");
                }
            }
            shared()
        })
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let outcome =
            tokio::time::timeout(self.op_timeout, cmd.query_async(&mut conn.manager)).await;
        conn.settle(outcome)
    }

    /// Runs a script call within the operation deadline.
    async fn invoke<T: FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn();
        let outcome =
            tokio::time::timeout(self.op_timeout, call.invoke_async(&mut conn.manager)).await;
        conn.settle(outcome)
    }
}

// === impl KeyValue ===

impl KeyValue for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.query(redis::cmd("EXISTS").arg(key)).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        self.query(
            redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms(ttl)),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let n: i64 = self.query(redis::cmd("DEL").arg(key)).await?;
        Ok(n > 0)
    }
}

// === impl Sets ===

impl Sets for RedisStore {
    async fn set_add(&self, key: &str, member: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut call = self.set_add_script.key(key);
        call.arg(member).arg(ttl_ms(ttl));
        self.invoke::<i64>(&call).await.map(|_| ())
    }

    async fn set_remove(&self, key: &str, member: &str) -> Result<(), StoreError> {
        let _: i64 = self.query(redis::cmd("SREM").arg(key).arg(member)).await?;
        Ok(())
    }

    async fn set_members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        self.query(redis::cmd("SMEMBERS").arg(key)).await
    }
}

// === impl Invalidations ===

impl Invalidations for RedisStore {
    async fn publish(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .query(redis::cmd("PUBLISH").arg(&self.channel).arg(key))
            .await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.invalidations.subscribe()
    }
}

// === impl Revocations ===

impl Revocations for RedisStore {
    async fn revoke_entry(&self, r: &EntryRevocation<'_>) -> Result<bool, StoreError> {
        let mut call = self.revoke_entry_script.key(r.pointer);
        call.key(r.entry);
        let member = match r.index {
            Some((set, member)) => {
                call.key(set);
                member
            }
            None => "",
        };
        call.arg(r.pointer_value)
            .arg(member)
            .arg(&self.channel)
            .arg(r.invalidation);
        self.invoke::<i64>(&call).await.map(|revoked| revoked == 1)
    }

    async fn mark_revoked(
        &self,
        marker: &str,
        ttl: Duration,
        invalidation: &str,
    ) -> Result<(), StoreError> {
        let mut call = self.revoke_marker_script.key(marker);
        call.arg(ttl_ms(ttl)).arg(&self.channel).arg(invalidation);
        self.invoke::<i64>(&call).await.map(|_| ())
    }
}

// === impl LimitDecisions ===

impl LimitDecisions for RedisStore {
    /// One `limit.lua` call, on Redis' clock. A reply that is not a decision for these checks
    /// is a `Protocol` error, never a guess.
    async fn decide(&self, checks: &[RuleCheck]) -> Result<Decision, StoreError> {
        let call = self.limit_script.invocation(checks);
        let reply: Vec<i64> = self.invoke(&call).await?;
        parse_reply(&reply, checks.len()).map_err(StoreError::Protocol)
    }
}

// === impl Backend ===

impl Backend for RedisStore {
    const KIND: &'static str = "redis";

    fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Waits up to `deadline` for Redis to answer PING (connecting first if needed).
    async fn ping(&self, deadline: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let cmd = redis::cmd("PING");
        let outcome =
            tokio::time::timeout(deadline, cmd.query_async::<String>(&mut conn.manager)).await;
        conn.settle(outcome).map(|_| ())
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// The Redis client for `[store]`: plain, or TLS with the configured CA and client certificate
/// (their files read and checked by `StoreSettings::compile`).
fn build_client(
    info: redis::ConnectionInfo,
    tls: Option<&StoreTls>,
) -> Result<redis::Client, StoreSetupError> {
    // One client for everything: the shared connection, the per-thread ones and the
    // invalidation subscriber are all made from clones of it, so all of them use these
    // TLS settings.
    let Some(tls) = tls else {
        return redis::Client::open(info).map_err(|e| StoreSetupError::Config(e.to_string()));
    };
    let root_cert = tls.root_cert.clone();
    let client_tls = tls
        .client
        .as_ref()
        .map(|(client_cert, client_key)| redis::ClientTlsConfig {
            client_cert: client_cert.clone(),
            client_key: client_key.clone(),
        });
    // Built part by part first, so that an unusable file is reported by its field.
    if let Some(ca) = &root_cert {
        let only_ca = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        };
        redis::Client::build_with_tls(info.clone(), only_ca)
            .map_err(|e| StoreSetupError::Config(format!("tls_ca_file: {e}")))?;
    }
    let certificates = redis::TlsCertificates {
        client_tls,
        root_cert,
    };
    redis::Client::build_with_tls(info, certificates)
        .map_err(|e| StoreSetupError::Config(format!("tls_cert_file / tls_key_file: {e}")))
}

/// `info` with TCP keepalive (and, on Linux, a user timeout) on its sockets, so that the kernel
/// closes a connection whose peer vanished without a reset instead of leaving it open for
/// the default two hours; the pub/sub PING catches the same sooner on the subscriber.
fn with_keepalive(info: redis::ConnectionInfo) -> redis::ConnectionInfo {
    let keepalive = redis::io::tcp::socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_IDLE)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    let settings = info.tcp_settings().clone().set_keepalive(keepalive);
    // Data sent but not acknowledged for this long also means the peer is gone.
    #[cfg(target_os = "linux")]
    let settings = settings
        .set_user_timeout(TCP_KEEPALIVE_IDLE + TCP_KEEPALIVE_INTERVAL * TCP_KEEPALIVE_RETRIES);
    info.set_tcp_settings(settings)
}

/// A TTL in milliseconds, at least 1 (Redis rejects 0) and at most 100 years: a larger one
/// would wrap in `as u64` or overflow Redis' `now + ttl` (an "invalid expire time" error).
fn ttl_ms(ttl: Duration) -> u64 {
    const MAX_TTL_MS: u64 = 100 * 365 * 86_400_000;
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
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
/// Keeps a proxy thread's own connection: pings it (connecting first when needed) and sets
/// `ready` from the answer, every `THREAD_CONN_PING_EVERY` while it answers and every second
/// while it does not; ends when the store is dropped.
async fn keep_thread_conn(
    conn: ConnectionManager,
    ready: Arc<AtomicBool>,
    connect_timeout: Duration,
    store_alive: std::sync::Weak<()>,
) {
    while store_alive.upgrade().is_some() {
        let mut c = conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut c);
        let ok = matches!(tokio::time::timeout(connect_timeout, ping).await, Ok(Ok(_)));
        ready.store(ok, Ordering::Relaxed);
        let pause = if ok {
            THREAD_CONN_PING_EVERY
        } else {
            Duration::from_secs(1)
        };
        tokio::time::sleep(pause).await;
    }
}

async fn probe_health(conn: ConnectionManager, healthy: Arc<AtomicBool>, deadline: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        tick.tick().await;
        let mut c = conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut c);
        let failure = match tokio::time::timeout(deadline, ping).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {deadline:?}")),
        };
        let ok = failure.is_none();
        let was_ok = healthy.swap(ok, Ordering::Relaxed);
        // Say why on the first failure and on every change, not once a second.
        match failure {
            Some(why) if was_ok || first => log::warn!("store: redis is not answering: {why}"),
            None if !was_ok => log::info!("store: redis is reachable"),
            _ => {}
        }
        first = false;
    }
}

/// Subscribes to the invalidation channel and forwards messages. Each (re)subscription sends
/// `Reset`, because messages published while unsubscribed were lost. Nothing is reset when the
/// subscription drops: while Redis is down, what nodes cached locally is all they can use.
/// A subscription that stops answering its PING is treated as lost (see
/// `SUBSCRIBER_PING_EVERY`).
async fn forward_invalidations(
    client: redis::Client,
    channel: String,
    tx: broadcast::Sender<Invalidation>,
    connect_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some(pubsub) = subscribe(&client, &channel, connect_timeout).await {
            backoff = Duration::from_millis(100);
            let _ = tx.send(Invalidation::Reset);
            let why = follow_subscription(pubsub, &tx).await;
            log::warn!("store: invalidation subscription {why}, resubscribing");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A new pub/sub connection subscribed to `channel`, or `None` when that did not succeed
/// within `deadline` (each step: connecting, subscribing).
async fn subscribe(
    client: &redis::Client,
    channel: &str,
    deadline: Duration,
) -> Option<redis::aio::PubSub> {
    let mut pubsub = match tokio::time::timeout(deadline, client.get_async_pubsub()).await {
        Ok(Ok(p)) => p,
        _ => return None,
    };
    match tokio::time::timeout(deadline, pubsub.subscribe(channel)).await {
        Ok(Ok(())) => Some(pubsub),
        _ => None,
    }
}

/// Forwards the messages of a subscription, PINGing it every `SUBSCRIBER_PING_EVERY`, until it
/// closes or a PING goes unanswered for `SUBSCRIBER_PING_DEADLINE`; says which.
async fn follow_subscription(
    pubsub: redis::aio::PubSub,
    tx: &broadcast::Sender<Invalidation>,
) -> &'static str {
    let (mut sink, mut messages) = pubsub.split();
    let mut tick = tokio::time::interval(SUBSCRIBER_PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            msg = messages.next() => match msg {
                Some(msg) => {
                    if let Ok(payload) = msg.get_payload::<String>() {
                        let _ = tx.send(Invalidation::parse(&payload));
                    }
                }
                None => return "lost",
            },
            _ = tick.tick() => {
                // The answer comes in order after any message already sent, so a message is
                // never lost to the PING; the stream keeps being read by the next turn.
                let ping = sink.ping::<redis::Value>();
                match tokio::time::timeout(SUBSCRIBER_PING_DEADLINE, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return "lost",
                    Err(_) => return "silent past its PING deadline",
                }
            }
        }
    }
}

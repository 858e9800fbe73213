//! Fleet coordination over Redis (the `redis` crate, `redis://` or `rediss://` with rustls):
//! the core's [`CoordinationStore`] port, a leader lease for the reconciler, and wake-ups
//! for idle workers ([`WakeSignal`]).
//!
//! - Keys live under `flowcraft:` (a key given without the prefix gets it).
//! - Atomic where it matters, one round trip each: `set_add` is `SADD` + `PEXPIRE` + `SCARD`
//!   in one Lua script, counters are `INCRBY` + `PEXPIRE` in one script, the lease is
//!   `SET NX PX` with a compare-and-renew and a compare-and-delete script.
//! - Wake-ups are a short list per queue (`flowcraft:wake:<queue>`): a send pushes a token
//!   (the list is capped and expires); each process that waits on the queue runs one
//!   listener blocking on `BLPOP` on its own connection, which passes tokens on to its idle
//!   worker. Each token wakes ONE process, so a send does not make every idle worker of the
//!   fleet poll the queue.
//! - Correctness never depends on Redis. When Redis is unreachable every operation fails
//!   fast with [`Error::Transport`] or [`Error::Timeout`] (bounded by a timeout, never a
//!   hang; at most one real attempt per second while it is down), callers carry on without
//!   coordination (workers keep polling), and the outage is logged once, as is the recovery.

use crate::Error;
use crate::ErrorInfo;
use crate::adapter::queue_adapter::WakeSignal;
use crate::distributed::memory::MemoryCoordinationStore;
use crate::distributed::ports::CoordinationStore;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The prefix of every key this store touches.
pub const KEY_PREFIX: &str = "flowcraft:";

/// The longest one operation may take (connect + answer) before it fails with a timeout.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// While Redis is down, operations fail at once for this long after a failed attempt.
const RETRY_AFTER_OUTAGE: Duration = Duration::from_secs(1);
/// Wake-up tokens kept per queue (more sends while nobody waits add nothing).
const WAKE_TOKENS: i64 = 4;
/// Wake-up tokens expire after this long (a token nobody took is stale).
const WAKE_TTL: Duration = Duration::from_secs(30);
/// How long one `BLPOP` of the wake-up listener blocks (it then checks that the store is
/// still in use and blocks again).
const LISTEN_SECS: u64 = 5;

const INCR_SCRIPT: &str = r"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v";
const SET_ADD_SCRIPT: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SCARD', KEYS[1])";
const LEASE_ACQUIRE_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1";
const LEASE_RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";
const LEASE_RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";
const WAKE_PUSH_SCRIPT: &str = r"
redis.call('LPUSH', KEYS[1], '1')
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1";

/// Whether Redis answers, so that an outage and the recovery are logged once each, and
/// attempts while it is down are spaced out.
#[derive(Debug, Default)]
struct Health {
    down: AtomicBool,
    last_failure: Mutex<Option<Instant>>,
}

impl Health {
    /// An error to return at once, without trying, right after a failed attempt.
    fn fail_fast(&self) -> Option<Error> {
        if !self.down.load(Ordering::Relaxed) {
            return None;
        }
        let last = *self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        last.filter(|t| t.elapsed() < RETRY_AFTER_OUTAGE).map(|_| {
            Error::Transport(Box::new(ErrorInfo::new(
                "Redis is unreachable; carrying on without coordination until it answers again",
            )))
        })
    }

    fn succeeded(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis answers again; coordination and wake-ups resumed");
        }
    }

    fn failed(&self, error: &Error) {
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %error,
                "Redis is unreachable; workers keep polling the queue without wake-ups and \
                 the reconciler runs without its lease until it is back");
        }
    }
}

/// The Redis coordination store (see the module documentation). Cheap to share behind an
/// `Arc`; `Debug` never shows the URL (it may hold a password).
pub struct RedisCoordinationStore {
    client: Client,
    conn: ConnectionManager,
    /// Per queue: the local signal that this process's wake-up listener fires.
    listeners: Mutex<HashMap<String, Arc<Notify>>>,
    health: Arc<Health>,
    incr: Script,
    set_add: Script,
    lease_acquire: Script,
    lease_renew: Script,
    lease_release: Script,
    wake_push: Script,
}

impl fmt::Debug for RedisCoordinationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCoordinationStore")
            .field("down", &self.health.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisCoordinationStore {
    /// A store for the Redis at `url` (`redis://[:password@]host[:port][/db]`, or `rediss://`
    /// for TLS). Only a malformed URL is an error: when Redis does not answer yet, the store
    /// is returned anyway (the outage is logged) and connects once Redis is up.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let client = Client::open(url).map_err(|_| {
            Error::invalid_input(
                "the Redis URL is not valid; expected redis://[:password@]host[:port][/db] or \
                 rediss://... for TLS (the value is not shown: it may contain a password)",
            )
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| redis_error(&e, "connect to Redis"))?;
        let store = RedisCoordinationStore {
            client,
            conn,
            listeners: Mutex::new(HashMap::new()),
            health: Arc::new(Health::default()),
            incr: Script::new(INCR_SCRIPT),
            set_add: Script::new(SET_ADD_SCRIPT),
            lease_acquire: Script::new(LEASE_ACQUIRE_SCRIPT),
            lease_renew: Script::new(LEASE_RENEW_SCRIPT),
            lease_release: Script::new(LEASE_RELEASE_SCRIPT),
            wake_push: Script::new(WAKE_PUSH_SCRIPT),
        };
        // Connects now when Redis is up; logs the outage once when it is not.
        let _ = store.ping().await;
        Ok(store)
    }

    /// Checks that Redis answers (`PING`).
    pub async fn ping(&self) -> Result<(), Error> {
        let cmd = redis::cmd("PING");
        self.run("ping Redis", |mut c| async move {
            cmd.query_async::<String>(&mut c).await
        })
        .await
        .map(drop)
    }

    /// True while Redis is known to be unreachable.
    pub fn is_down(&self) -> bool {
        self.health.down.load(Ordering::Relaxed)
    }

    /// Takes the lease `name` for `holder` for `ttl` (or renews it when `holder` has it
    /// already). True when `holder` holds it now; false when someone else does.
    pub async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        self.lease_script(
            &self.lease_acquire,
            "acquire Redis lease",
            name,
            holder,
            ttl,
        )
        .await
    }

    /// Extends the lease `name` to `ttl` from now, only if `holder` still holds it.
    pub async fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        self.lease_script(&self.lease_renew, "renew Redis lease", name, holder, ttl)
            .await
    }

    /// Runs a lease script (`KEYS[1]` the lease, `ARGV` holder and TTL in ms) that answers 1
    /// when `holder` holds the lease afterwards.
    async fn lease_script(
        &self,
        script: &Script,
        what: &'static str,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let mut inv = script.prepare_invoke();
        inv.key(lease_key(name)).arg(holder).arg(millis(ttl));
        self.run(what, |mut c| async move {
            inv.invoke_async::<i64>(&mut c).await
        })
        .await
        .map(|n| n == 1)
    }

    /// Gives the lease `name` up, only if `holder` holds it (compare-and-delete). True when
    /// it was released by this call.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<bool, Error> {
        let mut inv = self.lease_release.prepare_invoke();
        inv.key(lease_key(name)).arg(holder);
        self.run("release Redis lease", |mut c| async move {
            inv.invoke_async::<i64>(&mut c).await
        })
        .await
        .map(|n| n == 1)
    }

    /// Runs one operation on the shared connection: fails fast while Redis is known to be
    /// down, bounds it with [`OPERATION_TIMEOUT`], and keeps the outage state.
    async fn run<T, F, Fut>(&self, operation: &str, op: F) -> Result<T, Error>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        if let Some(e) = self.health.fail_fast() {
            return Err(e.during(operation));
        }
        let outcome = tokio::time::timeout(OPERATION_TIMEOUT, op(self.conn.clone())).await;
        settle(&self.health, operation, outcome)
    }

    /// The local signal for `queue`, starting this process's listener on first use.
    fn listener(&self, queue: &str) -> Arc<Notify> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(notify) = listeners.get(queue) {
            return notify.clone();
        }
        let notify = Arc::new(Notify::new());
        listeners.insert(queue.to_string(), notify.clone());
        tokio::spawn(listen(
            self.client.clone(),
            self.health.clone(),
            wake_key(queue),
            Arc::downgrade(&notify),
        ));
        notify
    }
}

/// Turns an operation's outcome into a result, updating the outage state.
fn settle<T>(
    health: &Health,
    operation: &str,
    outcome: Result<Result<T, RedisError>, tokio::time::error::Elapsed>,
) -> Result<T, Error> {
    match outcome {
        Ok(Ok(value)) => {
            health.succeeded();
            Ok(value)
        }
        Ok(Err(e)) => {
            let error = redis_error(&e, operation);
            if is_outage(&e) {
                health.failed(&error);
            } else {
                health.succeeded();
            }
            Err(error)
        }
        Err(_) => {
            let error = Error::Timeout(Box::new(
                ErrorInfo::new(format!(
                    "Redis did not answer within {} ms",
                    OPERATION_TIMEOUT.as_millis()
                ))
                .with_operation(operation),
            ));
            health.failed(&error);
            Err(error)
        }
    }
}

/// This process's wake-up listener for one queue: blocks on `BLPOP` on its own connection
/// (never the shared one) and turns each token into a local notification, which a waiting
/// worker takes at once or the next one finds (at most one is kept). Waiting workers only
/// await the local signal, so a wait that is given up costs nothing. Stops once the store
/// is dropped; while Redis is down it retries once per [`RETRY_AFTER_OUTAGE`].
async fn listen(client: Client, health: Arc<Health>, key: String, notify: Weak<Notify>) {
    const OP: &str = "Redis wake-up listener";
    let mut conn: Option<MultiplexedConnection> = None;
    while let Some(local) = notify.upgrade() {
        if health.fail_fast().is_some() {
            drop(local);
            tokio::time::sleep(RETRY_AFTER_OUTAGE).await;
            continue;
        }
        let mut current = match conn.take() {
            Some(c) => c,
            None => {
                // No response timeout: a BLPOP answers only when its own timeout ends.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(None);
                let outcome = tokio::time::timeout(
                    OPERATION_TIMEOUT,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await;
                match settle(&health, OP, outcome) {
                    Ok(c) => c,
                    Err(_) => {
                        drop(local);
                        tokio::time::sleep(RETRY_AFTER_OUTAGE).await;
                        continue;
                    }
                }
            }
        };
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(&key).arg(LISTEN_SECS);
        let outcome = tokio::time::timeout(
            Duration::from_secs(LISTEN_SECS) + OPERATION_TIMEOUT,
            cmd.query_async::<Option<(String, String)>>(&mut current),
        )
        .await;
        match settle(&health, OP, outcome) {
            Ok(token) => {
                if token.is_some() {
                    local.notify_one();
                }
                conn = Some(current);
            }
            Err(_) => {
                // A broken or timed-out connection may still owe an answer: start afresh.
                drop(local);
                tokio::time::sleep(RETRY_AFTER_OUTAGE).await;
            }
        }
    }
}

/// `name` under the `flowcraft:` prefix (unchanged when it has it already).
pub fn prefixed(key: &str) -> String {
    if key.starts_with(KEY_PREFIX) {
        key.to_string()
    } else {
        format!("{KEY_PREFIX}{key}")
    }
}

fn lease_key(name: &str) -> String {
    prefixed(&format!("lease:{name}"))
}

fn wake_key(queue: &str) -> String {
    prefixed(&format!("wake:{queue}"))
}

/// A TTL in milliseconds for `PX` / `PEXPIRE` (at least 1: Redis refuses 0).
fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Redis could not be reached or did not answer (as opposed to refusing a command).
fn is_outage(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped()
}

/// A Redis error as a crate [`Error`] (the redis crate never puts the password into it).
fn redis_error(e: &RedisError, operation: &str) -> Error {
    let info = ErrorInfo::new(format!("Redis: {e}")).with_operation(operation);
    if e.is_timeout() {
        Error::Timeout(Box::new(info))
    } else if is_outage(e) {
        Error::Transport(Box::new(info))
    } else if matches!(
        e.kind(),
        redis::ErrorKind::AuthenticationFailed
            | redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
    ) {
        Error::Auth(Box::new(info))
    } else {
        Error::Unexpected(Box::new(info))
    }
}

#[async_trait]
impl CoordinationStore for RedisCoordinationStore {
    async fn increment(&self, key: &str, ttl: Duration) -> Result<i64, Error> {
        self.counter_add(key, 1, Some(ttl)).await
    }

    async fn set_if_not_exists(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(prefixed(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .arg("NX");
        self.run("Redis set if not exists", |mut c| async move {
            cmd.query_async::<Option<String>>(&mut c).await
        })
        .await
        .map(|reply| reply.is_some())
    }

    async fn extend_ttl(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(prefixed(key)).arg(millis(ttl));
        self.run("Redis extend ttl", |mut c| async move {
            cmd.query_async::<i64>(&mut c).await
        })
        .await
        .map(|n| n == 1)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(prefixed(key));
        self.run("Redis delete", |mut c| async move {
            cmd.query_async::<i64>(&mut c).await
        })
        .await
        .map(drop)
    }

    async fn get(&self, key: &str) -> Result<Option<String>, Error> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(prefixed(key));
        self.run("Redis get", |mut c| async move {
            cmd.query_async::<Option<String>>(&mut c).await
        })
        .await
    }

    async fn set_add(&self, key: &str, member: &str, ttl: Option<Duration>) -> Result<u64, Error> {
        let mut inv = self.set_add.prepare_invoke();
        inv.key(prefixed(key))
            .arg(member)
            .arg(ttl.map_or(0, millis));
        self.run("Redis set add", |mut c| async move {
            inv.invoke_async::<u64>(&mut c).await
        })
        .await
    }

    async fn counter_add(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, Error> {
        let mut inv = self.incr.prepare_invoke();
        inv.key(prefixed(key)).arg(delta).arg(ttl.map_or(0, millis));
        self.run("Redis counter add", |mut c| async move {
            inv.invoke_async::<i64>(&mut c).await
        })
        .await
    }
}

#[async_trait]
impl WakeSignal for RedisCoordinationStore {
    async fn notify(&self, queue: &str) {
        let mut inv = self.wake_push.prepare_invoke();
        inv.key(wake_key(queue))
            .arg(WAKE_TOKENS)
            .arg(millis(WAKE_TTL));
        let sent = self
            .run("Redis wake-up", |mut c| async move {
                inv.invoke_async::<i64>(&mut c).await
            })
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "wake-up not sent");
        }
    }

    async fn wait(&self, queue: &str, max: Duration) -> bool {
        let notify = self.listener(queue);
        tokio::time::timeout(max, notify.notified()).await.is_ok()
    }
}

/// A [`CoordinationStore`] that uses Redis and, when Redis cannot be reached (or does not
/// answer in time), answers from process-local state instead, so that nothing that only
/// coordinates (the reconciler's cooldown, the run's blueprint key) fails because Redis is
/// down. Other Redis errors are returned as they are.
#[derive(Debug)]
pub struct WithLocalFallback {
    redis: Arc<RedisCoordinationStore>,
    local: MemoryCoordinationStore,
}

impl WithLocalFallback {
    /// Redis first, the process-local store while it is unreachable.
    pub fn new(redis: Arc<RedisCoordinationStore>) -> Self {
        WithLocalFallback {
            redis,
            local: MemoryCoordinationStore::new(),
        }
    }
}

/// Runs `$call` on Redis, and on the local store when Redis is unreachable.
macro_rules! or_local {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self.redis.$method($($arg),*).await {
            Err(Error::Transport(_) | Error::Timeout(_)) => $self.local.$method($($arg),*).await,
            other => other,
        }
    };
}

#[async_trait]
impl CoordinationStore for WithLocalFallback {
    async fn increment(&self, key: &str, ttl: Duration) -> Result<i64, Error> {
        or_local!(self.increment(key, ttl))
    }

    async fn set_if_not_exists(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, Error> {
        or_local!(self.set_if_not_exists(key, value, ttl))
    }

    async fn extend_ttl(&self, key: &str, ttl: Duration) -> Result<bool, Error> {
        or_local!(self.extend_ttl(key, ttl))
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        or_local!(self.delete(key))
    }

    async fn get(&self, key: &str) -> Result<Option<String>, Error> {
        or_local!(self.get(key))
    }

    async fn set_add(&self, key: &str, member: &str, ttl: Option<Duration>) -> Result<u64, Error> {
        or_local!(self.set_add(key, member, ttl))
    }

    async fn counter_add(
        &self,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, Error> {
        or_local!(self.counter_add(key, delta, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tls_url_is_accepted_and_an_unreachable_redis_is_an_error_not_a_hang() {
        // A server that answers a TLS hello with garbage: the client builds its TLS
        // configuration (rustls, ring) and fails the handshake cleanly.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket.write_all(b"-ERR not tls\r\n").await;
            }
        });
        let not_tls = format!("rediss://127.0.0.1:{port}");
        for url in ["rediss://127.0.0.1:1", "redis://127.0.0.1:1/2", &not_tls] {
            let store = tokio::time::timeout(
                Duration::from_secs(10),
                RedisCoordinationStore::connect(url),
            )
            .await
            .expect("connect returns in time")
            .expect("a well-formed URL is accepted while Redis is down");
            assert!(store.is_down(), "{url}");
            let err = store.get("k").await.unwrap_err();
            assert!(
                matches!(err, Error::Transport(_) | Error::Timeout(_)),
                "{err:?}"
            );
        }
    }

    #[test]
    fn keys_get_the_prefix_once() {
        assert_eq!(prefixed("x"), "flowcraft:x");
        assert_eq!(prefixed("flowcraft:x"), "flowcraft:x");
        assert_eq!(lease_key("reconciler"), "flowcraft:lease:reconciler");
        assert_eq!(wake_key("jobs"), "flowcraft:wake:jobs");
    }

    #[test]
    fn ttls_are_whole_milliseconds_and_never_zero() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_micros(1500)), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
        assert_eq!(millis(Duration::MAX), i64::MAX);
    }

    #[tokio::test]
    async fn a_malformed_url_is_an_error_that_does_not_show_it() {
        let err = RedisCoordinationStore::connect("redis://:SECRETPW@[bad")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("Redis URL"), "{err}");
        assert!(!err.contains("SECRETPW"), "{err}");
    }

    /// Collects what a fmt subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_outage_and_its_recovery_are_logged_once_each() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let health = Health::default();
            for _ in 0..5 {
                health.failed(&Error::transport("connection refused"));
            }
            health.succeeded();
            health.succeeded();
            health.failed(&Error::transport("connection refused"));
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.matches("Redis is unreachable").count(), 2, "{log}");
        assert_eq!(log.matches("Redis answers again").count(), 1, "{log}");
    }

    #[test]
    fn the_outage_state_fails_fast_only_right_after_a_failure() {
        let health = Health::default();
        assert!(health.fail_fast().is_none());
        health.failed(&Error::transport("down"));
        assert!(health.fail_fast().is_some());
        health.succeeded();
        assert!(health.fail_fast().is_none());
    }
}

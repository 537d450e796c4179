//! The shared backend: entries in Redis (`SET key value PX ttl`, `GET key`) under a
//! key prefix, so replicas share one cache. Redis bounds its own memory (`maxmemory`
//! and its eviction policy).
//!
//! Redis must never make a request slower or fail it: every operation has a deadline,
//! and after a failure the backend is left alone for a short cool-down, during which
//! operations fail at once (counted as errors, answered as misses) instead of each
//! waiting for a dead server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{CacheKey, CacheStore, StoreError};

/// The `backend` metrics label.
pub const BACKEND: &str = "redis";

/// How long a failed server is left alone before it is tried again.
const COOL_DOWN: Duration = Duration::from_secs(1);

pub struct RedisStore {
    client: redis::Client,
    /// Made on first use: the connection manager needs the async runtime.
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    ttl_ms: u64,
    timeout: Duration,
    /// Milliseconds since `epoch` before which the server is not tried.
    down_until_ms: AtomicU64,
    epoch: Instant,
    /// Whether the last operation succeeded, to log changes rather than every failure.
    healthy: AtomicBool,
}

impl RedisStore {
    /// A store at `url` (checked here, connected on first use); keys are `prefix` followed
    /// by the hex cache key; every operation gives up after `timeout`.
    pub fn new(
        url: &str,
        prefix: String,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("cache.redis_url is not usable: {e}"))?;
        Ok(RedisStore {
            client,
            connection: OnceCell::new(),
            prefix,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            timeout,
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            healthy: AtomicBool::new(true),
        })
    }

    /// The Redis key of `key`.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{key}", self.prefix)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // Reconnecting is retried by the next operation after the cool-down, not
            // by requests waiting in line.
            .set_number_of_retries(1)
            .set_max_delay(self.timeout);
        self.connection
            .get_or_try_init(|| async {
                self.client
                    .get_connection_manager_lazy(config)
                    .map_err(|e| StoreError(e.to_string()))
            })
            .await
            .cloned()
    }

    /// Runs `cmd` with the deadline and the cool-down.
    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        if self.now_ms() < self.down_until_ms.load(Ordering::Relaxed) {
            return Err(StoreError("redis is cooling down after a failure".into()));
        }
        let result = match tokio::time::timeout(self.timeout, async {
            let mut connection = self.connection().await?;
            cmd.query_async::<T>(&mut connection)
                .await
                .map_err(|e| StoreError(e.to_string()))
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(StoreError(format!(
                "no answer from redis within {} ms",
                self.timeout.as_millis()
            ))),
        };
        match &result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("redis cache backend is answering again");
                }
            }
            Err(e) => {
                let until = self.now_ms() + u64::try_from(COOL_DOWN.as_millis()).unwrap_or(0);
                self.down_until_ms.store(until, Ordering::Relaxed);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "redis cache backend failed; serving without the cache");
                }
            }
        }
        result
    }
}

impl CacheStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(self.redis_key(key));
            self.run::<Option<Bytes>>(cmd).await
        })
    }

    fn put(&self, key: CacheKey, value: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.redis_key(&key))
                .arg(&value[..])
                .arg("PX")
                .arg(self.ttl_ms);
            self.run::<()>(cmd).await
        })
    }
}

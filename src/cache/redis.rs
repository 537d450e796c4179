//! The shared backend: entries in Redis (`SET key value PX ttl`, `GET key`) under a
//! key prefix, so replicas share one cache. Redis bounds its own memory (`maxmemory`
//! and its eviction policy).
//!
//! Redis must never make a request slower or fail it: every operation has a deadline,
//! and after a failure the backend is left alone for a short cool-down, during which
//! operations fail at once (counted as errors, answered as misses) instead of each
//! waiting for a dead server.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{CacheKey, CacheStore, StoreError};
use crate::redis_conn::{RedisConn, RedisUrlError};

/// The `backend` metrics label.
pub const BACKEND: &str = "redis";

pub struct RedisStore {
    conn: RedisConn,
    prefix: String,
    ttl_ms: u64,
}

impl RedisStore {
    /// A store at `url` (checked here, connected on first use); keys are `prefix` followed
    /// by the hex cache key; every operation gives up after `timeout`.
    pub fn new(
        url: &str,
        prefix: String,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, RedisUrlError> {
        Ok(RedisStore {
            conn: RedisConn::new(
                url,
                "cache.redis_url",
                timeout,
                "redis cache backend",
                "serving without the cache",
            )?,
            prefix,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// The Redis key of `key`.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `cmd` with the deadline and the cool-down.
    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        self.conn
            .run(|mut connection| async move { cmd.query_async::<T>(&mut connection).await })
            .await
            .map_err(|e| StoreError(e.0))
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

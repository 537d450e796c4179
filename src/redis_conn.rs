//! One Redis server as the shared stores see it (the response cache, the admission
//! limits): connected lazily, every operation under a deadline, and after a failure
//! left alone for a short cool-down, during which operations fail at once instead of
//! each waiting for a dead server. Redis must never hang a request or panic one.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

/// How long a failed server is left alone before it is tried again.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// A failed or timed-out operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisError(pub String);

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedisError {}

pub struct RedisConn {
    client: redis::Client,
    /// Made on first use: the connection manager needs the async runtime.
    connection: OnceCell<ConnectionManager>,
    timeout: Duration,
    /// Milliseconds since `epoch` before which the server is not tried.
    down_until_ms: AtomicU64,
    epoch: Instant,
    /// Whether the last operation succeeded, to log changes rather than every failure.
    healthy: AtomicBool,
    /// Who uses the server and what happens without it, for the logs.
    user: &'static str,
    without: &'static str,
}

/// A Redis URL the client refuses.
#[derive(Debug, thiserror::Error)]
#[error("{field} is not usable: {source}")]
pub struct RedisUrlError {
    field: &'static str,
    #[source]
    source: redis::RedisError,
}

impl RedisConn {
    /// A server at `url` (checked here, connected on first use; `field` names the config
    /// key in the error); every operation gives up after `timeout`. `user` and `without`
    /// word the log lines ("redis cache backend", "serving without the cache").
    pub fn new(
        url: &str,
        field: &'static str,
        timeout: Duration,
        user: &'static str,
        without: &'static str,
    ) -> Result<Self, RedisUrlError> {
        let client = redis::Client::open(url).map_err(|source| RedisUrlError { field, source })?;
        Ok(RedisConn {
            client,
            connection: OnceCell::new(),
            timeout,
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            healthy: AtomicBool::new(true),
            user,
            without,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisError> {
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
                    .map_err(|e| RedisError(e.to_string()))
            })
            .await
            .cloned()
    }

    /// Runs `op` on a connection with the deadline and the cool-down.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.now_ms() < self.down_until_ms.load(Ordering::Relaxed) {
            return Err(RedisError("redis is cooling down after a failure".into()));
        }
        let result = match tokio::time::timeout(self.timeout, async {
            let connection = self.connection().await?;
            op(connection).await.map_err(|e| RedisError(e.to_string()))
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(RedisError(format!(
                "no answer from redis within {} ms",
                self.timeout.as_millis()
            ))),
        };
        match &result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(user = self.user, "redis is answering again");
                }
            }
            Err(e) => {
                let until = self.now_ms() + u64::try_from(COOL_DOWN.as_millis()).unwrap_or(0);
                self.down_until_ms.store(until, Ordering::Relaxed);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, user = self.user, "redis failed; {}", self.without);
                }
            }
        }
        result
    }
}

//! The test Redis, shared by the cache and the limits tests: where it is, one key prefix
//! per test, and one policy when it is absent (the test is skipped with a notice, except
//! under CI, where the server is part of the machine and the test fails).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;

/// `CROSSROADS_TEST_REDIS_URL`, or the standard port on loopback.
pub fn redis_url() -> String {
    std::env::var("CROSSROADS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test or run uses, under `crossroads-test:AREA:`.
pub fn unique_prefix(area: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "crossroads-test:{area}:{}-{nanos}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connection to the test Redis that answered PING within 2 s.
async fn connect() -> Option<MultiplexedConnection> {
    let client = redis::Client::open(redis_url()).ok()?;
    let connect = async {
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .ok()?;
        Some(c)
    };
    tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()
        .flatten()
}

/// The test Redis, or `None` (with a notice naming `what` is skipped) when there is
/// none; under CI (`CI` set) a missing Redis fails the test instead.
pub async fn test_redis(what: &str) -> Option<MultiplexedConnection> {
    let connection = connect().await;
    if connection.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no Redis at {}: CI must run the {what}",
            redis_url()
        );
        eprintln!("skipping {what}: no Redis at {}", redis_url());
    }
    connection
}

/// A connection to the test Redis, for a test that already found it with
/// [`test_redis`].
pub async fn redis() -> MultiplexedConnection {
    match connect().await {
        Some(c) => c,
        None => panic!("the test Redis at {} went away", redis_url()),
    }
}

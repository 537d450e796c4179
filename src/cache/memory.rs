//! The in-process backend: a moka cache bounded in bytes, entries expiring after the
//! TTL. Admission and eviction follow moka's TinyLFU policy: an answer asked for once
//! does not push out answers asked for often, which suits prompt traffic, where most
//! requests are unique and a few repeat a lot.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use moka::notification::RemovalCause;
use prometheus::IntCounter;

use super::{CacheKey, CacheStore, StoreError};

/// The `backend` metrics label.
pub const BACKEND: &str = "memory";

/// What moka keeps per entry besides the key and the value (node, timer and hash
/// bookkeeping), so that `max_bytes` bounds memory rather than payload alone.
const ENTRY_OVERHEAD: usize = 192;

pub struct MemoryStore {
    cache: moka::future::Cache<CacheKey, Bytes>,
}

impl MemoryStore {
    /// A store holding at most `max_bytes`; each eviction to stay within it is counted.
    pub fn new(max_bytes: u64, ttl: Duration, evictions: IntCounter) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, value: &Bytes| -> u32 {
                u32::try_from(size_of::<CacheKey>() + value.len() + ENTRY_OVERHEAD)
                    .unwrap_or(u32::MAX)
            })
            .time_to_live(ttl)
            .eviction_listener(move |_key: Arc<CacheKey>, _value, cause| {
                if cause == RemovalCause::Size {
                    evictions.inc();
                }
            })
            .build();
        MemoryStore { cache }
    }

    /// Entries and their total weight in bytes, once housekeeping has run.
    pub fn usage(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}

impl CacheStore for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move { Ok(self.cache.get(key).await) })
    }

    fn put(&self, key: CacheKey, value: Bytes) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.cache.insert(key, value).await;
            Ok(())
        })
    }

    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.cache.run_pending_tasks())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;

    fn key(i: u64) -> CacheKey {
        let body = json!({ "messages": [{ "role": "user", "content": i.to_string() }] });
        CacheKey::new(None, "p", ["m"], None, body.as_object().unwrap())
    }

    #[tokio::test]
    async fn stays_within_its_byte_bound_and_counts_evictions() {
        let evictions = IntCounter::new("e", "e").unwrap();
        let value = Bytes::from(vec![b'x'; 1000]);
        let weight = (16 + 1000 + ENTRY_OVERHEAD) as u64;
        let store = MemoryStore::new(3 * weight, Duration::from_secs(60), evictions.clone());
        for i in 0..10 {
            store.put(key(i), value.clone()).await.unwrap();
            store.settle().await;
        }
        let (entries, bytes) = store.usage();
        assert!(entries <= 3, "{entries} entries");
        assert!(bytes <= 3 * weight, "{bytes} bytes");
        assert_eq!(evictions.get(), 10 - entries);
    }

    #[tokio::test]
    async fn entries_expire_after_the_ttl() {
        let store = MemoryStore::new(
            1 << 20,
            Duration::from_millis(300),
            IntCounter::new("e", "e").unwrap(),
        );
        store.put(key(1), Bytes::from_static(b"v")).await.unwrap();
        assert_eq!(
            store.get(&key(1)).await.unwrap(),
            Some(Bytes::from_static(b"v"))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(store.get(&key(1)).await.unwrap(), None);
    }
}

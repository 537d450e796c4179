//! The response cache: exact answers to repeated requests, served without calling an
//! upstream.
//!
//! - [`key`]: the [`CacheKey`], a pure function of the routed request.
//! - [`entry`]: the stored form, the original usage and a chat.completion body.
//! - [`completion`]: streams stored as the chat.completion they amount to, and
//!   chat.completions replayed as streams, so one entry serves both kinds of client.
//! - [`memory`], [`redis`]: the backends behind [`CacheStore`]: moka in this process,
//!   or Redis shared between replicas.
//!
//! Only complete, successful answers are stored, off the response path; a backend that
//! fails degrades to a miss and is counted, never failing the request.

pub mod completion;
pub mod entry;
pub mod key;
pub mod memory;
pub mod redis;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde::Deserialize;
use serde::de::IgnoredAny;

pub use completion::{Assembler, replay};
pub use entry::Entry;
pub use key::CacheKey;

use crate::accounting::Usage;
use crate::config::{CacheBackend, CacheConfig, CacheScope};
use crate::inflight::{InFlight, InFlightGuard};
use crate::redis_conn::RedisUrlError;

/// Where entries live. Implementations bound their own size and expire entries after
/// the configured TTL.
pub trait CacheStore: Send + Sync {
    /// The backend's name, as the `backend` metrics label.
    fn backend(&self) -> &'static str;

    /// The stored bytes of `key`, if any.
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;

    /// Stores `value` under `key`, replacing what was there.
    fn put(&self, key: CacheKey, value: Bytes) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Applies pending housekeeping (evictions) now; for tests and shutdown.
    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A backend operation that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the cache did for one request, as the `x-crossroads-cache` header and the
/// `result` metrics label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
    /// Not looked up: the cache is off, or the client sent `Cache-Control: no-cache`.
    #[default]
    Bypass,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Bypass => "bypass",
        }
    }
}

/// The request's `Cache-Control` directives the cache honours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// Skip the lookup (the answer still refreshes the cache).
    pub no_cache: bool,
    /// Do not store the answer.
    pub no_store: bool,
}

impl Directives {
    /// Reads every `Cache-Control` header value: comma-separated, case-insensitive
    /// directives; others (`max-age` ...) are ignored.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut d = Directives::default();
        for value in values {
            for directive in value.split(|b| *b == b',') {
                let name = directive.split(|b| *b == b'=').next().unwrap_or_default();
                let name = name.trim_ascii();
                if name.eq_ignore_ascii_case(b"no-cache") {
                    d.no_cache = true;
                } else if name.eq_ignore_ascii_case(b"no-store") {
                    d.no_store = true;
                }
            }
        }
        d
    }
}

/// Cache metrics, registered by the caller.
#[derive(Clone)]
pub struct CacheMetrics {
    hits: IntCounter,
    misses: IntCounter,
    bypasses: IntCounter,
    /// Entries dropped to stay within `max_bytes` (memory backend).
    pub evictions: IntCounter,
    errors: IntCounterVec,
}

impl CacheMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "crossroads_cache_requests_total",
                "Chat requests by what the response cache did: hit, miss or bypass",
            ),
            &["result"],
        )?;
        let evictions = IntCounter::new(
            "crossroads_cache_evictions_total",
            "Cache entries evicted to stay within the size bound",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "crossroads_cache_errors_total",
                "Cache backend operations that failed and were treated as misses",
            ),
            &["backend"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        // Every series exists from the start, so rates and ratios are defined at zero.
        for backend in [memory::BACKEND, redis::BACKEND] {
            errors.with_label_values(&[backend]);
        }
        Ok(CacheMetrics {
            hits: requests.with_label_values(&[Lookup::Hit.as_str()]),
            misses: requests.with_label_values(&[Lookup::Miss.as_str()]),
            bypasses: requests.with_label_values(&[Lookup::Bypass.as_str()]),
            evictions,
            errors,
        })
    }

    /// Counts one request's lookup.
    pub fn count(&self, lookup: Lookup) {
        match lookup {
            Lookup::Hit => self.hits.inc(),
            Lookup::Miss => self.misses.inc(),
            Lookup::Bypass => self.bypasses.inc(),
        }
    }
}

/// The request path's handle on the cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn CacheStore>,
    scope: CacheScope,
    max_entry_bytes: usize,
    metrics: CacheMetrics,
    /// Writes in flight, so [`Cache::flush`] can wait for them.
    writes: Arc<InFlight>,
}

impl Cache {
    /// Builds the configured backend. Connections are made on first use.
    pub fn new(config: &CacheConfig, metrics: CacheMetrics) -> Result<Self, RedisUrlError> {
        let store: Box<dyn CacheStore> = match &config.backend {
            CacheBackend::Memory { max_bytes } => Box::new(memory::MemoryStore::new(
                *max_bytes,
                config.ttl,
                metrics.evictions.clone(),
            )),
            CacheBackend::Redis {
                url,
                key_prefix,
                timeout,
            } => Box::new(redis::RedisStore::new(
                url.expose(),
                key_prefix.clone(),
                config.ttl,
                *timeout,
            )?),
        };
        Ok(Cache::with_store(
            store,
            config.scope,
            config.max_entry_bytes,
            metrics,
        ))
    }

    /// A cache over any store.
    pub fn with_store(
        store: Box<dyn CacheStore>,
        scope: CacheScope,
        max_entry_bytes: usize,
        metrics: CacheMetrics,
    ) -> Self {
        Cache {
            inner: Arc::new(Inner {
                store,
                scope,
                max_entry_bytes,
                metrics,
                writes: Arc::default(),
            }),
        }
    }

    /// The key scope of a request from `team`: the team itself when entries are kept
    /// per team, nothing when one cache is shared by all.
    pub fn scope<'a>(&self, team: Option<&'a str>) -> Option<&'a str> {
        match self.inner.scope {
            CacheScope::Team => team,
            CacheScope::Global => None,
        }
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.inner.metrics
    }

    /// The entry stored under `key`. A backend error or an unreadable entry is a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<Entry> {
        match self.inner.store.get(key).await {
            Ok(Some(stored)) => {
                let entry = Entry::decode(stored);
                if entry.is_none() {
                    self.failed(&StoreError(format!("entry {key} is unreadable")));
                }
                entry
            }
            Ok(None) => None,
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// Counts a failure the request does not see.
    pub fn failed(&self, error: &StoreError) {
        let backend = self.inner.store.backend();
        self.inner
            .metrics
            .errors
            .with_label_values(&[backend])
            .inc();
        tracing::debug!(backend, error = %error, "cache operation failed; treated as a miss");
    }

    /// Stores a non-streamed answer in the background, if it is a chat.completion
    /// within `max_entry_bytes`.
    pub fn put(&self, key: CacheKey, usage: Usage, body: Bytes) {
        if Entry::stored_len_of(body.len()) > self.inner.max_entry_bytes {
            return;
        }
        let (write, cache) = (self.begin_write(), self.clone());
        tokio::spawn(async move {
            if is_answer(&body) {
                cache.write(key, Entry { usage, body }).await;
            }
            drop(write);
        });
    }

    /// A recorder for a streamed answer, stored if the stream completes.
    pub fn recorder(&self, key: CacheKey) -> StreamRecorder {
        StreamRecorder {
            cache: self.clone(),
            key,
            assembler: Assembler::default(),
            storable: true,
        }
    }

    async fn write(&self, key: CacheKey, entry: Entry) {
        if entry.stored_len() > self.inner.max_entry_bytes {
            return;
        }
        if let Err(e) = self.inner.store.put(key, entry.encode()).await {
            self.failed(&e);
        }
    }

    fn begin_write(&self) -> InFlightGuard {
        self.inner.writes.start()
    }

    /// Waits until every write started so far is done and the backend's housekeeping
    /// has run: what was stored can be read, and the size bound holds.
    pub async fn flush(&self) {
        self.inner.writes.idle().await;
        self.inner.store.settle().await;
    }
}

/// A body worth storing: a chat.completion with choices or an embeddings list with
/// vectors, not an error that came with a 200.
fn is_answer(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        choices: Vec<IgnoredAny>,
        #[serde(default)]
        data: Vec<IgnoredAny>,
        #[serde(default)]
        error: Option<IgnoredAny>,
    }
    serde_json::from_slice::<Peek>(body)
        .is_ok_and(|p| (!p.choices.is_empty() || !p.data.is_empty()) && p.error.is_none())
}

/// Follows a streamed answer chunk by chunk and stores it as a chat.completion once it
/// completed. Dropped without [`StreamRecorder::finish`], it stores nothing.
pub struct StreamRecorder {
    cache: Cache,
    key: CacheKey,
    assembler: Assembler,
    storable: bool,
}

impl StreamRecorder {
    /// Adds one event's `data:` payload (not `[DONE]`).
    pub fn push(&mut self, payload: &[u8]) {
        if self.storable && self.assembler.push(payload).is_err() {
            self.storable = false;
            self.assembler = Assembler::default();
        }
    }

    /// The stream ended with `[DONE]` and no error: store it in the background.
    pub fn finish(self, usage: Usage) {
        if !self.storable {
            return;
        }
        let Ok(body) = self.assembler.finish(&usage) else {
            return;
        };
        let (write, cache) = (self.cache.begin_write(), self.cache.clone());
        let key = self.key;
        tokio::spawn(async move {
            let entry = Entry {
                usage,
                body: Bytes::from(body),
            };
            cache.write(key, entry).await;
            drop(write);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn reads_cache_control_directives() {
        let parse = |values: &[&str]| Directives::parse(values.iter().map(|v| v.as_bytes()));
        assert_eq!(parse(&[]), Directives::default());
        assert!(parse(&["no-cache"]).no_cache);
        assert!(!parse(&["no-cache"]).no_store);
        assert_eq!(
            parse(&["max-age=0, No-Store", "NO-CACHE"]),
            Directives {
                no_cache: true,
                no_store: true
            }
        );
        assert_eq!(parse(&["no-caching, private"]), Directives::default());
    }

    #[test]
    fn only_completions_and_embedding_lists_are_worth_storing() {
        assert!(is_answer(
            br#"{"object":"chat.completion","choices":[{"index":0}]}"#
        ));
        assert!(is_answer(
            br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5]}]}"#
        ));
        assert!(!is_answer(br#"{"choices":[]}"#));
        assert!(!is_answer(br#"{"object":"list","data":[]}"#));
        assert!(!is_answer(br#"{"error":{"message":"x"},"choices":[{}]}"#));
        assert!(!is_answer(b"not json"));
    }
}

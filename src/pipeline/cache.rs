//! The cache stage: reads the client's `Cache-Control`, looks the routed request up,
//! and on a miss says how the upstream's answer is to be stored. A hit is answered
//! without calling an upstream, in the shape the client asked for (JSON, or an SSE
//! replay for streams).

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;

use crate::accounting::Usage;
use crate::cache::{Cache, CacheKey, Directives, Lookup, StoreError, StreamRecorder, replay};
use crate::config::Config;
use crate::request::Request;
use crate::route::PoolId;

/// What the cache stage decided.
pub enum Step {
    /// A stored answer: the chat body (a chat.completion, or its SSE replay for a
    /// stream) and the usage it was priced at.
    Hit { body: Bytes, usage: Usage },
    /// Go to the upstream, then store its answer as [`Store`] says.
    Miss(Lookup, Store),
}

/// Where the upstream's answer goes: nowhere, or under this key.
pub struct Store(Option<(Cache, CacheKey)>);

impl Store {
    /// Stores a whole chat.completion body.
    pub fn complete(&self, body: &Bytes, usage: Usage) {
        if let Some((cache, key)) = &self.0 {
            cache.put(*key, usage, body.clone());
        }
    }

    /// A recorder for a streamed answer.
    pub fn recorder(&self) -> Option<StreamRecorder> {
        self.0.as_ref().map(|(cache, key)| cache.recorder(*key))
    }
}

/// Where the request is looked up: the routed pool and the caller's team (teams share
/// only their own answers).
pub struct Place<'a> {
    pub pool: PoolId,
    pub team: Option<&'a str>,
    /// The request's resolved `max_tokens`: the same body under a different limit is
    /// a different answer.
    pub max_tokens: Option<u64>,
}

/// Looks `request` up in `cache` (none when the cache is off).
pub async fn lookup(
    cache: Option<&Cache>,
    config: &Config,
    request: &Request,
    headers: &HeaderMap,
    place: Place<'_>,
) -> Step {
    let Some(cache) = cache else {
        return Step::Miss(Lookup::Bypass, Store(None));
    };
    let directives = Directives::parse(
        headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    if directives.no_cache && directives.no_store {
        cache.metrics().count(Lookup::Bypass);
        return Step::Miss(Lookup::Bypass, Store(None));
    }
    let pool = config.routes.pool(place.pool);
    let models = pool
        .into_iter()
        .flat_map(|p| &p.candidates)
        .filter_map(|d| config.deployment(*d))
        .map(|d| d.model.as_str());
    let pool = pool.map_or("", |p| p.id.as_str());
    let key = CacheKey::new(
        cache.scope(place.team),
        pool,
        models,
        place.max_tokens,
        &request.body,
    );
    let lookup = if directives.no_cache {
        Lookup::Bypass
    } else {
        match cache.get(&key).await {
            Some(entry) => {
                let body = if request.stream {
                    replay(&entry.body, &entry.usage, request.include_usage)
                } else {
                    Some(entry.body)
                };
                match body {
                    Some(body) => {
                        cache.metrics().count(Lookup::Hit);
                        return Step::Hit {
                            body,
                            usage: entry.usage,
                        };
                    }
                    None => {
                        cache.failed(&StoreError(format!("entry {key} is not a chat.completion")));
                        Lookup::Miss
                    }
                }
            }
            None => Lookup::Miss,
        }
    };
    cache.metrics().count(lookup);
    let store = (!directives.no_store).then(|| (cache.clone(), key));
    Step::Miss(lookup, Store(store))
}

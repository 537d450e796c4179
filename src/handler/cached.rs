//! The cache stage of the chat path (stage 6 in [`crate::app::router`]): reads the
//! client's `Cache-Control`, looks the routed request up, answers a hit without calling
//! an upstream, and on a miss says how the upstream's answer is to be stored.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::exchange::Exchange;
use crate::accounting::Usage;
use crate::cache::{
    Cache, CacheKey, Directives, Entry, Lookup, StoreError, StreamRecorder, replay,
};
use crate::request::ChatRequest;

/// What the cache stage decided.
pub(crate) enum Step {
    /// Answered from the cache; the exchange is finished.
    Hit(Response),
    /// Go to the upstream, then store its answer as [`Store`] says.
    Miss(Store),
}

/// Where the upstream's answer goes: nowhere, or under this key.
pub(crate) struct Store(Option<(Cache, CacheKey)>);

impl Store {
    /// Stores a whole chat.completion body.
    pub(crate) fn complete(&self, body: &Bytes, usage: Usage) {
        if let Some((cache, key)) = &self.0 {
            cache.put(*key, usage, body.clone());
        }
    }

    /// A recorder for a streamed answer.
    pub(crate) fn recorder(&self) -> Option<StreamRecorder> {
        self.0.as_ref().map(|(cache, key)| cache.recorder(*key))
    }
}

/// Looks the request of `team`, routed to `pool` with the rule's `max_tokens_cap`, up.
pub(crate) async fn lookup(
    ex: &mut Exchange,
    request: &ChatRequest,
    headers: &HeaderMap,
    team: Option<&str>,
    pool: usize,
    max_tokens_cap: Option<u64>,
) -> Step {
    let Some(cache) = ex.state().cache.clone() else {
        return Step::Miss(Store(None));
    };
    let directives = Directives::parse(
        headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(HeaderValue::as_bytes),
    );
    if directives.no_cache && directives.no_store {
        cache.metrics().count(Lookup::Bypass);
        return Step::Miss(Store(None));
    }
    let rt = ex.runtime().clone();
    let config = &rt.config;
    let pool = config.routes.pools.get(pool);
    let models = pool
        .into_iter()
        .flat_map(|p| &p.candidates)
        .filter_map(|d| config.deployments.get(*d))
        .map(|d| d.model.as_str());
    let pool = pool.map_or("", |p| p.id.as_str());
    let key = CacheKey::new(
        cache.scope(team),
        pool,
        models,
        max_tokens_cap,
        &request.body,
    );
    let lookup = if directives.no_cache {
        Lookup::Bypass
    } else {
        match cache.get(&key).await {
            Some(entry) => match hit(ex, entry, request) {
                Some(response) => {
                    cache.metrics().count(Lookup::Hit);
                    return Step::Hit(response);
                }
                None => {
                    cache.failed(&StoreError(format!("entry {key} is not a chat.completion")));
                    Lookup::Miss
                }
            },
            None => Lookup::Miss,
        }
    };
    cache.metrics().count(lookup);
    ex.cache_lookup(lookup);
    let store = (!directives.no_store).then_some((cache, key));
    Step::Miss(Store(store))
}

/// The response for a hit, in the shape the client asked for; `None` when a stream
/// replay cannot be built from the entry.
fn hit(ex: &mut Exchange, entry: Entry, request: &ChatRequest) -> Option<Response> {
    let body = if request.stream {
        replay(&entry.body, &entry.usage, request.include_usage)?
    } else {
        entry.body
    };
    ex.cache_lookup(Lookup::Hit);
    let mut headers = ex.headers();
    let ttft = request.stream.then(|| ex.started().elapsed());
    let costing = ex.finish(200, None, entry.usage, ttft);
    if request.stream {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(cost) = HeaderValue::from_str(&costing.cost.to_string()) {
            headers.insert("x-crossroads-cost-usd", cost);
        }
    }
    Some((StatusCode::OK, headers, body).into_response())
}

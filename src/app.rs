//! The application: live runtime state and the one function that assembles the
//! request path.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::admission::{Admission, Budgets, SharedLimits, SpendSource};
use crate::auth::Keyring;
use crate::auth::store::KeyStore;
use crate::cache::Cache;
use crate::config::{Config, EnvLookup, KeyConfig, LedgerBackend, LimitsConfig};
use crate::dispatch::Health;
use crate::handler;
use crate::ledger::LedgerReader;
use crate::ledger::{self, Ledger, LedgerWriter};
use crate::metrics::Metrics;
use crate::provider::Upstream;
use crate::reload::Reloader;

/// A validated config with the clients built for it. Swapped whole on reload; a request
/// keeps the `Arc` it started with.
pub struct Runtime {
    pub config: Config,
    /// One backend per deployment, same index as `config.deployments`.
    pub backends: Vec<Arc<Backend>>,
}

/// A deployment's client and its health, kept across reloads while it is unchanged.
pub struct Backend {
    pub upstream: Upstream,
    pub health: Arc<Health>,
}

impl Runtime {
    /// Builds the backends for `config`, keeping those of `previous` whose deployment did
    /// not change, so a reload keeps their warm connections and health.
    pub fn new(config: Config, previous: Option<&Runtime>) -> Result<Self, String> {
        let backends = config
            .deployments
            .iter()
            .map(|d| {
                let unchanged = previous.and_then(|p| {
                    p.config
                        .deployments
                        .iter()
                        .position(|old| old == d)
                        .and_then(|i| p.backends.get(i).cloned())
                });
                match unchanged {
                    Some(backend) => Ok(backend),
                    None => Upstream::new(d).map(|upstream| {
                        Arc::new(Backend {
                            upstream,
                            health: Arc::default(),
                        })
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Runtime { config, backends })
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    runtime: watch::Receiver<Arc<Runtime>>,
    pub reloader: Arc<Reloader>,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
    pub ids: Arc<crate::handler::RequestIds>,
    pub keyring: Arc<Keyring>,
    /// Rate limits and budgets: in this process, or shared in Redis (`[limits]`).
    pub admission: Arc<Admission>,
    /// Reads the ledger for the spend API; `None` for an in-memory ledger.
    pub reader: Option<Arc<LedgerReader>>,
    /// The response cache, built at startup from `[cache]`; `None` when off.
    pub cache: Option<Cache>,
}

impl AppState {
    /// The current runtime; in-flight requests keep theirs across a reload.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.borrow().clone()
    }
}

/// A built application: the router to serve, and the parts `main` shuts down.
pub struct App {
    pub router: Router,
    pub state: AppState,
    pub ledger_writer: LedgerWriter,
}

/// Builds the application for `config`: metrics, ledger writer, upstream clients, router.
/// Reloads read the config's source file again and look secrets up with `env`.
pub fn build(config: Config, env: EnvLookup) -> Result<App, String> {
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    let (ledger, ledger_writer) = ledger::start(&config.ledger, metrics.ledger.clone())?;
    let cache = config
        .cache
        .as_ref()
        .map(|c| Cache::new(c, metrics.cache.clone()))
        .transpose()?;
    let source = config.source.clone();
    let ledger_backend = config.ledger.backend.clone();
    let budgets_config = config.budgets;
    let limits_config = config.limits.clone();
    let runtime = Arc::new(Runtime::new(config, None)?);
    let (runtime_tx, runtime_rx) = watch::channel(runtime);
    let reloader = Arc::new(Reloader::new(
        source,
        env,
        runtime_tx,
        metrics.config_reloads.clone(),
    ));
    // The key store and the reader live in the ledger's database: a SQLite file for one
    // machine, a PostgreSQL schema that every replica shares. An in-memory ledger has
    // neither: keys come from the config and budgets start each period at zero.
    let key_store = KeyStore::for_backend(&ledger_backend)?.map(Arc::new);
    let reader = LedgerReader::for_backend(&ledger_backend)?.map(Arc::new);
    let history: Arc<dyn SpendSource> = match &reader {
        Some(r) => r.clone(),
        None => Arc::new(()),
    };
    let keyring = Arc::new(Keyring::default());
    refresh_keys(
        &keyring,
        key_store.as_deref(),
        &runtime_rx.borrow().config.keys,
    );
    if let Some(store) = &key_store
        && let LedgerBackend::Postgres { schema, .. } = &ledger_backend
    {
        // Replicas sharing the database hear of a created or revoked key at once.
        let (keyring, store, runtime) =
            (Arc::downgrade(&keyring), store.clone(), runtime_rx.clone());
        ledger::db::listen(
            &ledger_backend,
            crate::auth::store::changes_channel(schema),
            move |changed| {
                let Some(keyring) = keyring.upgrade() else {
                    return false;
                };
                if changed {
                    let rt = runtime.borrow().clone();
                    refresh_keys(&keyring, Some(&store), &rt.config.keys);
                }
                true
            },
        )?;
    }
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(watch_keys(keyring.clone(), key_store, runtime_rx.clone()));
    }
    let budgets = Arc::new(Budgets::new(
        history.clone(),
        budgets_config.warn_at,
        metrics.budget_warnings.clone(),
    ));
    let shared = match &limits_config {
        LimitsConfig::Memory => None,
        LimitsConfig::Redis(r) => Some((
            Arc::new(SharedLimits::new(
                r.url.expose(),
                r.key_prefix.clone(),
                r.timeout,
                r.reservation_ttl,
                history,
                budgets_config.warn_at,
                metrics.budget_warnings.clone(),
                metrics.admission_redis_errors.clone(),
            )?),
            r.on_error,
        )),
    };
    let admission = Arc::new(Admission::new(
        budgets,
        shared,
        metrics.admission_fallbacks.clone(),
    ));
    let state = AppState {
        runtime: runtime_rx,
        reloader,
        ledger,
        metrics,
        ids: Arc::new(crate::handler::RequestIds::new()),
        keyring,
        admission,
        reader,
        cache,
    };
    Ok(App {
        router: router(state.clone()),
        state,
        ledger_writer,
    })
}

/// Loads the store's active keys plus the config's into the keyring.
fn refresh_keys(keyring: &Keyring, store: Option<&KeyStore>, config_keys: &[KeyConfig]) {
    let stored = match store.map(KeyStore::active) {
        Some(Ok(keys)) => keys,
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot read the key store; keeping the keys loaded");
            return;
        }
        _ => Vec::new(),
    };
    keyring.set(crate::auth::collect(config_keys, stored));
}

/// Keeps the keyring current: re-reads the key store every `auth.refresh_ms`, so keys
/// created or revoked with `crossroads keys` (on any machine, for a PostgreSQL ledger)
/// take effect on every replica within that time, without a restart; and applies a
/// reloaded config's `[[keys]]` at once (the only source of keys without a store).
async fn watch_keys(
    keyring: Arc<Keyring>,
    store: Option<Arc<KeyStore>>,
    mut runtime: watch::Receiver<Arc<Runtime>>,
) {
    loop {
        let refresh = runtime.borrow().config.auth.refresh;
        let poll = async {
            if store.is_some() {
                tokio::time::sleep(refresh).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = poll => {}
            reloaded = runtime.changed() => {
                if reloaded.is_err() {
                    return;
                }
            }
        }
        let rt = runtime.borrow_and_update().clone();
        let (keyring, store) = (keyring.clone(), store.clone());
        let _ = tokio::task::spawn_blocking(move || {
            refresh_keys(&keyring, store.as_deref(), &rt.config.keys);
        })
        .await;
    }
}

/// The request path, in order. Each stage is a module named after it.
///
/// 1. **Body limit** ([`crate::handler::read_body`]): bodies over the live config's
///    `server.body_limit_bytes` become a 413 in the OpenAI error shape.
/// 2. **Ingress** ([`crate::request`]): the body is parsed and checked once; every field
///    the gateway does not interpret passes through untouched.
/// 3. **Resolve** ([`crate::route::RouteTable::resolve`]): `model` is `auto` or an alias,
///    else 404 `model_not_found`.
/// 4. **Classify** ([`crate::classify`]): label, confidence, difficulty, PII; timed.
/// 5. **Route** ([`crate::route`]): first matching rule → pool (or rejection). Then
///    **admission** ([`crate::admission`], glue in [`crate::handler::chat`]): the key's
///    RPM/TPM are counted and the upper-bound cost reserved against its key's and
///    team's budgets in one step (one Redis round trip with `[limits] backend =
///    "redis"`). A rate limit answers 429 here; a budget's 429 waits for a cache miss.
/// 6. **Cache** ([`crate::cache`], glue in [`crate::handler::cached`]): after routing,
///    because the key holds the pool. `Cache-Control: no-cache` skips the lookup; a hit
///    is answered here (JSON, or an SSE replay for streams), costs 0 and calls no
///    upstream. On a miss, the answer of stage 7 is stored once complete unless
///    `no-store`: a JSON body as it came, a stream once it ended with `[DONE]`.
/// 7. **Dispatch** ([`crate::dispatch`]): the pool's candidates in order, falling back
///    before the first byte; upstream wire formats in [`crate::provider`].
/// 8. **Accounting** ([`crate::handler::exchange`]): usage → exact cost and reference
///    cost → one ledger record and the metrics, for every request, streamed or not,
///    failed or not, cached or not, including clients that disconnect mid-stream.
///    Replies without usage are counted with the model family's tokenizer
///    ([`crate::accounting::tokens`]) on a blocking thread, never on the runtime.
/// 9. **Response headers**: `x-crossroads-request-id`, `-rule`, `-pool`, `-deployment`,
///    `-tier`, `-class`, `-cache` (`hit`, `miss` or `bypass`, on every chat response),
///    `-cost-usd` (non-streamed).
///
/// Side doors: `POST /v1/route/explain` runs stages 2-5 only; `GET /v1/models`,
/// `/healthz`, `/readyz` and `/metrics` read state; `POST /admin/reload` (admin key)
/// reloads the config; `POST /v1/feedback` rates a served request, by its id, in the
/// ledger ([`crate::handler::feedback`]). Unknown paths and methods get OpenAI-shaped 404/405 errors.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(handler::chat::chat_completions),
        )
        .route("/v1/route/explain", post(handler::explain::explain))
        .route("/v1/models", get(handler::models))
        .route("/healthz", get(handler::healthz))
        .route("/readyz", get(handler::readyz))
        .route("/metrics", get(handler::metrics))
        .route("/admin/reload", post(handler::admin::reload))
        .route("/v1/spend", get(handler::spend::spend))
        .route("/v1/spend/requests", get(handler::spend::requests))
        .route("/v1/feedback", post(handler::feedback::feedback))
        .fallback(handler::not_found)
        .method_not_allowed_fallback(handler::method_not_allowed)
        .with_state(state)
}

//! The application: builds the live state ([`crate::state`]) from a config and
//! mounts the endpoints. Only the binary's entry (`crossroads serve`) uses it.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::admission::{Admission, Budgets, SharedLimits, SharedStore, SpendSource};
use crate::auth::Keyring;
use crate::auth::store::{KeyStore, KeyStoreError};
use crate::cache::Cache;
use crate::config::{Config, EnvLookup, KeyConfig, LimitsConfig};
use crate::handler;
use crate::ledger::LedgerReader;
use crate::ledger::{self, LedgerWriter};
use crate::metrics::Metrics;
use crate::provider::ClientError;
use crate::redis_conn::RedisUrlError;
use crate::reload::Reloader;
use crate::state::{AppState, RequestIds, Runtime};

/// Why the application could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Ledger(#[from] ledger::StoreError),
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    #[error(transparent)]
    Redis(#[from] RedisUrlError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A built application: the router to serve, and the parts `main` shuts down.
pub struct App {
    pub router: Router,
    pub state: AppState,
    pub ledger_writer: LedgerWriter,
}

/// Builds the application for `config`: metrics, ledger writer, upstream clients, router.
/// Reloads read the config's source file again and look secrets up with `env`.
pub fn build(config: Config, env: EnvLookup) -> Result<App, BuildError> {
    let metrics = Arc::new(Metrics::new()?);
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
        metrics.config_reloads(),
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
    if let Some(store) = &key_store {
        // Replicas sharing the database hear of a created or revoked key at once.
        let (keyring, watched, runtime) =
            (Arc::downgrade(&keyring), store.clone(), runtime_rx.clone());
        store.watch(move |changed| {
            let Some(keyring) = keyring.upgrade() else {
                return false;
            };
            if changed {
                let rt = runtime.borrow().clone();
                refresh_keys(&keyring, Some(&watched), &rt.config.keys);
            }
            true
        })?;
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
            Box::new(Arc::new(SharedLimits::new(
                r.url.expose(),
                r.key_prefix.clone(),
                r.timeout,
                r.reservation_ttl,
                history,
                budgets_config.warn_at,
                metrics.budget_warnings.clone(),
                metrics.admission_redis_errors.clone(),
            )?)) as Box<dyn SharedStore>,
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
        ids: Arc::new(RequestIds::new()),
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

/// The endpoints. The model APIs are front-ends ([`crate::frontend`]) of the one
/// request pipeline ([`crate::pipeline::serve`], whose stages are listed there).
///
/// Side doors: `POST /v1/route/explain` runs the parse, classify and route stages only;
/// `GET /v1/models`, `/healthz`, `/readyz` and `/metrics` read state; `POST
/// /admin/reload` (admin key) reloads the config; `POST /v1/feedback` rates a served
/// request, by its id, in the ledger ([`crate::handler::feedback`]). Unknown paths and
/// methods get OpenAI-shaped 404/405 errors.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(crate::frontend::chat::chat_completions),
        )
        .route(
            "/v1/embeddings",
            post(crate::frontend::embeddings::embeddings),
        )
        .route("/v1/messages", post(crate::frontend::messages::messages))
        .route("/v1/responses", post(crate::frontend::responses::responses))
        .route("/v1/route/explain", post(handler::explain::explain))
        .route("/v1/models", get(handler::models))
        .route("/healthz", get(handler::healthz))
        .route("/readyz", get(handler::readyz))
        .route("/metrics", get(handler::metrics))
        .route("/admin/reload", post(handler::admin::reload))
        .route("/v1/spend", get(handler::spend::spend))
        .route("/v1/spend/requests", get(handler::spend::requests))
        .route("/v1/feedback", post(handler::feedback::feedback))
        .route("/ui", get(handler::console::page))
        .route("/ui/", get(handler::console::page))
        .route("/ui/api/whoami", get(handler::console::whoami))
        .route("/ui/api/overview", get(handler::console::overview_api))
        .route("/ui/api/latency", get(handler::console::latency))
        .route("/ui/api/budgets", get(handler::console::budgets))
        .route("/ui/api/requests/{id}", get(handler::console::request))
        .route("/ui/api/replay", post(handler::console::replay))
        .fallback(handler::not_found)
        .method_not_allowed_fallback(handler::method_not_allowed)
        .with_state(state)
        .layer(panics_answer_500())
}

/// Turns a panic in a handler into an OpenAI-shaped 500 instead of a dropped
/// connection. No code path is meant to panic (clippy denies unwrap, expect and panic,
/// and the reliability suite fuzzes for it): this is the net under the net. The
/// request's record is still written as its finisher unwinds.
pub fn panics_answer_500() -> tower_http::catch_panic::CatchPanicLayer<
    fn(Box<dyn std::any::Any + Send>) -> axum::response::Response,
> {
    fn answer(panic: Box<dyn std::any::Any + Send>) -> axum::response::Response {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        tracing::error!(panic = what, "a request handler panicked");
        axum::response::IntoResponse::into_response(crate::error::ApiError::Internal {
            message: "the gateway failed on this request; it has been logged".into(),
        })
    }
    tower_http::catch_panic::CatchPanicLayer::custom(answer as fn(_) -> _)
}

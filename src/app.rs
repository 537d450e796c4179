//! The application: live runtime state and the one function that assembles the
//! request path.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::config::Config;
use crate::handler;
use crate::ledger::{self, Ledger, LedgerWriter};
use crate::metrics::Metrics;
use crate::provider::Upstream;

/// A validated config with the clients built for it. Swapped whole on reload; a request
/// keeps the `Arc` it started with.
pub struct Runtime {
    pub config: Config,
    /// One client per deployment, same index as `config.deployments`.
    pub upstreams: Vec<Upstream>,
}

impl Runtime {
    pub fn new(config: Config) -> Result<Self, String> {
        let upstreams = config
            .deployments
            .iter()
            .map(Upstream::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Runtime { config, upstreams })
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    runtime: watch::Receiver<Arc<Runtime>>,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
    pub ids: Arc<crate::handler::RequestIds>,
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
    /// Publishes a new runtime (hot reload).
    pub runtime_tx: watch::Sender<Arc<Runtime>>,
}

/// Builds the application for `config`: metrics, ledger writer, upstream clients, router.
pub fn build(config: Config) -> Result<App, String> {
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    let (ledger, ledger_writer) = ledger::start(&config.ledger, metrics.ledger.clone())?;
    let body_limit = config.server.body_limit;
    let runtime = Arc::new(Runtime::new(config)?);
    let (runtime_tx, runtime_rx) = watch::channel(runtime);
    let state = AppState {
        runtime: runtime_rx,
        ledger,
        metrics,
        ids: Arc::new(crate::handler::RequestIds::new()),
    };
    Ok(App {
        router: router(state.clone(), body_limit),
        state,
        ledger_writer,
        runtime_tx,
    })
}

/// The request path, in order. Each stage is a module named after it.
///
/// 1. **Body limit** (`DefaultBodyLimit`): bodies over `server.body_limit_bytes` become a
///    413 in the OpenAI error shape (the handler maps the rejection).
/// 2. **Ingress** ([`crate::request`]): the body is parsed and checked once; every field
///    the gateway does not interpret passes through untouched.
/// 3. **Resolve** ([`crate::route::RouteTable::resolve`]): `model` is `auto` or an alias,
///    else 404 `model_not_found`.
/// 4. **Classify** ([`crate::classify`]): label, confidence, difficulty, PII; timed.
/// 5. **Route** ([`crate::route`]): first matching rule → pool (or rejection).
/// 6. **Dispatch** ([`crate::dispatch`]): the pool's candidates in order, falling back
///    before the first byte; upstream wire formats in [`crate::provider`].
/// 7. **Accounting** ([`crate::handler::exchange`]): usage → exact cost and reference
///    cost → one ledger record and the metrics, for every request, streamed or not,
///    failed or not, including clients that disconnect mid-stream.
/// 8. **Response headers**: `x-crossroads-request-id`, `-rule`, `-pool`, `-deployment`,
///    `-tier`, `-class`, `-cost-usd` (non-streamed).
///
/// Side doors: `POST /v1/route/explain` runs stages 2-5 only; `GET /v1/models`,
/// `/healthz`, `/readyz` and `/metrics` read state. Unknown paths and methods get
/// OpenAI-shaped 404/405 errors.
pub fn router(state: AppState, body_limit: usize) -> Router {
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
        .fallback(handler::not_found)
        .method_not_allowed_fallback(handler::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

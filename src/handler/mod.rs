//! The side doors: explain, feedback on served answers, spend, admin, and the
//! read-only endpoints; plus the body reader every endpoint shares. The model APIs are
//! front-ends of [`crate::pipeline`].

pub mod admin;
pub mod console;
pub mod explain;
pub mod feedback;
pub mod spend;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

/// Runs a ledger call on a blocking thread; its failure is the gateway's (500).
pub(crate) async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal {
            message: e.to_string(),
        })?
        .map_err(|e| ApiError::Internal {
            message: e.to_string(),
        })
}

/// The answer of the endpoints that read the ledger when it is in memory.
pub(crate) fn ledger_in_memory() -> ApiError {
    ApiError::Internal {
        message: "the ledger is in memory: this endpoint needs ledger.url = \"sqlite://PATH\" or a postgres:// URL".into(),
    }
}

/// Rules see request headers through this.
impl crate::route::Headers for HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `GET /v1/models`: `auto` and every alias, in the OpenAI list shape.
pub async fn models(State(state): State<AppState>) -> Response {
    let rt = state.runtime();
    let mut data = vec![json!({
        "id": "auto",
        "object": "model",
        "created": 0,
        "owned_by": "crossroads",
        "description": "the router chooses the deployment for each request",
    })];
    for alias in &rt.config.routes.aliases {
        data.push(json!({
            "id": alias.name,
            "object": "model",
            "created": 0,
            "owned_by": "crossroads",
            "description": alias.description,
        }));
    }
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the config is loaded and the ledger writer accepts records.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.ledger.is_open() {
        axum::Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "ledger writer stopped" })),
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

pub async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

pub async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

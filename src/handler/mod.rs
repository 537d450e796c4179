//! HTTP handlers: the chat-completions pipeline, feedback on its answers, and the
//! read-only endpoints.

pub mod admin;
pub mod cached;
pub mod chat;
pub mod exchange;
pub mod explain;
pub mod feedback;
pub mod spend;
mod stream;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::app::AppState;
use crate::config::ServerConfig;
use crate::error::ApiError;

/// Unique request ids: a random per-process prefix and a counter.
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        RequestIds {
            prefix: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            counter: AtomicU64::new(0),
        }
    }

    /// `req_` followed by 28 hex digits.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("req_{:016x}{:012x}", self.prefix, n & 0xffff_ffff_ffff)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the body up to the live config's `server.body_limit_bytes` (so a reload
/// applies at once) and within its `request_timeout_ms`, or the OpenAI-shaped error for
/// a body that is too large, too slow or unreadable. The deadline keeps a client that
/// announces a body and never sends it from holding a connection (and the ledger slot
/// its request reserved) forever.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    server: &ServerConfig,
) -> Result<Bytes, ApiError> {
    let limit = server.body_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let read = tokio::time::timeout(server.request_timeout, Limited::new(body, limit).collect());
    match read.await {
        Err(_) => Err(ApiError::RequestTimeout {
            limit_ms: server.request_timeout.as_millis(),
        }),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(ApiError::PayloadTooLarge { limit }),
        Ok(Err(e)) => Err(ApiError::bad_request(
            format!("could not read the request body: {e}"),
            None,
        )),
    }
}

/// Runs a ledger call on a blocking thread; its failure is the gateway's (500).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal {
            message: e.to_string(),
        })?
        .map_err(|message| ApiError::Internal { message })
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

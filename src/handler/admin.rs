//! The admin API, behind the key named by `server.admin_key_env`.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::reload::Trigger;
use crate::state::{AppState, Runtime};

/// Checks the `Authorization: Bearer` header against the admin key.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let rt = state.runtime();
    let Some(key) = &rt.config.server.admin_key else {
        return Err(ApiError::Unauthorized {
            message: "the admin API is off: set server.admin_key_env to a variable holding a key"
                .into(),
        });
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), key.expose().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized {
            message: "a valid admin key is required (Authorization: Bearer ...)".into(),
        })
    }
}

/// Whether `authorization` carries the admin key (never when there is none).
pub(crate) fn is_admin(rt: &Runtime, authorization: Option<&str>) -> bool {
    match (
        &rt.config.server.admin_key,
        authorization.and_then(|v| v.strip_prefix("Bearer ")),
    ) {
        (Some(admin), Some(given)) => constant_time_eq(given.as_bytes(), admin.expose().as_bytes()),
        _ => false,
    }
}

/// Compares without an early exit, so timing does not reveal a matching prefix.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /admin/reload`: reloads the config file now.
pub async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize(&state, &headers) {
        return e.into_response();
    }
    match state.reloader.reload(Trigger::Admin).await {
        Ok(()) => axum::Json(json!({ "status": "reloaded" })).into_response(),
        Err(e) => ApiError::InvalidConfig {
            message: e.to_string(),
        }
        .into_response(),
    }
}

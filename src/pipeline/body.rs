//! The body stage, shared by every endpoint that reads a body.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::config::ServerConfig;
use crate::error::ApiError;

/// Reads the body up to the live config's `server.body_limit_bytes` (so a reload
/// applies at once) and within its `request_timeout_ms`, or the OpenAI-shaped error for
/// a body that is too large, too slow or unreadable. The deadline keeps a client that
/// announces a body and never sends it from holding a connection (and the ledger slot
/// its request reserved) forever.
pub async fn read_body(
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

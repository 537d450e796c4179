//! Per-request errors and the one place that renders them as OpenAI error JSON.
//!
//! Startup errors (config, bind) live in [`crate::config::ConfigError`] and `main`;
//! everything that can go wrong while serving a request is an [`ApiError`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to the client in the OpenAI error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The request body is not a valid chat-completions request.
    BadRequest {
        message: String,
        param: Option<&'static str>,
    },
    /// The body is larger than `server.body_limit_bytes`.
    PayloadTooLarge {
        limit: usize,
    },
    /// The body did not arrive within `server.request_timeout_ms`.
    RequestTimeout {
        limit_ms: u128,
    },
    /// No or a wrong credential.
    Unauthorized {
        message: String,
    },
    /// A config reload was refused; the old config keeps serving.
    InvalidConfig {
        message: String,
    },
    /// The `model` names no alias.
    ModelNotFound {
        model: String,
    },
    /// Feedback names a request the ledger does not hold, or one the caller may not rate.
    RequestNotFound {
        request_id: String,
    },
    /// No route for this path or method.
    NotFound,
    MethodNotAllowed,
    /// A routing rule rejected the request.
    Rejected {
        rule: String,
        status: StatusCode,
        message: String,
    },
    /// The upstreams (or, later, the caller's own limits) ask to slow down.
    RateLimited {
        message: String,
        /// Seconds, sent as `Retry-After`.
        retry_after: Option<u64>,
    },
    /// Something the gateway must consult before sending a request cannot answer right
    /// now (shared limits in Redis, the ledger); the client may retry after a second.
    Unavailable {
        message: String,
        /// The OpenAI error `code`, e.g. `limits_unavailable`.
        code: &'static str,
    },
    /// A budget is used up.
    QuotaExceeded {
        message: String,
        /// `key` or `team`.
        scope: &'static str,
    },
    /// Every candidate deployment failed before the first byte.
    Upstream {
        failure: UpstreamFailure,
        message: String,
    },
    /// The upstream refused the request as invalid; its status and message are passed on.
    UpstreamRejected {
        status: StatusCode,
        message: String,
    },
    /// A bug or an unavailable internal resource.
    Internal {
        message: String,
    },
}

/// Why the upstream side failed, as seen by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connection errors, 5xx, 429 and malformed replies: 502.
    BadGateway,
    /// The deadline passed before an answer: 504.
    Timeout,
}

impl ApiError {
    /// Shorthand for a 400 naming the offending parameter.
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param,
        }
    }

    /// HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } | ApiError::QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::InvalidConfig { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ModelNotFound { .. }
            | ApiError::RequestNotFound { .. }
            | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Rejected { status, .. } | ApiError::UpstreamRejected { status, .. } => {
                *status
            }
            ApiError::Upstream {
                failure: UpstreamFailure::BadGateway,
                ..
            } => StatusCode::BAD_GATEWAY,
            ApiError::Upstream {
                failure: UpstreamFailure::Timeout,
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Low-cardinality name used as a metrics label and in the ledger.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::QuotaExceeded { .. } => "budget_exceeded",
            ApiError::InvalidConfig { .. } => "invalid_config",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::RequestNotFound { .. } => "request_not_found",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Rejected { .. } => "rejected_by_rule",
            ApiError::Upstream {
                failure: UpstreamFailure::BadGateway,
                ..
            } => "upstream_error",
            ApiError::Upstream {
                failure: UpstreamFailure::Timeout,
                ..
            } => "upstream_timeout",
            ApiError::UpstreamRejected { .. } => "upstream_rejected",
            ApiError::Internal { .. } => "internal",
            ApiError::Unavailable { code, .. } => code,
        }
    }

    /// The OpenAI error `type`.
    fn error_type(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::RequestTimeout { .. }
            | ApiError::ModelNotFound { .. }
            | ApiError::RequestNotFound { .. }
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::Rejected { .. }
            | ApiError::UpstreamRejected { .. }
            | ApiError::InvalidConfig { .. } => "invalid_request_error",
            ApiError::Unauthorized { .. } => "authentication_error",
            ApiError::RateLimited { .. } => "rate_limit_error",
            ApiError::QuotaExceeded { .. } => "insufficient_quota",
            ApiError::Upstream { .. } => "upstream_error",
            ApiError::Internal { .. } | ApiError::Unavailable { .. } => "server_error",
        }
    }

    /// The OpenAI error `code`.
    fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::ModelNotFound { .. } => Some("model_not_found"),
            ApiError::RequestNotFound { .. } => Some("request_not_found"),
            ApiError::PayloadTooLarge { .. } => Some("request_too_large"),
            ApiError::RequestTimeout { .. } => Some("request_timeout"),
            ApiError::Rejected { .. } => Some("rejected_by_policy"),
            ApiError::Upstream {
                failure: UpstreamFailure::Timeout,
                ..
            } => Some("upstream_timeout"),
            ApiError::Upstream { .. } => Some("upstream_unavailable"),
            ApiError::BadRequest { .. } => Some("invalid_request"),
            ApiError::Unauthorized { .. } => Some("invalid_api_key"),
            ApiError::RateLimited { .. } => Some("rate_limit_exceeded"),
            ApiError::QuotaExceeded { .. } => Some("insufficient_quota"),
            ApiError::InvalidConfig { .. } => Some("invalid_config"),
            ApiError::Unavailable { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The human-readable message, as every API shape carries it.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest { message, .. }
            | ApiError::Rejected { message, .. }
            | ApiError::Upstream { message, .. }
            | ApiError::UpstreamRejected { message, .. }
            | ApiError::Unauthorized { message }
            | ApiError::RateLimited { message, .. }
            | ApiError::QuotaExceeded { message, .. }
            | ApiError::InvalidConfig { message }
            | ApiError::Internal { message }
            | ApiError::Unavailable { message, .. } => message.clone(),
            ApiError::PayloadTooLarge { limit } => {
                format!("request body is larger than the limit of {limit} bytes")
            }
            ApiError::RequestTimeout { limit_ms } => {
                format!("the request body did not arrive within {limit_ms} ms")
            }
            ApiError::ModelNotFound { model } => format!(
                "the model `{model}` does not exist; GET /v1/models lists the models this gateway serves"
            ),
            // The same words whether the id is unknown or another team's: ids of other
            // teams cannot be probed.
            ApiError::RequestNotFound { request_id } => format!(
                "no request `{request_id}` that this key may rate is in the ledger; use the x-crossroads-request-id of a response"
            ),
            ApiError::NotFound => "no such endpoint".to_owned(),
            ApiError::MethodNotAllowed => "method not allowed on this endpoint".to_owned(),
        }
    }

    fn param(&self) -> Option<&'static str> {
        match self {
            ApiError::BadRequest { param, .. } => *param,
            ApiError::ModelNotFound { .. } => Some("model"),
            ApiError::RequestNotFound { .. } => Some("request_id"),
            _ => None,
        }
    }

    /// The error body as JSON bytes (also used for SSE error events).
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: String,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let body = Body {
            error: Inner {
                message: self.message(),
                kind: self.error_type(),
                param: self.param(),
                code: self.code(),
            },
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"error":{"message":"error"}}"#.to_vec())
    }
}

impl ApiError {
    /// The response for this error with `body` (an API's own error shape): its status,
    /// and `Retry-After` where the client should wait.
    pub fn respond_with(self, body: Vec<u8>) -> Response {
        let mut response = (self.status(), body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let ApiError::RateLimited {
            retry_after: Some(seconds),
            ..
        } = &self
            && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let ApiError::Unavailable { .. } = &self {
            // Redis is tried again after a one-second cool-down; the ledger drains in less.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.to_json();
        self.respond_with(body)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_error_shape() {
        let err = ApiError::ModelNotFound {
            model: "gpt-9".into(),
        };
        let value: serde_json::Value = serde_json::from_slice(&err.to_json()).unwrap_or_default();
        assert_eq!(value["error"]["code"], "model_not_found");
        assert_eq!(value["error"]["param"], "model");
        assert_eq!(value["error"]["type"], "invalid_request_error");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("gpt-9")
        );
        assert_eq!(err.status(), StatusCode::NOT_FOUND);
    }
}

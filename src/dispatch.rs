//! Dispatch: tries a pool's candidate deployments in order until one answers. Falls back
//! on connection errors, timeouts, 429 and 5xx that happen before the first byte; a
//! request the upstream rejects as invalid is not retried elsewhere.

use std::time::{Duration, Instant};

use crate::app::Runtime;
use crate::error::{ApiError, UpstreamFailure};
use crate::metrics::Metrics;
use crate::provider::{FailureKind, Reply, UpstreamError};
use crate::request::ChatRequest;

/// A deployment answered.
pub struct Dispatched {
    pub deployment: usize,
    pub reply: Reply,
    pub attempts: u32,
    /// `deployment:reason` of each failed attempt, comma-separated.
    pub fallbacks: String,
    /// Time the answering deployment took (to the first bytes, for streams).
    pub upstream_latency: Duration,
}

/// Every candidate failed.
pub struct DispatchFailed {
    pub error: ApiError,
    pub attempts: u32,
    pub fallbacks: String,
    pub last_deployment: Option<usize>,
}

/// Sends `request` to the first of `candidates` that answers before `deadline`.
pub async fn dispatch(
    rt: &Runtime,
    candidates: &[usize],
    request: &ChatRequest,
    max_tokens_cap: Option<u64>,
    deadline: Instant,
    metrics: &Metrics,
) -> Result<Dispatched, DispatchFailed> {
    let mut attempts = 0;
    let mut fallbacks = String::new();
    let mut last: Option<(usize, UpstreamError)> = None;
    for (position, &index) in candidates.iter().enumerate() {
        let (Some(deployment), Some(upstream)) =
            (rt.config.deployments.get(index), rt.upstreams.get(index))
        else {
            continue;
        };
        if Instant::now() >= deadline {
            break;
        }
        attempts += 1;
        let started = Instant::now();
        let body = request.upstream_body(&deployment.model, max_tokens_cap);
        let result = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            upstream.send(body, request.stream),
        )
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::new(
                FailureKind::Timeout,
                "the request deadline passed before any deployment answered",
            ))
        });
        match result {
            Ok(reply) => {
                return Ok(Dispatched {
                    deployment: index,
                    reply,
                    attempts,
                    fallbacks,
                    upstream_latency: started.elapsed(),
                });
            }
            Err(e) => {
                let kind = e.kind.as_str();
                metrics
                    .upstream_errors
                    .with_label_values(&[deployment.id.as_str(), kind])
                    .inc();
                tracing::warn!(deployment = %deployment.id, kind, message = %e.message, "upstream attempt failed");
                if !e.kind.retryable() {
                    return Err(DispatchFailed {
                        error: ApiError::UpstreamRejected {
                            status: axum::http::StatusCode::from_u16(e.status.unwrap_or(400))
                                .unwrap_or(axum::http::StatusCode::BAD_REQUEST),
                            message: e.message,
                        },
                        attempts,
                        fallbacks,
                        last_deployment: Some(index),
                    });
                }
                if position + 1 < candidates.len() {
                    metrics.fallbacks.with_label_values(&[kind]).inc();
                }
                if !fallbacks.is_empty() {
                    fallbacks.push(',');
                }
                fallbacks.push_str(&deployment.id);
                fallbacks.push(':');
                fallbacks.push_str(kind);
                last = Some((index, e));
            }
        }
    }
    let (last_deployment, error) = match last {
        Some((index, e)) => {
            let failure = if e.kind == FailureKind::Timeout {
                UpstreamFailure::Timeout
            } else {
                UpstreamFailure::BadGateway
            };
            let message = if attempts > 1 {
                format!("all {attempts} deployments failed; last: {}", e.message)
            } else {
                e.message
            };
            (Some(index), ApiError::Upstream { failure, message })
        }
        None => (
            None,
            ApiError::Upstream {
                failure: UpstreamFailure::Timeout,
                message: "the request deadline passed before any deployment was tried".into(),
            },
        ),
    };
    Err(DispatchFailed {
        error,
        attempts,
        fallbacks,
        last_deployment,
    })
}

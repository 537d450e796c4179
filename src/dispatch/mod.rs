//! Dispatch: tries deployments in the order the pool's strategy gives until one
//! answers. It moves on after connection errors, timeouts, 429 and 5xx that happen
//! before the first byte, skips deployments that are full or whose context window is
//! too small, feeds passive health checks, and makes further passes with exponential
//! back-off and jitter (honouring Retry-After) until the request's deadline. A request
//! the upstream rejects as invalid is not retried.

mod health;
mod order;

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use health::{Health, HealthView, Slot};
pub use order::{Candidate, order};

use crate::config::Config;
use crate::error::{ApiError, UpstreamFailure};
use crate::metrics::{Metrics, UpstreamErrorLabels};
use crate::provider::Upstream;
use crate::provider::{FailureKind, Reply, UpstreamError};
use crate::request::Request;
use crate::route::{DeploymentId, PoolId};

/// A deployment's client and its health, kept across reloads while it is unchanged.
pub struct Backend {
    pub upstream: Upstream,
    pub health: Arc<Health>,
}

impl Backend {
    pub fn new(upstream: Upstream) -> Self {
        Backend {
            upstream,
            health: Arc::default(),
        }
    }
}

/// What dispatch needs to know about the request.
pub struct Job<'a> {
    pub request: &'a Request,
    /// The pool the route chose.
    pub pool: PoolId,
    /// Estimated prompt tokens, for context windows.
    pub prompt_tokens: u64,
    /// Output tokens each choice may generate ([`crate::request::Limits::max_tokens`]).
    pub max_tokens: Option<u64>,
    pub deadline: Instant,
    /// A spent budget leaves only zero-cost deployments.
    pub free_only: bool,
}

/// A deployment answered.
pub struct Dispatched {
    pub deployment: DeploymentId,
    pub reply: Reply,
    pub attempts: u32,
    /// The candidates failed or skipped before it.
    pub fallbacks: Fallbacks,
    /// Time the answering deployment took (to the first bytes, for streams).
    pub upstream_latency: Duration,
    /// The deployment's in-flight slot: hold it until the response is done.
    pub slot: Slot,
}

/// Every candidate failed.
pub struct DispatchFailed {
    pub error: ApiError,
    pub attempts: u32,
    pub fallbacks: Fallbacks,
    pub last_deployment: Option<DeploymentId>,
}

/// A cheap per-thread random number in [0, 1), for weights and jitter.
fn random() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        );
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Failures that say something about the deployment's health (not the request's).
fn hurts_health(kind: FailureKind) -> bool {
    !matches!(kind, FailureKind::Rejected | FailureKind::RateLimited)
}

/// Why dispatch passed a candidate over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// It costs money and the budget left only free deployments.
    Budget,
    /// The prompt and the output asked for do not fit its context window.
    ContextWindow,
    /// All its `max_concurrency` slots were taken.
    AtCapacity,
    /// It was tried and failed so.
    Failed(FailureKind),
}

impl Skipped {
    /// The reason as the ledger and the metrics label write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Budget => "budget",
            Skipped::ContextWindow => "context_window",
            Skipped::AtCapacity => "at_capacity",
            Skipped::Failed(kind) => kind.as_str(),
        }
    }
}

/// The candidates a request passed over, in order: deployment id and why. The ledger
/// stores it as its display, `id:reason` comma-separated.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fallbacks(Vec<(String, Skipped)>);

impl Fallbacks {
    fn note(&mut self, deployment: &str, why: Skipped) {
        self.0.push((deployment.to_owned(), why));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Fallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (id, why)) in self.0.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            write!(f, "{comma}{id}:{}", why.as_str())?;
        }
        Ok(())
    }
}

/// Sends the job to the first deployment that answers before its deadline.
pub async fn dispatch(
    config: &Config,
    backends: &[Arc<Backend>],
    job: &Job<'_>,
    metrics: &Metrics,
) -> Result<Dispatched, DispatchFailed> {
    let mut attempts = 0;
    let mut fallbacks = Fallbacks::default();
    let mut last: Option<(DeploymentId, UpstreamError)> = None;
    // Saturating: a client may ask for `max_tokens` up to u64::MAX, which fits nowhere.
    let wanted_tokens = job
        .prompt_tokens
        .saturating_add(job.max_tokens.unwrap_or(0));
    for pass in 0..=config.server.retries {
        if pass > 0 {
            let backoff = config
                .server
                .retry_backoff
                .saturating_mul(1 << (pass - 1).min(10));
            let asked = last
                .as_ref()
                .and_then(|(_, e)| e.retry_after)
                .unwrap_or_default()
                .min(config.server.max_retry_wait);
            let wait = backoff.max(asked).mul_f64(0.5 + random());
            if Instant::now() + wait >= job.deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        let candidates = order(
            &config.routes,
            job.pool,
            &|d| Candidate {
                health: backends.get(d.0).map_or(
                    HealthView {
                        ejected: false,
                        latency_us: None,
                    },
                    |b| b.health.view(),
                ),
                price: config
                    .deployment(d)
                    .map_or(0, |d| d.price.input.micros() + d.price.output.micros()),
            },
            &mut random,
        );
        for (position, index) in candidates.iter().copied().enumerate() {
            let (Some(deployment), Some(backend)) =
                (config.deployment(index), backends.get(index.0))
            else {
                continue;
            };
            if Instant::now() >= job.deadline {
                break;
            }
            if job.free_only && deployment.price.upper_bound(1, 1) > crate::accounting::Usd::ZERO {
                fallbacks.note(&deployment.id, Skipped::Budget);
                continue;
            }
            if deployment.context_window.is_some_and(|w| wanted_tokens > w) {
                fallbacks.note(&deployment.id, Skipped::ContextWindow);
                continue;
            }
            let Some(slot) = backend.health.try_acquire(deployment.max_concurrency) else {
                fallbacks.note(&deployment.id, Skipped::AtCapacity);
                let why = Skipped::AtCapacity.as_str();
                metrics.fallbacks.with_label_values(&[why]).inc();
                continue;
            };
            attempts += 1;
            let started = Instant::now();
            let result = tokio::time::timeout_at(
                tokio::time::Instant::from_std(job.deadline),
                backend.upstream.send(job.request, job.max_tokens),
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
                    let upstream_latency = started.elapsed();
                    backend.health.record_success(upstream_latency);
                    return Ok(Dispatched {
                        deployment: index,
                        reply,
                        attempts,
                        fallbacks,
                        upstream_latency,
                        slot,
                    });
                }
                Err(e) => {
                    drop(slot);
                    let kind = e.kind.as_str();
                    metrics.count_upstream_error(&UpstreamErrorLabels {
                        deployment: &deployment.id,
                        kind,
                    });
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
                    if hurts_health(e.kind) && backend.health.record_failure(&config.health) {
                        metrics
                            .ejections
                            .with_label_values(&[deployment.id.as_str()])
                            .inc();
                        tracing::warn!(deployment = %deployment.id, "deployment ejected after consecutive failures");
                    }
                    if position + 1 < candidates.len() {
                        metrics.fallbacks.with_label_values(&[kind]).inc();
                    }
                    fallbacks.note(&deployment.id, Skipped::Failed(e.kind));
                    last = Some((index, e));
                }
            }
        }
    }
    let (last_deployment, error) = match last {
        Some((index, e)) => (Some(index), final_error(e, attempts)),
        None if !fallbacks.is_empty() => (
            None,
            ApiError::Upstream {
                failure: UpstreamFailure::BadGateway,
                message: format!("no deployment could take the request ({fallbacks})"),
            },
        ),
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

/// The client's error after every attempt failed: rate limits stay 429 with their
/// Retry-After so SDKs back off; timeouts are 504; everything else 502.
fn final_error(e: UpstreamError, attempts: u32) -> ApiError {
    let message = if attempts > 1 {
        format!("all {attempts} attempts failed; last: {}", e.message)
    } else {
        e.message
    };
    match e.kind {
        FailureKind::RateLimited => ApiError::RateLimited {
            message,
            retry_after: e.retry_after.map(|d| d.as_secs().max(1)),
        },
        FailureKind::Timeout => ApiError::Upstream {
            failure: UpstreamFailure::Timeout,
            message,
        },
        _ => ApiError::Upstream {
            failure: UpstreamFailure::BadGateway,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallbacks_are_written_as_id_reason_pairs_in_order() {
        let mut f = Fallbacks::default();
        assert_eq!(f.to_string(), "");
        f.note("local-a", Skipped::AtCapacity);
        f.note("local-b", Skipped::Failed(FailureKind::Timeout));
        f.note("frontier", Skipped::Budget);
        assert_eq!(
            f.to_string(),
            "local-a:at_capacity,local-b:timeout,frontier:budget"
        );
    }
}

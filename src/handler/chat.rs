//! `POST /v1/chat/completions`: the gateway's main path (stages listed in [`crate::app::router`]).

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::cached::{self, Step};
use super::exchange::Exchange;
use super::read_body;
use super::stream::MeteredStream;
use crate::accounting::Usd;
use crate::admission::{self, Reservation, Scope};
use crate::app::{AppState, Runtime};
use crate::auth::KeyInfo;
use crate::classify::Classification;
use crate::config::BudgetConfig;
use crate::dispatch::{Job, dispatch};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::provider::Reply;
use crate::request::ChatRequest;
use crate::route::{Action, RouteDecision, RouteInput};

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let rt = state.runtime();
    let mut ex = Exchange::new(&state, rt.clone(), "chat.completions");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let key = match state
        .keyring
        .authenticate(authorization, rt.config.auth.required)
    {
        Ok(key) => key,
        Err(e) => return ex.fail(e),
    };
    ex.authenticated(key.as_deref());
    let request = match read_body(&headers, body, rt.config.server.body_limit)
        .await
        .and_then(|bytes| ChatRequest::parse(&bytes))
    {
        Ok(r) => r,
        Err(e) => return ex.fail(e),
    };
    ex.parsed(&request);
    let (classification, decision) = match classify_and_route(
        &rt,
        Some(&state.metrics),
        &request,
        &headers,
        key.as_deref(),
    ) {
        Ok(c) => c,
        Err(e) => return ex.fail(e),
    };
    ex.classified(&classification);
    ex.routed(&decision);
    if let Some(key) = &key
        && let Err((e, limit)) = state.limiter.admit(
            &key.id,
            key.rpm,
            key.tpm,
            classification.features.prompt_tokens,
            admission::now_ms(),
        )
    {
        state.metrics.rate_limited.with_label_values(&[limit]).inc();
        return ex.fail(e);
    }
    let pool = match decision.action {
        Action::Pool(p) => p,
        Action::Reject { status, message } => {
            return ex.fail(ApiError::Rejected {
                rule: rt.config.routes.via_id(decision.via).to_owned(),
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                message,
            });
        }
    };
    // Before the budget: a hit costs nothing. Teams share only their own answers.
    let team = key.as_deref().and_then(|k| k.team.as_deref());
    let store =
        match cached::lookup(&mut ex, &request, &headers, team, pool, decision.max_tokens).await {
            Step::Hit(response) => return response,
            Step::Miss(store) => store,
        };
    let mut free_only = false;
    if let Some(key) = &key {
        match reserve_budget(&state, &rt, key, pool, &request, &classification) {
            Ok((reservation, only_free)) => {
                ex.reserved(reservation);
                free_only = only_free;
            }
            Err(e) => return ex.fail(e),
        }
    }
    let job = Job {
        free_only,
        request: &request,
        pool,
        prompt_tokens: classification.features.prompt_tokens,
        max_tokens_cap: decision.max_tokens,
        deadline: Instant::now() + rt.config.server.request_timeout,
    };
    let dispatched = match dispatch(&rt, &job, &state.metrics).await {
        Ok(d) => d,
        Err(failed) => {
            ex.dispatch_failed(&failed);
            return ex.fail(failed.error);
        }
    };
    ex.dispatched(&dispatched);
    match dispatched.reply {
        Reply::Complete { body, usage } => {
            let usage = match usage {
                Some(usage) => usage,
                // Counted with the model family's tokenizer on a blocking thread, before
                // answering: the cost header needs it. Only replies without usage wait.
                None => {
                    let text = crate::accounting::usage::completion_text(&body);
                    ex.counting(Some(request.clone()), text)
                        .count_off_runtime()
                        .await
                }
            };
            store.complete(&body, usage);
            let mut headers = ex.headers();
            let costing = ex.finish(200, None, usage, None);
            if let Ok(cost) = HeaderValue::from_str(&costing.cost.to_string()) {
                headers.insert("x-crossroads-cost-usd", cost);
            }
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            (StatusCode::OK, headers, body).into_response()
        }
        Reply::Stream { first, rest } => {
            let mut headers = ex.headers();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            let stream =
                MeteredStream::new(ex, first, rest, dispatched.slot, store.recorder(), request);
            (StatusCode::OK, headers, Body::from_stream(stream)).into_response()
        }
    }
}

/// Reserves the request's upper-bound cost against its key's and team's budgets: the
/// prompt plus `max_tokens` (or the configured default) at the dearest deployment the
/// pool may use. When that does not fit but the pool has free (local) deployments, the
/// request may still go to those alone: the returned flag says so.
fn reserve_budget(
    state: &AppState,
    rt: &Runtime,
    key: &KeyInfo,
    pool: usize,
    request: &ChatRequest,
    classification: &Classification,
) -> Result<(Reservation, bool), ApiError> {
    let config = &rt.config;
    let team_budget = key.team.as_ref().and_then(|team| {
        config
            .teams
            .iter()
            .find(|t| &t.id == team)
            .and_then(|t| t.budget)
            .map(|b| (Scope::Team(team.clone()), b))
    });
    let limits: Vec<(Scope, BudgetConfig)> = key
        .budget
        .map(|b| (Scope::Key(key.id.clone()), b))
        .into_iter()
        .chain(team_budget)
        .collect();
    if limits.is_empty() {
        return Ok((state.budgets.reserve(&[], Usd::ZERO, false, 0)?, false));
    }
    let max_output = request
        .max_tokens
        .unwrap_or(config.budgets.default_max_tokens);
    // A true upper bound, not the classifier's estimate: an estimate below the real
    // count would let concurrent requests settle past the budget.
    let features = &classification.features;
    let prompt = crate::accounting::tokens::prompt_upper_bound(features.chars, features.messages);
    let bounds: Vec<Usd> = config
        .routes
        .pools
        .get(pool)
        .map(|p| p.candidates.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|d| config.deployments.get(*d))
        .map(|d| d.price.upper_bound(prompt, max_output))
        .collect();
    let upper = bounds.iter().copied().max().unwrap_or_default();
    let now = admission::now_ms();
    let block_free = config.budgets.block_free_traffic;
    match state.budgets.reserve(&limits, upper, block_free, now) {
        Ok(reservation) => Ok((reservation, false)),
        Err(_) if bounds.contains(&Usd::ZERO) && !block_free => {
            // The paid deployments do not fit; the free ones still may serve.
            Ok((state.budgets.reserve(&limits, Usd::ZERO, false, now)?, true))
        }
        Err(e) => {
            if let ApiError::QuotaExceeded { scope, .. } = &e {
                state
                    .metrics
                    .budget_rejections
                    .with_label_values(&[scope])
                    .inc();
            }
            Err(e)
        }
    }
}

/// Stages 3-5: resolve the model, classify, decide. Shared with explain, which passes
/// no metrics: explaining is not traffic.
pub(crate) fn classify_and_route(
    rt: &Runtime,
    metrics: Option<&Metrics>,
    request: &ChatRequest,
    headers: &HeaderMap,
    caller: Option<&KeyInfo>,
) -> Result<(Classification, RouteDecision), ApiError> {
    let routes = &rt.config.routes;
    let requested = routes
        .resolve(&request.model)
        .ok_or_else(|| ApiError::ModelNotFound {
            model: request.model.clone(),
        })?;
    let started = Instant::now();
    let classifier = &rt.config.classifier;
    let classification = classifier.classify(&request.prompt());
    if let Some(metrics) = metrics {
        metrics
            .classifier_duration
            .observe(started.elapsed().as_secs_f64());
        metrics
            .classifications
            .with_label_values(&[classifier.labels().name(classification.label)])
            .inc();
    }
    let decision = routes.decide(&RouteInput {
        requested,
        classification: &classification,
        headers,
        key: caller.map(|k| k.id.as_str()),
        team: caller.and_then(|k| k.team.as_deref()),
    });
    Ok((classification, decision))
}

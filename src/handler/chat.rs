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
use crate::admission::{self, Admitted, Ask, Refused, Scope};
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

/// How long a request waits for room in the ledger's queue before it is refused.
const LEDGER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let rt = state.runtime();
    let mut ex = Exchange::new(&state, rt.clone(), "chat.completions");
    if let Err(e) = ex.reserve_record(LEDGER_WAIT).await {
        return ex.fail(e);
    }
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
    let request = match read_body(&headers, body, &rt.config.server)
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
    // Rate limits count every request of the key, rejected by a rule or not; the
    // budget's answer waits for the cache lookup.
    let routed_pool = match decision.action {
        Action::Pool(p) => Some(p),
        Action::Reject { .. } => None,
    };
    let admitted = match &key {
        Some(key) => match admit(&state, &rt, key, routed_pool, &request, &classification).await {
            Ok(admitted) => Some(admitted),
            Err(e) => return ex.fail(e),
        },
        None => None,
    };
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
    if let Some(admitted) = admitted {
        match admitted.budget {
            Ok((reservation, only_free)) => {
                ex.reserved(reservation);
                free_only = only_free;
            }
            Err(e) => {
                if let ApiError::QuotaExceeded { scope, .. } = &e {
                    state
                        .metrics
                        .budget_rejections
                        .with_label_values(&[scope])
                        .inc();
                }
                return ex.fail(e);
            }
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
                    ex.generated(&text);
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

/// Admission ([`crate::admission`]): counts the request against its key's rate limits
/// and reserves its upper-bound cost against its key's and team's budgets: the prompt
/// plus `max_tokens` (or the configured default) at the dearest deployment the pool may
/// use. When that does not fit but the pool has free (local) deployments, the request
/// may still go to those alone: the budget's answer says so.
async fn admit(
    state: &AppState,
    rt: &Runtime,
    key: &KeyInfo,
    pool: Option<usize>,
    request: &ChatRequest,
    classification: &Classification,
) -> Result<Admitted, ApiError> {
    let config = &rt.config;
    let team_budget = key.team.as_ref().and_then(|team| {
        config
            .teams
            .iter()
            .find(|t| &t.id == team)
            .and_then(|t| t.budget)
            .map(|b| (Scope::Team(team.clone()), b))
    });
    // A request a rule rejects is sent nowhere: it reserves nothing.
    let limits: Vec<(Scope, BudgetConfig)> = match pool {
        Some(_) => key
            .budget
            .map(|b| (Scope::Key(key.id.clone()), b))
            .into_iter()
            .chain(team_budget)
            .collect(),
        None => Vec::new(),
    };
    let prompt = classification.features.prompt_tokens;
    // A true upper bound for the reservation, not the classifier's estimate: an
    // estimate below the real count would let concurrent requests settle past the budget.
    let prompt_bound = crate::accounting::tokens::prompt_upper_bound(
        request.body_bytes,
        classification.features.images,
    );
    let bounds: Vec<Usd> = if limits.is_empty() {
        Vec::new()
    } else {
        let max_output = request
            .max_tokens
            .unwrap_or(config.budgets.default_max_tokens)
            .saturating_mul(request.choices);
        pool.and_then(|p| config.routes.pools.get(p))
            .map(|p| p.candidates.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|d| config.deployments.get(*d))
            .map(|d| d.price.upper_bound(prompt_bound, max_output))
            .collect()
    };
    let ask = Ask {
        key: &key.id,
        rpm: key.rpm,
        tpm: key.tpm,
        tokens: prompt,
        budgets: &limits,
        amount: bounds.iter().copied().max().unwrap_or_default(),
        free_fallback: bounds.contains(&Usd::ZERO),
        block_free: config.budgets.block_free_traffic,
        now_ms: admission::now_ms(),
    };
    match state.admission.admit(&ask).await {
        Ok(admitted) => Ok(admitted),
        Err(Refused::Rate(e, limit)) => {
            state.metrics.rate_limited.with_label_values(&[limit]).inc();
            Err(e)
        }
        Err(Refused::Unavailable(e)) => Err(e),
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

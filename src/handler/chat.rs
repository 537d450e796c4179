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
use crate::app::{AppState, Runtime};
use crate::classify::Classification;
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
    let request = match read_body(&headers, body, rt.config.server.body_limit)
        .await
        .and_then(|bytes| ChatRequest::parse(&bytes))
    {
        Ok(r) => r,
        Err(e) => return ex.fail(e),
    };
    ex.parsed(&request);
    let (classification, decision) =
        match classify_and_route(&rt, &state.metrics, &request, &headers) {
            Ok(c) => c,
            Err(e) => return ex.fail(e),
        };
    ex.classified(&classification);
    ex.routed(&decision);
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
    let store = match cached::lookup(&mut ex, &request, &headers, pool, decision.max_tokens).await {
        Step::Hit(response) => return response,
        Step::Miss(store) => store,
    };
    let job = Job {
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
        Reply::Complete {
            body,
            usage,
            output_chars,
        } => {
            let usage = usage.unwrap_or_else(|| ex.estimated_usage(output_chars));
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
            let stream = MeteredStream::new(
                ex,
                first,
                rest,
                request.include_usage,
                dispatched.slot,
                store.recorder(),
            );
            (StatusCode::OK, headers, Body::from_stream(stream)).into_response()
        }
    }
}

/// Stages 3-5: resolve the model, classify, decide. Shared with explain.
pub(crate) fn classify_and_route(
    rt: &Runtime,
    metrics: &Metrics,
    request: &ChatRequest,
    headers: &HeaderMap,
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
    metrics
        .classifier_duration
        .observe(started.elapsed().as_secs_f64());
    metrics
        .classifications
        .with_label_values(&[classifier.labels().name(classification.label)])
        .inc();
    let decision = routes.decide(&RouteInput {
        requested,
        classification: &classification,
        headers,
    });
    Ok((classification, decision))
}

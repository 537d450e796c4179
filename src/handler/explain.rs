//! `POST /v1/route/explain`: the routing decision for a chat-completions body, with its
//! reasons, computed by the same code that serves and without calling any upstream.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::pipeline::{Caller, budget_used, read_body};
use crate::request::Request;
use crate::route::Action;
use crate::state::{AppState, Runtime};

pub async fn explain(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let rt = state.runtime();
    let request = match read_body(&headers, body, &rt.config.server)
        .await
        .and_then(|bytes| Request::parse(&bytes))
    {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    // A presented key makes team, key and budget rules apply; explain never requires one.
    let key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| state.keyring.authenticate(Some(a), false).ok().flatten());
    let caller = Caller {
        key: key.as_deref(),
        budget_used: budget_used(&state, &rt, &request, key.as_deref()).await,
    };
    match explain_request(&rt, &request, &headers, caller) {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The explanation of how `request` would be routed, as JSON.
pub fn explain_request(
    rt: &Runtime,
    request: &Request,
    headers: &HeaderMap,
    caller: Caller<'_>,
) -> Result<Value, ApiError> {
    let (classification, _) = crate::pipeline::route(rt, None, request, headers, caller)?;
    let config = &rt.config;
    let routes = &config.routes;
    let classifier = config.classifier.as_ref();
    let requested = routes
        .resolve(&request.model)
        .ok_or_else(|| ApiError::ModelNotFound {
            model: request.model.clone(),
        })?;
    let explanation = crate::route::explain(
        routes,
        classifier,
        &caller.input(requested, &classification, headers),
    );
    let decision = &explanation.decision;
    let (pool, deployments, reject) = match &decision.action {
        Action::Pool(p) => {
            let pool = routes.pool(*p);
            let deployments: Vec<Value> = pool
                .map(|p| p.candidates.as_slice())
                .unwrap_or_default()
                .iter()
                .filter_map(|d| config.deployment(*d))
                .map(|d| {
                    json!({
                        "id": d.id,
                        "tier": d.tier.as_str(),
                        "provider": d.provider.as_str(),
                        "model": d.model,
                    })
                })
                .collect();
            (pool.map(|p| p.id.clone()), deployments, Value::Null)
        }
        Action::Reject { status, message } => (
            None,
            Vec::new(),
            json!({ "status": status, "message": message }),
        ),
    };
    let c = &classification;
    Ok(json!({
        "model": request.model,
        "classification": {
            "label": classifier.labels().name(c.label),
            "confidence": c.confidence,
            "task": classifier.task_labels().name(c.task),
            "task_confidence": c.task_confidence,
            "difficulty": c.difficulty,
            "pii": c.pii.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            "signals": c.features.signals.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "prompt_tokens": c.features.prompt_tokens,
        },
        "rule": routes.via_id(decision.via),
        "action": if reject.is_null() { "route" } else { "reject" },
        "pool": pool,
        "deployments": deployments,
        "reject": reject,
        "reasons": explanation.reasons,
    }))
}

//! The request path, assembled in one place. Every inbound API ([`crate::frontend`])
//! runs through [`serve`], which names each stage in order; a front-end only parses its
//! wire format into the common [`Request`] and renders the common result back.
//!
//! 1. **Ledger room** ([`finish::Finisher::reserve_record`]): a ledger that falls
//!    behind refuses new requests (503) before they cost anything.
//! 2. **Authenticate** ([`crate::auth`]): the front-end says where its clients send the
//!    key.
//! 3. **Body** ([`read_body`]): bodies over the live config's
//!    `server.body_limit_bytes` get a 413, bodies slower than its request timeout a 408.
//! 4. **Parse** ([`FrontEnd::parse`]): the body is parsed and checked once; every field
//!    the gateway does not interpret passes through untouched.
//! 5. **Classify and route** ([`route`]: [`crate::classify`], [`crate::route`]): `model`
//!    is `auto` or an alias (else 404 `model_not_found`); label, confidence,
//!    difficulty, PII; the first matching rule gives a pool or a rejection.
//! 6. **Limits** ([`Limits::resolve`]): the output the request may generate and the
//!    output admission reserves, worked out once and passed to every later stage.
//! 7. **Rate limits** ([`admit::admit`]): the key's RPM/TPM counted and the upper-bound
//!    cost reserved against its key's and team's budgets in one step (one Redis round
//!    trip with `[limits] backend = "redis"`). A rate limit answers 429 here; a rule's
//!    rejection answers after it, so rejected requests still count.
//! 8. **Cache** ([`cache::lookup`]): after routing, because the key holds the pool. A
//!    hit is answered here, costs 0 and calls no upstream; on a miss the answer of
//!    stage 10 is stored once complete unless the client said `no-store`.
//! 9. **Budget** ([`admit::budget`]): a spent budget answers 429 now, or leaves only
//!    the pool's free deployments.
//! 10. **Dispatch** ([`crate::dispatch`]): the pool's candidates in order, falling back
//!     before the first byte; upstream wire formats in [`crate::provider`].
//! 11. **Answer** ([`respond`]): replies without usage are counted with the model
//!     family's tokenizer off the runtime; streams are metered as they pass
//!     ([`stream::MeteredStream`]); the front-end renders the body.
//! 12. **Finish** ([`finish`]): usage → exact cost and reference cost → budget settled,
//!     metrics, one ledger record, for every request, streamed or not, failed or not,
//!     cached or not, including clients that disconnect mid-stream. With `[ledger]
//!     durability = "commit"` (the default) a response's last bytes (the JSON body,
//!     a stream's `[DONE]`) go out only once its record is committed. The response
//!     carries `x-crossroads-request-id`, `-rule`, `-pool`, `-deployment`, `-tier`,
//!     `-class`, `-cache` (`hit`, `miss` or `bypass`) and, when not streamed,
//!     `-cost-usd`.

mod admit;
mod body;
mod cache;
pub mod finish;
mod frontend;
pub mod record;
mod stream;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

pub use admit::budget_used;
pub use body::read_body;
pub use frontend::FrontEnd;

use self::cache::{Place, Step, Store};
use self::finish::Finisher;
use self::stream::MeteredStream;
use crate::accounting::Usage;
use crate::auth::KeyInfo;
use crate::cache::Lookup;
use crate::classify::Classification;
use crate::dispatch::{Dispatched, Job, dispatch};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::provider::Reply;
use crate::request::{Limits, Request};
use crate::route::{Action, Api, Requested, RouteDecision, RouteInput};
use crate::state::{AppState, Runtime};

/// How long a request waits for room in the ledger's queue before it is refused.
const LEDGER_WAIT: Duration = Duration::from_secs(5);

/// Serves one request of front-end `F`.
pub async fn serve<F: FrontEnd>(state: AppState, headers: HeaderMap, body: Body) -> Response {
    let rt = state.runtime();
    let mut finisher = Finisher::new(&state, rt.clone(), F::ENDPOINT);
    match stages::<F>(&state, &rt, &mut finisher, &headers, body).await {
        Ok(answer) => respond(finisher, answer).await,
        Err(error) => {
            let known = finisher.fail(&error);
            finisher.committed().await;
            let mut response = F::error(error);
            response.headers_mut().extend(known);
            response
        }
    }
}

/// What the stages produced: an answer from the cache or from a deployment. One per
/// request, moved once: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Answer<F> {
    Cached {
        front: F,
        stream: bool,
        body: Bytes,
        usage: Usage,
    },
    Fresh {
        front: F,
        request: Request,
        dispatched: Dispatched,
        store: Store,
    },
}

/// Stages 1-10, each recording its outcome in the finisher's draft.
async fn stages<F: FrontEnd>(
    state: &AppState,
    rt: &Runtime,
    finisher: &mut Finisher,
    headers: &HeaderMap,
    body: Body,
) -> Result<Answer<F>, ApiError> {
    finisher.reserve_record(LEDGER_WAIT).await?;
    let key = state
        .keyring
        .authenticate_key(F::credential(headers), rt.config.auth.required)?;
    if let Some(key) = &key {
        finisher.authenticated(key);
    }
    let bytes = read_body(headers, body, &rt.config.server).await?;
    let (front, request) = F::parse(&bytes)?;
    finisher.draft.parsed(&request);

    let caller = Caller {
        key: key.as_deref(),
        budget_used: budget_used(state, rt, &request, key.as_deref()).await,
    };
    let (classification, decision) = route(rt, Some(&state.metrics), &request, headers, caller)?;
    finisher.draft.classified(&rt.config, &classification);
    finisher.draft.routed(&rt.config, &decision);
    let limits = Limits::resolve(
        &request,
        decision.max_tokens,
        rt.config.budgets.default_max_tokens,
    );
    finisher.bounded(classification.features.prompt_tokens, limits);

    let routed_pool = match decision.action {
        Action::Pool(p) => Some(p),
        Action::Reject { .. } => None,
    };
    let admitted = match &key {
        Some(key) => Some(
            admit::admit(
                state,
                rt,
                key,
                routed_pool,
                &request,
                &classification,
                &limits,
            )
            .await?,
        ),
        None => None,
    };
    let pool = match decision.action {
        Action::Pool(p) => p,
        Action::Reject { status, message } => {
            return Err(ApiError::Rejected {
                rule: rt.config.routes.via_id(decision.via).to_owned(),
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
                message,
            });
        }
    };

    let place = Place {
        pool,
        team: key.as_deref().and_then(|k| k.team.as_deref()),
        max_tokens: limits.max_tokens,
    };
    let store =
        match cache::lookup(state.cache.as_ref(), &rt.config, &request, headers, place).await {
            Step::Hit { body, usage } => {
                finisher.draft.cache_lookup(Lookup::Hit);
                return Ok(Answer::Cached {
                    front,
                    stream: request.stream,
                    body,
                    usage,
                });
            }
            Step::Miss(lookup, store) => {
                finisher.draft.cache_lookup(lookup);
                store
            }
        };

    let mut free_only = false;
    if let Some(admitted) = admitted {
        let (reservation, only_free) = admit::budget(admitted, &state.metrics)?;
        finisher.reserved(reservation);
        free_only = only_free;
    }

    let job = Job {
        free_only,
        request: &request,
        pool,
        prompt_tokens: classification.features.prompt_tokens,
        max_tokens: limits.max_tokens,
        deadline: Instant::now() + rt.config.server.request_timeout,
    };
    let dispatched = match dispatch(&rt.config, &rt.backends, &job, &state.metrics).await {
        Ok(d) => d,
        Err(failed) => {
            finisher.draft.dispatch_failed(&rt.config, &failed);
            return Err(failed.error);
        }
    };
    finisher.draft.dispatched(&rt.config, &dispatched);
    Ok(Answer::Fresh {
        front,
        request,
        dispatched,
        store,
    })
}

/// Stages 11-12: the answer, in the front-end's shape, and the request finished.
async fn respond<F: FrontEnd>(mut finisher: Finisher, answer: Answer<F>) -> Response {
    let headers = finisher.headers();
    match answer {
        Answer::Cached {
            front,
            stream: true,
            body,
            usage,
        } => {
            let ttft = finisher.started().elapsed();
            finisher.finish(200, None, usage, Some(ttft));
            finisher.committed().await;
            let once = futures_util::stream::once(std::future::ready(Ok(body)));
            sse(headers, front.stream(once))
        }
        Answer::Cached {
            front, body, usage, ..
        } => {
            let costing = finisher.finish(200, None, usage, None);
            finisher.committed().await;
            json(headers, costing.cost, front.json(body, &usage))
        }
        Answer::Fresh {
            front,
            request,
            dispatched,
            store,
        } => match dispatched.reply {
            Reply::Complete { body, usage } => {
                let usage = match usage {
                    Some(usage) => usage,
                    // Counted with the model family's tokenizer on a blocking thread,
                    // before answering: the cost header needs it. Only replies without
                    // usage wait.
                    None => {
                        let text = crate::accounting::usage::completion_text(&body);
                        finisher.generated(&text);
                        finisher
                            .counting(Some(request), text)
                            .count_off_runtime()
                            .await
                    }
                };
                store.complete(&body, usage);
                let costing = finisher.finish(200, None, usage, None);
                finisher.committed().await;
                json(headers, costing.cost, front.json(body, &usage))
            }
            Reply::Stream { first, rest } => {
                let stream = MeteredStream::new(
                    finisher,
                    first,
                    rest,
                    dispatched.slot,
                    store.recorder(),
                    request,
                );
                sse(headers, front.stream(stream))
            }
        },
    }
}

fn json(mut headers: HeaderMap, cost: crate::accounting::Usd, body: Bytes) -> Response {
    if let Ok(cost) = HeaderValue::from_str(&cost.to_string()) {
        headers.insert("x-crossroads-cost-usd", cost);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (StatusCode::OK, headers, body).into_response()
}

fn sse(mut headers: HeaderMap, body: Body) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (StatusCode::OK, headers, body).into_response()
}

/// Who is asking, as the rules see it.
#[derive(Clone, Copy, Default)]
pub struct Caller<'a> {
    pub key: Option<&'a KeyInfo>,
    /// The share of its budget it has spent ([`budget_used`]).
    pub budget_used: Option<f32>,
}

impl<'a> Caller<'a> {
    /// What the rules read of a request for `requested`, classified as `classification`.
    pub fn input(
        self,
        requested: Requested,
        classification: &'a Classification,
        headers: &'a HeaderMap,
    ) -> RouteInput<'a> {
        RouteInput {
            requested,
            classification,
            headers,
            key: self.key.map(|k| k.id.as_str()),
            team: self.key.and_then(|k| k.team.as_deref()),
            budget_used: self.budget_used,
        }
    }
}

/// Stage 5: resolve the model, classify, decide. Shared with explain, which passes no
/// metrics: explaining is not traffic.
pub fn route(
    rt: &Runtime,
    metrics: Option<&Metrics>,
    request: &Request,
    headers: &HeaderMap,
    caller: Caller<'_>,
) -> Result<(Classification, RouteDecision), ApiError> {
    let routes = &rt.config.routes;
    let requested = routes
        .resolve(&request.model)
        .ok_or_else(|| ApiError::ModelNotFound {
            model: request.model.clone(),
        })?;
    let served = routes.api(requested);
    if served != request.api {
        return Err(wrong_api(&request.model, request.api, served));
    }
    let started = Instant::now();
    let classifier = &rt.config.classifier;
    let classification = classifier.classify(&request.prompt());
    let elapsed = started.elapsed();
    let decision = match (request.api, requested) {
        (Api::Embeddings, Requested::Alias(alias)) => routes.alias(alias),
        _ => routes.decide(&caller.input(requested, &classification, headers)),
    };
    if let Some(metrics) = metrics {
        metrics.classifier_duration.observe(elapsed.as_secs_f64());
        metrics
            .classifications
            .with_label_values(&[classifier.labels().name(classification.label)])
            .inc();
        metrics
            .rule_hits
            .with_label_values(&[routes.via_id(decision.via)])
            .inc();
        if let Some(shadow) = decision.shadow.and_then(|i| routes.rules.get(i)) {
            metrics
                .shadow_matches
                .with_label_values(&[shadow.id.as_str()])
                .inc();
        }
    }
    Ok((classification, decision))
}

/// A `model` that names another API's models: a 400 that says where to send it.
fn wrong_api(model: &str, asked: Api, served: Api) -> ApiError {
    let message = match (asked, model) {
        (Api::Embeddings, "auto") => "`auto` lets the rules choose a chat model; an \
             embeddings request names an embeddings model (GET /v1/models lists them)"
            .to_owned(),
        (Api::Embeddings, _) => format!(
            "`{model}` is a chat model; an embeddings request names an embeddings model \
             (GET /v1/models lists them)"
        ),
        (Api::Chat, _) => format!(
            "`{model}` is an {} model; send it to POST /v1/embeddings",
            served.as_str()
        ),
    };
    ApiError::bad_request(message, Some("model"))
}

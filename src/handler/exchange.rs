//! One request's bookkeeping: the ledger record being filled in as the request moves
//! through the stages, and the single place that finishes it into metrics and the
//! ledger. A request is recorded exactly once: on completion, on error, or when it is
//! dropped because the client went away.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::accounting::tokens::Encoding;
use crate::accounting::{Costing, Usage, Usd};
use crate::admission::Reservation;
use crate::app::{AppState, Runtime};
use crate::auth::KeyInfo;
use crate::cache::Lookup;
use crate::classify::Classification;
use crate::dispatch::{DispatchFailed, Dispatched};
use crate::error::ApiError;
use crate::ledger::{LedgerRecord, LedgerSlot};
use crate::metrics::status_class;
use crate::request::ChatRequest;
use crate::route::{Action, RouteDecision};

/// Status recorded for requests whose client disconnected (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

pub struct Exchange {
    state: AppState,
    rt: Arc<Runtime>,
    started: Instant,
    record: LedgerRecord,
    deployment: Option<usize>,
    /// Estimated prompt tokens, for when no usage is reported.
    prompt_tokens: u64,
    /// The budget reservation to settle with the actual cost.
    reservation: Option<Reservation>,
    /// The key whose rate window counts the generated tokens.
    rate_key: Option<String>,
    /// The matching rule's reference price, when it has its own.
    reference: Option<crate::accounting::Price>,
    /// The most output tokens the upstream may generate for one choice.
    max_tokens: Option<u64>,
    /// Choices asked for (`n`).
    choices: u64,
    /// Output tokens the upstream is known to have generated (a cheap estimate), for a
    /// request dropped while they are being counted.
    generated: u64,
    /// What the response cache did, for `x-crossroads-cache`.
    cache: Lookup,
    /// Room in the ledger's queue for this request's record.
    slot: Option<LedgerSlot>,
    finished: bool,
}

impl Exchange {
    /// Starts the bookkeeping for a request that just arrived.
    pub fn new(state: &AppState, rt: Arc<Runtime>, endpoint: &'static str) -> Self {
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Exchange {
            record: LedgerRecord {
                request_id: state.ids.next(),
                ts_ms,
                endpoint: endpoint.into(),
                ..LedgerRecord::default()
            },
            state: state.clone(),
            rt,
            started: Instant::now(),
            deployment: None,
            prompt_tokens: 0,
            reservation: None,
            rate_key: None,
            reference: None,
            max_tokens: None,
            choices: 1,
            generated: 0,
            cache: Lookup::Bypass,
            slot: None,
            finished: false,
        }
    }

    /// Waits for room for this request's record in the ledger's queue: the backpressure
    /// that keeps a ledger that falls behind from growing memory without bound. A
    /// request that finds none within `wait` is refused before it costs anything.
    pub async fn reserve_record(&mut self, wait: Duration) -> Result<(), ApiError> {
        self.slot = self.state.ledger.slot(wait).await;
        if self.slot.is_none() && self.state.ledger.is_open() {
            return Err(ApiError::Unavailable {
                message:
                    "the spend ledger is behind and cannot take another record yet; retry shortly"
                        .into(),
                code: "ledger_unavailable",
            });
        }
        Ok(())
    }

    /// Records who is calling.
    pub fn authenticated(&mut self, key: Option<&KeyInfo>) {
        if let Some(key) = key {
            self.record.key_id = Some(key.id.clone());
            self.record.team.clone_from(&key.team);
            if key.tpm.is_some() {
                self.rate_key = Some(key.id.clone());
            }
        }
    }

    /// Holds a budget reservation until the request is priced.
    pub fn reserved(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens
    }

    /// Records what the client asked for.
    pub fn parsed(&mut self, request: &ChatRequest) {
        self.record.requested_model.clone_from(&request.model);
        self.record.stream = request.stream;
        self.max_tokens = request.max_tokens;
        self.choices = request.choices;
        self.record.end_user = request
            .body
            .get("user")
            .and_then(|u| u.as_str())
            .map(str::to_owned);
    }

    /// Records the classifier's verdict.
    pub fn classified(&mut self, c: &Classification) {
        let classifier = &self.rt.config.classifier;
        self.record.label = Some(classifier.labels().name(c.label).to_owned());
        self.record.task = Some(classifier.task_labels().name(c.task).to_owned());
        self.record.confidence = Some(c.confidence);
        self.record.difficulty = Some(c.difficulty);
        self.record.pii_kinds = c
            .pii
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(",");
        self.prompt_tokens = c.features.prompt_tokens;
    }

    /// Records the routing decision.
    pub fn routed(&mut self, decision: &RouteDecision) {
        let routes = &self.rt.config.routes;
        if let crate::route::Via::Rule(i) = decision.via {
            self.reference = routes.rules.get(i).and_then(|r| r.reference);
        }
        if let Some(cap) = decision.max_tokens {
            self.max_tokens = Some(self.max_tokens.map_or(cap, |m| m.min(cap)));
        }
        let rule = routes.via_id(decision.via);
        self.state
            .metrics
            .rule_hits
            .with_label_values(&[rule])
            .inc();
        self.record.rule = Some(rule.to_owned());
        if let Some(shadow) = decision.shadow.and_then(|i| routes.rules.get(i)) {
            self.record.shadow_rule = Some(shadow.id.clone());
            self.state
                .metrics
                .shadow_matches
                .with_label_values(&[shadow.id.as_str()])
                .inc();
        }
        if let Action::Pool(p) = decision.action {
            self.record.pool = routes.pools.get(p).map(|p| p.id.clone());
        }
    }

    fn set_deployment(&mut self, index: usize) {
        self.deployment = Some(index);
        if let Some(d) = self.rt.config.deployments.get(index) {
            self.record.deployment = Some(d.id.clone());
            self.record.provider = Some(d.provider.as_str().into());
            self.record.upstream_model = Some(d.model.clone());
            self.record.tier = Some(d.tier.as_str().into());
        }
    }

    /// Records which deployment answered and how many attempts it took.
    pub fn dispatched(&mut self, d: &Dispatched) {
        self.set_deployment(d.deployment);
        self.record.attempts = d.attempts;
        self.record.fallbacks.clone_from(&d.fallbacks);
        self.record.upstream_us = Some(micros(d.upstream_latency));
    }

    /// Records a dispatch where every deployment failed.
    pub fn dispatch_failed(&mut self, f: &DispatchFailed) {
        if let Some(index) = f.last_deployment {
            self.set_deployment(index);
        }
        self.record.attempts = f.attempts;
        self.record.fallbacks.clone_from(&f.fallbacks);
    }

    /// Records what the response cache did; a hit is priced at 0.
    pub fn cache_lookup(&mut self, lookup: Lookup) {
        self.cache = lookup;
        self.record.cache_hit = lookup == Lookup::Hit;
    }
    /// What to count for a reply that reported no usage: the prompt of `request` and
    /// the generated `output`, with the tokenizer of the serving model's family.
    pub fn counting(&self, request: Option<ChatRequest>, output: String) -> Counting {
        let model = self
            .record
            .upstream_model
            .as_deref()
            .unwrap_or(&self.record.requested_model);
        Counting {
            encoding: Encoding::for_model(model),
            request,
            output,
            max_output: self.max_output(),
            prompt_estimate: self.prompt_tokens,
        }
    }

    /// Notes that the upstream generated `text`, before its tokens are counted: a
    /// request dropped meanwhile is still charged for it (four bytes a token).
    pub fn generated(&mut self, text: &str) {
        self.generated = crate::accounting::usage::estimate_tokens(text.len());
    }

    /// The most output tokens the whole reply may hold: `max_tokens` for each choice.
    fn max_output(&self) -> Option<u64> {
        self.max_tokens.map(|m| m.saturating_mul(self.choices))
    }

    /// Usage for a reply that reported none, without a tokenizer: the prompt estimate
    /// plus `output` tokens, which cannot exceed what the request allows. Only for a
    /// request that ended before any reply arrived.
    pub fn estimated_usage(&self, output: u64) -> Usage {
        Usage {
            input: self.prompt_tokens,
            output: self.max_output().map_or(output, |m| output.min(m)),
            estimated: true,
            ..Usage::default()
        }
    }

    /// The `x-crossroads-*` headers known so far.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(8);
        let r = &self.record;
        let pairs = [
            ("x-crossroads-request-id", Some(r.request_id.as_str())),
            ("x-crossroads-rule", r.rule.as_deref()),
            ("x-crossroads-pool", r.pool.as_deref()),
            ("x-crossroads-deployment", r.deployment.as_deref()),
            ("x-crossroads-tier", r.tier.as_deref()),
            ("x-crossroads-class", r.label.as_deref()),
            ("x-crossroads-cache", Some(self.cache.as_str())),
        ];
        for (name, value) in pairs {
            if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        headers
    }

    /// Prices `usage`, writes the ledger record and the metrics. Returns the costing.
    pub fn finish(
        &mut self,
        status: u16,
        error_kind: Option<&'static str>,
        usage: Usage,
        ttft: Option<Duration>,
    ) -> Costing {
        if self.finished {
            return Costing::default();
        }
        self.finished = true;
        let config = &self.rt.config;
        let reference = self.reference.as_ref().unwrap_or(&config.reference.price);
        let costing = if self.record.cache_hit {
            // Nothing was spent: the savings are the whole reference cost.
            Costing {
                cost: Usd::ZERO,
                reference_cost: reference.cost(&usage),
            }
        } else {
            match self.deployment.and_then(|d| config.deployments.get(d)) {
                Some(d) => Costing::of(&usage, &d.price, reference),
                None => Costing::default(),
            }
        };
        let mut record = std::mem::take(&mut self.record);
        record.status = status;
        record.error_kind = error_kind.map(Into::into);
        record.usage = usage;
        record.cost = costing.cost;
        record.reference_cost = costing.reference_cost;
        record.latency_us = micros(self.started.elapsed());
        record.ttft_us = ttft.map(micros);

        let m = &self.state.metrics;
        // Answers from the cache are their own tier in metrics: what they saved shows apart.
        let tier = match record.tier.as_deref() {
            Some(tier) => tier,
            None if record.cache_hit => "cache",
            None => "none",
        };
        let deployment = record.deployment.as_deref().unwrap_or("none");
        m.requests
            .with_label_values(&[
                record.rule.as_deref().unwrap_or("none"),
                tier,
                deployment,
                status_class(status),
            ])
            .inc();
        if let Some(kind) = error_kind {
            m.errors.with_label_values(&[kind]).inc();
        }
        m.request_duration
            .with_label_values(&[tier])
            .observe(self.started.elapsed().as_secs_f64());
        if let Some(us) = record.upstream_us {
            m.upstream_duration
                .with_label_values(&[deployment])
                .observe(us as f64 / 1e6);
        }
        if let Some(t) = ttft {
            m.ttft.with_label_values(&[tier]).observe(t.as_secs_f64());
        }
        for (kind, n) in [
            ("input", usage.input),
            ("cached_input", usage.cached_input),
            ("cache_write", usage.cache_write),
            ("output", usage.output),
            ("reasoning", usage.reasoning),
        ] {
            if n > 0 {
                m.tokens.with_label_values(&[kind, tier]).inc_by(n);
            }
        }
        // Always touched, so a free tier shows as a 0 series rather than none.
        m.cost
            .with_label_values(&[tier])
            .inc_by(costing.cost.as_f64());
        m.reference_cost
            .with_label_values(&[tier])
            .inc_by(costing.reference_cost.as_f64());
        if let Some(reservation) = self.reservation.take() {
            reservation.settle(costing.cost);
        }
        // A cached answer generated nothing upstream: it does not use the key's TPM.
        if let Some(key) = self.rate_key.as_ref().filter(|_| !record.cache_hit) {
            self.state
                .admission
                .record_output(key, usage.output, crate::admission::now_ms());
        }
        self.state.ledger.record_in(self.slot.take(), record);
        costing
    }

    /// Finishes with an error and renders it, with the headers known so far.
    pub fn fail(mut self, error: ApiError) -> Response {
        let headers = self.headers();
        self.finish(
            error.status().as_u16(),
            Some(error.kind()),
            Usage::default(),
            None,
        );
        let mut response = error.into_response();
        response.headers_mut().extend(headers);
        response
    }
}

impl Drop for Exchange {
    /// A request dropped before it finished lost its client: record it anyway.
    fn drop(&mut self) {
        if !self.finished {
            let usage = if self.deployment.is_some() {
                self.estimated_usage(self.generated)
            } else {
                Usage::default()
            };
            self.finish(CLIENT_CLOSED, Some("client_disconnected"), usage, None);
        }
    }
}

/// Token counting for a reply without usage. It blocks (the first count of an encoding
/// builds it): run [`Counting::count`] on a blocking thread.
pub struct Counting {
    encoding: Encoding,
    /// The request, for its prompt; without it the prompt estimate stands.
    request: Option<ChatRequest>,
    output: String,
    /// The most output tokens the reply may hold (every choice).
    max_output: Option<u64>,
    prompt_estimate: u64,
}

impl Counting {
    /// The usage, marked estimated; output never above what the request allows.
    pub fn count(self) -> Usage {
        let input = match &self.request {
            Some(request) => self.encoding.count_prompt(&request.prompt()),
            None => self.prompt_estimate,
        };
        let output = self.encoding.count(&self.output);
        Usage {
            input,
            output: self.max_output.map_or(output, |m| output.min(m)),
            estimated: true,
            ..Usage::default()
        }
    }

    /// Counts on one of the runtime's blocking threads.
    pub async fn count_off_runtime(self) -> Usage {
        let fallback = Usage {
            input: self.prompt_estimate,
            estimated: true,
            ..Usage::default()
        };
        tokio::task::spawn_blocking(move || self.count())
            .await
            .unwrap_or(fallback)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

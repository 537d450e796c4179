//! The one place a request's side effects happen when it ends: its cost is priced
//! ([`crate::accounting`]), its budget reservation and TPM settled
//! ([`crate::admission`]), its metrics observed and its record written to the ledger.
//! Every request is finished exactly once: on completion, on error, or when it is
//! dropped because the client went away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use super::record::{Draft, micros};
use crate::accounting::tokens::Encoding;
use crate::accounting::{Costing, Served, Usage};
use crate::admission::{Admission, Reservation};
use crate::auth::KeyInfo;
use crate::config::Durability;
use crate::error::ApiError;
use crate::ledger::{Commit, Ledger, LedgerRecord, LedgerSlot, PendingRecord};
use crate::metrics::{Metrics, RequestLabels, TokenLabels, status_class};
use crate::request::{Limits, Request};
use crate::route::Api;
use crate::state::{AppState, Runtime};

/// Status recorded for requests whose client disconnected (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

pub struct Finisher {
    ledger: Ledger,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
    rt: Arc<Runtime>,
    started: Instant,
    /// The record the stages fill in.
    pub draft: Draft,
    /// The request's output limits, once routed.
    limits: Option<Limits>,
    /// Estimated prompt tokens, for when no usage is reported.
    prompt_tokens: u64,
    /// The budget reservation to settle with the actual cost.
    reservation: Option<Reservation>,
    /// The key whose rate window counts the generated tokens.
    tpm_key: Option<String>,
    /// Output tokens the upstream is known to have generated (a cheap estimate), for a
    /// request dropped while they are being counted.
    generated: u64,
    /// Room in the ledger's queue for this request's record.
    slot: Option<LedgerSlot>,
    /// The record's commit, with `durability = "commit"`, once finished.
    commit: Option<Commit>,
    finished: bool,
}

impl Finisher {
    /// Starts the bookkeeping for a request to `endpoint` that just arrived.
    pub fn new(state: &AppState, rt: Arc<Runtime>, endpoint: &'static str) -> Self {
        Finisher {
            ledger: state.ledger.clone(),
            metrics: state.metrics.clone(),
            admission: state.admission.clone(),
            rt,
            started: Instant::now(),
            draft: Draft::new(state.ids.next(), endpoint),
            limits: None,
            prompt_tokens: 0,
            reservation: None,
            tpm_key: None,
            generated: 0,
            slot: None,
            commit: None,
            finished: false,
        }
    }

    /// Waits for room for this request's record in the ledger's queue: the backpressure
    /// that keeps a ledger that falls behind from growing memory without bound. A
    /// request that finds none within `wait` is refused before it costs anything.
    pub async fn reserve_record(&mut self, wait: Duration) -> Result<(), ApiError> {
        self.slot = self.ledger.slot(wait).await;
        if self.slot.is_none() && self.ledger.is_open() {
            return Err(ApiError::Unavailable {
                message:
                    "the spend ledger is behind and cannot take another record yet; retry shortly"
                        .into(),
                code: "ledger_unavailable",
            });
        }
        Ok(())
    }

    /// Who is calling; a key with a TPM limit has its generated tokens counted.
    pub fn authenticated(&mut self, key: &KeyInfo) {
        self.draft.authenticated(key);
        if key.tpm.is_some() {
            self.tpm_key = Some(key.id.clone());
        }
    }

    /// The classifier's prompt estimate and the limits resolved after routing.
    pub fn bounded(&mut self, prompt_tokens: u64, limits: Limits) {
        self.prompt_tokens = prompt_tokens;
        self.limits = Some(limits);
    }

    /// Holds a budget reservation until the request is priced.
    pub fn reserved(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Marks a record still owed to the ledger: flush and shutdown wait for it.
    pub fn pending(&self) -> PendingRecord {
        self.ledger.pending()
    }

    /// The most output tokens the whole reply may hold.
    fn max_output(&self) -> Option<u64> {
        self.limits.and_then(|l| l.max_output())
    }

    /// What to count for a reply that reported no usage: the prompt of `request` and
    /// the generated `output`, with the tokenizer of the serving model's family.
    pub fn counting(&self, request: Option<Request>, output: String) -> Counting {
        let record = &self.draft.record;
        let model = record
            .upstream_model
            .as_deref()
            .unwrap_or(&record.requested_model);
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

    /// Usage for a reply that reported none, without a tokenizer: the prompt estimate
    /// plus `output` tokens, which cannot exceed what the request allows. Only for a
    /// request that ended before any reply arrived.
    fn estimated_usage(&self, output: u64) -> Usage {
        Usage {
            input: self.prompt_tokens,
            output: self.max_output().map_or(output, |m| output.min(m)),
            estimated: true,
            ..Usage::default()
        }
    }

    /// The `x-crossroads-*` headers known so far.
    pub fn headers(&self) -> HeaderMap {
        self.draft.headers()
    }

    /// Prices `usage`, settles the budget and TPM, observes the metrics and writes the
    /// ledger record. Returns the costing; a second call does nothing.
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
        let reference = self
            .draft
            .reference
            .as_ref()
            .unwrap_or(&config.reference.price);
        let served = match self.draft.deployment.and_then(|d| config.deployment(d)) {
            _ if self.draft.record.cache_hit => Served::Cache,
            Some(d) => Served::Deployment(&d.price),
            None => Served::Nowhere,
        };
        let costing = Costing::settle(&usage, served, reference);
        let mut record = std::mem::take(&mut self.draft.record);
        record.status = status;
        record.error_kind = error_kind.map(Into::into);
        record.usage = usage;
        record.cost = costing.cost;
        record.reference_cost = costing.reference_cost;
        let elapsed = self.started.elapsed();
        record.latency_us = micros(elapsed);
        record.ttft_us = ttft.map(micros);
        observe(&self.metrics, &record, elapsed, ttft);
        // A cached answer generated nothing upstream: it does not use the key's TPM.
        let tpm_key = self.tpm_key.as_deref().filter(|_| !record.cache_hit);
        self.admission
            .settle(self.reservation.take(), tpm_key, costing.cost, usage.output);
        match self.rt.config.ledger.durability {
            Durability::Commit => {
                self.commit = Some(self.ledger.record_committed(self.slot.take(), record));
            }
            Durability::Batched => self.ledger.record_in(self.slot.take(), record),
        }
        costing
    }

    /// Whether responses wait for their record's commit.
    pub fn durable(&self) -> bool {
        self.rt.config.ledger.durability == Durability::Commit
    }

    /// The finished record's commit, when the response must wait for it
    /// (`durability = "commit"`).
    pub fn take_commit(&mut self) -> Option<Commit> {
        self.commit.take()
    }

    /// Waits until the finished record is committed (at once with batched
    /// durability): a response sent after this has its record on disk.
    pub async fn committed(&mut self) {
        if let Some(commit) = self.commit.take() {
            wait_for(commit).await;
        }
    }

    /// Finishes with an error; returns the headers known so far, for its response.
    pub fn fail(&mut self, error: &ApiError) -> HeaderMap {
        let headers = self.headers();
        self.finish(
            error.status().as_u16(),
            Some(error.kind()),
            Usage::default(),
            None,
        );
        headers
    }
}

/// How long a response waits for its record's commit. A store that fails (a
/// PostgreSQL outage being retried) must not hold every answer: past this the
/// response goes out and its record stays queued, written once the store recovers.
pub const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Waits for a record's commit, at most [`COMMIT_WAIT`]; a record the writer lost, or
/// one still queued after the wait, is logged (the response goes out anyway: its
/// upstream cost is spent, and withholding it helps no one).
pub async fn wait_for(commit: Commit) {
    wait_within(commit, COMMIT_WAIT).await;
}

async fn wait_within(commit: Commit, limit: Duration) {
    match tokio::time::timeout(limit, commit).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => {
            tracing::error!("the ledger writer stopped before committing a response's record")
        }
        Err(_) => tracing::warn!(
            "a response's record was not committed within {limit:?}: answered anyway, \
             the record stays queued"
        ),
    }
}

impl Drop for Finisher {
    /// A request dropped before it finished lost its client: record it anyway.
    fn drop(&mut self) {
        if !self.finished {
            let usage = if self.draft.deployment.is_some() {
                self.estimated_usage(self.generated)
            } else {
                Usage::default()
            };
            self.finish(CLIENT_CLOSED, Some("client_disconnected"), usage, None);
        }
    }
}

/// The request's metrics, from its finished record.
fn observe(m: &Metrics, record: &LedgerRecord, elapsed: Duration, ttft: Option<Duration>) {
    // Answers from the cache are their own tier in metrics: what they saved shows apart.
    let tier = match record.tier.as_deref() {
        Some(tier) => tier,
        None if record.cache_hit => "cache",
        None => "none",
    };
    let deployment = record.deployment.as_deref().unwrap_or("none");
    m.count_request(&RequestLabels {
        rule: record.rule.as_deref().unwrap_or("none"),
        tier,
        deployment,
        status_class: status_class(record.status),
    });
    if let Some(kind) = record.error_kind.as_deref() {
        m.errors.with_label_values(&[kind]).inc();
    }
    m.request_duration
        .with_label_values(&[tier])
        .observe(elapsed.as_secs_f64());
    if let Some(us) = record.upstream_us {
        m.upstream_duration
            .with_label_values(&[deployment])
            .observe(us as f64 / 1e6);
    }
    if let Some(t) = ttft {
        m.ttft.with_label_values(&[tier]).observe(t.as_secs_f64());
    }
    let usage = &record.usage;
    for (kind, n) in [
        ("input", usage.input),
        ("cached_input", usage.cached_input),
        ("cache_write", usage.cache_write),
        ("output", usage.output),
        ("reasoning", usage.reasoning),
    ] {
        if n > 0 {
            m.count_tokens(&TokenLabels { kind, tier }, n);
        }
    }
    // Always touched, so a free tier shows as a 0 series rather than none.
    m.cost
        .with_label_values(&[tier])
        .inc_by(record.cost.as_f64());
    m.reference_cost
        .with_label_values(&[tier])
        .inc_by(record.reference_cost.as_f64());
}

/// Token counting for a reply without usage. It blocks (the first count of an encoding
/// builds it): run [`Counting::count`] on a blocking thread.
pub struct Counting {
    encoding: Encoding,
    /// The request, for its prompt; without it the prompt estimate stands.
    request: Option<Request>,
    output: String,
    /// The most output tokens the reply may hold (every choice).
    max_output: Option<u64>,
    prompt_estimate: u64,
}

impl Counting {
    /// The usage, marked estimated; output never above what the request allows.
    pub fn count(self) -> Usage {
        let input = match &self.request {
            Some(request) => {
                let prompt = request.prompt();
                let texts = prompt.segments.iter().map(|s| s.text);
                match request.api {
                    Api::Chat => self.encoding.count_prompt(texts, prompt.messages),
                    // Embedded texts have no chat framing; token ids count as they are.
                    Api::Embeddings => texts
                        .map(|t| self.encoding.count(t))
                        .sum::<u64>()
                        .saturating_add(prompt.token_ids),
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_response_waits_for_its_commit_but_not_past_the_limit() {
        let (done, commit) = tokio::sync::oneshot::channel();
        let _ = done.send(());
        let started = Instant::now();
        wait_within(commit, Duration::from_secs(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a commit releases at once"
        );

        // A store that never commits (an outage being retried) holds it only so long.
        let (_never, commit) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        wait_within(commit, Duration::from_millis(50)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50) && waited < Duration::from_secs(2));
    }
}

//! Prometheus metrics, registered into one registry at startup. Label values come from
//! config (rule, deployment and label ids) or closed enums, never from client input.

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};

use crate::cache::CacheMetrics;
use crate::ledger::LedgerMetrics;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by [`RequestLabels`]; see [`Metrics::count_request`].
    requests: IntCounterVec,
    /// Client-visible errors by kind.
    pub errors: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub ttft: HistogramVec,
    /// Tokens by [`TokenLabels`]; see [`Metrics::count_tokens`].
    tokens: IntCounterVec,
    pub cost: CounterVec,
    pub reference_cost: CounterVec,
    pub classifier_duration: Histogram,
    pub classifications: IntCounterVec,
    /// Failed upstream attempts by [`UpstreamErrorLabels`].
    upstream_errors: IntCounterVec,
    pub fallbacks: IntCounterVec,
    /// Deployments ejected by passive health checks.
    pub ejections: IntCounterVec,
    /// Requests refused by a budget, by scope (key, team).
    pub budget_rejections: IntCounterVec,
    /// Budgets that crossed their warning fraction, by scope.
    pub budget_warnings: IntCounterVec,
    /// Requests refused by a rate limit, by limit (rpm, tpm).
    pub rate_limited: IntCounterVec,
    /// Admissions decided without the shared limits because Redis failed, by policy
    /// (`local`: enforced in this process; `reject`: refused with a 503).
    pub admission_fallbacks: IntCounterVec,
    /// Shared-limits Redis operations that failed, by operation (admit, settle, output,
    /// owe).
    pub admission_redis_errors: IntCounterVec,
    /// Routing decisions by the rule that made them (`alias` for a named alias's pool).
    pub rule_hits: IntCounterVec,
    /// Shadow rules that matched (recorded, not applied), by rule.
    pub shadow_matches: IntCounterVec,
    /// Config reloads by [`ReloadLabels`], counted through [`ReloadCounter`].
    config_reloads: IntCounterVec,
    /// `POST /v1/feedback` calls by outcome (`stored`, `unknown_request`, `other_team`,
    /// or the error kind of a refused body or key).
    pub feedback: IntCounterVec,
    pub ledger: LedgerMetrics,
    pub cache: CacheMetrics,
}

/// The labels of `crossroads_requests_total`: names and values written in one place.
pub struct RequestLabels<'a> {
    pub rule: &'a str,
    pub tier: &'a str,
    pub deployment: &'a str,
    pub status_class: &'a str,
}

impl RequestLabels<'_> {
    const NAMES: [&'static str; 4] = ["rule", "tier", "deployment", "status_class"];

    fn values(&self) -> [&str; 4] {
        [self.rule, self.tier, self.deployment, self.status_class]
    }
}

/// The labels of `crossroads_tokens_total`.
pub struct TokenLabels<'a> {
    /// `input`, `cached_input`, `cache_write`, `output` or `reasoning`.
    pub kind: &'static str,
    pub tier: &'a str,
}

impl TokenLabels<'_> {
    const NAMES: [&'static str; 2] = ["kind", "tier"];

    fn values(&self) -> [&str; 2] {
        [self.kind, self.tier]
    }
}

/// The labels of `crossroads_upstream_errors_total`.
pub struct UpstreamErrorLabels<'a> {
    pub deployment: &'a str,
    pub kind: &'static str,
}

impl UpstreamErrorLabels<'_> {
    const NAMES: [&'static str; 2] = ["deployment", "kind"];

    fn values(&self) -> [&str; 2] {
        [self.deployment, self.kind]
    }
}

/// `crossroads_config_reloads_total`, as the reloader holds it.
#[derive(Clone)]
pub struct ReloadCounter(IntCounterVec);

impl ReloadCounter {
    pub fn count(&self, labels: &ReloadLabels) {
        self.0.with_label_values(&labels.values()).inc();
    }
}

/// The labels of `crossroads_config_reloads_total`.
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub result: &'static str,
    /// `file`, `signal` or `admin`.
    pub trigger: &'static str,
}

impl ReloadLabels {
    const NAMES: [&'static str; 2] = ["result", "trigger"];

    fn values(&self) -> [&str; 2] {
        [self.result, self.trigger]
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const CLASSIFIER_BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.005,
];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let usd = |name: &str, help: &str| -> prometheus::Result<CounterVec> {
            let c = CounterVec::new(Opts::new(name, help), &["tier"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |name: &str,
                         help: &str,
                         label: &str,
                         buckets: &[f64]|
         -> prometheus::Result<HistogramVec> {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &[label],
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };
        let classifier_duration = Histogram::with_opts(
            HistogramOpts::new(
                "crossroads_classifier_duration_seconds",
                "Time to classify a request",
            )
            .buckets(CLASSIFIER_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(classifier_duration.clone()))?;
        Ok(Metrics {
            requests: counter(
                "crossroads_requests_total",
                "Requests answered, by rule, tier, deployment and status class",
                &RequestLabels::NAMES,
            )?,
            errors: counter(
                "crossroads_errors_total",
                "Requests answered with an error, by kind",
                &["kind"],
            )?,
            request_duration: histogram(
                "crossroads_request_duration_seconds",
                "Time from request to the end of the response",
                "tier",
                LATENCY_BUCKETS,
            )?,
            upstream_duration: histogram(
                "crossroads_upstream_duration_seconds",
                "Time the answering upstream took (to the first byte for streams)",
                "deployment",
                LATENCY_BUCKETS,
            )?,
            ttft: histogram(
                "crossroads_time_to_first_token_seconds",
                "Time from request to the first streamed bytes sent to the client",
                "tier",
                LATENCY_BUCKETS,
            )?,
            tokens: counter(
                "crossroads_tokens_total",
                "Tokens by kind and tier",
                &TokenLabels::NAMES,
            )?,
            cost: usd("crossroads_cost_usd_total", "Spend in USD by tier")?,
            reference_cost: usd(
                "crossroads_reference_cost_usd_total",
                "What the same tokens would have cost on the reference model; savings = this - cost",
            )?,
            classifier_duration,
            classifications: counter(
                "crossroads_classifications_total",
                "Requests classified, by label",
                &["label"],
            )?,
            upstream_errors: counter(
                "crossroads_upstream_errors_total",
                "Failed upstream attempts, by deployment and kind",
                &UpstreamErrorLabels::NAMES,
            )?,
            fallbacks: counter(
                "crossroads_fallbacks_total",
                "Attempts moved on to the next deployment, by reason",
                &["reason"],
            )?,
            ejections: counter(
                "crossroads_deployment_ejections_total",
                "Deployments ejected after consecutive failures, by deployment",
                &["deployment"],
            )?,
            budget_rejections: counter(
                "crossroads_budget_rejections_total",
                "Requests refused because a budget is used up, by scope",
                &["scope"],
            )?,
            budget_warnings: counter(
                "crossroads_budget_warnings_total",
                "Budgets whose spend crossed the warning fraction, by scope",
                &["scope"],
            )?,
            rate_limited: counter(
                "crossroads_rate_limited_total",
                "Requests refused by a key's rate limit, by limit",
                &["limit"],
            )?,
            admission_fallbacks: counter(
                "crossroads_admission_fallbacks_total",
                "Admissions decided without the shared Redis limits because Redis failed, by policy",
                &["policy"],
            )?,
            admission_redis_errors: counter(
                "crossroads_admission_redis_errors_total",
                "Failed Redis operations of the shared limits, by operation",
                &["op"],
            )?,
            rule_hits: counter(
                "crossroads_rule_hits_total",
                "Routing decisions by rule",
                &["rule"],
            )?,
            shadow_matches: counter(
                "crossroads_shadow_rule_matches_total",
                "Requests a shadow rule would have routed, by rule",
                &["rule"],
            )?,
            config_reloads: counter(
                "crossroads_config_reloads_total",
                "Config reloads by result and trigger",
                &ReloadLabels::NAMES,
            )?,
            feedback: counter(
                "crossroads_feedback_total",
                "Feedback calls by outcome",
                &["outcome"],
            )?,
            ledger: LedgerMetrics::new(&registry)?,
            cache: CacheMetrics::new(&registry)?,
            registry,
        })
    }

    /// Counts an answered request.
    pub fn count_request(&self, labels: &RequestLabels<'_>) {
        self.requests.with_label_values(&labels.values()).inc();
    }

    /// Adds `n` tokens.
    pub fn count_tokens(&self, labels: &TokenLabels<'_>, n: u64) {
        self.tokens.with_label_values(&labels.values()).inc_by(n);
    }

    /// Counts a failed upstream attempt.
    pub fn count_upstream_error(&self, labels: &UpstreamErrorLabels<'_>) {
        self.upstream_errors
            .with_label_values(&labels.values())
            .inc();
    }

    /// The config reload counter, for the reloader to keep.
    pub fn config_reloads(&self) -> ReloadCounter {
        ReloadCounter(self.config_reloads.clone())
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// The registry, for components that register their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// `2xx`, `4xx`, `5xx` ... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

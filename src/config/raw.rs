//! `routes.toml` as written: serde types that reject unknown fields. Nothing here is
//! trusted until [`super::validate`] turns it into runtime types.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub classifier: RawClassifier,
    #[serde(default)]
    pub deployments: Vec<RawDeployment>,
    #[serde(default)]
    pub pools: Vec<RawPool>,
    #[serde(default)]
    pub aliases: Vec<RawAlias>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub prices: Vec<RawPrice>,
    pub accounting: RawAccounting,
    #[serde(default)]
    pub ledger: RawLedger,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub budgets: RawBudgets,
    #[serde(default)]
    pub teams: Vec<RawTeam>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// Absent: no cache.
    pub cache: Option<super::cache::RawCache>,
    /// Absent: each process enforces rate limits and budgets alone.
    pub limits: Option<super::limits::RawLimits>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// Refuse requests without a valid virtual key.
    pub required: bool,
    /// How often keys created or revoked with `crossroads keys` are picked up.
    pub refresh_ms: u64,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            required: false,
            refresh_ms: 1_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBudgets {
    /// Fraction of a budget at which a warning is logged and counted.
    pub warn_at: f64,
    /// Output tokens assumed when reserving for a request without max_tokens.
    pub default_max_tokens: u64,
    /// Also refuse zero-cost (local) requests once a budget is spent.
    pub block_free_traffic: bool,
}

impl Default for RawBudgets {
    fn default() -> Self {
        RawBudgets {
            warn_at: 0.8,
            default_max_tokens: 4_096,
            block_free_traffic: false,
        }
    }
}

/// A spend limit per UTC day or month.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub usd: f64,
    pub period: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeam {
    pub id: String,
    pub budget: Option<RawBudget>,
}

/// A key declared in config: only its SHA-256 is written here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub id: String,
    pub sha256: String,
    pub team: Option<String>,
    pub budget: Option<RawBudget>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

/// Passive health checking: consecutive failures eject a deployment for a back-off that
/// doubles with each ejection, after which one request probes it again.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    pub failure_threshold: u32,
    pub ejection_ms: u64,
    pub max_ejection_ms: u64,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            failure_threshold: 3,
            ejection_ms: 5_000,
            max_ejection_ms: 300_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    pub body_limit_bytes: usize,
    /// Deadline for a whole non-streamed request, across every attempt.
    pub request_timeout_ms: u64,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace_ms: u64,
    /// Environment variable holding the admin API key; the admin API is off without it.
    pub admin_key_env: Option<String>,
    /// Environment variable holding a read-only key for the console (`/ui`) and the
    /// spend API; the admin key opens them too.
    pub console_key_env: Option<String>,
    /// How often the config file is checked for changes; 0 turns file watching off.
    pub config_poll_ms: u64,
    /// Extra passes over a pool's deployments after all of them failed.
    pub retries: u32,
    /// Back-off before the first retry pass; doubles each pass, with jitter. An
    /// upstream's Retry-After, when longer, is honoured up to `max_retry_wait_ms`.
    pub retry_backoff_ms: u64,
    pub max_retry_wait_ms: u64,
    /// Async worker threads; 0 is one per core.
    pub workers: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 300_000,
            shutdown_grace_ms: 30_000,
            admin_key_env: None,
            console_key_env: None,
            config_poll_ms: 2_000,
            retries: 1,
            retry_backoff_ms: 100,
            max_retry_wait_ms: 10_000,
            workers: 0,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClassifier {
    pub kind: ClassifierKind,
    /// Model file of the linear classifier, relative to the config file's directory.
    pub model: Option<String>,
}

/// Which classifier implementation serves requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassifierKind {
    /// Hand-weighted cues; needs no model file.
    #[default]
    Heuristic,
    /// The learned model of `crossroads train`, read from `model`.
    Linear,
}

/// The wire protocol a deployment speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// api.openai.com.
    Openai,
    /// Any server speaking the OpenAI chat-completions API (vLLM, llama.cpp, Ollama, TGI).
    OpenaiCompatible,
    /// The Anthropic Messages API.
    Anthropic,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai_compatible",
            ProviderKind::Anthropic => "anthropic",
        }
    }
}

/// The API a deployment serves: `/chat/completions` (default) or `/embeddings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawApi {
    #[default]
    Chat,
    Embeddings,
}

/// Where a deployment runs, which decides how its traffic is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Local,
    Frontier,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Frontier => "frontier",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub id: String,
    pub provider: ProviderKind,
    pub base_url: String,
    /// The model name sent upstream.
    pub model: String,
    /// What it serves: `chat` (default) or `embeddings`.
    #[serde(default)]
    pub api: RawApi,
    /// Name of the environment variable holding the upstream API key.
    pub api_key_env: Option<String>,
    pub tier: Tier,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the response headers and first body bytes arrive.
    #[serde(default = "defaults::first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    /// Longest silence allowed between two stream chunks.
    #[serde(default = "defaults::idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Price of this deployment, when it is not the `[[prices]]` entry of `model`.
    pub price: Option<RawPriceValues>,
    /// For self-hosted models instead of `price`: the serving machine's hourly cost
    /// spread over its measured throughput.
    pub cost_model: Option<RawCostModel>,
    /// Requests in flight at most; a full deployment is skipped.
    pub max_concurrency: Option<u32>,
    /// Tokens the model can hold; requests whose prompt plus max_tokens exceed it skip it.
    pub context_window: Option<u64>,
    /// `max_tokens` sent when the client gives none (Anthropic requires one; 4096).
    pub default_max_tokens: Option<u64>,
    /// Anthropic API version header (default 2023-06-01).
    pub api_version: Option<String>,
}

mod defaults {
    pub fn connect_timeout_ms() -> u64 {
        2_000
    }
    pub fn first_byte_timeout_ms() -> u64 {
        60_000
    }
    pub fn idle_timeout_ms() -> u64 {
        60_000
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub id: String,
    /// Deployment ids, tried in this order.
    pub deployments: Vec<String>,
    /// Pool whose deployments are tried after these.
    pub fallback: Option<String>,
    #[serde(default)]
    pub strategy: Strategy,
    /// With `strategy = "weighted"`: one weight per deployment, in the same order.
    pub weights: Option<Vec<u32>>,
}

/// How a pool orders its own deployments for each request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In the listed order.
    #[default]
    Priority,
    /// The first pick at random by weight; the rest by weight.
    Weighted,
    /// Lowest moving average of time to first byte first.
    LeastLatency,
    /// Lowest price first.
    Cheapest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlias {
    /// The `model` value clients send.
    pub name: String,
    pub pool: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub when: RawMatch,
    pub pool: Option<String>,
    pub reject: Option<RawReject>,
    /// Caps the request's `max_tokens` when this rule routes it.
    pub max_tokens: Option<u64>,
    /// Record what the rule would do without doing it.
    #[serde(default)]
    pub shadow: bool,
    /// Model whose price this rule's savings are measured against.
    pub reference_model: Option<String>,
}

/// Conditions of a rule, all optional, combined with AND; lists mean any-of.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub alias: Option<Vec<String>>,
    /// Domain labels.
    pub label: Option<Vec<String>>,
    /// Task labels.
    pub task: Option<Vec<String>>,
    pub min_confidence: Option<f32>,
    pub max_confidence: Option<f32>,
    pub min_difficulty: Option<f32>,
    pub max_difficulty: Option<f32>,
    pub min_prompt_tokens: Option<u64>,
    pub max_prompt_tokens: Option<u64>,
    pub tools: Option<bool>,
    pub images: Option<bool>,
    pub json_mode: Option<bool>,
    pub pii: Option<bool>,
    pub pii_kinds: Option<Vec<String>>,
    /// Request headers that must equal these values.
    pub header: Option<std::collections::BTreeMap<String, String>>,
    /// Caller's team (from its virtual key).
    pub team: Option<Vec<String>>,
    /// Caller's key id.
    pub key: Option<Vec<String>>,
    /// The share of its budget (key's or team's, the larger) the caller has spent.
    pub min_budget_used: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReject {
    pub status: u16,
    pub message: String,
}

/// Prices in USD per 1M tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPriceValues {
    pub input: f64,
    pub cached_input: Option<f64>,
    pub cache_write: Option<f64>,
    pub output: f64,
    #[serde(default)]
    pub source: String,
}

/// What a self-hosted deployment costs to run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCostModel {
    /// What the serving machine costs an hour (rent, or amortised hardware and power).
    pub usd_per_hour: f64,
    /// Measured prompt tokens processed per second at the load it serves (prefill).
    pub input_tokens_per_second: f64,
    /// Measured tokens generated per second at the load it serves (decode).
    pub output_tokens_per_second: f64,
    /// Where the figures come from.
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub model: String,
    pub input: f64,
    pub cached_input: Option<f64>,
    pub cache_write: Option<f64>,
    pub output: f64,
    /// Where the price was published.
    pub source: String,
    /// When it was read there (YYYY-MM-DD).
    pub as_of: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccounting {
    /// Model whose price defines the reference cost that savings are measured against.
    pub reference_model: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLedger {
    /// `sqlite://PATH` (relative to the working directory), `sqlite::memory:`, or
    /// `postgres://USER@HOST:PORT/DB` (a password is best set through
    /// `CROSSROADS__LEDGER__URL`, not in the file).
    pub url: String,
    /// PostgreSQL schema for the ledger tables.
    pub schema: String,
    pub queue_capacity: usize,
    pub batch_size: usize,
    /// When a response may finish: `commit` (its record is committed first) or
    /// `batched` (records are written within milliseconds, off the response).
    pub durability: Durability,
}

/// When a response may finish relative to its ledger record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// A response's last bytes wait for its record's commit: a crash loses no record
    /// of an answer a client received whole.
    #[default]
    Commit,
    /// Records wait in memory for their batch (5 ms at most when the writer keeps
    /// up): a crash loses the records of that window.
    Batched,
}

impl Default for RawLedger {
    fn default() -> Self {
        RawLedger {
            url: "sqlite://crossroads-ledger.db".into(),
            schema: "crossroads".into(),
            queue_capacity: 16_384,
            batch_size: 512,
            durability: Durability::default(),
        }
    }
}

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
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 4 * 1024 * 1024,
            request_timeout_ms: 300_000,
            shutdown_grace_ms: 30_000,
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
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::OpenaiCompatible => "openai_compatible",
        }
    }
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
    /// `sqlite://PATH` (relative to the working directory) or `sqlite::memory:`.
    pub url: String,
    pub queue_capacity: usize,
    pub batch_size: usize,
}

impl Default for RawLedger {
    fn default() -> Self {
        RawLedger {
            url: "sqlite://crossroads-ledger.db".into(),
            queue_capacity: 16_384,
            batch_size: 512,
        }
    }
}

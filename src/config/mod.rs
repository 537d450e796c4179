//! Configuration: `routes.toml` plus `CROSSROADS__SECTION__KEY` environment overrides,
//! parsed into raw serde types ([`raw`]) and validated into the runtime [`Config`].

mod cache;
mod limits;
mod lint;
pub mod raw;
mod validate;

pub use cache::{CacheBackend, CacheConfig, CacheScope};
pub use limits::{LimitsConfig, OnRedisError, RedisLimits};
pub use lint::{Lint, lint};
pub use validate::ledger_backend;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use raw::{Durability, ProviderKind, Tier};

use crate::accounting::Price;
use crate::classify::Classifier;
use crate::route::{Api, DeploymentId, RouteTable};

/// Prefix of environment variables that override config keys:
/// `CROSSROADS__LEDGER__URL` sets `ledger.url`.
pub const ENV_PREFIX: &str = "CROSSROADS";

/// A validated configuration, ready to serve.
pub struct Config {
    /// The file it came from, for messages.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub classifier: Arc<dyn Classifier>,
    pub deployments: Vec<Deployment>,
    pub routes: RouteTable,
    pub prices: Vec<PriceEntry>,
    pub reference: PriceEntry,
    pub ledger: LedgerConfig,
    pub health: HealthConfig,
    pub auth: AuthConfig,
    pub budgets: BudgetsConfig,
    pub teams: Vec<TeamConfig>,
    /// Keys declared in the config (the key store holds the rest).
    pub keys: Vec<KeyConfig>,
    /// The response cache; `None` when off.
    pub cache: Option<CacheConfig>,
    /// Where rate limits and budget reservations are counted.
    pub limits: LimitsConfig,
}

impl Config {
    pub fn deployment(&self, id: DeploymentId) -> Option<&Deployment> {
        self.deployments.get(id.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    pub required: bool,
    pub refresh: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetsConfig {
    pub warn_at: f64,
    pub default_max_tokens: u64,
    pub block_free_traffic: bool,
}

/// Budget periods, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetPeriod {
    Day,
    Month,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Month => "month",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" | "daily" => Some(BudgetPeriod::Day),
            "month" | "monthly" => Some(BudgetPeriod::Month),
            _ => None,
        }
    }
}

/// A spend limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    pub limit: crate::accounting::Usd,
    pub period: BudgetPeriod,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamConfig {
    pub id: String,
    pub budget: Option<BudgetConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyConfig {
    pub id: String,
    pub sha256: [u8; 32],
    pub team: Option<String>,
    pub budget: Option<BudgetConfig>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

/// Passive health checking (see [`raw::RawHealth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    pub failure_threshold: u32,
    pub ejection: Duration,
    pub max_ejection: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("source", &self.source)
            .field("server", &self.server)
            .field("deployments", &self.deployments)
            .field("routes", &self.routes)
            .field("reference", &self.reference)
            .field("ledger", &self.ledger)
            .field("cache", &self.cache)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Async worker threads; `None` is one per core. Applies at start-up.
    pub workers: Option<usize>,
    pub body_limit: usize,
    pub request_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Bearer key of the admin API (`POST /admin/reload`); `None` turns it off.
    pub admin_key: Option<Secret>,
    /// Read-only key of the console and the spend API; `None`: the admin key only.
    pub console_key: Option<Secret>,
    /// File-change polling interval; `None` when watching is off.
    pub config_poll: Option<Duration>,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub max_retry_wait: Duration,
}

/// One upstream model endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    pub id: String,
    pub provider: ProviderKind,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    /// What it serves; a pool's deployments all serve the same.
    pub api: Api,
    /// The key, read from `api_key_env` at load time.
    pub api_key: Option<Secret>,
    pub api_key_env: Option<String>,
    pub tier: Tier,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub price: Price,
    pub max_concurrency: Option<u32>,
    pub context_window: Option<u64>,
    pub default_max_tokens: Option<u64>,
    pub api_version: Option<String>,
}

/// A model's price with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceEntry {
    pub model: String,
    pub price: Price,
    pub source: String,
    pub as_of: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    pub backend: LedgerBackend,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub durability: Durability,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerBackend {
    Sqlite(PathBuf),
    SqliteMemory,
    Postgres { url: Secret, schema: String },
}

/// A secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// A config that cannot be loaded, naming the file and the field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where secrets are looked up by variable name: the process environment in
/// production, a map in tests.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process environment.
pub fn process_env() -> EnvLookup {
    Arc::new(|name| std::env::var(name).ok())
}

/// Loads and validates `path`, with environment overrides and secrets from the process
/// environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// Loads and validates `path`, looking secrets up with `env`.
pub fn load_with_env(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let source = config::File::from(path)
        .format(config::FileFormat::Toml)
        .required(true);
    let overrides = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true);
    let builder = config::Config::builder()
        .add_source(source)
        .add_source(overrides);
    finish(builder, path, env)
}

/// Validates TOML text (tests and `check` of generated configs use this); secrets are
/// looked up with `env`.
pub fn from_toml_str(
    text: &str,
    name: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    finish(builder, name, env)
}

fn finish(
    builder: config::ConfigBuilder<config::builder::DefaultState>,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let error = |path: String, message: String| ConfigError {
        file: file.clone(),
        path,
        message,
    };
    let merged = builder
        .build()
        .map_err(|e| error(String::new(), e.to_string()))?;
    let value: serde_json::Value = merged
        .try_deserialize()
        .map_err(|e| error(String::new(), e.to_string()))?;
    let raw: raw::RawConfig = serde_path_to_error::deserialize(value)
        .map_err(|e| error(e.path().to_string(), e.inner().to_string()))?;
    validate::validate(raw, path, env).map_err(|(path, message)| error(path, message))
}

/// Parses a key hash: 64 hex digits, optionally after `sha256:`.
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.strip_prefix("sha256:").unwrap_or(text);
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

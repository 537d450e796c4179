//! `[limits]`: where rate-limit windows and budget reservations live, as written
//! ([`RawLimits`]) and as validated ([`LimitsConfig`]). Without the section each
//! process enforces its own limits in memory.

use std::time::Duration;

use serde::Deserialize;

use super::Secret;
use super::validate::Invalid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub backend: LimitsBackendKind,
    /// Redis backend: `redis://[:password@]host[:port][/db]`. A password belongs in the
    /// `CROSSROADS__LIMITS__REDIS_URL` environment override, not in the file.
    pub redis_url: String,
    /// Redis backend: prepended to every key, to share a server with other data.
    pub key_prefix: String,
    /// Redis backend: how long one admission may wait for Redis before the failure
    /// policy applies.
    pub redis_timeout_ms: u64,
    /// Redis backend: what admission does when Redis fails or is too slow.
    pub on_redis_error: OnRedisError,
    /// Redis backend: how long a budget reservation holds its room when its request is
    /// never settled (the replica died); past it the room is free again.
    pub reservation_ttl_ms: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            backend: LimitsBackendKind::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "crossroads:limits:".into(),
            redis_timeout_ms: 100,
            on_redis_error: OnRedisError::Local,
            reservation_ttl_ms: 900_000,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsBackendKind {
    /// Each process counts alone.
    #[default]
    Memory,
    /// Every replica pointing at the server shares one count.
    Redis,
}

/// The failure policy of the shared backend.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Fail open: this replica enforces the limits alone, in memory, until Redis answers.
    #[default]
    Local,
    /// Fail closed: refuse limited requests with a 503 until Redis answers.
    Reject,
}

impl OnRedisError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnRedisError::Local => "local",
            OnRedisError::Reject => "reject",
        }
    }
}

/// A validated `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LimitsConfig {
    #[default]
    Memory,
    Redis(RedisLimits),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisLimits {
    pub url: Secret,
    pub key_prefix: String,
    pub timeout: Duration,
    pub on_error: OnRedisError,
    pub reservation_ttl: Duration,
}

pub fn validate_limits(raw: Option<RawLimits>) -> Result<LimitsConfig, Invalid> {
    let RawLimits {
        backend,
        redis_url,
        key_prefix,
        redis_timeout_ms,
        on_redis_error,
        reservation_ttl_ms,
    } = raw.unwrap_or_default();
    let invalid = |path: &str, message: String| (format!("limits.{path}"), message);
    match backend {
        LimitsBackendKind::Memory => Ok(LimitsConfig::Memory),
        LimitsBackendKind::Redis => {
            super::cache::check_redis(&redis_url, &key_prefix, redis_timeout_ms, "the limits")
                .map_err(|(field, message)| invalid(field, message))?;
            if reservation_ttl_ms < 1_000 {
                return Err(invalid(
                    "reservation_ttl_ms",
                    "must be at least 1000: a reservation must outlive its request".into(),
                ));
            }
            Ok(LimitsConfig::Redis(RedisLimits {
                url: Secret::new(redis_url),
                key_prefix,
                timeout: Duration::from_millis(redis_timeout_ms),
                on_error: on_redis_error,
                reservation_ttl: Duration::from_millis(reservation_ttl_ms),
            }))
        }
    }
}

impl LimitsConfig {
    /// One line for `crossroads check`, without the URL's password.
    pub fn describe(&self) -> String {
        match self {
            LimitsConfig::Memory => "memory (each replica counts alone)".to_owned(),
            LimitsConfig::Redis(r) => {
                let server = url::Url::parse(r.url.expose())
                    .map(|u| {
                        format!(
                            "{}://{}:{}{}",
                            u.scheme(),
                            u.host_str().unwrap_or(""),
                            u.port().unwrap_or(6379),
                            u.path()
                        )
                    })
                    .unwrap_or_else(|_| "?".into());
                format!(
                    "redis {server} (prefix `{}`, timeout {} ms, on error: {}, reservations held {} s)",
                    r.key_prefix,
                    r.timeout.as_millis(),
                    r.on_error.as_str(),
                    r.reservation_ttl.as_secs()
                )
            }
        }
    }
}

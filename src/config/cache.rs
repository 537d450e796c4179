//! `[cache]`: the response cache's settings, as written ([`RawCache`]) and as validated
//! ([`CacheConfig`]). Without the section the cache is off.

use std::time::Duration;

use serde::Deserialize;

use super::Secret;
use super::validate::Invalid;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    /// `false` keeps the settings but turns the cache off.
    pub enabled: bool,
    pub backend: CacheBackendKind,
    /// Memory backend: the bound on what the entries take, in bytes.
    pub max_bytes: u64,
    /// Answers larger than this are not stored.
    pub max_entry_bytes: u64,
    pub ttl_ms: u64,
    pub scope: CacheScope,
    /// Redis backend: `redis://[:password@]host[:port][/db]`. A password belongs in the
    /// `CROSSROADS__CACHE__REDIS_URL` environment override, not in the file.
    pub redis_url: String,
    /// Redis backend: prepended to every key, to share a server with other data.
    pub key_prefix: String,
    /// Redis backend: how long one operation may take before it counts as a miss.
    pub redis_timeout_ms: u64,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            enabled: true,
            backend: CacheBackendKind::Memory,
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
            ttl_ms: 3_600_000,
            scope: CacheScope::Team,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "crossroads:cache:".into(),
            redis_timeout_ms: 100,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheBackendKind {
    #[default]
    Memory,
    Redis,
}

/// Who shares cached answers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// A team's requests hit only its own team's answers.
    #[default]
    Team,
    /// One cache for every caller.
    Global,
}

/// A validated `[cache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    pub backend: CacheBackend,
    pub ttl: Duration,
    pub scope: CacheScope,
    pub max_entry_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheBackend {
    Memory {
        max_bytes: u64,
    },
    Redis {
        url: Secret,
        key_prefix: String,
        timeout: Duration,
    },
}

/// `None` when the section is absent or `enabled = false`.
pub fn validate_cache(raw: Option<RawCache>) -> Result<Option<CacheConfig>, Invalid> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let RawCache {
        enabled,
        backend,
        max_bytes,
        max_entry_bytes,
        ttl_ms,
        scope,
        redis_url,
        key_prefix,
        redis_timeout_ms,
    } = raw;
    if !enabled {
        return Ok(None);
    }
    let invalid = |path: &str, message: String| (format!("cache.{path}"), message);
    if ttl_ms == 0 {
        return Err(invalid("ttl_ms", "must be greater than 0".into()));
    }
    if max_entry_bytes == 0 {
        return Err(invalid("max_entry_bytes", "must be greater than 0".into()));
    }
    let backend = match backend {
        CacheBackendKind::Memory => {
            if max_bytes < 64 * 1024 {
                return Err(invalid(
                    "max_bytes",
                    "must be at least 65536 (64 KiB)".into(),
                ));
            }
            if max_entry_bytes > max_bytes {
                return Err(invalid(
                    "max_entry_bytes",
                    format!("must not exceed cache.max_bytes ({max_bytes})"),
                ));
            }
            CacheBackend::Memory { max_bytes }
        }
        CacheBackendKind::Redis => {
            check_redis(&redis_url, &key_prefix, redis_timeout_ms, "the cache")
                .map_err(|(field, message)| invalid(field, message))?;
            CacheBackend::Redis {
                url: Secret::new(redis_url),
                key_prefix,
                timeout: Duration::from_millis(redis_timeout_ms),
            }
        }
    };
    Ok(Some(CacheConfig {
        backend,
        ttl: Duration::from_millis(ttl_ms),
        scope,
        max_entry_bytes: usize::try_from(max_entry_bytes).unwrap_or(usize::MAX),
    }))
}

/// Checks the Redis settings shared by the cache and the limits; an error names the
/// field (`redis_url`, `key_prefix` or `redis_timeout_ms`). `user` says whose keys the
/// prefix keeps apart.
pub(super) fn check_redis(
    redis_url: &str,
    key_prefix: &str,
    redis_timeout_ms: u64,
    user: &str,
) -> Result<(), (&'static str, String)> {
    let url = url::Url::parse(redis_url).map_err(|e| ("redis_url", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "redis" | "redis+unix" | "unix") {
        return Err((
            "redis_url",
            format!(
                "`{}://` is not supported; use redis://host:port",
                url.scheme()
            ),
        ));
    }
    if key_prefix.is_empty() {
        return Err((
            "key_prefix",
            format!("must not be empty: {user} must not overwrite other keys"),
        ));
    }
    if redis_timeout_ms == 0 {
        return Err(("redis_timeout_ms", "must be greater than 0".into()));
    }
    Ok(())
}

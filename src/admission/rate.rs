//! Requests and tokens per minute per key, in a sliding window approximated from the
//! current and the previous fixed minute (the previous one weighted by how much of it
//! the sliding window still covers).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::ApiError;

const MINUTE_MS: i64 = 60_000;

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start_ms: i64,
    requests: u64,
    tokens: u64,
    previous_requests: u64,
    previous_tokens: u64,
}

impl Window {
    /// Rolls the window forward to the minute containing `now_ms`.
    fn roll(&mut self, now_ms: i64) {
        let start = now_ms - now_ms.rem_euclid(MINUTE_MS);
        if start == self.start_ms {
            return;
        }
        let adjacent = start - self.start_ms == MINUTE_MS;
        self.previous_requests = if adjacent { self.requests } else { 0 };
        self.previous_tokens = if adjacent { self.tokens } else { 0 };
        self.requests = 0;
        self.tokens = 0;
        self.start_ms = start;
    }

    /// Counts in the last 60 s, estimated.
    fn sliding(&self, now_ms: i64) -> (f64, f64) {
        let covered = 1.0 - (now_ms - self.start_ms) as f64 / MINUTE_MS as f64;
        (
            self.requests as f64 + self.previous_requests as f64 * covered,
            self.tokens as f64 + self.previous_tokens as f64 * covered,
        )
    }
}

#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

impl RateLimiter {
    /// Admits one request of `tokens` estimated prompt tokens for `key`, or answers 429
    /// with the seconds until the window has room.
    pub fn admit(
        &self,
        key: &str,
        rpm: Option<u32>,
        tpm: Option<u64>,
        tokens: u64,
        now_ms: i64,
    ) -> Result<(), (ApiError, &'static str)> {
        if rpm.is_none() && tpm.is_none() {
            return Ok(());
        }
        let Ok(mut windows) = self.windows.lock() else {
            return Ok(());
        };
        let window = windows.entry(key.to_owned()).or_default();
        window.roll(now_ms);
        let (requests, used_tokens) = window.sliding(now_ms);
        let retry_after = u64::try_from(window.start_ms + MINUTE_MS - now_ms)
            .unwrap_or(0)
            .div_ceil(1000);
        if let Some(rpm) = rpm
            && requests + 1.0 > f64::from(rpm)
        {
            return Err((
                limited(key, format!("{rpm} requests per minute"), retry_after),
                "rpm",
            ));
        }
        if let Some(tpm) = tpm
            && used_tokens + tokens as f64 > tpm as f64
        {
            return Err((
                limited(key, format!("{tpm} tokens per minute"), retry_after),
                "tpm",
            ));
        }
        window.requests += 1;
        window.tokens += tokens;
        Ok(())
    }

    /// Adds the tokens a request generated to its key's window.
    pub fn record_output(&self, key: &str, tokens: u64, now_ms: i64) {
        if let Ok(mut windows) = self.windows.lock()
            && let Some(window) = windows.get_mut(key)
        {
            window.roll(now_ms);
            window.tokens += tokens;
        }
    }
}

fn limited(key: &str, limit: String, retry_after: u64) -> ApiError {
    ApiError::RateLimited {
        message: format!("key `{key}` is limited to {limit}; retry in {retry_after} s"),
        retry_after: Some(retry_after.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_per_minute_slide() {
        let r = RateLimiter::default();
        let t0 = 600_000;
        for _ in 0..3 {
            assert!(r.admit("k", Some(3), None, 0, t0).is_ok());
        }
        assert!(r.admit("k", Some(3), None, 0, t0 + 1_000).is_err());
        // Half a minute into the next window half of the old count still weighs.
        assert!(r.admit("k", Some(3), None, 0, t0 + 90_000).is_ok());
        assert!(r.admit("k", Some(3), None, 0, t0 + 90_000).is_err());
        // Two minutes later everything has slid out.
        assert!(r.admit("k", Some(3), None, 0, t0 + 180_000).is_ok());
    }

    #[test]
    fn tokens_per_minute_count_prompts_and_outputs() {
        let r = RateLimiter::default();
        assert!(r.admit("k", None, Some(100), 60, 0).is_ok());
        r.record_output("k", 30, 0);
        let err = r.admit("k", None, Some(100), 20, 1_000);
        assert!(matches!(
            err,
            Err((
                ApiError::RateLimited {
                    retry_after: Some(59),
                    ..
                },
                "tpm"
            ))
        ));
        assert!(r.admit("other", None, Some(100), 20, 1_000).is_ok());
    }
}

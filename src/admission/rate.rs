//! Requests and tokens per minute per key, in a sliding window approximated from the
//! current and the previous fixed minute (the previous one weighted by how much of it
//! the sliding window still covers).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::ApiError;

pub(super) const MINUTE_MS: i64 = 60_000;

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

/// Which per-minute limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    /// Requests per minute.
    Rpm,
    /// Tokens per minute.
    Tpm,
}

impl RateKind {
    /// The metrics label and the name in the config: `rpm` or `tpm`.
    pub fn as_str(self) -> &'static str {
        match self {
            RateKind::Rpm => "rpm",
            RateKind::Tpm => "tpm",
        }
    }

    /// What the limit counts.
    fn unit(self) -> &'static str {
        match self {
            RateKind::Rpm => "requests",
            RateKind::Tpm => "tokens",
        }
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
    ) -> Result<(), (ApiError, RateKind)> {
        if rpm.is_none() && tpm.is_none() {
            return Ok(());
        }
        let Ok(mut windows) = self.windows.lock() else {
            return Ok(());
        };
        let window = windows.entry(key.to_owned()).or_default();
        window.roll(now_ms);
        let (requests, used_tokens) = window.sliding(now_ms);
        let elapsed = now_ms - window.start_ms;
        if let Some(rpm) = rpm
            && requests + 1.0 > f64::from(rpm)
        {
            let wait = wait_ms(
                f64::from(rpm),
                1.0,
                window.requests as f64,
                window.previous_requests as f64,
                elapsed,
            );
            return Err(limited(key, RateKind::Rpm, u64::from(rpm), wait));
        }
        if let Some(tpm) = tpm
            && used_tokens + tokens as f64 > tpm as f64
        {
            let wait = wait_ms(
                tpm as f64,
                tokens as f64,
                window.tokens as f64,
                window.previous_tokens as f64,
                elapsed,
            );
            return Err(limited(key, RateKind::Tpm, tpm, wait));
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

/// Milliseconds until a request of `want` fits under `limit`, given this fixed minute's
/// count `current`, the previous minute's `previous` and `elapsed` ms into this minute:
/// the previous minute weighs less as the sliding window leaves it, and at the next
/// minute this one becomes the previous.
pub(super) fn wait_ms(limit: f64, want: f64, current: f64, previous: f64, elapsed: i64) -> i64 {
    let minute = MINUTE_MS as f64;
    let elapsed = elapsed.clamp(0, MINUTE_MS) as f64;
    // The point in a minute (ms from its start) where `count` weighted down plus what is
    // already there and `want` fit.
    let fits_at = |fixed: f64, count: f64| -> f64 {
        if count <= 0.0 {
            0.0
        } else {
            (minute * (1.0 - (limit - want - fixed) / count)).max(0.0)
        }
    };
    let wait = if want > limit {
        // Never fits; wait for the whole window to slide by.
        2.0 * minute - elapsed
    } else if current + want <= limit {
        (fits_at(current, previous) - elapsed).max(0.0)
    } else {
        minute - elapsed + fits_at(0.0, current)
    };
    wait.ceil() as i64
}

/// The 429 for `key` refused by its `which` limit of `limit` (returned beside it for the
/// metrics), retryable after `wait_ms` (rounded up to whole seconds).
pub(super) fn limited(
    key: &str,
    which: RateKind,
    limit: u64,
    wait_ms: i64,
) -> (ApiError, RateKind) {
    let unit = which.unit();
    // A millisecond more, so a retry at exactly the edge is not lost to float rounding.
    let retry_after = u64::try_from(wait_ms + 1)
        .unwrap_or(0)
        .div_ceil(1000)
        .max(1);
    (
        ApiError::RateLimited {
            message: format!(
                "key `{key}` is limited to {limit} {unit} per minute; retry in {retry_after} s"
            ),
            retry_after: Some(retry_after),
        },
        which,
    )
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
    fn retry_after_is_when_the_window_has_room() {
        // 3 of 3 now, none before: the next minute starts with 3 weighing fully; one more
        // fits once they weigh 2, a third of the way in.
        assert_eq!(wait_ms(3.0, 1.0, 3.0, 0.0, 10_000), 50_000 + 20_000);
        // 1 now, 4 before at 3 rpm, half a minute in: 1 + 4 × 0.5 = 3 is full; 1 + 4w + 1
        // ≤ 3 at w = 0.25, three quarters in.
        assert_eq!(wait_ms(3.0, 1.0, 1.0, 4.0, 30_000), 15_000);
        // Larger than the limit: never fits in one window.
        assert_eq!(wait_ms(10.0, 11.0, 0.0, 0.0, 0), 120_000);
    }

    #[test]
    fn retrying_at_retry_after_succeeds() {
        let r = RateLimiter::default();
        let t0 = 600_000;
        for _ in 0..3 {
            assert!(r.admit("k", Some(3), None, 0, t0).is_ok());
        }
        let Err((
            ApiError::RateLimited {
                retry_after: Some(s),
                ..
            },
            RateKind::Rpm,
        )) = r.admit("k", Some(3), None, 0, t0 + 10_000)
        else {
            unreachable!("the fourth request must be limited");
        };
        let at = t0 + 10_000 + i64::try_from(s).unwrap_or(0) * 1000;
        assert!(r.admit("k", Some(3), None, 0, at - 2_000).is_err());
        assert!(r.admit("k", Some(3), None, 0, at).is_ok());
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
                    // 90 of 100 tokens this minute: at the next minute they weigh fully,
                    // and 20 more fit once they weigh 80: 59 s + 6.67 s.
                    retry_after: Some(66),
                    ..
                },
                RateKind::Tpm
            ))
        ));
        assert!(r.admit("other", None, Some(100), 20, 1_000).is_ok());
    }
}

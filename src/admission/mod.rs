//! Admission: rate limits (RPM/TPM per key) before a request is classified, and budget
//! reservations (per key and per team, daily or monthly UTC) before it is sent: the
//! upper-bound cost is reserved first and the actual cost settled after, so concurrent
//! requests cannot overshoot a budget.

mod budget;
mod rate;

pub use budget::{Budgets, Reservation, Scope, SpendSource, period_start_ms};
pub use rate::RateLimiter;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

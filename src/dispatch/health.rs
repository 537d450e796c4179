//! Passive health of one deployment: consecutive failures eject it for a back-off that
//! doubles with each ejection; when the back-off ends one request probes it again.
//! Also the moving average of its latency and its requests in flight. Lock-free.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::HealthConfig;

/// Microseconds since the first use, so instants fit in an atomic.
fn now_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Weight of the newest sample in the latency average.
const EWMA_ALPHA: f64 = 0.2;

#[derive(Debug, Default)]
pub struct Health {
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until_us: AtomicU64,
    /// f64 bits of the moving average of time to first byte, in µs; 0 = no sample yet.
    latency_us: AtomicU64,
    in_flight: AtomicU32,
}

/// What ordering needs to know about a deployment right now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthView {
    pub ejected: bool,
    /// Moving average of time to first byte, when there is one.
    pub latency_us: Option<f64>,
}

impl Health {
    pub fn view(&self) -> HealthView {
        let latency = f64::from_bits(self.latency_us.load(Ordering::Relaxed));
        HealthView {
            ejected: self.ejected_until_us.load(Ordering::Relaxed) > now_us(),
            latency_us: (latency > 0.0).then_some(latency),
        }
    }

    /// A success closes the circuit and feeds the latency average.
    pub fn record_success(&self, latency: Duration) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
        let sample = latency.as_secs_f64() * 1e6;
        let old = f64::from_bits(self.latency_us.load(Ordering::Relaxed));
        let new = if old > 0.0 {
            old + EWMA_ALPHA * (sample - old)
        } else {
            sample
        };
        // Racing writers may drop a sample; an average does not mind.
        self.latency_us.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Counts a failure; returns true when it ejected the deployment.
    pub fn record_failure(&self, policy: &HealthConfig) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < policy.failure_threshold {
            return false;
        }
        let ejections = self.ejections.fetch_add(1, Ordering::Relaxed);
        let backoff = policy
            .ejection
            .saturating_mul(1u32 << ejections.min(16))
            .min(policy.max_ejection);
        let until = now_us().saturating_add(u64::try_from(backoff.as_micros()).unwrap_or(u64::MAX));
        self.ejected_until_us.store(until, Ordering::Relaxed);
        true
    }

    /// Takes a slot when the deployment has room (`None` = no limit).
    pub fn try_acquire(self: &Arc<Self>, limit: Option<u32>) -> Option<Slot> {
        let taken = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if limit.is_some_and(|max| taken >= max) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }
}

/// A request in flight on a deployment; the slot frees when the response is done.
#[derive(Debug)]
pub struct Slot(Arc<Health>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthConfig {
        HealthConfig {
            failure_threshold: 2,
            ejection: Duration::from_secs(60),
            max_ejection: Duration::from_secs(600),
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_recovers_on_success() {
        let h = Health::default();
        assert!(!h.record_failure(&policy()));
        assert!(!h.view().ejected);
        assert!(h.record_failure(&policy()));
        assert!(h.view().ejected);
        h.record_success(Duration::from_millis(10));
        assert_eq!(h.consecutive_failures.load(Ordering::Relaxed), 0);
        assert_eq!(h.ejections.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn latency_average_moves_toward_samples() {
        let h = Health::default();
        assert_eq!(h.view().latency_us, None);
        h.record_success(Duration::from_micros(1000));
        assert_eq!(h.view().latency_us, Some(1000.0));
        h.record_success(Duration::from_micros(2000));
        assert_eq!(h.view().latency_us, Some(1200.0));
    }

    #[test]
    fn capacity_is_enforced_and_released() {
        let h = Arc::new(Health::default());
        let a = h.try_acquire(Some(1));
        assert!(a.is_some());
        assert!(h.try_acquire(Some(1)).is_none());
        drop(a);
        assert!(h.try_acquire(Some(1)).is_some());
        assert!(h.try_acquire(None).is_some());
    }
}

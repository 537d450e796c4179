//! Admission: rate limits (RPM/TPM per key) and budget reservations (per key and per
//! team, daily or monthly UTC): the upper-bound cost is reserved before a request is
//! sent and the actual cost settled after, so concurrent requests cannot overshoot a
//! budget.
//!
//! - [`rate`], [`budget`]: the in-process limiter and budgets (one replica alone).
//! - [`store`]: the limits every replica shares, as a [`SharedStore`] trait; [`shared`]
//!   implements it in Redis (`[limits] backend = "redis"`). The failure policy is
//!   applied here: fall back to the in-process limits, or refuse with a 503.

mod budget;
mod rate;
pub mod shared;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus::IntCounterVec;

pub use budget::{
    Budgets, HistoryError, LocalHold, Scope, SpendSource, civil_date, period_end_ms,
    period_start_ms,
};
pub use rate::{RateKind, RateLimiter};
pub use shared::{Owing, SharedLimits};
pub use store::{Settle, SharedHold, SharedStore};

use crate::accounting::Usd;
use crate::config::{BudgetConfig, OnRedisError};
use crate::error::ApiError;
use store::SharedVerdict;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What one request asks of admission.
pub struct Ask<'a> {
    pub key: &'a str,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    /// Estimated prompt tokens, counted against `tpm`.
    pub tokens: u64,
    /// The key's and its team's budgets; empty when none applies.
    pub budgets: &'a [(Scope, BudgetConfig)],
    /// The request's upper-bound cost.
    pub amount: Usd,
    /// The pool has free deployments the request may go to when `amount` does not fit.
    pub free_fallback: bool,
    /// Refuse even free requests once a budget is spent.
    pub block_free: bool,
    pub now_ms: i64,
}

/// Why admission refused before any budget was looked at.
pub enum Refused {
    /// Over a per-minute limit.
    Rate(ApiError, RateKind),
    /// The shared limits cannot be reached and the policy is to refuse.
    Unavailable(ApiError),
}

/// A request past the rate limits, with the budget's answer, which the caller applies
/// after the cache lookup (a hit costs nothing, so a spent budget does not stop it).
pub struct Admitted {
    /// The reservation and whether only free deployments may serve, or the 429.
    pub budget: Result<(Reservation, bool), ApiError>,
}

/// A request's reserved budget, settled with its actual cost; dropped unsettled, it
/// releases what it held.
#[must_use]
pub struct Reservation(Hold);

enum Hold {
    Nothing,
    Local(LocalHold),
    Shared(SharedHold),
    /// Admitted by this process's limits because the shared store failed: settled
    /// here, and owed to the shared accounts.
    Fallback(LocalHold, Box<dyn Settle>),
}

impl Reservation {
    /// A reservation of nothing, for requests without budgets.
    pub fn nothing() -> Self {
        Reservation(Hold::Nothing)
    }

    /// Settles the request's actual cost and releases the reservation.
    pub fn settle(self, actual: Usd) {
        match self.0 {
            Hold::Nothing => {}
            Hold::Local(h) => h.settle(actual),
            Hold::Shared(h) => h.settle(actual),
            Hold::Fallback(h, owing) => {
                h.settle(actual);
                owing.settle(actual);
            }
        }
    }
}

/// The limits of this process, and of every replica when Redis holds them.
pub struct Admission {
    limiter: RateLimiter,
    budgets: Arc<Budgets>,
    shared: Option<(Box<dyn SharedStore>, OnRedisError)>,
    /// Admissions decided without Redis because it failed, by policy.
    fallbacks: IntCounterVec,
    /// The last admission with limits fell back to this process's own.
    fell_back: AtomicBool,
}

impl Admission {
    pub fn new(
        budgets: Arc<Budgets>,
        shared: Option<(Box<dyn SharedStore>, OnRedisError)>,
        fallbacks: IntCounterVec,
    ) -> Self {
        Admission {
            limiter: RateLimiter::default(),
            budgets,
            shared,
            fallbacks,
            fell_back: AtomicBool::new(false),
        }
    }

    /// Waits until what finished requests owe the shared limits (settlements, token
    /// counts) has reached Redis: the runtime would cancel it at exit.
    pub async fn flush(&self) {
        if let Some((shared, _)) = &self.shared {
            shared.settled().await;
        }
    }

    /// Counts the request against its key's rate limits and reserves its upper-bound
    /// cost against its budgets: one Redis round trip with the shared backend.
    pub async fn admit(&self, ask: &Ask<'_>) -> Result<Admitted, Refused> {
        let limited = ask.rpm.is_some() || ask.tpm.is_some() || !ask.budgets.is_empty();
        if let (Some((shared, policy)), true) = (&self.shared, limited) {
            match shared.admit(ask).await {
                Ok(verdict) => {
                    // A load first: the swap writes, and most requests need not.
                    if self.fell_back.load(Ordering::Relaxed)
                        && self.fell_back.swap(false, Ordering::Relaxed)
                    {
                        // Redis is back and holds what was spent meanwhile (see
                        // `Owing`): the next outage starts from the ledger again, not
                        // from what this process counted in the last one.
                        self.budgets.forget();
                    }
                    return self.shared_verdict(shared.as_ref(), ask, verdict);
                }
                Err(e) => {
                    self.fallbacks.with_label_values(&[policy.as_str()]).inc();
                    self.fell_back.store(true, Ordering::Relaxed);
                    if *policy == OnRedisError::Reject {
                        return Err(Refused::Unavailable(ApiError::Unavailable {
                            message: format!(
                                "rate limits and budgets cannot be checked right now ({e}); retry shortly"
                            ),
                            code: "limits_unavailable",
                        }));
                    }
                    return self.admit_locally(ask, Some(shared.as_ref())).await;
                }
            }
        }
        self.admit_locally(ask, None).await
    }

    /// Admits by this process's own limits; with `owed_to`, because the shared limits
    /// failed, so the requests' costs are owed to them too.
    async fn admit_locally(
        &self,
        ask: &Ask<'_>,
        owed_to: Option<&dyn SharedStore>,
    ) -> Result<Admitted, Refused> {
        self.limiter
            .admit(ask.key, ask.rpm, ask.tpm, ask.tokens, ask.now_ms)
            .map_err(|(e, which)| Refused::Rate(e, which))?;
        if ask.budgets.is_empty() {
            return Ok(Admitted {
                budget: Ok((Reservation::nothing(), false)),
            });
        }
        if let Err(e) = self.budgets.load_history(ask.budgets, ask.now_ms).await {
            return Ok(Admitted { budget: Err(e) });
        }
        let reserve = |amount, block_free| {
            self.budgets
                .reserve(ask.budgets, amount, block_free, ask.now_ms)
                .map(|h| {
                    Reservation(match owed_to {
                        Some(shared) => Hold::Fallback(h, shared.owing(ask.budgets, ask.now_ms)),
                        None => Hold::Local(h),
                    })
                })
        };
        let budget = match reserve(ask.amount, ask.block_free) {
            Ok(r) => Ok((r, false)),
            // The paid deployments do not fit; the free ones still may serve.
            Err(_) if ask.free_fallback && !ask.block_free => {
                reserve(Usd::ZERO, false).map(|r| (r, true))
            }
            Err(e) => Err(e),
        };
        Ok(Admitted { budget })
    }

    fn shared_verdict(
        &self,
        shared: &dyn SharedStore,
        ask: &Ask<'_>,
        verdict: SharedVerdict,
    ) -> Result<Admitted, Refused> {
        let budget = match verdict {
            SharedVerdict::Admitted(hold) => Ok((Reservation(Hold::Shared(hold)), false)),
            SharedVerdict::RateLimited {
                which,
                current,
                previous,
                elapsed_ms,
            } => {
                let (limit, want) = match which {
                    RateKind::Rpm => (ask.rpm.map_or(0, u64::from), 1.0),
                    RateKind::Tpm => (ask.tpm.unwrap_or(0), ask.tokens as f64),
                };
                let wait = rate::wait_ms(limit as f64, want, current, previous, elapsed_ms);
                let (e, which) = rate::limited(ask.key, which, limit, wait);
                return Err(Refused::Rate(e, which));
            }
            SharedVerdict::OverBudget { .. } if ask.free_fallback && !ask.block_free => {
                let hold = shared.hold_free(ask.budgets, ask.now_ms);
                Ok((Reservation(Hold::Shared(hold)), true))
            }
            SharedVerdict::OverBudget {
                index,
                spent,
                reserved,
            } => match ask.budgets.get(index) {
                Some((scope, budget)) => Err(budget::over_budget(
                    scope, budget, spent, reserved, ask.amount,
                )),
                None => Err(ApiError::Internal {
                    message: "the budget check named no budget".into(),
                }),
            },
        };
        Ok(Admitted { budget })
    }

    /// The largest share of its limit any of `budgets` has spent this period: across
    /// every replica with the shared backend (a period no replica started yet, or a
    /// Redis that fails, reads the ledger's figure as this process counts it). `None`
    /// without budgets or when neither can be read.
    pub async fn budget_used(&self, budgets: &[(Scope, BudgetConfig)], now_ms: i64) -> Option<f32> {
        if budgets.is_empty() {
            return None;
        }
        let shared = match &self.shared {
            Some((shared, _)) => shared.spent(budgets, now_ms).await.ok(),
            None => None,
        };
        let shared_spent = |i: usize| shared.as_ref().and_then(|s| s.get(i).copied().flatten());
        let local = if (0..budgets.len()).all(|i| shared_spent(i).is_some()) {
            None
        } else {
            self.budgets.spent(budgets, now_ms).await
        };
        budgets
            .iter()
            .enumerate()
            .filter_map(|(i, (_, budget))| {
                let spent = shared_spent(i).or_else(|| local.as_ref()?.get(i).copied())?;
                Some(if budget.limit > Usd::ZERO {
                    (spent.as_f64() / budget.limit.as_f64()) as f32
                } else {
                    1.0
                })
            })
            .reduce(f32::max)
    }

    /// Settles a finished request: its reservation with the actual `cost`, and the
    /// `output` tokens it generated in the window of `tpm_key` (the key, when it has a
    /// TPM limit and the answer came from an upstream, not the cache).
    pub fn settle(
        &self,
        reservation: Option<Reservation>,
        tpm_key: Option<&str>,
        cost: Usd,
        output: u64,
    ) {
        if let Some(reservation) = reservation {
            reservation.settle(cost);
        }
        if let Some(key) = tpm_key {
            self.record_output(key, output, now_ms());
        }
    }

    /// Adds the tokens a request generated to its key's window.
    pub fn record_output(&self, key: &str, tokens: u64, now_ms: i64) {
        if let Some((shared, _)) = &self.shared {
            shared.record_output(key, tokens, now_ms);
        }
        // A no-op unless this process admitted the key itself (Redis was down).
        self.limiter.record_output(key, tokens, now_ms);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use super::*;
    use crate::config::BudgetPeriod;

    /// A shared store that cannot be reached, and remembers what it was owed.
    #[derive(Default)]
    struct Unreachable {
        owed: Arc<Mutex<Vec<Usd>>>,
    }

    struct Owed(Arc<Mutex<Vec<Usd>>>);

    impl Settle for Owed {
        fn settle(self: Box<Self>, actual: Usd) {
            self.0.lock().unwrap().push(actual);
        }
    }

    impl SharedStore for Unreachable {
        fn admit<'a>(
            &'a self,
            _: &'a Ask<'a>,
        ) -> futures_util::future::BoxFuture<'a, Result<SharedVerdict, store::SharedError>>
        {
            Box::pin(async { Err("connection refused".into()) })
        }
        fn hold_free(&self, _: &[(Scope, BudgetConfig)], _: i64) -> SharedHold {
            Box::new(Owed(self.owed.clone()))
        }
        fn owing(&self, _: &[(Scope, BudgetConfig)], _: i64) -> Box<dyn Settle> {
            Box::new(Owed(self.owed.clone()))
        }
        fn spent<'a>(
            &'a self,
            _: &'a [(Scope, BudgetConfig)],
            _: i64,
        ) -> futures_util::future::BoxFuture<'a, Result<Vec<Option<Usd>>, store::SharedError>>
        {
            Box::pin(async { Err("connection refused".into()) })
        }
        fn record_output(&self, _: &str, _: u64, _: i64) {}
        fn settled(&self) -> futures_util::future::BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    fn admission(policy: OnRedisError) -> (Admission, Arc<Mutex<Vec<Usd>>>) {
        let counter = |name: &str, label: &str| {
            IntCounterVec::new(prometheus::Opts::new(name, name), &[label]).unwrap()
        };
        let store = Unreachable::default();
        let owed = store.owed.clone();
        let budgets = Arc::new(Budgets::new(Arc::new(()), 0.8, counter("w", "scope")));
        let shared: Box<dyn SharedStore> = Box::new(store);
        let admission = Admission::new(budgets, Some((shared, policy)), counter("f", "policy"));
        (admission, owed)
    }

    fn ask<'a>(budgets: &'a [(Scope, BudgetConfig)], amount: Usd) -> Ask<'a> {
        Ask {
            key: "k",
            rpm: None,
            tpm: None,
            tokens: 10,
            budgets,
            amount,
            free_fallback: false,
            block_free: false,
            now_ms: now_ms(),
        }
    }

    #[tokio::test]
    async fn an_unreachable_shared_store_falls_back_and_is_owed_or_refuses_by_policy() {
        let dollar = Usd::from_dollars(1.0).unwrap();
        let budgets = [(
            Scope::Key("k".into()),
            BudgetConfig {
                limit: dollar,
                period: BudgetPeriod::Day,
            },
        )];
        let cost = Usd::from_dollars(0.25).unwrap();

        let (local, owed) = admission(OnRedisError::Local);
        let admitted = local.admit(&ask(&budgets, cost)).await.ok().unwrap();
        let (reservation, free_only) = admitted.budget.ok().unwrap();
        assert!(!free_only);
        reservation.settle(cost);
        assert_eq!(
            *owed.lock().unwrap(),
            vec![cost],
            "the fallback owes the store"
        );
        // This process's own budget counted it: three more fit, the fifth does not.
        for _ in 0..3 {
            let admitted = local.admit(&ask(&budgets, cost)).await.ok().unwrap();
            admitted.budget.ok().unwrap().0.settle(cost);
        }
        let over = local.admit(&ask(&budgets, cost)).await.ok().unwrap();
        assert!(over.budget.is_err());

        let (reject, owed) = admission(OnRedisError::Reject);
        assert!(matches!(
            reject.admit(&ask(&budgets, cost)).await,
            Err(Refused::Unavailable(_))
        ));
        assert!(owed.lock().unwrap().is_empty());
    }
}

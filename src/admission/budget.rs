//! Budgets with reservations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::accounting::Usd;
use crate::config::{BudgetConfig, BudgetPeriod};
use crate::error::ApiError;

/// Whose spend a budget limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Key(String),
    Team(String),
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Key(_) => "key",
            Scope::Team(_) => "team",
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Scope::Key(id) => format!("key `{id}`"),
            Scope::Team(id) => format!("team `{id}`"),
        }
    }
}

/// Spend already in the ledger, to start a period's count after a restart.
pub trait SpendSource: Send + Sync {
    /// An error leaves the budget unread: its requests are refused until a read works,
    /// rather than counted from zero.
    fn spent_since(&self, scope: &Scope, since_ms: i64) -> Result<Usd, HistoryError>;
}

/// Why a budget's past spend could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// What the spend source reported (a ledger store's error).
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
    #[error("the ledger read stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
    #[error("the ledger did not answer within {} s", .0.as_secs())]
    TimedOut(std::time::Duration),
}

/// Reads the ledger spend of each (scope, period start) on a blocking thread: the
/// ledger may be a PostgreSQL server across the network, and the async runtime must
/// not wait on it.
pub async fn read_history(
    history: &Arc<dyn SpendSource>,
    wanted: Vec<(Scope, i64)>,
) -> Result<Vec<Usd>, HistoryError> {
    let history = history.clone();
    let read = tokio::task::spawn_blocking(move || {
        wanted
            .iter()
            .map(|(scope, start)| history.spent_since(scope, *start))
            .collect()
    });
    // A stalled database must not hold budgeted requests forever.
    match tokio::time::timeout(HISTORY_TIMEOUT, read).await {
        Ok(Ok(spent)) => spent,
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(HistoryError::TimedOut(HISTORY_TIMEOUT)),
    }
}

/// How long a request waits for a budget's past spend before it is refused.
const HISTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn unreadable(scope: &Scope, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::Unavailable {
        message: format!(
            "cannot read the spend of {} from the ledger, so its budget cannot be checked: {e}",
            scope.describe()
        ),
        code: "ledger_unavailable",
    }
}

/// No history: every period starts at zero.
impl SpendSource for () {
    fn spent_since(&self, _: &Scope, _: i64) -> Result<Usd, HistoryError> {
        Ok(Usd::ZERO)
    }
}

#[derive(Debug, Default)]
struct Account {
    spent: Usd,
    reserved: Usd,
    warned: bool,
}

/// Start of the UTC day or month containing `now_ms`.
pub fn period_start_ms(period: BudgetPeriod, now_ms: i64) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    let days = now_ms.div_euclid(DAY_MS);
    match period {
        BudgetPeriod::Day => days * DAY_MS,
        BudgetPeriod::Month => (days - (civil_date(days).2 - 1)) * DAY_MS,
    }
}

/// The UTC `(year, month, day)` of a day counted from the Unix epoch (Howard
/// Hinnant's civil-from-days).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The 429 of a request that does not fit `budget` of `scope`.
pub(super) fn over_budget(
    scope: &Scope,
    budget: &BudgetConfig,
    spent: Usd,
    reserved: Usd,
    amount: Usd,
) -> ApiError {
    let period = match budget.period {
        BudgetPeriod::Day => "daily",
        BudgetPeriod::Month => "monthly",
    };
    ApiError::QuotaExceeded {
        message: format!(
            "{} has reached its {period} budget of ${} (spent ${spent}, reserved ${reserved}; this request may cost up to ${amount})",
            scope.describe(),
            budget.limit,
        ),
        scope: scope.kind(),
    }
}

/// Start of the period after the one starting at `start_ms`.
pub fn period_end_ms(period: BudgetPeriod, start_ms: i64) -> i64 {
    const DAY_MS: i64 = 86_400_000;
    match period {
        BudgetPeriod::Day => start_ms + DAY_MS,
        // Day 1 plus 31 days is always in the next month.
        BudgetPeriod::Month => period_start_ms(period, start_ms + 31 * DAY_MS),
    }
}

/// Every budget's running spend and reservations, per period.
pub struct Budgets {
    accounts: Mutex<HashMap<(Scope, i64), Account>>,
    history: Arc<dyn SpendSource>,
    warn_at: f64,
    /// Budgets that crossed `warn_at`, by scope kind.
    warnings: prometheus::IntCounterVec,
}

/// Reserved amounts in this process, to settle when the request is done (dropping
/// releases them).
#[must_use]
pub struct LocalHold {
    budgets: Arc<Budgets>,
    /// (scope, period start) and the budget's limit, for each budget held.
    held: Vec<((Scope, i64), Usd)>,
    amount: Usd,
}

impl Budgets {
    pub fn new(
        history: Arc<dyn SpendSource>,
        warn_at: f64,
        warnings: prometheus::IntCounterVec,
    ) -> Self {
        Budgets {
            accounts: Mutex::new(HashMap::new()),
            history,
            warn_at,
            warnings,
        }
    }

    /// Drops every account, so that each is read from the ledger again when next
    /// needed. Reservations still held settle into nothing here.
    pub fn forget(&self) {
        if let Ok(mut accounts) = self.accounts.lock() {
            accounts.clear();
        }
    }

    /// Reads the ledger spend of every budget in `limits` whose current period this
    /// process has not counted yet, off the runtime and outside the lock, so that
    /// [`Budgets::reserve`] finds it.
    pub async fn load_history(
        &self,
        limits: &[(Scope, BudgetConfig)],
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let poisoned = || ApiError::Internal {
            message: "budget state is unavailable".into(),
        };
        let missing: Vec<(Scope, i64)> = {
            let accounts = self.accounts.lock().map_err(|_| poisoned())?;
            limits
                .iter()
                .map(|(scope, b)| (scope.clone(), period_start_ms(b.period, now_ms)))
                .filter(|k| !accounts.contains_key(k))
                .collect()
        };
        let Some((first, _)) = missing.first() else {
            return Ok(());
        };
        let first = first.clone();
        let spent = read_history(&self.history, missing.clone())
            .await
            .map_err(|e| unreadable(&first, &e))?;
        let mut accounts = self.accounts.lock().map_err(|_| poisoned())?;
        for (key, spent) in missing.into_iter().zip(spent) {
            // A request that read it meanwhile got the same figure: keep its account.
            accounts.entry(key).or_insert(Account {
                spent,
                ..Account::default()
            });
        }
        Ok(())
    }

    /// What each budget in `limits` has spent this period, as this process counts it
    /// (the ledger's figure at the period's first request, plus what settled since);
    /// `None` for all when the ledger cannot be read.
    pub async fn spent(&self, limits: &[(Scope, BudgetConfig)], now_ms: i64) -> Option<Vec<Usd>> {
        self.load_history(limits, now_ms).await.ok()?;
        let accounts = self.accounts.lock().ok()?;
        Some(
            limits
                .iter()
                .map(|(scope, b)| {
                    accounts
                        .get(&(scope.clone(), period_start_ms(b.period, now_ms)))
                        .map_or(Usd::ZERO, |a| a.spent)
                })
                .collect(),
        )
    }

    /// Reserves `amount` against every budget in `limits`, all or none. A free request
    /// (`amount` zero) passes even a spent budget unless `block_free`.
    pub fn reserve(
        self: &Arc<Self>,
        limits: &[(Scope, BudgetConfig)],
        amount: Usd,
        block_free: bool,
        now_ms: i64,
    ) -> Result<LocalHold, ApiError> {
        let mut reservation = LocalHold {
            budgets: self.clone(),
            held: Vec::with_capacity(limits.len()),
            amount,
        };
        if limits.is_empty() {
            return Ok(reservation);
        }
        let mut accounts = self.accounts.lock().map_err(|_| ApiError::Internal {
            message: "budget state is unavailable".into(),
        })?;
        for (scope, budget) in limits {
            let start = period_start_ms(budget.period, now_ms);
            // `load_history` reads every account first, off the runtime: never a
            // blocking read here, under the lock.
            let Some(account) = accounts.get_mut(&(scope.clone(), start)) else {
                return Err(unreadable(scope, &"its spend has not been read yet"));
            };
            let committed = account.spent + account.reserved;
            let over = if amount == Usd::ZERO {
                block_free && committed >= budget.limit
            } else {
                committed + amount > budget.limit
            };
            if over {
                return Err(over_budget(
                    scope,
                    budget,
                    account.spent,
                    account.reserved,
                    amount,
                ));
            }
        }
        for (scope, budget) in limits {
            let key = (scope.clone(), period_start_ms(budget.period, now_ms));
            if let Some(account) = accounts.get_mut(&key) {
                account.reserved += amount;
            }
            reservation.held.push((key, budget.limit));
        }
        Ok(reservation)
    }

    /// Moves a reservation to spent; warns once per period when spend passes `warn_at`.
    fn settle(&self, held: &[((Scope, i64), Usd)], reserved: Usd, actual: Usd) {
        let Ok(mut accounts) = self.accounts.lock() else {
            return;
        };
        for ((scope, start), limit) in held {
            let Some(account) = accounts.get_mut(&(scope.clone(), *start)) else {
                continue;
            };
            account.reserved = account.reserved - reserved;
            account.spent += actual;
            let threshold = limit.as_f64() * self.warn_at;
            if !account.warned && account.spent.as_f64() >= threshold {
                account.warned = true;
                self.warnings.with_label_values(&[scope.kind()]).inc();
                tracing::warn!(scope = %scope.describe(), spent = %account.spent, limit = %limit, "budget warning threshold reached");
            }
        }
    }
}

impl LocalHold {
    /// Settles the request's actual cost and releases the reservation.
    pub fn settle(mut self, actual: Usd) {
        let held = std::mem::take(&mut self.held);
        self.budgets.settle(&held, self.amount, actual);
    }
}

impl Drop for LocalHold {
    /// Not settled: nothing was spent (the request failed before an upstream answered).
    fn drop(&mut self) {
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            self.budgets.settle(&held, self.amount, Usd::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> Arc<Budgets> {
        let warnings = prometheus::IntCounterVec::new(prometheus::Opts::new("w", "w"), &["scope"])
            .unwrap_or_else(|_| unreachable!());
        Arc::new(Budgets::new(Arc::new(()), 0.8, warnings))
    }

    fn limit(usd: f64) -> BudgetConfig {
        BudgetConfig {
            limit: Usd::from_dollars(usd).unwrap_or_default(),
            period: BudgetPeriod::Day,
        }
    }

    #[tokio::test]
    async fn reservations_cannot_overshoot_and_settle_to_actual() {
        let b = budgets();
        let scope = [(Scope::Key("k".into()), limit(1.0))];
        assert!(b.load_history(&scope, 0).await.is_ok());
        let cost = Usd::from_dollars(0.4).unwrap_or_default();
        let a = b.reserve(&scope, cost, false, 0).ok();
        let c = b.reserve(&scope, cost, false, 0).ok();
        assert!(a.is_some() && c.is_some());
        assert!(b.reserve(&scope, cost, false, 0).is_err(), "0.4 × 3 > 1.0");
        // Settling for less frees room.
        if let Some(a) = a {
            a.settle(Usd::from_dollars(0.1).unwrap_or_default());
        }
        assert!(b.reserve(&scope, cost, false, 0).is_ok());
    }

    #[tokio::test]
    async fn dropped_reservations_release_and_free_traffic_passes() {
        let b = budgets();
        let scope = [(Scope::Team("t".into()), limit(1.0))];
        assert!(b.load_history(&scope, 0).await.is_ok());
        drop(b.reserve(&scope, Usd::from_dollars(1.0).unwrap_or_default(), false, 0));
        let full = b.reserve(&scope, Usd::from_dollars(1.0).unwrap_or_default(), false, 0);
        assert!(full.is_ok());
        if let Ok(r) = full {
            r.settle(Usd::from_dollars(1.0).unwrap_or_default());
        }
        assert!(b.reserve(&scope, Usd::ZERO, false, 0).is_ok());
        assert!(b.reserve(&scope, Usd::ZERO, true, 0).is_err());
    }

    /// A ledger that fails until told otherwise, then reports $0.90 spent.
    struct Flaky(std::sync::atomic::AtomicBool);

    impl SpendSource for Flaky {
        fn spent_since(&self, _: &Scope, _: i64) -> Result<Usd, HistoryError> {
            if self.0.load(std::sync::atomic::Ordering::Relaxed) {
                Usd::from_dollars(0.9).map_err(|e| HistoryError::Source(e.into()))
            } else {
                Err(HistoryError::Source("connection refused".into()))
            }
        }
    }

    /// A ledger across a slow network.
    struct Slow;

    impl SpendSource for Slow {
        fn spent_since(&self, _: &Scope, _: i64) -> Result<Usd, HistoryError> {
            std::thread::sleep(std::time::Duration::from_millis(300));
            Usd::from_dollars(0.9).map_err(|e| HistoryError::Source(e.into()))
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reading_past_spend_does_not_block_the_runtime() {
        let warnings = prometheus::IntCounterVec::new(prometheus::Opts::new("w", "w"), &["scope"])
            .unwrap_or_else(|_| unreachable!());
        let b = Arc::new(Budgets::new(Arc::new(Slow), 0.8, warnings));
        let scope = [(Scope::Key("k".into()), limit(1.0))];
        // On a one-thread runtime a blocking read would stop this ticker for 300 ms.
        let started = std::time::Instant::now();
        let ticker = tokio::spawn(async move {
            let mut ticks = 0;
            while started.elapsed() < std::time::Duration::from_millis(250) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                ticks += 1;
            }
            ticks
        });
        let loaded = b.load_history(&scope, 0).await;
        assert!(loaded.is_ok());
        assert!(ticker.await.unwrap_or(0) >= 5, "the runtime kept running");
        // The spend read is what the next reservation counts from: $0.90 + $0.20 > $1.
        let cost = Usd::from_dollars(0.2).unwrap_or_default();
        assert!(matches!(
            b.reserve(&scope, cost, false, 0),
            Err(ApiError::QuotaExceeded { .. })
        ));
    }

    #[tokio::test]
    async fn an_unreadable_ledger_refuses_rather_than_forgets_past_spend() {
        let history = Arc::new(Flaky(std::sync::atomic::AtomicBool::new(false)));
        let warnings = prometheus::IntCounterVec::new(prometheus::Opts::new("w", "w"), &["scope"])
            .unwrap_or_else(|_| unreachable!());
        let b = Arc::new(Budgets::new(history.clone(), 0.8, warnings));
        let scope = [(Scope::Key("k".into()), limit(1.0))];
        let cost = Usd::from_dollars(0.2).unwrap_or_default();
        assert!(matches!(
            b.load_history(&scope, 0).await,
            Err(ApiError::Unavailable { .. })
        ));
        // Nothing was counted from zero: the budget stays unusable until a read works.
        assert!(matches!(
            b.reserve(&scope, cost, false, 0),
            Err(ApiError::Unavailable { .. })
        ));
        // Read again on the next request, once the ledger answers: $0.90 + $0.20 > $1.
        history.0.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(b.load_history(&scope, 0).await.is_ok());
        assert!(matches!(
            b.reserve(&scope, cost, false, 0),
            Err(ApiError::QuotaExceeded { .. })
        ));
    }

    #[test]
    fn periods_start_at_utc_midnight_and_the_first_of_the_month() {
        // 2026-11-28T21:01:10Z
        let now = 1_795_899_670_000;
        assert_eq!(period_start_ms(BudgetPeriod::Day, now), 1_795_824_000_000); // 2026-11-28
        assert_eq!(period_start_ms(BudgetPeriod::Month, now), 1_793_491_200_000); // 2026-11-01
        // 2024-03-01T00:00:00Z is its own month start (leap year February before it).
        assert_eq!(
            period_start_ms(BudgetPeriod::Month, 1_709_251_200_000),
            1_709_251_200_000
        );
        // February 2024 has 29 days; November 2026 ends on 2026-12-01.
        assert_eq!(
            period_end_ms(BudgetPeriod::Month, 1_706_745_600_000),
            1_709_251_200_000
        );
        assert_eq!(
            period_end_ms(BudgetPeriod::Month, 1_793_491_200_000),
            1_796_083_200_000
        );
    }
}

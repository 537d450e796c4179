//! Limits every replica shares: the store that counts them, whatever holds it. Each
//! backend implements [`SharedStore`] in a file of its own ([`super::shared`]: Redis);
//! [`super::Admission`] asks it first and, when it fails, applies the
//! `limits.on_redis_error` policy with this process's own limits.

use futures_util::future::BoxFuture;

use super::Ask;
use super::budget::Scope;
use super::rate::RateKind;
use crate::accounting::Usd;
use crate::config::BudgetConfig;

/// The shared limits' answer.
pub enum SharedVerdict {
    /// Admitted, with the reservation to settle.
    Admitted(SharedHold),
    /// Over a rate limit: which, this minute's and the previous minute's counts, and how
    /// far into this minute.
    RateLimited {
        which: RateKind,
        current: f64,
        previous: f64,
        elapsed_ms: i64,
    },
    /// Over the budget at `index` of the ask's budgets.
    OverBudget {
        index: usize,
        spent: Usd,
        reserved: Usd,
    },
}

/// A cost to settle with the shared accounts once the request is done: a reservation
/// (released when dropped unsettled), or what a request admitted without the store
/// owes it.
#[must_use]
pub trait Settle: Send {
    /// Adds the actual cost, off the request path.
    fn settle(self: Box<Self>, actual: Usd);
}

/// A reservation held in the shared store.
pub type SharedHold = Box<dyn Settle>;

/// Why the shared store could not answer.
pub type SharedError = Box<dyn std::error::Error + Send + Sync>;

/// A store of rate windows and budget accounts that every replica shares.
pub trait SharedStore: Send + Sync {
    /// Counts the request in its key's rate window and reserves `ask.amount` against
    /// every budget, all or none (`ask.free_fallback` is the caller's to apply).
    fn admit<'a>(&'a self, ask: &'a Ask<'a>) -> BoxFuture<'a, Result<SharedVerdict, SharedError>>;

    /// A hold of nothing against `budgets` (free traffic, admitted without asking),
    /// whose actual cost, normally zero, is still added when it settles.
    fn hold_free(&self, budgets: &[(Scope, BudgetConfig)], now_ms: i64) -> SharedHold;

    /// What a request admitted without the store (by the fallback) will owe `budgets`'
    /// accounts when it settles.
    fn owing(&self, budgets: &[(Scope, BudgetConfig)], now_ms: i64) -> Box<dyn Settle>;

    /// What each budget has spent this period across every replica; `None` for a
    /// period no replica has started.
    fn spent<'a>(
        &'a self,
        budgets: &'a [(Scope, BudgetConfig)],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<Usd>>, SharedError>>;

    /// Adds generated tokens to `key`'s current window, off the request path.
    fn record_output(&self, key: &str, tokens: u64, now_ms: i64);

    /// Waits until the settlements and counts started so far reached the store (or
    /// gave up).
    fn settled(&self) -> BoxFuture<'_, ()>;
}

//! Limits shared by every replica, in Redis: one rate window per key and one account
//! per budget and period, changed only by two Lua scripts so each change is atomic.
//!
//! Keys (under the configured prefix):
//! - `rate:{key id}:{minute start ms}`: hash `r` (requests), `t` (tokens) of one fixed
//!   minute; the sliding minute weighs the previous one as the in-process limiter does.
//!   Expires two minutes after it was last written.
//! - `budget:{key|team}:{id}:{period start ms}`: hash `spent`, `reserved` (pico-USD
//!   integers, changed by `HINCRBY`, compared exactly in Lua as whole dollars plus a
//!   pico remainder), and `...:leases`: a sorted set of the live reservations
//!   (`{reservation id}:{pico-USD}`) scored by when their lease runs out. Both expire an
//!   hour after the period ends.
//!
//! One round trip admits a request ([`admit.lua`](lua/admit.lua), by `EVALSHA`): it frees
//! reservations whose lease ran out, checks and counts the rate window, then reserves
//! against every budget, all or none. Settling ([`settle.lua`](lua/settle.lua)) leaves the
//! request path on a task: it releases the reservation (if its lease is still live) and
//! adds the actual cost. A settlement Redis did not answer is retried twice, past the
//! connection's cool-down; a retry adds the cost only where it still removes the lease,
//! so a first attempt that ran but whose answer was lost is not counted twice.
//!
//! Windows and leases use the replicas' clocks (keep them NTP-synchronized). Scripts
//! touch several keys, so the server is one Redis (with replicas or Sentinel), not
//! Redis Cluster.
//!
//! Crash safety: a replica that dies holding reservations never settles them; their
//! leases (`limits.reservation_ttl_ms`, longer than any request should take) run out and
//! the next admission on any replica frees their room. A request still running past its
//! lease still adds its actual cost when it settles.
//!
//! Outages: when Redis cannot be reached and the policy is to fall back, this replica
//! admits by its own limits, and what those requests cost is owed to the shared
//! accounts. [`SharedLimits::owe`] adds it up per account, and one task keeps offering
//! the sums to Redis ([`owe.lua`](lua/owe.lua)) until it is back, as one batch with one
//! id: the script records the id before it adds, so a batch whose answer was lost is
//! never counted twice.
//!
//! A period's spend starts from the ledger: when an account has no `spent` yet, the
//! script answers so without counting anything, the replica reads the ledger and calls
//! again with the seed, and the script sets it only if still unset, so replicas that
//! start together never count the ledger twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus::IntCounterVec;

use super::Ask;
use super::budget::{Scope, SpendSource, period_end_ms, period_start_ms, read_history};
use super::rate::{MINUTE_MS, RateKind};
pub use super::store::SharedVerdict;
use super::store::{Settle, SharedError, SharedStore};
use crate::accounting::Usd;
use crate::config::BudgetConfig;
use crate::inflight::InFlight;
use crate::redis_conn::{COOL_DOWN, RedisConn, RedisError, RedisUrlError};

const MONEY: &str = include_str!("lua/money.lua");
const ADMIT: &str = include_str!("lua/admit.lua");
const SETTLE: &str = include_str!("lua/settle.lua");
const OWE: &str = include_str!("lua/owe.lua");

/// The longest wait between two offers of what an outage left owing.
const MAX_OWED_WAIT: Duration = Duration::from_secs(30);

/// Accounts per script call when paying what is owed.
const OWED_PER_CALL: usize = 100;

/// Tries to settle a reservation before leaving it to its lease.
const SETTLE_ATTEMPTS: u32 = 3;

/// Budget keys outlive their period by this much, for late settlements.
const GRACE_MS: i64 = 3_600_000;

pub struct SharedLimits {
    conn: RedisConn,
    prefix: String,
    lease: Duration,
    admit: redis::Script,
    settle: redis::Script,
    owe_script: redis::Script,
    /// What requests admitted without Redis spent, per account, not yet in Redis.
    owed: Mutex<Owed>,
    /// This process's part of reservation ids; the counter makes the rest.
    replica: String,
    next: AtomicU64,
    history: Arc<dyn SpendSource>,
    warn_at: f64,
    warnings: IntCounterVec,
    /// Redis operations that failed, by operation.
    errors: IntCounterVec,
    /// Settlements and token counts still on their way to Redis.
    background: Arc<InFlight>,
}

/// Costs settled without Redis, on their way to it.
#[derive(Default)]
struct Owed {
    /// Account key → (amount, key expiry, when the first of the amount was settled;
    /// both ms since the epoch).
    pending: HashMap<String, (Usd, i64, i64)>,
    /// A task is offering them to Redis.
    paying: bool,
}

/// One budget a reservation holds.
struct Held {
    key: String,
    scope: &'static str,
    limit: Usd,
    /// When the account's keys expire, ms since the epoch.
    expiry_ms: i64,
}

/// A reservation held in Redis; dropping it unsettled releases it (off the request path).
#[must_use]
pub struct RedisHold {
    limits: Arc<SharedLimits>,
    held: Vec<Held>,
    member: String,
    amount: Usd,
}

impl SharedLimits {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        url: &str,
        prefix: String,
        timeout: Duration,
        lease: Duration,
        history: Arc<dyn SpendSource>,
        warn_at: f64,
        warnings: IntCounterVec,
        errors: IntCounterVec,
    ) -> Result<Self, RedisUrlError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(SharedLimits {
            conn: RedisConn::new(
                url,
                "limits.redis_url",
                timeout,
                "shared limits",
                "applying the limits.on_redis_error policy",
            )?,
            prefix,
            lease,
            admit: redis::Script::new(&format!("{MONEY}\n{ADMIT}")),
            settle: redis::Script::new(&format!("{MONEY}\n{SETTLE}")),
            owe_script: redis::Script::new(OWE),
            owed: Mutex::default(),
            replica: format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff),
            next: AtomicU64::new(0),
            history,
            warn_at,
            warnings,
            errors,
            background: Arc::default(),
        })
    }

    /// Runs `task` on the current runtime, counted until done so that shutdown can
    /// wait for it; without a runtime (a test dropping a hold outside it) the lease
    /// frees the reservation.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let running = self.background.start();
            handle.spawn(async move {
                task.await;
                drop(running);
            });
        }
    }

    /// Waits until every settlement and token count started so far reached Redis (or
    /// gave up).
    pub async fn settled(&self) {
        self.background.idle().await;
    }

    /// The key of `scope`'s account for the period starting at `start_ms`.
    pub fn budget_key(&self, scope: &Scope, start_ms: i64) -> String {
        let (kind, id) = match scope {
            Scope::Key(id) => ("key", id),
            Scope::Team(id) => ("team", id),
        };
        format!("{}budget:{kind}:{id}:{start_ms}", self.prefix)
    }

    /// What each budget in `budgets` has spent this period across every replica;
    /// `None` for a budget whose period no replica has started yet.
    pub async fn spent(
        &self,
        budgets: &[(Scope, BudgetConfig)],
        now_ms: i64,
    ) -> Result<Vec<Option<Usd>>, RedisError> {
        let mut pipe = redis::pipe();
        for (scope, budget) in budgets {
            let start = period_start_ms(budget.period, now_ms);
            pipe.hget(self.budget_key(scope, start), "spent");
        }
        let spent: Vec<Option<String>> = self
            .conn
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .inspect_err(|_| self.errors.with_label_values(&["spent"]).inc())?;
        Ok(spent
            .into_iter()
            .map(|s| s.and_then(|s| s.parse().ok()).map(Usd::from_pico))
            .collect())
    }

    fn rate_key(&self, key: &str, start_ms: i64) -> String {
        format!("{}rate:{key}:{start_ms}", self.prefix)
    }

    /// Counts the request in its key's rate window and reserves `ask.amount` against
    /// every budget, in one round trip (two the first time a period is seen).
    pub async fn admit(self: &Arc<Self>, ask: &Ask<'_>) -> Result<SharedVerdict, RedisError> {
        let result = self.try_admit(ask).await;
        if result.is_err() {
            self.errors.with_label_values(&["admit"]).inc();
        }
        result
    }

    async fn try_admit(self: &Arc<Self>, ask: &Ask<'_>) -> Result<SharedVerdict, RedisError> {
        let window = ask.now_ms - ask.now_ms.rem_euclid(MINUTE_MS);
        let starts = starts(ask.budgets, ask.now_ms);
        let member = format!(
            "{}-{}:{}",
            self.replica,
            self.next.fetch_add(1, Ordering::Relaxed),
            ask.amount.pico()
        );
        let lease_until = ask.now_ms + i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX);
        let mut seeds: Option<Vec<Usd>> = None;
        loop {
            let mut invocation = self.admit.prepare_invoke();
            invocation
                .key(self.rate_key(ask.key, window))
                .key(self.rate_key(ask.key, window - MINUTE_MS));
            for ((scope, _), start) in ask.budgets.iter().zip(&starts) {
                let key = self.budget_key(scope, *start);
                invocation.key(&key).key(format!("{key}:leases"));
            }
            invocation
                .arg(ask.now_ms)
                .arg(ask.rpm.map_or(-1, i64::from))
                .arg(ask.tpm.map_or(-1, |t| i64::try_from(t).unwrap_or(i64::MAX)))
                .arg(ask.tokens)
                .arg(ask.now_ms - window)
                .arg(MINUTE_MS)
                .arg(ask.amount.pico())
                .arg(u8::from(ask.block_free))
                .arg(&member)
                .arg(lease_until);
            for (i, ((_, budget), start)) in ask.budgets.iter().zip(&starts).enumerate() {
                invocation.arg(budget.limit.pico());
                match seeds.as_ref().and_then(|s| s.get(i)) {
                    Some(seed) => invocation.arg(seed.pico()),
                    None => invocation.arg("-"),
                };
                invocation.arg(period_end_ms(budget.period, *start) + GRACE_MS);
            }
            let reply: Vec<String> = self
                .conn
                .run(|mut c| async move { invocation.invoke_async(&mut c).await })
                .await?;
            match reply.first().map(String::as_str) {
                Some("0") => {
                    return Ok(SharedVerdict::Admitted(Box::new(RedisHold {
                        limits: self.clone(),
                        held: self.held(ask.budgets, &starts),
                        member,
                        amount: ask.amount,
                    })));
                }
                Some("1") => {
                    let which = if reply.get(1).map(String::as_str) == Some("rpm") {
                        RateKind::Rpm
                    } else {
                        RateKind::Tpm
                    };
                    return Ok(SharedVerdict::RateLimited {
                        which,
                        current: number(reply.get(2)),
                        previous: number(reply.get(3)),
                        elapsed_ms: ask.now_ms - window,
                    });
                }
                Some("2") => {
                    return Ok(SharedVerdict::OverBudget {
                        index: reply
                            .get(1)
                            .and_then(|i| i.parse::<usize>().ok())
                            .unwrap_or(1)
                            .saturating_sub(1),
                        spent: pico(reply.get(2)),
                        reserved: pico(reply.get(3)),
                    });
                }
                Some("3") if seeds.is_none() => {
                    let wanted = ask
                        .budgets
                        .iter()
                        .zip(&starts)
                        .map(|((scope, _), start)| (scope.clone(), *start))
                        .collect();
                    seeds = Some(
                        read_history(&self.history, wanted)
                            .await
                            // Unread history must not seed a budget at zero; the local
                            // fallback refuses the request the same way.
                            .map_err(|e| {
                                RedisError(format!("the ledger could not be read: {e}"))
                            })?,
                    );
                }
                _ => {
                    return Err(RedisError(format!(
                        "unexpected answer from the admission script: {reply:?}"
                    )));
                }
            }
        }
    }

    /// What a held reservation needs to be settled: each budget's key, limit and expiry.
    fn held(&self, budgets: &[(Scope, BudgetConfig)], starts: &[i64]) -> Vec<Held> {
        budgets
            .iter()
            .zip(starts)
            .map(|((scope, budget), start)| Held {
                key: self.budget_key(scope, *start),
                scope: scope.kind(),
                limit: budget.limit,
                expiry_ms: period_end_ms(budget.period, *start) + GRACE_MS,
            })
            .collect()
    }

    /// A hold of nothing against `budgets`: free traffic, admitted without asking Redis,
    /// whose actual cost (normally zero) is still added when it settles.
    pub fn hold_free(
        self: &Arc<Self>,
        budgets: &[(Scope, BudgetConfig)],
        now_ms: i64,
    ) -> RedisHold {
        let starts = starts(budgets, now_ms);
        RedisHold {
            limits: self.clone(),
            held: self.held(budgets, &starts),
            member: format!("{}-free:0", self.replica),
            amount: Usd::ZERO,
        }
    }

    /// What a request admitted without Redis (the fallback) will owe `budgets`' shared
    /// accounts when it settles.
    pub fn owing(self: &Arc<Self>, budgets: &[(Scope, BudgetConfig)], now_ms: i64) -> Owing {
        let starts = starts(budgets, now_ms);
        Owing {
            limits: self.clone(),
            held: self.held(budgets, &starts),
        }
    }

    /// Adds `actual` to what `held`'s accounts are owed, and starts paying it.
    fn owe(self: &Arc<Self>, held: &[Held], actual: Usd) {
        // Without a runtime (a test settling outside one) nothing could pay it.
        if actual == Usd::ZERO || held.is_empty() || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        let start = {
            let Ok(mut owed) = self.owed.lock() else {
                return;
            };
            let now = super::now_ms();
            for h in held {
                let entry =
                    owed.pending
                        .entry(h.key.clone())
                        .or_insert((Usd::ZERO, h.expiry_ms, now));
                entry.0 += actual;
                entry.1 = entry.1.max(h.expiry_ms);
            }
            !std::mem::replace(&mut owed.paying, true)
        };
        if start {
            let limits = self.clone();
            self.spawn(async move { limits.pay_owed().await });
        }
    }

    /// Offers what is owed to Redis until it is taken (or its accounts expired), batch
    /// by batch, then stops until something is owed again.
    async fn pay_owed(&self) {
        loop {
            let batch: Vec<(String, (Usd, i64, i64))> = {
                let Ok(mut owed) = self.owed.lock() else {
                    return;
                };
                if owed.pending.is_empty() {
                    owed.paying = false;
                    return;
                }
                owed.pending.drain().collect()
            };
            let member = format!(
                "{}-owed-{}",
                self.replica,
                self.next.fetch_add(1, Ordering::Relaxed)
            );
            let expires = batch.iter().map(|(_, b)| b.1).max().unwrap_or(0);
            let mut wait = COOL_DOWN + Duration::from_millis(100);
            while let Err(e) = self.pay_batch(&batch, &member).await {
                self.errors.with_label_values(&["owe"]).inc();
                if super::now_ms() > expires {
                    tracing::warn!(error = %e, accounts = batch.len(), "shared budget accounts expired before what an outage left owing reached them");
                    break;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_OWED_WAIT);
            }
        }
    }

    async fn pay_batch(
        &self,
        batch: &[(String, (Usd, i64, i64))],
        member: &str,
    ) -> Result<(), RedisError> {
        for part in batch.chunks(OWED_PER_CALL) {
            let mut invocation = self.owe_script.prepare_invoke();
            for (key, _) in part {
                invocation.key(key).key(format!("{key}:owed"));
            }
            invocation.arg(member);
            for (_, (amount, expiry, since)) in part {
                invocation.arg(amount.pico()).arg(*expiry).arg(*since);
            }
            let _: i64 = self
                .conn
                .run(|mut c| async move { invocation.invoke_async(&mut c).await })
                .await?;
        }
        Ok(())
    }

    /// Adds generated tokens to `key`'s current window (off the request path).
    pub fn record_output(self: &Arc<Self>, key: &str, tokens: u64, now_ms: i64) {
        if tokens == 0 {
            return;
        }
        let window = now_ms - now_ms.rem_euclid(MINUTE_MS);
        let rate_key = self.rate_key(key, window);
        let limits = self.clone();
        self.spawn(async move {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hincr(&rate_key, "t", tokens)
                .ignore()
                .pexpire(&rate_key, 2 * MINUTE_MS + 10_000)
                .ignore();
            let result: Result<(), RedisError> = limits
                .conn
                .run(|mut c| async move { pipe.query_async(&mut c).await })
                .await;
            if result.is_err() {
                limits.errors.with_label_values(&["output"]).inc();
            }
        });
    }

    async fn settle(&self, held: Vec<Held>, member: String, amount: Usd, actual: Usd) {
        if held.is_empty() || (amount == Usd::ZERO && actual == Usd::ZERO) {
            return;
        }
        for attempt in 0..SETTLE_ATTEMPTS {
            if attempt > 0 {
                // Past the connection's cool-down, so the retry really asks Redis.
                tokio::time::sleep(COOL_DOWN + Duration::from_millis(100)).await;
            }
            let mut invocation = self.settle.prepare_invoke();
            for h in &held {
                invocation.key(&h.key).key(format!("{}:leases", h.key));
            }
            invocation
                .arg(&member)
                .arg(amount.pico())
                .arg(actual.pico())
                .arg(u8::from(attempt > 0));
            for h in &held {
                // Whole pico-dollars: the fraction only places the warning.
                let threshold = (h.limit.pico() as f64 * self.warn_at) as i64;
                invocation.arg(threshold).arg(h.expiry_ms);
            }
            let crossed: Result<Vec<usize>, RedisError> = self
                .conn
                .run(|mut c| async move { invocation.invoke_async(&mut c).await })
                .await;
            match crossed {
                Ok(crossed) => {
                    for i in crossed {
                        if let Some(h) = held.get(i.saturating_sub(1)) {
                            self.warnings.with_label_values(&[h.scope]).inc();
                            tracing::warn!(budget = %h.key, limit = %h.limit, "budget warning threshold reached");
                        }
                    }
                    return;
                }
                Err(e) => {
                    self.errors.with_label_values(&["settle"]).inc();
                    if attempt + 1 == SETTLE_ATTEMPTS {
                        tracing::warn!(error = %e, reservation = %member, "cannot settle a shared budget reservation; its lease will free it");
                    }
                }
            }
        }
    }
}

impl Settle for RedisHold {
    /// Settles the actual cost and releases the reservation, off the request path.
    fn settle(mut self: Box<Self>, actual: Usd) {
        self.release(actual);
    }
}

impl RedisHold {
    fn release(&mut self, actual: Usd) {
        let held = std::mem::take(&mut self.held);
        let limits = self.limits.clone();
        let member = std::mem::take(&mut self.member);
        let amount = self.amount;
        self.limits
            .spawn(async move { limits.settle(held, member, amount, actual).await });
    }
}

impl Drop for RedisHold {
    /// Not settled: nothing was spent; release the room now rather than at lease expiry.
    fn drop(&mut self) {
        if !self.held.is_empty() {
            self.release(Usd::ZERO);
        }
    }
}

/// What a request admitted by the fallback owes the shared accounts; see
/// [`SharedLimits::owing`].
pub struct Owing {
    limits: Arc<SharedLimits>,
    held: Vec<Held>,
}

impl Owing {
    /// Owes the request's actual cost to the shared accounts (off the request path).
    pub fn settle(self, actual: Usd) {
        self.limits.owe(&self.held, actual);
    }
}

impl Settle for Owing {
    fn settle(self: Box<Self>, actual: Usd) {
        Owing::settle(*self, actual);
    }
}

/// Redis as the replicas' shared store. Implemented on the `Arc` because holds keep
/// the limits alive until they settle.
impl SharedStore for Arc<SharedLimits> {
    fn admit<'a>(&'a self, ask: &'a Ask<'a>) -> BoxFuture<'a, Result<SharedVerdict, SharedError>> {
        Box::pin(async move { Ok(SharedLimits::admit(self, ask).await?) })
    }

    fn hold_free(&self, budgets: &[(Scope, BudgetConfig)], now_ms: i64) -> Box<dyn Settle> {
        Box::new(SharedLimits::hold_free(self, budgets, now_ms))
    }

    fn owing(&self, budgets: &[(Scope, BudgetConfig)], now_ms: i64) -> Box<dyn Settle> {
        Box::new(SharedLimits::owing(self, budgets, now_ms))
    }

    fn spent<'a>(
        &'a self,
        budgets: &'a [(Scope, BudgetConfig)],
        now_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<Usd>>, SharedError>> {
        Box::pin(async move { Ok(SharedLimits::spent(self, budgets, now_ms).await?) })
    }

    fn record_output(&self, key: &str, tokens: u64, now_ms: i64) {
        SharedLimits::record_output(self, key, tokens, now_ms);
    }

    fn settled(&self) -> BoxFuture<'_, ()> {
        Box::pin(SharedLimits::settled(self))
    }
}

/// When each budget's current period started.
fn starts(budgets: &[(Scope, BudgetConfig)], now_ms: i64) -> Vec<i64> {
    budgets
        .iter()
        .map(|(_, b)| period_start_ms(b.period, now_ms))
        .collect()
}

fn number(s: Option<&String>) -> f64 {
    s.and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0)
}

fn pico(s: Option<&String>) -> Usd {
    Usd::from_pico(s.and_then(|s| s.parse::<i64>().ok()).unwrap_or(0))
}

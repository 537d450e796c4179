//! The admission stage ([`crate::admission`]): counts the request against its key's
//! rate limits and reserves its upper-bound cost against its key's and team's budgets:
//! the prompt plus the reserved output ([`Limits::reserved_output`]) at the dearest
//! deployment the pool may use. When that does not fit but the pool has free (local)
//! deployments, the request may still go to those alone: the budget's answer says so,
//! and is applied after the cache lookup ([`budget`]).

use crate::accounting::Usd;
use crate::accounting::tokens::prompt_upper_bound;
use crate::admission::{self, Admitted, Ask, Refused, Reservation, Scope};
use crate::auth::KeyInfo;
use crate::classify::Classification;
use crate::config::{BudgetConfig, Config};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::request::{Limits, Request};
use crate::route::{Api, PoolId};
use crate::state::{AppState, Runtime};

/// Admits `request` of `key`, routed to `pool` (`None`: a rule rejects it, so it
/// reserves nothing but still counts against the rate limits).
pub async fn admit(
    state: &AppState,
    rt: &Runtime,
    key: &KeyInfo,
    pool: Option<PoolId>,
    request: &Request,
    classification: &Classification,
    limits: &Limits,
) -> Result<Admitted, ApiError> {
    let config = &rt.config;
    let budgets = match pool {
        Some(_) => budgets_of(config, key),
        None => Vec::new(),
    };
    // A true upper bound for the reservation, not the classifier's estimate: an
    // estimate below the real count would let concurrent requests settle past the budget.
    let prompt_bound = prompt_upper_bound(request.body_bytes, classification.features.images);
    let bounds: Vec<Usd> = if budgets.is_empty() {
        Vec::new()
    } else {
        pool.and_then(|p| config.routes.pool(p))
            .map(|p| p.candidates.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|d| config.deployment(*d))
            .map(|d| d.price.upper_bound(prompt_bound, limits.reserved_output))
            .collect()
    };
    let ask = Ask {
        key: &key.id,
        rpm: key.rpm,
        tpm: key.tpm,
        tokens: classification.features.prompt_tokens,
        budgets: &budgets,
        amount: bounds.iter().copied().max().unwrap_or_default(),
        free_fallback: bounds.contains(&Usd::ZERO),
        block_free: config.budgets.block_free_traffic,
        now_ms: admission::now_ms(),
    };
    match state.admission.admit(&ask).await {
        Ok(admitted) => Ok(admitted),
        Err(Refused::Rate(e, limit)) => {
            state
                .metrics
                .rate_limited
                .with_label_values(&[limit.as_str()])
                .inc();
            Err(e)
        }
        Err(Refused::Unavailable(e)) => Err(e),
    }
}

/// The budgets `key` spends against: its own and its team's.
fn budgets_of(config: &Config, key: &KeyInfo) -> Vec<(Scope, BudgetConfig)> {
    let team_budget = key.team.as_ref().and_then(|team| {
        config
            .teams
            .iter()
            .find(|t| &t.id == team)
            .and_then(|t| t.budget)
            .map(|b| (Scope::Team(team.clone()), b))
    });
    key.budget
        .map(|b| (Scope::Key(key.id.clone()), b))
        .into_iter()
        .chain(team_budget)
        .collect()
}

/// The share of its budget the caller of `request` has spent, for rules that route on
/// it (`min_budget_used`); looked up only for chat requests (rules route nothing else)
/// when such a rule exists.
pub async fn budget_used(
    state: &AppState,
    rt: &Runtime,
    request: &Request,
    key: Option<&KeyInfo>,
) -> Option<f32> {
    let config = &rt.config;
    let key = key.filter(|_| request.api == Api::Chat && config.routes.reads_budget())?;
    state
        .admission
        .budget_used(&budgets_of(config, key), admission::now_ms())
        .await
}

/// The budget's answer, after a cache miss: the reservation to hold and whether only
/// free deployments may serve, or the 429.
pub fn budget(admitted: Admitted, metrics: &Metrics) -> Result<(Reservation, bool), ApiError> {
    admitted.budget.inspect_err(|e| {
        if let ApiError::QuotaExceeded { scope, .. } = e {
            metrics.budget_rejections.with_label_values(&[scope]).inc();
        }
    })
}

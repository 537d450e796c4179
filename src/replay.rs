//! What-if replay: recorded requests routed again through a candidate config's rules
//! and classifier thresholds, without calling any upstream, and priced at what the
//! candidate would have paid for the same tokens.
//!
//! Pure: ledger records in, a [`Report`] out. A record carries what the
//! rules read (labels, confidence, difficulty, PII kinds, the prompt-token estimate,
//! tools, images, JSON mode, key and team; never the prompt text); headers are not
//! recorded, so header conditions see none. Each request's projected deployment is its
//! new pool's primary (the cheapest for `cheapest`; for `weighted`, the cost is the
//! weighted mean over the pool's deployments), its projected usage the recorded one
//! with output under the new rule's `max_tokens` cap. A cache hit stays a cache hit.
//! Budget rules (`min_budget_used`) see what the candidate would have spent of the
//! caller's key and team budgets by then (records are replayed oldest first).
//! The difficulty is the classifier's estimate that only the frontier model answers
//! right, so the sum of it over requests moved from frontier to local is the expected
//! number of answers that get worse (and the reverse, better).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::accounting::{Price, Usage, Usd};
use crate::admission::{Scope, period_start_ms};
use crate::classify::{Classification, Features, Label, PiiKind, PiiKinds};
use crate::config::{BudgetConfig, Config, Tier};
use crate::ledger::LedgerRecord;
use crate::route::{Action, Api, NoHeaders, PoolId, RouteInput, Strategy};

/// Where a request went, or would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Destination {
    Local,
    Frontier,
    Cache,
    Rejected,
}

impl Destination {
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Local => "local",
            Destination::Frontier => "frontier",
            Destination::Cache => "cache",
            Destination::Rejected => "rejected",
        }
    }

    fn of_tier(tier: Tier) -> Self {
        match tier {
            Tier::Local => Destination::Local,
            Tier::Frontier => Destination::Frontier,
        }
    }
}

/// Money and counts of a group of replayed requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    /// Requests whose destination changes.
    pub moved: u64,
    /// What they cost, and what they would cost under the candidate.
    #[serde(serialize_with = "dollars")]
    pub actual_cost: Usd,
    #[serde(serialize_with = "dollars")]
    pub projected_cost: Usd,
    /// What the reference model would have cost (savings = reference − cost).
    #[serde(serialize_with = "dollars")]
    pub actual_reference: Usd,
    #[serde(serialize_with = "dollars")]
    pub projected_reference: Usd,
    /// Σ difficulty over requests moved from frontier to local: answers expected to get
    /// worse; and over local to frontier: expected to get better.
    pub expected_worse: f64,
    pub expected_better: f64,
}

fn dollars<S: serde::Serializer>(usd: &Usd, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&usd.to_string())
}

impl Totals {
    fn add(&mut self, r: &Replayed) {
        self.requests += 1;
        self.moved += u64::from(r.from != r.to);
        self.actual_cost += r.actual_cost;
        self.projected_cost += r.projected_cost;
        self.actual_reference += r.actual_reference;
        self.projected_reference += r.projected_reference;
        let difficulty = f64::from(r.difficulty.unwrap_or(0.0));
        match (r.from, r.to) {
            (Destination::Frontier, Destination::Local) => self.expected_worse += difficulty,
            (Destination::Local, Destination::Frontier) => self.expected_better += difficulty,
            _ => {}
        }
    }
}

/// One request's replay.
#[derive(Clone, Debug, PartialEq)]
pub struct Replayed {
    pub from: Destination,
    pub to: Destination,
    /// The candidate rule that decides it (`alias` for an alias no rule claims).
    pub rule: String,
    pub actual_cost: Usd,
    pub projected_cost: Usd,
    pub actual_reference: Usd,
    pub projected_reference: Usd,
    pub difficulty: Option<f32>,
}

/// The replay of a ledger against a candidate config.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub total: Totals,
    /// By the candidate rule that decides each request.
    pub by_rule: BTreeMap<String, Totals>,
    /// By team (`-` for requests without one).
    pub by_team: BTreeMap<String, Totals>,
    /// Request counts by (recorded destination, projected destination).
    pub moves: BTreeMap<String, u64>,
    /// LedgerRecord requests that could not be replayed: never classified (refused
    /// before routing), embeddings (routed by alias, unchanged by rules), or asking for
    /// a model the candidate does not know.
    pub skipped: u64,
    /// Replayed requests recorded before the ledger kept tools, images and JSON mode:
    /// conditions on those saw none.
    pub without_features: u64,
}

impl Report {
    /// Replays `recorded` (oldest first) against `candidate`, whose `[[keys]]` are the
    /// only keys with budgets.
    pub fn of<'a>(
        candidate: &Config,
        recorded: impl IntoIterator<Item = &'a LedgerRecord>,
    ) -> Self {
        Self::with_key_budgets(candidate, &HashMap::new(), recorded)
    }

    /// Replays `recorded` (oldest first) against `candidate`, with the budgets of keys
    /// kept outside it (the key store) by key id.
    pub fn with_key_budgets<'a>(
        candidate: &Config,
        key_budgets: &HashMap<String, BudgetConfig>,
        recorded: impl IntoIterator<Item = &'a LedgerRecord>,
    ) -> Self {
        let mut report = Report::default();
        let mut book = BudgetBook::new(candidate, key_budgets);
        for r in recorded {
            let used = book.used(r);
            let Some(replayed) = replay(candidate, r, used) else {
                report.skipped += 1;
                // Spent all the same under the candidate: it counts toward budgets.
                book.spend(r, r.cost);
                continue;
            };
            book.spend(r, replayed.projected_cost);
            report.without_features += u64::from(r.tools.is_none());
            report.total.add(&replayed);
            report
                .by_rule
                .entry(replayed.rule.clone())
                .or_default()
                .add(&replayed);
            report
                .by_team
                .entry(r.team.clone().unwrap_or_else(|| "-".into()))
                .or_default()
                .add(&replayed);
            *report
                .moves
                .entry(format!(
                    "{} -> {}",
                    replayed.from.as_str(),
                    replayed.to.as_str()
                ))
                .or_default() += 1;
        }
        report
    }
}

/// What each budget would have spent so far under the candidate, as replay walks the
/// records in time order: a request adds its projected cost to its key's and team's
/// budgets, so `min_budget_used` rules see the share the candidate itself would have
/// spent by then (the admission of the live gateway also counts reservations in
/// flight, which a replay has none of).
struct BudgetBook {
    budgets: HashMap<Scope, BudgetConfig>,
    spent: HashMap<(Scope, i64), Usd>,
}

impl BudgetBook {
    fn new(candidate: &Config, key_budgets: &HashMap<String, BudgetConfig>) -> Self {
        let mut budgets: HashMap<Scope, BudgetConfig> = key_budgets
            .iter()
            .map(|(id, b)| (Scope::Key(id.clone()), *b))
            .collect();
        for k in &candidate.keys {
            if let Some(b) = k.budget {
                budgets.insert(Scope::Key(k.id.clone()), b);
            }
        }
        for t in &candidate.teams {
            if let Some(b) = t.budget {
                budgets.insert(Scope::Team(t.id.clone()), b);
            }
        }
        BudgetBook {
            budgets,
            spent: HashMap::new(),
        }
    }

    /// The budgets of `r`'s key and team, each with its period's start at `r`.
    fn of(&self, r: &LedgerRecord) -> Vec<(Scope, BudgetConfig, i64)> {
        let key = r.key_id.clone().map(Scope::Key);
        let team = r.team.clone().map(Scope::Team);
        key.into_iter()
            .chain(team)
            .filter_map(|scope| {
                let b = *self.budgets.get(&scope)?;
                Some((scope, b, period_start_ms(b.period, r.ts_ms)))
            })
            .collect()
    }

    /// The largest share spent of `r`'s budgets when it arrives; `None` without one.
    fn used(&self, r: &LedgerRecord) -> Option<f32> {
        self.of(r)
            .into_iter()
            .map(|(scope, b, start)| {
                let spent = self.spent.get(&(scope, start)).copied().unwrap_or_default();
                if b.limit > Usd::ZERO {
                    (spent.as_f64() / b.limit.as_f64()) as f32
                } else {
                    1.0
                }
            })
            .reduce(f32::max)
    }

    fn spend(&mut self, r: &LedgerRecord, cost: Usd) {
        for (scope, _, start) in self.of(r) {
            *self.spent.entry((scope, start)).or_default() += cost;
        }
    }
}

/// The classification the request was routed on, in the candidate classifier's labels
/// (a name it does not have matches no label condition).
fn classification(candidate: &Config, r: &LedgerRecord) -> Classification {
    let classifier = &candidate.classifier;
    let unknown = Label(u16::MAX);
    let find = |names: &crate::classify::LabelSet, name: &Option<String>| {
        name.as_deref()
            .and_then(|n| names.find(n))
            .unwrap_or(unknown)
    };
    let mut pii = PiiKinds::default();
    for kind in r.pii_kinds.split(',').filter_map(PiiKind::parse) {
        pii.insert(kind);
    }
    Classification {
        label: find(classifier.labels(), &r.label),
        confidence: r.confidence.unwrap_or(0.0),
        task: find(classifier.task_labels(), &r.task),
        task_confidence: 0.0,
        difficulty: r.difficulty.unwrap_or(0.0),
        pii,
        features: Features {
            prompt_tokens: r.prompt_tokens_est.unwrap_or(r.usage.total_input()),
            has_tools: r.tools.unwrap_or(false),
            images: r.images.unwrap_or(0),
            json_mode: r.json_mode.unwrap_or(false),
            ..Features::default()
        },
    }
}

/// How `config` routes a recorded request's features, with the reasons of each rule
/// (as `POST /v1/route/explain` gives them); `None` for requests rules never see
/// (refused before routing, embeddings, a model the config does not know).
pub fn explain(config: &Config, r: &LedgerRecord) -> Option<crate::route::Explanation> {
    let requested = routed(config, r)?;
    let classification = classification(config, r);
    Some(crate::route::explain(
        &config.routes,
        config.classifier.as_ref(),
        &input(requested, &classification, r, None),
    ))
}

/// The requested model of a record the rules route, in `config`.
fn routed(config: &Config, r: &LedgerRecord) -> Option<crate::route::Requested> {
    r.label.as_ref()?;
    if r.endpoint.as_ref() == Api::Embeddings.as_str() {
        return None;
    }
    let routes = &config.routes;
    let requested = routes.resolve(&r.requested_model)?;
    (routes.api(requested) == Api::Chat).then_some(requested)
}

/// What the rules read of a recorded request.
fn input<'a>(
    requested: crate::route::Requested,
    classification: &'a Classification,
    r: &'a LedgerRecord,
    budget_used: Option<f32>,
) -> RouteInput<'a> {
    RouteInput {
        requested,
        classification,
        headers: &NoHeaders,
        key: r.key_id.as_deref(),
        team: r.team.as_deref(),
        budget_used,
    }
}

fn replay(candidate: &Config, r: &LedgerRecord, budget_used: Option<f32>) -> Option<Replayed> {
    let requested = routed(candidate, r)?;
    let routes = &candidate.routes;
    let from = if r.cache_hit {
        Destination::Cache
    } else {
        match r.tier.as_deref() {
            Some("local") => Destination::Local,
            Some("frontier") => Destination::Frontier,
            _ => return None,
        }
    };
    let classification = classification(candidate, r);
    let decision = routes.decide(&input(requested, &classification, r, budget_used));
    let reference = match decision.via {
        crate::route::Via::Rule(i) => routes.rules.get(i).and_then(|rule| rule.reference),
        crate::route::Via::Alias(_) => None,
    }
    .unwrap_or(candidate.reference.price);
    let mut usage = r.usage;
    if let Some(cap) = decision.max_tokens {
        usage.output = usage.output.min(cap);
        usage.reasoning = usage.reasoning.min(usage.output);
    }
    let (to, projected_cost) = match decision.action {
        Action::Reject { .. } => (Destination::Rejected, Usd::ZERO),
        Action::Pool(_) if r.cache_hit => (Destination::Cache, Usd::ZERO),
        Action::Pool(p) => priced(candidate, p, &usage)?,
    };
    let projected_reference = match to {
        Destination::Rejected => Usd::ZERO,
        _ => reference.cost(&usage),
    };
    Some(Replayed {
        from,
        to,
        rule: routes.via_id(decision.via).to_owned(),
        actual_cost: r.cost,
        projected_cost,
        actual_reference: r.reference_cost,
        projected_reference,
        difficulty: r.difficulty,
    })
}

/// Where pool `p` would send a request and what `usage` would cost there.
fn priced(candidate: &Config, p: PoolId, usage: &Usage) -> Option<(Destination, Usd)> {
    let pool = candidate.routes.pool(p)?;
    let deployments: Vec<_> = pool
        .deployments
        .iter()
        .filter_map(|d| candidate.deployment(*d))
        .collect();
    let cost = |price: &Price| price.cost(usage);
    let (tier, cost) = match pool.strategy {
        Strategy::Cheapest => deployments
            .iter()
            .map(|d| (d.tier, cost(&d.price)))
            .min_by_key(|(_, c)| *c)?,
        Strategy::Weighted => {
            let total: i64 = pool.weights.iter().map(|w| i64::from(*w)).sum();
            let weighted: i64 = deployments
                .iter()
                .zip(&pool.weights)
                .map(|(d, w)| cost(&d.price).pico().saturating_mul(i64::from(*w)))
                .sum();
            let heaviest = deployments
                .iter()
                .zip(&pool.weights)
                .max_by_key(|(_, w)| **w)
                .map(|(d, _)| d.tier)?;
            (heaviest, Usd::from_pico(weighted / total.max(1)))
        }
        Strategy::Priority | Strategy::LeastLatency => {
            let primary = deployments.first()?;
            (primary.tier, cost(&primary.price))
        }
    };
    Some((Destination::of_tier(tier), cost))
}

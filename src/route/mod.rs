//! Routing: ordered rules, first match wins, from a request's classification to a pool
//! of deployments (or a rejection).
//!
//! Pure: the decision is a function of the [`RouteTable`] and a [`RouteInput`]; explain
//! renders the same evaluation as human-readable reasons. Nothing here knows the config
//! file: `config/validate.rs` parses it into these types.

mod condition;
mod explain;

pub use condition::{AliasMatch, Condition, Match, Mismatch};
pub use explain::{Explanation, explain};

use crate::classify::Classification;

/// The API a pool's deployments serve. Rules route chat requests among chat pools; an
/// embeddings request names an alias of an embeddings pool (vector spaces of different
/// models are not interchangeable, so there is nothing for a rule to choose).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Api {
    #[default]
    Chat,
    Embeddings,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Embeddings => "embeddings",
        }
    }
}

/// What the client asked for in `model`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requested {
    /// `auto`: the rules decide.
    Auto,
    /// A named alias, by index into [`RouteTable::aliases`].
    Alias(usize),
}

/// A pool, by its place in [`RouteTable::pools`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub usize);

/// A deployment, by its place in the config's deployments (the runtime's backends
/// follow the same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId(pub usize);

/// What a matching rule does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send to this pool.
    Pool(PoolId),
    /// Refuse with an HTTP status and message.
    Reject { status: u16, message: String },
}

/// One routing rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub when: Match,
    pub action: Action,
    /// Caps the request's `max_tokens` when this rule routes it.
    pub max_tokens: Option<u64>,
    /// Evaluated and recorded, never acted on: what the rule *would* have done.
    pub shadow: bool,
    /// Price that savings of requests this rule routes are measured against, when it
    /// is not the global reference model's.
    pub reference: Option<crate::accounting::Price>,
}

/// A named group of deployments, ordered per request by its strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub id: String,
    /// What its deployments serve (all of them, and its fallbacks', the same).
    pub api: Api,
    /// Own deployments.
    pub deployments: Vec<DeploymentId>,
    pub fallback: Option<PoolId>,
    pub strategy: Strategy,
    /// Weights of `deployments` for the weighted strategy.
    pub weights: Vec<u32>,
    /// This pool and its fallbacks, in order.
    pub chain: Vec<PoolId>,
    /// Own deployments then the fallback chain's, without repeats: the order dispatch tries.
    pub candidates: Vec<DeploymentId>,
}

/// How a pool orders its own deployments for each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// In the listed order.
    Priority,
    /// The first pick at random by weight; the rest by weight.
    Weighted,
    /// Lowest moving average of time to first byte first.
    LeastLatency,
    /// Lowest price first.
    Cheapest,
}

/// A model name clients may send, bound to a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alias {
    pub name: String,
    pub description: String,
    pub pool: PoolId,
}

/// The validated routing configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteTable {
    pub rules: Vec<Rule>,
    pub pools: Vec<Pool>,
    pub aliases: Vec<Alias>,
}

/// Everything a routing decision depends on.
#[derive(Clone, Copy)]
pub struct RouteInput<'a> {
    pub requested: Requested,
    pub classification: &'a Classification,
    /// The request's headers.
    pub headers: &'a dyn Headers,
    /// The caller's key id and team, when it authenticated.
    pub key: Option<&'a str>,
    pub team: Option<&'a str>,
    /// The share of its budget the caller has spent this period (the larger of its
    /// key's and its team's); `None` without a budget, or when no rule asks
    /// ([`RouteTable::reads_budget`]).
    pub budget_used: Option<f32>,
}

/// Request headers by lower-case name, as rules see them.
pub trait Headers {
    fn header(&self, name: &str) -> Option<&str>;
}

/// No headers (the CLI, benches, tests).
pub struct NoHeaders;

impl Headers for NoHeaders {
    fn header(&self, _: &str) -> Option<&str> {
        None
    }
}

/// Name-value pairs (tests, fixed requests).
impl Headers for Vec<(&str, &str)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// How the decision was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Rule at this index matched.
    Rule(usize),
    /// No rule applied to a named alias: its own pool.
    Alias(usize),
}

/// The outcome of routing one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteDecision {
    pub via: Via,
    pub action: Action,
    /// Cap on the request's `max_tokens` set by the rule.
    pub max_tokens: Option<u64>,
    /// The first shadow rule that matched, by index: recorded, not acted on.
    pub shadow: Option<usize>,
}

impl RouteTable {
    pub fn pool(&self, id: PoolId) -> Option<&Pool> {
        self.pools.get(id.0)
    }

    /// Resolves a client's `model` value.
    pub fn resolve(&self, model: &str) -> Option<Requested> {
        if model == "auto" {
            return Some(Requested::Auto);
        }
        self.aliases
            .iter()
            .position(|a| a.name == model)
            .map(Requested::Alias)
    }

    /// First matching rule wins; a named alias no rule claims goes to its own pool.
    /// Shadow rules are evaluated on the way and the first that matches is reported.
    pub fn decide(&self, input: &RouteInput<'_>) -> RouteDecision {
        let mut shadow = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.when.check(input).is_err() {
                continue;
            }
            if rule.shadow {
                shadow = shadow.or(Some(i));
                continue;
            }
            return RouteDecision {
                via: Via::Rule(i),
                action: rule.action.clone(),
                max_tokens: rule.max_tokens,
                shadow,
            };
        }
        match input.requested {
            Requested::Alias(a) => RouteDecision {
                shadow,
                ..self.alias(a)
            },
            // Validation guarantees a catch-all for `auto`; the last rule stands in.
            Requested::Auto => RouteDecision {
                via: Via::Rule(self.rules.len().saturating_sub(1)),
                action: self
                    .rules
                    .last()
                    .map_or(Action::Pool(PoolId(0)), |r| r.action.clone()),
                max_tokens: None,
                shadow,
            },
        }
    }

    /// Whether a rule reads the caller's budget: only then is it looked up.
    pub fn reads_budget(&self) -> bool {
        self.rules.iter().any(|r| {
            r.when
                .conditions
                .iter()
                .any(|c| matches!(c, Condition::MinBudgetUsed(_)))
        })
    }

    /// The alias's own pool, no rule consulted.
    pub fn alias(&self, alias: usize) -> RouteDecision {
        RouteDecision {
            via: Via::Alias(alias),
            action: Action::Pool(self.aliases.get(alias).map_or(PoolId(0), |a| a.pool)),
            max_tokens: None,
            shadow: None,
        }
    }

    /// The API `requested` is served by: chat for `auto`, the alias's pool's otherwise.
    pub fn api(&self, requested: Requested) -> Api {
        match requested {
            Requested::Auto => Api::Chat,
            Requested::Alias(a) => self
                .aliases
                .get(a)
                .and_then(|alias| self.pool(alias.pool))
                .map_or(Api::Chat, |p| p.api),
        }
    }

    /// The id used in headers, metrics and the ledger for how a decision was reached.
    pub fn via_id(&self, via: Via) -> &str {
        match via {
            Via::Rule(i) => self.rules.get(i).map_or("unknown", |r| &r.id),
            Via::Alias(_) => "alias",
        }
    }
}

#[cfg(test)]
mod tests;

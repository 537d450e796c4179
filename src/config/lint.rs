//! Lints for a valid config: things that load but are probably mistakes. `crossroads
//! check` prints them; `--strict` fails on them.

use super::{Config, ProviderKind, Tier};
use crate::route::DeploymentId;

/// One finding, naming the config element it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    pub path: String,
    pub message: String,
}

/// Every lint of `config`.
pub fn lint(config: &Config) -> Vec<Lint> {
    let mut out = Vec::new();
    unreachable_rules(config, &mut out);
    pools_without_frontier(config, &mut out);
    aliases_without_credentials(config, &mut out);
    unused_deployments(config, &mut out);
    short_reservation_leases(config, &mut out);
    out
}

/// A shared reservation whose lease runs out before its request's deadline stops
/// holding room while the request still runs: concurrent requests can overshoot.
fn short_reservation_leases(config: &Config, out: &mut Vec<Lint>) {
    if let super::LimitsConfig::Redis(r) = &config.limits
        && r.reservation_ttl <= config.server.request_timeout
    {
        out.push(Lint {
            path: "limits.reservation_ttl_ms".into(),
            message: format!(
                "reservations are held {} ms, no longer than server.request_timeout_ms ({} ms): a slow request's reservation can expire before it is settled",
                r.reservation_ttl.as_millis(),
                config.server.request_timeout.as_millis()
            ),
        });
    }
}

fn unreachable_rules(config: &Config, out: &mut Vec<Lint>) {
    let rules = &config.routes.rules;
    for (j, later) in rules.iter().enumerate() {
        if let Some((i, earlier)) = rules[..j]
            .iter()
            .enumerate()
            .find(|(_, r)| !r.shadow && r.when.covers(&later.when))
        {
            out.push(Lint {
                path: format!("rules[{j}]"),
                message: format!(
                    "rule `{}` can never match: rule `{}` (rules[{i}]) above it matches every request it would",
                    later.id, earlier.id
                ),
            });
        }
    }
}

/// Chat pools only: an embeddings pool cannot fall back to another model (its vectors
/// would be in another space), so local-only is its normal shape.
fn pools_without_frontier(config: &Config, out: &mut Vec<Lint>) {
    for (i, pool) in config.routes.pools.iter().enumerate() {
        if pool.api != crate::route::Api::Chat {
            continue;
        }
        let has_frontier = pool
            .candidates
            .iter()
            .filter_map(|d| config.deployment(*d))
            .any(|d| d.tier == Tier::Frontier);
        if !has_frontier {
            out.push(Lint {
                path: format!("pools[{i}]"),
                message: format!(
                    "pool `{}` has no frontier fallback: its requests fail when its local deployments are down (intended for data that must stay local?)",
                    pool.id
                ),
            });
        }
    }
}

/// A deployment that cannot authenticate: its key variable is named but unset, or it
/// is the official OpenAI API without a key.
fn lacks_credentials(d: &super::Deployment) -> bool {
    d.api_key.is_none() && (d.api_key_env.is_some() || d.provider == ProviderKind::Openai)
}

fn aliases_without_credentials(config: &Config, out: &mut Vec<Lint>) {
    for (i, alias) in config.routes.aliases.iter().enumerate() {
        let Some(pool) = config.routes.pool(alias.pool) else {
            continue;
        };
        let usable = pool
            .candidates
            .iter()
            .filter_map(|d| config.deployment(*d))
            .any(|d| !lacks_credentials(d));
        if !usable {
            out.push(Lint {
                path: format!("aliases[{i}]"),
                message: format!(
                    "alias `{}` resolves nowhere: every deployment of pool `{}` lacks its API key",
                    alias.name, pool.id
                ),
            });
        }
    }
}

fn unused_deployments(config: &Config, out: &mut Vec<Lint>) {
    for (i, d) in config.deployments.iter().enumerate() {
        if !config
            .routes
            .pools
            .iter()
            .any(|p| p.deployments.contains(&DeploymentId(i)))
        {
            out.push(Lint {
                path: format!("deployments[{i}]"),
                message: format!("deployment `{}` is in no pool", d.id),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::classify::Label;
    use crate::route::{AliasMatch, Condition, Match};

    fn covers(broad: &Match, narrow: &Match) -> bool {
        broad.covers(narrow)
    }

    #[test]
    fn broader_rules_cover_narrower_ones() {
        let any = Match::catch_all();
        let code = Match {
            alias: AliasMatch::AutoOnly,
            conditions: vec![
                Condition::Label(vec![Label(0)]),
                Condition::MinConfidence(0.6),
            ],
        };
        let code_sure = Match {
            alias: AliasMatch::AutoOnly,
            conditions: vec![
                Condition::Label(vec![Label(0)]),
                Condition::MinConfidence(0.9),
                Condition::MaxPromptTokens(100),
            ],
        };
        let code_or_math = Match {
            alias: AliasMatch::AutoOnly,
            conditions: vec![Condition::Label(vec![Label(0), Label(1)])],
        };
        assert!(covers(&any, &code));
        assert!(covers(&code, &code_sure));
        assert!(!covers(&code_sure, &code));
        assert!(covers(&code_or_math, &code));
        assert!(!covers(&code, &code_or_math));
        let everyone = Match {
            alias: AliasMatch::Any,
            ..Match::catch_all()
        };
        assert!(
            !covers(&any, &everyone),
            "an auto-only rule does not cover aliases"
        );
        assert!(covers(&everyone, &any));
    }
}

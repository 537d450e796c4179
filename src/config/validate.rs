//! Turns [`RawConfig`] into a trusted [`Config`]: units converted once, names resolved
//! into indices, every cross-reference checked. Errors carry the field path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::raw::{
    ClassifierKind, RawAccounting, RawAlias, RawApi, RawAuth, RawBudget, RawBudgets, RawClassifier,
    RawConfig, RawDeployment, RawHealth, RawKey, RawLedger, RawMatch, RawPool, RawPrice,
    RawPriceValues, RawRule, RawServer, RawTeam, Strategy as RawStrategy,
};
use super::{
    AuthConfig, BudgetConfig, BudgetPeriod, BudgetsConfig, Config, Deployment, HealthConfig,
    KeyConfig, LedgerBackend, LedgerConfig, PriceEntry, ProviderKind, Secret, ServerConfig,
    TeamConfig,
};
use crate::accounting::{PerMillion, Price};
use crate::classify::{
    Classifier, HeuristicClassifier, LabelSet, LinearClassifier, PiiKind, PiiKinds,
};
use crate::route::{
    Action, Alias, AliasMatch, Api, Condition, DeploymentId, Match, Pool, PoolId, Requested,
    RouteTable, Rule, Strategy,
};

/// A field path and what is wrong with it.
pub type Invalid = (String, String);

fn invalid(path: impl Into<String>, message: impl Into<String>) -> Invalid {
    (path.into(), message.into())
}

/// Validates a whole config. Destructures [`RawConfig`] so a new section cannot be
/// forgotten here.
pub fn validate(
    raw: RawConfig,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Invalid> {
    let RawConfig {
        server,
        classifier,
        deployments,
        pools,
        aliases,
        rules,
        prices,
        accounting,
        ledger,
        health,
        auth,
        budgets,
        teams,
        keys,
        cache,
        limits,
    } = raw;
    let server = validate_server(server, env)?;
    let classifier = validate_classifier(classifier, source)?;
    let prices = validate_prices(prices)?;
    let deployments = deployments
        .into_iter()
        .enumerate()
        .map(|(i, d)| validate_deployment(i, d, &prices, env))
        .collect::<Result<Vec<_>, _>>()?;
    if deployments.is_empty() {
        return Err(invalid(
            "deployments",
            "at least one deployment is required",
        ));
    }
    unique(
        deployments.iter().map(|d| d.id.as_str()),
        "deployments",
        "id",
    )?;
    let budgets = validate_budgets(budgets)?;
    let deployments = bound_default_max_tokens(deployments, &budgets)?;
    let pools = validate_pools(pools, &deployments)?;
    let aliases = validate_aliases(aliases, &pools)?;
    let rules = validate_rules(rules, &pools, &aliases, classifier.as_ref(), &prices)?;
    let reference = validate_reference(accounting, &prices)?;
    let ledger = validate_ledger(ledger)?;
    let health = validate_health(health)?;
    let RawAuth {
        required,
        refresh_ms,
    } = auth;
    let auth = AuthConfig {
        required,
        refresh: positive_ms("auth.refresh_ms", refresh_ms)?,
    };
    let teams = teams
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let RawTeam { id, budget } = t;
            check_id(&format!("teams[{i}].id"), &id)?;
            Ok(TeamConfig {
                id,
                budget: budget
                    .map(|b| validate_budget(&format!("teams[{i}].budget"), b))
                    .transpose()?,
            })
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    unique(teams.iter().map(|t| t.id.as_str()), "teams", "id")?;
    let keys = keys
        .into_iter()
        .enumerate()
        .map(|(i, k)| validate_key(i, k, &teams))
        .collect::<Result<Vec<_>, Invalid>>()?;
    unique(keys.iter().map(|k| k.id.as_str()), "keys", "id")?;
    let cache = super::cache::validate_cache(cache)?;
    let limits = super::limits::validate_limits(limits)?;
    Ok(Config {
        source: source.to_path_buf(),
        server,
        classifier,
        deployments,
        routes: RouteTable {
            rules,
            pools,
            aliases,
        },
        prices,
        reference,
        ledger,
        health,
        cache,
        limits,
        auth,
        budgets,
        teams,
        keys,
    })
}

fn validate_budgets(raw: RawBudgets) -> Result<BudgetsConfig, Invalid> {
    let RawBudgets {
        warn_at,
        default_max_tokens,
        block_free_traffic,
    } = raw;
    if !(0.0..=1.0).contains(&warn_at) {
        return Err(invalid(
            "budgets.warn_at",
            format!("{warn_at} is not in [0, 1]"),
        ));
    }
    Ok(BudgetsConfig {
        warn_at,
        default_max_tokens,
        block_free_traffic,
    })
}

/// Keeps what a deployment generates for a request without `max_tokens` within what
/// admission reserves for it (`budgets.default_max_tokens`), so no budget can be
/// overshot by a default. Anthropic needs a `max_tokens` on every request: without a
/// deployment default, it gets the budgets' one.
fn bound_default_max_tokens(
    mut deployments: Vec<Deployment>,
    budgets: &BudgetsConfig,
) -> Result<Vec<Deployment>, Invalid> {
    let reserved = budgets.default_max_tokens;
    for (i, d) in deployments.iter_mut().enumerate() {
        match d.default_max_tokens {
            Some(n) if n > reserved => {
                return Err(invalid(
                    format!("deployments[{i}].default_max_tokens"),
                    format!(
                        "{n} exceeds budgets.default_max_tokens ({reserved}), the output \
                         admission reserves for a request without max_tokens; lower it or \
                         raise budgets.default_max_tokens"
                    ),
                ));
            }
            Some(_) => {}
            None if d.provider == ProviderKind::Anthropic => {
                d.default_max_tokens = Some(reserved);
            }
            None => {}
        }
    }
    Ok(deployments)
}

fn validate_budget(path: &str, raw: RawBudget) -> Result<BudgetConfig, Invalid> {
    let RawBudget { usd, period } = raw;
    Ok(BudgetConfig {
        limit: crate::accounting::Usd::from_dollars(usd)
            .map_err(|e| invalid(format!("{path}.usd"), e.to_string()))?,
        period: BudgetPeriod::parse(&period).ok_or_else(|| {
            invalid(
                format!("{path}.period"),
                format!("`{period}` is not `day` or `month`"),
            )
        })?,
    })
}

fn validate_key(i: usize, raw: RawKey, teams: &[TeamConfig]) -> Result<KeyConfig, Invalid> {
    let RawKey {
        id,
        sha256,
        team,
        budget,
        rpm,
        tpm,
    } = raw;
    let path = format!("keys[{i}]");
    check_id(&format!("{path}.id"), &id)?;
    let sha256 = super::parse_hex(&sha256).ok_or_else(|| {
        invalid(
            format!("{path}.sha256"),
            "must be the key's SHA-256 as 64 hex digits (crossroads keys hash prints it)",
        )
    })?;
    if let Some(team) = &team
        && !teams.iter().any(|t| &t.id == team)
    {
        return Err(invalid(
            format!("{path}.team"),
            format!("unknown team `{team}`"),
        ));
    }
    Ok(KeyConfig {
        id,
        sha256,
        team,
        budget: budget
            .map(|b| validate_budget(&format!("{path}.budget"), b))
            .transpose()?,
        rpm,
        tpm,
    })
}

fn validate_health(raw: RawHealth) -> Result<HealthConfig, Invalid> {
    let RawHealth {
        failure_threshold,
        ejection_ms,
        max_ejection_ms,
    } = raw;
    if failure_threshold == 0 {
        return Err(invalid("health.failure_threshold", "must be at least 1"));
    }
    if max_ejection_ms < ejection_ms {
        return Err(invalid(
            "health.max_ejection_ms",
            "must be at least health.ejection_ms",
        ));
    }
    Ok(HealthConfig {
        failure_threshold,
        ejection: positive_ms("health.ejection_ms", ejection_ms)?,
        max_ejection: Duration::from_millis(max_ejection_ms),
    })
}

/// More async workers than this is a typo, not a tuning.
const MAX_WORKERS: usize = 1024;

fn validate_server(
    raw: RawServer,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerConfig, Invalid> {
    let RawServer {
        listen,
        body_limit_bytes,
        request_timeout_ms,
        shutdown_grace_ms,
        admin_key_env,
        console_key_env,
        config_poll_ms,
        retries,
        retry_backoff_ms,
        max_retry_wait_ms,
        workers,
    } = raw;
    let key = |field: &'static str, name: Option<String>| match name {
        Some(name) if name.is_empty() => Err(invalid(field, "must not be empty")),
        Some(name) => Ok(env(&name).filter(|v| !v.is_empty()).map(Secret::new)),
        None => Ok(None),
    };
    let admin_key = key("server.admin_key_env", admin_key_env)?;
    let console_key = key("server.console_key_env", console_key_env)?;
    let listen: SocketAddr = listen.parse().map_err(|_| {
        invalid(
            "server.listen",
            format!("`{listen}` is not an address like 127.0.0.1:8080"),
        )
    })?;
    if body_limit_bytes < 1024 {
        return Err(invalid(
            "server.body_limit_bytes",
            "must be at least 1024 bytes",
        ));
    }
    if workers > MAX_WORKERS {
        return Err(invalid(
            "server.workers",
            format!("must be at most {MAX_WORKERS} (0: one per core)"),
        ));
    }
    Ok(ServerConfig {
        listen,
        workers: (workers > 0).then_some(workers),
        body_limit: body_limit_bytes,
        request_timeout: positive_ms("server.request_timeout_ms", request_timeout_ms)?,
        shutdown_grace: Duration::from_millis(shutdown_grace_ms),
        admin_key,
        console_key,
        config_poll: (config_poll_ms > 0).then(|| Duration::from_millis(config_poll_ms)),
        retries,
        retry_backoff: Duration::from_millis(retry_backoff_ms),
        max_retry_wait: Duration::from_millis(max_retry_wait_ms),
    })
}

/// Builds the classifier; a linear model is loaded from a path relative to the
/// directory of the config file.
fn validate_classifier(raw: RawClassifier, source: &Path) -> Result<Arc<dyn Classifier>, Invalid> {
    let RawClassifier { kind, model } = raw;
    match (kind, model) {
        (ClassifierKind::Heuristic, None) => Ok(Arc::new(HeuristicClassifier::default())),
        (ClassifierKind::Heuristic, Some(_)) => Err(invalid(
            "classifier.model",
            "only kind = \"linear\" reads a model file",
        )),
        (ClassifierKind::Linear, None) => Err(invalid(
            "classifier.model",
            "kind = \"linear\" needs a model file, e.g. model = \"models/crossroads-linear.bin\"",
        )),
        (ClassifierKind::Linear, Some(file)) => {
            let path = source.parent().unwrap_or(Path::new("")).join(&file);
            let classifier = LinearClassifier::load(&path)
                .map_err(|e| invalid("classifier.model", format!("{}: {e}", path.display())))?;
            Ok(Arc::new(classifier))
        }
    }
}

fn positive_ms(path: &str, ms: u64) -> Result<Duration, Invalid> {
    if ms == 0 {
        return Err(invalid(path, "must be greater than 0"));
    }
    Ok(Duration::from_millis(ms))
}

/// Ids appear in metrics labels, headers and URLs: keep them plain.
fn check_id(path: &str, id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("`{id}` must be 1-64 characters of letters, digits, '-', '_', '.', ':'"),
        ))
    }
}

fn unique<'a>(
    ids: impl Iterator<Item = &'a str>,
    section: &str,
    field: &str,
) -> Result<(), Invalid> {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if !seen.insert(id) {
            return Err(invalid(
                format!("{section}[{i}].{field}"),
                format!("`{id}` is used twice"),
            ));
        }
    }
    Ok(())
}

fn per_million(path: String, usd: f64) -> Result<PerMillion, Invalid> {
    PerMillion::from_usd(usd).map_err(|e| invalid(path, e.to_string()))
}

fn price_of(
    path: &str,
    input: f64,
    cached_input: Option<f64>,
    cache_write: Option<f64>,
    output: f64,
) -> Result<Price, Invalid> {
    let input_price = per_million(format!("{path}.input"), input)?;
    Ok(Price {
        input: input_price,
        cached_input: cached_input
            .map(|v| per_million(format!("{path}.cached_input"), v))
            .transpose()?
            .unwrap_or(input_price),
        cache_write: cache_write
            .map(|v| per_million(format!("{path}.cache_write"), v))
            .transpose()?
            .unwrap_or(input_price),
        output: per_million(format!("{path}.output"), output)?,
    })
}

fn validate_prices(raw: Vec<RawPrice>) -> Result<Vec<PriceEntry>, Invalid> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let RawPrice {
            model,
            input,
            cached_input,
            cache_write,
            output,
            source,
            as_of,
        } = p;
        let path = format!("prices[{i}]");
        if model.is_empty() {
            return Err(invalid(format!("{path}.model"), "must not be empty"));
        }
        if source.trim().is_empty() {
            return Err(invalid(
                format!("{path}.source"),
                "say where the price was published",
            ));
        }
        if !is_date(&as_of) {
            return Err(invalid(
                format!("{path}.as_of"),
                format!("`{as_of}` is not a date like 2025-06-01"),
            ));
        }
        out.push(PriceEntry {
            price: price_of(&path, input, cached_input, cache_write, output)?,
            model,
            source,
            as_of,
        });
    }
    unique(out.iter().map(|p| p.model.as_str()), "prices", "model")?;
    Ok(out)
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn validate_deployment(
    i: usize,
    raw: RawDeployment,
    prices: &[PriceEntry],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Deployment, Invalid> {
    let RawDeployment {
        id,
        provider,
        base_url,
        model,
        api,
        api_key_env,
        tier,
        connect_timeout_ms,
        first_byte_timeout_ms,
        idle_timeout_ms,
        price,
        cost_model,
        max_concurrency,
        context_window,
        default_max_tokens,
        api_version,
    } = raw;

    let path = format!("deployments[{i}]");
    check_id(&format!("{path}.id"), &id)?;
    if max_concurrency == Some(0) {
        return Err(invalid(
            format!("{path}.max_concurrency"),
            "must be at least 1",
        ));
    }
    if context_window == Some(0) {
        return Err(invalid(
            format!("{path}.context_window"),
            "must be at least 1",
        ));
    }
    let url = url::Url::parse(&base_url).map_err(|e| {
        invalid(
            format!("{path}.base_url"),
            format!("`{base_url}` is not a valid URL: {e}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            format!("{path}.base_url"),
            format!("`{base_url}` must be an http:// or https:// URL with a host"),
        ));
    }
    if model.is_empty() {
        return Err(invalid(format!("{path}.model"), "must not be empty"));
    }
    let api = match api {
        RawApi::Chat => Api::Chat,
        RawApi::Embeddings if provider == ProviderKind::Anthropic => {
            return Err(invalid(
                format!("{path}.api"),
                "Anthropic serves no embeddings API; use an OpenAI or OpenAI-compatible deployment",
            ));
        }
        RawApi::Embeddings => Api::Embeddings,
    };
    let api_key = match &api_key_env {
        Some(name) if name.is_empty() => {
            return Err(invalid(format!("{path}.api_key_env"), "must not be empty"));
        }
        Some(name) => env(name).filter(|v| !v.is_empty()).map(Secret::new),
        None => None,
    };
    let price = match (price, cost_model) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                format!("{path}.cost_model"),
                "set either price or cost_model, not both",
            ));
        }
        (None, Some(m)) => {
            let path = format!("{path}.cost_model");
            if !m.usd_per_hour.is_finite() || m.usd_per_hour < 0.0 {
                return Err(invalid(
                    format!("{path}.usd_per_hour"),
                    "must be a non-negative number of USD per hour",
                ));
            }
            let hourly = |tps: f64, field: &str| {
                PerMillion::from_hourly(m.usd_per_hour, tps)
                    .map_err(|e| invalid(format!("{path}.{field}"), e.to_string()))
            };
            let input = hourly(m.input_tokens_per_second, "input_tokens_per_second")?;
            Price {
                input,
                cached_input: input,
                cache_write: input,
                output: hourly(m.output_tokens_per_second, "output_tokens_per_second")?,
            }
        }
        (Some(p), None) => {
            let RawPriceValues {
                input,
                cached_input,
                cache_write,
                output,
                source: _,
            } = p;
            price_of(&format!("{path}.price"), input, cached_input, cache_write, output)?
        }
        (None, None) => {
            prices
                .iter()
                .find(|p| p.model == model)
                .ok_or_else(|| {
                    invalid(
                        format!("{path}.price"),
                        format!(
                            "no price for model `{model}`: add a [[prices]] entry with model = \"{model}\" or set price = {{ input = ..., output = ... }} on the deployment"
                        ),
                    )
                })?
                .price
        }
    };
    Ok(Deployment {
        id,
        provider,
        base_url: base_url.trim_end_matches('/').to_owned(),
        model,
        api,
        api_key,
        api_key_env,
        tier,
        connect_timeout: positive_ms(&format!("{path}.connect_timeout_ms"), connect_timeout_ms)?,
        first_byte_timeout: positive_ms(
            &format!("{path}.first_byte_timeout_ms"),
            first_byte_timeout_ms,
        )?,
        idle_timeout: positive_ms(&format!("{path}.idle_timeout_ms"), idle_timeout_ms)?,
        price,
        max_concurrency,
        context_window,
        default_max_tokens,
        api_version,
    })
}

fn validate_pools(raw: Vec<RawPool>, deployments: &[Deployment]) -> Result<Vec<Pool>, Invalid> {
    if raw.is_empty() {
        return Err(invalid("pools", "at least one pool is required"));
    }
    let ids: HashMap<&str, usize> = raw
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    unique(raw.iter().map(|p| p.id.as_str()), "pools", "id")?;
    let mut pools = Vec::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let RawPool {
            id,
            deployments: members,
            fallback,
            strategy,
            weights,
        } = p;
        let path = format!("pools[{i}]");
        check_id(&format!("{path}.id"), id)?;
        if members.is_empty() {
            return Err(invalid(
                format!("{path}.deployments"),
                "a pool needs at least one deployment",
            ));
        }
        let members = members
            .iter()
            .enumerate()
            .map(|(j, name)| {
                deployments
                    .iter()
                    .position(|d| &d.id == name)
                    .ok_or_else(|| {
                        invalid(
                            format!("{path}.deployments[{j}]"),
                            format!("unknown deployment `{name}`"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let api = deployments[members[0]].api;
        if let Some((j, d)) = members
            .iter()
            .map(|&m| &deployments[m])
            .enumerate()
            .find(|(_, d)| d.api != api)
        {
            return Err(invalid(
                format!("{path}.deployments[{j}]"),
                format!(
                    "`{}` serves {} but `{}` serves {}: a pool's deployments must serve the same API",
                    d.id,
                    d.api.as_str(),
                    deployments[members[0]].id,
                    api.as_str()
                ),
            ));
        }
        let fallback = fallback
            .as_ref()
            .map(|f| {
                ids.get(f.as_str()).copied().ok_or_else(|| {
                    invalid(format!("{path}.fallback"), format!("unknown pool `{f}`"))
                })
            })
            .transpose()?;
        let weights = match (strategy, weights) {
            (RawStrategy::Weighted, Some(w))
                if w.len() == members.len() && w.iter().all(|x| *x > 0) =>
            {
                w.clone()
            }
            (RawStrategy::Weighted, _) => {
                return Err(invalid(
                    format!("{path}.weights"),
                    format!(
                        "a weighted pool needs one positive weight per deployment ({} here)",
                        members.len()
                    ),
                ));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    format!("{path}.weights"),
                    "weights only apply to strategy = \"weighted\"",
                ));
            }
            (_, None) => Vec::new(),
        };
        pools.push(Pool {
            id: id.clone(),
            api,
            deployments: members.into_iter().map(DeploymentId).collect(),
            fallback: fallback.map(PoolId),
            strategy: match strategy {
                RawStrategy::Priority => Strategy::Priority,
                RawStrategy::Weighted => Strategy::Weighted,
                RawStrategy::LeastLatency => Strategy::LeastLatency,
                RawStrategy::Cheapest => Strategy::Cheapest,
            },
            weights,
            chain: Vec::new(),
            candidates: Vec::new(),
        });
    }
    // Flatten each fallback chain once, here, so dispatch does no work per request.
    for i in 0..pools.len() {
        let mut seen_pools: Vec<usize> = vec![i];
        let mut candidates: Vec<DeploymentId> = Vec::new();
        let mut current = Some(i);
        while let Some(p) = current {
            for d in &pools[p].deployments {
                if !candidates.contains(d) {
                    candidates.push(*d);
                }
            }
            current = pools[p].fallback.map(|f| f.0);
            if let Some(next) = current {
                if pools[next].api != pools[i].api {
                    return Err(invalid(
                        format!("pools[{p}].fallback"),
                        format!(
                            "pool `{}` serves {} but its fallback `{}` serves {}",
                            pools[p].id,
                            pools[p].api.as_str(),
                            pools[next].id,
                            pools[next].api.as_str()
                        ),
                    ));
                }
                if seen_pools.contains(&next) {
                    return Err(invalid(
                        format!("pools[{i}].fallback"),
                        format!(
                            "fallback chain of pool `{}` loops back to pool `{}`",
                            pools[i].id, pools[next].id
                        ),
                    ));
                }
                seen_pools.push(next);
            }
        }
        pools[i].candidates = candidates;
        pools[i].chain = seen_pools.into_iter().map(PoolId).collect();
    }
    Ok(pools)
}

fn validate_aliases(raw: Vec<RawAlias>, pools: &[Pool]) -> Result<Vec<Alias>, Invalid> {
    let aliases =
        raw.into_iter()
            .enumerate()
            .map(|(i, a)| {
                let RawAlias {
                    name,
                    pool,
                    description,
                } = a;
                let path = format!("aliases[{i}]");
                check_id(&format!("{path}.name"), &name)?;
                if name == "auto" {
                    return Err(invalid(
                        format!("{path}.name"),
                        "`auto` is reserved: it lets the rules decide",
                    ));
                }
                let pool = pools.iter().position(|p| p.id == pool).ok_or_else(|| {
                    invalid(format!("{path}.pool"), format!("unknown pool `{pool}`"))
                })?;
                Ok(Alias {
                    name,
                    description,
                    pool: PoolId(pool),
                })
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
    unique(aliases.iter().map(|a| a.name.as_str()), "aliases", "name")?;
    Ok(aliases)
}

fn validate_rules(
    raw: Vec<RawRule>,
    pools: &[Pool],
    aliases: &[Alias],
    classifier: &dyn Classifier,
    prices: &[PriceEntry],
) -> Result<Vec<Rule>, Invalid> {
    let mut rules = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let RawRule {
            id,
            description,
            when,
            pool,
            reject,
            max_tokens,
            shadow,
            reference_model,
        } = r;
        let path = format!("rules[{i}]");
        check_id(&format!("{path}.id"), &id)?;
        if max_tokens == Some(0) {
            return Err(invalid(format!("{path}.max_tokens"), "must be at least 1"));
        }
        let action = match (pool, reject) {
            (Some(pool), None) => {
                let index = pools.iter().position(|p| p.id == pool).ok_or_else(|| {
                    invalid(
                        format!("{path}.pool"),
                        format!(
                            "unknown pool `{pool}`; pools are: {}",
                            pools
                                .iter()
                                .map(|p| p.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
                if pools[index].api != Api::Chat {
                    return Err(invalid(
                        format!("{path}.pool"),
                        format!(
                            "pool `{pool}` serves {}: rules route chat requests; \
                             name that pool in an alias instead",
                            pools[index].api.as_str()
                        ),
                    ));
                }
                Action::Pool(PoolId(index))
            }
            (None, Some(reject)) => {
                if !(400..=599).contains(&reject.status) {
                    return Err(invalid(
                        format!("{path}.reject.status"),
                        format!("{} is not an HTTP error status (400-599)", reject.status),
                    ));
                }
                Action::Reject {
                    status: reject.status,
                    message: reject.message,
                }
            }
            _ => {
                return Err(invalid(
                    path,
                    format!("rule `{id}` needs exactly one action: `pool` or `reject`"),
                ));
            }
        };
        let when = validate_match(&format!("{path}.when"), when, aliases, classifier)?;
        if max_tokens.is_some() && !matches!(action, Action::Pool(_)) {
            return Err(invalid(
                format!("{path}.max_tokens"),
                "only a rule that routes to a pool can cap max_tokens",
            ));
        }
        let reference = reference_model
            .map(|model| {
                prices
                    .iter()
                    .find(|p| p.model == model)
                    .map(|p| p.price)
                    .ok_or_else(|| {
                        invalid(
                            format!("{path}.reference_model"),
                            format!("no [[prices]] entry for model `{model}`"),
                        )
                    })
            })
            .transpose()?;
        rules.push(Rule {
            id,
            description,
            when,
            action,
            max_tokens,
            shadow,
            reference,
        });
    }
    unique(rules.iter().map(|r| r.id.as_str()), "rules", "id")?;

    let default = rules
        .iter()
        .position(|r| !r.shadow && r.when.is_unconditional() && r.when.alias.admits(Requested::Auto))
        .ok_or_else(|| {
            invalid(
                "rules",
                "a default rule is required: a last rule with no conditions, e.g. [[rules]] id = \"default\" pool = \"frontier\"",
            )
        })?;
    if let Some(later) = rules[default + 1..]
        .iter()
        .position(|r| r.when.alias == AliasMatch::AutoOnly && !r.shadow)
    {
        let index = default + 1 + later;
        return Err(invalid(
            format!("rules[{index}]"),
            format!(
                "rule `{}` can never match: the default rule `{}` above it matches every request",
                rules[index].id, rules[default].id
            ),
        ));
    }
    Ok(rules)
}

fn validate_match(
    path: &str,
    raw: RawMatch,
    aliases: &[Alias],
    classifier: &dyn Classifier,
) -> Result<Match, Invalid> {
    let RawMatch {
        alias,
        label,
        task,
        min_confidence,
        max_confidence,
        min_difficulty,
        max_difficulty,
        min_prompt_tokens,
        max_prompt_tokens,
        tools,
        images,
        json_mode,
        pii,
        pii_kinds,
        header,
        team,
        key,
        min_budget_used,
    } = raw;
    let mut headers = Vec::new();
    for (name, value) in header.unwrap_or_default() {
        let lower = name.to_ascii_lowercase();
        if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(invalid(
                format!("{path}.header"),
                format!("`{name}` is not a valid header name"),
            ));
        }
        headers.push((lower, value));
    }
    let alias = match alias {
        None => AliasMatch::AutoOnly,
        Some(list) if list.iter().any(|a| a == "*") => AliasMatch::Any,
        Some(list) => AliasMatch::OneOf(
            list.iter()
                .map(|name| {
                    if name == "auto" {
                        return Ok(Requested::Auto);
                    }
                    aliases
                        .iter()
                        .position(|a| &a.name == name)
                        .map(Requested::Alias)
                        .ok_or_else(|| {
                            invalid(
                                format!("{path}.alias"),
                                format!("unknown alias `{name}` (use \"auto\", \"*\" or an [[aliases]] name)"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let labels = resolve_labels(
        &format!("{path}.label"),
        label,
        classifier.labels(),
        "label",
    )?;
    let tasks = resolve_labels(
        &format!("{path}.task"),
        task,
        classifier.task_labels(),
        "task",
    )?;
    let mut ranges = Vec::new();
    for (name, value, condition) in [
        (
            "min_confidence",
            min_confidence,
            Condition::MinConfidence as fn(f32) -> Condition,
        ),
        ("max_confidence", max_confidence, Condition::MaxConfidence),
        ("min_difficulty", min_difficulty, Condition::MinDifficulty),
        ("max_difficulty", max_difficulty, Condition::MaxDifficulty),
    ] {
        if let Some(v) = value {
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(
                    format!("{path}.{name}"),
                    format!("{v} is not in [0, 1]"),
                ));
            }
            ranges.push(condition(v));
        }
    }
    let mut kinds = PiiKinds::empty();
    for name in pii_kinds.unwrap_or_default() {
        let kind = PiiKind::parse(&name).ok_or_else(|| {
            invalid(
                format!("{path}.pii_kinds"),
                format!(
                    "unknown PII kind `{name}`; kinds are: {}",
                    PiiKind::ALL.map(PiiKind::as_str).join(", ")
                ),
            )
        })?;
        kinds.insert(kind);
    }
    // In the order of `Condition`'s variants: explain reports the first that fails.
    let mut conditions = Vec::new();
    conditions.extend(any_of(labels, Condition::Label));
    conditions.extend(any_of(tasks, Condition::Task));
    conditions.extend(ranges);
    conditions.extend(min_prompt_tokens.map(Condition::MinPromptTokens));
    conditions.extend(max_prompt_tokens.map(Condition::MaxPromptTokens));
    conditions.extend(tools.map(Condition::Tools));
    conditions.extend(images.map(Condition::Images));
    conditions.extend(json_mode.map(Condition::JsonMode));
    conditions.extend(pii.map(Condition::Pii));
    conditions.extend((!kinds.is_empty()).then_some(Condition::PiiKinds(kinds)));
    conditions.extend(any_of(team.unwrap_or_default(), Condition::Team));
    conditions.extend(any_of(key.unwrap_or_default(), Condition::Key));
    conditions.extend(
        headers
            .into_iter()
            .map(|(name, value)| Condition::Header { name, value }),
    );
    if let Some(v) = min_budget_used {
        if !(v > 0.0 && v <= 1.0) {
            return Err(invalid(
                format!("{path}.min_budget_used"),
                format!("{v} is not in (0, 1]"),
            ));
        }
        conditions.push(Condition::MinBudgetUsed(v));
    }
    Ok(Match { alias, conditions })
}

/// An any-of condition, or none for an empty list (which would match nothing at runtime
/// but means "any" in the config).
fn any_of<T>(list: Vec<T>, condition: fn(Vec<T>) -> Condition) -> Option<Condition> {
    (!list.is_empty()).then(|| condition(list))
}

/// Resolves label names against one head of the classifier.
fn resolve_labels(
    path: &str,
    names: Option<Vec<String>>,
    known: &LabelSet,
    what: &str,
) -> Result<Vec<crate::classify::Label>, Invalid> {
    names
        .unwrap_or_default()
        .iter()
        .map(|name| {
            known.find(name).ok_or_else(|| {
                invalid(
                    path,
                    format!(
                        "the classifier has no {what} `{name}`; it has: {}",
                        known.names().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
        })
        .collect()
}

fn validate_reference(raw: RawAccounting, prices: &[PriceEntry]) -> Result<PriceEntry, Invalid> {
    let RawAccounting { reference_model } = raw;
    prices
        .iter()
        .find(|p| p.model == reference_model)
        .cloned()
        .ok_or_else(|| {
            invalid(
                "accounting.reference_model",
                format!("no [[prices]] entry for model `{reference_model}`"),
            )
        })
}

fn validate_ledger(raw: RawLedger) -> Result<LedgerConfig, Invalid> {
    let RawLedger {
        url,
        schema,
        queue_capacity,
        batch_size,
        durability,
    } = raw;
    let backend = ledger_backend(url, schema)?;
    if queue_capacity == 0 || batch_size == 0 {
        return Err(invalid(
            "ledger",
            "queue_capacity and batch_size must be greater than 0",
        ));
    }
    Ok(LedgerConfig {
        backend,
        queue_capacity,
        batch_size,
        durability,
    })
}

/// The ledger a `ledger.url` (and `ledger.schema`) names; also what `--ledger` of the
/// CLI's ledger commands takes.
pub fn ledger_backend(url: String, schema: String) -> Result<LedgerBackend, Invalid> {
    Ok(if url == "sqlite::memory:" {
        LedgerBackend::SqliteMemory
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(invalid("ledger.url", "sqlite:// needs a file path"));
        }
        LedgerBackend::Sqlite(PathBuf::from(path))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let valid_schema = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !schema.as_bytes()[0].is_ascii_digit();
        if !valid_schema {
            return Err(invalid(
                "ledger.schema",
                format!("`{schema}` must be a plain identifier (letters, digits, _)"),
            ));
        }
        LedgerBackend::Postgres {
            url: Secret::new(url),
            schema,
        }
    } else {
        return Err(invalid(
            "ledger.url",
            "use sqlite://PATH, sqlite::memory: or postgres://USER@HOST:PORT/DB",
        ));
    })
}

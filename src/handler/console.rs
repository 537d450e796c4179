//! The console: `GET /ui` (one embedded page) and the JSON it reads under `/ui/api/`,
//! beside `GET /v1/spend` and `/v1/spend/requests`, which it reads too. The page holds
//! no data; every endpoint needs the admin key, the console key
//! (`server.console_key_env`, read-only) or a team's key, which sees its own team only.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::admin::{constant_time_eq, is_admin};
use super::spend::{SpendQuery, filter, query};
use super::{blocking, ledger_in_memory};
use crate::accounting::Usd;
use crate::admission::{now_ms, period_end_ms, period_start_ms};
use crate::config::BudgetConfig;
use crate::console::{Percentiles, exhaustion_day, overview, percentiles};
use crate::error::ApiError;
use crate::ledger::StoreError;
use crate::ledger::query::{Filter, GroupBy, day_string};
use crate::ledger::rollup::{DAY_MS, Metric};
use crate::state::AppState;

/// Who reads the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    Admin,
    /// The read-only console key.
    Console,
    /// A team's virtual key: its own team only.
    Team(String),
}

impl Viewer {
    /// The team this viewer is limited to; `None` sees everything.
    pub fn scope(&self) -> Option<String> {
        match self {
            Viewer::Team(team) => Some(team.clone()),
            Viewer::Admin | Viewer::Console => None,
        }
    }
}

/// The viewer the request's `Authorization: Bearer` key makes, or 401.
pub fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let rt = state.runtime();
    if is_admin(&rt, presented) {
        return Ok(Viewer::Admin);
    }
    if let (Some(console), Some(given)) = (
        &rt.config.server.console_key,
        presented.and_then(crate::auth::bearer),
    ) && constant_time_eq(given.as_bytes(), console.expose().as_bytes())
    {
        return Ok(Viewer::Console);
    }
    let refused = |message: &str| ApiError::Unauthorized {
        message: message.into(),
    };
    match state.keyring.authenticate(presented, true)? {
        Some(key) => key.team.clone().map(Viewer::Team).ok_or_else(|| {
            refused("this key belongs to no team: the console and spend need the admin key, the console key or a team's key")
        }),
        None => Err(refused(
            "the console and spend need the admin key, the console key or a team's key",
        )),
    }
}

/// `GET /ui`: the page. It carries no data, so it needs no key; a strict content
/// policy keeps it from loading anything but its own API.
pub async fn page() -> Response {
    let mut response = crate::console::PAGE.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Runs `f` and renders its result or its error.
async fn answer(f: impl Future<Output = Result<serde_json::Value, ApiError>>) -> Response {
    match f.await {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /ui/api/whoami`: the viewer's role, so the page can show what it may see.
pub async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(async {
        let viewer = viewer(&state, &headers)?;
        let role = match viewer {
            Viewer::Admin => "admin",
            Viewer::Console => "console",
            Viewer::Team(_) => "team",
        };
        Ok(json!({ "role": role, "team": viewer.scope() }))
    })
    .await
}

/// The days of a filter, `[from, to)`: the last 30 days through today when unset.
fn days_of(filter: &mut Filter) -> (i64, i64) {
    let today = now_ms().div_euclid(DAY_MS);
    let to = filter
        .to_ms
        .map_or(today + 1, |ms| (ms + DAY_MS - 1).div_euclid(DAY_MS));
    let from = filter.from_ms.map_or(to - 30, |ms| ms.div_euclid(DAY_MS));
    filter.from_ms.get_or_insert(from * DAY_MS);
    filter.to_ms.get_or_insert(to * DAY_MS);
    (from, to.max(from))
}

/// The filter of a console query, scoped to the viewer, with its days.
fn scoped(
    state: &AppState,
    headers: &HeaderMap,
    q: Result<Query<SpendQuery>, QueryRejection>,
) -> Result<(Filter, (i64, i64)), ApiError> {
    let q = query(q)?;
    let viewer = viewer(state, headers)?;
    let mut filter = filter(&q, viewer.scope())?;
    let days = days_of(&mut filter);
    Ok((filter, days))
}

/// `GET /ui/api/overview?from=&to=&team=&key=`: totals, the routing mix and each day.
pub async fn overview_api(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<SpendQuery>, QueryRejection>,
) -> Response {
    answer(async {
        let (filter, (from, to)) = scoped(&state, &headers, q)?;
        let reader = state.reader.clone().ok_or_else(ledger_in_memory)?;
        let groups = blocking(move || reader.series(GroupBy::Tier, &filter)).await?;
        let overview = overview(&groups, from, to);
        Ok(json!({
            "from": day_string(from),
            "to": day_string(to),
            "totals": overview.totals,
            "mix": overview.mix,
            "series": overview.series,
        }))
    })
    .await
}

/// `GET /ui/api/latency?from=&to=`: latency and TTFT percentiles per deployment.
pub async fn latency(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<SpendQuery>, QueryRejection>,
) -> Response {
    answer(async {
        let (mut filter, _) = scoped(&state, &headers, q)?;
        // Latency belongs to the deployment, whoever asked.
        filter.team = None;
        filter.key = None;
        let reader = state.reader.clone().ok_or_else(ledger_in_memory)?;
        let (histograms, totals) = blocking(move || {
            Ok::<_, StoreError>((
                reader.latency(&filter)?,
                reader.spend(GroupBy::Deployment, &filter)?,
            ))
        })
        .await?;
        let rt = state.runtime();
        let mut data = Vec::new();
        for row in totals {
            let Some(deployment) = row.group else {
                continue;
            };
            let histogram = |metric: Metric| -> Option<Percentiles> {
                let mut h: Vec<(i64, i64)> = histograms
                    .iter()
                    .filter(|(d, m, _, _)| *d == deployment && *m == metric)
                    .map(|(_, _, bucket, n)| (*bucket, *n))
                    .collect();
                percentiles(&mut h)
            };
            let tier = rt
                .config
                .deployments
                .iter()
                .find(|d| d.id == deployment)
                .map(|d| d.tier.as_str());
            data.push(json!({
                "deployment": deployment,
                "tier": tier,
                "requests": row.requests,
                "latency_ms": histogram(Metric::Latency),
                "ttft_ms": histogram(Metric::Ttft),
                "cost_usd": row.cost_usd,
            }));
        }
        Ok(json!({ "object": "list", "data": data }))
    })
    .await
}

/// `GET /ui/api/budgets`: each budget's spend this period, its days, and when it runs
/// out at the period's rate so far.
pub async fn budgets(State(state): State<AppState>, headers: HeaderMap) -> Response {
    answer(async {
        let scope = viewer(&state, &headers)?.scope();
        let rt = state.runtime();
        let mut budgets: Vec<(&'static str, String, BudgetConfig)> = rt
            .config
            .teams
            .iter()
            .filter_map(|t| t.budget.map(|b| ("team", t.id.clone(), b)))
            .collect();
        let mut keys: Vec<_> = state
            .keyring
            .keys()
            .into_iter()
            .filter_map(|k| k.budget.map(|b| (k.team.clone(), k.id.clone(), b)))
            .filter(|(team, _, _)| scope.is_none() || *team == scope)
            .map(|(_, id, b)| ("key", id, b))
            .collect();
        keys.sort_by(|a, b| a.1.cmp(&b.1));
        budgets.retain(|(_, id, _)| scope.as_ref().is_none_or(|s| s == id));
        budgets.extend(keys);
        let now = now_ms();
        let reader = state.reader.clone().ok_or_else(ledger_in_memory)?;
        // One read per scope kind, from the earliest period start.
        let since = budgets
            .iter()
            .map(|(_, _, b)| period_start_ms(b.period, now))
            .min()
            .unwrap_or(now);
        let (by_team, by_key) = blocking(move || {
            let filter = Filter {
                from_ms: Some(since.div_euclid(DAY_MS) * DAY_MS),
                ..Filter::default()
            };
            Ok::<_, StoreError>((
                reader.series(GroupBy::Team, &filter)?,
                reader.series(GroupBy::Key, &filter)?,
            ))
        })
        .await?;
        let data: Vec<serde_json::Value> = budgets
            .iter()
            .map(|(kind, id, budget)| {
                let start = period_start_ms(budget.period, now);
                let end = period_end_ms(budget.period, start);
                let groups = if *kind == "team" { &by_team } else { &by_key };
                let mut daily: Vec<(i64, Usd)> = groups
                    .iter()
                    .filter(|g| g.group.as_deref() == Some(id.as_str()))
                    .filter_map(|g| Some((g.day?, Usd::from_pico(g.sums.cost_pusd))))
                    .filter(|(day, _)| *day * DAY_MS >= start)
                    .collect();
                daily.sort_by_key(|(day, _)| *day);
                let spent = daily.iter().fold(Usd::ZERO, |sum, (_, usd)| sum + *usd);
                let exhaustion = exhaustion_day(budget.limit, &daily, start, end, now);
                let used = if budget.limit.pico() > 0 {
                    spent.pico() as f64 / budget.limit.pico() as f64
                } else {
                    1.0
                };
                json!({
                    "scope": kind,
                    "id": id,
                    "limit_usd": budget.limit.to_string(),
                    "period": budget.period.as_str(),
                    "period_start": day_string(start.div_euclid(DAY_MS)),
                    "period_end": day_string(end.div_euclid(DAY_MS)),
                    "spent_usd": spent.to_string(),
                    "used": used,
                    "daily": daily.iter().map(|(day, usd)| json!({
                        "day": day_string(*day),
                        "spent_usd": usd.to_string(),
                    })).collect::<Vec<_>>(),
                    "projected_exhaustion": exhaustion.map(day_string),
                })
            })
            .collect();
        Ok(json!({ "object": "list", "data": data }))
    })
    .await
}

/// `GET /ui/api/requests/{id}`: one recorded request and how the current config routes
/// its recorded features, with the reasons.
pub async fn request(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    answer(async {
        let scope = viewer(&state, &headers)?.scope();
        let reader = state.reader.clone().ok_or_else(ledger_in_memory)?;
        let filter = Filter {
            request_id: Some(id.clone()),
            team: scope,
            ..Filter::default()
        };
        let (page, recorded) = blocking(move || {
            Ok::<_, StoreError>((reader.records(&filter, None, 1)?, reader.recorded(&filter)?))
        })
        .await?;
        let (Some(record), Some(features)) = (page.records.first(), recorded.first()) else {
            return Err(ApiError::RequestNotFound { request_id: id });
        };
        let rt = state.runtime();
        let explanation = crate::replay::explain(&rt.config, features).map(|e| {
            let routes = &rt.config.routes;
            let (action, pool) = match &e.decision.action {
                crate::route::Action::Pool(p) => {
                    ("route", routes.pool(*p).map(|p| p.id.clone()))
                }
                crate::route::Action::Reject { .. } => ("reject", None),
            };
            json!({
                "rule": routes.via_id(e.decision.via),
                "action": action,
                "pool": pool,
                "reasons": e.reasons,
                "note": "how the current config routes this request's recorded classification and features (headers are not recorded)",
            })
        });
        Ok(json!({ "record": record, "explanation": explanation }))
    })
    .await
}

/// `POST /ui/api/replay?since=7d` with a candidate `routes.toml` as the body: the
/// recorded traffic routed through it ([`crate::replay`]). Relative paths in it are
/// read from the running config's directory.
pub async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ReplayQuery>, QueryRejection>,
    body: Body,
) -> Response {
    answer(async {
        let scope = viewer(&state, &headers)?.scope();
        let q = q
            .map(|Query(q)| q)
            .map_err(|e| ApiError::bad_request(format!("bad query string: {e}"), None))?;
        let since = q.since.unwrap_or_else(|| "7d".into());
        let from_ms = if since == "all" {
            None
        } else {
            Some(
                crate::ledger::query::since_ms(&since, now_ms()).ok_or_else(|| {
                    ApiError::bad_request(
                        "`since` must look like 7d, 24h, 30m, a date (2026-11-01) or all",
                        Some("since"),
                    )
                })?,
            )
        };
        let rt = state.runtime();
        let bytes = crate::pipeline::read_body(&headers, body, &rt.config.server).await?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| ApiError::bad_request("the candidate config is not UTF-8", None))?
            .to_owned();
        let source = rt.config.source.clone();
        // Keys of the store as well as the config's: the candidate's own override them.
        let key_budgets: std::collections::HashMap<String, BudgetConfig> = state
            .keyring
            .keys()
            .iter()
            .filter_map(|k| Some((k.id.clone(), k.budget?)))
            .collect();
        let reader = state.reader.clone().ok_or_else(ledger_in_memory)?;
        let report = tokio::task::spawn_blocking(move || {
            let candidate =
                crate::config::from_toml_str(&text, &source, &|name| std::env::var(name).ok())
                    .map_err(|e| ApiError::InvalidConfig {
                        message: e.to_string(),
                    })?;
            let filter = Filter {
                from_ms,
                team: scope,
                ..Filter::default()
            };
            let recorded = reader.recorded(&filter).map_err(|e| ApiError::Internal {
                message: e.to_string(),
            })?;
            Ok::<_, ApiError>(crate::replay::Report::with_key_budgets(
                &candidate,
                &key_budgets,
                &recorded,
            ))
        })
        .await
        .map_err(|e| ApiError::Internal {
            message: e.to_string(),
        })??;
        serde_json::to_value(report).map_err(|e| ApiError::Internal {
            message: e.to_string(),
        })
    })
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ReplayQuery {
    since: Option<String>,
}

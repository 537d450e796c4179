//! `GET /v1/spend` and `GET /v1/spend/requests`: spend totals by team, key, model,
//! deployment, rule, domain, tier or day (JSON or CSV), and pages of raw ledger records.
//! The admin key sees everything; a team's virtual key sees only its team.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{blocking, ledger_in_memory};
use crate::error::ApiError;
use crate::ledger::query::{
    Cursor, Filter, Group, GroupBy, SpendRow, StatusClass, day_string, parse_time, to_csv,
};
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct SpendQuery {
    group_by: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    team: Option<String>,
    key: Option<String>,
    limit: Option<u32>,
    before: Option<String>,
    interval: Option<String>,
    tier: Option<String>,
    rule: Option<String>,
    deployment: Option<String>,
    status: Option<String>,
}

/// The team the caller may see, or `None` for everything (admin and console keys).
fn reader_scope(state: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    super::console::viewer(state, headers).map(|v| v.scope())
}

pub(crate) fn filter(q: &SpendQuery, team_scope: Option<String>) -> Result<Filter, ApiError> {
    let time = |value: &Option<String>, param: &'static str| {
        value
            .as_deref()
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    ApiError::bad_request(
                        format!("`{param}` must be YYYY-MM-DD or Unix milliseconds"),
                        Some(param),
                    )
                })
            })
            .transpose()
    };
    let status = q
        .status
        .as_deref()
        .map(|s| {
            StatusClass::parse(s).ok_or_else(|| {
                ApiError::bad_request("`status` must be ok or error", Some("status"))
            })
        })
        .transpose()?;
    Ok(Filter {
        from_ms: time(&q.from, "from")?,
        to_ms: time(&q.to, "to")?,
        // A team's key only ever sees its own team.
        team: team_scope.or_else(|| q.team.clone()),
        key: q.key.clone(),
        tier: q.tier.clone(),
        rule: q.rule.clone(),
        deployment: q.deployment.clone(),
        status,
        request_id: None,
    })
}

pub(crate) fn query(q: Result<Query<SpendQuery>, QueryRejection>) -> Result<SpendQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}"), None))
}

/// `GET /v1/spend?group_by=team&from=2026-11-01&to=2026-12-01[&format=csv]`
pub async fn spend(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<SpendQuery>, QueryRejection>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let q = query(q)?;
        let scope = reader_scope(&state, &headers)?;
        let by_name = q.group_by.clone().unwrap_or_else(|| "team".into());
        let by = GroupBy::parse(&by_name).ok_or_else(|| {
            ApiError::bad_request(
                "`group_by` must be team, key, model, deployment, rule, domain, tier or day",
                Some("group_by"),
            )
        })?;
        let filter = filter(&q, scope)?;
        let reader = state.reader.clone().ok_or_else(ledger_in_memory)?;
        match q.interval.as_deref() {
            None => {}
            Some("day") => {
                let groups = blocking(move || reader.series(by, &filter)).await?;
                return Ok(series_response(&by_name, by, &groups, q.format.as_deref()));
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "`interval` must be day",
                    Some("interval"),
                ));
            }
        }
        let rows = blocking(move || reader.spend(by, &filter)).await?;
        if q.format.as_deref() == Some("csv") {
            return Ok(csv_response(to_csv(&by_name, &rows)));
        }
        Ok(
            axum::Json(json!({ "object": "list", "group_by": by_name, "data": rows }))
                .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Spend by day and group: JSON rows with a `day`, or CSV with a `day` column.
fn series_response(by_name: &str, by: GroupBy, groups: &[Group], format: Option<&str>) -> Response {
    let days: Vec<String> = groups
        .iter()
        .map(|g| g.day.map(day_string).unwrap_or_default())
        .collect();
    let rows: Vec<SpendRow> = groups.iter().map(|g| g.row(by)).collect();
    if format == Some("csv") {
        let table = to_csv(by_name, &rows);
        let mut lines = table.lines();
        let mut out = format!("day,{}\n", lines.next().unwrap_or_default());
        for (day, line) in days.iter().zip(lines) {
            out.push_str(&format!("{day},{line}\n"));
        }
        return csv_response(out);
    }
    let data: Vec<serde_json::Value> = rows
        .iter()
        .zip(&days)
        .map(|(row, day)| {
            let mut value = serde_json::to_value(row).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("day".into(), day.as_str().into());
            }
            value
        })
        .collect();
    axum::Json(json!({ "object": "list", "group_by": by_name, "interval": "day", "data": data }))
        .into_response()
}

/// A CSV body.
pub(crate) fn csv_response(text: String) -> Response {
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    response
}

/// `GET /v1/spend/requests?from=&to=&team=&key=&limit=100&before=CURSOR`: raw records,
/// newest first; `next_before` (`MS:REQUEST_ID`) pages further back, and is null on the
/// last page. `before` also takes plain Unix milliseconds.
pub async fn requests(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<SpendQuery>, QueryRejection>,
) -> Response {
    let result: Result<Response, ApiError> = async {
        let q = query(q)?;
        let scope = reader_scope(&state, &headers)?;
        let filter = filter(&q, scope)?;
        let limit = q.limit.unwrap_or(100).clamp(1, 1000);
        let before = q
            .before
            .as_deref()
            .map(|b| {
                Cursor::parse(b).ok_or_else(|| {
                    ApiError::bad_request(
                        "`before` must be a `next_before` cursor or Unix milliseconds",
                        Some("before"),
                    )
                })
            })
            .transpose()?;
        let reader = state.reader.clone().ok_or_else(ledger_in_memory)?;
        let page = blocking(move || reader.records(&filter, before.as_ref(), limit)).await?;
        Ok(axum::Json(json!({
            "object": "list",
            "data": page.records,
            "next_before": page.next.map(|c| c.to_string()),
        }))
        .into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

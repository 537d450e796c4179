//! `GET /v1/spend` and `GET /v1/spend/requests`: spend totals by team, key, model,
//! deployment, rule, domain, tier or day (JSON or CSV), and pages of raw ledger records.
//! The admin key sees everything; a team's virtual key sees only its team.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::admin::is_admin;
use super::{blocking, ledger_in_memory};
use crate::error::ApiError;
use crate::ledger::query::{Cursor, Filter, GroupBy, parse_time, to_csv};
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
}

/// The team the caller may see, or `None` for the admin (everything).
fn reader_scope(state: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if is_admin(&state.runtime(), presented) {
        return Ok(None);
    }
    match state.keyring.authenticate(presented, true)? {
        Some(key) => key
            .team
            .clone()
            .map(Some)
            .ok_or_else(|| ApiError::Unauthorized {
                message: "this key belongs to no team: spend needs the admin key or a team's key"
                    .into(),
            }),
        None => Err(ApiError::Unauthorized {
            message: "spend needs the admin key or a team's key".into(),
        }),
    }
}

fn filter(q: &SpendQuery, team_scope: Option<String>) -> Result<Filter, ApiError> {
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
    Ok(Filter {
        from_ms: time(&q.from, "from")?,
        to_ms: time(&q.to, "to")?,
        // A team's key only ever sees its own team.
        team: team_scope.or_else(|| q.team.clone()),
        key: q.key.clone(),
    })
}

fn query(q: Result<Query<SpendQuery>, QueryRejection>) -> Result<SpendQuery, ApiError> {
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
        let rows = blocking(move || reader.spend(by, &filter)).await?;
        if q.format.as_deref() == Some("csv") {
            let mut response = to_csv(&by_name, &rows).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            return Ok(response);
        }
        Ok(
            axum::Json(json!({ "object": "list", "group_by": by_name, "data": rows }))
                .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
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

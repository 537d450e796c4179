//! `POST /v1/feedback`: a caller's verdict on a request the gateway served, stored in
//! the ledger for calibration (`crossroads calibrate --target-quality`) and training
//! exports (`crossroads feedback export`).
//!
//! Authenticated as chat requests are. A key rates its own team's requests (a key of no
//! team, its own requests), the admin key any request, and an anonymous caller (where
//! keys are optional) only anonymous requests. Another team's request answers the same
//! 404 as an unknown id.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::admin::is_admin;
use super::{blocking, ledger_in_memory};
use crate::auth::KeyInfo;
use crate::error::ApiError;
use crate::ledger::LedgerReader;
use crate::ledger::feedback::{Feedback, Owner, Thumbs};
use crate::pipeline::read_body;
use crate::state::AppState;

/// Longest accepted `request_id`, `label` and `comment`, in characters.
const MAX_REQUEST_ID: usize = 128;
const MAX_LABEL: usize = 64;
const MAX_COMMENT: usize = 2_000;

/// How long an unknown id waits for the ledger writer's queue to drain before the 404:
/// a record reaches the ledger a few ms after its answer reaches the client.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// A checked feedback body.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackBody {
    pub request_id: String,
    pub score: f64,
    pub thumbs: Option<Thumbs>,
    pub label: Option<String>,
    pub comment: Option<String>,
}

/// Parses and checks a feedback body: `request_id`, exactly one of `score` (0 to 1) and
/// `thumbs` (`up` or `down`), and optional `label` and `comment`. A null field is absent;
/// an unknown one is refused, so a misspelt `scroe` is not silently dropped.
pub fn parse(bytes: &[u8]) -> Result<FeedbackBody, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"), None))?;
    let Value::Object(mut body) = value else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object with `request_id` and `score` or `thumbs`",
            None,
        ));
    };
    let request_id = text(&mut body, "request_id", MAX_REQUEST_ID)?.ok_or_else(|| {
        ApiError::bad_request(
            "`request_id` is required: the x-crossroads-request-id of the response rated",
            Some("request_id"),
        )
    })?;
    let score = match body.remove("score") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(s) if (0.0..=1.0).contains(&s) => Some(s),
            _ => {
                return Err(ApiError::bad_request(
                    format!("`score` must be a number from 0 to 1, not {v}"),
                    Some("score"),
                ));
            }
        },
    };
    let thumbs = match text(&mut body, "thumbs", 8)? {
        None => None,
        Some(t) => Some(Thumbs::parse(&t).ok_or_else(|| {
            ApiError::bad_request(
                format!("`thumbs` must be \"up\" or \"down\", not \"{t}\""),
                Some("thumbs"),
            )
        })?),
    };
    let score = match (score, thumbs) {
        (Some(s), None) => s,
        (None, Some(t)) => t.score(),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either `score` or `thumbs`, not both",
                Some("score"),
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "give `score` (a number from 0 to 1) or `thumbs` (\"up\" or \"down\")",
                Some("score"),
            ));
        }
    };
    let label = text(&mut body, "label", MAX_LABEL)?;
    let comment = text(&mut body, "comment", MAX_COMMENT)?;
    if let Some(unknown) = body.keys().next() {
        return Err(ApiError::bad_request(
            format!(
                "unknown field `{unknown}`; feedback has request_id, score, thumbs, label and comment"
            ),
            None,
        ));
    }
    Ok(FeedbackBody {
        request_id,
        score,
        thumbs,
        label,
        comment,
    })
}

/// Takes an optional string field of at most `max` characters; an empty one is refused.
fn text(
    body: &mut Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match body.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= max => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_request(
            format!("`{field}` must be a non-empty string of at most {max} characters"),
            Some(field),
        )),
    }
}

/// Who is giving feedback.
enum Caller {
    Admin,
    Key(Arc<KeyInfo>),
    Anonymous,
}

impl Caller {
    /// Whether this caller may rate a request made by `owner`.
    fn may_rate(&self, owner: &Owner) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Key(key) => match &key.team {
                Some(team) => owner.team.as_ref() == Some(team),
                None => owner.key_id.as_ref() == Some(&key.id),
            },
            Caller::Anonymous => owner.key_id.is_none() && owner.team.is_none(),
        }
    }
}

/// Why a call did not store feedback: the metrics label and the answer.
type Refusal = (&'static str, ApiError);

fn refused(e: ApiError) -> Refusal {
    (e.kind(), e)
}

/// `POST /v1/feedback` with `{"request_id", "score" | "thumbs", "label"?, "comment"?}`:
/// 200 with the stored record.
pub async fn feedback(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let outcome = store(&state, &headers, body).await;
    let label = match &outcome {
        Ok(_) => "stored",
        Err((label, _)) => label,
    };
    state.metrics.feedback.with_label_values(&[label]).inc();
    match outcome {
        Ok(stored) => axum::Json(stored).into_response(),
        Err((_, e)) => e.into_response(),
    }
}

async fn store(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Feedback, Refusal> {
    let rt = state.runtime();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = if is_admin(&rt, authorization) {
        Caller::Admin
    } else {
        match state
            .keyring
            .authenticate(authorization, rt.config.auth.required)
            .map_err(refused)?
        {
            Some(key) => Caller::Key(key),
            None => Caller::Anonymous,
        }
    };
    let bytes = read_body(headers, body, &rt.config.server)
        .await
        .map_err(refused)?;
    let input = parse(&bytes).map_err(refused)?;
    let reader = state
        .reader
        .clone()
        .ok_or_else(ledger_in_memory)
        .map_err(refused)?;
    let owner = match owner_of(&reader, &input.request_id).await? {
        Some(owner) => Some(owner),
        None => {
            // Perhaps answered a moment ago and still in the writer's queue.
            let _ = tokio::time::timeout(FLUSH_WAIT, state.ledger.flush()).await;
            owner_of(&reader, &input.request_id).await?
        }
    };
    let not_found = || ApiError::RequestNotFound {
        request_id: input.request_id.clone(),
    };
    let Some(owner) = owner else {
        return Err(("unknown_request", not_found()));
    };
    if !caller.may_rate(&owner) {
        return Err(("other_team", not_found()));
    }
    let (key_id, team) = match &caller {
        Caller::Key(key) => (Some(key.id.clone()), key.team.clone()),
        Caller::Admin | Caller::Anonymous => (None, None),
    };
    let record = Feedback {
        request_id: input.request_id,
        ts_ms: crate::admission::now_ms(),
        key_id,
        team,
        score: input.score,
        thumbs: input.thumbs,
        label: input.label,
        comment: input.comment,
    };
    blocking(move || reader.add_feedback(record))
        .await
        .map_err(refused)
}

async fn owner_of(reader: &Arc<LedgerReader>, id: &str) -> Result<Option<Owner>, Refusal> {
    let (reader, id) = (reader.clone(), id.to_owned());
    blocking(move || reader.owner(&id)).await.map_err(refused)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn error(body: &str) -> (Option<&'static str>, String) {
        match parse(body.as_bytes()) {
            Err(ApiError::BadRequest { message, param }) => (param, message),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn takes_a_score_or_thumbs() {
        let scored = parse(br#"{"request_id": "req_1", "score": 0.75, "label": "math"}"#).unwrap();
        assert_eq!((scored.score, scored.thumbs), (0.75, None));
        assert_eq!(scored.label.as_deref(), Some("math"));
        let down = parse(br#"{"request_id": "req_1", "thumbs": "down", "score": null}"#).unwrap();
        assert_eq!((down.score, down.thumbs), (0.0, Some(Thumbs::Down)));
        let up = parse(br#"{"request_id": "req_1", "thumbs": "up", "comment": "great"}"#).unwrap();
        assert_eq!(up.score, 1.0);
        assert_eq!(
            parse(br#"{"request_id": "r", "score": 1}"#).unwrap().score,
            1.0
        );
    }

    #[test]
    fn refuses_bad_bodies_naming_the_field() {
        assert_eq!(error(r#"{"score": 1}"#).0, Some("request_id"));
        assert_eq!(
            error(r#"{"request_id": "", "score": 1}"#).0,
            Some("request_id")
        );
        assert_eq!(
            error(r#"{"request_id": 7, "score": 1}"#).0,
            Some("request_id")
        );
        assert_eq!(
            error(r#"{"request_id": "r", "score": 1.5}"#).0,
            Some("score")
        );
        assert_eq!(
            error(r#"{"request_id": "r", "score": -0.1}"#).0,
            Some("score")
        );
        assert_eq!(
            error(r#"{"request_id": "r", "score": "high"}"#).0,
            Some("score")
        );
        assert_eq!(
            error(r#"{"request_id": "r", "thumbs": "sideways"}"#).0,
            Some("thumbs")
        );
        let (param, message) = error(r#"{"request_id": "r", "score": 1, "thumbs": "up"}"#);
        assert_eq!(param, Some("score"));
        assert!(message.contains("not both"), "{message}");
        let (_, message) = error(r#"{"request_id": "r"}"#);
        assert!(message.contains("`score`") && message.contains("`thumbs`"));
        let (param, message) = error(r#"{"request_id": "r", "scroe": 1}"#);
        assert_eq!(param, Some("score"), "the missing score is named first");
        assert!(message.contains("give"), "{message}");
        let (_, message) = error(r#"{"request_id": "r", "score": 1, "scroe": 1}"#);
        assert!(message.contains("`scroe`"), "{message}");
        let long = "x".repeat(MAX_LABEL + 1);
        let body = format!(r#"{{"request_id": "r", "score": 1, "label": "{long}"}}"#);
        assert_eq!(error(&body).0, Some("label"));
        assert_eq!(error("[1, 2]").0, None);
        assert_eq!(error("{not json").0, None);
    }
}

//! `POST /v1/chat/completions`: the common request is this API's own body, so parsing
//! is the check and rendering passes the answer through.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::error::ApiError;
use crate::pipeline::{self, FrontEnd};
use crate::request::Request;
use crate::state::AppState;

/// OpenAI's Chat Completions API.
pub struct Chat;

impl FrontEnd for Chat {
    const ENDPOINT: &'static str = "chat.completions";

    fn parse(body: &[u8]) -> Result<(Self, Request), ApiError> {
        Request::parse(body).map(|request| (Chat, request))
    }
}

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pipeline::serve::<Chat>(state, headers, body).await
}

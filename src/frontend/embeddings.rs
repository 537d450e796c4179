//! `POST /v1/embeddings`: OpenAI's Embeddings API. The body is checked and passed
//! through with the model swapped; the answer is the upstream's list of vectors. It
//! runs every stage chat does, except that an alias, not a rule, picks the pool
//! ([`crate::route::Api`]) and nothing is generated or streamed.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::error::ApiError;
use crate::pipeline::{self, FrontEnd};
use crate::request::Request;
use crate::state::AppState;

/// OpenAI's Embeddings API.
pub struct Embeddings;

impl FrontEnd for Embeddings {
    const ENDPOINT: &'static str = "embeddings";

    fn parse(body: &[u8]) -> Result<(Self, Request), ApiError> {
        Request::embeddings(body).map(|request| (Embeddings, request))
    }
}

pub async fn embeddings(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    pipeline::serve::<Embeddings>(state, headers, body).await
}

//! What an inbound API adds to the pipeline: its wire format, and nothing else. A
//! front-end parses its request body into the common [`Request`] and renders the
//! common result (a chat.completion body, or its chat.completion.chunk SSE stream) back
//! into its own shape; every stage between is the pipeline's.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;

use crate::accounting::Usage;
use crate::error::ApiError;
use crate::request::Request;

/// An inbound API. The value a front-end's [`FrontEnd::parse`] returns beside the
/// request carries what its rendering needs to know of the original body.
pub trait FrontEnd: Sized + Send + 'static {
    /// The endpoint as the ledger records it.
    const ENDPOINT: &'static str;

    /// The caller's API key as this API's clients send it; by default
    /// `Authorization: Bearer <key>`.
    fn credential(headers: &HeaderMap) -> Option<&str> {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::auth::bearer)
    }

    /// Parses and checks a body into the common request, or the 400 that names what is
    /// wrong.
    fn parse(body: &[u8]) -> Result<(Self, Request), ApiError>;

    /// An error in this API's shape; by default OpenAI's.
    fn error(error: ApiError) -> Response {
        error.into_response()
    }

    /// A whole answer: `chat` is a chat.completion body, `usage` what it was priced at.
    fn json(self, chat: Bytes, _usage: &Usage) -> Bytes {
        chat
    }

    /// A streamed answer: `chat` yields chat.completion.chunk SSE events, ending with
    /// `[DONE]`, or with one OpenAI error event and `[DONE]` when the stream broke.
    fn stream<S>(self, chat: S) -> Body
    where
        S: Stream<Item = Result<Bytes, Infallible>> + Send + Unpin + 'static,
    {
        Body::from_stream(chat)
    }
}

//! OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, Ollama, TGI): the request is
//! already in their wire format, so this adapter only does HTTP, timeouts and errors.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::{FailureKind, Reply, UpstreamError};
use crate::accounting::Usage;
use crate::accounting::usage::{GeneratedText, OpenAiUsage};
use crate::config::{Deployment, ProviderKind};

/// Longest upstream error body read for its message.
const MAX_ERROR_BODY: usize = 16 * 1024;

pub struct OpenAiUpstream {
    id: String,
    client: reqwest::Client,
    url: String,
    first_byte_timeout: Duration,
    idle_timeout: Duration,
    missing_key: bool,
}

impl OpenAiUpstream {
    pub fn new(deployment: &Deployment) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(key) = &deployment.api_key {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    format!(
                        "deployment `{}`: API key is not a valid header value",
                        deployment.id
                    )
                })?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(deployment.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("deployment `{}`: HTTP client: {e}", deployment.id))?;
        // The official API always needs a key; self-hosted servers often do not.
        let missing_key =
            deployment.provider == ProviderKind::Openai && deployment.api_key.is_none();
        Ok(OpenAiUpstream {
            id: deployment.id.clone(),
            client,
            url: format!("{}/chat/completions", deployment.base_url),
            first_byte_timeout: deployment.first_byte_timeout,
            idle_timeout: deployment.idle_timeout,
            missing_key,
        })
    }

    pub async fn send(&self, body: Vec<u8>, stream: bool) -> Result<Reply, UpstreamError> {
        if self.missing_key {
            return Err(UpstreamError::new(
                FailureKind::MissingKey,
                format!("deployment `{}` has no API key configured", self.id),
            ));
        }
        let attempt = async {
            let response = self
                .client
                .post(&self.url)
                .body(body)
                .send()
                .await
                .map_err(|e| self.transport_error(&e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(self.status_error(response).await);
            }
            if stream {
                self.first_chunk(response).await
            } else {
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| self.transport_error(&e))?;
                let (usage, output_chars) = parse_reply(&body).map_err(|e| {
                    UpstreamError::new(
                        FailureKind::Protocol,
                        format!(
                            "deployment `{}` returned a body that is not a chat completion: {e}",
                            self.id
                        ),
                    )
                })?;
                Ok(Reply::Complete {
                    body,
                    usage,
                    output_chars,
                })
            }
        };
        tokio::time::timeout(self.first_byte_timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::new(
                    FailureKind::Timeout,
                    format!(
                        "deployment `{}` did not answer within {} ms",
                        self.id,
                        self.first_byte_timeout.as_millis()
                    ),
                ))
            })
    }

    /// Waits for the first body bytes, so a stream that dies before saying anything can
    /// still fall back to another deployment.
    async fn first_chunk(&self, response: reqwest::Response) -> Result<Reply, UpstreamError> {
        let id = self.id.clone();
        let idle = self.idle_timeout;
        let mut body = response.bytes_stream();
        loop {
            match body.next().await {
                Some(Ok(first)) if first.is_empty() => continue,
                Some(Ok(first)) => {
                    let rest = idle_limited(body, idle, id);
                    return Ok(Reply::Stream { first, rest });
                }
                Some(Err(e)) => return Err(self.transport_error(&e)),
                None => {
                    return Err(UpstreamError::new(
                        FailureKind::Protocol,
                        format!(
                            "deployment `{}` closed the stream before sending anything",
                            self.id
                        ),
                    ));
                }
            }
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> UpstreamError {
        // reqwest's messages include the URL: describe the failure ourselves.
        if e.is_timeout() {
            UpstreamError::new(
                FailureKind::Timeout,
                format!("deployment `{}` timed out", self.id),
            )
        } else if e.is_connect() {
            UpstreamError::new(
                FailureKind::Connect,
                format!("could not connect to deployment `{}`", self.id),
            )
        } else {
            UpstreamError::new(
                FailureKind::Connect,
                format!("connection to deployment `{}` failed", self.id),
            )
        }
    }

    async fn status_error(&self, response: reqwest::Response) -> UpstreamError {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_limited(response, MAX_ERROR_BODY).await;
        let upstream_message = error_message(&body);
        let kind = match status {
            429 => FailureKind::RateLimited,
            401 | 403 | 404 => FailureKind::Misconfigured,
            500..=599 => FailureKind::Server,
            _ => FailureKind::Rejected,
        };
        let message = match (kind, upstream_message) {
            // The client's own mistake: pass the upstream's explanation on.
            (FailureKind::Rejected, Some(m)) => m,
            // Otherwise the upstream's message may mention keys or accounts: keep it out.
            _ => format!("deployment `{}` answered HTTP {status}", self.id),
        };
        UpstreamError {
            kind,
            status: Some(status),
            message,
            retry_after,
        }
    }
}

/// Reads at most `limit` bytes of a body, ignoring errors.
async fn read_limited(response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]);
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// `error.message` of an OpenAI-shaped error body.
fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    serde_json::from_slice::<Body>(body)
        .ok()
        .map(|b| b.error.message)
}

/// The `usage` of a chat.completion body and the characters it generated; errors when
/// the body is not a JSON object.
fn parse_reply(body: &[u8]) -> Result<(Option<Usage>, usize), serde_json::Error> {
    #[derive(Deserialize)]
    struct Peek<'a> {
        #[serde(default)]
        usage: Option<OpenAiUsage>,
        #[serde(default, borrow)]
        choices: Vec<Choice<'a>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(default, borrow)]
        message: Option<GeneratedText<'a>>,
    }
    let peek: Peek = serde_json::from_slice(body)?;
    let chars = peek
        .choices
        .iter()
        .filter_map(|c| c.message.as_ref())
        .map(GeneratedText::chars)
        .sum();
    Ok((peek.usage.map(Into::into), chars))
}

/// Ends the stream with a timeout error when the upstream goes silent for `idle`.
fn idle_limited(
    body: impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle: Duration,
    id: String,
) -> super::ByteStream {
    let stream = futures_util::stream::unfold((Box::pin(body), false), move |(mut body, done)| {
        let id = id.clone();
        async move {
            if done {
                return None;
            }
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(bytes))) => Some((Ok(bytes), (body, false))),
                Ok(Some(Err(_))) => Some((
                    Err(UpstreamError::new(
                        FailureKind::Connect,
                        format!("deployment `{id}` broke the stream"),
                    )),
                    (body, true),
                )),
                Ok(None) => None,
                Err(_) => Some((
                    Err(UpstreamError::new(
                        FailureKind::Timeout,
                        format!("deployment `{id}` went silent for {} ms", idle.as_millis()),
                    )),
                    (body, true),
                )),
            }
        }
    });
    Box::pin(stream)
}

//! HTTP shared by every adapter: one client per deployment, timeouts, the first-bytes
//! wait that lets streams fall back, idle limits, and upstream errors classified into
//! [`FailureKind`]s with messages that never carry URLs or keys.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::Deserialize;

use super::{ByteStream, FailureKind, UpstreamError};
use crate::config::Deployment;

/// Longest upstream error body read for its message.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// A deployment's HTTP client and endpoint.
pub struct Http {
    pub id: String,
    client: reqwest::Client,
    /// Parsed once: parsing it per request (IDNA host mapping included) was about a
    /// tenth of the gateway's instructions per request.
    url: reqwest::Url,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    /// The deployment needs a key and has none: fail fast, do not call.
    missing_key: bool,
}

/// Why a deployment's client could not be built (a config the validation let through).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("deployment `{deployment}`: HTTP client: {source}")]
    Client {
        deployment: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("deployment `{deployment}`: base_url: {source}")]
    BaseUrl {
        deployment: String,
        #[source]
        source: url::ParseError,
    },
    #[error("deployment `{deployment}`: {what} is not a valid header value")]
    Header {
        deployment: String,
        what: &'static str,
    },
}

impl ClientError {
    pub fn header(deployment: &Deployment, what: &'static str) -> Self {
        ClientError::Header {
            deployment: deployment.id.clone(),
            what,
        }
    }
}

impl Http {
    /// A client for `deployment` posting to `{base_url}{path}` with `headers` on every
    /// request (auth, versions). `key_required` fails attempts fast when no key is set.
    pub fn new(
        deployment: &Deployment,
        path: &str,
        mut headers: HeaderMap,
        key_required: bool,
    ) -> Result<Self, ClientError> {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(deployment.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .map_err(|source| ClientError::Client {
                deployment: deployment.id.clone(),
                source,
            })?;
        let url =
            reqwest::Url::parse(&format!("{}{path}", deployment.base_url)).map_err(|source| {
                ClientError::BaseUrl {
                    deployment: deployment.id.clone(),
                    source,
                }
            })?;
        Ok(Http {
            id: deployment.id.clone(),
            client,
            url,
            first_byte_timeout: deployment.first_byte_timeout,
            idle_timeout: deployment.idle_timeout,
            missing_key: key_required && deployment.api_key.is_none(),
        })
    }

    /// A sensitive header value holding a secret.
    pub fn secret_header(
        deployment: &Deployment,
        value: String,
    ) -> Result<HeaderValue, ClientError> {
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| ClientError::header(deployment, "API key"))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// POSTs `body`; a non-2xx answer becomes a classified error.
    pub async fn post(&self, body: Vec<u8>) -> Result<reqwest::Response, UpstreamError> {
        if self.missing_key {
            return Err(UpstreamError::new(
                FailureKind::MissingKey,
                format!("deployment `{}` has no API key configured", self.id),
            ));
        }
        let response = self
            .client
            .post(self.url.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.status_error(response).await)
        }
    }

    /// Runs `attempt` under the first-byte timeout.
    pub async fn within_first_byte_timeout<T>(
        &self,
        attempt: impl Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
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

    /// The whole body of a successful response.
    pub async fn body(&self, response: reqwest::Response) -> Result<Bytes, UpstreamError> {
        response.bytes().await.map_err(|e| self.transport_error(&e))
    }

    /// The response body as a stream that ends with an error when the upstream goes
    /// silent for the idle timeout or breaks the connection.
    /// The event stream of a successful response. A `Content-Type` other than
    /// `text/event-stream` (a JSON or HTML page from the upstream or a proxy in front
    /// of it) is a protocol error here, before any byte reaches the client, so the
    /// request can still fall back.
    pub fn stream(&self, response: reqwest::Response) -> Result<ByteStream, UpstreamError> {
        let content_type = response.headers().get(header::CONTENT_TYPE);
        if let Some(value) = content_type
            && !value
                .to_str()
                .is_ok_and(|v| v.trim_start().starts_with("text/event-stream"))
        {
            return Err(self.protocol_error(format_args!(
                "answered a stream request with content type {value:?}"
            )));
        }
        Ok(idle_limited(
            response.bytes_stream(),
            self.idle_timeout,
            self.id.clone(),
        ))
    }

    /// A protocol violation by this deployment.
    pub fn protocol_error(&self, what: impl std::fmt::Display) -> UpstreamError {
        UpstreamError::new(
            FailureKind::Protocol,
            format!("deployment `{}` {what}", self.id),
        )
    }

    fn transport_error(&self, e: &reqwest::Error) -> UpstreamError {
        // reqwest's messages include the URL: describe the failure ourselves.
        let (kind, what) = if e.is_timeout() {
            (FailureKind::Timeout, "timed out")
        } else if e.is_connect() {
            (FailureKind::Connect, "refused the connection")
        } else {
            (FailureKind::Connect, "broke the connection")
        };
        UpstreamError::new(kind, format!("deployment `{}` {what}", self.id))
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
        let kind = match status {
            429 => FailureKind::RateLimited,
            401 | 403 | 404 => FailureKind::Misconfigured,
            // 529 is Anthropic's "overloaded": retryable like any 5xx.
            500..=599 => FailureKind::Server,
            _ => FailureKind::Rejected,
        };
        let message = match (kind, error_message(&body)) {
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

/// Waits for the first non-empty item, so a stream that dies before saying anything
/// can still fall back to another deployment.
pub async fn first_bytes(
    http: &Http,
    mut stream: ByteStream,
) -> Result<(Bytes, ByteStream), UpstreamError> {
    loop {
        match stream.next().await {
            Some(Ok(first)) if first.is_empty() => continue,
            Some(Ok(first)) => return Ok((first, stream)),
            Some(Err(e)) => return Err(e),
            None => return Err(http.protocol_error("closed the stream before sending anything")),
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

/// `error.message` of an error body, in the OpenAI or the Anthropic shape.
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

/// Ends the stream with an error when the upstream goes silent for `idle`.
fn idle_limited(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    idle: Duration,
    id: String,
) -> ByteStream {
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

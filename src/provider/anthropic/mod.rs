//! Anthropic Messages API deployments, spoken to in Anthropic's wire format while
//! clients keep the OpenAI chat-completions API: requests, responses, event streams,
//! usage (cache reads and writes priced apart) and errors are translated here.

mod request;
mod response;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::http::{ClientError, Http, first_bytes};
use super::{ByteStream, FailureKind, Reply, UpstreamError};
use crate::config::Deployment;
use crate::request::Request;

pub use request::translate;
pub use response::{AnthropicUsage, StreamTranslator, completion};

/// The API version sent when the deployment names none.
pub const DEFAULT_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by Anthropic: sent when neither the request nor the
/// deployment gives one (validation gives every Anthropic deployment one).
const DEFAULT_MAX_TOKENS: u64 = 4096;

pub struct AnthropicUpstream {
    http: Http,
    model: String,
    default_max_tokens: u64,
}

impl AnthropicUpstream {
    pub fn new(deployment: &Deployment) -> Result<Self, ClientError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &deployment.api_key {
            headers.insert(
                HeaderName::from_static("x-api-key"),
                Http::secret_header(deployment, key.expose().to_owned())?,
            );
        }
        let version = deployment.api_version.as_deref().unwrap_or(DEFAULT_VERSION);
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_str(version)
                .map_err(|_| ClientError::header(deployment, "api_version"))?,
        );
        Ok(AnthropicUpstream {
            http: Http::new(deployment, "/messages", headers, true)?,
            model: deployment.model.clone(),
            default_max_tokens: deployment.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        })
    }

    pub async fn send(
        &self,
        request: &Request,
        max_tokens: Option<u64>,
    ) -> Result<Reply, UpstreamError> {
        let body = request::translate(
            request,
            &self.model,
            max_tokens.unwrap_or(self.default_max_tokens),
        )
        .map_err(|e| UpstreamError::new(FailureKind::Rejected, e.to_string()))?;
        self.http
            .within_first_byte_timeout(async {
                let response = self.http.post(body).await?;
                if request.stream {
                    let translated = translate_stream(self.http.stream(response)?);
                    let (first, rest) = first_bytes(&self.http, translated).await?;
                    return Ok(Reply::Stream { first, rest });
                }
                let body = self.http.body(response).await?;
                let (body, usage) = response::completion(&body).map_err(|e| {
                    self.http.protocol_error(format_args!(
                        "returned a body that is not a Messages response: {e}"
                    ))
                })?;
                Ok(Reply::Complete {
                    body,
                    usage: Some(usage),
                })
            })
            .await
    }
}

/// The upstream's event stream as OpenAI chunk events. A stream that ends before
/// `message_stop` ends with an error, so the gateway reports the truncation.
fn translate_stream(raw: ByteStream) -> ByteStream {
    let stream = futures_util::stream::unfold(
        (raw, StreamTranslator::default(), false),
        |(mut raw, mut translator, done)| async move {
            if done {
                return None;
            }
            match raw.next().await {
                Some(Ok(bytes)) => match translator.feed(&bytes) {
                    Ok(out) => Some((Ok(out), (raw, translator, false))),
                    Err(e) => Some((Err(e), (raw, translator, true))),
                },
                Some(Err(e)) => Some((Err(e), (raw, translator, true))),
                None if translator.finished() => None,
                None => Some((
                    Err(UpstreamError::new(
                        FailureKind::Protocol,
                        "the Anthropic stream ended before message_stop",
                    )),
                    (raw, translator, true),
                )),
            }
        },
    );
    Box::pin(stream)
}

#[cfg(test)]
mod tests;

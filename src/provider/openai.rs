//! OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, Ollama, TGI): the request is
//! already in their wire format, so this adapter only swaps the model and reads usage.
//! A deployment serves chat completions or embeddings (`api`), each at its own path.

use reqwest::header::{self, HeaderMap};
use serde::Deserialize;

use super::http::{ClientError, Http, first_bytes};
use super::{Reply, UpstreamError};
use crate::accounting::Usage;
use crate::accounting::usage::OpenAiUsage;
use crate::config::{Deployment, ProviderKind};
use crate::request::Request;
use crate::route::Api;

pub struct OpenAiUpstream {
    http: Http,
    model: String,
    default_max_tokens: Option<u64>,
}

impl OpenAiUpstream {
    pub fn new(deployment: &Deployment) -> Result<Self, ClientError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &deployment.api_key {
            headers.insert(
                header::AUTHORIZATION,
                Http::secret_header(deployment, format!("Bearer {}", key.expose()))?,
            );
        }
        // The official API always needs a key; self-hosted servers often do not.
        let key_required = deployment.provider == ProviderKind::Openai;
        let path = match deployment.api {
            Api::Chat => "/chat/completions",
            Api::Embeddings => "/embeddings",
        };
        Ok(OpenAiUpstream {
            http: Http::new(deployment, path, headers, key_required)?,
            model: deployment.model.clone(),
            default_max_tokens: deployment.default_max_tokens,
        })
    }

    pub async fn send(
        &self,
        request: &Request,
        max_tokens: Option<u64>,
    ) -> Result<Reply, UpstreamError> {
        let body = request.upstream_body(&self.model, max_tokens.or(self.default_max_tokens));
        self.http
            .within_first_byte_timeout(async {
                let response = self.http.post(body).await?;
                if request.stream {
                    let (first, rest) =
                        first_bytes(&self.http, self.http.stream(response)?).await?;
                    return Ok(Reply::Stream { first, rest });
                }
                let body = self.http.body(response).await?;
                let (usage, what) = match request.api {
                    Api::Chat => (parse_reply(&body), "a chat completion"),
                    Api::Embeddings => (parse_embeddings(&body), "an embedding list"),
                };
                let usage = usage.map_err(|e| {
                    self.http
                        .protocol_error(format_args!("returned a body that is not {what}: {e}"))
                })?;
                Ok(Reply::Complete { body, usage })
            })
            .await
    }
}

/// The `usage` of a chat.completion body; errors when the body is not a JSON object.
fn parse_reply(body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        usage: Option<OpenAiUsage>,
        /// Checked to be an array; read again only when usage must be counted.
        #[serde(default)]
        #[allow(dead_code)]
        choices: Vec<serde::de::IgnoredAny>,
    }
    let peek: Peek = serde_json::from_slice(body)?;
    Ok(peek.usage.map(Into::into))
}

/// The `usage` of an embeddings list (`prompt_tokens`, `total_tokens`); errors when the
/// body is not an object with a `data` array.
fn parse_embeddings(body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        usage: Option<OpenAiUsage>,
        #[allow(dead_code)]
        data: Vec<serde::de::IgnoredAny>,
    }
    let peek: Peek = serde_json::from_slice(body)?;
    Ok(peek.usage.map(Into::into))
}

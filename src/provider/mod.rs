//! Providers: wire formats and HTTP to upstream model servers. They know nothing of
//! rules, budgets or the ledger; they return normalized OpenAI-shaped replies and usage.

pub mod anthropic;
pub mod http;
pub mod openai;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::accounting::Usage;
use crate::config::{Deployment, ProviderKind};
use crate::request::Request;
pub use http::ClientError;

/// A stream of OpenAI chat.completion.chunk SSE bytes (`data: {...}\n\n` events).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

/// A successful upstream answer, normalized to the OpenAI wire format.
pub enum Reply {
    /// A whole chat.completion JSON body, and its usage when the upstream reported it.
    Complete { body: Bytes, usage: Option<Usage> },
    /// A stream whose first bytes have already arrived.
    Stream { first: Bytes, rest: ByteStream },
}

/// Why an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection could be made.
    Connect,
    /// No answer within the deployment's timeout.
    Timeout,
    /// 429 from the upstream.
    RateLimited,
    /// 5xx from the upstream.
    Server,
    /// 401/403/404: the deployment is misconfigured (key, model name, URL).
    Misconfigured,
    /// The upstream refused the request itself (400, 413, 422 ...): the client's to fix.
    Rejected,
    /// A reply that is not what the protocol promises.
    Protocol,
    /// The deployment's API key variable is not set.
    MissingKey,
}

impl FailureKind {
    /// Low-cardinality name for metrics and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Server => "server_error",
            FailureKind::Misconfigured => "misconfigured",
            FailureKind::Rejected => "rejected",
            FailureKind::Protocol => "protocol",
            FailureKind::MissingKey => "missing_key",
        }
    }

    /// Whether another deployment may succeed where this one failed.
    pub fn retryable(self) -> bool {
        !matches!(self, FailureKind::Rejected)
    }
}

/// A failed upstream attempt. The message is safe to show clients: it never holds
/// URLs or keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub kind: FailureKind,
    pub status: Option<u16>,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl UpstreamError {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        UpstreamError {
            kind,
            status: None,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A deployment's adapter: its HTTP client and wire format.
pub struct Upstream {
    adapter: Adapter,
}

enum Adapter {
    OpenAi(openai::OpenAiUpstream),
    Anthropic(anthropic::AnthropicUpstream),
}

impl Upstream {
    /// Builds the client for `deployment`.
    pub fn new(deployment: &Deployment) -> Result<Self, ClientError> {
        let adapter = match deployment.provider {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => {
                Adapter::OpenAi(openai::OpenAiUpstream::new(deployment)?)
            }
            ProviderKind::Anthropic => {
                Adapter::Anthropic(anthropic::AnthropicUpstream::new(deployment)?)
            }
        };
        Ok(Upstream { adapter })
    }

    /// Sends the request in this deployment's wire format, generating at most
    /// `max_tokens` per choice (the request's resolved [`crate::request::Limits`]; the
    /// deployment's `default_max_tokens` when `None`); streams return once their first
    /// bytes arrived.
    pub async fn send(
        &self,
        request: &Request,
        max_tokens: Option<u64>,
    ) -> Result<Reply, UpstreamError> {
        match &self.adapter {
            Adapter::OpenAi(a) => a.send(request, max_tokens).await,
            Adapter::Anthropic(a) => a.send(request, max_tokens).await,
        }
    }
}

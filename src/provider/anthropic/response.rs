//! Anthropic Messages responses and event streams → OpenAI chat completions and
//! chat.completion.chunk events, with usage kept exact by token kind.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounting::Usage;
use crate::provider::{FailureKind, UpstreamError};
use crate::sse;

/// Anthropic's usage: `input_tokens` excludes cache reads and writes.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    pub fn usage(&self) -> Usage {
        Usage {
            input: self.input_tokens,
            cached_input: self.cache_read_input_tokens.unwrap_or(0),
            cache_write: self.cache_creation_input_tokens.unwrap_or(0),
            output: self.output_tokens,
            reasoning: 0,
            estimated: false,
        }
    }

    /// The OpenAI `usage` object: prompt tokens include cached ones, as OpenAI counts
    /// them; `cache_write_tokens` lets the gateway price cache writes apart.
    fn openai(&self) -> Value {
        let u = self.usage();
        let prompt = u.total_input();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": u.output,
            "total_tokens": prompt.saturating_add(u.output),
            "prompt_tokens_details": {
                "cached_tokens": u.cached_input,
                "cache_write_tokens": u.cache_write,
            },
        })
    }
}

/// OpenAI `finish_reason` for an Anthropic `stop_reason`.
fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: AnthropicUsage,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

/// A whole Messages response as a chat.completion body, its usage and generated chars.
pub fn completion(body: &[u8]) -> Result<(Bytes, Usage), serde_json::Error> {
    let message: Message = serde_json::from_slice(body)?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in &message.content {
        match block.kind.as_str() {
            "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
            "tool_use" => tool_calls.push(json!({
                "id": block.id,
                "type": "function",
                "function": {
                    "name": block.name,
                    "arguments": block.input.as_ref().map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            _ => {}
        }
    }
    let mut reply = json!({ "role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) } });
    if !tool_calls.is_empty() {
        reply["tool_calls"] = Value::Array(tool_calls);
    }
    let out = json!({
        "id": format!("chatcmpl-{}", message.id),
        "object": "chat.completion",
        "created": now(),
        "model": message.model,
        "choices": [{
            "index": 0,
            "message": reply,
            "finish_reason": finish_reason(message.stop_reason.as_deref().unwrap_or("end_turn")),
        }],
        "usage": message.usage.openai(),
    });
    Ok((Bytes::from(out.to_string()), message.usage.usage()))
}

/// Translates an Anthropic event stream into OpenAI chunk events, event by event.
#[derive(Default)]
pub struct StreamTranslator {
    buffer: BytesMut,
    id: String,
    model: String,
    created: u64,
    usage: AnthropicUsage,
    /// OpenAI tool-call index of each Anthropic content block that is a tool use.
    tool_blocks: Vec<(u64, u32)>,
    finished: bool,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    content_block: Option<Block>,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(default)]
    error: Option<Value>,
}

impl StreamTranslator {
    /// Feeds raw bytes; returns the OpenAI SSE bytes for every complete event.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Bytes, UpstreamError> {
        self.buffer.extend_from_slice(bytes);
        let mut out = BytesMut::new();
        while let Some((len, sep)) = sse::event_end(&self.buffer) {
            let event = self.buffer.split_to(len + sep);
            if let Some(data) = sse::data_of(&event[..len]) {
                self.event(data, &mut out)?;
            }
        }
        Ok(out.freeze())
    }

    /// Whether `message_stop` arrived.
    pub fn finished(&self) -> bool {
        self.finished
    }

    fn chunk(&self, out: &mut BytesMut, delta: Value, finish: Option<&str>) {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        emit(out, &chunk);
    }

    fn event(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), UpstreamError> {
        let event: Event = serde_json::from_slice(data).map_err(|e| {
            UpstreamError::new(
                FailureKind::Protocol,
                format!("unreadable Anthropic stream event: {e}"),
            )
        })?;
        match event.kind.as_str() {
            "message_start" => {
                if let Some(m) = event.message {
                    self.id = format!("chatcmpl-{}", m.id);
                    self.model = m.model;
                    self.usage = m.usage;
                }
                self.created = now();
                self.chunk(out, json!({ "role": "assistant", "content": "" }), None);
            }
            "content_block_start" => {
                if let Some(block) = event.content_block
                    && block.kind == "tool_use"
                {
                    let tool = u32::try_from(self.tool_blocks.len()).unwrap_or(u32::MAX);
                    self.tool_blocks.push((event.index.unwrap_or(0), tool));
                    self.chunk(
                        out,
                        json!({ "tool_calls": [{
                            "index": tool,
                            "id": block.id,
                            "type": "function",
                            "function": { "name": block.name, "arguments": "" },
                        }] }),
                        None,
                    );
                }
            }
            "content_block_delta" => {
                let delta = event.delta.unwrap_or_default();
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        self.chunk(out, json!({ "content": delta.get("text") }), None);
                    }
                    Some("input_json_delta") => {
                        let block = event.index.unwrap_or(0);
                        let tool = self
                            .tool_blocks
                            .iter()
                            .find(|(b, _)| *b == block)
                            .map_or(0, |(_, t)| *t);
                        self.chunk(
                            out,
                            json!({ "tool_calls": [{
                                "index": tool,
                                "function": { "arguments": delta.get("partial_json") },
                            }] }),
                            None,
                        );
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = event.usage {
                    self.usage.output_tokens = u.output_tokens;
                }
                let stop = event
                    .delta
                    .as_ref()
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                self.chunk(out, json!({}), Some(finish_reason(stop)));
            }
            "message_stop" => {
                self.finished = true;
                let usage = json!({
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": self.usage.openai(),
                });
                emit(out, &usage);
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
            "error" => {
                let error = event.error.unwrap_or_default();
                let kind = match error.get("type").and_then(Value::as_str) {
                    Some("rate_limit_error") => FailureKind::RateLimited,
                    Some("invalid_request_error") => FailureKind::Rejected,
                    _ => FailureKind::Server,
                };
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the upstream reported an error");
                return Err(UpstreamError::new(kind, format!("Anthropic: {message}")));
            }
            // ping, content_block_stop and future event types carry nothing to forward.
            _ => {}
        }
        Ok(())
    }
}

fn emit(out: &mut BytesMut, value: &Value) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

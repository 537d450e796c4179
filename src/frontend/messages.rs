//! `POST /v1/messages`: Anthropic's Messages API, inbound, so the Anthropic SDK and
//! coding agents can point their base URL at the gateway. The request is translated
//! into the common chat request (system, text and image blocks, tools, tool use and
//! results, stop sequences); the answer back into a Message, or into Anthropic's event
//! stream (`message_start`, `content_block_*`, `message_delta`, `message_stop`, and
//! `error` when the upstream breaks). Errors take Anthropic's shape
//! (`{"type":"error","error":{"type","message"}}`); the key may come as `x-api-key`
//! or as a Bearer token.
//!
//! `input_tokens` is 0 in `message_start` (a chat stream reports usage at its end);
//! `message_delta` carries the whole usage, which the SDKs take as final.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::completion::Completion;
use super::sse::{Translated, Translator, chunk_usage, event};
use super::{bad, copy_common, tools, translated_bound};
use crate::accounting::Usage;
use crate::error::ApiError;
use crate::pipeline::{self, FrontEnd};
use crate::request::{Request, json_object};
use crate::state::AppState;

/// Anthropic's Messages API; remembers the model the client named.
pub struct Messages {
    model: String,
}

impl FrontEnd for Messages {
    const ENDPOINT: &'static str = "messages";

    fn credential(headers: &HeaderMap) -> Option<&str> {
        match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            Some(key) => Some(key),
            None => headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::auth::bearer),
        }
    }

    fn parse(body: &[u8]) -> Result<(Self, Request), ApiError> {
        let chat = to_chat(&json_object(body)?)?;
        let model = chat
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let bound = translated_bound(body.len(), &chat);
        let request = Request::from_body(chat, bound)?;
        Ok((Messages { model }, request))
    }

    fn error(error: ApiError) -> Response {
        let body = error_body(&error);
        error.respond_with(body)
    }

    fn json(self, chat: Bytes, usage: &Usage) -> Bytes {
        let Ok(completion) = serde_json::from_slice::<Completion<'_>>(&chat) else {
            return chat;
        };
        match serde_json::to_vec(&message(&completion, usage, &self.model)) {
            Ok(body) => Bytes::from(body),
            Err(_) => chat,
        }
    }

    fn stream<S>(self, chat: S) -> Body
    where
        S: Stream<Item = Result<Bytes, Infallible>> + Send + Unpin + 'static,
    {
        Body::from_stream(Translated::new(chat, MessageStream::new(self.model)))
    }
}

pub async fn messages(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    pipeline::serve::<Messages>(state, headers, body).await
}

/// Anthropic's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// The Anthropic error body.
fn error_body(error: &ApiError) -> Vec<u8> {
    let body = json!({
        "type": "error",
        "error": { "type": error_type(error.status()), "message": error.message() },
    });
    body.to_string().into_bytes()
}

/// A Messages request → a chat-completions body.
fn to_chat(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut chat = Map::new();
    copy_common(body, &mut chat)?;
    match body.get("max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            chat.insert("max_tokens".into(), Value::Number(n.clone()));
        }
        None => return Err(bad("`max_tokens` is required", "max_tokens")),
        Some(_) => {
            return Err(bad(
                "`max_tokens` must be a non-negative integer",
                "max_tokens",
            ));
        }
    }
    let mut messages = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text = blocks
                .iter()
                .map(|b| match (b.get("type").and_then(Value::as_str), b.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    _ => Err(bad(
                        "`system` blocks must be text blocks: {\"type\": \"text\", \"text\": ...}",
                        "system",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join("\n\n");
            messages.push(json!({"role": "system", "content": text}));
        }
        Some(_) => {
            return Err(bad(
                "`system` must be a string or an array of text blocks",
                "system",
            ));
        }
    }
    let turns = match body.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(bad("`messages` must not be empty", "messages")),
        Some(_) => return Err(bad("`messages` must be an array", "messages")),
        None => return Err(bad("`messages` is required", "messages")),
    };
    for (i, turn) in turns.iter().enumerate() {
        translate_turn(i, turn, &mut messages)?;
    }
    chat.insert("messages".into(), Value::Array(messages));

    match body.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(s)) if s.iter().all(Value::is_string) => {
            chat.insert("stop".into(), Value::Array(s.clone()));
        }
        Some(_) => {
            return Err(bad(
                "`stop_sequences` must be an array of strings",
                "stop_sequences",
            ));
        }
    }
    if let Some(user) = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        chat.insert("user".into(), json!(user));
    }
    tools(body, &mut chat, tool)?;
    match body.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(choice) => {
            let choice = match (
                choice.get("type").and_then(Value::as_str),
                choice.get("name").and_then(Value::as_str),
            ) {
                (Some("auto"), _) => json!("auto"),
                (Some("any"), _) => json!("required"),
                (Some("none"), _) => json!("none"),
                (Some("tool"), Some(name)) => {
                    json!({"type": "function", "function": {"name": name}})
                }
                _ => {
                    return Err(bad(
                        "`tool_choice` must be {\"type\": \"auto\" | \"any\" | \"none\"} or {\"type\": \"tool\", \"name\": ...}",
                        "tool_choice",
                    ));
                }
            };
            chat.insert("tool_choice".into(), choice);
        }
    }
    Ok(chat)
}

/// An Anthropic tool → a chat function tool.
fn tool(i: usize, tool: &Value) -> Result<Value, ApiError> {
    let Some(name) = tool.get("name").and_then(Value::as_str) else {
        return Err(bad(format!("`tools[{i}].name` is required"), "tools"));
    };
    let mut function = Map::new();
    function.insert("name".into(), json!(name));
    if let Some(description) = tool.get("description").and_then(Value::as_str) {
        function.insert("description".into(), json!(description));
    }
    let schema = tool
        .get("input_schema")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    function.insert("parameters".into(), schema);
    Ok(json!({"type": "function", "function": function}))
}

/// One Messages turn → chat messages: a user turn's tool results become `tool`
/// messages ahead of its text; an assistant turn's tool uses become `tool_calls`.
fn translate_turn(i: usize, turn: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let role = match turn.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "assistant")) => role,
        _ => {
            return Err(bad(
                format!("`messages[{i}].role` must be \"user\" or \"assistant\""),
                "messages",
            ));
        }
    };
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(bad(
                format!("`messages[{i}].content` must be a string or an array of content blocks"),
                "messages",
            ));
        }
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = || format!("messages[{i}].content[{j}]");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => match block.get("text") {
                Some(Value::String(t)) => parts.push(json!({"type": "text", "text": t})),
                _ => return Err(bad(format!("`{}.text` must be a string", at()), "messages")),
            },
            Some("image") if role == "user" => parts.push(image(block, &at())?),
            Some("tool_use") if role == "assistant" => {
                let (Some(id), Some(name)) = (
                    block.get("id").and_then(Value::as_str),
                    block.get("name").and_then(Value::as_str),
                ) else {
                    return Err(bad(
                        format!("`{}` needs a string `id` and `name`", at()),
                        "messages",
                    ));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            Some("tool_result") if role == "user" => {
                let Some(id) = block.get("tool_use_id").and_then(Value::as_str) else {
                    return Err(bad(
                        format!("`{}.tool_use_id` is required", at()),
                        "messages",
                    ));
                };
                let mut content = result_text(block.get("content"), &at())?;
                if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    content.insert_str(0, "Error: ");
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            // Earlier reasoning is the model's own: not sent back to another model.
            Some("thinking" | "redacted_thinking") if role == "assistant" => {}
            Some(other) => {
                return Err(bad(
                    format!(
                        "`{}`: a {role} block of type `{other}` is not supported",
                        at()
                    ),
                    "messages",
                ));
            }
            None => {
                return Err(bad(
                    format!("`{}` must be an object with a string `type`", at()),
                    "messages",
                ));
            }
        }
    }
    if role == "assistant" {
        let text: String = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let mut message = json!({"role": "assistant", "content": text});
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        out.push(message);
    } else if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

/// An image block → an `image_url` part (a data URL for base64 sources).
fn image(block: &Value, at: &str) -> Result<Value, ApiError> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => match (
            source.get("media_type").and_then(Value::as_str),
            source.get("data").and_then(Value::as_str),
        ) {
            (Some(media), Some(data)) => format!("data:{media};base64,{data}"),
            _ => {
                return Err(bad(
                    format!("`{at}.source` needs `media_type` and `data`"),
                    "messages",
                ));
            }
        },
        Some("url") => match source.get("url").and_then(Value::as_str) {
            Some(url) => url.to_owned(),
            None => return Err(bad(format!("`{at}.source.url` is required"), "messages")),
        },
        _ => {
            return Err(bad(
                format!("`{at}.source.type` must be \"base64\" or \"url\""),
                "messages",
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A tool result's content as text.
fn result_text(content: Option<&Value>, at: &str) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for block in blocks {
                match (block.get("type").and_then(Value::as_str), block.get("text")) {
                    (Some("text"), Some(Value::String(t))) => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                    _ => {
                        return Err(bad(
                            format!("`{at}.content` may hold only text blocks"),
                            "messages",
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(bad(
            format!("`{at}.content` must be a string or text blocks"),
            "messages",
        )),
    }
}

/// Anthropic's `stop_reason` for a chat `finish_reason`.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage object, for the stream's events.
fn usage_json(usage: &Usage) -> Value {
    serde_json::to_value(AnthropicUsage::from(usage)).unwrap_or(Value::Null)
}

/// A message id from the chat completion's id.
fn message_id(chat_id: Option<&str>) -> String {
    match chat_id {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) => format!("msg_{}", id.trim_start_matches("chatcmpl-")),
        None => "msg_crossroads".to_owned(),
    }
}

/// An Anthropic Message, written straight from the borrowed completion.
#[derive(Serialize)]
struct Message<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<ContentBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    usage: AnthropicUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
}

/// Anthropic's usage object: `input_tokens` excludes cache reads and writes.
#[derive(Serialize)]
struct AnthropicUsage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

impl From<&Usage> for AnthropicUsage {
    fn from(usage: &Usage) -> Self {
        AnthropicUsage {
            input_tokens: usage.input,
            output_tokens: usage.output,
            cache_creation_input_tokens: usage.cache_write,
            cache_read_input_tokens: usage.cached_input,
        }
    }
}

/// A chat.completion → a Message.
fn message<'a>(chat: &'a Completion<'a>, usage: &Usage, requested: &'a str) -> Message<'a> {
    let choice = chat.choice();
    let reply = choice.and_then(|c| c.message.as_ref());
    let mut content = Vec::new();
    if let Some(text) = reply
        .and_then(|r| r.content.as_deref())
        .filter(|t| !t.is_empty())
    {
        content.push(ContentBlock::Text { text });
    }
    for call in reply
        .and_then(|r| r.tool_calls.as_deref())
        .unwrap_or_default()
    {
        let arguments = call.function.arguments.as_deref().unwrap_or("{}");
        content.push(ContentBlock::ToolUse {
            id: call.id.as_deref().unwrap_or_default(),
            name: call.function.name.as_deref().unwrap_or_default(),
            input: serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({})),
        });
    }
    Message {
        id: message_id(chat.id.as_deref()),
        kind: "message",
        role: "assistant",
        model: chat.model.as_deref().unwrap_or(requested),
        content,
        stop_reason: stop_reason(choice.and_then(|c| c.finish_reason.as_deref())),
        stop_sequence: None,
        usage: usage.into(),
    }
}

/// The open content block of a stream.
#[derive(Clone, Copy, PartialEq)]
enum Block {
    None,
    Text,
    /// A tool use, by the chat tool call's index.
    Tool(u64),
}

/// Chat chunks → Anthropic's event stream.
struct MessageStream {
    requested: String,
    started: bool,
    block: Block,
    /// Index of the open block (blocks counted from 0).
    index: u64,
    stop: Option<&'static str>,
    usage: Usage,
    failed: bool,
}

impl MessageStream {
    fn new(requested: String) -> Self {
        MessageStream {
            requested,
            started: false,
            block: Block::None,
            index: 0,
            stop: None,
            usage: Usage::default(),
            failed: false,
        }
    }

    fn start(&mut self, chunk: Option<&Value>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = chunk.and_then(|c| c["id"].as_str());
        let model = chunk
            .and_then(|c| c["model"].as_str())
            .unwrap_or(&self.requested);
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": message_id(id),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage_json(&Usage::default()),
            }}),
        );
        event(out, "ping", &json!({"type": "ping"}));
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.block != Block::None {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            );
            self.block = Block::None;
            self.index += 1;
        }
    }

    fn open_block(&mut self, block: Block, content_block: Value, out: &mut Vec<u8>) {
        self.close_block(out);
        self.block = block;
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.index, "content_block": content_block}),
        );
    }
}

impl Translator for MessageStream {
    fn chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        self.start(Some(chunk), out);
        if let Some(usage) = chunk_usage(chunk) {
            self.usage = usage;
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            if self.block != Block::Text {
                self.open_block(Block::Text, json!({"type": "text", "text": ""}), out);
            }
            event(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": self.index,
                    "delta": {"type": "text_delta", "text": text}}),
            );
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let which = call["index"].as_u64().unwrap_or(0);
            if self.block != Block::Tool(which) {
                let block = json!({
                    "type": "tool_use",
                    "id": call["id"].as_str().unwrap_or_default(),
                    "name": call["function"]["name"].as_str().unwrap_or_default(),
                    "input": {},
                });
                self.open_block(Block::Tool(which), block, out);
            }
            if let Some(arguments) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": self.index,
                        "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                );
            }
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            self.stop = Some(stop_reason(Some(finish)));
        }
    }

    fn error(&mut self, error: &Value, out: &mut Vec<u8>) {
        self.failed = true;
        let kind = match error["type"].as_str() {
            Some("rate_limit_error") => "rate_limit_error",
            _ => "api_error",
        };
        let message = error["message"].as_str().unwrap_or("the upstream failed");
        event(
            out,
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
        );
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        self.start(None, out);
        self.close_block(out);
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null},
                "usage": usage_json(&self.usage)}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

#[cfg(test)]
mod tests;

//! `POST /v1/responses`: OpenAI's Responses API. The request (`input` as text or items,
//! `instructions`, function tools and their outputs, `text.format`,
//! `max_output_tokens`) is translated into the common chat request; the answer back
//! into a Response object, or into the Responses event stream (`response.created`,
//! `response.output_item.added`, `response.output_text.delta`, ...,
//! `response.completed` with usage; `error` and `response.failed` when the upstream
//! breaks). The gateway keeps no responses: `previous_response_id`, `conversation`
//! and `background` get a 400 naming the field; `store` is accepted and ignored.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Map, Value, json};

use super::sse::{Translated, Translator, chunk_usage, event};
use super::{bad, copy_common, tools, translated_bound};
use crate::accounting::Usage;
use crate::error::ApiError;
use crate::pipeline::{self, FrontEnd};
use crate::request::{Request, json_object};
use crate::state::AppState;

/// The Responses API; keeps the request fields a Response echoes back.
pub struct Responses {
    echo: Map<String, Value>,
}

/// Request fields a Response object repeats.
const ECHOED: [&str; 10] = [
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "user",
];

impl FrontEnd for Responses {
    const ENDPOINT: &'static str = "responses";

    fn parse(body: &[u8]) -> Result<(Self, Request), ApiError> {
        let original = json_object(body)?;
        let chat = to_chat(&original)?;
        let echo = ECHOED
            .iter()
            .filter_map(|k| original.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        let bound = translated_bound(body.len(), &chat);
        let request = Request::from_body(chat, bound)?;
        Ok((Responses { echo }, request))
    }

    fn json(self, chat: Bytes, usage: &Usage) -> Bytes {
        let Ok(chat) = serde_json::from_slice::<Value>(&chat) else {
            return chat;
        };
        let id = response_id(chat["id"].as_str());
        let items = output_items(&chat, &id);
        let status = Status::of(chat["choices"][0]["finish_reason"].as_str());
        let response = self.response(&id, &chat, status, items, Some(usage));
        Bytes::from(response.to_string())
    }

    fn stream<S>(self, chat: S) -> Body
    where
        S: Stream<Item = Result<Bytes, Infallible>> + Send + Unpin + 'static,
    {
        Body::from_stream(Translated::new(chat, ResponseStream::new(self)))
    }
}

pub async fn responses(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    pipeline::serve::<Responses>(state, headers, body).await
}

/// A Responses request → a chat-completions body.
fn to_chat(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    for (field, why) in [
        (
            "previous_response_id",
            "the gateway keeps no responses; send the whole conversation as `input`",
        ),
        (
            "conversation",
            "the gateway keeps no conversations; send the whole conversation as `input`",
        ),
    ] {
        if body.get(field).is_some_and(|v| !v.is_null()) {
            return Err(bad(format!("`{field}` is not supported: {why}"), field));
        }
    }
    if body.get("background") == Some(&Value::Bool(true)) {
        return Err(bad(
            "`background` is not supported: the gateway answers in the request",
            "background",
        ));
    }
    let mut chat = Map::new();
    copy_common(body, &mut chat)?;
    let mut messages = Vec::new();
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(_) => return Err(bad("`instructions` must be a string", "instructions")),
    }
    match body.get("input") {
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                translate_item(i, item, &mut messages)?;
            }
        }
        Some(Value::Array(_)) => return Err(bad("`input` must not be empty", "input")),
        Some(_) => {
            return Err(bad(
                "`input` must be a string or an array of items",
                "input",
            ));
        }
        None => return Err(bad("`input` is required", "input")),
    }
    chat.insert("messages".into(), Value::Array(messages));
    match body.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            chat.insert("max_tokens".into(), Value::Number(n.clone()));
        }
        Some(_) => {
            return Err(bad(
                "`max_output_tokens` must be a non-negative integer",
                "max_output_tokens",
            ));
        }
    }
    match body.get("parallel_tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            chat.insert("parallel_tool_calls".into(), json!(b));
        }
        Some(_) => {
            return Err(bad(
                "`parallel_tool_calls` must be a boolean",
                "parallel_tool_calls",
            ));
        }
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        chat.insert("user".into(), json!(user));
    }
    if let Some(effort) = body
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str)
    {
        chat.insert("reasoning_effort".into(), json!(effort));
    }
    tools(body, &mut chat, tool)?;
    match body.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if ["auto", "none", "required"].contains(&c.as_str()) => {
            chat.insert("tool_choice".into(), json!(c));
        }
        Some(choice) => match (
            choice.get("type").and_then(Value::as_str),
            choice.get("name").and_then(Value::as_str),
        ) {
            (Some("function"), Some(name)) => {
                chat.insert(
                    "tool_choice".into(),
                    json!({"type": "function", "function": {"name": name}}),
                );
            }
            _ => {
                return Err(bad(
                    "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": ...}",
                    "tool_choice",
                ));
            }
        },
    }
    if let Some(format) = body.get("text").and_then(|t| t.get("format")) {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                chat.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let mut schema = Map::new();
                for key in ["name", "schema", "strict", "description"] {
                    if let Some(v) = format.get(key) {
                        schema.insert(key.into(), v.clone());
                    }
                }
                if !schema.contains_key("schema") {
                    return Err(bad("`text.format.schema` is required", "text"));
                }
                chat.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            _ => {
                return Err(bad(
                    "`text.format.type` must be \"text\", \"json_object\" or \"json_schema\"",
                    "text",
                ));
            }
        }
    }
    Ok(chat)
}

/// A Responses function tool → a chat function tool.
fn tool(i: usize, tool: &Value) -> Result<Value, ApiError> {
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(bad(
                format!("`tools[{i}].type` `{other}` is not supported: only function tools"),
                "tools",
            ));
        }
        None => return Err(bad(format!("`tools[{i}].type` is required"), "tools")),
    }
    let Some(name) = tool.get("name").and_then(Value::as_str) else {
        return Err(bad(format!("`tools[{i}].name` is required"), "tools"));
    };
    let mut function = Map::new();
    function.insert("name".into(), json!(name));
    for key in ["description", "parameters", "strict"] {
        if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
            function.insert(key.into(), v.clone());
        }
    }
    Ok(json!({"type": "function", "function": function}))
}

/// One input item → chat messages. Function calls join the assistant message before
/// them (or start one); their outputs become `tool` messages.
fn translate_item(i: usize, item: &Value, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let at = format!("input[{i}]");
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        None | Some("message") => {}
        Some("function_call") => {
            let (Some(call_id), Some(name)) = (
                item.get("call_id").and_then(Value::as_str),
                item.get("name").and_then(Value::as_str),
            ) else {
                return Err(bad(
                    format!("`{at}` needs a string `call_id` and `name`"),
                    "input",
                ));
            };
            let arguments = item
                .get("arguments")
                .and_then(Value::as_str)
                .unwrap_or("{}");
            let call = json!({"id": call_id, "type": "function",
                "function": {"name": name, "arguments": arguments}});
            match out.last_mut() {
                Some(last) if last["role"] == "assistant" => match last.get_mut("tool_calls") {
                    Some(Value::Array(calls)) => calls.push(call),
                    _ => last["tool_calls"] = json!([call]),
                },
                _ => out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
            return Ok(());
        }
        Some("function_call_output") => {
            let Some(call_id) = item.get("call_id").and_then(Value::as_str) else {
                return Err(bad(format!("`{at}.call_id` is required"), "input"));
            };
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts_text(parts),
                _ => return Err(bad(format!("`{at}.output` must be a string"), "input")),
            };
            out.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            return Ok(());
        }
        // Earlier reasoning is the model's own: not sent back to another model.
        Some("reasoning") => return Ok(()),
        Some(other) => {
            return Err(bad(
                format!("`{at}.type` `{other}` is not supported"),
                "input",
            ));
        }
    }
    let role = match item.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "assistant" | "system" | "developer")) => role,
        _ => {
            return Err(bad(
                format!("`{at}.role` must be \"user\", \"assistant\", \"system\" or \"developer\""),
                "input",
            ));
        }
    };
    let content = match item.get("content") {
        Some(Value::String(text)) => json!(text),
        Some(Value::Array(parts)) => {
            let mut chat_parts = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                chat_parts.push(content_part(part, &format!("{at}.content[{j}]"))?);
            }
            if role == "user" {
                Value::Array(chat_parts)
            } else {
                json!(parts_text(&chat_parts))
            }
        }
        _ => {
            return Err(bad(
                format!("`{at}.content` must be a string or an array of content parts"),
                "input",
            ));
        }
    };
    out.push(json!({"role": role, "content": content}));
    Ok(())
}

/// An input content part → a chat content part.
fn content_part(part: &Value, at: &str) -> Result<Value, ApiError> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => match part.get("text") {
            Some(Value::String(t)) => Ok(json!({"type": "text", "text": t})),
            _ => Err(bad(format!("`{at}.text` must be a string"), "input")),
        },
        Some("input_image") => match part.get("image_url").and_then(Value::as_str) {
            Some(url) => {
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").and_then(Value::as_str) {
                    image["detail"] = json!(detail);
                }
                Ok(json!({"type": "image_url", "image_url": image}))
            }
            None => Err(bad(
                format!("`{at}.image_url` is required: the gateway keeps no files"),
                "input",
            )),
        },
        Some(other) => Err(bad(
            format!("`{at}.type` `{other}` is not supported"),
            "input",
        )),
        None => Err(bad(
            format!("`{at}` must be an object with a string `type`"),
            "input",
        )),
    }
}

/// The text of content parts, joined.
fn parts_text(parts: &[Value]) -> String {
    parts
        .iter()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A response id from the chat completion's id.
fn response_id(chat_id: Option<&str>) -> String {
    match chat_id {
        Some(id) if id.starts_with("resp_") => id.to_owned(),
        Some(id) => format!("resp_{}", id.trim_start_matches("chatcmpl-")),
        None => "resp_crossroads".to_owned(),
    }
}

/// How a response ended.
#[derive(Clone, Copy, PartialEq)]
enum Status {
    Completed,
    /// Cut at `max_output_tokens`.
    Incomplete,
}

impl Status {
    fn of(finish: Option<&str>) -> Self {
        if finish == Some("length") {
            Status::Incomplete
        } else {
            Status::Completed
        }
    }
}

/// Output items, as the Response and its stream carry them.
#[derive(Clone)]
enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Item {
    fn id(&self) -> String {
        match self {
            Item::Message { id, .. } => id.clone(),
            Item::Call { call_id, .. } => format!("fc_{call_id}"),
        }
    }

    fn json(&self, status: &str) -> Value {
        match self {
            Item::Message { id, text } => {
                let content = if status == "in_progress" {
                    json!([])
                } else {
                    json!([text_part(text)])
                };
                json!({"type": "message", "id": id, "status": status, "role": "assistant",
                    "content": content})
            }
            Item::Call {
                call_id,
                name,
                arguments,
            } => json!({"type": "function_call", "id": self.id(), "call_id": call_id,
                "name": name, "arguments": arguments, "status": status}),
        }
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A chat.completion's choice → output items.
fn output_items(chat: &Value, id: &str) -> Vec<Item> {
    let reply = &chat["choices"][0]["message"];
    let mut items = Vec::new();
    if let Some(text) = reply["content"].as_str().filter(|t| !t.is_empty()) {
        items.push(Item::Message {
            id: format!("msg_{}", id.trim_start_matches("resp_")),
            text: text.to_owned(),
        });
    }
    for call in reply["tool_calls"].as_array().into_iter().flatten() {
        items.push(Item::Call {
            call_id: call["id"].as_str().unwrap_or_default().to_owned(),
            name: call["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            arguments: call["function"]["arguments"]
                .as_str()
                .unwrap_or("{}")
                .to_owned(),
        });
    }
    items
}

/// The Responses usage object: `input_tokens` includes cached ones, as OpenAI counts.
fn usage_json(usage: &Usage) -> Value {
    let input = usage.total_input();
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": usage.cached_input},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": input.saturating_add(usage.output),
    })
}

impl Responses {
    /// A Response object. `usage` is `None` while it is in progress.
    fn response(
        &self,
        id: &str,
        chat: &Value,
        status: Status,
        items: Vec<Item>,
        usage: Option<&Usage>,
    ) -> Value {
        let (status, incomplete) = match (usage, status) {
            (None, _) => ("in_progress", Value::Null),
            (Some(_), Status::Completed) => ("completed", Value::Null),
            (Some(_), Status::Incomplete) => ("incomplete", json!({"reason": "max_output_tokens"})),
        };
        let item_status = if status == "in_progress" {
            "in_progress"
        } else {
            "completed"
        };
        let output: Vec<Value> = if status == "in_progress" {
            Vec::new()
        } else {
            items.iter().map(|i| i.json(item_status)).collect()
        };
        let echo = |key: &str, default: Value| self.echo.get(key).cloned().unwrap_or(default);
        json!({
            "id": id,
            "object": "response",
            "created_at": chat["created"].as_u64().unwrap_or(0),
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": echo("instructions", Value::Null),
            "max_output_tokens": echo("max_output_tokens", Value::Null),
            "model": chat["model"].as_str().unwrap_or_default(),
            "output": output,
            "parallel_tool_calls": echo("parallel_tool_calls", json!(true)),
            "previous_response_id": null,
            "temperature": echo("temperature", json!(1.0)),
            "text": echo("text", json!({"format": {"type": "text"}})),
            "tool_choice": echo("tool_choice", json!("auto")),
            "tools": echo("tools", json!([])),
            "top_p": echo("top_p", json!(1.0)),
            "user": echo("user", Value::Null),
            "metadata": echo("metadata", json!({})),
            "usage": usage.map_or(Value::Null, usage_json),
        })
    }
}

/// Chat chunks → the Responses event stream.
struct ResponseStream {
    front: Responses,
    /// The first chunk, for the response's id, model and creation time.
    head: Option<Value>,
    id: String,
    sequence: u64,
    items: Vec<Item>,
    /// The open item, by index into `items`; closed items are done.
    open: Option<usize>,
    /// The chat tool call index of the open call.
    open_call: Option<u64>,
    finish: Option<String>,
    usage: Usage,
    failed: bool,
}

impl ResponseStream {
    fn new(front: Responses) -> Self {
        ResponseStream {
            front,
            head: None,
            id: String::new(),
            sequence: 0,
            items: Vec::new(),
            open: None,
            open_call: None,
            finish: None,
            usage: Usage::default(),
            failed: false,
        }
    }

    /// Writes event `kind` with `fields` and the next sequence number.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut fields: Value) {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        event(out, kind, &fields);
    }

    fn head(&self) -> Value {
        self.head.clone().unwrap_or(Value::Null)
    }

    fn start(&mut self, chunk: Option<&Value>, out: &mut Vec<u8>) {
        if self.head.is_some() {
            return;
        }
        let head = chunk.cloned().unwrap_or_else(|| json!({}));
        self.id = response_id(head["id"].as_str());
        self.head = Some(head);
        let response =
            self.front
                .response(&self.id, &self.head(), Status::Completed, Vec::new(), None);
        self.emit(out, "response.created", json!({"response": response}));
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    /// Opens `item` as the next output item.
    fn open(&mut self, item: Item, out: &mut Vec<u8>) {
        self.close(out);
        let index = self.items.len();
        let added = item.json("in_progress");
        let item_id = item.id();
        let is_message = matches!(item, Item::Message { .. });
        self.items.push(item);
        self.open = Some(index);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": added}),
        );
        if is_message {
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                    "part": text_part("")}),
            );
        }
    }

    /// Appends `piece` to the open item's text or arguments; returns its index and id.
    fn append(&mut self, piece: &str) -> (usize, String) {
        let index = self.open.unwrap_or_default();
        match self.items.get_mut(index) {
            Some(
                Item::Message { text, .. }
                | Item::Call {
                    arguments: text, ..
                },
            ) => {
                text.push_str(piece);
            }
            None => {}
        }
        let id = self.items.get(index).map(Item::id).unwrap_or_default();
        (index, id)
    }

    /// Closes the open item with its done events.
    fn close(&mut self, out: &mut Vec<u8>) {
        let Some(index) = self.open.take() else {
            return;
        };
        self.open_call = None;
        let Some(item) = self.items.get(index).cloned() else {
            return;
        };
        let item_id = item.id();
        match &item {
            Item::Message { text, .. } => {
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": index, "content_index": 0,
                        "text": text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": index, "content_index": 0,
                        "part": text_part(text)}),
                );
            }
            Item::Call {
                name, arguments, ..
            } => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": index, "name": name,
                        "arguments": arguments}),
                );
            }
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item.json("completed")}),
        );
    }
}

impl Translator for ResponseStream {
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
            let open_message = self
                .open
                .is_some_and(|i| matches!(self.items.get(i), Some(Item::Message { .. })));
            if !open_message {
                let id = format!(
                    "msg_{}_{}",
                    self.id.trim_start_matches("resp_"),
                    self.items.len()
                );
                self.open(
                    Item::Message {
                        id,
                        text: String::new(),
                    },
                    out,
                );
            }
            let (index, item_id) = self.append(text);
            self.emit(
                out,
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                    "delta": text, "logprobs": []}),
            );
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let which = call["index"].as_u64().unwrap_or(0);
            if self.open_call != Some(which) {
                self.open(
                    Item::Call {
                        call_id: call["id"].as_str().unwrap_or_default().to_owned(),
                        name: call["function"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        arguments: String::new(),
                    },
                    out,
                );
                self.open_call = Some(which);
            }
            if let Some(piece) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                let (index, item_id) = self.append(piece);
                self.emit(
                    out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": item_id, "output_index": index, "delta": piece}),
                );
            }
        }
        if let Some(finish) = choice["finish_reason"].as_str() {
            self.finish = Some(finish.to_owned());
        }
    }

    fn error(&mut self, error: &Value, out: &mut Vec<u8>) {
        self.start(None, out);
        self.failed = true;
        let message = error["message"]
            .as_str()
            .unwrap_or("the upstream failed")
            .to_owned();
        let code = error["code"].as_str().unwrap_or("server_error").to_owned();
        self.emit(
            out,
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        let mut response = self.front.response(
            &self.id,
            &self.head(),
            Status::Completed,
            Vec::new(),
            Some(&self.usage),
        );
        response["status"] = json!("failed");
        response["error"] = json!({"code": "server_error", "message": message});
        response["output"] =
            Value::Array(self.items.iter().map(|i| i.json("incomplete")).collect());
        self.emit(out, "response.failed", json!({"response": response}));
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        self.start(None, out);
        self.close(out);
        let status = Status::of(self.finish.as_deref());
        let response = self.front.response(
            &self.id,
            &self.head(),
            status,
            self.items.clone(),
            Some(&self.usage),
        );
        let kind = match status {
            Status::Completed => "response.completed",
            Status::Incomplete => "response.incomplete",
        };
        self.emit(out, kind, json!({"response": response}));
    }
}

#[cfg(test)]
mod tests;

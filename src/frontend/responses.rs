//! `POST /v1/responses`: OpenAI's Responses API. The request (`input` as text or items,
//! `instructions`, function tools and their outputs, `text.format`,
//! `max_output_tokens`) is translated into the common chat request; the answer back
//! into a Response object, or into the Responses event stream (`response.created`,
//! `response.output_item.added`, `response.output_text.delta`, ...,
//! `response.completed` with usage; `error` and `response.failed` when the upstream
//! breaks). The gateway keeps no responses: `previous_response_id`, `conversation`
//! and `background` get a 400 naming the field; `store` is accepted and ignored.

use std::borrow::Cow;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::completion::{Completion, Reply};
use super::sse::{Translated, Translator, chunk_usage, event};
use super::{bad, copy_common, tools, translated_bound};
use crate::accounting::Usage;
use crate::error::ApiError;
use crate::pipeline::{self, FrontEnd};
use crate::request::{Request, json_object};
use crate::state::AppState;

/// The Responses API; keeps the request fields a Response echoes back (boxed: the
/// front-end lives in the request's future, which is moved whole between polls' owners).
pub struct Responses {
    echo: Box<Echo>,
}

/// Request fields a Response object repeats, as the client sent them.
#[derive(Default)]
struct Echo {
    instructions: Option<Value>,
    max_output_tokens: Option<Value>,
    metadata: Option<Value>,
    parallel_tool_calls: Option<Value>,
    temperature: Option<Value>,
    text: Option<Value>,
    tool_choice: Option<Value>,
    tools: Option<Value>,
    top_p: Option<Value>,
    user: Option<Value>,
}

impl Echo {
    fn of(body: &Map<String, Value>) -> Self {
        let get = |key: &str| body.get(key).cloned();
        Echo {
            instructions: get("instructions"),
            max_output_tokens: get("max_output_tokens"),
            metadata: get("metadata"),
            parallel_tool_calls: get("parallel_tool_calls"),
            temperature: get("temperature"),
            text: get("text"),
            tool_choice: get("tool_choice"),
            tools: get("tools"),
            top_p: get("top_p"),
            user: get("user"),
        }
    }
}

/// What a Response reports for a field the request left out.
#[derive(Clone, Copy)]
enum Fallback {
    Null,
    True,
    One,
    TextFormat,
    Auto,
    EmptyList,
    EmptyObject,
}

/// An echoed request field, or its [`Fallback`].
struct Echoed<'a>(Option<&'a Value>, Fallback);

impl Serialize for Echoed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        if let Some(value) = self.0 {
            return value.serialize(s);
        }
        match self.1 {
            Fallback::Null => s.serialize_unit(),
            Fallback::True => s.serialize_bool(true),
            Fallback::One => s.serialize_f64(1.0),
            Fallback::Auto => s.serialize_str("auto"),
            Fallback::EmptyList => s.serialize_seq(Some(0))?.end(),
            Fallback::EmptyObject => s.serialize_map(Some(0))?.end(),
            Fallback::TextFormat => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("format", &Kind { kind: "text" })?;
                map.end()
            }
        }
    }
}

/// `{"type": ...}`.
#[derive(Serialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: &'static str,
}

impl FrontEnd for Responses {
    const ENDPOINT: &'static str = "responses";

    fn parse(body: &[u8]) -> Result<(Self, Request), ApiError> {
        let original = json_object(body)?;
        let chat = to_chat(&original)?;
        let echo = Box::new(Echo::of(&original));
        let bound = translated_bound(body.len(), &chat);
        let request = Request::from_body(chat, bound)?;
        Ok((Responses { echo }, request))
    }

    fn json(self, chat: Bytes, usage: &Usage) -> Bytes {
        let Ok(completion) = serde_json::from_slice::<Completion<'_>>(&chat) else {
            return chat;
        };
        let id = response_id(completion.id.as_deref());
        let choice = completion.choice();
        let state = Phase::of(choice.and_then(|c| c.finish_reason.as_deref()));
        let output = output_items(choice.and_then(|c| c.message.as_ref()), &id);
        let head = Head {
            id: &id,
            created: completion.created.unwrap_or(0),
            model: completion.model.as_deref().unwrap_or_default(),
        };
        match serde_json::to_vec(&self.response(head, state, output, Some(usage))) {
            Ok(body) => Bytes::from(body),
            Err(_) => chat,
        }
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

/// Where a response stands.
#[derive(Clone, Copy, PartialEq)]
enum Phase<'a> {
    InProgress,
    Completed,
    /// Cut at `max_output_tokens`.
    Incomplete,
    /// The upstream broke, with this message.
    Failed(&'a str),
}

impl Phase<'_> {
    /// How a finished answer ended, from its `finish_reason`.
    fn of(finish: Option<&str>) -> Self {
        if finish == Some("length") {
            Phase::Incomplete
        } else {
            Phase::Completed
        }
    }
}

/// Output items as the stream builds them.
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

    fn view(&self, status: &'static str) -> OutputItem<'_> {
        match self {
            Item::Message { id, text } => OutputItem::message(id.into(), text, status),
            Item::Call {
                call_id,
                name,
                arguments,
            } => OutputItem::call(call_id, name, arguments, status),
        }
    }
}

/// An output item of a Response, borrowed from the answer or the stream's items.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputItem<'a> {
    Message {
        id: Cow<'a, str>,
        status: &'static str,
        role: &'static str,
        content: Vec<TextPart<'a>>,
    },
    FunctionCall {
        id: String,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
        status: &'static str,
    },
}

impl<'a> OutputItem<'a> {
    fn message(id: Cow<'a, str>, text: &'a str, status: &'static str) -> Self {
        // An item in progress has no content part yet.
        let content = if status == "in_progress" {
            Vec::new()
        } else {
            vec![TextPart::of(text)]
        };
        OutputItem::Message {
            id,
            status,
            role: "assistant",
            content,
        }
    }

    fn call(call_id: &'a str, name: &'a str, arguments: &'a str, status: &'static str) -> Self {
        OutputItem::FunctionCall {
            id: format!("fc_{call_id}"),
            call_id,
            name,
            arguments,
            status,
        }
    }
}

/// An `output_text` content part.
#[derive(Serialize)]
struct TextPart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
    logprobs: [(); 0],
}

impl<'a> TextPart<'a> {
    fn of(text: &'a str) -> Self {
        TextPart {
            kind: "output_text",
            text,
            annotations: [],
            logprobs: [],
        }
    }
}

/// A chat.completion's reply → output items.
fn output_items<'a>(reply: Option<&'a Reply<'a>>, id: &str) -> Vec<OutputItem<'a>> {
    let mut items = Vec::new();
    let Some(reply) = reply else {
        return items;
    };
    if let Some(text) = reply.content.as_deref().filter(|t| !t.is_empty()) {
        let id = format!("msg_{}", id.trim_start_matches("resp_"));
        items.push(OutputItem::message(id.into(), text, "completed"));
    }
    for call in reply.tool_calls.iter().flatten() {
        items.push(OutputItem::call(
            call.id.as_deref().unwrap_or_default(),
            call.function.name.as_deref().unwrap_or_default(),
            call.function.arguments.as_deref().unwrap_or("{}"),
            "completed",
        ));
    }
    items
}

/// The Responses usage object: `input_tokens` includes cached ones, as OpenAI counts.
#[derive(Serialize)]
struct ResponsesUsage {
    input_tokens: u64,
    input_tokens_details: CachedTokens,
    output_tokens: u64,
    output_tokens_details: ReasoningTokens,
    total_tokens: u64,
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl From<&Usage> for ResponsesUsage {
    fn from(usage: &Usage) -> Self {
        let input = usage.total_input();
        ResponsesUsage {
            input_tokens: input,
            input_tokens_details: CachedTokens {
                cached_tokens: usage.cached_input,
            },
            output_tokens: usage.output,
            output_tokens_details: ReasoningTokens {
                reasoning_tokens: usage.reasoning,
            },
            total_tokens: input.saturating_add(usage.output),
        }
    }
}

/// A Response object.
#[derive(Serialize)]
struct ResponseObject<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<Failure<'a>>,
    incomplete_details: Option<Incomplete>,
    instructions: Echoed<'a>,
    max_output_tokens: Echoed<'a>,
    model: &'a str,
    output: Vec<OutputItem<'a>>,
    parallel_tool_calls: Echoed<'a>,
    previous_response_id: Option<()>,
    temperature: Echoed<'a>,
    text: Echoed<'a>,
    tool_choice: Echoed<'a>,
    tools: Echoed<'a>,
    top_p: Echoed<'a>,
    user: Echoed<'a>,
    metadata: Echoed<'a>,
    usage: Option<ResponsesUsage>,
}

#[derive(Serialize)]
struct Failure<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct Incomplete {
    reason: &'static str,
}

/// What a Response says of the answer it carries: id, creation time, model.
#[derive(Clone, Copy)]
struct Head<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
}

impl Responses {
    /// A Response object; `output` is dropped while it is in progress.
    fn response<'a>(
        &'a self,
        head: Head<'a>,
        state: Phase<'a>,
        output: Vec<OutputItem<'a>>,
        usage: Option<&Usage>,
    ) -> ResponseObject<'a> {
        let (status, error, incomplete_details) = match state {
            Phase::InProgress => ("in_progress", None, None),
            Phase::Completed => ("completed", None, None),
            Phase::Incomplete => (
                "incomplete",
                None,
                Some(Incomplete {
                    reason: "max_output_tokens",
                }),
            ),
            Phase::Failed(message) => (
                "failed",
                Some(Failure {
                    code: "server_error",
                    message,
                }),
                None,
            ),
        };
        let e = &self.echo;
        let echo = |value: &'a Option<Value>, fallback| Echoed(value.as_ref(), fallback);
        ResponseObject {
            id: head.id,
            object: "response",
            created_at: head.created,
            status,
            error,
            incomplete_details,
            instructions: echo(&e.instructions, Fallback::Null),
            max_output_tokens: echo(&e.max_output_tokens, Fallback::Null),
            model: head.model,
            output: if state == Phase::InProgress {
                Vec::new()
            } else {
                output
            },
            parallel_tool_calls: echo(&e.parallel_tool_calls, Fallback::True),
            previous_response_id: None,
            temperature: echo(&e.temperature, Fallback::One),
            text: echo(&e.text, Fallback::TextFormat),
            tool_choice: echo(&e.tool_choice, Fallback::Auto),
            tools: echo(&e.tools, Fallback::EmptyList),
            top_p: echo(&e.top_p, Fallback::One),
            user: echo(&e.user, Fallback::Null),
            metadata: echo(&e.metadata, Fallback::EmptyObject),
            usage: usage.map(ResponsesUsage::from),
        }
    }
}

/// Chat chunks → the Responses event stream.
struct ResponseStream {
    front: Responses,
    /// Whether `response.created` went out (the first chunk or the end starts it).
    started: bool,
    id: String,
    created: u64,
    model: String,
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

/// An event of the stream: its type, its fields, its place in the sequence.
#[derive(Serialize)]
struct Event<'a, T> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    fields: T,
    sequence_number: u64,
}

/// The fields of the events that carry a whole Response.
#[derive(Serialize)]
struct WithResponse<'a> {
    response: ResponseObject<'a>,
}

impl ResponseStream {
    fn new(front: Responses) -> Self {
        ResponseStream {
            front,
            started: false,
            id: String::new(),
            created: 0,
            model: String::new(),
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
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, fields: impl Serialize) {
        let sequence_number = self.sequence;
        self.sequence += 1;
        event(
            out,
            kind,
            &Event {
                kind,
                fields,
                sequence_number,
            },
        );
    }

    /// Writes an event carrying the Response in `state`, with the items so far when
    /// `items` says so, each in `item_status`.
    fn emit_response(
        &mut self,
        out: &mut Vec<u8>,
        kind: &str,
        state: Phase<'_>,
        items: Option<&'static str>,
    ) {
        let head = Head {
            id: &self.id,
            created: self.created,
            model: &self.model,
        };
        let output = items
            .map(|status| self.items.iter().map(|i| i.view(status)).collect())
            .unwrap_or_default();
        let usage = (state != Phase::InProgress).then_some(&self.usage);
        let response = self.front.response(head, state, output, usage);
        let sequence_number = self.sequence;
        event(
            out,
            kind,
            &Event {
                kind,
                fields: WithResponse { response },
                sequence_number,
            },
        );
        self.sequence += 1;
    }

    fn start(&mut self, chunk: Option<&Value>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let field = |name: &str| chunk.and_then(|c| c.get(name));
        self.id = response_id(field("id").and_then(Value::as_str));
        self.created = field("created").and_then(Value::as_u64).unwrap_or(0);
        self.model = field("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.emit_response(out, "response.created", Phase::InProgress, None);
        self.emit_response(out, "response.in_progress", Phase::InProgress, None);
    }

    /// Opens `item` as the next output item.
    fn open(&mut self, item: Item, out: &mut Vec<u8>) {
        self.close(out);
        let index = self.items.len();
        let item_id = item.id();
        let is_message = matches!(item, Item::Message { .. });
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item.view("in_progress")}),
        );
        self.items.push(item);
        self.open = Some(index);
        if is_message {
            self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                    "part": TextPart::of("")}),
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
                        "part": TextPart::of(text)}),
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
            json!({"output_index": index, "item": item.view("completed")}),
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
        let message = error["message"].as_str().unwrap_or("the upstream failed");
        let code = error["code"].as_str().unwrap_or("server_error");
        self.emit(
            out,
            "error",
            json!({"code": code, "message": message, "param": null}),
        );
        self.emit_response(
            out,
            "response.failed",
            Phase::Failed(message),
            Some("incomplete"),
        );
    }

    fn done(&mut self, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        self.start(None, out);
        self.close(out);
        let state = Phase::of(self.finish.as_deref());
        let kind = match state {
            Phase::Incomplete => "response.incomplete",
            _ => "response.completed",
        };
        self.emit_response(out, kind, state, Some("completed"));
    }
}

#[cfg(test)]
mod tests;

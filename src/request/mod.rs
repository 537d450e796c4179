//! The common request every inbound API is parsed into: a chat-completions body, or an
//! embeddings body. Parsed once, checked for the fields the gateway relies on, and
//! re-serialized for each upstream with every other field passed through unchanged.

mod limits;

pub use limits::Limits;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Map, Value};

use crate::classify::{Prompt, Role, Segment};
use crate::error::ApiError;
use crate::route::Api;

/// A validated request: a chat-completions body, or an embeddings one.
#[derive(Debug, Clone)]
pub struct Request {
    /// Which API's body this is.
    pub api: Api,
    /// The whole body, for passthrough.
    pub body: Map<String, Value>,
    pub model: String,
    pub stream: bool,
    /// The client asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Choices asked for (`n`, default 1): each may generate up to `max_tokens`.
    pub choices: u64,
    /// Size of the body as received: a bound on every billed byte of the prompt, tool
    /// schemas and arguments included.
    pub body_bytes: usize,
}

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

impl Request {
    /// Parses and checks a request body.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        Self::from_body(json_object(bytes)?, bytes.len())
    }

    /// Checks a chat-completions body an inbound API translated its request into;
    /// `body_bytes` bounds the billed bytes of its prompt, as [`Request::body_bytes`].
    pub fn from_body(body: Map<String, Value>, body_bytes: usize) -> Result<Self, ApiError> {
        let model = required_model(&body)?;
        match body.get("messages") {
            Some(Value::Array(messages)) if !messages.is_empty() => {
                for (i, m) in messages.iter().enumerate() {
                    check_message(i, m)?;
                }
            }
            Some(Value::Array(_)) => {
                return Err(bad("`messages` must not be empty", "messages"));
            }
            Some(_) => return Err(bad("`messages` must be an array", "messages")),
            None => return Err(bad("`messages` is required", "messages")),
        }
        let stream = optional_bool(&body, "stream")?.unwrap_or(false);
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => match o.get("include_usage") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(bad(
                        "`stream_options.include_usage` must be a boolean",
                        "stream_options",
                    ));
                }
            },
            Some(_) => return Err(bad("`stream_options` must be an object", "stream_options")),
        };
        let max_tokens = match optional_count(&body, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => optional_count(&body, "max_tokens")?,
        };
        let choices = optional_count(&body, "n")?.unwrap_or(1);
        if choices == 0 {
            return Err(bad("`n` must be at least 1", "n"));
        }
        match body.get("tools") {
            None | Some(Value::Null) | Some(Value::Array(_)) => {}
            Some(_) => return Err(bad("`tools` must be an array", "tools")),
        }
        match body.get("response_format") {
            None | Some(Value::Null) => {}
            Some(Value::Object(o)) if o.get("type").is_some_and(Value::is_string) => {}
            Some(_) => {
                return Err(bad(
                    "`response_format` must be an object with a string `type`",
                    "response_format",
                ));
            }
        }
        Ok(Request {
            api: Api::Chat,
            body,
            model,
            stream,
            include_usage,
            max_tokens,
            choices,
            body_bytes,
        })
    }

    /// Parses and checks an embeddings body (`POST /v1/embeddings`): `input` is a
    /// string, an array of strings, an array of token ids or an array of such arrays,
    /// none empty. Nothing is generated, so the request may generate 0 tokens.
    pub fn embeddings(bytes: &[u8]) -> Result<Self, ApiError> {
        let body = json_object(bytes)?;
        let model = required_model(&body)?;
        check_embedding_input(body.get("input"))?;
        match body.get("encoding_format") {
            None | Some(Value::Null) => {}
            Some(Value::String(f)) if f == "float" || f == "base64" => {}
            Some(_) => {
                return Err(bad(
                    "`encoding_format` must be `float` or `base64`",
                    "encoding_format",
                ));
            }
        }
        if optional_count(&body, "dimensions")? == Some(0) {
            return Err(bad("`dimensions` must be at least 1", "dimensions"));
        }
        Ok(Request {
            api: Api::Embeddings,
            body,
            model,
            stream: false,
            include_usage: false,
            max_tokens: Some(0),
            choices: 1,
            body_bytes: bytes.len(),
        })
    }

    /// The conversation as the classifier sees it, borrowed from the body.
    pub fn prompt(&self) -> Prompt<'_> {
        if self.api == Api::Embeddings {
            return self.embedding_input();
        }
        let mut prompt = Prompt {
            has_tools: self
                .body
                .get("tools")
                .and_then(Value::as_array)
                .is_some_and(|t| !t.is_empty()),
            json_mode: self
                .body
                .get("response_format")
                .and_then(|f| f.get("type"))
                .and_then(Value::as_str)
                .is_some_and(|t| t == "json_object" || t == "json_schema"),
            ..Prompt::default()
        };
        let messages = self.body.get("messages").and_then(Value::as_array);
        for (i, message) in messages.into_iter().flatten().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let role = match message.get("role").and_then(Value::as_str) {
                Some("system" | "developer") => Role::System,
                Some("assistant") => Role::Assistant,
                Some("tool" | "function") => Role::Tool,
                _ => Role::User,
            };
            prompt.messages += 1;
            match message.get("content") {
                Some(Value::String(text)) => prompt.segments.push(Segment {
                    role,
                    message: index,
                    text,
                }),
                Some(Value::Array(parts)) => {
                    for part in parts {
                        match part.get("type").and_then(Value::as_str) {
                            Some("text") => {
                                if let Some(text) = part.get("text").and_then(Value::as_str) {
                                    prompt.segments.push(Segment {
                                        role,
                                        message: index,
                                        text,
                                    });
                                }
                            }
                            Some("image_url" | "image") => prompt.images += 1,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        prompt
    }

    /// An embeddings request's input: each text one user segment, token ids counted.
    fn embedding_input(&self) -> Prompt<'_> {
        let mut prompt = Prompt::default();
        match self.body.get("input") {
            Some(Value::String(text)) => prompt.segments.push(Segment {
                role: Role::User,
                message: 0,
                text,
            }),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(text) => prompt.segments.push(Segment {
                            role: Role::User,
                            message: u32::try_from(i).unwrap_or(u32::MAX),
                            text,
                        }),
                        Value::Number(_) => prompt.token_ids += 1,
                        Value::Array(ids) => prompt.token_ids += ids.len() as u64,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        prompt
    }

    /// The body for an upstream: `model` replaced, `max_tokens` capped when a rule says
    /// so, and for streams usage requested so the gateway can meter it. Every other field
    /// is passed through as the client sent it.
    pub fn upstream_body(&self, upstream_model: &str, max_tokens_cap: Option<u64>) -> Vec<u8> {
        let body = UpstreamBody {
            request: self,
            model: upstream_model,
            // Embeddings generate nothing: their body has no output limit to set.
            cap: max_tokens_cap.filter(|_| self.api == Api::Chat),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// Serializes the client's body with the gateway's substitutions, without cloning it.
struct UpstreamBody<'a> {
    request: &'a Request,
    model: &'a str,
    cap: Option<u64>,
}

impl Serialize for UpstreamBody<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let body = &self.request.body;
        let wants_usage = self.request.stream;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in body {
            match key.as_str() {
                "model" => map.serialize_entry(key, self.model)?,
                "max_tokens" | "max_completion_tokens" if self.cap.is_some() => {
                    let limit = self.cap.unwrap_or(u64::MAX);
                    let asked = value.as_u64().unwrap_or(limit);
                    map.serialize_entry(key, &asked.min(limit))?
                }
                "stream_options" if wants_usage => {
                    map.serialize_entry(key, &StreamOptions(value.as_object()))?
                }
                _ => map.serialize_entry(key, value)?,
            }
        }
        if let Some(cap) = self.cap
            && !body.contains_key("max_tokens")
            && !body.contains_key("max_completion_tokens")
        {
            map.serialize_entry("max_tokens", &cap)?;
        }
        if wants_usage && !body.contains_key("stream_options") {
            map.serialize_entry("stream_options", &StreamOptions(None))?;
        }
        map.end()
    }
}

/// The client's `stream_options` with `include_usage` forced on.
struct StreamOptions<'a>(Option<&'a Map<String, Value>>);

impl Serialize for StreamOptions<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.into_iter().flatten() {
            if key != "include_usage" {
                map.serialize_entry(key, value)?;
            }
        }
        map.serialize_entry("include_usage", &true)?;
        map.end()
    }
}

fn required_model(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::String(_)) | None => Err(bad("`model` is required", "model")),
        Some(_) => Err(bad("`model` must be a string", "model")),
    }
}

/// `input` of an embeddings request, as OpenAI's API reference allows it.
fn check_embedding_input(input: Option<&Value>) -> Result<(), ApiError> {
    const SHAPE: &str = "`input` must be a non-empty string, an array of non-empty strings, \
                         an array of token ids or an array of arrays of token ids";
    let token = |v: &Value| v.as_u64().is_some();
    let ok = match input {
        None | Some(Value::Null) => return Err(bad("`input` is required", "input")),
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(items)) => {
            !items.is_empty()
                && (items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|t| !t.is_empty()))
                    || items.iter().all(token)
                    || items.iter().all(|i| {
                        i.as_array()
                            .is_some_and(|ids| !ids.is_empty() && ids.iter().all(token))
                    }))
        }
        Some(_) => false,
    };
    if ok { Ok(()) } else { Err(bad(SHAPE, "input")) }
}

/// A request body that must be a JSON object, or the 400 that says what it is instead.
pub fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            ApiError::bad_request("the request body must be a JSON object", None)
        } else {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"), None)
        }
    })
}

fn optional_bool(body: &Map<String, Value>, key: &'static str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("`{key}` must be a boolean"), key)),
    }
}

fn optional_count(body: &Map<String, Value>, key: &'static str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("`{key}` must be a non-negative integer"), key)),
        Some(_) => Err(bad(format!("`{key}` must be a non-negative integer"), key)),
    }
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn check_message(i: usize, message: &Value) -> Result<(), ApiError> {
    let Some(object) = message.as_object() else {
        return Err(bad(
            format!("`messages[{i}]` must be an object"),
            "messages",
        ));
    };
    match object.get("role") {
        Some(Value::String(role)) if ROLES.contains(&role.as_str()) => {}
        Some(Value::String(role)) => {
            return Err(bad(
                format!(
                    "`messages[{i}].role` `{role}` is not one of {}",
                    ROLES.join(", ")
                ),
                "messages",
            ));
        }
        _ => {
            return Err(bad(
                format!("`messages[{i}].role` is required and must be a string"),
                "messages",
            ));
        }
    }
    match object.get("content") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                if !part.get("type").is_some_and(Value::is_string) {
                    return Err(bad(
                        format!(
                            "`messages[{i}].content[{j}]` must be an object with a string `type`"
                        ),
                        "messages",
                    ));
                }
            }
            Ok(())
        }
        Some(_) => Err(bad(
            format!("`messages[{i}].content` must be a string or an array of content parts"),
            "messages",
        )),
    }
}

#[cfg(test)]
mod tests;

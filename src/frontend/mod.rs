//! The inbound APIs. Each parses its wire format into the common request and renders
//! the common result back ([`crate::pipeline::FrontEnd`]); [`crate::pipeline::serve`]
//! runs every stage between.

use serde_json::{Map, Value, json};

use crate::error::ApiError;

pub mod chat;
mod completion;
pub mod embeddings;
pub mod messages;
pub mod responses;
mod sse;

/// Bytes the translated chat body `chat` of a `client_bytes` body may bill, without
/// serializing it: the translation adds wrappers (roles, `tool_calls`, function
/// objects, data-URL prefixes) of under 96 bytes per message, content part and tool.
fn translated_bound(client_bytes: usize, chat: &Map<String, Value>) -> usize {
    let count = |key: &str| chat.get(key).and_then(Value::as_array).map_or(0, Vec::len);
    let parts: usize = chat
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| {
            m.get("content")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
                + m.get("tool_calls")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
        })
        .sum();
    client_bytes + 96 * (count("messages") + count("tools") + parts + 1)
}

fn bad(message: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

/// Copies what the translated APIs share with chat as it is: `model` (checked by
/// [`crate::request::Request::from_body`]), `temperature` and `top_p`, and
/// `stream`, for which the translated stream also asks for the usage to end with.
fn copy_common(body: &Map<String, Value>, chat: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(model) = body.get("model") {
        chat.insert("model".into(), model.clone());
    }
    for key in ["temperature", "top_p"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(n @ Value::Number(_)) => {
                chat.insert(key.into(), n.clone());
            }
            Some(_) => return Err(bad(format!("`{key}` must be a number"), key)),
        }
    }
    match body.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            chat.insert("stream".into(), json!(true));
            chat.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Some(_) => return Err(bad("`stream` must be a boolean", "stream")),
    }
    Ok(())
}

/// `tools`, each translated by `one` into a chat function tool.
fn tools(
    body: &Map<String, Value>,
    chat: &mut Map<String, Value>,
    one: fn(usize, &Value) -> Result<Value, ApiError>,
) -> Result<(), ApiError> {
    match body.get("tools") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(list)) => {
            let list = list
                .iter()
                .enumerate()
                .map(|(i, t)| one(i, t))
                .collect::<Result<Vec<_>, _>>()?;
            if !list.is_empty() {
                chat.insert("tools".into(), Value::Array(list));
            }
            Ok(())
        }
        Some(_) => Err(bad("`tools` must be an array", "tools")),
    }
}

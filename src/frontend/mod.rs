//! The inbound APIs. Each parses its wire format into the common request and renders
//! the common result back ([`crate::pipeline::FrontEnd`]); [`crate::pipeline::serve`]
//! runs every stage between.

use serde_json::{Map, Value};

pub mod chat;
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

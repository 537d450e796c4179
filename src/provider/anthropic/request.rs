//! OpenAI chat-completions request → Anthropic Messages request.

use serde_json::{Map, Value, json};

use crate::request::Request;

/// What the client sent that a Messages request cannot carry.
#[derive(Debug, thiserror::Error)]
pub enum Untranslatable {
    #[error("n > 1 is not supported by Anthropic deployments")]
    SeveralChoices,
    #[error(
        "messages[{message}]: content part type `{part}` is not supported by Anthropic deployments"
    )]
    ContentPart { message: usize, part: String },
    #[error("request body: {0}")]
    Json(#[from] serde_json::Error),
}

/// Builds the Messages body for `model`, generating at most `max_tokens` (the
/// request's resolved limit). Errors describe what the client sent that Anthropic
/// cannot take (the gateway answers them with a 400).
pub fn translate(
    request: &Request,
    model: &str,
    max_tokens: u64,
) -> Result<Vec<u8>, Untranslatable> {
    let body = &request.body;
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(Untranslatable::SeveralChoices);
    }
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, message) in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("user");
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => system.push(plain_text(content)),
            "user" => push(&mut messages, "user", blocks(i, content)?),
            "assistant" => {
                let mut out = blocks(i, content)?;
                for call in message
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let function = call.get("function").unwrap_or(&Value::Null);
                    let arguments = function
                        .get("arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}");
                    out.push(json!({
                        "type": "tool_use",
                        "id": call.get("id").and_then(Value::as_str).unwrap_or_default(),
                        "name": function.get("name").and_then(Value::as_str).unwrap_or_default(),
                        "input": serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({})),
                    }));
                }
                push(&mut messages, "assistant", out);
            }
            // Tool results travel in the next user turn.
            _ => push(
                &mut messages,
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id").and_then(Value::as_str).unwrap_or_default(),
                    "content": plain_text(content),
                })],
            ),
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    out.insert(
        "messages".into(),
        Value::Array(
            messages
                .into_iter()
                .map(|(role, content)| json!({ "role": role, "content": content }))
                .collect(),
        ),
    );
    let system = system.join("\n\n");
    if !system.is_empty() {
        out.insert("system".into(), json!(system));
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        // OpenAI's range is 0-2, Anthropic's 0-1.
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = body.get("top_p") {
        out.insert("top_p".into(), p.clone());
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) => {
            out.insert("stop_sequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if request.stream {
        out.insert("stream".into(), json!(true));
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    let tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("function"))
        .map(|f| {
            let mut tool = json!({
                "name": f.get("name").cloned().unwrap_or_default(),
                "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
            });
            if let Some(d) = f.get("description") {
                tool["description"] = d.clone();
            }
            tool
        })
        .collect();
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        let mut choice = match body.get("tool_choice") {
            Some(Value::String(s)) if s == "none" => json!({ "type": "none" }),
            Some(Value::String(s)) if s == "required" => json!({ "type": "any" }),
            Some(Value::Object(o)) => json!({
                "type": "tool",
                "name": o.get("function").and_then(|f| f.get("name")).cloned().unwrap_or_default(),
            }),
            _ => json!({ "type": "auto" }),
        };
        if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
            choice["disable_parallel_tool_use"] = json!(true);
        }
        out.insert("tool_choice".into(), choice);
    }
    Ok(serde_json::to_vec(&Value::Object(out))?)
}

/// Appends content to the conversation, merging consecutive turns of one role, as
/// Anthropic requires alternating roles.
fn push(messages: &mut Vec<(String, Vec<Value>)>, role: &str, content: Vec<Value>) {
    if content.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some((last, blocks)) if last == role => blocks.extend(content),
        _ => messages.push((role.to_owned(), content)),
    }
}

/// The text of a content value (string or text parts).
fn plain_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Content blocks of a user or assistant message.
fn blocks(message: usize, content: &Value) -> Result<Vec<Value>, Untranslatable> {
    let text = |t: &str| json!({ "type": "text", "text": t });
    match content {
        // Anthropic rejects empty text blocks.
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![text(s)]),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("text").and_then(Value::as_str) != Some(""))
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(text(
                    part.get("text").and_then(Value::as_str).unwrap_or_default(),
                )),
                Some("image_url") => {
                    let url = part
                        .get("image_url")
                        .and_then(|i| i.get("url").or(Some(i)))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    Ok(image(url))
                }
                other => Err(Untranslatable::ContentPart {
                    message,
                    part: other.unwrap_or("?").to_owned(),
                }),
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

/// An image block from a URL or a `data:` URL.
fn image(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return json!({
            "type": "image",
            "source": { "type": "base64", "media_type": media_type, "data": data },
        });
    }
    json!({ "type": "image", "source": { "type": "url", "url": url } })
}

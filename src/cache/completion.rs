//! Between the two shapes of an answer. A streamed answer is stored as the
//! chat.completion it amounts to ([`Assembler`]); a stored chat.completion is replayed
//! as chunk events to a streaming client ([`replay`]). One stored shape serves both
//! kinds of client, so `stream` stays out of the key.
//!
//! Deltas are merged the way the OpenAI SDKs accumulate them: text fields are
//! concatenated, objects merged field by field, list items with an `index` (tool calls)
//! merged by index and other list items (logprobs) appended; `role`, `type`, `id` and
//! `index` are sent whole and replaced.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::map::Entry as MapEntry;
use serde_json::{Map, Value, json};

use crate::accounting::Usage;

/// Delta fields that are sent whole, never in pieces.
const WHOLE: [&str; 4] = ["role", "type", "id", "index"];

/// Accumulates the chunks of one stream into a chat.completion.
#[derive(Default)]
pub struct Assembler {
    /// Top-level chunk fields (`id`, `created`, `model`, `system_fingerprint` ...).
    head: Map<String, Value>,
    /// By choice index, in the order they first appeared.
    choices: Vec<(u64, Choice)>,
    usage: Option<Value>,
}

#[derive(Default)]
struct Choice {
    message: Map<String, Value>,
    logprobs: Map<String, Value>,
    finish_reason: Option<Value>,
    /// Other choice fields a server sends (vLLM's `stop_reason` ...), last one wins.
    extra: Map<String, Value>,
}

/// Why a stream cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotStorable;

impl Assembler {
    /// Adds one chunk (`data:` payload). An error event or a chunk that is not a JSON
    /// object makes the whole stream unstorable.
    pub fn push(&mut self, payload: &[u8]) -> Result<(), NotStorable> {
        let Ok(Value::Object(mut chunk)) = serde_json::from_slice(payload) else {
            return Err(NotStorable);
        };
        if chunk.contains_key("error") {
            return Err(NotStorable);
        }
        if let Some(usage) = chunk.remove("usage")
            && !usage.is_null()
        {
            self.usage = Some(usage);
        }
        let choices = chunk.remove("choices");
        chunk.remove("object");
        for (key, value) in chunk {
            if !value.is_null() {
                self.head.insert(key, value);
            }
        }
        let choices = match choices {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(c)) => c,
            Some(_) => return Err(NotStorable),
        };
        for choice in choices {
            let Value::Object(mut choice) = choice else {
                return Err(NotStorable);
            };
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let acc = self.choice(index);
            if let Some(Value::Object(delta)) = choice.remove("delta") {
                merge(&mut acc.message, delta);
            }
            if let Some(Value::Object(logprobs)) = choice.remove("logprobs") {
                merge(&mut acc.logprobs, logprobs);
            }
            if let Some(reason) = choice.remove("finish_reason")
                && !reason.is_null()
            {
                acc.finish_reason = Some(reason);
            }
            choice.remove("index");
            for (key, value) in choice {
                if !value.is_null() {
                    acc.extra.insert(key, value);
                }
            }
        }
        Ok(())
    }

    fn choice(&mut self, index: u64) -> &mut Choice {
        let position = match self.choices.iter().position(|(i, _)| *i == index) {
            Some(p) => p,
            None => {
                self.choices.push((index, Choice::default()));
                self.choices.len() - 1
            }
        };
        &mut self.choices[position].1
    }

    /// The chat.completion body. `usage` fills in the usage object when the stream
    /// carried none (the gateway estimated it).
    pub fn finish(self, usage: &Usage) -> Result<Vec<u8>, NotStorable> {
        if self.choices.is_empty() {
            return Err(NotStorable);
        }
        let mut body = self.head;
        body.insert("object".into(), json!("chat.completion"));
        let choices = self
            .choices
            .into_iter()
            .map(|(index, c)| {
                let mut message = c.message;
                message.entry("role").or_insert_with(|| json!("assistant"));
                message.entry("content").or_insert(Value::Null);
                if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
                    for call in calls {
                        if let Value::Object(call) = call {
                            call.remove("index");
                        }
                    }
                }
                let mut choice = c.extra;
                choice.insert("index".into(), json!(index));
                choice.insert("message".into(), Value::Object(message));
                choice.insert(
                    "logprobs".into(),
                    if c.logprobs.is_empty() {
                        Value::Null
                    } else {
                        Value::Object(c.logprobs)
                    },
                );
                choice.insert(
                    "finish_reason".into(),
                    c.finish_reason.unwrap_or(Value::Null),
                );
                Value::Object(choice)
            })
            .collect();
        body.insert("choices".into(), Value::Array(choices));
        body.insert(
            "usage".into(),
            self.usage.unwrap_or_else(|| openai_usage(usage)),
        );
        serde_json::to_vec(&body).map_err(|_| NotStorable)
    }
}

/// Merges a delta object into what was accumulated so far.
fn merge(into: &mut Map<String, Value>, delta: Map<String, Value>) {
    for (key, value) in delta {
        let whole = WHOLE.contains(&key.as_str());
        match into.entry(key) {
            MapEntry::Vacant(slot) => {
                slot.insert(value);
            }
            MapEntry::Occupied(mut slot) => match (slot.get_mut(), value) {
                (_, Value::Null) => {}
                (Value::String(acc), Value::String(piece)) if !whole => acc.push_str(&piece),
                (Value::Object(acc), Value::Object(fields)) => merge(acc, fields),
                (Value::Array(acc), Value::Array(items)) => merge_items(acc, items),
                (acc, value) => *acc = value,
            },
        }
    }
}

/// Items with an `index` (tool calls) merge into the item of that index; others append.
fn merge_items(acc: &mut Vec<Value>, items: Vec<Value>) {
    for item in items {
        let index = item.get("index").and_then(Value::as_u64);
        let existing = index.and_then(|i| {
            acc.iter_mut()
                .find(|a| a.get("index").and_then(Value::as_u64) == Some(i))
        });
        match (existing, item) {
            (Some(Value::Object(acc)), Value::Object(fields)) => merge(acc, fields),
            (_, item) => acc.push(item),
        }
    }
}

/// The OpenAI usage object for `usage`.
fn openai_usage(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.total_input(),
        "completion_tokens": usage.output,
        "total_tokens": usage.total_input() + usage.output,
        "prompt_tokens_details": { "cached_tokens": usage.cached_input },
        "completion_tokens_details": { "reasoning_tokens": usage.reasoning },
    })
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// A stored chat.completion as the SSE body a streaming client expects: per choice,
/// one chunk with the whole message as its delta and one with the finish reason; the
/// usage chunk when the client asked for it (`stream_options.include_usage`); then
/// `[DONE]`. `None` when `body` is not a chat.completion.
pub fn replay(body: &[u8], usage: &Usage, include_usage: bool) -> Option<Bytes> {
    let Ok(Value::Object(mut head)) = serde_json::from_slice(body) else {
        return None;
    };
    let Some(Value::Array(choices)) = head.remove("choices") else {
        return None;
    };
    let stored_usage = head.remove("usage").filter(|u| !u.is_null());
    head.insert("object".into(), json!("chat.completion.chunk"));
    let mut out = BytesMut::with_capacity(body.len() + 256).writer();
    for (position, choice) in choices.into_iter().enumerate() {
        let Value::Object(mut choice) = choice else {
            return None;
        };
        let Some(Value::Object(mut delta)) = choice.remove("message") else {
            return None;
        };
        let index = choice.remove("index").unwrap_or_else(|| json!(position));
        if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
            for (i, call) in calls.iter_mut().enumerate() {
                if let Value::Object(call) = call {
                    call.insert("index".into(), json!(i));
                }
            }
        }
        let mut content = Map::new();
        content.insert("index".into(), index.clone());
        content.insert("delta".into(), Value::Object(delta));
        let logprobs = choice.remove("logprobs").unwrap_or(Value::Null);
        content.insert("logprobs".into(), logprobs);
        content.insert("finish_reason".into(), Value::Null);
        let mut finish = Map::new();
        finish.insert("index".into(), index);
        finish.insert("delta".into(), Value::Object(Map::new()));
        let reason = choice.remove("finish_reason").unwrap_or(Value::Null);
        finish.insert("finish_reason".into(), reason);
        for choice in [content, finish] {
            event(&mut out, &head, &[Value::Object(choice)], None).ok()?;
        }
    }
    if include_usage {
        let usage = stored_usage.unwrap_or_else(|| openai_usage(usage));
        event(&mut out, &head, &[], Some(&usage)).ok()?;
    }
    let mut out = out.into_inner();
    out.extend_from_slice(DONE);
    Some(out.freeze())
}

/// Writes one `data: {chunk}` event.
fn event(
    out: &mut bytes::buf::Writer<BytesMut>,
    head: &Map<String, Value>,
    choices: &[Value],
    usage: Option<&Value>,
) -> serde_json::Result<()> {
    out.get_mut().extend_from_slice(b"data: ");
    serde_json::to_writer(
        &mut *out,
        &Chunk {
            head,
            choices,
            usage,
        },
    )?;
    out.get_mut().extend_from_slice(b"\n\n");
    Ok(())
}

/// A chunk written from borrowed parts, without building a map per event.
struct Chunk<'a> {
    head: &'a Map<String, Value>,
    choices: &'a [Value],
    usage: Option<&'a Value>,
}

impl Serialize for Chunk<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.head {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("choices", self.choices)?;
        if let Some(usage) = self.usage {
            map.serialize_entry("usage", usage)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn chunk(choices: Value) -> Vec<u8> {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
            "model": "m", "system_fingerprint": "fp", "choices": choices
        })
        .to_string()
        .into_bytes()
    }

    fn assemble(chunks: &[Vec<u8>]) -> Value {
        let mut a = Assembler::default();
        for c in chunks {
            a.push(c).unwrap();
        }
        serde_json::from_slice(&a.finish(&Usage::default()).unwrap()).unwrap()
    }

    fn payloads(sse: &[u8]) -> Vec<Vec<u8>> {
        std::str::from_utf8(sse)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| d.as_bytes().to_vec())
            .collect()
    }

    fn text_stream() -> Vec<Vec<u8>> {
        vec![
            chunk(json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "finish_reason": null }])),
            chunk(json!([{ "index": 0, "delta": { "content": "Hello, " }, "finish_reason": null }])),
            chunk(json!([{ "index": 0, "delta": { "content": "world!" }, "finish_reason": null }])),
            chunk(json!([{ "index": 0, "delta": {}, "finish_reason": "stop" }])),
            json!({ "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
                    "choices": [], "usage": { "prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13 } })
                .to_string()
                .into_bytes(),
        ]
    }

    #[test]
    fn a_text_stream_becomes_a_completion() {
        let c = assemble(&text_stream());
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["id"], "chatcmpl-1");
        assert_eq!(c["model"], "m");
        assert_eq!(c["system_fingerprint"], "fp");
        assert_eq!(c["choices"][0]["index"], 0);
        assert_eq!(c["choices"][0]["message"]["role"], "assistant");
        assert_eq!(c["choices"][0]["message"]["content"], "Hello, world!");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["choices"][0]["logprobs"], Value::Null);
        assert_eq!(c["usage"]["completion_tokens"], 4);
    }

    #[test]
    fn tool_calls_merge_by_index_and_repeated_roles_do_not_concatenate() {
        let c = assemble(&[
            chunk(
                json!([{ "index": 0, "delta": { "role": "assistant", "content": null, "tool_calls": [
                { "index": 0, "id": "call_a", "type": "function", "function": { "name": "lookup", "arguments": "" } }
            ] } }]),
            ),
            chunk(
                json!([{ "index": 0, "delta": { "role": "assistant", "tool_calls": [
                { "index": 0, "function": { "arguments": "{\"q\":" } },
                { "index": 1, "id": "call_b", "type": "function", "function": { "name": "time", "arguments": "{}" } }
            ] } }]),
            ),
            chunk(json!([{ "index": 0, "delta": { "tool_calls": [
                { "index": 0, "function": { "arguments": "\"rust\"}" } }
            ] } }])),
            chunk(json!([{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }])),
        ]);
        let message = &c["choices"][0]["message"];
        assert_eq!(message["role"], "assistant");
        assert_eq!(message["content"], Value::Null);
        assert_eq!(
            message["tool_calls"],
            json!([
                { "id": "call_a", "type": "function", "function": { "name": "lookup", "arguments": "{\"q\":\"rust\"}" } },
                { "id": "call_b", "type": "function", "function": { "name": "time", "arguments": "{}" } }
            ])
        );
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn several_choices_and_logprobs_are_kept_apart() {
        let lp =
            |t: &str| json!({ "content": [{ "token": t, "logprob": -0.1, "top_logprobs": [] }] });
        let c = assemble(&[
            chunk(
                json!([{ "index": 1, "delta": { "role": "assistant", "content": "B" }, "logprobs": lp("B") }]),
            ),
            chunk(
                json!([{ "index": 0, "delta": { "role": "assistant", "content": "A" }, "logprobs": lp("A") }]),
            ),
            chunk(
                json!([{ "index": 0, "delta": { "content": "a" }, "logprobs": lp("a"), "finish_reason": "stop" }]),
            ),
            chunk(
                json!([{ "index": 1, "delta": { "content": "b" }, "logprobs": lp("b"), "finish_reason": "length" }]),
            ),
        ]);
        let choices = c["choices"].as_array().unwrap();
        let by_index = |i: u64| choices.iter().find(|c| c["index"] == i).unwrap();
        assert_eq!(by_index(0)["message"]["content"], "Aa");
        assert_eq!(by_index(1)["message"]["content"], "Bb");
        assert_eq!(by_index(1)["finish_reason"], "length");
        let tokens: Vec<&str> = by_index(0)["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token"].as_str().unwrap())
            .collect();
        assert_eq!(tokens, ["A", "a"]);
    }

    #[test]
    fn error_events_and_garbage_are_not_storable() {
        let mut a = Assembler::default();
        assert!(
            a.push(br#"{"error":{"message":"overloaded","type":"server_error"}}"#)
                .is_err()
        );
        assert!(Assembler::default().push(b"not json").is_err());
        assert!(Assembler::default().push(b"[1,2]").is_err());
        assert!(
            Assembler::default().finish(&Usage::default()).is_err(),
            "a stream without choices is not an answer"
        );
    }

    #[test]
    fn missing_usage_is_filled_in_from_the_estimate() {
        let mut chunks = text_stream();
        chunks.pop();
        let mut a = Assembler::default();
        for c in &chunks {
            a.push(c).unwrap();
        }
        let usage = Usage {
            input: 5,
            output: 4,
            estimated: true,
            ..Usage::default()
        };
        let c: Value = serde_json::from_slice(&a.finish(&usage).unwrap()).unwrap();
        assert_eq!(c["usage"]["prompt_tokens"], 5);
        assert_eq!(c["usage"]["completion_tokens"], 4);
        assert_eq!(c["usage"]["total_tokens"], 9);
    }

    #[test]
    fn replay_has_the_openai_stream_shape() {
        let body = assemble(&text_stream()).to_string();
        let sse = replay(body.as_bytes(), &Usage::default(), false).unwrap();
        let text = std::str::from_utf8(&sse).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        let events = payloads(&sse);
        assert_eq!(events.len(), 3);
        let first: Value = serde_json::from_slice(&events[0]).unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["id"], "chatcmpl-1");
        assert_eq!(first["choices"][0]["delta"]["content"], "Hello, world!");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["choices"][0]["finish_reason"], Value::Null);
        assert!(first.get("usage").is_none());
        let second: Value = serde_json::from_slice(&events[1]).unwrap();
        assert_eq!(second["choices"][0]["finish_reason"], "stop");
        assert_eq!(second["choices"][0]["delta"], json!({}));
        assert_eq!(events[2], b"[DONE]");

        let with_usage = payloads(&replay(body.as_bytes(), &Usage::default(), true).unwrap());
        assert_eq!(with_usage.len(), 4);
        let usage: Value = serde_json::from_slice(&with_usage[2]).unwrap();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 13);
    }

    #[test]
    fn replaying_and_assembling_again_gives_the_same_completion() {
        let original = assemble(&[
            chunk(
                json!([{ "index": 0, "delta": { "role": "assistant", "content": null, "tool_calls": [
                { "index": 0, "id": "call_a", "type": "function", "function": { "name": "f", "arguments": "{}" } },
                { "index": 1, "id": "call_b", "type": "function", "function": { "name": "g", "arguments": "[]" } }
            ] } }]),
            ),
            chunk(json!([{ "index": 1, "delta": { "role": "assistant", "content": "second" } }])),
            chunk(json!([{ "index": 0, "delta": {}, "finish_reason": "tool_calls" }])),
            chunk(json!([{ "index": 1, "delta": {}, "finish_reason": "stop" }])),
        ]);
        let sse = replay(original.to_string().as_bytes(), &Usage::default(), true).unwrap();
        let events = payloads(&sse);
        let again = assemble(&events[..events.len() - 1]);
        assert_eq!(again, original);
    }

    #[test]
    fn replay_refuses_what_is_not_a_completion() {
        assert!(replay(b"{}", &Usage::default(), false).is_none());
        assert!(replay(b"nope", &Usage::default(), false).is_none());
        assert!(replay(br#"{"choices":[{"index":0}]}"#, &Usage::default(), false).is_none());
    }
}

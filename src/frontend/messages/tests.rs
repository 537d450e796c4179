#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::*;
use crate::frontend::sse::tests::events;

fn chat_of(body: Value) -> Result<(Messages, Request), ApiError> {
    Messages::parse(body.to_string().as_bytes())
}

fn chat_body(body: Value) -> Value {
    let (_, request) = chat_of(body).unwrap();
    Value::Object(request.body)
}

#[test]
fn a_request_becomes_the_equivalent_chat_request() {
    let chat = chat_body(json!({
        "model": "auto",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "metadata": {"user_id": "u-7"},
        "tools": [{"name": "lookup", "description": "find", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "lookup"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu_1", "name": "lookup", "input": {"q": "x"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "tu_1", "content": [{"type": "text", "text": "a cat"}]},
                {"type": "text", "text": "So?"},
            ]},
        ],
    }));
    assert_eq!(chat["model"], "auto");
    assert_eq!(chat["max_tokens"], 300);
    assert_eq!(chat["stop"], json!(["END"]));
    assert_eq!(chat["temperature"], 0.2);
    assert_eq!(chat["user"], "u-7");
    assert_eq!(
        chat["tools"][0],
        json!({"type": "function", "function": {"name": "lookup", "description": "find", "parameters": {"type": "object"}}})
    );
    assert_eq!(
        chat["tool_choice"],
        json!({"type": "function", "function": {"name": "lookup"}})
    );
    let messages = chat["messages"].as_array().unwrap();
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "Be brief.\n\nBe kind."})
    );
    assert_eq!(
        messages[1]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})
    );
    assert_eq!(messages[2]["content"], "Let me look.");
    assert_eq!(
        messages[2]["tool_calls"][0]["function"]["arguments"],
        r#"{"q":"x"}"#
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "tu_1", "content": "a cat"})
    );
    assert_eq!(
        messages[4],
        json!({"role": "user", "content": [{"type": "text", "text": "So?"}]})
    );
    assert!(chat.get("stream").is_none());
}

#[test]
fn a_stream_asks_for_usage_and_bad_fields_are_named() {
    let (_, request) = chat_of(json!({"model": "auto", "max_tokens": 5, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    assert!(request.stream && request.include_usage);
    assert_eq!(request.max_tokens, Some(5));

    let cases = [
        (
            json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
            "max_tokens",
        ),
        (
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            "model",
        ),
        (
            json!({"model": "auto", "max_tokens": 5, "messages": []}),
            "messages",
        ),
        (
            json!({"model": "auto", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
            "messages",
        ),
        (
            json!({"model": "auto", "max_tokens": 5, "system": 3, "messages": [{"role": "user", "content": "x"}]}),
            "system",
        ),
        (
            json!({"model": "auto", "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]}),
            "max_tokens",
        ),
        (
            json!({"model": "auto", "max_tokens": 5, "tool_choice": {"type": "some"}, "messages": [{"role": "user", "content": "x"}]}),
            "tool_choice",
        ),
        (
            json!({"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]}),
            "messages",
        ),
    ];
    for (body, param) in cases {
        let Err(error) = chat_of(body.clone()) else {
            panic!("{body} should be refused");
        };
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{body}");
        let shaped: Value = serde_json::from_slice(&error_body(&error)).unwrap();
        assert_eq!(shaped["type"], "error");
        assert_eq!(shaped["error"]["type"], "invalid_request_error");
        assert!(
            shaped["error"]["message"].as_str().unwrap().contains(param),
            "{shaped} should name {param}"
        );
    }
}

#[test]
fn a_completion_becomes_a_message_with_exact_usage() {
    let chat = json!({"id": "chatcmpl-9", "model": "qwen", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "Sure.", "tool_calls": [{"id": "c1",
            "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]},
        "finish_reason": "tool_calls"}]});
    let usage = Usage {
        input: 10,
        cached_input: 4,
        cache_write: 2,
        output: 7,
        ..Usage::default()
    };
    let chat = serde_json::to_vec(&chat).unwrap();
    let completion: Completion<'_> = serde_json::from_slice(&chat).unwrap();
    let m = serde_json::to_value(message(&completion, &usage, "auto")).unwrap();
    assert_eq!(m["id"], "msg_9");
    assert_eq!(m["type"], "message");
    assert_eq!(m["model"], "qwen");
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["content"][0], json!({"type": "text", "text": "Sure."}));
    assert_eq!(
        m["content"][1],
        json!({"type": "tool_use", "id": "c1", "name": "lookup", "input": {"q": 1}})
    );
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 2, "cache_read_input_tokens": 4})
    );
}

#[test]
fn a_chat_stream_becomes_anthropics_event_sequence() {
    let mut t = MessageStream::new("auto".into());
    let mut out = Vec::new();
    let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-1", "model": "qwen", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    t.chunk(
        &chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        &mut out,
    );
    t.chunk(&chunk(json!({"content": "Hel"}), Value::Null), &mut out);
    t.chunk(&chunk(json!({"content": "lo"}), Value::Null), &mut out);
    t.chunk(
        &chunk(
            json!({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
            Value::Null,
        ),
        &mut out,
    );
    t.chunk(
        &chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
            Value::Null,
        ),
        &mut out,
    );
    t.chunk(
        &chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
            json!("tool_calls"),
        ),
        &mut out,
    );
    t.chunk(
        &json!({"id": "chatcmpl-1", "model": "qwen", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}),
        &mut out,
    );
    t.done(&mut out);
    let got = events(&out);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &got {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(got[0].1["message"]["id"], "msg_1");
    assert_eq!(
        got[3].1["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(
        got[6].1,
        json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "c1", "name": "f", "input": {}}})
    );
    assert_eq!(
        got[8].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "1}"})
    );
    assert_eq!(got[10].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(got[10].1["usage"]["input_tokens"], 12);
    assert_eq!(got[10].1["usage"]["output_tokens"], 9);
}

#[test]
fn a_broken_stream_ends_with_an_error_event_and_nothing_after() {
    let mut t = MessageStream::new("auto".into());
    let mut out = Vec::new();
    t.chunk(
        &json!({"id": "x", "model": "m", "choices": [{"index": 0, "delta": {"content": "par"}, "finish_reason": null}]}),
        &mut out,
    );
    t.error(
        &json!({"message": "the upstream ended the stream before the answer was complete", "type": "upstream_error"}),
        &mut out,
    );
    t.done(&mut out);
    let got = events(&out);
    let (name, data) = got.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(got.iter().all(|(n, _)| n != "message_stop"));
}

#[test]
fn nulls_where_upstreams_put_them_still_make_a_message() {
    let chat = br#"{"id": null, "model": "qwen", "choices": [{"index": 0, "message":
        {"role": "assistant", "content": null, "tool_calls": null}, "finish_reason": null}]}"#;
    let completion: Completion<'_> = serde_json::from_slice(chat).unwrap();
    let m = serde_json::to_value(message(&completion, &Usage::default(), "auto")).unwrap();
    assert_eq!(m["id"], "msg_crossroads");
    assert_eq!(m["content"], json!([]));
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["stop_sequence"], Value::Null);
}

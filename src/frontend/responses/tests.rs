#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::*;
use crate::frontend::sse::tests::events;

fn parsed(body: Value) -> Result<(Responses, Request), ApiError> {
    Responses::parse(body.to_string().as_bytes())
}

fn chat_body(body: Value) -> Value {
    Value::Object(parsed(body).unwrap().1.body)
}

#[test]
fn text_input_and_instructions_become_a_chat_request() {
    let chat = chat_body(json!({"model": "auto", "instructions": "Be brief.",
        "input": "Hello", "max_output_tokens": 50, "temperature": 0.3}));
    assert_eq!(
        chat["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    );
    assert_eq!(chat["max_tokens"], 50);
    assert_eq!(chat["temperature"], 0.3);
}

#[test]
fn items_tools_and_formats_translate() {
    let chat = chat_body(json!({
        "model": "auto",
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather?"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "w",
            "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
        "stream": true,
    }));
    let m = chat["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "developer", "content": "Use tools."}));
    assert_eq!(
        m[1]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}})
    );
    assert_eq!(m[2]["role"], "assistant");
    assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        m[2]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"})
    );
    assert_eq!(
        m[4],
        json!({"role": "assistant", "content": "It is sunny."})
    );
    assert_eq!(
        chat["tools"][0],
        json!({"type": "function", "function": {"name": "get_weather", "description": "w",
            "parameters": {"type": "object"}, "strict": true}})
    );
    assert_eq!(
        chat["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(
        chat["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}})
    );
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
}

#[test]
fn state_and_unsupported_fields_are_refused_by_name() {
    let cases = [
        (
            json!({"model": "auto", "input": "hi", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model": "auto", "input": "hi", "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"model": "auto", "input": "hi", "background": true}),
            "background",
        ),
        (json!({"model": "auto"}), "input"),
        (json!({"input": "hi"}), "model"),
        (json!({"model": "auto", "input": []}), "input"),
        (
            json!({"model": "auto", "input": "hi", "tools": [{"type": "web_search"}]}),
            "tools",
        ),
        (
            json!({"model": "auto", "input": [{"type": "input_file"}]}),
            "input",
        ),
        (
            json!({"model": "auto", "input": "hi", "max_output_tokens": "many"}),
            "max_output_tokens",
        ),
        (
            json!({"model": "auto", "input": "hi", "text": {"format": {"type": "yaml"}}}),
            "text",
        ),
    ];
    for (body, param) in cases {
        let Err(error) = parsed(body.clone()) else {
            panic!("{body} should be refused");
        };
        assert_eq!(error.status().as_u16(), 400, "{body}");
        let shaped: Value = serde_json::from_slice(&error.to_json()).unwrap();
        assert_eq!(shaped["error"]["param"], param, "{body}");
    }
    // `store` is accepted: the gateway keeps nothing either way.
    assert!(parsed(json!({"model": "auto", "input": "hi", "store": true})).is_ok());
}

#[test]
fn a_completion_becomes_a_response_with_exact_usage() {
    let (front, _) = parsed(json!({"model": "auto", "input": "hi", "instructions": "x",
        "max_output_tokens": 9}))
    .unwrap();
    let chat = json!({"id": "chatcmpl-7", "created": 5, "model": "qwen", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "Hi!", "tool_calls": [{"id": "c1",
            "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        "finish_reason": "length"}]});
    let usage = Usage {
        input: 6,
        cached_input: 4,
        output: 9,
        ..Usage::default()
    };
    let body = front.json(Bytes::from(chat.to_string()), &usage);
    let r: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(r["id"], "resp_7");
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(r["instructions"], "x");
    assert_eq!(r["max_output_tokens"], 9);
    assert_eq!(r["output"][0]["type"], "message");
    assert_eq!(r["output"][0]["content"][0]["text"], "Hi!");
    assert_eq!(
        r["output"][1],
        json!({"type": "function_call", "id": "fc_c1", "call_id": "c1", "name": "f",
            "arguments": "{}", "status": "completed"})
    );
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 9, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 19})
    );
}

#[test]
fn a_chat_stream_becomes_the_responses_event_sequence() {
    let (front, _) = parsed(json!({"model": "auto", "input": "hi", "stream": true})).unwrap();
    let mut t = ResponseStream::new(front);
    let mut out = Vec::new();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-3", "created": 1, "model": "qwen",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    t.chunk(
        &chunk(json!({"role": "assistant", "content": "Hel"}), Value::Null),
        &mut out,
    );
    t.chunk(&chunk(json!({"content": "lo"}), Value::Null), &mut out);
    t.chunk(
        &chunk(
            json!({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{\"a\""}}]}),
            Value::Null,
        ),
        &mut out,
    );
    t.chunk(
        &chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            json!("tool_calls"),
        ),
        &mut out,
    );
    t.chunk(
        &json!({"id": "chatcmpl-3", "model": "qwen", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5}}),
        &mut out,
    );
    t.done(&mut out);
    let got = events(&out);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, (name, data)) in got.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i as u64);
    }
    assert_eq!(got[0].1["response"]["id"], "resp_3");
    assert_eq!(got[0].1["response"]["status"], "in_progress");
    assert_eq!(got[6].1["text"], "Hello");
    assert_eq!(got[13].1["item"]["arguments"], "{\"a\":1}");
    let done = &got[14].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["id"], got[2].1["item"]["id"]);
    assert_eq!(done["output"][1]["id"], "fc_c1");
    assert_eq!(done["usage"]["input_tokens"], 12);
    assert_eq!(done["usage"]["output_tokens"], 5);
}

#[test]
fn a_broken_stream_ends_with_error_and_response_failed() {
    let (front, _) = parsed(json!({"model": "auto", "input": "hi", "stream": true})).unwrap();
    let mut t = ResponseStream::new(front);
    let mut out = Vec::new();
    t.chunk(
        &json!({"id": "x", "model": "m", "choices": [{"index": 0, "delta": {"content": "par"}, "finish_reason": null}]}),
        &mut out,
    );
    t.error(
        &json!({"message": "cut", "type": "upstream_error", "code": "upstream_unavailable"}),
        &mut out,
    );
    t.done(&mut out);
    let got = events(&out);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[names.len() - 2..], ["error", "response.failed"]);
    assert_eq!(got[got.len() - 2].1["message"], "cut");
    assert_eq!(got[got.len() - 1].1["response"]["status"], "failed");
    assert!(!names.contains(&"response.completed"));
}

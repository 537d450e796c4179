#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::response::{StreamTranslator, completion};
use super::*;

fn translated(body: Value) -> Value {
    let request = Request::parse(body.to_string().as_bytes()).unwrap();
    serde_json::from_slice(
        &request::translate(&request, "claude-x", limit(&request, None)).unwrap(),
    )
    .unwrap()
}

/// The `max_tokens` the pipeline resolves for `request` under `cap`, 1000 by default.
fn limit(request: &Request, cap: Option<u64>) -> u64 {
    crate::request::Limits::resolve(request, cap, 1000)
        .max_tokens
        .unwrap_or(1000)
}

#[test]
fn translates_system_turns_images_tools_and_parameters() {
    let out = translated(json!({
        "model": "auto",
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "developer", "content": "Use metric units." },
            { "role": "user", "content": [
                { "type": "text", "text": "What is in this picture?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBOR" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/cat.jpg" } }
            ]},
            { "role": "assistant", "content": "Let me check.", "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } }
            ]},
            { "role": "tool", "tool_call_id": "call_1", "content": "18C" },
            { "role": "user", "content": "Thanks" }
        ],
        "tools": [{ "type": "function", "function": { "name": "weather", "description": "Weather now", "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "temperature": 1.7,
        "top_p": 0.9,
        "stop": "END",
        "user": "u-42"
    }));
    assert_eq!(out["model"], "claude-x");
    assert_eq!(
        out["max_tokens"], 1000,
        "the default when the client sets none"
    );
    assert_eq!(out["system"], "Be brief.\n\nUse metric units.");
    assert_eq!(out["temperature"], 1.0);
    assert_eq!(out["top_p"], 0.9);
    assert_eq!(out["stop_sequences"], json!(["END"]));
    assert_eq!(out["metadata"]["user_id"], "u-42");
    assert_eq!(
        out["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(
        out["tool_choice"],
        json!({ "type": "any", "disable_parallel_tool_use": true })
    );
    let messages = out["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    // The tool result and the next user message merge into one user turn.
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(
        messages[0]["content"][1]["source"],
        json!({ "type": "base64", "media_type": "image/png", "data": "iVBOR" })
    );
    assert_eq!(
        messages[0]["content"][2]["source"],
        json!({ "type": "url", "url": "https://example.com/cat.jpg" })
    );
    assert_eq!(
        messages[1]["content"][1],
        json!({ "type": "tool_use", "id": "call_1", "name": "weather", "input": { "city": "Paris" } })
    );
    assert_eq!(
        messages[2]["content"][0],
        json!({ "type": "tool_result", "tool_use_id": "call_1", "content": "18C" })
    );
    assert_eq!(
        messages[2]["content"][1],
        json!({ "type": "text", "text": "Thanks" })
    );
}

#[test]
fn max_tokens_follows_the_client_and_the_rule_cap() {
    let request = Request::parse(
        br#"{"model":"auto","messages":[{"role":"user","content":"x"}],"max_tokens":300}"#,
    )
    .unwrap();
    let out: Value = serde_json::from_slice(
        &request::translate(&request, "m", limit(&request, Some(200))).unwrap(),
    )
    .unwrap();
    assert_eq!(out["max_tokens"], 200);
    let out: Value =
        serde_json::from_slice(&request::translate(&request, "m", limit(&request, None)).unwrap())
            .unwrap();
    assert_eq!(out["max_tokens"], 300);
}

#[test]
fn n_above_one_is_refused() {
    let request =
        Request::parse(br#"{"model":"auto","messages":[{"role":"user","content":"x"}],"n":2}"#)
            .unwrap();
    assert!(request::translate(&request, "m", 10).is_err());
}

#[test]
fn completion_maps_content_tools_stop_reason_and_usage() {
    let (body, usage) = completion(
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } }
            ],
            "stop_reason": "tool_use",
            "usage": { "input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 500, "cache_creation_input_tokens": 50 }
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let out: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out["choices"][0]["message"]["content"], "Checking.");
    let call = &out["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({ "city": "Paris" })
    );
    // Anthropic counts cached tokens outside input_tokens: none is counted twice.
    assert_eq!(
        (
            usage.input,
            usage.cached_input,
            usage.cache_write,
            usage.output
        ),
        (100, 500, 50, 20)
    );
    assert_eq!(out["usage"]["prompt_tokens"], 650);
    let reparsed = crate::accounting::Usage::from(
        serde_json::from_value::<crate::accounting::usage::OpenAiUsage>(out["usage"].clone())
            .unwrap(),
    );
    assert_eq!(reparsed, usage);
}

fn event(kind: &str, data: Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

#[test]
fn stream_events_become_chunks_with_tool_call_deltas_and_usage() {
    let events = [
        event("message_start", json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1,"cache_read_input_tokens":10}}})),
        event("content_block_start", json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})),
        event("ping", json!({"type":"ping"})),
        event("content_block_delta", json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})),
        event("content_block_stop", json!({"type":"content_block_stop","index":0})),
        event("content_block_start", json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}})),
        event("content_block_delta", json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}})),
        event("content_block_delta", json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}})),
        event("content_block_stop", json!({"type":"content_block_stop","index":1})),
        event("message_delta", json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}})),
        event("message_stop", json!({"type":"message_stop"})),
    ]
    .concat();
    let mut t = StreamTranslator::default();
    // Feed in awkward pieces: events split across reads must still translate.
    let mut out = Vec::new();
    for piece in events.as_bytes().chunks(7) {
        out.extend_from_slice(&t.feed(piece).unwrap());
    }
    assert!(t.finished());
    let text = String::from_utf8(out).unwrap();
    let data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(*data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hi");
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    let start = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"] == "toolu_1")
        .unwrap();
    assert_eq!(
        start["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "weather"
    );
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"][0]["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "tool_calls");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 35);
    assert_eq!(usage["completion_tokens"], 42);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 10);
}

#[test]
fn stream_error_events_become_errors() {
    let mut t = StreamTranslator::default();
    let err = t
        .feed(
            event(
                "error",
                json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
            )
            .as_bytes(),
        )
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Server);
    assert!(err.message.contains("Overloaded"));
}

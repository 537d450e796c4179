//! One suite, every provider adapter: the same client-side cases run against an
//! OpenAI-wire and an Anthropic-wire scripted upstream. Clients always speak the OpenAI
//! API; each adapter must give them the same answers, usage and errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

/// How one provider speaks, for the scripted upstream.
#[derive(Clone, Copy, Debug)]
enum Wire {
    OpenAi,
    Anthropic,
}

const WIRES: [Wire; 2] = [Wire::OpenAi, Wire::Anthropic];

impl Wire {
    /// The deployment block for `frontier-a` in this wire.
    fn deployment(self, url: &str) -> String {
        match self {
            Wire::OpenAi => format!(
                "provider = \"openai_compatible\"\nbase_url = \"{url}\"\nmodel = \"gpt-4.1\""
            ),
            Wire::Anthropic => format!(
                "provider = \"anthropic\"\nbase_url = \"{url}\"\nmodel = \"gpt-4.1\"\napi_key_env = \"{ANTHROPIC_KEY_ENV}\"\ndefault_max_tokens = 777"
            ),
        }
    }

    fn text(self, text: &str, input: u64, output: u64) -> Scripted {
        Scripted::json(match self {
            Wire::OpenAi => completion("gpt-4.1", text, input, output),
            Wire::Anthropic => json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "gpt-4.1",
                "content": [{ "type": "text", "text": text }],
                "stop_reason": "end_turn",
                "usage": { "input_tokens": input, "output_tokens": output }
            }),
        })
    }

    fn tool_call(self) -> Scripted {
        Scripted::json(match self {
            Wire::OpenAi => json!({
                "id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
                "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": null,
                    "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } }]
                }}],
                "usage": { "prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60 }
            }),
            Wire::Anthropic => json!({
                "id": "msg_2", "type": "message", "role": "assistant", "model": "gpt-4.1",
                "content": [{ "type": "tool_use", "id": "call_1", "name": "weather", "input": { "city": "Paris" } }],
                "stop_reason": "tool_use",
                "usage": { "input_tokens": 50, "output_tokens": 10 }
            }),
        })
    }

    fn stream(self, words: &[&str], input: u64, output: u64) -> Scripted {
        match self {
            Wire::OpenAi => Scripted::sse(
                chunks("gpt-4.1", words, Some((input, output))),
                StreamEnd::Done,
            ),
            Wire::Anthropic => {
                let mut events = vec![
                    json!({"type":"message_start","message":{"id":"msg_3","type":"message","role":"assistant","content":[],"model":"gpt-4.1","stop_reason":null,"usage":{"input_tokens":input,"output_tokens":1}}}),
                    json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
                    json!({"type":"ping"}),
                ];
                for w in words {
                    events.push(json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":w}}));
                }
                events.push(json!({"type":"content_block_stop","index":0}));
                events.push(json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":output}}));
                events.push(json!({"type":"message_stop"}));
                Scripted::sse(events, StreamEnd::Close)
            }
        }
    }

    fn stream_tool_call(self) -> Scripted {
        match self {
            Wire::OpenAi => Scripted::sse(
                vec![
                    json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]}),
                    json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]}),
                    json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]}),
                    json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}),
                    json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":50,"completion_tokens":10,"total_tokens":60}}),
                ],
                StreamEnd::Done,
            ),
            Wire::Anthropic => Scripted::sse(
                vec![
                    json!({"type":"message_start","message":{"id":"msg_4","type":"message","role":"assistant","content":[],"model":"gpt-4.1","usage":{"input_tokens":50,"output_tokens":1}}}),
                    json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"call_1","name":"weather","input":{}}}),
                    json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}),
                    json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}),
                    json!({"type":"content_block_stop","index":0}),
                    json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":10}}),
                    json!({"type":"message_stop"}),
                ],
                StreamEnd::Close,
            ),
        }
    }

    fn error(self, status: u16, kind: &str, message: &str) -> Scripted {
        Scripted::status(
            status,
            match self {
                Wire::OpenAi => json!({ "error": { "message": message, "type": kind } }),
                Wire::Anthropic => {
                    json!({ "type": "error", "error": { "type": kind, "message": message } })
                }
            },
        )
    }

    fn broken_stream(self) -> Scripted {
        match self {
            Wire::OpenAi => {
                let mut events = chunks("gpt-4.1", &["Hel"], None);
                events.pop();
                Scripted::sse(events, StreamEnd::Abort)
            }
            Wire::Anthropic => Scripted::sse(
                vec![
                    json!({"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"gpt-4.1","usage":{"input_tokens":5,"output_tokens":1}}}),
                    json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}),
                    json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
                ],
                StreamEnd::Close,
            ),
        }
    }
}

/// A gateway whose `frontier-a` speaks `wire`, with `frontier-b` (OpenAI wire) behind it.
async fn setup(wire: Wire, reply: Scripted) -> (Gateway, Upstream, Upstream) {
    let local = Upstream::start(Scripted::Hang).await;
    let fa = Upstream::start(reply).await;
    let fb = Upstream::start(Scripted::json(completion("gpt-4.1-mini", "fallback", 1, 1))).await;
    let config = standard_config(&local.base_url(), &fa.base_url(), &fb.base_url()).replace(
        &format!(
            "provider = \"openai_compatible\"\nbase_url = \"{}\"\nmodel = \"gpt-4.1\"",
            fa.base_url()
        ),
        &wire.deployment(&fa.base_url()),
    );
    (Gateway::start(&config).await, fa, fb)
}

fn stream(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

#[tokio::test]
async fn text_completion() {
    for wire in WIRES {
        let (gw, fa, _) = setup(wire, wire.text("Bonjour", 120, 30)).await;
        let r = gw.chat(user("frontier", "Say hello in French")).await;
        assert_eq!(r.status(), 200, "{wire:?}");
        assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-a");
        // gpt-4.1 prices: 120 × $2/M + 30 × $8/M.
        assert_eq!(r.headers()["x-crossroads-cost-usd"], "0.00048", "{wire:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion", "{wire:?}");
        assert_eq!(
            body["choices"][0]["message"]["content"], "Bonjour",
            "{wire:?}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop", "{wire:?}");
        assert_eq!(body["usage"]["prompt_tokens"], 120, "{wire:?}");
        let rows = gw.ledger_rows().await;
        assert_eq!(
            (
                rows[0]["input_tokens"].clone(),
                rows[0]["output_tokens"].clone()
            ),
            (json!(120), json!(30)),
            "{wire:?}"
        );
        assert_eq!(
            rows[0]["provider"],
            match wire {
                Wire::OpenAi => "openai_compatible",
                Wire::Anthropic => "anthropic",
            }
        );
        if let Wire::Anthropic = wire {
            let got = &fa.received()[0];
            assert_eq!(got.path, "/v1/messages");
            assert_eq!(got.headers["x-api-key"], ANTHROPIC_KEY);
            assert_eq!(got.headers["anthropic-version"], "2023-06-01");
            assert_eq!(got.body["max_tokens"], 777);
            assert_eq!(
                got.body["messages"][0]["content"][0]["text"],
                "Say hello in French"
            );
        }
    }
}

#[tokio::test]
async fn tool_call_round_trip() {
    for wire in WIRES {
        let (gw, _, _) = setup(wire, wire.tool_call()).await;
        let mut body = user("frontier", "Weather in Paris?");
        body["tools"] = json!([{ "type": "function", "function": { "name": "weather", "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }]);
        let r: Value = gw.chat(body).await.json().await.unwrap();
        let choice = &r["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{wire:?}");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "call_1", "{wire:?}");
        assert_eq!(call["function"]["name"], "weather", "{wire:?}");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({ "city": "Paris" }), "{wire:?}");
    }
}

#[tokio::test]
async fn streamed_text_with_exact_usage() {
    for wire in WIRES {
        let (gw, _, _) = setup(wire, wire.stream(&["Bon", "jour"], 40, 6)).await;
        let data = sse_data(gw.chat(stream(user("frontier", "Say hello"))).await).await;
        assert_eq!(data.last().unwrap(), "[DONE]", "{wire:?}");
        let chunks: Vec<Value> = data
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Bonjour", "{wire:?}");
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk"),
            "{wire:?}"
        );
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop"),
            "{wire:?}"
        );
        assert!(
            chunks.iter().all(|c| !c["usage"].is_object()),
            "{wire:?}: usage chunk not asked for"
        );
        let rows = gw.ledger_rows().await;
        assert_eq!(rows[0]["usage_estimated"], 0, "{wire:?}");
        assert_eq!(
            (
                rows[0]["input_tokens"].clone(),
                rows[0]["output_tokens"].clone()
            ),
            (json!(40), json!(6)),
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn streamed_tool_call_deltas() {
    for wire in WIRES {
        let (gw, _, _) = setup(wire, wire.stream_tool_call()).await;
        let mut body = stream(user("frontier", "Weather in Paris?"));
        body["tools"] = json!([{ "type": "function", "function": { "name": "weather", "parameters": { "type": "object" } } }]);
        let data = sse_data(gw.chat(body).await).await;
        let chunks: Vec<Value> = data
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(calls[0]["id"], "call_1", "{wire:?}");
        assert_eq!(calls[0]["function"]["name"], "weather", "{wire:?}");
        let args: String = calls
            .iter()
            .filter_map(|c| c["function"]["arguments"].as_str())
            .collect();
        assert_eq!(args, "{\"city\":\"Paris\"}", "{wire:?}");
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"),
            "{wire:?}"
        );
        assert_eq!(data.last().unwrap(), "[DONE]");
    }
}

#[tokio::test]
async fn invalid_requests_are_passed_on_as_400() {
    for wire in WIRES {
        let (gw, _, fb) = setup(
            wire,
            wire.error(
                400,
                "invalid_request_error",
                "messages: roles must alternate",
            ),
        )
        .await;
        let (status, error) = error_of(gw.chat(user("frontier", "hi")).await).await;
        assert_eq!(status, 400, "{wire:?}");
        assert_eq!(
            error["message"], "messages: roles must alternate",
            "{wire:?}"
        );
        assert_eq!(fb.hits(), 0, "{wire:?}");
    }
}

#[tokio::test]
async fn overload_and_rate_limits_fall_back() {
    for wire in WIRES {
        for (status, kind) in [
            (529, "overloaded_error"),
            (503, "overloaded_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
        ] {
            let (gw, _, fb) = setup(wire, wire.error(status, kind, "busy")).await;
            let r = gw.chat(user("frontier", "hi")).await;
            assert_eq!(r.status(), 200, "{wire:?} {status}");
            assert_eq!(
                r.headers()["x-crossroads-deployment"],
                "frontier-b",
                "{wire:?} {status}"
            );
            assert_eq!(fb.hits(), 1);
        }
    }
}

#[tokio::test]
async fn mid_stream_errors_end_with_one_error_event() {
    for wire in WIRES {
        let (gw, _, _) = setup(wire, wire.broken_stream()).await;
        let data = sse_data(gw.chat(stream(user("frontier", "hi"))).await).await;
        assert_eq!(data.last().unwrap(), "[DONE]", "{wire:?}");
        let errors = data.iter().filter(|d| d.contains("\"error\"")).count();
        assert_eq!(errors, 1, "{wire:?}: {data:?}");
        let rows = gw.ledger_rows().await;
        assert_eq!(rows[0]["error_kind"], "stream_interrupted", "{wire:?}");
    }
}

#[tokio::test]
async fn anthropic_cache_tokens_are_priced_once() {
    let reply = Scripted::json(json!({
        "id": "msg", "type": "message", "role": "assistant", "model": "gpt-4.1",
        "content": [{ "type": "text", "text": "ok" }],
        "stop_reason": "end_turn",
        "usage": { "input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200 }
    }));
    let (gw, _, _) = setup(Wire::Anthropic, reply).await;
    let r = gw.chat(user("frontier", "hi")).await;
    // gpt-4.1 prices: 100 × $2 + 1000 × $0.50 + 200 × $2 (cache writes default to input) + 10 × $8, per 1M.
    assert_eq!(r.headers()["x-crossroads-cost-usd"], "0.00118");
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["input_tokens"], 100);
    assert_eq!(rows[0]["cached_input_tokens"], 1000);
    assert_eq!(rows[0]["cache_write_tokens"], 200);
}

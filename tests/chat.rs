//! Non-streamed chat completions: routing, passthrough, headers, ledger and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

async fn setup() -> (Gateway, Upstream, Upstream, Upstream) {
    let local = Upstream::start(Scripted::json(completion(
        "local-model",
        "local says hi",
        12,
        5,
    )))
    .await;
    let fa = Upstream::start(Scripted::json(completion(
        "gpt-4.1",
        "frontier says hi",
        1000,
        200,
    )))
    .await;
    let fb = Upstream::start(Scripted::json(completion(
        "gpt-4.1-mini",
        "mini says hi",
        10,
        2,
    )))
    .await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fb.base_url(),
    ))
    .await;
    (gw, local, fa, fb)
}

#[tokio::test]
async fn auto_routes_code_to_local_and_the_rest_to_frontier() {
    let (gw, local, fa, _fb) = setup().await;

    let r = gw
        .chat(user(
            "auto",
            "Write a Python function that reverses a string.",
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-rule"], "code-local");
    assert_eq!(r.headers()["x-crossroads-deployment"], "local-a");
    assert_eq!(r.headers()["x-crossroads-tier"], "local");
    assert_eq!(r.headers()["x-crossroads-class"], "coding");
    assert_eq!(r.headers()["x-crossroads-cost-usd"], "0");
    assert!(
        r.headers()["x-crossroads-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "local says hi");

    let r = gw
        .chat(user("auto", "Tell me about the history of Rome."))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-rule"], "default");
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-a");
    // 1000 input tokens at $2/M + 200 output at $8/M = 0.002 + 0.0016.
    assert_eq!(r.headers()["x-crossroads-cost-usd"], "0.0036");

    assert_eq!(local.hits(), 1);
    assert_eq!(fa.hits(), 1);
    assert_eq!(local.received()[0].body["model"], "local-model");
    assert_eq!(fa.received()[0].body["model"], "gpt-4.1");
    assert_eq!(fa.received()[0].path, "/v1/chat/completions");
}

#[tokio::test]
async fn named_alias_goes_to_its_pool() {
    let (gw, local, fa, _fb) = setup().await;
    let r = gw.chat(user("frontier", "Write a Python function.")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-rule"], "alias");
    assert_eq!(r.headers()["x-crossroads-pool"], "frontier");
    assert_eq!((local.hits(), fa.hits()), (0, 1));
}

#[tokio::test]
async fn pii_rule_overrides_a_named_alias() {
    let (gw, local, fa, _fb) = setup().await;
    let r = gw
        .chat(user(
            "frontier",
            "My email is jane.doe@example.com, please draft a reply.",
        ))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-rule"], "pii-local");
    assert_eq!((local.hits(), fa.hits()), (1, 0));
}

#[tokio::test]
async fn unknown_fields_and_sampling_parameters_pass_through_unchanged() {
    let (gw, _local, fa, _fb) = setup().await;
    let body = json!({
        "model": "frontier",
        "messages": [{ "role": "user", "content": "hello" }],
        "temperature": 0.3,
        "top_p": 0.9,
        "n": 2,
        "stop": ["\n\n", "END"],
        "seed": 42,
        "logprobs": true,
        "top_logprobs": 3,
        "response_format": { "type": "json_object" },
        "tools": [{ "type": "function", "function": { "name": "lookup", "parameters": { "type": "object", "properties": { "q": { "type": "string" } } } } }],
        "tool_choice": { "type": "function", "function": { "name": "lookup" } },
        "user": "end-user-7",
        "x_vendor_extension": { "nested": [1, 2, { "deep": true }] }
    });
    let r = gw.chat(body.clone()).await;
    assert_eq!(r.status(), 200);
    let sent = &fa.received()[0].body;
    for key in [
        "temperature",
        "top_p",
        "n",
        "stop",
        "seed",
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "user",
        "x_vendor_extension",
        "messages",
    ] {
        assert_eq!(sent[key], body[key], "field {key} changed on the way");
    }
    assert_eq!(sent["model"], "gpt-4.1");
    assert!(sent.get("stream_options").is_none());
}

#[tokio::test]
async fn ledger_row_has_exact_tokens_and_cost() {
    let (gw, _local, _fa, _fb) = setup().await;
    let mut body = user("auto", "Tell me a fact about the sea.");
    body["user"] = json!("alice");
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 200);
    let request_id = r.headers()["x-crossroads-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let rows = gw.ledger_rows().await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["request_id"], json!(request_id));
    assert_eq!(row["requested_model"], "auto");
    assert_eq!(row["end_user"], "alice");
    assert_eq!(row["rule"], "default");
    assert_eq!(row["pool"], "frontier");
    assert_eq!(row["deployment"], "frontier-a");
    assert_eq!(row["tier"], "frontier");
    assert_eq!(row["upstream_model"], "gpt-4.1");
    assert_eq!(row["status"], 200);
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["input_tokens"], 1000);
    assert_eq!(row["output_tokens"], 200);
    assert_eq!(row["usage_estimated"], 0);
    // $0.0036 in pico-dollars; the reference model is the same, so no savings.
    assert_eq!(row["cost_pusd"], 3_600_000_000i64);
    assert_eq!(row["reference_cost_pusd"], 3_600_000_000i64);
    assert_eq!(row["stream"], 0);
    assert!(row["latency_us"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn local_requests_record_their_savings() {
    let (gw, _local, _fa, _fb) = setup().await;
    let r = gw
        .chat(user("auto", "Write a Rust function that sums a vector."))
        .await;
    assert_eq!(r.headers()["x-crossroads-deployment"], "local-a");
    let rows = gw.ledger_rows().await;
    let row = &rows[0];
    assert_eq!(row["cost_pusd"], 0);
    assert_eq!(row["task"], "coding");
    // 12 input at $2/M + 5 output at $8/M = 24 + 40 micro-dollars.
    assert_eq!(row["reference_cost_pusd"], 64_000_000i64);
}

#[tokio::test]
async fn cached_prompt_tokens_are_priced_once() {
    let (gw, _local, fa, _fb) = setup().await;
    fa.push(Scripted::json(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "ok" }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100,
                   "prompt_tokens_details": { "cached_tokens": 1500 },
                   "completion_tokens_details": { "reasoning_tokens": 40 } }
    })));
    let r = gw.chat(user("frontier", "hello")).await;
    // 500 × $2/M + 1500 × $0.50/M + 100 × $8/M = 1000 + 750 + 800 micro-dollars.
    assert_eq!(r.headers()["x-crossroads-cost-usd"], "0.00255");
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["input_tokens"], 500);
    assert_eq!(rows[0]["cached_input_tokens"], 1500);
    assert_eq!(rows[0]["output_tokens"], 100);
    assert_eq!(rows[0]["reasoning_tokens"], 40);
}

#[tokio::test]
async fn missing_usage_is_estimated_and_marked() {
    let (gw, local, _fa, _fb) = setup().await;
    local.push(Scripted::json(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "local-model",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "twelve chars" }, "finish_reason": "stop" }]
    })));
    let r = gw.chat(user("local", "hello there")).await;
    assert_eq!(r.status(), 200);
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["usage_estimated"], 1);
    // Counted with the tokenizer: a local model gets cl100k_base, the closest public one.
    assert_eq!(
        rows[0]["output_tokens"],
        tiktoken("cl100k_base", "twelve chars")
    );
    assert_eq!(
        rows[0]["input_tokens"],
        tiktoken_prompt("cl100k_base", &["hello there"])
    );
}

#[tokio::test]
async fn missing_usage_of_an_openai_model_is_counted_with_its_encoding() {
    let (gw, _local, fa, _fb) = setup().await;
    // Text on which o200k_base and cl100k_base disagree.
    let answer = "Ünïcödé, 数字 12345678 and emoji 🙂 — the encodings split these differently.";
    fa.push(Scripted::json(json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": answer }, "finish_reason": "stop" }]
    })));
    let mut body = user("frontier", "Count the tokens, por favor: ça va?");
    body["messages"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({ "role": "system", "content": "Be brief." }));
    let r = gw.chat(body).await;
    assert_eq!(r.status(), 200);
    let cost_header = r.headers()["x-crossroads-cost-usd"]
        .to_str()
        .unwrap()
        .to_owned();
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["usage_estimated"], 1);
    let output = tiktoken("o200k_base", answer);
    assert_ne!(output, tiktoken("cl100k_base", answer));
    assert_eq!(rows[0]["output_tokens"], output);
    let input = tiktoken_prompt(
        "o200k_base",
        &["Be brief.", "Count the tokens, por favor: ça va?"],
    );
    assert_eq!(rows[0]["input_tokens"], input);
    // Priced from the counts: gpt-4.1 at $2 input and $8 output per 1M tokens.
    let pico = (input * 2_000_000 + output * 8_000_000) as i64;
    assert_eq!(rows[0]["cost_pusd"], pico);
    assert_eq!(
        cost_header,
        crossroads::accounting::Usd::from_pico(pico).to_string()
    );
}

#[tokio::test]
async fn models_lists_auto_and_aliases() {
    let (gw, ..) = setup().await;
    let r = gw.get("/v1/models").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["auto", "frontier", "local"]);
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["object"] == "model")
    );
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let (gw, ..) = setup().await;
    assert_eq!(gw.get("/healthz").await.status(), 200);
    assert_eq!(gw.get("/readyz").await.status(), 200);
}

#[tokio::test]
async fn graceful_stop_flushes_every_record() {
    let (gw, ..) = setup().await;
    for _ in 0..20 {
        assert_eq!(gw.chat(user("auto", "hi")).await.status(), 200);
    }
    assert_eq!(gw.stop().await.len(), 20);
}

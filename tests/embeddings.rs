//! `POST /v1/embeddings` through a running gateway and a scripted OpenAI-compatible
//! embeddings upstream: routed by alias to its own pool, the body passed through with
//! the model swapped, priced at the input price into the ledger, cached, limited like
//! chat, listed by `GET /v1/models`, and OpenAI-shaped 400s for bad bodies and for a
//! model of the other API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

const KEY: &str = "ck-test-key-embed";

/// An embeddings list as OpenAI returns it: one 3-d vector per input.
fn vectors(inputs: usize, prompt_tokens: Option<u64>) -> Value {
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.25, -0.5, i as f64]}))
        .collect();
    let mut body = json!({"object": "list", "data": data, "model": "text-embedding-3-small"});
    if let Some(n) = prompt_tokens {
        body["usage"] = json!({"prompt_tokens": n, "total_tokens": n});
    }
    body
}

/// The standard config plus an embeddings deployment at `embed`'s URL behind the
/// alias `embed`, priced at $1 per million input tokens, and `extra` appended.
fn config(local: &Upstream, fa: &Upstream, embed: &Upstream, extra: &str) -> String {
    format!(
        r#"{}
[[deployments]]
id = "embed-a"
provider = "openai_compatible"
api = "embeddings"
base_url = "{}"
model = "text-embedding-3-small"
tier = "frontier"
connect_timeout_ms = 500
first_byte_timeout_ms = 1000
price = {{ input = 1, output = 0 }}

[[pools]]
id = "embed"
deployments = ["embed-a"]

[[aliases]]
name = "embed"
pool = "embed"
description = "text-embedding-3-small"
{extra}
"#,
        standard_config(&local.base_url(), &fa.base_url(), &fa.base_url()),
        embed.base_url()
    )
}

struct Setup {
    gw: Gateway,
    local: Upstream,
    fa: Upstream,
    embed: Upstream,
}

async fn setup(reply: Value, extra: &str) -> Setup {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "ok", 1, 1))).await;
    let embed = Upstream::start(Scripted::json(reply)).await;
    let gw = Gateway::start(&config(&local, &fa, &embed, extra)).await;
    Setup {
        gw,
        local,
        fa,
        embed,
    }
}

async fn embed(gw: &Gateway, body: &Value) -> reqwest::Response {
    embed_as(gw, None, body).await
}

async fn embed_as(gw: &Gateway, key: Option<&str>, body: &Value) -> reqwest::Response {
    let mut request = gw.client.post(gw.url("/v1/embeddings")).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn an_embeddings_request_is_routed_by_alias_priced_recorded_and_cached() {
    let s = setup(vectors(2, Some(8)), "\n[cache]\nbackend = \"memory\"\n").await;
    let ask = json!({"model": "embed", "input": ["hello there", "general kenobi"],
        "encoding_format": "float", "dimensions": 3, "user": "u-1"});
    let r = embed(&s.gw, &ask).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-pool"], "embed");
    assert_eq!(r.headers()["x-crossroads-deployment"], "embed-a");
    assert_eq!(r.headers()["x-crossroads-rule"], "alias");
    assert_eq!(r.headers()["x-crossroads-cache"], "miss");
    // 8 tokens at $1 per million.
    assert_eq!(r.headers()["x-crossroads-cost-usd"], "0.000008");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, vectors(2, Some(8)));

    let sent = s.embed.received().pop().unwrap();
    assert_eq!(sent.path, "/v1/embeddings");
    let mut expected = ask.clone();
    expected["model"] = json!("text-embedding-3-small");
    assert_eq!(sent.body, expected, "passed through with the model swapped");
    assert_eq!(s.local.hits() + s.fa.hits(), 0, "no chat deployment called");

    s.gw.state.cache.as_ref().unwrap().flush().await;
    let again = embed(&s.gw, &ask).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["x-crossroads-cache"], "hit");
    assert_eq!(again.json::<Value>().await.unwrap(), vectors(2, Some(8)));
    assert_eq!(s.embed.hits(), 1, "the hit called no upstream");

    let rows = s.gw.ledger_rows().await;
    assert_eq!(rows.len(), 2);
    let (miss, hit) = (&rows[0], &rows[1]);
    assert_eq!(miss["endpoint"], "embeddings");
    assert_eq!(miss["requested_model"], "embed");
    assert_eq!(miss["upstream_model"], "text-embedding-3-small");
    assert_eq!(miss["end_user"], "u-1");
    assert_eq!(miss["input_tokens"], 8);
    assert_eq!(miss["output_tokens"], 0);
    assert_eq!(miss["cost_pusd"], 8_000_000);
    // No savings claimed against the chat reference model on a served request ...
    assert_eq!(miss["reference_cost_pusd"], 8_000_000);
    // ... and a hit saves what its pool would have charged.
    assert_eq!(hit["cache_hit"], 1);
    assert_eq!(hit["cost_pusd"], 0);
    assert_eq!(hit["reference_cost_pusd"], 8_000_000);
}

#[tokio::test]
async fn an_upstream_without_usage_is_counted_with_the_tokenizer() {
    let s = setup(vectors(1, None), "").await;
    let r = embed(&s.gw, &json!({"model": "embed", "input": "hello world"})).await;
    assert_eq!(r.status(), 200);
    let rows = s.gw.ledger_rows().await;
    assert_eq!(rows[0]["usage_estimated"], 1);
    assert_eq!(
        rows[0]["input_tokens"].as_u64().unwrap(),
        tiktoken("cl100k_base", "hello world")
    );
    // Token ids are counted as they are.
    let ids = json!({"model": "embed", "input": [[1, 2, 3], [4, 5]]});
    assert_eq!(embed(&s.gw, &ids).await.status(), 200);
    assert_eq!(s.gw.ledger_rows().await[1]["input_tokens"], 5);
}

#[tokio::test]
async fn malformed_embeddings_bodies_get_openai_400s_naming_the_field() {
    let s = setup(vectors(1, Some(1)), "").await;
    let cases = [
        (json!({"input": "x"}), "model"),
        (json!({"model": 7, "input": "x"}), "model"),
        (json!({"model": "embed"}), "input"),
        (json!({"model": "embed", "input": ""}), "input"),
        (json!({"model": "embed", "input": []}), "input"),
        (json!({"model": "embed", "input": ["a", ""]}), "input"),
        (json!({"model": "embed", "input": ["a", 1]}), "input"),
        (json!({"model": "embed", "input": [[1, -2]]}), "input"),
        (json!({"model": "embed", "input": [[]]}), "input"),
        (json!({"model": "embed", "input": {"text": "a"}}), "input"),
        (
            json!({"model": "embed", "input": "a", "encoding_format": "hex"}),
            "encoding_format",
        ),
        (
            json!({"model": "embed", "input": "a", "dimensions": 0}),
            "dimensions",
        ),
        (
            json!({"model": "embed", "input": "a", "dimensions": "3"}),
            "dimensions",
        ),
    ];
    for (body, param) in cases {
        let (status, error) = error_of(embed(&s.gw, &body).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        assert_eq!(error["param"], param, "{body}");
    }
    let raw =
        s.gw.client
            .post(s.gw.url("/v1/embeddings"))
            .body("{\"model\": \"embed\", \"input\": ")
            .send()
            .await
            .unwrap();
    assert_eq!(error_of(raw).await.0, 400);
    assert_eq!(s.embed.hits(), 0);
}

#[tokio::test]
async fn a_model_of_the_other_api_is_a_400_that_says_where_to_send_it() {
    let s = setup(vectors(1, Some(1)), "").await;
    for model in ["auto", "frontier"] {
        let (status, error) =
            error_of(embed(&s.gw, &json!({"model": model, "input": "hi"})).await).await;
        assert_eq!(status, 400, "{model}");
        assert_eq!(error["param"], "model");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("embeddings model"),
            "{error}"
        );
    }
    let (status, error) = error_of(s.gw.chat(user("embed", "hi")).await).await;
    assert_eq!(status, 400);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("POST /v1/embeddings"),
        "{error}"
    );
    let (status, error) =
        error_of(embed(&s.gw, &json!({"model": "nope", "input": "hi"})).await).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (404, Some("model_not_found"))
    );
    assert_eq!(s.embed.hits() + s.local.hits() + s.fa.hits(), 0);

    let models: Value = s.gw.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"embed"), "{ids:?}");
}

#[tokio::test]
async fn embeddings_count_against_the_keys_rate_limit_and_budget() {
    let keys = format!(
        "\n[auth]\nrequired = true\n\n[[keys]]\nid = \"indexer\"\nsha256 = \"{}\"\nrpm = 2\n\
         budget = {{ usd = 0.00004, period = \"day\" }}\n",
        sha(KEY)
    );
    let s = setup(vectors(1, Some(8)), &keys).await;
    let ask = json!({"model": "embed", "input": "hi"});
    assert_eq!(embed(&s.gw, &ask).await.status(), 401);
    assert_eq!(embed_as(&s.gw, Some(KEY), &ask).await.status(), 200);
    // A reservation is the body's bytes (30) plus 3 as tokens at the input price,
    // $0.000033: the first fits the $0.00004 budget, and after it spent $0.000008
    // the next no longer does.
    let (status, error) = error_of(embed_as(&s.gw, Some(KEY), &ask).await).await;
    assert_eq!(status, 429);
    assert_eq!(error["code"], "insufficient_quota");
    let (status, error) = error_of(embed_as(&s.gw, Some(KEY), &ask).await).await;
    assert_eq!(status, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert_eq!(s.embed.hits(), 1);
    let rows = s.gw.ledger_rows().await;
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["endpoint"] == "embeddings"));
    assert_eq!(rows[1]["key_id"], "indexer");
}

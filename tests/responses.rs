//! `POST /v1/responses` through a running gateway and a scripted OpenAI-compatible
//! upstream: the Response shape out, the same exact cost as the equivalent chat
//! request, the Responses event stream, a cut stream ending with `error` and
//! `response.failed`, and OpenAI-shaped 400s for state the gateway does not keep.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

async fn setup(reply: Scripted) -> (Gateway, [Upstream; 2]) {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(reply).await;
    let gw = Gateway::start(&standard_config(
        &local.base_url(),
        &fa.base_url(),
        &fa.base_url(),
    ))
    .await;
    (gw, [local, fa])
}

async fn post(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    gw.client
        .post(gw.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_response_has_the_responses_shape_and_the_chat_requests_cost() {
    let (gw, [_, fa]) = setup(Scripted::json(completion("gpt-4.1", "Hello!", 11, 3))).await;
    let ask = json!({"model": "frontier", "instructions": "Be kind.", "input": "Say hello",
        "max_output_tokens": 64});
    let r = post(&gw, "/v1/responses", &ask).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-tier"], "frontier");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "response");
    assert_eq!(body["status"], "completed");
    assert_eq!(body["output"][0]["content"][0]["text"], "Hello!");
    assert_eq!(body["usage"]["input_tokens"], 11);
    assert_eq!(body["usage"]["output_tokens"], 3);
    let sent = fa.received().pop().unwrap().body;
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be kind."})
    );

    let chat = json!({"model": "frontier", "max_tokens": 64, "messages": [
        {"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hello"}]});
    assert_eq!(post(&gw, "/v1/chat/completions", &chat).await.status(), 200);
    let rows = gw.ledger_rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["endpoint"], "responses");
    assert_eq!(rows[1]["endpoint"], "chat.completions");
    assert_eq!(rows[0]["cost_pusd"], rows[1]["cost_pusd"]);
    assert_ne!(rows[0]["cost_pusd"], 0);
}

#[tokio::test]
async fn a_streamed_response_has_the_typed_events_and_the_chat_streams_cost() {
    let chunks = chunks("gpt-4.1", &["Hello", ", ", "world"], Some((9, 4)));
    let (gw, _upstreams) = setup(Scripted::sse(chunks, StreamEnd::Done)).await;
    let ask = json!({"model": "frontier", "input": "Say hello", "stream": true});
    let r = post(&gw, "/v1/responses", &ask).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let got = named_events(r).await;
    assert_eq!(got[0].0, "response.created");
    let (last, done) = got.last().unwrap();
    assert_eq!(last, "response.completed");
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "Hello, world"
    );
    assert_eq!(done["response"]["usage"]["input_tokens"], 9);
    assert_eq!(done["response"]["usage"]["output_tokens"], 4);
    let text: String = got
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .filter_map(|(_, d)| d["delta"].as_str())
        .collect();
    assert_eq!(text, "Hello, world");

    let chat = json!({"model": "frontier", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Say hello"}]});
    let _ = sse_data(post(&gw, "/v1/chat/completions", &chat).await).await;
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["endpoint"], "responses");
    assert_eq!(rows[0]["stream"], 1);
    assert_eq!(rows[0]["cost_pusd"], rows[1]["cost_pusd"]);
}

#[tokio::test]
async fn a_cut_stream_ends_with_error_and_response_failed() {
    let mut chunks = chunks("gpt-4.1", &["Hello", ", ", "world"], None);
    chunks.truncate(2);
    let (gw, _upstreams) = setup(Scripted::sse(chunks, StreamEnd::Abort)).await;
    let ask = json!({"model": "frontier", "input": "Say hello", "stream": true});
    let got = named_events(post(&gw, "/v1/responses", &ask).await).await;
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[names.len() - 2..],
        ["error", "response.failed"],
        "{names:?}"
    );
    assert!(!names.contains(&"response.completed"));
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["error_kind"], "stream_interrupted");
}

#[tokio::test]
async fn state_the_gateway_does_not_keep_is_a_400_naming_the_field() {
    let (gw, [_, fa]) = setup(Scripted::json(completion("gpt-4.1", "Hello!", 11, 3))).await;
    let ask = json!({"model": "frontier", "input": "again", "previous_response_id": "resp_1"});
    let (status, error) = error_of(post(&gw, "/v1/responses", &ask).await).await;
    assert_eq!(status, 400);
    assert_eq!(error["param"], "previous_response_id");
    assert_eq!(error["type"], "invalid_request_error");
    let r = gw
        .client
        .post(gw.url("/v1/responses"))
        .body("[1, 2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(fa.hits(), 0);
}

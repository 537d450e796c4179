//! `POST /v1/messages` through a running gateway and a scripted OpenAI-compatible
//! upstream: the Anthropic shapes out, the same stages and the same exact cost as the
//! equivalent chat request, Anthropic-shaped errors, and a cut stream ending with an
//! `error` event recorded as such.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

const KEY: &str = "ck-messages-test";

fn config(local: &Upstream, fa: &Upstream) -> String {
    format!(
        "{}\n[auth]\nrequired = true\n\n[[keys]]\nid = \"agent\"\nsha256 = \"{}\"\n",
        standard_config(&local.base_url(), &fa.base_url(), &fa.base_url()),
        sha(KEY)
    )
}

async fn post(gw: &Gateway, path: &str, key: &str, body: &Value) -> reqwest::Response {
    gw.client
        .post(gw.url(path))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

fn ask(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}]})
}

#[tokio::test]
async fn a_message_is_answered_in_anthropics_shape_and_priced_like_chat() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "Hello!", 11, 3))).await;
    let gw = Gateway::start(&config(&local, &fa)).await;

    let r = post(&gw, "/v1/messages", KEY, &ask("frontier", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-a");
    let message: Value = r.json().await.unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Hello!"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["input_tokens"], 11);
    assert_eq!(message["usage"]["output_tokens"], 3);
    let sent = fa.received().pop().unwrap().body;
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Say hello"}])
    );

    // The same question as a chat request: the same exact cost in the ledger.
    let chat = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "frontier", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let rows = gw.ledger_rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["endpoint"], "messages");
    assert_eq!(rows[0]["key_id"], "agent");
    assert_eq!(rows[1]["endpoint"], "chat.completions");
    assert_eq!(rows[0]["cost_pusd"], rows[1]["cost_pusd"]);
    assert_ne!(rows[0]["cost_pusd"], 0);
}

#[tokio::test]
async fn a_streamed_message_has_anthropics_events_and_the_chat_streams_cost() {
    let events = chunks("gpt-4.1", &["Hello", ", ", "world"], Some((9, 4)));
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::sse(events, StreamEnd::Done)).await;
    let gw = Gateway::start(&config(&local, &fa)).await;

    let r = post(&gw, "/v1/messages", KEY, &ask("frontier", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let got = named_events(r).await;
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let text: String = got
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "Hello, world");
    let delta = &got[got.len() - 2].1;
    assert_eq!(delta["usage"]["input_tokens"], 9);
    assert_eq!(delta["usage"]["output_tokens"], 4);
    assert_eq!(
        fa.received().pop().unwrap().body["stream_options"],
        json!({"include_usage": true})
    );

    let mut chat = json!({"model": "frontier", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "Say hello"}]});
    chat["stream_options"] = json!({"include_usage": true});
    let r = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat)
        .send()
        .await
        .unwrap();
    let _ = sse_data(r).await;
    let rows = gw.ledger_rows().await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["endpoint"], "messages");
    assert_eq!(rows[0]["status"], 200);
    assert_eq!(rows[0]["cost_pusd"], rows[1]["cost_pusd"]);
    assert_eq!(rows[0]["output_tokens"], 4);
}

#[tokio::test]
async fn a_cut_stream_ends_with_an_error_event_and_is_recorded_as_cut() {
    let mut events = chunks("gpt-4.1", &["Hello", ", ", "world"], None);
    events.truncate(2);
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::sse(events, StreamEnd::Abort)).await;
    let gw = Gateway::start(&config(&local, &fa)).await;

    let r = post(&gw, "/v1/messages", KEY, &ask("frontier", true)).await;
    assert_eq!(r.status(), 200);
    let got = named_events(r).await;
    let (name, data) = got.last().unwrap();
    assert_eq!(name, "error", "{got:?}");
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert!(got.iter().all(|(n, _)| n != "message_stop"));
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["error_kind"], "stream_interrupted");
    assert_ne!(rows[0]["status"], 200);
}

#[tokio::test]
async fn errors_take_anthropics_shape_and_status() {
    let local = Upstream::start(Scripted::json(completion("l", "ok", 1, 1))).await;
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "Hello!", 11, 3))).await;
    let gw = Gateway::start(&config(&local, &fa)).await;

    let error_of = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.unwrap())
    };
    let (status, body) =
        error_of(post(&gw, "/v1/messages", "ck-wrong", &ask("frontier", false)).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    // Bearer works as well as x-api-key.
    let r = gw
        .client
        .post(gw.url("/v1/messages"))
        .bearer_auth(KEY)
        .json(&ask("frontier", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let mut no_max = ask("frontier", false);
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let (status, body) = error_of(post(&gw, "/v1/messages", KEY, &no_max).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );

    let r = gw
        .client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(r).await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "error");

    let (status, body) =
        error_of(post(&gw, "/v1/messages", KEY, &ask("claude-nope", false)).await).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "not_found_error");
    let rows = gw.ledger_rows().await;
    assert!(rows.iter().all(|r| r["endpoint"] == "messages"));
}

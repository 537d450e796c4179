//! Streamed chat completions: chunk order, `[DONE]`, the usage chunk stripped or kept
//! as the client asked, metering, and broken streams ending with an error event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const WORDS: [&str; 4] = ["Hello", ", ", "world", "!"];

async fn setup(reply: Scripted) -> (Gateway, Upstream) {
    let fa = Upstream::start(reply).await;
    let other = Upstream::start(Scripted::Hang).await;
    let gw = Gateway::start(&standard_config(
        &other.base_url(),
        &fa.base_url(),
        &other.base_url(),
    ))
    .await;
    (gw, fa)
}

fn stream_body(include_usage: Option<bool>) -> Value {
    let mut body = user("frontier", "Say hello");
    body["stream"] = json!(true);
    if let Some(u) = include_usage {
        body["stream_options"] = json!({ "include_usage": u });
    }
    body
}

fn content_of(data: &[String]) -> String {
    data.iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn usage_chunk_is_stripped_when_the_client_did_not_ask() {
    let (gw, fa) = setup(Scripted::sse(
        chunks("gpt-4.1", &WORDS, Some((9, 4))),
        StreamEnd::Done,
    ))
    .await;
    let r = gw.chat(stream_body(None)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["x-crossroads-deployment"], "frontier-a");
    let data = sse_data(r).await;
    assert_eq!(content_of(&data), "Hello, world!");
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
    assert!(
        data.iter().all(|d| !d.contains("\"usage\":{")),
        "usage leaked: {data:?}"
    );
    // The gateway asked the upstream for usage anyway.
    assert_eq!(
        fa.received()[0].body["stream_options"]["include_usage"],
        true
    );

    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["stream"], 1);
    assert_eq!(rows[0]["input_tokens"], 9);
    assert_eq!(rows[0]["output_tokens"], 4);
    assert_eq!(rows[0]["usage_estimated"], 0);
    // 9 × $2/M + 4 × $8/M = 18 + 32 micro-dollars.
    assert_eq!(rows[0]["cost_pusd"], 50_000_000i64);
    assert!(rows[0]["ttft_us"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn usage_chunk_is_kept_when_the_client_asked() {
    let (gw, _fa) = setup(Scripted::sse(
        chunks("gpt-4.1", &WORDS, Some((9, 4))),
        StreamEnd::Done,
    ))
    .await;
    let data = sse_data(gw.chat(stream_body(Some(true))).await).await;
    let usage: Vec<Value> = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["usage"]["completion_tokens"], 4);
    // It comes right before [DONE], as OpenAI sends it.
    assert_eq!(data[data.len() - 1], "[DONE]");
    assert!(data[data.len() - 2].contains("\"usage\""));
}

#[tokio::test]
async fn explicit_include_usage_false_is_respected() {
    let (gw, fa) = setup(Scripted::sse(
        chunks("gpt-4.1", &WORDS, Some((9, 4))),
        StreamEnd::Done,
    ))
    .await;
    let data = sse_data(gw.chat(stream_body(Some(false))).await).await;
    assert!(data.iter().all(|d| !d.contains("\"usage\":{")));
    assert_eq!(
        fa.received()[0].body["stream_options"]["include_usage"],
        true
    );
}

#[tokio::test]
async fn chunks_are_forwarded_as_they_arrive() {
    let events: Vec<String> = chunks("gpt-4.1", &["a", "b", "c"], None)
        .iter()
        .map(Value::to_string)
        .collect();
    let (gw, _fa) = setup(Scripted::Sse {
        events,
        gap: Duration::from_millis(150),
        end: StreamEnd::Done,
    })
    .await;
    let started = Instant::now();
    let r = gw.chat(stream_body(None)).await;
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();
    // Five events 150 ms apart: the first must arrive long before the last.
    assert!(
        first_at < Duration::from_millis(450),
        "first chunk after {first_at:?}"
    );
    assert!(
        total >= Duration::from_millis(700),
        "whole stream took {total:?}"
    );
}

#[tokio::test]
async fn streams_without_usage_are_estimated() {
    let (gw, _fa) = setup(Scripted::sse(
        chunks("gpt-4.1", &WORDS, None),
        StreamEnd::Done,
    ))
    .await;
    let data = sse_data(gw.chat(stream_body(None)).await).await;
    assert_eq!(content_of(&data), "Hello, world!");
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["usage_estimated"], 1);
    // Counted with gpt-4.1's encoding, over the text as a whole.
    assert_eq!(
        rows[0]["output_tokens"],
        tiktoken("o200k_base", "Hello, world!")
    );
    assert_eq!(
        rows[0]["input_tokens"],
        tiktoken_prompt("o200k_base", &["Say hello"])
    );
}

#[tokio::test]
async fn upstream_closing_after_finish_reason_still_ends_with_done() {
    let (gw, _fa) = setup(Scripted::sse(
        chunks("gpt-4.1", &WORDS, None),
        StreamEnd::Close,
    ))
    .await;
    let data = sse_data(gw.chat(stream_body(None)).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(data.iter().all(|d| !d.contains("\"error\"")));
    assert_eq!(gw.ledger_rows().await[0]["status"], 200);
}

async fn assert_broken_stream_reports_error(end: StreamEnd) {
    // No finish chunk: the answer is cut short.
    let mut events = chunks("gpt-4.1", &WORDS, None);
    events.pop();
    let (gw, _fa) = setup(Scripted::sse(events, end)).await;
    let data = sse_data(gw.chat(stream_body(None)).await).await;
    assert_eq!(content_of(&data), "Hello, world!");
    assert_eq!(data.last().unwrap(), "[DONE]");
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert!(error["error"]["message"].is_string(), "{data:?}");
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["error_kind"], "stream_interrupted");
    assert!(rows[0]["status"].as_i64().unwrap() >= 500);
    assert_eq!(rows[0]["usage_estimated"], 1);
    // What was generated before the cut is counted, and paid for.
    let output = tiktoken("o200k_base", "Hello, world!");
    let input = tiktoken_prompt("o200k_base", &["Say hello"]);
    assert_eq!(rows[0]["output_tokens"], output);
    assert_eq!(rows[0]["input_tokens"], input);
    assert_eq!(
        rows[0]["cost_pusd"],
        (input * 2_000_000 + output * 8_000_000) as i64
    );
}

#[tokio::test]
async fn truncated_stream_ends_with_an_error_event() {
    assert_broken_stream_reports_error(StreamEnd::Close).await;
}

#[tokio::test]
async fn aborted_stream_ends_with_an_error_event() {
    assert_broken_stream_reports_error(StreamEnd::Abort).await;
}

#[tokio::test]
async fn stalled_stream_times_out_with_an_error_event() {
    assert_broken_stream_reports_error(StreamEnd::Stall).await;
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_still_recorded() {
    let events: Vec<String> = chunks("gpt-4.1", &["a", "b", "c", "d", "e", "f"], None)
        .iter()
        .map(Value::to_string)
        .collect();
    let (gw, _fa) = setup(Scripted::Sse {
        events,
        gap: Duration::from_millis(100),
        end: StreamEnd::Done,
    })
    .await;
    let r = gw.chat(stream_body(None)).await;
    let mut body = r.bytes_stream();
    let _ = body.next().await;
    drop(body);
    // The gateway notices when it next writes.
    eventually("the cut stream's record", || async {
        !gw.ledger_rows().await.is_empty()
    })
    .await;
    let rows = gw.ledger_rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], 499);
    assert_eq!(rows[0]["error_kind"], "client_disconnected");
}

#[tokio::test]
async fn clients_that_ask_get_an_estimated_usage_chunk_when_the_upstream_sends_none() {
    let (gw, _fa) = setup(Scripted::sse(
        chunks("gpt-4.1", &WORDS, None),
        StreamEnd::Done,
    ))
    .await;
    let data = sse_data(gw.chat(stream_body(Some(true))).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    let output = tiktoken("o200k_base", "Hello, world!");
    let input = tiktoken_prompt("o200k_base", &["Say hello"]);
    assert_eq!(usage["usage"]["completion_tokens"], output);
    assert_eq!(usage["usage"]["prompt_tokens"], input);
    assert_eq!(usage["id"], "chatcmpl-s");
    // The ledger records what the client was told.
    let rows = gw.ledger_rows().await;
    assert_eq!(rows[0]["output_tokens"], output);
    assert_eq!(rows[0]["input_tokens"], input);
    assert_eq!(rows[0]["usage_estimated"], 1);
}

#[tokio::test]
async fn estimated_output_never_exceeds_max_tokens() {
    let words = [" word"; 12];
    assert!(tiktoken("o200k_base", &words.concat()) > 8);
    let (gw, _fa) = setup(Scripted::sse(
        chunks("gpt-4.1", &words, None),
        StreamEnd::Done,
    ))
    .await;
    let mut body = stream_body(None);
    body["max_tokens"] = json!(8);
    sse_data(gw.chat(body).await).await;
    assert_eq!(gw.ledger_rows().await[0]["output_tokens"], 8);
}

#[tokio::test]
async fn a_stream_that_arrives_in_one_read_still_records_time_to_first_token() {
    let (gw, _fa) = setup(Scripted::Sse {
        events: chunks("gpt-4.1", &["hi"], Some((3, 1)))
            .iter()
            .map(Value::to_string)
            .collect(),
        gap: Duration::ZERO,
        end: StreamEnd::Done,
    })
    .await;
    sse_data(gw.chat(stream_body(None)).await).await;
    assert!(gw.ledger_rows().await[0]["ttft_us"].as_i64().is_some());
    assert!(
        gw.metrics()
            .await
            .contains("crossroads_time_to_first_token_seconds_count{tier=\"frontier\"} 1")
    );
}

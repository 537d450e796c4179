//! The response cache end to end: misses then hits without an upstream call, what
//! splits the key and what does not, `Cache-Control`, stream replays and streams
//! stored once complete, what is never stored, TTL and size bound, the ledger and the
//! metrics, teams that share only their own answers (and hits that pass budgets). The semantic tests run against both backends: the in-memory one and the
//! Redis server at 127.0.0.1:6379 (`CROSSROADS_TEST_REDIS_URL` overrides it), each
//! run under a key prefix of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::redis_server::{redis_url, test_redis, unique_prefix};
use common::*;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Memory,
    Redis,
}

struct Setup {
    gw: Gateway,
    /// `frontier-a`, where `model: "frontier"` goes.
    fa: Upstream,
    /// `local-a`, where `model: "local"` goes.
    local: Upstream,
    prefix: String,
}

impl Setup {
    /// Waits until every cache write started so far is stored.
    async fn settle(&self) {
        self.gw.state.cache.as_ref().unwrap().flush().await;
    }

    async fn chat_with(&self, body: &Value, cache_control: &str) -> reqwest::Response {
        self.gw
            .client
            .post(self.gw.url("/v1/chat/completions"))
            .header("cache-control", cache_control)
            .json(body)
            .send()
            .await
            .unwrap()
    }
}

/// The `[cache]` section for `backend` with extra `settings` lines. Redis entries of
/// tests live a minute unless the settings say otherwise.
fn cache_section(backend: Backend, prefix: &str, settings: &str) -> String {
    let ttl = if settings.contains("ttl_ms") {
        ""
    } else {
        "ttl_ms = 60000\n"
    };
    match backend {
        Backend::Memory => format!("\n[cache]\nbackend = \"memory\"\n{settings}\n"),
        Backend::Redis => format!(
            "\n[cache]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\n{ttl}{settings}\n",
            redis_url()
        ),
    }
}

/// A gateway with a cache on `backend`; `frontier-a` answers with `reply`. `None` when
/// the backend is Redis and no Redis runs here (outside CI).
async fn start_with(backend: Backend, settings: &str, reply: Scripted) -> Option<Setup> {
    if backend == Backend::Redis && test_redis("a Redis cache test").await.is_none() {
        return None;
    }
    let fa = Upstream::start(reply).await;
    let local = Upstream::start(Scripted::json(completion(
        "local-model",
        "local says hi",
        12,
        5,
    )))
    .await;
    let prefix = unique_prefix("cache");
    let config = standard_config(&local.base_url(), &fa.base_url(), &refused_url().await)
        + &cache_section(backend, &prefix, settings);
    let gw = Gateway::start(&config).await;
    Some(Setup {
        gw,
        fa,
        local,
        prefix,
    })
}

async fn start(backend: Backend) -> Option<Setup> {
    start_with(
        backend,
        "",
        Scripted::json(completion("gpt-4.1", "frontier says hi", 1000, 200)),
    )
    .await
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn ask(text: &str) -> Value {
    user("frontier", text)
}

fn streaming(mut body: Value, include_usage: Option<bool>) -> Value {
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

/// Runs each named `async fn(Backend)` as a test for both backends.
macro_rules! for_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod redis_backend {
            $(#[tokio::test] async fn $name() { super::$name(super::Backend::Redis).await })*
        }
    };
}

for_both_backends!(
    miss_then_hit_calls_the_upstream_once,
    json_key_order_is_irrelevant,
    user_metadata_and_stream_stay_out_of_the_key,
    temperature_messages_and_pool_split_the_key,
    no_cache_skips_the_lookup_and_no_store_the_write,
    a_streaming_hit_is_an_sse_replay,
    a_streamed_answer_is_cached_once_complete,
    errors_are_not_cached,
    broken_streams_are_not_cached,
    entries_expire_after_the_ttl,
    a_hit_is_recorded_at_zero_cost_with_the_original_usage,
    metrics_count_hits_misses_and_bypasses,
);

async fn miss_then_hit_calls_the_upstream_once(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let first = s.gw.chat(ask("Say hello")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-crossroads-cache"), "miss");
    assert_eq!(header(&first, "x-crossroads-deployment"), "frontier-a");
    let first: Value = first.json().await.unwrap();
    s.settle().await;

    let second = s.gw.chat(ask("Say hello")).await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-crossroads-cache"), "hit");
    assert_eq!(header(&second, "x-crossroads-cost-usd"), "0");
    assert_eq!(header(&second, "x-crossroads-pool"), "frontier");
    assert_eq!(header(&second, "content-type"), "application/json");
    assert!(second.headers().get("x-crossroads-deployment").is_none());
    let second: Value = second.json().await.unwrap();
    assert_eq!(second, first);
    assert_eq!(s.fa.hits(), 1);
}

async fn json_key_order_is_irrelevant(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let a = r#"{"model":"frontier","temperature":0.5,"messages":[{"role":"user","content":"Order?"}],
                "response_format":{"type":"json_schema","json_schema":{"name":"o","schema":{"type":"object","required":["a"]}}}}"#;
    let b = r#"{"response_format":{"json_schema":{"schema":{"required":["a"],"type":"object"},"name":"o"},"type":"json_schema"},
                "messages":[{"content":"Order?","role":"user"}],"temperature":0.50,"model":"frontier"}"#;
    let r = s.gw.chat_raw(a).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    s.settle().await;
    let r = s.gw.chat_raw(b).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-crossroads-cache"), "hit");
    assert_eq!(s.fa.hits(), 1);
}

async fn user_metadata_and_stream_stay_out_of_the_key(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let mut body = ask("Who are you?");
    body["user"] = json!("alice");
    let r = s.gw.chat(body.clone()).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    s.settle().await;

    body["user"] = json!("bob");
    body["metadata"] = json!({ "trace": "t-1" });
    body["stream"] = json!(false);
    let r = s.gw.chat(body.clone()).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "hit");

    let r = s.gw.chat(streaming(body, Some(true))).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "hit");
    assert_eq!(header(&r, "content-type"), "text/event-stream");
    assert_eq!(s.fa.hits(), 1);
}

async fn temperature_messages_and_pool_split_the_key(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let mut body = ask("Name a colour.");
    body["temperature"] = json!(0.2);
    assert_eq!(
        header(&s.gw.chat(body.clone()).await, "x-crossroads-cache"),
        "miss"
    );
    s.settle().await;

    let mut warmer = body.clone();
    warmer["temperature"] = json!(0.9);
    assert_eq!(
        header(&s.gw.chat(warmer).await, "x-crossroads-cache"),
        "miss"
    );
    let mut other = body.clone();
    other["messages"][0]["content"] = json!("Name a fruit.");
    assert_eq!(
        header(&s.gw.chat(other).await, "x-crossroads-cache"),
        "miss"
    );
    assert_eq!(s.fa.hits(), 3);

    // The same request routed to another pool is another answer.
    let mut local = body.clone();
    local["model"] = json!("local");
    let r = s.gw.chat(local).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    assert_eq!(header(&r, "x-crossroads-pool"), "local");
    assert_eq!(s.local.hits(), 1);

    s.settle().await;
    assert_eq!(header(&s.gw.chat(body).await, "x-crossroads-cache"), "hit");
    assert_eq!(s.fa.hits(), 3);
}

async fn no_cache_skips_the_lookup_and_no_store_the_write(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let body = ask("Tell me a fact.");

    let r = s.chat_with(&body, "no-store").await;
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    s.settle().await;
    // Nothing was stored: a miss again, and this one is stored.
    let r = s.gw.chat(body.clone()).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    s.settle().await;
    assert_eq!(s.fa.hits(), 2);

    // no-store still reads.
    let r = s.chat_with(&body, "no-store").await;
    assert_eq!(header(&r, "x-crossroads-cache"), "hit");
    // no-cache skips the lookup and goes upstream.
    let r = s.chat_with(&body, "max-age=0, No-Cache").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-crossroads-cache"), "bypass");
    assert_eq!(s.fa.hits(), 3);
    let r = s.chat_with(&body, "no-cache, no-store").await;
    assert_eq!(header(&r, "x-crossroads-cache"), "bypass");
    assert_eq!(s.fa.hits(), 4);

    s.settle().await;
    assert_eq!(header(&s.gw.chat(body).await, "x-crossroads-cache"), "hit");
    assert_eq!(s.fa.hits(), 4);
}

async fn a_streaming_hit_is_an_sse_replay(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let body = ask("Say hello");
    assert_eq!(
        header(&s.gw.chat(body.clone()).await, "x-crossroads-cache"),
        "miss"
    );
    s.settle().await;

    for include_usage in [None, Some(false)] {
        let r = s.gw.chat(streaming(body.clone(), include_usage)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-crossroads-cache"), "hit");
        assert_eq!(header(&r, "content-type"), "text/event-stream");
        assert!(r.headers().get("x-crossroads-cost-usd").is_none());
        let data = sse_data(r).await;
        assert_eq!(content_of(&data), "frontier says hi");
        assert_eq!(data.last().unwrap(), "[DONE]");
        assert_eq!(data.iter().filter(|d| *d == "[DONE]").count(), 1);
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk" && c.get("usage").is_none()),
            "{data:?}"
        );
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            "stop"
        );
    }

    let data = sse_data(s.gw.chat(streaming(body, Some(true))).await).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 1000);
    assert_eq!(usage["usage"]["completion_tokens"], 200);
    assert_eq!(s.fa.hits(), 1);
}

async fn a_streamed_answer_is_cached_once_complete(backend: Backend) {
    let words = ["Hello", ", ", "world", "!"];
    let reply = Scripted::sse(chunks("gpt-4.1", &words, Some((9, 4))), StreamEnd::Done);
    let Some(s) = start_with(backend, "", reply).await else {
        return;
    };
    let body = ask("Say hello");
    let r = s.gw.chat(streaming(body.clone(), None)).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    assert_eq!(content_of(&sse_data(r).await), "Hello, world!");
    s.settle().await;

    // A non-streaming client gets the chat.completion the stream amounted to.
    let r = s.gw.chat(body.clone()).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "hit");
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["model"], "gpt-4.1");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["choices"][0]["message"]["content"], "Hello, world!");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    assert_eq!(c["usage"]["prompt_tokens"], 9);
    assert_eq!(c["usage"]["completion_tokens"], 4);

    // A streaming one gets it replayed, with the usage chunk it asked for.
    let data = sse_data(s.gw.chat(streaming(body, Some(true))).await).await;
    assert_eq!(content_of(&data), "Hello, world!");
    assert!(data[data.len() - 2].contains("\"completion_tokens\":4"));
    assert_eq!(s.fa.hits(), 1);

    let rows = s.gw.ledger_rows().await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1]["cache_hit"], 1);
    assert_eq!(rows[1]["input_tokens"], 9);
    assert_eq!(rows[1]["output_tokens"], 4);
    assert_eq!(rows[2]["stream"], 1);
    assert_eq!(rows[2]["cache_hit"], 1);
}

async fn errors_are_not_cached(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let body = ask("Fail first");
    s.fa.push(Scripted::status(
        500,
        json!({ "error": { "message": "boom", "type": "server_error" } }),
    ));
    let r = s.gw.chat(body.clone()).await;
    assert_eq!(r.status(), 502);
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    s.fa.push(Scripted::status(
        400,
        json!({ "error": { "message": "bad", "type": "invalid_request_error" } }),
    ));
    let r = s.gw.chat(body.clone()).await;
    assert_eq!(r.status(), 400);
    // A 200 whose body is an error is not an answer either.
    s.fa.push(Scripted::json(
        json!({ "error": { "message": "odd", "type": "server_error" } }),
    ));
    let r = s.gw.chat(body.clone()).await;
    assert_eq!(r.status(), 200);
    s.settle().await;

    let r = s.gw.chat(body.clone()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    assert_eq!(s.fa.hits(), 4);
    s.settle().await;
    assert_eq!(header(&s.gw.chat(body).await, "x-crossroads-cache"), "hit");
    assert_eq!(s.fa.hits(), 4);

    // A request that fails before the cache stage still says what the cache did.
    let r = s.gw.chat(user("no-such-model", "hi")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "x-crossroads-cache"), "bypass");
}

async fn broken_streams_are_not_cached(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let body = ask("Stream and break");
    let words = ["Hello", ", ", "world"];

    // Cut short before the finish chunk, aborted, and with an error event: none stored.
    let mut cut = chunks("gpt-4.1", &words, None);
    cut.pop();
    let mut with_error = chunks("gpt-4.1", &words, None);
    with_error.insert(
        2,
        json!({ "error": { "message": "overloaded", "type": "server_error" } }),
    );
    for reply in [
        Scripted::sse(cut.clone(), StreamEnd::Close),
        Scripted::sse(cut, StreamEnd::Abort),
        Scripted::sse(with_error, StreamEnd::Done),
    ] {
        s.fa.push(reply);
        let data = sse_data(s.gw.chat(streaming(body.clone(), None)).await).await;
        assert_eq!(data.last().unwrap(), "[DONE]");
        s.settle().await;
    }
    // Ended after its finish chunk but without [DONE]: complete for the client, yet not
    // stored, as only a stream that ended with [DONE] is.
    s.fa.push(Scripted::sse(
        chunks("gpt-4.1", &words, None),
        StreamEnd::Close,
    ));
    let data = sse_data(s.gw.chat(streaming(body.clone(), None)).await).await;
    assert_eq!(content_of(&data), "Hello, world");
    s.settle().await;

    let r = s.gw.chat(body).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["choices"][0]["message"]["content"], "frontier says hi");
    assert_eq!(s.fa.hits(), 5);
}

async fn entries_expire_after_the_ttl(backend: Backend) {
    let Some(s) = start_with(
        backend,
        "ttl_ms = 800",
        Scripted::json(completion("gpt-4.1", "short-lived", 10, 2)),
    )
    .await
    else {
        return;
    };
    let body = ask("Expire me");
    assert_eq!(
        header(&s.gw.chat(body.clone()).await, "x-crossroads-cache"),
        "miss"
    );
    s.settle().await;
    assert_eq!(
        header(&s.gw.chat(body.clone()).await, "x-crossroads-cache"),
        "hit"
    );
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(header(&s.gw.chat(body).await, "x-crossroads-cache"), "miss");
    assert_eq!(s.fa.hits(), 2);
}

async fn a_hit_is_recorded_at_zero_cost_with_the_original_usage(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    s.gw.chat(ask("Price me")).await;
    s.settle().await;
    let r = s.gw.chat(ask("Price me")).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "hit");
    let request_id = header(&r, "x-crossroads-request-id").to_owned();

    let rows = s.gw.ledger_rows().await;
    assert_eq!(rows.len(), 2);
    let (miss, hit) = (&rows[0], &rows[1]);
    assert_eq!(miss["cache_hit"], 0);
    // 1000 input tokens at $2/M + 200 output at $8/M = $0.0036.
    assert_eq!(miss["cost_pusd"], 3_600_000_000i64);

    assert_eq!(hit["request_id"], request_id.as_str());
    assert_eq!(hit["cache_hit"], 1);
    assert_eq!(hit["status"], 200);
    assert_eq!(hit["cost_pusd"], 0);
    assert_eq!(hit["reference_cost_pusd"], 3_600_000_000i64);
    assert_eq!(hit["input_tokens"], 1000);
    assert_eq!(hit["output_tokens"], 200);
    assert_eq!(hit["usage_estimated"], 0);
    assert_eq!(hit["pool"], "frontier");
    assert_eq!(hit["rule"], "alias");
    assert_eq!(hit["deployment"], Value::Null);
    assert_eq!(hit["attempts"], 0);
    assert_eq!(hit["upstream_us"], Value::Null);
}

/// The value of the series `name{labels}` in Prometheus text.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

async fn metrics_count_hits_misses_and_bypasses(backend: Backend) {
    let Some(s) = start(backend).await else {
        return;
    };
    let body = ask("Count me");
    s.gw.chat(body.clone()).await;
    s.settle().await;
    s.gw.chat(body.clone()).await;
    s.gw.chat(body.clone()).await;
    s.chat_with(&body, "no-cache").await;

    let m = s.gw.metrics().await;
    assert_eq!(
        metric(&m, r#"crossroads_cache_requests_total{result="miss"}"#),
        1.0
    );
    assert_eq!(
        metric(&m, r#"crossroads_cache_requests_total{result="hit"}"#),
        2.0
    );
    assert_eq!(
        metric(&m, r#"crossroads_cache_requests_total{result="bypass"}"#),
        1.0
    );
    assert_eq!(metric(&m, "crossroads_cache_evictions_total"), 0.0);
    assert_eq!(
        metric(&m, r#"crossroads_cache_errors_total{backend="redis"}"#),
        0.0
    );
    // Hits are their own tier: what they saved shows, and they cost nothing.
    assert_eq!(
        metric(
            &m,
            r#"crossroads_requests_total{deployment="none",rule="alias",status_class="2xx",tier="cache"}"#
        ),
        2.0
    );
    assert!(
        (metric(&m, r#"crossroads_reference_cost_usd_total{tier="cache"}"#) - 0.0072).abs() < 1e-12
    );
    assert_eq!(
        metric(&m, r#"crossroads_cost_usd_total{tier="cache"}"#),
        0.0
    );
}

#[tokio::test]
async fn the_cache_is_off_without_a_cache_section() {
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "hi", 10, 2))).await;
    let other = refused_url().await;
    let gw = Gateway::start(&standard_config(&other, &fa.base_url(), &other)).await;
    assert!(gw.state.cache.is_none());
    for _ in 0..2 {
        let r = gw.chat(ask("Say hello")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-crossroads-cache"), "bypass");
    }
    assert_eq!(fa.hits(), 2);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, r#"crossroads_cache_requests_total{result="bypass"}"#),
        0.0
    );
}

#[tokio::test]
async fn enabled_false_turns_the_cache_off() {
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "hi", 10, 2))).await;
    let other = refused_url().await;
    let config = standard_config(&other, &fa.base_url(), &other)
        + "\n[cache]\nenabled = false\nbackend = \"redis\"\n";
    let gw = Gateway::start(&config).await;
    assert!(gw.state.cache.is_none());
}

#[tokio::test]
async fn the_memory_cache_stays_within_max_bytes() {
    // Answers of about 20 KB in a 64 KiB cache: three fit at most.
    let big = "x".repeat(20_000);
    let Some(s) = start_with(
        Backend::Memory,
        "max_bytes = 65536\nmax_entry_bytes = 32768",
        Scripted::json(completion("gpt-4.1", &big, 10, 5_000)),
    )
    .await
    else {
        return;
    };
    for i in 0..6 {
        let r = s.gw.chat(ask(&format!("Question {i}"))).await;
        assert_eq!(header(&r, "x-crossroads-cache"), "miss");
        s.settle().await;
    }
    let m = s.gw.metrics().await;
    assert!(metric(&m, "crossroads_cache_evictions_total") >= 3.0, "{m}");
    let mut hits = 0;
    for i in 0..6 {
        let r = s.gw.chat(ask(&format!("Question {i}"))).await;
        if header(&r, "x-crossroads-cache") == "hit" {
            hits += 1;
        }
    }
    assert!(hits <= 3, "{hits} answers of 20 KB held in 64 KiB");
}

#[tokio::test]
async fn answers_larger_than_max_entry_bytes_are_not_stored() {
    let big = "x".repeat(40_000);
    let Some(s) = start_with(
        Backend::Memory,
        "max_entry_bytes = 32768",
        Scripted::json(completion("gpt-4.1", &big, 10, 10_000)),
    )
    .await
    else {
        return;
    };
    s.gw.chat(ask("Big")).await;
    s.settle().await;
    assert_eq!(
        header(&s.gw.chat(ask("Big")).await, "x-crossroads-cache"),
        "miss"
    );
    assert_eq!(s.fa.hits(), 2);
}

#[tokio::test]
async fn redis_entries_live_under_the_prefix_with_the_ttl() {
    let Some(s) = start(Backend::Redis).await else {
        return;
    };
    s.gw.chat(ask("Where am I stored?")).await;
    s.settle().await;

    let client = redis::Client::open(redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", s.prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let suffix = &keys[0][s.prefix.len()..];
    assert_eq!(suffix.len(), 32);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");

    // Another replica with the same prefix shares the entry.
    let other_fa = Upstream::start(Scripted::json(completion("gpt-4.1", "other", 1, 1))).await;
    let other = refused_url().await;
    let replica = Gateway::start(
        &(standard_config(&other, &other_fa.base_url(), &other)
            + &cache_section(Backend::Redis, &s.prefix, "")),
    )
    .await;
    let r = replica.chat(ask("Where am I stored?")).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "hit");
    let c: Value = r.json().await.unwrap();
    assert_eq!(c["choices"][0]["message"]["content"], "frontier says hi");
    assert_eq!(other_fa.hits(), 0);
}

#[tokio::test]
async fn a_redis_failure_is_a_counted_miss_never_a_failed_request() {
    // Nothing listens there: every cache operation fails.
    let dead = refused_url()
        .await
        .replace("http://", "redis://")
        .replace("/v1", "");
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "still here", 10, 2))).await;
    let other = refused_url().await;
    let config = standard_config(&other, &fa.base_url(), &other)
        + &format!(
            "\n[cache]\nbackend = \"redis\"\nredis_url = \"{dead}\"\nredis_timeout_ms = 200\n"
        );
    let gw = Gateway::start(&config).await;
    for _ in 0..2 {
        let r = gw.chat(ask("Is the cache down?")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-crossroads-cache"), "miss");
        let c: Value = r.json().await.unwrap();
        assert_eq!(c["choices"][0]["message"]["content"], "still here");
        gw.state.cache.as_ref().unwrap().flush().await;
    }
    assert_eq!(fa.hits(), 2);
    let m = gw.metrics().await;
    assert!(metric(&m, r#"crossroads_cache_errors_total{backend="redis"}"#) >= 2.0);
    assert_eq!(
        metric(&m, r#"crossroads_cache_requests_total{result="miss"}"#),
        2.0
    );
}

#[tokio::test]
async fn changing_a_pools_models_retires_its_entries() {
    let Some(s) = start(Backend::Memory).await else {
        return;
    };
    s.gw.chat(ask("Which model?")).await;
    s.settle().await;
    assert_eq!(
        header(&s.gw.chat(ask("Which model?")).await, "x-crossroads-cache"),
        "hit"
    );

    // Upgrade frontier-a's model in place, keeping everything else, and reload.
    let text = std::fs::read_to_string(&s.gw.config_path).unwrap();
    let (config, _ledger) = text.split_once("\n[ledger]").unwrap();
    let upgraded = config.replacen(
        "model = \"gpt-4.1\"\ntier = \"frontier\"",
        "model = \"gpt-4.1-mini\"\ntier = \"frontier\"",
        1,
    );
    assert_ne!(upgraded, config);
    s.gw.rewrite_config(&upgraded);
    let r =
        s.gw.client
            .post(s.gw.url("/admin/reload"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);

    let r = s.gw.chat(ask("Which model?")).await;
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    assert_eq!(
        s.fa.received().last().unwrap().body["model"],
        "gpt-4.1-mini"
    );
    assert_eq!(s.fa.hits(), 2);
}

/// Keys `a` and `b` of team `search`; `c`, `d` and `e` of team `ads`, `d` with a budget
/// too small for any frontier request, `e` with 300 tokens a minute.
fn teams_config(fa: &Upstream, scope: &str) -> String {
    let other = "http://127.0.0.1:9/v1";
    let sha = |k: &str| crossroads::auth::hex(&crossroads::auth::hash_key(k));
    let mut config = standard_config(other, &fa.base_url(), other);
    config +=
        "\n[auth]\nrequired = true\n\n[[teams]]\nid = \"search\"\n\n[[teams]]\nid = \"ads\"\n";
    for (id, team, extra) in [
        ("a", "search", ""),
        ("b", "search", ""),
        ("c", "ads", ""),
        ("d", "ads", "budget = { usd = 0.000001, period = \"day\" }"),
        ("e", "ads", "tpm = 300"),
    ] {
        config += &format!(
            "\n[[keys]]\nid = \"{id}\"\nteam = \"{team}\"\nsha256 = \"{}\"\n{extra}\n",
            sha(&format!("ck-{id}"))
        );
    }
    config + &format!("\n[cache]\nscope = \"{scope}\"\n")
}

async fn chat_as(gw: &Gateway, key: &str, text: &str) -> reqwest::Response {
    gw.client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(format!("ck-{key}"))
        .json(&ask(text))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn teams_share_their_own_answers_only() {
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "hi", 10, 2))).await;
    let gw = Gateway::start(&teams_config(&fa, "team")).await;
    let cache = gw.state.cache.clone().unwrap();
    let result = |r: &reqwest::Response| header(r, "x-crossroads-cache").to_owned();

    assert_eq!(result(&chat_as(&gw, "a", "Shared?").await), "miss");
    cache.flush().await;
    assert_eq!(result(&chat_as(&gw, "b", "Shared?").await), "hit");
    assert_eq!(result(&chat_as(&gw, "c", "Shared?").await), "miss");
    assert_eq!(fa.hits(), 2);

    // A hit costs nothing, so a key whose budget refuses every upstream call still
    // gets its team's cached answers.
    cache.flush().await;
    let r = chat_as(&gw, "d", "Shared?").await;
    assert_eq!(r.status(), 200);
    assert_eq!(result(&r), "hit");
    let r = chat_as(&gw, "d", "Not cached").await;
    assert_ne!(r.status(), 200, "the budget should refuse an upstream call");
    assert_eq!(fa.hits(), 2);
    let rows = gw.ledger_rows().await;
    let hit = rows
        .iter()
        .find(|r| r["key_id"] == "d" && r["status"] == 200)
        .unwrap();
    assert_eq!(hit["team"], "ads");
    assert_eq!(hit["cache_hit"], 1);
}

#[tokio::test]
async fn a_global_cache_is_shared_across_teams() {
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "hi", 10, 2))).await;
    let gw = Gateway::start(&teams_config(&fa, "global")).await;
    let r = chat_as(&gw, "a", "Shared?").await;
    assert_eq!(header(&r, "x-crossroads-cache"), "miss");
    gw.state.cache.as_ref().unwrap().flush().await;
    let r = chat_as(&gw, "c", "Shared?").await;
    assert_eq!(header(&r, "x-crossroads-cache"), "hit");
    assert_eq!(fa.hits(), 1);
}

#[tokio::test]
async fn hits_do_not_use_the_keys_tokens_per_minute() {
    // 200 generated tokens an answer: a second upstream answer would pass 300 a minute.
    let fa = Upstream::start(Scripted::json(completion("gpt-4.1", "hi", 10, 200))).await;
    let gw = Gateway::start(&teams_config(&fa, "team")).await;
    assert_eq!(chat_as(&gw, "e", "Rate me").await.status(), 200);
    gw.state.cache.as_ref().unwrap().flush().await;
    for _ in 0..3 {
        let r = chat_as(&gw, "e", "Rate me").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-crossroads-cache"), "hit");
    }
    assert_eq!(fa.hits(), 1);
}

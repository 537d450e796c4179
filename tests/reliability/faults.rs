//! Fault injection on upstreams, through the scripted upstreams of the test harness.
//!
//! - One of the two deployments of a pool fails in every way an upstream can before
//!   its first byte (500, 429, 529, hangs, resets, malformed JSON or SSE, slow
//!   answers), mixed at set rates: clients must still succeed (target ≥ 99.9%), and
//!   every request has exactly one ledger record.
//! - Streams cut after their first byte (aborted, closed early, stalled, an error
//!   event, garbage midway) end with an error event, are recorded as errors, and are
//!   never cached: the next identical request goes upstream again.
//!
//! `CROSSROADS_FAULT_REQUESTS` sets the count of the first part (CI: 600).

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::common::*;

const WORDS: [&str; 4] = ["Hello", ", ", "world", "!"];

fn healthy() -> Scripted {
    Scripted::ByStream(
        Box::new(Scripted::sse(
            chunks("gpt-4.1-mini", &WORDS, Some((5, 4))),
            StreamEnd::Done,
        )),
        Box::new(Scripted::json(completion(
            "gpt-4.1-mini",
            "Hello, world!",
            5,
            4,
        ))),
    )
}

/// Every way an upstream fails before its first byte, at set rates.
fn failing() -> Scripted {
    let status = |code: u16| Scripted::status(code, json!({ "error": { "message": "down" } }));
    let mut rate_limited = status(429);
    if let Scripted::Json { headers, .. } = &mut rate_limited {
        headers.push(("retry-after", "1".into()));
    }
    Scripted::Mix(vec![
        (20, status(500)),
        (15, rate_limited),
        (10, status(529)),
        (10, status(503)),
        (5, Scripted::Hang),
        (15, Scripted::Reset),
        (
            10,
            Scripted::Raw {
                status: 200,
                content_type: "application/json",
                body: "{\"choices\": [".into(),
            },
        ),
        (
            5,
            Scripted::delayed(
                Duration::from_millis(1500),
                completion("gpt-4.1", "late", 1, 1),
            ),
        ),
        (
            5,
            Scripted::Raw {
                status: 200,
                content_type: "text/html",
                body: "<html>proxy error</html>".into(),
            },
        ),
    ])
}

fn config(local: &Upstream, a: &Upstream, b: &Upstream) -> String {
    format!(
        "{}\n[cache]\nbackend = \"memory\"\n",
        standard_config(&local.base_url(), &a.base_url(), &b.base_url())
    )
}

/// Passive health checks off: every request meets the failing upstream first.
const NO_EJECTION: &str = "\n[health]\nfailure_threshold = 1000000\n";

/// Whether a response is a whole, correct answer; if not, what came instead.
async fn answer_of(response: reqwest::Response, stream: bool) -> Result<(), String> {
    let status = response.status();
    let whole = if stream {
        let data = sse_data(response).await;
        let text: String = data
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        let done = data.last().is_some_and(|d| d == "[DONE]");
        if status == 200
            && done
            && text == "Hello, world!"
            && !data.iter().any(|d| d.contains("\"error\""))
        {
            return Ok(());
        }
        format!("{data:?}")
    } else {
        let body = response.text().await.unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && v["choices"][0]["message"]["content"] == "Hello, world!" {
            return Ok(());
        }
        body
    };
    Err(format!("{status}: {whole}"))
}

async fn succeeded(response: reqwest::Response, stream: bool) -> bool {
    answer_of(response, stream).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_upstream_of_two_keeps_clients_whole() {
    failover("ejecting", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_upstream_of_two_keeps_clients_whole_without_ejection() {
    failover("every_request", NO_EJECTION).await;
}

/// Sends requests, half of them streamed, to a pool whose first deployment fails in
/// every way and whose second is healthy.
async fn failover(name: &str, settings: &str) {
    let total = super::hostile::env_usize("CROSSROADS_FAULT_REQUESTS", 600);
    let local = Upstream::start(healthy()).await;
    let a = Upstream::start(failing()).await;
    let b = Upstream::start(healthy()).await;
    let gw = Gateway::start(&(config(&local, &a, &b) + settings)).await;
    let started = Instant::now();
    let results: Vec<Result<(), String>> = futures_util::stream::iter(0..total)
        .map(|i| {
            let gw = &gw;
            async move {
                let stream = i % 2 == 0;
                // Distinct prompts: every request goes upstream, none is a cache hit.
                let mut body = user("frontier", &format!("Tell me about Rome, part {i}."));
                body["stream"] = json!(stream);
                answer_of(gw.chat(body).await, stream).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for failure in results.iter().filter_map(|r| r.as_ref().err()).take(5) {
        eprintln!("faults {name}: failed request: {failure}");
    }
    let rows = gw.ledger_rows().await;
    let recorded_ok = rows.iter().filter(|r| r["status"] == 200).count();
    eprintln!(
        "faults {name}: requests={total} succeeded={ok} rate={:.4} elapsed={:.1}s upstream_a_hits={} upstream_b_hits={} ledger_rows={} ledger_ok={recorded_ok}",
        ok as f64 / total as f64,
        started.elapsed().as_secs_f64(),
        a.hits(),
        b.hits(),
        rows.len()
    );
    assert!(a.hits() > 0, "the failing upstream was never tried");
    assert!(
        ok * 1000 >= total * 999,
        "success rate {ok}/{total} under 99.9%"
    );
    assert_eq!(rows.len(), total, "one ledger record per request");
    assert_eq!(
        recorded_ok, ok,
        "every success recorded as one, nothing else"
    );
}

/// Streams cut after the first byte, each with what it should leave in the ledger.
fn cut_streams() -> Vec<(&'static str, Scripted)> {
    let events = |extra: Option<&str>| {
        let mut events: Vec<String> = chunks("gpt-4.1", &WORDS, None)
            .iter()
            .map(Value::to_string)
            .collect();
        events.pop(); // no finish chunk: the answer is not over
        if let Some(extra) = extra {
            events.insert(2, extra.to_owned());
        }
        events
    };
    let sse = |events: Vec<String>, end| Scripted::Sse {
        events,
        gap: Duration::from_millis(5),
        end,
    };
    vec![
        ("aborted", sse(events(None), StreamEnd::Abort)),
        ("closed_early", sse(events(None), StreamEnd::Close)),
        ("stalled", sse(events(None), StreamEnd::Stall)),
        (
            "error_event",
            sse(
                events(Some(
                    r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
                )),
                StreamEnd::Close,
            ),
        ),
        (
            "garbage_midway",
            sse(events(Some("{not json")), StreamEnd::Close),
        ),
        // A proper event-stream head, then garbage first: already streaming, so no
        // fallback; it must end like any cut stream.
        (
            "garbage_first",
            Scripted::Raw {
                status: 200,
                content_type: "text/event-stream",
                body: "data: {nope\n\n".into(),
            },
        ),
    ]
}

#[tokio::test]
async fn cut_streams_end_in_error_are_recorded_so_and_never_cached() {
    let local = Upstream::start(healthy()).await;
    let a = Upstream::start(healthy()).await;
    let b = Upstream::start(healthy()).await;
    let gw = Gateway::start(&config(&local, &a, &b)).await;
    for (i, (name, cut)) in cut_streams().into_iter().enumerate() {
        let mut body = user("frontier", &format!("Say hello, {name}."));
        body["stream"] = json!(true);
        a.push(cut);
        let hits = a.hits() + b.hits();
        let data = sse_data(gw.chat(body.clone()).await).await;
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{name}: {data:?}"
        );
        let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap_or_default();
        assert!(
            error["error"]["message"].is_string(),
            "{name}: no error event: {data:?}"
        );

        let rows = gw.ledger_rows().await;
        let row = &rows[i * 2];
        assert!(
            row["error_kind"].is_string(),
            "{name}: recorded without an error: {row:?}"
        );
        assert!(
            row["status"].as_i64().unwrap() >= 500,
            "{name}: recorded as a success: {row:?}"
        );
        assert_eq!(row["cache_hit"], 0);

        // Not cached: the same request goes upstream again, and completes.
        let again = gw.chat(body).await;
        assert_eq!(
            again.headers()["x-crossroads-cache"],
            "miss",
            "{name}: a cut stream was cached"
        );
        assert!(succeeded(again, true).await, "{name}: the retry failed");
        assert_eq!(a.hits() + b.hits(), hits + 2, "{name}");
    }
    let rows = gw.ledger_rows().await;
    assert_eq!(rows.len(), 12, "one record per request");
}

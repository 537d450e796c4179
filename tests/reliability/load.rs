//! Load for the crash and restart tests: concurrent clients that note which answers
//! they received whole, and what stopped the rest.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::*;

/// What clients saw.
#[derive(Default)]
pub struct Tally {
    /// Request ids of the answers received whole: a JSON body that parsed, or a stream
    /// that ended with `[DONE]` and no error event.
    pub whole: Vec<String>,
    /// Their latencies, in ms.
    pub latencies: Vec<f64>,
    /// Requests answered but not whole: an error status other than 429, or a body cut
    /// short.
    pub cut: usize,
    /// Requests refused with 429 (a rate limit or a budget).
    pub refused: usize,
    /// Requests that got no answer at all (no connection, or closed before a status).
    pub unanswered: usize,
}

impl Tally {
    /// How many answers received whole have no record in the SQLite ledger at `path`.
    pub fn unrecorded(&self, path: &Path) -> usize {
        let recorded: HashSet<String> = read_ledger(path)
            .iter()
            .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
            .collect();
        self.whole
            .iter()
            .filter(|id| !recorded.contains(*id))
            .count()
    }

    pub fn add(&mut self, other: Tally) {
        self.whole.extend(other.whole);
        self.latencies.extend(other.latencies);
        self.cut += other.cut;
        self.refused += other.refused;
        self.unanswered += other.unanswered;
    }
}

/// An upstream that answers streams with 7 events 5 ms apart, the rest with JSON.
pub fn upstream_reply() -> Scripted {
    let words = ["The", " capital", " of", " France", " is", " Paris", "."];
    Scripted::ByStream(
        Box::new(Scripted::sse(
            chunks("gpt-4.1", &words, Some((12, 7))),
            StreamEnd::Done,
        )),
        Box::new(Scripted::delayed(
            Duration::from_millis(2),
            completion("gpt-4.1", "The capital of France is Paris.", 12, 7),
        )),
    )
}

/// One client: requests to `addr` until `stop`, streamed or not.
pub async fn client(addr: String, streaming: bool, stop: Arc<AtomicBool>) -> Tally {
    client_as(addr, streaming, None, stop).await
}

/// One client with `key`: a distinct question each time (no cache hits), until `stop`.
pub async fn client_as(
    addr: String,
    streaming: bool,
    key: Option<String>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut tally = Tally::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let question = match &key {
            None => "What is the capital of France?".to_owned(),
            Some(_) => format!("What is the capital of France? (asked {n} times)"),
        };
        let body = json!({"model": "frontier", "stream": streaming, "max_tokens": 16,
            "messages": [{"role": "user", "content": question}]});
        let started = Instant::now();
        let mut request = http.post(format!("{addr}/v1/chat/completions")).json(&body);
        if let Some(key) = &key {
            request = request.bearer_auth(key);
        }
        let Ok(response) = request.send().await else {
            tally.unanswered += 1;
            // The gateway is gone: no point hammering a closed port.
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let id = response
            .headers()
            .get("x-crossroads-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ok = response.status() == 200;
        if response.status() == 429 {
            tally.refused += 1;
            continue;
        }
        let Ok(text) = response.text().await else {
            tally.cut += 1;
            continue;
        };
        let whole = ok
            && if streaming {
                text.ends_with("data: [DONE]\n\n") && !text.contains("\"error\"")
            } else {
                serde_json::from_str::<serde_json::Value>(&text)
                    .is_ok_and(|v| v["choices"].is_array())
            };
        match (whole, id) {
            (true, Some(id)) => {
                tally.whole.push(id);
                tally
                    .latencies
                    .push(started.elapsed().as_secs_f64() * 1000.0);
            }
            _ => tally.cut += 1,
        }
    }
    tally
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

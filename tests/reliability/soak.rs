//! Soak: a real `crossroads serve` at a steady rate of mixed traffic for a set time,
//! sampled every few seconds for its resident memory, open file descriptors and the
//! window's latency percentiles.
//!
//! Traffic, by request number: chat (4 in 10, 200 questions that repeat, so the memory
//! cache fills during warm-up and then serves hits), streamed chat (2), the Responses
//! API (1), the Messages API (1), a body that is not JSON (1: 400) and an unknown model
//! (1: 404). Every answer must have its expected status (and streams their `[DONE]`).
//! After the first fifth (warm-up), memory may grow by at most a quarter and file
//! descriptors by at most 16; the p99 per window is reported.
//!
//! `CROSSROADS_SOAK_SECONDS` and `CROSSROADS_SOAK_RATE` set its size (CI: 60 s at 200
//! requests/s; the figure: 1,800 s at 500).

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::served::{free_port, serve_with};
use super::common::*;
use super::hostile::env_usize;
use super::load::{percentile, upstream_reply};

/// One sampling window.
struct Sample {
    at: f64,
    rss_kib: u64,
    fds: usize,
    p50: f64,
    p99: f64,
    requests: usize,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Request `n` of the mix: (path, body, expected status, streamed).
fn request(n: u64) -> (&'static str, String, u16, bool) {
    let question = format!(
        "Question {} of the soak: what is the capital of France?",
        n % 200
    );
    match n % 10 {
        0..=3 => (
            "/v1/chat/completions",
            json!({"model": "frontier", "messages": [{"role": "user", "content": question}]})
                .to_string(),
            200,
            false,
        ),
        4 | 5 => (
            "/v1/chat/completions",
            json!({"model": "frontier", "stream": true,
                "messages": [{"role": "user", "content": question}]})
            .to_string(),
            200,
            true,
        ),
        6 => (
            "/v1/responses",
            json!({"model": "frontier", "input": question}).to_string(),
            200,
            false,
        ),
        7 => (
            "/v1/messages",
            json!({"model": "frontier", "max_tokens": 32,
                "messages": [{"role": "user", "content": question}]})
            .to_string(),
            200,
            false,
        ),
        8 => (
            "/v1/chat/completions",
            "{\"model\": ".to_owned(),
            400,
            false,
        ),
        _ => (
            "/v1/chat/completions",
            json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
            404,
            false,
        ),
    }
}

/// Sends request `n`; its latency in ms, or what was wrong with its answer.
async fn send(http: &reqwest::Client, addr: &str, n: u64) -> Result<f64, String> {
    let (path, body, expected, streamed) = request(n);
    let started = Instant::now();
    let response = http
        .post(format!("{addr}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| format!("{path}: {e}"))?;
    if status != expected {
        return Err(format!("{path}: {status} instead of {expected}: {text}"));
    }
    if streamed && !text.ends_with("data: [DONE]\n\n") {
        return Err(format!("{path}: a stream without [DONE]"));
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_mixed_load_keeps_memory_descriptors_and_latency_flat() {
    let seconds = env_usize("CROSSROADS_SOAK_SECONDS", 60) as u64;
    let rate = env_usize("CROSSROADS_SOAK_RATE", 200).max(1) as u64;
    let window = Duration::from_secs(if seconds >= 600 { 30 } else { 5 });
    let upstream = Upstream::start(upstream_reply()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    let url = upstream.base_url();
    std::fs::write(
        &path,
        format!(
            "{}\n[cache]\nbackend = \"memory\"\n\n[ledger]\nurl = \"sqlite://{}\"\n",
            standard_config(&url, &url, &url),
            dir.path().join("ledger.db").display()
        ),
    )
    .unwrap();
    let gateway = serve_with(&path, free_port(), Stdio::null()).await;
    let pid = gateway.child.id();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut next_sample = started + window;
    let mut samples: Vec<Sample> = Vec::new();
    let mut n = 0u64;
    let mut sent = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticks.tick().await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            failures
                .lock()
                .unwrap()
                .push("256 requests in flight: the gateway fell behind".into());
            continue;
        };
        n += 1;
        sent += 1;
        let (http, addr) = (http.clone(), gateway.addr.clone());
        let (done, failed) = (latencies.clone(), failures.clone());
        tokio::spawn(async move {
            match send(&http, &addr, n).await {
                Ok(ms) => done.lock().unwrap().push(ms),
                Err(e) => failed.lock().unwrap().push(e),
            }
            drop(permit);
        });
        if Instant::now() >= next_sample {
            next_sample += window;
            let mut window_ms = std::mem::take(&mut *latencies.lock().unwrap());
            window_ms.sort_by(f64::total_cmp);
            samples.push(Sample {
                at: started.elapsed().as_secs_f64(),
                rss_kib: rss_kib(pid),
                fds: fds(pid),
                p50: percentile(&window_ms, 0.5),
                p99: percentile(&window_ms, 0.99),
                requests: window_ms.len(),
            });
        }
    }
    // Let the last requests finish.
    let _ = in_flight.acquire_many(256).await;
    let failures = failures.lock().unwrap().clone();
    for s in &samples {
        println!(
            "soak: t={:.0}s rss={:.1}MiB fds={} requests={} p50={:.2}ms p99={:.2}ms",
            s.at,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.requests,
            s.p50,
            s.p99
        );
    }
    let warm = &samples[samples.len() / 5];
    let last = samples.last().unwrap();
    let mut p99s: Vec<f64> = samples[samples.len() / 5..].iter().map(|s| s.p99).collect();
    p99s.sort_by(f64::total_cmp);
    println!(
        "soak: {seconds} s at {rate}/s, {sent} requests, {} failed; after warm-up (t={:.0}s) → end: \
         rss {:.1} → {:.1} MiB, fds {} → {}, window p99 {:.2}-{:.2} ms (median {:.2})",
        failures.len(),
        warm.at,
        warm.rss_kib as f64 / 1024.0,
        last.rss_kib as f64 / 1024.0,
        warm.fds,
        last.fds,
        p99s[0],
        p99s[p99s.len() - 1],
        percentile(&p99s, 0.5),
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(
        last.rss_kib <= warm.rss_kib + warm.rss_kib / 4,
        "memory grew from {} to {} KiB after warm-up",
        warm.rss_kib,
        last.rss_kib
    );
    assert!(
        last.fds <= warm.fds + 16,
        "file descriptors grew from {} to {}",
        warm.fds,
        last.fds
    );
}

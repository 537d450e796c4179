//! Crash durability: `kill -9` a real `crossroads serve` under load, again and again,
//! and count the answers a client received whole that have no ledger record.
//!
//! Each cycle starts the gateway on a SQLite ledger that earlier (killed) cycles left
//! behind, drives 16 concurrent clients (half of them streaming) through it, and kills
//! it with SIGKILL at a random moment between 150 and 450 ms into the load. A response
//! counts as received whole when its JSON body parsed, or when its stream ended with
//! `[DONE]` and no error event. After the last cycle, every such response's request id
//! must be in the ledger.
//!
//! Cycles alternate between `durability = "commit"` (the default; the bar: 0 missing)
//! and `"batched"` (measured, not asserted: what a crash loses without the wait), each
//! on its own ledger, so the two are paired on the same machine and moment. The
//! latency of the responses received whole is the price of the wait.
//!
//! `CROSSROADS_CRASH_CYCLES` sets the cycles per setting (CI: 4; the figure: 25).

use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::common::served::{free_port, serve_with};
use super::common::*;
use super::hostile::env_usize;

/// What the clients saw in one setting's cycles.
#[derive(Default)]
struct Tally {
    /// Request ids of the responses received whole.
    whole: Vec<String>,
    /// Their latencies, in ms.
    latencies: Vec<f64>,
    /// Requests that got no whole answer (the kill cut them).
    cut: usize,
}

fn upstream_reply() -> Scripted {
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

fn config(upstream: &str, ledger: &Path, durability: &str) -> String {
    format!(
        "{}\n[ledger]\nurl = \"sqlite://{}\"\ndurability = \"{durability}\"\n",
        standard_config(upstream, upstream, upstream),
        ledger.display()
    )
}

/// One client: requests until `stop`, noting each answer received whole.
async fn client(addr: String, streaming: bool, stop: Arc<AtomicBool>) -> Tally {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut tally = Tally::default();
    let body = json!({"model": "frontier", "stream": streaming, "max_tokens": 16,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let Ok(response) = http
            .post(format!("{addr}/v1/chat/completions"))
            .json(&body)
            .send()
            .await
        else {
            tally.cut += 1;
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

/// One cycle: start, load, `kill -9` after `kill_after`.
async fn cycle(config: &Path, kill_after: Duration) -> Tally {
    let mut gateway = serve_with(config, free_port(), Stdio::null()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|i| tokio::spawn(client(gateway.addr.clone(), i % 2 == 0, stop.clone())))
        .collect();
    tokio::time::sleep(kill_after).await;
    // SIGKILL: no shutdown, no drain, no spill.
    gateway.child.kill().unwrap();
    gateway.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        tally.whole.extend(t.whole);
        tally.latencies.extend(t.latencies);
        tally.cut += t.cut;
    }
    tally
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_record_of_an_answer_received_whole() {
    let cycles = env_usize("CROSSROADS_CRASH_CYCLES", 4);
    let upstream = Upstream::start(upstream_reply()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = ["commit", "batched"];
    let mut tallies: Vec<Tally> = settings.iter().map(|_| Tally::default()).collect();
    let configs: Vec<_> = settings
        .iter()
        .map(|durability| {
            let ledger = dir.path().join(format!("{durability}.db"));
            let path = dir.path().join(format!("{durability}.toml"));
            std::fs::write(&path, config(&upstream.base_url(), &ledger, durability)).unwrap();
            (path, ledger)
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(super::hostile::seed());
    for _ in 0..cycles {
        let kill_after = Duration::from_millis(rng.u64(150..450));
        for (i, (path, _)) in configs.iter().enumerate() {
            let t = cycle(path, kill_after).await;
            tallies[i].whole.extend(t.whole);
            tallies[i].latencies.extend(t.latencies);
            tallies[i].cut += t.cut;
        }
    }
    for ((durability, (_, ledger)), tally) in settings.iter().zip(&configs).zip(&mut tallies) {
        let recorded: HashSet<String> = read_ledger(ledger)
            .iter()
            .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
            .collect();
        let missing = tally
            .whole
            .iter()
            .filter(|id| !recorded.contains(*id))
            .count();
        tally.latencies.sort_by(f64::total_cmp);
        println!(
            "crash: durability={durability} cycles={cycles} received_whole={} cut={} \
             recorded={} unrecorded_whole={missing} latency_ms p50={:.2} p99={:.2}",
            tally.whole.len(),
            tally.cut,
            recorded.len(),
            percentile(&tally.latencies, 0.5),
            percentile(&tally.latencies, 0.99),
        );
        assert!(
            tally.whole.len() >= cycles * 16,
            "{durability}: too little load to judge ({} answers)",
            tally.whole.len()
        );
        if *durability == "commit" {
            assert_eq!(missing, 0, "answers received whole without a ledger record");
        }
    }
}

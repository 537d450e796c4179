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

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::common::served::{free_port, serve_with};
use super::common::*;
use super::hostile::env_usize;
use super::load::{Tally, client, percentile, upstream_reply};

fn config(upstream: &str, ledger: &Path, durability: &str) -> String {
    format!(
        "{}\n[ledger]\nurl = \"sqlite://{}\"\ndurability = \"{durability}\"\n",
        standard_config(upstream, upstream, upstream),
        ledger.display()
    )
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
        tally.add(t);
    }
    tally
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
            tallies[i].add(cycle(path, kill_after).await);
        }
    }
    for ((durability, (_, ledger)), tally) in settings.iter().zip(&configs).zip(&mut tallies) {
        let missing = tally.unrecorded(ledger);
        tally.latencies.sort_by(f64::total_cmp);
        println!(
            "crash: durability={durability} cycles={cycles} received_whole={} cut={} \
             unanswered={} ledger_rows={} unrecorded_whole={missing} latency_ms p50={:.2} p99={:.2}",
            tally.whole.len(),
            tally.cut,
            tally.unanswered,
            read_ledger(ledger).len(),
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

//! Reload and restart under load, against a real `crossroads serve`:
//!
//! - The config is rewritten and reloaded (alternately `POST /admin/reload` and
//!   SIGHUP) at a fixed interval while 16 clients (half streaming) keep asking:
//!   every request must get its whole answer (target: 0 failed across ≥ 60 reloads),
//!   and every reload must take.
//! - SIGTERM arrives under the same load: every answer that began must end whole
//!   within the grace period, the process must exit 0, and every answer received
//!   whole must be in the ledger. Requests that arrive after SIGTERM find the port
//!   closed (counted, not failures: a load balancer sends them elsewhere).
//!
//! `CROSSROADS_RELOADS` and `CROSSROADS_RELOAD_MS` set the first part's size (CI: 60
//! reloads 100 ms apart; the figure: 60 reloads 1 s apart).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::common::served::{free_port, serve_with, signal};
use super::common::*;
use super::hostile::env_usize;
use super::load::{Tally, client, percentile, upstream_reply};

/// The standard config on `upstream` and `ledger`; `variant` changes the default
/// rule's pool and the frontier pool's strategy, so each reload changes routing.
fn config(upstream: &str, ledger: &Path, variant: usize) -> String {
    let strategy = ["priority", "cheapest", "least_latency"][variant % 3];
    standard_config(upstream, upstream, upstream)
        .replace("config_poll_ms = 100", "config_poll_ms = 0")
        .replace(
            "id = \"frontier\"\ndeployments = [\"frontier-a\", \"frontier-b\"]",
            &format!(
                "id = \"frontier\"\ndeployments = [\"frontier-a\", \"frontier-b\"]\nstrategy = \"{strategy}\""
            ),
        )
        + &format!(
            "\n# variant {variant}\n[ledger]\nurl = \"sqlite://{}\"\n",
            ledger.display()
        )
}

fn start_clients(addr: &str, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..16)
        .map(|i| tokio::spawn(client(addr.to_owned(), i % 2 == 0, stop.clone())))
        .collect()
}

async fn collect(clients: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut tally = Tally::default();
    for c in clients {
        tally.add(c.await.unwrap());
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let reloads = env_usize("CROSSROADS_RELOADS", 60);
    let interval = Duration::from_millis(env_usize("CROSSROADS_RELOAD_MS", 100) as u64);
    let upstream = Upstream::start(upstream_reply()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, ledger) = (dir.path().join("routes.toml"), dir.path().join("ledger.db"));
    std::fs::write(&path, config(&upstream.base_url(), &ledger, 0)).unwrap();
    let gateway = serve_with(&path, free_port(), Stdio::null()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&gateway.addr, &stop);
    let admin = reqwest::Client::new();
    let started = Instant::now();
    for n in 1..=reloads {
        tokio::time::sleep(interval).await;
        std::fs::write(&path, config(&upstream.base_url(), &ledger, n)).unwrap();
        if n % 2 == 0 {
            signal(&gateway.child, "HUP");
        } else {
            let r = admin
                .post(format!("{}/admin/reload", gateway.addr))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "reload {n}: {}", r.text().await.unwrap());
        }
    }
    tokio::time::sleep(interval).await;
    stop.store(true, Ordering::Relaxed);
    let mut tally = collect(clients).await;
    let metrics = admin
        .get(format!("{}/metrics", gateway.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let applied: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("crossroads_config_reloads_total") && l.contains("ok"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    tally.latencies.sort_by(f64::total_cmp);
    println!(
        "reload: reloads={reloads} every {interval:?} over {:.1} s, applied={applied}, \
         requests={} failed={} unanswered={} latency_ms p50={:.2} p99={:.2}",
        started.elapsed().as_secs_f64(),
        tally.whole.len() + tally.cut + tally.unanswered,
        tally.cut,
        tally.unanswered,
        percentile(&tally.latencies, 0.5),
        percentile(&tally.latencies, 0.99),
    );
    assert!(tally.whole.len() >= reloads, "too little load to judge");
    assert_eq!((tally.cut, tally.unanswered), (0, 0), "failed requests");
    assert_eq!(applied as usize, reloads, "every reload applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_what_began_and_records_it() {
    let upstream = Upstream::start(upstream_reply()).await;
    let dir = tempfile::tempdir().unwrap();
    let (path, ledger) = (dir.path().join("routes.toml"), dir.path().join("ledger.db"));
    std::fs::write(&path, config(&upstream.base_url(), &ledger, 0)).unwrap();
    let mut gateway = serve_with(&path, free_port(), Stdio::null()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_clients(&gateway.addr, &stop);
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&gateway.child, "TERM");
    let terminated = Instant::now();
    let mut child = std::mem::replace(
        &mut gateway.child,
        std::process::Command::new("true").spawn().unwrap(),
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let exited = terminated.elapsed();
    stop.store(true, Ordering::Relaxed);
    let tally = collect(clients).await;
    let missing = tally.unrecorded(&ledger);
    println!(
        "sigterm: exit {status} after {:.0} ms, received_whole={} cut={} unanswered={} \
         unrecorded_whole={missing}",
        exited.as_secs_f64() * 1000.0,
        tally.whole.len(),
        tally.cut,
        tally.unanswered,
    );
    assert!(status.success(), "exit status {status}");
    assert!(
        exited < Duration::from_secs(10),
        "the shutdown grace was exceeded"
    );
    assert_eq!(tally.cut, 0, "answers that began and did not end whole");
    assert_eq!(missing, 0, "answers received whole without a ledger record");
    assert!(!tally.whole.is_empty());
}

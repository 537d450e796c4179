//! The ledger writer's commit path: `LEDGER_RECORDS` (default 2,000) synthetic records
//! (routed and priced by the shipped `routes.toml`) sent by `LEDGER_CLIENTS` concurrent
//! clients (default one), each waiting for its record's commit before sending the next,
//! as `durability = "commit"` makes a request wait. One client means one record per
//! transaction, where per-statement round trips cost the most; more clients share
//! transactions (group commit).
//!
//! `LEDGER=sqlite` (default, a temporary file) or `LEDGER=postgres` (the PostgreSQL at
//! 127.0.0.1:5432, database `test`, in a schema of its own, dropped afterwards; or
//! `LEDGER_PG_URL`).
//!
//!     LEDGER=postgres cargo bench --bench ledger_write
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../examples/seed_ledger/traffic.rs"]
mod traffic;

use std::time::{Duration, Instant};

use crossroads::config::{Durability, LedgerBackend, LedgerConfig, Secret};
use crossroads::ledger::LedgerMetrics;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let records: u64 = env_or("LEDGER_RECORDS", 2_000);
    let clients: u64 = env_or("LEDGER_CLIENTS", 1);
    let kind = std::env::var("LEDGER").unwrap_or_else(|_| "sqlite".into());
    let pg_url = std::env::var("LEDGER_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let config = crossroads::config::load(&std::path::Path::new(ROOT).join("routes.toml"))
        .expect("the shipped routes.toml");
    let dir = tempfile::tempdir().expect("a temp dir");
    let schema = format!("cr_bench_{}", std::process::id());
    let backend = match kind.as_str() {
        "postgres" => LedgerBackend::Postgres {
            url: Secret::new(pg_url.clone()),
            schema: schema.clone(),
        },
        _ => LedgerBackend::Sqlite(dir.path().join("ledger.db")),
    };
    let ledger_config = LedgerConfig {
        backend,
        queue_capacity: 10_000,
        batch_size: 256,
        durability: Durability::Commit,
    };
    let metrics = LedgerMetrics::new(&prometheus::Registry::new()).unwrap();
    let (ledger, writer) = crossroads::ledger::start(&ledger_config, metrics).expect("a ledger");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let now = crossroads::admission::now_ms();
    let config = std::sync::Arc::new(config);
    let ledger = std::sync::Arc::new(ledger);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (config, ledger) = (config.clone(), ledger.clone());
                tokio::spawn(async move {
                    let mut waited = Vec::new();
                    let mut i = c;
                    while i < records {
                        let mut record = traffic::record(&config, i, records, now - 60_000, 60_000);
                        record.request_id = format!("bench-{}-{i}", std::process::id());
                        let sent = Instant::now();
                        ledger.record_committed(None, record).await.unwrap();
                        waited.push(sent.elapsed());
                        i += clients;
                    }
                    waited
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed();
    runtime.block_on(writer.shutdown());
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "ledger {kind}, {records} records, {clients} client(s) waiting for each commit: \
         {:.0} records/s; commit wait p50 {:.3} ms, p99 {:.3} ms",
        records as f64 / elapsed.as_secs_f64(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
    );
    if kind == "postgres" {
        let mut client = postgres::Client::connect(&pg_url, postgres::NoTls).expect("PostgreSQL");
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .expect("the bench schema dropped");
    }
}

//! `crossroads replay` over a large ledger: seeds `REPLAY_ROWS` (default 1,000,000)
//! records into a temporary SQLite ledger, then times reading them back and replaying
//! them through the shipped `routes.toml` (the issue-18 bar: 1 million in ≤ 10 s).
//!
//!     cargo bench --bench replay
#![allow(clippy::expect_used)]

use std::time::Instant;

use crossroads::accounting::{Usage, Usd};
use crossroads::ledger::query::Filter;
use crossroads::ledger::{LedgerReader, LedgerRecord, LedgerStore, SqliteStore};
use crossroads::replay::Report;

const LABELS: [&str; 5] = ["computer science", "math", "law", "health", "other"];
const TASKS: [&str; 4] = ["coding", "math", "creative_writing", "other"];
const TEAMS: [&str; 4] = ["search", "support", "ads", "research"];

fn record(i: u64) -> LedgerRecord {
    let frontier = !i.is_multiple_of(3);
    let (input, output) = (200 + i % 1800, 50 + i % 450);
    let cost = if frontier {
        Usd::from_pico(input as i64 * 2_000_000 + output as i64 * 8_000_000)
    } else {
        Usd::ZERO
    };
    LedgerRecord {
        request_id: format!("req_{i:016x}"),
        ts_ms: 1_796_000_000_000 + i as i64,
        key_id: Some(format!("key-{}", i % 50)),
        team: Some(TEAMS[(i % 4) as usize].into()),
        endpoint: "chat.completions".into(),
        requested_model: "auto".into(),
        label: Some(LABELS[(i % 5) as usize].into()),
        task: Some(TASKS[(i % 4) as usize].into()),
        confidence: Some((i % 100) as f32 / 100.0),
        difficulty: Some((i % 97) as f32 / 97.0),
        pii_kinds: if i.is_multiple_of(50) {
            "email".into()
        } else {
            String::new()
        },
        prompt_tokens_est: Some(input),
        tools: Some(i.is_multiple_of(7)),
        images: Some(0),
        json_mode: Some(i.is_multiple_of(11)),
        tier: Some(if frontier { "frontier" } else { "local" }.into()),
        cache_hit: i.is_multiple_of(20),
        status: 200,
        usage: Usage {
            input,
            output,
            ..Usage::default()
        },
        cost,
        reference_cost: Usd::from_pico(input as i64 * 2_000_000 + output as i64 * 8_000_000),
        ..LedgerRecord::default()
    }
}

fn main() {
    let rows: u64 = std::env::var("REPLAY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("ledger.db");
    let started = Instant::now();
    let mut store = SqliteStore::open(&path).expect("a ledger");
    let batch: Vec<u64> = (0..rows).collect();
    for chunk in batch.chunks(10_000) {
        let records: Vec<LedgerRecord> = chunk.iter().map(|i| record(*i)).collect();
        store.write(&records).expect("written");
    }
    drop(store);
    println!(
        "seeded {rows} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let config = crossroads::config::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("routes.toml"),
    )
    .expect("the shipped routes.toml");
    let reader = LedgerReader::open(&path).expect("a reader");
    for run in 1..=3 {
        let started = Instant::now();
        let recorded = reader.recorded(&Filter::default()).expect("records");
        let read = started.elapsed();
        let report = Report::of(&config, &recorded);
        let total = started.elapsed();
        println!(
            "run {run}: {} records read in {:.2} s, replayed in {:.2} s, {:.2} s in all \
             ({} replayed, {} moved, projected {} against {} USD)",
            recorded.len(),
            read.as_secs_f64(),
            (total - read).as_secs_f64(),
            total.as_secs_f64(),
            report.total.requests,
            report.total.moved,
            report.total.projected_cost,
            report.total.actual_cost,
        );
    }
}

//! Seeds a SQLite ledger with synthetic traffic routed by a config, for trying the
//! console and for its browser test, and writes what the console must show for it.
//!
//!     cargo run --example seed_ledger -- --config routes.toml --out /tmp/ledger.db \
//!         --requests 20000 --days 14 [--end 2026-12-06] [--expect /tmp/expect.json]
//!
//! The records end the day before `--end` (default: tomorrow, so today has traffic).
//! `--expect` gets the range, totals, days, spend per team, budgets, deployments and
//! one request with the rule and reasons its detail must show; that request's `user`
//! and fallbacks carry markup the console must show as text.
#![allow(clippy::expect_used, clippy::panic)]

mod traffic;

/// Markup that sets `data-pwned` on the page's body if the console ever runs it.
const HOSTILE: &str = "<img src=x onerror=\"document.body.dataset.pwned=1\">";

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crossroads::accounting::Usd;
use crossroads::ledger::query::{day_string, parse_time};
use crossroads::ledger::rollup::DAY_MS;
use crossroads::ledger::{LedgerStore, SqliteStore};
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut config = PathBuf::from("routes.toml");
    let mut out = None;
    let mut expect = None;
    let (mut requests, mut days) = (20_000u64, 14i64);
    let mut end = None;
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--config" => config = value.into(),
            "--out" => out = Some(PathBuf::from(value)),
            "--expect" => expect = Some(PathBuf::from(value)),
            "--requests" => requests = value.parse().expect("--requests N"),
            "--days" => days = value.parse().expect("--days N"),
            "--end" => end = Some(parse_time(&value).expect("--end YYYY-MM-DD")),
            other => panic!("unknown flag {other}"),
        }
    }
    let out = out.expect("--out LEDGER.db");
    let config = crossroads::config::load(&config).expect("a valid config");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64;
    let end_ms = end.unwrap_or((now.div_euclid(DAY_MS) + 1) * DAY_MS);
    // Nothing after now: the last day's records stop at the present.
    let start_ms = end_ms - days * DAY_MS;
    let span = (end_ms.min(now.max(start_ms + 1))) - start_ms;
    let mut store = SqliteStore::open(&out).expect("a ledger");
    let mut total = (0i64, Usd::ZERO, Usd::ZERO);
    let mut teams: BTreeMap<String, Usd> = BTreeMap::new();
    let mut deployments = BTreeSet::new();
    let mut detail = None;
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..requests {
        let mut r = traffic::record(&config, i, requests, start_ms, span);
        total.0 += 1;
        total.1 += r.cost;
        total.2 += r.reference_cost;
        *teams.entry(r.team.clone().unwrap_or_default()).or_default() += r.cost;
        deployments.extend(r.deployment.clone());
        if detail.is_none() && r.rule.as_deref() == Some("hard-to-frontier") {
            // Fields a client chooses (its `user`) and upstream errors end in the
            // ledger as they came: the console must show them as text, never run them.
            r.end_user = Some(HOSTILE.into());
            r.fallbacks = format!("{HOSTILE}:timeout");
            let e = crossroads::replay::explain(&config, &r).expect("routed");
            detail = Some(json!({
                "id": r.request_id,
                "rule": "hard-to-frontier",
                "reasons_any": e.reasons,
            }));
        }
        batch.push(r);
        if batch.len() == 10_000 {
            store.write(&batch).expect("written");
            // What the writer thread does behind the records, about once a second.
            store.roll_up().expect("rolled up");
            batch.clear();
        }
    }
    store.write(&batch).expect("written");
    if let Some(path) = expect {
        let mut budgets: Vec<String> = config
            .teams
            .iter()
            .filter(|t| t.budget.is_some())
            .map(|t| format!("team:{}", t.id))
            .collect();
        budgets.extend(
            config
                .keys
                .iter()
                .filter(|k| k.budget.is_some())
                .map(|k| format!("key:{}", k.id)),
        );
        let expected = json!({
            "from": day_string(start_ms / DAY_MS),
            "to": day_string(end_ms / DAY_MS),
            "totals": {
                "requests": total.0,
                "cost_usd": total.1.to_string(),
                "reference_cost_usd": total.2.to_string(),
                "savings_usd": (total.2 - total.1).to_string(),
            },
            "days": (start_ms / DAY_MS..end_ms / DAY_MS).map(day_string).collect::<Vec<_>>(),
            "teams": teams.iter().map(|(t, c)| (t.clone(), c.to_string())).collect::<BTreeMap<_, _>>(),
            "budgets": budgets,
            "deployments": deployments,
            "request": detail,
        });
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&expected).expect("json"),
        )
        .expect("--expect written");
    }
    println!("seeded {requests} records into {}", out.display());
}

//! The console's endpoints over a large ledger: seeds `CONSOLE_ROWS` (default
//! 1,000,000) synthetic requests routed by the shipped `routes.toml` over the last 30
//! days into a temporary SQLite ledger, starts `crossroads serve` on it, and times each
//! page's request (the issue-18 bar: every page answers in ≤ 200 ms on a million).
//!
//!     cargo bench --bench console
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../examples/seed_ledger/traffic.rs"]
mod traffic;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crossroads::ledger::rollup::DAY_MS;
use crossroads::ledger::{LedgerStore, SqliteStore};

const ADMIN: &str = "bench-admin";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn main() {
    let rows: u64 = std::env::var("CONSOLE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = std::env::var("CONSOLE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let dir = tempfile::tempdir().expect("a temp dir");
    let ledger = dir.path().join("ledger.db");
    // The shipped config with two budgets, on the seeded ledger.
    let shipped = std::fs::read_to_string(format!("{ROOT}/routes.toml")).expect("routes.toml");
    let config_text = format!(
        "{}\n[[teams]]\nid = \"search\"\nbudget = {{ usd = 20000, period = \"month\" }}\n\n[[teams]]\nid = \"ads\"\nbudget = {{ usd = 900, period = \"day\" }}\n",
        shipped
    )
    .replace(
        "model = \"models/crossroads-linear.bin\"",
        &format!("model = \"{ROOT}/models/crossroads-linear.bin\""),
    );
    let config_path = dir.path().join("routes.toml");
    std::fs::write(&config_path, &config_text).expect("config written");
    let config = crossroads::config::load(&config_path).expect("a valid config");
    let now = crossroads::admission::now_ms();
    let first = (now.div_euclid(DAY_MS) - 29) * DAY_MS;
    let started = Instant::now();
    let mut store = SqliteStore::open(&ledger).expect("a ledger");
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..rows {
        batch.push(traffic::record(&config, i, rows, first, now - first));
        if batch.len() == 10_000 {
            store.write(&batch).expect("written");
            // What the writer thread does behind the records, about once a second.
            store.roll_up().expect("rolled up");
            batch.clear();
        }
    }
    store.write(&batch).expect("written");
    drop(store);
    let size = std::fs::metadata(&ledger).map(|m| m.len()).unwrap_or(0);
    println!(
        "seeded {rows} requests over 30 days in {:.1} s ({:.0} MB)",
        started.elapsed().as_secs_f64(),
        size as f64 / 1e6
    );

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_crossroads"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("CROSSROADS__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("CROSSROADS__SERVER__ADMIN_KEY_ENV", "BENCH_ADMIN_KEY")
        .env("BENCH_ADMIN_KEY", ADMIN)
        .env(
            "CROSSROADS__LEDGER__URL",
            format!("sqlite://{}", ledger.display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("crossroads serve");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if client.get(format!("{base}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let detail = format!("/ui/api/requests/req_seed{:020}", rows / 2);
        let pages: Vec<(&str, String)> = vec![
            ("page (HTML)", "/ui".into()),
            ("overview, 30 days", "/ui/api/overview".into()),
            ("spend by team", "/v1/spend?group_by=team".into()),
            ("spend by key", "/v1/spend?group_by=key".into()),
            ("spend by model", "/v1/spend?group_by=model".into()),
            ("spend by rule", "/v1/spend?group_by=rule".into()),
            (
                "spend by day and team",
                "/v1/spend?group_by=team&interval=day".into(),
            ),
            (
                "spend by day and rule, one team",
                "/v1/spend?group_by=rule&interval=day&team=search".into(),
            ),
            ("budgets", "/ui/api/budgets".into()),
            ("latency", "/ui/api/latency".into()),
            ("requests, newest 50", "/v1/spend/requests?limit=50".into()),
            (
                "requests, one rule, errors, 50",
                "/v1/spend/requests?limit=50&rule=default&status=error".into(),
            ),
            ("request detail", detail),
            (
                "overview from the records (bound inside a day)",
                format!("/ui/api/overview?from={}", first + 1),
            ),
        ];
        println!(
            "{:<50} {:>9} {:>9} {:>9}",
            "page", "median ms", "min ms", "max ms"
        );
        for (name, path) in pages {
            let mut times = Vec::with_capacity(runs);
            for run in 0..=runs {
                let started = Instant::now();
                let r = client
                    .get(format!("{base}{path}"))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .expect("an answer");
                assert!(r.status().is_success(), "{path}: {}", r.status());
                r.bytes().await.expect("a body");
                // The first request warms the page cache and prepared statements.
                if run > 0 {
                    times.push(started.elapsed().as_secs_f64() * 1e3);
                }
            }
            times.sort_by(f64::total_cmp);
            println!(
                "{name:<50} {:>9.1} {:>9.1} {:>9.1}",
                times[times.len() / 2],
                times[0],
                times[times.len() - 1]
            );
        }
    });
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
}
